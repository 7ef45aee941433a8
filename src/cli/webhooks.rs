//! `gitsync webhooks status|test|run`: the webhook-triggered mirrors.

use std::process::ExitCode;

use super::{Cli, CliError};
use crate::webhook::{self, Webhooks, run::PushMirrorState, verify};

/// Arguments of `gitsync webhooks`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// The webhook actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Each mirror's last run, result, refs pushed, diverged refs, last error, queue depth.
    Status {
        /// Print a JSON array of records instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Send the running intake a correctly signed ping for mirror NAME (checks the set-up
    /// end to end: address, TLS, secret).
    Test {
        /// The mirror.
        #[arg(value_name = "MIRROR")]
        name: String,
    },
    /// Run mirrors now, in the foreground, without a webhook (all, or those named).
    Run {
        /// Mirror names [default: all].
        #[arg(value_name = "MIRROR")]
        names: Vec<String>,
    },
}

/// One row of `webhooks status`.
#[derive(Debug, serde::Serialize)]
struct Row {
    mirror: String,
    provider: String,
    #[serde(flatten)]
    state: PushMirrorState,
    queued: Option<usize>,
    /// With `queue: sqs`: the shared queue's counts (all mirrors), or why they are unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    sqs_queue: Option<SqsQueue>,
}

/// The SQS queue as `webhooks status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
struct SqsQueue {
    name: String,
    waiting: Option<u64>,
    in_flight: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

impl SqsQueue {
    /// Reads the counts (5 s at most); a failure is kept as the error, never fatal.
    fn read(section: &crate::config::WebhooksConfig) -> SqsQueue {
        let name = section.sqs_queue.clone().unwrap_or_default();
        let counts = super::runtime().map_err(|e| e.to_string()).and_then(|rt| {
            rt.block_on(async {
                tokio::time::timeout(
                    std::time::Duration::from_secs(5),
                    webhook::queue::sqs_depth(section),
                )
                .await
                .unwrap_or_else(|_| {
                    Err(webhook::WebhookError::Queue(
                        "no answer within 5 s".to_string(),
                    ))
                })
                .map_err(|e| e.to_string())
            })
        });
        let (waiting, in_flight, error) = match counts {
            Ok((w, f)) => (Some(w), Some(f), None),
            Err(e) => (None, None, Some(e)),
        };
        SqsQueue {
            name,
            waiting,
            in_flight,
            error,
        }
    }

