//! The producer: exports each source branch that moved as an encrypted incremental bundle
//! and publishes a new signed manifest.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::manifest::{self, BundleRecord, FORMAT, Manifest, PairRecord};
use super::{Pair, PairError, PairOutcome, PartitionError, Settings, crypto};
use crate::git::ops;
use crate::store::{BlobStore, StoreError};

/// The manifest's object key.
pub const MANIFEST_KEY: &str = "manifest";
/// Where bundles go: `b/<sha256 of the stored bytes>`.
pub const BUNDLE_PREFIX: &str = "b/";

/// What the producer remembers between rounds (`~/.gitsync/partition/producer.json`).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct ProducerState {
    /// The generation published last.
    pub generation: u64,
    /// The store's version of the manifest written last (S3 ETag or content hash).
    pub version: Option<String>,
    /// The pairs as published last.
    pub pairs: Vec<PairRecord>,
}

/// Options of one round.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Print the plan from metadata (`git ls-remote`) only: no clone, no upload.
    pub dry_run: bool,
    /// Write one full bundle per pair and delete the bundles no longer needed.
    pub compact: bool,
}

fn state_path(settings: &Settings) -> PathBuf {
    settings.dir.join("producer.json")
}

/// Brings the bare cache of `url` up to date (see [`crate::git::bare_cache`]); returns
/// its path.
async fn refresh_mirror(settings: &Settings, url: &str) -> Result<PathBuf, PairError> {
    crate::git::bare_cache::refresh(
        &settings.dir.join("mirrors"),
        url,
        settings.git_timeout,
        &settings.git_env(),
    )
    .await
    .map_err(PairError::from)
}

async fn rev(dir: &Path, name: &str, settings: &Settings) -> Option<String> {
    ops::run(
        dir,
        &["rev-parse", "--verify", "--quiet", name],
        settings.git_timeout,
    )
    .await
    .ok()
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty())
}

async fn tags_of(dir: &Path, settings: &Settings) -> BTreeMap<String, String> {
    let listed = ops::run(
        dir,
        &[
            "for-each-ref",
            "--format=%(objectname) %(refname:strip=2)",
            "refs/tags",
        ],
        settings.git_timeout,
    )
    .await
    .unwrap_or_default();
    listed
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(oid, name)| (name.to_string(), oid.to_string()))
        .collect()
}

