//! Running the `git` binary: fetch and fast-forward, non-interactive and with a timeout.
//!
//! Each command runs with `GIT_TERMINAL_PROMPT=0` (never asks for a password), no standard
//! input, and in its own process group, so a Ctrl-C at the terminal stops the daemon but
//! lets the git command in flight finish. A command that outlives its timeout is killed.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

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

async fn run_inner(
    dir: &Path,
    args: &[&str],
    timeout: Duration,
    env: &[(String, String)],
    input: Option<Vec<u8>>,
) -> Result<String, GitError> {
    let mut command = tokio::process::Command::new("git");
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    command
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_MERGE_AUTOEDIT", "no")
        .env("GCM_INTERACTIVE", "never")
        .env("LC_ALL", "C")
        // ssh never asks: no askpass program, and (below) no controlling terminal, so a
        // key with a passphrase or an unknown host key fails at once instead of waiting for
        // an answer. ssh-agent (SSH_AUTH_SOCK) and credential helpers still work.
        .env("SSH_ASKPASS_REQUIRE", "never")
        .env_remove("SSH_ASKPASS")
        .env_remove("DISPLAY");
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of this process; a
    // session of its own has no controlling terminal (and a Ctrl-C at the daemon's
    // terminal does not reach the child).
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
    let name = args.first().copied().unwrap_or_default().to_string();
    let output = match output_within(&mut command, input, timeout).await {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => {
            return Err(GitError::Spawn {
                dir: dir.to_path_buf(),
                source,
            });
        }
        Err(_) => {
            return Err(GitError::Timeout {
                dir: dir.to_path_buf(),
                command: name,
                timeout,
            });
        }
    };
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let stderr =
            crate::util::redact::redact_text(String::from_utf8_lossy(&output.stderr).trim());
        let stderr = match missing_credential(&stderr) {
            Some(hint) => format!("{hint} ({stderr})"),
            None => stderr,
        };
        Err(GitError::Failed {
            dir: dir.to_path_buf(),
            command: name,
            stderr,
        })
    }
}

/// Runs `command` with its output piped, writing `input` (if any) to its standard input
/// while it runs, and waits at most `timeout`; a child still running then is killed.
/// Returns `Err` when the time ran out, else the spawn's or the wait's result.
pub(crate) async fn output_within(
    command: &mut tokio::process::Command,
    input: Option<Vec<u8>>,
    timeout: Duration,
) -> Result<std::io::Result<std::process::Output>, tokio::time::error::Elapsed> {
    command
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Ok(Err(e)),
    };
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        // Written while the child runs; one that exits early closes the pipe, which is
        // its own error to report.
        tokio::spawn(async move {
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stdin, &input).await;
        });
    }
    tokio::time::timeout(timeout, child.wait_with_output()).await
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
