//! `gitsync-fast-forward`: the fast-forward helper as a program of its own, installed
//! beside `gitsync`. It does what `gitsync fast-forward-helper` does, with the same
//! arguments and the same one-line JSON outcome, but starts in a fraction of the time: the
//! full `gitsync` binary spends about 3 ms at every start relocating its 45 MB, and the
//! daemon starts a helper for every push it pulls.
//!
//! `gitsync-fast-forward --worktree DIR --branch REF --from ID --to ID`,
//! `gitsync-fast-forward --worktree DIR --wait-for-request` (the request, `REF ID ID`, comes
//! on standard input once decided), or `gitsync-fast-forward --recover --worktree DIR`.
//! Exit code 0 whatever the outcome (it is in the JSON line); 2 with a message when the
//! arguments are wrong.

#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::process::ExitCode;

use gitsync::cli::fast_forward::{Args, run};

fn main() -> ExitCode {
    let mut args = Args {
        worktree: Default::default(),
        recover: false,
        wait_for_request: false,
        branch: None,
        from: None,
        to: None,
    };
    let mut words = std::env::args_os().skip(1);
    while let Some(word) = words.next() {
        let word = word.to_string_lossy().into_owned();
        if word == "--recover" {
            args.recover = true;
            continue;
        }
        if word == "--wait-for-request" {
            args.wait_for_request = true;
            continue;
        }
        let Some(value) = words.next() else {
            eprintln!("gitsync-fast-forward: {word} needs a value");
            return ExitCode::from(2);
        };
        match word.as_str() {
            "--worktree" => args.worktree = value.into(),
            "--branch" => args.branch = Some(value.to_string_lossy().into_owned()),
            "--from" => args.from = Some(value.to_string_lossy().into_owned()),
            "--to" => args.to = Some(value.to_string_lossy().into_owned()),
            _ => {
                eprintln!(
                    "gitsync-fast-forward: unknown argument {word} (run by gitsync; see `gitsync fast-forward-helper --help`)"
                );
                return ExitCode::from(2);
            }
        }
    }
    let decided = args.branch.is_some() && args.from.is_some() && args.to.is_some();
    let undecided = args.branch.is_none() && args.from.is_none() && args.to.is_none();
    let complete = match (args.recover, args.wait_for_request) {
        (true, false) => true,
        (false, true) => undecided,
        (false, false) => decided,
        (true, true) => false,
    };
    if args.worktree.as_os_str().is_empty() || !complete {
        eprintln!(
            "gitsync-fast-forward: needs --worktree and one of --recover, --wait-for-request, or --branch, --from and --to"
        );
        return ExitCode::from(2);
    }
    run(&args)
}
