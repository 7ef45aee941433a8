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
    /// Remotes asked (one `ls-remote` each).
    pub asked: usize,
    /// Repositories fetched and synced because a tracked ref moved.
    pub synced: Vec<String>,
    /// Remotes that could not be asked (their repository is left to the full update).
    pub failed: usize,
}

/// The remotes among `tracked` (as before the poll) where a ref differs from `listed`
/// (remote -> ref -> id, as the poll's fetch left them; a remote not listed could not be
/// asked, a ref missing under a listed remote is gone).
pub fn moved(
    tracked: &[Tracked],
    listed: &BTreeMap<String, BTreeMap<String, String>>,
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in tracked {
        let Some(refs) = listed.get(&t.remote) else {
            continue;
        };
        if refs.get(&t.remote_ref) != t.fetched.as_ref() && !out.contains(&t.remote) {
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
        let mut listed: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for (remote, refs) in by_remote {
            polled.asked += 1;
            if let Err(err) = fetch_tracked(&repo.path, remote, &refs, timeout).await {
                polled.failed += 1;
                tracing::debug!(repo = %repo.name, remote, %err, "poll: cannot ask the remote");
                continue;
            }
            listed.insert(remote.to_string(), BTreeMap::new());
        }
        // What the fetch brought, read back: a tracked ref that moved at the remote moved here.
        let path = repo.path.clone();
        let after = tokio::task::spawn_blocking(move || remotes::tracked(&path))
            .await
            .unwrap_or_default();
        for t in &after {
            if let (Some(refs), Some(id)) = (listed.get_mut(&t.remote), &t.fetched) {
                refs.insert(t.remote_ref.clone(), id.clone());
            }
        }
        for remote in moved(&tracked, &listed) {
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
    fn a_remote_moved_when_a_tracked_ref_differs_appears_or_vanishes() {
        let tracked = vec![
            t("origin", "refs/heads/main", Some("a")),
            t("origin", "refs/heads/dev", None),
            t("fork", "refs/heads/x", Some("b")),
        ];
        let listed = |o: &[(&str, &str)], f: &[(&str, &str)]| {
            let map = |v: &[(&str, &str)]| {
                v.iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect::<BTreeMap<_, _>>()
            };
            BTreeMap::from([("origin".to_string(), map(o)), ("fork".to_string(), map(f))])
        };
        let same = listed(&[("refs/heads/main", "a")], &[("refs/heads/x", "b")]);
        assert!(moved(&tracked, &same).is_empty());
        let main_moved = listed(&[("refs/heads/main", "c")], &[("refs/heads/x", "b")]);
        assert_eq!(moved(&tracked, &main_moved), vec!["origin"]);
        let dev_appeared = listed(
            &[("refs/heads/main", "a"), ("refs/heads/dev", "d")],
            &[("refs/heads/x", "b")],
        );
        assert_eq!(moved(&tracked, &dev_appeared), vec!["origin"]);
        let x_deleted = listed(&[("refs/heads/main", "a")], &[]);
        assert_eq!(moved(&tracked, &x_deleted), vec!["fork"]);
        // A remote that could not be asked is not called moved.
        let only_origin = BTreeMap::from([(
            "origin".to_string(),
            BTreeMap::from([("refs/heads/main".to_string(), "a".to_string())]),
        )]);
        assert!(moved(&tracked, &only_origin).is_empty());
    }
}
