//! One run of one mirror: bring the source's bare cache up to date, compare its refs with
//! the target's `info/refs`, upload one pack of what the target lacks, then publish.
//!
//! Publication order (so that a reader never sees a ref whose objects are missing, whatever
//! moment the process dies at): pack, idx, LFS objects, `objects/info/packs` (new pack
//! last, so git searches it first), `info/refs` (conditional on the version read at the
//! start: a writer that lost the race starts over), `HEAD`. Packs a consolidation replaces
//! leave `objects/info/packs` only after `info/refs` no longer needs them, and are deleted
//! after the grace period.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::layout::{self, Ref, Retired};
use crate::git::ops::{self, GitError};
use crate::store::{BlobStore, StoreError};

/// Why a run failed. Nothing is published by a failed run.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// Fetching from the source, or reading its cache, failed.
    #[error("source: {0}")]
    Source(String),
    /// Writing the pack failed.
    #[error("pack: {0}")]
    Pack(String),
    /// The target could not be read or written.
    #[error("target {target}: {source}")]
    Store {
        /// The target URL.
        target: String,
        /// The store error.
        #[source]
        source: StoreError,
    },
    /// An LFS object could not be copied or did not match its oid.
    #[error("LFS: {0}")]
    Lfs(String),
    /// The target mirrors another source (or cannot say which); nothing was written.
    #[error("target {target}: {source}")]
    Claim {
        /// The target URL.
        target: String,
        /// Why.
        #[source]
        source: super::claim::ClaimError,
    },
    /// This machine's state of the mirror cannot be read.
    #[error("state: {0}")]
    State(String),
    /// Other writers kept changing `info/refs`; nothing of this run is referenced.
    #[error(
        "info/refs kept changing under this run ({0} attempts): another mirror writes the same prefix"
    )]
    Raced(usize),
}

/// A ref that the run changes on the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefChange {
    /// Full ref name.
    pub name: String,
    /// What the target had (`None`: new).
    pub old: Option<String>,
    /// What it gets (`None`: deleted).
    pub new: Option<String>,
}

/// The pack a run uploaded.
#[derive(Debug, Clone)]
pub struct PackInfo {
    /// `pack-<hex>`.
    pub name: String,
    /// Objects in it.
    pub objects: u32,
    /// Size of the `.pack` file in bytes.
    pub bytes: u64,
}

/// What one run did (or, with `dry_run`, would do).
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Refs published (heads and tags).
    pub refs: usize,
    /// Refs that changed.
    pub changed: Vec<RefChange>,
    /// The new pack, if any.
    pub pack: Option<PackInfo>,
    /// Packs a consolidation replaced by one full pack.
    pub consolidated: usize,
    /// Old packs deleted after their grace period.
    pub deleted_packs: usize,
    /// LFS objects copied, and their total size in bytes.
    pub lfs: (usize, u64),
    /// Whether `HEAD` changed.
    pub head_changed: bool,
    /// Nothing was written.
    pub dry_run: bool,
    /// Attempts lost to another writer before this one won.
    pub retries: usize,
}

impl Report {
    /// Whether the target was already up to date.
    pub fn up_to_date(&self) -> bool {
        self.changed.is_empty() && !self.head_changed && self.pack.is_none()
    }
}

/// How one run behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// Packs allowed before a run writes one full pack instead.
    pub max_packs: usize,
    /// How long replaced packs stay.
    pub grace: Duration,
    /// Limit of one git command.
    pub git_timeout: Duration,
    /// Compute and report, write nothing to the target.
    pub dry_run: bool,
    /// Copy LFS objects (see [`super::lfs`]).
    pub lfs: bool,
    /// The source URL (for the LFS batch API).
    pub source: String,
    /// Scratch folder for packs.
    pub scratch: PathBuf,
}

/// Age beyond which a half-written file in the target was left by a killed run.
const STALE: Duration = Duration::from_secs(3600);

