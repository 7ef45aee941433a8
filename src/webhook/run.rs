//! One run of a webhook mirror: fetch the source into its bare cache, read the target's
//! refs with `git ls-remote` (once), and push each ref that must change with a
//! compare-and-swap ([`crate::git::refsync`]: `--force-with-lease=<ref>:<expected>`), never
//! `--mirror`, `--prune` or a `+` refspec; what landed is what the push reports.
//!
//! Rules, per ref (heads matching the mirror's patterns, and tags unless turned off):
//! - missing at the target: created (lease: must not exist);
//! - at the target at the id this mirror pushed last, or at an ancestor of the source's
//!   id: moved to the source's id (lease: the id just read);
//! - at the target elsewhere (moved there on its own): refused as diverged, unless
//!   `force`, which overwrites through the lease on the id just read;
//! - gone at the source: deleted at the target only if the target still has the id this
//!   mirror pushed there (lease on it); a ref that exists only at the target survives.
//!
//! One diverged or rejected ref does not stop the others (no `--atomic`).
//!
//! A run a webhook asked for, after a run that pushed, lists the target once: the push's
//! own. It pushes what changed at the source since the last run, each ref leased on the id
//! this mirror pushed there; only when the target refuses one (it moved on its own) does
//! the run read the target with `git ls-remote` and decide by the rules above. A `full`
//! run (start-up, reconciliation, `gitsync webhooks run`) always reads the target first.
//! Creations, and branches moved to a descendant, go without a lease (git's own
//! fast-forward rule refuses anything else).

use super::WebhookError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::git::ops::{self, GitError};
use crate::git::refsync::{self, Expect, RefUpdate};

/// What a mirror remembers between runs (`~/.gitsync/webhooks/state/<name>.json`), and
/// what `gitsync webhooks status` shows.
#[derive(Debug, Default, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PushMirrorState {
    /// The id this mirror pushed last, per full ref name.
    #[serde(default)]
    pub pushed: BTreeMap<String, String>,
    /// The ids a push under way is sending, per full ref name: written before the push
    /// starts and cleared once the target has been read back, so a run killed in between
    /// still knows these refs as its own (to delete or move them later).
    #[serde(default)]
    pub pending: BTreeMap<String, String>,
    /// When the last run ended (RFC 3339, UTC).
    pub last_run: Option<chrono::DateTime<chrono::Utc>>,
    /// How the last run ended.
    pub result: Option<RunResult>,
    /// Refs changed at the target by the last run.
    #[serde(default)]
    pub refs_pushed: usize,
    /// Refs refused as diverged by the last run.
    #[serde(default)]
    pub diverged: Vec<String>,
    /// The last error, credentials redacted.
    pub error: Option<String>,
    /// Runs since the state was created.
    #[serde(default)]
    pub runs: u64,
    /// How long the last run took, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<u64>,
}

/// How a mirror's last run ended, as its state file stores it (the words `webhooks status`
/// shows).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    /// Every ref that had to move moved.
    Ok,
    /// Some refs were refused (diverged at the target, or rejected).
    Diverged,
    /// The run failed as a whole; `error` says why.
    Failed,
}

impl RunResult {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            RunResult::Ok => "ok",
            RunResult::Diverged => "diverged",
            RunResult::Failed => "failed",
        }
    }
}

/// How to reach the source and the target.
#[derive(Debug, Clone)]
pub struct Remotes {
    /// The source URL (no credentials).
    pub source: String,
    /// Environment for git talking to the source.
    pub source_env: Vec<(String, String)>,
    /// The target URL (no credentials).
    pub target: String,
    /// Environment for git talking to the target.
    pub target_env: Vec<(String, String)>,
}

/// Which refs a mirror carries.
#[derive(Debug, Clone)]
pub struct Filter {
    /// Branch patterns (`globset`, `*` not crossing `/`).
    pub branches: globset::GlobSet,
    /// Whether tags are mirrored.
    pub tags: bool,
}

