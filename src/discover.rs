//! Which repositories gitsync keeps in sync: the configured list, or every repository
//! found under the root.
//!
//! Discovery walks folders only (with the `ignore` crate, hidden folders included) and does
//! not descend into a repository's worktree looking for more; submodules are out of scope.
//! Configured entries without glob characters are taken as they are, even when missing, so
//! that a deleted repository shows up as an error instead of silently vanishing.

use std::path::{Path, PathBuf};

use globset::{GlobBuilder, GlobSetBuilder};

/// A repository to keep in sync.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Repo {
    /// Path relative to the root with `/` separators (`.` for the root itself).
    pub name: String,
    /// Absolute worktree path.
    pub path: PathBuf,
}

/// A configured pattern that is not a valid glob.
#[derive(Debug, thiserror::Error)]
#[error("repositories: invalid pattern {pattern:?}: {source}")]
pub struct PatternError {
    /// The pattern as written.
    pub pattern: String,
    /// The cause.
    #[source]
    pub source: globset::Error,
}

fn is_repo(dir: &Path) -> bool {
    dir.join(".git").exists()
}

fn relative_name(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) if rel.as_os_str().is_empty() => ".".to_string(),
        Ok(rel) => rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy())
            .collect::<Vec<_>>()
            .join("/"),
        Err(_) => path.display().to_string(),
    }
}

/// The name prefix of a folder being made for a repository (`bootstrap` clones into
/// `.gitsync-clone.<name>` beside its place, then renames it): discovery skips it.
pub const STAGING_PREFIX: &str = ".gitsync-clone.";

/// Every repository under `root` (the root itself included), sorted by name; folders
/// named [`STAGING_PREFIX`]`*` are skipped.
pub fn walk(root: &Path) -> Vec<Repo> {
    let mut found = Vec::new();
    let walker = ignore::WalkBuilder::new(root)
        .standard_filters(false)
        .follow_links(false)
        .filter_entry(|entry| {
            let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
            let inside_repo = entry.depth() > 0 && entry.path().parent().is_some_and(is_repo);
            let staging = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(STAGING_PREFIX));
            is_dir && entry.file_name() != ".git" && !inside_repo && !staging
        })
        .build();
    for entry in walker.flatten() {
        if is_repo(entry.path()) {
            found.push(Repo {
                name: relative_name(root, entry.path()),
                path: entry.path().to_path_buf(),
            });
        }
    }
    found.sort();
    found
}

/// How deep under the root a new repository can appear for `configured` (the config's
/// `repositories`; `None` discovers everything): `Some(None)` at any depth, `Some(Some(n))`
/// at most `n` folders down, `None` nowhere (an explicit list without globs).
pub fn depth_to_watch(configured: Option<&[String]>) -> Option<Option<usize>> {
    let Some(entries) = configured else {
        return Some(None);
    };
    let mut deepest: Option<Option<usize>> = None;
    for entry in entries {
        let entry = entry.trim_end_matches('/');
        if !entry.contains(['*', '?', '[', '{']) {
            continue;
        }
        let depth = if entry.contains("**") {
            None
        } else {
            Some(entry.split('/').filter(|c| !c.is_empty()).count())
        };
        deepest = Some(match (deepest, depth) {
            (None, d) => d,
            (Some(None), _) | (_, None) => None,
            (Some(Some(a)), Some(b)) => Some(a.max(b)),
        });
    }
    deepest
}

/// The folders under `root` (the root included) that are not repositories and not inside
/// one, at most `depth` levels down (`None`: any depth): where a new clone would appear.
/// Returns at most `limit` folders, and whether there were more.
pub fn folders(root: &Path, depth: Option<usize>, limit: usize) -> (Vec<PathBuf>, bool) {
    let mut out = Vec::new();
    let mut walker = ignore::WalkBuilder::new(root);
    walker
        .standard_filters(false)
        .follow_links(false)
        .max_depth(depth)
        .filter_entry(|entry| {
            let is_dir = entry.file_type().is_some_and(|t| t.is_dir());
            is_dir && entry.file_name() != ".git" && !is_repo(entry.path())
        });
    for entry in walker.build().flatten() {
        if out.len() == limit {
            return (out, true);
        }
        out.push(entry.into_path());
    }
    (out, false)
}

