//! `gitsync init`: writes a commented configuration file.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{Cli, CliError};
use crate::config;

/// Arguments of `gitsync init`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The folder your repositories live under [default: ~/src].
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Replace an existing configuration file.
    #[arg(long)]
    pub force: bool,
}

/// Writes the example configuration (with `root` set) to the configuration path. Refuses
/// to replace an existing file unless `--force`; exit code 1 then.
pub fn run(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let path = config::default_path(cli.config.as_deref());
    if path.exists() && !args.force {
        return Err(
            CliError::failed(format!("{} exists already", path.display()))
                .hinted("pass --force to replace it"),
        );
    }
    let mut text = config::EXAMPLE.to_string();
    if let Some(root) = &args.root {
        let root = std::path::absolute(root).unwrap_or_else(|_| root.clone());
        let quoted =
            serde_json::to_string(&root.display().to_string()).map_err(CliError::failed)?;
        text = text.replacen("root: ~/src", &format!("root: {quoted}"), 1);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| CliError::failed(format!("cannot create {}: {e}", dir.display())))?;
    }
    std::fs::write(&path, text)
        .map_err(|e| CliError::failed(format!("cannot write {}: {e}", path.display())))?;
    println!("wrote {}", path.display());
    Ok(ExitCode::SUCCESS)
}
