//! One daemon per user: an exclusive lock on `~/.gitsync/gitsync.pid`.
//!
//! The running daemon holds an `flock(2)` on the pidfile, which holds its process id, and
//! writes `~/.gitsync/daemon.json` beside it (pid, version, start time) for `status`,
//! `stop` and `doctor`. The lock, not the file's existence, says whether a daemon runs: a
//! file left by a crash is simply taken over.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

/// What a running daemon says about itself in `daemon.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    /// Its process id.
    pub pid: u32,
    /// gitsync's version.
    pub version: String,
    /// When it started, UTC.
    pub started_at: DateTime<Utc>,
}

/// Why the pidfile could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum PidfileError {
    /// Another daemon holds the lock.
    #[error("gitsync is already running for this user (pid {pid}; `gitsync stop` stops it)")]
    Running {
        /// The other daemon's process id (0 when unreadable).
        pid: u32,
    },
    /// The file cannot be created, locked or written.
    #[error("{path}: {source}")]
    Io {
        /// The pidfile.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// How long [`acquire`] waits for a lock whose recorded daemon is gone (held by a child
/// that daemon forked just before it died) to be let go.
const ORPHAN_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The pidfile in `home`: `gitsync.pid`.
pub fn pidfile_path(home: &Path) -> PathBuf {
    home.join("gitsync.pid")
}

fn info_path(home: &Path) -> PathBuf {
    home.join("daemon.json")
}

/// The held lock; dropping it removes the files and releases the lock.
pub struct Pidfile {
    _lock: Flock<File>,
    home: PathBuf,
}

fn read_pid(file: &mut File) -> u32 {
    let mut text = String::new();
    let _ = file.rewind();
    let _ = file.read_to_string(&mut text);
    text.trim().parse().unwrap_or(0)
}

/// Takes the lock for this process and writes the pid and `daemon.json`.
///
/// When the lock is held but the process id in the file is not running (a killed daemon's
/// child between its fork and its exec still holds a copy), waits up to 5 seconds for it
/// to be let go.
///
/// Errors: [`PidfileError::Running`] when another daemon holds it; [`PidfileError::Io`].
pub fn acquire(home: &Path) -> Result<Pidfile, PidfileError> {
    let path = pidfile_path(home);
    let io = |source| PidfileError::Io {
        path: path.clone(),
        source,
    };
    crate::config::private_home(home).map_err(io)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    let mut file = file;
    let started = std::time::Instant::now();
    let mut lock = loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => break lock,
            Err((mut held, errno)) if errno == nix::errno::Errno::EWOULDBLOCK => {
                let pid = read_pid(&mut held);
                // A daemon killed while it started a child (fork, then exec) leaves that
                // child holding a copy of the lock until its exec, a moment later: a lock
                // whose recorded process is gone is waited for, not reported as running.
                if (pid != 0 && process_alive(pid)) || started.elapsed() >= ORPHAN_WAIT {
                    return Err(PidfileError::Running { pid });
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
                file = held;
            }
            Err((_, errno)) => return Err(io(std::io::Error::from(errno))),
        }
    };
    lock.set_len(0).map_err(io)?;
    lock.rewind().map_err(io)?;
    writeln!(lock, "{}", std::process::id()).map_err(io)?;
    let info = DaemonInfo {
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        started_at: Utc::now(),
    };
    let json = serde_json::to_vec(&info).map_err(|e| io(std::io::Error::other(e)))?;
    crate::util::fs::write_atomic(&info_path(home), &json)
        .map_err(|e| io(std::io::Error::other(e.to_string())))?;
    Ok(Pidfile {
        _lock: lock,
        home: home.to_path_buf(),
    })
}

impl Drop for Pidfile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(info_path(&self.home));
        let _ = std::fs::remove_file(pidfile_path(&self.home));
    }
}

/// Whether process `pid` runs: `/proc/<pid>/stat` exists and does not say zombie (a
/// daemonized process whose reaper never comes, as in some containers, stays a zombie
/// after it exited). Linux only; `false` elsewhere.
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            Some(state != 'Z' && state != 'X')
        })
        .unwrap_or(false)
}

/// The daemon running for `home`: one holds the lock and the process id it wrote runs
/// (or is not written yet).
pub fn running(home: &Path) -> Option<DaemonInfo> {
    let mut file = File::open(pidfile_path(home)).ok()?;
    let pid = read_pid(&mut file);
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        // Nobody holds it: no daemon (a crash left the file behind).
        Ok(_) => None,
        // Held, but its daemon is gone: a child it forked as it died holds a copy for a
        // moment (see [`acquire`]).
        Err(_) if pid != 0 && !process_alive(pid) => None,
        Err(_) => {
            let info = std::fs::read(info_path(home))
                .ok()
                .and_then(|b| serde_json::from_slice::<DaemonInfo>(&b).ok())
                .filter(|i| i.pid == pid);
            Some(info.unwrap_or(DaemonInfo {
                pid,
                version: "unknown".to_string(),
                started_at: Utc::now(),
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_holder_at_a_time_and_a_stale_file_is_taken_over() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(pidfile_path(dir.path()), "99999\n").expect("stale");
        assert_eq!(running(dir.path()), None);
        let held = acquire(dir.path()).expect("acquire");
        let info = running(dir.path()).expect("running");
        assert_eq!(info.pid, std::process::id());
        // flock is per open file description: a second open in this process conflicts too.
        assert!(matches!(
            acquire(dir.path()),
            Err(PidfileError::Running { .. })
        ));
        drop(held);
        assert_eq!(running(dir.path()), None);
        assert!(!pidfile_path(dir.path()).exists());
    }
}
