//! Receive, then pull: push events from the other machines become a fetch and a safe
//! fast-forward here.
//!
//! An event names a repository by its path under the root and by its remote URL. It is
//! matched to the repositories here with the same path, or else with a remote whose URL
//! is the same once normalized ([`crate::model::normalize_url`]), and each match is synced:
//! fetch that remote, fast-forward under invariant 1, publish the new state. An event is
//! acknowledged only after it was handled (at-least-once); one already handled (same id)
//! is acknowledged without another fetch; an event for a repository this machine does not
//! have is acknowledged and ignored. Deletions and tags are fetched like any push; nothing
//! local is ever deleted.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::registry::Registry;
use super::syncer::{Fetch, Syncer};
use crate::backend::{Delivery, EventBus};
use crate::discover::Repo;
use crate::git::remotes::{self, RemoteInfo};
use crate::model::{PushEvent, normalize_url};

/// How long one `receive` waits for events (the SQS long-polling maximum, 20 s).
const RECEIVE_WAIT: Duration = Duration::from_secs(20);
/// How often deliveries still being handled get their visibility extended.
const EXTEND_EVERY: Duration = Duration::from_secs(20);
/// How far each extension reaches.
const EXTEND_BY: Duration = Duration::from_secs(60);
/// How many handled event ids are remembered to drop duplicates.
const SEEN_CAPACITY: usize = 4096;
/// How old the remote-URL index may be before a miss rebuilds it.
const INDEX_MAX_AGE: Duration = Duration::from_secs(60);

/// The last [`SEEN_CAPACITY`] event ids handled, oldest first out.
#[derive(Default)]
struct Seen {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl Seen {
    fn contains(&self, id: &str) -> bool {
        self.ids.contains(id)
    }

    fn insert(&mut self, id: String) {
        if self.ids.insert(id.clone()) {
            self.order.push_back(id);
            if self.order.len() > SEEN_CAPACITY
                && let Some(old) = self.order.pop_front()
            {
                self.ids.remove(&old);
            }
        }
    }
}

/// Each repository's remotes, read once and rebuilt when stale or when the repository
/// list changed.
struct RemoteIndex {
    by_repo: HashMap<String, Vec<RemoteInfo>>,
    built: Instant,
    of: Arc<Vec<Repo>>,
}

/// One repository's share of a batch: the repository, the remotes to fetch (`None`: the
/// default one) and the events that fetch serves.
type Work = (Repo, Vec<Option<String>>, Vec<PushEvent>);

/// Handles the events of the other machines for this host's repositories.
pub struct Receiver {
    host: String,
    bus: Arc<dyn EventBus>,
    syncer: Arc<Syncer>,
    repos: Arc<Registry>,
    seen: Mutex<Seen>,
    index: tokio::sync::Mutex<Option<RemoteIndex>>,
    /// Why events cannot be received now, shared with the heartbeat (`None` when they
    /// can).
    problem: Arc<std::sync::Mutex<Option<String>>>,
}

impl Receiver {
    /// A receiver for `repos` of `host`, reading `bus` and syncing with `syncer`.
    pub fn new(
        host: String,
        bus: Arc<dyn EventBus>,
        syncer: Arc<Syncer>,
        repos: Arc<Registry>,
    ) -> Self {
        Receiver {
            host,
            bus,
            syncer,
            repos,
            seen: Mutex::new(Seen::default()),
            index: tokio::sync::Mutex::new(None),
            problem: Arc::new(std::sync::Mutex::new(None)),
        }
    }

    /// The same receiver, saying why events cannot be received into `problem` (the
    /// daemon's heartbeat publishes it), and clearing it when they can again.
    pub fn reporting_to(mut self, problem: Arc<std::sync::Mutex<Option<String>>>) -> Self {
        self.problem = problem;
        self
    }

    fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = problem;
    }

