//! The durable, coalescing job queue between the webhook intake and the workers.
//!
//! `local`: one file per mirror under `~/.gitsync/webhooks/queue`: `<name>.pending` (a run
//! is wanted) and `<name>.running` (a run is in flight). A job is written and synced to
//! disk before the intake answers `202`. A webhook that finds a pending file already there
//! is covered by it (that run starts later, so it fetches whatever the webhook announced)
//! and writes nothing: a burst for one mirror costs one synced write, and there is at most
//! one run in flight plus one queued. A daemon killed after a `202` (or mid-run) finds the
//! file at its next start and runs the job.
//!
//! `sqs`: the verified job goes on an SQS FIFO queue with `MessageGroupId` = the mirror
//! name (one run in flight per mirror, in order) and `MessageDeduplicationId` = the delivery
//! id, and any host with `webhooks.worker: true` takes jobs from it.
//!
//! Delivery ids seen before are dropped either way: the last 10,000 are kept in
//! `deliveries.log` (one `<mirror> <id>` line each, appended once the job is stored and
//! before the `202`, so a delivery answered `503` is not a duplicate when the forge retries
//! it; not synced one by one, since a record lost in a crash costs at most one extra run).
//! The log is rewritten with the remembered ids when it reaches 20,000 lines: one append
//! per delivery, however many came before.

use super::WebhookError;
use std::collections::BTreeMap;
use std::collections::{HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::config::WebhooksConfig;

/// How many delivery ids are remembered.
const REMEMBERED: usize = 10_000;

/// One queued job, as stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Job {
    /// The mirror to run.
    pub mirror: String,
    /// The delivery that asked for it, when the forge sent an id.
    pub delivery: Option<String>,
    /// When it was accepted (RFC 3339, UTC).
    pub at: chrono::DateTime<chrono::Utc>,
}

/// Delivery ids seen before, persisted.
pub struct Deliveries {
    path: PathBuf,
    inner: Mutex<Remembered>,
}

/// The ids remembered, oldest first, and how many lines the log holds.
struct Remembered {
    set: HashSet<String>,
    order: VecDeque<String>,
    lines: usize,
}

/// The log key of delivery `id` of `mirror`: `<mirror> <id>`, line breaks dropped.
fn key(mirror: &str, id: &str) -> String {
    format!("{mirror} {}", id.replace(['\n', '\r'], ""))
}

impl Deliveries {
    /// Loads the ids remembered in `dir/deliveries.log` (a missing file is empty).
    pub fn open(dir: &Path) -> Deliveries {
        let path = dir.join("deliveries.log");
        let mut order = VecDeque::new();
        let mut set = HashSet::new();
        let mut lines = 0;
        if let Ok(text) = std::fs::read_to_string(&path) {
            lines = text.lines().count();
            for line in text.lines().rev().take(REMEMBERED) {
                if set.insert(line.to_string()) {
                    order.push_front(line.to_string());
                }
            }
        }
        Deliveries {
            path,
            inner: Mutex::new(Remembered { set, order, lines }),
        }
    }

    /// Whether delivery `id` of `mirror` was recorded before (a forge's retry of a
    /// delivery whose job is stored). No I/O.
    pub fn seen(&self, mirror: &str, id: &str) -> bool {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        guard.set.contains(&key(mirror, id))
    }

    /// Records delivery `id` of `mirror`, once its job is stored (a delivery recorded
    /// before would turn the forge's retry of a failed one into "duplicate"). Appends one
    /// line to the log; the log is rewritten with the remembered ids only when it has
    /// grown to twice their number, so a record costs one append however many came before.
    ///
    /// Errors: the log cannot be written (the job is stored all the same: a retry then
    /// costs at most one extra run).
    pub fn record(&self, mirror: &str, id: &str) -> std::io::Result<()> {
        let key = key(mirror, id);
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let r = &mut *guard;
        if !r.set.insert(key.clone()) {
            return Ok(());
        }
        r.order.push_back(key.clone());
        if r.order.len() > REMEMBERED
            && let Some(old) = r.order.pop_front()
        {
            r.set.remove(&old);
        }
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        if r.lines >= 2 * REMEMBERED {
            let text: String = r.order.iter().map(|k| format!("{k}\n")).collect();
            crate::util::fs::write_atomic(&self.path, text.as_bytes())
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            r.lines = r.order.len();
            return Ok(());
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        writeln!(file, "{key}")?;
        r.lines += 1;
        Ok(())
    }

    /// Lines in the log now (for tests of its bound).
    #[cfg(test)]
    fn log_lines(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).lines
    }
}

