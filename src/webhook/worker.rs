//! The workers: take jobs from the queue (local files or SQS), run the mirror, retry a
//! failed run with capped exponential backoff and jitter, and run every mirror every
//! `interval` anyway, so a lost webhook is caught.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::queue::{Job, LocalQueue};
use super::{Mirror, Webhooks, push};
use crate::config::WebhooksConfig;

/// The first retry delay; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// The longest retry delay.
const MAX_BACKOFF: Duration = Duration::from_secs(300);

/// Where the intake puts jobs and the workers take them.
pub enum Queue {
    /// Files under `~/.gitsync/webhooks/queue`, one worker task per mirror.
    Local {
        /// The files.
        queue: LocalQueue,
        /// Wakes the worker of each mirror.
        wake: BTreeMap<String, Arc<Notify>>,
    },
    /// An SQS FIFO queue shared by intake and worker hosts.
    Sqs {
        /// The SQS client.
        client: aws_sdk_sqs::Client,
        /// The queue URL.
        url: String,
    },
}

impl Queue {
    /// Opens the queue `section` asks for (`sqs`: looks the queue URL up).
    ///
    /// Errors: the SQS queue does not exist or cannot be reached.
    pub async fn open(section: &WebhooksConfig, dir: &Path) -> Result<Queue, String> {
        if section.queue.as_deref() == Some("sqs") {
            let name = section.sqs_queue.clone().unwrap_or_default();
            let client = sqs_client(section).await;
            let url = client
                .get_queue_url()
                .queue_name(&name)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "webhook queue {name}: {} (`gitsync aws setup` creates it)",
                        crate::util::aws::one_line(&e)
                    )
                })?
                .queue_url()
                .unwrap_or_default()
                .to_string();
            return Ok(Queue::Sqs { client, url });
        }
        Ok(Queue::Local {
            queue: LocalQueue::new(dir.join("queue")),
            wake: section
                .mirrors
                .iter()
                .map(|m| (m.name.clone(), Arc::new(Notify::new())))
                .collect(),
        })
    }

    /// Queues `job` durably; `dedup`: the SQS deduplication id.
    ///
    /// Errors: the job could not be stored (the intake answers 503).
    pub async fn put(&self, job: &Job, dedup: &str) -> Result<(), String> {
        match self {
            Queue::Local { queue, wake } => {
                queue
                    .put(job)
                    .map_err(|e| format!("cannot queue the job: {e}"))?;
                if let Some(n) = wake.get(&job.mirror) {
                    n.notify_one();
                }
                Ok(())
            }
            Queue::Sqs { client, url } => {
                let body = serde_json::to_string(job).map_err(|e| e.to_string())?;
                client
                    .send_message()
                    .queue_url(url)
                    .message_body(body)
                    .message_group_id(&job.mirror)
                    .message_deduplication_id(dedup)
                    .send()
                    .await
                    .map_err(|e| format!("SQS SendMessage: {}", crate::util::aws::one_line(&e)))?;
                Ok(())
            }
        }
    }

    /// Jobs waiting for `mirror` on this host's local queue (`None` for SQS).
    pub fn depth(&self, mirror: &str) -> Option<usize> {
        match self {
            Queue::Local { queue, .. } => Some(queue.depth(mirror)),
            Queue::Sqs { .. } => None,
        }
    }
}

/// The SQS client for `section` (endpoint and region when given; the standard chain).
pub async fn sqs_client(section: &WebhooksConfig) -> aws_sdk_sqs::Client {
    let aws = crate::config::AwsConfig {
        region: section.region.clone(),
        endpoint_url: section.endpoint_url.clone(),
        ..Default::default()
    };
    aws_sdk_sqs::Client::new(&crate::backend::aws::sdk_config(&aws).await)
}

/// The SQS queue's messages, from GetQueueAttributes: (`ApproximateNumberOfMessages`,
/// `ApproximateNumberOfMessagesNotVisible`), that is (waiting, in flight), for all mirrors
/// together (SQS does not count per message group).
///
/// Errors: the queue cannot be found or read (one line).
pub async fn sqs_depth(section: &WebhooksConfig) -> Result<(u64, u64), String> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let Queue::Sqs { client, url } = Queue::open(section, Path::new("")).await? else {
        return Err("the queue is not sqs".to_string());
    };
    let out = client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| format!("SQS GetQueueAttributes: {}", crate::util::aws::one_line(&e)))?;
    let count = |name: A| {
        out.attributes()
            .and_then(|a| a.get(&name))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((
        count(A::ApproximateNumberOfMessages),
        count(A::ApproximateNumberOfMessagesNotVisible),
    ))
}

