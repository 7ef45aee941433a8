//! Encryption (age, x25519 recipients) and signatures (ed25519) for partition sync.
//!
//! Files are encrypted and decrypted as streams in the age file format
//! (<https://age-encryption.org/v1>), so a bundle is never whole in memory. The producer's
//! signing key is a file holding `gitsync-ed25519-secret:` and the base64 of the 32-byte
//! ed25519 seed; its public half, which consumers configure, is `gitsync-ed25519:` and the
//! base64 of the 32-byte public key (RFC 8032 encodings).

use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use age::secrecy::ExposeSecret;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer, Verifier};

const SECRET_PREFIX: &str = "gitsync-ed25519-secret:";
const PUBLIC_PREFIX: &str = "gitsync-ed25519:";

/// A cryptographic failure; the message says what and, for files, which.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// A key file or key string is malformed.
    #[error("bad key: {0}")]
    Key(String),
    /// Encryption failed.
    #[error("cannot encrypt: {0}")]
    Encrypt(String),
    /// Decryption failed: not an age file, truncated, tampered, or not for this identity.
    #[error("cannot decrypt: {0}")]
    Decrypt(String),
    /// The signature does not match the producer's public key.
    #[error("bad signature: {0}")]
    Signature(String),
    /// A file cannot be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> CryptoError + '_ {
    move |source| CryptoError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Parses age x25519 recipients (`age1...`).
///
/// Errors: [`CryptoError::Key`] naming the first malformed one, or none given.
pub fn recipients(list: &[String]) -> Result<Vec<age::x25519::Recipient>, CryptoError> {
    if list.is_empty() {
        return Err(CryptoError::Key("no recipients configured".to_string()));
    }
    list.iter()
        .map(|r| {
            r.trim()
                .parse::<age::x25519::Recipient>()
                .map_err(|e| CryptoError::Key(format!("recipient {r:?}: {e}")))
        })
        .collect()
}

/// Reads an age identity file (lines `AGE-SECRET-KEY-1...`, `#` comments allowed).
///
/// Errors: [`CryptoError::Io`]; [`CryptoError::Key`] when no identity is in it.
pub fn identity(path: &Path) -> Result<age::x25519::Identity, CryptoError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .ok_or_else(|| CryptoError::Key(format!("{}: no AGE-SECRET-KEY line", path.display())))?
        .parse::<age::x25519::Identity>()
        .map_err(|e| CryptoError::Key(format!("{}: {e}", path.display())))
}

/// Reads the producer's signing key file.
///
/// Errors: [`CryptoError::Io`]; [`CryptoError::Key`] when malformed.
pub fn signing_key(path: &Path) -> Result<ed25519_dalek::SigningKey, CryptoError> {
    let text = std::fs::read_to_string(path).map_err(io_err(path))?;
    let encoded = text.trim().strip_prefix(SECRET_PREFIX).ok_or_else(|| {
        CryptoError::Key(format!("{}: not a gitsync signing key", path.display()))
    })?;
    let bytes: [u8; 32] = STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| CryptoError::Key(format!("{}: not 32 bytes of base64", path.display())))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&bytes))
}

/// Parses a producer public key (`gitsync-ed25519:...`).
///
/// Errors: [`CryptoError::Key`] when malformed.
pub fn public_key(text: &str) -> Result<ed25519_dalek::VerifyingKey, CryptoError> {
    let encoded = text
        .trim()
        .strip_prefix(PUBLIC_PREFIX)
        .ok_or_else(|| CryptoError::Key(format!("{text:?} is not a gitsync-ed25519: key")))?;
    let bytes: [u8; 32] = STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| CryptoError::Key("public key is not 32 bytes of base64".to_string()))?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|e| CryptoError::Key(e.to_string()))
}

/// The text form of `key`'s public half, as consumers configure it.
pub fn public_text(key: &ed25519_dalek::SigningKey) -> String {
    format!(
        "{PUBLIC_PREFIX}{}",
        STANDARD.encode(key.verifying_key().to_bytes())
    )
}

/// Writes a new age identity (`identity.age`, with its recipient in a comment and in
/// `recipient.txt`) and a new signing key pair (`signing.key`, `signing.pub`) into `dir`,
/// private files with mode 0600. Returns (recipient, public key text).
///
/// Errors: [`CryptoError::Io`]; an existing file is never overwritten.
pub fn keygen(dir: &Path) -> Result<(String, String), CryptoError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let write = |name: &str, text: &str, mode: u32| -> Result<(), CryptoError> {
        let path = dir.join(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)
            .map_err(io_err(&path))?;
        file.write_all(text.as_bytes()).map_err(io_err(&path))
    };
    let identity = age::x25519::Identity::generate();
    let recipient = identity.to_public().to_string();
    let signing = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    let public = public_text(&signing);
    write(
        "identity.age",
        &format!(
            "# public key: {recipient}\n{}\n",
            identity.to_string().expose_secret()
        ),
        0o600,
    )?;
    write("recipient.txt", &format!("{recipient}\n"), 0o644)?;
    write(
        "signing.key",
        &format!("{SECRET_PREFIX}{}\n", STANDARD.encode(signing.to_bytes())),
        0o600,
    )?;
    write("signing.pub", &format!("{public}\n"), 0o644)?;
    Ok((recipient, public))
}

