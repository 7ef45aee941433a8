//! The records gitsync shares between machines: a repository's state and a push event.
//!
//! These are the JSON shapes stored by every backend and printed by `gitsync status --json`;
//! changing a field name changes the wire format. Times are UTC, RFC 3339. No record holds a
//! secret: remote URLs are stored with credentials redacted (see [`crate::util::redact::redact_url`]).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The one-word summary of a repository, as `gitsync status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Summary {
    /// HEAD equals its upstream.
    UpToDate,
    /// HEAD has commits its upstream lacks, and not the reverse.
    Ahead,
    /// The upstream has commits HEAD lacks, and not the reverse.
    Behind,
    /// Both sides have commits the other lacks.
    Diverged,
    /// The branch has no upstream configured (or no commit yet).
    NoUpstream,
    /// An upstream is configured but its remote-tracking ref does not exist.
    UpstreamGone,
    /// HEAD is detached.
    Detached,
    /// The repository could not be read; see `error`.
    Error,
}

impl Summary {
    /// The snake_case name used in JSON and in the table.
    pub fn as_str(self) -> &'static str {
        match self {
            Summary::UpToDate => "up_to_date",
            Summary::Ahead => "ahead",
            Summary::Behind => "behind",
            Summary::Diverged => "diverged",
            Summary::NoUpstream => "no_upstream",
            Summary::UpstreamGone => "upstream_gone",
            Summary::Detached => "detached",
            Summary::Error => "error",
        }
    }
}

/// A git operation that is in progress in a worktree (what `git status` warns about).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Nothing in progress.
    #[default]
    None,
    /// `git merge` stopped (MERGE_HEAD exists).
    Merge,
    /// `git rebase` or `git am` stopped.
    Rebase,
    /// `git cherry-pick` stopped.
    CherryPick,
    /// `git revert` stopped.
    Revert,
    /// `git bisect` is running.
    Bisect,
}

/// The last commit on HEAD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastCommit {
    /// Committer time, UTC.
    pub time: DateTime<Utc>,
    /// First line of the message.
    pub summary: String,
}

