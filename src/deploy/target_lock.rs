//! The target's own lock, so that two machines deploying to one server at once cannot
//! interleave (one pruning or discarding the release the other is writing or has just
//! flipped to). It is an exclusive `flock(1)` (util-linux) on `<path>/.gitsync-lock`, held
//! on the server by a shell that lives as long as one ssh session: the session's standard
//! input is the lease. Closing it, the ssh client dying or the connection dropping ends
//! `cat`, which lets the lock go, so a crash on either side never leaves the target
//! locked. Any other tool can take the same lock (`flock <path>/.gitsync-lock <command>`)
//! to keep gitsync out while it works.

use super::DeployError;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt;

use super::ssh::{Ssh, quote};

/// How long a ship waits for another machine's ship to the same target, in seconds.
pub const WAIT: Duration = Duration::from_secs(600);

/// The exit code `flock -E` gives when the lock stayed busy for [`WAIT`].
const BUSY: i32 = 75;

/// The lock held on one target; let go when dropped (the ssh session ends).
#[derive(Debug)]
pub struct TargetLock {
    /// The ssh session whose standard input holds the lease; `None` when the target has no
    /// `flock(1)` and nothing is held.
    child: Option<tokio::process::Child>,
}

impl TargetLock {
    /// Lets the lock go and waits (at most 5 s) for the session to end.
    pub async fn release(mut self) {
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            if tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
        }
    }
}

/// The script that checks `path` is (or can become) a release layout, creates
/// `path/releases`, and holds the lock until its standard input ends. It prints `busy`
/// when another holder has the lock, then `locked` once it has it (`unlocked` when the
/// target has no `flock`).
fn script(path: &str, init: bool) -> Result<String, DeployError> {
    let p = quote(path.trim_end_matches('/'))?;
    let hold = "sh -c 'echo locked; exec cat >/dev/null'";
    Ok(format!(
        "P={p}; \
         if [ -e \"$P\" ] && [ ! -d \"$P\" ]; then echo \"$P is not a folder\" >&2; exit 3; fi; \
         if [ -d \"$P\" ] && [ ! -d \"$P/releases\" ] && [ -n \"$(ls -A \"$P\" | grep -vx .gitsync-lock)\" ] && [ {init} != 1 ]; then \
           echo \"$P is not empty and has no releases/: not a gitsync release layout (pass --init to take it over)\" >&2; exit 4; fi; \
         mkdir -p \"$P/releases\" || exit 3; \
         if ! command -v flock >/dev/null 2>&1; then echo unlocked; exec cat >/dev/null; fi; \
         flock -n -E {BUSY} \"$P/.gitsync-lock\" {hold}; rc=$?; \
         if [ $rc = {BUSY} ]; then echo busy; exec flock -w {wait} -E {BUSY} \"$P/.gitsync-lock\" {hold}; fi; \
         exit $rc",
        init = u8::from(init),
        wait = WAIT.as_secs(),
    ))
}

/// Runs `work` under the lock of the release layout at `path` on `target` ([`lock`], with
/// `init`), and lets the lock go after it.
///
/// Errors: the lock could not be taken (`lock: ...`), or `work`'s own.
pub async fn holding<T>(
    ssh: &Ssh,
    target: &str,
    path: &str,
    init: bool,
    work: impl std::future::Future<Output = Result<T, DeployError>>,
) -> Result<T, DeployError> {
    let started = std::time::Instant::now();
    let lock = lock(ssh, target, path, init)
        .await
        .map_err(|e| DeployError::Target(format!("lock: {e}")))?;
    tracing::debug!(
        ms = started.elapsed().as_millis(),
        target,
        "deploy: target locked"
    );
    let result = work.await;
    lock.release().await;
    result
}

/// Takes the lock of the release layout at `path` on the target (creating the layout; a
/// non-empty folder without `releases/` is refused unless `init`), waiting up to [`WAIT`]
/// for another holder. `target` names the target in messages.
///
/// Errors: the target is unreachable, the folder is not a release layout, or another ship
/// held the lock for all of [`WAIT`].
pub async fn lock(
    ssh: &Ssh,
    target: &str,
    path: &str,
    init: bool,
) -> Result<TargetLock, DeployError> {
    // Not a `Child` run to its end: this ssh session lives as long as the lock, and its
    // standard input is the lease. It asks nothing all the same.
    let mut command = tokio::process::Command::new("ssh");
    crate::util::child::quiet(command.as_std_mut());
    command
        .args(ssh.options())
        .arg("--")
        .arg(&ssh.host)
        .arg(script(path, init)?)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| DeployError::Target(format!("cannot run ssh: {e}")))?;
    let Some(stdout) = child.stdout.take() else {
        return Err(DeployError::Target("ssh gave no output pipe".to_string()));
    };
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let limit = WAIT + Duration::from_secs(60);
    let answer = tokio::time::timeout(limit, async {
        loop {
            match lines.next_line().await {
                Ok(Some(line)) if line == "busy" => {
                    tracing::warn!(target = %target, "{target}: another deploy holds the target's lock; waiting for it (at most {} minutes)", WAIT.as_secs() / 60);
                }
                Ok(Some(line)) if line == "locked" || line == "unlocked" => return Some(line),
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return None,
            }
        }
    })
    .await;
    match answer {
        Ok(Some(line)) => {
            if line == "unlocked" {
                tracing::warn!(target = %target, "{target} has no flock(1) (util-linux): deploys from two machines at once are not kept apart there");
            }
            Ok(TargetLock { child: Some(child) })
        }
        Ok(None) => {
            let output = child
                .wait_with_output()
                .await
                .map_err(|e| DeployError::Target(format!("ssh: {e}")))?;
            let stderr = String::from_utf8_lossy(&output.stderr);
            let last = stderr
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("no message");
            Err(DeployError::Target(match output.status.code() {
                Some(BUSY) => format!(
                    "another deploy held the target's lock for {} minutes: try again when it is done (`{path}/.gitsync-lock`)",
                    WAIT.as_secs() / 60
                ),
                Some(255) => format!("cannot connect: {last}"),
                Some(code) => format!("exit {code}: {last}"),
                None => format!("ssh stopped: {last}"),
            }))
        }
        Err(_) => Err(DeployError::Target(format!(
            "no answer from the target within {} minutes",
            limit.as_secs() / 60
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_script_quotes_the_path_and_keeps_its_own_file_out_of_the_layout_check() {
        let text = script("/srv/my site/", false).expect("script");
        assert!(text.starts_with("P='/srv/my site';"), "{text}");
        assert!(text.contains("grep -vx .gitsync-lock"), "{text}");
        assert!(text.contains("-E 75") && text.contains("-w 600"), "{text}");
    }
}
