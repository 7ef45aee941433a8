//! How many untracked files `git status` would list (`status.showUntrackedFiles`; by default
//! a wholly untracked folder counts once).
//!
//! A quick walk first: when every name in every folder is a tracked file, a gitlink or a
//! folder holding tracked files, nothing can be untracked, whatever the ignore rules say, and
//! the answer is 0. Anything else (an unknown name, a file replaced by a folder, a type the
//! directory entry does not give) hands the question to gix's directory walk, which applies
//! `.gitignore`, `info/exclude` and `core.excludesFile` as git does.

use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::AtomicBool;

use gix::bstr::{BString, ByteSlice};
use gix::index::entry::Mode;
use nix::dir::{Dir, Type};
use nix::fcntl::OFlag;

use super::state::{StateError, err};

/// Returns the number of untracked entries `git status --porcelain` would list for the
/// worktree of `repo`, given its `index`.
///
/// Errors: a message when the configuration or gix's directory walk fails.
pub(crate) fn count(repo: &gix::Repository, index: &gix::index::State) -> Result<u32, StateError> {
    let Some(workdir) = repo.workdir() else {
        return Ok(0);
    };
    let Some(options) = walk_options(repo)? else {
        return Ok(0);
    };
    let fs = repo
        .filesystem_options()
        .map_err(err("cannot read core.* file system settings"))?;
    if !fs.ignore_case
        && !fs.precompose_unicode
        && !index.is_sparse()
        && all_tracked(workdir, index)
    {
        return Ok(0);
    }
    let mut counter = UntrackedCounter {
        index,
        untracked: 0,
    };
    repo.dirwalk(
        index,
        Vec::<BString>::new(),
        &AtomicBool::new(false),
        options,
        &mut counter,
    )
    .map_err(err("cannot walk the worktree"))?;
    Ok(counter.untracked)
}

/// Whether every entry under `workdir` (but the top-level `.git`) is tracked by `index`: a
/// file or symlink with an index entry, a gitlink, or a folder some index entry lies in.
/// Reads each folder once (`getdents`, with the type the directory entry carries) and stats
/// nothing; any doubt, or any error, answers `false`.
fn all_tracked(workdir: &Path, index: &gix::index::State) -> bool {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let Ok(root) = Dir::open(workdir, flags, nix::sys::stat::Mode::empty()) else {
        return false;
    };
    // Folders still to read, with their path relative to the worktree ending in `/`.
    let mut pending: Vec<(Dir, Vec<u8>)> = vec![(root, Vec::new())];
    let mut path = Vec::new();
    while let Some((mut dir, prefix)) = pending.pop() {
        let mut folders = Vec::new();
        for entry in dir.iter() {
            let Ok(entry) = entry else { return false };
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." || (prefix.is_empty() && name == b".git") {
                continue;
            }
            path.clear();
            path.extend_from_slice(&prefix);
            path.extend_from_slice(name);
            match entry.file_type() {
                Some(Type::File | Type::Symlink) => {
                    if index.entry_by_path(path.as_bstr()).is_none() {
                        return false;
                    }
                }
                Some(Type::Directory) => {
                    path.push(b'/');
                    if index
                        .prefixed_entries_range(path.as_bstr())
                        .is_some_and(|range| !range.is_empty())
                    {
                        folders.push((entry.file_name().to_owned(), path.clone()));
                        continue;
                    }
                    path.pop();
                    let gitlink = index
                        .entry_by_path(path.as_bstr())
                        .is_some_and(|e| e.mode == Mode::COMMIT);
                    if !gitlink {
                        return false;
                    }
                }
                _ => return false,
            }
        }
        for (name, prefix) in folders {
            let Ok(sub) = Dir::openat(
                dir.as_fd(),
                name.as_c_str(),
                flags,
                nix::sys::stat::Mode::empty(),
            ) else {
                return false;
            };
            pending.push((sub, prefix));
        }
    }
    true
}

