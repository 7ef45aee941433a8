//! Local branches that are not checked out, fast-forwarded to their upstream with a
//! compare-and-swap ref update (`git update-ref refs/heads/B <new> <old>`): no worktree is
//! touched. A branch checked out in any worktree is left to the safe fast-forward of that
//! worktree; a branch with commits of its own is never moved; a branch the user moved
//! after the plan was made fails the compare-and-swap and stays where the user put it.

use std::collections::HashMap;
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
    /// The repository's common git folder (where every worktree's git folder is found).
    pub common: std::path::PathBuf,
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

/// Whether any local branch of `repo`, other than the one this worktree has checked out,
/// has an upstream at another commit than its own: only then is there anything for
/// [`plan`] to find. True when in doubt (the refs cannot be read).
fn others_may_be_behind(repo: &gix::Repository) -> bool {
    let head = repo.head_name().ok().flatten();
    let Ok(platform) = repo.references() else {
        return true;
    };
    let Ok(branches) = platform.local_branches() else {
        return true;
    };
    for branch in branches {
        let Ok(mut branch) = branch else {
            return true;
        };
        if head.as_ref() == Some(&branch.inner.name) {
            continue;
        }
        let Ok(id) = branch.peel_to_id() else {
            return true;
        };
        let upstream = match repo
            .branch_remote_tracking_ref_name(branch.name(), gix::remote::Direction::Fetch)
        {
            None => continue,
            Some(Ok(name)) => name,
            Some(Err(_)) => return true,
        };
        let at = super::remotes::ref_target(repo, &upstream.as_bstr().to_string());
        if at.is_some_and(|at| id != at.as_str()) {
            return true;
        }
    }
    false
}

