//! Bringing one repository up to date: fetch, read the state, fast-forward when safe, and
//! publish the state when it changed.
//!
//! Work on one repository is serialized by a per-repository lock, so a watcher refresh
//! never races a periodic fetch. One repository's failure is logged and reported in its
//! state; it never stops the others.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Mutex, Semaphore};

use super::watcher::{self, Dirty};
use crate::backend::StateStore;
use crate::backend::outage::Outage;
use crate::config::PullSettings;
use crate::discover::Repo;
use crate::git::fastforward::{self, Outcome as Moved};
use crate::git::{branches, ops, pull, remotes, state, submodules};
use crate::model::RepoState;
use crate::observe::metrics::Fetched;
use crate::util::words::short_id;

/// How long a worktree must have had no edit before it is fast-forwarded: a user who keeps
/// saving sees "not pulled: the worktree is being edited", and the pull happens once they
/// stop.
pub const EDIT_QUIET: std::time::Duration = std::time::Duration::from_secs(2);

/// How one sync of one repository went.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The repository's name.
    pub repo: String,
    /// False when the fetch failed, the repository could not be read, or the state could
    /// not be stored.
    pub ok: bool,
    /// Whether a new state was written to the store.
    pub published: bool,
    /// Whether the checked-out branch was fast-forwarded.
    pub fast_forwarded: bool,
    /// The fast-forward of the checked-out branch, when there was one.
    pub forwarded: Option<Forwarded>,
    /// The state as read after the sync.
    pub state: RepoState,
}

/// A fast-forward of the checked-out branch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Forwarded {
    /// The commit before (hex).
    pub from: String,
    /// The commit after (hex).
    pub to: String,
    /// Commits it moved by.
    pub commits: u32,
}

/// What to fetch before a sync.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fetch {
    /// Nothing: read the state only (a watcher refresh).
    No,
    /// The checked-out branch's remote (for a branch tracking a local branch, that branch's
    /// remote), or `origin` when none is configured.
    Default,
    /// `git fetch <remote>`: the remote a push event names.
    Remote(String),
}

/// Syncs repositories of one host.
pub struct Syncer {
    host: String,
    pull: PullSettings,
    store: Arc<dyn StateStore>,
    dirty: Arc<Dirty>,
    /// Per repository: the last state written to the store.
    last: std::sync::Mutex<HashMap<String, Arc<Mutex<Option<RepoState>>>>>,
    /// Per repository (common git folder): held while any of its worktrees syncs.
    repositories: std::sync::Mutex<HashMap<std::path::PathBuf, Arc<Mutex<()>>>>,
    /// Bounds concurrent repository work (git children and gix reads).
    permits: Semaphore,
    /// Set by the daemon while every repository is fully watched.
    watching: std::sync::atomic::AtomicBool,
    /// Per repository: the newest state the store refused or could not be reached for.
    unsent: std::sync::Mutex<HashMap<String, RepoState>>,
    /// Logs a store outage once.
    outage: Outage,
    /// Repositories dropped from the list (deleted, moved away, or no longer configured):
    /// a sync still queued for one publishes nothing.
    dropped: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Set while another live machine publishes under this hostname: nothing is stored.
    refused: std::sync::atomic::AtomicBool,
    /// Whether `git maintenance run --auto` is left to finish on its own.
    maintenance_detached: std::sync::atomic::AtomicBool,
    /// Whether every fetch starts a fast-forward helper ahead (push events' always do).
    helper_ahead: std::sync::atomic::AtomicBool,
    /// The deploys (`on_update`) to wake when a repository's HEAD moves.
    deploys: std::sync::OnceLock<crate::deploy::UpdateTriggers>,
    /// What `/metrics` shows: counts, durations and the latest states.
    metrics: Arc<crate::observe::Metrics>,
    /// Sends a message when a repository starts or stops failing (`notify:`).
    notifier: std::sync::OnceLock<Arc<crate::observe::notify::Notifier>>,
}