/// Resolves the configured `repositories` (or discovery when `None`) under `root`.
///
/// Errors: [`PatternError`] for an invalid glob.
pub fn resolve(root: &Path, configured: Option<&[String]>) -> Result<Vec<Repo>, PatternError> {
    let Some(entries) = configured else {
        return Ok(walk(root));
    };
    let mut repos = Vec::new();
    let mut globs = GlobSetBuilder::new();
    let mut any_glob = false;
    for entry in entries {
        let entry = entry.trim_end_matches('/');
        if entry.contains(['*', '?', '[', '{']) {
            let glob = GlobBuilder::new(entry)
                .literal_separator(true)
                .build()
                .map_err(|source| PatternError {
                    pattern: entry.to_string(),
                    source,
                })?;
            globs.add(glob);
            any_glob = true;
        } else {
            repos.push(Repo {
                name: if entry.is_empty() {
                    ".".to_string()
                } else {
                    entry.to_string()
                },
                path: root.join(entry),
            });
        }
    }
    if any_glob {
        let set = globs.build().map_err(|source| PatternError {
            pattern: entries.join(", "),
            source,
        })?;
        repos.extend(walk(root).into_iter().filter(|r| set.is_match(&r.name)));
    }
    repos.sort();
    repos.dedup();
    Ok(dedup_by_folder(repos))
}

/// Keeps one name for each folder: `a`, `./a` and a symlink to `a` are one repository,
/// synced once under its first name (the others are named in the log).
fn dedup_by_folder(repos: Vec<Repo>) -> Vec<Repo> {
    let mut seen: std::collections::HashMap<PathBuf, String> = std::collections::HashMap::new();
    let mut out = Vec::new();
    for repo in repos {
        let key = std::fs::canonicalize(&repo.path).unwrap_or_else(|_| repo.path.clone());
        match seen.get(&key) {
            Some(first) => tracing::warn!(
                repo = %repo.name,
                same_as = %first,
                "configured twice (the same folder); synced once, as the first name"
            ),
            None => {
                seen.insert(key, repo.name.clone());
                out.push(repo);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_repos_without_descending_into_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        for p in ["a/.git", "b/c/.git", "a/inner/.git", "d/e"] {
            std::fs::create_dir_all(dir.path().join(p)).expect("mkdir");
        }
        let names: Vec<_> = walk(dir.path()).into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["a", "b/c"]);
        let globbed =
            resolve(dir.path(), Some(&["b/*".to_string(), "x".to_string()])).expect("resolve");
        let names: Vec<_> = globbed.into_iter().map(|r| r.name).collect();
        assert_eq!(names, ["b/c", "x"]);
        // The same folder under two names is one repository.
        std::os::unix::fs::symlink(dir.path().join("a"), dir.path().join("alias")).expect("ln");
        let twice = resolve(
            dir.path(),
            Some(&["a".to_string(), "./a".to_string(), "alias".to_string()]),
        )
        .expect("resolve");
        assert_eq!(twice.len(), 1, "{twice:?}");
        // Where new clones can appear: not inside a repository.
        let (mut dirs, more) = folders(dir.path(), None, 100);
        dirs.sort();
        let names: Vec<_> = dirs.iter().map(|d| relative_name(dir.path(), d)).collect();
        assert_eq!(names, [".", "b", "d", "d/e"]);
        assert!(!more);
        assert_eq!(folders(dir.path(), Some(1), 100).0.len(), 3);
        assert!(folders(dir.path(), None, 2).1);
    }

    #[test]
    fn the_depth_to_watch_follows_the_patterns() {
        let list = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(depth_to_watch(None), Some(None));
        assert_eq!(depth_to_watch(Some(&list(&["a", "b/c"]))), None);
        assert_eq!(depth_to_watch(Some(&list(&["a", "work/*"]))), Some(Some(2)));
        assert_eq!(depth_to_watch(Some(&list(&["*", "x/y/*"]))), Some(Some(3)));
        assert_eq!(depth_to_watch(Some(&list(&["x/**"]))), Some(None));
    }
}
