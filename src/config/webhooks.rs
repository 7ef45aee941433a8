//! Checks of the `webhooks` section, each problem reported with its key.

use super::schema::{ProviderName, QueueKind, WebhooksConfig};

/// Reports every problem of `webhooks` through `push(key, message)`.
pub(super) fn validate(webhooks: &WebhooksConfig, push: &mut dyn FnMut(&str, String)) {
    validate_sync(webhooks, push);
    if let Some(listen) = &webhooks.listen
        && listen.parse::<std::net::SocketAddr>().is_err()
    {
        push(
            "webhooks.listen",
            format!("{listen:?} is not an address and port such as 127.0.0.1:8787"),
        );
    }
    for (i, cidr) in webhooks.trusted_proxies.iter().enumerate() {
        if parse_net(cidr).is_none() {
            push(
                &format!("webhooks.trusted_proxies[{i}]"),
                format!("{cidr:?} is not an address or CIDR block such as 10.0.0.0/8"),
            );
        }
    }
    match webhooks.queue {
        None | Some(QueueKind::Local) => {}
        Some(QueueKind::Sqs) => match webhooks.sqs_queue.as_deref() {
            Some(q) if q.ends_with(".fifo") => {}
            Some(q) => push(
                "webhooks.sqs_queue",
                format!("{q:?} is not a FIFO queue name (it must end in .fifo)"),
            ),
            None => push(
                "webhooks.sqs_queue",
                "missing: `queue: sqs` needs the FIFO queue's name".to_string(),
            ),
        },
    }
    if webhooks.max_body.is_some_and(|n| n < 1024) {
        push(
            "webhooks.max_body",
            "must be at least 1024 bytes".to_string(),
        );
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, m) in webhooks.mirrors.iter().enumerate() {
        let key = |field: &str| format!("webhooks.mirrors[{i}].{field}");
        if !super::deploy::plain_name(&m.name) {
            push(
                &key("name"),
                format!("{:?}: use letters, digits, `.`, `_` and `-` only", m.name),
            );
        } else if !names.insert(m.name.clone()) {
            push(&key("name"), format!("{:?} is used by two mirrors", m.name));
        }
        if m.provider == ProviderName::Backlog {
            if m.path_token_env.is_none() && m.path_token_file.is_none() {
                push(
                    &key("path_token_env"),
                    "required for backlog, which signs nothing: a secret path token (or `path_token_file`)".to_string(),
                );
            }
            if m.allow_from.is_empty() {
                push(
                    &key("allow_from"),
                    "required for backlog: the forge's published source addresses".to_string(),
                );
            }
        } else if m.secret_env.is_none() && m.secret_file.is_none() {
            push(
                &key("secret_env"),
                "missing: name the environment variable (or `secret_file`) holding the webhook secret"
                    .to_string(),
            );
        }
        for (j, cidr) in m.allow_from.iter().enumerate() {
            if parse_net(cidr).is_none() {
                push(
                    &key(&format!("allow_from[{j}]")),
                    format!("{cidr:?} is not an address or CIDR block"),
                );
            }
        }
        for (env, file, field) in [
            (&m.secret_env, &m.secret_file, "secret"),
            (&m.path_token_env, &m.path_token_file, "path_token"),
            (&m.source_token_env, &m.source_token_file, "source_token"),
            (&m.target_token_env, &m.target_token_file, "target_token"),
        ] {
            if env.is_some() && file.is_some() {
                push(
                    &key(&format!("{field}_file")),
                    format!("`{field}_env` is set too: name one place for it"),
                );
            }
        }
        if m.source.trim().is_empty() {
            push(&key("source"), "empty".to_string());
        }
        if m.target.trim().is_empty() {
            push(&key("target"), "empty".to_string());
        }
        for (field, url) in [("source", &m.source), ("target", &m.target)] {
            if crate::util::redact::redact_url(url) != *url {
                push(
                    &key(field),
                    "carries a credential: name an environment variable or a file in `source_token_env` / `target_token_env` (`_file`) instead"
                        .to_string(),
                );
            }
        }
    }
}

/// Reports every problem of `webhooks.sync` through `push(key, message)`.
fn validate_sync(webhooks: &WebhooksConfig, push: &mut dyn FnMut(&str, String)) {
    let mut providers = std::collections::BTreeSet::new();
    for (i, s) in webhooks.sync.iter().enumerate() {
        let key = |field: &str| format!("webhooks.sync[{i}].{field}");
        if matches!(s.provider, ProviderName::Backlog) {
            push(
                &key("provider"),
                "backlog signs nothing: use github, gitlab, gitea, forgejo, bitbucket, bitbucket-server or generic".to_string(),
            );
        } else if !providers.insert(s.provider.as_str()) {
            push(
                &key("provider"),
                format!("{} is listed twice", s.provider.as_str()),
            );
        }
        match (&s.secret_env, &s.secret_file) {
            (None, None) => push(
                &key("secret_env"),
                "missing: name the environment variable (or `secret_file`) holding the webhook secret".to_string(),
            ),
            (Some(_), Some(_)) => push(
                &key("secret_file"),
                "`secret_env` is set too: name one place for it".to_string(),
            ),
            _ => {}
        }
        for (j, cidr) in s.allow_from.iter().enumerate() {
            if parse_net(cidr).is_none() {
                push(
                    &key(&format!("allow_from[{j}]")),
                    format!("{cidr:?} is not an address or CIDR block"),
                );
            }
        }
    }
    for (i, m) in webhooks.mirrors.iter().enumerate() {
        if m.name == "sync" && !webhooks.sync.is_empty() {
            push(
                &format!("webhooks.mirrors[{i}].name"),
                "\"sync\" is taken by `webhooks.sync` (its URLs are /hooks/sync/<provider>): rename the mirror".to_string(),
            );
        }
    }
}

/// An address (`10.1.2.3`) or CIDR block (`10.0.0.0/8`).
pub fn parse_net(text: &str) -> Option<ipnet::IpNet> {
    text.parse::<ipnet::IpNet>().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}
