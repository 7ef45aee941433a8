//! Cheap polling (`pull.poll`): instead of a `git fetch` of everything, each repository
//! asks its remotes for the refs its branches track only: `git fetch --no-tags
//! --no-write-fetch-head <remote> +<ref>:<remote-tracking ref>...`, for which git's
//! protocol v2 sends the server a `ref-prefix` per ref, so the server lists those refs and
//! no others (`git ls-remote` sends no prefix for its patterns: it would list them all),
//! and sends objects only when one moved. A repository where one moved is then synced as
//! for a push event. The full update (`pull.interval`) still fetches everything (tags,
//! new branches).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::syncer::{Fetch, Syncer};
use crate::discover::Repo;
use crate::git::ops::{self, GitError};
use crate::git::remotes::{self, Tracked};

/// What one poll of every repository did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Polled {
    /// Remotes asked (one fetch of their tracked refs each).
    pub asked: usize,
    /// Repositories fetched and synced because a tracked ref moved.
    pub synced: Vec<String>,
    /// Remotes that could not be asked (their repository is left to the full update).
    pub failed: usize,
}

/// The remotes among `answered` where a ref of `before` (the tracked refs as they were
/// before the poll) is not what `after` (as the poll's fetch left them) has.
pub fn moved(before: &[Tracked], after: &[Tracked], answered: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in before
        .iter()
        .filter(|t| answered.contains(&t.remote.as_str()))
    {
        let now = after
            .iter()
            .find(|a| a.remote == t.remote && a.remote_ref == t.remote_ref)
            .and_then(|a| a.fetched.as_ref());
        if now != t.fetched.as_ref() && !out.contains(&t.remote) {
            out.push(t.remote.clone());
        }
    }
    out
}

/// `git fetch` of `tracked`'s refs of `remote` into their remote-tracking refs in `dir`,
/// without tags, FETCH_HEAD or auto maintenance.
///
/// Errors: [`GitError`] when the remote cannot be reached or asked within `timeout`.
async fn fetch_tracked(
    dir: &std::path::Path,
    remote: &str,
    tracked: &[&Tracked],
    timeout: Duration,
) -> Result<(), GitError> {
    let specs: Vec<String> = tracked
        .iter()
        .map(|t| format!("+{}:{}", t.remote_ref, t.tracking))
        .collect();
    let mut args = vec![
        "fetch",
        "--quiet",
        "--no-tags",
        "--no-write-fetch-head",
        "--no-auto-maintenance",
        "--no-recurse-submodules",
        "--",
        remote,
    ];
    args.extend(specs.iter().map(String::as_str));
    ops::run(dir, &args, timeout).await.map(|_| ())
}

/// Polls `repos` one after the other: asks each remote its tracked refs, and syncs
/// (`Fetch::Remote`) the repositories where one moved. Returns what it did.
pub async fn poll_all(syncer: &Arc<Syncer>, repos: &[Repo], timeout: Duration) -> Polled {
    let mut polled = Polled::default();
    for repo in repos {
        let path = repo.path.clone();
        let tracked = tokio::task::spawn_blocking(move || remotes::tracked(&path))
            .await
            .unwrap_or_default();
        let mut by_remote: BTreeMap<&str, Vec<&Tracked>> = BTreeMap::new();
        for t in &tracked {
            by_remote.entry(t.remote.as_str()).or_default().push(t);
        }
        let mut answered = Vec::new();
        for (remote, refs) in by_remote {
            polled.asked += 1;
            if let Err(err) = fetch_tracked(&repo.path, remote, &refs, timeout).await {
                polled.failed += 1;
                tracing::debug!(repo = %repo.name, remote, %err, "poll: cannot ask the remote");
                continue;
            }
            answered.push(remote);
        }
        // What the fetch brought, read back: a tracked ref that moved at the remote moved here.
        let path = repo.path.clone();
        let after = tokio::task::spawn_blocking(move || remotes::tracked(&path))
            .await
            .unwrap_or_default();
        for remote in moved(&tracked, &after, &answered) {
            tracing::info!(repo = %repo.name, remote, "poll: a tracked ref moved; fetching");
            syncer.sync_with(repo, Fetch::Remote(remote)).await;
            if !polled.synced.contains(&repo.name) {
                polled.synced.push(repo.name.clone());
            }
        }
    }
    polled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(remote: &str, r: &str, fetched: Option<&str>) -> Tracked {
        Tracked {
            remote: remote.into(),
            remote_ref: r.into(),
            tracking: format!("refs/remotes/{remote}/{r}"),
            fetched: fetched.map(str::to_string),
        }
    }

    #[test]
    fn a_remote_moved_when_a_tracked_ref_differs_or_appears() {
        let before = vec![
            t("origin", "refs/heads/main", Some("a")),
            t("origin", "refs/heads/dev", None),
            t("fork", "refs/heads/x", Some("b")),
        ];
        let both = ["origin", "fork"];
        assert!(moved(&before, &before, &both).is_empty());
        let main_moved = vec![
            t("origin", "refs/heads/main", Some("c")),
            t("fork", "refs/heads/x", Some("b")),
        ];
        assert_eq!(moved(&before, &main_moved, &both), vec!["origin"]);
        let dev_appeared = vec![
            t("origin", "refs/heads/main", Some("a")),
            t("origin", "refs/heads/dev", Some("d")),
            t("fork", "refs/heads/x", Some("b")),
        ];
        assert_eq!(moved(&before, &dev_appeared, &both), vec!["origin"]);
        let x_gone = vec![t("origin", "refs/heads/main", Some("a"))];
        assert_eq!(moved(&before, &x_gone, &both), vec!["fork"]);
        // A remote that could not be asked is not called moved.
        assert!(moved(&before, &x_gone, &["origin"]).is_empty());
    }
}
