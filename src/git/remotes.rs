//! Reading a repository's remotes with gix: their URLs, the remote-tracking ref a pushed
//! ref maps to, and a ref's current value. Read-only.

use gix::bstr::ByteSlice;
use std::path::{Path, PathBuf};

use crate::model::normalize_url;

/// One configured remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteInfo {
    /// Its name, such as `origin`.
    pub name: String,
    /// Its fetch URL as configured (may hold credentials; redact before logging).
    pub url: String,
    /// The URL through [`normalize_url`], local paths made absolute first.
    pub normalized: String,
}

/// Makes a local-path URL absolute against `base` (the worktree), so that `../r.git` and
/// `/home/me/r.git` compare equal; other URLs are returned unchanged.
pub fn absolute_url(url: &str, base: &Path) -> String {
    let is_path = !url.contains("://") && {
        // Not scp-like: a colon before the first slash means `host:path`.
        match url.find(':') {
            Some(colon) => url[..colon].contains('/'),
            None => true,
        }
    };
    if !is_path || Path::new(url).is_absolute() {
        return url.to_string();
    }
    let joined: PathBuf = base.join(url);
    if let Ok(real) = std::fs::canonicalize(&joined) {
        return real.display().to_string();
    }
    // Lexically, as git would resolve it: `a/b/../c` is `a/c`.
    let mut out = PathBuf::new();
    for part in joined.components() {
        match part {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::CurDir => {}
            other => out.push(other),
        }
    }
    out.display().to_string()
}

/// The remotes of the repository at `path`, with their fetch URLs; empty when it cannot be
/// opened.
pub fn list(path: &Path) -> Vec<RemoteInfo> {
    let Ok(repo) = gix::open(path) else {
        return Vec::new();
    };
    let base = repo.workdir().unwrap_or(repo.git_dir()).to_path_buf();
    let mut out = Vec::new();
    for name in repo.remote_names() {
        let Ok(remote) = repo.find_remote(name.as_ref() as &gix::bstr::BStr) else {
            continue;
        };
        let Some(url) = remote.url(gix::remote::Direction::Fetch) else {
            continue;
        };
        let url = url.to_bstring().to_string();
        let normalized = normalize_url(&absolute_url(&url, &base));
        out.push(RemoteInfo {
            name: name.to_string(),
            url,
            normalized,
        });
    }
    out
}

/// Applies one side of a refspec with at most one `*` (git-fetch(1), "CONFIGURED
/// REMOTE-TRACKING BRANCHES"): `refs/heads/main` through `refs/heads/*:refs/remotes/o/*`
/// gives `refs/remotes/o/main`.
fn map_through(name: &str, source: &str, destination: &str) -> Option<String> {
    match (source.split_once('*'), destination.split_once('*')) {
        (Some((pre, post)), Some((dpre, dpost))) => {
            let middle = name.strip_prefix(pre)?.strip_suffix(post)?;
            Some(format!("{dpre}{middle}{dpost}"))
        }
        (None, None) if name == source => Some(destination.to_string()),
        _ => None,
    }
}

/// The remote-tracking ref that `remote`'s fetch refspecs map `remote_ref` to, such as
/// `refs/remotes/origin/main` for `refs/heads/main`; `None` when `remote` is not a
/// configured remote (a push to a URL) or no refspec maps it (tags, usually).
pub fn tracking_ref(repo: &gix::Repository, remote: &str, remote_ref: &str) -> Option<String> {
    let remote = repo.find_remote(remote).ok()?;
    remote
        .refspecs(gix::remote::Direction::Fetch)
        .iter()
        .find_map(|spec| {
            let spec = spec.to_ref();
            let source = spec.source()?.to_string();
            let destination = spec.destination()?.to_string();
            map_through(remote_ref, &source, &destination)
        })
}

/// The commit id `name` points at in `repo` (peeled), or `None` when the ref does not exist.
pub fn ref_target(repo: &gix::Repository, name: &str) -> Option<String> {
    let mut reference = repo.try_find_reference(name).ok()??;
    reference.peel_to_id().ok().map(|id| id.to_string())
}

/// The upstream of `branch` (a short name) when it is a local branch (`git branch --track
/// B other` sets `branch.B.remote` to "." and `branch.B.merge` to `refs/heads/other`), or
/// `None` when its upstream is remote or not configured.
pub fn local_upstream(repo: &gix::Repository, branch: &str) -> Option<gix::refs::FullName> {
    let config = repo.config_snapshot();
    let remote = config.string(format!("branch.{branch}.remote").as_str())?;
    if remote.as_bstr() != "." {
        return None;
    }
    let merge = config.string(format!("branch.{branch}.merge").as_str())?;
    gix::refs::FullName::try_from(merge.to_str_lossy().as_ref()).ok()
}