impl Filter {
    /// The filter for `patterns` (default `["*"]` and `**`-style as globset reads them).
    ///
    /// Errors: a pattern globset cannot read.
    pub fn new(patterns: &[String], tags: bool) -> Result<Self, WebhookError> {
        let mut builder = globset::GlobSetBuilder::new();
        for p in patterns {
            let glob = globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| WebhookError::Setting(format!("branch pattern {p:?}: {e}")))?;
            builder.add(glob);
        }
        Ok(Filter {
            branches: builder
                .build()
                .map_err(|e| WebhookError::Setting(e.to_string()))?,
            tags,
        })
    }

    /// Whether the full ref name `name` is carried.
    pub fn carries(&self, name: &str) -> bool {
        if let Some(branch) = name.strip_prefix("refs/heads/") {
            self.branches.is_match(branch)
        } else if name.starts_with("refs/tags/") {
            self.tags && !name.ends_with("^{}")
        } else {
            false
        }
    }
}

/// What one run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunReport {
    /// Refs created, moved or deleted at the target.
    pub pushed: Vec<String>,
    /// Refs refused because the target moved them on its own.
    pub diverged: Vec<String>,
    /// Refs the target rejected (its message).
    pub rejected: Vec<(String, String)>,
}

/// Why a run failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Fetching the source failed.
    #[error("source: {0}")]
    Source(String),
    /// Reading or pushing to the target failed.
    #[error("target: {0}")]
    Target(String),
    /// The plan of a push could not be recorded first (nothing was pushed).
    #[error("cannot record the push before making it: {0}")]
    Journal(#[source] super::WebhookError),
}

impl PushMirrorState {
    /// Whether `id` at the target's ref `name` was put there by this mirror (pushed, or
    /// being pushed when a run was interrupted).
    fn ours(&self, name: &str, id: &str) -> bool {
        self.pushed.get(name).is_some_and(|p| p == id)
            || self.pending.get(name).is_some_and(|p| p == id)
    }
}

/// Saves a mirror's state (the caller's file); called before a push goes out.
pub type Journal<'a> = &'a (dyn Fn(&PushMirrorState) -> Result<(), WebhookError> + Sync);

fn stderr_of(e: GitError) -> String {
    match e {
        GitError::Failed { stderr, .. } => stderr,
        other => other.to_string(),
    }
}

/// The target's error, said plainly when it is about credentials: git asks for a user
/// name (and, with prompts off, fails) when the server answers 401 to the header sent.
fn target_error(e: GitError, env: &[(String, String)]) -> RunError {
    let text = stderr_of(e);
    let lower = text.to_lowercase();
    let auth = lower.contains("could not read username")
        || lower.contains("authentication failed")
        || lower.contains("401");
    let has_token = env.iter().any(|(k, _)| k == "GIT_CONFIG_VALUE_0");
    RunError::Target(if auth && has_token {
        "authentication failed (HTTP 401): the target refused the credentials in `target_token_env`"
            .to_string()
    } else if auth {
        "authentication failed (HTTP 401): set `target_token_env` (a token, or user:password)"
            .to_string()
    } else {
        text
    })
}

/// The heads and tags at `remote` (`git ls-remote --heads --tags`), peeled lines left out.
async fn remote_refs(
    dir: &Path,
    remote: &str,
    env: &[(String, String)],
    timeout: Duration,
) -> Result<BTreeMap<String, String>, GitError> {
    let out = ops::run_with(
        dir,
        &["ls-remote", "--heads", "--tags", "--", remote],
        timeout,
        env,
    )
    .await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(_, name)| !name.ends_with("^{}"))
        .map(|(oid, name)| (name.to_string(), oid.to_string()))
        .collect())
}

async fn is_ancestor(cache: &Path, old: &str, new: &str, timeout: Duration) -> bool {
    ops::run(cache, &["merge-base", "--is-ancestor", old, new], timeout)
        .await
        .is_ok()
}

