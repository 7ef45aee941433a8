//! One target: atomic releases over rsync+ssh, verify, rollback.
//!
//! Layout on the target (Capistrano's and git-sync's): `path/releases/<commit>/` holds each
//! release, exactly the commit's tree (nothing of gitsync's inside: the folder is often the
//! web server's document root); `path/current` is a symlink to the live one, flipped with a temporary symlink and a
//! rename (never unlink-then-link), so a reader of `current/` sees the old tree or the new
//! one, never a mix; `path/.gitsync-previous` names the release before it, for rollback.
//!
//! What each release holds is recorded on the machine that shipped it ([`Shape`]), and
//! `verify` compares the target with that record, never with anything the target says.

use super::DeployError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::delta;
use super::inline;
use super::ssh::{Ssh, quote};
use super::target_lock::TargetLock;
use crate::util::child::{Child, ChildError, Held};

/// What a ship did on one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Shipped {
    /// The release was written and `current` flipped to it.
    Flipped {
        /// The release `current` pointed at before (if any).
        previous: Option<String>,
        /// Bytes rsync sent.
        bytes_sent: u64,
        /// Files in the release.
        files: usize,
        /// How long laying the release down on the target took, from the lock to the
        /// comparison with the export (see [`prepare`]); it runs while the secret scan
        /// does.
        prepare: Duration,
        /// How long rsync took, after the scan passed.
        transfer: Duration,
        /// How long the flip of `current` (and the clean-up of old releases) took.
        flip: Duration,
    },
    /// `current` already was this commit: nothing was sent.
    AlreadyThere,
}

/// Limits of the remote steps.
const STEP_TIMEOUT: Duration = Duration::from_secs(120);
/// Limit of one rsync.
const RSYNC_TIMEOUT: Duration = Duration::from_secs(3600);

fn remote_err(step: &str) -> impl Fn((Option<i32>, String)) -> DeployError + '_ {
    move |(code, msg)| {
        DeployError::Target(match code {
            Some(255) => format!("{step}: cannot connect: {msg}"),
            Some(c) => format!("{step}: exit {c}: {msg}"),
            None => format!("{step}: {msg}"),
        })
    }
}

/// Where `current` points (`None` for a new layout), changing nothing.
///
/// Errors: the target is unreachable.
pub async fn current(ssh: &Ssh, path: &str) -> Result<Option<String>, DeployError> {
    let p = quote(path)?;
    let script = format!("P={p}; if [ -L \"$P/current\" ]; then readlink \"$P/current\"; fi");
    let out = ssh
        .run(&script, None, STEP_TIMEOUT)
        .await
        .map_err(remote_err("read"))?;
    Ok(release_of(&out))
}

/// The release a `readlink current` output names (`releases/<rev>`), if any.
fn release_of(readlink: &str) -> Option<String> {
    readlink
        .trim()
        .strip_prefix("releases/")
        .map(|r| r.trim_end_matches('/').to_string())
        .filter(|r| !r.is_empty())
}

/// `rsync -a --modify-window=-1 -e <ssh>` with gitsync's own files and `excludes` left
/// out ([`exclusions`]), stopped after an hour: the base of every transfer to a target
/// (callers add their flags, such as `--delete`, source and destination).
///
/// rsync's quick check takes a file whose size and modification time match as unchanged,
/// and by default compares the times in whole seconds (rsync(1), `--modify-window`). Two
/// commits that write a file of the same size within one second would then ship the
/// older content; `-1` compares nanoseconds too (a receiver of rsync 3.1.3 or later).
///
/// Errors: an ssh option that cannot be quoted.
pub fn rsync_command(ssh: &Ssh, excludes: &[String]) -> Result<Child, DeployError> {
    let mut command = Child::new("rsync", RSYNC_TIMEOUT);
    command
        .args(["-a", "--modify-window=-1"])
        .arg("-e")
        .arg(ssh.rsync_shell()?)
        .args(exclusions(excludes));
    Ok(command)
}

/// rsync's filter arguments for a release: a `.git` at the top, and `excludes`.
fn exclusions(excludes: &[String]) -> impl Iterator<Item = String> + '_ {
    std::iter::once("--exclude=/.git".to_string())
        .chain(excludes.iter().map(|e| format!("--exclude={e}")))
}

/// Ok when rsync's `output` says it succeeded, else `what` (such as `rsync`) with its exit
/// code and the cause it printed ([`rsync_cause`]).
///
/// Errors: that message.
pub fn rsync_status(what: &str, output: &std::process::Output) -> Result<(), DeployError> {
    match output.status.success() {
        true => Ok(()),
        false => Err(DeployError::Target(format!(
            "{what} exit {}: {}",
            output.status.code().unwrap_or(-1),
            rsync_cause(&String::from_utf8_lossy(&output.stderr))
        ))),
    }
}

/// What a failure to run rsync says: install it when it is missing.
fn rsync_error(err: ChildError) -> DeployError {
    DeployError::Target(match err {
        ChildError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            format!("cannot run rsync: {source} (apt-get install -y rsync)")
        }
        other => other.to_string(),
    })
}

