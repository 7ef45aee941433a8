//! What a fast-forward changes, read in-process with gix: whether the old commit is an
//! ancestor of the new one (`git merge-base --is-ancestor`), and every file that differs
//! between their trees (`git diff-tree -r --no-renames`), as [`Change`]s.
//!
//! This module reads the object database only.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;

use gix::ObjectId;
use gix::diff::tree::recorder::Change as Recorded;

use super::Change;
use super::FfError;

/// The commit id `hex` as an object id.
///
/// Errors: a message naming `hex` when it is not a full hex object id.
pub(super) fn oid(hex: &str) -> Result<ObjectId, FfError> {
    ObjectId::from_hex(hex.as_bytes())
        .map_err(|_| FfError::Repo(format!("not a commit id: {hex:?}")))
}

/// Whether the commit `from` is `to` or one of its ancestors.
///
/// Errors: a message when either commit cannot be read.
pub(super) fn is_ancestor(repo: &gix::Repository, from: &str, to: &str) -> Result<bool, FfError> {
    let (from, to) = (oid(from)?, oid(to)?);
    if from == to {
        return Ok(true);
    }
    let base = repo
        .merge_base(from, to)
        .map_err(|e| FfError::Repo(format!("cannot read the history: {e}")))?;
    Ok(base.is_some_and(|base| base.detach() == from))
}

/// The root trees of the commits a fast-forward goes from and to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Trees {
    /// The tree of the commit the branch is at.
    pub(super) old: ObjectId,
    /// The tree of the commit it moves to.
    pub(super) new: ObjectId,
}

/// The files (blobs, symlinks and submodule commits; never folders) that differ between
/// the trees of the commits `from` and `to`, each with its old and new mode (0 where absent)
/// and ids, in the order of git's trees; and the two trees.
///
/// Errors: a message when a commit or tree cannot be read.
pub(super) fn changes(
    repo: &gix::Repository,
    from: &str,
    to: &str,
) -> Result<(Vec<Change>, Trees), FfError> {
    let tree_of = |hex: &str| -> Result<gix::Tree<'_>, FfError> {
        repo.find_commit(oid(hex)?)
            .and_then(|commit| commit.tree())
            .map_err(|e| FfError::Repo(format!("cannot read the tree of {hex}: {e}")))
    };
    let (old, new) = (tree_of(from)?, tree_of(to)?);
    let trees = Trees {
        old: old.id,
        new: new.id,
    };
    let mut recorder = gix::diff::tree::Recorder::default();
    gix::diff::tree(
        gix::objs::TreeRefIter::from_bytes(&old.data, old.id.kind()),
        gix::objs::TreeRefIter::from_bytes(&new.data, new.id.kind()),
        gix::diff::tree::State::default(),
        &repo.objects,
        &mut recorder,
    )
    .map_err(|e| FfError::Repo(format!("cannot compare the trees: {e}")))?;
    let mut out = Vec::with_capacity(recorder.records.len());
    let zero = ObjectId::null(repo.object_hash());
    let mode = |m: gix::objs::tree::EntryMode| {
        if m.is_tree() { 0 } else { u32::from(m.value()) }
    };
    for record in recorder.records {
        let (path, old_mode, old_id, new_mode, new_id) = match record {
            Recorded::Addition {
                entry_mode,
                oid,
                path,
                ..
            } => (path, 0, zero, mode(entry_mode), oid),
            Recorded::Deletion {
                entry_mode,
                oid,
                path,
                ..
            } => (path, mode(entry_mode), oid, 0, zero),
            Recorded::Modification {
                previous_entry_mode,
                previous_oid,
                entry_mode,
                oid,
                path,
            } => (
                path,
                mode(previous_entry_mode),
                previous_oid,
                mode(entry_mode),
                oid,
            ),
        };
        if old_mode == 0 && new_mode == 0 {
            continue; // A folder: its files are listed one by one.
        }
        out.push(Change {
            path: PathBuf::from(OsStr::from_bytes(&path)),
            old_mode,
            new_mode,
            old_id: if old_mode == 0 {
                String::new()
            } else {
                old_id.to_string()
            },
            new_id: if new_mode == 0 {
                String::new()
            } else {
                new_id.to_string()
            },
        });
    }
    Ok((out, trees))
}
