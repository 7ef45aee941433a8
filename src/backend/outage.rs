//! Logging an outage once: the first failure is a warning, the ones after it debug lines,
//! and the first success after them says the service is back.

use std::sync::atomic::{AtomicBool, Ordering};

/// Tracks whether one remote service (the state store, the event bus) is failing.
#[derive(Debug)]
pub struct Outage {
    service: &'static str,
    down: AtomicBool,
}

impl Outage {
    /// A tracker for `service` (a name for the logs such as `state store`), not failing.
    pub const fn new(service: &'static str) -> Self {
        Outage {
            service,
            down: AtomicBool::new(false),
        }
    }

    /// Records a failure of `what` (an operation): logged as a warning only when the
    /// service was not already failing.
    pub fn failed(&self, what: &str, err: &dyn std::fmt::Display) {
        if self.down.swap(true, Ordering::Relaxed) {
            tracing::debug!(service = self.service, what, %err, "still failing");
        } else {
            tracing::warn!(service = self.service, what, %err, "failing; retrying with backoff (logged once until it recovers)");
        }
    }

    /// Records a success: logs once that the service is back after an outage.
    pub fn ok(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            tracing::info!(service = self.service, "reachable again");
        }
    }

    /// Whether the last call failed.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }
}