/// One line of rsync's `--itemize-changes` (`%i %n`, with `-8`): the 11-character
/// `YXcstpoguax` field (Y the update type, X the file type; `*deleting` for deletions) and
/// the name as it is on disk (see [`unescape_rsync`]).
pub fn itemized(line: &[u8]) -> Option<(&[u8], std::path::PathBuf)> {
    use std::os::unix::ffi::OsStringExt;
    if line.len() < 13 || line[11] != b' ' {
        return None;
    }
    let name = std::ffi::OsString::from_vec(unescape_rsync(&line[12..]));
    Some((&line[..11], name.into()))
}

/// A name as rsync prints it, back to its bytes. With `-8` (`--8-bit-output`) rsync prints
/// names as they are except control characters, and a backslash followed by `#` and three
/// digits, which it writes as `\#ooo` (three octal digits; rsync(1), `--8-bit-output`).
pub fn unescape_rsync(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len());
    let mut i = 0;
    while i < name.len() {
        let code = name.get(i..i + 5).and_then(|w| {
            let digits = w.strip_prefix(b"\\#")?;
            digits
                .iter()
                .all(|d| (b'0'..=b'7').contains(d))
                .then(|| digits.iter().fold(0u16, |n, d| n * 8 + u16::from(d - b'0')))
                .and_then(|n| u8::try_from(n).ok())
        });
        match code {
            Some(byte) => {
                out.push(byte);
                i += 5;
            }
            None => {
                out.push(name[i]);
                i += 1;
            }
        }
    }
    out
}

/// Every entry of a release in rsync's `-ii` output (unchanged ones included): its kind
/// (`f` file, `d` folder, `L` symlink) and path; the release's own folder left out.
fn itemized_entries(stdout: &[u8]) -> Vec<(u8, PathBuf)> {
    stdout
        .split(|b| *b == b'\n')
        .filter_map(itemized)
        .filter(|(flags, _)| flags[0] != b'*' && matches!(flags[1], b'f' | b'd' | b'L'))
        .filter_map(|(flags, name)| {
            let name = name.to_string_lossy().into_owned();
            // A symlink is itemized as `name -> target`.
            let name = match flags[1] {
                b'L' => name.split_once(" -> ").map_or(name.as_str(), |(n, _)| n),
                _ => name.as_str(),
            };
            let name = PathBuf::from(name.trim_end_matches('/'));
            (name.as_os_str() != "." && !name.as_os_str().is_empty()).then_some((flags[1], name))
        })
        .collect()
}

/// The release's entries (kind `f`, `d` or `L`, and path, as [`export_entries`] lists them)
/// once the machine has recorded them ([`Shape`]), made once per ship for every target:
/// `None` while the record is made, then the entries, or why there is no record (which
/// stops each target's ship before its flip).
pub type Recorded = tokio::sync::watch::Receiver<Option<Result<Entries, String>>>;

/// A release's entries, shared by the targets' ships.
pub type Entries = std::sync::Arc<Vec<(u8, PathBuf)>>;

/// Waits for the record on `recorded`.
///
/// Errors: the record failed, or was given up.
async fn recorded(recorded: &mut Recorded) -> Result<Entries, DeployError> {
    let fail = |why: &str| DeployError::Target(format!("the release was not recorded: {why}"));
    match recorded.wait_for(Option::is_some).await {
        Ok(value) => match &*value {
            Some(Ok(entries)) => Ok(entries.clone()),
            Some(Err(why)) => Err(fail(why)),
            None => Err(fail("no answer")),
        },
        Err(_) => Err(fail("it stopped")),
    }
}

/// One entry of a release as shipped.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Entry {
    /// A regular file: its sha256 (hex) and whether it is executable.
    File {
        /// sha256 of the content, hex.
        sha256: String,
        /// Any execute bit set.
        executable: bool,
    },
    /// A symlink and its target as written.
    Symlink {
        /// The target.
        target: String,
    },
    /// A folder.
    Dir,
}

/// What one release holds, recorded by the machine that shipped it
/// (`~/.gitsync/deploy/<name>/releases/<commit>.json`): every path rsync wrote or linked,
/// relative to the release. `verify` compares a target with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Shape {
    /// Entries by path.
    pub entries: BTreeMap<String, Entry>,
}

/// What the files of an exported tree hold, for [`Shape::of`].
#[derive(Debug)]
pub enum Files<'a> {
    /// Read by the secret scan's view: stat data (the permission bits among them) and
    /// SHA-256, by tree path.
    Scanned(&'a std::collections::HashMap<String, super::scan::Hashed>),
    /// SHA-256 by tree path, from [`super::export::manifest`]; the permission bits are
    /// read from the tree.
    Hashed(BTreeMap<String, String>),
}

impl Shape {
    /// The shape of the entries `listed` (kind and path, from rsync) as they are in the
    /// exported `tree`; what its files hold comes from `files`.
    ///
    /// Errors: an entry that cannot be read, or a file `files` does not know.
    pub fn of(
        tree: &Path,
        listed: &[(u8, PathBuf)],
        files: &Files<'_>,
    ) -> Result<Shape, DeployError> {
        use std::os::unix::fs::PermissionsExt;
        let mut entries = BTreeMap::new();
        for (kind, rel) in listed {
            let key = rel.to_string_lossy().into_owned();
            let full = tree.join(rel);
            let unknown = || DeployError::Target(format!("{key}: not hashed"));
            let entry = match kind {
                b'f' => match files {
                    Files::Scanned(scanned) => {
                        let file = scanned.get(&key).ok_or_else(unknown)?;
                        Entry::File {
                            sha256: file.sha256.clone(),
                            executable: file.mode & 0o111 != 0,
                        }
                    }
                    Files::Hashed(manifest) => {
                        let meta =
                            std::fs::symlink_metadata(&full).map_err(DeployError::io(&full))?;
                        Entry::File {
                            sha256: manifest.get(&key).cloned().ok_or_else(unknown)?,
                            executable: meta.permissions().mode() & 0o111 != 0,
                        }
                    }
                },
                b'L' => Entry::Symlink {
                    target: std::fs::read_link(&full)
                        .map_err(DeployError::io(&full))?
                        .to_string_lossy()
                        .into_owned(),
                },
                _ => Entry::Dir,
            };
            entries.insert(key, entry);
        }
        Ok(Shape { entries })
    }
}

