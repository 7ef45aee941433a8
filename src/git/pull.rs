//! The safe fast-forward: invariant 1 of the crate documentation, in one place.
//!
//! A worktree is changed only by a fast-forward of the checked-out branch to its upstream,
//! and only when HEAD is not detached, the branch has an upstream and is strictly behind
//! it, nothing is staged, unstaged or conflicted, no merge, rebase, cherry-pick, revert or
//! bisect is in progress, no `index.lock` exists and no submodule has work of its own.
//! Untracked and ignored files are never touched. The fast-forward itself is
//! [`super::fastforward`], run in a process of its own. In every other case the reason is
//! recorded in `pull_blocked`.

use std::path::Path;
use std::time::Duration;

use super::fastforward::Outcome;
use super::state::Snapshot;
use crate::model::{Operation, Summary};

/// What to do with a repository after reading its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing to pull (up to date, or unreadable: the error is in the state).
    Nothing,
    /// Fast-forward to this commit id.
    FastForward(String),
    /// Behind or otherwise not current, and not safe or not possible: the reason.
    Blocked(String),
}

use crate::util::words::plural;

fn operation_name(op: Operation) -> Option<&'static str> {
    match op {
        Operation::None => None,
        Operation::Merge => Some("merge"),
        Operation::Rebase => Some("rebase"),
        Operation::CherryPick => Some("cherry-pick"),
        Operation::Revert => Some("revert"),
        Operation::Bisect => Some("bisect"),
    }
}

/// Decides from a snapshot, without touching anything. `enabled` is `pull.fast_forward`.
pub fn decide(snapshot: &Snapshot, enabled: bool) -> Decision {
    let s = &snapshot.state;
    let upstream = s.upstream.as_deref().unwrap_or("upstream");
    if matches!(s.state, Summary::Error | Summary::UpToDate) {
        return Decision::Nothing;
    }
    // An operation in progress first: a stopped rebase also detaches HEAD.
    if let Some(op) = operation_name(s.operation) {
        return Decision::Blocked(format!("a {op} is in progress"));
    }
    match s.state {
        Summary::Error | Summary::UpToDate | Summary::Behind => {}
        Summary::Detached => return Decision::Blocked("HEAD is detached".to_string()),
        Summary::NoUpstream if s.head.is_none() => {
            return Decision::Blocked("the branch has no commit yet".to_string());
        }
        Summary::NoUpstream => {
            let branch = s.branch.as_deref().unwrap_or("the branch");
            return Decision::Blocked(format!("{branch} has no upstream"));
        }
        Summary::UpstreamGone => {
            return Decision::Blocked(format!("upstream {upstream} is gone"));
        }
        Summary::Ahead => {
            return Decision::Blocked(format!(
                "ahead of {upstream} by {}: nothing to fast-forward",
                plural(s.ahead, "commit")
            ));
        }
        Summary::Diverged => {
            return Decision::Blocked(format!(
                "diverged from {upstream} ({} ahead, {} behind): merge or rebase by hand",
                s.ahead, s.behind
            ));
        }
    }
    let reason = if !enabled {
        Some("automatic fast-forward is off (pull.fast_forward: false)".to_string())
    } else if snapshot.index_locked {
        Some(
            snapshot
                .index_lock_note
                .clone()
                .unwrap_or_else(|| "index.lock exists: another git command is running".to_string()),
        )
    } else if let Some(work) = s
        .submodules
        .iter()
        .find(|line| super::submodules::is_work(line))
    {
        Some(format!("submodule {work}"))
    } else if s.conflicted > 0 {
        Some(format!(
            "{} in the index",
            plural(s.conflicted, "conflicted path")
        ))
    } else if s.staged > 0 {
        Some(format!(
            "{} not committed",
            plural(s.staged, "staged change")
        ))
    } else if s.unstaged > 0 {
        Some(format!(
            "{} not committed",
            plural(s.unstaged, "unstaged change")
        ))
    } else {
        None
    };
    match (reason, &snapshot.upstream_head) {
        (Some(reason), _) => Decision::Blocked(reason),
        (None, Some(target)) => Decision::FastForward(target.clone()),
        (None, None) => Decision::Blocked(format!("upstream {upstream} is gone")),
    }
}