/// How many times a run starts over after losing `info/refs` to another writer.
const ATTEMPTS: usize = 5;

fn git_err(e: GitError) -> MirrorError {
    MirrorError::Source(e.to_string())
}

/// The heads and tags of the cache, annotated tags peeled (`git show-ref -d`).
///
/// Errors: [`MirrorError::Source`] when git fails.
pub async fn source_refs(cache: &Path, timeout: Duration) -> Result<Vec<Ref>, MirrorError> {
    let listed = match ops::run(cache, &["show-ref", "-d", "--heads", "--tags"], timeout).await {
        Ok(out) => out,
        // show-ref exits 1, silently, when there is no ref at all.
        Err(GitError::Failed { stderr, .. }) if stderr.is_empty() => String::new(),
        Err(e) => return Err(git_err(e)),
    };
    let mut refs: Vec<Ref> = Vec::new();
    for line in listed.lines() {
        let Some((oid, name)) = line.split_once(' ') else {
            continue;
        };
        if let Some(tag) = name.strip_suffix("^{}") {
            if let Some(last) = refs.last_mut().filter(|r| r.name == tag) {
                last.peeled = Some(oid.to_string());
            }
        } else if layout::is_oid(oid) {
            refs.push(Ref {
                name: name.to_string(),
                oid: oid.to_string(),
                peeled: None,
            });
        }
    }
    Ok(refs)
}

/// The source's default branch: the cache's `HEAD`, refreshed from the source
/// (`git ls-remote --symref`) when that branch is gone; else `main`, `master`, or the first
/// branch. `None` when the source has no branch.
pub async fn default_branch(cache: &Path, refs: &[Ref], timeout: Duration) -> Option<String> {
    let has = |b: &str| refs.iter().any(|r| r.name == format!("refs/heads/{b}"));
    let current = ops::run(cache, &["symbolic-ref", "--short", "HEAD"], timeout)
        .await
        .ok()
        .map(|s| s.trim().to_string());
    if let Some(branch) = current.as_deref().filter(|b| has(b)) {
        return Some(branch.to_string());
    }
    if let Ok(out) = ops::run(cache, &["ls-remote", "--symref", "origin", "HEAD"], timeout).await
        && let Some(branch) = out.lines().find_map(|l| {
            l.strip_prefix("ref: refs/heads/")
                .and_then(|rest| rest.split_once('\t'))
                .map(|(b, _)| b.to_string())
        })
        && has(&branch)
    {
        let _ = ops::run(
            cache,
            &["symbolic-ref", "HEAD", &format!("refs/heads/{branch}")],
            timeout,
        )
        .await;
        return Some(branch);
    }
    ["main", "master"]
        .into_iter()
        .find(|b| has(b))
        .map(str::to_string)
        .or_else(|| {
            refs.iter()
                .find_map(|r| r.name.strip_prefix("refs/heads/").map(str::to_string))
        })
}

/// The ids in `oids` the cache has (`git cat-file --batch-check`).
async fn present(
    cache: &Path,
    oids: &BTreeSet<String>,
    timeout: Duration,
) -> Result<BTreeSet<String>, MirrorError> {
    if oids.is_empty() {
        return Ok(BTreeSet::new());
    }
    let input: String = oids.iter().map(|o| format!("{o}\n")).collect();
    let out = ops::run_input(
        cache,
        &["cat-file", "--batch-check=%(objectname)"],
        input.as_bytes(),
        timeout,
        &[],
    )
    .await
    .map_err(git_err)?;
    Ok(out
        .lines()
        .filter(|l| layout::is_oid(l.trim()))
        .map(|l| l.trim().to_string())
        .collect())
}

