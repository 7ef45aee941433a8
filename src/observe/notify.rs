//! Notifications once per change of state (`notify:`): a repository of this host that
//! becomes failing, diverged or blocked, another host that goes offline (its heartbeat
//! stops without a clean stop), and a deploy, webhook mirror or bucket mirror of this
//! host whose last run failed, each get one message, and one more when it recovers;
//! never one per retry (Gitea's mirror notifications flood, go-gitea/gitea#21610, is what
//! this avoids). A target is an HTTP POST of the message as the body, as ntfy takes it
//! (<https://docs.ntfy.sh/publish/>: the body is the message, `Title` its title); any
//! webhook URL that takes a text body works the same. Or the desktop: a notification on
//! the session bus (`DBUS_SESSION_BUS_ADDRESS`), through the Desktop Notifications
//! Specification's `org.freedesktop.Notifications.Notify`, with `gitsync` as the
//! application and summary and the message as the body.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::model::{RepoState, Summary};

/// How long one POST may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// What is wrong with a repository, for notifications: a word and the detail.
fn condition(state: &RepoState) -> Option<(&'static str, String)> {
    if state.state == Summary::Error {
        return Some(("failing", state.error.clone().unwrap_or_default()));
    }
    if state.state == Summary::Diverged {
        return Some((
            "diverged",
            format!(
                "{} ahead, {} behind its upstream",
                state.ahead, state.behind
            ),
        ));
    }
    match &state.pull_blocked {
        Some(reason) if state.behind > 0 => Some(("blocked", reason.clone())),
        _ => None,
    }
}

/// Where messages go (`notify:`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Targets {
    /// URLs each message is posted to.
    pub webhooks: Vec<String>,
    /// Whether each message is also shown on the desktop.
    pub desktop: bool,
}

impl Targets {
    /// Whether there is nowhere to send a message.
    pub fn is_empty(&self) -> bool {
        self.webhooks.is_empty() && !self.desktop
    }
}

/// Shows `text` as a desktop notification; a failure (no session bus, no notification
/// server on it) is logged.
async fn show_on_desktop(text: &str) {
    let shown = notify_rust::Notification::new()
        .appname("gitsync")
        .summary("gitsync")
        .body(text)
        .show_async()
        .await;
    if let Err(err) = shown {
        tracing::warn!(%err, "desktop notification not shown (is there a session bus with a notification server?)");
    }
}

/// What a message is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Subject {
    /// A repository of this host, by name.
    Repo(String),
    /// Another host, by name.
    Host(String),
    /// A job of this host: its kind (`deploy`, ...) and name.
    Job(&'static str, String),
}

/// Turns states into messages, once per change, and sends them.
#[derive(Debug)]
pub struct Notifier {
    host: String,
    /// By subject: the condition it was last seen in.
    seen: Mutex<HashMap<Subject, &'static str>>,
    outbox: tokio::sync::mpsc::UnboundedSender<String>,
}

impl Notifier {
    /// A notifier for host `host`; returns it and the messages to deliver with
    /// [`Notifier::deliver`].
    pub fn new(host: &str) -> (Notifier, tokio::sync::mpsc::UnboundedReceiver<String>) {
        let (outbox, messages) = tokio::sync::mpsc::unbounded_channel();
        let notifier = Notifier {
            host: host.to_string(),
            seen: Mutex::new(HashMap::new()),
            outbox,
        };
        (notifier, messages)
    }

    /// Looks at the latest `state` of one repository: returns the message its change of
    /// condition calls for (and queues it), or `None` when nothing changed.
    pub fn observe(&self, state: &RepoState) -> Option<String> {
        let name = format!("{} on {}", state.repo, self.host);
        self.change(Subject::Repo(state.repo.clone()), condition(state), &name)
    }

    /// Looks at every host's record at `now`: a host other than this one that went
    /// offline (no heartbeat for three of its intervals, and no clean stop) gets a
    /// message, and one more when it is back. A host that stopped cleanly (`gitsync stop`)
    /// is left as it was. Returns the messages queued.
    pub fn observe_hosts(
        &self,
        hosts: &[crate::model::HostRecord],
        now: chrono::DateTime<chrono::Utc>,
    ) -> Vec<String> {
        let mut sent = Vec::new();
        for h in hosts.iter().filter(|h| h.host != self.host) {
            if h.stopped_at.is_some() {
                continue;
            }
            let now = h.offline_for(now).map(|silent| {
                let silent = std::time::Duration::from_secs(silent.as_secs());
                (
                    "offline",
                    format!("no heartbeat for {}", humantime::format_duration(silent)),
                )
            });
            let name = h.host.clone();
            sent.extend(self.change(Subject::Host(h.host.clone()), now, &name));
        }
        sent
    }

