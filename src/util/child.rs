//! Starting a child process, one way (the model is jj's `git_subprocess.rs` and git-sync's
//! `pkg/cmd/cmd.go`): no standard input unless given, no controlling terminal and a
//! process group of its own (a Ctrl-C at gitsync's terminal does not reach it), no prompt
//! of any kind ([`quiet`]), a timeout after which it is killed, killed when gitsync drops
//! it, and a typed error whose standard error is redacted and trimmed.
//!
//! `git` commands add their own environment on top of this (`crate::git::ops`); rsync,
//! ssh and the secret scanners run through it as they are.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

/// A child process that failed.
#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    /// It could not be started, or waited for.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program's name, as given.
        program: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// It ran longer than allowed and was killed.
    #[error("{program} ran longer than {} and was stopped", humantime::format_duration(*timeout))]
    Timeout {
        /// The program's name.
        program: String,
        /// The limit.
        timeout: Duration,
    },
    /// It exited non-zero (or was killed by a signal: code -1).
    #[error("{program} exited with {code}: {stderr}")]
    Failed {
        /// The program's name.
        program: String,
        /// The exit code, or -1 for a signal.
        code: i32,
        /// Its standard error, redacted and trimmed.
        stderr: String,
    },
}

/// Makes `command` ask nothing, ever: `GIT_TERMINAL_PROMPT=0`, `GCM_INTERACTIVE=never`,
/// `SSH_ASKPASS_REQUIRE=never` without `SSH_ASKPASS` and `DISPLAY` (so a key with a
/// passphrase or an unknown host key fails at once; ssh-agent and credential helpers still
/// work), `LC_ALL=C` (the messages gitsync reads are untranslated), no controlling
/// terminal to ask on, and a process group of its own, which a Ctrl-C at gitsync's
/// terminal does not reach.
///
/// No terminal: gitsync itself lets go of its controlling terminal the first time (see
/// [`without_terminal`]), so that what it starts has none either; the child is then
/// started in one `posix_spawn(3)`, without the copy of gitsync's memory a `fork(2)`
/// makes. Where gitsync cannot let go (it leads its session), the child makes a session
/// of its own (`setsid(2)`) between the fork and the exec instead.
pub fn quiet(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    command
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GCM_INTERACTIVE", "never")
        .env("SSH_ASKPASS_REQUIRE", "never")
        .env("LC_ALL", "C")
        .env_remove("SSH_ASKPASS")
        .env_remove("DISPLAY");
    if without_terminal() {
        command.process_group(0);
        return;
    }
    // SAFETY: setsid(2) is async-signal-safe and touches no memory of this process.
    unsafe {
        command.pre_exec(|| {
            nix::unistd::setsid()
                .map(|_| ())
                .map_err(std::io::Error::from)
        });
    }
}

/// Whether this process has no controlling terminal, letting go of the one it has the
/// first time it is asked (`ioctl(TIOCNOTTY)`, tty_ioctl(4)); the answer is kept. A
/// process that leads its session keeps its terminal (letting go would hang up its
/// foreground process group) and answers false. gitsync still gets a Ctrl-C at that
/// terminal: the terminal signals its foreground process group, which gitsync stays in.
pub fn without_terminal() -> bool {
    static WITHOUT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *WITHOUT.get_or_init(|| {
        use nix::fcntl::{OFlag, open};
        use std::os::fd::AsRawFd;
        let tty = match open(
            "/dev/tty",
            OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        ) {
            Ok(tty) => tty,
            // No controlling terminal (ENXIO): nothing to let go of.
            Err(nix::errno::Errno::ENXIO) => return true,
            Err(_) => return false,
        };
        if nix::unistd::getsid(None).ok() == Some(nix::unistd::getpid()) {
            return false;
        }
        // SAFETY: TIOCNOTTY takes no argument and writes no memory of this process.
        unsafe { nix::libc::ioctl(tty.as_raw_fd(), nix::libc::TIOCNOTTY) == 0 }
    })
}

