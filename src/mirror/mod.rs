//! Mirrors into S3 or a folder that plain `git clone` reads through git's dumb HTTP
//! protocol (mirror-git-to-s3's job, done incrementally and crash-safely).
//!
//! [`layout`] owns the files git's dumb client reads, [`publish`] one run against a target,
//! [`lfs`] the Git LFS objects. A source is read through a bare cache
//! ([`crate::git::bare_cache`]) under `~/.gitsync/mirror/cache`; what the target already
//! has is read from the target itself, so a mirror can move to another machine and go on.

pub mod claim;
pub mod layout;
pub mod lfs;
pub mod publish;
pub mod reach;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::config::{Config, MirrorConfig};
use crate::store::S3Options;
use crate::util::words::plural;
pub use publish::{MirrorError, Report};

/// Default time between two runs under `gitsync run`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(600);
/// Default number of packs before a consolidation.
pub const DEFAULT_MAX_PACKS: usize = 16;
/// Default time replaced packs stay for clients mid-fetch.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(600);

/// One mirror, resolved: the config entry and where its files live.
#[derive(Debug, Clone)]
pub struct BucketMirror {
    /// The entry as configured (or built from `--source`/`--target`).
    pub spec: MirrorConfig,
    /// `~/.gitsync/mirror`.
    pub dir: PathBuf,
    /// Limit of one git command, such as the first clone of a large source.
    pub git_timeout: Duration,
}

/// The outcome of one run of one mirror.
#[derive(Debug)]
pub struct Outcome {
    /// The mirror's name.
    pub name: String,
    /// What was done, or why nothing was published.
    pub result: Result<Report, MirrorError>,
    /// Wall time of the run.
    pub took: Duration,
}

impl BucketMirror {
    /// The mirrors of `config`, with gitsync's home and git timeout.
    pub fn all(config: &Config) -> Vec<BucketMirror> {
        config
            .mirrors
            .iter()
            .map(|spec| BucketMirror::new(spec.clone(), config))
            .collect()
    }

    /// One mirror with the home and git timeout of `config`.
    pub fn new(spec: MirrorConfig, config: &Config) -> BucketMirror {
        BucketMirror {
            spec,
            dir: config.home.join("mirror"),
            git_timeout: config.pull.fetch_timeout.max(Duration::from_secs(3600)),
        }
    }

    /// The interval of periodic runs.
    pub fn interval(&self) -> Duration {
        self.spec
            .interval
            .as_ref()
            .map_or(DEFAULT_INTERVAL, |d| d.0)
    }

    /// The URL a stock `git clone` reads the target from: path-style under the endpoint
    /// (`<endpoint>/<bucket>/<prefix>`), virtual-hosted on AWS
    /// (`https://<bucket>.s3.<region>.amazonaws.com/<prefix>`); for a folder, where a static
    /// web server must serve it.
    pub fn clone_url(&self) -> String {
        let target = self.spec.target.trim_end_matches('/');
        if let Some(rest) = target.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            return match &self.spec.endpoint_url {
                Some(endpoint) => format!("{}/{bucket}/{prefix}", endpoint.trim_end_matches('/')),
                None => {
                    let region = self.spec.region.as_deref().unwrap_or("us-east-1");
                    format!("https://{bucket}.s3.{region}.amazonaws.com/{prefix}")
                }
            };
        }
        format!(
            "http://<your web server>/... serving {}",
            target.trim_start_matches("file://")
        )
    }

    fn state_path(&self) -> PathBuf {
        self.dir
            .join("state")
            .join(format!("{}.json", self.spec.name))
    }

    /// Where the last run's end, result and duration are kept ([`LastRun`]).
    pub fn last_run_path(&self) -> PathBuf {
        self.dir
            .join("state")
            .join(format!("{}.last-run.json", self.spec.name))
    }

    /// The last run that was not a dry run, or `None` before the first (or when its file
    /// cannot be read).
    pub fn last_run(&self) -> Option<LastRun> {
        crate::util::fs::read_json::<Option<LastRun>>(&self.last_run_path())
            .ok()
            .flatten()
    }

    /// One run: refresh the source's cache, then publish what the target lacks.
    /// `dry_run` writes nothing to the target (the local cache is still brought up to
    /// date). Never panics; the error names what failed.
    pub async fn run_once(&self, dry_run: bool) -> Outcome {
        let started = Instant::now();
        let result = self.run_inner(dry_run).await;
        if !dry_run {
            let last = LastRun {
                at: chrono::Utc::now(),
                ok: result.is_ok(),
                seconds: started.elapsed().as_secs_f64(),
            };
            if let Err(err) = crate::util::fs::write_json(&self.last_run_path(), &Some(last)) {
                tracing::debug!(mirror = %self.spec.name, %err, "cannot save the last run");
            }
        }
        Outcome {
            name: self.spec.name.clone(),
            result,
            took: started.elapsed(),
        }
    }

    /// The target's store (no network call).
    ///
    /// Errors: a target URL that is neither `s3://` nor `file:///`.
    pub async fn store(&self) -> Result<Box<dyn crate::store::BlobStore>, MirrorError> {
        crate::store::open(
            &self.spec.target,
            &S3Options {
                endpoint_url: self.spec.endpoint_url.clone(),
                region: self.spec.region.clone(),
            },
        )
        .await
        .map_err(|e| MirrorError::Store {
            target: crate::util::redact::redact_url(&self.spec.target),
            source: e,
        })
    }

    async fn run_inner(&self, dry_run: bool) -> Result<Report, MirrorError> {
        let store = self.store().await?;
        let cache = crate::git::bare_cache::refresh(
            &self.dir.join("cache"),
            &self.spec.source,
            self.git_timeout,
            &[],
        )
        .await
        .map_err(|e| {
            MirrorError::Source(match e {
                crate::git::ops::GitError::Failed { stderr, .. } => {
                    format!(
                        "cannot fetch from {}: {stderr}",
                        crate::util::redact::redact_url(&self.spec.source)
                    )
                }
                other => other.to_string(),
            })
        })?;
        let mut state: publish::BucketMirrorState = crate::util::fs::read_json(&self.state_path())
            .map_err(|e| MirrorError::State(e.to_string()))?;
        let opts = publish::Options {
            max_packs: self.spec.max_packs.unwrap_or(DEFAULT_MAX_PACKS),
            grace: self.spec.grace.as_ref().map_or(DEFAULT_GRACE, |d| d.0),
            git_timeout: self.git_timeout,
            dry_run,
            lfs: self.spec.lfs,
            source: self.spec.source.clone(),
            scratch: self.dir.join("tmp"),
        };
        let report = publish::run(&cache, store.as_ref(), &opts, &mut state).await?;
        if !dry_run && let Err(err) = crate::util::fs::write_json(&self.state_path(), &state) {
            tracing::warn!(mirror = %self.spec.name, %err, "cannot save the mirror's state");
        }
        Ok(report)
    }
}