fn bytes_sent(stdout: &str) -> u64 {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("Total bytes sent: "))
        .map(|n| n.replace([',', '.'], ""))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0)
}

/// What one ship writes to a target.
#[derive(Debug, Clone, Copy)]
pub struct Release<'a> {
    /// The target's release layout (`path/releases`, `path/current`).
    pub path: &'a str,
    /// The exported tree of the commit.
    pub export: &'a Path,
    /// The commit (the release's folder name).
    pub rev: &'a str,
    /// rsync exclude patterns.
    pub excludes: &'a [String],
    /// A git folder shipped as the release's `.git` (`include_git`).
    pub extra: Option<&'a Path>,
}

/// Whether the secret scan let the ship go on: `Some(true)` once it passed, `Some(false)`
/// once it blocked, `None` while it runs. A closed channel counts as blocked.
pub type Gate = tokio::sync::watch::Receiver<Option<bool>>;

/// Waits for the scan's answer on `gate`: true when the ship may go on.
pub async fn passed(gate: &mut Gate) -> bool {
    matches!(
        gate.wait_for(Option::is_some).await.map(|v| *v),
        Ok(Some(true))
    )
}

/// One ship to one target, started while the secret scan still runs: [`prepare`] reads
/// `current`, lays an earlier release down as the new one's start and lists it; meanwhile
/// the release is recorded (`record`, with its entries: kind and path, as rsync lists the
/// export). [`delta::plan`] compares the listing with the export, the partial release
/// loses what the new one does not hold, and rsync is started, waiting for its list of
/// paths (a small change is written by the lock's shell instead: [`inline`]). Once `gate`
/// says the scan passed, only what differs is sent (`rsync --files-from`, or that script)
/// and `current` flips (releases beyond `keep` were pruned by
/// [`prepare`]: never the current one, never the previous one). Without an earlier release
/// or a listing (a new layout, a target whose `cp` cannot link or whose `find` has no
/// `-printf`), rsync walks the whole export after the gate (`--delete`, and `--link-dest`
/// against the live release when nothing was laid down).
/// A failure of `record` ships nothing; it may have recorded a release that a blocked scan
/// then never ships. With `repair`, a target already on the commit gets it again whole
/// (see [`repair`]); without, it is left alone. Runs under the target's `lock`
/// ([`super::target_lock::lock`], which also makes the layout), whose session runs the
/// preparation and the flip.
///
/// Errors: a message for this target ("the secret scan did not pass" when `gate` closed
/// on a block); `current` is untouched by any failure.
pub async fn ship(
    ssh: &Ssh,
    lock: &mut TargetLock,
    release: &Release<'_>,
    keep: usize,
    repair: bool,
    mut recording: Recorded,
    mut gate: Gate,
) -> Result<Shipped, DeployError> {
    let (path, rev) = (release.path, release.rev);
    let started = std::time::Instant::now();
    let prepared = prepare(lock, path, rev, keep).await;
    tracing::debug!(
        ms = started.elapsed().as_millis(),
        listed = prepared.as_ref().is_ok_and(|p| p.listing.is_some()),
        "deploy: target prepared"
    );
    let blocked = || DeployError::Target("the secret scan did not pass".to_string());
    let Prepared {
        previous,
        copied,
        inline,
        listing,
    } = match prepared {
        Ok(found) => found,
        Err(e) => return Err(discard(ssh, path, rev, e).await),
    };
    // Written under a name that is no release (`ls` leaves dot-names out, so neither a
    // rollback nor the pruning sees it) and renamed at the flip: a ship killed halfway
    // leaves no half-written `releases/<rev>` behind.
    let partial = format!(".{rev}.partial");
    let r = quote(rev)?;
    let p = quote(path.trim_end_matches('/'))?;
    let prev = quote(previous.as_deref().unwrap_or(""))?;
    let flip = format!(
        "set -e; cd {p}; R={r}; PREV={prev}; \
         rm -rf \"releases/$R\"; mv \"releases/.$R.partial\" \"releases/$R\"; \
         for d in releases/.*.partial; do if [ -e \"$d\" ]; then rm -rf \"$d\"; fi; done; \
         touch \"releases/$R\"; \
         ln -sfn \"releases/$R\" current.tmp.$$; mv -T current.tmp.$$ current; \
         if [ -n \"$PREV\" ]; then printf '%s\\n' \"$PREV\" > .gitsync-previous.tmp; mv .gitsync-previous.tmp .gitsync-previous; fi"
    );
    // Unless a small change may go through the lock's session ([`inline`]), rsync is
    // started now, while the record is made and compared: its session, the rsync on the
    // target and their handshake are done by the time it has its list.
    let delta = copied && listing.is_some() && previous.as_deref() != Some(rev);
    let inline = inline && release.extra.is_none();
    let mut rsync = match delta && !inline {
        true => match start_send(ssh, release, &partial) {
            Ok(rsync) => Some(rsync),
            Err(e) => return Err(discard(ssh, path, rev, e).await),
        },
        false => None,
    };
    let entries = match recorded(&mut recording).await {
        Ok(entries) => entries,
        Err(e) => return Err(discard(ssh, path, rev, e).await),
    };
    let plan = match listing.filter(|_| delta) {
        Some(listing) => match prepare_delta(ssh, release, &partial, &entries, listing).await {
            Ok(plan) => Some(plan),
            Err(e) => return Err(discard(ssh, path, rev, e).await),
        },
        None => None,
    };
    // How the plan's paths go: written by the lock's shell, or by rsync.
    let sender = match plan {
        None => None,
        Some(plan) => {
            let written = match rsync.is_none() {
                true => inline::script(
                    release.export,
                    &plan.send,
                    crate::util::words::short_id(rev),
                ),
                false => Ok(None),
            };
            match (written, rsync.take()) {
                (Err(e), _) => return Err(discard(ssh, path, rev, e).await),
                (Ok(Some(script)), _) => Some(Sender::Inline(script)),
                (Ok(None), Some(rsync)) => Some(Sender::Rsync(plan, Box::new(rsync))),
                (Ok(None), None) => match start_send(ssh, release, &partial) {
                    Ok(rsync) => Some(Sender::Rsync(plan, Box::new(rsync))),
                    Err(e) => return Err(discard(ssh, path, rev, e).await),
                },
            }
        }
    };
    let prepare_took = started.elapsed();
    if !passed(&mut gate).await {
        return Err(match copied {
            true => discard(ssh, path, rev, blocked()).await,
            false => blocked(),
        });
    }
    if previous.as_deref() == Some(rev) {
        if !repair {
            return Ok(Shipped::AlreadyThere);
        }
        return self::repair(ssh, release, &entries).await;
    }
    let started = std::time::Instant::now();
    let sent = match sender {
        Some(Sender::Rsync(plan, rsync)) => send(*rsync, ssh, release, &partial, &plan.send).await,
        Some(Sender::Inline((script, size))) => {
            let into = quote(&format!(
                "{}/releases/{partial}",
                path.trim_end_matches('/')
            ))?;
            lock.run(&format!("set -e; cd {into}\n{script}"), STEP_TIMEOUT)
                .await
                .map(|_| size)
                .map_err(remote_err("send"))
        }
        // Into a hard-linked copy rsync only replaces what changed, each file by a rename
        // of a new one (never a write into the shared inode). Without a copy (a new
        // layout, or a target whose `cp` cannot link), `--link-dest` links the unchanged
        // files.
        None => {
            let link_dest = if copied { None } else { previous.as_deref() };
            transfer(ssh, release, &partial, link_dest)
                .await
                .map(|(_, sent)| sent)
        }
    };
    let sent = match sent {
        Ok(done) => done,
        Err(e) => return Err(discard(ssh, path, rev, e).await),
    };
    let transferred = started.elapsed();
    let files = entries.iter().filter(|(k, _)| *k == b'f').count();
    let started = std::time::Instant::now();
    let flipped = lock.run(&flip, STEP_TIMEOUT).await;
    if let Err(e) = flipped {
        // A failure before the flip leaves `current` as it was, and the release is removed.
        return Err(discard(ssh, path, rev, remote_err("flip")(e)).await);
    }
    Ok(Shipped::Flipped {
        previous,
        bytes_sent: sent,
        files,
        prepare: prepare_took,
        transfer: transferred,
        flip: started.elapsed(),
    })
}