/// How a run treats the target.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mode {
    /// Overwrite refs that moved at the target on their own (through a lease on them).
    pub force: bool,
    /// Read the target before pushing, whatever the last run left there.
    pub full: bool,
}

/// Runs the mirror once: `cache_root` holds the bare caches, `state` is read and updated,
/// and `journal` saves it with the push's plan ([`PushMirrorState::pending`]) before the push;
/// `mode` says whether to force and whether to read the target first.
///
/// Errors: [`RunError`] when the source cannot be fetched, the target cannot be read or
/// pushed to at all, or the plan cannot be saved; refs refused one by one are in the
/// report instead.
pub async fn run(
    cache_root: &Path,
    remotes: &Remotes,
    filter: &Filter,
    mode: Mode,
    state: &mut PushMirrorState,
    journal: Journal<'_>,
    timeout: Duration,
) -> Result<RunReport, RunError> {
    let Mode { force, full } = mode;
    let cache =
        crate::git::bare_cache::refresh(cache_root, &remotes.source, timeout, &remotes.source_env)
            .await
            .map_err(|e| RunError::Source(stderr_of(e)))?;
    let source: BTreeMap<String, String> = refsync::heads_and_tags(&cache, timeout)
        .await
        .map_err(|e| RunError::Source(stderr_of(e)))?
        .into_iter()
        .filter(|(name, _)| filter.carries(name))
        .collect();
    let mut report = RunReport::default();
    if !full && !state.pushed.is_empty() && state.pending.is_empty() {
        let updates = since_last_run(&source, filter, state);
        if updates.is_empty() {
            return Ok(report);
        }
        for u in &updates {
            if let Some(new) = &u.new {
                state.pending.insert(u.name.clone(), new.clone());
            }
        }
        journal(state).map_err(RunError::Journal)?;
        push(&cache, remotes, &updates, state, &mut report, timeout).await?;
        if report.rejected.is_empty() {
            state.pending.clear();
            return Ok(report);
        }
        // The target moved on its own: read it, and decide ref by ref.
        tracing::info!(
            refused = report.rejected.len(),
            "the target is not where this mirror left it; reading it"
        );
        report.rejected.clear();
    }
    let target: BTreeMap<String, String> =
        remote_refs(&cache, &remotes.target, &remotes.target_env, timeout)
            .await
            .map_err(|e| target_error(e, &remotes.target_env))?
            .into_iter()
            .filter(|(name, _)| filter.carries(name))
            .collect();

    let mut updates = Vec::new();
    for (name, new) in &source {
        match target.get(name) {
            None => updates.push(RefUpdate {
                name: name.clone(),
                new: Some(new.clone()),
                expect: Expect::FastForward,
            }),
            Some(current) if current == new => {
                state.pushed.insert(name.clone(), new.clone());
            }
            Some(current) => {
                if state.ours(name, current) || force {
                    updates.push(RefUpdate {
                        name: name.clone(),
                        new: Some(new.clone()),
                        expect: Expect::At(current.clone()),
                    });
                } else if is_ancestor(&cache, current, new, timeout).await {
                    // A tag moves only with a lease: git refuses to move one without force.
                    let expect = if name.starts_with("refs/tags/") {
                        Expect::At(current.clone())
                    } else {
                        Expect::FastForward
                    };
                    updates.push(RefUpdate {
                        name: name.clone(),
                        new: Some(new.clone()),
                        expect,
                    });
                } else {
                    report.diverged.push(name.clone());
                }
            }
        }
    }
    for (name, current) in &target {
        if !source.contains_key(name) {
            if state.ours(name, current) {
                updates.push(RefUpdate {
                    name: name.clone(),
                    new: None,
                    expect: Expect::At(current.clone()),
                });
            } else {
                // Never pushed by this mirror (or moved since): it stays.
                state.pushed.remove(name);
            }
        }
    }
    if !updates.is_empty() {
        for u in &updates {
            if let Some(new) = &u.new {
                state.pending.insert(u.name.clone(), new.clone());
            }
        }
        journal(state).map_err(RunError::Journal)?;
        push(&cache, remotes, &updates, state, &mut report, timeout).await?;
    }
    // The target was read back: what landed is in `pushed`, the rest is not ours.
    state.pending.clear();
    Ok(report)
}

