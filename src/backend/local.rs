//! The `local` backend: a hub folder, on this machine or on a shared filesystem.
//!
//! Layout (all under the hub folder):
//! - `state/<host>/<repo>.json`: one [`RepoState`] per (host, repository), written
//!   atomically (temporary file, rename; not synced: it is rewritten at every sync), so a
//!   reader never sees half a record;
//! - `events/<host>.jsonl`: each host's append-only event log, one JSON [`PushEvent`] a line;
//! - `offsets/<reader>/<writer>`: how far `reader` has handled `writer`'s log, in bytes,
//!   and the inode of the log that offset is in (`<bytes> <inode>`);
//! - `hosts/<host>.json`: version and last heartbeat of each host.
//!
//! Repository paths are percent-encoded (`/` as `%2F`) to make one file name. Nothing is
//! ever purged. The event logs are watched with notify, so a receiver wakes as soon as a
//! line is appended.

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use notify::Watcher;

use super::{BackendError, Delivery, EventBus, StateStore};
use crate::model::{HostRecord, PushEvent, RepoState};

/// A hub folder opened for one host.
pub struct LocalHub {
    root: PathBuf,
    host: String,
    wake: Arc<tokio::sync::Notify>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    /// How many times the event logs were read (each `receive` reads once per wake-up).
    reads: std::sync::atomic::AtomicU64,
    /// Per writer: how far this reader has handled its log, also when the offset file
    /// cannot be written (so nothing is handed out twice in a loop).
    offsets: Mutex<std::collections::HashMap<String, u64>>,
    /// Per writer: the inode of its log as last opened.
    logs: Mutex<std::collections::HashMap<String, u64>>,
    /// Problems already logged (each is said once).
    warned: Mutex<std::collections::HashSet<String>>,
    /// The hub folder's device and inode at open: a share unmounted (or the folder
    /// replaced) under a running daemon shows as another pair.
    identity: (u64, u64),
}

/// The most one `receive` reads of one event log, in bytes (the rest comes next time).
const MAX_READ: u64 = 16 << 20;

/// A folder's device and inode number.
fn folder_identity(path: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.dev(), meta.ino()))
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> BackendError + '_ {
    move |source| BackendError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Encodes a repository path or host name as one file name: `%` -> `%25`, `/` -> `%2F`,
/// and a name of only dots gets its dots encoded.
pub fn encode_name(name: &str) -> String {
    let mut out = name.replace('%', "%25").replace('/', "%2F");
    if out.chars().all(|c| c == '.') {
        out = out.replace('.', "%2E");
    }
    out
}

/// [`crate::util::fs::write_atomic`], with the backend's error.
///
/// Errors: [`BackendError::Io`] with the path.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), BackendError> {
    crate::util::fs::write_atomic(path, bytes).map_err(backend_error(path))
}

/// [`crate::util::fs::write_replacing`] (atomic, not synced), with the backend's error.
///
/// Errors: [`BackendError::Io`] with the path.
fn write_replacing(path: &Path, bytes: &[u8]) -> Result<(), BackendError> {
    crate::util::fs::write_replacing(path, bytes).map_err(backend_error(path))
}

fn backend_error(path: &Path) -> impl Fn(crate::util::fs::PathError) -> BackendError + '_ {
    move |e| match e {
        crate::util::fs::PathError::Io { path, source } => BackendError::Io { path, source },
        other => BackendError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::other(other.to_string()),
        },
    }
}

