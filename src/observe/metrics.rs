//! The daemon's metrics, in the OpenMetrics text format that Prometheus scrapes (through
//! the prometheus-client crate). Names follow Prometheus' conventions: the `gitsync_`
//! prefix, base units in the name (`_seconds`), `_total` for counters.
//!
//! Per repository (label `repo`, at most about a dozen series each): its state, ahead and
//! behind, paths not committed, when it was last read, whether a pull is refused, fetches
//! by result, fast-forwards, and refusals by reason. Per host (label `host`): the age of
//! its heartbeat. For the daemon: how long fetches and fast-forwards take (histograms, not
//! per repository, to keep the series few).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::model::{HostRecord, RepoState};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RepoLabel {
    repo: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    repo: String,
    state: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    repo: String,
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusalLabels {
    repo: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostLabel {
    host: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    kind: String,
    name: String,
}

/// The last run of one replication job (a tree deploy, a webhook mirror), as its state
/// file has it.
#[derive(Debug, Clone, PartialEq)]
pub struct JobRun {
    /// `deploy`, `webhook_mirror` or `bucket_mirror`.
    pub kind: &'static str,
    /// Its name in the config.
    pub name: String,
    /// When its last run ended; `None` before the first.
    pub at: Option<DateTime<Utc>>,
    /// Whether that run did all it had to (`None` before the first).
    pub ok: Option<bool>,
    /// How long that run took, when its state file says.
    pub took: Option<Duration>,
}

/// What a fetch brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// New refs or objects.
    Updated,
    /// Nothing new.
    Unchanged,
    /// It failed (the remote cannot be reached, a timeout, ...).
    Failed,
}

impl Fetched {
    fn word(self) -> &'static str {
        match self {
            Fetched::Updated => "updated",
            Fetched::Unchanged => "unchanged",
            Fetched::Failed => "failed",
        }
    }
}

/// `t` as Unix time in seconds, to the millisecond.
fn unix_seconds(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

/// The buckets of the duration histograms: 10 ms to about 41 s, doubling.
fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.01, 2.0, 13))
}

/// The short word for why a pull was refused (the label of `gitsync_pull_refusals_total`),
/// from the reason in words that `status` shows (`git::pull::decide`, the fast-forward's
/// refusals): a few values, whatever the paths and counts in the words.
pub fn refusal_kind(reason: &str) -> &'static str {
    const KINDS: [(&str, &str); 14] = [
        ("in progress", "operation"),
        ("detached", "detached"),
        ("no commit yet", "no_commit"),
        ("no upstream", "no_upstream"),
        ("is gone", "upstream_gone"),
        ("diverged", "diverged"),
        ("automatic fast-forward is off", "disabled"),
        ("index.lock", "index_locked"),
        ("submodule", "submodule"),
        ("conflicted", "conflicted"),
        ("not committed", "uncommitted"),
        ("no space", "disk_full"),
        ("cannot write", "unwritable"),
        ("edited", "being_edited"),
    ];
    KINDS
        .iter()
        .find(|(words, _)| reason.contains(words))
        .map_or("other", |(_, kind)| kind)
}

/// The daemon's metrics and readiness, shared by the syncer (which records) and the
/// `observe` endpoints (which read). Cheap to record into: counters and histograms are
/// atomics; the latest state of each repository is kept as the syncer read it.
#[derive(Debug)]
pub struct Metrics {
    ready: AtomicBool,
    /// Woken whenever a repository's state is recorded or forgotten (the status page's
    /// event stream waits on it).
    changed: tokio::sync::Notify,
    states: Mutex<BTreeMap<String, RepoState>>,
    fetches: Family<FetchLabels, Counter>,
    fast_forwards: Family<RepoLabel, Counter>,
    refusals: Family<RefusalLabels, Counter>,
    fetch_seconds: Histogram,
    fast_forward_seconds: Histogram,
    event_lag_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            ready: AtomicBool::new(false),
            changed: tokio::sync::Notify::new(),
            states: Mutex::new(BTreeMap::new()),
            fetches: Family::default(),
            fast_forwards: Family::default(),
            refusals: Family::default(),
            fetch_seconds: duration_histogram(),
            fast_forward_seconds: duration_histogram(),
            event_lag_seconds: duration_histogram(),
        }
    }
}

