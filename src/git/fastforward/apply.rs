//! One fast-forward as a transaction: prepared outside `index.lock`, swapped in under it
//! step by journaled step, and rolled back, finished or cleaned up so that the worktree is
//! wholly at one of the two commits and nothing of the user's is dropped.
//!
//! What the steps are and why is in the parent module's documentation; this module must
//! not decide whether to pull (that is `git::pull`), only carry out a decided fast-forward.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use gix::bstr::ByteSlice;
use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
use nix::unistd::AccessFlags;

use super::FfError;
use super::content::{self, Verdict};
use super::journal::{Sig, Step, Writer};
use super::locks::IndexLock;
use super::{
    Change, Folders, GITLINK, Refused, Request, checked_out_elsewhere, describe_in_the_way, git,
    git_input, parent_dirs, short_branch, untracked_files_under,
};
use super::{checkout, index, tree};
use crate::util::words::short_id;

/// How many steps of what comes in are journaled in one write.
const JOURNAL_BATCH: usize = 512;

pub(super) struct Transaction {
    folders: Folders,
    journal: Option<Writer>,
    lock: Option<IndexLock>,
    done: Vec<Step>,
    kept: Vec<String>,
    kept_dir: Option<PathBuf>,
    /// The raw blob id of each file checked clean, by path, for the late look at racy ones.
    raw_ids: HashMap<PathBuf, String>,
    /// When the content check began (nanoseconds since the epoch).
    checked_at: i128,
}

/// The reason for an I/O failure on the worktree path `rel`: a permission problem or a
/// full disk names the path and waits for a change; anything else is a save in the way.
fn io_reason(rel: &Path, err: &std::io::Error) -> Refused {
    use nix::errno::Errno;
    match err.raw_os_error().map(Errno::from_raw) {
        Some(errno @ (Errno::EACCES | Errno::EPERM | Errno::EROFS)) => format!(
            "cannot write {}: {} (check the permissions of it and its folder)",
            rel.display(),
            errno.desc()
        )
        .into(),
        Some(Errno::ENOSPC | Errno::EDQUOT) => format!(
            "cannot write {}: no space left on the device",
            rel.display()
        )
        .into(),
        _ => Refused::being_edited(),
    }
}

/// Refuses, naming the folder, when a folder the fast-forward writes in (each changed
/// path's folder, or the nearest one of its parents that exists) cannot be written:
/// `access(2)` with `W_OK | X_OK` answers `EACCES` for mode bits, `EPERM` for an immutable
/// folder (`chattr +i`, even for root) and `EROFS` for a read-only mount. Checked before
/// anything moves, so such a refusal leaves every file untouched, its change time included.
fn writable(worktree: &Path, changes: &[Change]) -> Result<(), Refused> {
    let mut seen: HashSet<PathBuf> = HashSet::new();
    for change in changes {
        let mut dir = change.path.parent().map(Path::to_path_buf);
        while let Some(rel) = dir {
            if !seen.insert(rel.clone()) {
                break;
            }
            let full = worktree.join(&rel);
            if full.symlink_metadata().is_ok_and(|m| m.is_dir()) {
                nix::unistd::access(&full, AccessFlags::W_OK | AccessFlags::X_OK).map_err(
                    |errno| {
                        let shown = if rel.as_os_str().is_empty() {
                            Path::new(".")
                        } else {
                            rel.as_path()
                        };
                        io_reason(shown, &std::io::Error::from(errno))
                    },
                )?;
                break;
            }
            dir = rel.parent().map(Path::to_path_buf);
        }
    }
    Ok(())
}

/// `rename(2)` that fails with `EEXIST` instead of replacing: `RENAME_NOREPLACE`, or
/// `link`+`unlink` where the file system lacks it.
pub(super) fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    match renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOSYS) => {
            fs::hard_link(from, to)?;
            fs::remove_file(from)
        }
        Err(errno) => Err(std::io::Error::from(errno)),
    }
}

/// Exchanges `a` and `b` atomically (`renameat2(RENAME_EXCHANGE)`); `EINVAL` where the
/// file system cannot.
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    renameat2(AT_FDCWD, a, AT_FDCWD, b, RenameFlags::RENAME_EXCHANGE).map_err(std::io::Error::from)
}

impl Transaction {
    pub fn new(folders: Folders) -> Transaction {
        Transaction {
            folders,
            journal: None,
            lock: None,
            done: Vec::new(),
            kept: Vec::new(),
            kept_dir: None,
            raw_ids: HashMap::new(),
            checked_at: content::now_ns(),
        }
    }

