//! Partition sync: keeping repositories in sync across a network partition through an S3
//! bucket or a directory (git-partition-sync's job), with encrypted, signed, incremental git bundles.
//!
//! The producer keeps a bare mirror of each source, exports what moved as an incremental
//! `git bundle` (a full one the first time), encrypts it with age to the configured
//! recipients, uploads it under an opaque content-addressed key, and publishes a signed,
//! encrypted [`manifest::Manifest`] with a conditional write. The consumer verifies the
//! manifest against the producer's public key, refuses an older generation, downloads
//! only the bundles it lacks, checks each (sha256, `git bundle verify`), and pushes
//! `<sha>:refs/heads/<destination branch>`, fast-forward only unless the pair says
//! `force`. Both sides keep their state in a file under `~/.gitsync/partition/`.

pub mod consumer;
pub mod crypto;
pub mod manifest;
pub mod producer;

use std::path::PathBuf;
use std::time::Duration;

use sha2::Digest;

use crate::config::{Config, PairEnd, PartitionConfig, SyncPair, expand_tilde};

/// Why one pair failed: reported in that pair's result while the other pairs go on.
#[derive(Debug, thiserror::Error)]
pub enum PairError {
    /// The pair's source or destination cannot be resolved.
    #[error(transparent)]
    Setting(#[from] PartitionError),
    /// A git command failed (fetch, bundle, push).
    #[error(transparent)]
    Git(#[from] crate::git::ops::GitError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A bundle cannot be read, decrypted or verified, or lacks the pair's commit.
    #[error("{0}")]
    Bundle(String),
    /// The source has no such branch.
    #[error("the source has no branch {0}")]
    NoBranch(String),
    /// The destination refused the push.
    #[error("{0}")]
    Push(String),
}

/// A partition failure that stops a whole round (a failure of one pair is reported in
/// that pair's result instead).
#[derive(Debug, thiserror::Error)]
pub enum PartitionError {
    /// The `partition` section is missing or incomplete.
    #[error("partition: {0}")]
    Config(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A key or the manifest was refused.
    #[error(transparent)]
    Manifest(#[from] manifest::ManifestError),
    /// A key could not be read.
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
    /// The manifest is older than the one applied last: a replay or a rollback.
    #[error(
        "manifest generation {found} is older than generation {applied} applied before: refused (replay or rollback?)"
    )]
    Rollback {
        /// The generation in the store.
        found: u64,
        /// The generation applied last.
        applied: u64,
    },
    /// A state file cannot be read or written.
    #[error("{path}: {message}")]
    State {
        /// The file.
        path: String,
        /// What went wrong.
        message: String,
    },
}

/// One pair with its URLs resolved.
#[derive(Debug, Clone)]
pub struct Pair {
    /// Stable id: hex SHA-256 (first 16 bytes) of source and destination.
    pub id: String,
    /// The pair as configured.
    pub spec: SyncPair,
}

/// The resolved `partition` settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The store URL.
    pub store: String,
    /// S3 endpoint and region.
    pub s3: crate::store::S3Options,
    /// The pairs.
    pub pairs: Vec<Pair>,
    /// State, mirrors and caches: `~/.gitsync/partition`.
    pub dir: PathBuf,
    /// GitLab base URL, for pairs named by project and group.
    pub gitlab: Option<String>,
    /// Producer: recipients.
    pub recipients: Vec<String>,
    /// Producer: signing key file.
    pub signing_key: Option<PathBuf>,
    /// Consumer: identity file.
    pub identity: Option<PathBuf>,
    /// Consumer: the producer's public key.
    pub producer_public_key: Option<String>,
    /// Sleep between rounds.
    pub interval: Duration,
    /// Limit of one git command (clone, fetch, push).
    pub git_timeout: Duration,
}

fn pair_id(pair: &SyncPair) -> String {
    let describe = |end: &PairEnd| {
        format!(
            "{}|{}|{}|{}",
            end.url.as_deref().unwrap_or(""),
            end.group.as_deref().unwrap_or(""),
            end.project_name.as_deref().unwrap_or(""),
            end.branch
        )
    };
    let digest = sha2::Sha256::digest(
        format!(
            "{}->{}",
            describe(&pair.source),
            describe(&pair.destination)
        )
        .as_bytes(),
    );
    hex::encode(&digest[..16])
}

impl Settings {
    /// The settings from `config.partition`.
    ///
    /// Errors: [`PartitionError::Config`] when the section, the store or the pairs are
    /// missing, or the pairs file cannot be read.
    pub fn from_config(config: &Config) -> Result<Self, PartitionError> {
        let section: &PartitionConfig = config.partition.as_ref().ok_or_else(|| {
            PartitionError::Config("no `partition` section in the configuration".to_string())
        })?;
        let store = section
            .store
            .clone()
            .ok_or_else(|| PartitionError::Config("`partition.store` is not set".to_string()))?;
        let mut pairs = section.pairs.clone().unwrap_or_default();
        if let Some(file) = &section.pairs_file {
            let path = expand_tilde(file);
            let text = std::fs::read_to_string(&path).map_err(|e| {
                PartitionError::Config(format!("pairs_file {}: {e}", path.display()))
            })?;
            let listed: Vec<SyncPair> = yaml_serde::from_str(&text).map_err(|e| {
                PartitionError::Config(format!("pairs_file {}: {e}", path.display()))
            })?;
            pairs.extend(listed);
        }
        Ok(Settings {
            store,
            s3: crate::store::S3Options {
                endpoint_url: section.endpoint_url.clone(),
                region: section.region.clone(),
            },
            pairs: pairs
                .into_iter()
                .map(|spec| Pair {
                    id: pair_id(&spec),
                    spec,
                })
                .collect(),
            dir: config.home.join("partition"),
            gitlab: section.gitlab.as_ref().map(|g| g.base_url.clone()),
            recipients: section.recipients.clone().unwrap_or_default(),
            signing_key: section.signing_key.as_deref().map(expand_tilde),
            identity: section.identity.as_deref().map(expand_tilde),
            producer_public_key: section.producer_public_key.clone(),
            interval: section
                .interval
                .as_ref()
                .map_or(Duration::from_secs(300), |d| d.0),
            git_timeout: config.pull.fetch_timeout.max(Duration::from_secs(600)),
        })
    }

