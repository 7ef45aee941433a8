//! Bare caches of remote repositories: one bare repository per source URL holding the
//! source's branches and tags (`+refs/heads/*:refs/heads/*`, `+refs/tags/*:refs/tags/*`;
//! never `refs/pull/*` or other hidden refs), brought up to date with `git fetch --prune`.
//! The partition producer, the S3 mirror and the webhook mirror all read their sources
//! through such a cache, so a run only transfers what is new at the source.
//!
//! A cache lives at `<root>/<first 16 bytes of sha256(url), hex>.git`; the URL itself (which
//! may carry credentials) is only in the cache's own `config`, never in a path or a log.

use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::fcntl::Flock;
use sha2::Digest;

use super::ops::{self, GitError};

/// Where the cache of `url` lives under `root` (no I/O).
pub fn path_of(root: &Path, url: &str) -> PathBuf {
    let digest = sha2::Sha256::digest(url.as_bytes());
    root.join(format!("{}.git", hex::encode(&digest[..16])))
}

/// Brings the bare cache of `url` under `root` up to date with `git fetch --prune origin`
/// (forced refspecs, so force-pushes and deletions at the source show); the first time,
/// the cache is created (`git init --bare`, the refspecs, and `HEAD` as the source's
/// default branch from `git ls-remote --symref`; for a source on this machine, `git clone
/// --bare --local`, whose object files are hard links to the source's). `env` is passed to git (such as an
/// `http.extraHeader` through `GIT_CONFIG_*`). Returns the cache's path.
///
/// A cache whose first fetch was interrupted is created again from scratch. Caches made by
/// `git clone --mirror` (earlier versions) keep working.
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
    // Several mirrors may read one source: one refresh of a cache at a time.
    let _lock = lock(root, &cache).await?;
    if cache.join("HEAD").exists() {
        keep_packs(&cache, timeout).await?;
        ops::run_with(
            &cache,
            &["fetch", "--prune", "--quiet", "origin"],
            timeout,
            env,
        )
        .await?;
        return Ok(cache);
    }
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
    // A source on this machine: `git clone --bare --local` hard-links its object files
    // (git-clone(1)), which costs nothing next to a fetch that hashes every object again
    // (0.1 s instead of 1 s for 100 MB). The refs it makes are the source's heads and tags,
    // as the refspecs below would fetch them.
    let cloned = match local_source(url) {
        Some(dir) => {
            let dir = dir.display().to_string();
            match ops::run_with(
                root,
                &["clone", "--bare", "--local", "--quiet", "--", &dir, &target],
                timeout,
                env,
            )
            .await
            {
                Ok(_) => true,
                Err(err) => {
                    tracing::debug!(%err, "a local clone failed; fetching instead");
                    let _ = std::fs::remove_dir_all(&partial);
                    false
                }
            }
        }
        None => false,
    };
    if !cloned {
        ops::run_with(root, &["init", "--bare", "--quiet", &target], timeout, env).await?;
    }
    for args in [
        vec!["config", "remote.origin.url", url],
        vec![
            "config",
            "--replace-all",
            "remote.origin.fetch",
            "+refs/heads/*:refs/heads/*",
        ],
        vec![
            "config",
            "--add",
            "remote.origin.fetch",
            "+refs/tags/*:refs/tags/*",
        ],
        vec!["config", "fetch.unpackLimit", "1"],
    ] {
        ops::run_with(&partial, &args, timeout, env).await?;
    }
    // The config holds the URL, credentials included: only its owner reads it.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(
            partial.join("config"),
            std::fs::Permissions::from_mode(0o600),
        );
    }
    if cloned {
        std::fs::rename(&partial, &cache).map_err(|source| GitError::Spawn {
            dir: cache.clone(),
            source,
        })?;
        return Ok(cache);
    }
    ops::run_with(
        &partial,
        &["fetch", "--prune", "--quiet", "origin"],
        timeout,
        env,
    )
    .await?;
    if let Ok(out) = ops::run_with(
        &partial,
        &["ls-remote", "--symref", "origin", "HEAD"],
        timeout,
        env,
    )
    .await
        && let Some(head) = out.lines().find_map(|l| {
            l.strip_prefix("ref: ")
                .and_then(|rest| rest.split_once('\t'))
                .map(|(r, _)| r.to_string())
        })
    {
        let _ = ops::run_with(&partial, &["symbolic-ref", "HEAD", &head], timeout, env).await;
    }
    std::fs::rename(&partial, &cache).map_err(|source| GitError::Spawn {
        dir: cache.clone(),
        source,
    })?;
    Ok(cache)
}

