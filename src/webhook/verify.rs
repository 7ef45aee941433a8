//! Verifying a forge's webhook as that forge specifies, in constant time, and reading what
//! kind of event it is and its delivery id. The payload's refs and URLs are never trusted:
//! a webhook is only a trigger.
//!
//! Sources: GitHub "Validating webhook deliveries" (`X-Hub-Signature-256`), GitLab
//! `doc/user/project/integrations/webhooks.md` (`X-Gitlab-Token`, and the signing token's
//! `webhook-id` / `webhook-timestamp` / `webhook-signature`), Gitea and Forgejo
//! `services/webhook/deliver.go` (`X-Gitea-Signature` / `X-Forgejo-Signature`: hex
//! HMAC-SHA256 of the JSON, even when the body is form-encoded), Bitbucket Cloud and Data
//! Center event payload pages (`X-Hub-Signature: sha256=...`), Backlog's webhook page (an
//! unsigned form `payload=`).

use super::WebhookError;
use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

type HmacSha256 = Hmac<Sha256>;

/// How a mirror's webhooks are verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provider {
    /// `X-Hub-Signature-256: sha256=<hex>` over the raw body.
    Github,
    /// `X-Gitlab-Token` equal to the secret, or (`signing`) the `webhook-signature` scheme.
    Gitlab {
        /// Verify `webhook-signature` instead of the token.
        signing: bool,
    },
    /// `X-Gitea-Signature: <hex>` over the JSON.
    Gitea,
    /// `X-Forgejo-Signature: <hex>` (or Gitea's header) over the JSON.
    Forgejo,
    /// Bitbucket Cloud: `X-Hub-Signature: sha256=<hex>` over the raw body.
    Bitbucket,
    /// Bitbucket Data Center: `X-Hub-Signature: sha256=<hex>` over the raw body.
    BitbucketServer,
    /// Backlog: unsigned; protected by the path token and the address allow-list.
    Backlog,
    /// HMAC-SHA256 of the raw body, hex (optionally `sha256=`), in `header`.
    Generic {
        /// The header name.
        header: String,
    },
}

impl Provider {
    /// The provider named `name` in the config (`generic` uses `header`).
    ///
    /// Errors: the unknown name.
    pub fn parse(
        name: &str,
        gitlab_signing: bool,
        header: Option<&str>,
    ) -> Result<Self, WebhookError> {
        Ok(match name {
            "github" => Provider::Github,
            "gitlab" => Provider::Gitlab {
                signing: gitlab_signing,
            },
            "gitea" => Provider::Gitea,
            "forgejo" => Provider::Forgejo,
            "bitbucket" => Provider::Bitbucket,
            "bitbucket-server" => Provider::BitbucketServer,
            "backlog" => Provider::Backlog,
            "generic" => Provider::Generic {
                header: header.unwrap_or("X-Signature-256").to_string(),
            },
            other => {
                return Err(WebhookError::Setting(format!("unknown provider {other:?}")));
            }
        })
    }

    /// Whether the provider signs (or carries a token); Backlog does not.
    pub fn needs_secret(&self) -> bool {
        *self != Provider::Backlog
    }
}

/// What kind of event a verified webhook is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Refs changed: run the mirror.
    Push,
    /// The forge checks the hook.
    Ping,
    /// Anything else (issues, comments, ...), named.
    Other(String),
}

/// A verified webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Its kind.
    pub event: Event,
    /// The forge's delivery id, when it sends one (the same on a redelivery).
    pub id: Option<String>,
}

/// Why a webhook is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The signature or token is missing or wrong: 401.
    #[error("{0}")]
    Unauthorized(String),
    /// The body is not what the forge sends: 400.
    #[error("{0}")]
    Malformed(String),
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Whether the body is a form (`application/x-www-form-urlencoded`).
fn is_form(headers: &HeaderMap) -> bool {
    header(headers, "content-type")
        .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
}

