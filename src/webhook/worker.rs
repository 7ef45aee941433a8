//! The workers: take jobs from the queue (local files or SQS), run the mirror, retry a
//! failed run with capped exponential backoff and jitter, and run every mirror every
//! `interval` anyway, so a lost webhook is caught.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::queue::{Job, Queue};
use super::run::RunResult;
use super::{PushMirror, Webhooks, run};
use crate::util::backoff::Backoff;

/// The first retry delay; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// The longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Runs `mirror` once, saves its state, logs one line. Returns whether the run succeeded
/// (refs refused as diverged are a success: retrying cannot change them). `full` reads the
/// target before pushing (start-up, reconciliation, a manual run); otherwise the run trusts
/// where it left the target until the target refuses a ref ([`run::run`]).
pub async fn run_mirror(hooks: &Webhooks, mirror: &PushMirror, full: bool) -> bool {
    let name = &mirror.spec.name;
    let path = run::state_path(&hooks.dir, name);
    let mut state = match hooks.state(name) {
        Ok(state) => state,
        Err(err) => {
            // Its leases and the refs it pushed are in that file: no run without them.
            tracing::error!(target: crate::logging::OUTCOME, mirror = %name, "mirror {name} failed: {err}");
            return false;
        }
    };
    let started = std::time::Instant::now();
    let journal = |s: &run::PushMirrorState| Ok(crate::util::fs::write_json(&path, s)?);
    let result = run::run(
        &hooks.cache_root(),
        &mirror.remotes,
        &mirror.filter,
        run::Mode {
            force: mirror.spec.force,
            full,
        },
        &mut state,
        &journal,
        hooks.git_timeout,
    )
    .await;
    state.runs += 1;
    state.last_run = Some(chrono::Utc::now());
    state.took_ms = Some(started.elapsed().as_millis() as u64);
    let ok = match &result {
        Ok(report) => {
            state.refs_pushed = report.pushed.len();
            state.diverged = report.diverged.clone();
            state.error = (!report.rejected.is_empty()).then(|| {
                report
                    .rejected
                    .iter()
                    .map(|(r, why)| format!("{r}: {why}"))
                    .collect::<Vec<_>>()
                    .join("; ")
            });
            state.result = Some(
                if report.diverged.is_empty() && report.rejected.is_empty() {
                    RunResult::Ok
                } else {
                    RunResult::Diverged
                },
            );
            if report.pushed.is_empty() && report.diverged.is_empty() {
                tracing::debug!(mirror = %name, "webhook mirror up to date");
            } else {
                tracing::info!(
                    mirror = %name,
                    took_ms = started.elapsed().as_millis() as u64,
                    "mirror {name}: {} refs pushed{}",
                    report.pushed.len(),
                    if report.diverged.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "; refused as diverged (moved at the target on their own): {}",
                            report.diverged.join(", ")
                        )
                    }
                );
            }
            true
        }
        Err(err) => {
            let text = crate::util::redact::redact_text(&err.to_string());
            tracing::error!(target: crate::logging::OUTCOME, mirror = %name, "mirror {name} failed: {text}");
            state.result = Some(RunResult::Failed);
            state.error = Some(text);
            false
        }
    };
    if let Err(err) = crate::util::fs::write_json(&path, &state) {
        tracing::warn!(mirror = %name, %err, "cannot save the mirror's state");
    }
    ok
}

/// The retry rhythm of a mirror's failed runs and of an unreachable SQS queue.
fn backoff() -> Backoff {
    Backoff::new(FIRST_BACKOFF, MAX_BACKOFF)
}

/// Starts the workers of this host.
pub fn spawn(hooks: Arc<Webhooks>, tasks: &mut crate::util::workers::Workers) {
    match &hooks.queue {
        Queue::Local { wake, .. } => {
            for (name, mirror) in &hooks.mirrors {
                let Some(notify) = wake.get(name).cloned() else {
                    continue;
                };
                tasks.spawn(
                    "webhook worker",
                    local_worker(hooks.clone(), mirror.clone(), notify),
                );
            }
        }
        Queue::Sqs { .. } => {
            tasks.spawn("webhook queue worker", sqs_worker(hooks.clone()));
        }
    }
}

async fn local_worker(hooks: Arc<Webhooks>, mirror: PushMirror, notify: Arc<Notify>) {
    let Queue::Local { queue, .. } = &hooks.queue else {
        return;
    };
    let name = mirror.spec.name.clone();
    let mut retry = backoff();
    // A run at start-up: what was queued before a restart, and reconciliation.
    let mut due = true;
    loop {
        let job = queue.take(&name);
        if job.is_some() || due {
            let ok = run_mirror(&hooks, &mirror, due).await;
            if job.is_some() {
                queue.done(&name, ok);
            }
            due = false;
            if ok {
                retry.reset();
            } else {
                let wait = retry.failed();
                tracing::info!(mirror = %name, retry_in_s = wait.as_secs(), "mirror run failed; retrying later");
                tokio::time::sleep(wait).await;
                due = true;
                continue;
            }
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = tokio::time::sleep(mirror.interval()) => due = true,
        }
    }
}

async fn sqs_worker(hooks: Arc<Webhooks>) {
    let Queue::Sqs { client, url } = &hooks.queue else {
        return;
    };
    let mut outage = backoff();
    let mut last_reconcile = std::time::Instant::now();
    loop {
        let received = client
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(2)
            .visibility_timeout(600)
            .send()
            .await;
        let messages = match received {
            Ok(out) => {
                outage.reset();
                out.messages.unwrap_or_default()
            }
            Err(err) => {
                tracing::warn!("webhook queue: {}", crate::util::aws::one_line(&err));
                tokio::time::sleep(outage.failed()).await;
                continue;
            }
        };
        // One run per mirror covers every message for it in this batch.
        let mut by_mirror: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for m in &messages {
            let Some(handle) = m.receipt_handle() else {
                continue;
            };
            match m.body().and_then(|b| serde_json::from_str::<Job>(b).ok()) {
                Some(job) if hooks.mirrors.contains_key(&job.mirror) => {
                    by_mirror
                        .entry(job.mirror)
                        .or_default()
                        .push(handle.to_string());
                }
                _ => {
                    tracing::warn!(
                        "webhook queue: a message that is not a job for a configured mirror; dropped"
                    );
                    let _ = client
                        .delete_message()
                        .queue_url(url)
                        .receipt_handle(handle)
                        .send()
                        .await;
                }
            }
        }
        for (name, handles) in by_mirror {
            let Some(mirror) = hooks.mirrors.get(&name) else {
                continue;
            };
            let ok = run_mirror(&hooks, mirror, false).await;
            for handle in handles {
                if ok {
                    let _ = client
                        .delete_message()
                        .queue_url(url)
                        .receipt_handle(&handle)
                        .send()
                        .await;
                } else {
                    // Back on the queue after a delay: SQS retries it.
                    let _ = client
                        .change_message_visibility()
                        .queue_url(url)
                        .receipt_handle(&handle)
                        .visibility_timeout(
                            Backoff::jittered(FIRST_BACKOFF.saturating_mul(4)).as_secs() as i32,
                        )
                        .send()
                        .await;
                }
            }
        }
        let interval = hooks
            .mirrors
            .values()
            .map(PushMirror::interval)
            .min()
            .unwrap_or(super::DEFAULT_INTERVAL);
        if last_reconcile.elapsed() >= interval {
            last_reconcile = std::time::Instant::now();
            for mirror in hooks.mirrors.values() {
                run_mirror(&hooks, mirror, true).await;
            }
        }
    }
}
