//! The hand-off from the pre-push hook to the daemon: a Unix socket, and a spool folder
//! for when the daemon is not running.
//!
//! The hook (`gitsync hook pre-push`) writes one JSON [`Notice`] and a newline to
//! `~/.gitsync/gitsync.sock` (mode 0600) and leaves; it never waits for an answer. When
//! nothing listens there, it writes the notice to `~/.gitsync/spool/` instead, and the
//! daemon handles the spool when it starts, so a push made while the daemon was down still
//! reaches the other machines.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;
use tokio::sync::mpsc;

/// The largest notice accepted, in bytes (a push of thousands of refs fits).
pub const MAX_NOTICE: u64 = 4 << 20;
/// The most notices kept in the spool; later ones are dropped (the periodic fetch of the
/// other machines still catches those pushes).
pub const MAX_SPOOLED: usize = 1000;

/// One line of the pre-push hook's standard input (githooks(5)):
/// `<local ref> SP <local object name> SP <remote ref> SP <remote object name> LF`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefUpdate {
    /// The local ref pushed, such as `refs/heads/main`, or `(delete)`.
    pub local_ref: String,
    /// The commit pushed: the remote ref's new value, all zeros for a deletion.
    pub local_sha: String,
    /// The remote ref updated, such as `refs/heads/main`.
    pub remote_ref: String,
    /// The remote ref's value before the push, all zeros when it is created.
    pub remote_sha: String,
}

/// What the hook hands to the daemon for one `git push`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// The hook's working folder: the worktree's top level (git runs hooks there).
    pub cwd: PathBuf,
    /// The remote's name, or its URL when the push named a URL.
    pub remote: String,
    /// The URL pushed to, as git gave it (may hold credentials; never logged unredacted).
    pub url: String,
    /// Process id of the `git push` running the hook, when known.
    #[serde(default)]
    pub push_pid: Option<u32>,
    /// The refs being pushed.
    pub updates: Vec<RefUpdate>,
}

fn is_object_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parses the hook's standard input; malformed lines are skipped.
pub fn parse_updates(input: &str) -> Vec<RefUpdate> {
    input
        .lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let update = RefUpdate {
                local_ref: parts.next()?.to_string(),
                local_sha: parts.next()?.to_ascii_lowercase(),
                remote_ref: parts.next()?.to_string(),
                remote_sha: parts.next()?.to_ascii_lowercase(),
            };
            let valid = parts.next().is_none()
                && is_object_id(&update.local_sha)
                && is_object_id(&update.remote_sha)
                && update.remote_ref.starts_with("refs/");
            valid.then_some(update)
        })
        .collect()
}

/// The daemon's socket: `<home>/gitsync.sock`.
pub fn socket_path(home: &Path) -> PathBuf {
    home.join("gitsync.sock")
}

/// Where notices wait while the daemon is down: `<home>/spool`.
pub fn spool_dir(home: &Path) -> PathBuf {
    home.join("spool")
}

/// Sends `notice` to the daemon listening at `socket`, waiting at most `timeout` for the
/// connection and the write.
///
/// Errors: no daemon listens (the socket is missing or refuses), or the write fails.
pub fn send(socket: &Path, notice: &Notice, timeout: Duration) -> std::io::Result<()> {
    let mut stream = connect_now(socket)?;
    stream.set_write_timeout(Some(timeout))?;
    let mut line = serde_json::to_vec(notice)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    stream.shutdown(std::net::Shutdown::Write)
}

/// Connects to `socket` without ever waiting: a listener that never accepts (its backlog
/// full) gives `EAGAIN` at once instead of a `connect` that blocks forever, unix(7).
///
/// Errors: the socket is missing, refuses, or is full.
fn connect_now(socket: &Path) -> std::io::Result<std::os::unix::net::UnixStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect};
    use std::os::fd::AsRawFd;
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let addr = UnixAddr::new(socket)?;
    connect(fd.as_raw_fd(), &addr)?;
    let stream = std::os::unix::net::UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

/// Writes `notice` into the spool under `home` (only when `home` exists: gitsync is set
/// up for this user), for the daemon to handle when it starts.
///
/// Errors: `home` is missing, the spool is full, or the file cannot be written.
pub fn spool(home: &Path, notice: &Notice) -> std::io::Result<PathBuf> {
    if !home.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            format!("{} does not exist", home.display()),
        ));
    }
    let dir = spool_dir(home);
    std::fs::create_dir_all(&dir)?;
    if std::fs::read_dir(&dir)?.count() >= MAX_SPOOLED {
        return Err(std::io::Error::other("the spool is full"));
    }
    let mut file = tempfile::Builder::new()
        .prefix(".incoming-")
        .tempfile_in(&dir)?;
    serde_json::to_writer(&mut file, notice)?;
    file.as_file().sync_data()?;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let path = dir.join(format!("{nanos:020}-{}.json", std::process::id()));
    file.persist(&path).map_err(|e| e.error)?;
    Ok(path)
}

