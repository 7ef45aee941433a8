//! Whether the files a fast-forward replaces or deletes still hold exactly what the old
//! commit has, decided by their content, never by index flags: an `--assume-unchanged`,
//! `--skip-worktree` or fsmonitor-valid entry hides edits from `git status`, so a flag may
//! never be what calls a path clean.
//!
//! A file whose metadata is exactly what the index recorded for the old commit's blob (git's
//! own stat test, `ie_match_stat`, with every field and no flag that hides edits) is not
//! read, as git would not read it (unless it was written within [`racy_window`]). Any
//! other file's bytes (a symlink's target) are hashed as a git blob in-process (the object
//! format of gitformat-loose(5): `blob <size>\0<bytes>`); only a file whose raw hash differs
//! is handed to `git hash-object --stdin-paths`, which applies the clean filters and
//! end-of-line conversion that the path's attributes name (LFS, `text=auto`), as git's own
//! `ce_compare_data` does. This module reads, never writes.

use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::FfError;
use super::journal::Sig;
use super::{Change, Folders, GITLINK, Refused};

const SYMLINK: u32 = 0o120000;

/// The verdict on the paths a fast-forward moves out.
pub(super) enum Verdict {
    /// Every path holds the old commit's content; each one's signature when it was read and
    /// the blob id of its raw bytes (for a later look whether it changed), in the order given.
    Clean(Vec<(Sig, String)>),
    /// These paths hold something else (the user's work): nothing may move.
    Changed(Vec<PathBuf>),
}

/// The blob id (hex) of `bytes`.
pub(super) fn blob_id(bytes: &[u8]) -> String {
    gix::objs::compute_hash(gix::hash::Kind::Sha1, gix::objs::Kind::Blob, bytes)
        .map(|id| id.to_string())
        .unwrap_or_default()
}

/// What is at `path` as git would store it without filters: a file's bytes, a symlink's
/// target, with its kind and executable bit (in `meta`, read just before) checked against
/// `mode`. `None` when the kind or mode differs or the path is gone.
fn raw_content(
    path: &Path,
    meta: &std::fs::Metadata,
    mode: u32,
    trust_mode: bool,
) -> Option<Vec<u8>> {
    if mode == SYMLINK {
        if !meta.file_type().is_symlink() {
            return None;
        }
        return Some(
            std::fs::read_link(path)
                .ok()?
                .into_os_string()
                .into_encoded_bytes(),
        );
    }
    if !meta.file_type().is_file() {
        return None;
    }
    let executable = meta.permissions().mode() & 0o111 != 0;
    if trust_mode && executable != (mode == 0o100755) {
        return None;
    }
    // Read to the end with the size known: no `fstat` or `lseek` as `read_to_end` on a
    // file would make, one per file of a large push.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .ok()?;
    let mut bytes = vec![0u8; meta.len() as usize + 1];
    let mut len = 0;
    loop {
        if len == bytes.len() {
            bytes.resize(len * 2 + 1, 0);
        }
        match file.read(&mut bytes[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return None,
        }
    }
    bytes.truncate(len);
    Some(bytes)
}

/// How recently (nanoseconds) a file modified at `mtime` (nanoseconds since the epoch) may
/// have been modified for a same-size rewrite to keep its size and modification time: one
/// tick of the kernel's coarse clock (a jiffy, at most 10 ms), twice that for margin; two
/// seconds on a file system that keeps whole seconds only (no nanoseconds: ext3, FAT, some
/// network file systems). Such a file is read, never judged by its metadata alone.
pub(super) fn racy_window(mtime: i128) -> i128 {
    if mtime % 1_000_000_000 == 0 {
        2_000_000_000
    } else {
        20_000_000
    }
}

/// Now, in nanoseconds since the epoch.
pub(super) fn now_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0)
}

/// Whether the file whose metadata is `meta` is, by git's own stat test, what `index`
/// recorded for `change`'s path when that entry holds the old commit's blob: no flag that
/// hides edits (`--assume-unchanged`, `--skip-worktree`, fsmonitor-valid, intent-to-add),
/// the same kind and executable bit as the old mode, and the same size, inode, owner and
/// modification and change times to the nanosecond, with the modification older than the
/// index itself (a racily clean entry is read). Anything else is read and hashed.
fn unchanged_by_stat(
    index: &gix::index::File,
    change: &Change,
    meta: &std::fs::Metadata,
    trust_mode: bool,
    checked_at: i128,
) -> bool {
    use gix::index::entry::{Flags, Stage, Stat, stat};
    use std::os::unix::fs::MetadataExt;
    let path = change.path.as_os_str().as_bytes();
    let Some(entry) = index.entry_by_path_and_stage(path.into(), Stage::Unconflicted) else {
        return false;
    };
    let hiding =
        Flags::ASSUME_VALID | Flags::SKIP_WORKTREE | Flags::FSMONITOR_VALID | Flags::INTENT_TO_ADD;
    if entry.flags.intersects(hiding) || super::tree::oid(&change.old_id).ok() != Some(entry.id) {
        return false;
    }
    let kind_ok = if change.old_mode == SYMLINK {
        meta.file_type().is_symlink()
    } else {
        meta.file_type().is_file()
            && (!trust_mode || (meta.mode() & 0o111 != 0) == (change.old_mode == 0o100755))
    };
    let now = Stat {
        mtime: stat::Time {
            secs: meta.mtime() as u32,
            nsecs: meta.mtime_nsec() as u32,
        },
        ctime: stat::Time {
            secs: meta.ctime() as u32,
            nsecs: meta.ctime_nsec() as u32,
        },
        dev: meta.dev() as u32,
        ino: meta.ino() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        size: meta.size() as u32,
    };
    let strict = stat::Options {
        trust_ctime: true,
        check_stat: true,
        use_nsec: true,
        use_stdev: false,
    };
    // A file written in the last moments is read, so that the late look for writes made
    // after this check (see `apply`) has its bytes' hash to compare with.
    let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    let recent = mtime + racy_window(mtime) >= checked_at;
    kind_ok
        && !recent
        && meta.size() <= u64::from(u32::MAX)
        && entry.stat.matches(&now, strict)
        && entry.stat.mtime == now.mtime
        && entry.stat.ctime == now.ctime
        && !entry.stat.is_racy(index.timestamp(), strict)
}