/// The local queue's folder.
#[derive(Debug, Clone)]
pub struct LocalQueue {
    dir: PathBuf,
}

impl LocalQueue {
    /// The queue under `dir` (`~/.gitsync/webhooks/queue`). No I/O.
    pub fn new(dir: PathBuf) -> Self {
        LocalQueue { dir }
    }

    fn pending(&self, mirror: &str) -> PathBuf {
        self.dir.join(format!("{mirror}.pending"))
    }

    fn running(&self, mirror: &str) -> PathBuf {
        self.dir.join(format!("{mirror}.running"))
    }

    /// Queues `job`, durably (written, synced, renamed into place, folder synced), unless
    /// a pending job already covers it.
    ///
    /// Errors: the file cannot be written.
    pub fn put(&self, job: &Job) -> std::io::Result<()> {
        if self.pending(&job.mirror).exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&self.dir)?;
        let bytes = serde_json::to_vec(job).map_err(std::io::Error::other)?;
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        tmp.write_all(&bytes)?;
        tmp.as_file().sync_all()?;
        tmp.persist(self.pending(&job.mirror))
            .map_err(|e| e.error)?;
        std::fs::File::open(&self.dir)?.sync_all()
    }

    /// Takes the pending job of `mirror` for a run: the pending file becomes the running
    /// one. A running file left by a killed daemon is taken again. `None` when nothing is
    /// queued.
    pub fn take(&self, mirror: &str) -> Option<Job> {
        let running = self.running(mirror);
        if !running.exists() {
            std::fs::rename(self.pending(mirror), &running).ok()?;
        }
        let text = std::fs::read(&running).ok()?;
        serde_json::from_slice(&text).ok().or_else(|| {
            Some(Job {
                mirror: mirror.to_string(),
                delivery: None,
                at: chrono::Utc::now(),
            })
        })
    }

    /// Ends the run of `mirror`: `ok` removes the job; a failure keeps it queued for a
    /// retry (unless a newer one is already pending, which covers it).
    pub fn done(&self, mirror: &str, ok: bool) {
        let running = self.running(mirror);
        if ok || self.pending(mirror).exists() {
            let _ = std::fs::remove_file(running);
        } else {
            let _ = std::fs::rename(running, self.pending(mirror));
        }
    }

    /// Jobs waiting (pending or running), for `status`.
    pub fn depth(&self, mirror: &str) -> usize {
        usize::from(self.pending(mirror).exists()) + usize::from(self.running(mirror).exists())
    }
}

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
    pub async fn open(section: &WebhooksConfig, dir: &Path) -> Result<Queue, WebhookError> {
        if section.queue == Some(crate::config::QueueKind::Sqs) {
            let name = section.sqs_queue.clone().unwrap_or_default();
            let client = sqs_client(section).await;
            let url = client
                .get_queue_url()
                .queue_name(&name)
                .send()
                .await
                .map_err(|e| {
                    WebhookError::Queue(format!(
                        "webhook queue {name}: {} (`gitsync aws setup` creates it)",
                        crate::util::aws::one_line(&e)
                    ))
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
    pub async fn put(&self, job: &Job, dedup: &str) -> Result<(), WebhookError> {
        match self {
            Queue::Local { queue, wake } => {
                queue
                    .put(job)
                    .map_err(|e| WebhookError::Queue(format!("cannot queue the job: {e}")))?;
                if let Some(n) = wake.get(&job.mirror) {
                    n.notify_one();
                }
                Ok(())
            }
            Queue::Sqs { client, url } => {
                let body =
                    serde_json::to_string(job).map_err(|e| WebhookError::Queue(e.to_string()))?;
                client
                    .send_message()
                    .queue_url(url)
                    .message_body(body)
                    .message_group_id(&job.mirror)
                    .message_deduplication_id(dedup)
                    .send()
                    .await
                    .map_err(|e| {
                        WebhookError::Queue(format!(
                            "SQS SendMessage: {}",
                            crate::util::aws::one_line(&e)
                        ))
                    })?;
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
    let sdk =
        crate::util::aws::sdk_config(section.region.clone(), section.endpoint_url.as_deref()).await;
    aws_sdk_sqs::Client::new(&sdk)
}

/// The SQS queue's messages, from GetQueueAttributes: (`ApproximateNumberOfMessages`,
/// `ApproximateNumberOfMessagesNotVisible`), that is (waiting, in flight), for all mirrors
/// together (SQS does not count per message group).
///
/// Errors: the queue cannot be found or read (one line).
pub async fn sqs_depth(section: &WebhooksConfig) -> Result<(u64, u64), WebhookError> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let Queue::Sqs { client, url } = Queue::open(section, Path::new("")).await? else {
        return Err(WebhookError::Queue("the queue is not sqs".to_string()));
    };
    let out = client
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| {
            WebhookError::Queue(format!(
                "SQS GetQueueAttributes: {}",
                crate::util::aws::one_line(&e)
            ))
        })?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_one_pending_job_and_a_failure_stays_queued() {
        let dir = tempfile::tempdir().expect("tmp");
        let q = LocalQueue::new(dir.path().join("queue"));
        for i in 0..5 {
            q.put(&Job {
                mirror: "api".into(),
                delivery: Some(format!("d{i}")),
                at: chrono::Utc::now(),
            })
            .expect("put");
        }
        assert_eq!(q.depth("api"), 1);
        let job = q.take("api").expect("job");
        assert_eq!(
            job.delivery.as_deref(),
            Some("d0"),
            "the first one covers the others"
        );
        assert!(
            q.take("api").is_some(),
            "a running job is taken again after a crash"
        );
        q.done("api", false);
        assert_eq!(q.depth("api"), 1, "kept for a retry");
        q.take("api");
        q.done("api", true);
        assert_eq!(q.depth("api"), 0);
        assert!(q.take("api").is_none());
    }

    #[test]
    fn delivery_ids_are_remembered_across_restarts() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = Deliveries::open(dir.path());
        assert!(!d.seen("api", "x"));
        d.record("api", "x").expect("write");
        assert!(d.seen("api", "x"));
        assert!(!d.seen("other", "x"));
        let again = Deliveries::open(dir.path());
        assert!(again.seen("api", "x"));
    }

    /// Issue 21, item 11: past 10,000 deliveries every record rewrote the whole log. Now
    /// the log grows to 20,000 lines, is cut back to the 10,000 remembered once, and grows
    /// again by appends; the newest ids are remembered, the oldest forgotten.
    #[test]
    fn the_log_is_bounded_without_a_rewrite_per_delivery() {
        let dir = tempfile::tempdir().expect("tmp");
        let d = Deliveries::open(dir.path());
        let log = dir.path().join("deliveries.log");
        let mut rewrites = 0;
        let mut last_inode = 0;
        for i in 0..25_000 {
            d.record("api", &format!("d{i}")).expect("write");
            let ino = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&log).expect("log"));
            if last_inode != 0 && ino != last_inode {
                rewrites += 1;
            }
            last_inode = ino;
            assert!(d.log_lines() <= 2 * REMEMBERED);
        }
        assert_eq!(rewrites, 1, "one rewrite in 25,000 deliveries");
        assert!(d.seen("api", "d24999") && d.seen("api", "d15000"));
        assert!(
            !d.seen("api", "d14999"),
            "only the last 10,000 are remembered"
        );
        let again = Deliveries::open(dir.path());
        assert!(again.seen("api", "d24999") && !again.seen("api", "d100"));
    }
}
