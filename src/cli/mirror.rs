//! `gitsync mirror`: mirror repositories into S3 or a folder that a stock `git clone`
//! reads over dumb HTTP (what mirror-git-to-s3 does).

use std::process::ExitCode;

use super::{Cli, CliError};
use crate::mirror::{self, BucketMirror};

/// Arguments of `gitsync mirror`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// What to do; without one, mirror each `--source` to the `--target` given with it.
    #[command(subcommand)]
    pub action: Option<Action>,
    /// A URL git fetches from (https, ssh, file://); pairs with the `--target` in the same
    /// position, and may repeat.
    #[arg(long, value_name = "URL")]
    pub source: Vec<String>,
    /// `s3://bucket/prefix` or `file:///path`.
    #[arg(long, value_name = "URL")]
    pub target: Vec<String>,
    /// S3 endpoint of an AWS-compatible server, such as http://127.0.0.1:5000.
    #[arg(long, value_name = "URL")]
    pub endpoint_url: Option<String>,
    /// Also copy the Git LFS objects the mirrored commits point at.
    #[arg(long)]
    pub lfs: bool,
    /// Show what would be published; write nothing to the target.
    #[arg(long)]
    pub dry_run: bool,
}

/// The mirror actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Run the mirrors of the configuration (all, or those named), every `interval`.
    Run {
        /// Mirror names from the configuration [default: all].
        #[arg(value_name = "MIRROR")]
        names: Vec<String>,
        /// One run of each, then exit (0 when every mirror succeeded, 1 otherwise).
        #[arg(long)]
        once: bool,
        /// Show what would be published; write nothing to the target.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Prints one outcome for people; returns whether it succeeded. On the first run, the
/// clone URL follows, and `anonymous`: what an anonymous reader of it meets, if not a clone.
fn print(
    mirror: &BucketMirror,
    outcome: &mirror::Outcome,
    first: bool,
    anonymous: Option<&str>,
) -> bool {
    match &outcome.result {
        Ok(report) => {
            println!(
                "{} in {:.1} s",
                mirror::summary(&outcome.name, report),
                outcome.took.as_secs_f64()
            );
            if first && !report.dry_run {
                println!("  clone with: git clone {}", mirror.clone_url());
                if let Some(problem) = anonymous {
                    println!("  but {problem}");
                }
            }
            true
        }
        Err(err) => {
            println!(
                "{}: failed: {}. Nothing was published; the previous mirror stays as it was.",
                outcome.name,
                err.to_string().trim_end_matches('.')
            );
            false
        }
    }
}

/// Runs the command. Exit codes: 0 every mirror succeeded, 1 one failed, 2 usage or
/// configuration.
pub fn run(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let _guard = crate::logging::init_cli();
    let config = super::load_config(cli, None, false)?;
    let (mirrors, once, dry_run) = match &args.action {
        None => {
            if args.source.is_empty() || args.source.len() != args.target.len() {
                return Err(CliError::usage(
                    "give --source URL --target URL pairs (as many --target as --source), or `gitsync mirror run`"
                        .to_string(),
                ));
            }
            if let Some(bad) = args
                .target
                .iter()
                .find(|t| !(t.starts_with("s3://") || t.starts_with("file:///")))
            {
                return Err(CliError::usage(format!(
                    "--target {bad:?}: use s3://bucket/prefix or file:///path"
                )));
            }
            let pairs: Vec<(String, String)> = args
                .source
                .iter()
                .cloned()
                .zip(args.target.iter().cloned())
                .collect();
            (
                mirror::adhoc(&config, &pairs, args.endpoint_url.clone(), args.lfs),
                true,
                args.dry_run,
            )
        }
        Some(Action::Run {
            names,
            once,
            dry_run,
        }) => {
            let all = BucketMirror::all(&config);
            if all.is_empty() {
                return Err(CliError::usage(
                    "the configuration has no `mirrors`; add one (see `gitsync init`), or use `gitsync mirror --source URL --target URL`".to_string(),
                ));
            }
            if let Some(unknown) = names
                .iter()
                .find(|n| !all.iter().any(|m| &m.spec.name == *n))
            {
                let known: Vec<&str> = all.iter().map(|m| m.spec.name.as_str()).collect();
                return Err(CliError::usage(format!(
                    "no mirror named {unknown:?}; the configuration has: {}",
                    known.join(", ")
                )));
            }
            let chosen = all
                .into_iter()
                .filter(|m| names.is_empty() || names.contains(&m.spec.name))
                .collect();
            (chosen, *once, *dry_run)
        }
    };
    let runtime = super::runtime()?;
    runtime.block_on(async move {
        let mut first = true;
        loop {
            let mut ok = true;
            // One at a time: each run streams its pack from disk, so memory stays flat.
            for mirror in &mirrors {
                let spinner =
                    super::progress::Progress::spinner(&format!("mirroring {}", mirror.spec.name));
                let outcome = mirror.run_once(dry_run).await;
                spinner.finish();
                mirror::log_outcome(&outcome);
                let anonymous = match &outcome.result {
                    // Only after a publish: a run with nothing new makes its two requests.
                    Ok(report) if first && !report.dry_run && !report.up_to_date() => {
                        mirror::reach::anonymous_problem(&mirror.clone_url()).await
                    }
                    _ => None,
                };
                ok &= print(mirror, &outcome, first, anonymous.as_deref());
            }
            if once || dry_run {
                return Ok(if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::from(1)
                });
            }
            first = false;
            let wait = mirrors
                .iter()
                .map(BucketMirror::interval)
                .min()
                .unwrap_or(mirror::DEFAULT_INTERVAL);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = tokio::signal::ctrl_c() => return Ok(ExitCode::SUCCESS),
            }
        }
    })
}