impl LocalHub {
    /// Opens the hub at `root` for `host`, creating its subfolders; the folder itself is
    /// created only when `create` (the default hub under `~/.gitsync`): a configured hub
    /// that is missing is most likely a share that is not mounted, and publishing into an
    /// empty local folder would let the machines drift apart unseen.
    ///
    /// Errors: [`BackendError::Config`] for a missing hub folder (without `create`), with
    /// what to do; [`BackendError::Io`] when a subfolder cannot be created.
    pub fn open(root: &Path, host: &str, create: bool) -> Result<Self, BackendError> {
        if !create && !root.is_dir() {
            return Err(BackendError::Config(format!(
                "the hub folder {} (local.path) does not exist: mount the share it lives on, or create it (`mkdir -p {}`) if this machine starts the hub",
                root.display(),
                root.display()
            )));
        }
        std::fs::create_dir_all(root).map_err(io_err(root))?;
        let identity = folder_identity(root).map_err(io_err(root))?;
        for sub in ["state", "events", "offsets", "hosts"] {
            let dir = root.join(sub);
            std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        Ok(LocalHub {
            root: root.to_path_buf(),
            host: host.to_string(),
            wake: Arc::new(tokio::sync::Notify::new()),
            watcher: Mutex::new(None),
            reads: std::sync::atomic::AtomicU64::new(0),
            offsets: Mutex::new(std::collections::HashMap::new()),
            logs: Mutex::new(std::collections::HashMap::new()),
            warned: Mutex::new(std::collections::HashSet::new()),
            identity,
        })
    }

    /// Checks that the hub folder is the one opened (same device and inode).
    ///
    /// Errors: [`BackendError::Config`] when it is gone or another folder (an unmounted
    /// share), with what to do.
    fn still_there(&self) -> Result<(), BackendError> {
        match folder_identity(&self.root) {
            Ok(now) if now == self.identity => Ok(()),
            _ => Err(BackendError::Config(format!(
                "the hub folder {} is gone or is another folder than at start-up (an unmounted share?): nothing is written there until it is back; mount it and restart gitsync",
                self.root.display()
            ))),
        }
    }

    fn host_path(&self, host: &str) -> PathBuf {
        self.root
            .join("hosts")
            .join(format!("{}.json", encode_name(host)))
    }

    fn state_path(&self, host: &str, repo: &str) -> PathBuf {
        self.root
            .join("state")
            .join(encode_name(host))
            .join(format!("{}.json", encode_name(repo)))
    }

    fn offset_path(&self, writer: &str) -> PathBuf {
        self.root
            .join("offsets")
            .join(encode_name(&self.host))
            .join(encode_name(writer))
    }

    /// The offset file of `writer`: how far its log was read, and the inode of the log that
    /// offset is in (absent in offset files written before it was recorded).
    fn stored_offset(&self, writer: &str) -> (u64, Option<u64>) {
        let text = std::fs::read_to_string(self.offset_path(writer)).unwrap_or_default();
        let mut words = text.split_whitespace();
        let offset = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
        (offset, words.next().and_then(|w| w.parse().ok()))
    }

    fn read_offset(&self, writer: &str) -> u64 {
        let (stored, _) = self.stored_offset(writer);
        let held = self
            .offsets
            .lock()
            .map(|m| m.get(writer).copied().unwrap_or(0))
            .unwrap_or(0);
        stored.max(held)
    }

    /// Logs `message` about `key` the first time only; returns whether it was logged.
    fn warn_once(&self, key: String, message: impl FnOnce() -> String) {
        let first = self
            .warned
            .lock()
            .map(|mut w| w.insert(key))
            .unwrap_or(false);
        if first {
            tracing::warn!("{}", message());
        }
    }

    /// Opens an event log for reading only when it is a regular file: never a FIFO (whose
    /// `open` would block), a device (`/dev/zero` reads forever) or a folder, and never
    /// through a symlink. Anything else is logged once and skipped.
    fn open_log(&self, path: &Path) -> Option<std::fs::File> {
        use std::os::unix::fs::OpenOptionsExt;
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc_flags())
            .open(path);
        let skip = |why: String| {
            self.warn_once(format!("{}:{why}", path.display()), || {
                format!("event log {} skipped: {why}", path.display())
            });
            None
        };
        match opened {
            Ok(file) => match file.metadata() {
                Ok(meta) if meta.is_file() => Some(file),
                Ok(_) => skip("not a regular file".to_string()),
                Err(err) => skip(err.to_string()),
            },
            Err(err) if err.raw_os_error() == Some(nix::libc::ELOOP) => {
                skip("a symlink (event logs must be regular files)".to_string())
            }
            Err(err) => skip(err.to_string()),
        }
    }

