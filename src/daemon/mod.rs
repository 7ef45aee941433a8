//! The daemon: a supervisor running the syncer on a timer and on watcher events.
//!
//! At start-up it does a full update (fetch, fast-forward, state of every repository);
//! then every `pull.interval` (with ±10% jitter) another full update, and between them a
//! state refresh (no fetch) for each repository the watcher marks. SIGHUP re-reads the
//! configuration (a broken one is reported and the old one kept). SIGTERM or SIGINT stop
//! it gracefully: nothing new starts, the git commands in flight finish (up to 30 s), and
//! state files are only ever replaced whole. A second signal stops it at once.
//!
//! [`run`] is three parts: `start` (backend, heartbeat, the early [`component`]s, the
//! watcher, the start-up update, the late components), the main loop (timers, watcher
//! marks, rescans, reloads) and the stop. Everything beside the main loop is a
//! [`component::Component`] running as named workers.

pub mod component;
pub mod handoff;
pub mod identity;
pub mod landed;
pub mod pidfile;
pub mod poll;
pub mod publisher;
pub mod reach;
pub mod receiver;
pub mod registry;
pub mod report;
pub mod rescan;
pub mod syncer;
pub mod watcher;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::task::JoinSet;

use crate::backend::{self, BackendError};
use crate::config::Config;
use crate::discover::{self, Repo};
use crate::git::hooks;
use crate::util::workers::{Ended, Workers};
use component::Component;
use publisher::Publisher;
use registry::Registry;
use syncer::Syncer;
use watcher::{Dirty, RepoWatcher};