/// The updates that bring the target from where this mirror left it (`state.pushed`) to
/// `source`: moved refs leased on the id pushed last, new refs without a lease (git
/// refuses one that exists at the target unless it is a fast-forward), refs gone at the
/// source deleted under a lease.
fn since_last_run(
    source: &BTreeMap<String, String>,
    filter: &Filter,
    state: &PushMirrorState,
) -> Vec<RefUpdate> {
    let mut updates = Vec::new();
    for (name, new) in source {
        match state.pushed.get(name) {
            Some(old) if old == new => {}
            Some(old) => updates.push(RefUpdate {
                name: name.clone(),
                new: Some(new.clone()),
                expect: Expect::At(old.clone()),
            }),
            None => updates.push(RefUpdate {
                name: name.clone(),
                new: Some(new.clone()),
                expect: Expect::FastForward,
            }),
        }
    }
    for (name, old) in &state.pushed {
        if filter.carries(name) && !source.contains_key(name) {
            updates.push(RefUpdate {
                name: name.clone(),
                new: None,
                expect: Expect::At(old.clone()),
            });
        }
    }
    updates
}

/// One compare-and-swap push of `updates` ([`refsync::push`]); records what landed, as
/// `git push --porcelain` reports it ref by ref.
async fn push(
    cache: &Path,
    remotes: &Remotes,
    updates: &[RefUpdate],
    state: &mut PushMirrorState,
    report: &mut RunReport,
    timeout: Duration,
) -> Result<(), RunError> {
    let results = refsync::push(
        cache,
        &remotes.target,
        updates,
        &remotes.target_env,
        timeout,
    )
    .await
    .map_err(|e| target_error(e, &remotes.target_env))?;
    for (u, result) in updates.iter().zip(results) {
        match result {
            Ok(()) => {
                report.pushed.push(u.name.clone());
                match &u.new {
                    Some(new) => {
                        state.pushed.insert(u.name.clone(), new.clone());
                    }
                    None => {
                        state.pushed.remove(&u.name);
                    }
                }
            }
            Err(why) => report.rejected.push((
                u.name.clone(),
                format!("the target refused it or moved it meanwhile ({why})"),
            )),
        }
    }
    Ok(())
}

/// Where the state of mirror `name` lives under `dir` (`~/.gitsync/webhooks`).
pub fn state_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("state").join(format!("{name}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_are_stored_as_the_words_older_state_files_hold() {
        for (word, result) in [
            ("ok", RunResult::Ok),
            ("diverged", RunResult::Diverged),
            ("failed", RunResult::Failed),
        ] {
            let text = format!(r#"{{"result":"{word}","last_run":null,"error":null}}"#);
            let state: PushMirrorState = serde_json::from_str(&text).expect("an older state file");
            assert_eq!(state.result, Some(result));
            assert_eq!(result.as_str(), word);
            let back = serde_json::to_value(&state).expect("serializes");
            assert_eq!(back["result"], word);
        }
    }

    #[test]
    fn the_filter_carries_matching_heads_and_tags_only() {
        let f = Filter::new(&["main".into(), "release/*".into()], true).expect("filter");
        assert!(f.carries("refs/heads/main"));
        assert!(f.carries("refs/heads/release/1.0"));
        assert!(!f.carries("refs/heads/release/1.0/x"));
        assert!(!f.carries("refs/heads/dev"));
        assert!(f.carries("refs/tags/v1"));
        assert!(!f.carries("refs/pull/1/head"));
        let f = Filter::new(&["*".into()], false).expect("filter");
        assert!(!f.carries("refs/tags/v1"));
        assert!(f.carries("refs/heads/x"));
    }
}