/// The directory walk `git status` does for untracked files, per `status.showUntrackedFiles`
/// (`no`: none; `all`: every file; otherwise a wholly untracked folder counts once).
fn walk_options(repo: &gix::Repository) -> Result<Option<gix::dirwalk::Options>, StateError> {
    use gix::dir::walk::EmissionMode;
    let mode = repo
        .config_snapshot()
        .string("status.showUntrackedFiles")
        .map(|v| v.to_str_lossy().to_ascii_lowercase());
    let emission = match mode.as_deref() {
        Some("no" | "false" | "0" | "off") => return Ok(None),
        Some("all") => EmissionMode::Matching,
        _ => EmissionMode::CollapseDirectory,
    };
    let options = repo
        .dirwalk_options()
        .map_err(err("cannot configure the directory walk"))?
        .emit_untracked(emission);
    Ok(Some(options))
}

/// Counts what the directory walk reports as untracked (a collapsed folder counts once).
struct UntrackedCounter<'a> {
    index: &'a gix::index::State,
    untracked: u32,
}

impl gix::dir::walk::Delegate for UntrackedCounter<'_> {
    fn emit(
        &mut self,
        entry: gix::dir::EntryRef<'_>,
        _collapsed_directory_status: Option<gix::dir::entry::Status>,
    ) -> gix::dir::walk::Action {
        // git (2.47) does not list a wholly untracked folder that has the path of a tracked
        // file (a file replaced by a folder) unless asked for every file; neither do we.
        let replaces_tracked_file = entry.disk_kind == Some(gix::dir::entry::Kind::Directory)
            && self.index.entry_by_path(entry.rela_path.as_ref()).is_some();
        if entry.status == gix::dir::entry::Status::Untracked && !replaces_tracked_file {
            self.untracked += 1;
        }
        std::ops::ControlFlow::Continue(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index_of(paths: &[(&str, Mode)]) -> gix::index::State {
        let mut index = gix::index::State::new(gix::hash::Kind::Sha1);
        for (path, mode) in paths {
            index.dangerously_push_entry(
                Default::default(),
                gix::hash::ObjectId::empty_blob(gix::hash::Kind::Sha1),
                gix::index::entry::Flags::empty(),
                *mode,
                path.as_bytes().as_bstr(),
            );
        }
        index.sort_entries();
        index
    }

    #[test]
    fn only_a_worktree_of_tracked_names_is_proved_free_of_untracked_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = dir.path();
        for f in ["a.txt", "x/y/z.txt"] {
            std::fs::create_dir_all(w.join(f).parent().expect("parent")).expect("mkdir");
            std::fs::write(w.join(f), "x").expect("write");
        }
        std::fs::create_dir_all(w.join(".git/objects")).expect("mkdir .git");
        std::fs::create_dir_all(w.join("sub")).expect("mkdir gitlink");
        let index = index_of(&[
            ("a.txt", Mode::FILE),
            ("x/y/z.txt", Mode::FILE),
            ("sub", Mode::COMMIT),
        ]);
        assert!(all_tracked(w, &index), "every name is tracked");

        std::fs::write(w.join("x/y/new.txt"), "n").expect("write");
        assert!(!all_tracked(w, &index), "an untracked file deep down");
        std::fs::remove_file(w.join("x/y/new.txt")).expect("rm");

        std::fs::create_dir(w.join("x/empty")).expect("mkdir");
        assert!(
            !all_tracked(w, &index),
            "a folder no entry lies in goes to gix"
        );
        std::fs::remove_dir(w.join("x/empty")).expect("rmdir");

        std::fs::create_dir_all(w.join("x/y/.git")).expect("mkdir nested .git");
        assert!(
            !all_tracked(w, &index),
            "only the top-level .git is skipped"
        );
        std::fs::remove_dir(w.join("x/y/.git")).expect("rmdir");

        std::fs::remove_file(w.join("a.txt")).expect("rm");
        std::fs::create_dir(w.join("a.txt")).expect("file to folder");
        assert!(
            !all_tracked(w, &index),
            "a file replaced by a folder goes to gix"
        );
    }
}
