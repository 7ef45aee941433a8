//! The daemon's components, in atuin's shape (a `Component` with a name, a start, what it
//! hears of pushes, and a stop), one line each:
//!
//! - `hand-off`: the pre-push hook's socket; each notice goes to the [`Publisher`].
//! - `webhooks`: the forge webhook intake and its mirror workers.
//! - `observe`: `/metrics`, `/healthz` and `/readyz` on `observe.listen`.
//! - `notify`: a message to each `notify` target when a repository starts or stops
//!   failing.
//! - `events`: the [`Receiver`] of the other machines' events.
//! - `deploys`: tree deploys; hears of moved HEADs from the [`Syncer`].
//! - `mirrors`: bucket mirrors; hears of pushes from the [`Publisher`].
//! - `partition`: partition sync (producer or consumer).
//! - `retry`: re-sends the states and pushes the backend could not take.
//! - `watchdog`: systemd's watchdog ping, when the unit sets `WatchdogSec`.
//!
//! Each starts as named [`Workers`] of the daemon, so one that ends is named in the log.
//! All stop together: the daemon aborts its workers once the work in flight is done (see
//! [`super::run`]). The hand-off and the webhook intake start before the start-up update
//! (no push and no webhook is missed while it runs); the others after it.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;

use super::publisher::Publisher;
use super::receiver::Receiver;
use super::registry::Registry;
use super::syncer::Syncer;
use super::{DaemonError, handoff};
use crate::backend::EventBus;
use crate::config::{Config, PartitionRole};
use crate::observe::JobRuns;
use crate::util::workers::Workers;

/// What every component may use: the daemon's shared parts, cheap to clone.
#[derive(Clone)]
pub struct Handle {
    /// This host's name.
    pub host: String,
    /// The event bus (local hub or SNS/SQS).
    pub bus: Arc<dyn EventBus>,
    /// The syncer of this host's repositories.
    pub syncer: Arc<Syncer>,
    /// The repositories the daemon keeps now.
    pub registry: Arc<Registry>,
    /// The publisher of this host's pushes.
    pub publisher: Arc<Publisher>,
    /// Why the daemon cannot do its work now (events cannot be received), published with
    /// the heartbeat.
    pub problem: Arc<std::sync::Mutex<Option<String>>>,
}

/// One part of the daemon beside its main loop.
pub enum Component {
    /// The pre-push hook's socket.
    HandOff(UnixListener),
    /// The webhook intake and workers.
    Webhooks(Arc<crate::webhook::Webhooks>),
    /// The metrics and health endpoints, on this address, reading this store.
    Observe(
        std::net::SocketAddr,
        Arc<dyn crate::backend::StateStore>,
        JobRuns,
    ),
    /// Notifications to these webhook URLs, of this host's repositories, of the hosts in
    /// the store and of the jobs' last runs (looked at every `Duration`).
    Notify(
        crate::observe::notify::Targets,
        Arc<dyn crate::backend::StateStore>,
        JobRuns,
        Duration,
    ),
    /// The receiver of the other machines' events.
    Events,
    /// The tree deploys.
    Deploys(Vec<crate::deploy::Deploy>),
    /// The bucket mirrors.
    Mirrors(Vec<crate::mirror::BucketMirror>),
    /// Partition sync in its role.
    Partition(Box<crate::partition::Settings>, PartitionRole),
    /// Re-sends what the backend could not take.
    Retry,
    /// systemd's watchdog, pinged at this period.
    Watchdog(Duration),
}

