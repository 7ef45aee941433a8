//! The index after a fast-forward, built in-process: git's two-tree merge
//! (`git read-tree -m -i FROM TO`, read-tree(1) "Two Tree Merge") applied to a copy of the
//! index as it is, so that stat data and anything staged on other paths stay; then the stat
//! data of the files just written, as `git checkout` records them.
//!
//! The tree-cache extension (gitformat-index(5) "Cache tree") is invalidated along every
//! changed path, as git's `cache_tree_invalidate_path` does; extensions gix does not write
//! (the untracked cache, fsmonitor, resolve-undo) are dropped, which costs git one full
//! look at the worktree and loses nothing.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use gix::bstr::{BStr, BString, ByteSlice};
use gix::index::entry::{Flags, Mode, Stage, Stat};

use super::FfError;
use super::tree::oid;
use super::{Change, GITLINK};

fn path_of(change: &Change) -> &BStr {
    change.path.as_os_str().as_bytes().as_bstr()
}

fn mode_of(mode: u32) -> Mode {
    match mode {
        0o120000 => Mode::SYMLINK,
        0o100755 => Mode::FILE_EXECUTABLE,
        GITLINK => Mode::COMMIT,
        _ => Mode::FILE,
    }
}

/// Applies the two-tree merge of `changes` (old commit to new) to `index`: a path whose
/// entry is the old commit's gets the new commit's (stat data zeroed, flags cleared), a
/// deleted one goes, an added one comes; a path already at the new commit's stays.
///
/// Errors: a message naming the path when the index cannot take the fast-forward, as
/// `read-tree -m` refuses: a change staged on a path the push changes, an unmerged entry,
/// or a file where the new commit has a folder (or the reverse).
pub(super) fn two_way(index: &mut gix::index::File, changes: &[Change]) -> Result<(), FfError> {
    let refuse = |path: &BStr, why: &str| {
        FfError::Index(format!(
            "the index cannot take the fast-forward: {path}: {why} (commit or unstage it)"
        ))
    };
    let mut gone: HashSet<BString> = HashSet::new();
    let mut added = Vec::new();
    for change in changes {
        let path = path_of(change);
        if index.entry_range(path).is_some_and(|range| range.len() > 1)
            || index
                .entry_by_path(path)
                .is_some_and(|e| e.stage() != Stage::Unconflicted)
        {
            return Err(refuse(path, "unmerged"));
        }
        let new = (change.new_mode != 0)
            .then(|| oid(&change.new_id).map(|id| (id, mode_of(change.new_mode))))
            .transpose()?;
        let old = (change.old_mode != 0)
            .then(|| oid(&change.old_id).map(|id| (id, mode_of(change.old_mode))))
            .transpose()?;
        let entry = index.entry_mut_by_path_and_stage(path, Stage::Unconflicted);
        match (entry, old, new) {
            (Some(e), _, Some((id, mode))) if e.id == id && e.mode == mode => {}
            (Some(e), Some((old_id, old_mode)), Some((id, mode)))
                if e.id == old_id && e.mode == old_mode =>
            {
                e.id = id;
                e.mode = mode;
                e.stat = Stat::default();
                e.flags = Flags::empty();
            }
            (Some(e), Some((old_id, old_mode)), None) if e.id == old_id && e.mode == old_mode => {
                gone.insert(path.to_owned());
            }
            (None, _, None) => {}
            (None, None, Some((id, mode))) => added.push((path.to_owned(), id, mode)),
            (Some(_), _, _) => return Err(refuse(path, "staged changes")),
            (None, Some(_), Some(_)) => return Err(refuse(path, "removed from the index")),
        }
    }
    if !gone.is_empty() {
        index.remove_entries(|_, path, _| gone.contains(path));
    }
    for (path, id, mode) in &added {
        index.dangerously_push_entry(Stat::default(), *id, Flags::empty(), *mode, path.as_ref());
    }
    if !added.is_empty() {
        index.sort_entries();
    }
    // A file and a folder of the same name cannot both be tracked.
    for (path, _, _) in &added {
        let mut below = path.clone();
        below.push(b'/');
        if index
            .prefixed_entries(below.as_bstr())
            .is_some_and(|e| !e.is_empty())
        {
            return Err(refuse(path.as_bstr(), "a folder in the index"));
        }
        let mut parent = path.as_bstr();
        while let Some(slash) = parent.rfind_byte(b'/') {
            parent = parent[..slash].as_bstr();
            if index.entry_by_path(parent).is_some() {
                return Err(refuse(parent, "a file in the index"));
            }
        }
    }
    invalidate_trees(index, changes);
    Ok(())
}

/// Marks the cached tree of every folder on the way to a changed path as out of date.
fn invalidate_trees(index: &mut gix::index::File, changes: &[Change]) {
    let Some(root) = index.tree_mut() else {
        return;
    };
    for change in changes {
        let mut tree = &mut *root;
        tree.num_entries = None;
        let bytes = path_of(change);
        let mut parts: Vec<&[u8]> = bytes.split_str("/").collect();
        parts.pop();
        for part in parts {
            match tree.children.iter_mut().find(|c| c.name.as_slice() == part) {
                Some(child) => {
                    child.num_entries = None;
                    tree = child;
                }
                None => break,
            }
        }
    }
}

/// Fills in the stat data of the entries of `index` for the files of `ins` now in the
/// worktree at `worktree`, as `git checkout` records them.
///
/// Errors: a message when a file cannot be looked at.
pub(super) fn fill_stat(
    index: &mut gix::index::File,
    worktree: &Path,
    ins: &[&Change],
) -> Result<(), FfError> {
    for change in ins {
        let Some(entry) = index.entry_mut_by_path_and_stage(path_of(change), Stage::Unconflicted)
        else {
            continue;
        };
        let meta = gix::index::fs::Metadata::from_path_no_follow(&worktree.join(&change.path))
            .map_err(|e| {
                FfError::Index(format!("cannot look at {}: {e}", change.path.display()))
            })?;
        entry.stat = Stat::from_fs(&meta).map_err(|e| FfError::Index(e.to_string()))?;
    }
    Ok(())
}

/// Writes `index` to `to` whole or not at all (through `<to>.new` and a rename).
///
/// Errors: a message when it cannot be written.
pub(super) fn write(index: &gix::index::File, to: &Path) -> Result<(), FfError> {
    let aside = to.with_extension("new");
    let written = (|| -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(fs::File::create(&aside)?);
        index
            .write_to(&mut out, Default::default())
            .map_err(std::io::Error::other)?;
        out.flush()?;
        drop(out);
        fs::rename(&aside, to)
    })();
    written.map_err(|e| {
        let _ = fs::remove_file(&aside);
        FfError::Index(format!("cannot write the new index: {e}"))
    })
}
