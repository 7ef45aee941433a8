//! Checks of the `partition` section, each problem reported with its key.

use super::schema::PartitionConfig;

/// Reports every problem of `partition` through `push(key, message)`: a role needs a
/// store, and a store is `s3://bucket/prefix` or `file:///path`.
pub(super) fn validate(section: &PartitionConfig, push: &mut dyn FnMut(&str, String)) {
    match section.store.as_deref() {
        None if section.role.is_some() => push(
            "partition.role",
            "needs `partition.store` (s3://bucket/prefix or file:///path)".to_string(),
        ),
        Some(store) if !(store.starts_with("s3://") || store.starts_with("file:///")) => push(
            "partition.store",
            format!(
                "{:?}: use s3://bucket/prefix or file:///path",
                crate::util::redact::redact_url(store)
            ),
        ),
        _ => {}
    }
}
