//! Installing gitsync's hooks beside the user's own: `pre-push` in the user's clones, and
//! `post-receive` in a bare repository on a server (`hooks install --server`).
//!
//! The hooks folder is found as git finds it (githooks(5)): `core.hooksPath` when set (a
//! relative value is relative to the worktree's top level), otherwise `hooks/` in the
//! repository's common git dir, so linked worktrees and `.git` files share one hook. A hook
//! that is not gitsync's is never overwritten: it is renamed to `pre-push.gitsync-chained`,
//! which gitsync's script runs first, and `uninstall` renames it back (a rename keeps its
//! bytes, mode and symlink-ness exactly).

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The script installed as `pre-push`, before the gitsync binary's path is filled in.
pub const SCRIPT: &str = include_str!("../../hooks/pre-push");
/// The line that marks a hook as gitsync's own.
pub const MARKER: &str = "# gitsync-managed-hook";
/// What the user's own `pre-push` is renamed to.
pub const CHAINED: &str = "pre-push.gitsync-chained";

/// One of gitsync's hooks: its name in the hooks folder (githooks(5)), its script (with
/// `@GITSYNC_BIN@`, `@GITSYNC_HOME@` and `@GITSYNC_URL@` to fill in), and what a user's
/// own hook of that name is renamed to while gitsync's runs it first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The hook's file name.
    pub name: &'static str,
    /// The script.
    pub script: &'static str,
    /// The chained hook's file name.
    pub chained: &'static str,
}

/// `pre-push` in a user's clone: hands each push to the daemon.
pub const PRE_PUSH: Kind = Kind {
    name: "pre-push",
    script: SCRIPT,
    chained: CHAINED,
};

/// `post-receive` in a bare repository on a server: publishes each ref update.
pub const POST_RECEIVE: Kind = Kind {
    name: "post-receive",
    script: include_str!("../../hooks/post-receive"),
    chained: "post-receive.gitsync-chained",
};

/// Why a hook could not be installed, removed or inspected.
#[derive(Debug, thiserror::Error)]
pub enum HookError {
    /// The repository cannot be opened or its config read.
    #[error("cannot open the repository: {0}")]
    Open(String),
    /// A file in the hooks folder cannot be read, written or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Both a foreign hook and a chained hook exist: installing would lose one.
    #[error(
        "{0} and its .gitsync-chained copy both exist and neither is gitsync's; move one away first"
    )]
    Conflict(PathBuf),
}

/// What a repository's hooks folder holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookState {
    /// gitsync's hook is installed and current; `chained` when it runs the user's hook first.
    Installed {
        /// Whether a user hook is chained.
        chained: bool,
    },
    /// gitsync's hook is installed but calls another gitsync binary or an older script.
    Outdated,
    /// No `pre-push` hook at all.
    Missing,
    /// A `pre-push` hook that is not gitsync's (install will chain it).
    Foreign,
}

impl HookState {
    /// A short word for `gitsync hooks status` and `doctor`.
    pub fn describe(&self) -> &'static str {
        match self {
            HookState::Installed { chained: true } => "installed (chains your pre-push hook)",
            HookState::Installed { chained: false } => "installed",
            HookState::Outdated => "outdated (run `gitsync hooks install`)",
            HookState::Missing => "missing",
            HookState::Foreign => "not installed (a pre-push hook of yours is there)",
        }
    }
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> HookError + '_ {
    move |source| HookError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The hooks folder git uses for the repository whose worktree (or git dir) is `repo`.
///
/// Errors: [`HookError::Open`] when it is not a repository or `core.hooksPath` cannot be
/// interpolated.
pub fn hooks_dir(repo: &Path) -> Result<PathBuf, HookError> {
    let opened = gix::open(repo).map_err(|e| HookError::Open(e.to_string()))?;
    let configured = opened
        .config_snapshot()
        .trusted_path("core.hooksPath")
        .map_err(|e| HookError::Open(e.to_string()))?;
    Ok(match configured {
        Some(path) if path.is_absolute() => path,
        Some(path) => opened.workdir().unwrap_or(opened.git_dir()).join(path),
        None => opened.common_dir().join("hooks"),
    })
}

/// Where a repository's hooks folder is, and whether gitsync may write into it unasked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// The repository's own folder (`hooks/` in its git dir, or a `core.hooksPath` of its
    /// own outside the worktree): gitsync installs there.
    Own(PathBuf),
    /// `core.hooksPath` comes from the global or system config: the folder serves every
    /// repository on the machine.
    Shared(PathBuf),
    /// `core.hooksPath` points into the worktree (husky, `.githooks`, lefthook): writing
    /// there would change the user's files (and the next `git commit -a` would take them).
    InWorktree(PathBuf),
}