    /// Looks at the last run of each of this host's jobs: one whose last run failed gets a
    /// message, and one more when a run succeeds. A job never run is left as it was.
    /// Returns the messages queued.
    pub fn observe_jobs(&self, jobs: &[super::metrics::JobRun]) -> Vec<String> {
        let mut sent = Vec::new();
        for job in jobs {
            let Some(ok) = job.ok else { continue };
            let now = (!ok).then(|| ("failing", "its last run failed".to_string()));
            let name = format!(
                "{} {} on {}",
                job.kind.replace('_', " "),
                job.name,
                self.host
            );
            sent.extend(self.change(Subject::Job(job.kind, job.name.clone()), now, &name));
        }
        sent
    }

    /// Records `now`, the condition of `subject` (called `name` in messages), and queues
    /// the message its change calls for.
    fn change(
        &self,
        subject: Subject,
        now: Option<(&'static str, String)>,
        name: &str,
    ) -> Option<String> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let before = seen.get(&subject).copied();
        let message = match (before, &now) {
            (None, None) => None,
            (Some(was), None) => {
                seen.remove(&subject);
                Some(format!("{name} recovered (it was {was})"))
            }
            (Some(was), Some((word, _))) if was == *word => None,
            (_, Some((word, detail))) => {
                seen.insert(subject, word);
                Some(format!("{name} is {word}: {detail}"))
            }
        };
        if let Some(text) = &message {
            tracing::info!("notify: {text}");
            let _ = self.outbox.send(text.clone());
        }
        message
    }

    /// Forgets repository `repo` (no longer kept), without a message.
    pub fn forget(&self, repo: &str) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&Subject::Repo(repo.to_string()));
    }

    /// Every `every`, reads the hosts' records from `store` and the jobs' last runs from
    /// `jobs`, and notifies their changes ([`Notifier::observe_hosts`],
    /// [`Notifier::observe_jobs`]); runs until the task is dropped. A store that does not
    /// answer is skipped until the next time.
    pub async fn watch(
        self: std::sync::Arc<Self>,
        store: std::sync::Arc<dyn crate::backend::StateStore>,
        jobs: super::JobRuns,
        every: Duration,
    ) {
        loop {
            let hosts = super::host_records(store.as_ref()).await;
            self.observe_hosts(&hosts, chrono::Utc::now());
            let runs = super::job_runs(&jobs).await;
            self.observe_jobs(&runs);
            tracing::debug!(
                hosts = hosts.len(),
                jobs = runs.len(),
                "notify: looked at the hosts and jobs"
            );
            tokio::time::sleep(every).await;
        }
    }

    /// Posts each message of `messages` to every webhook of `targets`, and shows it on
    /// the desktop when `targets.desktop`, in order, until the channel closes. A target
    /// that fails is logged; the message is not retried (the next change of state sends
    /// the next one).
    pub async fn deliver(
        targets: Targets,
        mut messages: tokio::sync::mpsc::UnboundedReceiver<String>,
    ) {
        let Targets { webhooks, desktop } = targets;
        let client = match reqwest::Client::builder().timeout(POST_TIMEOUT).build() {
            Ok(client) => client,
            Err(err) => {
                tracing::error!(%err, "notifications: no HTTP client; none will be sent");
                return;
            }
        };
        while let Some(text) = messages.recv().await {
            if desktop {
                show_on_desktop(&text).await;
            }
            for url in &webhooks {
                let sent = client
                    .post(url)
                    .header("Title", "gitsync")
                    .header(reqwest::header::CONTENT_TYPE, "text/plain; charset=utf-8")
                    .body(text.clone())
                    .send()
                    .await;
                match sent {
                    Ok(answer) if answer.status().is_success() => {}
                    Ok(answer) => {
                        tracing::warn!(url = %crate::util::redact::redact_url(url), status = %answer.status(), "notification refused")
                    }
                    Err(err) => {
                        tracing::warn!(url = %crate::util::redact::redact_url(url), %err, "notification not sent")
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(summary: Summary, error: Option<&str>) -> RepoState {
        let mut s = RepoState::error("h", "proj", error.unwrap_or_default().to_string());
        s.state = summary;
        s.error = error.map(str::to_string);
        s
    }

    #[test]
    fn a_thousand_failing_retries_give_one_message_and_one_for_the_recovery() {
        let (notifier, mut messages) = Notifier::new("h");
        for i in 0..1_000 {
            // The detail changes at each retry (a count, a time): still one message.
            notifier.observe(&state(
                Summary::Error,
                Some(&format!("fetch failed (try {i})")),
            ));
        }
        notifier.observe(&state(Summary::UpToDate, None));
        notifier.observe(&state(Summary::UpToDate, None));
        let mut got = Vec::new();
        while let Ok(m) = messages.try_recv() {
            got.push(m);
        }
        assert_eq!(
            got,
            [
                "proj on h is failing: fetch failed (try 0)",
                "proj on h recovered (it was failing)"
            ]
        );
        // Another kind of trouble is another message.
        notifier.observe(&state(Summary::Diverged, None));
        assert!(messages.try_recv().is_ok_and(|m| m.contains("is diverged")));
    }
}
