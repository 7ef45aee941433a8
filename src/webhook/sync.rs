//! Forge push webhooks for the core (`webhooks.sync`): `POST /hooks/sync/<provider>`.
//!
//! A push webhook is verified exactly as a mirror's ([`super::verify`]), then matched to the
//! repositories this host keeps by the repository URLs the payload names (normalized with
//! [`crate::model::normalize_url`]: scheme, user, port, `.git` and the host's case do not
//! matter). Each ref the payload says moved becomes a [`PushEvent`] on the event bus, so
//! every host that has the repository fetches once and fast-forwards its clean checkouts,
//! as for a push from a gitsync host. The payload only says which repository to fetch:
//! the fetch goes to the repository's own remote, and what it brings decides.
//!
//! | answer | when |
//! | --- | --- |
//! | 202 | announced for the repositories named in the body |
//! | 200 | a ping, an event that is not a push, a delivery id seen before, or a repository this host does not keep |
//! | 400 | the body is not what the forge sends, or names no ref |
//! | 401 | a missing or wrong signature or token |
//! | 403 | the source address is not allowed |
//! | 404 | no `webhooks.sync` entry for this provider |
//! | 503 | the event bus cannot take the event now; the forge should retry |
//!
//! Payload fields read: GitHub "Webhook events and payloads" (`push`: `ref`, `before`,
//! `after`, `repository.clone_url` / `ssh_url` / `git_url` / `html_url`); GitLab "Webhook
//! events" (`Push Hook`, `Tag Push Hook`: `ref`, `before`, `after`,
//! `project.git_http_url` / `git_ssh_url` / `web_url`); Gitea and Forgejo
//! (`services/webhook` push payload: as GitHub's); Bitbucket Cloud "Event payloads"
//! (`repo:push`: `push.changes[].new` / `old`, `repository.links.html.href`,
//! `repository.full_name`); Bitbucket Data Center (`repo:refs_changed`:
//! `changes[].refId` / `fromHash` / `toHash`, `repository.links.clone[].href`); `generic`:
//! GitHub's shape.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::Value;

use super::intake::{answer, body_of, client_address};
use super::verify::{self, Event, Refusal};
use super::{WebhookError, Webhooks};
use crate::backend::EventBus;
use crate::config::WebhookSyncConfig;
use crate::discover::Repo;
use crate::model::{PushEvent, ZERO_OID, normalize_url};

/// One `webhooks.sync` entry, resolved: its secret read, its addresses parsed.
#[derive(Clone)]
pub struct SyncHook {
    /// The provider's name as configured (`github`, ...).
    pub name: &'static str,
    /// How its webhooks are verified.
    pub provider: verify::Provider,
    /// The webhook secret.
    pub secret: Option<Vec<u8>>,
    /// Source addresses allowed (empty: any).
    pub allow_from: Vec<ipnet::IpNet>,
}

impl std::fmt::Debug for SyncHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("SyncHook")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl SyncHook {
    /// Resolves `spec`: reads its secret from the environment or a file.
    ///
    /// Errors: [`WebhookError::Secret`] when the secret is not set or unreadable,
    /// [`WebhookError::Setting`] for a provider that cannot sign.
    pub fn resolve(spec: &WebhookSyncConfig) -> Result<SyncHook, WebhookError> {
        let name = spec.provider.as_str();
        let provider =
            verify::Provider::parse(name, spec.gitlab_signing, spec.signature_header.as_deref())?;
        if !provider.needs_secret() {
            return Err(WebhookError::Setting(format!(
                "webhooks.sync: {name} signs nothing"
            )));
        }
        let secret = super::read_secret(
            spec.secret_env.as_deref(),
            spec.secret_file.as_deref(),
            &format!("webhooks.sync {name}: webhook secret"),
        )?;
        if secret.is_none() {
            return Err(WebhookError::Secret(format!(
                "webhooks.sync {name}: no webhook secret configured"
            )));
        }
        Ok(SyncHook {
            name,
            provider,
            secret,
            allow_from: spec
                .allow_from
                .iter()
                .filter_map(|c| crate::config::webhooks::parse_net(c))
                .collect(),
        })
    }
}

