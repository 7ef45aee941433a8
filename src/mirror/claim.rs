//! Which source a target mirrors. Two mirrors of different sources on one prefix would
//! overwrite each other's `info/refs` run after run, each clone seeing one or the other. The
//! first run writes the source's identity to [`KEY`] (by conditional write, so two first
//! runs cannot both win); every later run compares its own and refuses another's.
//!
//! The identity is the SHA-256 of the source URL in the form push triggers compare
//! ([`super::same_source`]: credentials, scheme, port, `.git` left out, host in lower
//! case), so two machines that spell one source differently agree, and the URL itself
//! (which may name a private host) is not published beside the mirror.

use sha2::Digest;

use crate::store::{BlobStore, StoreError};

/// The key of the record (under `objects/info/`, which git's dumb client never reads).
pub const KEY: &str = "objects/info/gitsync-source.json";

/// The record at [`KEY`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceRecord {
    /// `sha256:<hex>` of the normalized source URL.
    pub source: String,
}

/// The identity of `source` (a git URL) as recorded at [`KEY`].
pub fn identity(source: &str) -> String {
    let url = super::same_source(source);
    format!(
        "sha256:{}",
        hex::encode(sha2::Sha256::digest(url.as_bytes()))
    )
}

/// Why a target is not this mirror's to write.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The target holds a mirror of another source.
    #[error(
        "it holds a mirror of another source: give this mirror its own prefix (or, to hand this one over, delete {KEY} there)"
    )]
    OtherSource,
    /// The record cannot be read.
    #[error("{KEY} there is not gitsync's source record: give this mirror its own prefix")]
    Unreadable,
    /// Reading or writing the record failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks that `store` mirrors `source`, claiming an unclaimed target for it (unless
/// `dry_run`, which writes nothing). A target mirrored before records existed is claimed by
/// the first run that comes.
///
/// Errors: [`ClaimError`].
pub async fn claim(store: &dyn BlobStore, source: &str, dry_run: bool) -> Result<(), ClaimError> {
    let mine = identity(source);
    for _ in 0..2 {
        match store.get_bytes(KEY).await? {
            Some((bytes, _)) => {
                let record: SourceRecord =
                    serde_json::from_slice(&bytes).map_err(|_| ClaimError::Unreadable)?;
                return if record.source == mine {
                    Ok(())
                } else {
                    Err(ClaimError::OtherSource)
                };
            }
            None if dry_run => return Ok(()),
            None => {
                let record = SourceRecord {
                    source: mine.clone(),
                };
                let bytes = serde_json::to_vec(&record)
                    .map_err(|e| StoreError::Url(format!("cannot write the record: {e}")))?;
                match store.put_bytes_if(KEY, &bytes, None).await {
                    Ok(_) => return Ok(()),
                    // Another first run claimed it meanwhile: read whose it is.
                    Err(StoreError::Conflict(_)) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Err(ClaimError::OtherSource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_spelled_two_ways_has_one_identity() {
        assert_eq!(
            identity("https://u:pw@GitHub.com/acme/api.git"),
            identity("git@github.com:acme/api")
        );
        assert_ne!(
            identity("https://github.com/acme/api"),
            identity("https://github.com/acme/web")
        );
        assert!(identity("/srv/a.git").starts_with("sha256:"));
    }
}
