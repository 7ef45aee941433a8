//! `gitsync partition produce|consume|keygen`: partition sync (git-partition-sync's producer and
//! consumer).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use super::{Cli, CliError};
use crate::partition::{self, PairOutcome, Settings, producer};

/// Arguments of `gitsync partition`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// What to do.
    #[command(subcommand)]
    pub action: Action,
}

/// Options shared by `produce` and `consume`.
#[derive(Debug, Clone, clap::Args)]
pub struct Round {
    /// One round, then exit (0 when every pair succeeded, 1 otherwise).
    #[arg(long)]
    pub once: bool,
    /// Print the plan from metadata only; change nothing anywhere (no clone, no bundle
    /// download, no upload, no push, no state).
    #[arg(long)]
    pub dry_run: bool,
    /// Sleep between rounds when looping, such as `5m` [default: partition.interval, 5m].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
}

/// The partition actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Export the sources that moved into the store and publish a new manifest.
    Produce {
        /// Round options.
        #[command(flatten)]
        round: Round,
        /// Write one full bundle per pair and delete the bundles no longer needed.
        #[arg(long)]
        compact: bool,
    },
    /// Import from the store and push to the destinations.
    Consume {
        /// Round options.
        #[command(flatten)]
        round: Round,
    },
    /// Write a new age identity and signing key pair into DIR (never overwrites).
    Keygen {
        /// Where [default: ~/.gitsync/partition/keys].
        dir: Option<PathBuf>,
    },
}

fn print(outcomes: &[PairOutcome]) -> bool {
    let mut ok = true;
    for outcome in outcomes {
        match &outcome.error {
            None => println!("{}: {}", outcome.name, outcome.action),
            Some(err) => {
                ok = false;
                println!("{}: failed: {err}", outcome.name);
            }
        }
    }
    ok
}

/// Runs the action. Exit codes: 0 success, 1 a pair or the round failed, 2 configuration.
pub fn run(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let _guard = crate::logging::init_cli();
    if let Action::Keygen { dir } = &args.action {
        let dir = dir
            .clone()
            .unwrap_or_else(|| crate::config::gitsync_home().join("partition/keys"));
        let (recipient, public) = partition::crypto::keygen(&dir).map_err(CliError::failed)?;
        println!(
            "wrote {}/identity.age, recipient.txt, signing.key, signing.pub",
            dir.display()
        );
        println!("producer: recipients: [{recipient}]");
        println!("consumer: producer_public_key: \"{public}\"");
        return Ok(ExitCode::SUCCESS);
    }
    let config = super::load_config(cli, None, false)?;
    let settings = Settings::from_config(&config).map_err(CliError::failed)?;
    let (round, compact, producing) = match &args.action {
        Action::Produce { round, compact } => (round.clone(), *compact, true),
        Action::Consume { round } => (round.clone(), false, false),
        Action::Keygen { .. } => return Ok(ExitCode::SUCCESS),
    };
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let store = crate::store::open(&settings.store, &settings.s3)
            .await
            .map_err(CliError::failed)?;
        let interval = round.interval.unwrap_or(settings.interval);
        loop {
            let spinner = super::progress::Progress::spinner(if producing {
                "exporting"
            } else {
                "importing"
            });
            let result = if producing {
                producer::run_once(
                    &settings,
                    store.as_ref(),
                    producer::Options {
                        dry_run: round.dry_run,
                        compact,
                    },
                )
                .await
            } else {
                partition::consumer::run_once(&settings, store.as_ref(), round.dry_run).await
            };
            spinner.finish();
            let ok = match result {
                Ok(outcomes) => print(&outcomes),
                Err(err) => {
                    eprintln!("gitsync: {err}");
                    false
                }
            };
            if round.once || round.dry_run {
                return Ok(if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                });
            }
            tokio::time::sleep(interval).await;
        }
    })
}