/// The repositories this host keeps now (the daemon's registry).
pub type Repos = Arc<dyn Fn() -> Arc<Vec<Repo>> + Send + Sync>;

/// Where verified pushes go: the event bus, as this host.
#[derive(Clone)]
pub struct Sink {
    /// This host's name (events it publishes are not its own pushes: see [`announcer`]).
    pub host: String,
    /// The event bus.
    pub bus: Arc<dyn EventBus>,
    /// The repositories this host keeps.
    pub repos: Repos,
}

/// The name a webhook's events carry as their sender: `<provider> webhook via <host>`.
/// It is never a host's own name, so every host, this one included, pulls the push.
pub fn announcer(provider: &str, host: &str) -> String {
    format!("{provider} webhook via {host}")
}

/// One ref a push webhook says moved: full ref name, old and new ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// Full ref name (`refs/heads/main`).
    pub name: String,
    /// Its id before (all zeros when created).
    pub old: String,
    /// Its id after (all zeros when deleted).
    pub new: String,
}

fn text<'a>(v: &'a Value, pointer: &str) -> Option<&'a str> {
    v.pointer(pointer).and_then(Value::as_str)
}

/// The repository URLs a push payload names (every field a forge puts one in), as
/// written.
pub fn urls_of(json: &Value) -> Vec<String> {
    let mut urls: Vec<String> = [
        "/repository/clone_url",
        "/repository/ssh_url",
        "/repository/git_url",
        "/repository/html_url",
        "/repository/url",
        "/repository/git_http_url",
        "/repository/git_ssh_url",
        "/repository/homepage",
        "/project/git_http_url",
        "/project/git_ssh_url",
        "/project/web_url",
        "/project/http_url",
        "/project/ssh_url",
        "/repository/links/html/href",
    ]
    .iter()
    .filter_map(|p| text(json, p))
    .map(str::to_string)
    .collect();
    for list in ["/repository/links/clone", "/repository/links/self"] {
        if let Some(items) = json.pointer(list).and_then(Value::as_array) {
            urls.extend(
                items
                    .iter()
                    .filter_map(|i| i.get("href").and_then(Value::as_str))
                    .map(str::to_string),
            );
        }
    }
    // Bitbucket Cloud names the repository as `workspace/slug`.
    if json.pointer("/push/changes").is_some()
        && let Some(full) = text(json, "/repository/full_name")
    {
        urls.push(format!("https://bitbucket.org/{full}"));
    }
    urls.retain(|u| !u.is_empty());
    urls
}

