//! `gitsync run`: the daemon in the foreground.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{Cli, CliError};

/// Arguments of `gitsync run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder whose repositories to keep in sync (overrides `root` in the config file;
    /// with no config file, every repository under it is discovered).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

/// Runs the daemon until SIGTERM or SIGINT. Exit code 0 after a graceful stop.
pub fn run(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let config = super::load_config(cli, args.root.as_deref(), true)?;
    let _guard = crate::logging::init_daemon(&config.home);
    let runtime = super::runtime()?;
    runtime
        .block_on(crate::daemon::run(config))
        .map_err(|e| CliError::Failed(e.to_string()))?;
    Ok(ExitCode::SUCCESS)
}