/// Runs `mirror` once, saves its state, logs one line. Returns whether the run succeeded
/// (refs refused as diverged are a success: retrying cannot change them).
pub async fn run_mirror(hooks: &Webhooks, mirror: &Mirror) -> bool {
    let name = &mirror.spec.name;
    let path = push::state_path(&hooks.dir, name);
    let mut state = match hooks.state(name) {
        Ok(state) => state,
        Err(err) => {
            // Its leases and the refs it pushed are in that file: no run without them.
            tracing::error!(target: crate::logging::OUTCOME, mirror = %name, "mirror {name} failed: {err}");
            return false;
        }
    };
    let started = std::time::Instant::now();
    let journal =
        |s: &push::MirrorState| crate::util::fs::write_json(&path, s).map_err(|e| e.to_string());
    let result = push::run(
        &hooks.cache_root(),
        &mirror.remotes,
        &mirror.filter,
        mirror.spec.force,
        &mut state,
        &journal,
        hooks.git_timeout,
    )
    .await;
    state.runs += 1;
    state.last_run = Some(chrono::Utc::now());
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
                    "ok"
                } else {
                    "diverged"
                }
                .to_string(),
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
            state.result = Some("failed".to_string());
            state.error = Some(text);
            false
        }
    };
    if let Err(err) = crate::util::fs::write_json(&path, &state) {
        tracing::warn!(mirror = %name, %err, "cannot save the mirror's state");
    }
    ok
}

fn backoff_after(failures: u32) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1 << failures.min(10))
        .min(MAX_BACKOFF);
    // Jitter: 50% to 100% of the delay.
    base.mul_f64(0.5 + fastrand::f64() / 2.0)
}

/// Starts the workers of this host.
pub fn spawn(hooks: Arc<Webhooks>, tasks: &mut tokio::task::JoinSet<()>) {
    match &hooks.queue {
        Queue::Local { wake, .. } => {
            for (name, mirror) in &hooks.mirrors {
                let Some(notify) = wake.get(name).cloned() else {
                    continue;
                };
                tasks.spawn(local_worker(hooks.clone(), mirror.clone(), notify));
            }
        }
        Queue::Sqs { .. } => {
            tasks.spawn(sqs_worker(hooks.clone()));
        }
    }
}

async fn local_worker(hooks: Arc<Webhooks>, mirror: Mirror, notify: Arc<Notify>) {
    let Queue::Local { queue, .. } = &hooks.queue else {
        return;
    };
    let name = mirror.spec.name.clone();
    let mut failures = 0u32;
    // A run at start-up: what was queued before a restart, and reconciliation.
    let mut due = true;
    loop {
        let job = queue.take(&name);
        if job.is_some() || due {
            let ok = run_mirror(&hooks, &mirror).await;
            if job.is_some() {
                queue.done(&name, ok);
            }
            due = false;
            if ok {
                failures = 0;
            } else {
                let wait = backoff_after(failures);
                failures += 1;
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
    let mut outage = 0u32;
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
                outage = 0;
                out.messages.unwrap_or_default()
            }
            Err(err) => {
                tracing::warn!("webhook queue: {}", crate::util::aws::one_line(&err));
                tokio::time::sleep(backoff_after(outage)).await;
                outage += 1;
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
            let ok = run_mirror(&hooks, mirror).await;
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
                        .visibility_timeout(backoff_after(2).as_secs() as i32)
                        .send()
                        .await;
                }
            }
        }
        let interval = hooks
            .mirrors
            .values()
            .map(Mirror::interval)
            .min()
            .unwrap_or(super::DEFAULT_INTERVAL);
        if last_reconcile.elapsed() >= interval {
            last_reconcile = std::time::Instant::now();
            for mirror in hooks.mirrors.values() {
                run_mirror(&hooks, mirror).await;
            }
        }
    }
}