    /// The git URL of one end: its `url`, or `<gitlab.base_url>/<group>/<project>.git`.
    ///
    /// Errors: [`PartitionError::Config`] when neither is given.
    pub fn url_of(&self, end: &PairEnd) -> Result<String, PartitionError> {
        if let Some(url) = &end.url {
            return Ok(url.clone());
        }
        match (&self.gitlab, &end.group, &end.project_name) {
            (Some(base), Some(group), Some(project)) => Ok(format!(
                "{}/{group}/{project}.git",
                base.trim_end_matches('/')
            )),
            (None, Some(_), Some(_)) => Err(PartitionError::Config(
                "a pair names a GitLab project but `partition.gitlab.base_url` is not set"
                    .to_string(),
            )),
            _ => Err(PartitionError::Config(
                "a pair end needs `url`, or `project_name` and `group`".to_string(),
            )),
        }
    }

    /// Environment for git commands: with `GITLAB_TOKEN` set, an HTTP `Authorization`
    /// header (basic auth as `oauth2`, GitLab's documented form) passed through
    /// `GIT_CONFIG_COUNT`, so the token is in no URL, argument or log.
    pub fn git_env(&self) -> Vec<(String, String)> {
        match std::env::var("GITLAB_TOKEN") {
            Ok(token) if !token.is_empty() && self.gitlab.is_some() => {
                crate::git::refsync::credential_env(
                    Some(&format!("oauth2:{token}")),
                    crate::git::refsync::SshFiles::default(),
                )
            }
            _ => Vec::new(),
        }
    }
}

/// Reads a JSON state file ([`crate::util::fs::read_json`]), or the default when it does
/// not exist.
///
/// Errors: [`PartitionError::State`] when it exists but cannot be read or parsed.
fn read_state<T: serde::de::DeserializeOwned + Default>(
    path: &std::path::Path,
) -> Result<T, PartitionError> {
    crate::util::fs::read_json(path).map_err(|e| PartitionError::State {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Writes a JSON state file atomically ([`crate::util::fs::write_json`]).
///
/// Errors: [`PartitionError::State`].
fn write_state<T: serde::Serialize>(
    path: &std::path::Path,
    state: &T,
) -> Result<(), PartitionError> {
    crate::util::fs::write_json(path, state).map_err(|e| PartitionError::State {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// The hex SHA-256 and the size in bytes of the file at `path`, read in 64 KiB blocks.
///
/// Errors: the file cannot be read.
pub fn sha256_file(path: &std::path::Path) -> std::io::Result<(String, u64)> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex::encode(hasher.finalize()), size))
}

/// How one pair fared in a round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairOutcome {
    /// The pair's id.
    pub id: String,
    /// The pair for people, such as `a.git master -> b.git main` (see [`pair_name`]).
    pub name: String,
    /// What happened ("exported increment", "pushed ...", "nothing new", or the plan in a
    /// dry run).
    pub action: String,
    /// The error, when the pair failed (the others went on).
    pub error: Option<String>,
}

/// One end of a pair for people: the repository's last path component (or its GitLab
/// group/project) and the branch, such as `a.git master`. Credentials never appear.
pub fn end_name(end: &crate::config::PairEnd) -> String {
    let repo = match (&end.url, &end.project_name) {
        (Some(url), _) => crate::util::redact::redact_url(url)
            .trim_end_matches('/')
            .rsplit(['/', ':'])
            .next()
            .unwrap_or_default()
            .to_string(),
        (None, Some(project)) => match &end.group {
            Some(group) => format!("{group}/{project}"),
            None => project.clone(),
        },
        (None, None) => "?".to_string(),
    };
    format!("{repo} {}", end.branch)
}

/// A pair for people: `a.git master -> b.git main`.
pub fn pair_name(source: &crate::config::PairEnd, destination: &crate::config::PairEnd) -> String {
    format!("{} -> {}", end_name(source), end_name(destination))
}

/// Runs `role` every `settings.interval` until the task is dropped: the daemon component
/// for a `partition:` section with a `role`. Failures are logged; the loop goes on.
pub async fn run_loop(settings: Settings, role: crate::config::PartitionRole) {
    let store = match crate::store::open(&settings.store, &settings.s3).await {
        Ok(store) => store,
        Err(err) => {
            tracing::error!(%err, "partition sync not started");
            return;
        }
    };
    tracing::info!(store = %store.describe(), ?role, "partition sync started");
    loop {
        let result = match role {
            crate::config::PartitionRole::Producer => {
                producer::run_once(&settings, store.as_ref(), producer::Options::default()).await
            }
            crate::config::PartitionRole::Consumer => {
                consumer::run_once(&settings, store.as_ref(), false).await
            }
        };
        match result {
            Ok(outcomes) => {
                for outcome in outcomes.iter().filter(|o| o.error.is_some()) {
                    tracing::warn!(pair = %outcome.id, error = outcome.error.as_deref().unwrap_or(""), "partition pair failed");
                }
            }
            Err(err) => tracing::warn!(%err, "partition round failed"),
        }
        tokio::time::sleep(settings.interval).await;
    }
}
