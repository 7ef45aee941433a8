//! Checks of the `pull` section, each problem reported with its key, and its defaults.

use std::time::Duration;

use super::PullSettings;
use super::schema::RawPull;

/// The settings of `pull` with their defaults; every problem goes through
/// `push(key, message)` (the value is then the default's).
pub(super) fn settings(pull: RawPull, push: &mut dyn FnMut(&str, String)) -> PullSettings {
    let mut duration = |key: &str, value: Option<super::schema::HumanDuration>, default: u64| {
        let value = value.map_or(Duration::from_secs(default), |d| d.0);
        if value < Duration::from_secs(1) {
            push(key, "must be at least 1s".to_string());
        }
        value
    };
    let interval = duration("pull.interval", pull.interval, 300);
    let fetch_timeout = duration("pull.fetch_timeout", pull.fetch_timeout, 120);
    let rescan = duration("pull.rescan", pull.rescan, 60);
    let heartbeat = duration("pull.heartbeat", pull.heartbeat, 60);
    let poll = pull.poll.map(|d| d.0);
    if poll.is_some_and(|d| d < Duration::from_secs(5)) {
        push("pull.poll", "must be at least 5s".to_string());
    }
    PullSettings {
        fast_forward: pull.fast_forward.unwrap_or(true),
        interval,
        fetch_timeout,
        other_branches: pull.other_branches.unwrap_or(true),
        rescan,
        heartbeat,
        poll,
    }
}