    /// Starts watching `events/` once, so that `receive` wakes on appends.
    fn ensure_watcher(&self) {
        let Ok(mut slot) = self.watcher.lock() else {
            return;
        };
        if slot.is_some() {
            return;
        }
        let wake = self.wake.clone();
        let made = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Only writes wake the reader: notify also reports opens and reads (IN_OPEN),
            // and the reader's own listing of the folder would wake it again, forever.
            if res.is_ok_and(|event| !matches!(event.kind, notify::EventKind::Access(_))) {
                wake.notify_one();
            }
        });
        match made {
            Ok(mut watcher) => {
                let dir = self.root.join("events");
                match watcher.watch(&dir, notify::RecursiveMode::NonRecursive) {
                    Ok(()) => *slot = Some(watcher),
                    Err(err) => {
                        tracing::warn!(dir = %dir.display(), %err, "cannot watch the event logs; falling back to periodic reads")
                    }
                }
            }
            Err(err) => {
                tracing::warn!(%err, "cannot watch the event logs; falling back to periodic reads")
            }
        }
    }

    /// Reads every other host's log past this host's offset.
    fn read_new(&self) -> Result<Vec<Delivery>, BackendError> {
        self.reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.root.join("events");
        let mut out = Vec::new();
        let entries = std::fs::read_dir(&dir).map_err(io_err(&dir))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(writer) = name.strip_suffix(".jsonl") else {
                continue;
            };
            if writer == encode_name(&self.host) {
                continue;
            }
            let path = entry.path();
            let Some(mut file) = self.open_log(&path) else {
                continue;
            };
            let mut start = self.read_offset(writer);
            let (len, ino) = file
                .metadata()
                .map(|m| (m.len(), std::os::unix::fs::MetadataExt::ino(&m)))
                .unwrap_or((0, 0));
            let (_, read_in) = self.stored_offset(writer);
            let replaced = read_in
                .or(self.log_inode(writer))
                .is_some_and(|known| known != ino);
            if let Ok(mut logs) = self.logs.lock() {
                logs.insert(writer.to_string(), ino);
            }
            if start > len || (replaced && start > 0) {
                // The log was truncated or replaced (another file, whatever its size): read
                // it again from the start (events are idempotent) rather than from the
                // middle of another file, or wait for it to grow past the old offset.
                self.warn_once(format!("{}:truncated:{start}", path.display()), || {
                    format!(
                        "event log {} is shorter ({len} bytes) than what was read of it ({start}): it was truncated or replaced; reading it from the start",
                        path.display()
                    )
                });
                if let Ok(mut held) = self.offsets.lock() {
                    held.insert(writer.to_string(), 0);
                }
                let _ = write_atomic(&self.offset_path(writer), format!("0 {ino}").as_bytes());
                start = 0;
            }
            file.seek(SeekFrom::Start(start)).map_err(io_err(&path))?;
            let mut buf = Vec::new();
            (&mut file)
                .take(MAX_READ)
                .read_to_end(&mut buf)
                .map_err(io_err(&path))?;
            let mut pos = start;
            // Only complete lines; a line still being appended is read next time.
            while let Some(nl) = buf[(pos - start) as usize..]
                .iter()
                .position(|b| *b == b'\n')
            {
                let from = (pos - start) as usize;
                let line = &buf[from..from + nl];
                pos += nl as u64 + 1;
                let token = format!("{writer}:{pos}");
                match serde_json::from_slice::<PushEvent>(line) {
                    Ok(event) if event.host != self.host => out.push(Delivery { event, token }),
                    Ok(_) => {}
                    Err(err) => {
                        tracing::warn!(log = %path.display(), offset = pos, %err, "malformed event skipped");
                        // Acknowledging a later event moves past this line; only when no
                        // event of this log waits for its acknowledgement may the offset
                        // move now, or an unhandled event would be skipped.
                        if !out
                            .iter()
                            .any(|d| d.token.starts_with(&format!("{writer}:")))
                        {
                            self.store_offset(writer, pos)?;
                        }
                    }
                }
            }
            if pos == start && buf.len() as u64 >= MAX_READ {
                // One line longer than a whole read: garbage; step over it.
                self.warn_once(format!("{}:long:{start}", path.display()), || {
                    format!(
                        "event log {} has a line longer than {MAX_READ} bytes at {start}; skipped",
                        path.display()
                    )
                });
                let _ = self.store_offset(writer, start + MAX_READ);
            }
        }
        Ok(out)
    }

    /// The inode of `writer`'s log as this reader last opened it.
    fn log_inode(&self, writer: &str) -> Option<u64> {
        self.logs
            .lock()
            .ok()
            .and_then(|logs| logs.get(writer).copied())
    }

    /// Records that `writer`'s log was handled up to `offset` bytes, with the inode of the
    /// log read, so that a log replaced by another file is noticed whatever its size.
    fn store_offset(&self, writer: &str, offset: u64) -> Result<(), BackendError> {
        let (stored, stored_in) = self.stored_offset(writer);
        let ino = self.log_inode(writer);
        if let Ok(mut held) = self.offsets.lock() {
            let entry = held.entry(writer.to_string()).or_insert(0);
            *entry = (*entry).max(offset);
        }
        if offset <= stored && (ino.is_none() || stored_in == ino) {
            return Ok(());
        }
        let path = self.offset_path(writer);
        let text = match ino {
            Some(ino) => format!("{offset} {ino}"),
            None => offset.to_string(),
        };
        write_atomic(&path, text.as_bytes()).inspect_err(|err| {
            self.warn_once(format!("offset:{}", path.display()), || {
                format!("cannot record how far the events of {writer} were handled ({err}); going on, they may be handled again after a restart")
            });
        })
    }
}

