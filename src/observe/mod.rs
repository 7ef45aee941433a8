//! What the daemon shows to monitoring on `observe.listen` (off unless set; a loopback
//! address is the usual choice), served by axum as the webhook intake is:
//!
//! - `GET /metrics`: [`Metrics`] in the OpenMetrics text format when the scraper asks
//!   for it (`Accept: application/openmetrics-text`, as Prometheus does), else in
//!   Prometheus' text format 0.0.4 (what `curl` and `promtool check metrics` read);
//! - `GET /healthz`: 200 while the process answers;
//! - `GET /readyz`: 200 once the start-up update finished, the state store answers and
//!   the event bus's last receive worked; 503 with the reason in the body before that,
//!   when the store does not answer (the local hub's folder is gone, AWS cannot be
//!   reached), or when events cannot be received (the host's SQS queue is gone);
//! - `GET /`: the live status page ([`page`]), with its script, style and event stream.

pub mod metrics;
pub mod notify;
pub mod page;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub use metrics::Metrics;

/// How long `/readyz` and `/metrics` wait for the store.
const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// Reads the last runs of the deploys and mirrors, from their state files.
pub type JobRuns = Arc<dyn Fn() -> Vec<metrics::JobRun> + Send + Sync>;

/// `jobs` read on a blocking thread (they read files); none when that thread fails.
pub async fn job_runs(jobs: &JobRuns) -> Vec<metrics::JobRun> {
    let read = jobs.clone();
    tokio::task::spawn_blocking(move || read())
        .await
        .unwrap_or_default()
}

/// Every host's record in `store`; none when the store does not answer within
/// [`STORE_TIMEOUT`] (logged at debug level).
pub async fn host_records(store: &dyn crate::backend::StateStore) -> Vec<crate::model::HostRecord> {
    match tokio::time::timeout(STORE_TIMEOUT, store.hosts(None)).await {
        Ok(Ok(hosts)) => hosts,
        Ok(Err(err)) => {
            tracing::debug!(%err, "cannot read the host records");
            Vec::new()
        }
        Err(_) => {
            tracing::debug!("the host records were not read within {STORE_TIMEOUT:?}");
            Vec::new()
        }
    }
}

/// What the endpoints read.
#[derive(Clone)]
pub struct Observed {
    /// This host's name.
    pub here: String,
    /// The syncer's metrics and readiness.
    pub metrics: Arc<Metrics>,
    /// The state store (host records for the heartbeat ages; its health for `/readyz`).
    pub store: Arc<dyn crate::backend::StateStore>,
    /// Reads the last runs of the deploys and mirrors.
    pub jobs: JobRuns,
    /// Why events cannot be received now, as the event receiver last said (`None` while
    /// its receives work).
    pub bus_problem: Arc<std::sync::Mutex<Option<String>>>,
}

/// The routes: `/metrics`, `/healthz`, `/readyz`, and the page's (see [`page::router`]).
pub fn router(observed: Observed, page: page::Page) -> axum::Router {
    axum::Router::new()
        .route("/healthz", axum::routing::get(healthz))
        .route("/readyz", axum::routing::get(readyz))
        .route("/metrics", axum::routing::get(metrics))
        .with_state(observed)
        .merge(page::router(page))
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(observed): State<Observed>) -> (StatusCode, String) {
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    if !observed.metrics.is_ready() {
        return (
            unavailable,
            "not ready: the start-up update has not finished\n".to_string(),
        );
    }
    match tokio::time::timeout(STORE_TIMEOUT, observed.store.health()).await {
        Ok(Ok(())) => {
            let bus_problem = observed
                .bus_problem
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            if let Some(problem) = bus_problem {
                return (
                    unavailable,
                    format!("not ready: the event bus does not answer: {problem}\n"),
                );
            }
            (StatusCode::OK, "ready\n".to_string())
        }
        Ok(Err(err)) => (
            unavailable,
            format!("not ready: the state store does not answer: {err}\n"),
        ),
        Err(_) => (
            unavailable,
            format!(
                "not ready: the state store did not answer within {} s\n",
                STORE_TIMEOUT.as_secs()
            ),
        ),
    }
}

async fn metrics(State(observed): State<Observed>, headers: HeaderMap) -> Response {
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let hosts = host_records(observed.store.as_ref()).await;
    let jobs = job_runs(&observed.jobs).await;
    match observed.metrics.encode(&hosts, &jobs, chrono::Utc::now()) {
        Ok(text) if openmetrics => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            metrics::prometheus_text(&text),
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Binds `listen` and returns the server, to run as a daemon worker.
///
/// Errors: the address cannot be bound (taken, not this machine's).
pub async fn serve(
    listen: SocketAddr,
    observed: Observed,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(%listen, "serving the status page at http://{listen}/, and /metrics, /healthz and /readyz");
    let (page, keep_current) = page::Page::new(observed.clone());
    Ok(async move {
        tokio::select! {
            served = axum::serve(listener, router(observed, page)) => {
                if let Err(err) = served {
                    tracing::error!(%err, "the observe endpoints stopped");
                }
            }
            () = keep_current => {}
        }
    })
}
