//! The two locks of a fast-forward: gitsync's own (`gitsync/ff.lock`, an `flock(2)` that
//! the kernel releases when the process dies, so one helper at a time prepares, moves or
//! recovers a worktree) and git's (`index.lock`, taken with git's own protocol, only for
//! the moment the worktree, the branch and the index change).
//!
//! `index.lock` is taken by `link(2)`ing a file gitsync made and journaled first, so the
//! lock's inode is known *before* the lock exists: a kill at any instant leaves either no
//! lock or one that [`super::recover`] recognises as its own and removes. It never touches
//! a lock it did not take.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

use super::journal::Writer;
use super::{Folders, Refused};
use crate::git::procs;

/// The reason given while another helper works on the same worktree.
pub const RUNNING: &str = "a fast-forward is running in this repository";

/// gitsync's lock on one worktree, held for as long as the value lives.
pub(super) struct HelperLock {
    _lock: Flock<fs::File>,
}

impl HelperLock {
    /// Takes the lock of the worktree in `folders`, without waiting.
    ///
    /// Errors: [`RUNNING`] (passing) when another helper holds it; an I/O message with the
    /// path when the lock file cannot be made.
    pub fn take(folders: &Folders) -> Result<HelperLock, Refused> {
        let dir = folders.git_dir.join("gitsync");
        let path = dir.join("ff.lock");
        let file = fs::create_dir_all(&dir)
            .and_then(|()| {
                fs::File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
            })
            .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => Ok(HelperLock { _lock: lock }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(Refused::passing(RUNNING)),
            Err((_, errno)) => Err(format!("cannot lock {}: {errno}", path.display()).into()),
        }
    }
}

/// `index.lock`, held by this process; removed on drop unless someone else's stands there.
pub(super) struct IndexLock {
    path: PathBuf,
    ino: u64,
}

impl IndexLock {
    /// Takes `index.lock` of the worktree in `folders`: makes `candidate` (in the staging
    /// folder), journals its inode, then links it to `index.lock`, which fails when the
    /// lock exists, exactly as git's `O_CREAT|O_EXCL` does.
    ///
    /// Errors: the lock's holder as [`procs::describe`] says it ("index.lock exists: ...",
    /// passing), or the I/O error with the path.
    pub fn take(
        folders: &Folders,
        candidate: &Path,
        journal: &mut Writer,
    ) -> Result<IndexLock, Refused> {
        let path = folders.git_dir.join("index.lock");
        let file = fs::File::create(candidate)
            .map_err(|e| format!("cannot create {}: {e}", candidate.display()))?;
        let ino = file
            .metadata()
            .map(|m| m.ino())
            .map_err(|e| format!("cannot read {}: {e}", candidate.display()))?;
        drop(file);
        journal.line(&format!("lock {ino}"))?;
        match fs::hard_link(candidate, &path) {
            Ok(()) => Ok(IndexLock { path, ino }),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                let state = procs::index_lock(&folders.worktree, &folders.git_dir);
                Err(Refused::passing(
                    procs::describe(&state, &folders.git_dir).unwrap_or_else(|| {
                        "index.lock exists: another git command is running".into()
                    }),
                ))
            }
            Err(err) => Err(format!("cannot create {}: {err}", path.display()).into()),
        }
    }

    /// Removes the `index.lock` of `git_dir` when it is the one whose inode is `ino` (taken
    /// by a helper that was killed).
    pub fn release_recorded(git_dir: &Path, ino: u64) {
        let path = git_dir.join("index.lock");
        if ino != 0 && path.symlink_metadata().is_ok_and(|m| m.ino() == ino) {
            let _ = fs::remove_file(&path);
        }
    }
}

impl Drop for IndexLock {
    fn drop(&mut self) {
        if self
            .path
            .symlink_metadata()
            .is_ok_and(|m| m.ino() == self.ino)
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}
