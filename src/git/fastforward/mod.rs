//! The fast-forward itself: moving the checked-out branch and its worktree from the commit
//! decided on to the upstream's commit, so that nothing the user has is ever lost, no
//! tracked file is ever missing, and git's `index.lock` is held no longer than
//! `git merge --ff-only` holds it.
//!
//! Modelled on how git updates a worktree (`unpack-trees.c`, `entry.c`'s `write_entry`,
//! the lockfile protocol of `lockfile.c`), with three differences that make it safer:
//!
//! 1. **Prepared outside the lock.** Under gitsync's own lock ([`locks::HelperLock`]) and
//!    with the journal ([`journal`]) already in place: HEAD must still name the branch
//!    decided on, at the commit decided on; no other worktree may have it checked out;
//!    nothing untracked or ignored may stand where the new commit puts something. Every
//!    file the fast-forward replaces or deletes is checked against the old commit
//!    ([`content`]: git's stat test where nothing can hide an edit, its *content* otherwise);
//!    index flags never decide. What changes is read in-process ([`tree`]: the ancestry and
//!    the tree diff); the new files are written into a staging folder in the git folder,
//!    in-process when no attribute or setting can change their bytes and by git's
//!    `checkout-index` otherwise ([`checkout`]), and the new index is built in memory
//!    ([`index`]: git's two-tree merge, as `read-tree -m FROM TO`).
//! 2. **Swapped in atomically.** Under `index.lock` (taken with its inode journaled first,
//!    so a kill at any instant is recoverable), each replaced file is exchanged with its new
//!    version in one `renameat2(RENAME_EXCHANGE)`: the path is never missing, and the old
//!    file (its inode, so a write through a descriptor opened before still lands in it)
//!    is held in the staging folder and checked: a save between the content check and the
//!    swap puts everything back. Deleted files are moved out, new files renamed in with
//!    `RENAME_NOREPLACE`. The branch moves by compare-and-swap (a gix ref transaction with
//!    a reflog entry; `git update-ref REF TO FROM` when no committer is configured), the new
//!    index (stat data filled in) is renamed into place, and the lock goes. `ORIG_HEAD` is set and the `post-merge` hook runs, as after `git merge`.
//! 3. **Late writes kept.** A write that reached an old file after its swap (through a
//!    descriptor opened before) is moved to `gitsync/kept/<time>/<path>`, never dropped.
//!
//! An interrupted fast-forward (the process killed at any instant) is rolled back, or
//! finished when the branch had already moved, by [`recover`] before anything else touches
//! the repository. The caller runs this in its own process (`gitsync fast-forward-helper`)
//! that ignores SIGTERM, so a stopped daemon never interrupts it.

mod apply;
mod checkout;
mod content;
mod error;
mod index;
mod journal;
mod locks;
mod tree;
pub use error::FfError;

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use super::procs;
use apply::Transaction;

/// What to fast-forward.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    /// The worktree's top folder.
    pub worktree: PathBuf,
    /// The branch decided on, as a full ref name (`refs/heads/main`).
    pub branch: String,
    /// The commit id (hex) the branch was at when the decision was made.
    pub from: String,
    /// The commit id (hex) to move it to; must contain `from`.
    pub to: String,
}

/// How a fast-forward ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The branch and worktree moved; `files` paths changed.
    Moved {
        /// Paths added, changed or deleted.
        files: usize,
        /// Saves made during the fast-forward, kept where the user can find them (paths).
        kept: Vec<String>,
    },
    /// Nothing moved (or everything was put back): why.
    Blocked {
        /// The reason, for `pull_blocked`.
        reason: String,
        /// Anything kept aside while putting things back (paths).
        kept: Vec<String>,
        /// When to try again (absent from an older helper's line: on a change).
        #[serde(default)]
        retry: Retry,
    },
}

impl Outcome {
    /// The outcome of a fast-forward refused for `refused`, with nothing kept.
    pub fn blocked(refused: impl Into<Refused>) -> Self {
        let refused = refused.into();
        Outcome::Blocked {
            reason: refused.reason,
            kept: Vec::new(),
            retry: refused.retry,
        }
    }
}

