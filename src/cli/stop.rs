//! `gitsync stop`: stops the daemon running for this user, gracefully.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use super::CliError;
use crate::daemon::pidfile;

/// How long `stop` waits: the daemon's own grace for work in flight, plus a margin.
const WAIT: Duration = Duration::from_secs(40);

/// Sends SIGTERM to the daemon and waits until it has exited. Exit code 0 when it stopped,
/// 1 when none was running or it did not stop in time.
pub fn run() -> Result<ExitCode, CliError> {
    let home = crate::config::gitsync_home();
    let Some(info) = pidfile::running(&home) else {
        println!("gitsync is not running");
        return Ok(ExitCode::FAILURE);
    };
    let pid = i32::try_from(info.pid)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| CliError::failed(format!("bad pid {} in the pidfile", info.pid)))?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .map_err(|e| CliError::failed(format!("cannot signal pid {pid}: {e}")))?;
    let start = Instant::now();
    while start.elapsed() < WAIT {
        // The lock goes first, then the process finishes exiting.
        if pidfile::running(&home).is_none() && !pidfile::process_alive(info.pid) {
            println!("gitsync stopped (pid {pid})");
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(CliError::failed(format!(
        "pid {pid} is still finishing work after {} s",
        WAIT.as_secs()
    ))
    .hinted("run `gitsync stop` again to wait longer"))
}