/// Why the daemon could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// A configured pattern is invalid.
    #[error(transparent)]
    Pattern(#[from] discover::PatternError),
    /// The configured backend cannot be opened.
    #[error("cannot open the backend: {0}")]
    Backend(#[source] BackendError),
    /// Signal handlers cannot be installed.
    #[error("cannot install signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// Another daemon runs for this user.
    #[error(transparent)]
    Running(handoff::ListenError),
    /// The webhook intake or its queue cannot start (address taken, secret missing, ...).
    #[error("webhook mirrors: {0}")]
    Webhooks(#[source] crate::webhook::WebhookError),
    /// Another live machine publishes under this hostname.
    #[error("{0}")]
    HostTaken(String),
    /// The `observe.listen` address cannot be bound.
    #[error("observe.listen {listen}: {source}")]
    Observe {
        /// The address.
        listen: std::net::SocketAddr,
        /// Why it cannot be bound.
        #[source]
        source: std::io::Error,
    },
}

/// How long a graceful stop waits for work in flight.
const STOP_GRACE: Duration = Duration::from_secs(30);

fn jittered(interval: Duration) -> Duration {
    interval.mul_f64(0.9 + 0.2 * fastrand::f64())
}

/// Everything a sync needs: the repositories, the syncer and the dirty set.
pub struct Setup {
    /// The repositories to keep in sync.
    pub repos: Vec<Repo>,
    /// The syncer publishing into the configured backend.
    pub syncer: Arc<Syncer>,
    /// Watcher marks.
    pub dirty: Arc<Dirty>,
    /// The configured backend.
    pub backend: backend::Backend,
}

/// Resolves the repositories and opens the backend.
///
/// Errors: [`DaemonError::Pattern`] or [`DaemonError::Backend`].
pub async fn setup(config: &Config) -> Result<Setup, DaemonError> {
    let repos = discover::resolve(&config.root, config.repositories.as_deref())?;
    let backend = backend::open(config).await.map_err(DaemonError::Backend)?;
    // A store gitsync cannot use (a GitArgus table keyed by hostname alone) is refused now;
    // an unreachable one is not: git syncs meanwhile and states wait to be stored.
    if let Err(err @ BackendError::Config(_)) = backend.store.health().await {
        return Err(DaemonError::Backend(err));
    }
    let dirty = Arc::new(Dirty::new());
    let syncer = Arc::new(Syncer::new(
        config.hostname.clone(),
        config.pull,
        backend.store.clone(),
        dirty.clone(),
    ));
    tracing::debug!(
        backend = backend.store.name(),
        repos = repos.len(),
        "set up"
    );
    Ok(Setup {
        repos,
        syncer,
        dirty,
        backend,
    })
}

/// Re-reads the configuration on SIGHUP: the same file and `--root` as at start-up.
pub type Reload = Box<dyn Fn() -> Result<Config, crate::config::ConfigError> + Send + Sync>;

/// Tells systemd (when it started the daemon with `Type=notify`) how the daemon is doing;
/// a no-op without `NOTIFY_SOCKET`. Format: sd_notify(3).
fn notify(state: &[sd_notify::NotifyState<'_>]) {
    if let Err(err) = sd_notify::notify(false, state) {
        tracing::debug!(%err, "cannot notify systemd");
    }
}

/// Runs the daemon until SIGTERM or SIGINT; SIGHUP re-reads the configuration with
/// `reload`. Three parts: [`start`], the main loop, and the stop.
///
/// Errors: [`DaemonError`] when it cannot start; once running, failures are logged and
/// the daemon carries on.
pub async fn run(config: Config, reload: Reload) -> Result<(), DaemonError> {
    let mut daemon = start(config).await?;
    let in_flight = daemon.main_loop(&reload).await;
    daemon.stop(in_flight).await;
    Ok(())
}

/// The signals the daemon answers: SIGTERM and SIGINT stop it, SIGHUP reloads.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

/// The daemon once started: what its main loop drives and its stop ends.
struct Running {
    config: Config,
    signals: Signals,
    handle: component::Handle,
    store: Arc<dyn backend::StateStore>,
    dirty: Arc<Dirty>,
    watcher: Option<RepoWatcher>,
    reflogs: Arc<landed::Reflogs>,
    beats: Arc<Heartbeat>,
    workers: Workers,
    socket: std::path::PathBuf,
}

/// Starts the daemon: the backend and this host's heartbeat (a hostname another live
/// machine holds is refused), the hand-off socket and the early components, the watcher,
/// the start-up update (every repository fetched and read), then the late components and
/// the pushes spooled while the daemon was down. Tells systemd it is ready.
///
/// Errors: [`DaemonError`]: a pattern or backend that cannot be used, signal handlers,
/// another daemon on the socket, a webhook section that cannot start, a hostname taken.
async fn start(config: Config) -> Result<Running, DaemonError> {
    let signals = Signals {
        term: signal(SignalKind::terminate()).map_err(DaemonError::Signals)?,
        int: signal(SignalKind::interrupt()).map_err(DaemonError::Signals)?,
        hup: signal(SignalKind::hangup()).map_err(DaemonError::Signals)?,
    };
    let Setup {
        repos,
        syncer,
        dirty,
        backend,
    } = setup(&config).await?;
    let problem = Arc::new(std::sync::Mutex::new(None));
    let beats = Arc::new(Heartbeat {
        problem: problem.clone(),
        me: identity::me(&config.home),
        host: config.hostname.clone(),
        started_at: chrono::Utc::now(),
        every: config.pull.heartbeat,
        checked: std::sync::Mutex::new(None),
        store: backend.store.clone(),
        syncer: syncer.clone(),
    });
    if let Ok(records) = backend.store.hosts(Some(&config.hostname)).await
        && let Some(taken) = records
            .iter()
            .find_map(|r| identity::conflict(&beats.me, r, chrono::Utc::now()))
    {
        return Err(DaemonError::HostTaken(taken));
    }
    if let Err(err) = backend.store.heartbeat(&beats.record()).await {
        tracing::warn!(%err, "cannot record heartbeat; syncing with git meanwhile");
    } else {
        match backend.store.list(Some(&config.hostname)).await {
            Ok(states) => syncer.seed(states),
            Err(err) => tracing::debug!(%err, "cannot read the states stored before"),
        }
    }
    tracing::info!(host = %config.hostname, root = %config.root.display(), repos = repos.len(), backend = backend.store.name(), "starting");
    let registry = Arc::new(Registry::new(repos.clone()));

    // The hook's hand-off, before anything else, so that no push is missed from now on.
    let socket = handoff::socket_path(&config.home);
    let listener = match handoff::bind(&socket) {
        Ok(listener) => Some(listener),
        Err(err @ handoff::ListenError::Running(_)) => return Err(DaemonError::Running(err)),
        Err(err) => {
            tracing::error!(%err, "pushes will be spooled until the next start");
            None
        }
    };
    let publisher = Arc::new(Publisher::new(
        config.hostname.clone(),
        backend.bus.clone(),
        syncer.clone(),
        registry.clone(),
    ));
    let handle = component::Handle {
        host: config.hostname.clone(),
        bus: backend.bus.clone(),
        syncer: syncer.clone(),
        registry: registry.clone(),
        publisher: publisher.clone(),
        problem,
    };
    let mut workers = Workers::new();
    // The webhook intake before the start-up update, so that a forge's webhook is answered
    // (and queued) however long that update takes.
    for component in Component::early(&config, listener, backend.store.clone()).await? {
        component.start(&handle, &mut workers).await?;
    }
    if config.hooks_install {
        let hook_repos = repos.clone();
        tokio::task::spawn_blocking(move || install_hooks(&hook_repos));
    }

    // Watch first, so that changes made during the start-up update are not missed.
    let watch_repos = repos.clone();
    let watch_dirty = dirty.clone();
    let watcher = tokio::task::spawn_blocking(move || RepoWatcher::start(&watch_repos, watch_dirty))
        .await
        .ok()
        .and_then(|res| {
            res.map_err(|err| tracing::error!(%err, "cannot watch repositories; relying on the periodic update"))
                .ok()
        });

    // Where each remote-tracking reflog ends now: pushes are what is appended later.
    let reflogs = Arc::new(landed::Reflogs::new());
    for repo in &repos {
        reflogs
            .publish_new(repo, &publisher, &config.hostname)
            .await;
    }

    // The start-up update reads every repository: what changed while the daemon was down
    // raised no watcher event.
    syncer.set_watching(false);
    let started = Instant::now();
    let outcomes = syncer.sync_all(&repos, true).await;
    syncer.set_watching(watcher.as_ref().is_some_and(RepoWatcher::is_complete));
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    syncer.metrics().set_ready();
    beats.checked_now();
    // CHECKED on the other machines moves now, not at the next heartbeat.
    beats.beat().await;
    if repos.is_empty() && !config.keeps_no_repositories() {
        tracing::warn!(root = %config.root.display(), "no repositories under the root (check `root` and `repositories`); clones made there later are picked up");
    }
    tracing::info!(
        repos = repos.len(),
        failed,
        took_ms = started.elapsed().as_millis() as u64,
        "ready: {}",
        report::summary(&outcomes)
    );
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("{} repositories in sync", repos.len())),
    ]);

    // Pushes made while the daemon was down, then events the other machines sent meanwhile
    // (the bus kept them); the start-up update already fetched, so most are no-ops.
    for (path, notice) in handoff::spooled(&config.home) {
        publisher.handle(notice, true).await;
        if let Err(err) = std::fs::remove_file(&path) {
            tracing::warn!(path = %path.display(), %err, "cannot remove spooled push");
        }
    }
    for component in Component::late(&config) {
        component.start(&handle, &mut workers).await?;
    }
    Ok(Running {
        config,
        signals,
        handle,
        store: backend.store.clone(),
        dirty,
        watcher,
        reflogs,
        beats,
        workers,
        socket,
    })
}

