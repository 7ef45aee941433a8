//! `gitsync aws setup|teardown`: this host's AWS resources.

use std::io::IsTerminal;
use std::process::ExitCode;

use super::{Cli, CliError};
use crate::backend::aws::{self, Names, setup};

/// Arguments of `gitsync aws`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// The AWS actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Create, idempotently, the table, the FIFO topic, this host's FIFO queue, its policy
    /// and its subscription (an existing queue's attributes are brought in line); print
    /// what was done and the config lines to use.
    Setup {
        /// Also write those lines into the config file (its `backend` and `aws` blocks are
        /// replaced; every other line, comments included, stays; the old file is kept as
        /// `config.yml.bak`).
        #[arg(long)]
        write_config: bool,
    },
    /// Remove this host's queue and subscription (the shared table and topic stay); asks
    /// whether to forget this host's rows too, when standard input is a terminal.
    Teardown {
        /// Also remove this host's rows (and heartbeat) from the table, without asking.
        #[arg(long)]
        forget: bool,
    },
}

fn describe(action: setup::Action) -> &'static str {
    match action {
        setup::Action::Created => "created",
        setup::Action::Updated => "updated",
        setup::Action::Unchanged => "exists, unchanged",
        setup::Action::Deleted => "deleted",
        setup::Action::Absent => "not there",
    }
}

