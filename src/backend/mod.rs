//! Where states are stored and how push events travel between machines.
//!
//! Two traits, [`StateStore`] and [`EventBus`], each a trait object chosen by the config's
//! `backend` key. `local` (a folder, no account) is the default; `aws` (DynamoDB, SNS FIFO,
//! SQS FIFO) comes with its own issue. This module owns the traits and the choice; it does
//! not know about git.

pub mod aws;
pub mod local;
pub mod outage;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::{BackendKind, Config};
use crate::model::{HostRecord, PushEvent, RepoState};

/// A backend failure. Every variant is recoverable: the daemon logs it and carries on.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A file of the local backend could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored record could not be decoded.
    #[error("{path}: malformed record: {message}")]
    Malformed {
        /// Where the record is.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The backend's configuration is incomplete or wrong.
    #[error("{0}")]
    Config(String),
    /// An AWS call failed (unreachable, throttled, denied, expired credentials, ...).
    #[error("AWS {operation} failed: {message}")]
    Aws {
        /// The API operation, such as `PutItem`.
        operation: &'static str,
        /// The error with its causes.
        message: String,
    },
}

/// Stores one [`RepoState`] per (host, repository) and lists them.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Short name for logs and `doctor`: `local` or `aws`.
    fn name(&self) -> &'static str;
    /// Checks the store can be reached and written.
    ///
    /// Errors: the reason it cannot, as a [`BackendError`].
    async fn health(&self) -> Result<(), BackendError>;
    /// Writes `state`, replacing the record for (`state.host`, `state.repo`).
    async fn put(&self, state: &RepoState) -> Result<(), BackendError>;
    /// Lists every record, or only those of `host`. Malformed records are skipped and
    /// logged, never fatal.
    async fn list(&self, host: Option<&str>) -> Result<Vec<RepoState>, BackendError>;
    /// Records that `record.host` is alive (start-up and heartbeat), replacing its record.
    async fn heartbeat(&self, record: &HostRecord) -> Result<(), BackendError>;
    /// The hosts' liveness records, or only `host`'s, sorted by host. Malformed records are
    /// skipped and logged.
    ///
    /// Errors: the store cannot be read, as a [`BackendError`].
    async fn hosts(&self, host: Option<&str>) -> Result<Vec<HostRecord>, BackendError>;
    /// Removes the record of (`host`, `repo`), or with `repo` `None` every record of `host`
    /// and its heartbeat. Returns how many repository records were removed (0: none was
    /// there).
    ///
    /// Errors: the store cannot be written, as a [`BackendError`].
    async fn forget(&self, host: &str, repo: Option<&str>) -> Result<usize, BackendError>;
}

/// One received event and what to acknowledge once it is handled.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The event.
    pub event: PushEvent,
    /// Opaque acknowledgement token for [`EventBus::ack`].
    pub token: String,
}

/// Carries [`PushEvent`]s to every other host, at least once.
#[async_trait]
pub trait EventBus: Send + Sync {
    /// Short name for logs: `local` or `aws`.
    fn name(&self) -> &'static str;
    /// Publishes `event` to every other host.
    async fn publish(&self, event: &PushEvent) -> Result<(), BackendError>;
    /// Waits up to `wait` for events from other hosts and returns those not yet
    /// acknowledged (possibly none). Malformed events are logged and skipped.
    async fn receive(&self, wait: Duration) -> Result<Vec<Delivery>, BackendError>;
    /// Marks a delivery handled, so it is not received again.
    async fn ack(&self, delivery: &Delivery) -> Result<(), BackendError>;
    /// Marks every delivery of a handled batch, in order; the default acknowledges them one
    /// by one. Returns the first error (the others are still tried).
    async fn ack_all(&self, deliveries: &[Delivery]) -> Result<(), BackendError> {
        let mut first = None;
        for delivery in deliveries {
            if let Err(err) = self.ack(delivery).await {
                first.get_or_insert(err);
            }
        }
        first.map_or(Ok(()), Err)
    }
    /// Keeps a delivery from being handed out again for `by` more (while a long fetch runs).
    /// The local backend hands nothing out twice while it runs, so the default does nothing.
    async fn extend(&self, _delivery: &Delivery, _by: Duration) -> Result<(), BackendError> {
        Ok(())
    }
}

/// The backend pair the config asks for.
pub struct Backend {
    /// Where states go.
    pub store: Arc<dyn StateStore>,
    /// Where events go.
    pub bus: Arc<dyn EventBus>,
}

/// Whether the hub is the default one under `~/.gitsync`, which gitsync may create (a
/// configured `local.path` must exist already).
fn default_hub(config: &Config) -> bool {
    config.hub_path() == config.home.join("hub")
}

/// Opens the backend named by `config.backend` for `config.hostname`. Contacts nothing
/// remote: an unreachable backend shows up as errors of the calls, not here.
///
/// Errors: [`BackendError::Config`] for a configured hub folder that does not exist or an
/// incomplete `aws` section; I/O errors creating the hub's subfolders.
pub async fn open(config: &Config) -> Result<Backend, BackendError> {
    match config.backend {
        BackendKind::Local => {
            let hub = Arc::new(local::LocalHub::open(
                &config.hub_path(),
                &config.hostname,
                default_hub(config),
            )?);
            Ok(Backend {
                store: hub.clone(),
                bus: hub,
            })
        }
        BackendKind::Aws => aws::open(config).await,
    }
}

/// Opens only the state store that `config.backend` names (what `status`, `bootstrap`,
/// `forget` and `doctor` read): with `aws`, the SNS topic need not be configured yet.
/// Contacts nothing remote.
///
/// Errors: as [`open`].
pub async fn open_store(config: &Config) -> Result<Arc<dyn StateStore>, BackendError> {
    match config.backend {
        BackendKind::Local => Ok(Arc::new(local::LocalHub::open(
            &config.hub_path(),
            &config.hostname,
            default_hub(config),
        )?)),
        BackendKind::Aws => aws::open_store(config).await,
    }
}
