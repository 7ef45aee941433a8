//! The target's own lock, so that two machines deploying to one server at once cannot
//! interleave (one pruning or discarding the release the other is writing or has just
//! flipped to). It is an exclusive `flock(1)` (util-linux) on `<path>/.gitsync-lock`, held
//! on the server by a shell that lives as long as one ssh session: the session's standard
//! input is the lease. Closing it, the ssh client dying or the connection dropping ends
//! that shell, which lets the lock go, so a crash on either side never leaves the target
//! locked. Any other tool can take the same lock (`flock <path>/.gitsync-lock <command>`)
//! to keep gitsync out while it works.
//!
//! The shell holding the lock also runs the ship's steps on the target
//! ([`TargetLock::run_bytes`]): each is one subshell written to its standard input, its
//! end marked by a line only this lock knows. A step then costs no new ssh session (a
//! process here, a channel of the connection and a login shell there, whose start-up
//! files run again each time).

use super::DeployError;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};

use super::ssh::{Ssh, last_line, quote};

/// How long a ship waits for another machine's ship to the same target, in seconds.
pub const WAIT: Duration = Duration::from_secs(600);

/// The exit code `flock -E` gives when the lock stayed busy for [`WAIT`].
const BUSY: i32 = 75;

/// The lock held on one target; let go when dropped (the ssh session ends).
#[derive(Debug)]
pub struct TargetLock {
    /// The ssh session whose standard input holds the lease, and whose shell runs the
    /// steps given to [`TargetLock::run_bytes`].
    child: Option<tokio::process::Child>,
    /// Its standard input: the steps, and the lease.
    stdin: Option<tokio::process::ChildStdin>,
    /// Its standard output, after the line that said the lock is held.
    stdout: tokio::io::BufReader<tokio::process::ChildStdout>,
    /// Everything it wrote to standard error so far (read on a task of its own, so that
    /// a chatty step never fills the pipe).
    stderr: Arc<Mutex<Vec<u8>>>,
    /// The line that ends each step's output: 32 random hex digits, then the step's exit
    /// status.
    mark: String,
    /// The target's host, for messages.
    host: String,
}

impl TargetLock {
    /// Runs `script` (POSIX sh, its values already quoted) on the target, in a subshell of
    /// the shell holding the lock, with nothing on its standard input; returns what it
    /// wrote to standard output, as the bytes they were. An `exit` in `script` ends the
    /// subshell, not the lock.
    ///
    /// Errors, as [`Ssh::run`]'s: its exit status and the last line it wrote to standard
    /// error; or no status and why (the session ended, or `timeout` passed, after which
    /// the lock is no good: the ship ends and lets it go).
    pub async fn run_bytes(
        &mut self,
        script: &str,
        timeout: Duration,
    ) -> Result<Vec<u8>, (Option<i32>, String)> {
        let errors_from = self.stderr.lock().map_or(0, |e| e.len());
        let framed = format!(
            "( {script}\n) </dev/null; printf '\\n%s %s\\n' {} \"$?\"\n",
            self.mark
        );
        let ran = tokio::time::timeout(timeout, async {
            let stdin = self
                .stdin
                .as_mut()
                .ok_or_else(|| "the lock's session is closed".to_string())?;
            stdin
                .write_all(framed.as_bytes())
                .await
                .map_err(|e| format!("the lock's session ended: {e}"))?;
            stdin
                .flush()
                .await
                .map_err(|e| format!("the lock's session ended: {e}"))?;
            read_step(&mut self.stdout, &self.mark).await
        })
        .await;
        let errors = || {
            self.stderr
                .lock()
                .map(|e| last_line(e.get(errors_from..).unwrap_or_default()))
                .unwrap_or_default()
        };
        match ran {
            Ok(Ok((0, out))) => Ok(out),
            Ok(Ok((code, _))) => Err((Some(code), errors())),
            Ok(Err(why)) => Err((None, format!("{why} ({})", errors()))),
            Err(_) => Err((
                None,
                format!(
                    "{} took longer than {} and was stopped",
                    self.host,
                    humantime::format_duration(timeout)
                ),
            )),
        }
    }

    /// [`TargetLock::run_bytes`], its output as text (lossy UTF-8).
    ///
    /// Errors: as [`TargetLock::run_bytes`].
    pub async fn run(
        &mut self,
        script: &str,
        timeout: Duration,
    ) -> Result<String, (Option<i32>, String)> {
        self.run_bytes(script, timeout)
            .await
            .map(|out| String::from_utf8_lossy(&out).into_owned())
    }

    /// Lets the lock go and waits (at most 5 s) for the session to end.
    pub async fn release(mut self) {
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take()
            && tokio::time::timeout(Duration::from_secs(5), child.wait())
                .await
                .is_err()
        {
            let _ = child.kill().await;
        }
    }
}

