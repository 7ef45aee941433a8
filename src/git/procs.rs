//! Which git commands are running in a repository, and whether an `index.lock` is stale.
//!
//! Read from `/proc` (proc(5)): a process whose command is `git` (or a `git-*` helper) and
//! whose working folder is inside the worktree or its git folder is a git command running
//! there (`git -C DIR` changes into DIR first, so it counts too). This never signals,
//! waits for or removes anything: gitsync only reports a stale lock, with what to do.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A lock older than this, with no git process in its repository, is called stale.
pub const STALE_AFTER: Duration = Duration::from_secs(60);

/// A git command running in a repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitProcess {
    /// Its process id.
    pub pid: i32,
    /// Its command line, space-separated and cut to 60 characters (`git commit --amend`).
    pub command: String,
}

fn inside(dir: &Path, roots: &[&Path]) -> bool {
    roots.iter().any(|root| dir.starts_with(root))
}

fn canonical(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The git processes whose working folder lies inside `worktree` or `git_dir`, other than
/// this process and the git commands it started itself. Processes of other users (whose
/// `cwd` cannot be read) are not seen. Never fails: an unreadable `/proc` gives an empty
/// list.
pub fn git_running_in(worktree: &Path, git_dir: &Path) -> Vec<GitProcess> {
    let (worktree, git_dir) = (canonical(worktree), canonical(git_dir));
    let roots = [worktree.as_path(), git_dir.as_path()];
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let dir = entry.path();
        let Ok(comm) = std::fs::read_to_string(dir.join("comm")) else {
            continue;
        };
        let comm = comm.trim();
        if comm != "git" && !comm.starts_with("git-") {
            continue;
        }
        let Ok(cwd) = std::fs::read_link(dir.join("cwd")) else {
            continue;
        };
        if !inside(&cwd, &roots) || parent_of(&dir) == Some(me) {
            continue;
        }
        let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|part| !part.is_empty())
            .map(|part| String::from_utf8_lossy(part).into_owned())
            .collect();
        // A transport helper (`git-remote-https`) serves a fetch or push: not in the way.
        if comm == "git" && reads_only(&args) || comm.starts_with("git-remote-") {
            continue;
        }
        let mut command = args.join(" ");
        if command.is_empty() {
            command = comm.to_string();
        }
        if command.chars().count() > 60 {
            command = command.chars().take(57).collect::<String>() + "...";
        }
        found.push(GitProcess { pid, command });
    }
    found.sort_by_key(|p| p.pid);
    found
}

/// The parent's process id of the process whose `/proc` folder is `dir`: the fourth field
/// of `stat` (proc(5)), after the command in parentheses (which may hold spaces).
fn parent_of(dir: &Path) -> Option<i32> {
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(1)?.parse().ok()
}

/// Subcommands that never write the index, HEAD, a branch or the worktree: editors and
/// prompts run the readers all the time (`git status` every few seconds), and a fetch or an
/// automatic `gc` leaves its helpers running in the repository; none of them may hold a
/// pull back. `status` may refresh the index, but only when it gets the lock, never waiting
/// for it.
const READ_ONLY: &[&str] = &[
    "maintenance",
    "gc",
    "repack",
    "prune",
    "pack-refs",
    "commit-graph",
    "multi-pack-index",
    "index-pack",
    "unpack-objects",
    "pack-objects",
    "upload-pack",
    "fetch-pack",
    "fetch",
    "status",
    "rev-parse",
    "log",
    "diff",
    "show",
    "cat-file",
    "ls-files",
    "ls-tree",
    "for-each-ref",
    "rev-list",
    "describe",
    "blame",
    "config",
    "check-ignore",
    "check-attr",
    "merge-base",
    "name-rev",
    "shortlog",
    "grep",
    "show-ref",
    "symbolic-ref",
    "var",
    "version",
    "help",
    "diff-files",
    "diff-index",
    "diff-tree",
    "hash-object",
    "count-objects",
    "worktree",
    "remote",
    "ls-remote",
    "fsmonitor--daemon",
    "credential",
    "check-ref-format",
];

/// Whether `args` (argv of a `git` process) runs a subcommand in [`READ_ONLY`]: the first
/// argument that is not an option of git itself (`-C DIR`, `-c KEY=VALUE`, `--no-pager`...).
fn reads_only(args: &[String]) -> bool {
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "-C" | "-c" | "--git-dir" | "--work-tree" | "--namespace" | "--exec-path"
            | "--config-env" => {
                rest.next();
            }
            a if a.starts_with('-') => {}
            sub => return READ_ONLY.contains(&sub),
        }
    }
    false
}

