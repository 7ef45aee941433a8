//! `gitsync sync`: one full update, for cron.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{Cli, CliError};

/// Arguments of `gitsync sync`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder whose repositories to sync (overrides `root` in the config file).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Print nothing but failures.
    #[arg(long, short)]
    pub quiet: bool,
}

/// One line for a repository that needs a word (`None`: up to date, nothing done).
pub fn describe(outcome: &crate::daemon::syncer::Outcome) -> Option<String> {
    use crate::model::Summary;
    let s = &outcome.state;
    let branch = s.branch.as_deref().unwrap_or("HEAD");
    let short = |id: &Option<String>| id.as_deref().map(|h| h.chars().take(7).collect::<String>());
    if !outcome.ok {
        return Some(format!(
            "{}: failed: {}",
            outcome.repo,
            s.error.as_deref().unwrap_or("see the log")
        ));
    }
    if outcome.fast_forwarded {
        return Some(format!(
            "{}: fast-forwarded {branch} to {}",
            outcome.repo,
            short(&s.head).unwrap_or_default()
        ));
    }
    let commits = |n: u32| format!("{n} commit{}", if n == 1 { "" } else { "s" });
    let what = match s.state {
        Summary::UpToDate => return None,
        Summary::Behind => format!("behind by {}", commits(s.behind)),
        Summary::Ahead => format!("ahead by {} (not pushed)", commits(s.ahead)),
        Summary::Diverged => format!("diverged: {} ahead, {} behind", s.ahead, s.behind),
        Summary::NoUpstream => format!("{branch} has no upstream"),
        Summary::UpstreamGone => format!("{branch}'s upstream is gone"),
        Summary::Detached => "HEAD is detached".to_string(),
        Summary::Error => format!("error: {}", s.error.as_deref().unwrap_or("see the log")),
    };
    Some(match &s.pull_blocked {
        Some(why) if s.behind > 0 => format!("{}: {what}; not pulled: {why}", outcome.repo),
        _ => format!("{}: {what}", outcome.repo),
    })
}

/// The closing line: `7 repositories: 5 up to date, 1 fast-forwarded, 1 failed`.
pub fn summary(outcomes: &[crate::daemon::syncer::Outcome]) -> String {
    use crate::model::Summary;
    let failed = outcomes.iter().filter(|o| !o.ok).count();
    let forwarded = outcomes.iter().filter(|o| o.ok && o.fast_forwarded).count();
    let current = outcomes
        .iter()
        .filter(|o| o.ok && !o.fast_forwarded && o.state.state == Summary::UpToDate)
        .count();
    let other = outcomes.len() - failed - forwarded - current;
    let mut parts = vec![format!("{current} up to date")];
    if forwarded > 0 {
        parts.push(format!("{forwarded} fast-forwarded"));
    }
    if other > 0 {
        parts.push(format!("{other} to look at (above)"));
    }
    if failed > 0 {
        parts.push(format!("{failed} failed"));
    }
    format!(
        "{} repositor{}: {}",
        outcomes.len(),
        if outcomes.len() == 1 { "y" } else { "ies" },
        parts.join(", ")
    )
}

/// Fetches, fast-forwards and publishes every repository once. Exit code 0 when every
/// repository succeeded, 1 otherwise (each failure is logged).
pub fn run(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let _guard = crate::logging::init_cli();
    let config = super::load_config(cli, args.root.as_deref(), true)?;
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let setup = crate::daemon::setup(&config)
            .await
            .map_err(|e| CliError::Failed(e.to_string()))?;
        // Another live machine under this hostname: publishing would overwrite its rows.
        let me = crate::daemon::identity::me(&config.home);
        if let Ok(records) = setup.backend.store.hosts(Some(&config.hostname)).await
            && let Some(taken) = records
                .iter()
                .find_map(|r| crate::daemon::identity::conflict(&me, r, chrono::Utc::now()))
        {
            return Err(CliError::Failed(taken));
        }
        let outcomes = setup.syncer.sync_all(&setup.repos, true).await;
        if outcomes.is_empty() {
            eprintln!(
                "gitsync: warning: no repositories under {} (check `root` and `repositories`)",
                config.root.display()
            );
        }
        let mut failed = 0;
        for outcome in &outcomes {
            if !outcome.ok {
                failed += 1;
                let why = outcome.state.error.as_deref().unwrap_or("see the log");
                eprintln!("gitsync: {}: {why}", outcome.repo);
            } else if !args.quiet
                && let Some(line) = describe(outcome)
            {
                println!("{line}");
            }
        }
        if !args.quiet && !outcomes.is_empty() {
            println!("{}", summary(&outcomes));
        }
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
