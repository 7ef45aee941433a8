//! Reading a repository's state in-process with gix. Read-only: nothing here writes to a
//! repository, its index or its worktree (changes go through the git binary in `ops`).
//!
//! The counts match `git status --porcelain=v2 --branch` with the repository's own
//! `status.showUntrackedFiles` (default: an untracked folder counts once). Submodules are
//! not counted, but each initialized one with work of its own is listed (`submodules`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use gix::bstr::{BString, ByteSlice};

use crate::model::{LastCommit, Operation, RepoState, Summary};
use crate::util::redact::redact_url;

/// A state plus what the syncer needs to decide on a fast-forward.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The state to publish.
    pub state: RepoState,
    /// The upstream's commit id (hex), when the remote-tracking ref exists.
    pub upstream_head: Option<String>,
    /// Whether `$GIT_DIR/index.lock` exists (another git command is running).
    pub index_locked: bool,
    /// When locked: who holds it, or that it is stale and what to do (see
    /// [`super::procs::describe`]).
    pub index_lock_note: Option<String>,
    /// The upstream's remote name (`origin`), when configured.
    pub remote: Option<String>,
}

/// Reads the state of the repository at `path` (a worktree or a `.git` folder).
///
/// `host` and `repo` are copied into the record. Never fails: a repository that cannot be
/// read gives a state with `state: error` and the reason in `error`.
pub fn read(host: &str, repo: &str, path: &Path) -> Snapshot {
    let read = if path.exists() {
        gix::open(path)
            .map_err(err("cannot open repository"))
            .and_then(|opened| read_inner(host, repo, &opened))
    } else {
        Err(StateError::Missing(path.to_path_buf()))
    };
    snapshot_or_error(host, repo, read)
}

/// [`read`] of a repository opened already (`opened`, as by `gix::open`), to save the
/// opening when one sync reads a repository several times. Its refs, index and worktree
/// are read afresh; its configuration is what it was when it was opened.
///
/// Returns the snapshot as [`read`] does; never fails.
pub fn read_in(host: &str, repo: &str, opened: &gix::Repository) -> Snapshot {
    let read = match opened.workdir() {
        Some(top) if !top.exists() => Err(StateError::Missing(top.to_path_buf())),
        _ => read_inner(host, repo, opened),
    };
    snapshot_or_error(host, repo, read)
}

/// The snapshot `read` made, or an error state with its reason.
fn snapshot_or_error(host: &str, repo: &str, read: Result<Snapshot, StateError>) -> Snapshot {
    match read {
        Ok(snapshot) => snapshot,
        Err(message) => Snapshot {
            state: RepoState::error(host, repo, message.to_string()),
            upstream_head: None,
            index_locked: false,
            index_lock_note: None,
            remote: None,
        },
    }
}

/// Why a repository's state cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The repository's folder is gone.
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    /// A part of the repository cannot be read: which part, and gix's message.
    #[error("{what}: {message}")]
    Read {
        /// The part, as "cannot read HEAD".
        what: &'static str,
        /// gix's message.
        message: String,
    },
    /// The worktree cannot be compared with the index, or walked for untracked files.
    #[error("{0}")]
    Worktree(String),
}

/// A [`StateError::Read`] of `what` for a gix error.
pub(super) fn err<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> StateError {
    move |e| StateError::Read {
        what,
        message: e.to_string(),
    }
}

/// Re-reads only the refs of the repository at `path` (its HEAD, upstream and ahead/behind)
/// and takes the rest (the worktree's counts, submodules, operation, lock) from `earlier`,
/// a [`read`] made while a fetch was running: a fetch writes remote-tracking refs only,
/// so the worktree's part is still current. When HEAD moved meanwhile (a commit, a
/// switch), or `earlier` is an error, the whole state is read again.
///
/// Returns the snapshot as [`read`] does; never fails.
pub fn refresh(host: &str, repo: &str, path: &Path, earlier: Snapshot) -> Snapshot {
    if earlier.state.error.is_some() {
        return read(host, repo, path);
    }
    match gix::open(path) {
        Ok(opened) => refresh_in(host, repo, &opened, earlier),
        Err(_) => read(host, repo, path),
    }
}