/// Before the scan's answer: the plan that turns the copy `listing` describes into the
/// export (whose entries are `entries`), with the copy's removals done (they only drop
/// names the target had).
///
/// Errors: the export cannot be read, or the removal fails.
async fn prepare_delta(
    ssh: &Ssh,
    release: &Release<'_>,
    partial: &str,
    entries: &[(u8, PathBuf)],
    listing: std::collections::HashMap<Vec<u8>, delta::Remote>,
) -> Result<delta::Plan, DeployError> {
    let export = release.export.to_path_buf();
    let keep_git = release.extra.is_some();
    let entries = entries.to_vec();
    let plan =
        tokio::task::spawn_blocking(move || delta::plan(&export, &entries, &listing, keep_git))
            .await
            .map_err(|e| DeployError::Target(format!("the comparison stopped: {e}")))??;
    tracing::debug!(
        send = plan.send.len(),
        remove = plan.remove.len(),
        "deploy: compared with the copy"
    );
    if !plan.remove.is_empty() {
        let dir = quote(&format!(
            "{}/releases/{partial}",
            release.path.trim_end_matches('/')
        ))?;
        let script = format!("cd {dir} && xargs -0 rm -rf --");
        ssh.run(&script, Some(&delta::nul_list(&plan.remove)), STEP_TIMEOUT)
            .await
            .map_err(remote_err("prepare"))?;
    }
    Ok(plan)
}

