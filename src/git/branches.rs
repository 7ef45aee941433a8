//! Local branches that are not checked out, fast-forwarded to their upstream with a
//! compare-and-swap ref update (`git update-ref refs/heads/B <new> <old>`): no worktree is
//! touched. A branch checked out in any worktree is left to the safe fast-forward of that
//! worktree; a branch with commits of its own is never moved; a branch the user moved
//! after the plan was made fails the compare-and-swap and stays where the user put it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use super::ops::{self, GitError};

/// A branch strictly behind its upstream, not checked out anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Behind {
    /// Short name, such as `release`.
    pub branch: String,
    /// Its commit now (hex).
    pub old: String,
    /// Its upstream's commit (hex).
    pub new: String,
    /// Commits it is behind.
    pub commits: u32,
}

/// What the branches that are not checked out look like.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Branches that can be fast-forwarded.
    pub movable: Vec<Behind>,
    /// Branches behind their upstream that are not moved: checked out in a worktree, or
    /// with commits of their own (diverged).
    pub stuck: u32,
}

/// `behind N` / `ahead N, behind M` / `gone` / empty, as `%(upstream:track,nobracket)`
/// prints it (git-for-each-ref(1)): (ahead, behind), or `None` for `gone` or nothing.
fn track(text: &str) -> Option<(u32, u32)> {
    if text.is_empty() || text == "gone" {
        return None;
    }
    let (mut ahead, mut behind) = (0, 0);
    for part in text.split(", ") {
        match part.split_once(' ') {
            Some(("ahead", n)) => ahead = n.parse().ok()?,
            Some(("behind", n)) => behind = n.parse().ok()?,
            _ => return None,
        }
    }
    Some((ahead, behind))
}

/// Every branch checked out in some worktree of the repository (`git worktree list
/// --porcelain`, full ref names).
async fn checked_out(dir: &Path, timeout: Duration) -> Result<HashSet<String>, GitError> {
    let out = ops::run(dir, &["worktree", "list", "--porcelain"], timeout).await?;
    Ok(out
        .lines()
        .filter_map(|l| l.strip_prefix("branch "))
        .map(str::to_string)
        .collect())
}