/// Exports one pair: returns its new record (or the old one when nothing moved) and what
/// was done.
async fn export(
    settings: &Settings,
    store: &dyn BlobStore,
    pair: &Pair,
    previous: Option<&PairRecord>,
    to: &[age::x25519::Recipient],
    compact: bool,
    scratch: &Path,
) -> Result<(PairRecord, String), PairError> {
    let source = settings.url_of(&pair.spec.source)?;
    let branch = &pair.spec.source.branch;
    let mirror = refresh_mirror(settings, &source).await?;
    let head = format!("refs/heads/{branch}");
    let tip = rev(&mirror, &format!("{head}^{{commit}}"), settings)
        .await
        .ok_or_else(|| PairError::NoBranch(branch.clone()))?;
    let tags = if pair.spec.tags {
        tags_of(&mirror, settings).await
    } else {
        BTreeMap::new()
    };
    let unchanged = previous
        .is_some_and(|p| p.tip == tip && p.tags == tags && p.destination == pair.spec.destination);
    if unchanged && !compact {
        return Ok((
            previous
                .cloned()
                .unwrap_or_else(|| unreachable_record(pair)),
            "nothing new".to_string(),
        ));
    }
    // An increment on top of what was exported last, when the mirror still has it.
    let base = match previous.filter(|_| !compact) {
        Some(p)
            if rev(&mirror, &format!("{}^{{commit}}", p.tip), settings)
                .await
                .is_some() =>
        {
            Some(p.tip.clone())
        }
        _ => None,
    };
    let plain = scratch.join(format!("{}.bundle", pair.id));
    let plain_text = plain.display().to_string();
    let mut args = vec![
        "bundle",
        "create",
        "--quiet",
        plain_text.as_str(),
        head.as_str(),
    ];
    if pair.spec.tags {
        args.push("--tags");
    }
    let exclude = base.as_ref().map(|b| format!("^{b}"));
    if let Some(exclude) = &exclude {
        args.push(exclude.as_str());
    }
    let mut bundles = match (&base, previous) {
        (Some(_), Some(p)) => p.bundles.clone(),
        _ => Vec::new(),
    };
    let mut action = if base.is_some() {
        "exported an increment".to_string()
    } else {
        "exported a full bundle".to_string()
    };
    match ops::run(&mirror, &args, settings.git_timeout).await {
        Ok(_) => {
            let sealed = scratch.join(format!("{}.bundle.age", pair.id));
            let (to, plain2, sealed2) = (to.to_vec(), plain.clone(), sealed.clone());
            tokio::task::spawn_blocking(move || crypto::encrypt_file(&plain2, &sealed2, &to))
                .await
                .map_err(|e| PairError::Bundle(e.to_string()))?
                .map_err(|e| PairError::Bundle(e.to_string()))?;
            let (sha256, size) = super::sha256_file(&sealed)
                .map_err(|e| PairError::Bundle(format!("{}: {e}", sealed.display())))?;
            let key = format!("{BUNDLE_PREFIX}{sha256}");
            store.put_file(&key, &sealed).await?;
            let _ = std::fs::remove_file(&plain);
            let _ = std::fs::remove_file(&sealed);
            action = format!("{action} ({})", crate::util::words::human_size(size));
            bundles.push(BundleRecord {
                key,
                sha256,
                size,
                prerequisites: base.into_iter().collect(),
                tip: tip.clone(),
            });
        }
        // Only tags moved, to commits already exported: nothing new to carry.
        Err(ops::GitError::Failed { stderr, .. }) if stderr.contains("empty bundle") => {
            action = "tags updated".to_string();
        }
        Err(err) => return Err(err.into()),
    }
    Ok((
        PairRecord {
            id: pair.id.clone(),
            destination: pair.spec.destination.clone(),
            source_branch: branch.clone(),
            tip,
            tags,
            force: pair.spec.force,
            bundles,
        },
        action,
    ))
}

fn unreachable_record(pair: &Pair) -> PairRecord {
    PairRecord {
        id: pair.id.clone(),
        destination: pair.spec.destination.clone(),
        source_branch: pair.spec.source.branch.clone(),
        tip: String::new(),
        tags: BTreeMap::new(),
        force: pair.spec.force,
        bundles: Vec::new(),
    }
}

/// The dry run: compares each source's tip (`git ls-remote`) with what was exported.
async fn plan(settings: &Settings, state: &ProducerState) -> Vec<PairOutcome> {
    let mut out = Vec::new();
    for pair in &settings.pairs {
        let previous = state.pairs.iter().find(|p| p.id == pair.id);
        let result = async {
            let source = settings
                .url_of(&pair.spec.source)
                .map_err(|e| e.to_string())?;
            let head = format!("refs/heads/{}", pair.spec.source.branch);
            let listed = ops::run_with(
                &settings.dir_or_tmp(),
                &["ls-remote", "--", &source, &head],
                settings.git_timeout,
                &settings.git_env(),
            )
            .await
            .map_err(|e| e.to_string())?;
            let tip = listed
                .lines()
                .find_map(|l| {
                    l.split_once('\t')
                        .filter(|(_, n)| *n == head)
                        .map(|(o, _)| o.to_string())
                })
                .ok_or_else(|| format!("the source has no branch {}", pair.spec.source.branch))?;
            Ok::<String, String>(match previous {
                Some(p) if p.tip == tip => format!("would do nothing: {tip} already exported"),
                Some(p) => format!("would export an increment {}..{tip}", p.tip),
                None => format!("would export a full bundle of {tip}"),
            })
        }
        .await;
        out.push(match result {
            Ok(action) => PairOutcome {
                id: pair.id.clone(),
                name: super::pair_name(&pair.spec.source, &pair.spec.destination),
                action,
                error: None,
            },
            Err(err) => PairOutcome {
                id: pair.id.clone(),
                name: super::pair_name(&pair.spec.source, &pair.spec.destination),
                action: "failed".to_string(),
                error: Some(err),
            },
        });
    }
    out
}