/// One child process to run: built with [`Child::new`] and the setters, run with
/// [`Child::output`] (any exit status), [`Child::success`] (a non-zero exit is an error)
/// or, on a thread outside the async runtime, [`Child::output_blocking`].
#[derive(Debug)]
pub struct Child {
    command: tokio::process::Command,
    program: String,
    timeout: Duration,
    input: Option<Vec<u8>>,
}

impl Child {
    /// `program` (a name looked up in `PATH`, or a path), made [`quiet`], stopped after
    /// `timeout`.
    pub fn new(program: impl AsRef<OsStr>, timeout: Duration) -> Child {
        let program = program.as_ref();
        let mut command = tokio::process::Command::new(program);
        quiet(command.as_std_mut());
        command.kill_on_drop(true);
        Child {
            command,
            program: Path::new(program)
                .file_name()
                .unwrap_or(program)
                .to_string_lossy()
                .into_owned(),
            timeout,
            input: None,
        }
    }

    /// Adds one argument.
    pub fn arg(&mut self, arg: impl AsRef<OsStr>) -> &mut Child {
        self.command.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(&mut self, args: I) -> &mut Child
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Sets an environment variable.
    pub fn env(&mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> &mut Child {
        self.command.env(key, value);
        self
    }

    /// Removes an environment variable.
    pub fn env_remove(&mut self, key: impl AsRef<OsStr>) -> &mut Child {
        self.command.env_remove(key);
        self
    }

    /// Runs it in `dir`.
    pub fn current_dir(&mut self, dir: impl AsRef<Path>) -> &mut Child {
        self.command.current_dir(dir);
        self
    }

    /// Writes `bytes` to its standard input while it runs (else it has none).
    pub fn input(&mut self, bytes: Vec<u8>) -> &mut Child {
        self.input = Some(bytes);
        self
    }

    /// The program's name, for messages.
    pub fn program(&self) -> &str {
        &self.program
    }

    /// Runs it to its end and returns its status and output, whatever the status.
    ///
    /// Errors: [`ChildError::Spawn`] when it cannot start, [`ChildError::Timeout`] when it
    /// outlives the timeout (it is then killed).
    pub async fn output(mut self) -> Result<Output, ChildError> {
        let input = self.input.take();
        let stdin = match input {
            Some(_) => Stdio::piped(),
            None => Stdio::null(),
        };
        self.start(stdin)?.finish(input.unwrap_or_default()).await
    }

    /// Starts it with its standard input held open: it runs up to its first read of that
    /// input, which [`Held::finish`] gives it later (so that its start-up, such as
    /// rsync's connection, is not waited for then). Dropped unfinished, it is killed.
    ///
    /// Errors: [`ChildError::Spawn`] when it cannot start.
    pub fn hold(self) -> Result<Held, ChildError> {
        self.start(Stdio::piped())
    }

    /// Spawns it with `stdin`, its output captured.
    fn start(mut self, stdin: Stdio) -> Result<Held, ChildError> {
        self.command
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let child = self.command.spawn().map_err(|source| ChildError::Spawn {
            program: self.program.clone(),
            source,
        })?;
        Ok(Held {
            child,
            program: self.program,
            timeout: self.timeout,
        })
    }

    /// Runs it as [`Child::output`] does; a non-zero exit is an error.
    ///
    /// Errors: as [`Child::output`], and [`ChildError::Failed`] with its standard error.
    pub async fn success(self) -> Result<Output, ChildError> {
        let program = self.program.clone();
        let output = self.output().await?;
        if output.status.success() {
            Ok(output)
        } else {
            Err(failed(program, &output))
        }
    }

    /// [`Child::output`] for a thread outside the async runtime (a scanner run from
    /// `spawn_blocking`, a helper process without a runtime): runs it on a runtime of its
    /// own and blocks until it ends.
    ///
    /// Errors: as [`Child::output`], and [`ChildError::Spawn`] when no runtime can be made.
    pub fn output_blocking(self) -> Result<Output, ChildError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| ChildError::Spawn {
                program: self.program.clone(),
                source,
            })?;
        runtime.block_on(self.output())
    }
}