/// Checks every change that moves a file out (`outs`, whose old ids and modes come from
/// `git diff-tree`) against the worktree of `folders`. `trust_mode` is `core.fileMode`: when
/// false, the executable bit on disk means nothing, as in git. `index` is the index as read
/// before the check, `checked_at` when the check began (nanoseconds since the epoch).
///
/// Errors: [`super::BEING_EDITED`] (passing) when a file changed while it was being read.
pub(super) fn check(
    folders: &Folders,
    outs: &[&Change],
    trust_mode: bool,
    index: &gix::index::File,
    checked_at: i128,
) -> Result<Verdict, Refused> {
    let mut sigs = Vec::with_capacity(outs.len());
    let mut changed = Vec::new();
    let mut filtered: Vec<(usize, &Change)> = Vec::new();
    for (i, change) in outs.iter().enumerate() {
        debug_assert!(change.old_mode != GITLINK);
        let path = folders.worktree.join(&change.path);
        let meta = path.symlink_metadata().ok();
        let before = meta.as_ref().map(Sig::from_meta);
        if let Some(meta) = &meta
            && unchanged_by_stat(index, change, meta, trust_mode, checked_at)
        {
            // git's own test (`ie_match_stat`): the file is exactly as the index last saw
            // it, and the index records the old commit's blob with no flag hiding anything.
            sigs.push((Sig::from_meta(meta), change.old_id.clone()));
            continue;
        }
        let content = meta
            .as_ref()
            .and_then(|meta| raw_content(&path, meta, change.old_mode, trust_mode));
        let after = Sig::of(&path);
        if before != after {
            return Err(Refused::being_edited());
        }
        let sig = after.unwrap_or(Sig {
            ino: 0,
            size: 0,
            mtime: 0,
            kind: 0,
        });
        let raw_id = content.as_deref().map(blob_id).unwrap_or_default();
        match content {
            None => changed.push(change.path.clone()),
            Some(_) if raw_id == change.old_id => {}
            Some(_) if change.old_mode != SYMLINK => filtered.push((i, change)),
            Some(_) => changed.push(change.path.clone()),
        }
        sigs.push((sig, raw_id));
    }
    if !filtered.is_empty() {
        let ids = hash_with_filters(folders, &filtered)?;
        for ((i, change), id) in filtered.iter().zip(ids) {
            if id.as_deref() != Some(change.old_id.as_str())
                || Sig::of(&folders.worktree.join(&change.path)) != Some(sigs[*i].0)
            {
                changed.push(change.path.clone());
            }
        }
    }
    if changed.is_empty() {
        Ok(Verdict::Clean(sigs))
    } else {
        changed.sort();
        Ok(Verdict::Changed(changed))
    }
}

/// `git hash-object --stdin-paths` over `changes`: each path's id with its attributes'
/// filters applied, or `None` for a path git cannot take one per line (a newline in it).
fn hash_with_filters(
    folders: &Folders,
    changes: &[(usize, &Change)],
) -> Result<Vec<Option<String>>, FfError> {
    let mut input = Vec::new();
    let mut asked = Vec::new();
    for (_, c) in changes {
        let bytes = c.path.as_os_str().as_bytes();
        let ok = !bytes.contains(&b'\n');
        asked.push(ok);
        if ok {
            input.extend_from_slice(bytes);
            input.push(b'\n');
        }
    }
    let out = super::git_input(
        folders,
        &["hash-object", "--stdin-paths"],
        None,
        Some(&input),
    )?;
    let text = String::from_utf8_lossy(&out);
    let mut ids = text.lines().map(|l| l.trim().to_string());
    Ok(asked
        .into_iter()
        .map(|ok| if ok { ids.next() } else { None })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_ids_are_gits() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            blob_id(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        // The empty blob.
        assert_eq!(blob_id(b""), "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391");
    }
}