impl Settings {
    /// A folder that exists, to run `git ls-remote` in.
    fn dir_or_tmp(&self) -> PathBuf {
        if self.dir.is_dir() {
            self.dir.clone()
        } else {
            std::env::temp_dir()
        }
    }
}

/// One producer round: export what moved, publish the manifest. Returns each pair's
/// outcome; a pair's failure leaves its previous export in the manifest.
///
/// Errors: [`PartitionError`] for what stops the whole round: keys, the store, or a
/// manifest written by someone else since this producer's last one.
pub async fn run_once(
    settings: &Settings,
    store: &dyn BlobStore,
    options: Options,
) -> Result<Vec<PairOutcome>, PartitionError> {
    if settings.pairs.is_empty() {
        return Err(PartitionError::Config(
            "no pairs (`partition.pairs` or `partition.pairs_file`)".to_string(),
        ));
    }
    let state_file = state_path(settings);
    let state: ProducerState = super::read_state(&state_file)?;
    if options.dry_run {
        return Ok(plan(settings, &state).await);
    }
    let to = crypto::recipients(&settings.recipients)?;
    let key_path = settings
        .signing_key
        .as_ref()
        .ok_or_else(|| PartitionError::Config("`partition.signing_key` is not set".to_string()))?;
    let key = crypto::signing_key(key_path)?;
    let current = store.get_bytes(MANIFEST_KEY).await?.map(|(_, v)| v);
    if current != state.version {
        return Err(PartitionError::Store(StoreError::Conflict(format!(
            "{MANIFEST_KEY} (the store's manifest is not the one this producer wrote last; another producer, or a lost {}?)",
            state_file.display()
        ))));
    }
    std::fs::create_dir_all(&settings.dir).map_err(|e| PartitionError::State {
        path: settings.dir.display().to_string(),
        message: e.to_string(),
    })?;
    let scratch = tempfile::tempdir_in(&settings.dir).map_err(|e| PartitionError::State {
        path: settings.dir.display().to_string(),
        message: e.to_string(),
    })?;
    let mut records = Vec::new();
    let mut outcomes = Vec::new();
    for pair in &settings.pairs {
        let previous = state.pairs.iter().find(|p| p.id == pair.id);
        match export(
            settings,
            store,
            pair,
            previous,
            &to,
            options.compact,
            scratch.path(),
        )
        .await
        {
            Ok((record, action)) => {
                tracing::info!(pair = %pair.id, %action, "partition pair");
                records.push(record);
                outcomes.push(PairOutcome {
                    id: pair.id.clone(),
                    name: super::pair_name(&pair.spec.source, &pair.spec.destination),
                    action,
                    error: None,
                });
            }
            Err(err) => {
                tracing::warn!(target: crate::logging::OUTCOME, pair = %pair.id, %err, "partition pair failed; its last export stays");
                if let Some(previous) = previous {
                    records.push(previous.clone());
                }
                outcomes.push(PairOutcome {
                    id: pair.id.clone(),
                    name: super::pair_name(&pair.spec.source, &pair.spec.destination),
                    action: "failed".to_string(),
                    error: Some(crate::util::redact::redact_text(&err.to_string())),
                });
            }
        }
    }
    if current.is_some() && records == state.pairs {
        return Ok(outcomes);
    }
    let manifest = Manifest {
        format: FORMAT.to_string(),
        generation: state.generation + 1,
        created_at: Utc::now(),
        pairs: records.clone(),
    };
    let sealed = manifest::seal(&manifest, &key, &to)?;
    let version = store
        .put_bytes_if(MANIFEST_KEY, &sealed, current.as_deref())
        .await?;
    super::write_state(
        &state_file,
        &ProducerState {
            generation: manifest.generation,
            version: Some(version),
            pairs: records.clone(),
        },
    )?;
    tracing::info!(
        generation = manifest.generation,
        "partition manifest published"
    );
    if options.compact {
        let keep: std::collections::HashSet<&str> = records
            .iter()
            .flat_map(|r| r.bundles.iter().map(|b| b.key.as_str()))
            .collect();
        for key in store.list(BUNDLE_PREFIX).await? {
            if !keep.contains(key.as_str()) {
                store.delete(&key).await?;
            }
        }
    }
    Ok(outcomes)
}