/// Runs a [`Decision::FastForward`]: `gitsync-fast-forward` or `gitsync fast-forward-helper` (see
/// [`super::fastforward`]) in a process of its own, with its standard output in a file, so
/// that a stopped or killed caller never interrupts it. `branch` is the short name decided
/// on, `from` the commit it was at, `to` the upstream's commit. Waits up to `timeout`; a
/// helper still running then is left to finish on its own.
///
/// Returns the helper's outcome; a helper that cannot start or answer gives
/// [`Outcome::Blocked`] with the reason.
pub async fn fast_forward(
    dir: &Path,
    branch: &str,
    from: &str,
    to: &str,
    timeout: Duration,
) -> Outcome {
    let branch = format!("refs/heads/{branch}");
    let args = [
        "--worktree",
        &dir.to_string_lossy(),
        "--branch",
        &branch,
        "--from",
        from,
        "--to",
        to,
    ]
    .map(str::to_string);
    let outcome = run_helper(&args, timeout).await;
    // A helper killed in the middle (an OOM kill, a cgroup kill) answers nothing: repair its
    // work at once, so that no index.lock of its outlives it.
    if let Outcome::Blocked { reason, .. } = &outcome
        && reason.starts_with(HELPER_FAILED)
        && let Ok(folders) = super::fastforward::Folders::of(dir)
        && super::fastforward::interrupted(&folders.git_dir)
    {
        let repaired = recover(dir, timeout).await;
        tracing::warn!(dir = %dir.display(), ?repaired, "the fast-forward helper died; its work was repaired");
    }
    outcome
}

/// How a helper that answered nothing is described (it was killed, or could not run).
const HELPER_FAILED: &str = "the fast-forward failed";

/// Repairs an interrupted fast-forward of the worktree `dir` (see
/// [`super::fastforward::recover`]), through the helper as [`fast_forward`] does.
///
/// Returns the helper's outcome (`Blocked` with "recovered" when it is done).
pub async fn recover(dir: &Path, timeout: Duration) -> Outcome {
    let args = ["--recover", "--worktree", &dir.to_string_lossy()].map(str::to_string);
    run_helper(&args, timeout).await
}

/// The program that runs the helper, and the arguments that come before the helper's own:
/// `gitsync-fast-forward` beside this program when it is installed there (it starts in a
/// fraction of the time), or else this very program's `fast-forward-helper`, even when
/// its file was replaced by an upgrade meanwhile (`/proc/self/exe` still opens it).
fn helper_command() -> (std::path::PathBuf, Vec<String>) {
    let proc_exe = std::path::PathBuf::from("/proc/self/exe");
    let me = std::fs::read_link(&proc_exe)
        .ok()
        .or_else(|| std::env::current_exe().ok());
    let beside = me
        .as_ref()
        .and_then(|me| me.parent())
        .map(|dir| dir.join("gitsync-fast-forward"));
    if let Some(beside) = beside.filter(|b| is_executable(b)) {
        return (beside, Vec::new());
    }
    let own = if proc_exe.exists() {
        proc_exe
    } else {
        me.unwrap_or(proc_exe)
    };
    (own, vec!["fast-forward-helper".to_string()])
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

async fn run_helper(args: &[String], timeout: Duration) -> Outcome {
    let blocked = |reason: String| Outcome::blocked(reason);
    let out = match tempfile::NamedTempFile::new() {
        Ok(out) => out,
        Err(err) => return blocked(format!("cannot start the fast-forward: {err}")),
    };
    let (stdout, stderr) = match (out.reopen(), out.reopen()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(err), _) | (_, Err(err)) => {
            return blocked(format!("cannot start the fast-forward: {err}"));
        }
    };
    let (program, leading) = helper_command();
    let mut command = tokio::process::Command::new(program);
    command
        .args(&leading)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(false)
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(err) => return blocked(format!("cannot start the fast-forward: {err}")),
    };
    let pid = child.id().unwrap_or(0);
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => return blocked(format!("cannot wait for the fast-forward: {err}")),
        Err(_) => {
            return blocked(format!(
                "the fast-forward is still running (pid {pid}); it finishes on its own"
            ));
        }
    }
    let text = std::fs::read_to_string(out.path()).unwrap_or_default();
    let line = text
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or("");
    serde_json::from_str(line).unwrap_or_else(|_| {
        blocked(format!(
            "{HELPER_FAILED}: {}",
            crate::util::redact::redact_text(text.trim())
        ))
    })
}