/// One repository's state on one host: one record in the state store.
///
/// Counts follow `git status --porcelain=v2`: `staged` counts paths whose index differs from
/// HEAD, `unstaged` paths whose worktree differs from the index, `untracked` untracked
/// entries (a wholly untracked folder counts once), `conflicted` unmerged paths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoState {
    /// The machine this state was read on.
    pub host: String,
    /// Path relative to the configured root, with `/` separators.
    pub repo: String,
    /// Checked-out branch's short name, or `None` when detached.
    pub branch: Option<String>,
    /// HEAD's commit id (hex), or `None` before the first commit.
    pub head: Option<String>,
    /// Upstream's short name such as `origin/main`, when one is configured.
    pub upstream: Option<String>,
    /// The upstream's remote URL, credentials redacted.
    #[serde(default)]
    pub remote_url: Option<String>,
    /// Commits on HEAD that the upstream lacks.
    pub ahead: u32,
    /// Commits on the upstream that HEAD lacks.
    pub behind: u32,
    /// Paths staged (index differs from HEAD).
    pub staged: u32,
    /// Paths changed in the worktree but not staged.
    pub unstaged: u32,
    /// Untracked entries.
    pub untracked: u32,
    /// Unmerged (conflicted) paths.
    pub conflicted: u32,
    /// Entries in `refs/stash`'s reflog.
    pub stashes: u32,
    /// Operation in progress.
    pub operation: Operation,
    /// One-word summary.
    pub state: Summary,
    /// HEAD's commit time and summary.
    pub last_commit: Option<LastCommit>,
    /// When this state was read, UTC.
    pub updated_at: DateTime<Utc>,
    /// Why the last automatic fast-forward was refused, or `None`.
    pub pull_blocked: Option<String>,
    /// Why the repository could not be read, when `state` is `error`.
    #[serde(default)]
    pub error: Option<String>,
    /// Initialized submodules with work of their own, one line each, such as
    /// `lib: 1 modified, 2 untracked, at 1a2b3c4 (recorded 5d6e7f8)`; empty when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub submodules: Vec<String>,
    /// Local branches other than the checked-out one that are still behind their
    /// upstream after the daemon's last fetch (checked out in another worktree, or with
    /// commits of their own); 0 when none or not counted.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub branches_behind: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl RepoState {
    /// An `error` state for a repository that could not be read.
    pub fn error(host: &str, repo: &str, message: String) -> Self {
        RepoState {
            host: host.to_string(),
            repo: repo.to_string(),
            branch: None,
            head: None,
            upstream: None,
            remote_url: None,
            ahead: 0,
            behind: 0,
            staged: 0,
            unstaged: 0,
            untracked: 0,
            conflicted: 0,
            stashes: 0,
            operation: Operation::None,
            state: Summary::Error,
            last_commit: None,
            updated_at: Utc::now(),
            pull_blocked: None,
            error: Some(message),
            submodules: Vec::new(),
            branches_behind: 0,
        }
    }

    /// True when no worktree or index change would be lost by a checkout.
    pub fn is_clean(&self) -> bool {
        self.staged == 0 && self.unstaged == 0 && self.conflicted == 0
    }

    /// The dirty markers in gita's style, as `gitsync status` and the status page show
    /// them: `+` staged, `*` unstaged, `?` untracked, `!` conflicted, `$` stashed; and `S`,
    /// a submodule with work of its own. Empty when none applies.
    pub fn markers(&self) -> String {
        let mut out = String::new();
        for (n, mark) in [
            (self.staged, '+'),
            (self.unstaged, '*'),
            (self.untracked, '?'),
            (self.conflicted, '!'),
            (self.stashes, '$'),
        ] {
            if n > 0 {
                out.push(mark);
            }
        }
        if !self.submodules.is_empty() {
            out.push('S');
        }
        out
    }

    /// The NOTE column of `gitsync status` and the status page: the error, else why the
    /// pull was refused, else the submodules with work of their own; then how many other
    /// branches are behind. Empty when there is nothing to say.
    pub fn note(&self) -> String {
        let main = if let Some(text) = self.error.clone().or_else(|| self.pull_blocked.clone()) {
            text
        } else {
            match self.submodules.as_slice() {
                [] => String::new(),
                [one] => format!("submodule {one}"),
                [one, rest @ ..] => format!("submodule {one} (+{} more)", rest.len()),
            }
        };
        let others = match self.branches_behind {
            0 => String::new(),
            1 => "1 other branch behind".to_string(),
            n => format!("{n} other branches behind"),
        };
        match (main.is_empty(), others.is_empty()) {
            (_, true) => main,
            (true, false) => others,
            (false, false) => format!("{main}; {others}"),
        }
    }

    /// Whether two states say the same thing, ignoring `updated_at`: used so that nothing
    /// is written to the store when nothing changed.
    pub fn same_as(&self, other: &RepoState) -> bool {
        let mut a = self.clone();
        a.updated_at = other.updated_at;
        a == *other
    }
}

/// One host's liveness record, written by its daemon at start-up and every
/// `pull.heartbeat`; one per host in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostRecord {
    /// The host's name in the store (the config's `hostname`).
    pub host: String,
    /// gitsync's version on that host.
    pub version: String,
    /// Which machine (and user) publishes under this name: 16 hex digits derived from
    /// `/etc/machine-id` and an id generated in `~/.gitsync/machine-id`.
    #[serde(default)]
    pub machine_id: Option<String>,
    /// That machine for people: `user@nodename`.
    #[serde(default)]
    pub machine: Option<String>,
    /// When the daemon started, UTC.
    #[serde(default)]
    pub started_at: Option<DateTime<Utc>>,
    /// The last heartbeat, UTC.
    pub last_seen: DateTime<Utc>,
    /// The host's heartbeat interval, in seconds (default 60).
    #[serde(default)]
    pub heartbeat_secs: Option<u64>,
    /// When the host last read every repository (its last full update ended), UTC.
    #[serde(default)]
    pub checked_at: Option<DateTime<Utc>>,
    /// When its daemon stopped gracefully (`gitsync stop`, a unit stopped, a clean
    /// shutdown), UTC; absent while it runs or after a crash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stopped_at: Option<DateTime<Utc>>,
    /// What keeps the running daemon from working, for the other machines to see (its
    /// event queue is missing, the bus cannot be read); absent while all is well.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl HostRecord {
    /// How long the host has been silent at `now` when that is more than 3 heartbeat
    /// intervals, or since its daemon stopped (it is `offline`); `None` while it is alive.
    pub fn offline_for(&self, now: DateTime<Utc>) -> Option<std::time::Duration> {
        if let Some(stopped) = self.stopped_at {
            return Some((now - stopped).to_std().unwrap_or_default());
        }
        let silent = (now - self.last_seen).to_std().ok()?;
        let window = std::time::Duration::from_secs(3 * self.heartbeat_secs.unwrap_or(60).max(1));
        (silent > window).then_some(silent)
    }

    /// The host's liveness at `now` in one word, as `status --json` (`host_state`) and the
    /// status page say it: `online`, `stopped` (a clean stop) or `offline`.
    pub fn liveness(&self, now: DateTime<Utc>) -> &'static str {
        match (self.offline_for(now), self.stopped_at) {
            (None, _) => "online",
            (Some(_), Some(_)) => "stopped",
            (Some(_), None) => "offline",
        }
    }
}

