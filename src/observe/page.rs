//! The live status page on `observe.listen`: `GET /` (HTML), `/page.js` and `/page.css`
//! (everything the page needs is served by gitsync: no external asset, so it works
//! offline and a `Content-Security-Policy` of `default-src 'self'` holds), and
//! `GET /events`, a stream of Server-Sent Events (the WHATWG HTML standard's
//! `text/event-stream`) carrying the whole [`View`] as JSON in a `view` event each time it
//! changes. Read-only: the page has no form and the routes take no input.
//!
//! A change of this host's repositories is sent at once (the syncer's record wakes the
//! stream); other hosts' rows, the hosts' liveness and the jobs are read again every
//! [`POLL`] while at least one page is open, and never while none is.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::Observed;
use crate::model::{HostRecord, RepoState};

/// How often an open page's view is read again from the store.
pub const POLL: Duration = Duration::from_millis(500);

const HTML: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");
/// Scripts, styles and the event stream from this origin only; no frames, no forms.
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Everything the page shows, as the `view` event's JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct View {
    /// This host's name.
    pub here: String,
    /// Every host x repository, sorted by repository then host.
    pub rows: Vec<Row>,
    /// Every host's liveness.
    pub hosts: Vec<HostRow>,
    /// The deploys, webhook mirrors and bucket mirrors of this host, by kind then name.
    pub jobs: Vec<JobRow>,
}

/// One host x repository, as a row of `gitsync status`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// The host's name.
    pub host: String,
    /// The repository's name.
    pub repo: String,
    /// The summary word (`up_to_date`, `behind`, ...), as in `status --json`.
    pub state: String,
    /// The checked-out branch; `None` when detached.
    pub branch: Option<String>,
    /// The short id of HEAD (7 hex digits).
    pub head: Option<String>,
    /// Commits ahead of the upstream.
    pub ahead: u32,
    /// Commits behind the upstream.
    pub behind: u32,
    /// The dirty markers ([`RepoState::markers`]).
    pub dirty: String,
    /// The note ([`RepoState::note`]).
    pub note: String,
    /// When the state last changed.
    pub updated_at: DateTime<Utc>,
    /// The host's liveness: `online`, `offline`, `stopped` or `unknown`.
    pub liveness: &'static str,
}

/// One host's liveness.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HostRow {
    /// The host's name.
    pub host: String,
    /// `online`, `offline` or `stopped`.
    pub liveness: &'static str,
    /// Its last heartbeat.
    pub last_seen: DateTime<Utc>,
    /// The gitsync version it runs.
    pub version: String,
    /// What keeps it from working, when it says so.
    pub problem: Option<String>,
}

/// One job's last run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobRow {
    /// `deploy`, `webhook_mirror` or `bucket_mirror`.
    pub kind: &'static str,
    /// Its name in the config.
    pub name: String,
    /// When its last run ended; `None` before the first.
    pub at: Option<DateTime<Utc>>,
    /// `ok`, `failed`, or `never run`.
    pub result: &'static str,
    /// How long that run took, in seconds, when known.
    pub seconds: Option<f64>,
}

/// [`HostRecord::liveness`], or `unknown` for a host without a record.
fn liveness(host: Option<&HostRecord>, now: DateTime<Utc>) -> &'static str {
    host.map_or("unknown", |h| h.liveness(now))
}