impl Running {
    /// The main loop, until SIGTERM or SIGINT: the periodic full update (`pull.interval`,
    /// jittered), the rescan of the root (`pull.rescan`, brought forward by folder events),
    /// the heartbeat, the syncs of repositories the watcher marked, and SIGHUP's reload.
    /// Returns the tasks still in flight.
    async fn main_loop(&mut self, reload: &Reload) -> JoinSet<()> {
        let mut tasks: JoinSet<()> = JoinSet::new();
        // Rows of this host that the daemon does not keep (a one-off `sync --root` of
        // another folder, a repository removed while it was down) leave the store.
        tasks.spawn(self.prune_rows());
        // Clones added or removed under the root are found by watching its folders, and
        // by the periodic rescan.
        let root_changed = Arc::new(tokio::sync::Notify::new());
        let root_watcher = match rescan::RootWatcher::start(root_changed.clone()) {
            // No root to watch: this host keeps no repository.
            Ok(_) if self.config.keeps_no_repositories() => None,
            Ok(w) => {
                let w = Arc::new(w);
                self.follow_root(&w).await;
                Some(w)
            }
            Err(err) => {
                tracing::warn!(%err, "cannot watch the root; new clones are found by the periodic rescan");
                None
            }
        };
        let now = tokio::time::Instant::now;
        let mut next_rescan = now() + self.config.pull.rescan;
        // Whether the next rescan is one a folder event brought forward.
        let mut root_moved = false;
        let mut next_heartbeat = now() + self.config.pull.heartbeat;
        let mut lookup = Lookup::of(&self.handle.registry.current());
        let full_running = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut next_full = now() + jittered(self.config.pull.interval);
        // `pull.poll`: far in the future when off.
        let poll_every = |c: &Config| c.pull.poll.unwrap_or(Duration::from_secs(365 * 86_400));
        let mut next_poll = now() + jittered(poll_every(&self.config));
        let mut next_due: Option<Instant> = None;
        loop {
            let wake_at = next_due
                .map(tokio::time::Instant::from_std)
                .unwrap_or(next_full)
                .min(next_full)
                .min(next_poll)
                .min(next_rescan)
                .min(next_heartbeat);
            let mut reload_now = false;
            tokio::select! {
                _ = self.signals.term.recv() => break,
                _ = self.signals.int.recv() => break,
                _ = self.signals.hup.recv() => reload_now = true,
                _ = root_changed.notified() => {
                    next_rescan = next_rescan.min(now() + rescan::SETTLE);
                    root_moved = true;
                }
                _ = self.dirty.wake.notified() => {}
                _ = tokio::time::sleep_until(wake_at) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                Some(ended) = self.workers.ended(), if !self.workers.is_empty() => {
                    match ended {
                        Ended::Returned(name) => tracing::error!(worker = name, "a part of the daemon stopped; restart gitsync to start it again"),
                        Ended::Failed(err) => tracing::error!(%err, "a part of the daemon failed; restart gitsync to start it again"),
                    }
                }
            }
            if reload_now {
                notify(&[sd_notify::NotifyState::Reloading]);
                match reload() {
                    Err(err) => {
                        tracing::error!(
                            "configuration not reloaded; the old one stays in force: {err}"
                        )
                    }
                    Ok(fresh) => {
                        let waiting = warn_restart_settings(&self.config, &fresh);
                        if self.resolve_and_apply(&fresh, "configuration", &mut tasks) {
                            let repos = self.handle.registry.current().len();
                            if waiting.is_empty() {
                                tracing::info!(repos, "configuration reloaded");
                            } else {
                                tracing::info!(
                                    repos,
                                    "configuration reloaded; {} take effect at the next restart",
                                    waiting.join(", ")
                                );
                            }
                            if fresh.pull.interval != self.config.pull.interval {
                                next_full = now() + jittered(fresh.pull.interval);
                            }
                            if fresh.pull.poll != self.config.pull.poll {
                                next_poll = now() + jittered(poll_every(&fresh));
                            }
                            lookup = Lookup::of(&self.handle.registry.current());
                            // What needs a restart stays as it runs, so that the next
                            // reload names it again.
                            self.config = Config {
                                hostname: self.config.hostname.clone(),
                                backend: self.config.backend,
                                local: self.config.local.clone(),
                                aws: self.config.aws.clone(),
                                mirrors: self.config.mirrors.clone(),
                                webhooks: self.config.webhooks.clone(),
                                deploy: self.config.deploy.clone(),
                                partition: self.config.partition.clone(),
                                ..fresh
                            };
                            if let Some(w) = &root_watcher {
                                self.follow_root(w).await;
                            }
                        }
                    }
                }
                notify(&[sd_notify::NotifyState::Ready]);
            }
            if now() >= next_rescan {
                next_rescan = now() + self.config.pull.rescan;
                self.resolve_and_apply(&self.config, "root", &mut tasks);
                lookup = Lookup::of(&self.handle.registry.current());
                // The store is read on the periodic rescan only, not on every folder event.
                if !std::mem::take(&mut root_moved) {
                    tasks.spawn(self.prune_rows());
                }
                if let Some(w) = &root_watcher {
                    self.follow_root(w).await;
                }
            }
            if now() >= next_heartbeat {
                next_heartbeat = now() + self.config.pull.heartbeat;
                let beats = self.beats.clone();
                tasks.spawn(async move { beats.beat().await });
            }
            if now() >= next_full {
                next_full = now() + jittered(self.config.pull.interval);
                let watching = self.watcher.as_ref().is_some_and(RepoWatcher::is_complete);
                self.handle.syncer.set_watching(watching);
                if !full_running.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    let running = full_running.clone();
                    let syncer = self.handle.syncer.clone();
                    let repos = self.handle.registry.current();
                    let beats = self.beats.clone();
                    tasks.spawn(async move {
                        let outcomes = syncer.sync_all(&repos, true).await;
                        beats.checked_now();
                        beats.beat().await;
                        let failed = outcomes.iter().filter(|o| !o.ok).count();
                        tracing::info!(repos = repos.len(), failed, "periodic update done");
                        running.store(false, std::sync::atomic::Ordering::SeqCst);
                    });
                }
            }
            if now() >= next_poll {
                next_poll = now() + jittered(poll_every(&self.config));
                // Not while a full update runs: it fetches everything anyway.
                if !full_running.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    let running = full_running.clone();
                    let syncer = self.handle.syncer.clone();
                    let repos = self.handle.registry.current();
                    let timeout = self.config.pull.fetch_timeout;
                    tasks.spawn(async move {
                        let polled = poll::poll_all(&syncer, &repos, timeout).await;
                        tracing::debug!(
                            asked = polled.asked,
                            synced = polled.synced.len(),
                            failed = polled.failed,
                            "poll done"
                        );
                        running.store(false, std::sync::atomic::Ordering::SeqCst);
                    });
                }
            }
            let (due, next) = self.dirty.take_due(Instant::now(), |name| {
                lookup
                    .git_dirs
                    .get(name)
                    .is_some_and(|dir| dir.join("index.lock").exists())
            });
            next_due = next;
            for name in due {
                if let Some(repo) = lookup.by_name.get(&name).cloned() {
                    tasks.spawn(self.sync_marked(repo));
                }
            }
        }
        tasks
    }

    /// Stops: nothing new starts, the work in flight finishes (up to 30 s, or until a
    /// second signal), the workers are aborted and the hand-off socket removed.
    async fn stop(mut self, mut in_flight: JoinSet<()>) {
        tracing::info!("stopping: waiting for work in flight");
        notify(&[sd_notify::NotifyState::Stopping]);
        let drained = async { while in_flight.join_next().await.is_some() {} };
        tokio::select! {
            _ = drained => tracing::info!("stopped"),
            _ = tokio::time::sleep(STOP_GRACE) => tracing::warn!("stopped with work still in flight"),
            _ = self.signals.term.recv() => tracing::warn!("second signal: stopping now"),
            _ = self.signals.int.recv() => tracing::warn!("second signal: stopping now"),
        }
        self.workers.abort_all();
        if !self.handle.syncer.is_refused() {
            self.beats.stopped().await;
        }
        if let Err(err) = std::fs::remove_file(&self.socket) {
            tracing::debug!(socket = %self.socket.display(), %err, "cannot remove socket");
        }
    }

    /// A sync of a repository the watcher marked. A push made where no hook ran is still
    /// seen: published first, as the other machines wait for it.
    fn sync_marked(&self, repo: Repo) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (syncer, publisher, reflogs) = (
            self.handle.syncer.clone(),
            self.handle.publisher.clone(),
            self.reflogs.clone(),
        );
        let host = self.config.hostname.clone();
        async move {
            reflogs.publish_new(&repo, &publisher, &host).await;
            syncer.sync(&repo, false).await;
        }
    }

    /// Removes this host's rows for repositories the daemon does not keep (see
    /// [`prune_rows`]).
    fn prune_rows(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        prune_rows(
            self.store.clone(),
            self.handle.syncer.clone(),
            self.handle.registry.clone(),
            self.config.hostname.clone(),
        )
    }

    /// Points the root's folder watcher at the configured root and list.
    async fn follow_root(&self, watcher: &Arc<rescan::RootWatcher>) {
        let (w, root, list) = (
            watcher.clone(),
            self.config.root.clone(),
            self.config.repositories.clone(),
        );
        let _ = tokio::task::spawn_blocking(move || w.follow(&root, list.as_deref())).await;
    }

    /// Resolves `config`'s repository list and applies it: repositories added are watched,
    /// get the hook (`hooks.install`) and are synced; those removed stop being watched and
    /// their rows leave the store. `why` (`configuration` or `root`) goes to the log.
    /// Returns false when the list cannot be resolved (the old one stays).
    fn resolve_and_apply(&self, config: &Config, why: &str, tasks: &mut JoinSet<()>) -> bool {
        let repos = match discover::resolve(&config.root, config.repositories.as_deref()) {
            Ok(repos) => repos,
            Err(err) => {
                tracing::error!(%err, "repository list not changed; the old one stays in force");
                return false;
            }
        };
        let (added, removed) = self.handle.registry.replace(repos);
        for repo in removed {
            if let Some(watcher) = &self.watcher {
                watcher.remove(&repo);
            }
            self.dirty.forget(&repo.name);
            tracing::info!(repo = %repo.name, from = why, "repository gone; its row leaves the store");
            let syncer = self.handle.syncer.clone();
            tasks.spawn(async move {
                if let Err(err) = syncer.drop_repo(&repo.name).await {
                    tracing::warn!(repo = %repo.name, %err, "cannot remove the row of a repository that is gone; `gitsync forget` removes it");
                }
            });
        }
        for repo in &added {
            self.handle.syncer.adopt(&repo.name);
            if let Some(watcher) = &self.watcher {
                watcher.add(repo);
            }
            tracing::info!(repo = %repo.name, from = why, "repository added");
        }
        if config.hooks_install && !added.is_empty() {
            install_hooks(&added);
        }
        for repo in added {
            let (syncer, publisher, reflogs) = (
                self.handle.syncer.clone(),
                self.handle.publisher.clone(),
                self.reflogs.clone(),
            );
            let host = self.config.hostname.clone();
            tasks.spawn(async move {
                syncer.sync(&repo, true).await;
                reflogs.publish_new(&repo, &publisher, &host).await;
            });
        }
        true
    }
}