/// Writes one pack of what `tips` reach and `exclude` does not (`git pack-objects --revs`,
/// never `--thin`, offset deltas, index v2) into `dir`. Returns `None` when it would hold
/// no object.
async fn write_pack(
    cache: &Path,
    tips: &BTreeSet<String>,
    exclude: &BTreeSet<String>,
    dir: &Path,
    timeout: Duration,
) -> Result<Option<(PackInfo, PathBuf, PathBuf)>, MirrorError> {
    let mut input = String::new();
    for tip in tips {
        input.push_str(&format!("{tip}\n"));
    }
    for old in exclude {
        input.push_str(&format!("^{old}\n"));
    }
    let base = dir.join("pack");
    let base = base.display().to_string();
    let out = ops::run_input(
        cache,
        &[
            "pack-objects",
            "--revs",
            "--delta-base-offset",
            "--index-version=2",
            "--quiet",
            &base,
        ],
        input.as_bytes(),
        timeout,
        &[],
    )
    .await
    .map_err(|e| MirrorError::Pack(e.to_string()))?;
    let hex = out.trim();
    if !layout::is_oid(hex) {
        return Err(MirrorError::Pack(format!(
            "git pack-objects printed {hex:?}, not a pack name"
        )));
    }
    let name = format!("pack-{hex}");
    let pack = dir.join(format!("{name}.pack"));
    let idx = dir.join(format!("{name}.idx"));
    let (objects, bytes) = pack_header(&pack)?;
    if objects == 0 {
        return Ok(None);
    }
    Ok(Some((
        PackInfo {
            name,
            objects,
            bytes,
        },
        pack,
        idx,
    )))
}

/// The object count of a pack file (its header: `PACK`, version, count; gitformat-pack)
/// and its size in bytes.
fn pack_header(path: &Path) -> Result<(u32, u64), MirrorError> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)
        .map_err(|e| MirrorError::Pack(format!("{}: {e}", path.display())))?;
    let size = file
        .metadata()
        .map_err(|e| MirrorError::Pack(format!("{}: {e}", path.display())))?
        .len();
    let mut header = [0u8; 12];
    file.read_exact(&mut header)
        .map_err(|e| MirrorError::Pack(format!("{}: {e}", path.display())))?;
    if &header[..4] != b"PACK" {
        return Err(MirrorError::Pack(format!(
            "{} is not a pack",
            path.display()
        )));
    }
    Ok((
        u32::from_be_bytes([header[8], header[9], header[10], header[11]]),
        size,
    ))
}

/// The target, with its URL for messages.
struct Target<'a> {
    store: &'a dyn BlobStore,
}

