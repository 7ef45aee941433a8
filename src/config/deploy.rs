//! Checks of the `deploy` section, each problem reported with its key.

use super::schema::DeployConfig;

/// The scanners `deploy[].scan.tool` may name.
pub const SCANNERS: [&str; 5] = ["auto", "gitleaks", "kingfisher", "detect-secrets", "off"];

/// The scanners gitsync runs (the `scan.tool` names that are programs).
pub const KINDS: [&str; 3] = ["gitleaks", "kingfisher", "detect-secrets"];

/// For a `scan.tool` that is a path (it holds a `/`; `~/` is the home folder): the scanner
/// its file name names (`~/.venv/bin/gitleaks` is gitleaks), or `None` when it is not a
/// path or names none.
pub fn kind_of_path(tool: &str) -> Option<&'static str> {
    if !tool.contains('/') {
        return None;
    }
    let path = crate::config::expand_tilde(tool);
    let name = path.file_name()?.to_str()?;
    KINDS.into_iter().find(|k| name.starts_with(k))
}

/// Whether `name` is a plain name (letters, digits, `.`, `_`, `-`): a mirror's, a webhook
/// mirror's or a deploy's, used in paths and URLs.
pub(super) fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// Reports every problem of `deploys` through `push(key, message)`.
pub(super) fn validate(deploys: &[DeployConfig], push: &mut dyn FnMut(&str, String)) {
    let mut names = std::collections::BTreeSet::new();
    for (i, d) in deploys.iter().enumerate() {
        let key = |field: &str| format!("deploy[{i}].{field}");
        if !plain_name(&d.name) {
            push(
                &key("name"),
                format!("{:?}: use letters, digits, `.`, `_` and `-` only", d.name),
            );
        } else if !names.insert(d.name.clone()) {
            push(&key("name"), format!("{:?} is used by two deploys", d.name));
        }
        if d.repo.trim().is_empty() {
            push(
                &key("repo"),
                "empty: name a configured repository or a path".to_string(),
            );
        }
        if d.targets.is_empty() {
            push(
                &key("targets"),
                "empty: name at least one server".to_string(),
            );
        }
        if d.keep.is_some_and(|k| k < 2) {
            push(
                &key("keep"),
                "must be at least 2 (the current release and the previous one)".to_string(),
            );
        }
        let mut targets = std::collections::BTreeSet::new();
        for (j, t) in d.targets.iter().enumerate() {
            let tkey = |field: &str| key(&format!("targets[{j}].{field}"));
            if !plain_name(&t.name) {
                push(
                    &tkey("name"),
                    format!("{:?}: use letters, digits, `.`, `_` and `-` only", t.name),
                );
            } else if !targets.insert(t.name.clone()) {
                push(
                    &tkey("name"),
                    format!("{:?} is used by two targets", t.name),
                );
            }
            if t.host.is_empty() || t.host.starts_with('-') || t.host.contains(char::is_whitespace)
            {
                push(
                    &tkey("host"),
                    format!("{:?} is not an ssh destination such as deploy@vm01", t.host),
                );
            }
            if !t.path.starts_with('/') || t.path.split('/').any(|s| s == "..") || t.path == "/" {
                push(
                    &tkey("path"),
                    format!("{:?}: use an absolute folder, not / and without ..", t.path),
                );
            }
        }
        if let Some(ssh) = &d.ssh
            && let Some(mode) = &ssh.strict_host_key_checking
            && mode != "yes"
            && mode != "accept-new"
        {
            push(
                &key("ssh.strict_host_key_checking"),
                format!("{mode:?}: use `yes` or `accept-new`"),
            );
        }
    }
}
