//! Checks of the `mirrors` section, each problem reported with its key.

use std::time::Duration;

use super::schema::MirrorConfig;

/// Reports every problem of `mirrors` through `push(key, message)`.
pub(super) fn validate(mirrors: &[MirrorConfig], push: &mut dyn FnMut(&str, String)) {
    let mut names = std::collections::BTreeSet::new();
    for (i, mirror) in mirrors.iter().enumerate() {
        let key = |field: &str| format!("mirrors[{i}].{field}");
        if !super::deploy::plain_name(&mirror.name) {
            push(
                &key("name"),
                format!(
                    "{:?}: use letters, digits, `.`, `_` and `-` only",
                    mirror.name
                ),
            );
        } else if !names.insert(mirror.name.clone()) {
            push(
                &key("name"),
                format!("{:?} is used by two mirrors", mirror.name),
            );
        }
        if mirror.source.trim().is_empty() {
            push(
                &key("source"),
                "empty: give a URL git can fetch".to_string(),
            );
        }
        if !(mirror.target.starts_with("s3://") || mirror.target.starts_with("file:///")) {
            push(
                &key("target"),
                format!(
                    "{:?}: use s3://bucket/prefix or file:///path",
                    crate::util::redact::redact_url(&mirror.target)
                ),
            );
        }
        if mirror.max_packs.is_some_and(|n| n < 2) {
            push(&key("max_packs"), "must be at least 2".to_string());
        }
        if mirror
            .interval
            .as_ref()
            .is_some_and(|d| d.0 < Duration::from_secs(1))
        {
            push(&key("interval"), "must be at least 1s".to_string());
        }
    }
}
