//! The fast-forward itself: moving the checked-out branch and its worktree from the commit
//! decided on to the upstream's commit, so that nothing the user has is ever lost.
//!
//! `git merge --ff-only` checks every file, then writes them all: a save between its check
//! and its write is overwritten, ignored files in the way are overwritten, and a merge that
//! is killed leaves half a tree. Here instead, under the repository's own `index.lock`:
//!
//! 1. HEAD must still name the branch decided on, at the commit decided on; no other
//!    worktree may have that branch checked out; no untracked or ignored file, and no
//!    submodule with a checkout, may stand where the new commit puts something.
//! 2. The new files are written by git (`checkout-index`, so filters, modes and symlinks are
//!    git's) into a staging folder in the git folder, and the new index is built on a copy
//!    (`read-tree -m FROM TO`, which keeps stat data and anything staged elsewhere).
//! 3. Each replaced or deleted file is *moved* out (a rename: atomic), and its stat data is
//!    compared with what it was when gix proved the worktree clean: a save in between (a new
//!    inode, a new size or time) puts everything back and the pull waits. Each new file is
//!    then renamed in with `RENAME_NOREPLACE`, so nothing that appeared meanwhile is
//!    overwritten. The window per file is one rename, and a lost save is impossible: what
//!    was moved out is either the committed content or kept in `gitsync/kept/`.
//! 4. The branch moves by compare-and-swap (`git update-ref REF TO FROM`), then the new
//!    index is renamed over the lock, as git's lockfile protocol does; `ORIG_HEAD` is set
//!    and the `post-merge` hook runs, as after `git merge`.
//!
//! Every step is journaled in `gitsync/ff/journal` inside the git folder; an interrupted
//! fast-forward (the process killed) is rolled back, or finished when the branch had
//! already moved, by [`recover`] before anything else touches the repository. The caller
//! runs this in its own process (`gitsync fast-forward-helper`) that ignores SIGTERM, so a
//! stopped or killed daemon never interrupts it.

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use gix::bstr::ByteSlice;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use serde::{Deserialize, Serialize};

use super::procs;

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
    },
}

impl Outcome {
    fn blocked(reason: impl Into<String>) -> Self {
        Outcome::Blocked {
            reason: reason.into(),
            kept: Vec::new(),
        }
    }
}

/// The reason given when the worktree changed while a fast-forward was being prepared.
pub const BEING_EDITED: &str = "not pulled: the worktree is being edited";

/// Whether `reason` (an [`Outcome::Blocked`] reason) passes by itself: a save, a git
/// command of the user's, a lock held by a running git, another fast-forward. Such a pull
/// is worth trying again soon; any other waits for a change.
pub fn is_passing(reason: &str) -> bool {
    reason == BEING_EDITED
        || reason.starts_with("not now")
        || reason.starts_with("index.lock exists")
        || reason.starts_with("a fast-forward is running")
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
}

impl Folders {
    /// The folders of the worktree at `worktree`.
    ///
    /// Errors: a message when it is not a repository with a worktree.
    pub fn of(worktree: &Path) -> Result<Folders, String> {
        let repo = gix::open(worktree).map_err(|e| format!("cannot open repository: {e}"))?;
        let top = repo
            .workdir()
            .ok_or_else(|| "the repository has no worktree".to_string())?
            .to_path_buf();
        Ok(Folders {
            worktree: std::path::absolute(top).map_err(|e| e.to_string())?,
            git_dir: std::path::absolute(repo.git_dir()).map_err(|e| e.to_string())?,
            common_dir: std::path::absolute(repo.common_dir()).map_err(|e| e.to_string())?,
        })
    }

    fn staging(&self) -> PathBuf {
        self.git_dir.join("gitsync/ff")
    }

    fn journal(&self) -> PathBuf {
        self.staging().join("journal")
    }
}

