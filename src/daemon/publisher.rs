//! Confirm, then publish: a push the hook handed over becomes an event only once it landed.
//!
//! The pre-push hook runs before git sends anything, so a notice says what git is about to
//! push, not what the remote accepted. For each ref the daemon watches the remote-tracking
//! ref that `git push` updates after the remote says yes (read with gix every 10 ms at
//! first, then every 100 ms). When the `git push` process has exited and a ref is still
//! unconfirmed (a tag, a push to a URL, or a rejection), one `git ls-remote` settles it.
//! A rejected push publishes nothing; after [`CONFIRM_LIMIT`] the daemon gives up and logs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::handoff::{Notice, RefUpdate};
use super::registry::Registry;
use super::syncer::Syncer;
use crate::backend::EventBus;
use crate::backend::outage::Outage;
use crate::discover::Repo;
use crate::git::{ops, remotes};
use crate::model::{PushEvent, is_zero_oid};

/// The longest a push is watched before the daemon gives up on confirming it.
pub const CONFIRM_LIMIT: Duration = Duration::from_secs(600);
/// The limit of the one `git ls-remote` that settles unconfirmed refs.
const LS_REMOTE_TIMEOUT: Duration = Duration::from_secs(20);

/// Turns hook notices into published push events.
pub struct Publisher {
    host: String,
    bus: Arc<dyn EventBus>,
    syncer: Arc<Syncer>,
    repos: Arc<Registry>,
    /// Confirmed pushes the bus could not take yet, oldest first.
    pending: std::sync::Mutex<Vec<PushEvent>>,
    /// Ids of the events published last, so one push seen by the hook and by the watcher
    /// goes out once.
    recent: std::sync::Mutex<std::collections::VecDeque<String>>,
    outage: Outage,
    /// Mirrors to run when a push to their source lands (`mirrors[].on_push`).
    mirrors: std::sync::OnceLock<crate::mirror::PushTriggers>,
}

/// The most confirmed pushes kept while the bus is unreachable; older ones are dropped
/// (the other machines' periodic fetch still brings them).
const MAX_PENDING: usize = 10_000;