/// Reads the spooled notices under `home`, oldest first, with their files (delete each
/// once handled). Malformed files are logged and removed.
pub fn spooled(home: &Path) -> Vec<(PathBuf, Notice)> {
    let Ok(entries) = std::fs::read_dir(spool_dir(home)) else {
        return Vec::new();
    };
    let mut paths: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let parsed = std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Notice>(&b).map_err(|e| e.to_string()));
        match parsed {
            Ok(notice) => out.push((path, notice)),
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "malformed spooled push removed");
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    out
}

/// Why the socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ListenError {
    /// Another daemon already answers on the socket.
    #[error("another gitsync daemon is already running for this user (it answers on {0})")]
    Running(PathBuf),
    /// The socket cannot be created.
    #[error("cannot listen on {path}: {source}")]
    Io {
        /// The socket path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Binds the socket at `path` with mode 0600, replacing a stale socket file left by a
/// daemon that died.
///
/// Errors: [`ListenError::Running`] when a live daemon answers there; [`ListenError::Io`].
pub fn bind(path: &Path) -> Result<UnixListener, ListenError> {
    let io = |source| ListenError::Io {
        path: path.to_path_buf(),
        source,
    };
    if path.symlink_metadata().is_ok() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(ListenError::Running(path.to_path_buf()));
        }
        std::fs::remove_file(path).map_err(io)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let listener = UnixListener::bind(path).map_err(io)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
    Ok(listener)
}

/// Accepts connections on `listener` forever, sending each well-formed notice to `out`.
/// A connection that sends garbage, too much, or nothing within 5 seconds is logged and
/// dropped.
pub async fn serve(listener: UnixListener, out: mpsc::Sender<Notice>) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(%err, "cannot accept a hook connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let out = out.clone();
        tokio::spawn(async move {
            let mut buf = Vec::new();
            let mut limited = stream.take(MAX_NOTICE + 1);
            let read = limited.read_to_end(&mut buf);
            match tokio::time::timeout(Duration::from_secs(5), read).await {
                Ok(Ok(_)) if buf.len() as u64 <= MAX_NOTICE => {}
                Ok(Ok(_)) => {
                    tracing::warn!("hook notice too large; dropped");
                    return;
                }
                Ok(Err(err)) => {
                    tracing::warn!(%err, "cannot read a hook notice");
                    return;
                }
                Err(_) => {
                    tracing::warn!("hook connection sent nothing for 5 s; dropped");
                    return;
                }
            }
            match serde_json::from_slice::<Notice>(&buf) {
                Ok(notice) => {
                    let _ = out.send(notice).await;
                }
                Err(err) => {
                    tracing::warn!(%err, bytes = buf.len(), "malformed hook notice dropped")
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const Z: &str = "0000000000000000000000000000000000000000";

    #[test]
    fn parses_git_ref_lines_and_skips_garbage() {
        let input = format!(
            "refs/heads/main {A} refs/heads/main {Z}\n\
             (delete) {Z} refs/heads/old {A}\n\
             garbage\n\
             refs/heads/x nothex refs/heads/x {Z}\n\
             refs/tags/v1 {A} refs/tags/v1 {Z} extra\n"
        );
        let updates = parse_updates(&input);
        assert_eq!(updates.len(), 2);
        assert_eq!(updates[0].remote_ref, "refs/heads/main");
        assert_eq!(updates[1].local_ref, "(delete)");
        assert_eq!(updates[1].local_sha, Z);
    }

    #[tokio::test]
    async fn a_notice_travels_and_garbage_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = socket_path(dir.path());
        let listener = bind(&path).expect("bind");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(matches!(bind(&path), Err(ListenError::Running(_))));
        let (tx, mut rx) = mpsc::channel(4);
        tokio::spawn(serve(listener, tx));
        let notice = Notice {
            cwd: dir.path().to_path_buf(),
            remote: "origin".into(),
            url: "/srv/x.git".into(),
            push_pid: Some(1),
            updates: parse_updates(&format!("refs/heads/main {A} refs/heads/main {Z}\n")),
        };
        let p = path.clone();
        tokio::task::spawn_blocking(move || {
            let mut raw = std::os::unix::net::UnixStream::connect(&p).expect("connect");
            raw.write_all(b"{not json\n").expect("write");
        })
        .await
        .expect("join");
        let (p, n) = (path.clone(), notice.clone());
        tokio::task::spawn_blocking(move || send(&p, &n, Duration::from_secs(1)))
            .await
            .expect("join")
            .expect("send");
        let got = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("in time");
        assert_eq!(got, Some(notice));
    }

    #[test]
    fn spool_round_trip_only_when_home_exists() {
        let dir = tempfile::tempdir().expect("tempdir");
        let notice = Notice {
            cwd: "/x".into(),
            remote: "origin".into(),
            url: "u".into(),
            push_pid: None,
            updates: Vec::new(),
        };
        assert!(spool(&dir.path().join("missing"), &notice).is_err());
        spool(dir.path(), &notice).expect("spool");
        std::fs::write(spool_dir(dir.path()).join("0-bad.json"), "nope").expect("write");
        let got = spooled(dir.path());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, notice);
        assert_eq!(
            std::fs::read_dir(spool_dir(dir.path()))
                .expect("dir")
                .count(),
            1
        );
    }
}
