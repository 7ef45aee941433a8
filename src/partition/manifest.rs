//! The manifest: what the store holds, for whom, signed by the producer and encrypted.
//!
//! Stored under the key `manifest` as an age file whose plaintext is
//! `{"manifest": "<JSON text>", "signature": "<base64 ed25519 signature of that text>"}`.
//! The JSON text is a [`Manifest`]. Destination names, branches and commits travel only
//! inside it, never in an object key.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::crypto::{self, CryptoError};
use crate::config::PairEnd;

/// The format name written into every manifest.
pub const FORMAT: &str = "gitsync-partition/1";

/// One encrypted git bundle in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleRecord {
    /// Its object key (`b/<sha256>`).
    pub key: String,
    /// SHA-256 of the stored (encrypted) bytes, hex.
    pub sha256: String,
    /// Its size in the store, in bytes.
    pub size: u64,
    /// Commits the receiving repository must already have (git-bundle(1)).
    pub prerequisites: Vec<String>,
    /// The branch tip it carries.
    pub tip: String,
}

/// One pair as exported: where it goes, what it is at, and the bundles that rebuild it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairRecord {
    /// A stable id of the pair (hex).
    pub id: String,
    /// The destination, with its branch.
    pub destination: PairEnd,
    /// The source branch (the ref name inside the bundles: `refs/heads/<source_branch>`).
    pub source_branch: String,
    /// The source branch's commit.
    pub tip: String,
    /// Tags carried (name -> object id), when the pair includes tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Whether the consumer may rewrite the destination branch.
    #[serde(default)]
    pub force: bool,
    /// The bundles, oldest first: a full one, then increments.
    pub bundles: Vec<BundleRecord>,
}

/// The manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// Increases by one with every manifest the producer publishes.
    pub generation: u64,
    /// When it was made, UTC.
    pub created_at: DateTime<Utc>,
    /// Every pair.
    pub pairs: Vec<PairRecord>,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    manifest: String,
    signature: String,
}

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// It cannot be decrypted or its signature is wrong.
    #[error(transparent)]
    Crypto(#[from] CryptoError),
    /// It is not a manifest of this format.
    #[error("malformed manifest: {0}")]
    Malformed(String),
}

/// Signs `manifest` with `key` and encrypts it for `to`.
///
/// Errors: [`ManifestError::Crypto`] when encryption fails.
pub fn seal(
    manifest: &Manifest,
    key: &ed25519_dalek::SigningKey,
    to: &[age::x25519::Recipient],
) -> Result<Vec<u8>, ManifestError> {
    let text =
        serde_json::to_string(manifest).map_err(|e| ManifestError::Malformed(e.to_string()))?;
    let envelope = Envelope {
        signature: crypto::sign(text.as_bytes(), key),
        manifest: text,
    };
    let plain =
        serde_json::to_vec(&envelope).map_err(|e| ManifestError::Malformed(e.to_string()))?;
    Ok(crypto::encrypt_bytes(&plain, to)?)
}

/// Decrypts `bytes` with `identity`, checks the signature against `producer`, and parses
/// the manifest.
///
/// Errors: [`ManifestError::Crypto`] for a foreign, tampered or unsigned manifest;
/// [`ManifestError::Malformed`] when the content is not a manifest.
pub fn open(
    bytes: &[u8],
    identity: &age::x25519::Identity,
    producer: &ed25519_dalek::VerifyingKey,
) -> Result<Manifest, ManifestError> {
    let plain = crypto::decrypt_bytes(bytes, identity)?;
    let envelope: Envelope = serde_json::from_slice(&plain)
        .map_err(|_| CryptoError::Signature("unsigned or not a manifest envelope".to_string()))?;
    crypto::verify(envelope.manifest.as_bytes(), &envelope.signature, producer)?;
    let manifest: Manifest = serde_json::from_str(&envelope.manifest)
        .map_err(|e| ManifestError::Malformed(e.to_string()))?;
    if manifest.format != FORMAT {
        return Err(ManifestError::Malformed(format!(
            "format {:?}, expected {FORMAT}",
            manifest.format
        )));
    }
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_manifests_open_only_with_the_right_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (recipient, public) = crypto::keygen(dir.path()).expect("keygen");
        let to = crypto::recipients(&[recipient]).expect("recipients");
        let key = crypto::signing_key(&dir.path().join("signing.key")).expect("key");
        let id = crypto::identity(&dir.path().join("identity.age")).expect("identity");
        let producer = crypto::public_key(&public).expect("public");
        let manifest = Manifest {
            format: FORMAT.to_string(),
            generation: 3,
            created_at: Utc::now(),
            pairs: Vec::new(),
        };
        let sealed = seal(&manifest, &key, &to).expect("seal");
        assert_eq!(open(&sealed, &id, &producer).expect("open"), manifest);
        let stranger = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        let forged = seal(&manifest, &stranger, &to).expect("seal");
        assert!(matches!(
            open(&forged, &id, &producer),
            Err(ManifestError::Crypto(CryptoError::Signature(_)))
        ));
        let unsigned = crypto::encrypt_bytes(b"{\"generation\": 9}", &to).expect("encrypt");
        assert!(open(&unsigned, &id, &producer).is_err());
    }
}