impl Metrics {
    /// Marks the start-up update finished (`/readyz` may now say ready).
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Whether the start-up update finished.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    fn states(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RepoState>> {
        self.states.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `state` as its repository's latest.
    pub fn record_state(&self, state: &RepoState) {
        let changed = self
            .states()
            .insert(state.repo.clone(), state.clone())
            .is_none_or(|before| !before.same_as(state));
        if changed {
            self.changed.notify_one();
        }
    }

    /// The latest state of each repository of this host, as recorded, by name.
    pub fn latest(&self) -> Vec<RepoState> {
        self.states().values().cloned().collect()
    }

    /// Wakes whoever waits in [`Metrics::changed`] (or the next to wait).
    pub fn wake(&self) {
        self.changed.notify_one();
    }

    /// Waits until a state is recorded that differs from the one before, or a repository
    /// is forgotten (at most one wake-up is kept while nobody waits).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// Forgets repository `repo` (no longer kept): its series leave `/metrics`.
    pub fn forget(&self, repo: &str) {
        self.states().remove(repo);
        self.changed.notify_one();
        let label = RepoLabel {
            repo: repo.to_string(),
        };
        self.fast_forwards.remove(&label);
        for result in [Fetched::Updated, Fetched::Unchanged, Fetched::Failed] {
            self.fetches.remove(&FetchLabels {
                repo: repo.to_string(),
                result: result.word().to_string(),
            });
        }
    }

    /// Counts a fetch of `repo` with its `result`, which took `took`.
    pub fn fetched(&self, repo: &str, result: Fetched, took: Duration) {
        self.fetches
            .get_or_create(&FetchLabels {
                repo: repo.to_string(),
                result: result.word().to_string(),
            })
            .inc();
        self.fetch_seconds.observe(took.as_secs_f64());
    }

    /// Counts a fast-forward of `repo` that moved the branch, which took `took`.
    pub fn fast_forwarded(&self, repo: &str, took: Duration) {
        self.fast_forwards
            .get_or_create(&RepoLabel {
                repo: repo.to_string(),
            })
            .inc();
        self.fast_forward_seconds.observe(took.as_secs_f64());
    }

    /// Records that a push event of another host arrived `lag` after it was published
    /// (by the pushing host's clock: a clock ahead of this one counts as no lag).
    pub fn event_received(&self, lag: Duration) {
        self.event_lag_seconds.observe(lag.as_secs_f64());
    }

    /// Counts a pull of `repo` refused for `reason` (words, see [`refusal_kind`]).
    pub fn refused(&self, repo: &str, reason: &str) {
        self.refusals
            .get_or_create(&RefusalLabels {
                repo: repo.to_string(),
                reason: refusal_kind(reason).to_string(),
            })
            .inc();
    }

    /// The OpenMetrics text of every metric, with the heartbeat ages of `hosts` (as the
    /// store has them) at `now`, and the last runs of the replication `jobs`.
    ///
    /// Errors: formatting into the text failed (it does not, into a `String`).
    pub fn encode(
        &self,
        hosts: &[HostRecord],
        jobs: &[JobRun],
        now: DateTime<Utc>,
    ) -> Result<String, std::fmt::Error> {
        let mut registry = Registry::with_prefix("gitsync");
        let state = Family::<StateLabels, Gauge>::default();
        let ahead = Family::<RepoLabel, Gauge>::default();
        let behind = Family::<RepoLabel, Gauge>::default();
        let uncommitted = Family::<RepoLabel, Gauge>::default();
        let blocked = Family::<RepoLabel, Gauge>::default();
        let read_at = Family::<RepoLabel, Gauge<f64, AtomicU64>>::default();
        for (repo, s) in self.states().iter() {
            let label = RepoLabel { repo: repo.clone() };
            state
                .get_or_create(&StateLabels {
                    repo: repo.clone(),
                    state: s.state.as_str().to_string(),
                })
                .set(1);
            ahead.get_or_create(&label).set(i64::from(s.ahead));
            behind.get_or_create(&label).set(i64::from(s.behind));
            let paths = s.staged + s.unstaged + s.untracked + s.conflicted;
            uncommitted.get_or_create(&label).set(i64::from(paths));
            blocked
                .get_or_create(&label)
                .set(i64::from(s.pull_blocked.is_some()));
            read_at
                .get_or_create(&label)
                .set(unix_seconds(s.updated_at));
        }
        registry.register(
            "repository_state",
            "1 for the state the repository is in (label state, as gitsync status shows it)",
            state,
        );
        registry.register(
            "repository_ahead_commits",
            "Commits HEAD has that its upstream lacks",
            ahead,
        );
        registry.register(
            "repository_behind_commits",
            "Commits the upstream has that HEAD lacks",
            behind,
        );
        registry.register(
            "repository_uncommitted_paths",
            "Paths staged, changed, untracked or conflicted",
            uncommitted,
        );
        registry.register(
            "repository_pull_blocked",
            "1 while the automatic fast-forward is refused (gitsync status says why)",
            blocked,
        );
        registry.register_with_unit(
            "repository_last_sync_timestamp",
            "When the repository was last read, Unix time",
            Unit::Seconds,
            read_at,
        );
        registry.register(
            "fetches",
            "Fetches by repository and result",
            self.fetches.clone(),
        );
        registry.register(
            "fast_forwards",
            "Fast-forwards that moved a branch",
            self.fast_forwards.clone(),
        );
        registry.register(
            "pull_refusals",
            "Pulls refused while the upstream had new commits, by reason",
            self.refusals.clone(),
        );
        registry.register_with_unit(
            "fetch_duration",
            "How long fetches took",
            Unit::Seconds,
            self.fetch_seconds.clone(),
        );
        registry.register_with_unit(
            "fast_forward_duration",
            "How long fast-forwards took",
            Unit::Seconds,
            self.fast_forward_seconds.clone(),
        );
        registry.register_with_unit(
            "event_lag",
            "Time from another host's push event to its arrival here (the event bus's lag)",
            Unit::Seconds,
            self.event_lag_seconds.clone(),
        );
        let heartbeat = Family::<HostLabel, Gauge<f64, AtomicU64>>::default();
        for host in hosts {
            let age = (now - host.last_seen).num_milliseconds().max(0) as f64 / 1000.0;
            heartbeat
                .get_or_create(&HostLabel {
                    host: host.host.clone(),
                })
                .set(age);
        }
        registry.register_with_unit(
            "host_heartbeat_age",
            "Time since each host's last heartbeat in the store",
            Unit::Seconds,
            heartbeat,
        );
        let job_at = Family::<JobLabels, Gauge<f64, AtomicU64>>::default();
        let job_ok = Family::<JobLabels, Gauge>::default();
        let job_took = Family::<JobLabels, Gauge<f64, AtomicU64>>::default();
        for job in jobs {
            let label = JobLabels {
                kind: job.kind.to_string(),
                name: job.name.clone(),
            };
            if let Some(at) = job.at {
                job_at.get_or_create(&label).set(unix_seconds(at));
            }
            if let Some(ok) = job.ok {
                job_ok.get_or_create(&label).set(i64::from(ok));
            }
            if let Some(took) = job.took {
                job_took.get_or_create(&label).set(took.as_secs_f64());
            }
        }
        registry.register_with_unit(
            "job_last_run_timestamp",
            "When each deploy and mirror last ran, Unix time",
            Unit::Seconds,
            job_at,
        );
        registry.register(
            "job_last_run_ok",
            "1 when the last run of each deploy and mirror did all it had to",
            job_ok,
        );
        registry.register_with_unit(
            "job_last_run_duration",
            "How long the last run of each deploy and mirror took",
            Unit::Seconds,
            job_took,
        );
        let ready = Gauge::<i64>::default();
        ready.set(i64::from(self.is_ready()));
        registry.register("ready", "1 once the start-up update finished", ready);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry)?;
        Ok(text)
    }
}

/// Prometheus' text format 0.0.4 (Prometheus' "Exposition formats") of `openmetrics`, an
/// OpenMetrics text that [`Metrics::encode`] wrote: a counter's family takes its samples'
/// `_total` name (OpenMetrics names the family without it), and the `# UNIT` and `# EOF`
/// lines, which 0.0.4 does not have, go.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_format_names_counters_with_total_and_has_no_eof() {
        let metrics = Metrics::default();
        metrics.fetched("r", Fetched::Updated, Duration::from_millis(20));
        let jobs = [JobRun {
            kind: "deploy",
            name: "web".to_string(),
            at: Some(Utc::now()),
            ok: Some(false),
            took: Some(Duration::from_millis(1500)),
        }];
        let open = metrics.encode(&[], &jobs, Utc::now()).expect("encode");
        assert!(
            open.contains("gitsync_job_last_run_ok{kind=\"deploy\",name=\"web\"} 0"),
            "{open}"
        );
        assert!(
            open.contains(
                "gitsync_job_last_run_duration_seconds{kind=\"deploy\",name=\"web\"} 1.5"
            ),
            "{open}"
        );
        assert!(open.contains("# TYPE gitsync_fetches counter") && open.ends_with("# EOF\n"));
        let text = prometheus_text(&open);
        assert!(
            text.contains("# TYPE gitsync_fetches_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP gitsync_fetches_total Fetches"),
            "{text}"
        );
        assert!(
            text.contains("gitsync_fetches_total{repo=\"r\",result=\"updated\"} 1\n"),
            "{text}"
        );
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
    }

    #[test]
    fn refusal_reasons_become_a_few_words() {
        for (reason, kind) in [
            ("a rebase is in progress", "operation"),
            ("2 unstaged changes not committed", "uncommitted"),
            (
                "diverged from origin/main (1 ahead, 2 behind): merge or rebase by hand",
                "diverged",
            ),
            (
                "index.lock exists: another git command is running",
                "index_locked",
            ),
            ("something new", "other"),
        ] {
            assert_eq!(refusal_kind(reason), kind, "{reason}");
        }
    }
}