/// Ships the commit `current` already names again, whole: rsync writes
/// `releases/<rev>.repair/` from scratch (no `--link-dest`: a tampered file of the same
/// size and time must not be linked back), `current` flips to it, the old release is
/// replaced by a hard-linked copy of the repaired one, and `current` flips back to its
/// usual name. Every step leaves `current` on a whole tree. `entries`: the release's, as
/// recorded.
///
/// Errors: a message for this target; `current` still names a whole tree.
pub async fn repair(
    ssh: &Ssh,
    release: &Release<'_>,
    entries: &[(u8, PathBuf)],
) -> Result<Shipped, DeployError> {
    let (path, rev) = (release.path, release.rev);
    let scratch = format!("{rev}.repair");
    let r = quote(rev)?;
    let p = quote(path.trim_end_matches('/'))?;
    let clear = format!("cd {p} && R={r} && rm -rf \"releases/$R.repair\"");
    ssh.run(&clear, None, STEP_TIMEOUT)
        .await
        .map_err(remote_err("repair"))?;
    let started = std::time::Instant::now();
    let (_, sent) = transfer(ssh, release, &scratch, None).await?;
    let transferred = started.elapsed();
    let started = std::time::Instant::now();
    let script = format!(
        "set -e; cd {p}; R={r}; \
         ln -sfn \"releases/$R.repair\" current.tmp.$$; mv -T current.tmp.$$ current; \
         rm -rf \"releases/$R\"; cp -al \"releases/$R.repair\" \"releases/$R\"; \
         ln -sfn \"releases/$R\" current.tmp.$$; mv -T current.tmp.$$ current; \
         rm -rf \"releases/$R.repair\""
    );
    ssh.run(&script, None, STEP_TIMEOUT)
        .await
        .map_err(remote_err("repair"))?;
    Ok(Shipped::Flipped {
        previous: Some(rev.to_string()),
        bytes_sent: sent,
        files: entries.iter().filter(|(k, _)| *k == b'f').count(),
        prepare: Duration::ZERO,
        transfer: transferred,
        flip: started.elapsed(),
    })
}

/// How a ship's planned paths reach the target ([`ship`]).
enum Sender {
    /// By the rsync started for them ([`start_send`]).
    Rsync(delta::Plan, Box<Held>),
    /// Written by the shell holding the lock ([`inline::script`]: the script and its size
    /// in bytes).
    Inline((String, u64)),
}

/// What [`prepare`] found and did on a target.
#[derive(Debug)]
pub struct Prepared {
    /// The release `current` names (`None` for a new layout).
    pub previous: Option<String>,
    /// Whether `releases/.<rev>.partial/` holds an earlier release to turn into the new
    /// one.
    pub copied: bool,
    /// Whether the target can take small changes through the lock's session
    /// ([`inline::PROBE`]).
    pub inline: bool,
    /// The copy's entries ([`delta::LISTING`]), when the target could list them.
    pub listing: Option<std::collections::HashMap<Vec<u8>, delta::Remote>>,
}

/// Where `current` points (`None` for a new layout) and, when that is a release other
/// than `rev`, whether `releases/.<rev>.partial/` was laid down as an earlier release for
/// the transfer to turn into the new one, with its listing ([`delta::LISTING`], GNU
/// `find`). A stale partial of an earlier ship is removed first. Releases beyond the newest
/// `keep - 1` (by modification time, which the flip sets) go, to make room for the new one:
/// never the current one, never the one `.gitsync-previous` names. The newest of them is
/// not removed but renamed into the partial (one `rename(2)`); without one, the partial is
/// a hard-linked copy of the current release (`cp -al`, GNU coreutils and BusyBox: one
/// `link(2)` per file, and removing 20,000 files takes as long). Either way the transfer
/// then sends only what differs and replaces each changed file by a rename of a new one,
/// never writing into an inode that other releases share.
///
/// Errors: the target is unreachable.
pub async fn prepare(
    lock: &mut TargetLock,
    path: &str,
    rev: &str,
    keep: usize,
) -> Result<Prepared, DeployError> {
    let p = quote(path.trim_end_matches('/'))?;
    let r = quote(rev)?;
    let listing = delta::LISTING;
    let script = format!(
        "P={p}; R={r}; C=; if [ -L \"$P/current\" ]; then C=$(readlink \"$P/current\"); fi; \
         printf '%s\\n' \"$C\"; B=${{C#releases/}}; B=${{B%/}}; \
         case \"$C\" in releases/?*) ;; *) exit 0;; esac; \
         if [ \"$B\" = \"$R\" ] || [ ! -d \"$P/releases/$B\" ]; then exit 0; fi; \
         PREV=$(cat \"$P/.gitsync-previous\" 2>/dev/null || true); \
         S=; n=0; for d in $(ls -1t \"$P/releases\"); do \
           case \"$d\" in *[!0-9a-f]*) continue;; esac; \
           n=$((n+1)); \
           if [ \"$n\" -ge {keep} ] && [ \"$d\" != \"$B\" ] && [ \"$d\" != \"$PREV\" ] && [ \"$d\" != \"$R\" ]; then \
             if [ -z \"$S\" ]; then S=$d; else rm -rf \"$P/releases/$d\"; fi; fi; \
         done; \
         rm -rf \"$P/releases/.$R.partial\"; \
         if [ -n \"$S\" ] && mv \"$P/releases/$S\" \"$P/releases/.$R.partial\"; then echo copied; \
         elif cp -al \"$P/releases/$B\" \"$P/releases/.$R.partial\" 2>/dev/null; then echo copied; \
         else rm -rf \"$P/releases/.$R.partial\"; exit 0; fi; \
         {probe}; \
         {{ cd \"$P/releases/.$R.partial\" && {listing}; }} 2>/dev/null || true",
        probe = inline::PROBE,
    );
    let out = lock
        .run_bytes(&script, STEP_TIMEOUT)
        .await
        .map_err(remote_err("prepare"))?;
    let (first, rest) = match out.iter().position(|b| *b == b'\n') {
        Some(at) => (&out[..at], &out[at + 1..]),
        None => (out.as_slice(), &[][..]),
    };
    let previous = release_of(&String::from_utf8_lossy(first));
    let listed = rest.strip_prefix(b"copied\n");
    let (inline, listed) = match listed.map(|l| l.strip_prefix(b"inline\n")) {
        Some(Some(after)) => (true, Some(after)),
        _ => (false, listed),
    };
    Ok(Prepared {
        previous,
        copied: listed.is_some(),
        inline,
        listing: listed.and_then(delta::parse_listing),
    })
}