/// Encrypts `src` into `dst` for `to`, streaming.
///
/// Errors: [`CryptoError::Io`], [`CryptoError::Encrypt`].
pub fn encrypt_file(
    src: &Path,
    dst: &Path,
    to: &[age::x25519::Recipient],
) -> Result<(), CryptoError> {
    let mut input = BufReader::new(std::fs::File::open(src).map_err(io_err(src))?);
    let output = BufWriter::new(std::fs::File::create(dst).map_err(io_err(dst))?);
    let encryptor = age::Encryptor::with_recipients(to.iter().map(|r| r as &dyn age::Recipient))
        .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    let mut writer = encryptor.wrap_output(output).map_err(io_err(dst))?;
    std::io::copy(&mut input, &mut writer).map_err(io_err(dst))?;
    let mut output = writer.finish().map_err(io_err(dst))?;
    output.flush().map_err(io_err(dst))?;
    Ok(())
}

/// Decrypts `src` into `dst` with `identity`, streaming.
///
/// Errors: [`CryptoError::Decrypt`] (not age, wrong identity, truncated or tampered; age
/// authenticates every 64 KiB chunk), [`CryptoError::Io`].
pub fn decrypt_file(
    src: &Path,
    dst: &Path,
    identity: &age::x25519::Identity,
) -> Result<(), CryptoError> {
    let input = BufReader::new(std::fs::File::open(src).map_err(io_err(src))?);
    let decryptor =
        age::Decryptor::new_buffered(input).map_err(|e| CryptoError::Decrypt(e.to_string()))?;
    let mut reader = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| CryptoError::Decrypt(e.to_string()))?;
    let mut output = BufWriter::new(std::fs::File::create(dst).map_err(io_err(dst))?);
    std::io::copy(&mut reader, &mut output).map_err(|e| CryptoError::Decrypt(e.to_string()))?;
    output.flush().map_err(io_err(dst))
}

/// Encrypts a small message (the manifest) for `to`.
///
/// Errors: [`CryptoError::Encrypt`].
pub fn encrypt_bytes(bytes: &[u8], to: &[age::x25519::Recipient]) -> Result<Vec<u8>, CryptoError> {
    let encryptor = age::Encryptor::with_recipients(to.iter().map(|r| r as &dyn age::Recipient))
        .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    let mut out = Vec::new();
    let mut writer = encryptor
        .wrap_output(&mut out)
        .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    writer
        .write_all(bytes)
        .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    writer
        .finish()
        .map_err(|e| CryptoError::Encrypt(e.to_string()))?;
    Ok(out)
}

/// Decrypts a small message with `identity`.
///
/// Errors: [`CryptoError::Decrypt`].
pub fn decrypt_bytes(
    bytes: &[u8],
    identity: &age::x25519::Identity,
) -> Result<Vec<u8>, CryptoError> {
    let decryptor =
        age::Decryptor::new_buffered(bytes).map_err(|e| CryptoError::Decrypt(e.to_string()))?;
    let mut reader = decryptor
        .decrypt(std::iter::once(identity as &dyn age::Identity))
        .map_err(|e| CryptoError::Decrypt(e.to_string()))?;
    let mut out = Vec::new();
    reader
        .read_to_end(&mut out)
        .map_err(|e| CryptoError::Decrypt(e.to_string()))?;
    Ok(out)
}

/// Signs `message`; returns the base64 signature.
pub fn sign(message: &[u8], key: &ed25519_dalek::SigningKey) -> String {
    STANDARD.encode(key.sign(message).to_bytes())
}

/// Checks a base64 signature of `message` against `key`.
///
/// Errors: [`CryptoError::Signature`] when it is malformed or does not match.
pub fn verify(
    message: &[u8],
    signature: &str,
    key: &ed25519_dalek::VerifyingKey,
) -> Result<(), CryptoError> {
    let bytes: [u8; 64] = STANDARD
        .decode(signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| CryptoError::Signature("not 64 bytes of base64".to_string()))?;
    key.verify(message, &ed25519_dalek::Signature::from_bytes(&bytes))
        .map_err(|_| {
            CryptoError::Signature("not signed by the configured producer key".to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refusals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (recipient, public) = keygen(dir.path()).expect("keygen");
        assert!(keygen(dir.path()).is_err(), "never overwrites keys");
        let id = identity(&dir.path().join("identity.age")).expect("identity");
        let to = recipients(&[recipient]).expect("recipients");
        let plain = dir.path().join("plain");
        std::fs::write(&plain, vec![7u8; 200_000]).expect("write");
        let sealed = dir.path().join("sealed");
        let opened = dir.path().join("opened");
        encrypt_file(&plain, &sealed, &to).expect("encrypt");
        decrypt_file(&sealed, &opened, &id).expect("decrypt");
        assert_eq!(std::fs::read(&opened).expect("read"), vec![7u8; 200_000]);
        // A flipped byte is caught.
        let mut bytes = std::fs::read(&sealed).expect("read");
        let last = bytes.len() - 10;
        bytes[last] ^= 1;
        std::fs::write(&sealed, &bytes).expect("write");
        assert!(decrypt_file(&sealed, &opened, &id).is_err());
        // Another identity cannot read it.
        let other = age::x25519::Identity::generate();
        let small = encrypt_bytes(b"hello", &to).expect("encrypt");
        assert_eq!(decrypt_bytes(&small, &id).expect("decrypt"), b"hello");
        assert!(decrypt_bytes(&small, &other).is_err());
        // Signatures.
        let key = signing_key(&dir.path().join("signing.key")).expect("signing key");
        let verifying = public_key(&public).expect("public");
        let sig = sign(b"manifest", &key);
        verify(b"manifest", &sig, &verifying).expect("valid");
        assert!(verify(b"manifest!", &sig, &verifying).is_err());
        let stranger = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
        assert!(verify(b"manifest", &sign(b"manifest", &stranger), &verifying).is_err());
    }
}