/// The reason given when the worktree changed while a fast-forward was being prepared.
pub const BEING_EDITED: &str = "not pulled: the worktree is being edited";

/// When a refused fast-forward is worth trying again, decided where the refusal is made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Retry {
    /// The cause passes by itself (a save, a git command of the user's, a lock held by a
    /// running git, another fast-forward): try again soon.
    Soon,
    /// The cause stays until something changes (local changes, a permission problem, a
    /// full disk): wait for a change.
    #[default]
    OnChange,
}

/// Why a fast-forward did not happen (its reason, for `pull_blocked`) and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The reason, in words for the status view.
    pub reason: String,
    /// When to try again.
    pub retry: Retry,
}

impl Refused {
    /// A refusal whose cause passes by itself ([`Retry::Soon`]).
    pub fn passing(reason: impl Into<String>) -> Refused {
        Refused {
            reason: reason.into(),
            retry: Retry::Soon,
        }
    }

    /// [`BEING_EDITED`], which passes by itself.
    pub fn being_edited() -> Refused {
        Refused::passing(BEING_EDITED)
    }
}

/// Any other message is a refusal that waits for a change ([`Retry::OnChange`]).
impl From<String> for Refused {
    fn from(reason: String) -> Refused {
        Refused {
            reason,
            retry: Retry::OnChange,
        }
    }
}

impl From<&str> for Refused {
    fn from(reason: &str) -> Refused {
        Refused::from(reason.to_string())
    }
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.reason)
    }
}

const GITLINK: u32 = 0o160000;

/// The folders of one worktree.
#[derive(Debug, Clone)]
pub struct Folders {
    /// The worktree's top folder.
    pub worktree: PathBuf,
    /// Its own git folder (`.git`, or `.git/worktrees/<name>` for a linked worktree).
    pub git_dir: PathBuf,
    /// The repository's common git folder.
    pub common_dir: PathBuf,
    /// Where the old and new files are staged: `gitsync/ff` in the git folder (beside the
    /// journal), or `.gitsync-ff` at the worktree's top when the git folder is on another
    /// file system (`git clone --separate-git-dir`, a linked worktree on another disk), so
    /// that every move in and out of the worktree is a `rename(2)` within one file system.
    pub files_staging: PathBuf,
}

/// The folder at the worktree's top where files are staged when the git folder is on
/// another file system; it exists only while a fast-forward runs.
pub const WORKTREE_STAGING: &str = ".gitsync-ff";

impl Folders {
    /// The folders of the worktree at `worktree`.
    ///
    /// Errors: a message when it is not a repository with a worktree.
    pub fn of(worktree: &Path) -> Result<Folders, FfError> {
        Folders::open(worktree).map(|(folders, _)| folders)
    }

    /// [`Folders::of`], with the repository opened on the way (for the fast-forward, which
    /// reads it again).
    fn open(worktree: &Path) -> Result<(Folders, gix::Repository), FfError> {
        let repo = gix::open(worktree)
            .map_err(|e| FfError::Repo(format!("cannot open repository: {e}")))?;
        let top = repo
            .workdir()
            .ok_or_else(|| FfError::Repo("the repository has no worktree".to_string()))?
            .to_path_buf();
        let worktree = std::path::absolute(top).map_err(|e| FfError::Files(e.to_string()))?;
        let git_dir =
            std::path::absolute(repo.git_dir()).map_err(|e| FfError::Files(e.to_string()))?;
        let device = |p: &Path| fs::metadata(p).ok().map(|m| m.dev());
        let files_staging = if device(&git_dir) == device(&worktree) {
            git_dir.join("gitsync/ff")
        } else {
            worktree.join(WORKTREE_STAGING)
        };
        let folders = Folders {
            worktree,
            git_dir,
            common_dir: std::path::absolute(repo.common_dir())
                .map_err(|e| FfError::Files(e.to_string()))?,
            files_staging,
        };
        Ok((folders, repo))
    }

