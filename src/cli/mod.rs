//! The command line: one file per subcommand, dispatched by a single `match`.
//!
//! Exit codes: 0 success, 1 failure (a repository could not be synced, the backend is
//! unreachable), 2 invalid configuration or usage.

mod aws;
mod bootstrap;
mod completions;
mod deploy;
mod doctor;
pub mod fast_forward;
mod forget;
mod generate;
mod hook;
mod hooks;
mod init;
mod lfs_agent;
mod mirror;
mod names;
mod partition;
mod post_receive;
mod progress;
mod run;
mod status;
mod stop;
mod sync;
mod webhooks;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::{self, Config, ConfigError};

/// Keeps your git workspaces in sync across all of your machines.
#[derive(Debug, Parser)]
#[command(name = "gitsync", version, about, long_about = None)]
pub struct Cli {
    /// Configuration file [default: ~/.gitsync/config.yml]
    #[arg(long, global = true, env = "GITSYNC_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground: sync at start-up, then on changes and on a timer.
    Run(run::Args),
    /// Show every host's repositories, and whether the daemon runs here.
    Status(status::Args),
    /// Stop the daemon running for this user (graceful, like SIGTERM).
    Stop,
    /// Do one full update (fetch, fast-forward, state) and exit: 0 when all succeeded.
    Sync(sync::Args),
    /// Remove rows from the shared store: repositories (of this host, or `--host H`), or
    /// every row of a host.
    Forget(forget::Args),
    /// Clone every repository another host reports and this one lacks, at the same paths
    /// under the root and on the same branches (a new machine in one command).
    Bootstrap(bootstrap::Args),
    /// Write a commented configuration file.
    Init(init::Args),
    /// Install, remove or show the pre-push hook that tells the daemon about pushes.
    Hooks(hooks::Args),
    /// Create or remove this host's AWS resources (DynamoDB table, SNS topic, SQS queue).
    Aws(aws::Args),
    /// Mirror repositories into S3 or a folder that a plain `git clone` reads over HTTP.
    Mirror(mirror::Args),
    /// Ship a repository's tree to servers over rsync+ssh: ship, verify, rollback, status.
    Deploy(deploy::Args),
    /// Webhook-triggered one-way mirrors: status, test, run.
    Webhooks(webhooks::Args),
    /// Git LFS transfer agent for clones of a mirror (set up by `git config`, see README).
    #[command(name = "lfs-agent")]
    LfsAgent(lfs_agent::Args),
    /// Partition sync through S3 or a directory: produce, consume, keygen.
    Partition(partition::Args),
    /// Check the set-up: config, git, repositories, hooks, backend, inotify, daemon, unit.
    Doctor(doctor::Args),
    /// Print the completion script for SHELL to standard output
    /// (`gitsync completions bash > ~/.local/share/bash-completion/completions/gitsync`).
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write the man page or shell completions (for packaging).
    #[command(hide = true)]
    Generate(generate::Args),
    /// What an installed git hook calls (never fails, prints nothing unless GITSYNC_LOG).
    #[command(hide = true)]
    Hook(hook::Args),
    /// The names shell completion offers (what the completion scripts call).
    #[command(hide = true)]
    Names(names::Args),
    /// The fast-forward of one worktree, in a process of its own (run by the daemon).
    #[command(hide = true, name = "fast-forward-helper")]
    FastForwardHelper(fast_forward::Args),
}

/// What kind of failure a [`CliError`] is; it decides the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The command could not do its work (exit code 1).
    Failed,
    /// The command line asks for something that cannot be done (exit code 2).
    Usage,
    /// The configuration is invalid (exit code 2).
    Config,
}

/// A failed command, in jj's shape (`CommandError { kind, error, hints }`): what kind of
/// failure it is (the exit code), the error itself with its typed source, and hints that
/// say what to do, printed after it as `hint: ...` lines.
#[derive(Debug)]
pub struct CliError {
    kind: ErrorKind,
    error: Box<dyn std::error::Error + Send + Sync>,
    hints: Vec<String>,
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for CliError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.error.as_ref())
    }
}

