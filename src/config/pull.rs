//! Checks of the `pull` section, each problem reported with its key, and its defaults.

use std::time::Duration;

use super::PullSettings;
use super::schema::RawPull;

/// The settings of `pull` with their defaults; every problem goes through
/// `push(key, message)` (the value is then the default's).
pub(super) fn settings(pull: RawPull, push: &mut dyn FnMut(&str, String)) -> PullSettings {
    let interval = pull
        .interval
        .map(|d| d.0)
        .unwrap_or(Duration::from_secs(300));
    if interval < Duration::from_secs(1) {
        push("pull.interval", "must be at least 1s".to_string());
    }
    let fetch_timeout = pull
        .fetch_timeout
        .map(|d| d.0)
        .unwrap_or(Duration::from_secs(120));
    if fetch_timeout < Duration::from_secs(1) {
        push("pull.fetch_timeout", "must be at least 1s".to_string());
    }
    let rescan = pull.rescan.map(|d| d.0).unwrap_or(Duration::from_secs(60));
    if rescan < Duration::from_secs(1) {
        push("pull.rescan", "must be at least 1s".to_string());
    }
    let heartbeat = pull
        .heartbeat
        .map(|d| d.0)
        .unwrap_or(Duration::from_secs(60));
    if heartbeat < Duration::from_secs(1) {
        push("pull.heartbeat", "must be at least 1s".to_string());
    }
    PullSettings {
        fast_forward: pull.fast_forward.unwrap_or(true),
        interval,
        fetch_timeout,
        other_branches: pull.other_branches.unwrap_or(true),
        rescan,
        heartbeat,
    }
}
