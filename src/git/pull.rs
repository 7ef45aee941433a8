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
/// on, `from` the commit it was at, `to` the upstream's commit; `standby` a helper started
/// for this worktree before the decision ([`Standby::start`]), which is handed the request
/// (without one, or when it is gone, a helper is started now). Waits up to `timeout`; a
/// helper still running then is left to finish on its own.
///
/// Returns the helper's outcome; a helper that cannot start or answer gives
/// [`Outcome::Blocked`] with the reason.
pub async fn fast_forward(
    dir: &Path,
    branch: &str,
    from: &str,
    to: &str,
    standby: Option<Standby>,
    timeout: Duration,
) -> Outcome {
    let branch = format!("refs/heads/{branch}");
    let handed = match standby {
        Some(standby) => standby.hand(&branch, from, to).await,
        None => None,
    };
    let outcome = match handed {
        Some(running) => running.finish(timeout).await,
        None => {
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
            run_helper(&args, timeout).await
        }
    };
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

/// A fast-forward helper started before the decision (`--wait-for-request`), so that its
/// start (about a millisecond: a process, its loading) overlaps the fetch rather than
/// delaying the pull. It waits for its request on standard input and touches nothing
/// before: dropped unused, its input ends and it exits without a word.
pub struct Standby {
    running: Running,
    input: tokio::process::ChildStdin,
}

impl Standby {
    /// Starts a helper for the worktree `dir`.
    ///
    /// Returns `None` when it cannot be started (the fast-forward then starts its own).
    pub fn start(dir: &Path) -> Option<Standby> {
        let args = ["--worktree", &dir.to_string_lossy(), "--wait-for-request"].map(str::to_string);
        match spawn_helper(&args, std::process::Stdio::piped()) {
            Ok(mut running) => {
                let input = running.child.stdin.take()?;
                Some(Standby { running, input })
            }
            Err(err) => {
                tracing::debug!(dir = %dir.display(), %err, "cannot start a helper ahead");
                None
            }
        }
    }

    /// Hands the request (the branch's full ref name, its commit, the target commit) over.
    ///
    /// Returns the running helper, or `None` when it is gone (it could not read it).
    async fn hand(mut self, branch: &str, from: &str, to: &str) -> Option<Running> {
        use tokio::io::AsyncWriteExt;
        let line = format!("{branch} {from} {to}\n");
        match self.input.write_all(line.as_bytes()).await {
            Ok(()) => {
                drop(self.input);
                Some(self.running)
            }
            Err(err) => {
                tracing::debug!(%err, "the helper started ahead is gone; starting another");
                None
            }
        }
    }
}

/// A helper process, with the file its standard output and error go to.
struct Running {
    child: tokio::process::Child,
    out: std::fs::File,
}

impl Running {
    /// Waits up to `timeout` for the helper and reads its outcome line.
    async fn finish(mut self, timeout: Duration) -> Outcome {
        use std::io::{Read, Seek};
        let pid = self.child.id().unwrap_or(0);
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                return Outcome::blocked(format!("cannot wait for the fast-forward: {err}"));
            }
            Err(_) => {
                return Outcome::blocked(format!(
                    "the fast-forward is still running (pid {pid}); it finishes on its own"
                ));
            }
        }
        let mut text = String::new();
        let _ = self
            .out
            .rewind()
            .and_then(|()| self.out.read_to_string(&mut text));
        let line = text
            .lines()
            .rev()
            .find(|l| l.starts_with('{'))
            .unwrap_or("");
        serde_json::from_str(line).unwrap_or_else(|_| {
            Outcome::blocked(format!(
                "{HELPER_FAILED}: {}",
                crate::util::redact::redact_text(text.trim())
            ))
        })
    }
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
    match spawn_helper(args, std::process::Stdio::null()) {
        Ok(running) => running.finish(timeout).await,
        Err(err) => Outcome::blocked(format!("cannot start the fast-forward: {err}")),
    }
}

/// Starts the helper with `args` and `stdin`; its standard output and error go to one
/// unnamed temporary file (never a pipe: a caller that is gone must not make its last
/// write fail), in a process group of its own (a Ctrl-C of the caller's terminal does not
/// reach it).
///
/// Errors: the temporary file or the process cannot be made.
fn spawn_helper(args: &[String], stdin: std::process::Stdio) -> std::io::Result<Running> {
    let out = tempfile::tempfile()?;
    let (stdout, stderr) = (out.try_clone()?, out.try_clone()?);
    let (program, leading) = helper_command();
    let mut command = tokio::process::Command::new(program);
    command
        .args(&leading)
        .args(args)
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr)
        .kill_on_drop(false)
        .process_group(0);
    Ok(Running {
        child: command.spawn()?,
        out,
    })
}