/// The refs a push payload says moved: `ref`, `before`, `after` (GitHub, GitLab, Gitea,
/// Forgejo, generic), `push.changes[]` (Bitbucket Cloud) or `changes[]` (Bitbucket Data
/// Center). Entries that are not a ref name and two object ids are left out.
pub fn moved_of(json: &Value) -> Vec<Moved> {
    let mut out = Vec::new();
    let oid = |v: Option<&str>| v.unwrap_or(ZERO_OID).to_ascii_lowercase();
    if let Some(name) = text(json, "/ref") {
        let full = match text(json, "/ref_type") {
            // Gitea's and Forgejo's create and delete events name the ref short.
            Some("tag") if !name.starts_with("refs/") => format!("refs/tags/{name}"),
            Some(_) if !name.starts_with("refs/") => format!("refs/heads/{name}"),
            _ => name.to_string(),
        };
        let new = text(json, "/after").or(text(json, "/sha"));
        out.push(Moved {
            name: full,
            old: oid(text(json, "/before")),
            new: oid(new),
        });
    }
    if let Some(changes) = json.pointer("/push/changes").and_then(Value::as_array) {
        for c in changes {
            let side = |s: &str| c.get(s).filter(|v| !v.is_null());
            let named = side("new").or(side("old"));
            let Some(short) = named.and_then(|n| n.get("name")).and_then(Value::as_str) else {
                continue;
            };
            let space = match named.and_then(|n| n.get("type")).and_then(Value::as_str) {
                Some("tag") => "refs/tags/",
                _ => "refs/heads/",
            };
            let hash = |s: &str| {
                side(s)
                    .and_then(|n| n.pointer("/target/hash"))
                    .and_then(Value::as_str)
            };
            out.push(Moved {
                name: format!("{space}{short}"),
                old: oid(hash("old")),
                new: oid(hash("new")),
            });
        }
    }
    if let Some(changes) = json.pointer("/changes").and_then(Value::as_array) {
        for c in changes {
            let Some(name) = c.get("refId").and_then(Value::as_str) else {
                continue;
            };
            out.push(Moved {
                name: name.to_string(),
                old: oid(c.get("fromHash").and_then(Value::as_str)),
                new: oid(c.get("toHash").and_then(Value::as_str)),
            });
        }
    }
    out
}

/// The repositories among `repos` with a remote whose URL, normalized, is one of `urls`
/// normalized, with that remote's URL.
pub fn matching(repos: &[Repo], urls: &[String]) -> Vec<(Repo, String)> {
    let wanted: Vec<String> = urls.iter().map(|u| normalize_url(u)).collect();
    let mut out = Vec::new();
    for repo in repos {
        let remotes = crate::git::remotes::list(&repo.path);
        if let Some(remote) = remotes.iter().find(|r| wanted.contains(&r.normalized)) {
            out.push((repo.clone(), remote.url.clone()));
        }
    }
    out
}