/// `O_NOFOLLOW | O_NONBLOCK`: no symlink, and no wait on a FIFO with no writer.
fn libc_flags() -> i32 {
    nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, BackendError> + Send + 'static,
) -> Result<T, BackendError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|join| {
        Err(BackendError::Io {
            path: PathBuf::new(),
            source: std::io::Error::other(join.to_string()),
        })
    })
}

#[async_trait]
impl StateStore for LocalHub {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn health(&self) -> Result<(), BackendError> {
        self.still_there()?;
        // Whether the hub takes a write: the probe need not last, so it is not synced to
        // the disk (a sync costs a few milliseconds at every `sync` and `/readyz`).
        let probe = self
            .root
            .join("hosts")
            .join(format!(".probe-{}", std::process::id()));
        std::fs::write(&probe, b"ok").map_err(io_err(&probe))?;
        std::fs::remove_file(&probe).map_err(io_err(&probe))
    }

    async fn put(&self, state: &RepoState) -> Result<(), BackendError> {
        self.still_there()?;
        let path = self.state_path(&state.host, &state.repo);
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| BackendError::Malformed {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        // A state record is rewritten at every sync and only describes the repository: it
        // is not synced to the disk (a power loss can leave the one before, which the next
        // sync replaces), as git leaves its index and refs under the default `core.fsync`.
        blocking(move || write_replacing(&path, &bytes)).await
    }

    async fn list(&self, host: Option<&str>) -> Result<Vec<RepoState>, BackendError> {
        let state_dir = self.root.join("state");
        let only = host.map(encode_name);
        blocking(move || {
            let mut out = Vec::new();
            let hosts = std::fs::read_dir(&state_dir).map_err(io_err(&state_dir))?;
            for host_dir in hosts.flatten() {
                let name = host_dir.file_name().to_string_lossy().into_owned();
                if only.as_ref().is_some_and(|h| *h != name) || !host_dir.path().is_dir() {
                    continue;
                }
                let dir = host_dir.path();
                for file in std::fs::read_dir(&dir).map_err(io_err(&dir))?.flatten() {
                    let path = file.path();
                    let is_record = path.extension().is_some_and(|e| e == "json")
                        && !file.file_name().to_string_lossy().starts_with(".tmp-");
                    if !is_record {
                        continue;
                    }
                    let parsed = std::fs::read(&path)
                        .map_err(|e| e.to_string())
                        .and_then(|b| serde_json::from_slice::<RepoState>(&b).map_err(|e| e.to_string()));
                    match parsed {
                        Ok(state) => out.push(state),
                        Err(err) => tracing::warn!(path = %path.display(), %err, "malformed state record skipped"),
                    }
                }
            }
            out.sort_by(|a, b| (&a.host, &a.repo).cmp(&(&b.host, &b.repo)));
            Ok(out)
        })
        .await
    }

    async fn heartbeat(&self, record: &HostRecord) -> Result<(), BackendError> {
        self.still_there()?;
        let path = self.host_path(&record.host);
        let bytes = serde_json::to_vec(record).map_err(|e| BackendError::Malformed {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        blocking(move || write_atomic(&path, &bytes)).await
    }

    async fn hosts(&self, host: Option<&str>) -> Result<Vec<HostRecord>, BackendError> {
        let files: Vec<PathBuf> = match host {
            Some(host) => vec![self.host_path(host)],
            None => std::fs::read_dir(self.root.join("hosts"))
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| e.path())
                        .filter(|p| p.extension().is_some_and(|e| e == "json"))
                        .collect()
                })
                .unwrap_or_default(),
        };
        blocking(move || {
            let mut out = Vec::new();
            for path in files {
                let bytes = match std::fs::read(&path) {
                    Ok(bytes) => bytes,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err(&path)(e)),
                };
                match serde_json::from_slice::<HostRecord>(&bytes) {
                    Ok(record) => out.push(record),
                    Err(err) => tracing::warn!(path = %path.display(), %err, "malformed host record skipped"),
                }
            }
            out.sort_by(|a, b| a.host.cmp(&b.host));
            Ok(out)
        })
        .await
    }

    async fn forget(&self, host: &str, repo: Option<&str>) -> Result<usize, BackendError> {
        let gone = |path: &Path| match std::fs::remove_file(path) {
            Ok(()) => Ok(1),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io_err(path)(e)),
        };
        match repo {
            Some(repo) => gone(&self.state_path(host, repo)),
            None => {
                let dir = self.root.join("state").join(encode_name(host));
                let mut count = 0;
                if let Ok(entries) = std::fs::read_dir(&dir) {
                    for entry in entries.flatten() {
                        if entry.path().extension().is_some_and(|e| e == "json") {
                            count += gone(&entry.path())?;
                        }
                    }
                }
                let _ = std::fs::remove_dir(&dir);
                gone(&self.host_path(host))?;
                Ok(count)
            }
        }
    }
}