/// Every entry of the release the export at `export` makes (kind `f`, `d` or `L`, and
/// path), as rsync lists it with `excludes` (rsync's own dry run into a folder that does
/// not exist: nothing is written). A `.git` at the top is never among them (it is shipped
/// on its own, if at all).
///
/// Errors: rsync cannot run or fails.
pub async fn export_entries(
    export: &Path,
    excludes: &[String],
) -> Result<Vec<(u8, PathBuf)>, DeployError> {
    let mut command = Child::new("rsync", RSYNC_TIMEOUT);
    command
        .args(["-a", "-n", "-ii", "-8"])
        .args(exclusions(excludes));
    let nowhere = std::env::temp_dir().join(format!(
        ".gitsync-nothing-{}-{}",
        std::process::id(),
        NOWHERE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    command
        .arg(format!("{}/", export.display()))
        .arg(format!("{}/", nowhere.display()));
    let output = command.output().await.map_err(rsync_error)?;
    rsync_status("rsync's listing of the export:", &output)?;
    Ok(itemized_entries(&output.stdout))
}

/// Tells the folders [`export_entries`] names apart.
static NOWHERE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Before the scan's answer: rsync from the export into `releases/<into>/`, started (its
/// ssh session, the rsync on the target, their handshake) but waiting for the list of
/// paths to send on its standard input (`--files-from=- --from0`), so nothing of the
/// export has crossed yet. [`send`] gives it the list.
///
/// Errors: an ssh option that cannot be quoted, or rsync cannot start.
fn start_send(ssh: &Ssh, what: &Release<'_>, into: &str) -> Result<Held, DeployError> {
    let release = format!("{}/releases/{into}/", what.path.trim_end_matches('/'));
    let mut command = rsync_command(ssh, what.excludes)?;
    command
        .args(["--stats", "-8", "--files-from=-", "--from0"])
        .arg(format!("{}/", what.export.display()))
        .arg(format!("{}:{release}", ssh.host));
    command.hold().map_err(rsync_error)
}

/// After the scan passed: the rsync of [`start_send`] sends `paths` (relative to the
/// export, see [`delta::Plan`]) into `releases/<into>/`, and the git folder (`extra`)
/// goes as its `.git`. Returns the bytes sent.
///
/// Errors: rsync exits non-zero (its code and the cause it printed).
async fn send(
    rsync: Held,
    ssh: &Ssh,
    what: &Release<'_>,
    into: &str,
    paths: &[PathBuf],
) -> Result<u64, DeployError> {
    let release = format!("{}/releases/{into}/", what.path.trim_end_matches('/'));
    let output = rsync
        .finish(delta::nul_list(paths))
        .await
        .map_err(rsync_error)?;
    rsync_status("rsync", &output)?;
    let mut sent = bytes_sent(&String::from_utf8_lossy(&output.stdout));
    if let Some(git_dir) = what.extra {
        sent += send_git(ssh, git_dir, &release).await?;
    }
    Ok(sent)
}

/// rsync of the export (and of `extra`, the git folder) into `releases/<into>/`, with
/// `--link-dest` against `link_dest` when given. Files the excludes name are deleted from
/// the release (`--delete-excluded`: a copy of an older release may hold them), but its
/// `.git` only when no git folder is shipped. Returns the release's entries (kind and
/// path) and the bytes sent.
///
/// Errors: rsync cannot run or exits non-zero (its code and the cause it printed).
async fn transfer(
    ssh: &Ssh,
    what: &Release<'_>,
    into: &str,
    link_dest: Option<&str>,
) -> Result<(Vec<(u8, PathBuf)>, u64), DeployError> {
    let Release {
        path,
        export,
        excludes,
        extra,
        ..
    } = *what;
    let release = format!("{}/releases/{into}/", path.trim_end_matches('/'));
    let mut command = rsync_command(ssh, excludes)?;
    command.args([
        "--delete",
        "--mkpath",
        "--stats",
        "-ii",
        "-8",
        "--delete-excluded",
    ]);
    if extra.is_some() {
        // Filter rules apply in order: this one goes before `--exclude=/.git`.
        command.arg("--filter=protect /.git");
    }
    if let Some(prev) = link_dest {
        command.arg(format!("--link-dest=../{prev}"));
    }
    command
        .arg(format!("{}/", export.display()))
        .arg(format!("{}:{release}", ssh.host));
    let output = command.output().await.map_err(rsync_error)?;
    rsync_status("rsync", &output)?;
    let entries = itemized_entries(&output.stdout);
    let mut sent = bytes_sent(&String::from_utf8_lossy(&output.stdout));
    if let Some(git_dir) = extra {
        sent += send_git(ssh, git_dir, &release).await?;
    }
    Ok((entries, sent))
}

/// include_git: the repository's git folder `git_dir` as `.git` of the release folder
/// `release` (`path/releases/<name>/`). Returns the bytes sent.
///
/// Errors: rsync cannot run or exits non-zero.
async fn send_git(ssh: &Ssh, git_dir: &Path, release: &str) -> Result<u64, DeployError> {
    let mut command = Child::new("rsync", RSYNC_TIMEOUT);
    command
        .args(["-a", "--delete", "--mkpath", "--stats"])
        .arg("-e")
        .arg(ssh.rsync_shell()?)
        .arg(format!("{}/", git_dir.display()))
        .arg(format!("{}:{release}.git/", ssh.host));
    let out = command
        .output()
        .await
        .map_err(|e| DeployError::Target(format!("rsync of .git: {}", rsync_error(e))))?;
    rsync_status("rsync of .git:", &out)?;
    Ok(bytes_sent(&String::from_utf8_lossy(&out.stdout)))
}

/// The line of rsync's standard error that says why it failed: its first `rsync: ...`
/// message (the cause, such as "write failed on ...: No space left on device (28)"; the
/// lines after it are consequences such as a broken pipe), else the last line.
pub fn rsync_cause(stderr: &str) -> &str {
    let mut lines = stderr.lines().map(str::trim).filter(|l| !l.is_empty());
    lines
        .clone()
        .find(|l| l.starts_with("rsync: "))
        .or_else(|| lines.next_back())
        .unwrap_or("no message")
}

/// After a failed ship: removes the half-written `releases/.<rev>.partial/`, so a full disk
/// gets its space back (`releases/<rev>` itself is only ever a whole release). Returns
/// `error` with what became of `current`, or why the clean-up failed.
async fn discard(ssh: &Ssh, path: &str, rev: &str, error: DeployError) -> DeployError {
    let script = match (quote(path.trim_end_matches('/')), quote(rev)) {
        (Ok(p), Ok(r)) => format!(
            "cd {p} || exit 0; R={r}; C=$(readlink current 2>/dev/null | sed 's|^releases/||'); \
             rm -rf \"releases/.$R.partial\"; \
             if [ \"$R\" = \"$C\" ]; then echo current; fi"
        ),
        _ => return error,
    };
    DeployError::Target(match ssh.run(&script, None, STEP_TIMEOUT).await {
        Ok(out) if out.trim() == "current" => {
            format!("{error}; current already names the new release")
        }
        Ok(_) => format!("{error}; the current release is untouched"),
        Err((_, msg)) => format!(
            "{error}; the current release is untouched, but the partial releases/.{rev}.partial could not be removed: {msg}"
        ),
    })
}

/// What `verify` found on one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `current` is the wanted commit and holds exactly what was shipped.
    InSync,
    /// `current` is another commit (or none).
    Behind {
        /// What the target has.
        has: Option<String>,
    },
    /// `current` is the wanted commit, but differs from what was shipped.
    Tampered {
        /// The commit it has.
        rev: String,
        /// Each difference: a path and what is wrong with it.
        files: Vec<String>,
    },
}

/// Reads where `current` points and lists everything under it over ssh (type, mode and
/// symlink target of each entry, sha256 of each file: `find -printf`, `sha256sum`), and
/// compares that with `want` and with `shape`, the record of what was shipped as `want`.
/// A file changed, added or missing, a symlink added or retargeted, a type changed (a FIFO,
/// a device), a set-user-id, set-group-id or sticky bit, an execute bit that differs, or
/// anything written to others is a difference. With `include_git`, the release's `.git`
/// is not compared.
///
/// Errors: the target is unreachable.
pub async fn verify(
    ssh: &Ssh,
    path: &str,
    want: &str,
    shape: &Shape,
    include_git: bool,
) -> Result<Check, DeployError> {
    let p = quote(path.trim_end_matches('/'))?;
    let script = format!(
        "set -e; cd {p}; if [ ! -L current ]; then echo NONE; exit 0; fi; \
         readlink current; echo '--entries--'; cd current; \
         find . -mindepth 1 -printf '%y %m %P\\0%l\\0'; echo; echo '--sums--'; \
         find . -type f -print0 | xargs -0 -r sha256sum"
    );
    let out = ssh
        .run(&script, None, STEP_TIMEOUT)
        .await
        .map_err(remote_err("verify"))?;
    if out.trim() == "NONE" {
        return Ok(Check::Behind { has: None });
    }
    let (head, rest) = out.split_once("--entries--\n").unwrap_or((&out, ""));
    let (listing, sums) = rest.split_once("\n--sums--\n").unwrap_or((rest, ""));
    let linked = head
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .trim_start_matches("releases/")
        .trim_end_matches('/')
        .to_string();
    if linked != want {
        return Ok(Check::Behind { has: Some(linked) });
    }
    let sums = super::export::parse_manifest(sums);
    let skip = |p: &str| include_git && (p == ".git" || p.starts_with(".git/"));
    let mut differ = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut fields = listing.split('\0');
    while let (Some(head), Some(target)) = (fields.next(), fields.next()) {
        let mut parts = head.splitn(3, ' ');
        let (Some(kind), Some(mode), Some(rel)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if skip(rel) {
            continue;
        }
        seen.insert(rel.to_string());
        let mode = u32::from_str_radix(mode, 8).unwrap_or(0);
        if mode & 0o7000 != 0 {
            differ.push(format!("{rel} (mode {mode:o})"));
        }
        if mode & 0o002 != 0 && kind != "l" {
            differ.push(format!("{rel} (writable by anyone)"));
        }
        match (kind, shape.entries.get(rel)) {
            (_, None) => differ.push(format!("{rel} (not shipped)")),
            ("f", Some(Entry::File { sha256, executable })) => {
                if sums.get(rel) != Some(sha256) {
                    differ.push(format!("{rel} (changed)"));
                }
                if (mode & 0o111 != 0) != *executable {
                    differ.push(format!("{rel} (mode {mode:o})"));
                }
            }
            ("l", Some(Entry::Symlink { target: shipped })) => {
                if target != shipped {
                    differ.push(format!("{rel} (symlink retargeted)"));
                }
            }
            ("d", Some(Entry::Dir)) => {}
            (kind, Some(_)) => differ.push(format!(
                "{rel} (now a {})",
                match kind {
                    "f" => "file",
                    "d" => "folder",
                    "l" => "symlink",
                    "p" => "FIFO",
                    "s" => "socket",
                    _ => "device",
                }
            )),
        }
    }
    differ.extend(
        shape
            .entries
            .keys()
            .filter(|p| !seen.contains(*p) && !skip(p))
            .map(|p| format!("{p} (missing)")),
    );
    differ.sort();
    differ.dedup();
    Ok(if differ.is_empty() {
        Check::InSync
    } else {
        Check::Tampered {
            rev: want.to_string(),
            files: differ,
        }
    })
}

/// Flips `current` back one release: to the newest release older than the current one,
/// in the order they were shipped (each flip touches its release folder, a rollback does
/// not), so rolling back again walks further back (N, N-1, N-2, ...) instead of flipping to
/// the release just left. `.gitsync-previous` then names the one rolled back from.
/// Returns (from, to).
///
/// Runs under the target's lock ([`super::target_lock::lock`]).
///
/// Errors: no older release on the target (kept: `keep`), or the target is unreachable.
pub async fn rollback(ssh: &Ssh, path: &str) -> Result<(String, String), DeployError> {
    let p = quote(path.trim_end_matches('/'))?;
    let script = format!(
        "set -e; cd {p}; FROM=$(readlink current 2>/dev/null | sed 's|^releases/||'); \
         [ -n \"$FROM\" ] || {{ echo 'no current release' >&2; exit 5; }}; \
         TO=$(ls -1t releases | grep -E '^[0-9a-f]+$' | sed -n \"/^$FROM\\$/,\\$p\" | sed -n 2p); \
         [ -n \"$TO\" ] || {{ echo \"no release older than $FROM is kept on the target: ship an older commit with gitsync deploy --rev\" >&2; exit 5; }}; \
         ln -sfn \"releases/$TO\" current.tmp.$$; mv -T current.tmp.$$ current; \
         printf '%s\\n' \"$FROM\" > .gitsync-previous.tmp; mv .gitsync-previous.tmp .gitsync-previous; \
         echo \"$FROM $TO\""
    );
    let out = ssh
        .run(&script, None, STEP_TIMEOUT)
        .await
        .map_err(remote_err("rollback"))?;
    let mut parts = out.split_whitespace();
    Ok((
        parts.next().unwrap_or_default().to_string(),
        parts.next().unwrap_or_default().to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsync_output_gives_files_and_bytes() {
        let out = ">f+++++++++ a.txt\nhf          sub/b.txt\ncd+++++++++ sub/\n*deleting   old.txt\n.f          same file.txt\n>f+++++++++ new\\#012line \\#134#1 caf\u{e9}\\x.txt\n\nTotal bytes sent: 1,234\n";
        let files: Vec<PathBuf> = itemized_entries(out.as_bytes())
            .into_iter()
            .filter(|(kind, _)| *kind == b'f')
            .map(|(_, name)| name)
            .collect();
        assert_eq!(
            files,
            [
                "a.txt",
                "sub/b.txt",
                "same file.txt",
                "new\nline \\#1 caf\u{e9}\\x.txt"
            ]
            .map(std::path::PathBuf::from)
        );
        assert_eq!(bytes_sent(out), 1234);
    }

    #[test]
    fn the_cause_of_an_rsync_failure_is_its_first_message() {
        let stderr = "rsync: [receiver] write failed on \"/srv/releases/a/.big.bin.x\": No space left on device (28)\nrsync error: error in file IO (code 11) at receiver.c(380) [receiver=3.2.7]\nrsync: [sender] write error: Broken pipe (32)\n";
        assert!(rsync_cause(stderr).ends_with("No space left on device (28)"));
        assert_eq!(
            rsync_cause("ssh: connect refused\n\n"),
            "ssh: connect refused"
        );
        assert_eq!(rsync_cause(""), "no message");
    }
}