impl Syncer {
    /// A syncer publishing as `host` into `store`; `dirty` is told to forget watcher events
    /// that the syncer's own git commands cause.
    pub fn new(
        host: String,
        pull: PullSettings,
        store: Arc<dyn StateStore>,
        dirty: Arc<Dirty>,
    ) -> Self {
        Syncer {
            host,
            pull,
            store,
            dirty,
            last: std::sync::Mutex::new(HashMap::new()),
            repositories: std::sync::Mutex::new(HashMap::new()),
            permits: Semaphore::new(4),
            watching: std::sync::atomic::AtomicBool::new(false),
            unsent: std::sync::Mutex::new(HashMap::new()),
            outage: Outage::new("state store"),
            dropped: std::sync::Mutex::new(std::collections::HashSet::new()),
            refused: std::sync::atomic::AtomicBool::new(false),
            maintenance_detached: std::sync::atomic::AtomicBool::new(false),
            helper_ahead: std::sync::atomic::AtomicBool::new(false),
            deploys: std::sync::OnceLock::new(),
            metrics: Arc::new(crate::observe::Metrics::default()),
            notifier: std::sync::OnceLock::new(),
        }
    }

    /// Sets the notifier each new state is shown to (once; later calls are ignored).
    pub fn set_notifier(&self, notifier: Arc<crate::observe::notify::Notifier>) {
        let _ = self.notifier.set(notifier);
    }

    /// The metrics this syncer records into (for `/metrics` and `/readyz`).
    pub fn metrics(&self) -> Arc<crate::observe::Metrics> {
        self.metrics.clone()
    }

    /// Sets the deploys to wake when a repository's HEAD moves (once; later calls are
    /// ignored).
    pub fn set_deploy_triggers(&self, triggers: crate::deploy::UpdateTriggers) {
        let _ = self.deploys.set(triggers);
    }

    /// Stops (`true`) or resumes publishing states: set while another live machine
    /// publishes under this hostname.
    pub fn set_refused(&self, refused: bool) {
        self.refused
            .store(refused, std::sync::atomic::Ordering::Relaxed);
    }

    /// Leaves the `git maintenance run --auto` after a periodic fetch to finish on its
    /// own (`true`) instead of waiting for it: for `gitsync sync`, whose process ends
    /// after one sync of each repository. The daemon waits (its next sync of the
    /// repository must not find that git command running).
    pub fn set_maintenance_detached(&self, detached: bool) {
        self.maintenance_detached
            .store(detached, std::sync::atomic::Ordering::Relaxed);
    }

