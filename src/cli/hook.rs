//! `gitsync hook pre-push <remote> <url>`: what the installed pre-push hook calls.
//!
//! It reads git's ref lines from standard input, hands them to the daemon over its Unix
//! socket (or, when no daemon listens, to the spool) and returns. It never fails a push:
//! every failure of its own exits 0, and it prints nothing unless `GITSYNC_LOG` is set. It
//! reads no config, starts no async runtime and opens no repository, to stay within a few
//! milliseconds.

use std::io::Read;
use std::process::ExitCode;
use std::time::Duration;

use crate::daemon::handoff::{self, Notice};

/// How long the hand-off may wait for the daemon's socket.
const SEND_TIMEOUT: Duration = Duration::from_millis(200);

/// Arguments of `gitsync hook`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Which hook git ran.
    #[command(subcommand)]
    pub hook: Hook,
}

/// The hooks gitsync handles.
#[derive(Debug, clap::Subcommand)]
pub enum Hook {
    /// Hand a push to the daemon (arguments as git gives them to pre-push, githooks(5)).
    PrePush {
        /// The remote's name (or the URL, when the push named a URL).
        remote: String,
        /// The URL pushed to.
        url: String,
    },
    /// Publish the ref updates a bare repository received (what the `post-receive` hook
    /// of `gitsync hooks install --server` runs, detached from the push).
    PostReceive(super::post_receive::Args),
}

fn say(message: std::fmt::Arguments<'_>) {
    if std::env::var_os("GITSYNC_LOG").is_some() {
        eprintln!("gitsync hook: {message}");
    }
}

/// Runs the hook. Always exit code 0.
pub fn run(args: &Args) -> ExitCode {
    let (remote, url) = match &args.hook {
        Hook::PrePush { remote, url } => (remote, url),
        Hook::PostReceive(args) => {
            let _guard = crate::logging::init_cli();
            return super::post_receive::run(args);
        }
    };
    let mut input = String::new();
    // Invalid UTF-8 or a read error leaves what was read; bad lines are skipped anyway.
    let _ = std::io::stdin()
        .take(handoff::MAX_NOTICE)
        .read_to_string(&mut input);
    let updates = handoff::parse_updates(&input);
    if updates.is_empty() {
        say(format_args!("nothing to hand over"));
        return ExitCode::SUCCESS;
    }
    let notice = Notice {
        cwd: std::env::current_dir().unwrap_or_default(),
        remote: remote.clone(),
        url: url.clone(),
        push_pid: std::env::var("GITSYNC_PUSH_PID")
            .ok()
            .and_then(|p| p.parse().ok()),
        updates,
    };
    // The installing daemon's folder, baked into the hook; else this HOME's.
    let home = std::env::var_os("GITSYNC_HOME")
        .filter(|h| !h.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(crate::config::gitsync_home);
    match handoff::send(&handoff::socket_path(&home), &notice, SEND_TIMEOUT) {
        Ok(()) => say(format_args!("handed to the daemon")),
        Err(err) => match handoff::spool(&home, &notice) {
            Ok(path) => say(format_args!(
                "daemon not reachable ({err}); spooled as {}",
                path.display()
            )),
            Err(spool_err) => say(format_args!(
                "daemon not reachable ({err}) and cannot spool ({spool_err})"
            )),
        },
    }
    ExitCode::SUCCESS
}
