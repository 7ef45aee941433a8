//! `gitsync fast-forward-helper` (hidden): the fast-forward of one worktree, run by the
//! daemon and by `gitsync sync` as a process of its own so that it always finishes.
//!
//! It ignores SIGTERM, SIGINT and SIGHUP (a stopping daemon, a Ctrl-C, a closed terminal),
//! writes its outcome as one JSON line (`crate::git::fastforward::Outcome`) to standard
//! output, which the caller points at a file, never a pipe, and exits 0.

use std::path::PathBuf;
use std::process::ExitCode;

use nix::sys::signal::{SigHandler, Signal, signal};

use crate::git::fastforward::{self, Folders, Outcome, Request};

/// Arguments of `gitsync fast-forward-helper`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The worktree's top folder.
    #[arg(long)]
    pub worktree: PathBuf,
    /// Only repair an interrupted fast-forward.
    #[arg(long)]
    pub recover: bool,
    /// The branch decided on (`refs/heads/main`).
    #[arg(long, required_unless_present = "recover")]
    pub branch: Option<String>,
    /// The commit the branch was at when the decision was made.
    #[arg(long, required_unless_present = "recover")]
    pub from: Option<String>,
    /// The commit to move it to.
    #[arg(long, required_unless_present = "recover")]
    pub to: Option<String>,
}

/// Runs the fast-forward (or the recovery) and prints its outcome. Always exit code 0: the
/// outcome says what happened.
pub fn run(args: &Args) -> ExitCode {
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: installing SIG_IGN runs no handler code; nothing else in this process
        // has installed handlers yet (no runtime is built).
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    let outcome = match (&args.branch, &args.from, &args.to) {
        (Some(branch), Some(from), Some(to)) if !args.recover => fastforward::run(&Request {
            worktree: args.worktree.clone(),
            branch: branch.clone(),
            from: from.clone(),
            to: to.clone(),
        }),
        _ => match Folders::of(&args.worktree).and_then(|f| fastforward::recover(&f)) {
            Ok(()) => Outcome::blocked("recovered"),
            Err(reason) => Outcome::blocked(reason),
        },
    };
    match serde_json::to_string(&outcome) {
        Ok(line) => println!("{line}"),
        Err(err) => eprintln!("gitsync: cannot write the outcome: {err}"),
    }
    ExitCode::SUCCESS
}