impl Placement {
    /// The folder, whatever the kind.
    pub fn dir(&self) -> &Path {
        match self {
            Placement::Own(d) | Placement::Shared(d) | Placement::InWorktree(d) => d,
        }
    }

    /// Why gitsync leaves the folder alone, or `None` when it may install.
    pub fn reason(&self) -> Option<&'static str> {
        match self {
            Placement::Own(_) => None,
            Placement::Shared(_) => Some("core.hooksPath is shared by every repository"),
            Placement::InWorktree(_) => Some("core.hooksPath is inside the worktree"),
        }
    }
}

/// Where the hooks folder of `repo` is and whether it is the repository's own
/// ([`Placement`]); the scope of `core.hooksPath` is read with `git config --show-scope`.
///
/// Errors: as [`hooks_dir`].
pub fn placement(repo: &Path) -> Result<Placement, HookError> {
    let dir = hooks_dir(repo)?;
    let mut command = std::process::Command::new("git");
    crate::util::child::quiet(&mut command);
    let scope = command
        .arg("-C")
        .arg(repo)
        .args(["config", "--show-scope", "--get", "core.hooksPath"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split('\t')
                .next()
                .unwrap_or("")
                .to_string()
        });
    let Some(scope) = scope else {
        return Ok(Placement::Own(dir));
    };
    if !matches!(scope.as_str(), "local" | "worktree") {
        return Ok(Placement::Shared(dir));
    }
    let top = gix::open(repo)
        .ok()
        .and_then(|r| r.workdir().map(Path::to_path_buf))
        .and_then(|w| std::fs::canonicalize(w).ok());
    let resolved = std::fs::canonicalize(&dir).unwrap_or_else(|_| dir.clone());
    match top {
        Some(top) if resolved.starts_with(&top) => Ok(Placement::InWorktree(dir)),
        _ => Ok(Placement::Own(dir)),
    }
}

/// The pre-push script with `binary` as the gitsync to call, handing pushes to the daemon
/// whose folder is `home` (`~/.gitsync` of the user who installed it).
pub fn script_for(binary: &Path, home: &Path) -> String {
    script_of(&PRE_PUSH, binary, home, "")
}

/// The script of `kind` with `binary`, `home` and `url` (the URL clients fetch a server's
/// bare repository by; empty for pre-push) filled in.
pub fn script_of(kind: &Kind, binary: &Path, home: &Path, url: &str) -> String {
    // Single-quoted in the script: an embedded quote closes and reopens the string.
    let quote = |p: &str| p.replace('\'', r"'\''");
    kind.script
        .replace("@GITSYNC_BIN@", &quote(&binary.to_string_lossy()))
        .replace("@GITSYNC_HOME@", &quote(&home.to_string_lossy()))
        .replace("@GITSYNC_URL@", &quote(url))
}

/// The gitsync folder hooks installed from this process hand pushes to: `~/.gitsync`.
fn default_home() -> PathBuf {
    crate::config::gitsync_home()
}

fn is_ours(path: &Path) -> bool {
    std::fs::read(path)
        .map(|bytes| {
            bytes
                .split(|b| *b == b'\n')
                .take(3)
                .any(|line| line.starts_with(MARKER.as_bytes()))
        })
        .unwrap_or(false)
}

fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

/// What `dir` (a hooks folder) holds, compared with the pre-push script for `binary`.
pub fn state_in(dir: &Path, binary: &Path) -> HookState {
    state_of(&PRE_PUSH, dir, binary, "")
}

/// What `dir` holds of hook `kind`, compared with its script for `binary` and `url`.
pub fn state_of(kind: &Kind, dir: &Path, binary: &Path, url: &str) -> HookState {
    let hook = dir.join(kind.name);
    if !exists(&hook) {
        return HookState::Missing;
    }
    if !is_ours(&hook) {
        return HookState::Foreign;
    }
    let current = std::fs::read_to_string(&hook)
        .is_ok_and(|text| text == script_of(kind, binary, &default_home(), url));
    if current {
        HookState::Installed {
            chained: exists(&dir.join(kind.chained)),
        }
    } else {
        HookState::Outdated
    }
}

/// Installs the hook calling `binary` into `dir`, chaining a user hook found there.
/// Idempotent: an installed, current hook is left as it is. Returns the state before.
///
/// Errors: [`HookError::Io`]; [`HookError::Conflict`] when a foreign hook and a chained
/// hook both exist.
pub fn install_in(dir: &Path, binary: &Path) -> Result<HookState, HookError> {
    install_of(&PRE_PUSH, dir, binary, "")
}

