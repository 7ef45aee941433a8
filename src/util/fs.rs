//! Files gitsync writes for itself: every write atomic (a temporary file beside the target,
//! fsync, rename; the fsync left out only for records rewritten at every run), and JSON
//! state files read and written one way, with one policy for a file that is there but
//! cannot be read: an error naming the file (never a silent start from scratch, which would
//! forget a pin, a lease or an offset).

use std::io::Write;
use std::path::{Path, PathBuf};

/// A file operation that failed, with its path.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// Reading, writing or renaming failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A state file holds something that is not its JSON.
    #[error("{} is corrupt ({source}): move it aside to start that state over", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        #[source]
        source: serde_json::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PathError + '_ {
    move |source| PathError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it (`.tmp-*`), fsync,
/// rename; the folder is created. The file gets the user's umask applied to 0666, as any
/// file the user writes (so a hub on a shared filesystem, or a mirror folder a web server
/// reads, works as the umask says).
///
/// Errors: [`PathError::Io`] with the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PathError> {
    write_renamed(path, bytes, true)
}

/// Writes `bytes` to `path` as [`write_atomic`] does, without the fsync: a reader sees the
/// old file or the new one, never half of one, but after a power loss the file may be the
/// old one (or, on a filesystem that does not order data before the rename, empty). For
/// records rewritten at every run, which git itself does not sync either (its index and
/// refs are not synced under the default `core.fsync`): the fsync costs about 0.7 ms on
/// ext4, a twentieth of a whole `gitsync sync`.
///
/// Errors: [`PathError::Io`] with the path.
pub fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), PathError> {
    write_renamed(path, bytes, false)
}

fn write_renamed(path: &Path, bytes: &[u8], durable: bool) -> Result<(), PathError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(io(dir))?;
    tmp.write_all(bytes).map_err(io(path))?;
    if durable {
        tmp.as_file().sync_data().map_err(io(path))?;
    }
    tmp.persist(path).map_err(|e| PathError::Io {
        path: path.to_path_buf(),
        source: e.error,
    })?;
    Ok(())
}

/// Reads the JSON state file at `path`, or `T::default()` when there is none.
///
/// Errors: [`PathError::Corrupt`] when it is not `T`'s JSON, [`PathError::Io`] when it
/// cannot be read.
pub fn read_json<T: serde::de::DeserializeOwned + Default>(path: &Path) -> Result<T, PathError> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| PathError::Corrupt {
            path: path.to_path_buf(),
            source,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(T::default()),
        Err(e) => Err(io(path)(e)),
    }
}

/// Writes `value` as the JSON state file at `path` (pretty-printed), atomically.
///
/// Errors: [`PathError::Io`] with the path.
pub fn write_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<(), PathError> {
    let bytes = serde_json::to_vec_pretty(value)
        .map_err(|e| io(path)(std::io::Error::other(e.to_string())))?;
    write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_file_is_missing_read_back_or_named_when_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/state.json");
        let empty: Vec<u32> = read_json(&path).expect("missing is the default");
        assert!(empty.is_empty());
        write_json(&path, &vec![1u32, 2]).expect("write");
        assert_eq!(read_json::<Vec<u32>>(&path).expect("read"), vec![1, 2]);
        std::fs::write(&path, "{not json").expect("write");
        let err = read_json::<Vec<u32>>(&path).expect_err("corrupt");
        assert!(
            err.to_string().contains("state.json is corrupt")
                && err.to_string().contains("move it aside"),
            "{err}"
        );
    }

    #[test]
    fn a_replacing_write_swaps_the_whole_file_and_leaves_no_temporary() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state/repo.json");
        write_replacing(&path, b"first, and longer than the second").expect("write");
        let before = std::fs::metadata(&path).expect("stat").ino();
        write_replacing(&path, b"second").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"second");
        // A rename over the file: a reader holding the old one keeps reading it whole.
        assert_ne!(std::fs::metadata(&path).expect("stat").ino(), before);
        let names: Vec<String> = std::fs::read_dir(path.parent().expect("folder"))
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["repo.json"]);
    }
}
