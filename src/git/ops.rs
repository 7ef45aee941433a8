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
        ChildError::Failed { stderr, .. } => failed(dir, args, stderr),
    }
}

/// The [`GitError::Failed`] of `git <args>` in `dir` whose standard error (already
/// redacted) is `stderr`, with what to do first when a credential is missing (for an
/// unknown ssh host key, the `ssh` command that accepts it, from the remote `args` name).
pub fn failed(dir: &Path, args: &[&str], stderr: String) -> GitError {
    let ssh = stderr
        .to_ascii_lowercase()
        .contains("host key verification failed")
        .then(|| ssh_command(dir, args))
        .flatten();
    let stderr = match missing_credential(&stderr, ssh.as_deref()) {
        Some(hint) => format!("{hint} ({stderr})"),
        None => stderr,
    };
    GitError::Failed {
        dir: dir.to_path_buf(),
        command: args.first().copied().unwrap_or_default().to_string(),
        stderr,
    }
}

/// The `ssh` command that reaches the remote a git command in `dir` talks to: the first
/// argument after the subcommand that is not an option is an ssh URL
/// (`ssh://[user@]host[:port]/path`, or scp-like `[user@]host:path`, git-clone(1) "GIT
/// URLS") or the name of a remote with one (`origin` when `args` name none). `None` for
/// other transports.
pub fn ssh_command(dir: &Path, args: &[&str]) -> Option<String> {
    let url_of = |name: &str| {
        super::remotes::list(dir)
            .into_iter()
            .find(|r| r.name == name)
            .map(|r| r.url)
    };
    let url = match args.iter().skip(1).find(|a| !a.starts_with('-')) {
        Some(a) if ssh_destination(a).is_some() => a.to_string(),
        Some(a) => url_of(a).or_else(|| url_of("origin"))?,
        None => url_of("origin")?,
    };
    let (user, host, port) = ssh_destination(&url)?;
    let mut command = "ssh".to_string();
    if let Some(port) = port {
        command.push_str(&format!(" -p {port}"));
    }
    command.push(' ');
    if let Some(user) = user {
        command.push_str(&format!("{user}@"));
    }
    command.push_str(&host);
    Some(command)
}

/// The user, host and port of an ssh URL, as gix reads git's URL forms (see
/// [`ssh_command`]); `None` for another transport.
fn ssh_destination(url: &str) -> Option<(Option<String>, String, Option<u16>)> {
    let parsed = gix::url::parse(gix::bstr::BStr::new(url)).ok()?;
    if parsed.scheme != gix::url::Scheme::Ssh {
        return None;
    }
    let host = parsed.host()?.to_string();
    Some((parsed.user().map(str::to_string), host, parsed.port))
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
///
/// `ssh`: the command that reaches the remote (see [`ssh_command`]), named in the hint for
/// an unknown host key.
pub fn missing_credential(stderr: &str, ssh: Option<&str>) -> Option<String> {
    let s = stderr.to_ascii_lowercase();
    if s.contains("host key verification failed") {
        Some(format!(
            "the remote's ssh host key is not known yet: connect once by hand (`{}`) to accept it",
            ssh.unwrap_or("ssh HOST")
        ))
    } else if s.contains("permission denied (publickey")
        || s.contains("read_passphrase")
        || s.contains("enter passphrase")
    {
        Some(
            "ssh needs a key it cannot use without you: add it to ssh-agent (`ssh-add`), or use a key without a passphrase"
                .to_string(),
        )
    } else if s.contains("terminal prompts disabled")
        || s.contains("could not read username")
        || s.contains("could not read password")
    {
        Some(
            "no stored credentials for this remote: set up a credential helper (`git config --global credential.helper store`, or your platform's), then fetch once by hand"
                .to_string(),
        )
    } else {
        None
    }
}

/// `git fetch --porcelain [remote]`: updates the remote-tracking refs of `remote` (the
/// current branch's remote when `None`). Returns whether any ref changed (git 2.41 or newer
/// lists updated refs with `--porcelain`; with an older git it returns `true`).
/// With `--no-auto-maintenance` (git 2.29 or newer; git-fetch(1)): the fetch returns
/// without running `git maintenance run --auto`, which the caller runs after a periodic
/// fetch once nobody waits for it ([`auto_maintenance`]).
///
/// Errors: as [`run`].
pub async fn fetch(dir: &Path, remote: Option<&str>, timeout: Duration) -> Result<bool, GitError> {
    let mut args = vec![
        "fetch",
        "--porcelain",
        "--no-write-fetch-head",
        "--no-auto-maintenance",
    ];
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

/// `git maintenance run --auto --quiet` in `dir`, with `--detach` when `detach` (git
/// 2.47 or newer; an older git runs it without, its `gc --auto` detaching on its own):
/// what `git fetch` runs after fetching (run-command.c, `prepare_auto_maintenance`), run
/// by the caller instead, once its state is published, so that a pull does not wait for it.
/// The caller checks `maintenance.auto` first, as git does.
///
/// Errors: as [`run`] (a git older than 2.29 has no `maintenance`).
pub async fn auto_maintenance(dir: &Path, detach: bool, timeout: Duration) -> Result<(), GitError> {
    let detached = if detach { "--detach" } else { "--no-detach" };
    let args = ["maintenance", "run", "--auto", "--quiet", detached];
    match run(dir, &args, timeout).await {
        Err(GitError::Failed { stderr, .. }) if stderr.contains("unknown option") => {
            run(dir, &args[..4], timeout).await.map(|_| ())
        }
        done => done.map(|_| ()),
    }
}

/// Starts `git maintenance run --auto --quiet` in `dir` and leaves it to finish on its
/// own (it is not waited for, nor stopped when gitsync ends): for a `gitsync sync` about to
/// end. The caller checks `maintenance.auto` first, as git does.
///
/// Errors: git cannot be started.
pub fn start_auto_maintenance(dir: &Path) -> Result<(), GitError> {
    let mut command = std::process::Command::new("git");
    crate::util::child::quiet(&mut command);
    command
        .arg("-C")
        .arg(dir)
        .args(["maintenance", "run", "--auto", "--quiet"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(drop)
        .map_err(|source| GitError::Spawn {
            dir: dir.to_path_buf(),
            source,
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_destinations_are_read_from_git_urls() {
        let d = |url: &str| ssh_destination(url);
        assert_eq!(
            d("ssh://git@example.com:2222/r.git"),
            Some((Some("git".into()), "example.com".into(), Some(2222)))
        );
        assert_eq!(
            d("ssh://example.com/r.git"),
            Some((None, "example.com".into(), None))
        );
        assert_eq!(
            d("ssh://[::1]:22/r.git"),
            Some((None, "::1".into(), Some(22)))
        );
        assert_eq!(
            d("git@github.com:o/r.git"),
            Some((Some("git".into()), "github.com".into(), None))
        );
        assert_eq!(d("https://example.com/r.git"), None);
        assert_eq!(d("/srv/git/r.git"), None);
        assert_eq!(d("./a:b"), None);
    }
}