    /// Starts a fast-forward helper ahead at every fetch (`true`), not only at a push
    /// event's: it waits, while the fetch runs, for the decision, and ends unused when
    /// there is nothing to pull (see [`pull::Standby`]). For `gitsync sync`, run to pull;
    /// the daemon's periodic fetches mostly bring nothing and start none.
    pub fn set_helper_ahead(&self, ahead: bool) {
        self.helper_ahead
            .store(ahead, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether git's auto maintenance is left to finish on its own
    /// ([`Syncer::set_maintenance_detached`]).
    fn maintenance_is_detached(&self) -> bool {
        self.maintenance_detached
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether publishing is stopped ([`Syncer::set_refused`]).
    pub fn is_refused(&self) -> bool {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn is_dropped(&self, repo: &str) -> bool {
        self.dropped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(repo)
    }

    /// Forgets `repo` (dropped from the list): waits for a sync of it in flight, then
    /// removes its row from the store; syncs queued for it afterwards publish nothing until
    /// [`Syncer::adopt`]. Returns how many rows were removed.
    ///
    /// Errors: the store cannot be written, as a [`crate::backend::BackendError`].
    pub async fn drop_repo(&self, repo: &str) -> Result<usize, crate::backend::BackendError> {
        self.dropped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(repo.to_string());
        let slot = self.slot(repo);
        let mut last = slot.lock().await;
        *last = None;
        self.unsent().remove(repo);
        self.metrics.forget(repo);
        if let Some(notifier) = self.notifier.get() {
            notifier.forget(repo);
        }
        self.store.forget(&self.host, Some(repo)).await
    }

    /// Takes `repo` back after [`Syncer::drop_repo`] (it appeared again).
    pub fn adopt(&self, repo: &str) {
        self.dropped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(repo);
    }

    /// Stores again the last state of every repository this host keeps (not those
    /// dropped): after `gitsync forget --host` removed its rows while it ran. Returns how
    /// many were stored; one that cannot be stored waits with the unsent ones.
    pub async fn republish(&self) -> usize {
        let slots: Vec<(String, Arc<Mutex<Option<RepoState>>>)> = self
            .last
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut stored = 0;
        for (repo, slot) in slots {
            if self.is_dropped(&repo) {
                continue;
            }
            let last = slot.lock().await;
            let Some(state) = last.as_ref() else {
                continue;
            };
            match self.store.put(state).await {
                Ok(()) => stored += 1,
                Err(err) => {
                    tracing::debug!(%repo, %err, "cannot store the state again; retried later");
                    self.unsent().insert(repo.clone(), state.clone());
                }
            }
        }
        stored
    }

    /// Takes `states` (this host's records in the store, read at start-up) as what was
    /// published last, so that an unchanged repository is not written again.
    pub fn seed(&self, states: Vec<RepoState>) {
        for state in states {
            let slot = self.slot(&state.repo);
            if let Ok(mut last) = slot.try_lock()
                && last.is_none()
            {
                *last = Some(state);
            }
        }
    }

    fn unsent(&self) -> std::sync::MutexGuard<'_, HashMap<String, RepoState>> {
        self.unsent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether some state still waits to be stored.
    pub fn has_unsent(&self) -> bool {
        !self.unsent().is_empty()
    }

    /// Stores the states that could not be stored before (the newest of each repository).
    /// Returns true when nothing is left waiting.
    pub async fn flush_unsent(&self) -> bool {
        let waiting: Vec<(String, RepoState)> = self
            .unsent()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, state) in waiting {
            if self.is_dropped(&name) {
                self.unsent().remove(&name);
                continue;
            }
            if self.is_refused() {
                return false;
            }
            let slot = self.slot(&name);
            let mut last = slot.lock().await;
            // A sync may have stored a newer state meanwhile.
            let still = self
                .unsent()
                .get(&name)
                .is_some_and(|s| s.updated_at == state.updated_at);
            if !still {
                continue;
            }
            match self.store.put(&state).await {
                Ok(()) => {
                    self.outage.ok();
                    tracing::info!(repo = %name, state = state.state.as_str(), "state published");
                    self.unsent().remove(&name);
                    *last = Some(state);
                }
                Err(err) => {
                    self.outage.failed("store state", &err);
                    return false;
                }
            }
        }
        !self.has_unsent()
    }

    /// Tells the syncer whether the watcher covers every repository completely; only then
    /// may a periodic update skip reading a repository whose fetch brought nothing.
    pub fn set_watching(&self, complete: bool) {
        self.watching
            .store(complete, std::sync::atomic::Ordering::Relaxed);
    }

    fn watching(&self) -> bool {
        self.watching.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn repository_lock(&self, worktree: &std::path::Path) -> Arc<Mutex<()>> {
        let common = watcher::common_dir_of(worktree);
        let mut map = self.repositories.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(common).or_default().clone()
    }

    fn slot(&self, repo: &str) -> Arc<Mutex<Option<RepoState>>> {
        let mut map = self.last.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(repo.to_string()).or_default().clone()
    }

    /// Syncs `repo`: fetches first when `fetch` is true, then reads, fast-forwards when
    /// safe, and publishes the state if it differs from the last one published.
    pub async fn sync(&self, repo: &Repo, fetch: bool) -> Outcome {
        let fetch = if fetch { Fetch::Default } else { Fetch::No };
        self.sync_with(repo, fetch).await
    }

    /// Syncs `repo` as [`Syncer::sync`] does, fetching what `fetch` says.
    pub async fn sync_with(&self, repo: &Repo, fetch: Fetch) -> Outcome {
        // Two worktrees of one repository share its objects and refs: one at a time.
        let shared = self.repository_lock(&repo.path);
        let _shared = shared.lock().await;
        let slot = self.slot(&repo.name);
        let mut last = slot.lock().await;
        let _permit = self.permits.acquire().await;
        tracing::debug!(repo = %repo.name, ?fetch, "syncing");
        let mut ok = true;
        let mut fetch_error = None;
        let mut touched = false;
        // The fetch starts first, while the repository is opened: the remote named, or the
        // checked-out branch's (`git fetch` without one picks it from `branch.<name>.remote`,
        // or `origin`).
        let fetching = match &fetch {
            _ if !repo.path.exists() => None,
            Fetch::No => None,
            Fetch::Default => Some(None),
            Fetch::Remote(name) => Some(Some(name.clone())),
        }
        .map(|remote| {
            let (path, timeout) = (repo.path.clone(), self.pull.fetch_timeout);
            let started = std::time::Instant::now();
            let task =
                tokio::spawn(async move { ops::fetch(&path, remote.as_deref(), timeout).await });
            (started, task)
        });
        let fetches = fetching.is_some();
        // The checked-out branch's remote and upstream, read once for the fetch and for the
        // order of the pulls below, from the repository opened once for every read of this
        // sync (each reads refs, index and worktree afresh).
        let path = repo.path.clone();
        let (checked, opened) = tokio::task::spawn_blocking(move || match gix::open(&path) {
            Ok(opened) => (remotes::checked_out(&opened), Some(opened.into_sync())),
            Err(_) => (remotes::CheckedOut::default(), None),
        })
        .await
        .unwrap_or_default();
        // The worktree's part of the state is read while the fetch runs (a fetch writes
        // remote-tracking refs only) when a read follows anyway: a push event's fetch, or
        // any fetch while the watcher does not yet report local changes.
        let mut early_read = None;
        // A fast-forward helper started ahead (see below), handed the decision or dropped.
        let mut standby = None;
        // `git maintenance run --auto` after a periodic fetch, run before returning.
        let mut maintenance_due = false;
        // That maintenance, when it was started early (its start is awaited at the end).
        let mut maintenance_started = None;
        if let Some((started, fetching)) = fetching {
            touched = true;
            if (matches!(fetch, Fetch::Remote(_)) || !self.watching())
                && !fastforward::interrupted(&watcher::git_dir_of(&repo.path))
            {
                let (host, name, path) = (self.host.clone(), repo.name.clone(), repo.path.clone());
                let opened = opened.clone();
                early_read = Some(tokio::task::spawn_blocking(move || {
                    read_state(&host, &name, &path, opened)
                }));
            }
            // A pull is likely after this fetch (a push event's, or one `gitsync sync` asks
            // for): the helper starts now and waits for the decision, so that its start
            // overlaps the fetch instead of delaying the pull.
            let ahead = matches!(fetch, Fetch::Remote(_))
                || self.helper_ahead.load(std::sync::atomic::Ordering::Relaxed);
            if ahead && self.pull.fast_forward && opened.is_some() {
                standby = pull::Standby::start(&repo.path);
            }
            let mut fetched = fetching.await.unwrap_or_else(|join| {
                Err(ops::GitError::Spawn {
                    dir: repo.path.clone(),
                    source: std::io::Error::other(join.to_string()),
                })
            });
            // A branch tracking a local branch: that `git fetch` asked the repository itself
            // (`branch.<name>.remote` is "."); the remote of the branch it tracks is fetched.
            if matches!(fetch, Fetch::Default)
                && checked.tracks_local
                && let Some(remote) = checked.fetch_remote.as_deref()
            {
                fetched = ops::fetch(&repo.path, Some(remote), self.pull.fetch_timeout).await;
            }
            // A push event's fetch is on the way to a pull the user waits for: the periodic
            // ones run git's auto maintenance, as `git fetch` would, but once the state is
            // published, so that the pull does not wait for it (and the helper does not
            // take it for a git command of the user's).
            maintenance_due =
                !matches!(fetch, Fetch::Remote(_)) && fetched.is_ok() && checked.auto_maintenance;
            let result = match &fetched {
                Ok(true) => Fetched::Updated,
                Ok(false) => Fetched::Unchanged,
                Err(_) => Fetched::Failed,
            };
            self.metrics.fetched(&repo.name, result, started.elapsed());
            match fetched {
                // Nothing new from the remote, and the watcher reports every local change:
                // the state published last is still right.
                Ok(false) if self.watching() && !self.dirty.is_pending(&repo.name) => {
                    if let Some(state) = last.as_ref().filter(|s| s.error.is_none()) {
                        self.dirty.forget(&repo.name);
                        if maintenance_due {
                            self.maintain(repo, &checked).await;
                        }
                        return Outcome {
                            repo: repo.name.clone(),
                            ok: true,
                            published: false,
                            fast_forwarded: false,
                            forwarded: None,
                            state: state.clone(),
                        };
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    tracing::warn!(repo = %repo.name, %err, "fetch failed");
                    fetch_error = Some(err.to_string());
                    ok = false;
                }
            }
        }
        // Branches that are not checked out, after a fetch brought their upstreams: after the
        // checked-out branch, which the user is waiting for, unless that one tracks a local
        // branch, which must move first.
        let mut branches_behind = last.as_ref().map_or(0, |s| s.branches_behind);
        let look_at_branches = fetches && fetch_error.is_none() && repo.path.exists();
        let local_first = look_at_branches && checked.tracks_local;
        if local_first {
            branches_behind = self.other_branches(repo, opened.as_ref()).await;
        }
        let mut branches_pending = look_at_branches && !local_first;
        if fastforward::interrupted(&watcher::git_dir_of(&repo.path)) {
            touched = true;
            let outcome = pull::recover(&repo.path, self.pull.fetch_timeout).await;
            tracing::warn!(repo = %repo.name, ?outcome, "interrupted fast-forward recovered");
            // A read from before the recovery says nothing of the worktree after it.
            early_read = None;
        }
        // The refs are read again even when this fetch brought nothing: another fetch (a
        // terminal's, one a killed daemon left running) may have moved them meanwhile.
        let mut snapshot = match early_read {
            Some(early) => match early.await {
                Ok(earlier) => self.refresh(repo, opened.as_ref(), earlier).await,
                Err(_) => self.read(repo, opened.as_ref()).await,
            },
            None => self.read(repo, opened.as_ref()).await,
        };
        let mut blocked = None;
        let mut forwarded = None;
        match pull::decide(&snapshot, self.pull.fast_forward) {
            pull::Decision::Nothing => {}
            pull::Decision::Blocked(reason) => {
                if snapshot.state.behind > 0 {
                    self.metrics.refused(&repo.name, &reason);
                }
                blocked = Some(reason);
            }
            pull::Decision::FastForward(target) => {
                touched = true;
                let started = std::time::Instant::now();
                match self
                    .fast_forward(repo, &snapshot, &target, standby.take())
                    .await
                {
                    Ok(()) => {
                        self.metrics.fast_forwarded(&repo.name, started.elapsed());
                        forwarded = Some(Forwarded {
                            from: snapshot.state.head.clone().unwrap_or_default(),
                            to: target.clone(),
                            commits: snapshot.state.behind,
                        });
                        // `gitsync sync` leaves git's auto maintenance to finish on its own:
                        // it starts now, beside the read after the fast-forward.
                        if maintenance_due && self.maintenance_is_detached() {
                            maintenance_due = false;
                            maintenance_started = Some(start_maintenance(repo));
                        }
                        // The state after it, read while the other branches are looked at.
                        let branches = async {
                            if branches_pending {
                                Some(self.other_branches(repo, opened.as_ref()).await)
                            } else {
                                None
                            }
                        };
                        let (read, behind) =
                            tokio::join!(self.read(repo, opened.as_ref()), branches);
                        snapshot = read;
                        if let Some(behind) = behind {
                            branches_behind = behind;
                            branches_pending = false;
                        }
                        if self.update_submodules(repo, &snapshot).await {
                            snapshot = self.read(repo, opened.as_ref()).await;
                        }
                        if let pull::Decision::Blocked(reason) =
                            pull::decide(&snapshot, self.pull.fast_forward)
                        {
                            blocked = Some(reason);
                        }
                    }
                    Err(refused) => {
                        self.metrics.refused(&repo.name, &refused.reason);
                        blocked = Some(refused.reason);
                    }
                }
            }
        }
        // Unused (nothing to pull): its input ends and it exits.
        drop(standby);
        if branches_pending {
            branches_behind = self.other_branches(repo, opened.as_ref()).await;
        }
        if touched {
            // Our own fetch and merge made the watcher fire; the state just read covers it.
            self.dirty.forget(&repo.name);
        }
        let mut current = snapshot.state;
        current.pull_blocked = blocked;
        current.branches_behind = branches_behind;
        // A failed fetch is an error state: the row must not say up to date when the
        // remote could not be asked.
        if let Some(err) = fetch_error {
            if current.error.is_none() {
                current.error = Some(format!("fetch failed: {err}"));
            }
            current.state = crate::model::Summary::Error;
        }
        if current.state == crate::model::Summary::Error {
            tracing::warn!(repo = %repo.name, error = current.error.as_deref().unwrap_or(""), "cannot read repository");
            ok = false;
        }
        // HEAD moved (a pull, a commit, a switch): the deploys of this repository ship.
        if current.head.is_some()
            && last.as_ref().is_none_or(|prev| prev.head != current.head)
            && let Some(deploys) = self.deploys.get()
        {
            deploys.moved(&repo.path);
        }
        if !self.is_dropped(&repo.name) {
            self.metrics.record_state(&current);
            if let Some(notifier) = self.notifier.get() {
                notifier.observe(&current);
            }
        }
        let changed = last.as_ref().is_none_or(|prev| !prev.same_as(&current))
            && !self.is_dropped(&repo.name)
            && !self.is_refused();
        let mut published = false;
        if changed {
            match self.store.put(&current).await {
                Ok(()) => {
                    self.outage.ok();
                    tracing::info!(repo = %repo.name, state = current.state.as_str(), "state published");
                    self.unsent().remove(&repo.name);
                    *last = Some(current.clone());
                    published = true;
                }
                Err(err) => {
                    self.outage.failed("store state", &err);
                    self.unsent().insert(repo.name.clone(), current.clone());
                    ok = false;
                }
            }
        }
        if maintenance_due {
            self.maintain(repo, &checked).await;
        }
        if let Some(started) = maintenance_started {
            let _ = started.await;
        }
        Outcome {
            repo: repo.name.clone(),
            ok,
            published,
            fast_forwarded: forwarded.is_some(),
            forwarded,
            state: current,
        }
    }

    /// `git maintenance run --auto` in `repo` (see [`ops::auto_maintenance`]), as `git
    /// fetch` would have run it: waited for, or, after
    /// [`Syncer::set_maintenance_detached`], started and left to finish on its own.
    async fn maintain(&self, repo: &Repo, checked: &remotes::CheckedOut) {
        if self.maintenance_is_detached() {
            let _ = start_maintenance(repo).await;
            return;
        }
        let detaches = checked.maintenance_detaches;
        let ran = ops::auto_maintenance(&repo.path, detaches, self.pull.fetch_timeout).await;
        if let Err(err) = ran {
            tracing::debug!(repo = %repo.name, %err, "git maintenance run --auto failed");
        }
    }

    /// The fast-forward decided on, once the worktree has been quiet for [`EDIT_QUIET`]
    /// (the helper checks the rest under the repository's lock), by `standby` when a helper
    /// was started ahead. Returns the reason for `pull_blocked` when nothing moved.
    async fn fast_forward(
        &self,
        repo: &Repo,
        snapshot: &state::Snapshot,
        target: &str,
        standby: Option<pull::Standby>,
    ) -> Result<(), fastforward::Refused> {
        let (Some(branch), Some(from)) = (&snapshot.state.branch, &snapshot.state.head) else {
            return Err("HEAD is detached".into());
        };
        if let Some(wait) = self.dirty.edit_quiet_in(&repo.name, EDIT_QUIET) {
            self.dirty.mark_after(&repo.name, wait);
            return Err(fastforward::Refused::passing(fastforward::BEING_EDITED));
        }
        self.dirty.suppress_edits(&repo.name, true);
        let timeout = self.pull.fetch_timeout;
        let outcome = pull::fast_forward(&repo.path, branch, from, target, standby, timeout).await;
        self.dirty.suppress_edits(&repo.name, false);
        match outcome {
            Moved::Moved { files, kept } => {
                let commits = snapshot.state.behind;
                tracing::info!(
                    repo = %repo.name,
                    to = %target,
                    files,
                    "{}: fast-forwarded {branch} {}..{} ({commits} commit{}, {files} file{})",
                    repo.name,
                    short_id(from),
                    short_id(target),
                    if commits == 1 { "" } else { "s" },
                    if files == 1 { "" } else { "s" },
                );
                if !kept.is_empty() {
                    tracing::warn!(repo = %repo.name, ?kept, "saves made during the fast-forward were kept aside");
                }
                Ok(())
            }
            Moved::Blocked {
                reason,
                kept,
                retry,
            } => {
                tracing::info!(repo = %repo.name, %reason, "fast-forward refused");
                // Passing reasons are tried again soon; the others wait for a change.
                if retry == fastforward::Retry::Soon {
                    self.dirty.mark_after(&repo.name, EDIT_QUIET);
                }
                let reason = if kept.is_empty() {
                    reason
                } else {
                    format!("{reason}; your saves were kept in {}", kept.join(", "))
                };
                Err(fastforward::Refused { reason, retry })
            }
        }
    }

    /// With `submodule.recurse` set, moves each clean submodule that a fast-forward left
    /// behind to the commit now recorded, as `git pull` would (`git submodule update
    /// --checkout --recursive`, which fetches a missing commit and refuses to overwrite
    /// local changes). Returns whether it ran.
    async fn update_submodules(&self, repo: &Repo, snapshot: &state::Snapshot) -> bool {
        if snapshot.state.submodules.is_empty() {
            return false;
        }
        let (path, lines) = (repo.path.clone(), snapshot.state.submodules.clone());
        let paths = tokio::task::spawn_blocking(move || submodules::to_update(&path, &lines))
            .await
            .unwrap_or_default();
        if paths.is_empty() {
            return false;
        }
        let mut args = vec!["submodule", "update", "--checkout", "--recursive", "--"];
        args.extend(paths.iter().map(String::as_str));
        match ops::run(&repo.path, &args, self.pull.fetch_timeout).await {
            Ok(_) => {
                tracing::info!(repo = %repo.name, submodules = ?paths, "submodules moved to the recorded commits (submodule.recurse)")
            }
            Err(err) => tracing::warn!(repo = %repo.name, %err, "cannot update the submodules"),
        }
        true
    }

    /// Fast-forwards the branches that are not checked out (when `pull.fast_forward` and
    /// `pull.other_branches`); returns how many stay behind. `opened` is the repository
    /// opened for this sync, when it could be.
    async fn other_branches(&self, repo: &Repo, opened: Option<&gix::ThreadSafeRepository>) -> u32 {
        let timeout = self.pull.fetch_timeout;
        let plan = match branches::plan(&repo.path, opened, timeout).await {
            Ok(plan) => plan,
            Err(err) => {
                tracing::debug!(repo = %repo.name, %err, "cannot read the other branches");
                return 0;
            }
        };
        if !(self.pull.fast_forward && self.pull.other_branches) {
            return plan.stuck + plan.movable.len() as u32;
        }
        let (moved, refused) = branches::apply(&repo.path, &plan, timeout).await;
        for b in &moved {
            tracing::info!(
                repo = %repo.name,
                branch = %b.branch,
                commits = b.commits,
                from = short_id(&b.old),
                to = short_id(&b.new),
                "fast-forwarded a branch that is not checked out"
            );
        }
        for (b, why) in &refused {
            tracing::info!(repo = %repo.name, branch = %b.branch, %why, "branch not fast-forwarded");
        }
        plan.stuck + refused.len() as u32
    }

    /// [`state::refresh`] of `earlier` on a blocking thread: the refs read again, the rest
    /// kept.
    /// `opened` is the repository opened once for this sync, when it could be.
    async fn refresh(
        &self,
        repo: &Repo,
        opened: Option<&gix::ThreadSafeRepository>,
        earlier: state::Snapshot,
    ) -> state::Snapshot {
        let (host, name, path) = (self.host.clone(), repo.name.clone(), repo.path.clone());
        let opened = opened.cloned();
        match tokio::task::spawn_blocking(move || match opened {
            Some(opened) => state::refresh_in(&host, &name, &opened.to_thread_local(), earlier),
            None => state::refresh(&host, &name, &path, earlier),
        })
        .await
        {
            Ok(snapshot) => snapshot,
            Err(_) => self.read(repo, None).await,
        }
    }

    /// [`state::read`] on a blocking thread, of `opened` when given (see
    /// [`state::read_in`]).
    async fn read(
        &self,
        repo: &Repo,
        opened: Option<&gix::ThreadSafeRepository>,
    ) -> state::Snapshot {
        let (host, name, path) = (self.host.clone(), repo.name.clone(), repo.path.clone());
        let opened = opened.cloned();
        match tokio::task::spawn_blocking(move || read_state(&host, &name, &path, opened)).await {
            Ok(snapshot) => snapshot,
            Err(join) => state::Snapshot {
                state: RepoState::error(
                    &self.host,
                    &repo.name,
                    format!("state reader failed: {join}"),
                ),
                upstream_head: None,
                index_locked: false,
                index_lock_note: None,
                remote: None,
            },
        }
    }

    /// Syncs every repository (at most four at a time) and returns each outcome, in the
    /// order given.
    pub async fn sync_all(self: &Arc<Self>, repos: &[Repo], fetch: bool) -> Vec<Outcome> {
        self.sync_all_reporting(repos, fetch, &|_| {}).await
    }

    /// As [`Syncer::sync_all`], calling `done` with each outcome as it comes (for a
    /// progress bar).
    pub async fn sync_all_reporting(
        self: &Arc<Self>,
        repos: &[Repo],
        fetch: bool,
        done: &(dyn Fn(&Outcome) + Sync),
    ) -> Vec<Outcome> {
        let mut set = tokio::task::JoinSet::new();
        for (i, repo) in repos.iter().cloned().enumerate() {
            let me = self.clone();
            set.spawn(async move { (i, me.sync(&repo, fetch).await) });
        }
        let mut out: Vec<Option<Outcome>> = vec![None; repos.len()];
        while let Some(joined) = set.join_next().await {
            if let Ok((i, outcome)) = joined {
                done(&outcome);
                out[i] = Some(outcome);
            }
        }
        out.into_iter()
            .zip(repos)
            .map(|(o, repo)| {
                o.unwrap_or_else(|| Outcome {
                    repo: repo.name.clone(),
                    ok: false,
                    published: false,
                    fast_forwarded: false,
                    forwarded: None,
                    state: RepoState::error(&self.host, &repo.name, "sync task failed".to_string()),
                })
            })
            .collect()
    }
}

/// Starts `git maintenance run --auto` in `repo` ([`ops::start_auto_maintenance`]) on a
/// blocking thread and leaves it to finish on its own; the task ends once it is started.
fn start_maintenance(repo: &Repo) -> tokio::task::JoinHandle<()> {
    let (path, name) = (repo.path.clone(), repo.name.clone());
    tokio::task::spawn_blocking(move || {
        if let Err(err) = ops::start_auto_maintenance(&path) {
            tracing::debug!(repo = %name, %err, "git maintenance run --auto failed");
        }
    })
}

/// [`state::read`] of the repository at `path`, through `opened` (the repository one sync
/// opened for all its reads) when there is one.
fn read_state(
    host: &str,
    name: &str,
    path: &std::path::Path,
    opened: Option<gix::ThreadSafeRepository>,
) -> state::Snapshot {
    match opened {
        Some(opened) => state::read_in(host, name, &opened.to_thread_local()),
        None => state::read(host, name, path),
    }
}