fn canonical(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

/// The canonical common git dir of the repository at or above `path`.
fn common_dir(path: &Path) -> Option<PathBuf> {
    let repo = gix::discover(path).ok()?;
    canonical(repo.common_dir())
}

impl Publisher {
    /// A publisher for `repos` of `host`, announcing on `bus` and refreshing the pushing
    /// repository's state with `syncer` once its push is confirmed.
    pub fn new(
        host: String,
        bus: Arc<dyn EventBus>,
        syncer: Arc<Syncer>,
        repos: Arc<Registry>,
    ) -> Self {
        Publisher {
            host,
            bus,
            syncer,
            repos,
            pending: std::sync::Mutex::new(Vec::new()),
            recent: std::sync::Mutex::new(std::collections::VecDeque::new()),
            outage: Outage::new("event bus"),
            mirrors: std::sync::OnceLock::new(),
        }
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, Vec<PushEvent>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the mirrors to wake when a push to their source lands (once; later calls are
    /// ignored).
    pub fn set_mirror_triggers(&self, triggers: crate::mirror::PushTriggers) {
        let _ = self.mirrors.set(triggers);
    }

    /// Whether confirmed pushes wait for the bus.
    pub fn has_pending(&self) -> bool {
        !self.pending().is_empty()
    }

    /// Publishes the pushes that could not be published before, oldest first. Returns true
    /// when none is left.
    pub async fn flush_pending(&self) -> bool {
        let waiting: Vec<PushEvent> = self.pending().clone();
        for event in waiting {
            match self.bus.publish(&event).await {
                Ok(()) => {
                    self.outage.ok();
                    tracing::info!(repo = %event.repo, ref_name = %event.ref_name, new = %event.new, "{}: push of {} ({}) published", event.repo, event.ref_name.trim_start_matches("refs/heads/"), crate::util::words::short_id(&event.new));
                    self.pending().retain(|e| e.id != event.id);
                }
                Err(err) => {
                    self.outage.failed("publish push", &err);
                    return false;
                }
            }
        }
        !self.has_pending()
    }

    /// The configured repository the hook ran in: its worktree, or (for a linked worktree)
    /// the repository sharing its common git dir.
    fn locate(&self, cwd: &Path) -> Option<Repo> {
        let cwd = canonical(cwd)?;
        let repos = self.repos.current();
        if let Some(repo) = repos
            .iter()
            .find(|r| canonical(&r.path).as_deref() == Some(cwd.as_path()))
        {
            return Some(repo.clone());
        }
        let common = common_dir(&cwd)?;
        repos
            .iter()
            .find(|r| common_dir(&r.path).as_deref() == Some(common.as_path()))
            .cloned()
    }

    /// Confirms the pushes in `notice` and publishes one event per ref that landed.
    /// `finished`: the push is known to be over (a spooled notice). Returns the events
    /// published; failures are logged.
    pub async fn handle(&self, notice: Notice, finished: bool) -> Vec<PushEvent> {
        let Some(repo) = self.locate(&notice.cwd) else {
            tracing::debug!(cwd = %notice.cwd.display(), "push from a repository gitsync does not sync; ignored");
            return Vec::new();
        };
        let url = remotes::absolute_url(&notice.url, &notice.cwd);
        let confirmed = self.confirm(&repo, &notice, finished).await;
        let mut published = Vec::new();
        for update in confirmed {
            let event = PushEvent::new(
                &self.host,
                &repo.name,
                &url,
                &update.remote_ref,
                &update.remote_sha,
                &update.local_sha,
            );
            if self.publish(event.clone(), "hook").await {
                published.push(event);
            }
        }
        // The push moved the remote-tracking refs: ahead/behind changed.
        self.syncer.sync(&repo, false).await;
        published
    }

    /// Publishes `event` (a push that landed, seen by `how`: the hook or the watcher), or
    /// keeps it for [`Publisher::flush_pending`] when the bus is unreachable. An event
    /// published a moment ago (the same push seen both ways) is not published again.
    /// Returns whether it went out now.
    pub async fn publish(&self, event: PushEvent, how: &'static str) -> bool {
        {
            let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
            if recent.contains(&event.id) {
                return false;
            }
            if recent.len() >= 256 {
                recent.pop_front();
            }
            recent.push_back(event.id.clone());
        }
        // The push landed at the remote whatever the bus does: mirrors of it run now.
        if let Some(triggers) = self.mirrors.get() {
            triggers.pushed(&event.remote_url);
        }
        match self.bus.publish(&event).await {
            Ok(()) => {
                self.outage.ok();
                tracing::info!(repo = %event.repo, ref_name = %event.ref_name, new = %event.new, seen_by = how, "{}: push of {} ({}) published", event.repo, event.ref_name.trim_start_matches("refs/heads/"), crate::util::words::short_id(&event.new));
                true
            }
            Err(err) => {
                self.outage.failed("publish push", &err);
                let mut pending = self.pending();
                if pending.len() >= MAX_PENDING {
                    pending.remove(0);
                }
                pending.push(event);
                false
            }
        }
    }

    /// Waits until each update's remote-tracking ref reaches the pushed commit, or the push
    /// ends; settles the rest with `git ls-remote`. Returns the updates that landed.
    async fn confirm(&self, repo: &Repo, notice: &Notice, finished: bool) -> Vec<RefUpdate> {
        let opened = match gix::open(&repo.path) {
            Ok(opened) => opened,
            Err(err) => {
                tracing::warn!(repo = %repo.name, %err, "cannot open repository to confirm a push");
                return Vec::new();
            }
        };
        let expected = |u: &RefUpdate| (!is_zero_oid(&u.local_sha)).then(|| u.local_sha.clone());
        let mut pending: Vec<(RefUpdate, Option<String>)> = notice
            .updates
            .iter()
            .map(|u| {
                let tracking = remotes::tracking_ref(&opened, &notice.remote, &u.remote_ref);
                (u.clone(), tracking)
            })
            .collect();
        let mut landed = Vec::new();
        let started = Instant::now();
        loop {
            // Whether the push is over is asked first, so that the look at the refs below
            // is the last one when it is.
            let push_over = finished
                || match notice.push_pid {
                    Some(pid) => !super::pidfile::process_alive(pid),
                    None => started.elapsed() > Duration::from_secs(30),
                };
            pending.retain(|(update, tracking)| {
                let reached = tracking
                    .as_deref()
                    .is_some_and(|t| remotes::ref_target(&opened, t) == expected(update));
                if reached {
                    landed.push(update.clone());
                }
                !reached
            });
            if pending.is_empty() {
                return landed;
            }
            if push_over {
                break;
            }
            if started.elapsed() > CONFIRM_LIMIT {
                tracing::warn!(repo = %repo.name, refs = pending.len(), "push not confirmed in time; nothing published for it");
                return landed;
            }
            let pause = if started.elapsed() < Duration::from_secs(3) {
                10
            } else {
                100
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        let names: Vec<&str> = pending.iter().map(|(u, _)| u.remote_ref.as_str()).collect();
        match ops::ls_remote(&repo.path, &notice.remote, &names, LS_REMOTE_TIMEOUT).await {
            Ok(found) => {
                for (update, _) in pending {
                    let now = found
                        .iter()
                        .find(|(name, _)| *name == update.remote_ref)
                        .map(|(_, oid)| oid.clone());
                    if now == expected(&update) {
                        landed.push(update);
                    } else {
                        tracing::info!(repo = %repo.name, ref_name = %update.remote_ref, "push did not land (rejected or superseded); nothing published");
                    }
                }
            }
            Err(err) => {
                tracing::warn!(repo = %repo.name, %err, "cannot confirm push with ls-remote; nothing published")
            }
        }
        landed
    }
}
