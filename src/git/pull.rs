//! The safe fast-forward: invariant 1 of DESIGN.md, in one place.
//!
//! A worktree is changed only by a fast-forward of the checked-out branch to its upstream,
//! and only when HEAD is not detached, the branch has an upstream and is strictly behind
//! it, nothing is staged, unstaged or conflicted, no merge, rebase, cherry-pick, revert or
//! bisect is in progress, and no `index.lock` exists. Untracked files are never touched:
//! git refuses the merge when one would be overwritten. In every other case the reason is
//! recorded in `pull_blocked`.

use std::path::Path;
use std::time::Duration;

use super::ops;
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

fn plural(n: u32, one: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {one}s")
    }
}

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
        Some("index.lock exists: another git command is running".to_string())
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

/// Runs a [`Decision::FastForward`] with the git binary.
///
/// Returns `Ok(())` when the branch moved, or `Err(reason)` to record in `pull_blocked`
/// (untracked files in the way, or git's own refusal).
pub async fn fast_forward(dir: &Path, target: &str, timeout: Duration) -> Result<(), String> {
    match ops::fast_forward(dir, target, timeout).await {
        Ok(()) => Ok(()),
        Err(err) => {
            let files = ops::untracked_in_the_way(&err);
            if files.is_empty() {
                Err(format!("fast-forward refused: {err}"))
            } else {
                Err(format!(
                    "untracked files would be overwritten: {}",
                    files.join(", ")
                ))
            }
        }
    }
}