/// This host's liveness record, written at start-up and every `pull.heartbeat`.
struct Heartbeat {
    me: identity::Me,
    host: String,
    started_at: chrono::DateTime<chrono::Utc>,
    every: Duration,
    /// When the last full update (every repository read) ended.
    checked: std::sync::Mutex<Option<chrono::DateTime<chrono::Utc>>>,
    store: Arc<dyn backend::StateStore>,
    syncer: Arc<Syncer>,
    /// What keeps the daemon from working now (see [`component::Handle::problem`]).
    problem: Arc<std::sync::Mutex<Option<String>>>,
}

impl Heartbeat {
    fn record(&self) -> crate::model::HostRecord {
        crate::model::HostRecord {
            host: self.host.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            machine_id: Some(self.me.id.clone()),
            machine: Some(self.me.machine.clone()),
            started_at: Some(self.started_at),
            last_seen: chrono::Utc::now(),
            heartbeat_secs: Some(self.every.as_secs().max(1)),
            checked_at: *self.checked.lock().unwrap_or_else(|p| p.into_inner()),
            stopped_at: None,
            problem: self
                .problem
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }

    /// Says the daemon stopped, so the other machines show this host `stopped` at once
    /// instead of `online` until its heartbeat window runs out. Bounded to 5 s (an
    /// unreachable store does not hold up the stop).
    async fn stopped(&self) {
        let record = crate::model::HostRecord {
            stopped_at: Some(chrono::Utc::now()),
            ..self.record()
        };
        match tokio::time::timeout(Duration::from_secs(5), self.store.heartbeat(&record)).await {
            Ok(Ok(())) => tracing::info!("published that this host stopped"),
            Ok(Err(err)) => tracing::warn!(%err, "cannot publish that this host stopped"),
            Err(_) => tracing::warn!("cannot publish that this host stopped: no answer in 5 s"),
        }
    }

    fn checked_now(&self) {
        *self.checked.lock().unwrap_or_else(|p| p.into_inner()) = Some(chrono::Utc::now());
    }

    /// Writes the record, unless another live machine has taken the hostname meanwhile:
    /// then nothing is published (states included) until it is gone. When the record is
    /// gone (`gitsync forget --host` removed this host's rows while it ran), every state is
    /// published again after it.
    async fn beat(&self) {
        let mut forgotten = false;
        if let Ok(records) = self.store.hosts(Some(&self.host)).await {
            let taken = records
                .iter()
                .find_map(|r| identity::conflict(&self.me, r, chrono::Utc::now()));
            self.syncer.set_refused(taken.is_some());
            if let Some(taken) = taken {
                tracing::error!("not publishing: {taken}");
                return;
            }
            forgotten = records.is_empty();
        }
        if let Err(err) = self.store.heartbeat(&self.record()).await {
            match err {
                // The hub is gone or another folder (an unmounted share): said every beat.
                backend::BackendError::Config(_) => {
                    tracing::error!(%err, "cannot record heartbeat")
                }
                _ => tracing::debug!(%err, "cannot record heartbeat"),
            }
            return;
        }
        if forgotten {
            let n = self.syncer.republish().await;
            tracing::warn!(
                states = n,
                "this host's rows were removed from the store while it ran (gitsync forget --host): published again"
            );
        }
    }
}

/// Repositories by name, and their git folders, for the main loop.
struct Lookup {
    by_name: HashMap<String, Repo>,
    git_dirs: HashMap<String, std::path::PathBuf>,
}

impl Lookup {
    fn of(repos: &[Repo]) -> Self {
        Lookup {
            by_name: repos.iter().map(|r| (r.name.clone(), r.clone())).collect(),
            git_dirs: repos
                .iter()
                .map(|r| (r.name.clone(), watcher::git_dir_of(&r.path)))
                .collect(),
        }
    }
}

/// Removes this host's rows for repositories that the daemon does not keep: the daemon
/// owns its host's rows. Failures are logged at debug level (the next rescan tries again).
async fn prune_rows(
    store: Arc<dyn backend::StateStore>,
    syncer: Arc<Syncer>,
    registry: Arc<Registry>,
    host: String,
) {
    let rows = match store.list(Some(&host)).await {
        Ok(rows) => rows,
        Err(err) => {
            tracing::debug!(%err, "cannot list this host's rows");
            return;
        }
    };
    for row in rows {
        // Read the list now: a clone found since the rows were listed is kept.
        if registry.current().iter().any(|r| r.name == row.repo) {
            continue;
        }
        tracing::info!(repo = %row.repo, "a row of this host for a repository the daemon does not keep (removed while it was down, or from a one-off `sync --root`): removed");
        if let Err(err) = syncer.drop_repo(&row.repo).await {
            tracing::debug!(repo = %row.repo, %err, "cannot remove the row");
        }
        // Found by a rescan meanwhile: it is published again at its next sync.
        if registry.current().iter().any(|r| r.name == row.repo) {
            syncer.adopt(&row.repo);
        }
    }
}

/// Names in the log, one line each, the sections of a reloaded configuration that changed
/// and need a restart (the backend, and the components started once: mirrors, webhooks,
/// deploys, partition sync); returns their names.
fn warn_restart_settings(old: &Config, fresh: &Config) -> Vec<&'static str> {
    let debug_differs =
        |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    let mut changed = Vec::new();
    for (what, differs) in [
        ("hostname", old.hostname != fresh.hostname),
        ("backend", old.backend != fresh.backend),
        ("local.path", old.hub_path() != fresh.hub_path()),
        ("aws", debug_differs(&old.aws, &fresh.aws)),
        ("mirrors", old.mirrors != fresh.mirrors),
        ("webhooks", old.webhooks != fresh.webhooks),
        ("deploy", old.deploy != fresh.deploy),
        ("partition", debug_differs(&old.partition, &fresh.partition)),
    ] {
        if differs {
            tracing::warn!(
                setting = what,
                "{what} changed in the configuration; takes effect at the next restart (`gitsync stop`, then `gitsync run`, or `systemctl restart`)"
            );
            changed.push(what);
        }
    }
    changed
}

/// Installs the pre-push hook into every repository (start-up, `hooks.install: true`);
/// failures are logged, never fatal.
pub fn install_hooks(repos: &[Repo]) {
    let binary = match std::env::current_exe() {
        Ok(binary) => binary,
        Err(err) => {
            tracing::warn!(%err, "cannot tell where the gitsync binary is; hooks not installed");
            return;
        }
    };
    for repo in repos.iter().filter(|r| r.path.exists()) {
        let result = hooks::placement(&repo.path).and_then(|place| match place.reason() {
            None => hooks::install_in(place.dir(), &binary),
            Some(why) => {
                tracing::info!(repo = %repo.name, dir = %place.dir().display(), why, "hook not installed; pushes are seen by the watcher");
                Ok(hooks::HookState::Installed { chained: false })
            }
        });
        match result {
            Ok(hooks::HookState::Installed { .. }) => {}
            Ok(before) => {
                tracing::info!(repo = %repo.name, was = before.describe(), "pre-push hook installed")
            }
            Err(err) => tracing::warn!(repo = %repo.name, %err, "cannot install the pre-push hook"),
        }
    }
}
