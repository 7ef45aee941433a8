//! The webhook intake: `POST /hooks/<mirror>[/<path token>]` on `webhooks.listen` (axum,
//! optionally HTTPS with rustls). Each request gets its answer in milliseconds, whatever the
//! git work takes, and never a 2xx for work that will not be done:
//!
//! | answer | when |
//! | --- | --- |
//! | 202 | a push: the job is durably queued |
//! | 200 | a ping, an event that is not a push, or a delivery id seen before |
//! | 400 | the body is not what the forge sends |
//! | 401 | a missing or wrong signature, token or path token |
//! | 403 | the source address is not allowed |
//! | 404 | no such mirror |
//! | 405 / 415 | not a POST / not JSON or a form |
//! | 408 | the body did not arrive within 10 s |
//! | 413 | the body is over `webhooks.max_body` (default 1 MiB) |
//! | 503 | the job could not be stored; the forge should retry |

use super::WebhookError;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;

use super::queue::Job;
use super::verify::{self, Event, Refusal};
use super::{DEFAULT_LISTEN, DEFAULT_MAX_BODY, Webhooks};

/// How long a client may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take, from its connection, to finish the TLS handshake and the
/// request's headers (forges send a delivery in one go).
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The address a request came from: the peer, or, when the peer is a trusted proxy, the
/// last address in `X-Forwarded-For` that is not one.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    if !trusted.iter().any(|n| n.contains(&peer)) {
        return peer;
    }
    let forwarded: Vec<IpAddr> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|a| a.trim().parse().ok())
        .collect();
    forwarded
        .into_iter()
        .rev()
        .find(|a| !trusted.iter().any(|n| n.contains(a)))
        .unwrap_or(peer)
}

pub(super) fn answer(status: StatusCode, mirror: &str, text: &str) -> Response {
    if status.is_success() {
        tracing::info!(mirror, status = status.as_u16(), "webhook: {text}");
    } else {
        tracing::warn!(mirror, status = status.as_u16(), "webhook refused: {text}");
    }
    (status, format!("{text}\n")).into_response()
}

async fn with_token(
    State(hooks): State<Arc<Webhooks>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path((name, token)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(hooks, peer, name, Some(token), headers, body).await
}

async fn without_token(
    State(hooks): State<Arc<Webhooks>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    handle(hooks, peer, name, None, headers, body).await
}

/// The body of a request to `who` (a mirror, or `sync/<provider>`), read within
/// [`BODY_TIMEOUT`] and the size limit, when its type is JSON or a form (any type for
/// `generic`); else the answer that refuses it (415, 413 or 408).
pub(super) async fn body_of(
    hooks: &Webhooks,
    who: &str,
    headers: &HeaderMap,
    body: Body,
    generic: bool,
) -> Result<axum::body::Bytes, Response> {
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !generic
        && !content_type.starts_with("application/json")
        && !content_type.starts_with("application/x-www-form-urlencoded")
    {
        return Err(answer(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            who,
            "send application/json or application/x-www-form-urlencoded",
        ));
    }
    let limit = hooks.config.max_body.unwrap_or(DEFAULT_MAX_BODY);
    let declared = headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            who,
            "body over the size limit",
        ));
    }
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(answer(
            StatusCode::REQUEST_TIMEOUT,
            who,
            "the body took too long",
        )),
        Ok(Err(_)) => Err(answer(
            StatusCode::PAYLOAD_TOO_LARGE,
            who,
            "body over the size limit",
        )),
        Ok(Ok(bytes)) => Ok(bytes),
    }
}

async fn handle(
    hooks: Arc<Webhooks>,
    peer: SocketAddr,
    name: String,
    token: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(mirror) = hooks.mirrors.get(&name) else {
        return answer(StatusCode::NOT_FOUND, "", "no such mirror");
    };
    match (&mirror.path_token, &token) {
        (Some(want), Some(got)) if verify::same_secret(want, got.as_bytes()) => {}
        (Some(_), _) => {
            return answer(
                StatusCode::UNAUTHORIZED,
                &name,
                "wrong or missing path token",
            );
        }
        (None, Some(_)) => return answer(StatusCode::NOT_FOUND, &name, "no such mirror"),
        (None, None) => {}
    }
    let client = client_address(peer.ip(), &headers, &hooks.trusted_proxies);
    if !mirror.allow_from.is_empty() && !mirror.allow_from.iter().any(|n| n.contains(&client)) {
        return answer(
            StatusCode::FORBIDDEN,
            &name,
            &format!("source address {client} is not allowed"),
        );
    }
    let generic = matches!(mirror.provider, verify::Provider::Generic { .. });
    let bytes = match body_of(&hooks, &name, &headers, body, generic).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    let delivery =
        match verify::verify(&mirror.provider, &headers, &bytes, mirror.secret.as_deref()) {
            Ok(d) => d,
            Err(Refusal::Unauthorized(why)) => {
                return answer(StatusCode::UNAUTHORIZED, &name, &why);
            }
            Err(Refusal::Malformed(why)) => return answer(StatusCode::BAD_REQUEST, &name, &why),
        };
    match &delivery.event {
        Event::Push => {}
        Event::Ping => return answer(StatusCode::OK, &name, "pong"),
        Event::Other(kind) => {
            return answer(
                StatusCode::OK,
                &name,
                &format!("ignored: {kind} is not a push"),
            );
        }
    }
    // A delivery is recorded only once its job is stored: a forge's retry of one answered
    // 503 is then queued, not called a duplicate.
    if let Some(id) = &delivery.id
        && hooks.deliveries.seen(&name, id)
    {
        return answer(StatusCode::OK, &name, "duplicate delivery; already queued");
    }
    let dedup = match &delivery.id {
        // SQS allows at most 128 characters of [A-Za-z0-9 punctuation].
        Some(id) => id
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(128)
            .collect::<String>(),
        None => format!("{}-{}", name, fastrand::u64(..)),
    };
    let job = Job {
        mirror: name.clone(),
        delivery: delivery.id.clone(),
        at: chrono::Utc::now(),
    };
    if let Err(err) = hooks.queue.put(&job, &dedup).await {
        return answer(StatusCode::SERVICE_UNAVAILABLE, &name, &err.to_string());
    }
    if let Some(id) = &delivery.id
        && let Err(err) = hooks.deliveries.record(&name, id)
    {
        // The job is stored: the answer is still 202; a retry costs one extra run at most.
        tracing::warn!(mirror = %name, %err, "cannot record the delivery id");
    }
    answer(StatusCode::ACCEPTED, &name, "queued")
}