/// Reads one step's output from `stdout`, up to the line `\n<mark> <status>\n` that
/// [`TargetLock::run_bytes`] has the shell print after it, and nothing beyond it. Returns
/// the status and the output before that line.
///
/// Errors: the output ended first, or the status is not a number.
async fn read_step(
    stdout: &mut (impl tokio::io::AsyncBufRead + Unpin),
    mark: &str,
) -> Result<(i32, Vec<u8>), String> {
    let needle = format!("\n{mark} ");
    let mut out = Vec::new();
    let mut searched = 0;
    loop {
        let buf = stdout
            .fill_buf()
            .await
            .map_err(|e| format!("the lock's session ended: {e}"))?;
        if buf.is_empty() {
            return Err("the lock's session ended".to_string());
        }
        let (before, n) = (out.len(), buf.len());
        out.extend_from_slice(buf);
        let Some(at) = find(&out[searched..], needle.as_bytes()).map(|at| at + searched) else {
            searched = out.len().saturating_sub(needle.len());
            stdout.consume(n);
            continue;
        };
        let status_at = at + needle.len();
        let Some(end) = out[status_at..].iter().position(|b| *b == b'\n') else {
            searched = at;
            stdout.consume(n);
            continue;
        };
        // Only this step's bytes are taken from the reader.
        stdout.consume(status_at + end + 1 - before);
        let status = std::str::from_utf8(&out[status_at..status_at + end])
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "the target's shell gave no exit status".to_string())?;
        out.truncate(at);
        return Ok((status, out));
    }
}

/// Where `needle` first occurs in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The script that checks `path` is (or can become) a release layout, creates
/// `path/releases`, and holds the lock until its standard input ends, running what it
/// reads there (`sh -s`). It prints `busy` when another holder has the lock, then `locked`
/// once it has it (`unlocked` when the target has no `flock`).
fn script(path: &str, init: bool) -> Result<String, DeployError> {
    let p = quote(path.trim_end_matches('/'))?;
    let hold = "sh -c 'echo locked; exec sh -s'";
    Ok(format!(
        "P={p}; \
         if [ -e \"$P\" ] && [ ! -d \"$P\" ]; then echo \"$P is not a folder\" >&2; exit 3; fi; \
         if [ -d \"$P\" ] && [ ! -d \"$P/releases\" ] && [ -n \"$(ls -A \"$P\" | grep -vx .gitsync-lock)\" ] && [ {init} != 1 ]; then \
           echo \"$P is not empty and has no releases/: not a gitsync release layout (pass --init to take it over)\" >&2; exit 4; fi; \
         mkdir -p \"$P/releases\" || exit 3; \
         if ! command -v flock >/dev/null 2>&1; then echo unlocked; exec sh -s; fi; \
         flock -n -E {BUSY} \"$P/.gitsync-lock\" {hold}; rc=$?; \
         if [ $rc = {BUSY} ]; then echo busy; exec flock -w {wait} -E {BUSY} \"$P/.gitsync-lock\" {hold}; fi; \
         exit $rc",
        init = u8::from(init),
        wait = WAIT.as_secs(),
    ))
}

/// Runs `work` under the lock of the release layout at `path` on `target` ([`lock`], with
/// `init`), giving it the lock to run steps on the target with, and lets the lock go
/// after it.
///
/// Errors: the lock could not be taken (`lock: ...`), or `work`'s own.
pub async fn holding<T>(
    ssh: &Ssh,
    target: &str,
    path: &str,
    init: bool,
    work: impl AsyncFnOnce(&mut TargetLock) -> Result<T, DeployError>,
) -> Result<T, DeployError> {
    let started = std::time::Instant::now();
    let mut lock = lock(ssh, target, path, init)
        .await
        .map_err(|e| DeployError::Target(format!("lock: {e}")))?;
    tracing::debug!(
        ms = started.elapsed().as_millis(),
        target,
        "deploy: target locked"
    );
    let result = work(&mut lock).await;
    lock.release().await;
    result
}