impl Component {
    /// Its name in the log.
    pub fn name(&self) -> &'static str {
        match self {
            Component::HandOff(_) => "hand-off",
            Component::Webhooks(_) => "webhooks",
            Component::Observe(..) => "observe",
            Component::Notify(..) => "notify",
            Component::Events => "events",
            Component::Deploys(_) => "deploys",
            Component::Mirrors(_) => "mirrors",
            Component::Partition(..) => "partition",
            Component::Retry => "retry",
            Component::Watchdog(_) => "watchdog",
        }
    }

    /// The components that start before the start-up update: the hand-off on `listener`
    /// (`None` when its socket could not be bound: pushes are spooled meanwhile), the
    /// webhook intake when `config` has a `webhooks` section, the metrics and health
    /// endpoints when it has `observe.listen` (they read `store`; `/readyz` says 503 until
    /// the start-up update is done), and systemd's watchdog when the unit asks for one.
    ///
    /// Errors: [`DaemonError::Webhooks`] when the webhook section cannot be resolved (a
    /// secret is missing).
    pub async fn early(
        config: &Config,
        listener: Option<UnixListener>,
        store: Arc<dyn crate::backend::StateStore>,
    ) -> Result<Vec<Component>, DaemonError> {
        let mut early: Vec<Component> = listener.into_iter().map(Component::HandOff).collect();
        let jobs = job_runs(config);
        if let Some(listen) = config.observe_listen {
            early.push(Component::Observe(listen, store.clone(), jobs.clone()));
        }
        let targets = crate::observe::notify::Targets {
            webhooks: config.notify_webhooks.clone(),
            desktop: config.notify_desktop,
        };
        if !targets.is_empty() {
            // Hosts and jobs are looked at once a heartbeat, at most every 30 s.
            let every = config
                .pull
                .heartbeat
                .clamp(Duration::from_secs(1), Duration::from_secs(30));
            early.push(Component::Notify(targets, store.clone(), jobs, every));
        }
        if let Some(hooks) = crate::webhook::Webhooks::from_config(config)
            .await
            .map_err(DaemonError::Webhooks)?
        {
            early.push(Component::Webhooks(hooks));
        }
        let mut usec = 0u64;
        if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
            early.push(Component::Watchdog(Duration::from_micros(usec / 2)));
        }
        Ok(early)
    }

    /// The components that start after the start-up update: the event receiver, the
    /// deploys, the bucket mirrors, the retries and partition sync, as `config` asks.
    /// A partition section that cannot be used is logged and left out (the rest runs).
    pub fn late(config: &Config) -> Vec<Component> {
        let mut late = vec![
            Component::Events,
            Component::Deploys(crate::deploy::Deploy::all(config)),
        ];
        if !config.mirrors.is_empty() {
            late.push(Component::Mirrors(crate::mirror::BucketMirror::all(config)));
        }
        late.push(Component::Retry);
        if let Some(role) = config.partition.as_ref().and_then(|p| p.role) {
            match crate::partition::Settings::from_config(config) {
                Ok(settings) => late.push(Component::Partition(Box::new(settings), role)),
                Err(err) => tracing::error!(%err, "partition sync not started"),
            }
        }
        late
    }

    /// Starts the component's workers in `workers`, and wires what it hears of the core:
    /// the mirrors' push triggers into the publisher, the deploys' HEAD triggers into the
    /// syncer.
    ///
    /// Errors: [`DaemonError::Webhooks`] when the intake cannot listen (address taken, TLS
    /// files unreadable).
    pub async fn start(self, handle: &Handle, workers: &mut Workers) -> Result<(), DaemonError> {
        let name = self.name();
        match self {
            Component::HandOff(listener) => {
                let (notices, mut incoming) = tokio::sync::mpsc::channel(256);
                workers.spawn(name, handoff::serve(listener, notices));
                let publisher = handle.publisher.clone();
                workers.spawn("hand-off notices", async move {
                    while let Some(notice) = incoming.recv().await {
                        let publisher = publisher.clone();
                        tokio::spawn(async move { publisher.handle(notice, false).await });
                    }
                });
            }
            Component::Webhooks(hooks) => {
                let registry = handle.registry.clone();
                let _ = hooks.sink.set(crate::webhook::sync::Sink {
                    host: handle.host.clone(),
                    bus: handle.bus.clone(),
                    repos: Arc::new(move || registry.current()),
                });
                crate::webhook::start(hooks, workers)
                    .await
                    .map_err(DaemonError::Webhooks)?
            }
            Component::Observe(listen, store, jobs) => {
                let observed = crate::observe::Observed {
                    bus_problem: handle.problem.clone(),
                    here: handle.host.clone(),
                    metrics: handle.syncer.metrics(),
                    store,
                    jobs,
                };
                let server = crate::observe::serve(listen, observed)
                    .await
                    .map_err(|source| DaemonError::Observe { listen, source })?;
                workers.spawn(name, server);
            }
            Component::Notify(targets, store, jobs, every) => {
                let (notifier, messages) = crate::observe::notify::Notifier::new(&handle.host);
                let notifier = Arc::new(notifier);
                handle.syncer.set_notifier(notifier.clone());
                workers.spawn(
                    name,
                    crate::observe::notify::Notifier::deliver(targets, messages),
                );
                workers.spawn(name, notifier.watch(store, jobs, every));
            }
            Component::Events => {
                let receiver = Arc::new(
                    Receiver::new(
                        handle.host.clone(),
                        handle.bus.clone(),
                        handle.syncer.clone(),
                        handle.registry.clone(),
                    )
                    .reporting_to(handle.problem.clone()),
                );
                workers.spawn(name, receiver.run());
            }
            Component::Deploys(deploys) => handle
                .syncer
                .set_deploy_triggers(crate::deploy::spawn_all(deploys, workers)),
            Component::Mirrors(mirrors) => handle
                .publisher
                .set_mirror_triggers(crate::mirror::spawn_all(mirrors, workers)),
            Component::Partition(settings, role) => {
                workers.spawn(name, crate::partition::run_loop(*settings, role));
            }
            Component::Retry => {
                workers.spawn(
                    name,
                    retry_unsent(handle.syncer.clone(), handle.publisher.clone()),
                );
            }
            Component::Watchdog(every) => workers.spawn(name, watchdog(every)),
        }
        tracing::debug!(component = name, "started");
        Ok(())
    }
}

