//! Shipping a repository's tree to servers over rsync+ssh (what an rsync-over-ssh repository sync script does, done safely):
//! exactly the commit's tree ([`export`]), behind a secret scan that fails closed
//! ([`scan`]), as atomic releases with a symlink flip ([`ship`]) over the system ssh
//! ([`ssh`]), to many targets in parallel, verified and rolled back on demand.

pub mod ahead;
pub mod delta;
pub mod error;
pub mod export;
pub mod inline;
pub mod scan;
pub mod ship;
pub mod ssh;
pub mod target_lock;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::{Config, DeployConfig, DeployTarget};
use crate::git::ops;
use crate::util::words::short_id;
pub use error::DeployError;

/// Default releases kept per target.
pub const DEFAULT_KEEP: usize = 5;
/// Targets shipped at once.
const PARALLEL: usize = 4;

/// One deploy, resolved.
#[derive(Debug, Clone)]
pub struct Deploy {
    /// The entry as configured.
    pub spec: DeployConfig,
    /// The repository's worktree (or bare folder).
    pub repo: PathBuf,
    /// `~/.gitsync/deploy/<name>`.
    pub dir: PathBuf,
    /// Limit of one git command.
    pub git_timeout: Duration,
}

/// What one target has, as last shipped or checked (`~/.gitsync/deploy/<name>/state.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct TargetState {
    /// The commit `current` points at, as far as gitsync knows.
    pub rev: Option<String>,
    /// When the last ship or check ended.
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// How the last ship or rollback ended.
    pub result: Option<ShipResult>,
    /// The last error.
    pub error: Option<String>,
    /// Bytes rsync sent in the last ship.
    #[serde(default)]
    pub bytes_sent: u64,
    /// How long the last ship took, from its start to this target's end, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<u64>,
}

/// How the last ship to a target ended, as `state.json` stores it (the words `deploy
/// status` shows).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum ShipResult {
    /// A new release went live.
    Shipped,
    /// The target already had the commit.
    Unchanged,
    /// Only planned (`--dry-run`; never stored).
    DryRun,
    /// The ship failed; `error` says why.
    Failed,
    /// The secret scan blocked it.
    Blocked,
    /// `deploy rollback` put the previous release back.
    #[serde(rename = "rolled back")]
    RolledBack,
}

impl ShipResult {
    /// The word stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            ShipResult::Shipped => "shipped",
            ShipResult::Unchanged => "unchanged",
            ShipResult::DryRun => "dry-run",
            ShipResult::Failed => "failed",
            ShipResult::Blocked => "blocked",
            ShipResult::RolledBack => "rolled back",
        }
    }
}

/// The state of a deploy.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeployState {
    /// Per target name.
    #[serde(default)]
    pub targets: BTreeMap<String, TargetState>,
    /// The commit of the last attempt.
    pub rev: Option<String>,
    /// The last scan's verdict, for people.
    pub scan: Option<String>,
    /// The release a `rollback` went back to: while set, the daemon's `on_update` ships
    /// nothing (it would undo the rollback); the next deploy a person runs clears it.
    #[serde(default)]
    pub pinned: Option<String>,
}

/// Options of one ship.
#[derive(Debug, Clone, Default)]
pub struct ShipOptions {
    /// Only these targets (empty: all).
    pub targets: Vec<String>,
    /// Ship this revision instead of the branch's tip.
    pub rev: Option<String>,
    /// Print what would change; change nothing.
    pub dry_run: bool,
    /// Take over a non-empty folder that has no `releases/`.
    pub init: bool,
    /// Ship the commit again, whole, to targets already on it (a tampered target).
    pub repair: bool,
    /// A person asked for this ship (`gitsync deploy`), not the daemon: it lifts the pin a
    /// rollback left.
    pub explicit: bool,
}

/// The result of one ship.
#[derive(Debug)]
pub struct ShipReport {
    /// The commit shipped.
    pub rev: String,
    /// The scan's verdict.
    pub verdict: scan::Verdict,
    /// How long the export and the scan took.
    pub scan_took: Duration,
    /// Per target: what happened.
    pub targets: Vec<(String, Result<String, DeployError>)>,
}

impl ShipReport {
    /// Whether every target succeeded.
    pub fn ok(&self) -> bool {
        self.verdict.passes() && self.targets.iter().all(|(_, r)| r.is_ok())
    }
}

