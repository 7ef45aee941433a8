//! One run of a webhook mirror: fetch the source into its bare cache, read the target's
//! refs with `git ls-remote`, and push each ref that must change with a compare-and-swap
//! (`--force-with-lease=<ref>:<expected>`), never `--mirror`, `--prune` or a `+` refspec.
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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::git::ops::{self, GitError};

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
    /// `ok`, `diverged` (some refs refused) or `failed`.
    pub result: Option<String>,
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
    pub fn new(patterns: &[String], tags: bool) -> Result<Self, String> {
        let mut builder = globset::GlobSetBuilder::new();
        for p in patterns {
            let glob = globset::GlobBuilder::new(p)
                .literal_separator(true)
                .build()
                .map_err(|e| format!("branch pattern {p:?}: {e}"))?;
            builder.add(glob);
        }
        Ok(Filter {
            branches: builder.build().map_err(|e| e.to_string())?,
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
    Journal(String),
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
pub type Journal<'a> = &'a (dyn Fn(&PushMirrorState) -> Result<(), String> + Sync);

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

/// The heads and tags of the cache.
async fn local_refs(cache: &Path, timeout: Duration) -> Result<BTreeMap<String, String>, GitError> {
    let out = ops::run(
        cache,
        &[
            "for-each-ref",
            "--format=%(objectname) %(refname)",
            "refs/heads",
            "refs/tags",
        ],
        timeout,
    )
    .await?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(oid, name)| (name.to_string(), oid.to_string()))
        .collect())
}

async fn is_ancestor(cache: &Path, old: &str, new: &str, timeout: Duration) -> bool {
    ops::run(cache, &["merge-base", "--is-ancestor", old, new], timeout)
        .await
        .is_ok()
}

/// One planned ref update: the lease and the refspec.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Update {
    name: String,
    expected: Option<String>,
    new: Option<String>,
}

