//! What can go wrong inside the fast-forward, as one type ([`FfError`]), its kind set
//! where the failure is found. Every one of them refuses the fast-forward (it becomes a
//! [`super::Refused`] that waits for a change) after the journal put back what was moved.

/// A failure inside the fast-forward.
#[derive(Debug, thiserror::Error)]
pub enum FfError {
    /// The repository, a commit or a tree cannot be opened or read (gix).
    #[error("{0}")]
    Repo(String),
    /// A git command the helper runs cannot run or failed.
    #[error("{0}")]
    Git(String),
    /// A file of the worktree, the staging folder or the kept folder cannot be read,
    /// written, moved or removed.
    #[error("{0}")]
    Files(String),
    /// The index cannot be read, changed or written.
    #[error("{0}")]
    Index(String),
    /// Another fast-forward of the repository holds its lock.
    #[error("{0}")]
    Busy(String),
    /// The journal cannot be written or read back.
    #[error("{0}")]
    Journal(String),
}

impl From<FfError> for super::Refused {
    fn from(error: FfError) -> super::Refused {
        super::Refused::from(error.to_string())
    }
}