    fn staging(&self) -> PathBuf {
        self.git_dir.join("gitsync/ff")
    }

    fn journal(&self) -> PathBuf {
        self.staging().join("journal")
    }
}

/// Whether an interrupted fast-forward (its journal, or staging files without one) waits
/// to be recovered in the worktree whose git folder is `git_dir`.
pub fn interrupted(git_dir: &Path) -> bool {
    git_dir.join("gitsync/ff").exists()
}

/// Runs the fast-forward of `request` (recovering an interrupted one first). Never panics;
/// every failure is an [`Outcome::Blocked`] with the reason, and leaves the repository as
/// it was before (or, after a recovery, wholly at one of the two commits).
pub fn run(request: &Request) -> Outcome {
    let (folders, repo) = match Folders::open(&request.worktree) {
        Ok(opened) => opened,
        Err(reason) => return Outcome::blocked(reason),
    };
    let _helper = match locks::HelperLock::take(&folders) {
        Ok(lock) => lock,
        Err(reason) => return Outcome::blocked(reason),
    };
    if let Err(reason) = recover_locked(&folders) {
        return Outcome::blocked(reason);
    }
    // The git commands running in the repository are looked for in /proc (a walk of every
    // process) on a thread of its own while the fast-forward stages its files; the answer
    // is waited for before anything the user can see changes.
    let (worktree, git_dir) = (folders.worktree.clone(), folders.git_dir.clone());
    let scan = std::thread::spawn(move || procs::git_running_in(&worktree, &git_dir));
    let running = move || -> Result<(), Refused> {
        let found = scan.join().unwrap_or_default();
        match found.first() {
            Some(p) => Err(Refused::passing(format!(
                "not now: a git command is running in this repository ({}, pid {})",
                p.command, p.pid
            ))),
            None => Ok(()),
        }
    };
    let mut tx = Transaction::new(folders);
    let outcome = match tx.attempt(&repo, request, running) {
        Ok(files) => Outcome::Moved {
            files,
            kept: Vec::new(),
        },
        Err(refused) => {
            tx.roll_back();
            Outcome::blocked(refused)
        }
    };
    let kept = tx.finish();
    match outcome {
        Outcome::Moved { files, .. } => Outcome::Moved { files, kept },
        Outcome::Blocked { reason, retry, .. } => Outcome::Blocked {
            reason,
            kept,
            retry,
        },
    }
}

/// Repairs an interrupted fast-forward of the worktree described by `folders`: rolled back
/// to the old commit, or, when the branch had already moved, finished (the new index put in
/// place). Staging files without a journal (a kill before it was written) are removed.
/// Does nothing when none was interrupted.
///
/// Errors: a message when a fast-forward is still running (its helper holds the lock) or
/// the journal cannot be read.
pub fn recover(folders: &Folders) -> Result<(), FfError> {
    if !interrupted(&folders.git_dir) {
        return Ok(());
    }
    let _helper = locks::HelperLock::take(folders).map_err(|r| FfError::Busy(r.reason))?;
    recover_locked(folders)
}