/// [`install_in`] for hook `kind`, its script calling `binary` with `url`.
///
/// Errors: as [`install_in`].
pub fn install_of(
    kind: &Kind,
    dir: &Path,
    binary: &Path,
    url: &str,
) -> Result<HookState, HookError> {
    let before = state_of(kind, dir, binary, url);
    let hook = dir.join(kind.name);
    match before {
        HookState::Installed { .. } => return Ok(before),
        HookState::Foreign => {
            let chained = dir.join(kind.chained);
            if exists(&chained) {
                return Err(HookError::Conflict(hook));
            }
            std::fs::rename(&hook, &chained).map_err(io_err(&hook))?;
        }
        HookState::Missing | HookState::Outdated => {}
    }
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    // Written beside and renamed over, so git never runs half a script.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.gitsync-", kind.name))
        .tempfile_in(dir)
        .map_err(io_err(dir))?;
    tmp.write_all(script_of(kind, binary, &default_home(), url).as_bytes())
        .map_err(io_err(&hook))?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o755))
        .map_err(io_err(&hook))?;
    tmp.persist(&hook).map_err(|e| HookError::Io {
        path: hook.clone(),
        source: e.error,
    })?;
    Ok(before)
}

/// Removes gitsync's hook from `dir` and puts a chained user hook back where it was.
/// A hook that is not gitsync's is left alone. Returns the state before.
///
/// Errors: [`HookError::Io`].
pub fn uninstall_in(dir: &Path, binary: &Path) -> Result<HookState, HookError> {
    uninstall_of(&PRE_PUSH, dir, binary, "")
}

/// [`uninstall_in`] for hook `kind` (`url` only decides whether it is current).
///
/// Errors: as [`uninstall_in`].
pub fn uninstall_of(
    kind: &Kind,
    dir: &Path,
    binary: &Path,
    url: &str,
) -> Result<HookState, HookError> {
    let before = state_of(kind, dir, binary, url);
    let hook = dir.join(kind.name);
    if matches!(before, HookState::Installed { .. } | HookState::Outdated) {
        let chained = dir.join(kind.chained);
        if exists(&chained) {
            std::fs::rename(&chained, &hook).map_err(io_err(&chained))?;
        } else {
            std::fs::remove_file(&hook).map_err(io_err(&hook))?;
        }
    }
    Ok(before)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_chains_and_uninstall_restores_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hook = dir.path().join("pre-push");
        let original = b"#!/bin/sh\necho mine\nexit 3\n";
        std::fs::write(&hook, original).expect("write");
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let bin = Path::new("/opt/it's/gitsync");

        assert_eq!(
            install_in(dir.path(), bin).expect("install"),
            HookState::Foreign
        );
        assert_eq!(
            state_in(dir.path(), bin),
            HookState::Installed { chained: true }
        );
        let text = std::fs::read_to_string(&hook).expect("read");
        assert!(text.contains(r"gitsync='/opt/it'\''s/gitsync'"), "{text}");
        // Idempotent.
        assert_eq!(
            install_in(dir.path(), bin).expect("again"),
            HookState::Installed { chained: true }
        );
        assert_eq!(
            std::fs::read(dir.path().join(CHAINED)).expect("chained"),
            original
        );
        // Another binary: outdated, reinstalled in place, the chained hook kept.
        let other = Path::new("/usr/bin/gitsync");
        assert_eq!(state_in(dir.path(), other), HookState::Outdated);
        install_in(dir.path(), other).expect("update");
        assert_eq!(
            state_in(dir.path(), other),
            HookState::Installed { chained: true }
        );

        uninstall_in(dir.path(), other).expect("uninstall");
        assert_eq!(std::fs::read(&hook).expect("restored"), original);
        let mode = std::fs::metadata(&hook).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(!exists(&dir.path().join(CHAINED)));
        assert_eq!(state_in(dir.path(), other), HookState::Foreign);
    }

    #[test]
    fn a_second_foreign_hook_is_a_conflict_not_a_loss() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("pre-push"), "#!/bin/sh\n").expect("write");
        std::fs::write(dir.path().join(CHAINED), "#!/bin/sh\nexit 1\n").expect("write");
        let err = install_in(dir.path(), Path::new("/bin/gitsync")).expect_err("conflict");
        assert!(matches!(err, HookError::Conflict(_)), "{err}");
        assert_eq!(
            std::fs::read_to_string(dir.path().join("pre-push")).expect("kept"),
            "#!/bin/sh\n"
        );
    }

    #[test]
    fn missing_folder_is_created_and_uninstall_removes_the_hook() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hooks = dir.path().join("custom-hooks");
        let bin = Path::new("/bin/gitsync");
        assert_eq!(
            install_in(&hooks, bin).expect("install"),
            HookState::Missing
        );
        let mode = std::fs::metadata(hooks.join("pre-push"))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o111, 0o111);
        uninstall_in(&hooks, bin).expect("uninstall");
        assert_eq!(state_in(&hooks, bin), HookState::Missing);
    }
}