/// Reads the local branches of the repository at `dir` and says which can move.
///
/// Errors: a git command failed or timed out, as [`GitError`].
pub async fn plan(dir: &Path, timeout: Duration) -> Result<Plan, GitError> {
    let out = ops::run(
        dir,
        &[
            "for-each-ref",
            "--format=%(refname)%00%(objectname)%00%(upstream)%00%(upstream:track,nobracket)",
            "refs/heads",
            "refs/remotes",
        ],
        timeout,
    )
    .await?;
    let mut ids: HashMap<&str, &str> = HashMap::new();
    let mut heads = Vec::new();
    for line in out.lines() {
        let mut fields = line.split('\0');
        let (Some(name), Some(id), Some(upstream), Some(tracking)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        ids.insert(name, id);
        if let Some(short) = name.strip_prefix("refs/heads/") {
            heads.push((name, short, id, upstream, tracking));
        }
    }
    let busy = checked_out(dir, timeout).await?;
    let mut plan = Plan::default();
    for (name, short, id, upstream, tracking) in heads {
        let Some((ahead, behind)) = track(tracking) else {
            continue;
        };
        if behind == 0 {
            continue;
        }
        if busy.contains(name) {
            // The checked-out branch of this worktree is the row's own `behind`; others
            // are their worktrees' business.
            continue;
        }
        match ids.get(upstream) {
            Some(new) if ahead == 0 => plan.movable.push(Behind {
                branch: short.to_string(),
                old: id.to_string(),
                new: new.to_string(),
                commits: behind,
            }),
            _ => plan.stuck += 1,
        }
    }
    Ok(plan)
}

/// Moves each branch of `plan.movable` with `git update-ref -m ... refs/heads/B new old`
/// (the update fails when the branch is no longer at `old`), unless it got checked out
/// meanwhile. Returns the branches moved and, for the others, why not.
pub async fn apply(
    dir: &Path,
    plan: &Plan,
    timeout: Duration,
) -> (Vec<Behind>, Vec<(Behind, String)>) {
    let (mut moved, mut refused) = (Vec::new(), Vec::new());
    if plan.movable.is_empty() {
        return (moved, refused);
    }
    let busy = match checked_out(dir, timeout).await {
        Ok(busy) => busy,
        Err(err) => {
            let why = err.to_string();
            return (
                moved,
                plan.movable
                    .iter()
                    .map(|b| (b.clone(), why.clone()))
                    .collect(),
            );
        }
    };
    for behind in &plan.movable {
        let full = format!("refs/heads/{}", behind.branch);
        if busy.contains(&full) {
            refused.push((behind.clone(), "checked out meanwhile".to_string()));
            continue;
        }
        let message = format!(
            "gitsync: fast-forward {} ({} commit{}, not checked out)",
            behind.branch,
            behind.commits,
            if behind.commits == 1 { "" } else { "s" }
        );
        match ops::run(
            dir,
            &[
                "update-ref",
                "-m",
                &message,
                &full,
                &behind.new,
                &behind.old,
            ],
            timeout,
        )
        .await
        {
            Ok(_) => moved.push(behind.clone()),
            Err(err) => refused.push((behind.clone(), err.to_string())),
        }
    }
    (moved, refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .output()
            .expect("git");
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn track_reads_what_git_prints() {
        assert_eq!(track("behind 3"), Some((0, 3)));
        assert_eq!(track("ahead 1, behind 2"), Some((1, 2)));
        assert_eq!(track("gone"), None);
        assert_eq!(track(""), None);
    }

    /// A remote with branches a, b, c, d moved on; a clone tracking all four where `b` has
    /// a commit of its own, `c` is checked out in a linked worktree and `d` is moved by
    /// the user between the plan and the update.
    #[tokio::test]
    async fn only_branches_strictly_behind_and_free_move() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        let (remote, clone) = (root.join("remote"), root.join("clone"));
        std::fs::create_dir_all(&remote).expect("mkdir");
        git(&remote, &["init", "-q", "-b", "main"]);
        git(&remote, &["commit", "-q", "--allow-empty", "-m", "one"]);
        for b in ["a", "b", "c", "d"] {
            git(&remote, &["branch", b]);
        }
        git(
            root,
            &["clone", "-q", remote.to_str().expect("utf8"), "clone"],
        );
        for b in ["a", "b", "c", "d"] {
            git(&clone, &["branch", "--track", b, &format!("origin/{b}")]);
        }
        for b in ["a", "b", "c", "d"] {
            git(&remote, &["checkout", "-q", b]);
            git(
                &remote,
                &["commit", "-q", "--allow-empty", "-m", &format!("{b} moves")],
            );
        }
        git(&clone, &["fetch", "-q"]);
        git(&clone, &["checkout", "-q", "b"]);
        git(&clone, &["commit", "-q", "--allow-empty", "-m", "mine"]);
        git(&clone, &["checkout", "-q", "main"]);
        git(&clone, &["worktree", "add", "-q", "../linked", "c"]);
        let files_before = std::fs::read_dir(&clone).expect("ls").count();
        let t = Duration::from_secs(30);
        let plan = plan(&clone, t).await.expect("plan");
        let names: Vec<&str> = plan.movable.iter().map(|b| b.branch.as_str()).collect();
        assert_eq!(names, ["a", "d"]);
        assert_eq!(plan.stuck, 1, "b has a commit of its own");
        // The user moves d meanwhile: the compare-and-swap fails.
        git(&clone, &["branch", "-f", "d", "origin/a"]);
        let d_now = git(&clone, &["rev-parse", "d"]);
        let (moved, refused) = apply(&clone, &plan, t).await;
        assert_eq!(moved.len(), 1);
        assert_eq!(moved[0].branch, "a");
        assert_eq!(
            git(&clone, &["rev-parse", "a"]),
            git(&clone, &["rev-parse", "origin/a"])
        );
        assert_eq!(refused.len(), 1);
        assert_eq!(
            git(&clone, &["rev-parse", "d"]),
            d_now,
            "the user's move stays"
        );
        assert_ne!(
            git(&clone, &["rev-parse", "c"]),
            git(&clone, &["rev-parse", "origin/c"])
        );
        assert_eq!(std::fs::read_dir(&clone).expect("ls").count(), files_before);
        assert!(git(&clone, &["status", "--porcelain"]).is_empty());
    }
}