#[async_trait]
impl EventBus for LocalHub {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn publish(&self, event: &PushEvent) -> Result<(), BackendError> {
        self.still_there()?;
        // An event announced on behalf of another sender (a forge's webhook) goes to that
        // sender's log, which this host reads too: it must pull that push as well.
        let path = self
            .root
            .join("events")
            .join(format!("{}.jsonl", encode_name(&event.host)));
        let mut line = serde_json::to_vec(event).map_err(|e| BackendError::Malformed {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        line.push(b'\n');
        blocking(move || {
            let mut file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io_err(&path))?;
            // One write of the whole line: O_APPEND keeps concurrent lines whole.
            file.write_all(&line).map_err(io_err(&path))?;
            file.sync_data().map_err(io_err(&path))
        })
        .await
    }

    async fn receive(&self, wait: Duration) -> Result<Vec<Delivery>, BackendError> {
        self.ensure_watcher();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.wake.notified();
            let found = self.read_new()?;
            if !found.is_empty() {
                return Ok(found);
            }
            // The watcher wakes us on appends; the 1 s cap covers shared filesystems
            // (NFS, SMB) where other machines' writes raise no inotify event.
            let cap = deadline.min(tokio::time::Instant::now() + Duration::from_secs(1));
            if tokio::time::timeout_at(cap, notified).await.is_err()
                && tokio::time::Instant::now() >= deadline
            {
                return Ok(Vec::new());
            }
        }
    }