/// Builds the view from the store's `states` and `hosts`, this host's `latest` states
/// (fresher than the store's, which they replace) and the `jobs`, at `now`.
pub fn view(
    here: &str,
    states: Vec<RepoState>,
    latest: Vec<RepoState>,
    hosts: &[HostRecord],
    jobs: &[super::metrics::JobRun],
    now: DateTime<Utc>,
) -> View {
    let mut by_key: std::collections::BTreeMap<(String, String), RepoState> = states
        .into_iter()
        .map(|s| ((s.repo.clone(), s.host.clone()), s))
        .collect();
    for s in latest {
        by_key.insert((s.repo.clone(), s.host.clone()), s);
    }
    let host_of = |name: &str| hosts.iter().find(|h| h.host == name);
    let rows = by_key
        .into_values()
        .map(|s| Row {
            liveness: liveness(host_of(&s.host), now),
            state: s.state.as_str().to_string(),
            head: s
                .head
                .as_deref()
                .map(|h| crate::util::words::short_id(h).to_string()),
            dirty: s.markers(),
            note: s.note(),
            host: s.host,
            repo: s.repo,
            branch: s.branch,
            ahead: s.ahead,
            behind: s.behind,
            updated_at: s.updated_at,
        })
        .collect();
    let mut hosts: Vec<HostRow> = hosts
        .iter()
        .map(|h| HostRow {
            host: h.host.clone(),
            liveness: liveness(Some(h), now),
            last_seen: h.last_seen,
            version: h.version.clone(),
            problem: h.problem.clone(),
        })
        .collect();
    hosts.sort_by(|a, b| a.host.cmp(&b.host));
    let mut jobs: Vec<JobRow> = jobs
        .iter()
        .map(|j| JobRow {
            kind: j.kind,
            name: j.name.clone(),
            at: j.at,
            result: match j.ok {
                None => "never run",
                Some(true) => "ok",
                Some(false) => "failed",
            },
            seconds: j.took.map(|t| t.as_secs_f64()),
        })
        .collect();
    jobs.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    View {
        here: here.to_string(),
        rows,
        hosts,
        jobs,
    }
}

/// The page's state: what to read, and the latest view's JSON for the open pages.
#[derive(Clone)]
pub struct Page {
    observed: Observed,
    views: Arc<tokio::sync::watch::Sender<Option<Arc<String>>>>,
}

impl Page {
    /// A page over `observed`, and the task that keeps its view current while a page is
    /// open (to run as a daemon worker).
    pub fn new(observed: Observed) -> (Page, impl std::future::Future<Output = ()> + Send) {
        let (views, _) = tokio::sync::watch::channel(None);
        let page = Page {
            observed,
            views: Arc::new(views),
        };
        let task = page.clone().keep_current();
        (page, task)
    }

    async fn read(&self) -> View {
        let store = &self.observed.store;
        let states = match tokio::time::timeout(super::STORE_TIMEOUT, store.list(None)).await {
            Ok(Ok(states)) => states,
            _ => Vec::new(),
        };
        let hosts = super::host_records(store.as_ref()).await;
        let jobs = super::job_runs(&self.observed.jobs).await;
        view(
            &self.observed.here,
            states,
            self.observed.metrics.latest(),
            &hosts,
            &jobs,
            Utc::now(),
        )
    }

    /// Reads the view whenever this host's states change or [`POLL`] passes, while at
    /// least one page listens, and sends it when it differs from the last one.
    async fn keep_current(self) {
        loop {
            if self.views.receiver_count() > 0 {
                let view = self.read().await;
                match serde_json::to_string(&view) {
                    Ok(json) => {
                        self.views.send_if_modified(|current| {
                            if current.as_deref().map(String::as_str) == Some(json.as_str()) {
                                return false;
                            }
                            *current = Some(Arc::new(json));
                            true
                        });
                    }
                    Err(err) => tracing::warn!(%err, "status page: cannot encode the view"),
                }
            }
            tokio::select! {
                () = self.observed.metrics.changed() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }
}

/// The routes of the page: `/`, `/page.js`, `/page.css`, `/events`.
pub fn router(page: Page) -> axum::Router {
    axum::Router::new()
        .route(
            "/",
            axum::routing::get(|| asset(HTML, "text/html; charset=utf-8")),
        )
        .route(
            "/page.js",
            axum::routing::get(|| asset(SCRIPT, "text/javascript; charset=utf-8")),
        )
        .route(
            "/page.css",
            axum::routing::get(|| asset(STYLE, "text/css; charset=utf-8")),
        )
        .route("/events", axum::routing::get(events))
        .with_state(page)
}

async fn asset(body: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// The event stream: the current view at once (when one was read), then each new one.
async fn events(
    State(page): State<Page>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let mut views = page.views.subscribe();
    // The view may be old when no page was open: read it again now.
    page.observed.metrics.wake();
    views.mark_changed();
    let stream = futures_util::stream::unfold(views, |mut views| async move {
        loop {
            views.changed().await.ok()?;
            let current = views.borrow_and_update().clone();
            if let Some(json) = current {
                let event = Event::default().event("view").data(json.as_str());
                return Some((Ok(event), views));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