    /// The transaction of an interrupted fast-forward whose journal lists `steps`.
    pub fn resume(folders: Folders, steps: Vec<Step>) -> Transaction {
        let mut tx = Transaction::new(folders);
        tx.done = steps;
        tx
    }

    fn wt(&self, rel: &Path) -> PathBuf {
        self.folders.worktree.join(rel)
    }

    fn old(&self, rel: &Path) -> PathBuf {
        self.folders.files_staging.join("old").join(rel)
    }

    fn staged(&self, rel: &Path) -> PathBuf {
        self.folders.files_staging.join("new").join(rel)
    }

    /// Journals `step` (before it is done); a journal that cannot be written stops the
    /// fast-forward before the step.
    fn record(&mut self, step: Step) -> Result<(), FfError> {
        self.record_all(std::slice::from_ref(&step))
    }

    /// Journals `steps` in one write, in order, before any of them is done.
    fn record_all(&mut self, steps: &[Step]) -> Result<(), FfError> {
        if let Some(journal) = self.journal.as_mut() {
            let lines: Vec<String> = steps.iter().map(Step::encode).collect();
            journal.lines(&lines)?;
        }
        self.done.extend_from_slice(steps);
        Ok(())
    }

    /// HEAD names `request.branch` and the branch is at `request.from`.
    fn head_is_as_decided(&self, repo: &gix::Repository, request: &Request) -> Result<(), Refused> {
        let head = fs::read_to_string(self.folders.git_dir.join("HEAD")).unwrap_or_default();
        if head.trim() != format!("ref: {}", request.branch) {
            return Err(Refused::passing(
                "not now: HEAD changed since the decision to pull",
            ));
        }
        let at = crate::git::remotes::ref_target(repo, &request.branch);
        if at.as_deref() != Some(request.from.as_str()) {
            return Err(Refused::passing(
                "not now: the branch moved since the decision to pull",
            ));
        }
        Ok(())
    }