/// [`refresh`] of a repository opened already (see [`read_in`]).
///
/// Returns the snapshot as [`read`] does; never fails.
pub fn refresh_in(host: &str, repo: &str, opened: &gix::Repository, earlier: Snapshot) -> Snapshot {
    if earlier.state.error.is_some() {
        return read_in(host, repo, opened);
    }
    let refs = match Refs::read(opened) {
        Ok(refs) => refs,
        Err(_) => return read_in(host, repo, opened),
    };
    let same_head = refs.head_id.map(|id| id.to_string()) == earlier.state.head
        && refs.branch() == earlier.state.branch;
    if !same_head {
        return read_in(host, repo, opened);
    }
    let mut snapshot = earlier;
    let s = &mut snapshot.state;
    s.upstream = refs.upstream.clone();
    s.remote_url = refs.remote_url.clone();
    s.ahead = refs.ahead;
    s.behind = refs.behind;
    s.state = refs.summary();
    s.updated_at = Utc::now();
    snapshot.upstream_head = refs.upstream_head.map(|id| id.to_string());
    snapshot.remote = refs.remote;
    snapshot
}

/// The part of a state that refs alone decide: cheap to read (no worktree walk).
struct Refs {
    detached: bool,
    head_id: Option<gix::ObjectId>,
    branch_ref: Option<gix::refs::FullName>,
    upstream: Option<String>,
    upstream_head: Option<gix::ObjectId>,
    upstream_configured: bool,
    remote: Option<String>,
    remote_url: Option<String>,
    ahead: u32,
    behind: u32,
}

impl Refs {
    /// Reads HEAD, the branch's upstream (configured, and whether its ref exists) and how
    /// far apart the two are.
    fn read(repo: &gix::Repository) -> Result<Refs, StateError> {
        let head = repo.head().map_err(err("cannot read HEAD"))?;
        let detached = head.is_detached();
        let head_id = head.id().map(|id| id.detach());
        let branch_ref = head.referent_name().map(|n| n.to_owned());
        drop(head);

        // Upstream: configured (branch.<name>.merge) and whether its tracking ref exists.
        let mut upstream = None;
        let mut upstream_head = None;
        let mut upstream_configured = false;
        let mut remote = None;
        let mut remote_url = None;
        if let Some(name) = &branch_ref {
            let config = repo.config_snapshot();
            let short = name.shorten().to_str_lossy().into_owned();
            // The upstream's ref: the remote-tracking ref, or, for a local upstream (`git
            // branch --track B other`: remote "."), the local branch itself.
            let tracking = match repo
                .branch_remote_tracking_ref_name(name.as_ref(), gix::remote::Direction::Fetch)
            {
                Some(tracking) => Some(tracking.map_err(err("cannot read upstream"))?),
                None => super::remotes::local_upstream(repo, &short),
            };
            if let Some(tracking) = tracking {
                upstream_configured = true;
                upstream = Some(tracking.shorten().to_str_lossy().into_owned());
                if let Some(mut reference) = repo
                    .try_find_reference(tracking.as_ref())
                    .map_err(err("cannot read upstream ref"))?
                {
                    let id = reference
                        .peel_to_id()
                        .map_err(err("cannot resolve upstream"))?;
                    upstream_head = Some(id.detach());
                }
            }
            remote = super::remotes::fetch_remote(repo, &short);
            remote_url = remote.as_ref().and_then(|r| {
                config
                    .string(format!("remote.{r}.url").as_str())
                    .map(|u| redact_url(&u.to_str_lossy()))
            });
        }

        let (mut ahead, mut behind) = (0u32, 0u32);
        if let (Some(head), Some(up)) = (head_id, upstream_head) {
            ahead = count_commits(repo, head, up)?;
            behind = count_commits(repo, up, head)?;
        }
        Ok(Refs {
            detached,
            head_id,
            branch_ref,
            upstream,
            upstream_head,
            upstream_configured,
            remote,
            remote_url,
            ahead,
            behind,
        })
    }