/// The folder of a source on this machine (a path, or a `file://` URL, naming a folder
/// that exists), or `None` for a source reached over a network.
fn local_source(url: &str) -> Option<PathBuf> {
    let path = match url.strip_prefix("file://") {
        Some(rest) => PathBuf::from(rest),
        None if url.starts_with('/') => PathBuf::from(url),
        None => return None,
    };
    path.is_dir().then_some(path)
}

/// Sets `fetch.unpackLimit=1` in a cache made before it was set at creation: a fetch
/// then keeps what it receives as the pack it came in (git-config(1)), instead of
/// unpacking a small fetch into loose objects, which `git pack-objects` (the S3 mirror's
/// pack, the webhook mirror's push) must inflate, search for deltas and deflate again
/// (16 s instead of 0.6 s for 30 objects of 100 MB).
///
/// Errors: [`GitError`] when git cannot set it.
async fn keep_packs(cache: &Path, timeout: Duration) -> Result<(), GitError> {
    let config = std::fs::read_to_string(cache.join("config")).unwrap_or_default();
    if config.to_ascii_lowercase().contains("unpacklimit") {
        return Ok(());
    }
    ops::run(cache, &["config", "fetch.unpackLimit", "1"], timeout)
        .await
        .map(|_| ())
}

/// An exclusive `flock(2)` on `<cache>.lock` beside the cache ([`crate::flock`]), held
/// until the returned value is dropped: it serializes refreshes of one cache across tasks
/// and processes.
///
/// Errors: [`GitError::Spawn`] when `root` or the lock file cannot be made or locked.
async fn lock(root: &Path, cache: &Path) -> Result<Flock<std::fs::File>, GitError> {
    crate::flock::exclusive(cache.with_extension("lock"))
        .await
        .map_err(|source| GitError::Spawn {
            dir: root.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `git <args>` in the source `source`, with `home` as HOME and a committer.
    fn git_in(source: &Path, home: &Path, args: &[&str]) {
        let ok = std::process::Command::new("git")
            .args(args)
            .current_dir(source)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("HOME", home)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .status()
            .expect("git");
        assert!(ok.success(), "git {args:?}");
    }

    /// Eight refreshes of one new cache at once (as eight mirrors of one source start
    /// together): all succeed and leave one cache. Without the lock they collided on the
    /// half-made cache ("could not lock config file", "cannot copy ... File exists").
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_refreshes_of_one_source_all_succeed() {
        let dir = tempfile::tempdir().expect("tmp");
        let source = dir.path().join("src");
        let git = |args: &[&str]| git_in(&source, dir.path(), args);
        std::fs::create_dir_all(&source).expect("mkdir");
        git(&["init", "-q", "-b", "main"]);
        git(&["commit", "-q", "--allow-empty", "-m", "one"]);
        let url = format!("file://{}", source.display());
        let root = dir.path().join("cache");
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (root, url) = (root.clone(), url.clone());
            tasks.spawn(async move { refresh(&root, &url, Duration::from_secs(60), &[]).await });
        }
        while let Some(done) = tasks.join_next().await {
            let path = done.expect("task").expect("refresh");
            assert!(path.join("refs/heads/main").exists() || path.join("packed-refs").exists());
        }
        let caches = std::fs::read_dir(&root)
            .expect("root")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "git"))
            })
            .count();
        assert_eq!(caches, 1);
    }

    /// A fetch into a cache keeps the pack it received, however few objects it holds, so
    /// the packs the mirrors write reuse its compressed objects.
    #[tokio::test]
    async fn a_cache_keeps_what_it_fetches_as_packs() {
        let dir = tempfile::tempdir().expect("tmp");
        let source = dir.path().join("src");
        let git = |args: &[&str]| git_in(&source, dir.path(), args);
        std::fs::create_dir_all(&source).expect("mkdir");
        git(&["init", "-q", "-b", "main"]);
        let loose = |cache: &Path| -> usize {
            std::fs::read_dir(cache.join("objects"))
                .expect("objects")
                .filter_map(Result::ok)
                .filter(|e| e.file_name().len() == 2)
                .map(|e| std::fs::read_dir(e.path()).map_or(0, |d| d.count()))
                .sum()
        };
        let url = format!("file://{}", source.display());
        let root = dir.path().join("cache");
        for round in 0..3 {
            std::fs::write(source.join(format!("f{round}.txt")), format!("{round}\n"))
                .expect("write");
            git(&["add", "."]);
            git(&["commit", "-q", "-m", &format!("commit {round}")]);
            if round == 0 {
                // The cache of a local source is a hard-linked clone: it holds the source's
                // own files, packed here; what later refreshes fetch must stay packed.
                git(&["gc", "-q"]);
            }
            if round == 1 {
                // A cache made before the setting: it is set on the next refresh.
                let cache = path_of(&root, &url);
                let ok = std::process::Command::new("git")
                    .args(["config", "--unset", "fetch.unpackLimit"])
                    .current_dir(&cache)
                    .status()
                    .expect("git");
                assert!(ok.success());
            }
            let cache = refresh(&root, &url, Duration::from_secs(60), &[])
                .await
                .expect("refresh");
            assert_eq!(loose(&cache), 0, "round {round}: no loose objects");
        }
    }

    #[tokio::test]
    async fn a_local_source_is_cloned_with_its_heads_and_tags_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let source = dir.path().join("src");
        let git = |args: &[&str]| git_in(&source, dir.path(), args);
        std::fs::create_dir_all(&source).expect("mkdir");
        git(&["init", "-q", "-b", "main"]);
        std::fs::write(source.join("a.txt"), "a\n").expect("write");
        git(&["add", "."]);
        git(&["commit", "-q", "-m", "one"]);
        git(&["tag", "v1"]);
        git(&["update-ref", "refs/remotes/origin/x", "HEAD"]);
        git(&["update-ref", "refs/pull/1/head", "HEAD"]);
        let url = format!("file://{}", source.display());
        let cache = refresh(
            &dir.path().join("cache"),
            &url,
            Duration::from_secs(60),
            &[],
        )
        .await
        .expect("refresh");
        let out = std::process::Command::new("git")
            .args(["for-each-ref", "--format=%(refname)"])
            .current_dir(&cache)
            .output()
            .expect("git");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "refs/heads/main\nrefs/tags/v1\n"
        );
        let config = std::fs::read_to_string(cache.join("config")).expect("config");
        assert!(config.contains(&format!("url = {url}")), "{config}");
        assert!(config.contains("+refs/tags/*:refs/tags/*"), "{config}");
    }

    #[test]
    fn the_path_does_not_show_the_url() {
        let p = path_of(Path::new("/c"), "https://user:secret@example.com/x.git");
        let s = p.display().to_string();
        assert!(!s.contains("secret") && !s.contains("example"), "{s}");
        assert!(s.ends_with(".git") && s.starts_with("/c/"));
        assert_ne!(p, path_of(Path::new("/c"), "https://example.com/y.git"));
    }
}