    /// Moves the branch by compare-and-swap, with a reflog entry, and journals it: in-process,
    /// or through `git update-ref REF TO FROM` where gix cannot (no committer identity for
    /// the reflog).
    fn move_ref(&mut self, repo: &gix::Repository, request: &Request) -> Result<(), Refused> {
        use gix::refs::transaction::{Change as Edit, LogChange, PreviousValue, RefEdit, RefLog};
        let moved_meanwhile =
            || Refused::passing("not now: the branch moved during the fast-forward");
        let message = format!("gitsync: fast-forward to {}", short_id(&request.to));
        let edit = RefEdit {
            change: Edit::Update {
                log: LogChange {
                    mode: RefLog::AndReference,
                    force_create_reflog: false,
                    message: message.as_str().into(),
                },
                expected: PreviousValue::MustExistAndMatch(gix::refs::Target::Object(tree::oid(
                    &request.from,
                )?)),
                new: gix::refs::Target::Object(tree::oid(&request.to)?),
            },
            name: request
                .branch
                .as_str()
                .try_into()
                .map_err(|_| FfError::Repo(format!("not a branch name: {}", request.branch)))?,
            deref: false,
        };
        let (name, email) = committer(repo);
        let time = chrono::Local::now();
        let time = format!("{} {}", time.timestamp(), time.format("%z"));
        let moved = match (&name, &email) {
            (Some(name), Some(email)) => repo
                .edit_references_as(
                    Some(edit),
                    Some(gix::actor::SignatureRef {
                        name: name.as_bstr(),
                        email: email.as_bstr(),
                        time: &time,
                    }),
                )
                .map(drop)
                .map_err(|e| FfError::Repo(e.to_string())),
            _ => Err(FfError::Repo("no committer identity".to_string())),
        };
        if let Err(err) = moved {
            if crate::git::remotes::ref_target(repo, &request.branch).as_deref()
                != Some(request.from.as_str())
            {
                return Err(moved_meanwhile());
            }
            tracing::debug!(%err, "moving the branch through git");
            git(
                &self.folders,
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
            .map_err(|_| moved_meanwhile())?;
        }
        if let Some(journal) = self.journal.as_mut() {
            let _ = journal.line("ref");
        }
        Ok(())
    }

    /// What `git merge` does after a fast-forward: `ORIG_HEAD` names the old commit and the
    /// `post-merge` hook runs (githooks(5); "0": not a squash merge).
    fn after_merge(&self, repo: &gix::Repository, request: &Request) {
        let orig = self.folders.git_dir.join("ORIG_HEAD");
        let aside = self.folders.git_dir.join("ORIG_HEAD.gitsync");
        if fs::write(&aside, format!("{}\n", request.from))
            .and_then(|()| fs::rename(&aside, &orig))
            .is_err()
        {
            let _ = fs::remove_file(&aside);
        }
        let hooks = repo
            .config_snapshot()
            .trusted_path("core.hooksPath")
            .ok()
            .flatten()
            .map(|p| self.folders.worktree.join(p))
            .unwrap_or_else(|| self.folders.common_dir.join("hooks"));
        let hook = hooks.join("post-merge");
        let runnable = hook
            .metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
        if runnable
            && let Err(err) = git(
                &self.folders,
                &["hook", "run", "--ignore-missing", "post-merge", "--", "0"],
                None,
            )
        {
            tracing::warn!(%err, "the post-merge hook failed");
        }
    }

    /// Carries out the fast-forward of `request`; returns how many paths changed.
    ///
    /// Errors: the reason it did not happen; the caller then calls [`Self::roll_back`].
    ///
    /// `no_git_running` is called once, before the index is locked or anything in the
    /// worktree or the branch changes: its refusal ends the attempt (see
    /// [`super::procs::git_running_in`]).
    pub fn attempt(
        &mut self,
        repo: &gix::Repository,
        request: &Request,
        no_git_running: impl FnOnce() -> Result<(), Refused>,
    ) -> Result<usize, Refused> {
        let f = self.folders.clone();
        let staging = f.staging();
        for folder in [&staging, &f.files_staging] {
            if folder.exists() {
                fs::remove_dir_all(folder).map_err(|e| {
                    FfError::Files(format!("cannot clear {}: {e}", folder.display()))
                })?;
            }
        }
        // The git folder's part first: while it exists, a recovery looks for the rest.
        fs::create_dir_all(&staging)
            .map_err(|e| FfError::Files(format!("cannot create {}: {e}", staging.display())))?;
        let files = &f.files_staging;
        fs::create_dir_all(files.join("old"))
            .and_then(|()| fs::create_dir_all(files.join("new")))
            .map_err(|e| match files.strip_prefix(&f.worktree) {
                Ok(rel) => io_reason(rel, &e),
                Err(_) => format!("cannot create {}: {e}", files.display()).into(),
            })?;
        // The journal first, so that a kill from here on is recovered.
        let header = format!(
            "gitsync fast-forward\npid {}\nbranch {}\nfrom {}\nto {}\n",
            std::process::id(),
            request.branch,
            request.from,
            request.to
        );
        self.journal = Some(Writer::create(&f.journal(), &header)?);

        // 1. The branch and commit decided on, and nobody else's checkout of it.
        self.head_is_as_decided(repo, request)?;
        if !tree::is_ancestor(repo, &request.from, &request.to)? {
            return Err("not a fast-forward".into());
        }
        if let Some(other) = checked_out_elsewhere(&f, &request.branch) {
            return Err(format!(
                "{} is also checked out in the worktree {}: pull there",
                short_branch(&request.branch),
                other.display()
            )
            .into());
        }

        // 2. What changes.
        let (changes, trees) = tree::changes(repo, &request.from, &request.to)?;
        if changes.is_empty() {
            // A push that changes no file (an empty commit, a commit and its revert): the
            // branch moves, the index and the worktree stay as they are.
            no_git_running()?;
            self.move_ref(repo, request)?;
            self.after_merge(repo, request);
            return Ok(0);
        }

        // 3. The index as it is: no sparse checkout, and what is tracked.
        let index_path = repo.index_path();
        let index_sig = Sig::of(&index_path);
        let index = read_index(&index_path)?;
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
        let removed: HashSet<&Path> = changes
            .iter()
            .filter(|c| c.moves_out() && !c.moves_in())
            .map(|c| c.path.as_path())
            .collect();

        // 4. Nothing of the user's in the way, ignored files included.
        let mut in_the_way = Vec::new();
        let mut seen: HashSet<PathBuf> = HashSet::new();
        for change in changes.iter().filter(|c| c.new_mode != 0) {
            for dir in parent_dirs(&change.path) {
                if !seen.insert(dir.clone()) {
                    continue;
                }
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
                )
                .into());
            }
        }
        if !in_the_way.is_empty() {
            in_the_way.sort();
            in_the_way.dedup();
            return Err(describe_in_the_way(&f, &in_the_way).into());
        }