/// A bucket mirror's last run, kept in `~/.gitsync/mirror/state/<name>.last-run.json` for
/// `/metrics` and the status page.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LastRun {
    /// When it ended.
    pub at: chrono::DateTime<chrono::Utc>,
    /// Whether it published all it had to.
    pub ok: bool,
    /// How long it took, in seconds.
    pub seconds: f64,
}

/// Triggers for the mirrors whose `on_push` is set: the daemon calls
/// [`PushTriggers::pushed`] with the remote URL of each push it confirmed.
#[derive(Debug, Clone, Default)]
pub struct PushTriggers {
    entries: Arc<Vec<(String, Arc<Notify>)>>,
}

impl PushTriggers {
    /// Wakes the mirror whose source is `url` (compared without credentials, with
    /// [`crate::model::normalize_url`]), if it runs on push.
    pub fn pushed(&self, url: &str) {
        let url = same_source(url);
        for (source, notify) in self.entries.iter() {
            if *source == url {
                notify.notify_one();
            }
        }
    }
}

/// The form two URLs of one source share: credentials redacted, then normalized.
pub(crate) fn same_source(url: &str) -> String {
    crate::model::normalize_url(&crate::util::redact::redact_url(url))
}

/// Starts one task per mirror under the daemon: a run at start-up, then every interval,
/// and on push when `on_push` is set. Returns the triggers the push path calls.
pub fn spawn_all(
    mirrors: Vec<BucketMirror>,
    tasks: &mut crate::util::workers::Workers,
) -> PushTriggers {
    let mut entries = Vec::new();
    for mirror in mirrors {
        let notify = Arc::new(Notify::new());
        if mirror.spec.on_push {
            entries.push((same_source(&mirror.spec.source), notify.clone()));
        }
        tasks.spawn("bucket mirror", async move {
            loop {
                let outcome = mirror.run_once(false).await;
                log_outcome(&outcome);
                tokio::select! {
                    _ = tokio::time::sleep(mirror.interval()) => {}
                    _ = notify.notified() => {}
                }
            }
        });
    }
    PushTriggers {
        entries: Arc::new(entries),
    }
}

/// Logs one outcome: one line for people, fields for journald.
pub fn log_outcome(outcome: &Outcome) {
    match &outcome.result {
        Ok(report) if report.up_to_date() => {
            tracing::debug!(mirror = %outcome.name, "mirror up to date")
        }
        Ok(report) => tracing::info!(
            mirror = %outcome.name,
            took_ms = outcome.took.as_millis() as u64,
            "{}",
            summary(&outcome.name, report)
        ),
        Err(err) => {
            tracing::error!(target: crate::logging::OUTCOME, mirror = %outcome.name, "mirror {}: {err}; nothing published, the previous mirror stays", outcome.name)
        }
    }
}

use crate::util::words::human_size;