/// A push that landed on a remote, announced to the other machines.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEvent {
    /// Derived from (repo, ref, new) so duplicates collapse.
    pub id: String,
    /// The machine that pushed.
    pub host: String,
    /// Repository path relative to root.
    pub repo: String,
    /// The remote URL, credentials redacted.
    pub remote_url: String,
    /// Full ref name such as `refs/heads/main`.
    #[serde(rename = "ref")]
    pub ref_name: String,
    /// The ref's old commit id (all zeros when created).
    pub old: String,
    /// The ref's new commit id (all zeros when deleted).
    pub new: String,
    /// When the push was confirmed, UTC.
    pub at: DateTime<Utc>,
}

impl PushEvent {
    /// Checks what a receiver relies on: `old` and `new` are object ids (40 or 64 hex
    /// digits), `ref` is a valid full ref name (git-check-ref-format(1), under `refs/`), and
    /// `repo` is a relative path without `..`. A well-formed record from a confused or hostile
    /// sender (`--upload-pack=...` as a ref) is refused here, before anything runs.
    ///
    /// Errors: a message naming the field that is wrong.
    pub fn validate(&self) -> Result<(), InvalidEvent> {
        for (field, oid) in [("old", &self.old), ("new", &self.new)] {
            let hex = oid
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
            if !hex || !(oid.len() == 40 || oid.len() == 64) {
                return Err(InvalidEvent {
                    field,
                    expected: "an object id",
                    value: oid.clone(),
                });
            }
        }
        let name = self.ref_name.as_str();
        if !name.starts_with("refs/")
            || gix::refs::FullName::try_from(name).is_err()
            || name.starts_with('-')
        {
            return Err(InvalidEvent {
                field: "ref",
                expected: "a valid ref name",
                value: name.to_string(),
            });
        }
        let repo = std::path::Path::new(&self.repo);
        if self.repo.is_empty()
            || repo.is_absolute()
            || repo
                .components()
                .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(InvalidEvent {
                field: "repo",
                expected: "a path under the root",
                value: self.repo.clone(),
            });
        }
        Ok(())
    }
}

/// Why a push event is refused ([`PushEvent::validate`]): the field that is wrong, what
/// it must be, and what it was.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field} is not {expected}: {value:?}")]
pub struct InvalidEvent {
    /// The field (`old`, `new`, `ref` or `repo`).
    pub field: &'static str,
    /// What it must be, as "an object id".
    pub expected: &'static str,
    /// What it was.
    pub value: String,
}

/// The all-zero object id git uses for "no commit" (a created or deleted ref).
pub const ZERO_OID: &str = "0000000000000000000000000000000000000000";

/// Whether `oid` is all zeros (git's "no commit", SHA-1 or SHA-256 length).
pub fn is_zero_oid(oid: &str) -> bool {
    !oid.is_empty() && oid.bytes().all(|b| b == b'0')
}