/// [`recover`], with gitsync's lock already held.
fn recover_locked(folders: &Folders) -> Result<(), FfError> {
    let staging = folders.staging();
    if !staging.exists() {
        return Ok(());
    }
    let text = fs::read_to_string(folders.journal()).unwrap_or_default();
    let journal = match journal::Journal::parse(&text) {
        Ok(journal) => journal,
        Err(_) if text.is_empty() => {
            // Killed before the journal existed: nothing of the user's was touched yet.
            if folders.files_staging != staging && folders.files_staging.exists() {
                fs::remove_dir_all(&folders.files_staging).map_err(|e| {
                    FfError::Files(format!(
                        "cannot remove {}: {e}",
                        folders.files_staging.display()
                    ))
                })?;
            }
            fs::remove_dir_all(&staging)
                .map_err(|e| FfError::Files(format!("cannot remove {}: {e}", staging.display())))?;
            return Ok(());
        }
        Err(reason) => return Err(reason),
    };
    tracing::warn!(worktree = %folders.worktree.display(), "recovering an interrupted fast-forward");
    let mut tx = Transaction::resume(folders.clone(), journal.steps.clone());
    // The branch itself says whether the compare-and-swap happened (the "ref" line may
    // not have been written after it).
    let at = gix::open(&folders.worktree)
        .ok()
        .and_then(|repo| super::remotes::ref_target(&repo, &journal.branch));
    if journal.ref_moved || (!journal.to.is_empty() && at.as_deref() == Some(&journal.to)) {
        // The branch is at the new commit and so is every file: only the index is left.
        let staged_index = staging.join("index");
        if staged_index.exists() {
            fs::rename(&staged_index, folders.git_dir.join("index"))
                .map_err(|e| FfError::Index(format!("cannot put the new index in place: {e}")))?;
        }
    } else {
        tx.roll_back();
    }
    locks::IndexLock::release_recorded(&folders.git_dir, journal.lock_ino);
    let kept = tx.finish();
    if !kept.is_empty() {
        tracing::warn!(
            ?kept,
            "saves made during the interrupted fast-forward were kept"
        );
    }
    Ok(())
}

/// One file that differs between the two commits (a line of `git diff-tree -r --raw`).
#[derive(Debug, Clone)]
struct Change {
    path: PathBuf,
    /// The old mode (0o100644, 0o100755, 0o120000, 0o160000), 0 when the file is added.
    old_mode: u32,
    /// The new mode, 0 when the file is deleted.
    new_mode: u32,
    /// The old blob id (hex), empty when the file is added.
    old_id: String,
    /// The new blob id (hex), empty when the file is deleted.
    new_id: String,
}

impl Change {
    fn moves_out(&self) -> bool {
        self.old_mode != 0 && self.old_mode != GITLINK
    }
    fn moves_in(&self) -> bool {
        self.new_mode != 0 && self.new_mode != GITLINK
    }
    fn drops_submodule(&self) -> bool {
        self.old_mode == GITLINK && self.new_mode != GITLINK
    }
    fn adds_submodule(&self) -> bool {
        self.new_mode == GITLINK && self.old_mode != GITLINK
    }
}

fn git(folders: &Folders, args: &[&str], index: Option<&Path>) -> Result<Vec<u8>, FfError> {
    git_input(folders, args, index, None)
}

