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

/// Fetches, fast-forwards and publishes every repository once. Exit code 0 when every
/// repository succeeded, 1 otherwise (each failure is logged).
pub fn run(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let _guard = crate::logging::init_cli();
    let config = super::load_config(cli, args.root.as_deref(), true)?;
    // One thread drives the syncs (their reads and the fast-forward's wait run on blocking
    // threads): a runtime of worker threads only adds their start to a one-shot command.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))?;
    let outcome = runtime.block_on(async {
        let setup = crate::daemon::setup(&config)
            .await
            .map_err(CliError::failed)?;
        // Another live machine under this hostname: publishing would overwrite its rows.
        let me = crate::daemon::identity::me(&config.home);
        if let Ok(records) = setup.backend.store.hosts(Some(&config.hostname)).await
            && let Some(taken) = records
                .iter()
                .find_map(|r| crate::daemon::identity::conflict(&me, r, chrono::Utc::now()))
        {
            return Err(CliError::failed(taken));
        }
        // This process ends after one sync of each repository: git's auto maintenance is
        // left to finish on its own, as `git fetch` leaves the maintenance it detaches.
        setup.syncer.set_maintenance_detached(true);
        // Run to pull: each fetch has the fast-forward helper started while it runs.
        setup.syncer.set_helper_ahead(true);
        let progress = super::progress::Progress::new(setup.repos.len() as u64, "syncing");
        let outcomes = setup
            .syncer
            .sync_all_reporting(&setup.repos, true, &|o| progress.step(&o.repo))
            .await;
        progress.finish();
        if outcomes.is_empty() && !config.keeps_no_repositories() {
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
                && let Some(line) = crate::daemon::report::describe(outcome)
            {
                println!("{line}");
            }
        }
        if !args.quiet && !outcomes.is_empty() {
            println!("{}", crate::daemon::report::summary(&outcomes));
        }
        Ok(if failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    });
    // Every sync was awaited: the runtime's idle threads are left to the process's exit
    // rather than woken and joined one by one.
    runtime.shutdown_background();
    outcome
}
