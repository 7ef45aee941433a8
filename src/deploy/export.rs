//! The tree shipped is exactly a commit's tree, never the user's working tree: gitsync keeps
//! one export folder per deploy (`~/.gitsync/deploy/<name>/tree`) with an index of its own,
//! and moves it to each new commit with `git read-tree --reset -u`, which rewrites only the
//! files that changed. Unchanged files keep their timestamps, so rsync's `--link-dest`
//! hard-links them to the previous release.
//!
//! The user's repository is only read: its objects, through `--git-dir`, with
//! `GIT_INDEX_FILE` pointing at the export's own index.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest;

use crate::git::ops;

/// The export of one deploy.
#[derive(Debug, Clone)]
pub struct Export {
    /// `~/.gitsync/deploy/<name>`.
    pub dir: PathBuf,
}

impl Export {
    /// The folder holding the tree.
    pub fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }

    /// Moves the export to commit `rev` of the repository whose git folder is `git_dir`.
    ///
    /// Errors: git's message (an unknown revision, a broken repository).
    pub async fn update(&self, git_dir: &Path, rev: &str, timeout: Duration) -> Result<(), String> {
        let tree = self.tree();
        std::fs::create_dir_all(&tree).map_err(|e| format!("{}: {e}", tree.display()))?;
        let git_dir = git_dir.display().to_string();
        let work_tree = tree.display().to_string();
        let env = vec![(
            "GIT_INDEX_FILE".to_string(),
            self.dir.join("index").display().to_string(),
        )];
        ops::run_with(
            &tree,
            &[
                "--git-dir",
                &git_dir,
                "--work-tree",
                &work_tree,
                "read-tree",
                "--reset",
                "-u",
                &format!("{rev}^{{tree}}"),
            ],
            timeout,
            &env,
        )
        .await
        .map_err(|e| match e {
            ops::GitError::Failed { stderr, .. } => stderr,
            other => other.to_string(),
        })?;
        Ok(())
    }
}

/// A file's stat data that says whether its content could have changed.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Stamp {
    size: u64,
    mtime_ns: i128,
    ino: u64,
    sha256: String,
}

/// sha256 of every regular file in `files` (paths relative to `tree`), as
/// `sha256sum`'s format (`<hex>  <path>\n`, sorted). Hashes of files whose stat data did not
/// change since the last call are reused from `cache` (a JSON file).
///
/// Errors: a file that cannot be read.
pub fn manifest(tree: &Path, files: &[String], cache: &Path) -> Result<String, String> {
    use std::os::unix::fs::MetadataExt;
    let mut known: BTreeMap<String, Stamp> = std::fs::read(cache)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut fresh = BTreeMap::new();
    for rel in files {
        let path = tree.join(rel);
        let meta =
            std::fs::symlink_metadata(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.file_type().is_file() {
            continue;
        }
        let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        let hit = known
            .remove(rel)
            .filter(|s| s.size == meta.len() && s.mtime_ns == mtime_ns && s.ino == meta.ino());
        let sha = match hit {
            Some(s) => s.sha256,
            None => {
                let mut file =
                    std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                let mut hasher = sha2::Sha256::new();
                std::io::copy(&mut file, &mut hasher)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                hex::encode(hasher.finalize())
            }
        };
        fresh.insert(
            rel.clone(),
            Stamp {
                size: meta.len(),
                mtime_ns,
                ino: meta.ino(),
                sha256: sha.clone(),
            },
        );
        out.insert(rel.clone(), sha);
    }
    if let Ok(bytes) = serde_json::to_vec(&fresh) {
        let _ = crate::backend::local::write_atomic(cache, &bytes);
    }
    Ok(out
        .into_iter()
        .map(|(path, sha)| format!("{sha}  {path}\n"))
        .collect())
}

/// Parses a manifest (`<hex>  <path>` lines) into path -> sha256.
pub fn parse_manifest(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once("  "))
        .map(|(sha, path)| {
            (
                path.trim_start_matches("./").to_string(),
                sha.trim_start_matches('\\').to_string(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifests_are_sorted_sha256sum_lines_and_reuse_the_cache() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::write(dir.path().join("b"), "bee\n").expect("write");
        std::fs::write(dir.path().join("a"), "").expect("write");
        let cache = dir.path().join("cache.json");
        let files = vec!["b".to_string(), "a".to_string()];
        let m = manifest(dir.path(), &files, &cache).expect("manifest");
        assert_eq!(
            m,
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855  a\n\
             2d7d4a9f3d6d6a8f8a5a0f0b7a6dd1d1fa0fa4d64aee3b0b4c9bb0b5c1aa1b5f  b\n"
                .replace(
                    "2d7d4a9f3d6d6a8f8a5a0f0b7a6dd1d1fa0fa4d64aee3b0b4c9bb0b5c1aa1b5f",
                    &{
                        let mut h = sha2::Sha256::new();
                        h.update(b"bee\n");
                        hex::encode(h.finalize())
                    }
                )
        );
        assert!(cache.exists());
        assert_eq!(manifest(dir.path(), &files, &cache).expect("again"), m);
        assert_eq!(parse_manifest(&m).len(), 2);
    }
}
