//! Files gitsync writes for itself: every write atomic (a temporary file beside the target,
//! fsync, rename), and JSON state files read and written one way, with one policy for a
//! file that is there but cannot be read: an error naming the file (never a silent start
//! from scratch, which would forget a pin, a lease or an offset).

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
    use std::os::unix::fs::PermissionsExt;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".tmp-")
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(dir)
        .map_err(io(dir))?;
    tmp.write_all(bytes).map_err(io(path))?;
    tmp.as_file().sync_data().map_err(io(path))?;
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
}
