//! Watching worktrees and git metadata, and coalescing the events per repository.
//!
//! One notify (inotify) watcher serves every repository. Worktree folders are watched one by
//! one, as found by a gitignore-aware walk (the `ignore` crate), so ignored trees such as
//! `target/` or `node_modules/` cost no watch; new folders are added as they appear. In the
//! git folder only what changes the state counts: `HEAD`, `index`, `packed-refs`, `refs/`,
//! and the files that mark a merge, rebase, cherry-pick, revert or bisect.
//!
//! The notify callback only marks the repository in [`Dirty`]; the supervisor refreshes a
//! repository once its events have been quiet for [`QUIET`] (or after [`MAX_DELAY`] of
//! continuous events), and waits while another git command holds `index.lock`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use notify::{EventKind, RecursiveMode, Watcher};

use crate::discover::Repo;

/// How long a repository's events must be quiet before its state is read.
pub const QUIET: Duration = Duration::from_millis(250);
/// The longest a repository with continuous events waits for a refresh.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Repositories with pending watcher events: name -> (first event, last event).
#[derive(Default)]
pub struct Dirty {
    pending: Mutex<HashMap<String, (Instant, Instant)>>,
    /// Per repository: the last worktree event that gitsync did not cause itself.
    edits: Mutex<HashMap<String, Instant>>,
    /// Repositories whose worktree gitsync is changing now (their events are its own).
    suppressed: Mutex<std::collections::HashSet<String>>,
    /// Woken on every new mark.
    pub wake: tokio::sync::Notify,
}

impl Dirty {
    /// A new, empty set.
    pub fn new() -> Self {
        Self::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Instant)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records an event for `repo` now.
    pub fn mark(&self, repo: &str) {
        let now = Instant::now();
        let mut map = self.map();
        match map.get_mut(repo) {
            Some(entry) => entry.1 = now,
            None => {
                map.insert(repo.to_string(), (now, now));
                drop(map);
                self.wake.notify_one();
            }
        }
    }

    /// Records an event for `repo` that must not wait for the quiet period: a
    /// remote-tracking ref moved, which after a `git push` is the only sign of a push made
    /// where no hook ran (see `daemon::landed`). Due at once, whatever came before.
    pub fn mark_now(&self, repo: &str) {
        let now = Instant::now();
        let due = now.checked_sub(MAX_DELAY).unwrap_or(now);
        self.map().insert(repo.to_string(), (due, now));
        self.wake.notify_one();
    }

    /// Records an edit of `repo`'s worktree now, unless gitsync is changing it itself.
    pub fn edited(&self, repo: &str) {
        let suppressed = self
            .suppressed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(repo);
        if !suppressed {
            self.edits
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(repo.to_string(), Instant::now());
        }
    }

    /// While `on`, worktree events of `repo` are gitsync's own (a fast-forward) and do not
    /// count as edits.
    pub fn suppress_edits(&self, repo: &str, on: bool) {
        let mut set = self.suppressed.lock().unwrap_or_else(|p| p.into_inner());
        if on {
            set.insert(repo.to_string());
        } else {
            set.remove(repo);
        }
    }

    /// `None` when `repo`'s worktree has had no edit for `quiet`; otherwise how long until
    /// it will have been quiet that long.
    pub fn edit_quiet_in(&self, repo: &str, quiet: Duration) -> Option<Duration> {
        let edits = self.edits.lock().unwrap_or_else(|p| p.into_inner());
        let since = edits.get(repo)?.elapsed();
        (since < quiet).then(|| quiet - since)
    }

    /// Marks `repo` again after `delay` (a retry once its worktree is quiet). Needs a tokio
    /// runtime; without one it does nothing.
    pub fn mark_after(self: &Arc<Self>, repo: &str, delay: Duration) {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (me, repo) = (self.clone(), repo.to_string());
        handle.spawn(async move {
            tokio::time::sleep(delay + Duration::from_millis(50)).await;
            me.mark(&repo);
        });
    }

    /// Whether `repo` has watcher events not yet handled.
    pub fn is_pending(&self, repo: &str) -> bool {
        self.map().contains_key(repo)
    }

    /// Drops the pending events of `repo` (they were caused by gitsync itself).
    pub fn forget(&self, repo: &str) {
        self.map().remove(repo);
    }