        // Every folder written in can be written, before anything moves.
        writable(&f.worktree, &changes)?;

        // 5. Every file that moves out holds the old commit's content, by content.
        let outs: Vec<&Change> = changes.iter().filter(|c| c.moves_out()).collect();
        let trust_mode = repo
            .config_snapshot()
            .boolean("core.fileMode")
            .unwrap_or(true);
        self.checked_at = content::now_ns();
        let checked = match content::check(&f, &outs, trust_mode, &index, self.checked_at)? {
            Verdict::Clean(sigs) => sigs,
            Verdict::Changed(paths) => {
                let shown: Vec<String> = paths
                    .iter()
                    .take(5)
                    .map(|p| p.display().to_string())
                    .collect();
                let more = paths.len().saturating_sub(shown.len());
                return Err(format!(
                    "local changes would be overwritten: {}{}",
                    shown.join(", "),
                    if more > 0 {
                        format!(" and {more} more")
                    } else {
                        String::new()
                    }
                )
                .into());
            }
        };
        let mut sig_of: HashMap<PathBuf, Sig> = HashMap::with_capacity(outs.len());
        for (change, (sig, raw_id)) in outs.iter().zip(checked) {
            sig_of.insert(change.path.clone(), sig);
            self.raw_ids.insert(change.path.clone(), raw_id);
        }

        // 6. The new files (on the worktree's file system) and the new index, staged.
        // The index after the fast-forward, in memory: stat data and anything staged elsewhere
        // stay (a split index was made whole when it was read).
        let mut new_index = index.clone();
        index::two_way(repo, &mut new_index, &changes, trees)?;
        let ins: Vec<&Change> = changes.iter().filter(|c| c.moves_in()).collect();
        let mut staged_sigs = HashMap::new();
        if checkout::is_plain(repo, &f, &index, &changes) {
            staged_sigs = checkout::write_blobs(repo, &f.files_staging.join("new"), &ins)?;
        } else if !ins.is_empty() {
            // Filters or conversions apply: git writes the files.
            let for_git = staging.join("index");
            index::write(&new_index, &for_git)?;
            let mut list = Vec::new();
            for c in &ins {
                list.extend_from_slice(c.path.as_os_str().as_bytes());
                list.push(0);
            }
            let prefix = format!("{}/", f.files_staging.join("new").display());
            git_input(
                &f,
                &[
                    "checkout-index",
                    "-z",
                    "--stdin",
                    "-f",
                    &format!("--prefix={prefix}"),
                ],
                Some(&for_git),
                Some(&list),
            )?;
        }
        drop(index);

        // 7. Under index.lock: nothing moved meanwhile, then the swap.
        no_git_running()?;
        let candidate = staging.join("lock");
        let journal = self
            .journal
            .as_mut()
            .ok_or_else(|| "the journal is not open".to_string())?;
        self.lock = Some(IndexLock::take(&f, &candidate, journal)?);
        if Sig::of(&index_path) != index_sig {
            // A git command of the user's wrote the index meanwhile (a refresh, a stage):
            // the new index is built again from it, under the lock, as git would.
            new_index = read_index(&index_path)?;
            index::two_way(repo, &mut new_index, &changes, trees)?;
        }
        self.head_is_as_decided(repo, request)?;
        self.swap_in(&changes, &sig_of, &staged_sigs)?;