/// Runs the mirror once: `cache_root` holds the bare caches, `state` is read and updated,
/// and `journal` saves it with the push's plan ([`PushMirrorState::pending`]) before the push.
///
/// Errors: [`RunError`] when the source cannot be fetched, the target cannot be read or
/// pushed to at all, or the plan cannot be saved; refs refused one by one are in the
/// report instead.
pub async fn run(
    cache_root: &Path,
    remotes: &Remotes,
    filter: &Filter,
    force: bool,
    state: &mut PushMirrorState,
    journal: Journal<'_>,
    timeout: Duration,
) -> Result<RunReport, RunError> {
    let cache =
        crate::git::bare_cache::refresh(cache_root, &remotes.source, timeout, &remotes.source_env)
            .await
            .map_err(|e| RunError::Source(stderr_of(e)))?;
    let source: BTreeMap<String, String> = local_refs(&cache, timeout)
        .await
        .map_err(|e| RunError::Source(stderr_of(e)))?
        .into_iter()
        .filter(|(name, _)| filter.carries(name))
        .collect();
    let target: BTreeMap<String, String> =
        remote_refs(&cache, &remotes.target, &remotes.target_env, timeout)
            .await
            .map_err(|e| target_error(e, &remotes.target_env))?
            .into_iter()
            .filter(|(name, _)| filter.carries(name))
            .collect();

    let mut report = RunReport::default();
    let mut updates = Vec::new();
    for (name, new) in &source {
        match target.get(name) {
            None => updates.push(Update {
                name: name.clone(),
                expected: None,
                new: Some(new.clone()),
            }),
            Some(current) if current == new => {
                state.pushed.insert(name.clone(), new.clone());
            }
            Some(current) => {
                if state.ours(name, current)
                    || force
                    || is_ancestor(&cache, current, new, timeout).await
                {
                    updates.push(Update {
                        name: name.clone(),
                        expected: Some(current.clone()),
                        new: Some(new.clone()),
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
                updates.push(Update {
                    name: name.clone(),
                    expected: Some(current.clone()),
                    new: None,
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

/// One `git push --porcelain` with a lease per ref; records what landed.
async fn push(
    cache: &Path,
    remotes: &Remotes,
    updates: &[Update],
    state: &mut PushMirrorState,
    report: &mut RunReport,
    timeout: Duration,
) -> Result<(), RunError> {
    let mut args: Vec<String> = vec!["push".into(), "--porcelain".into(), "--no-verify".into()];
    for u in updates {
        args.push(format!(
            "--force-with-lease={}:{}",
            u.name,
            u.expected.as_deref().unwrap_or("")
        ));
    }
    args.push("--".into());
    args.push(remotes.target.clone());
    for u in updates {
        // Fully qualified, never `+`: the lease is the only permission to rewrite.
        args.push(match &u.new {
            Some(new) => format!("{new}:{}", u.name),
            None => format!(":{}", u.name),
        });
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    match ops::run_with(cache, &argv, timeout, &remotes.target_env).await {
        Ok(_) => {}
        // Some refs rejected: git exits 1 (what landed is asked with ls-remote below).
        Err(GitError::Failed { stderr, .. }) => {
            if !stderr.contains("[rejected]")
                && !stderr.contains("stale info")
                && !stderr.contains("failed to push some refs")
            {
                return Err(target_error(
                    GitError::Failed {
                        dir: cache.to_path_buf(),
                        command: "push".to_string(),
                        stderr,
                    },
                    &remotes.target_env,
                ));
            }
        }
        Err(e) => return Err(RunError::Target(e.to_string())),
    }
    // What the target has now decides, ref by ref, what landed.
    let after = remote_refs(cache, &remotes.target, &remotes.target_env, timeout)
        .await
        .map_err(|e| target_error(e, &remotes.target_env))?;
    for u in updates {
        let now = after.get(&u.name);
        if now == u.new.as_ref() {
            report.pushed.push(u.name.clone());
            match &u.new {
                Some(new) => {
                    state.pushed.insert(u.name.clone(), new.clone());
                }
                None => {
                    state.pushed.remove(&u.name);
                }
            }
        } else {
            report.rejected.push((
                u.name.clone(),
                "the target refused it or moved it meanwhile (lease failed)".to_string(),
            ));
        }
    }
    Ok(())
}

/// The git environment that sends `token` as an HTTP header on every request
/// (`http.extraHeader` through `GIT_CONFIG_COUNT`, so it is in no URL, argument or log):
/// `user:password` becomes Basic auth, anything else a Bearer token. `ssh`: the private key
/// file and the known_hosts file ssh uses, through `GIT_SSH_COMMAND` (either may be
/// absent; with neither, git's own ssh settings apply).
pub fn credential_env(token: Option<&str>, ssh: SshFiles<'_>) -> Vec<(String, String)> {
    use base64::Engine;
    let mut env = Vec::new();
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        let value = if token.contains(':') {
            format!(
                "Authorization: Basic {}",
                base64::engine::general_purpose::STANDARD.encode(token)
            )
        } else {
            format!("Authorization: Bearer {token}")
        };
        env.push(("GIT_CONFIG_COUNT".to_string(), "1".to_string()));
        env.push((
            "GIT_CONFIG_KEY_0".to_string(),
            "http.extraHeader".to_string(),
        ));
        env.push(("GIT_CONFIG_VALUE_0".to_string(), value));
    }
    if ssh.key.is_some() || ssh.known_hosts.is_some() {
        // GIT_SSH_COMMAND goes through the shell: paths are quoted for it (a path cannot
        // hold the NUL byte that alone would make quoting fail).
        let quoted = |p: &Path| {
            let path = p.display().to_string();
            shlex::try_quote(&path).map_or(path.clone(), |q| q.into_owned())
        };
        let mut command = "ssh -o BatchMode=yes".to_string();
        if let Some(key) = ssh.key {
            command.push_str(&format!(" -i {} -o IdentitiesOnly=yes", quoted(key)));
        }
        if let Some(file) = ssh.known_hosts {
            // ssh reads this option as a list of files split at blanks, unless the path
            // is in double quotes (ssh_config(5)).
            let option = format!("UserKnownHostsFile=\"{}\"", file.display());
            command.push_str(&format!(
                " -o {} -o StrictHostKeyChecking=yes",
                quoted(Path::new(&option))
            ));
        }
        env.push(("GIT_SSH_COMMAND".to_string(), command));
    }
    env
}

/// The files ssh is given for one side of a mirror.
#[derive(Debug, Clone, Copy, Default)]
pub struct SshFiles<'a> {
    /// A private key (`-i`, with `IdentitiesOnly=yes`).
    pub key: Option<&'a Path>,
    /// A known_hosts file (`UserKnownHostsFile`, with `StrictHostKeyChecking=yes`).
    pub known_hosts: Option<&'a Path>,
}

/// Where the state of mirror `name` lives under `dir` (`~/.gitsync/webhooks`).
pub fn state_path(dir: &Path, name: &str) -> PathBuf {
    dir.join("state").join(format!("{name}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn credentials_go_in_a_header_not_a_url() {
        let none = SshFiles::default();
        let env = credential_env(Some("user:pw"), none);
        assert_eq!(env[2].1, "Authorization: Basic dXNlcjpwdw==");
        let env = credential_env(Some("tok"), none);
        assert_eq!(env[2].1, "Authorization: Bearer tok");
        assert!(credential_env(None, none).is_empty());
        let files = SshFiles {
            key: Some(Path::new("/keys/it's mine")),
            known_hosts: Some(Path::new("/keys/known hosts")),
        };
        let env = credential_env(None, files);
        assert_eq!(env[0].0, "GIT_SSH_COMMAND");
        let words = shlex::split(&env[0].1).expect("a shell command");
        assert_eq!(
            words[..9],
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-i",
                "/keys/it's mine",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "UserKnownHostsFile=\"/keys/known hosts\""
            ],
            "{}",
            env[0].1
        );
    }
}
