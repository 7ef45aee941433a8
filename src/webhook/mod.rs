//! Webhook-triggered one-way mirrors (what a forge-webhook sync API does, done safely): a forge says "pushed",
//! gitsync brings the target in line with the source.
//!
//! [`verify`] checks each forge's signature, [`intake`] is the HTTP server (axum) that
//! answers `202` once a job is durably queued, [`queue`] holds the jobs (local files or an
//! SQS FIFO queue), [`run`] runs a mirror with a compare-and-swap per ref, and
//! [`worker`] runs the jobs with retries and a reconciliation interval. The source and
//! target always come from the config, by mirror name, never from the request.

pub mod error;
pub mod intake;
pub mod limit;
pub mod queue;
pub mod run;
pub mod sync;
pub mod verify;
pub mod worker;
pub use error::WebhookError;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, WebhookMirrorConfig, WebhooksConfig};

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8787";
/// Default largest body, in bytes.
pub const DEFAULT_MAX_BODY: usize = 1 << 20;
/// Default reconciliation interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(3600);

/// One mirror, resolved: secrets read, patterns compiled.
#[derive(Clone)]
pub struct PushMirror {
    /// The entry as configured.
    pub spec: WebhookMirrorConfig,
    /// How its webhooks are verified.
    pub provider: verify::Provider,
    /// The webhook secret (HMAC key or GitLab token).
    pub secret: Option<Vec<u8>>,
    /// The secret path segment, when configured.
    pub path_token: Option<Vec<u8>>,
    /// Source addresses allowed (empty: any).
    pub allow_from: Vec<ipnet::IpNet>,
    /// Which refs it carries.
    pub filter: run::Filter,
    /// Source and target with their credentials.
    pub remotes: run::Remotes,
}

impl std::fmt::Debug for PushMirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("PushMirror")
            .field("name", &self.spec.name)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

fn read_secret(
    env: Option<&str>,
    file: Option<&str>,
    what: &str,
) -> Result<Option<Vec<u8>>, WebhookError> {
    if let Some(var) = env {
        return match std::env::var(var) {
            Ok(v) if !v.is_empty() => Ok(Some(v.trim().as_bytes().to_vec())),
            _ => Err(WebhookError::Secret(format!(
                "{what}: the environment variable {var} is not set"
            ))),
        };
    }
    if let Some(path) = file {
        let path = crate::config::expand_tilde(path);
        return std::fs::read_to_string(&path)
            .map(|s| Some(s.trim().as_bytes().to_vec()))
            .map_err(|e| WebhookError::Secret(format!("{what}: {}: {e}", path.display())));
    }
    Ok(None)
}

impl PushMirror {
    /// Resolves `spec`: reads its secrets from the environment or files, and checks that
    /// its ssh key and known_hosts files exist.
    ///
    /// Errors: a message naming the mirror and what is missing.
    pub fn resolve(spec: &WebhookMirrorConfig) -> Result<PushMirror, WebhookError> {
        let name = &spec.name;
        let provider = verify::Provider::parse(
            spec.provider.as_str(),
            spec.gitlab_signing,
            spec.signature_header.as_deref(),
        )
        .map_err(|e| WebhookError::Setting(format!("mirror {name}: {e}")))?;
        let secret = read_secret(
            spec.secret_env.as_deref(),
            spec.secret_file.as_deref(),
            &format!("mirror {name}: webhook secret"),
        )?;
        if provider.needs_secret() && secret.is_none() {
            return Err(WebhookError::Secret(format!(
                "mirror {name}: no webhook secret configured"
            )));
        }
        let path_token = read_secret(
            spec.path_token_env.as_deref(),
            spec.path_token_file.as_deref(),
            &format!("mirror {name}: path token"),
        )?;
        let allow_from = spec
            .allow_from
            .iter()
            .filter_map(|c| crate::config::webhooks::parse_net(c))
            .collect();
        let filter = run::Filter::new(
            spec.branches.as_deref().unwrap_or(&["*".to_string()]),
            spec.tags.unwrap_or(true),
        )
        .map_err(|e| WebhookError::Setting(format!("mirror {name}: {e}")))?;
        let token = |env: &Option<String>, file: &Option<String>, what: &str| {
            read_secret(
                env.as_deref(),
                file.as_deref(),
                &format!("mirror {name}: {what}"),
            )
            .map(|o| o.map(|b| String::from_utf8_lossy(&b).into_owned()))
        };
        let source_token = token(
            &spec.source_token_env,
            &spec.source_token_file,
            "source token",
        )?;
        let target_token = token(
            &spec.target_token_env,
            &spec.target_token_file,
            "target token",
        )?;
        let key = |k: &Option<String>| k.as_deref().map(crate::config::expand_tilde);
        let (source_key, target_key) = (key(&spec.source_ssh_key), key(&spec.target_ssh_key));
        let known_hosts = key(&spec.known_hosts);
        for (field, file) in [
            ("source_ssh_key", &source_key),
            ("target_ssh_key", &target_key),
            ("known_hosts", &known_hosts),
        ] {
            if let Some(file) = file.as_ref().filter(|f| !f.is_file()) {
                return Err(WebhookError::Setting(format!(
                    "mirror {name}: {field} {} is not a file",
                    file.display()
                )));
            }
        }
        Ok(PushMirror {
            spec: spec.clone(),
            provider,
            secret,
            path_token,
            allow_from,
            filter,
            remotes: run::Remotes {
                source: spec.source.clone(),
                source_env: crate::git::refsync::credential_env(
                    source_token.as_deref(),
                    crate::git::refsync::SshFiles {
                        key: source_key.as_deref(),
                        known_hosts: known_hosts.as_deref(),
                    },
                ),
                target: spec.target.clone(),
                target_env: crate::git::refsync::credential_env(
                    target_token.as_deref(),
                    crate::git::refsync::SshFiles {
                        key: target_key.as_deref(),
                        known_hosts: known_hosts.as_deref(),
                    },
                ),
            },
        })
    }