/// A one-line summary of a report, such as
/// `api: 2 refs updated (1 new), 1 pack of 12 objects (4.1 KiB)`.
pub fn summary(name: &str, report: &Report) -> String {
    let verb = if report.dry_run {
        "would publish"
    } else {
        "published"
    };
    if report.up_to_date() {
        let mut line = format!("{name}: up to date ({})", plural(report.refs as u64, "ref"));
        if report.deleted_packs > 0 {
            line.push_str(&format!(
                "; {} deleted after their grace period",
                plural(report.deleted_packs as u64, "old pack")
            ));
        }
        return line;
    }
    let new = report.changed.iter().filter(|c| c.old.is_none()).count();
    let gone = report.changed.iter().filter(|c| c.new.is_none()).count();
    let moved = report.changed.len() - new - gone;
    let mut parts = Vec::new();
    if moved > 0 {
        parts.push(format!("{moved} updated"));
    }
    if new > 0 {
        parts.push(format!("{new} new"));
    }
    if gone > 0 {
        parts.push(format!("{gone} deleted"));
    }
    let mut line = format!(
        "{name}: {verb} {} of {}",
        parts.join(", "),
        plural(report.refs as u64, "ref")
    );
    if parts.is_empty() {
        line = format!("{name}: {verb} HEAD");
    }
    match &report.pack {
        Some(pack) => line.push_str(&format!(
            "; {} pack of {} ({})",
            if report.consolidated > 0 {
                "1 full"
            } else {
                "1"
            },
            plural(pack.objects as u64, "object"),
            human_size(pack.bytes)
        )),
        None => line.push_str("; no new objects"),
    }
    if report.consolidated > 0 {
        line.push_str(&format!(
            ", replacing {} (deleted after the grace period)",
            plural(report.consolidated as u64, "pack")
        ));
    }
    if report.lfs.0 > 0 {
        line.push_str(&format!(
            "; {} ({})",
            plural(report.lfs.0 as u64, "LFS object"),
            human_size(report.lfs.1)
        ));
    }
    if report.deleted_packs > 0 {
        line.push_str(&format!(
            "; {} deleted",
            plural(report.deleted_packs as u64, "old pack")
        ));
    }
    if report.retries > 0 {
        line.push_str(&format!(
            " (after {}: another writer changed the mirror meanwhile)",
            plural(report.retries as u64, "restart")
        ));
    }
    line
}

/// The name of an ad-hoc mirror of `source`: the last part of its path without `.git`
/// (`https://host/team/api.git` -> `api`), made of `[A-Za-z0-9._-]`; `mirror` when the URL
/// gives nothing usable; `-2`, `-3`, ... appended while the name is in `taken`.
fn adhoc_name(source: &str, taken: &std::collections::BTreeSet<String>) -> String {
    let path = source.trim_end_matches('/');
    let last = path
        .rsplit(['/', ':'])
        .next()
        .unwrap_or_default()
        .trim_end_matches(".git");
    let cleaned: String = last
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    let base = if cleaned.trim_matches(['-', '.']).is_empty() {
        "mirror".to_string()
    } else {
        cleaned
    };
    let mut name = base.clone();
    let mut n = 2;
    while taken.contains(&name) {
        name = format!("{base}-{n}");
        n += 1;
    }
    name
}

/// The mirror config for `gitsync mirror --source URL --target URL` pairs: each named after
/// its source's repository (`api` for `.../api.git`, see [`adhoc_name`]; never the name of
/// a configured mirror), or the configured mirror's entry when one has the same source and
/// target.
pub fn adhoc(
    config: &Config,
    pairs: &[(String, String)],
    endpoint_url: Option<String>,
    lfs: bool,
) -> Vec<BucketMirror> {
    let mut taken: std::collections::BTreeSet<String> =
        config.mirrors.iter().map(|m| m.name.clone()).collect();
    pairs
        .iter()
        .map(|(source, target)| {
            let known = config
                .mirrors
                .iter()
                .find(|m| &m.source == source && &m.target == target);
            let spec = match known {
                Some(m) => m.clone(),
                None => MirrorConfig {
                    name: {
                        let name = adhoc_name(source, &taken);
                        taken.insert(name.clone());
                        name
                    },
                    source: source.clone(),
                    target: target.clone(),
                    lfs,
                    interval: None,
                    on_push: false,
                    endpoint_url: endpoint_url.clone(),
                    region: None,
                    max_packs: None,
                    grace: None,
                },
            };
            BucketMirror::new(spec, config)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ad_hoc_mirrors_are_named_after_their_repository() {
        let mut taken = std::collections::BTreeSet::new();
        assert_eq!(
            adhoc_name("https://git.example.com/team/api.git", &taken),
            "api"
        );
        assert_eq!(adhoc_name("git@github.com:acme/web.git/", &taken), "web");
        assert_eq!(adhoc_name("file:///srv/git/my repo", &taken), "my-repo");
        assert_eq!(adhoc_name("git@host:site", &taken), "site");
        assert_eq!(adhoc_name("file:///", &taken), "mirror");
        taken.insert("api".to_string());
        taken.insert("api-2".to_string());
        assert_eq!(adhoc_name("ssh://h/x/api.git", &taken), "api-3");
    }
}