    async fn ack_all(&self, deliveries: &[Delivery]) -> Result<(), BackendError> {
        // Offsets only grow: the last delivery of each writer's log covers the ones before
        // it, so a batch costs one write per log, not one per event.
        let mut last: std::collections::HashMap<&str, &Delivery> = std::collections::HashMap::new();
        for delivery in deliveries {
            if let Some((writer, _)) = delivery.token.rsplit_once(':') {
                last.insert(writer, delivery);
            }
        }
        for delivery in last.into_values() {
            self.ack(delivery).await?;
        }
        Ok(())
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), BackendError> {
        let Some((writer, offset)) = delivery.token.rsplit_once(':') else {
            return Ok(());
        };
        let offset: u64 = offset.parse().unwrap_or(0);
        self.store_offset(writer, offset)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn written_files_follow_the_umask() {
        use std::os::unix::fs::PermissionsExt;
        let umask = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            })
            .expect("Umask in /proc/self/status");
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("state.json");
        write_atomic(&path, b"{}").expect("write");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o666 & !umask);
    }

    use super::*;
    use chrono::Utc;

    fn event(host: &str, new: &str) -> PushEvent {
        PushEvent {
            id: format!("id-{new}"),
            host: host.to_string(),
            repo: "a/b".to_string(),
            remote_url: "/srv/a.git".to_string(),
            ref_name: "refs/heads/main".to_string(),
            old: "0".repeat(40),
            new: new.to_string(),
            at: Utc::now(),
        }
    }

    /// A hub in a temporary folder, opened for hosts `a` and `b`.
    fn two_hosts() -> (tempfile::TempDir, LocalHub, LocalHub) {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = LocalHub::open(dir.path(), "a", true).expect("open a");
        let b = LocalHub::open(dir.path(), "b", true).expect("open b");
        (dir, a, b)
    }

    #[tokio::test]
    async fn fifos_folders_devices_truncation_and_unwritable_offsets_stop_nothing() {
        let (dir, a, b) = two_hosts();
        let events = dir.path().join("events");
        nix::unistd::mkfifo(&events.join("fifo.jsonl"), nix::sys::stat::Mode::S_IRWXU)
            .expect("mkfifo");
        std::fs::create_dir(events.join("folder.jsonl")).expect("mkdir");
        std::os::unix::fs::symlink("/dev/zero", events.join("zero.jsonl")).expect("symlink");
        a.publish(&event("a", "1")).await.expect("publish");
        let got = tokio::time::timeout(Duration::from_secs(5), b.receive(Duration::from_secs(1)))
            .await
            .expect("receive returned")
            .expect("receive");
        assert_eq!(got.len(), 1, "{got:?}");

        // An offset that cannot be written: acknowledged all the same, not handed out again.
        let offset = b.offset_path("a");
        std::fs::create_dir_all(&offset).expect("a folder where the offset goes");
        assert!(b.ack(&got[0]).await.is_err());
        let again = b
            .receive(Duration::from_millis(200))
            .await
            .expect("receive");
        assert!(again.is_empty(), "handed out again: {again:?}");
        std::fs::remove_dir(&offset).expect("rmdir");

        // A log truncated below the offset is read again from the start.
        b.ack(&got[0]).await.expect("ack");
        let log = events.join("a.jsonl");
        std::fs::write(&log, "").expect("truncate");
        let none = b
            .receive(Duration::from_millis(200))
            .await
            .expect("receive");
        assert!(none.is_empty());
        a.publish(&event("a", "2")).await.expect("publish");
        let got = b.receive(Duration::from_secs(2)).await.expect("receive");
        assert_eq!(
            got.iter().map(|d| d.event.new.as_str()).collect::<Vec<_>>(),
            ["2"]
        );
    }

    #[tokio::test]
    async fn a_log_replaced_by_one_of_the_same_or_greater_size_is_read_from_its_start() {
        let (dir, a, b) = two_hosts();
        let log = dir.path().join("events/a.jsonl");
        a.publish(&event("a", "1")).await.expect("publish");
        let got = b.receive(Duration::from_secs(2)).await.expect("receive");
        assert_eq!(got.len(), 1);
        b.ack(&got[0]).await.expect("ack");
        // The same length, then a longer one: another file each time (a restore, a copy).
        for (round, extra) in [("2", 0), ("3", 1)] {
            let mut replaced = serde_json::to_vec(&event("a", round)).expect("json");
            replaced.push(b'\n');
            let before = std::fs::metadata(&log).expect("log").len() as usize;
            if extra > 0 {
                replaced.extend(serde_json::to_vec(&event("a", "4")).expect("json"));
                replaced.push(b'\n');
            }
            assert!(replaced.len() >= before, "{} < {before}", replaced.len());
            let aside = dir.path().join("events/a.new");
            std::fs::write(&aside, &replaced).expect("write");
            std::fs::rename(&aside, &log).expect("replace");
            let got = b.receive(Duration::from_secs(2)).await.expect("receive");
            let news: Vec<&str> = got.iter().map(|d| d.event.new.as_str()).collect();
            let want: &[&str] = if extra > 0 { &["3", "4"] } else { &["2"] };
            assert_eq!(news, want, "round {round}");
            for d in &got {
                b.ack(d).await.expect("ack");
            }
        }
        // A restart reads nothing again.
        let again = LocalHub::open(dir.path(), "b", true).expect("reopen b");
        assert!(
            again
                .receive(Duration::from_millis(100))
                .await
                .expect("receive")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn events_cross_hosts_once_and_skip_garbage() {
        let (dir, a, b) = two_hosts();
        a.publish(&event("a", "1")).await.expect("publish");
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("events/a.jsonl"))
            .and_then(|mut f| f.write_all(b"{not json\n"))
            .expect("append garbage");
        a.publish(&event("a", "2")).await.expect("publish");
        let got = b
            .receive(Duration::from_millis(100))
            .await
            .expect("receive");
        assert_eq!(
            got.iter().map(|d| d.event.new.as_str()).collect::<Vec<_>>(),
            ["1", "2"]
        );
        assert!(
            a.receive(Duration::from_millis(50))
                .await
                .expect("own")
                .is_empty()
        );
        for d in &got {
            b.ack(d).await.expect("ack");
        }
        assert!(
            b.receive(Duration::from_millis(50))
                .await
                .expect("again")
                .is_empty()
        );
    }

    #[tokio::test]
    async fn an_idle_receive_sleeps_instead_of_waking_on_its_own_reads() {
        let (_dir, a, b) = two_hosts();
        a.publish(&event("a", "1")).await.expect("publish");
        for d in b.receive(Duration::from_millis(100)).await.expect("first") {
            b.ack(&d).await.expect("ack");
        }
        let before = b.reads.load(std::sync::atomic::Ordering::Relaxed);
        let got = b.receive(Duration::from_millis(1500)).await.expect("idle");
        assert!(got.is_empty());
        let reads = b.reads.load(std::sync::atomic::Ordering::Relaxed) - before;
        // One read, then one per 1 s cap: opening the folder and the logs (IN_OPEN) must
        // not wake the reader again.
        assert!(
            reads <= 4,
            "{reads} reads of the event logs in 1.5 s of quiet"
        );
    }

    #[tokio::test]
    async fn an_unacknowledged_event_before_a_malformed_line_is_delivered_again() {
        let (dir, a, b) = two_hosts();
        a.publish(&event("a", "1")).await.expect("publish");
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("events/a.jsonl"))
            .and_then(|mut f| f.write_all(b"garbage\n"))
            .expect("append garbage");
        let first = b.receive(Duration::from_millis(50)).await.expect("receive");
        assert_eq!(first.len(), 1);
        // Not acknowledged (say the daemon died while handling it): it comes again.
        let again = b.receive(Duration::from_millis(50)).await.expect("again");
        assert_eq!(
            again
                .iter()
                .map(|d| d.event.new.as_str())
                .collect::<Vec<_>>(),
            ["1"]
        );
        b.ack(&again[0]).await.expect("ack");
        // Once acknowledged, the malformed line alone moves the offset to the end.
        assert!(
            b.receive(Duration::from_millis(50))
                .await
                .expect("after")
                .is_empty()
        );
        let len = std::fs::metadata(dir.path().join("events/a.jsonl"))
            .expect("log")
            .len();
        assert_eq!(b.read_offset("a"), len);
    }

    #[tokio::test]
    async fn states_round_trip_with_encoded_names() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hub = LocalHub::open(dir.path(), "h", true).expect("open");
        let state = RepoState::error("h", "work/x%y", "boom".to_string());
        hub.put(&state).await.expect("put");
        let listed = hub.list(None).await.expect("list");
        assert_eq!(listed, vec![state]);
        assert!(hub.list(Some("other")).await.expect("list").is_empty());
    }
}
