//! `gitsync run`: the daemon, in the foreground (for systemd or a terminal) or detached
//! with `--daemon`.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{Cli, CliError};
use crate::daemon::pidfile;

/// Arguments of `gitsync run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Folder whose repositories to keep in sync (overrides `root` in the config file;
    /// with no config file, every repository under it is discovered).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Detach from the terminal and run in the background (`gitsync stop` stops it). Logs
    /// go to ~/.gitsync/gitsync.log.YYYY-MM-DD.
    #[arg(long)]
    pub daemon: bool,
    /// How standard error carries the log: `text` for people (the default), or `json`, one
    /// object per line (for journald and log collectors). The log file stays text.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, value_name = "FORMAT")]
    pub log_format: LogFormat,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Lines for people.
    Text,
    /// One JSON object per line (tracing-subscriber's JSON format).
    Json,
}

/// Which process [`detach`] returns in.
enum Side {
    /// The command the user ran: it reports and exits.
    Parent,
    /// The daemon, in a session of its own.
    Daemon,
}

/// Detaches: forks, starts a new session, and points standard input and output at
/// /dev/null and standard error at `<home>/daemon.stderr`. Called before any thread
/// exists (no runtime, no log writer). The umask is kept, so files git writes into the
/// repositories get the user's usual permissions. Returns in both processes.
fn detach(home: &std::path::Path) -> Result<Side, CliError> {
    std::fs::create_dir_all(home)
        .map_err(|e| CliError::failed(format!("{}: {e}", home.display())))?;
    let stderr_path = home.join("daemon.stderr");
    let stderr = std::fs::File::create(&stderr_path)
        .map_err(|e| CliError::failed(format!("{}: {e}", stderr_path.display())))?;
    let mask = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    nix::sys::stat::umask(mask);
    match daemonize::Daemonize::new()
        .working_directory("/")
        .umask(mask.bits())
        .stderr(stderr)
        .execute()
    {
        daemonize::Outcome::Parent(Ok(_)) => Ok(Side::Parent),
        daemonize::Outcome::Child(Ok(_)) => Ok(Side::Daemon),
        daemonize::Outcome::Parent(Err(e)) | daemonize::Outcome::Child(Err(e)) => Err(
            CliError::failed(format!("cannot run in the background: {e}")),
        ),
    }
}

/// What `run --daemon` says once the daemon has taken the pidfile (waiting up to 10 s):
/// its pid, where it logs, and how to stop it; or, when it did not start, the last line
/// it wrote to `daemon.stderr`.
fn announce(home: &std::path::Path) -> ExitCode {
    let started = std::time::Instant::now();
    while started.elapsed() < std::time::Duration::from_secs(10) {
        if let Some(info) = pidfile::running(home).filter(|i| i.pid != 0) {
            println!("gitsync runs in the background (pid {})", info.pid);
            let today = chrono::Utc::now().format("%Y-%m-%d");
            println!(
                "  log:  {} (a new file each day)",
                home.join(format!("gitsync.log.{today}")).display()
            );
            println!("  stop: gitsync stop");
            return ExitCode::SUCCESS;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let stderr = std::fs::read_to_string(home.join("daemon.stderr")).unwrap_or_default();
    let last = stderr.lines().rfind(|l| !l.trim().is_empty());
    eprintln!(
        "gitsync: the daemon did not start{}",
        last.map(|l| format!(": {l}")).unwrap_or_default()
    );
    eprintln!(
        "hint: {} has what it wrote",
        home.join("daemon.stderr").display()
    );
    ExitCode::FAILURE
}

/// Runs the daemon until SIGTERM or SIGINT. Exit code 0 after a graceful stop; 1 when
/// another daemon runs for this user or the daemon cannot start; 2 for an invalid config.
pub fn run(cli: &Cli, args: &Args) -> Result<ExitCode, CliError> {
    let config = super::load_config(cli, args.root.as_deref(), true)?;
    if let Some(other) = pidfile::running(&config.home) {
        return Err(CliError::failed(
            pidfile::PidfileError::Running { pid: other.pid }.to_string(),
        ));
    }
    if args.daemon
        && let Side::Parent = detach(&config.home)?
    {
        return Ok(announce(&config.home));
    }
    let _pidfile = pidfile::acquire(&config.home).map_err(CliError::failed)?;
    let _guard = crate::logging::init_daemon(&config.home, args.log_format == LogFormat::Json);
    let runtime = super::runtime()?;
    let file = cli.config.clone();
    let root = args.root.clone();
    let reload: crate::daemon::Reload = Box::new(move || {
        let path = crate::config::default_path(file.as_deref());
        let root = root
            .as_deref()
            .map(|r| std::path::absolute(r).unwrap_or_else(|_| r.to_path_buf()));
        crate::config::load(&path, file.is_some(), root.as_deref(), true)
    });
    runtime
        .block_on(crate::daemon::run(config, reload))
        .map_err(CliError::failed)?;
    Ok(ExitCode::SUCCESS)
}