    /// The reconciliation interval.
    pub fn interval(&self) -> Duration {
        self.spec
            .interval
            .as_ref()
            .map_or(DEFAULT_INTERVAL, |d| d.0)
    }
}

/// Everything the intake and the workers share.
pub struct Webhooks {
    /// The section as configured.
    pub config: WebhooksConfig,
    /// The mirrors by name.
    pub mirrors: BTreeMap<String, PushMirror>,
    /// `~/.gitsync/webhooks`.
    pub dir: PathBuf,
    /// Where jobs go.
    pub queue: queue::Queue,
    /// Delivery ids seen before.
    pub deliveries: queue::Deliveries,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Limit of one git command.
    pub git_timeout: Duration,
    /// The core's forge webhooks (`webhooks.sync`), by provider name.
    pub sync: BTreeMap<String, sync::SyncHook>,
    /// Where their pushes go, once the daemon has an event bus (set by the daemon before
    /// the intake listens; until then they are answered 503).
    pub sink: std::sync::OnceLock<sync::Sink>,
}

impl Webhooks {
    /// Resolves the `webhooks` section of `config` (secrets read now, so a missing one is
    /// an error at start-up, not at the first webhook). `None` when there is no section.
    ///
    /// Errors: a message naming the mirror and what is missing.
    pub async fn from_config(config: &Config) -> Result<Option<Arc<Webhooks>>, WebhookError> {
        let Some(section) = &config.webhooks else {
            return Ok(None);
        };
        let mut mirrors = BTreeMap::new();
        for spec in &section.mirrors {
            mirrors.insert(spec.name.clone(), PushMirror::resolve(spec)?);
        }
        let mut sync = BTreeMap::new();
        for spec in &section.sync {
            sync.insert(
                spec.provider.as_str().to_string(),
                sync::SyncHook::resolve(spec)?,
            );
        }
        let dir = config.home.join("webhooks");
        let queue = queue::Queue::open(section, &dir).await?;
        Ok(Some(Arc::new(Webhooks {
            config: section.clone(),
            mirrors,
            deliveries: queue::Deliveries::open(&dir),
            dir,
            queue,
            trusted_proxies: section
                .trusted_proxies
                .iter()
                .filter_map(|c| crate::config::webhooks::parse_net(c))
                .collect(),
            git_timeout: config.pull.fetch_timeout.max(Duration::from_secs(600)),
            sync,
            sink: std::sync::OnceLock::new(),
        })))
    }

    /// The cache folder of the sources.
    pub fn cache_root(&self) -> PathBuf {
        self.dir.join("cache")
    }

    /// Reads the saved state of `name` (default when none).
    ///
    /// Errors: the state file cannot be read or is corrupt (its path and what to do).
    pub fn state(&self, name: &str) -> Result<run::PushMirrorState, crate::util::fs::PathError> {
        crate::util::fs::read_json(&run::state_path(&self.dir, name))
    }
}

/// Starts the intake and the workers this host runs, as tasks of `tasks`.
///
/// Errors: the listen address cannot be bound, or TLS files cannot be read.
pub async fn start(
    hooks: Arc<Webhooks>,
    tasks: &mut crate::util::workers::Workers,
) -> Result<(), WebhookError> {
    if hooks.config.worker.unwrap_or(true) {
        worker::spawn(hooks.clone(), tasks);
    }
    if hooks.config.intake.unwrap_or(true) {
        let server = intake::bind(hooks.clone()).await?;
        tasks.spawn("webhook intake", server);
    }
    Ok(())
}