/// A child started by [`Child::hold`], waiting for its standard input.
#[derive(Debug)]
pub struct Held {
    child: tokio::process::Child,
    program: String,
    timeout: Duration,
}

impl Held {
    /// Writes `input` to its standard input, closes it, and waits for it to end, as
    /// [`Child::output`] does (the timeout counts from here).
    ///
    /// Errors: as [`Child::output`].
    pub async fn finish(mut self, input: Vec<u8>) -> Result<Output, ChildError> {
        if let Some(mut stdin) = self.child.stdin.take() {
            // Written while the child runs; one that exits early closes the pipe, which is
            // its own error to report.
            tokio::spawn(async move {
                let _ = tokio::io::AsyncWriteExt::write_all(&mut stdin, &input).await;
            });
        }
        match tokio::time::timeout(self.timeout, self.child.wait_with_output()).await {
            Ok(Ok(output)) => Ok(output),
            Ok(Err(source)) => Err(ChildError::Spawn {
                program: self.program,
                source,
            }),
            Err(_) => Err(ChildError::Timeout {
                program: self.program,
                timeout: self.timeout,
            }),
        }
    }
}

/// The [`ChildError::Failed`] of `program` for `output`.
fn failed(program: String, output: &Output) -> ChildError {
    ChildError::Failed {
        program,
        code: output.status.code().unwrap_or(-1),
        stderr: super::redact::redact_text(String::from_utf8_lossy(&output.stderr).trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_asks_nothing_has_no_terminal_nor_our_group_and_is_stopped_at_its_timeout() {
        let mut child = Child::new("sh", Duration::from_secs(10));
        child
            .args([
                "-c",
                // proc(5): after the command's name, the fields are state, ppid, pgrp,
                // session and tty_nr.
                "echo \"$GIT_TERMINAL_PROMPT $LC_ALL $SSH_ASKPASS_REQUIRE ${DISPLAY:-none}\"; \
                 sed 's/.*) //' /proc/$$/stat | cut -d ' ' -f 3,5; cat",
            ])
            .input(b"from stdin\n".to_vec());
        let out = child.success().await.expect("sh runs");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some("0 C never none"));
        let fields: Vec<u32> = lines
            .next()
            .map(|l| l.split(' ').filter_map(|f| f.parse().ok()).collect())
            .unwrap_or_default();
        assert_eq!(fields.len(), 2, "{text}");
        assert_ne!(fields[0], nix::unistd::getpgrp().as_raw() as u32, "{text}");
        assert_eq!(fields[1], 0, "a controlling terminal: {text}");
        assert_eq!(lines.next(), Some("from stdin"));

        let mut slow = Child::new("sleep", Duration::from_millis(200));
        slow.arg("30");
        match slow.output().await {
            Err(ChildError::Timeout { program, .. }) => assert_eq!(program, "sleep"),
            other => panic!("expected a timeout, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_failure_names_the_program_and_says_its_redacted_error() {
        let mut child = Child::new("/bin/sh", Duration::from_secs(10));
        child.args([
            "-c",
            "echo 'fatal: https://user:hunter2@example.com/r.git not found' >&2; exit 3",
        ]);
        let err = child.success().await.expect_err("exit 3 fails");
        let text = err.to_string();
        assert!(text.starts_with("sh exited with 3: fatal:"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");

        let missing = Child::new("gitsync-no-such-program", Duration::from_secs(10));
        let err = missing.output().await.expect_err("cannot start");
        assert!(matches!(err, ChildError::Spawn { .. }), "{err}");
    }

    #[test]
    fn a_blocking_caller_gets_the_same_output() {
        let mut child = Child::new("sh", Duration::from_secs(10));
        child.args(["-c", "printf out; printf err >&2; exit 2"]);
        let out = child.output_blocking().expect("runs");
        assert_eq!(out.status.code(), Some(2));
        assert_eq!(out.stdout, b"out");
        assert_eq!(out.stderr, b"err");
    }
}