/// `POST /hooks/sync/{provider}`: verifies, matches and announces (the table above).
pub async fn receive(
    State(hooks): State<Arc<Webhooks>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let who = format!("sync/{provider}");
    let Some(hook) = hooks.sync.get(&provider) else {
        return answer(
            StatusCode::NOT_FOUND,
            &who,
            "no webhooks.sync entry for this provider",
        );
    };
    let client = client_address(peer.ip(), &headers, &hooks.trusted_proxies);
    if !hook.allow_from.is_empty() && !hook.allow_from.iter().any(|n| n.contains(&client)) {
        return answer(
            StatusCode::FORBIDDEN,
            &who,
            &format!("source address {client} is not allowed"),
        );
    }
    let generic = matches!(hook.provider, verify::Provider::Generic { .. });
    let bytes = match body_of(&hooks, &who, &headers, body, generic).await {
        Ok(bytes) => bytes,
        Err(refused) => return refused,
    };
    let delivery = match verify::verify(&hook.provider, &headers, &bytes, hook.secret.as_deref()) {
        Ok(d) => d,
        Err(Refusal::Unauthorized(why)) => return answer(StatusCode::UNAUTHORIZED, &who, &why),
        Err(Refusal::Malformed(why)) => return answer(StatusCode::BAD_REQUEST, &who, &why),
    };
    match &delivery.event {
        Event::Push => {}
        Event::Ping => return answer(StatusCode::OK, &who, "pong"),
        Event::Other(kind) => {
            return answer(
                StatusCode::OK,
                &who,
                &format!("ignored: {kind} is not a push"),
            );
        }
    }
    if let Some(id) = &delivery.id
        && hooks.deliveries.seen(&who, id)
    {
        return answer(
            StatusCode::OK,
            &who,
            "duplicate delivery; already announced",
        );
    }
    let json: Value = match verify::json_of(&headers, &bytes)
        .ok()
        .and_then(|j| serde_json::from_slice(&j).ok())
    {
        Some(v) => v,
        None => return answer(StatusCode::BAD_REQUEST, &who, "the body is not JSON"),
    };
    let moved = moved_of(&json);
    let urls = urls_of(&json);
    if moved.is_empty() || urls.is_empty() {
        return answer(
            StatusCode::BAD_REQUEST,
            &who,
            "the payload names no repository URL or no ref that moved",
        );
    }
    let Some(sink) = hooks.sink.get().cloned() else {
        return answer(
            StatusCode::SERVICE_UNAVAILABLE,
            &who,
            "the daemon is starting; retry in a moment",
        );
    };
    let repos = (sink.repos)();
    let found = tokio::task::spawn_blocking(move || matching(&repos, &urls))
        .await
        .unwrap_or_default();
    if found.is_empty() {
        return answer(
            StatusCode::OK,
            &who,
            "not a repository this host keeps; nothing to pull",
        );
    }
    let sender = announcer(hook.name, &sink.host);
    let mut announced = Vec::new();
    for (repo, url) in &found {
        for m in &moved {
            let event = PushEvent::new(&sender, &repo.name, url, &m.name, &m.old, &m.new);
            if let Err(why) = event.validate() {
                return answer(
                    StatusCode::BAD_REQUEST,
                    &who,
                    &format!("the payload's {why}"),
                );
            }
            if let Err(err) = sink.bus.publish(&event).await {
                return answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &who,
                    &format!("cannot announce the push now: {err}"),
                );
            }
        }
        announced.push(repo.name.clone());
    }
    if let Some(id) = &delivery.id
        && let Err(err) = hooks.deliveries.record(&who, id)
    {
        tracing::warn!(%who, %err, "cannot record the delivery id");
    }
    answer(
        StatusCode::ACCEPTED,
        &who,
        &format!(
            "announced {} ref update(s) of {}",
            moved.len(),
            announced.join(", ")
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_gitlab_and_bitbucket_payloads_name_their_repository_and_refs() {
        let github = serde_json::json!({
            "ref": "refs/heads/main", "before": "a".repeat(40), "after": "b".repeat(40),
            "repository": {"clone_url": "https://github.com/o/r.git", "ssh_url": "git@github.com:o/r.git"}
        });
        assert_eq!(
            moved_of(&github),
            vec![Moved {
                name: "refs/heads/main".into(),
                old: "a".repeat(40),
                new: "b".repeat(40)
            }]
        );
        assert!(
            urls_of(&github)
                .iter()
                .all(|u| normalize_url(u) == "github.com/o/r")
        );

        let gitlab = serde_json::json!({
            "ref": "refs/tags/v1", "before": ZERO_OID, "after": "c".repeat(40),
            "project": {"git_http_url": "http://GitLab.example.com/g/p.git"}
        });
        assert_eq!(moved_of(&gitlab)[0].name, "refs/tags/v1");
        assert_eq!(
            normalize_url(&urls_of(&gitlab)[0]),
            "gitlab.example.com/g/p"
        );

        let bitbucket = serde_json::json!({
            "push": {"changes": [{"new": {"name": "dev", "type": "branch", "target": {"hash": "d".repeat(40)}}, "old": null}]},
            "repository": {"full_name": "team/repo"}
        });
        assert_eq!(
            moved_of(&bitbucket),
            vec![Moved {
                name: "refs/heads/dev".into(),
                old: ZERO_OID.into(),
                new: "d".repeat(40)
            }]
        );
        assert_eq!(
            normalize_url(&urls_of(&bitbucket)[0]),
            "bitbucket.org/team/repo"
        );
    }

    #[test]
    fn a_payload_without_refs_or_urls_names_nothing() {
        for garbage in [
            serde_json::json!({}),
            serde_json::json!({"ref": 3, "repository": {"clone_url": 4}}),
            serde_json::json!({"push": {"changes": "no"}, "changes": [1, 2]}),
        ] {
            assert!(moved_of(&garbage).is_empty(), "{garbage}");
            assert!(urls_of(&garbage).is_empty(), "{garbage}");
        }
    }
}
