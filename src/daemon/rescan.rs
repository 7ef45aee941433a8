//! Repositories that come and go under the root without a restart or SIGHUP.
//!
//! The root's folders (not the repositories' own files: [`super::watcher`] has those) are
//! watched down to the depth the configured patterns need, and a folder created, removed
//! or renamed there wakes the daemon, which resolves the repository list again after a
//! short pause (a `git clone` creates its folder, then `.git` in it). The periodic rescan
//! (`pull.rescan`) is the fallback for what a watch cannot see (network filesystems, the
//! inotify limit).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};

use crate::discover;

/// How long after a change under the root the list is resolved again.
pub const SETTLE: Duration = Duration::from_millis(100);

/// At most this many folders are watched; beyond it the periodic rescan covers the rest.
const MAX_FOLDERS: usize = 20_000;

/// Watches the folders under the root where a repository can appear or disappear.
pub struct RootWatcher {
    watcher: Mutex<notify::RecommendedWatcher>,
    watched: Mutex<HashSet<PathBuf>>,
    warned: std::sync::atomic::AtomicBool,
}

impl RootWatcher {
    /// A watcher that wakes `changed` on every folder created, removed or renamed in a
    /// watched folder; it watches nothing until [`RootWatcher::follow`].
    ///
    /// Errors: the notify watcher cannot be created (no inotify).
    pub fn start(changed: Arc<tokio::sync::Notify>) -> Result<Self, notify::Error> {
        let handler = move |res: notify::Result<notify::Event>| match res {
            Ok(event)
                if matches!(
                    event.kind,
                    EventKind::Access(_) | EventKind::Modify(notify::event::ModifyKind::Data(_))
                ) => {}
            Ok(_) => changed.notify_one(),
            Err(err) => tracing::debug!(%err, "root watch error"),
        };
        Ok(RootWatcher {
            watcher: Mutex::new(notify::recommended_watcher(handler)?),
            watched: Mutex::new(HashSet::new()),
            warned: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// Watches the folders under `root` where a repository matching `configured` (the
    /// config's `repositories`) can appear, and stops watching the others. Blocking: walks
    /// the root's folders (not the repositories' worktrees).
    pub fn follow(&self, root: &Path, configured: Option<&[String]>) {
        let wanted: HashSet<PathBuf> = match discover::depth_to_watch(configured) {
            None => HashSet::new(),
            Some(depth) => {
                let (dirs, more) = discover::folders(root, depth, MAX_FOLDERS);
                if more && !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::warn!(
                        root = %root.display(),
                        limit = MAX_FOLDERS,
                        "too many folders under the root to watch them all; new clones in the others are found by the periodic rescan (pull.rescan)"
                    );
                }
                dirs.into_iter().collect()
            }
        };
        let mut watched = self.watched.lock().unwrap_or_else(|p| p.into_inner());
        let mut watcher = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        for gone in watched.difference(&wanted) {
            // A folder that was removed lost its watch already; that error is fine.
            let _ = watcher.unwatch(gone);
        }
        let mut now = HashSet::new();
        for dir in wanted {
            if watched.contains(&dir) {
                now.insert(dir);
                continue;
            }
            match watcher.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    now.insert(dir);
                }
                Err(err) => {
                    tracing::debug!(dir = %dir.display(), %err, "cannot watch a folder under the root; the periodic rescan covers it")
                }
            }
        }
        *watched = now;
    }

    /// How many folders are watched now.
    pub fn watched(&self) -> usize {
        self.watched.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}