/// Reads the local branches of the repository at `dir` and says which can move; `opened`
/// is that repository already opened, when the caller has it (its refs are read afresh).
///
/// Errors: a git command failed or timed out, as [`GitError`].
pub async fn plan(
    dir: &Path,
    opened: Option<&gix::ThreadSafeRepository>,
    timeout: Duration,
) -> Result<Plan, GitError> {
    let (path, opened) = (dir.to_path_buf(), opened.cloned());
    let needed = tokio::task::spawn_blocking(move || match opened {
        Some(opened) => others_may_be_behind(&opened.to_thread_local()),
        None => gix::open(&path).map_or(true, |repo| others_may_be_behind(&repo)),
    })
    .await
    .unwrap_or(true);
    if !needed {
        return Ok(Plan::default());
    }
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
    let common = ops::run(
        dir,
        &["rev-parse", "--path-format=absolute", "--git-common-dir"],
        timeout,
    )
    .await?;
    let mut plan = Plan {
        common: std::path::PathBuf::from(common.trim()),
        ..Plan::default()
    };
    for (name, short, id, upstream, tracking) in heads {
        let Some((ahead, behind)) = track(tracking) else {
            continue;
        };
        if behind == 0 {
            continue;
        }
        if checked_out_now(&plan.common, name) {
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

/// How long the locks are held before the branches are checked and moved.
const SETTLE: Duration = Duration::from_millis(20);

/// The `index.lock` of every worktree of a repository, held while branches move: a `git
/// checkout` (or switch, rebase, ...) in any worktree cannot start meanwhile, and one
/// that is running holds a lock itself, so nothing moves. What is held is recorded in
/// `<common>/gitsync/branch-locks` (pid, inode, path), so that locks left by a process
/// that was killed are removed by the next run, and only those.
/// A branch lock (`index.lock` of a worktree) that is taken already: a git command runs.
#[derive(Debug, thiserror::Error)]
#[error("{} exists: a git command is running", .0.display())]
struct LockTaken(std::path::PathBuf);

struct Locks {
    held: Vec<(std::path::PathBuf, u64)>,
    record: std::path::PathBuf,
}

impl Locks {
    /// Every worktree's git folder: the common one and `worktrees/*`.
    fn git_dirs(common: &Path) -> Vec<std::path::PathBuf> {
        let mut dirs = vec![common.to_path_buf()];
        if let Ok(entries) = std::fs::read_dir(common.join("worktrees")) {
            dirs.extend(
                entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|d| d.join("HEAD").exists()),
            );
        }
        dirs
    }

    /// Takes every lock, or none. Errors: the first lock that is taken already.
    fn take(common: &Path) -> Result<Locks, LockTaken> {
        use std::os::unix::fs::MetadataExt;
        let mut locks = Locks {
            held: Vec::new(),
            record: common.join("gitsync/branch-locks"),
        };
        for dir in Self::git_dirs(common) {
            let path = dir.join("index.lock");
            match std::fs::File::options()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(file) => {
                    let ino = file.metadata().map(|m| m.ino()).unwrap_or(0);
                    locks.held.push((path, ino));
                }
                Err(_) => return Err(LockTaken(path)),
            }
        }
        let text: String = locks
            .held
            .iter()
            .map(|(p, ino)| format!("{} {ino} {}\n", std::process::id(), p.display()))
            .collect();
        if let Some(parent) = locks.record.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let _ = std::fs::write(&locks.record, text);
        Ok(locks)
    }

    /// Removes the locks a killed process left (its record names a pid that is gone and
    /// the lock's inode is still the one it created).
    fn recover(common: &Path) {
        use std::os::unix::fs::MetadataExt;
        let record = common.join("gitsync/branch-locks");
        let Ok(text) = std::fs::read_to_string(&record) else {
            return;
        };
        for line in text.lines() {
            let mut parts = line.splitn(3, ' ');
            let (Some(pid), Some(ino), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let pid: i32 = pid.parse().unwrap_or(0);
            let alive =
                pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
            if alive {
                return;
            }
            let path = Path::new(path);
            if path
                .symlink_metadata()
                .is_ok_and(|m| ino.parse() == Ok(m.ino()))
            {
                tracing::warn!(lock = %path.display(), "removing an index.lock left by a killed gitsync");
                let _ = std::fs::remove_file(path);
            }
        }
        let _ = std::fs::remove_file(&record);
    }
}

impl Drop for Locks {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        for (path, ino) in &self.held {
            if path.symlink_metadata().is_ok_and(|m| m.ino() == *ino) {
                let _ = std::fs::remove_file(path);
            }
        }
        let _ = std::fs::remove_file(&self.record);
    }
}

/// Whether any worktree of the repository whose common git folder is `common` has
/// `full` (`refs/heads/B`) checked out, or is rebasing or bisecting it: read from the
/// files git keeps (`HEAD`, `rebase-merge/head-name`, `rebase-apply/head-name`,
/// `BISECT_START`), as git's own "already checked out" check does.
fn checked_out_now(common: &Path, full: &str) -> bool {
    let short = full.trim_start_matches("refs/heads/");
    Locks::git_dirs(common).iter().any(|dir| {
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
        read("HEAD").trim() == format!("ref: {full}")
            || read("rebase-merge/head-name").trim() == full
            || read("rebase-apply/head-name").trim() == full
            || read("BISECT_START").trim() == short
    })
}

/// Moves each branch of `plan.movable` with `git update-ref -m ... refs/heads/B new old`
/// (the update fails when the branch is no longer at `old`), holding every worktree's
/// `index.lock`, unless it got checked out meanwhile; a branch found checked out right
/// after its update is put back (compare-and-swap again). Returns the branches moved and,
/// for the others, why not.
pub async fn apply(
    dir: &Path,
    plan: &Plan,
    timeout: Duration,
) -> (Vec<Behind>, Vec<(Behind, String)>) {
    let (mut moved, mut refused) = (Vec::new(), Vec::new());
    if plan.movable.is_empty() {
        return (moved, refused);
    }
    let common = &plan.common;
    Locks::recover(common);
    let _locks = match Locks::take(common) {
        Ok(locks) => locks,
        Err(why) => {
            let refused = plan.movable.iter().map(|b| (b.clone(), why.to_string()));
            return (moved, refused.collect());
        }
    };
    // A checkout that wrote its worktree just before the locks were taken writes HEAD
    // right after (git writes HEAD last): give it that moment, so that the check below
    // sees it. A checkout that starts now fails on the lock and changes nothing.
    tokio::time::sleep(SETTLE).await;
    for behind in &plan.movable {
        let full = format!("refs/heads/{}", behind.branch);
        if checked_out_now(common, &full) {
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
            Ok(_) if checked_out_now(common, &full) => {
                // A checkout that had read the old commit wrote HEAD meanwhile: its
                // worktree is at the old commit, so the branch goes back there.
                let back = ops::run(
                    dir,
                    &[
                        "update-ref",
                        "-m",
                        "gitsync: put back (checked out meanwhile)",
                        &full,
                        &behind.old,
                        &behind.new,
                    ],
                    timeout,
                )
                .await;
                if let Err(err) = back {
                    tracing::warn!(branch = %behind.branch, %err, "cannot put a branch back");
                }
                refused.push((behind.clone(), "checked out meanwhile".to_string()));
            }
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
        let plan = plan(&clone, None, t).await.expect("plan");
        let names: Vec<&str> = plan.movable.iter().map(|b| b.branch.as_str()).collect();
        assert_eq!(names, ["a", "d"]);
        assert_eq!(plan.stuck, 1, "b has a commit of its own");
        // A git command holds a worktree's index.lock: nothing moves.
        let lock = clone.join(".git/index.lock");
        std::fs::write(&lock, "").expect("lock");
        let (none, all) = apply(&clone, &plan, t).await;
        assert!(none.is_empty() && all.len() == 2, "{all:?}");
        std::fs::remove_file(&lock).expect("unlock");
        // A lock left by a killed gitsync (its record names a pid that is gone) is removed.
        {
            use std::os::unix::fs::MetadataExt;
            std::fs::write(&lock, "").expect("lock");
            let ino = std::fs::metadata(&lock).expect("meta").ino();
            std::fs::create_dir_all(clone.join(".git/gitsync")).expect("mkdir");
            std::fs::write(
                clone.join(".git/gitsync/branch-locks"),
                format!("999999999 {ino} {}\n", lock.display()),
            )
            .expect("record");
        }
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
        assert!(!lock.exists(), "a lock left behind");
        assert!(!clone.join(".git/gitsync/branch-locks").exists());
        assert!(git(&clone, &["status", "--porcelain"]).is_empty());
    }
}