/// Takes the lock of the release layout at `path` on `target` (for messages), first
/// checking that `path` is one or can become one (`init` takes over a folder that is not
/// empty). While another machine holds it, says so and waits (at most [`WAIT`]).
///
/// Errors: the target is unreachable, `path` is not a release layout (exit 4, with what
/// to do), it cannot be created, or the lock stayed busy for [`WAIT`].
pub async fn lock(
    ssh: &Ssh,
    target: &str,
    path: &str,
    init: bool,
) -> Result<TargetLock, DeployError> {
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
    let (Some(stdout), Some(stderr), Some(stdin)) =
        (child.stdout.take(), child.stderr.take(), child.stdin.take())
    else {
        return Err(DeployError::Target("ssh gave no pipes".to_string()));
    };
    let errors = Arc::new(Mutex::new(Vec::new()));
    let drained = tokio::spawn({
        let errors = errors.clone();
        async move {
            let mut stderr = stderr;
            let mut chunk = vec![0u8; 8192];
            while let Ok(n) = stderr.read(&mut chunk).await {
                if n == 0 {
                    break;
                }
                if let Ok(mut all) = errors.lock() {
                    all.extend_from_slice(&chunk[..n]);
                    // Only the last lines are ever shown.
                    if all.len() > 64 * 1024 {
                        let cut = all.len() - 16 * 1024;
                        all.drain(..cut);
                    }
                }
            }
        }
    });
    let mut stdout = tokio::io::BufReader::new(stdout);
    let limit = WAIT + Duration::from_secs(60);
    let answer = tokio::time::timeout(limit, async {
        let mut line = String::new();
        loop {
            line.clear();
            match stdout.read_line(&mut line).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
            match line.trim_end() {
                "busy" => {
                    tracing::warn!(target = %target, "{target}: another deploy holds the target's lock; waiting for it (at most {} minutes)", WAIT.as_secs() / 60);
                }
                "locked" | "unlocked" => return Some(line.trim_end().to_string()),
                _ => {}
            }
        }
    })
    .await;
    match answer {
        Ok(Some(line)) => {
            if line == "unlocked" {
                tracing::warn!(target = %target, "{target} has no flock(1) (util-linux): deploys from two machines at once are not kept apart there");
            }
            let mut mark = [0u8; 16];
            rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut mark);
            Ok(TargetLock {
                child: Some(child),
                stdin: Some(stdin),
                stdout,
                stderr: errors,
                mark: hex::encode(mark),
                host: ssh.host.clone(),
            })
        }
        Ok(None) => {
            drop(stdin);
            let status = child
                .wait()
                .await
                .map_err(|e| DeployError::Target(format!("ssh: {e}")))?;
            let _ = drained.await;
            let last = errors.lock().map(|e| last_line(&e)).unwrap_or_default();
            Err(DeployError::Target(match status.code() {
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

    /// Outputs of every shape (empty, without a last newline, binary with NULs and
    /// newlines, holding a marker of another lock) cut into reads of random sizes: each
    /// step's output and status come back exactly, and a session that ends early is an
    /// error.
    #[test]
    fn a_steps_output_ends_only_at_its_own_mark() {
        let mark = "0123456789abcdef0123456789abcdef";
        let other = "fedcba9876543210fedcba9876543210";
        let mut rng = fastrand::Rng::with_seed(7);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        for case in 0..300 {
            let mut steps = Vec::new();
            let mut stream = Vec::new();
            for _ in 0..1 + rng.usize(..4) {
                let mut out: Vec<u8> = match rng.usize(..4) {
                    0 => Vec::new(),
                    1 => (0..rng.usize(..3000)).map(|_| rng.u8(..)).collect(),
                    2 => format!("\n{other} 0\nend\0").into_bytes(),
                    _ => format!("line\n{mark}x\n").into_bytes(),
                };
                if rng.bool() {
                    out.push(b'\n');
                }
                let status = rng.i32(0..256);
                stream.extend_from_slice(&out);
                stream.extend_from_slice(format!("\n{mark} {status}\n").as_bytes());
                steps.push((status, out));
            }
            // Reads of random sizes, as a pipe gives them.
            let mut reads = tokio::io::BufReader::new(pieces_of(&stream, &mut rng));
            for (i, want) in steps.iter().enumerate() {
                let got = runtime
                    .block_on(read_step(&mut reads, mark))
                    .unwrap_or_else(|e| panic!("case {case} step {i}: {e}"));
                assert_eq!(&got, want, "case {case} step {i}");
            }
            assert!(runtime.block_on(read_step(&mut reads, mark)).is_err());
        }
    }

    /// `bytes` as a reader that hands them out in pieces of random sizes.
    fn pieces_of(bytes: &[u8], rng: &mut fastrand::Rng) -> Pieces {
        let mut pieces = std::collections::VecDeque::new();
        let mut at = 0;
        while at < bytes.len() {
            let n = 1 + rng.usize(..(bytes.len() - at).min(700));
            pieces.push_back(bytes[at..at + n].to_vec());
            at += n;
        }
        Pieces(pieces)
    }

    /// A reader that gives one piece per read, then the end.
    struct Pieces(std::collections::VecDeque<Vec<u8>>);

    impl tokio::io::AsyncRead for Pieces {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            if let Some(mut piece) = self.0.pop_front() {
                let n = piece.len().min(buf.remaining());
                buf.put_slice(&piece[..n]);
                if n < piece.len() {
                    self.0.push_front(piece.split_off(n));
                }
            }
            std::task::Poll::Ready(Ok(()))
        }
    }
}
