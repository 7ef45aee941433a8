//! The consumer: verifies the manifest, fetches the bundles it lacks, and pushes each
//! pair's commit to its destination branch.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::manifest::{self, PairRecord};
use super::producer::MANIFEST_KEY;
use super::{PairError, PairOutcome, PartitionError, Settings, crypto};
use crate::git::ops;
use crate::git::refsync::{self, Expect, RefUpdate};
use crate::model::is_zero_oid;
use crate::store::BlobStore;

/// What one pair is at on the destination, as applied last.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    /// The commit pushed last.
    pub tip: String,
    /// The tags pushed last.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// What the consumer remembers (`~/.gitsync/partition/consumer.json`), written after
/// every pair so that a restart pushes nothing twice.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ConsumerState {
    /// The highest generation seen.
    pub generation: u64,
    /// Per pair id.
    pub pairs: HashMap<String, Applied>,
}

fn state_path(settings: &Settings) -> PathBuf {
    settings.dir.join("consumer.json")
}

async fn has_commit(cache: &Path, oid: &str, settings: &Settings) -> bool {
    ops::run(
        cache,
        &["cat-file", "-e", &format!("{oid}^{{commit}}")],
        settings.git_timeout,
    )
    .await
    .is_ok()
}

/// Imports the bundles of `record` that the cache lacks: download, sha256, decrypt,
/// `git bundle verify`, fetch.
async fn import(
    settings: &Settings,
    store: &dyn BlobStore,
    record: &PairRecord,
    cache: &Path,
    identity: &age::x25519::Identity,
    scratch: &Path,
) -> Result<usize, PairError> {
    let mut fetched = 0;
    for bundle in &record.bundles {
        if has_commit(cache, &bundle.tip, settings).await {
            continue;
        }
        let sealed = scratch.join("bundle.age");
        let plain = scratch.join("bundle");
        store.get_file(&bundle.key, &sealed).await?;
        let (sha, _) = super::sha256_file(&sealed)
            .map_err(|e| PairError::Bundle(format!("bundle {}: {e}", bundle.key)))?;
        if sha != bundle.sha256 {
            return Err(PairError::Bundle(format!(
                "bundle {} is corrupt: sha256 {sha}, the manifest says {}",
                bundle.key, bundle.sha256
            )));
        }
        let (id, s2, p2) = (identity.clone(), sealed.clone(), plain.clone());
        tokio::task::spawn_blocking(move || crypto::decrypt_file(&s2, &p2, &id))
            .await
            .map_err(|e| PairError::Bundle(e.to_string()))?
            .map_err(|e| PairError::Bundle(format!("bundle {}: {e}", bundle.key)))?;
        let plain_text = plain.display().to_string();
        ops::run(
            cache,
            &["bundle", "verify", "--quiet", &plain_text],
            settings.git_timeout,
        )
        .await
        .map_err(|e| PairError::Bundle(format!("bundle {} does not verify: {e}", bundle.key)))?;
        ops::run(
            cache,
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                &plain_text,
                "+refs/*:refs/gitsync-import/*",
            ],
            settings.git_timeout,
        )
        .await?;
        let _ = std::fs::remove_file(&sealed);
        let _ = std::fs::remove_file(&plain);
        fetched += 1;
    }
    if !has_commit(cache, &record.tip, settings).await {
        return Err(PairError::Bundle(format!(
            "the bundles do not contain {} (a missing prerequisite?)",
            record.tip
        )));
    }
    Ok(fetched)
}

/// Pushes the pair's commit (and tags) to the destination; fast-forward only unless the
/// pair says `force`, then `--force-with-lease` against the commit applied last.
async fn push(
    settings: &Settings,
    record: &PairRecord,
    applied: Option<&Applied>,
    cache: &Path,
) -> Result<(), PairError> {
    let url = settings.url_of(&record.destination)?;
    let branch = &record.destination.branch;
    let target = format!("refs/heads/{branch}");
    let env = settings.git_env();
    // Fast-forward only, unless the pair says `force`: then a lease on the commit applied
    // last (or on nothing, before the first).
    let expect = if record.force {
        applied.map_or(Expect::Absent, |a| Expect::At(a.tip.clone()))
    } else {
        Expect::FastForward
    };
    let mut updates = vec![RefUpdate {
        name: target,
        new: Some(record.tip.clone()),
        expect,
    }];
    for name in record.tags.keys() {
        updates.push(RefUpdate {
            name: format!("refs/tags/{name}"),
            new: Some(format!("refs/gitsync-import/tags/{name}")),
            expect: Expect::FastForward,
        });
    }
    let results = refsync::push(cache, &url, &updates, &env, settings.git_timeout)
        .await
        .map_err(|e| PairError::Push(crate::util::redact::redact_text(&e.to_string())))?;
    let refused: Vec<String> = updates
        .iter()
        .zip(&results)
        .filter_map(|(u, result)| {
            result
                .as_ref()
                .err()
                .map(|why| format!("{}: {why}", u.name))
        })
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(PairError::Push(format!(
            "the destination refused {}",
            crate::util::redact::redact_text(&refused.join(", "))
        )))
    }
}