/// What an existing lock file means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lock {
    /// No lock file.
    Free,
    /// A git command is running in the repository (or the lock is younger than
    /// [`STALE_AFTER`]): wait for it.
    Held(Option<GitProcess>),
    /// No git command runs in the repository and the lock is older than [`STALE_AFTER`]:
    /// left behind by a git that was killed. `age` is how long ago it was written.
    Stale {
        /// Time since the lock file was last modified.
        age: Duration,
    },
}

/// Tells what `git_dir/index.lock` of the worktree `worktree` is: free, held, or stale.
pub fn index_lock(worktree: &Path, git_dir: &Path) -> Lock {
    let path = git_dir.join("index.lock");
    let Ok(meta) = path.symlink_metadata() else {
        return Lock::Free;
    };
    if let Some(process) = git_running_in(worktree, git_dir).into_iter().next() {
        return Lock::Held(Some(process));
    }
    let age = meta
        .modified()
        .ok()
        .and_then(|m| SystemTime::now().duration_since(m).ok())
        .unwrap_or_default();
    if age >= STALE_AFTER {
        Lock::Stale { age }
    } else {
        Lock::Held(None)
    }
}

/// The sentence `status` shows for a lock that blocks a fast-forward, with what to do.
pub fn describe(lock: &Lock, git_dir: &Path) -> Option<String> {
    let path = git_dir.join("index.lock");
    match lock {
        Lock::Free => None,
        Lock::Held(Some(p)) => Some(format!(
            "index.lock exists: another git command is running ({}, pid {})",
            p.command, p.pid
        )),
        Lock::Held(None) => Some("index.lock exists: another git command is running".to_string()),
        Lock::Stale { age } => Some(format!(
            "index.lock is stale (left {} ago by a git that no longer runs): if no git command is running there, remove {}",
            humantime::format_duration(Duration::from_secs(age.as_secs())),
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_subcommands_are_told_apart_after_git_options() {
        let args = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        assert!(reads_only(&args(
            "git -C /x -c a=b --no-pager status --porcelain"
        )));
        assert!(reads_only(&args("git rev-parse HEAD")));
        assert!(!reads_only(&args("git -c core.editor=vi commit")));
        assert!(!reads_only(&args("git rebase -i HEAD~3")));
        assert!(!reads_only(&args("git")));
    }

    #[test]
    fn a_git_running_in_a_folder_is_seen_and_an_old_lock_alone_is_stale() {
        let dir = tempfile::tempdir().expect("tempdir");
        let git_dir = dir.path().join(".git");
        let init = std::process::Command::new("git")
            .args(["init", "-q"])
            .current_dir(dir.path())
            .status()
            .expect("git init");
        assert!(init.success());
        assert_eq!(index_lock(dir.path(), &git_dir), Lock::Free);
        let lock = git_dir.join("index.lock");
        std::fs::write(&lock, b"").expect("lock");
        assert_eq!(index_lock(dir.path(), &git_dir), Lock::Held(None));
        let old = SystemTime::now() - Duration::from_secs(7200);
        std::fs::File::options()
            .write(true)
            .open(&lock)
            .and_then(|f| f.set_modified(old))
            .expect("age the lock");
        let state = index_lock(dir.path(), &git_dir);
        assert!(matches!(state, Lock::Stale { age } if age >= Duration::from_secs(7199)));
        let text = describe(&state, &git_dir).expect("text");
        assert!(text.contains("stale") && text.contains("2h"), "{text}");

        std::fs::remove_file(&lock).expect("unlock");
        // A git process with its cwd inside: `git commit -F -` waits on its input. (Read-only
        // commands such as `git hash-object --stdin` are not counted.) Started through a
        // shell, it is somebody else's; started by this process, it is not reported.
        let commit = |through_shell: bool| {
            let git = "git -c user.name=t commit -q --allow-empty -F -";
            let mut command = if through_shell {
                let mut sh = std::process::Command::new("sh");
                sh.args(["-c", &format!("{git}; true")]);
                sh
            } else {
                let mut words = git.split(' ');
                let mut own = std::process::Command::new(words.next().expect("git"));
                own.args(words);
                own
            };
            command
                .current_dir(dir.path())
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("spawn git")
        };
        let mut child = commit(true);
        let seen = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            git_running_in(dir.path(), &git_dir)
                .iter()
                .any(|p| p.command.contains("commit"))
        });
        drop(child.stdin.take());
        let _ = child.wait();
        assert!(seen, "the running git was not found");
        assert!(git_running_in(dir.path(), &git_dir).is_empty());

        let mut own = commit(false);
        let own_pid = own.id() as i32;
        let started = (0..50).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            parent_of(Path::new(&format!("/proc/{own_pid}"))) == Some(std::process::id() as i32)
        });
        let listed = git_running_in(dir.path(), &git_dir);
        drop(own.stdin.take());
        let _ = own.wait();
        assert!(started, "the own git's parent was not read");
        assert!(listed.is_empty(), "an own child was listed: {listed:?}");
    }
}