        // 8. The index's stat data, the branch, the index.
        index::fill_stat(&mut new_index, &f.worktree, &ins)?;
        let staged_index = staging.join("index");
        index::write(&new_index, &staged_index)?;
        self.move_ref(repo, request)?;
        fs::rename(&staged_index, &index_path)
            .map_err(|e| FfError::Index(format!("cannot put the new index in place: {e}")))?;
        self.lock = None;
        self.after_merge(repo, request);
        Ok(changes.len())
    }

    /// Moves out what goes, removes emptied folders, and swaps or renames in what comes,
    /// each step journaled first. `staged_sigs` holds the signature of each staged file
    /// known from its writing (a file missing there is looked at).
    ///
    /// What comes in is journaled [`JOURNAL_BATCH`] steps at a time, in one write, before
    /// any of them is done: undoing a journaled step that did not happen does nothing.
    fn swap_in(
        &mut self,
        changes: &[Change],
        sig_of: &HashMap<PathBuf, Sig>,
        staged_sigs: &HashMap<PathBuf, Sig>,
    ) -> Result<(), Refused> {
        let mut gone: Vec<&Change> = changes
            .iter()
            .filter(|c| c.moves_out() && !c.moves_in())
            .collect();
        gone.sort_by(|a, b| b.path.cmp(&a.path));
        let mut made = HashSet::new();
        for change in gone {
            let sig = *sig_of.get(&change.path).ok_or_else(Refused::being_edited)?;
            self.move_out(&change.path, sig, &mut made)?;
        }
        // Folders emptied by deletions go, deepest first, as git removes them; a folder
        // that still holds something (an ignored file) stays.
        let mut emptied: Vec<PathBuf> = changes
            .iter()
            .filter(|c| c.moves_out() && !c.moves_in() || c.drops_submodule())
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
                self.record(Step::Rmdir(dir))?;
                let _ = fs::remove_dir(full);
            }
        }
        let mut ins: Vec<&Change> = changes
            .iter()
            .filter(|c| c.moves_in() || c.adds_submodule())
            .collect();
        ins.sort_by(|a, b| a.path.cmp(&b.path));
        // Folders found (or made) on the way, looked at once each.
        let mut folders: HashSet<PathBuf> = HashSet::new();
        for batch in ins.chunks(JOURNAL_BATCH) {
            let mut steps = Vec::with_capacity(batch.len());
            for change in batch {
                let mut dirs = parent_dirs(&change.path);
                if change.adds_submodule() {
                    dirs.push(change.path.clone());
                }
                for dir in dirs {
                    if !folders.insert(dir.clone()) {
                        continue;
                    }
                    match self.wt(&dir).symlink_metadata() {
                        Ok(m) if m.is_dir() => {}
                        Ok(_) => return Err(Refused::being_edited()),
                        Err(_) => steps.push(Step::Mkdir(dir)),
                    }
                }
                if !change.moves_in() {
                    continue;
                }
                let (staged, to) = (self.staged(&change.path), self.wt(&change.path));
                let new_sig = staged_sigs
                    .get(&change.path)
                    .copied()
                    .or_else(|| Sig::of(&staged))
                    .ok_or_else(|| "a staged file is missing".to_string())?;
                if change.moves_out() {
                    let old_sig = *sig_of.get(&change.path).ok_or_else(Refused::being_edited)?;
                    steps.push(Step::Swap(change.path.clone(), old_sig, new_sig));
                    continue;
                }
                if to.symlink_metadata().is_ok_and(|m| m.is_dir())
                    && fs::read_dir(&to).is_ok_and(|mut d| d.next().is_none())
                {
                    // An empty folder in the way goes, as git removes it.
                    steps.push(Step::Rmdir(change.path.clone()));
                }
                steps.push(Step::In(change.path.clone(), new_sig));
            }
            self.record_all(&steps)?;
            for step in steps {
                self.take_in(step, &mut made)?;
            }
        }
        Ok(())
    }

    /// Does one journaled step of what comes in (see [`Self::swap_in`]).
    fn take_in(&mut self, step: Step, made: &mut HashSet<PathBuf>) -> Result<(), Refused> {
        match step {
            Step::Mkdir(dir) => fs::create_dir(self.wt(&dir)).map_err(|e| io_reason(&dir, &e)),
            Step::Rmdir(rel) => fs::remove_dir(self.wt(&rel)).map_err(|e| io_reason(&rel, &e)),
            Step::In(rel, _) => rename_noreplace(&self.staged(&rel), &self.wt(&rel))
                .map_err(|e| io_reason(&rel, &e)),
            Step::Swap(rel, old_sig, new_sig) => {
                let (staged, to) = (self.staged(&rel), self.wt(&rel));
                match exchange(&staged, &to) {
                    Ok(()) if Sig::of(&staged) == Some(old_sig) => Ok(()),
                    Ok(()) => Err(Refused::being_edited()),
                    Err(err) if err.raw_os_error() == Some(nix::libc::EINVAL) => {
                        // No RENAME_EXCHANGE here: out, then in.
                        self.move_out(&rel, old_sig, made)?;
                        self.record(Step::In(rel.clone(), new_sig))?;
                        rename_noreplace(&staged, &to).map_err(|e| io_reason(&rel, &e))
                    }
                    Err(err) => Err(io_reason(&rel, &err)),
                }
            }
            Step::Out(rel, sig) => self.move_out(&rel, sig, made),
        }
    }

    /// Moves the file at `rel` (checked clean with signature `sig`) to `old/<rel>`.
    fn move_out(
        &mut self,
        rel: &Path,
        sig: Sig,
        made: &mut HashSet<PathBuf>,
    ) -> Result<(), Refused> {
        let (from, to) = (self.wt(rel), self.old(rel));
        if let Some(parent) = to.parent()
            && made.insert(parent.to_path_buf())
        {
            fs::create_dir_all(parent).map_err(|e| FfError::Files(format!("cannot stage: {e}")))?;
        }
        self.record(Step::Out(rel.to_path_buf(), sig))?;
        rename_noreplace(&from, &to).map_err(|e| io_reason(rel, &e))?;
        if Sig::of(&to) != Some(sig) {
            return Err(Refused::being_edited());
        }
        Ok(())
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

    /// Whether the old file held at `held` for `rel` was written after it was checked (its
    /// signature differs, or, for a file modified just before, its bytes do).
    fn written_since(&self, held: &Path, rel: &Path, sig: Sig) -> bool {
        let Some(now) = Sig::of(held) else {
            return false;
        };
        if now != sig {
            return true;
        }
        if sig.mtime + content::racy_window(sig.mtime) < self.checked_at || sig.kind != 0o100000 {
            return false;
        }
        match (self.raw_ids.get(rel), fs::read(held)) {
            (Some(id), Ok(bytes)) => content::blob_id(&bytes) != *id,
            _ => false,
        }
    }

    /// Undoes the steps done, newest first, keeping anything of the user's found on the way.
    pub fn roll_back(&mut self) {
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
                Step::Swap(rel, old_sig, new_sig) => {
                    let (slot, full) = (self.staged(&rel), self.wt(&rel));
                    let at_path = Sig::of(&full);
                    let in_slot = Sig::of(&slot);
                    if at_path.is_some_and(|s| s.ino == new_sig.ino)
                        && in_slot.is_some_and(|s| s.ino != new_sig.ino)
                    {
                        // Swapped: swap back. A write into the new file meanwhile is kept.
                        if exchange(&slot, &full).is_ok() && Sig::of(&slot) != Some(new_sig) {
                            self.keep(&slot, &rel);
                        }
                    } else if in_slot.is_some_and(|s| s.ino != new_sig.ino) {
                        // Swapped, then the user put a file of their own at the path: theirs
                        // stays; the old file is kept if it was written since.
                        if self.written_since(&slot, &rel, old_sig) {
                            self.keep(&slot, &rel);
                        }
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

    /// Looks at each old file in `held` (where it waits, its path, its signature when
    /// checked) one last time: removes it when nothing was written to it since, and returns
    /// those written to, to be kept. Many files are looked at by several threads at once
    /// (see [`checkout::workers`]).
    fn drop_unwritten(&self, held: &[(PathBuf, &Path, Sig)]) -> Vec<(PathBuf, PathBuf)> {
        let look = |part: &[(PathBuf, &Path, Sig)]| -> Vec<(PathBuf, PathBuf)> {
            let mut written = Vec::new();
            for (at, rel, sig) in part {
                if self.written_since(at, rel, *sig) {
                    written.push((at.clone(), rel.to_path_buf()));
                } else {
                    let _ = fs::remove_file(at);
                }
            }
            written
        };
        crate::util::parts::in_parts(held, checkout::workers(held.len()), |_, part| look(part))
            .into_iter()
            // A thread that failed looked at nothing it did not report: its part is looked
            // at again here.
            .flat_map(|(_, part, written)| written.unwrap_or_else(|_| look(part)))
            .collect()
    }

    /// Ends the transaction: keeps every old file written after it was checked (a write
    /// through a descriptor opened before the fast-forward), releases `index.lock` if still
    /// held, and removes the staging folder, the journal last. Returns what was kept.
    pub fn finish(&mut self) -> Vec<String> {
        let steps = std::mem::take(&mut self.done);
        let held: Vec<(PathBuf, &Path, Sig)> = steps
            .iter()
            .filter_map(|step| match step {
                Step::Swap(rel, sig, _) => Some((self.staged(rel), rel.as_path(), *sig)),
                Step::Out(rel, sig) => Some((self.old(rel), rel.as_path(), *sig)),
                _ => None,
            })
            .collect();
        for (held, rel) in self.drop_unwritten(&held) {
            self.keep(&held, &rel);
        }
        self.lock = None;
        self.journal = None;
        let staging = self.folders.staging();
        if self.folders.files_staging != staging
            && self.folders.files_staging.exists()
            && let Err(err) = fs::remove_dir_all(&self.folders.files_staging)
        {
            tracing::warn!(path = %self.folders.files_staging.display(), %err, "cannot remove the staging folder of the fast-forward");
        }
        if let Ok(entries) = fs::read_dir(&staging) {
            for entry in entries.flatten() {
                if entry.file_name() == "journal" {
                    continue;
                }
                let path = entry.path();
                let gone = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    fs::remove_dir_all(&path)
                } else {
                    fs::remove_file(&path)
                };
                if let Err(err) = gone {
                    tracing::warn!(path = %path.display(), %err, "cannot remove a staging file of the fast-forward");
                }
            }
        }
        let _ = fs::remove_file(staging.join("journal"));
        let _ = fs::remove_dir(&staging);
        std::mem::take(&mut self.kept)
    }
}

/// The committer named in the reflog, as git finds it: `GIT_COMMITTER_NAME` and
/// `GIT_COMMITTER_EMAIL`, then `committer.*`, then `user.*` (git-commit-tree(1),
/// "Commit Information"); `None` where none is set (git then makes one up).
///
/// Read here rather than through gix's `committer()`, which also works out the local time
/// zone's name by reading the whole time zone database (milliseconds, on every push).
fn committer(repo: &gix::Repository) -> (Option<Vec<u8>>, Option<Vec<u8>>) {
    let config = repo.config_snapshot();
    let find = |env: &str, keys: [&str; 2]| {
        std::env::var_os(env)
            .map(|v| v.into_encoded_bytes())
            .or_else(|| {
                keys.iter()
                    .find_map(|key| config.string(*key).map(|v| v.to_vec()))
            })
            .filter(|v| !v.is_empty())
    };
    (
        find("GIT_COMMITTER_NAME", ["committer.name", "user.name"]),
        find("GIT_COMMITTER_EMAIL", ["committer.email", "user.email"]),
    )
}

/// The index at `path` (an empty one when there is none), its checksum verified.
///
/// Errors: a message when it cannot be read.
fn read_index(path: &Path) -> Result<gix::index::File, FfError> {
    gix::index::File::at_or_default(path, gix::hash::Kind::Sha1, false, Default::default())
        .map_err(|e| FfError::Index(format!("cannot read index: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::git::fastforward::{Outcome, Retry};

    #[test]
    fn a_refusal_says_when_to_try_again_where_it_is_made() {
        let rel = Path::new("dir/file");
        for (errno, retry) in [
            (nix::libc::EACCES, Retry::OnChange),
            (nix::libc::EPERM, Retry::OnChange),
            (nix::libc::EROFS, Retry::OnChange),
            (nix::libc::ENOSPC, Retry::OnChange),
            (nix::libc::EDQUOT, Retry::OnChange),
            (nix::libc::ENOENT, Retry::Soon),
            (nix::libc::EEXIST, Retry::Soon),
        ] {
            let refused = io_reason(rel, &std::io::Error::from_raw_os_error(errno));
            assert_eq!(refused.retry, retry, "errno {errno}: {}", refused.reason);
        }
        assert_eq!(Refused::being_edited().retry, Retry::Soon);
        assert_eq!(
            Refused::from("local changes would be overwritten: a").retry,
            Retry::OnChange
        );
    }

    #[test]
    fn the_retry_kind_travels_in_the_helpers_line_and_an_older_line_waits_for_a_change() {
        let line = serde_json::to_string(&Outcome::blocked(Refused::passing("not now: x")))
            .expect("serializes");
        let back: Outcome = serde_json::from_str(&line).expect("parses");
        assert!(
            matches!(
                back,
                Outcome::Blocked {
                    retry: Retry::Soon,
                    ..
                }
            ),
            "{line}"
        );
        let older = r#"{"outcome":"blocked","reason":"not now: x","kept":[]}"#;
        let back: Outcome = serde_json::from_str(older).expect("parses");
        assert!(matches!(
            back,
            Outcome::Blocked {
                retry: Retry::OnChange,
                ..
            }
        ));
    }
}