impl Deploy {
    /// The deploys of `config`.
    pub fn all(config: &Config) -> Vec<Deploy> {
        config
            .deploy
            .iter()
            .map(|d| Deploy::new(d, config))
            .collect()
    }

    /// One deploy: `repo` is a configured repository (relative to `root`) or a path.
    pub fn new(spec: &DeployConfig, config: &Config) -> Deploy {
        let candidate = crate::config::expand_tilde(&spec.repo);
        let repo = if candidate.is_absolute() {
            candidate
        } else {
            config.root.join(&spec.repo)
        };
        Deploy {
            spec: spec.clone(),
            repo,
            dir: config.home.join("deploy").join(&spec.name),
            git_timeout: config.pull.fetch_timeout.max(Duration::from_secs(300)),
        }
    }

    /// Takes this deploy's lock (`<dir>/lock`, an exclusive `flock(2)`), waiting for a run
    /// that holds it: a ship holds it from the export to the flip, and a rollback through
    /// its flips, so two runs (the daemon's `on_update` and a manual run, or two manual
    /// ones) never share the export folder nor interleave on a target.
    ///
    /// Errors: the lock file cannot be made or locked.
    async fn lock(&self) -> Result<nix::fcntl::Flock<std::fs::File>, DeployError> {
        let path = self.dir.join("lock");
        let cannot = |source| DeployError::Lock {
            path: path.clone(),
            source,
        };
        if let Some(held) = crate::flock::try_exclusive(&path).map_err(cannot)? {
            return Ok(held);
        }
        tracing::info!(deploy = %self.spec.name, "waiting for another run of deploy {} to end", self.spec.name);
        crate::flock::exclusive(path.clone()).await.map_err(cannot)
    }

    /// The configured `scan.tool` (a scanner's name, a path, or `off`), `auto` when unset.
    pub fn scan_tool(&self) -> String {
        self.spec
            .scan
            .as_ref()
            .and_then(|s| s.tool.as_ref())
            .map_or_else(|| "auto".to_string(), |t| t.as_str().to_string())
    }

    fn state_path(&self) -> PathBuf {
        self.dir.join("state.json")
    }

    /// The saved state (the default before the first run).
    ///
    /// Errors: the state file cannot be read or is corrupt (its path and what to do).
    pub fn state(&self) -> Result<DeployState, DeployError> {
        Ok(crate::util::fs::read_json(&self.state_path())?)
    }

    fn save(&self, state: &DeployState) {
        if let Err(err) = crate::util::fs::write_json(&self.state_path(), state) {
            tracing::warn!(deploy = %self.spec.name, %err, "cannot save the deploy's state");
        }
    }

    async fn git(&self, args: &[&str]) -> Result<String, DeployError> {
        Ok(ops::run(&self.repo, args, self.git_timeout)
            .await
            .map(|s| s.trim().to_string())?)
    }

    /// The repository's git folder (absolute).
    async fn git_dir(&self) -> Result<PathBuf, DeployError> {
        self.git(&["rev-parse", "--absolute-git-dir"])
            .await
            .map(PathBuf::from)
    }

    /// The branch shipped: the configured one, or the repository's current branch.
    pub async fn branch(&self) -> Result<String, DeployError> {
        match &self.spec.branch {
            Some(b) => Ok(b.clone()),
            None => self.git(&["symbolic-ref", "--short", "HEAD"]).await,
        }
    }

    /// The commit `rev` (or the branch's tip) names.
    ///
    /// Errors: an unknown revision.
    pub async fn resolve(&self, rev: Option<&str>) -> Result<String, DeployError> {
        let name = match rev {
            Some(r) => r.to_string(),
            None => format!("refs/heads/{}", self.branch().await?),
        };
        self.git(&[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{name}^{{commit}}"),
        ])
        .await
        .map_err(|_| {
            DeployError::Usage(format!("{name} is not a commit of {}", self.repo.display()))
        })
    }

