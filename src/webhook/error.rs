//! What can go wrong in the webhook mirrors, as one type ([`WebhookError`]), its kinds set
//! where the failure is found.

/// A webhook mirror's failure to start or to queue.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// A secret or token cannot be read: the mirror (or section) and what is missing.
    #[error("{0}")]
    Secret(String),
    /// A setting cannot be used: an unknown provider, a bad branch pattern.
    #[error("{0}")]
    Setting(String),
    /// The intake cannot listen, or its TLS files cannot be read.
    #[error("{0}")]
    Listen(String),
    /// The queue cannot take a job or say how deep it is (the local spool or SQS).
    #[error("{0}")]
    Queue(String),
    /// A state file under `~/.gitsync/webhooks/` cannot be written.
    #[error(transparent)]
    File(#[from] crate::util::fs::PathError),
}
