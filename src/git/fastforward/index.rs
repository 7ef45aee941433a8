//! The index after a fast-forward, built in-process: git's two-tree merge
//! (`git read-tree -m -i FROM TO`, read-tree(1) "Two Tree Merge") applied to a copy of the
//! index as it is, so that stat data and anything staged on other paths stay; then the stat
//! data of the files just written, as `git checkout` records them.
//!
//! The tree-cache extension (gitformat-index(5) "Cache tree"): when the index was exactly
//! the old commit's tree, it is the new commit's tree after the merge, and the cache names
//! that tree again, as `git merge` leaves it (unpack-trees repairs the cache tree), so that
//! `git status` and gitsync's own read need not compare HEAD with the index. Otherwise it is
//! invalidated along every changed path, as git's `cache_tree_invalidate_path` does.
//! Extensions gix does not write (the untracked cache, fsmonitor, resolve-undo) are dropped,
//! which costs git one full look at the worktree and loses nothing.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use gix::bstr::{BStr, BString, ByteSlice};
use gix::index::entry::{Flags, Mode, Stage, Stat};

use super::FfError;
use super::tree::{Trees, oid};
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

/// Applies the two-tree merge of `changes` (old commit to new, whose root trees are
/// `trees`) to `index`: a path whose entry is the old commit's gets the new commit's (stat
/// data zeroed, flags cleared), a deleted one goes, an added one comes; a path already at
/// the new commit's stays. Then the cache tree: rebuilt for the new tree when the index was
/// the old tree exactly (its new folders read from `repo`), else invalidated along each
/// changed path.
///
/// Errors: a message naming the path when the index cannot take the fast-forward, as
/// `read-tree -m` refuses: a change staged on a path the push changes, an unmerged entry,
/// or a file where the new commit has a folder (or the reverse).
pub(super) fn two_way(
    repo: &gix::Repository,
    index: &mut gix::index::File,
    changes: &[Change],
    trees: Trees,
) -> Result<(), FfError> {
    let was_old_tree = names_tree(index, trees.old);
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
    // The index is now the new tree exactly: each folder's cached tree is what the new
    // commit has there (a folder the push left alone keeps its node).
    let rebuilt = was_old_tree
        .then(|| cached_tree(repo, trees.new, &[], index.tree()).ok())
        .flatten();
    match (rebuilt, index.tree_mut()) {
        (Some(rebuilt), Some(root)) => *root = rebuilt,
        _ => invalidate_trees(index, changes),
    }
    Ok(())
}

/// Whether `index` is exactly the tree `tree`, as its cache tree says: a valid root naming
/// `tree` over every entry, and no entry unmerged or only intended to be added (git leaves
/// a folder holding one of those invalid). How git itself skips the HEAD-to-index diff.
fn names_tree(index: &gix::index::File, tree: gix::ObjectId) -> bool {
    index.tree().is_some_and(|root| {
        root.id == tree
            && root
                .num_entries
                .is_some_and(|n| n as usize == index.entries().len())
    }) && index
        .entries()
        .iter()
        .all(|e| e.stage() == Stage::Unconflicted && !e.flags.contains(Flags::INTENT_TO_ADD))
}

/// The cache-tree node (gitformat-index(5) "Cache tree") named `name` of the tree `id`,
/// for an index holding exactly that tree below the folder: `old`, the folder's node
/// before, is kept when it is valid and names `id`; otherwise the tree is read and each
/// subfolder's node made the same way. Children are in git's order (shorter names first,
/// then bytewise, as `subtree_name_cmp` sorts them).
///
/// Errors: the tree, or one below it, cannot be read.
fn cached_tree(
    repo: &gix::Repository,
    id: gix::ObjectId,
    name: &[u8],
    old: Option<&gix::index::extension::Tree>,
) -> Result<gix::index::extension::Tree, String> {
    if let Some(old) = old.filter(|o| o.id == id && o.num_entries.is_some()) {
        let mut kept = old.clone();
        kept.name = name.into();
        return Ok(kept);
    }
    let tree = repo.find_tree(id).map_err(|e| e.to_string())?;
    let decoded = tree.decode().map_err(|e| e.to_string())?;
    let mut num_entries = 0u32;
    let mut children = Vec::new();
    for entry in &decoded.entries {
        if entry.mode.is_tree() {
            let below = old.and_then(|o| {
                o.children
                    .iter()
                    .find(|c| c.name.as_slice() == entry.filename.as_bytes())
            });
            let child = cached_tree(repo, entry.oid.to_owned(), entry.filename, below)?;
            num_entries += child.num_entries.unwrap_or(0);
            children.push(child);
        } else {
            num_entries += 1;
        }
    }
    children
        .sort_by(|a, b| (a.name.len(), a.name.as_slice()).cmp(&(b.name.len(), b.name.as_slice())));
    Ok(gix::index::extension::Tree {
        name: name.into(),
        id,
        num_entries: Some(num_entries),
        children,
    })
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