impl Target<'_> {
    fn err(&self, source: StoreError) -> MirrorError {
        MirrorError::Store {
            target: self.store.describe(),
            source,
        }
    }

    async fn get(&self, key: &str) -> Result<Option<(Vec<u8>, String)>, MirrorError> {
        self.store.get_bytes(key).await.map_err(|e| self.err(e))
    }

    /// Adds `add` to the end of `objects/info/packs` and removes `remove`, by conditional
    /// write, re-reading on conflict.
    async fn edit_packs(
        &self,
        add: Option<&str>,
        remove: &BTreeSet<String>,
    ) -> Result<Vec<String>, MirrorError> {
        for _ in 0..ATTEMPTS * 2 {
            let current = self.get(layout::PACKS).await?;
            let (mut packs, version) = match &current {
                Some((bytes, version)) => (
                    layout::parse_packs(&String::from_utf8_lossy(bytes)),
                    Some(version.as_str()),
                ),
                None => (Vec::new(), None),
            };
            let before = packs.clone();
            packs.retain(|p| !remove.contains(p) && Some(p.as_str()) != add);
            if let Some(add) = add {
                packs.push(add.to_string());
            }
            if packs == before {
                return Ok(packs);
            }
            match self
                .store
                .put_bytes_if(
                    layout::PACKS,
                    layout::format_packs(&packs).as_bytes(),
                    version,
                )
                .await
            {
                Ok(_) => return Ok(packs),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(self.err(e)),
            }
        }
        Err(MirrorError::Raced(ATTEMPTS * 2))
    }

    async fn upload_pack(
        &self,
        info: &PackInfo,
        pack: &Path,
        idx: &Path,
    ) -> Result<(), MirrorError> {
        // The pack before its index: a reader that finds an index finds its pack.
        self.store
            .put_file(&layout::pack_key(&info.name, "pack"), pack)
            .await
            .map_err(|e| self.err(e))?;
        self.store
            .put_file(&layout::pack_key(&info.name, "idx"), idx)
            .await
            .map_err(|e| self.err(e))
    }

    /// Records `packs` as left out now.
    async fn retire(&self, packs: &BTreeSet<String>) -> Result<(), MirrorError> {
        for _ in 0..ATTEMPTS {
            let current = self.get(layout::RETIRED).await?;
            let mut retired: Retired = current
                .as_ref()
                .and_then(|(b, _)| serde_json::from_slice(b).ok())
                .unwrap_or_default();
            let now = chrono::Utc::now().timestamp();
            for p in packs {
                retired.packs.entry(p.clone()).or_insert(now);
            }
            let bytes = serde_json::to_vec_pretty(&retired).unwrap_or_default();
            match self
                .store
                .put_bytes_if(
                    layout::RETIRED,
                    &bytes,
                    current.as_ref().map(|(_, v)| v.as_str()),
                )
                .await
            {
                Ok(_) => return Ok(()),
                Err(StoreError::Conflict(_)) => continue,
                Err(e) => return Err(self.err(e)),
            }
        }
        Err(MirrorError::Raced(ATTEMPTS))
    }

    /// Deletes retired packs whose grace period is over and that no list names again.
    /// Returns how many were deleted and when the next one is due (Unix seconds).
    async fn sweep(
        &self,
        listed: &[String],
        grace: Duration,
    ) -> Result<(usize, Option<i64>), MirrorError> {
        let Some((bytes, version)) = self.get(layout::RETIRED).await? else {
            return Ok((0, None));
        };
        let mut retired: Retired = serde_json::from_slice(&bytes).unwrap_or_default();
        let now = chrono::Utc::now().timestamp();
        let grace = grace.as_secs() as i64;
        let mut deleted = 0;
        let due: Vec<String> = retired
            .packs
            .iter()
            .filter(|(name, at)| **at + grace <= now || listed.contains(name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in due {
            if !listed.contains(&name) {
                // The index first: a listed pack without its index is skipped by git.
                for ext in ["idx", "pack"] {
                    self.store
                        .delete(&layout::pack_key(&name, ext))
                        .await
                        .map_err(|e| self.err(e))?;
                }
                deleted += 1;
            }
            retired.packs.remove(&name);
        }
        let next = retired.packs.values().map(|at| at + grace).min();
        if deleted > 0 || retired.packs.is_empty() {
            let bytes = serde_json::to_vec_pretty(&retired).unwrap_or_default();
            // Losing this write only delays a deletion to a later run.
            let _ = self
                .store
                .put_bytes_if(layout::RETIRED, &bytes, Some(&version))
                .await;
        }
        Ok((deleted, next))
    }
}

/// What the run remembers locally between runs (`~/.gitsync/mirror/<name>.json`): only
/// when retired packs are due, so that a run with nothing new makes two requests.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct BucketMirrorState {
    /// Unix seconds at which a retired pack may be deleted, if any is waiting.
    pub sweep_due: Option<i64>,
    /// `<target> <source identity>` once the target was found to be this source's
    /// ([`super::claim`]), so later runs skip the check.
    #[serde(default)]
    pub claimed: Option<String>,
}

