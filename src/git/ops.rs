//! Running the `git` binary: fetch and fast-forward, non-interactive and with a timeout.
//!
//! Each command is a [`crate::util::child::Child`]: it never asks for anything (no
//! password, passphrase or host key prompt), has no standard input, and runs in a session
//! of its own, so a Ctrl-C at the terminal stops the daemon but lets the git command in
//! flight finish. A command that outlives its timeout is killed. A failure that is a
//! missing credential says what to do ([`missing_credential`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::util::child::{Child, ChildError};

/// A git command that failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// The binary could not be started.
    #[error("cannot run git in {dir}: {source}")]
    Spawn {
        /// The repository.
        dir: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It ran longer than allowed and was killed.
    #[error("git {command} in {dir} took longer than {timeout:?} and was stopped")]
    Timeout {
        /// The repository.
        dir: PathBuf,
        /// The subcommand, such as `fetch`.
        command: String,
        /// The limit.
        timeout: Duration,
    },
    /// It exited non-zero.
    #[error("git {command} in {dir} failed: {stderr}")]
    Failed {
        /// The repository.
        dir: PathBuf,
        /// The subcommand.
        command: String,
        /// Its standard error, trimmed.
        stderr: String,
    },
}

/// Runs `git <args>` in `dir` and returns its standard output.
///
/// Errors: [`GitError`] when git cannot start, exits non-zero or exceeds `timeout`.
pub async fn run(dir: &Path, args: &[&str], timeout: Duration) -> Result<String, GitError> {
    run_with(dir, args, timeout, &[]).await
}

/// As [`run`], with extra environment variables (such as `GIT_CONFIG_COUNT` entries that
/// carry an HTTP header, so a token never appears in a URL or an argument).
///
/// Errors: as [`run`].
pub async fn run_with(
    dir: &Path,
    args: &[&str],
    timeout: Duration,
    env: &[(String, String)],
) -> Result<String, GitError> {
    run_inner(dir, args, timeout, env, None).await
}

/// As [`run_with`], writing `input` to git's standard input (such as the `--revs` list of
/// `git pack-objects`).
///
/// Errors: as [`run`].
pub async fn run_input(
    dir: &Path,
    args: &[&str],
    input: &[u8],
    timeout: Duration,
    env: &[(String, String)],
) -> Result<String, GitError> {
    run_inner(dir, args, timeout, env, Some(input.to_vec())).await
}

/// `git -C dir <args>` as a [`Child`], with `env` and git's own non-interactive settings.
fn git(dir: &Path, args: &[&str], timeout: Duration, env: &[(String, String)]) -> Child {
    let mut command = Child::new("git", timeout);
    for (key, value) in env {
        command.env(key, value);
    }
    command
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_MERGE_AUTOEDIT", "no");
    command
}

/// As [`run_with`], returning git's status and whole output whatever the status (for a
/// command whose standard output says what happened even when it fails, such as `git push
/// --porcelain`).
///
/// Errors: [`GitError::Spawn`] or [`GitError::Timeout`].
pub async fn output_with(
    dir: &Path,
    args: &[&str],
    timeout: Duration,
    env: &[(String, String)],
) -> Result<std::process::Output, GitError> {
    git(dir, args, timeout, env)
        .output()
        .await
        .map_err(|e| git_error(dir, args, timeout, e))
}

/// The [`GitError`] for the [`ChildError`] of `git <args>` in `dir`.
fn git_error(dir: &Path, args: &[&str], timeout: Duration, err: ChildError) -> GitError {
    let command = args.first().copied().unwrap_or_default().to_string();
    match err {
        ChildError::Spawn { source, .. } => GitError::Spawn {
            dir: dir.to_path_buf(),
            source,
        },
        ChildError::Timeout { .. } => GitError::Timeout {
            dir: dir.to_path_buf(),
            command,
            timeout,
        },
        ChildError::Failed { stderr, .. } => failed(dir, &command, stderr),
    }
}

