//! Writing the new commit's files into the staging folder, as `git checkout-index` would:
//! in-process when no attribute or setting can change a file's bytes on the way out (no
//! filter, no end-of-line conversion, no `ident`, no working-tree encoding), and through
//! `git checkout-index` itself otherwise, so that every filter and conversion stays git's.
//!
//! A file is created with mode 0666, or 0777 when executable, less the umask, and a symlink
//! as a symlink: what `entry.c`'s `write_entry` does.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use gix::bstr::ByteSlice;

use super::FfError;
use super::journal::Sig;
use super::tree::oid;
use super::{Change, Folders};

/// Whether git would write every file of `ins` exactly as its blob holds it in the
/// repository of `folders`: no attributes file anywhere git reads one (gitattributes(5):
/// `.gitattributes` in the index or the push, `info/attributes`, `core.attributesFile` or
/// its default, the system file), no `core.autocrlf`, and symlinks supported.
pub(super) fn is_plain(
    repo: &gix::Repository,
    folders: &Folders,
    index: &gix::index::File,
    changes: &[Change],
) -> bool {
    let config = repo.config_snapshot();
    let autocrlf = config
        .string("core.autocrlf")
        .is_some_and(|v| !v.eq_ignore_ascii_case(b"false"));
    if autocrlf
        || config.boolean("core.symlinks") == Some(false)
        || config.string("core.attributesFile").is_some()
    {
        return false;
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let global = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .or_else(|| home.map(|h| h.join(".config")))
        .map(|c| c.join("git/attributes"));
    let system = std::env::var_os("GIT_ATTR_NOSYSTEM")
        .is_none()
        .then(|| {
            [
                PathBuf::from("/etc/gitattributes"),
                PathBuf::from("/usr/local/etc/gitattributes"),
            ]
        })
        .into_iter()
        .flatten();
    let files = global
        .into_iter()
        .chain(system)
        .chain([folders.common_dir.join("info/attributes")]);
    for file in files {
        if file.symlink_metadata().is_ok() {
            return false;
        }
    }
    let is_attributes = |path: &[u8]| path.rsplit(|b| *b == b'/').next() == Some(b".gitattributes");
    !index.entries().iter().any(|e| is_attributes(e.path(index)))
        && !changes
            .iter()
            .any(|c| is_attributes(c.path.as_os_str().as_bytes()))
}

/// Writes the file of every change in `ins` (new mode and id) under `to`, at its path.
/// Returns the signature of each file written, by path, read from the open file
/// (`fstat(2)`) so that no path is looked up again.
///
/// Many files are written by [`workers`] threads at once, each with its own handle on the
/// repository (git's `checkout.workers` does the same for a checkout); the folders are
/// made first, once each.
///
/// Errors: a message when a blob cannot be read or a file cannot be written.
pub(super) fn write_blobs(
    repo: &gix::Repository,
    to: &Path,
    ins: &[&Change],
) -> Result<HashMap<PathBuf, Sig>, FfError> {
    let mut made: HashSet<PathBuf> = HashSet::new();
    for change in ins {
        if let Some(parent) = to.join(&change.path).parent()
            && made.insert(parent.to_path_buf())
        {
            fs::create_dir_all(parent).map_err(|e| FfError::Files(format!("cannot stage: {e}")))?;
        }
    }
    let workers = workers(ins.len());
    if workers < 2 {
        return write_some(repo, to, ins);
    }
    // Not `util::parts`, whose work is shared between threads and so cannot hold a
    // `gix::Repository`: each thread takes a clone of `repo`. Handles made from one
    // thread-safe copy instead measured slower here (the helper at 1.00-1.16x of `git merge`
    // against 0.99-1.03x, 3,000 files on tmpfs, `benches/fast_forward.sh`).
    std::thread::scope(|scope| {
        let started: Vec<_> = ins
            .chunks(ins.len().div_ceil(workers))
            .map(|part| {
                let repo = repo.clone();
                scope.spawn(move || write_some(&repo, to, part))
            })
            .collect();
        let mut sigs = HashMap::with_capacity(ins.len());
        for worker in started {
            let part = worker
                .join()
                .map_err(|_| FfError::Files("a staging thread failed".to_string()))??;
            sigs.extend(part);
        }
        Ok(sigs)
    })
}

/// How many threads share the writing or checking of `files` files: one below
/// [`PARALLEL_FROM`] files, else the CPUs this process may use (its cgroup's quota
/// included), at most 4.
pub(super) fn workers(files: usize) -> usize {
    if files < PARALLEL_FROM {
        return 1;
    }
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// The number of files from which work on them is shared between threads: below it a
/// thread's start (tens of microseconds) costs more than it saves.
pub(super) const PARALLEL_FROM: usize = 256;

/// [`write_blobs`] of `ins` on this thread, into folders that exist.
fn write_some(
    repo: &gix::Repository,
    to: &Path,
    ins: &[&Change],
) -> Result<HashMap<PathBuf, Sig>, FfError> {
    let mut sigs = HashMap::with_capacity(ins.len());
    for change in ins {
        let target = to.join(&change.path);
        let blob = repo
            .find_object(oid(&change.new_id)?)
            .map_err(|e| FfError::Files(format!("cannot read {}: {e}", change.path.display())))?;
        let written = if change.new_mode == 0o120000 {
            std::os::unix::fs::symlink(std::ffi::OsStr::from_bytes(blob.data.as_bstr()), &target)
                .and_then(|()| target.symlink_metadata())
        } else {
            let mode = if change.new_mode == 0o100755 {
                0o777
            } else {
                0o666
            };
            fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&target)
                .and_then(|mut file| {
                    file.write_all(&blob.data)?;
                    file.metadata()
                })
        };
        let meta = written
            .map_err(|e| FfError::Files(format!("cannot stage {}: {e}", change.path.display())))?;
        sigs.insert(change.path.clone(), Sig::from_meta(&meta));
    }
    Ok(sigs)
}