fn git_input(
    folders: &Folders,
    args: &[&str],
    index: Option<&Path>,
    input: Option<&[u8]>,
) -> Result<Vec<u8>, FfError> {
    let mut command = Command::new("git");
    crate::util::child::quiet(&mut command);
    command
        .arg("-C")
        .arg(&folders.worktree)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(index) = index {
        command.env("GIT_INDEX_FILE", index);
    }
    let parent = nix::unistd::getpid();
    // SAFETY: prctl(2) and getppid(2) are async-signal-safe and touch no memory of this
    // process. A git child dies with the helper (an OOM kill, a SIGKILL), so it cannot go on
    // writing into the staging folder while the next helper recovers; one forked just as the
    // helper died sees another parent and does not start.
    unsafe {
        command.pre_exec(move || {
            if nix::libc::prctl(nix::libc::PR_SET_PDEATHSIG, nix::libc::SIGKILL) != 0
                || nix::unistd::getppid() != parent
            {
                return Err(std::io::Error::other("the fast-forward helper is gone"));
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| FfError::Git(format!("cannot run git: {e}")))?;
    let writer = match (input, child.stdin.take()) {
        (Some(input), Some(mut stdin)) => {
            let input = input.to_vec();
            // Written from a thread, so a git that writes much before reading cannot deadlock.
            Some(std::thread::spawn(move || {
                let _ = stdin.write_all(&input);
            }))
        }
        _ => None,
    };
    let out = child
        .wait_with_output()
        .map_err(|e| FfError::Git(format!("cannot run git: {e}")))?;
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    if out.status.success() {
        Ok(out.stdout)
    } else {
        let name = args.first().copied().unwrap_or("");
        Err(FfError::Git(format!(
            "git {name} failed: {}",
            crate::util::redact::redact_text(String::from_utf8_lossy(&out.stderr).trim())
        )))
    }
}

fn parent_dirs(rel: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = rel
        .ancestors()
        .skip(1)
        .filter(|p| !p.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .collect();
    out.reverse();
    out
}

fn short_branch(branch: &str) -> &str {
    branch.strip_prefix("refs/heads/").unwrap_or(branch)
}

/// The other worktree of the same repository that has `branch` (a full ref name) checked
/// out, if any; `folders` is this worktree's.
fn checked_out_elsewhere(folders: &Folders, branch: &str) -> Option<PathBuf> {
    let wanted = format!("ref: {branch}");
    let names_branch = |git_dir: &Path| {
        fs::read_to_string(git_dir.join("HEAD")).is_ok_and(|head| head.trim() == wanted)
    };
    let same = |a: &Path, b: &Path| {
        fs::canonicalize(a)
            .ok()
            .zip(fs::canonicalize(b).ok())
            .is_some_and(|(a, b)| a == b)
    };
    // The main worktree, when this one is linked and the repository is not bare.
    if !same(&folders.git_dir, &folders.common_dir)
        && folders.common_dir.join("index").exists()
        && names_branch(&folders.common_dir)
    {
        let main = if folders.common_dir.file_name() == Some(OsStr::new(".git")) {
            folders
                .common_dir
                .parent()
                .unwrap_or(&folders.common_dir)
                .to_path_buf()
        } else {
            folders.common_dir.clone()
        };
        return Some(main);
    }
    let linked = fs::read_dir(folders.common_dir.join("worktrees")).ok()?;
    for entry in linked.flatten() {
        let dir = entry.path();
        if same(&dir, &folders.git_dir) || !names_branch(&dir) {
            continue;
        }
        let at = fs::read_to_string(dir.join("gitdir"))
            .ok()
            .map(|p| PathBuf::from(p.trim()))
            .map(|p| p.parent().map(Path::to_path_buf).unwrap_or(p))
            .unwrap_or(dir);
        return Some(at);
    }
    None
}

/// Every file or symlink under `dir` that the index does not track (they would be deleted
/// when a file takes the folder's place), worktree-relative, at most 20.
fn untracked_files_under(
    dir: &Path,
    worktree: &Path,
    tracked: &dyn Fn(&Path) -> bool,
    out: &mut Vec<PathBuf>,
) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if out.len() >= 20 {
            return;
        }
        let path = entry.path();
        let rel = path.strip_prefix(worktree).unwrap_or(&path).to_path_buf();
        match entry.file_type() {
            Ok(t) if t.is_dir() => untracked_files_under(&path, worktree, tracked, out),
            _ if !tracked(&rel) => out.push(rel),
            _ => {}
        }
    }
}

/// "untracked files would be overwritten: a" / "ignored files would be overwritten: b",
/// as `git check-ignore` classes them.
fn describe_in_the_way(folders: &Folders, paths: &[PathBuf]) -> String {
    let mut list = Vec::new();
    for p in paths {
        list.extend_from_slice(p.as_os_str().as_bytes());
        list.push(0);
    }
    let ignored: Vec<PathBuf> = git_input(
        folders,
        &["check-ignore", "-z", "--stdin"],
        None,
        Some(&list),
    )
    .unwrap_or_default()
    .split(|b| *b == 0)
    .filter(|p| !p.is_empty())
    .map(|p| PathBuf::from(OsStr::from_bytes(p)))
    .collect();
    let show = |v: &[&PathBuf]| {
        v.iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let (ign, untr): (Vec<&PathBuf>, Vec<&PathBuf>) =
        paths.iter().partition(|p| ignored.contains(p));
    let mut parts = Vec::new();
    if !untr.is_empty() {
        parts.push(format!(
            "untracked files would be overwritten: {}",
            show(&untr)
        ));
    }
    if !ign.is_empty() {
        parts.push(format!(
            "ignored files would be overwritten: {}",
            show(&ign)
        ));
    }
    parts.join("; ")
}
