//! `gitsync forget`: remove rows from the shared store (a repository deleted or moved, a
//! machine retired), on the local and the AWS backend.

use std::process::ExitCode;

use super::{Cli, CliError};

/// Arguments of `gitsync forget`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Repository names (as `gitsync status` shows them) to forget; none with `--host`:
    /// every row of that host.
    #[arg(value_name = "REPO")]
    pub repos: Vec<String>,
    /// The host whose rows to forget [default: this machine's hostname].
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// Forget a host that is online too (its daemon publishes its rows again at its next
    /// heartbeat).
    #[arg(long)]
    pub force: bool,
}

/// Removes the rows. Exit code 0 when done (a row that was not there is said so), 1 when
/// the store cannot be written, 2 for usage.
pub fn run(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let _guard = crate::logging::init_cli();
    if args.repos.is_empty() && args.host.is_none() {
        return Err(CliError::usage(
            "name the repositories to forget (`gitsync forget work/api`), or a host (`gitsync forget --host old-laptop`)"
                .to_string(),
        ));
    }
    let config = super::load_config(cli, None, false)?;
    let host = args.host.clone().unwrap_or_else(|| config.hostname.clone());
    let runtime = super::runtime()?;
    runtime.block_on(async {
        let store = crate::backend::open_store(&config)
            .await
            .map_err(|e| {
                CliError::failed(format!("cannot open the store: {e}"))
                    .hinted("`gitsync doctor` checks the backend and says what to do")
            })?;
        if args.repos.is_empty() {
            let now = chrono::Utc::now();
            let live = store
                .hosts(Some(&host))
                .await
                .map_err(|e| CliError::failed(format!("cannot read host {host}: {e}")))?
                .into_iter()
                .find(|h| h.offline_for(now).is_none());
            if let Some(live) = live.filter(|_| !args.force) {
                return Err(CliError::usage(format!(
                    "host {host} is online (heartbeat {} s ago): its daemon would publish its rows again",
                    (now - live.last_seen).num_seconds().max(0)
                ))
                .hinted(format!(
                    "stop gitsync on {host} first (`gitsync stop`), or pass --force"
                )));
            }
            let n = store
                .forget(&host, None)
                .await
                .map_err(|e| CliError::failed(format!("cannot forget host {host}: {e}")))?;
            println!(
                "{host}: {n} row{} forgotten, and its heartbeat",
                if n == 1 { "" } else { "s" }
            );
        } else {
            for repo in &args.repos {
                let n = store
                    .forget(&host, Some(repo))
                    .await
                    .map_err(|e| CliError::failed(format!("cannot forget {repo}: {e}")))?;
                if n == 0 {
                    println!("{repo} ({host}): not in the store");
                } else {
                    println!("{repo} ({host}): forgotten");
                }
            }
        }
        if host == config.hostname && crate::daemon::pidfile::running(&config.home).is_some() {
            println!(
                "note: the daemon runs here; a repository it still syncs comes back at its next update"
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