impl CliError {
    /// A command that could not do its work: `error` is a typed error or a message
    /// (`String`, `&str`). Exit code 1.
    pub fn failed(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> CliError {
        CliError {
            kind: ErrorKind::Failed,
            error: error.into(),
            hints: Vec::new(),
        }
    }

    /// A command line that asks for something that cannot be done. Exit code 2.
    pub fn usage(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> CliError {
        CliError {
            kind: ErrorKind::Usage,
            error: error.into(),
            hints: Vec::new(),
        }
    }

    /// The same error with one more hint: a sentence that says what to do.
    pub fn hinted(mut self, hint: impl Into<String>) -> CliError {
        self.hints.push(hint.into());
        self
    }

    /// Its kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Its hints, in the order they were added.
    pub fn hints(&self) -> &[String] {
        &self.hints
    }

    fn code(&self) -> u8 {
        match self.kind {
            ErrorKind::Config | ErrorKind::Usage => 2,
            ErrorKind::Failed => 1,
        }
    }
}

impl From<ConfigError> for CliError {
    fn from(error: ConfigError) -> CliError {
        CliError {
            kind: ErrorKind::Config,
            error: Box::new(error),
            hints: vec!["`gitsync init` writes a commented example configuration".to_string()],
        }
    }
}

/// Loads the configuration for a command. `need_root`: whether `root` must be known.
pub(crate) fn load_config(
    cli: &Cli,
    root: Option<&std::path::Path>,
    need_root: bool,
) -> Result<Config, ConfigError> {
    let file = config::default_path(cli.config.as_deref());
    let root = root.map(|r| std::path::absolute(r).unwrap_or_else(|_| r.to_path_buf()));
    let config = config::load(&file, cli.config.is_some(), root.as_deref(), need_root)?;
    // Every command may write under ~/.gitsync (a mirror's bare cache keeps its source URL,
    // credentials included): it is made private before anything goes there.
    if let Err(err) = config::private_home(&config.home) {
        tracing::warn!(home = %config.home.display(), %err, "cannot make gitsync's folder private");
    }
    Ok(config)
}

/// A closed pipe (`gitsync status | head -1`) ends a listing command quietly, as it ends
/// `ls` or `git log`, instead of a panic on the failed write. Only for commands that print
/// listings: the daemon and the hook keep SIGPIPE ignored (a closed socket must never kill
/// them).
fn quiet_on_closed_pipe() {
    // SAFETY: sets SIGPIPE's disposition to the default before any other thread exists;
    // no handler code runs.
    unsafe {
        let _ = nix::sys::signal::signal(
            nix::sys::signal::Signal::SIGPIPE,
            nix::sys::signal::SigHandler::SigDfl,
        );
    }
}

/// Parses the command line, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(
        &cli.command,
        Command::Status(_)
            | Command::Doctor(_)
            | Command::Generate(_)
            | Command::Completions { .. }
    ) || matches!(&cli.command, Command::Webhooks(a) if matches!(a.action, webhooks::Action::Status { .. }))
        || matches!(&cli.command, Command::Deploy(a) if matches!(a.action, Some(deploy::Action::Status)))
    {
        quiet_on_closed_pipe();
    }
    let result = match &cli.command {
        Command::Run(args) => run::run(&cli, args),
        Command::Status(args) => status::run(&cli, args),
        Command::Stop => stop::run(),
        Command::Sync(args) => sync::run(&cli, args),
        Command::Init(args) => init::run(&cli, args),
        Command::Forget(args) => forget::run(&cli, args),
        Command::Bootstrap(args) => bootstrap::run(&cli, args),
        Command::Hooks(args) => hooks::run(&cli, args),
        Command::Hook(args) => Ok(hook::run(args)),
        Command::Names(args) => Ok(names::run(&cli, args)),
        Command::Aws(args) => aws::run(&cli, args),
        Command::Doctor(args) => doctor::run(&cli, args),
        Command::Partition(args) => partition::run(&cli, args),
        Command::Mirror(args) => mirror::run(&cli, args),
        Command::LfsAgent(args) => Ok(lfs_agent::run(args)),
        Command::Webhooks(args) => webhooks::run(&cli, args),
        Command::Deploy(args) => deploy::run(&cli, args),
        Command::Generate(args) => generate::run(args),
        Command::Completions { shell } => {
            print!("{}", completions::script(*shell));
            Ok(ExitCode::SUCCESS)
        }
        Command::FastForwardHelper(args) => Ok(fast_forward::run(args)),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("gitsync: {err}");
            for hint in err.hints() {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(err.code())
        }
    }
}

/// The command line as completions offer it: without the hidden subcommands (`hook`,
/// `fast-forward-helper`, `generate`), which only gitsync itself and packaging call
/// (clap_complete's generators list hidden subcommands too).
pub(crate) fn public_command() -> clap::Command {
    let full = <Cli as clap::CommandFactory>::command();
    let mut public = clap::Command::new("gitsync")
        .about(full.get_about().cloned().unwrap_or_default())
        .version(env!("CARGO_PKG_VERSION"));
    for arg in full.get_arguments().filter(|a| !a.is_hide_set()) {
        public = public.arg(arg.clone());
    }
    for sub in full.get_subcommands().filter(|s| !s.is_hide_set()) {
        public = public.subcommand(sub.clone());
    }
    public
}

/// A multi-threaded tokio runtime, built after any daemonizing.
pub(crate) fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| CliError::failed(format!("cannot start the async runtime: {e}")))
}
