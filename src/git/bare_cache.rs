//! Bare caches of remote repositories: one `git clone --mirror` per source URL, brought up
//! to date with `git fetch --prune`. The partition producer and the S3 mirror both read
//! their sources through such a cache, so a run only transfers what is new at the source.
//!
//! A cache lives at `<root>/<first 16 bytes of sha256(url), hex>.git`; the URL itself (which
//! may carry credentials) is only in the cache's own `config`, never in a path or a log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::Digest;

use super::ops::{self, GitError};

/// Where the cache of `url` lives under `root` (no I/O).
pub fn path_of(root: &Path, url: &str) -> PathBuf {
    let digest = sha2::Sha256::digest(url.as_bytes());
    root.join(format!("{}.git", hex::encode(&digest[..16])))
}

/// Brings the bare cache of `url` under `root` up to date: `git clone --mirror` the first
/// time, `git fetch --prune origin` afterwards (the mirror refspec `+refs/*:refs/*`, so
/// force-pushes and deletions at the source show). `env` is passed to git (such as an
/// `http.extraHeader` through `GIT_CONFIG_*`). Returns the cache's path.
///
/// A cache whose first clone was interrupted (no `HEAD`) is removed and cloned again.
///
/// Errors: [`GitError`] when git fails (unreachable source, missing credentials, a corrupt
/// pack: git's own checks) or exceeds `timeout`; the message has credentials redacted.
pub async fn refresh(
    root: &Path,
    url: &str,
    timeout: Duration,
    env: &[(String, String)],
) -> Result<PathBuf, GitError> {
    let cache = path_of(root, url);
    if cache.join("HEAD").exists() {
        ops::run_with(
            &cache,
            &["fetch", "--prune", "--quiet", "origin"],
            timeout,
            env,
        )
        .await?;
        return Ok(cache);
    }
    std::fs::create_dir_all(root).map_err(|source| GitError::Spawn {
        dir: root.to_path_buf(),
        source,
    })?;
    if cache.exists() {
        let _ = std::fs::remove_dir_all(&cache);
    }
    let partial = root.join(format!(
        ".partial-{}",
        cache
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let _ = std::fs::remove_dir_all(&partial);
    let target = partial.display().to_string();
    ops::run_with(
        root,
        &["clone", "--mirror", "--quiet", "--", url, &target],
        timeout,
        env,
    )
    .await?;
    std::fs::rename(&partial, &cache).map_err(|source| GitError::Spawn {
        dir: cache.clone(),
        source,
    })?;
    Ok(cache)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_path_does_not_show_the_url() {
        let p = path_of(Path::new("/c"), "https://user:secret@example.com/x.git");
        let s = p.display().to_string();
        assert!(!s.contains("secret") && !s.contains("example"), "{s}");
        assert!(s.ends_with(".git") && s.starts_with("/c/"));
        assert_ne!(p, path_of(Path::new("/c"), "https://example.com/y.git"));
    }
}
