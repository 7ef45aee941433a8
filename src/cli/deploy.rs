//! `gitsync deploy`: ship a repository's tree to servers over rsync+ssh.

use std::process::ExitCode;

use super::{Cli, CliError};
use crate::deploy::{Deploy, ShipOptions, ship::Check};

/// Arguments of `gitsync deploy`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    /// verify, rollback or status; without one, ship.
    #[command(subcommand)]
    pub action: Option<Action>,
    /// The deploy to ship [default: all].
    #[arg(value_name = "DEPLOY")]
    pub name: Option<String>,
    /// Only these targets (may repeat).
    #[arg(long = "target", value_name = "T")]
    pub targets: Vec<String>,
    /// Ship this revision instead of the branch's tip.
    #[arg(long, value_name = "REV")]
    pub rev: Option<String>,
    /// Print what would change per target (added, changed, deleted files); change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Take over a non-empty target folder that has no `releases/`.
    #[arg(long)]
    pub init: bool,
    /// Ship the commit again, whole, even to targets already on it: repairs a target that
    /// `deploy verify` calls tampered.
    #[arg(long)]
    pub repair: bool,
}

/// The deploy actions.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Check each target against the branch's tip: in sync, behind, or tampered (exit 0
    /// when every target is in sync, 1 otherwise).
    Verify {
        /// The deploy [default: all].
        #[arg(value_name = "DEPLOY")]
        name: Option<String>,
        /// Only these targets.
        #[arg(long = "target", value_name = "T")]
        targets: Vec<String>,
    },
    /// Flip `current` back to the previous release.
    Rollback {
        /// The deploy.
        #[arg(value_name = "DEPLOY")]
        name: String,
        /// Only these targets.
        #[arg(long = "target", value_name = "T")]
        targets: Vec<String>,
    },
    /// Which target is on which commit, and the last scan.
    Status,
}

fn chosen(all: Vec<Deploy>, name: Option<&str>) -> Result<Vec<Deploy>, CliError> {
    if all.is_empty() {
        return Err(CliError::usage(
            "the configuration has no `deploy` section (see the README's Tree deploy)".to_string(),
        ));
    }
    match name {
        None => Ok(all),
        Some(n) => {
            let known: Vec<String> = all.iter().map(|d| d.spec.name.clone()).collect();
            let picked: Vec<Deploy> = all.into_iter().filter(|d| d.spec.name == n).collect();
            if picked.is_empty() {
                return Err(CliError::usage(format!(
                    "no deploy named {n:?}; the configuration has: {}",
                    known.join(", ")
                )));
            }
            Ok(picked)
        }
    }
}

/// Runs the action. Exit codes: 0 done (every target in sync for `verify`), 1 a target
/// failed or the scan blocked, 2 usage or configuration.
pub fn run(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let _guard = crate::logging::init_cli();
    let config = super::load_config(cli, None, false)?;
    let all = Deploy::all(&config);
    let runtime = super::runtime()?;
    let mut ok = true;
    match &args.action {
        None => {
            for d in chosen(all, args.name.as_deref())? {
                d.targets(&args.targets)?;
                let opts = ShipOptions {
                    targets: args.targets.clone(),
                    rev: args.rev.clone(),
                    dry_run: args.dry_run,
                    init: args.init,
                    repair: args.repair,
                    explicit: true,
                };
                let spinner =
                    super::progress::Progress::spinner(&format!("shipping {}", d.spec.name));
                let shipped = runtime.block_on(d.ship(&opts));
                spinner.finish();
                match shipped {
                    Err(e) => {
                        ok = false;
                        println!("{}: {e}", d.spec.name);
                    }
                    Ok(report) => {
                        println!(
                            "{} @ {}: {} (export and scan {:.1} s)",
                            d.spec.name,
                            crate::util::words::short_id(&report.rev),
                            report.verdict.describe(),
                            report.scan_took.as_secs_f64()
                        );
                        ok &= report.ok();
                        for (target, result) in &report.targets {
                            match result {
                                Ok(text) => println!("  {target}: {text}"),
                                Err(e) => println!("  {target}: failed: {e}"),
                            }
                        }
                    }
                }
            }
        }
        Some(Action::Verify { name, targets }) => {
            for d in chosen(all, name.as_deref())? {
                let results = runtime.block_on(d.verify(targets))?;
                for (target, result) in results {
                    let line = match result {
                        Ok(Check::InSync) => "in sync".to_string(),
                        Ok(Check::Behind { has }) => {
                            ok = false;
                            format!(
                                "behind: has {}",
                                has.as_deref()
                                    .map(crate::util::words::short_id)
                                    .unwrap_or("no release")
                            )
                        }
                        Ok(Check::Tampered { rev, files }) => {
                            ok = false;
                            format!(
                                "tampered ({}): {}; `gitsync deploy {} --repair` ships it again",
                                crate::util::words::short_id(&rev),
                                files.join(", "),
                                d.spec.name
                            )
                        }
                        Err(e) => {
                            ok = false;
                            format!("cannot check: {e}")
                        }
                    };
                    println!("{} {target}: {line}", d.spec.name);
                }
            }
        }
        Some(Action::Rollback { name, targets }) => {
            for d in chosen(all, Some(name))? {
                let results = runtime.block_on(d.rollback(targets))?;
                for (target, result) in results {
                    match result {
                        Ok((from, to)) => println!(
                            "{} {target}: rolled back {} -> {}",
                            d.spec.name,
                            crate::util::words::short_id(&from),
                            crate::util::words::short_id(&to)
                        ),
                        Err(e) => {
                            ok = false;
                            println!("{} {target}: {e}", d.spec.name);
                        }
                    }
                }
            }
        }
        Some(Action::Status) => {
            for d in chosen(all, None)? {
                let state = d.state()?;
                println!(
                    "{}: scan: {}{}",
                    d.spec.name,
                    state.scan.as_deref().unwrap_or("not run yet"),
                    state
                        .pinned
                        .as_deref()
                        .map(|at| format!(
                            "; pinned at {} by a rollback (`gitsync deploy {}` ships again)",
                            crate::util::words::short_id(at),
                            d.spec.name
                        ))
                        .unwrap_or_default()
                );
                for t in &d.spec.targets {
                    let s = state.targets.get(&t.name).cloned().unwrap_or_default();
                    println!(
                        "  {:<12} {:<10} {:<12} {}{}",
                        t.name,
                        s.rev
                            .as_deref()
                            .map(crate::util::words::short_id)
                            .unwrap_or("-"),
                        s.result.map_or("never", |r| r.as_str()),
                        s.at.map(|a| a.format("%Y-%m-%d %H:%M:%S UTC").to_string())
                            .unwrap_or_default(),
                        s.error.map(|e| format!("  {e}")).unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

impl From<crate::deploy::DeployError> for CliError {
    /// A target or revision the deploy does not have is a usage error (exit code 2);
    /// anything else a failure (exit code 1).
    fn from(error: crate::deploy::DeployError) -> CliError {
        match error {
            crate::deploy::DeployError::Usage(_) => CliError::usage(error),
            other => CliError::failed(other),
        }
    }
}