    /// Receives and handles events until the task is dropped. Bus failures are logged once
    /// per outage and retried with capped, jittered backoff.
    pub async fn run(self: Arc<Self>) {
        let mut backoff =
            crate::util::backoff::Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            match self.bus.receive(RECEIVE_WAIT).await {
                Ok(deliveries) => {
                    if backoff.failing() {
                        tracing::info!(bus = self.bus.name(), "event bus reachable again");
                        backoff.reset();
                        self.set_problem(None);
                    }
                    self.handle_all(deliveries).await;
                }
                Err(err) => {
                    let text = err.to_string();
                    let missing = ["NonExistentQueue", "QueueDoesNotExist", "does not exist"]
                        .iter()
                        .any(|m| text.contains(m));
                    let problem = if missing {
                        format!(
                            "this host's event queue is missing: `gitsync aws setup` creates it ({text})"
                        )
                    } else {
                        format!("cannot receive events: {text}")
                    };
                    if !backoff.failing() {
                        if missing {
                            tracing::error!(bus = self.bus.name(), "{problem}; retrying");
                        } else {
                            tracing::warn!(bus = self.bus.name(), %err, "cannot receive events; retrying");
                        }
                    }
                    self.set_problem(Some(problem));
                    tokio::time::sleep(backoff.failed()).await;
                }
            }
        }
    }

    /// Handles a batch: the events for one repository coalesce (one fetch of each remote
    /// they name serves them all, however many there are), different repositories are
    /// synced concurrently, then each delivery is acknowledged in order. A flood of events
    /// for one repository therefore costs one fetch per batch and delays no other.
    pub async fn handle_all(self: &Arc<Self>, deliveries: Vec<Delivery>) {
        // Per repository: the remotes to fetch and the events the fetch serves.
        let mut work: HashMap<String, Work> = HashMap::new();
        let mut spawned = HashSet::new();
        for delivery in &deliveries {
            let event = &delivery.event;
            // The same event twice in one batch: handled once, acknowledged twice.
            if !spawned.insert(event.id.clone()) || !self.wanted(event) {
                continue;
            }
            let lag = (chrono::Utc::now() - event.at).to_std().unwrap_or_default();
            self.syncer.metrics().event_received(lag);
            let targets = self.targets(event).await;
            if targets.is_empty() {
                tracing::debug!(repo = %event.repo, host = %event.host, "push event for a repository not here; ignored");
            }
            for (repo, remote) in targets {
                let entry = work
                    .entry(repo.name.clone())
                    .or_insert_with(|| (repo, Vec::new(), Vec::new()));
                if !entry.1.contains(&remote) {
                    entry.1.push(remote);
                }
                entry.2.push(event.clone());
            }
        }
        let mut set = tokio::task::JoinSet::new();
        for (_, (repo, remotes, events)) in work {
            let me = self.clone();
            set.spawn(async move { me.sync_for(&repo, &remotes, &events).await });
        }
        // Keep the messages invisible to other receivers while long fetches run.
        let keep_alive = {
            let bus = self.bus.clone();
            let held = deliveries.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(EXTEND_EVERY).await;
                    for delivery in &held {
                        if let Err(err) = bus.extend(delivery, EXTEND_BY).await {
                            tracing::debug!(%err, id = %delivery.event.id, "cannot extend visibility");
                        }
                    }
                }
            })
        };
        while set.join_next().await.is_some() {}
        keep_alive.abort();
        if let Err(err) = self.bus.ack_all(&deliveries).await {
            tracing::warn!(%err, events = deliveries.len(), "cannot acknowledge events");
        }
    }

    /// Whether an event is worth a sync: not this host's own, not handled before, and
    /// well-formed ([`PushEvent::validate`]; a refused one is logged).
    fn wanted(&self, event: &PushEvent) -> bool {
        if event.host == self.host {
            return false;
        }
        if let Err(why) = event.validate() {
            tracing::warn!(id = %event.id, host = %event.host, %why, "push event refused");
            return false;
        }
        if self.seen_before(&event.id) {
            tracing::debug!(id = %event.id, repo = %event.repo, "event already handled");
            return false;
        }
        true
    }

    /// One sync of `repo` per remote in `remotes` (`None`: the default remote), serving
    /// `events`; they are remembered as handled when every sync succeeded.
    async fn sync_for(&self, repo: &Repo, remotes: &[Option<String>], events: &[PushEvent]) {
        let mut ok = true;
        for remote in remotes {
            let fetch = remote.clone().map_or(Fetch::Default, Fetch::Remote);
            let outcome = self.syncer.sync_with(repo, fetch).await;
            ok &= outcome.ok;
            let last = events.last();
            tracing::info!(
                repo = %repo.name,
                from = %last.map(|e| e.host.as_str()).unwrap_or(""),
                ref_name = %last.map(|e| e.ref_name.as_str()).unwrap_or(""),
                new = %last.map(|e| e.new.as_str()).unwrap_or(""),
                events = events.len(),
                fast_forwarded = outcome.fast_forwarded,
                state = outcome.state.state.as_str(),
                "{}: push event handled ({} from {}, {}): {}",
                repo.name,
                last.map(|e| e.ref_name.trim_start_matches("refs/heads/")).unwrap_or("?"),
                last.map(|e| e.host.as_str()).unwrap_or("?"),
                crate::util::words::short_id(last.map(|e| e.new.as_str()).unwrap_or("")),
                match &outcome.forwarded {
                    Some(f) => format!(
                        "pulled {}..{} ({} commit{})",
                        crate::util::words::short_id(&f.from),
                        crate::util::words::short_id(&f.to),
                        f.commits,
                        if f.commits == 1 { "" } else { "s" }
                    ),
                    None => outcome.state.state.as_str().replace('_', " "),
                }
            );
        }
        if ok {
            for event in events {
                self.remember(&event.id);
            }
        }
        // For `status`: this repository gets pushes through a forge's webhook.
        if let Some(provider) = events
            .iter()
            .rev()
            .find_map(|e| super::reach::provider_of(&e.host))
        {
            let home = crate::config::gitsync_home();
            if let Err(err) = super::reach::record(&home, &repo.name, provider) {
                tracing::debug!(%err, "cannot record the webhook seen");
            }
        }
    }

    fn seen_before(&self, id: &str) -> bool {
        self.seen
            .lock()
            .map(|seen| seen.contains(id))
            .unwrap_or(false)
    }

    fn remember(&self, id: &str) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.insert(id.to_string());
        }
    }

    /// The repositories the event is about, with the remote to fetch (the one whose URL
    /// matches the event's, or `None` for the default remote).
    async fn targets(&self, event: &PushEvent) -> Vec<(Repo, Option<String>)> {
        let wanted = normalize_url(&event.remote_url);
        let current = self.repos.current();
        let by_name = current.iter().find(|r| r.name == event.repo);
        let mut guard = self.index.lock().await;
        let stale = guard
            .as_ref()
            .is_none_or(|index| index.built.elapsed() > INDEX_MAX_AGE);
        let outdated = guard
            .as_ref()
            .is_none_or(|index| !Arc::ptr_eq(&index.of, &current));
        if outdated || (stale && by_name.is_none()) {
            let repos = current.clone();
            let built = tokio::task::spawn_blocking(move || {
                repos
                    .iter()
                    .map(|r| (r.name.clone(), remotes::list(&r.path)))
                    .collect::<HashMap<_, _>>()
            })
            .await
            .unwrap_or_default();
            *guard = Some(RemoteIndex {
                by_repo: built,
                built: Instant::now(),
                of: current.clone(),
            });
        }
        let by_repo = guard.as_ref().map(|i| &i.by_repo);
        let remote_of = |repo: &Repo| {
            by_repo
                .and_then(|m| m.get(&repo.name))
                .and_then(|list| list.iter().find(|r| r.normalized == wanted))
                .map(|r| r.name.clone())
        };
        if let Some(repo) = by_name {
            return vec![(repo.clone(), remote_of(repo))];
        }
        current
            .iter()
            .filter_map(|repo| remote_of(repo).map(|remote| (repo.clone(), Some(remote))))
            .collect()
    }
}