    /// Takes the repositories due for a refresh at `now`. `locked(repo)` tells whether a
    /// git command holds the repository's `index.lock`; such a repository waits, up to
    /// [`MAX_DELAY`]. Returns the due names and when the next one falls due.
    pub fn take_due(
        &self,
        now: Instant,
        locked: impl Fn(&str) -> bool,
    ) -> (Vec<String>, Option<Instant>) {
        let mut map = self.map();
        let mut due = Vec::new();
        let mut next: Option<Instant> = None;
        for (repo, (first, last)) in map.iter_mut() {
            let overdue = now.duration_since(*first) >= MAX_DELAY;
            let quiet = now.duration_since(*last) >= QUIET;
            if overdue || (quiet && !locked(repo)) {
                due.push(repo.clone());
            } else {
                let at = if quiet { now + QUIET } else { *last + QUIET };
                let at = at.min(*first + MAX_DELAY);
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        for repo in &due {
            map.remove(repo);
        }
        (due, next)
    }
}

/// What the callback knows of one repository.
struct Watched {
    name: String,
    worktree: PathBuf,
    git_dir: PathBuf,
    /// Rebuilt when `.gitignore` or `info/exclude` changes.
    ignore: RwLock<ignore::gitignore::Gitignore>,
}

impl Watched {
    fn ignored(&self, path: &Path, is_dir: bool) -> bool {
        self.ignore
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .matched_path_or_any_parents(path, is_dir)
            .is_ignore()
    }

    fn reload_ignore(&self) {
        let fresh = matcher(&self.worktree, &self.git_dir);
        *self.ignore.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }
}

type Index = Arc<RwLock<HashMap<PathBuf, Arc<Watched>>>>;

/// The running watcher. Dropping it stops watching.
pub struct RepoWatcher {
    watcher: Arc<Mutex<notify::RecommendedWatcher>>,
    index: Index,
    health: Arc<Health>,
}

const GIT_FILES: &[&str] = &[
    "HEAD",
    "index",
    "packed-refs",
    "refs",
    "MERGE_HEAD",
    "CHERRY_PICK_HEAD",
    "REVERT_HEAD",
    "BISECT_LOG",
    "rebase-merge",
    "rebase-apply",
];

/// The git folder of the worktree at `worktree`: `.git`, or where a `.git` file points
/// (linked worktrees).
pub fn git_dir_of(worktree: &Path) -> PathBuf {
    let dot_git = worktree.join(".git");
    if dot_git.is_file()
        && let Ok(text) = std::fs::read_to_string(&dot_git)
        && let Some(dir) = text.trim().strip_prefix("gitdir:")
    {
        let dir = PathBuf::from(dir.trim());
        return if dir.is_absolute() {
            dir
        } else {
            worktree.join(dir)
        };
    }
    dot_git
}

/// The common git folder of the worktree at `worktree` (what `commondir` in a linked
/// worktree's git folder names, gitrepository-layout(5)), canonicalized when possible.
pub fn common_dir_of(worktree: &Path) -> PathBuf {
    let git_dir = git_dir_of(worktree);
    let common = match std::fs::read_to_string(git_dir.join("commondir")) {
        Ok(text) => {
            let dir = PathBuf::from(text.trim());
            if dir.is_absolute() {
                dir
            } else {
                git_dir.join(dir)
            }
        }
        Err(_) => git_dir,
    };
    std::fs::canonicalize(&common).unwrap_or(common)
}

fn matcher(worktree: &Path, git_dir: &Path) -> ignore::gitignore::Gitignore {
    let mut builder = ignore::gitignore::GitignoreBuilder::new(worktree);
    builder.add(worktree.join(".gitignore"));
    builder.add(git_dir.join("info/exclude"));
    builder
        .build()
        .unwrap_or_else(|_| ignore::gitignore::Gitignore::empty())
}

fn lookup(index: &HashMap<PathBuf, Arc<Watched>>, path: &Path) -> Option<Arc<Watched>> {
    path.ancestors().find_map(|a| index.get(a).cloned())
}

/// Whether an event on `path` can change `repo`'s state; `Some(true)` when it is a new
/// worktree folder that needs its own watch.
fn relevance(repo: &Watched, path: &Path, created: bool) -> Option<bool> {
    if let Ok(rel) = path.strip_prefix(&repo.git_dir) {
        if rel == Path::new("info/exclude") {
            repo.reload_ignore();
        }
        let first = rel.components().next()?.as_os_str().to_str()?;
        return GIT_FILES.contains(&first).then_some(false);
    }
    let rel = path.strip_prefix(&repo.worktree).ok()?;
    if rel
        .components()
        .next()
        .is_some_and(|c| c.as_os_str() == ".git")
    {
        return None;
    }
    if rel == Path::new(".gitignore") {
        repo.reload_ignore();
    }
    let is_dir = path.is_dir();
    if repo.ignored(path, is_dir) {
        return None;
    }
    Some(created && is_dir)
}

/// Whether an event on `path` is a remote-tracking ref of `git_dir` changing (a push
/// landed, or a fetch), which is handled without waiting for quiet.
fn moves_remote_ref(git_dir: &Path, path: &Path) -> bool {
    path.strip_prefix(git_dir)
        .is_ok_and(|rel| rel.starts_with("refs/remotes"))
}

/// A watch could not be added because the inotify limit is reached.
fn is_limit(err: &notify::Error) -> bool {
    match &err.kind {
        notify::ErrorKind::MaxFilesWatch => true,
        notify::ErrorKind::Io(io) => matches!(io.raw_os_error(), Some(28) | Some(24)),
        _ => false,
    }
}

impl RepoWatcher {
    /// Starts watching `repos`, marking them in `dirty` on relevant events.
    ///
    /// Errors: the notify watcher cannot be created (no inotify). A repository whose
    /// folders cannot all be watched is logged (with an `fs.inotify.max_user_watches` hint
    /// when the limit is the cause) and keeps being synced by the periodic update.
    pub fn start(repos: &[Repo], dirty: Arc<Dirty>) -> Result<Self, notify::Error> {
        let index: Index = Arc::new(RwLock::new(HashMap::new()));
        let (new_dirs_tx, new_dirs_rx) = std::sync::mpsc::channel::<(Arc<Watched>, PathBuf)>();
        let cb_index = index.clone();
        let handler = move |res: notify::Result<notify::Event>| {
            let event = match res {
                Ok(event) => event,
                Err(err) => {
                    tracing::warn!(%err, "watch error");
                    return;
                }
            };
            if matches!(event.kind, EventKind::Access(_)) {
                return;
            }
            let created = matches!(event.kind, EventKind::Create(_));
            let map = cb_index.read().unwrap_or_else(|p| p.into_inner());
            if event.need_rescan() {
                // The kernel's event queue overflowed: some events are lost, so every
                // repository is refreshed once.
                tracing::debug!("inotify queue overflowed; refreshing every repository");
                for repo in map.values() {
                    dirty.mark(&repo.name);
                }
                return;
            }
            for path in &event.paths {
                let Some(repo) = lookup(&map, path) else {
                    continue;
                };
                if let Some(new_dir) = relevance(&repo, path, created) {
                    if !path.starts_with(&repo.git_dir) {
                        dirty.edited(&repo.name);
                    }
                    if moves_remote_ref(&repo.git_dir, path) {
                        dirty.mark_now(&repo.name);
                    } else {
                        dirty.mark(&repo.name);
                    }
                    if new_dir {
                        let _ = new_dirs_tx.send((repo.clone(), path.clone()));
                    }
                }
            }
        };
        let watcher = Arc::new(Mutex::new(notify::recommended_watcher(handler)?));
        let me = RepoWatcher {
            watcher,
            index,
            health: Arc::new(Health::default()),
        };
        for repo in repos {
            me.add(repo);
        }
        // Folders created later get their watches from this thread: notify's callback must
        // not call back into the watcher.
        let watcher = Arc::downgrade(&me.watcher);
        let health = me.health.clone();
        std::thread::Builder::new()
            .name("gitsync-new-dirs".to_string())
            .spawn(move || {
                while let Ok((repo, dir)) = new_dirs_rx.recv() {
                    let Some(watcher) = watcher.upgrade() else {
                        break;
                    };
                    watch_tree(&watcher, &repo, &dir, &health);
                }
            })
            .map_err(notify::Error::io)?;
        Ok(me)
    }

    /// Starts watching one more repository.
    pub fn add(&self, repo: &Repo) {
        let git_dir = git_dir_of(&repo.path);
        let watched = Arc::new(Watched {
            name: repo.name.clone(),
            worktree: repo.path.clone(),
            ignore: RwLock::new(matcher(&repo.path, &git_dir)),
            git_dir: git_dir.clone(),
        });
        self.index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(repo.path.clone(), watched.clone());
        let mut w = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        for (path, mode) in [
            (git_dir.clone(), RecursiveMode::NonRecursive),
            (git_dir.join("refs"), RecursiveMode::Recursive),
        ] {
            if let Err(err) = w.watch(&path, mode) {
                self.report(&repo.name, &path, &err);
            }
        }
        drop(w);
        watch_tree(&self.watcher, &watched, &repo.path, &self.health);
    }

    /// Stops watching a repository (its events are ignored from now on).
    pub fn remove(&self, repo: &Repo) {
        let removed = self
            .index
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&repo.path);
        let Some(watched) = removed else {
            return;
        };
        let mut dirs = worktree_dirs(&watched.worktree);
        dirs.push(watched.git_dir.clone());
        dirs.push(watched.git_dir.join("refs"));
        let mut w = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        for dir in dirs {
            // Folders that were never watched (ignored, or gone) fail here; that is fine.
            let _ = w.unwatch(&dir);
        }
    }

    /// Whether every folder of every repository got its watch (false once the inotify
    /// limit was hit or a watch failed).
    pub fn is_complete(&self) -> bool {
        !self
            .health
            .incomplete
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn report(&self, repo: &str, path: &Path, err: &notify::Error) {
        report(repo, path, err, &self.health);
    }
}

/// What went wrong adding watches.
#[derive(Default)]
struct Health {
    /// The inotify limit was hit (the hint is logged once).
    limit_hit: std::sync::atomic::AtomicBool,
    /// Some existing folder has no watch, so changes there can be missed.
    incomplete: std::sync::atomic::AtomicBool,
}

fn report(repo: &str, path: &Path, err: &notify::Error, health: &Health) {
    let missing = match &err.kind {
        notify::ErrorKind::PathNotFound => true,
        notify::ErrorKind::Io(io) => io.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    };
    if missing {
        // The repository is gone: its state says so, and it is re-read every time.
        tracing::debug!(%repo, path = %path.display(), "not watched: does not exist");
        return;
    }
    health
        .incomplete
        .store(true, std::sync::atomic::Ordering::Relaxed);
    if is_limit(err) {
        if !health
            .limit_hit
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::error!(
                %repo,
                path = %path.display(),
                "the inotify watch limit is reached: raise it with `sudo sysctl fs.inotify.max_user_watches=524288` (and in /etc/sysctl.d/ to keep it); until then changes are picked up by the periodic update"
            );
        }
    } else {
        tracing::warn!(%repo, path = %path.display(), %err, "cannot watch");
    }
}

pub(crate) fn worktree_dirs(root: &Path) -> Vec<PathBuf> {
    ignore::WalkBuilder::new(root)
        .hidden(false)
        .parents(false)
        .git_global(false)
        .require_git(false)
        .follow_links(false)
        .filter_entry(|e| e.file_name() != ".git" && e.file_type().is_some_and(|t| t.is_dir()))
        .build()
        .flatten()
        .map(|e| e.into_path())
        .collect()
}

fn watch_tree(
    watcher: &Mutex<notify::RecommendedWatcher>,
    repo: &Watched,
    from: &Path,
    health: &Health,
) {
    let dirs = worktree_dirs(from);
    let mut w = watcher.lock().unwrap_or_else(|p| p.into_inner());
    for dir in dirs {
        if from != repo.worktree && repo.ignored(&dir, true) {
            continue;
        }
        if let Err(err) = w.watch(&dir, RecursiveMode::NonRecursive) {
            report(&repo.name, &dir, &err, health);
            if is_limit(&err) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coalesces_until_quiet() {
        let dirty = Dirty::new();
        let t0 = Instant::now();
        dirty.mark("a");
        dirty.mark("a");
        let (due, next) = dirty.take_due(t0, |_| false);
        assert!(due.is_empty());
        assert!(next.is_some());
        let (due, _) = dirty.take_due(Instant::now() + QUIET, |_| false);
        assert_eq!(due, ["a"]);
        dirty.mark("b");
        let (due, _) = dirty.take_due(Instant::now() + QUIET, |_| true);
        assert!(due.is_empty(), "a locked repository waits");
        let (due, _) = dirty.take_due(Instant::now() + MAX_DELAY, |_| true);
        assert_eq!(due, ["b"]);
    }

    #[test]
    fn a_moved_remote_tracking_ref_is_due_at_once() {
        let git_dir = Path::new("/w/r/.git");
        assert!(moves_remote_ref(
            git_dir,
            Path::new("/w/r/.git/refs/remotes/origin/main")
        ));
        assert!(moves_remote_ref(
            git_dir,
            Path::new("/w/r/.git/refs/remotes/origin/main.lock")
        ));
        assert!(!moves_remote_ref(
            git_dir,
            Path::new("/w/r/.git/refs/heads/main")
        ));
        assert!(!moves_remote_ref(git_dir, Path::new("/w/r/refs/remotes/x")));
        let dirty = Dirty::new();
        dirty.mark("a");
        dirty.mark_now("a");
        let (due, _) = dirty.take_due(Instant::now(), |_| false);
        assert_eq!(due, ["a"], "a push seen without the hook waited for quiet");
    }
}