/// What `/metrics` reads of the replication jobs `config` has: each deploy's last ship
/// (the newest of its targets'; ok when none failed or was blocked) and each webhook
/// mirror's last run, from their state files.
/// Reads the last run of each deploy, webhook mirror and bucket mirror of `config`.
fn job_runs(config: &Config) -> JobRuns {
    use crate::observe::metrics::JobRun;
    let deploys = crate::deploy::Deploy::all(config);
    let bucket_mirrors = crate::mirror::BucketMirror::all(config);
    let hooks_dir = config.home.join("webhooks");
    let mirrors: Vec<String> = config
        .webhooks
        .iter()
        .flat_map(|w| w.mirrors.iter().map(|m| m.name.clone()))
        .collect();
    Arc::new(move || {
        let mut runs = Vec::new();
        for deploy in &deploys {
            let state = deploy.state().unwrap_or_default();
            let at = state.targets.values().filter_map(|t| t.at).max();
            let ok = at.map(|_| {
                state.targets.values().all(|t| {
                    !matches!(
                        t.result,
                        Some(
                            crate::deploy::ShipResult::Failed | crate::deploy::ShipResult::Blocked
                        )
                    )
                })
            });
            // The ship's duration, as its last target to end recorded it.
            let took = state
                .targets
                .values()
                .filter(|t| t.at.is_some() && t.at == at)
                .filter_map(|t| t.took_ms)
                .max()
                .map(Duration::from_millis);
            runs.push(JobRun {
                kind: "deploy",
                name: deploy.spec.name.clone(),
                at,
                ok,
                took,
            });
        }
        for name in &mirrors {
            let state: crate::webhook::run::PushMirrorState =
                crate::util::fs::read_json(&crate::webhook::run::state_path(&hooks_dir, name))
                    .unwrap_or_default();
            runs.push(JobRun {
                kind: "webhook_mirror",
                name: name.clone(),
                at: state.last_run,
                ok: state
                    .result
                    .map(|r| r == crate::webhook::run::RunResult::Ok),
                took: state.took_ms.map(Duration::from_millis),
            });
        }
        for mirror in &bucket_mirrors {
            let last = mirror.last_run();
            runs.push(JobRun {
                kind: "bucket_mirror",
                name: mirror.spec.name.clone(),
                at: last.map(|l| l.at),
                ok: last.map(|l| l.ok),
                took: last.map(|l| Duration::from_secs_f64(l.seconds.max(0.0))),
            });
        }
        runs
    })
}

/// Pings systemd's watchdog every `every` (half its `WatchdogSec`), for as long as the
/// task runs.
async fn watchdog(every: Duration) {
    loop {
        super::notify(&[sd_notify::NotifyState::Watchdog]);
        tokio::time::sleep(every).await;
    }
}

/// Retries, with capped and jittered backoff (1 s doubling to 60 s), the states and
/// pushes that the backend could not take, so that the latest ones are published as soon
/// as it answers again.
async fn retry_unsent(syncer: Arc<Syncer>, publisher: Arc<Publisher>) {
    let mut backoff =
        crate::util::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    loop {
        tokio::time::sleep(crate::util::backoff::Backoff::jittered(backoff.ceiling())).await;
        if !syncer.has_unsent() && !publisher.has_pending() {
            backoff.reset();
            continue;
        }
        let states = syncer.flush_unsent().await;
        let pushes = publisher.flush_pending().await;
        if states && pushes {
            backoff.reset();
        } else {
            // The next sleep is twice as long (capped).
            let _ = backoff.failed();
        }
    }
}