/// One run against `store` of the cache at `cache` (already fetched). `state` is read and
/// updated. Returns what was done.
///
/// Errors: [`MirrorError`]; a failed run has published no ref, and the previous mirror
/// stays complete and cloneable.
pub async fn run(
    cache: &Path,
    store: &dyn BlobStore,
    opts: &Options,
    state: &mut BucketMirrorState,
) -> Result<Report, MirrorError> {
    let target = Target { store };
    let claim = format!(
        "{} {}",
        store.describe(),
        super::claim::identity(&opts.source)
    );
    if state.claimed.as_ref() != Some(&claim) {
        super::claim::claim(store, &opts.source, opts.dry_run)
            .await
            .map_err(|source| MirrorError::Claim {
                target: store.describe(),
                source,
            })?;
        if !opts.dry_run {
            state.claimed = Some(claim);
        }
    }
    let refs = source_refs(cache, opts.git_timeout).await?;
    if refs.is_empty() {
        return Err(MirrorError::Source(
            "the source has no branch or tag to mirror".to_string(),
        ));
    }
    let branch = default_branch(cache, &refs, opts.git_timeout).await;
    let want_refs = layout::format_info_refs(&refs);
    let want_head = branch.as_deref().map(layout::format_head);
    let wanted: BTreeMap<String, String> = refs
        .iter()
        .map(|r| (r.name.clone(), r.oid.clone()))
        .collect();

    let mut report = Report {
        refs: refs.len(),
        dry_run: opts.dry_run,
        ..Default::default()
    };
    for attempt in 0..ATTEMPTS {
        report.retries = attempt;
        let current = target.get(layout::INFO_REFS).await?;
        let published_text = current
            .as_ref()
            .map(|(b, _)| String::from_utf8_lossy(b).into_owned())
            .unwrap_or_default();
        let published = layout::parse_info_refs(&published_text);
        report.changed = diff(&published, &wanted);

        if current.is_some() && published_text == want_refs {
            let head = target.get(layout::HEAD).await?;
            let head_text = head.map(|(b, _)| String::from_utf8_lossy(&b).into_owned());
            report.head_changed = want_head.is_some() && head_text != want_head;
            if report.head_changed && !opts.dry_run {
                publish_head(&target, want_head.as_deref()).await?;
            }
            if !opts.dry_run && state.sweep_due.is_some_and(|t| t <= now()) {
                let listed = target
                    .get(layout::PACKS)
                    .await?
                    .map(|(b, _)| layout::parse_packs(&String::from_utf8_lossy(&b)))
                    .unwrap_or_default();
                let (deleted, next) = target.sweep(&listed, opts.grace).await?;
                report.deleted_packs = deleted;
                state.sweep_due = next;
            }
            return Ok(report);
        }

        let packs_now = target
            .get(layout::PACKS)
            .await?
            .map(|(b, _)| layout::parse_packs(&String::from_utf8_lossy(&b)))
            .unwrap_or_default();
        let consolidate = packs_now.len() >= opts.max_packs;
        let tips: BTreeSet<String> = refs.iter().map(|r| r.oid.clone()).collect();
        let exclude = if consolidate {
            BTreeSet::new()
        } else {
            let old: BTreeSet<String> = published.values().cloned().collect();
            present(cache, &old, opts.git_timeout).await?
        };
        std::fs::create_dir_all(&opts.scratch)
            .map_err(|e| MirrorError::Pack(format!("{}: {e}", opts.scratch.display())))?;
        let scratch = tempfile::Builder::new()
            .prefix("pack-")
            .tempdir_in(&opts.scratch)
            .map_err(|e| MirrorError::Pack(format!("{}: {e}", opts.scratch.display())))?;
        let written = write_pack(cache, &tips, &exclude, scratch.path(), opts.git_timeout).await?;
        report.pack = written.as_ref().map(|(info, _, _)| info.clone());
        report.consolidated = if consolidate && written.is_some() {
            packs_now.len()
        } else {
            0
        };
        if opts.dry_run {
            return Ok(report);
        }
        if attempt == 0 {
            // What a killed run left half-written; a writer under way elsewhere is younger.
            match store.clean_stale(STALE).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    target = %store.describe(),
                    "removed {n} files that interrupted writes left behind"
                ),
                Err(e) => {
                    tracing::warn!(target = %store.describe(), %e, "cannot look for files interrupted writes left")
                }
            }
        }

        if let Some((info, pack, idx)) = &written
            && !packs_now.contains(&info.name)
        {
            target.upload_pack(info, pack, idx).await?;
        }
        if opts.lfs {
            report.lfs = super::lfs::copy_new(
                cache,
                store,
                &opts.source,
                &tips,
                &exclude,
                opts.git_timeout,
            )
            .await?;
        }
        if let Some((info, _, _)) = &written {
            target
                .edit_packs(Some(&info.name), &BTreeSet::new())
                .await?;
        }
        let version = current.as_ref().map(|(_, v)| v.as_str());
        match store
            .put_bytes_if(layout::INFO_REFS, want_refs.as_bytes(), version)
            .await
        {
            Ok(_) => {}
            Err(StoreError::Conflict(_)) => {
                tracing::info!(attempt, "info/refs changed meanwhile; starting over");
                tokio::time::sleep(Duration::from_millis(50 + fastrand::u64(0..200))).await;
                continue;
            }
            Err(e) => return Err(target.err(e)),
        }
        let head = target.get(layout::HEAD).await?;
        let head_text = head.map(|(b, _)| String::from_utf8_lossy(&b).into_owned());
        report.head_changed = want_head.is_some() && head_text != want_head;
        if report.head_changed {
            publish_head(&target, want_head.as_deref()).await?;
        }
        let mut listed = packs_now.clone();
        if let Some((info, _, _)) = &written
            && consolidate
        {
            let old: BTreeSet<String> = packs_now
                .iter()
                .filter(|p| **p != info.name)
                .cloned()
                .collect();
            listed = target.edit_packs(None, &old).await?;
            target.retire(&old).await?;
        }
        let (deleted, next) = target.sweep(&listed, opts.grace).await?;
        report.deleted_packs = deleted;
        state.sweep_due = next;
        return Ok(report);
    }
    Err(MirrorError::Raced(ATTEMPTS))
}