    /// The branch's short name (`main`), or `None` when HEAD is detached.
    fn branch(&self) -> Option<String> {
        if self.detached {
            return None;
        }
        self.branch_ref
            .as_ref()
            .map(|n| n.shorten().to_str_lossy().into_owned())
    }

    /// The summary the refs give.
    fn summary(&self) -> Summary {
        if self.detached {
            Summary::Detached
        } else if self.head_id.is_none() || !self.upstream_configured {
            Summary::NoUpstream
        } else if self.upstream_head.is_none() {
            Summary::UpstreamGone
        } else {
            match (self.ahead, self.behind) {
                (0, 0) => Summary::UpToDate,
                (_, 0) => Summary::Ahead,
                (0, _) => Summary::Behind,
                _ => Summary::Diverged,
            }
        }
    }
}

fn read_inner(host: &str, repo_name: &str, repo: &gix::Repository) -> Result<Snapshot, StateError> {
    let refs = Refs::read(repo)?;
    let head_id = refs.head_id;
    let state = refs.summary();

    let mut head_tree = None;
    let last_commit = match head_id {
        Some(id) => {
            let commit = repo
                .find_commit(id)
                .map_err(err("cannot read HEAD commit"))?;
            head_tree = commit.tree_id().ok().map(|t| t.detach());
            let time = commit.time().map_err(err("cannot read commit time"))?;
            let summary = commit
                .message()
                .map(|m| m.summary().to_str_lossy().into_owned())
                .unwrap_or_default();
            Some(LastCommit {
                time: DateTime::<Utc>::from_timestamp(time.seconds, 0).unwrap_or_default(),
                summary,
            })
        }
        None => None,
    };
    let counts = worktree_counts(repo, head_tree)?;
    let operation = match repo.state() {
        None => Operation::None,
        Some(gix::state::InProgress::Merge) => Operation::Merge,
        Some(gix::state::InProgress::Bisect) => Operation::Bisect,
        Some(gix::state::InProgress::CherryPick | gix::state::InProgress::CherryPickSequence) => {
            Operation::CherryPick
        }
        Some(gix::state::InProgress::Revert | gix::state::InProgress::RevertSequence) => {
            Operation::Revert
        }
        Some(_) => Operation::Rebase,
    };
    let git_dir = repo.git_dir();
    let stashes = std::fs::read(git_dir.join("logs/refs/stash"))
        .map(|bytes| bytes.lines().filter(|l| !l.is_empty()).count() as u32)
        .unwrap_or(0);
    let index_locked = git_dir.join("index.lock").exists();
    let worktree = repo.workdir().map(std::path::Path::to_path_buf);
    let index_lock_note = match (&worktree, index_locked) {
        (Some(worktree), true) => {
            let lock = super::procs::index_lock(worktree, git_dir);
            super::procs::describe(&lock, git_dir)
        }
        _ => None,
    };
    let submodules = match &worktree {
        Some(worktree) => super::submodules::with_work(worktree, &counts.gitlinks),
        None => Vec::new(),
    };

    Ok(Snapshot {
        state: RepoState {
            host: host.to_string(),
            repo: repo_name.to_string(),
            branch: refs.branch(),
            head: head_id.map(|id| id.to_string()),
            upstream: refs.upstream,
            remote_url: refs.remote_url,
            ahead: refs.ahead,
            behind: refs.behind,
            staged: counts.staged,
            unstaged: counts.unstaged,
            untracked: counts.untracked,
            conflicted: counts.conflicted,
            stashes,
            operation,
            state,
            last_commit,
            updated_at: Utc::now(),
            pull_blocked: None,
            error: None,
            submodules,
            branches_behind: 0,
        },
        upstream_head: refs.upstream_head.map(|id| id.to_string()),
        index_locked,
        index_lock_note,
        remote: refs.remote,
    })
}

/// Number of commits reachable from `from` but not from `hidden` (`git rev-list --count
/// hidden..from`).
fn count_commits(
    repo: &gix::Repository,
    from: gix::ObjectId,
    hidden: gix::ObjectId,
) -> Result<u32, StateError> {
    if from == hidden {
        return Ok(0);
    }
    let walk = repo
        .rev_walk([from])
        .with_hidden([hidden])
        .all()
        .map_err(err("cannot walk history"))?;
    let mut count = 0u32;
    for info in walk {
        info.map_err(err("cannot walk history"))?;
        count += 1;
    }
    Ok(count)
}