/// Whether an interrupted fast-forward waits to be recovered in the worktree whose git
/// folder is `git_dir`.
pub fn interrupted(git_dir: &Path) -> bool {
    git_dir.join("gitsync/ff/journal").exists()
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

/// Runs the fast-forward of `request` (recovering an interrupted one first). Never panics;
/// every failure is an [`Outcome::Blocked`] with the reason, and leaves the repository as
/// it was before (or, after a recovery, wholly at one of the two commits).
pub fn run(request: &Request) -> Outcome {
    let folders = match Folders::of(&request.worktree) {
        Ok(folders) => folders,
        Err(reason) => return Outcome::blocked(reason),
    };
    if let Err(reason) = recover(&folders) {
        return Outcome::blocked(reason);
    }
    if let Some(p) = procs::git_running_in(&folders.worktree, &folders.git_dir).first() {
        return Outcome::blocked(format!(
            "not now: a git command is running in this repository ({}, pid {})",
            p.command, p.pid
        ));
    }
    let mut lock = match IndexLock::take(&folders) {
        Ok(lock) => lock,
        Err(reason) => return Outcome::blocked(reason),
    };
    let mut tx = Transaction {
        folders: folders.clone(),
        journal: None,
        done: Vec::new(),
        kept: Vec::new(),
        kept_dir: None,
    };
    let outcome = match tx.attempt(request, &mut lock) {
        Ok(files) => Outcome::Moved {
            files,
            kept: tx.kept.clone(),
        },
        Err(reason) => {
            tx.roll_back();
            Outcome::Blocked {
                reason,
                kept: tx.kept.clone(),
            }
        }
    };
    tx.clean_up();
    drop(lock);
    outcome
}

/// Repairs an interrupted fast-forward of the worktree described by `folders`: rolled back
/// to the old commit, or, when the branch had already moved, finished (the new index put in
/// place). Does nothing when none was interrupted.
///
/// Errors: a message when a fast-forward is still running (its process is alive) or the
/// journal cannot be read.
pub fn recover(folders: &Folders) -> Result<(), String> {
    let path = folders.journal();
    let Ok(text) = fs::read_to_string(&path) else {
        return Ok(());
    };
    let journal = Journal::parse(&text)?;
    if journal.pid != std::process::id() as i32 && alive(journal.pid) {
        return Err(format!(
            "a fast-forward is running in this repository (pid {})",
            journal.pid
        ));
    }
    tracing::warn!(worktree = %folders.worktree.display(), "recovering an interrupted fast-forward");
    let mut tx = Transaction {
        folders: folders.clone(),
        journal: None,
        done: journal.steps.clone(),
        kept: Vec::new(),
        kept_dir: None,
    };
    let staged_index = folders.staging().join("index");
    // The branch itself says whether the compare-and-swap happened (the "ref" line may
    // not have been written after it).
    let at = git(
        folders,
        &["rev-parse", "--verify", "-q", &journal.branch],
        None,
    )
    .map(|out| String::from_utf8_lossy(&out).trim().to_string())
    .unwrap_or_default();
    if journal.ref_moved || (!journal.to.is_empty() && at == journal.to) {
        // The branch is at the new commit and so is every file: only the index is left.
        refresh_index(folders, &staged_index);
        if staged_index.exists() {
            fs::rename(&staged_index, folders.git_dir.join("index"))
                .map_err(|e| format!("cannot put the new index in place: {e}"))?;
        }
        tx.done.clear();
    } else {
        tx.roll_back();
    }
    IndexLock::release_recorded(&folders.git_dir, journal.lock_ino);
    tx.clean_up();
    Ok(())
}

fn alive(pid: i32) -> bool {
    pid > 0 && nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

/// `index.lock`, taken with `O_EXCL` exactly as git takes it, and removed on drop unless
/// the new index was renamed over it.
struct IndexLock {
    path: PathBuf,
    ino: u64,
    held: bool,
}

impl IndexLock {
    fn take(folders: &Folders) -> Result<IndexLock, String> {
        let path = folders.git_dir.join("index.lock");
        match fs::File::options().write(true).create_new(true).open(&path) {
            Ok(file) => Ok(IndexLock {
                ino: file.metadata().map(|m| m.ino()).unwrap_or(0),
                path,
                held: true,
            }),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                let state = procs::index_lock(&folders.worktree, &folders.git_dir);
                Err(procs::describe(&state, &folders.git_dir)
                    .unwrap_or_else(|| "index.lock exists: another git command is running".into()))
            }
            Err(err) => Err(format!("cannot create {}: {err}", path.display())),
        }
    }

    fn release_recorded(git_dir: &Path, ino: u64) {
        let path = git_dir.join("index.lock");
        if ino != 0 && path.symlink_metadata().is_ok_and(|m| m.ino() == ino) {
            let _ = fs::remove_file(&path);
        }
    }
}

impl Drop for IndexLock {
    fn drop(&mut self) {
        if self.held
            && self
                .path
                .symlink_metadata()
                .is_ok_and(|m| m.ino() == self.ino)
        {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// What identifies a file's content without reading it: a save changes the inode (write
/// then rename), the size (append) or the modification time (rewrite in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sig {
    ino: u64,
    size: u64,
    mtime: i128,
    kind: u32,
}

impl Sig {
    fn of(path: &Path) -> Option<Sig> {
        let m = path.symlink_metadata().ok()?;
        Some(Sig {
            ino: m.ino(),
            size: m.size(),
            mtime: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            kind: m.mode() & 0o170000,
        })
    }

    fn encode(&self) -> String {
        format!("{} {} {} {}", self.ino, self.size, self.mtime, self.kind)
    }

    fn decode(words: &[&str]) -> Option<Sig> {
        Some(Sig {
            ino: words.first()?.parse().ok()?,
            size: words.get(1)?.parse().ok()?,
            mtime: words.get(2)?.parse().ok()?,
            kind: words.get(3)?.parse().ok()?,
        })
    }
}

/// One step done to the worktree, journaled *before* it is done (so a kill between the
/// two leaves a line for a step that may not have happened, never the reverse; undoing a
/// step that did not happen does nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    /// The file at the path was moved to `old/<path>`; its signature there.
    Out(PathBuf, Sig),
    /// An emptied folder was removed.
    Rmdir(PathBuf),
    /// A folder was created.
    Mkdir(PathBuf),
    /// The new file was renamed in; its signature.
    In(PathBuf, Sig),
}

fn hex_path(path: &Path) -> String {
    hex::encode(path.as_os_str().as_bytes())
}

fn unhex_path(text: &str) -> Option<PathBuf> {
    let bytes = hex::decode(text).ok()?;
    Some(PathBuf::from(OsStr::from_bytes(&bytes)))
}

impl Step {
    fn encode(&self) -> String {
        match self {
            Step::Out(p, sig) => format!("out {} {}", hex_path(p), sig.encode()),
            Step::Rmdir(p) => format!("rmdir {}", hex_path(p)),
            Step::Mkdir(p) => format!("mkdir {}", hex_path(p)),
            Step::In(p, sig) => format!("in {} {}", hex_path(p), sig.encode()),
        }
    }

    fn decode(line: &str) -> Option<Step> {
        let words: Vec<&str> = line.split(' ').collect();
        let path = unhex_path(words.get(1)?)?;
        match *words.first()? {
            "out" => Some(Step::Out(path, Sig::decode(&words[2..])?)),
            "rmdir" => Some(Step::Rmdir(path)),
            "mkdir" => Some(Step::Mkdir(path)),
            "in" => Some(Step::In(path, Sig::decode(&words[2..])?)),
            _ => None,
        }
    }
}

/// The journal as read back by [`recover`].
struct Journal {
    pid: i32,
    lock_ino: u64,
    branch: String,
    to: String,
    steps: Vec<Step>,
    ref_moved: bool,
}

impl Journal {
    fn parse(text: &str) -> Result<Journal, String> {
        let mut journal = Journal {
            pid: 0,
            lock_ino: 0,
            branch: String::new(),
            to: String::new(),
            steps: Vec::new(),
            ref_moved: false,
        };
        for line in text.lines() {
            if let Some(pid) = line.strip_prefix("pid ") {
                journal.pid = pid.trim().parse().unwrap_or(0);
            } else if let Some(ino) = line.strip_prefix("lock ") {
                journal.lock_ino = ino.trim().parse().unwrap_or(0);
            } else if let Some(branch) = line.strip_prefix("branch ") {
                journal.branch = branch.trim().to_string();
            } else if let Some(to) = line.strip_prefix("to ") {
                journal.to = to.trim().to_string();
            } else if line == "ref" {
                journal.ref_moved = true;
            } else if let Some(step) = Step::decode(line) {
                journal.steps.push(step);
            }
        }
        if journal.pid == 0 {
            return Err("the journal of an interrupted fast-forward is unreadable".to_string());
        }
        Ok(journal)
    }
}

/// One change between the two commits (`git diff-tree -r --raw`).
#[derive(Debug, Clone)]
struct Change {
    path: PathBuf,
    old_mode: u32,
    new_mode: u32,
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

struct Transaction {
    folders: Folders,
    journal: Option<fs::File>,
    done: Vec<Step>,
    kept: Vec<String>,
    kept_dir: Option<PathBuf>,
}

fn git(folders: &Folders, args: &[&str], index: Option<&Path>) -> Result<Vec<u8>, String> {
    git_input(folders, args, index, None)
}

fn git_input(
    folders: &Folders,
    args: &[&str],
    index: Option<&Path>,
    input: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(&folders.worktree)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
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
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        let input = input.to_vec();
        // Written from a thread, so a git that writes much before reading cannot deadlock.
        std::thread::spawn(move || {
            let _ = stdin.write_all(&input);
        });
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        let name = args.first().copied().unwrap_or("");
        Err(format!(
            "git {name} failed: {}",
            crate::model::redact_text(String::from_utf8_lossy(&out.stderr).trim())
        ))
    }
}

/// Fills in the stat data of the changed entries of `index`; an exit status of 1 only means
/// "some entry needed an update", which `-q` carries on past.
fn refresh_index(folders: &Folders, index: &Path) {
    if index.exists() {
        let _ = git(folders, &["update-index", "-q", "--refresh"], Some(index));
    }
}

/// `rename(2)` that fails with `EEXIST` instead of replacing: `RENAME_NOREPLACE`, or
/// `link`+`unlink` where the file system lacks it.
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOSYS) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        Err(errno) => Err(std::io::Error::from(errno)),
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

impl Transaction {
    fn wt(&self, rel: &Path) -> PathBuf {
        self.folders.worktree.join(rel)
    }

    fn old(&self, rel: &Path) -> PathBuf {
        self.folders.staging().join("old").join(rel)
    }

    fn staged(&self, rel: &Path) -> PathBuf {
        self.folders.staging().join("new").join(rel)
    }

    fn record(&mut self, step: Step) {
        if let Some(file) = self.journal.as_mut() {
            let _ = writeln!(file, "{}", step.encode());
        }
        self.done.push(step);
    }

    fn attempt(&mut self, request: &Request, lock: &mut IndexLock) -> Result<usize, String> {
        let f = self.folders.clone();
        // 1. The branch and commit decided on, and nobody else's checkout of it.
        let head = fs::read_to_string(f.git_dir.join("HEAD")).unwrap_or_default();
        if head.trim() != format!("ref: {}", request.branch) {
            return Err("not now: HEAD changed since the decision to pull".to_string());
        }
        let at = git(&f, &["rev-parse", "--verify", "-q", &request.branch], None)?;
        if at.trim_ascii() != request.from.as_bytes() {
            return Err("not now: the branch moved since the decision to pull".to_string());
        }
        git(
            &f,
            &["merge-base", "--is-ancestor", &request.from, &request.to],
            None,
        )
        .map_err(|_| "not a fast-forward".to_string())?;
        if let Some(other) = checked_out_elsewhere(&f, &request.branch) {
            return Err(format!(
                "{} is also checked out in the worktree {}: pull there",
                short_branch(&request.branch),
                other.display()
            ));
        }

        // 2. The index as it is: no sparse checkout, and what is tracked.
        let repo = gix::open(&f.worktree).map_err(|e| format!("cannot open repository: {e}"))?;
        let index = gix::index::File::at_or_default(
            repo.index_path(),
            repo.object_hash(),
            true,
            Default::default(),
        )
        .map_err(|e| format!("cannot read index: {e}"))?;
        if index
            .entries()
            .iter()
            .any(|e| e.flags.contains(gix::index::entry::Flags::SKIP_WORKTREE))
        {
            return Err("sparse checkout: fast-forward by hand (`git pull --ff-only`)".into());
        }
        let tracked = |rel: &Path| {
            index
                .entry_by_path(rel.as_os_str().as_bytes().as_bstr())
                .is_some()
        };

        // 3. What changes.
        let raw = git(
            &f,
            &[
                "diff-tree",
                "-r",
                "-z",
                "--no-renames",
                &request.from,
                &request.to,
            ],
            None,
        )?;
        let changes = parse_raw(&raw)?;
        if changes.is_empty() {
            return Err("nothing to fast-forward".to_string());
        }
        let removed: std::collections::HashSet<&Path> = changes
            .iter()
            .filter(|c| c.old_mode != 0 && c.new_mode == 0 || c.moves_out() && !c.moves_in())
            .map(|c| c.path.as_path())
            .collect();

        // 4. Nothing of the user's in the way, ignored files included.
        let mut in_the_way = Vec::new();
        for change in changes.iter().filter(|c| c.new_mode != 0) {
            for dir in parent_dirs(&change.path) {
                if let Ok(m) = self.wt(&dir).symlink_metadata()
                    && !m.is_dir()
                    && !(tracked(&dir) && removed.contains(dir.as_path()))
                {
                    in_the_way.push(dir);
                }
            }
            if change.old_mode != 0 {
                continue;
            }
            let full = self.wt(&change.path);
            match full.symlink_metadata() {
                Err(_) => {}
                Ok(m) if m.is_dir() => {
                    if change.new_mode == GITLINK {
                        continue;
                    }
                    untracked_files_under(&full, &f.worktree, &tracked, &mut in_the_way);
                }
                Ok(_) => in_the_way.push(change.path.clone()),
            }
        }
        for change in changes.iter().filter(|c| c.drops_submodule()) {
            let full = self.wt(&change.path);
            if fs::read_dir(&full).is_ok_and(|mut d| d.next().is_some()) {
                return Err(format!(
                    "the push removes submodule {}, which is checked out here",
                    change.path.display()
                ));
            }
        }
        if !in_the_way.is_empty() {
            in_the_way.sort();
            in_the_way.dedup();
            return Err(describe_in_the_way(&f, &in_the_way));
        }

        // 5. Stage the new files and the new index, touching nothing of the user's.
        let staging = f.staging();
        if staging.exists() {
            fs::remove_dir_all(&staging)
                .map_err(|e| format!("cannot clear {}: {e}", staging.display()))?;
        }
        fs::create_dir_all(staging.join("old"))
            .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
        let same_device =
            staging.metadata().ok().map(|m| m.dev()) == f.worktree.metadata().ok().map(|m| m.dev());
        if !same_device {
            return Err(
                "the git folder is on another file system than the worktree: fast-forward by hand"
                    .into(),
            );
        }
        let new_files: Vec<&Change> = changes.iter().filter(|c| c.moves_in()).collect();
        if !new_files.is_empty() {
            let tmp_index = staging.join("to.index");
            git(&f, &["read-tree", &request.to], Some(&tmp_index))?;
            let mut list = Vec::new();
            for c in &new_files {
                list.extend_from_slice(c.path.as_os_str().as_bytes());
                list.push(0);
            }
            let prefix = format!("{}/", staging.join("new").display());
            git_input(
                &f,
                &[
                    "checkout-index",
                    "-z",
                    "--stdin",
                    "-f",
                    &format!("--prefix={prefix}"),
                ],
                Some(&tmp_index),
                Some(&list),
            )?;
        }
        let new_index = staging.join("index");
        let index_path = repo.index_path();
        if index_path.exists() {
            fs::copy(&index_path, &new_index).map_err(|e| format!("cannot copy the index: {e}"))?;
        }
        git(
            &f,
            &["read-tree", "-m", "-i", &request.from, &request.to],
            Some(&new_index),
        )
        .map_err(|e| format!("the index cannot take the fast-forward: {e}"))?;

        // 6. The worktree is clean now, and these are its files' signatures.
        let outs: Vec<&Change> = {
            let mut v: Vec<&Change> = changes.iter().filter(|c| c.moves_out()).collect();
            v.sort_by(|a, b| b.path.cmp(&a.path));
            v
        };
        let before: Vec<Option<Sig>> = outs.iter().map(|c| Sig::of(&self.wt(&c.path))).collect();
        let unstaged = super::worktree::unstaged(&repo, &index)?;
        if !unstaged.is_empty() {
            return Err(BEING_EDITED.to_string());
        }
        drop(index);
        drop(repo);

        // 7. The journal, then the worktree. The header is written aside and renamed into
        // place, so a journal that exists always names its process and lock: a kill
        // between creating it and writing it cannot leave one that `recover` cannot read.
        let header = format!(
            "gitsync fast-forward\npid {}\nlock {}\nbranch {}\nfrom {}\nto {}\n",
            std::process::id(),
            lock.ino,
            request.branch,
            request.from,
            request.to
        );
        let aside = staging.join("journal.new");
        let journal = fs::File::create(&aside)
            .and_then(|mut file| {
                file.write_all(header.as_bytes())?;
                file.sync_all()?;
                fs::rename(&aside, f.journal())?;
                Ok(file)
            })
            .map_err(|e| format!("cannot write the journal: {e}"))?;
        self.journal = Some(journal);

        let mut made = std::collections::HashSet::new();
        for (change, sig) in outs.iter().zip(before) {
            let Some(sig) = sig else {
                return Err(BEING_EDITED.to_string());
            };
            let (from, to) = (self.wt(&change.path), self.old(&change.path));
            if let Some(parent) = to.parent()
                && made.insert(parent.to_path_buf())
            {
                fs::create_dir_all(parent).map_err(|e| format!("cannot stage: {e}"))?;
            }
            self.record(Step::Out(change.path.clone(), sig));
            rename_noreplace(&from, &to).map_err(|_| BEING_EDITED.to_string())?;
            if Sig::of(&to) != Some(sig) {
                return Err(BEING_EDITED.to_string());
            }
        }
        // Folders emptied by deletions go, deepest first, as git removes them; a folder
        // that still holds something (an ignored file) stays.
        let mut emptied: Vec<PathBuf> = changes
            .iter()
            .filter(|c| c.old_mode != 0 && c.new_mode == 0 || c.drops_submodule())
            .flat_map(|c| {
                let mut dirs = parent_dirs(&c.path);
                if c.drops_submodule() {
                    dirs.push(c.path.clone());
                }
                dirs
            })
            .collect();
        emptied.sort_by(|a, b| b.cmp(a));
        emptied.dedup();
        for dir in emptied {
            let full = self.wt(&dir);
            if fs::read_dir(&full).is_ok_and(|mut d| d.next().is_none()) {
                self.record(Step::Rmdir(dir));
                let _ = fs::remove_dir(full);
            }
        }
        let mut ins: Vec<&Change> = changes
            .iter()
            .filter(|c| c.moves_in() || c.adds_submodule())
            .collect();
        ins.sort_by(|a, b| a.path.cmp(&b.path));
        for change in ins {
            let mut dirs = parent_dirs(&change.path);
            if change.adds_submodule() {
                dirs.push(change.path.clone());
            }
            for dir in dirs {
                let full = self.wt(&dir);
                match full.symlink_metadata() {
                    Ok(m) if m.is_dir() => {}
                    Ok(_) => return Err(BEING_EDITED.to_string()),
                    Err(_) => {
                        self.record(Step::Mkdir(dir));
                        fs::create_dir(&full).map_err(|_| BEING_EDITED.to_string())?;
                    }
                }
            }
            if change.moves_in() {
                let to = self.wt(&change.path);
                // An empty folder in the way goes, as git removes it.
                if to.symlink_metadata().is_ok_and(|m| m.is_dir())
                    && fs::read_dir(&to).is_ok_and(|mut d| d.next().is_none())
                {
                    self.record(Step::Rmdir(change.path.clone()));
                    let _ = fs::remove_dir(&to);
                }
                let staged = self.staged(&change.path);
                let sig = Sig::of(&staged).ok_or_else(|| "a staged file is missing".to_string())?;
                self.record(Step::In(change.path.clone(), sig));
                rename_noreplace(&staged, &to).map_err(|_| BEING_EDITED.to_string())?;
            }
        }

        // 8. A late write to a file moved out (an append through a descriptor opened
        //    before the move) is kept, never dropped.
        let outs_done: Vec<(PathBuf, Sig)> = self
            .done
            .iter()
            .filter_map(|s| match s {
                Step::Out(p, sig) => Some((p.clone(), *sig)),
                _ => None,
            })
            .collect();
        for (rel, sig) in outs_done {
            if Sig::of(&self.old(&rel)) != Some(sig) {
                self.keep(&self.old(&rel), &rel);
            }
        }

        // 9. The branch, by compare-and-swap, then the index over the lock.
        refresh_index(&f, &new_index);
        let message = format!("gitsync: fast-forward to {}", short(&request.to));
        git(
            &f,
            &[
                "update-ref",
                "-m",
                &message,
                &request.branch,
                &request.to,
                &request.from,
            ],
            None,
        )
        .map_err(|_| "not now: the branch moved during the fast-forward".to_string())?;
        if let Some(file) = self.journal.as_mut() {
            let _ = writeln!(file, "ref");
        }
        let lock_path = f.git_dir.join("index.lock");
        if fs::rename(&new_index, &lock_path).is_ok() && fs::rename(&lock_path, index_path).is_ok()
        {
            lock.held = false;
        }
        let _ = git(&f, &["update-ref", "ORIG_HEAD", &request.from], None);
        // As after `git merge` (githooks(5), post-merge; "0": not a squash merge).
        if let Err(err) = git(
            &f,
            &["hook", "run", "--ignore-missing", "post-merge", "--", "0"],
            None,
        ) {
            tracing::warn!(%err, "the post-merge hook failed");
        }
        self.done.clear();
        Ok(changes.len())
    }

    /// Moves `from` (something of the user's) to `gitsync/kept/<time>/<rel>` and lists it.
    fn keep(&mut self, from: &Path, rel: &Path) {
        let dir = self
            .kept_dir
            .get_or_insert_with(|| {
                self.folders
                    .git_dir
                    .join("gitsync/kept")
                    .join(chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ").to_string())
            })
            .clone();
        let to = dir.join(rel);
        if let Some(parent) = to.parent() {
            let _ = fs::create_dir_all(parent);
        }
        if fs::rename(from, &to).is_ok() {
            tracing::warn!(kept = %to.display(), "a save made during the fast-forward was kept");
            self.kept.push(to.display().to_string());
        }
    }

    /// Undoes the steps done, newest first, keeping anything of the user's found on the way.
    fn roll_back(&mut self) {
        let steps = std::mem::take(&mut self.done);
        for step in steps.into_iter().rev() {
            match step {
                Step::In(rel, sig) => {
                    // Ours (renamed in, or still staged) goes; anything else at the path is
                    // the user's and stays where it is.
                    let full = self.wt(&rel);
                    if Sig::of(&full) == Some(sig) {
                        let _ = fs::remove_file(&full);
                    }
                }
                Step::Mkdir(rel) => {
                    let _ = fs::remove_dir(self.wt(&rel));
                }
                Step::Rmdir(rel) => {
                    let full = self.wt(&rel);
                    if full.symlink_metadata().is_err() {
                        let _ = fs::create_dir(full);
                    }
                }
                Step::Out(rel, _) => {
                    let (old, full) = (self.old(&rel), self.wt(&rel));
                    if old.symlink_metadata().is_err() {
                        continue;
                    }
                    if let Some(parent) = full.parent() {
                        let _ = fs::create_dir_all(parent);
                    }
                    if rename_noreplace(&old, &full).is_err() {
                        // Something new is at the path already: the user's; keep both.
                        self.keep(&old, &rel);
                    }
                }
            }
        }
    }

    fn clean_up(&mut self) {
        self.journal = None;
        let staging = self.folders.staging();
        if staging.exists()
            && let Err(err) = fs::remove_dir_all(&staging)
        {
            tracing::warn!(dir = %staging.display(), %err, "cannot remove the fast-forward's staging folder");
        }
    }
}

fn short(oid: &str) -> &str {
    oid.get(..7).unwrap_or(oid)
}

fn short_branch(branch: &str) -> &str {
    branch.strip_prefix("refs/heads/").unwrap_or(branch)
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

/// Parses `git diff-tree -r -z` raw output (`git-diff-tree(1)`, "Raw output format"):
/// `:<old mode> <new mode> <old id> <new id> <status>` NUL `<path>` NUL, repeated.
fn parse_raw(raw: &[u8]) -> Result<Vec<Change>, String> {
    let mut parts = raw.split(|b| *b == 0).filter(|p| !p.is_empty());
    let mut changes = Vec::new();
    while let Some(meta) = parts.next() {
        let meta =
            std::str::from_utf8(meta).map_err(|_| "unreadable diff-tree output".to_string())?;
        let path = parts.next().ok_or("truncated diff-tree output")?;
        let fields: Vec<&str> = meta.trim_start_matches(':').split(' ').collect();
        let mode = |i: usize| {
            fields
                .get(i)
                .and_then(|m| u32::from_str_radix(m, 8).ok())
                .ok_or_else(|| format!("unreadable diff-tree line {meta:?}"))
        };
        changes.push(Change {
            path: PathBuf::from(OsStr::from_bytes(path)),
            old_mode: mode(0)?,
            new_mode: mode(1)?,
        });
    }
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_diff_lines_are_parsed_with_modes() {
        let raw = b":100644 100755 aaaa bbbb M\0bin/run\0:000000 120000 0000 cccc A\0link\0:160000 000000 dddd 0000 D\0sub\0";
        let changes = parse_raw(raw).expect("parse");
        assert_eq!(changes.len(), 3);
        assert_eq!(changes[0].path, PathBuf::from("bin/run"));
        assert!(changes[0].moves_out() && changes[0].moves_in());
        assert!(!changes[1].moves_out() && changes[1].moves_in());
        assert!(changes[2].drops_submodule() && !changes[2].moves_out());
    }

    #[test]
    fn journal_steps_round_trip_any_path_bytes() {
        let sig = Sig {
            ino: 42,
            size: 7,
            mtime: -5,
            kind: 0o100000,
        };
        let path = PathBuf::from(OsStr::from_bytes(b"we ird/\xff name"));
        for step in [
            Step::Out(path.clone(), sig),
            Step::In(path.clone(), sig),
            Step::Mkdir(path.clone()),
            Step::Rmdir(path.clone()),
        ] {
            assert_eq!(Step::decode(&step.encode()), Some(step));
        }
        let journal = Journal::parse(&format!(
            "pid 12\nlock 9\n{}\nref\n",
            Step::Mkdir(path).encode()
        ))
        .expect("parse");
        assert_eq!(
            (journal.pid, journal.lock_ino, journal.ref_moved),
            (12, 9, true)
        );
        assert_eq!(journal.steps.len(), 1);
    }

    #[test]
    fn rename_noreplace_never_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, "a").expect("write");
        fs::write(&b, "b").expect("write");
        assert!(rename_noreplace(&a, &b).is_err());
        assert_eq!(fs::read_to_string(&b).expect("read"), "b");
        fs::remove_file(&b).expect("rm");
        rename_noreplace(&a, &b).expect("rename");
        assert_eq!(fs::read_to_string(&b).expect("read"), "a");
    }
}