    fn line(&self) -> String {
        match (&self.error, self.waiting, self.in_flight) {
            (Some(e), ..) => format!("SQS queue {}: cannot read it: {e}\n", self.name),
            (None, Some(w), Some(f)) => format!(
                "SQS queue {}: {w} waiting, {f} in flight (all mirrors)\n",
                self.name
            ),
            _ => String::new(),
        }
    }
}

fn no_section() -> CliError {
    CliError::usage(
        "the configuration has no `webhooks` section (see the README's Webhook mirrors)"
            .to_string(),
    )
}

fn load(
    cli: &Cli,
    runtime: &tokio::runtime::Runtime,
) -> Result<std::sync::Arc<Webhooks>, CliError> {
    let config = super::load_config(cli, None, false)?;
    runtime
        .block_on(Webhooks::from_config(&config))
        .map_err(CliError::failed)?
        .ok_or_else(no_section)
}

/// Runs the action. Exit codes: 0 done, 1 failed (a run failed, the ping was refused), 2
/// usage or configuration.
pub fn run(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let _guard = crate::logging::init_cli();
    if let Action::Status { json } = &args.action {
        // Saved states, and the SQS queue's counts: no secret is needed.
        let config = super::load_config(cli, None, false)?;
        let rows = rows(&config).ok_or_else(no_section)?;
        if *json {
            let text = serde_json::to_string_pretty(&rows).map_err(CliError::failed)?;
            println!("{text}");
        } else {
            print!("{}", table(&rows));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let runtime = super::runtime()?;
    let hooks = load(cli, &runtime)?;
    match &args.action {
        Action::Status { .. } => Ok(ExitCode::SUCCESS),
        Action::Test { name } => test(&hooks, name, &runtime),
        Action::Run { names } => {
            if let Some(unknown) = names.iter().find(|n| !hooks.mirrors.contains_key(*n)) {
                return Err(CliError::usage(format!(
                    "no webhook mirror named {unknown:?}"
                )));
            }
            let mut ok = true;
            for (name, mirror) in &hooks.mirrors {
                if !names.is_empty() && !names.contains(name) {
                    continue;
                }
                let done = runtime.block_on(webhook::worker::run_mirror(&hooks, mirror, true));
                let state = hooks.state(name).unwrap_or_default();
                println!("{}", row_line(name, &state));
                // A ref refused as diverged is not mirrored: exit 1, so that cron sees it.
                ok &= done && state.diverged.is_empty();
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

fn row_line(name: &str, s: &PushMirrorState) -> String {
    let mut line = format!(
        "{name}: {} ({} refs pushed)",
        s.result.map_or("never run", |r| r.as_str()),
        s.refs_pushed
    );
    if !s.diverged.is_empty() {
        line.push_str(&format!(
            "; diverged at the target (left alone): {} (compare the target with the source; `force: true` on the mirror overwrites through the lease)",
            s.diverged.join(", ")
        ));
    }
    if let Some(e) = &s.error {
        line.push_str(&format!("; {e}"));
    }
    line
}

/// The webhook mirrors' table for `gitsync status` (empty when none is configured).
pub(super) fn status_section(config: &crate::config::Config) -> String {
    match rows(config) {
        Some(rows) => format!("\nwebhook mirrors:\n{}", table(&rows)),
        None => String::new(),
    }
}

/// Each configured mirror with its saved state and its jobs waiting (local queue) or the
/// SQS queue's counts; `None` without a `webhooks` section.
fn rows(config: &crate::config::Config) -> Option<Vec<Row>> {
    let section = config.webhooks.as_ref()?;
    let dir = config.home.join("webhooks");
    let queue = crate::webhook::queue::LocalQueue::new(dir.join("queue"));
    let local = section.queue != Some(crate::config::QueueKind::Sqs);
    let sqs = (!local).then(|| SqsQueue::read(section));
    let rows: Vec<Row> = section
        .mirrors
        .iter()
        .map(|m| Row {
            mirror: m.name.clone(),
            provider: m.provider.to_string(),
            // A corrupt state shows as empty here; the mirror's next run names the file.
            state: crate::util::fs::read_json(&crate::webhook::run::state_path(&dir, &m.name))
                .unwrap_or_default(),
            queued: local.then(|| queue.depth(&m.name)),
            sqs_queue: sqs.clone(),
        })
        .collect();
    Some(rows)
}

fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<16} {:<10} {:<22} {:<9} {:>6} {:>6}  NOTE\n",
        "MIRROR", "PROVIDER", "LAST RUN", "RESULT", "PUSHED", "QUEUED"
    );
    for r in rows {
        let last = r
            .state
            .last_run
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "never".to_string());
        let mut note = String::new();
        if !r.state.diverged.is_empty() {
            note = format!("diverged: {}", r.state.diverged.join(", "));
        }
        if let Some(e) = &r.state.error {
            if !note.is_empty() {
                note.push_str("; ");
            }
            note.push_str(e);
        }
        out.push_str(&format!(
            "{:<16} {:<10} {:<22} {:<9} {:>6} {:>6}  {note}\n",
            r.mirror,
            r.provider,
            last,
            r.state.result.map_or("-", |r| r.as_str()),
            r.state.refs_pushed,
            r.queued.map_or("-".to_string(), |q| q.to_string()),
        ));
    }
    if let Some(q) = rows.first().and_then(|r| r.sqs_queue.as_ref()) {
        out.push_str(&q.line());
    }
    out
}

/// Builds the headers and body a forge would send for a ping (or, for providers without a
/// ping, an event the intake ignores).
fn ping_for(mirror: &webhook::PushMirror) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let body = br#"{"zen":"gitsync webhooks test","hook_id":0}"#.to_vec();
    let secret = mirror.secret.clone().unwrap_or_default();
    let sig = verify::sign_hex(&secret, &body);
    let mut headers = vec![("content-type", "application/json".to_string())];
    match &mirror.provider {
        verify::Provider::Github => {
            headers.push(("x-github-event", "ping".into()));
            headers.push(("x-hub-signature-256", format!("sha256={sig}")));
        }
        verify::Provider::Gitlab { .. } => {
            headers.push(("x-gitlab-event", "Test Ping".into()));
            headers.push((
                "x-gitlab-token",
                String::from_utf8_lossy(&secret).into_owned(),
            ));
        }
        verify::Provider::Gitea | verify::Provider::Forgejo => {
            headers.push(("x-gitea-event", "ping".into()));
            headers.push(("x-forgejo-event", "ping".into()));
            headers.push(("x-gitea-signature", sig.clone()));
            headers.push(("x-forgejo-signature", sig));
        }
        verify::Provider::Bitbucket | verify::Provider::BitbucketServer => {
            headers.push(("x-event-key", "diagnostics:ping".into()));
            headers.push(("x-hub-signature", format!("sha256={sig}")));
        }
        verify::Provider::Backlog | verify::Provider::Generic { .. } => {}
    }
    (headers, body)
}

fn test(
    hooks: &Webhooks,
    name: &str,
    runtime: &tokio::runtime::Runtime,
) -> Result<ExitCode, CliError> {
    let mirror = hooks.mirrors.get(name).ok_or_else(|| {
        CliError::usage(format!(
            "no webhook mirror named {name:?}; the configuration has: {}",
            hooks.mirrors.keys().cloned().collect::<Vec<_>>().join(", ")
        ))
    })?;
    if matches!(
        mirror.provider,
        verify::Provider::Backlog | verify::Provider::Generic { .. }
    ) {
        return Err(CliError::usage(format!(
            "{} has no ping event; push to the source to test {name}",
            mirror.spec.provider
        )));
    }
    let listen = hooks
        .config
        .listen
        .clone()
        .unwrap_or_else(|| webhook::DEFAULT_LISTEN.to_string());
    let listen = listen.replace("0.0.0.0", "127.0.0.1");
    let scheme = if hooks.config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let token = mirror
        .path_token
        .as_ref()
        .map(|t| format!("/{}", String::from_utf8_lossy(t)))
        .unwrap_or_default();
    let url = format!("{scheme}://{listen}/hooks/{name}{token}");
    let shown = format!(
        "{scheme}://{listen}/hooks/{name}{}",
        if token.is_empty() { "" } else { "/***" }
    );
    let (headers, body) = ping_for(mirror);
    let result = runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            // The intake's certificate may be self-signed for an internal host.
            .danger_accept_invalid_certs(true)
            .build()
            .map_err(|e| e.to_string())?;
        let mut request = client.post(&url).body(body);
        for (k, v) in headers {
            request = request.header(k, v);
        }
        let response = request
            .send()
            .await
            .map_err(|e| crate::mirror::lfs::without_url(&e))?;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        Ok::<_, String>((status, text))
    });
    match result {
        Ok((status, text)) if status.is_success() => {
            println!(
                "{name}: the intake at {shown} answered {status}: {}",
                text.trim()
            );
            Ok(ExitCode::SUCCESS)
        }
        Ok((status, text)) => {
            println!(
                "{name}: the intake at {shown} refused the ping: {status}: {}",
                text.trim()
            );
            Ok(ExitCode::from(1))
        }
        Err(err) => {
            println!(
                "{name}: cannot reach the intake at {shown}: {err} (is `gitsync run` running with this configuration?)"
            );
            Ok(ExitCode::from(1))
        }
    }
}