/// The router: `POST /hooks/{name}`, `POST /hooks/{name}/{token}` and (the core's forge
/// webhooks, [`super::sync`]) `POST /hooks/sync/{provider}`.
pub fn router(hooks: Arc<Webhooks>) -> axum::Router {
    axum::Router::new()
        .route("/hooks/sync/{provider}", post(super::sync::receive))
        .route("/hooks/{name}", post(without_token))
        .route("/hooks/{name}/{token}", post(with_token))
        .with_state(hooks)
}

/// Binds `webhooks.listen` (with TLS when configured) and returns the server to spawn.
///
/// Errors: the address is taken or invalid, or the TLS files cannot be read.
pub async fn bind(
    hooks: Arc<Webhooks>,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, WebhookError> {
    let listen = hooks
        .config
        .listen
        .clone()
        .unwrap_or_else(|| DEFAULT_LISTEN.to_string());
    let addr: SocketAddr = listen.parse().map_err(|_| {
        WebhookError::Listen(format!(
            "webhooks.listen {listen:?} is not an address and port"
        ))
    })?;
    let listener = std::net::TcpListener::bind(addr)
        .map_err(|e| WebhookError::Listen(format!("webhooks: cannot listen on {addr}: {e}")))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| WebhookError::Listen(format!("webhooks: {e}")))?;
    let tls = match &hooks.config.tls {
        Some(tls) => Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(
                crate::config::expand_tilde(&tls.cert),
                crate::config::expand_tilde(&tls.key),
            )
            .await
            .map_err(|e| WebhookError::Listen(format!("webhooks.tls: {e}")))?,
        ),
        None => None,
    };
    let app = router(hooks).into_make_service_with_connect_info::<SocketAddr>();
    // Slow or idle clients may not hold file descriptors: at most `cap` connections, the
    // oldest closed first past it, each bounded in time (handshake, headers, first
    // request, body), one request per connection.
    let cap = super::limit::cap_for(super::limit::raise_nofile());
    let limiter = super::limit::Limiter::new(cap);
    tracing::info!(%addr, tls = tls.is_some(), connections = cap, "webhook intake listening");
    Ok(async move {
        let result = match tls {
            Some(config) => match axum_server::from_tcp_rustls(listener, config) {
                Ok(server) => {
                    bounded(
                        server.map(|tls| tls.handshake_timeout(HEADER_TIMEOUT).acceptor(limiter)),
                    )
                    .serve(app)
                    .await
                }
                Err(e) => Err(e),
            },
            None => match axum_server::from_tcp(listener) {
                Ok(server) => bounded(server.acceptor(limiter)).serve(app).await,
                Err(e) => Err(e),
            },
        };
        if let Err(err) = result {
            tracing::error!(%err, "webhook intake stopped");
        }
    })
}

/// `server` with the intake's time bounds: the first request within [`HEADER_TIMEOUT`] of
/// the connection (after the TLS handshake), its headers within it too, and one request per
/// connection (no keep-alive, so no connection idles holding a descriptor).
fn bounded<A: axum_server::Address, Acc>(
    server: axum_server::Server<A, Acc>,
) -> axum_server::Server<A, Acc> {
    let mut server = server.first_request_timeout(HEADER_TIMEOUT);
    server
        .http_builder()
        .http1()
        .header_read_timeout(HEADER_TIMEOUT)
        .keep_alive(false);
    server
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let trusted = vec!["127.0.0.1/32".parse().expect("net")];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            "6.6.6.6, 10.0.0.9".parse().expect("value"),
        );
        let proxy: IpAddr = "127.0.0.1".parse().expect("ip");
        let other: IpAddr = "192.0.2.1".parse().expect("ip");
        assert_eq!(
            client_address(proxy, &h, &trusted),
            "10.0.0.9".parse::<IpAddr>().expect("ip")
        );
        assert_eq!(client_address(other, &h, &trusted), other);
        assert_eq!(client_address(proxy, &HeaderMap::new(), &trusted), proxy);
    }
}