#[derive(Debug, Default)]
struct Counts {
    staged: u32,
    unstaged: u32,
    untracked: u32,
    conflicted: u32,
    /// Submodules recorded in the index: (path, recorded commit id).
    gitlinks: Vec<(String, String)>,
}

/// Whether the index's cache-tree extension (`index-format.txt`, "Cache tree") is valid
/// for the whole index and names `head_tree`: then the index equals HEAD's tree and nothing
/// is staged, which is how git itself skips the HEAD-to-index diff.
fn index_matches_head(index: &gix::index::File, head_tree: Option<gix::ObjectId>) -> bool {
    let (Some(head_tree), Some(cache)) = (head_tree, index.tree()) else {
        return false;
    };
    let entries = index.entries().len();
    cache.id == head_tree && cache.num_entries.is_some_and(|n| n as usize == entries)
}

fn worktree_counts(
    repo: &gix::Repository,
    head_tree: Option<gix::ObjectId>,
) -> Result<Counts, StateError> {
    if repo.workdir().is_none() {
        return Ok(Counts::default());
    }
    // Like git, which verifies the index's checksum only in `git fsck`, read it without
    // hashing the whole file (gix's default hashes it on every read).
    let index = gix::index::File::at_or_default(
        repo.index_path(),
        repo.object_hash(),
        true,
        gix::index::decode::Options {
            thread_limit: Some(1),
            ..Default::default()
        },
    )
    .map_err(err("cannot read index"))?;
    let conflicted: HashSet<BString> = index
        .entries()
        .iter()
        .filter(|e| e.stage() != gix::index::entry::Stage::Unconflicted)
        .map(|e| e.path(&index).to_owned())
        .collect();

    // Staged: HEAD's tree against the index, unless the cache-tree proves them equal.
    let mut staged: HashSet<BString> = HashSet::new();
    if !(conflicted.is_empty() && index_matches_head(&index, head_tree)) {
        let tree = match head_tree {
            Some(tree) => tree,
            None => gix::ObjectId::empty_tree(repo.object_hash()),
        };
        repo.tree_index_status(
            &tree,
            &index,
            None,
            gix::status::tree_index::TrackRenames::AsConfigured,
            |change, _, _| {
                staged.insert(change.location().to_owned());
                Ok(std::ops::ControlFlow::Continue(()))
            },
        )
        .map_err(err("cannot compare HEAD with the index"))?;
    }

    // Unstaged: the index against the worktree; untracked: the directory walk. Both run in
    // this thread, one after the other, for a small index: callers read several
    // repositories at once, and gix's combined call would start two threads for every
    // repository read. From `SPLIT_FROM` entries the walk has a thread of its own (the
    // stat pass splits too): 3,000 files then take about half the time.
    let (unstaged, untracked) = if index.entries().len() >= super::worktree::SPLIT_FROM {
        let walker = repo.clone();
        let index = &index;
        std::thread::scope(|scope| {
            let untracked = scope.spawn(move || super::untracked::count(&walker, index));
            let unstaged = super::worktree::unstaged(repo, index);
            let untracked = untracked.join().unwrap_or_else(|_| {
                Err(StateError::Worktree(
                    "the walk for untracked files failed".to_string(),
                ))
            });
            (unstaged, untracked)
        })
    } else {
        (
            super::worktree::unstaged(repo, &index),
            super::untracked::count(repo, &index),
        )
    };
    let (unstaged, untracked) = (unstaged?, untracked?);

    let gitlinks = index
        .entries()
        .iter()
        .filter(|e| e.mode == gix::index::entry::Mode::COMMIT)
        .map(|e| (e.path(&index).to_str_lossy().into_owned(), e.id.to_string()))
        .collect();
    Ok(Counts {
        gitlinks,
        staged: staged.difference(&conflicted).count() as u32,
        unstaged: unstaged.difference(&conflicted).count() as u32,
        untracked,
        conflicted: conflicted.len() as u32,
    })
}
