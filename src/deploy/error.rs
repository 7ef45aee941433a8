//! What can go wrong in a deploy, as one type ([`DeployError`]), its kinds set where the
//! failure is found: the command line maps [`DeployError::Usage`] to exit code 2, a
//! target's failure is reported for that target while the others go on.

use std::path::PathBuf;

/// A deploy's failure.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The request names what the deploy does not have: a target, a revision.
    #[error("{0}")]
    Usage(String),
    /// The deploy's own lock (`<dir>/lock`, `flock(2)`) cannot be made or taken.
    #[error("cannot lock {}: {source}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A state or record file under `~/.gitsync/deploy/<name>/` cannot be read or written
    /// (its path, and what to do when it is corrupt).
    #[error(transparent)]
    File(#[from] crate::util::fs::PathError),
    /// A file of the export cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// git failed on the deploy's repository: what it printed.
    #[error("{0}")]
    Git(String),
    /// The secret scanner cannot be picked or run (its name, and how to install it).
    #[error("{0}")]
    Scanner(String),
    /// A step on a target failed: the step, what ssh or rsync said, and what became of
    /// the target's `current`.
    #[error("{0}")]
    Target(String),
    /// A value (a path, an ssh option) that cannot be passed to the remote shell.
    #[error("{0:?} cannot be passed to a remote shell")]
    Unquotable(String),
}

impl From<crate::git::ops::GitError> for DeployError {
    /// What git printed when it failed, else what kept it from running.
    fn from(error: crate::git::ops::GitError) -> DeployError {
        DeployError::Git(match error {
            crate::git::ops::GitError::Failed { stderr, .. } => stderr,
            other => other.to_string(),
        })
    }
}

impl DeployError {
    /// The I/O failure `source` on `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> DeployError {
        let path = path.into();
        move |source| DeployError::Io { path, source }
    }
}