impl PushEvent {
    /// The event for `ref_name` of `repo` moving from `old` to `new`, confirmed now; `id`
    /// is the hex SHA-256 of `repo`, `ref_name` and `new` (NUL-separated), so the same
    /// push announced twice collapses (also as an SQS FIFO `MessageDeduplicationId`,
    /// which allows 128 characters). `remote_url` is redacted here.
    pub fn new(
        host: &str,
        repo: &str,
        remote_url: &str,
        ref_name: &str,
        old: &str,
        new: &str,
    ) -> Self {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        for part in [repo, ref_name, new] {
            hasher.update(part.as_bytes());
            hasher.update([0u8]);
        }
        PushEvent {
            id: hex::encode(hasher.finalize()),
            host: host.to_string(),
            repo: repo.to_string(),
            remote_url: crate::util::redact::redact_url(remote_url),
            ref_name: ref_name.to_string(),
            old: old.to_string(),
            new: new.to_string(),
            at: Utc::now(),
        }
    }
}

/// A remote URL reduced to what identifies the repository, so that two machines' spellings
/// of one remote compare equal: no scheme, no user or password, no port, host in lower
/// case, no trailing `/` or `.git`. `https://u:pw@GitHub.com/a/b.git`,
/// `ssh://git@github.com:22/a/b` and `git@github.com:a/b.git` all become `github.com/a/b`;
/// `file:///srv/b.git` and `/srv/b.git` become `/srv/b`. URL forms: git-fetch(1), "GIT URLS".
pub fn normalize_url(url: &str) -> String {
    let url = url.trim();
    let trim = |path: &str| -> String {
        let path = path.trim_end_matches('/');
        path.strip_suffix(".git")
            .unwrap_or(path)
            .trim_end_matches('/')
            .to_string()
    };
    if let Some(path) = url.strip_prefix("file://") {
        return trim(path);
    }
    if let Some((_, rest)) = url.split_once("://") {
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = match host.rsplit_once(':') {
            Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => host,
        };
        return format!("{}{}", host.to_ascii_lowercase(), trim(path));
    }
    // scp-like `[user@]host:path`, when the colon comes before any slash (git's own rule).
    if let Some(colon) = url.find(':')
        && !url[..colon].contains('/')
        && colon > 1
    {
        let (authority, path) = (&url[..colon], &url[colon + 1..]);
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let path = path.trim_start_matches('/');
        return format!("{}/{}", host.to_ascii_lowercase(), trim(path));
    }
    trim(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_remote_urls() {
        for url in [
            "https://u:pw@GitHub.com/a/b.git",
            "https://github.com/a/b/",
            "ssh://git@github.com:22/a/b",
            "git@github.com:a/b.git",
            "github.com:/a/b",
        ] {
            assert_eq!(normalize_url(url), "github.com/a/b", "{url}");
        }
        assert_eq!(normalize_url("file:///srv/b.git/"), "/srv/b");
        assert_eq!(normalize_url("/srv/b.git"), "/srv/b");
        assert_ne!(normalize_url("/srv/b"), normalize_url("/srv/c"));
    }

    #[test]
    fn nonsense_events_are_refused() {
        let good = PushEvent::new(
            "h",
            "r",
            "/srv/y",
            "refs/heads/main",
            ZERO_OID,
            &"a".repeat(40),
        );
        assert_eq!(good.validate(), Ok(()));
        let mut bad = good.clone();
        bad.new = "not-hex-at-all-0000000000000000000000000".to_string();
        assert_eq!(bad.validate().map_err(|e| e.field), Err("new"));
        let mut bad = good.clone();
        bad.ref_name = "--upload-pack=touch /tmp/x".to_string();
        assert_eq!(bad.validate().map_err(|e| e.field), Err("ref"));
        let mut bad = good.clone();
        bad.ref_name = "refs/heads/a..b".to_string();
        assert!(bad.validate().is_err());
        let mut bad = good.clone();
        bad.repo = "../../etc".to_string();
        assert_eq!(bad.validate().map_err(|e| e.field), Err("repo"));
    }

    #[test]
    fn event_ids_collapse_duplicates_only() {
        let a = PushEvent::new("h", "r", "https://t@x/y", "refs/heads/main", ZERO_OID, "1");
        let b = PushEvent::new("other", "r", "/srv/y", "refs/heads/main", "2", "1");
        let c = PushEvent::new("h", "r", "/srv/y", "refs/heads/main", ZERO_OID, "3");
        assert_eq!(a.id, b.id);
        assert_ne!(a.id, c.id);
        assert_eq!(a.id.len(), 64);
        assert_eq!(a.remote_url, "https://***@x/y");
        assert!(is_zero_oid(ZERO_OID) && !is_zero_oid("1"));
    }
}