/// One consumer round. Returns each pair's outcome; a pair's failure pushes nothing for
/// it and the others go on.
///
/// Errors: [`PartitionError`] for what stops the whole round: keys, the store, a manifest
/// that is foreign, tampered or unsigned, or older than the one applied last.
pub async fn run_once(
    settings: &Settings,
    store: &dyn BlobStore,
    dry_run: bool,
) -> Result<Vec<PairOutcome>, PartitionError> {
    let identity_path = settings
        .identity
        .as_ref()
        .ok_or_else(|| PartitionError::Config("`partition.identity` is not set".to_string()))?;
    let identity = crypto::identity(identity_path)?;
    let producer =
        crypto::public_key(settings.producer_public_key.as_deref().ok_or_else(|| {
            PartitionError::Config("`partition.producer_public_key` is not set".to_string())
        })?)?;
    let state_file = state_path(settings);
    let mut state: ConsumerState = super::read_state(&state_file)?;
    let Some((bytes, _)) = store.get_bytes(MANIFEST_KEY).await? else {
        tracing::info!(store = %store.describe(), "no manifest in the store yet");
        return Ok(Vec::new());
    };
    let manifest = manifest::open(&bytes, &identity, &producer)?;
    if manifest.generation < state.generation {
        return Err(PartitionError::Rollback {
            found: manifest.generation,
            applied: state.generation,
        });
    }
    let scratch = if dry_run {
        None
    } else {
        std::fs::create_dir_all(&settings.dir).map_err(|e| PartitionError::State {
            path: settings.dir.display().to_string(),
            message: e.to_string(),
        })?;
        Some(
            tempfile::tempdir_in(&settings.dir).map_err(|e| PartitionError::State {
                path: settings.dir.display().to_string(),
                message: e.to_string(),
            })?,
        )
    };
    let mut outcomes = Vec::new();
    for record in &manifest.pairs {
        let applied = state.pairs.get(&record.id).cloned();
        let current = applied
            .as_ref()
            .is_some_and(|a| a.tip == record.tip && a.tags == record.tags);
        if current || record.tip.is_empty() || is_zero_oid(&record.tip) {
            outcomes.push(PairOutcome {
                id: record.id.clone(),
                name: format!(
                    "{} -> {}",
                    record.source_branch,
                    super::end_name(&record.destination)
                ),
                action: "nothing new".to_string(),
                error: None,
            });
            continue;
        }
        let Some(scratch) = scratch.as_ref() else {
            let need = record.bundles.len();
            outcomes.push(PairOutcome {
                id: record.id.clone(),
                name: format!(
                    "{} -> {}",
                    record.source_branch,
                    super::end_name(&record.destination)
                ),
                action: format!(
                    "would fetch up to {need} bundle(s) and push {} to {}",
                    crate::util::words::short_id(&record.tip),
                    record.destination.branch
                ),
                error: None,
            });
            continue;
        };
        let cache = settings
            .dir
            .join("caches")
            .join(format!("{}.git", record.id));
        let result = async {
            if !cache.join("HEAD").exists() {
                std::fs::create_dir_all(&cache)
                    .map_err(|e| PairError::Bundle(format!("{}: {e}", cache.display())))?;
                ops::run(&cache, &["init", "--bare", "--quiet"], settings.git_timeout).await?;
            }
            let fetched =
                import(settings, store, record, &cache, &identity, scratch.path()).await?;
            push(settings, record, applied.as_ref(), &cache).await?;
            Ok::<usize, PairError>(fetched)
        }
        .await;
        match result {
            Ok(fetched) => {
                state.pairs.insert(
                    record.id.clone(),
                    Applied {
                        tip: record.tip.clone(),
                        tags: record.tags.clone(),
                    },
                );
                super::write_state(&state_file, &state)?;
                let action = format!(
                    "pushed {} to {} ({fetched} bundle(s) fetched)",
                    crate::util::words::short_id(&record.tip),
                    record.destination.branch
                );
                tracing::info!(pair = %record.id, %action, "partition pair");
                outcomes.push(PairOutcome {
                    id: record.id.clone(),
                    name: format!(
                        "{} -> {}",
                        record.source_branch,
                        super::end_name(&record.destination)
                    ),
                    action,
                    error: None,
                });
            }
            Err(err) => {
                tracing::warn!(target: crate::logging::OUTCOME, pair = %record.id, %err, "partition pair failed; nothing pushed for it");
                outcomes.push(PairOutcome {
                    id: record.id.clone(),
                    name: format!(
                        "{} -> {}",
                        record.source_branch,
                        super::end_name(&record.destination)
                    ),
                    action: "failed".to_string(),
                    error: Some(crate::util::redact::redact_text(&err.to_string())),
                });
            }
        }
    }
    if !dry_run {
        state.generation = manifest.generation;
        super::write_state(&state_file, &state)?;
    }
    Ok(outcomes)
}