async fn publish_head(target: &Target<'_>, head: Option<&str>) -> Result<(), MirrorError> {
    if let Some(head) = head {
        target
            .store
            .put_bytes(layout::HEAD, head.as_bytes())
            .await
            .map_err(|e| target.err(e))?;
    }
    Ok(())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The refs that differ between `published` and `wanted`, by name.
fn diff(published: &BTreeMap<String, String>, wanted: &BTreeMap<String, String>) -> Vec<RefChange> {
    let names: BTreeSet<&String> = published.keys().chain(wanted.keys()).collect();
    names
        .into_iter()
        .filter(|n| published.get(*n) != wanted.get(*n))
        .map(|n| RefChange {
            name: n.clone(),
            old: published.get(n).cloned(),
            new: wanted.get(n).cloned(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_new_moved_and_deleted_refs() {
        let a = "1".repeat(40);
        let b = "2".repeat(40);
        let published: BTreeMap<String, String> = [
            ("refs/heads/gone".to_string(), a.clone()),
            ("refs/heads/main".to_string(), a.clone()),
            ("refs/heads/same".to_string(), a.clone()),
        ]
        .into();
        let wanted: BTreeMap<String, String> = [
            ("refs/heads/main".to_string(), b.clone()),
            ("refs/heads/new".to_string(), b.clone()),
            ("refs/heads/same".to_string(), a.clone()),
        ]
        .into();
        let changed = diff(&published, &wanted);
        let names: Vec<&str> = changed.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            ["refs/heads/gone", "refs/heads/main", "refs/heads/new"]
        );
        assert_eq!(changed[0].new, None);
        assert_eq!(changed[2].old, None);
    }
}