/// The payload of a body: the body itself, or the `payload` field of a form (not yet
/// checked to be JSON).
fn payload_of(headers: &HeaderMap, body: &[u8]) -> Vec<u8> {
    if is_form(headers) {
        form_urlencoded::parse(body)
            .find(|(k, _)| k == "payload")
            .map(|(_, v)| v.into_owned().into_bytes())
            .unwrap_or_default()
    } else {
        body.to_vec()
    }
}

/// The JSON document of a body: the body itself, or the `payload` field of a form.
///
/// Errors: [`Refusal::Malformed`] when it is not JSON (or a form without `payload`).
pub fn json_of(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, Refusal> {
    let json = payload_of(headers, body);
    serde_json::from_slice::<serde_json::Value>(&json)
        .map_err(|e| Refusal::Malformed(format!("the payload is not JSON: {e}")))?;
    Ok(json)
}

/// Checks `hex_sig` (hex, optionally `sha256=`-prefixed) against HMAC-SHA256(`secret`,
/// `data`) in constant time.
fn check_hmac_hex(
    secret: &[u8],
    data: &[u8],
    sig: Option<&str>,
    name: &str,
) -> Result<(), Refusal> {
    let sig = sig.ok_or_else(|| Refusal::Unauthorized(format!("no {name} header")))?;
    let hex_part = sig.strip_prefix("sha256=").unwrap_or(sig);
    let bytes = hex::decode(hex_part)
        .map_err(|_| Refusal::Unauthorized(format!("{name} is not a hex signature")))?;
    let mut mac = HmacSha256::new_from_slice(secret)
        .map_err(|_| Refusal::Unauthorized("the secret cannot key an HMAC".to_string()))?;
    mac.update(data);
    mac.verify_slice(&bytes)
        .map_err(|_| Refusal::Unauthorized(format!("{name} does not match the body")))
}

/// GitLab's signing-token scheme: `webhook-signature: v1,<base64 HMAC-SHA256 of
/// "{webhook-id}.{webhook-timestamp}.{body}">` (several space-separated signatures may be
/// sent), with the timestamp within 5 minutes.
fn check_gitlab_signing(secret: &[u8], headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
    use base64::Engine;
    let missing = |h: &str| Refusal::Unauthorized(format!("no {h} header"));
    let id = header(headers, "webhook-id").ok_or_else(|| missing("webhook-id"))?;
    let ts = header(headers, "webhook-timestamp").ok_or_else(|| missing("webhook-timestamp"))?;
    let sigs = header(headers, "webhook-signature").ok_or_else(|| missing("webhook-signature"))?;
    let when: i64 = ts
        .parse()
        .map_err(|_| Refusal::Unauthorized("webhook-timestamp is not a number".to_string()))?;
    if (chrono::Utc::now().timestamp() - when).abs() > 300 {
        return Err(Refusal::Unauthorized(
            "webhook-timestamp is more than 5 minutes away (a replay?)".to_string(),
        ));
    }
    let mut mac = HmacSha256::new_from_slice(secret)
        .map_err(|_| Refusal::Unauthorized("the secret cannot key an HMAC".to_string()))?;
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(body);
    let want = mac.finalize().into_bytes();
    let ok = sigs.split(' ').any(|s| {
        s.strip_prefix("v1,")
            .and_then(|b64| base64::engine::general_purpose::STANDARD.decode(b64).ok())
            .is_some_and(|got| bool::from(got.as_slice().ct_eq(want.as_slice())))
    });
    if ok {
        Ok(())
    } else {
        Err(Refusal::Unauthorized(
            "webhook-signature does not match the body".to_string(),
        ))
    }
}

/// Verifies one webhook of `provider` (`secret`: the configured secret; `None` only for
/// Backlog) and reads its kind and delivery id.
///
/// Errors: [`Refusal::Unauthorized`] for a missing or wrong signature or token,
/// [`Refusal::Malformed`] for a body the forge would not send.
pub fn verify(
    provider: &Provider,
    headers: &HeaderMap,
    body: &[u8],
    secret: Option<&[u8]>,
) -> Result<Delivery, Refusal> {
    let secret = match (provider.needs_secret(), secret) {
        (true, Some(s)) => s,
        (true, None) => {
            return Err(Refusal::Unauthorized(
                "no secret is configured for this mirror".to_string(),
            ));
        }
        (false, _) => &[][..],
    };
    let h = |name: &str| header(headers, name);
    let delivery = |event: Event, id: Option<&str>| Delivery {
        event,
        id: id.map(str::to_string),
    };
    match provider {
        Provider::Github => {
            check_hmac_hex(
                secret,
                body,
                h("x-hub-signature-256"),
                "X-Hub-Signature-256",
            )?;
            json_of(headers, body)?;
            let event = match h("x-github-event") {
                Some("push") => Event::Push,
                Some("ping") => Event::Ping,
                other => Event::Other(other.unwrap_or("none").to_string()),
            };
            Ok(delivery(event, h("x-github-delivery")))
        }
        Provider::Gitlab { signing } => {
            if *signing {
                check_gitlab_signing(secret, headers, body)?;
            } else {
                let token = h("x-gitlab-token")
                    .ok_or_else(|| Refusal::Unauthorized("no X-Gitlab-Token header".to_string()))?;
                if !bool::from(token.as_bytes().ct_eq(secret)) {
                    return Err(Refusal::Unauthorized(
                        "X-Gitlab-Token is not the configured secret".to_string(),
                    ));
                }
            }
            json_of(headers, body)?;
            let event = match h("x-gitlab-event") {
                Some("Push Hook" | "Tag Push Hook") => Event::Push,
                other => Event::Other(other.unwrap_or("none").to_string()),
            };
            let id = h("idempotency-key")
                .or(h("x-gitlab-event-uuid"))
                .or(h("webhook-id"));
            Ok(delivery(event, id))
        }
        Provider::Gitea | Provider::Forgejo => {
            let json = payload_of(headers, body);
            let sig = if *provider == Provider::Forgejo {
                h("x-forgejo-signature").or(h("x-gitea-signature"))
            } else {
                h("x-gitea-signature")
            };
            check_hmac_hex(
                secret,
                &json,
                sig,
                "X-Gitea-Signature / X-Forgejo-Signature",
            )?;
            json_of(headers, body)?;
            let event = match h("x-forgejo-event").or(h("x-gitea-event")) {
                Some("push" | "create" | "delete") => Event::Push,
                other => Event::Other(other.unwrap_or("none").to_string()),
            };
            let id = h("x-forgejo-delivery").or(h("x-gitea-delivery"));
            Ok(delivery(event, id))
        }
        Provider::Bitbucket | Provider::BitbucketServer => {
            check_hmac_hex(secret, body, h("x-hub-signature"), "X-Hub-Signature")?;
            let event = match h("x-event-key") {
                Some("repo:push" | "repo:refs_changed") => Event::Push,
                Some("diagnostics:ping") => Event::Ping,
                other => Event::Other(other.unwrap_or("none").to_string()),
            };
            if event != Event::Ping {
                json_of(headers, body)?;
            }
            let id = h("x-request-uuid").or(h("x-request-id"));
            Ok(delivery(event, id))
        }
        Provider::Backlog => {
            json_of(headers, body)?;
            Ok(delivery(Event::Push, None))
        }
        Provider::Generic { header: name } => {
            check_hmac_hex(secret, body, h(&name.to_ascii_lowercase()), name)?;
            let id = h("x-delivery-id").or(h("x-request-id"));
            Ok(delivery(Event::Push, id))
        }
    }
}

/// HMAC-SHA256 of `data` keyed with `secret`, hex: what a forge sends (for `gitsync
/// webhooks test` and the tests).
pub fn sign_hex(secret: &[u8], data: &[u8]) -> String {
    let mut mac = match HmacSha256::new_from_slice(secret) {
        Ok(mac) => mac,
        Err(_) => return String::new(),
    };
    mac.update(data);
    hex::encode(mac.finalize().into_bytes())
}

/// Whether two secrets (such as a path token) are equal, in constant time.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    bool::from(a.ct_eq(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    const BODY: &[u8] = br#"{"ref":"refs/heads/main","after":"abc"}"#;

    #[test]
    fn github_signatures_are_checked_and_events_read() {
        let sig = format!("sha256={}", sign_hex(b"s3cret", BODY));
        let ok = headers(&[
            ("x-hub-signature-256", &sig),
            ("x-github-event", "push"),
            ("x-github-delivery", "d1"),
        ]);
        let d = verify(&Provider::Github, &ok, BODY, Some(b"s3cret")).expect("valid");
        assert_eq!(d.event, Event::Push);
        assert_eq!(d.id.as_deref(), Some("d1"));
        assert!(matches!(
            verify(&Provider::Github, &ok, b"{\"ref\":\"x\"}", Some(b"s3cret")),
            Err(Refusal::Unauthorized(_))
        ));
        assert!(matches!(
            verify(&Provider::Github, &ok, BODY, Some(b"other")),
            Err(Refusal::Unauthorized(_))
        ));
        let none = headers(&[("x-github-event", "push")]);
        assert!(verify(&Provider::Github, &none, BODY, Some(b"s3cret")).is_err());
        let ping = headers(&[("x-hub-signature-256", &sig), ("x-github-event", "ping")]);
        assert_eq!(
            verify(&Provider::Github, &ping, BODY, Some(b"s3cret")).map(|d| d.event),
            Ok(Event::Ping)
        );
    }

    #[test]
    fn gitea_signs_the_json_even_in_a_form() {
        let sig = sign_hex(b"k", BODY);
        let form: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("payload", std::str::from_utf8(BODY).expect("utf8"))
            .finish();
        let h = headers(&[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-gitea-signature", &sig),
            ("x-gitea-event", "push"),
        ]);
        assert!(verify(&Provider::Gitea, &h, form.as_bytes(), Some(b"k")).is_ok());
        // The HMAC of the form body itself is not what Gitea sends.
        let wrong = sign_hex(b"k", form.as_bytes());
        let h = headers(&[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-gitea-signature", &wrong),
            ("x-gitea-event", "push"),
        ]);
        assert!(verify(&Provider::Gitea, &h, form.as_bytes(), Some(b"k")).is_err());
    }

    #[test]
    fn gitlab_token_and_signing_scheme() {
        let h = headers(&[("x-gitlab-token", "tok"), ("x-gitlab-event", "Push Hook")]);
        assert!(verify(&Provider::Gitlab { signing: false }, &h, BODY, Some(b"tok")).is_ok());
        assert!(
            verify(
                &Provider::Gitlab { signing: false },
                &h,
                BODY,
                Some(b"tok2")
            )
            .is_err()
        );
        use base64::Engine;
        let ts = chrono::Utc::now().timestamp().to_string();
        let mut mac = HmacSha256::new_from_slice(b"k").expect("key");
        mac.update(format!("id1.{ts}.").as_bytes());
        mac.update(BODY);
        let sig = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
        let h = headers(&[
            ("webhook-id", "id1"),
            ("webhook-timestamp", &ts),
            ("webhook-signature", &sig),
            ("x-gitlab-event", "Tag Push Hook"),
        ]);
        let d = verify(&Provider::Gitlab { signing: true }, &h, BODY, Some(b"k")).expect("ok");
        assert_eq!(d.id.as_deref(), Some("id1"));
        let old = headers(&[
            ("webhook-id", "id1"),
            ("webhook-timestamp", "1000"),
            ("webhook-signature", &sig),
        ]);
        assert!(verify(&Provider::Gitlab { signing: true }, &old, BODY, Some(b"k")).is_err());
    }

    #[test]
    fn garbage_is_malformed_not_a_panic() {
        let sig = format!("sha256={}", sign_hex(b"k", b"\xff\x00junk"));
        let h = headers(&[("x-hub-signature-256", &sig), ("x-github-event", "push")]);
        assert!(matches!(
            verify(&Provider::Github, &h, b"\xff\x00junk", Some(b"k")),
            Err(Refusal::Malformed(_))
        ));
        let h = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        assert!(verify(&Provider::Backlog, &h, b"a=b", None).is_err());
        assert!(verify(&Provider::Backlog, &h, b"payload=%7B%7D", None).is_ok());
    }
}