/// The remote a plain `git fetch` on `branch` (a short name) should ask:
/// `branch.<name>.remote`, or, when the branch tracks a local branch, that branch's remote
/// (git itself would fetch from the repository into itself). `None` when neither names a
/// remote; git then asks `origin`.
pub fn fetch_remote(repo: &gix::Repository, branch: &str) -> Option<String> {
    let config = repo.config_snapshot();
    let remote_of = |b: &str| {
        config
            .string(format!("branch.{b}.remote").as_str())
            .map(|r| r.to_str_lossy().into_owned())
    };
    match remote_of(branch)?.as_str() {
        "." => {
            let local = local_upstream(repo, branch)?;
            let local = local.shorten().to_str_lossy().into_owned();
            remote_of(&local).filter(|r| r != ".")
        }
        other => Some(other.to_string()),
    }
}

/// What a sync needs to know of the branch checked out in a worktree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckedOut {
    /// [`fetch_remote`] for it; `None` when HEAD is detached or names no remote.
    pub fetch_remote: Option<String>,
    /// Whether it tracks a local branch (see [`local_upstream`]): that branch must move
    /// first for it to be pulled.
    pub tracks_local: bool,
    /// Whether `git fetch` would run `git maintenance run --auto` after fetching here:
    /// `maintenance.auto`, true unless set false (git-config(1)).
    pub auto_maintenance: bool,
    /// Whether that maintenance would detach: `maintenance.autoDetach`, else
    /// `gc.autoDetach`, else true (git-config(1)).
    pub maintenance_detaches: bool,
}

/// [`CheckedOut`] for the worktree of `repo` (opened with `gix::open`): with HEAD
/// detached, only its maintenance settings.
pub fn checked_out(repo: &gix::Repository) -> CheckedOut {
    let config = repo.config_snapshot();
    let maintenance = CheckedOut {
        auto_maintenance: config.boolean("maintenance.auto").unwrap_or(true),
        maintenance_detaches: config
            .boolean("maintenance.autoDetach")
            .or_else(|| config.boolean("gc.autoDetach"))
            .unwrap_or(true),
        ..CheckedOut::default()
    };
    let Ok(Some(head)) = repo.head_name() else {
        return maintenance;
    };
    let branch = head.shorten().to_str_lossy();
    CheckedOut {
        fetch_remote: fetch_remote(repo, &branch),
        tracks_local: local_upstream(repo, &branch).is_some(),
        ..maintenance
    }
}

/// One remote ref a local branch tracks, and what this repository last fetched of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracked {
    /// The remote's name (`origin`).
    pub remote: String,
    /// The ref at the remote (`refs/heads/main`).
    pub remote_ref: String,
    /// Its remote-tracking ref here (`refs/remotes/origin/main`), through the remote's
    /// fetch refspecs.
    pub tracking: String,
    /// The id its remote-tracking ref holds here (`refs/remotes/origin/main`), or `None`
    /// when there is none yet.
    pub fetched: Option<String>,
}

/// The remote refs the local branches of the repository at `path` track (their upstreams
/// on configured remotes, `branch.<name>.remote` and `branch.<name>.merge`), each with
/// the id last fetched of it; empty when the repository cannot be opened.
pub fn tracked(path: &Path) -> Vec<Tracked> {
    let Ok(repo) = gix::open(path) else {
        return Vec::new();
    };
    let Ok(platform) = repo.references() else {
        return Vec::new();
    };
    let Ok(branches) = platform.local_branches() else {
        return Vec::new();
    };
    let config = repo.config_snapshot();
    let mut out = Vec::new();
    for branch in branches.flatten() {
        let short = branch.name().shorten().to_str_lossy().into_owned();
        let Some(remote) = config
            .string(format!("branch.{short}.remote").as_str())
            .map(|r| r.to_str_lossy().into_owned())
            .filter(|r| r != "." && !r.contains('/') && !r.contains(':'))
        else {
            continue;
        };
        let Some(merge) = config
            .string(format!("branch.{short}.merge").as_str())
            .map(|m| m.to_str_lossy().into_owned())
        else {
            continue;
        };
        let Some(tracking) = tracking_ref(&repo, &remote, &merge) else {
            continue;
        };
        let fetched = ref_target(&repo, &tracking);
        let entry = Tracked {
            remote,
            remote_ref: merge,
            tracking,
            fetched,
        };
        if !out.contains(&entry) {
            out.push(entry);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refspec_mapping() {
        let (s, d) = ("refs/heads/*", "refs/remotes/origin/*");
        assert_eq!(
            map_through("refs/heads/a/b", s, d).as_deref(),
            Some("refs/remotes/origin/a/b")
        );
        assert_eq!(map_through("refs/tags/v1", s, d), None);
        assert_eq!(
            map_through("refs/heads/main", "refs/heads/main", "refs/remotes/o/main").as_deref(),
            Some("refs/remotes/o/main")
        );
    }

    #[test]
    fn local_paths_become_absolute() {
        let base = Path::new("/nonexistent/work/repo");
        assert_eq!(absolute_url("../r.git", base), "/nonexistent/work/r.git");
        assert_eq!(absolute_url("git@host:x.git", base), "git@host:x.git");
        assert_eq!(absolute_url("https://h/x", base), "https://h/x");
        assert_eq!(absolute_url("/srv/x.git", base), "/srv/x.git");
    }
}
