//! `gitsync fast-forward-helper` (hidden): the fast-forward of one worktree, run by the
//! daemon and by `gitsync sync` as a process of its own so that it always finishes.
//!
//! With `--wait-for-request` it is started before the decision (while the fetch runs), so
//! that its start is not on the way of the pull, and reads the request from standard input:
//! it does nothing at all when the input ends without one.
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
    /// Start now, and read the request (`<branch> <from> <to>`, one line) from standard
    /// input once the caller has decided; end of input without one means nothing to do.
    #[arg(long, conflicts_with_all = ["recover", "branch", "from", "to"])]
    pub wait_for_request: bool,
    /// The branch decided on (`refs/heads/main`).
    #[arg(long, required_unless_present_any = ["recover", "wait_for_request"])]
    pub branch: Option<String>,
    /// The commit the branch was at when the decision was made.
    #[arg(long, required_unless_present_any = ["recover", "wait_for_request"])]
    pub from: Option<String>,
    /// The commit to move it to.
    #[arg(long, required_unless_present_any = ["recover", "wait_for_request"])]
    pub to: Option<String>,
}

/// Reads a request from `input` as `--wait-for-request` takes it: `<branch> <from> <to>`
/// on one line, or nothing at all.
///
/// Returns `Ok(None)` for an empty input (the caller decided on no fast-forward, or is
/// gone), else `Ok(Some([branch, from, to]))`; errors: a message for anything else.
pub fn read_request(mut input: impl std::io::Read) -> Result<Option<[String; 3]>, String> {
    let mut text = String::new();
    input
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read the request: {e}"))?;
    let words: Vec<&str> = text.split_whitespace().collect();
    match words.as_slice() {
        [] => Ok(None),
        [branch, from, to] => Ok(Some([branch, from, to].map(|w| w.to_string()))),
        _ => Err(format!(
            "malformed request {:?}: expected `<branch> <from> <to>`",
            text.trim()
        )),
    }
}

/// Runs the fast-forward (or the recovery) and prints its outcome. Always exit code 0: the
/// outcome says what happened.
pub fn run(args: &Args) -> ExitCode {
    for sig in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        // SAFETY: installing SIG_IGN runs no handler code; nothing else in this process
        // has installed handlers yet (no runtime is built).
        let _ = unsafe { signal(sig, SigHandler::SigIgn) };
    }
    // The request: from the arguments, or, started ahead, from standard input.
    let request = if args.wait_for_request {
        match read_request(std::io::stdin().lock()) {
            // Nothing decided: no outcome, nothing touched.
            Ok(None) => return ExitCode::SUCCESS,
            Ok(Some(request)) => Some(request),
            Err(reason) => {
                print_outcome(&Outcome::blocked(reason));
                return ExitCode::SUCCESS;
            }
        }
    } else {
        match (&args.branch, &args.from, &args.to) {
            (Some(branch), Some(from), Some(to)) => Some([branch, from, to].map(|w| w.to_string())),
            _ => None,
        }
    };
    let outcome = match request {
        Some([branch, from, to]) if !args.recover => fastforward::run(&Request {
            worktree: args.worktree.clone(),
            branch,
            from,
            to,
        }),
        _ => match Folders::of(&args.worktree).and_then(|f| fastforward::recover(&f)) {
            Ok(()) => Outcome::blocked("recovered"),
            Err(reason) => Outcome::blocked(reason),
        },
    };
    print_outcome(&outcome);
    ExitCode::SUCCESS
}

fn print_outcome(outcome: &Outcome) {
    match serde_json::to_string(outcome) {
        Ok(line) => println!("{line}"),
        Err(err) => eprintln!("gitsync: cannot write the outcome: {err}"),
    }
}