/// The [`GitError::Failed`] of `git <command>` in `dir` whose standard error (already
/// redacted) is `stderr`, with what to do first when a credential is missing.
pub fn failed(dir: &Path, command: &str, stderr: String) -> GitError {
    let stderr = match missing_credential(&stderr) {
        Some(hint) => format!("{hint} ({stderr})"),
        None => stderr,
    };
    GitError::Failed {
        dir: dir.to_path_buf(),
        command: command.to_string(),
        stderr,
    }
}

async fn run_inner(
    dir: &Path,
    args: &[&str],
    timeout: Duration,
    env: &[(String, String)],
    input: Option<Vec<u8>>,
) -> Result<String, GitError> {
    let mut command = git(dir, args, timeout, env);
    if let Some(input) = input {
        command.input(input);
    }
    command
        .success()
        .await
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .map_err(|e| git_error(dir, args, timeout, e))
}

/// What is missing when git or ssh wanted to ask the user something, as a sentence with
/// what to do; `None` when the failure is of another kind.
pub fn missing_credential(stderr: &str) -> Option<&'static str> {
    let s = stderr.to_ascii_lowercase();
    if s.contains("host key verification failed") {
        Some(
            "the remote's ssh host key is not known yet: connect once by hand (`ssh HOST`) to accept it",
        )
    } else if s.contains("permission denied (publickey")
        || s.contains("read_passphrase")
        || s.contains("enter passphrase")
    {
        Some(
            "ssh needs a key it cannot use without you: add it to ssh-agent (`ssh-add`), or use a key without a passphrase",
        )
    } else if s.contains("terminal prompts disabled")
        || s.contains("could not read username")
        || s.contains("could not read password")
    {
        Some(
            "no stored credentials for this remote: set up a credential helper (`git config --global credential.helper store`, or your platform's), then fetch once by hand",
        )
    } else {
        None
    }
}

/// `git fetch --porcelain [remote]`: updates the remote-tracking refs of `remote` (the
/// current branch's remote when `None`). Returns whether any ref changed (git 2.41 or newer
/// lists updated refs with `--porcelain`; with an older git it returns `true`).
/// `maintenance` false adds `--no-auto-maintenance` (git 2.29 or newer; git-fetch(1)):
/// a fetch for a push event then returns without running `git maintenance run --auto`,
/// which the periodic fetches still run.
///
/// Errors: as [`run`].
pub async fn fetch(
    dir: &Path,
    remote: Option<&str>,
    maintenance: bool,
    timeout: Duration,
) -> Result<bool, GitError> {
    let mut args = vec!["fetch", "--porcelain", "--no-write-fetch-head"];
    if !maintenance {
        args.push("--no-auto-maintenance");
    }
    if let Some(remote) = remote {
        args.push(remote);
    }
    match run(dir, &args, timeout).await {
        Ok(stdout) => Ok(!stdout.trim().is_empty()),
        Err(GitError::Failed { stderr, .. }) if stderr.contains("unknown option") => {
            // An older git: the plain options only.
            args.retain(|a| *a != "--no-auto-maintenance");
            args[1] = "--quiet";
            run(dir, &args, timeout).await.map(|_| true)
        }
        Err(err) => Err(err),
    }
}

/// `git ls-remote <remote> <refs...>`: what the remote's refs point at now, as
/// (ref name, object id) pairs; a ref the remote lacks is absent. Peeled tag lines
/// (`^{}`) are left out.
///
/// Errors: as [`run`].
pub async fn ls_remote(
    dir: &Path,
    remote: &str,
    refs: &[&str],
    timeout: Duration,
) -> Result<Vec<(String, String)>, GitError> {
    let mut args = vec!["ls-remote", "--", remote];
    args.extend_from_slice(refs);
    let stdout = run(dir, &args, timeout).await?;
    Ok(stdout
        .lines()
        .filter_map(|line| {
            let (oid, name) = line.split_once('\t')?;
            (!name.ends_with("^{}")).then(|| (name.to_string(), oid.to_string()))
        })
        .collect())
}