    /// The configured targets, or those `names` picks.
    ///
    /// Errors: a name no target has.
    pub fn targets(&self, names: &[String]) -> Result<Vec<DeployTarget>, DeployError> {
        if let Some(unknown) = names
            .iter()
            .find(|n| !self.spec.targets.iter().any(|t| &t.name == *n))
        {
            return Err(DeployError::Usage(format!(
                "deploy {} has no target {unknown:?}; it has: {}",
                self.spec.name,
                self.spec
                    .targets
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Ok(self
            .spec
            .targets
            .iter()
            .filter(|t| names.is_empty() || names.contains(&t.name))
            .cloned()
            .collect())
    }

    fn ssh_for(&self, target: &DeployTarget) -> ssh::Ssh {
        ssh::Ssh::new(target, self.spec.ssh.as_ref())
    }

    /// Exports, scans, and ships to each target (in parallel, bounded). A blocked scan
    /// ships nothing; one target failing does not stop the others.
    ///
    /// Errors: the revision is unknown or the export fails (nothing shipped).
    pub async fn ship(&self, opts: &ShipOptions) -> Result<ShipReport, DeployError> {
        let targets = self.targets(&opts.targets)?;
        // Held until the state is saved: the export scanned is the export shipped.
        let _lock = self.lock().await?;
        let rev = self.resolve(opts.rev.as_deref()).await?;
        let git_dir = self.git_dir().await?;
        let export = export::Export {
            dir: self.dir.clone(),
        };
        let started = std::time::Instant::now();
        // Read before anything reaches a target: a state that cannot be read stops the
        // ship here, not after the targets were prepared.
        let mut state = self.state()?;
        let tree = export.tree();
        // The targets are reached, locked and prepared while the scan runs; nothing is sent
        // before the gate says the scan passed (see `ship::ship`).
        let (open, gate) = tokio::sync::watch::channel(None);
        // What the release holds is recorded once, while the scan runs, for every target
        // (see `ship::Recorded`).
        let (recorded, recording) = tokio::sync::watch::channel(None);
        let semaphore = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
        let mut tasks = tokio::task::JoinSet::new();
        let extra = self.spec.include_git.then(|| git_dir.clone());
        for target in targets.clone() {
            let me = self.clone();
            let tree = tree.clone();
            let rev = rev.clone();
            let extra = extra.clone();
            let semaphore = semaphore.clone();
            let dry_run = opts.dry_run;
            let init = opts.init;
            let repair = opts.repair;
            let mut gate = gate.clone();
            let recording = recording.clone();
            tasks.spawn(async move {
                let _permit = semaphore.acquire().await;
                let ssh = me.ssh_for(&target);
                let result = if dry_run {
                    match ship::passed(&mut gate).await {
                        true => me.dry_run(&ssh, &target, &tree, &rev).await,
                        false => Err(DeployError::Target("the secret scan did not pass".to_string())),
                    }
                } else {
                    let release = ship::Release {
                        path: &target.path,
                        export: &tree,
                        rev: &rev,
                        excludes: &me.spec.excludes,
                        extra: extra.as_deref(),
                    };
                    let keep = me.spec.keep.unwrap_or(DEFAULT_KEEP);
                    let work = async |lock: &mut target_lock::TargetLock| {
                        ship::ship(&ssh, lock, &release, keep, repair, recording, gate).await
                    };
                    let shipped =
                        target_lock::holding(&ssh, &target.name, &target.path, init, work).await;
                    shipped.map(|s| match s {
                        ship::Shipped::AlreadyThere => {
                            (
                                format!(
                                    "already on {} (`deploy verify` checks it; `--repair` ships it again)",
                                    short_id(&rev)
                                ),
                                0,
                                ShipResult::Unchanged,
                            )
                        }
                        ship::Shipped::Flipped {
                            previous,
                            bytes_sent,
                            files,
                            prepare,
                            transfer,
                            flip,
                        } => (
                            format!(
                                "{} -> {}: {files} files, {} sent (prepare {:.1} s, transfer {:.1} s, flip {:.1} s)",
                                previous.as_deref().map(short_id).unwrap_or("new"),
                                short_id(&rev),
                                crate::util::words::human_size(bytes_sent),
                                prepare.as_secs_f64(),
                                transfer.as_secs_f64(),
                                flip.as_secs_f64()
                            ),
                            bytes_sent,
                            ShipResult::Shipped,
                        ),
                    })
                };
                ssh.close().await;
                (target.name, result)
            });
        }
        let tool = self.scan_tool();
        let config = self
            .spec
            .scan
            .as_ref()
            .and_then(|s| s.config.as_deref())
            .map(crate::config::expand_tilde);
        let scratch = self.dir.join("scan");
        let cache = self.dir.join("scan-cache.json");
        // The commit's new files are scanned from git's objects while the export moves
        // (see `ahead`): the scanner's start does not wait for the export.
        let ahead = {
            let (tool, config, git_dir, rev) =
                (tool.clone(), config.clone(), git_dir.clone(), rev.clone());
            let (from, scratch) = (state.rev.clone(), scratch.join("ahead"));
            tokio::task::spawn_blocking(move || {
                from.and_then(|from| {
                    ahead::Ahead::start(&tool, config.as_deref(), &git_dir, &from, &rev, &scratch)
                })
            })
        };
        // The export moves to the commit while the targets are reached and locked.
        let updated = export.update(&git_dir, &rev, self.git_timeout).await;
        let ahead = ahead.await.ok().flatten();
        if let Err(e) = updated {
            let _ = open.send(Some(false));
            let _ = recorded.send(Some(Err(e.to_string())));
            // Its scan is waited for off the runtime (`Ahead`'s drop).
            drop(tokio::task::spawn_blocking(move || drop(ahead)));
            while tasks.join_next().await.is_some() {}
            return Err(e);
        }
        let scan_tree = tree.clone();
        let opener = open.clone();
        // The scan's view hashes every file of the export: the record uses those hashes
        // rather than reading the tree again.
        let (hashes, hashed) = tokio::sync::oneshot::channel();
        let hashes = std::sync::Mutex::new(Some(hashes));
        let scanning = tokio::task::spawn_blocking(move || {
            let passed = || {
                let _ = opener.send(Some(true));
            };
            let viewed = |files: &std::collections::HashMap<String, scan::Hashed>| {
                if let Some(hashes) = hashes.lock().ok().and_then(|mut h| h.take()) {
                    let _ = hashes.send(Arc::new(files.clone()));
                }
            };
            scan::scan(
                &tool,
                config.as_deref(),
                &scan_tree,
                &scratch,
                Some(&cache),
                &scan::Told {
                    passed: &passed,
                    viewed: &viewed,
                },
                ahead,
            )
        });
        if !opts.dry_run {
            let (me, tree, rev) = (self.clone(), tree.clone(), rev.clone());
            tokio::spawn(async move {
                let made = async {
                    let entries = ship::export_entries(&tree, &me.spec.excludes).await?;
                    // None when the scan is off or failed before its view.
                    let hashed = hashed.await.ok();
                    tokio::task::spawn_blocking(move || {
                        me.record(&tree, &rev, &entries, hashed.as_deref())
                            .map(|()| Arc::new(entries))
                    })
                    .await
                    .map_err(|e| DeployError::Target(format!("the record stopped: {e}")))?
                };
                let _ = recorded.send(Some(made.await.map_err(|e| e.to_string())));
            });
        }
        let verdict = scanning
            .await
            .unwrap_or_else(|e| scan::Verdict::Failed(format!("the scan stopped: {e}")));
        let scan_took = started.elapsed();
        let _ = open.send(Some(verdict.passes()));
        state.rev = Some(rev.clone());
        state.scan = Some(verdict.describe());
        if opts.explicit && !opts.dry_run {
            state.pinned = None;
        }
        if !verdict.passes() {
            tracing::error!(target: crate::logging::OUTCOME, deploy = %self.spec.name, rev = %short_id(&rev), "{}", verdict.describe());
            for t in &targets {
                let entry = state.targets.entry(t.name.clone()).or_default();
                entry.result = Some(ShipResult::Blocked);
                entry.error = Some(verdict.describe());
                entry.at = Some(chrono::Utc::now());
            }
            if !opts.dry_run {
                self.save(&state);
            }
            // Every target lets its lock go and removes what it prepared.
            while tasks.join_next().await.is_some() {}
            return Ok(ShipReport {
                rev,
                verdict,
                scan_took,
                targets: Vec::new(),
            });
        }
        let mut results = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let Ok((name, result)) = joined else {
                continue;
            };
            if !opts.dry_run {
                let entry = state.targets.entry(name.clone()).or_default();
                entry.at = Some(chrono::Utc::now());
                entry.took_ms = Some(started.elapsed().as_millis() as u64);
                match &result {
                    Ok((_, bytes, kind)) => {
                        entry.rev = Some(rev.clone());
                        entry.result = Some(*kind);
                        entry.error = None;
                        entry.bytes_sent = *bytes;
                    }
                    Err(e) => {
                        entry.result = Some(ShipResult::Failed);
                        entry.error = Some(e.to_string());
                    }
                }
            }
            results.push((name, result.map(|(text, _, _)| text)));
        }
        results.sort_by(|a, b| a.0.cmp(&b.0));
        if !opts.dry_run {
            self.save(&state);
        }
        for (name, r) in &results {
            match r {
                Ok(text) => {
                    tracing::info!(deploy = %self.spec.name, target = %name, "deploy {}: {name}: {text}", self.spec.name)
                }
                Err(e) => {
                    tracing::error!(target: crate::logging::OUTCOME, deploy = %self.spec.name, target = %name, "deploy {}: {name}: {e}", self.spec.name)
                }
            }
        }
        Ok(ShipReport {
            rev,
            verdict,
            scan_took,
            targets: results,
        })
    }

    /// What a ship would change on `target`: rsync `--dry-run` against the live release.
    async fn dry_run(
        &self,
        ssh: &ssh::Ssh,
        target: &DeployTarget,
        tree: &Path,
        rev: &str,
    ) -> Result<(String, u64, ShipResult), DeployError> {
        let current = ship::current(ssh, &target.path).await?;
        let Some(current) = current else {
            return Ok((
                format!(
                    "new layout: every file of {} would be shipped",
                    short_id(rev)
                ),
                0,
                ShipResult::DryRun,
            ));
        };
        if current == rev {
            return Ok((
                format!("already on {}", short_id(rev)),
                0,
                ShipResult::DryRun,
            ));
        }
        let mut command = ship::rsync_command(ssh, &self.spec.excludes)?;
        command
            .args(["--delete", "--dry-run", "-i", "-8"])
            .arg(format!("{}/", tree.display()))
            .arg(format!(
                "{}:{}/releases/{current}/",
                ssh.host,
                target.path.trim_end_matches('/')
            ));
        let out = command
            .output()
            .await
            .map_err(|e| DeployError::Target(e.to_string()))?;
        ship::rsync_status("rsync --dry-run", &out)?;
        let (mut added, mut changed, mut deleted) = (Vec::new(), Vec::new(), Vec::new());
        for (flags, path) in out.stdout.split(|b| *b == b'\n').filter_map(ship::itemized) {
            let path = path.display().to_string();
            if flags.starts_with(b"*deleting") {
                deleted.push(path);
            } else if flags[1] == b'f' {
                if flags.contains(&b'+') {
                    added.push(path);
                } else {
                    changed.push(path);
                }
            }
        }
        let list = |v: &Vec<String>| {
            if v.is_empty() {
                "-".to_string()
            } else {
                v.join(", ")
            }
        };
        Ok((
            format!(
                "{} -> {}: {} added ({}), {} changed ({}), {} deleted ({})",
                short_id(&current),
                short_id(rev),
                added.len(),
                list(&added),
                changed.len(),
                list(&changed),
                deleted.len(),
                list(&deleted)
            ),
            0,
            ShipResult::DryRun,
        ))
    }

    /// Checks every target (or those named) against the branch's tip.
    ///
    /// Errors: the branch cannot be read.
    pub async fn verify(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, Result<ship::Check, DeployError>)>, DeployError> {
        let want = self.resolve(None).await?;
        let shape = self.shape(&want);
        let mut out = Vec::new();
        for target in self.targets(names)? {
            let result = match &shape {
                Some(shape) => {
                    let ssh = self.ssh_for(&target);
                    let result =
                        ship::verify(&ssh, &target.path, &want, shape, self.spec.include_git).await;
                    ssh.close().await;
                    result
                }
                None => Err(DeployError::Target(format!(
                    "this machine has no record of what it shipped as {}: `gitsync deploy {} --repair` ships it again and records it",
                    short_id(&want),
                    self.spec.name
                ))),
            };
            out.push((target.name.clone(), result));
        }
        Ok(out)
    }

    /// Where the record of release `rev` is kept (`<dir>/releases/<rev>.json`).
    fn shape_path(&self, rev: &str) -> PathBuf {
        self.dir.join("releases").join(format!("{rev}.json"))
    }

    /// The record of what was shipped as `rev` ([`ship::Shape`]), if this machine has one.
    pub fn shape(&self, rev: &str) -> Option<ship::Shape> {
        let bytes = std::fs::read(self.shape_path(rev)).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records what a ship of `rev` wrote: the entries rsync `listed` (kind and path) as they
    /// are in the exported `tree`, files with their sha256 and execute bit. Those come from
    /// `scanned` (the scan's view of the tree, by tree path) when given, else from reading
    /// the tree (reusing `hashes.json` for files whose stat data did not change).
    ///
    /// Errors: a file cannot be read or the record cannot be written.
    fn record(
        &self,
        tree: &Path,
        rev: &str,
        listed: &[(u8, PathBuf)],
        scanned: Option<&std::collections::HashMap<String, scan::Hashed>>,
    ) -> Result<(), DeployError> {
        let started = std::time::Instant::now();
        let files = match scanned {
            Some(scanned) => ship::Files::Scanned(scanned),
            None => {
                let files: Vec<PathBuf> = listed
                    .iter()
                    .filter(|(kind, _)| *kind == b'f')
                    .map(|(_, path)| path.clone())
                    .collect();
                let manifest = export::manifest(tree, &files, &self.dir.join("hashes.json"))?;
                ship::Files::Hashed(export::parse_manifest(&manifest))
            }
        };
        let hashed = started.elapsed();
        let shape = ship::Shape::of(tree, listed, &files)?;
        let written = crate::util::fs::write_json(&self.shape_path(rev), &shape);
        tracing::debug!(
            manifest_ms = hashed.as_millis(),
            shape_ms = (started.elapsed() - hashed).as_millis(),
            "deploy: release recorded"
        );
        Ok(written?)
    }

    /// Flips `current` back one release on each target (or those named): each call walks
    /// one further back ([`ship::rollback`]). Pins the deploy (see [`DeployState::pinned`]).
    /// Returns per target (from, to) or why not.
    ///
    /// Errors: an unknown target name, or the lock cannot be taken.
    pub async fn rollback(
        &self,
        names: &[String],
    ) -> Result<Vec<(String, Result<(String, String), DeployError>)>, DeployError> {
        let targets = self.targets(names)?;
        let _lock = self.lock().await?;
        let mut state = self.state()?;
        let mut out = Vec::new();
        for target in targets {
            let ssh = self.ssh_for(&target);
            let work =
                async |_: &mut target_lock::TargetLock| ship::rollback(&ssh, &target.path).await;
            let result = target_lock::holding(&ssh, &target.name, &target.path, false, work).await;
            ssh.close().await;
            if let Ok((_, to)) = &result {
                let entry = state.targets.entry(target.name.clone()).or_default();
                entry.rev = Some(to.clone());
                entry.result = Some(ShipResult::RolledBack);
                entry.at = Some(chrono::Utc::now());
                state.pinned = Some(to.clone());
            }
            out.push((target.name.clone(), result));
        }
        self.save(&state);
        Ok(out)
    }
}

/// Longest an `on_update` deploy waits between two looks at its branch when nothing woke
/// it.
const UPDATE_FALLBACK: Duration = Duration::from_secs(30);

/// The deploys with `on_update`, by repository: the daemon calls
/// [`UpdateTriggers::moved`] when it sees a repository's HEAD move.
#[derive(Debug, Clone, Default)]
pub struct UpdateTriggers {
    entries: Arc<Vec<(PathBuf, Arc<tokio::sync::Notify>)>>,
}

impl UpdateTriggers {
    /// Wakes the deploys of the repository at `repo` (compared as canonical paths).
    /// Returns how many it woke.
    pub fn moved(&self, repo: &Path) -> usize {
        let repo = repo.canonicalize().unwrap_or_else(|_| repo.to_path_buf());
        let woken: Vec<_> = self
            .entries
            .iter()
            .filter(|(path, _)| *path == repo)
            .collect();
        for (_, notify) in &woken {
            notify.notify_one();
        }
        woken.len()
    }
}

/// Starts, under the daemon, one task per deploy with `on_update`: it ships when the
/// branch's tip differs from what the targets were last shipped, looking when the daemon
/// sees the repository's HEAD move ([`UpdateTriggers`]) and at least every 30 s (a failed
/// ship is retried after 30 s), unless a rollback pinned the deploy. Returns the triggers.
pub fn spawn_all(
    deploys: Vec<Deploy>,
    tasks: &mut crate::util::workers::Workers,
) -> UpdateTriggers {
    let mut entries = Vec::new();
    for deploy in deploys.into_iter().filter(|d| d.spec.on_update) {
        let notify = Arc::new(tokio::sync::Notify::new());
        let repo = deploy
            .repo
            .canonicalize()
            .unwrap_or_else(|_| deploy.repo.clone());
        entries.push((repo, notify.clone()));
        tasks.spawn("deploy", async move {
            let mut last_try: Option<(String, std::time::Instant)> = None;
            // A corrupt state is said once, not every 2 s.
            let mut said_corrupt = false;
            let mut first = true;
            loop {
                // The first look at once; then when HEAD moved, or at the latest after
                // [`UPDATE_FALLBACK`] (a branch that is not checked out, a repository the
                // daemon does not keep, a failed ship to retry).
                if !std::mem::take(&mut first) {
                    tokio::select! {
                        _ = tokio::time::sleep(UPDATE_FALLBACK) => {}
                        _ = notify.notified() => {}
                    }
                }
                let Ok(tip) = deploy.resolve(None).await else {
                    continue;
                };
                let state = match deploy.state() {
                    Ok(state) => {
                        said_corrupt = false;
                        state
                    }
                    Err(e) => {
                        if !said_corrupt {
                            tracing::error!(deploy = %deploy.spec.name, "deploy {}: {e}", deploy.spec.name);
                            said_corrupt = true;
                        }
                        continue;
                    }
                };
                if let Some(at) = &state.pinned {
                    if last_try.as_ref().is_none_or(|(rev, _)| rev != at) {
                        tracing::info!(deploy = %deploy.spec.name, "deploy {} is pinned at {} by a rollback: on_update ships again after `gitsync deploy {}`", deploy.spec.name, short_id(at), deploy.spec.name);
                        last_try = Some((at.clone(), std::time::Instant::now()));
                    }
                    continue;
                }
                let shipped = deploy
                    .spec
                    .targets
                    .iter()
                    .all(|t| state.targets.get(&t.name).and_then(|s| s.rev.as_deref()) == Some(tip.as_str()));
                if shipped {
                    continue;
                }
                if let Some((rev, at)) = &last_try
                    && *rev == tip
                    && at.elapsed() < Duration::from_secs(30)
                {
                    continue;
                }
                last_try = Some((tip.clone(), std::time::Instant::now()));
                match deploy.ship(&ShipOptions::default()).await {
                    Ok(report) if report.ok() => {}
                    Ok(report) => tracing::warn!(deploy = %deploy.spec.name, "{}", report.verdict.describe()),
                    Err(err) => tracing::error!(deploy = %deploy.spec.name, "deploy {}: {err}", deploy.spec.name),
                }
            }
        });
    }
    UpdateTriggers {
        entries: Arc::new(entries),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_moved_head_wakes_the_deploys_of_that_repository_only_by_any_path_to_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).expect("mkdir");
        std::fs::create_dir_all(&b).expect("mkdir");
        let via_link = dir.path().join("link-to-a");
        std::os::unix::fs::symlink(&a, &via_link).expect("symlink");
        let (na, nb) = (
            Arc::new(tokio::sync::Notify::new()),
            Arc::new(tokio::sync::Notify::new()),
        );
        let triggers = UpdateTriggers {
            entries: Arc::new(vec![
                (a.canonicalize().expect("canonical"), na.clone()),
                (b.canonicalize().expect("canonical"), nb.clone()),
            ]),
        };
        assert_eq!(triggers.moved(&via_link), 1, "only the deploy of a");
        // The wake-up is kept for a deploy that is busy shipping: it looks once more.
        na.notified().await;
        assert_eq!(triggers.moved(&dir.path().join("elsewhere")), 0);
    }

    #[test]
    fn ship_results_are_stored_as_the_words_older_state_files_hold() {
        for (word, result) in [
            ("shipped", ShipResult::Shipped),
            ("unchanged", ShipResult::Unchanged),
            ("dry-run", ShipResult::DryRun),
            ("failed", ShipResult::Failed),
            ("blocked", ShipResult::Blocked),
            ("rolled back", ShipResult::RolledBack),
        ] {
            let text = format!(r#"{{"rev":null,"at":null,"result":"{word}","error":null}}"#);
            let state: TargetState = serde_json::from_str(&text).expect("an older state file");
            assert_eq!(state.result, Some(result));
            assert_eq!(result.as_str(), word);
            let back = serde_json::to_value(&state).expect("serializes");
            assert_eq!(back["result"], word);
        }
    }
}