/// Runs the action. Exit code 0 on success, 1 when an AWS call fails, 2 when the config
/// has no `aws` section.
pub fn run(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let _guard = crate::logging::init_cli();
    let config = super::load_config(cli, None, false)?;
    let webhook_queue = config
        .webhooks
        .as_ref()
        .filter(|w| w.queue == Some(crate::config::QueueKind::Sqs))
        .cloned();
    if let (None, Some(webhooks), Action::Setup { .. }) =
        (&config.aws, &webhook_queue, &args.action)
    {
        // A host that runs webhook mirrors on SQS only.
        let runtime = super::runtime()?;
        return runtime.block_on(async {
            let sdk = crate::util::aws::sdk_config(
                webhooks.region.clone(),
                webhooks.endpoint_url.as_deref(),
            )
            .await;
            let queue = webhooks.sqs_queue.clone().unwrap_or_default();
            let step = setup::ensure_webhook_queue(&sdk, &queue)
                .await
                .map_err(CliError::failed)?;
            println!("{}: {}", step.resource, describe(step.action));
            Ok(ExitCode::SUCCESS)
        });
    }
    let Some(aws_config) = config.aws.as_ref() else {
        return Err(CliError::failed(format!(
            "{}: no `aws` section; add one (see the README's AWS set-up) first",
            config.file.as_ref().map_or_else(
                || "the configuration".to_string(),
                |f| f.display().to_string()
            )
        )));
    };
    let names = Names::of(aws_config, &config.hostname);
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let sdk = aws::sdk_config(aws_config).await;
        match args.action {
            Action::Setup { write_config } => {
                let report = setup::setup(&sdk, &names)
                    .await
                    .map_err(CliError::failed)?;
                let mut steps = report.steps.clone();
                if let Some(webhooks) = &webhook_queue {
                    let queue = webhooks.sqs_queue.clone().unwrap_or_default();
                    steps.push(
                        setup::ensure_webhook_queue(&sdk, &queue)
                            .await
                            .map_err(CliError::failed)?,
                    );
                }
                for step in &steps {
                    println!("{}: {}", step.resource, describe(step.action));
                }
                if steps.iter().all(|s| s.action == setup::Action::Unchanged) {
                    println!("nothing to do: everything already exists as needed");
                }
                let mut block = String::from("aws:\n");
                if let Some(region) = sdk.region() {
                    block.push_str(&format!("  region: {region}\n"));
                }
                if let Some(url) = &aws_config.endpoint_url {
                    block.push_str(&format!("  endpoint_url: {url}\n"));
                }
                block.push_str(&format!("  dynamodb: {{table: {}}}\n", report.names.table));
                block.push_str(&format!("  sqs: {{queue: {}}}\n", report.names.queue));
                if let Some(arn) = &report.names.topic_arn {
                    block.push_str(&format!("  sns: {{topic: {{arn: \"{arn}\"}}}}\n"));
                }
                if write_config {
                    let file = config.file.clone().ok_or_else(|| {
                        CliError::failed("no config file to write into: `gitsync init` writes one".to_string())
                    })?;
                    write_aws_lines(&file, &block)?;
                    println!("\n{}: backend and aws lines written (the old file is {}.bak)", file.display(), file.display());
                } else {
                    println!("\nconfig lines for this host ({}):", config.hostname);
                    print!("backend: aws\n{block}");
                    println!("(`gitsync aws setup --write-config` writes them into the config file)");
                }
            }
            Action::Teardown { forget } => {
                // The daemon reads this queue: removed under it, it would loop on errors.
                if let Some(daemon) = crate::daemon::pidfile::running(&config.home) {
                    return Err(CliError::usage(format!(
                        "gitsync runs here (pid {}) and reads this host's queue",
                        daemon.pid
                    ))
                    .hinted("stop it first (`gitsync stop`, or `systemctl --user stop gitsync`), then tear down"));
                }
                let steps = setup::teardown(&sdk, &names)
                    .await
                    .map_err(CliError::failed)?;
                for step in &steps {
                    println!("{}: {}", step.resource, describe(step.action));
                }
                let store = crate::backend::open_store(&config)
                    .await
                    .map_err(CliError::failed)?;
                let rows = store
                    .list(Some(&config.hostname))
                    .await
                    .map(|r| r.len())
                    .unwrap_or(0);
                let host = &config.hostname;
                let forget = forget
                    || (rows > 0
                        && std::io::stdin().is_terminal()
                        && ask(&format!(
                            "Also forget {host}'s {rows} row{} in the table, so other machines stop showing them? [y/N] ",
                            if rows == 1 { "" } else { "s" }
                        )));
                if forget {
                    let n = store
                        .forget(host, None)
                        .await
                        .map_err(|e| CliError::failed(format!("cannot forget {host}: {e}")))?;
                    println!("{host}: {n} row{} forgotten, and its heartbeat", if n == 1 { "" } else { "s" });
                } else if rows > 0 {
                    println!(
                        "{host}'s {rows} row{} stay in the table: `gitsync forget --host {host}` removes them",
                        if rows == 1 { "" } else { "s" }
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// Asks `question` on standard error and reads a yes from standard input.
fn ask(question: &str) -> bool {
    eprint!("{question}");
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer).is_ok()
        && matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes")
}

/// Writes `backend: aws` and the `aws` block `block` into the config file `file`, keeping
/// its other lines; checks that the result still loads before replacing the file, and
/// keeps the old one as `<file>.bak`.
fn write_aws_lines(file: &std::path::Path, block: &str) -> Result<(), CliError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        CliError::failed(format!("{}: {what}: {e}", file.display()))
    };
    let text = std::fs::read_to_string(file).map_err(|e| fail("cannot read", &e))?;
    let edited = crate::config::edit::replace_top_level(&text, "aws", block);
    let edited = crate::config::edit::replace_top_level(&edited, "backend", "backend: aws\n");
    let dir = file.parent().unwrap_or(std::path::Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".config.yml.")
        .tempfile_in(dir)
        .map_err(|e| fail("cannot write", &e))?;
    std::io::Write::write_all(&mut tmp, edited.as_bytes()).map_err(|e| fail("cannot write", &e))?;
    crate::config::load(tmp.path(), true, None, false).map_err(|e| {
        CliError::failed(format!(
            "the edited configuration would not load, nothing written:\n{e}"
        ))
    })?;
    std::fs::copy(file, file.with_extension("yml.bak"))
        .map_err(|e| fail("cannot keep a copy", &e))?;
    tmp.persist(file)
        .map_err(|e| fail("cannot replace", &e.error))?;
    Ok(())
}
