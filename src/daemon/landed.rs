//! Pushes seen without the hook: a remote-tracking ref that `git push` moved.
//!
//! After every successful push git updates the remote-tracking ref it pushed to, and writes
//! `update by push` in that ref's reflog (`logs/refs/remotes/<remote>/<branch>` in the
//! common git dir; git-update-ref(1), "Logging updates"). The watcher already refreshes a
//! repository when its refs change; this reads what was appended to those reflogs since
//! the last look and publishes each push it finds, so that repositories where no hook can
//! be installed (a shared or tracked hooks folder) and tools that skip hooks
//! (`--no-verify`) still reach the other machines. A fetch or pull writes other messages
//! and is never taken for a push. Reflogs as they are when a repository is first seen are
//! history, not news: only lines appended later count.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use super::publisher::Publisher;
use super::watcher;
use crate::discover::Repo;
use crate::git::remotes;
use crate::model::PushEvent;

/// The most read from one reflog at one look, in bytes.
const MAX_READ: u64 = 1 << 20;

/// How far each remote-tracking reflog has been read.
#[derive(Default)]
pub struct Reflogs {
    read: std::sync::Mutex<HashMap<PathBuf, u64>>,
    primed: std::sync::Mutex<HashSet<PathBuf>>,
}

/// A push found in a reflog: the remote-tracking ref (`origin/main`), old and new ids.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    tracking: String,
    old: String,
    new: String,
}

fn reflog_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        match entry.file_type() {
            Ok(t) if t.is_dir() => reflog_files(&entry.path(), out),
            Ok(t) if t.is_file() => out.push(entry.path()),
            _ => {}
        }
    }
}

/// Parses reflog lines (`<old> <new> <name> <<email>> <time> <tz>\t<message>`) and keeps
/// the pushes.
fn pushes_in(text: &str, tracking: &str) -> Vec<Found> {
    text.lines()
        .filter_map(|line| {
            let (head, message) = line.split_once('\t')?;
            if message.trim() != "update by push" {
                return None;
            }
            let mut words = head.split(' ');
            let (old, new) = (words.next()?, words.next()?);
            Some(Found {
                tracking: tracking.to_string(),
                old: old.to_string(),
                new: new.to_string(),
            })
        })
        .collect()
}

impl Reflogs {
    /// Nothing read yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads what was appended to `repo`'s remote-tracking reflogs since the last look and
    /// returns the pushes among it. The first look at a repository only notes where each
    /// reflog ends.
    fn appended(&self, repo: &Repo) -> Vec<Found> {
        let common = watcher::common_dir_of(&repo.path);
        let dir = common.join("logs/refs/remotes");
        let mut files = Vec::new();
        reflog_files(&dir, &mut files);
        let first = self
            .primed
            .lock()
            .map(|mut p| p.insert(common.clone()))
            .unwrap_or(false);
        let mut read = self.read.lock().unwrap_or_else(|p| p.into_inner());
        let mut found = Vec::new();
        for file in files {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let from = match read.get(&file) {
                _ if first => {
                    read.insert(file, len);
                    continue;
                }
                Some(&at) if at <= len => at,
                // A new reflog (a new branch pushed) is read whole; a shorter one was
                // rewritten (`git reflog expire`) and is read again from its start.
                _ => 0,
            };
            if from == len {
                continue;
            }
            let Ok(mut f) = std::fs::File::open(&file) else {
                continue;
            };
            let mut bytes = Vec::new();
            if f.seek(SeekFrom::Start(from)).is_err()
                || (&mut f).take(MAX_READ).read_to_end(&mut bytes).is_err()
            {
                continue;
            }
            // Whole lines only; a line being written is read next time.
            let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            read.insert(file.clone(), from + complete as u64);
            let tracking = file
                .strip_prefix(&dir)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_default();
            found.extend(pushes_in(
                &String::from_utf8_lossy(&bytes[..complete]),
                &tracking,
            ));
        }
        found
    }

    /// Publishes, through `publisher`, the pushes that landed in `repo` since the last look
    /// (see the module documentation). The remote is the configured one whose name the
    /// tracking ref starts with (the longest, as remote names may hold `/`); a tracking ref
    /// of no configured remote is skipped.
    pub async fn publish_new(&self, repo: &Repo, publisher: &Publisher, host: &str) {
        let found = self.appended(repo);
        if found.is_empty() {
            return;
        }
        let remotes = remotes::list(&repo.path);
        for push in found {
            let Some(remote) = remotes
                .iter()
                .filter(|r| push.tracking.starts_with(&format!("{}/", r.name)))
                .max_by_key(|r| r.name.len())
            else {
                continue;
            };
            let branch = &push.tracking[remote.name.len() + 1..];
            let url = remotes::absolute_url(&remote.url, &repo.path);
            let event = PushEvent::new(
                host,
                &repo.name,
                &url,
                &format!("refs/heads/{branch}"),
                &push.old,
                &push.new,
            );
            publisher.publish(event, "watcher").await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pushes_are_taken_from_a_reflog() {
        let a = "1".repeat(40);
        let b = "2".repeat(40);
        let text = format!(
            "{a} {b} Me <me@x> 1700000000 +0000\tupdate by push\n{b} {a} Me <me@x> 1700000001 +0000\tfetch: fast-forward\n{b} {a} Me <me@x> 1700000002 +0000\tpull: fast-forward\n"
        );
        let found = pushes_in(&text, "origin/main");
        assert_eq!(
            found,
            vec![Found {
                tracking: "origin/main".to_string(),
                old: a,
                new: b
            }]
        );
    }
}
