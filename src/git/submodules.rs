//! Whether a repository's submodules have work of their own, which a fast-forward of the
//! superproject must never remove or bury.
//!
//! Only initialized submodules (a `.git` inside the submodule's folder) are looked into,
//! with `git status --porcelain=v2 --branch` run there (git-status(1), "Porcelain Format
//! Version 2"): modified, staged or untracked files, and a checked-out commit other than the
//! one the superproject records, each count as work, except a clean checkout at a commit
//! that an earlier commit of the superproject recorded: a pull left it behind, and it is
//! listed as `behind (recorded ID)` without blocking the next pull.

use std::path::Path;
use std::process::{Command, Stdio};

/// One line per initialized submodule with work of its own, such as
/// `lib: 1 modified, 2 untracked, at 1a2b3c4 (recorded 5d6e7f8)`. `gitlinks` are the
/// submodules the index records: (path relative to `worktree`, recorded commit id). A
/// submodule whose status cannot be read counts as work ("cannot read its status").
pub fn with_work(worktree: &Path, gitlinks: &[(String, String)]) -> Vec<String> {
    gitlinks
        .iter()
        .filter(|(path, _)| worktree.join(path).join(".git").exists())
        .filter_map(|(path, recorded)| {
            describe(worktree, path, recorded).map(|w| format!("{path}: {w}"))
        })
        .collect()
}

/// What [`with_work`] says of a clean submodule checked out at a commit that an earlier
/// commit of the superproject recorded: it was left behind by a pull (git never moves a
/// submodule on `merge` or `pull` unless `submodule.recurse` is set), not worked on.
const BEHIND: &str = "behind (recorded ";

/// Whether a line of [`with_work`] is work of the user's (which must block a pull), as
/// opposed to a submodule merely left behind by an earlier pull.
pub fn is_work(line: &str) -> bool {
    !line
        .split_once(": ")
        .is_some_and(|(_, what)| what.starts_with(BEHIND))
}

/// The paths of the submodules that lines of [`with_work`] call merely behind (a clean
/// checkout at a commit an earlier commit recorded), when the repository at `worktree`
/// sets `submodule.recurse` (git-config(1)): with it, `git pull` moves such submodules to
/// the recorded commit, and so does gitsync. Empty without it.
pub fn to_update(worktree: &Path, lines: &[String]) -> Vec<String> {
    let behind: Vec<String> = lines
        .iter()
        .filter_map(|line| {
            line.rsplit_once(&format!(": {BEHIND}"))
                .map(|(path, _)| path.to_string())
        })
        .collect();
    if behind.is_empty() {
        return behind;
    }
    let recurse = gix::open(worktree)
        .ok()
        .and_then(|repo| repo.config_snapshot().boolean("submodule.recurse"))
        .unwrap_or(false);
    if recurse { behind } else { Vec::new() }
}

/// `git -C dir ARGS`, read-only (no optional locks) and untouched by the caller's `GIT_DIR`,
/// `GIT_WORK_TREE` or `GIT_INDEX_FILE`: its standard output, or `None` when it failed.
fn read_git(dir: &Path, args: &[&str]) -> Option<String> {
    let mut command = Command::new("git");
    crate::util::child::quiet(&mut command);
    let output = command
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_OPTIONAL_LOCKS", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Whether `commit` was recorded for the submodule at `path` by one of the last 500
/// commits of the superproject's HEAD that changed it (`git log --raw`, whose lines read
/// `:160000 160000 OLD NEW M<TAB>path`).
fn recorded_earlier(worktree: &Path, path: &str, commit: &str) -> bool {
    let args = [
        "log",
        "--format=",
        "--raw",
        "--no-abbrev",
        "-n",
        "500",
        "HEAD",
        "--",
        path,
    ];
    read_git(worktree, &args).is_some_and(|text| {
        text.lines().any(|line| {
            line.split_whitespace()
                .skip(2)
                .take(2)
                .any(|id| id == commit)
        })
    })
}

fn describe(worktree: &Path, path: &str, recorded: &str) -> Option<String> {
    let status = [
        "status",
        "--porcelain=v2",
        "--branch",
        "--untracked-files=normal",
        "--ignore-submodules=none",
    ];
    let Some(text) = read_git(&worktree.join(path), &status) else {
        return Some("cannot read its status".to_string());
    };
    let (mut changed, mut untracked, mut head) = (0u32, 0u32, None);
    for line in text.lines() {
        if let Some(oid) = line.strip_prefix("# branch.oid ") {
            head = Some(oid.trim().to_string());
        } else if line.starts_with("1 ") || line.starts_with("2 ") || line.starts_with("u ") {
            changed += 1;
        } else if line.starts_with("? ") {
            untracked += 1;
        }
    }
    let mut parts = Vec::new();
    if changed > 0 {
        parts.push(format!("{changed} modified"));
    }
    if untracked > 0 {
        parts.push(format!("{untracked} untracked"));
    }
    match head.as_deref() {
        Some(head) if head == recorded => {}
        Some(head) if parts.is_empty() && recorded_earlier(worktree, path, head) => {
            return Some(format!(
                "{BEHIND}{})",
                recorded.get(..7).unwrap_or(recorded)
            ));
        }
        Some(head) => parts.push(format!(
            "at {} (recorded {})",
            head.get(..7).unwrap_or(head),
            recorded.get(..7).unwrap_or(recorded)
        )),
        None => parts.push("cannot read its HEAD".to_string()),
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}
