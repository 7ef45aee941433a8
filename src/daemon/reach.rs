//! How pushes made elsewhere reach this host's repositories, for `gitsync status`: the
//! forge webhooks seen per repository (`~/.gitsync/webhooks-seen.json`, written by the
//! receiver when it handles an event a forge's webhook announced), next to what the config
//! says (the pre-push hook, `pull.poll`, `pull.interval`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};

use crate::config::Config;

/// The file of webhooks seen, under the gitsync home.
pub fn seen_path(home: &Path) -> PathBuf {
    home.join("webhooks-seen.json")
}

/// One provider's last webhook for a repository.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seen {
    /// The provider (`github`, ...).
    pub provider: String,
    /// When its last push webhook was handled here, UTC.
    pub at: DateTime<Utc>,
}

/// What [`provider_of`] says of an event a bare repository's post-receive hook sent
/// (`server hook via <host>`, `gitsync hooks install --server`).
pub const SERVER_HOOK: &str = "server hook";

/// The provider of an event sent as `<provider> webhook via <host>`
/// ([`crate::webhook::sync::announcer`]), [`SERVER_HOOK`] for one sent as `server hook via
/// <host>`, or `None` for a host's own push.
pub fn provider_of(sender: &str) -> Option<&str> {
    if sender.starts_with("server hook via ") {
        return Some(SERVER_HOOK);
    }
    sender.split_once(" webhook via ").map(|(p, _)| p)
}

/// Reads the webhooks seen, by repository name (empty when none or unreadable).
pub fn read(home: &Path) -> BTreeMap<String, Seen> {
    std::fs::read(seen_path(home))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// Records that `repo` got a push through `provider`'s webhook now.
///
/// Errors: the file cannot be written (logged by the caller; nothing else depends on it).
pub fn record(home: &Path, repo: &str, provider: &str) -> Result<(), crate::util::fs::PathError> {
    let mut seen = read(home);
    seen.insert(
        repo.to_string(),
        Seen {
            provider: provider.to_string(),
            at: Utc::now(),
        },
    );
    crate::util::fs::write_json(&seen_path(home), &seen)
}

/// How pushes made elsewhere reach `repo` here, in words: `webhook github (5m ago)` when
/// one was seen, then `poll 30s` with `pull.poll`, else `every 5m` (the full update).
pub fn describe(config: &Config, seen: Option<&Seen>, now: DateTime<Utc>) -> Vec<String> {
    let mut ways = Vec::new();
    if let Some(s) = seen {
        let ago = (now - s.at).to_std().unwrap_or_default();
        let ago = humantime::format_duration(std::time::Duration::from_secs(ago.as_secs()));
        match s.provider.as_str() {
            SERVER_HOOK => ways.push(format!("server hook (last {ago} ago)")),
            provider => ways.push(format!("webhook {provider} (last {ago} ago)")),
        }
    }
    let words = |d: std::time::Duration| humantime::format_duration(d).to_string();
    match config.pull.poll {
        Some(poll) => ways.push(format!("poll {}", words(poll))),
        None => ways.push(format!("every {}", words(config.pull.interval))),
    }
    ways
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_provider_is_read_from_the_sender() {
        assert_eq!(provider_of("github webhook via host-a"), Some("github"));
        assert_eq!(provider_of("host-a"), None);
        assert_eq!(provider_of("server hook via nas"), Some(SERVER_HOOK));
    }
}
