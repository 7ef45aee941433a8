//! The tree shipped is exactly a commit's tree, never the user's working tree: gitsync keeps
//! one export folder per deploy (`~/.gitsync/deploy/<name>/tree`) with an index of its own,
//! and moves it to each new commit with `git read-tree --reset -u`, which rewrites only the
//! files that changed. Unchanged files keep their timestamps, so rsync's `--link-dest`
//! hard-links them to the previous release.
//!
//! The user's repository is only read: its objects, through `--git-dir`, with
//! `GIT_INDEX_FILE` pointing at the export's own index.

use super::DeployError;
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
    pub async fn update(
        &self,
        git_dir: &Path,
        rev: &str,
        timeout: Duration,
    ) -> Result<(), DeployError> {
        let tree = self.tree();
        std::fs::create_dir_all(&tree).map_err(DeployError::io(&tree))?;
        let git_dir = git_dir.display().to_string();
        let work_tree = tree.display().to_string();
        let env = vec![(
            "GIT_INDEX_FILE".to_string(),
            self.dir.join("index").display().to_string(),
        )];
        ops::run_with(
            &tree,
            &[
                // The secret scan hard-links the files into its view, which changes their
                // change time: that must not make read-tree rewrite them (rsync's
                // `--link-dest` would then no longer link unchanged files).
                "-c",
                "core.trustctime=false",
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
        .await?;
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

/// A manifest line for `path` as GNU `sha256sum` writes it: `<hex>  <path>`, except that
/// a name holding a backslash, newline or carriage return is written escaped (`\\`, `\n`,
/// `\r`) on a line that starts with a backslash (coreutils, "sha2 utilities").
fn manifest_line(sha: &str, path: &str) -> String {
    if path.contains(['\\', '\n', '\r']) {
        let escaped = path
            .replace('\\', "\\\\")
            .replace('\n', "\\n")
            .replace('\r', "\\r");
        format!("\\{sha}  {escaped}\n")
    } else {
        format!("{sha}  {path}\n")
    }
}

/// sha256 of every regular file in `files` (paths relative to `tree`), in `sha256sum`'s
/// format (see [`manifest_line`]), sorted by path. Hashes of files whose stat data did not
/// change since the last call are reused from `cache` (a JSON file).
///
/// Errors: a file that cannot be read.
pub fn manifest(tree: &Path, files: &[PathBuf], cache: &Path) -> Result<String, DeployError> {
    use std::os::unix::fs::MetadataExt;
    let mut known: BTreeMap<String, Stamp> = std::fs::read(cache)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut fresh = BTreeMap::new();
    for rel_path in files {
        let path = tree.join(rel_path);
        let rel = &rel_path.to_string_lossy().into_owned();
        let meta = std::fs::symlink_metadata(&path).map_err(DeployError::io(&path))?;
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
                let mut file = std::fs::File::open(&path).map_err(DeployError::io(&path))?;
                let mut hasher = sha2::Sha256::new();
                std::io::copy(&mut file, &mut hasher).map_err(DeployError::io(&path))?;
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
        let _ = crate::util::fs::write_atomic(cache, &bytes);
    }
    Ok(out
        .into_iter()
        .map(|(path, sha)| manifest_line(&sha, &path))
        .collect())
}

/// Parses a manifest (`<hex>  <path>` lines) into path -> sha256.
pub fn parse_manifest(text: &str) -> BTreeMap<String, String> {
    text.split('\n')
        .filter_map(|l| l.split_once("  "))
        .map(|(sha, path)| {
            let path = path.strip_prefix("./").unwrap_or(path);
            match sha.strip_prefix('\\') {
                Some(sha) => (unescape_sha256sum(path), sha.to_string()),
                None => (path.to_string(), sha.to_string()),
            }
        })
        .collect()
}

/// A name from an escaped `sha256sum` line (`\\`, `\n`, `\r`) back as it is.
fn unescape_sha256sum(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut chars = name.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
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
        let files = vec![PathBuf::from("b"), PathBuf::from("a")];
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

    #[test]
    fn odd_names_are_escaped_as_sha256sum_escapes_them() {
        let dir = tempfile::tempdir().expect("tmp");
        let names = ["back\\slash", "new\nline", "tab\t caf\u{e9} 'q\"", "plain"];
        for n in names {
            std::fs::write(dir.path().join(n), n).expect("write");
        }
        let files: Vec<PathBuf> = names.iter().map(PathBuf::from).collect();
        let m = manifest(dir.path(), &files, &dir.path().join("cache.json")).expect("manifest");
        assert_eq!(m.lines().count(), 4, "one line per file: {m:?}");
        assert!(
            m.contains("  back\\\\slash\n") && m.contains("  new\\nline\n"),
            "{m:?}"
        );
        // GNU sha256sum agrees, line for line.
        let out = std::process::Command::new("sha256sum")
            .args(names)
            .current_dir(dir.path())
            .output()
            .expect("sha256sum");
        let theirs = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(
            parse_manifest(&theirs),
            parse_manifest(&m),
            "{theirs:?} vs {m:?}"
        );
        let parsed = parse_manifest(&m);
        for n in names {
            assert!(parsed.contains_key(n), "{n:?} in {parsed:?}");
        }
    }
}
