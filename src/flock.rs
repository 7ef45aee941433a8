//! Exclusive `flock(2)` locks on files, the one way gitsync serializes work across tasks and
//! processes (a bare cache's refresh, one deploy's runs). Each call opens the file anew, so
//! two tasks of one process exclude each other too; the kernel drops a lock when its holder
//! dies, so no lock outlives a crash.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// Opens (creating it and its folder) the lock file at `path`.
fn open(path: &Path) -> std::io::Result<File> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
}

/// Takes the lock on `path` if nobody holds it: `Ok(None)` when another holder has it.
///
/// Errors: the file cannot be made or locked for another reason.
pub fn try_exclusive(path: &Path) -> std::io::Result<Option<Flock<File>>> {
    match Flock::lock(open(path)?, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(std::io::Error::from(errno)),
    }
}

/// Takes the lock on `path`, waiting (in a blocking thread) for its holder to let go.
/// Held until the returned value is dropped.
///
/// Errors: the file cannot be made or locked.
pub async fn exclusive(path: PathBuf) -> std::io::Result<Flock<File>> {
    tokio::task::spawn_blocking(move || {
        Flock::lock(open(&path)?, FlockArg::LockExclusive).map_err(|(_, e)| std::io::Error::from(e))
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_held_lock_is_not_taken_again_until_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("deep/lock");
        let held = exclusive(path.clone()).await.expect("lock");
        assert!(try_exclusive(&path).expect("try").is_none(), "taken twice");
        drop(held);
        assert!(try_exclusive(&path).expect("try").is_some());
    }
}
