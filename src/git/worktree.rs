//! Which tracked files differ from the index: the unstaged half of `git status`.
//!
//! A first pass proves most files unchanged from their stat data alone, with the same rules
//! as git and gix (`Documentation/technical/racy-git.txt`): one `fstatat` per file, relative
//! to an open descriptor of its folder, so the kernel resolves one path component instead of
//! the whole absolute path. Every entry that pass cannot prove unchanged (stat data differs,
//! racily clean, missing, type changed, intent-to-add, gitlink) goes to gix's own comparison,
//! which reads content where it must; the answer is therefore gix's answer, only cheaper.

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::AtomicBool;

use gix::bstr::{BStr, BString, ByteSlice};
use gix::index::entry::{Flags, Mode, Stat, stat::Time};
use gix::status::plumbing::index_as_worktree;
use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{FileStat, SFlag, fstatat};

use super::state::{StateError, err};

/// Index entries that gix skips without looking at the worktree (`Flags::UPTODATE` and the
/// skip-worktree, assume-unchanged and fsmonitor-valid bits of `index-format.txt`).
const SKIPPED: Flags = Flags::UPTODATE
    .union(Flags::SKIP_WORKTREE)
    .union(Flags::ASSUME_VALID)
    .union(Flags::FSMONITOR_VALID);

/// Returns the paths (repository-relative, `/`-separated) of unconflicted index entries
/// whose worktree file differs from the index: modified, deleted, type or mode changed, or
/// intent-to-add. Conflicted entries are left out; submodules are not looked into.
///
/// Errors: a message when the worktree root cannot be opened or gix's comparison fails.
pub(crate) fn unstaged(
    repo: &gix::Repository,
    index: &gix::index::State,
) -> Result<HashSet<BString>, StateError> {
    let options = options(repo)?;
    let doubtful = doubtful(repo, index, &options)?;
    if doubtful.entries().is_empty() {
        return Ok(HashSet::new());
    }
    compare_with_gix(repo, index, &doubtful, options)
}

/// gix's status options for `repo` (`core.symlinks`, `core.fileMode`, `core.ignoreCase`,
/// `core.checkStat`, `core.trustctime`), for one thread.
///
/// Errors: a message naming the configuration that cannot be read.
fn options(repo: &gix::Repository) -> Result<index_as_worktree::Options, StateError> {
    Ok(index_as_worktree::Options {
        fs: repo
            .filesystem_options()
            .map_err(err("cannot read core.* file system settings"))?,
        thread_limit: Some(1),
        stat: repo
            .stat_options()
            .map_err(err("cannot read core.checkStat settings"))?,
        fscache: false,
    })
}

/// The stat pass: returns the unconflicted entries of `index` whose stat data does not prove
/// their file unchanged, as an index of their own (same order, same timestamp, so that
/// gix's racy-git check sees what it would have seen). Empty without a worktree.
///
/// Errors: a message when the configuration cannot be read or the worktree root cannot be
/// opened.
fn doubtful(
    repo: &gix::Repository,
    index: &gix::index::State,
    options: &index_as_worktree::Options,
) -> Result<gix::index::State, StateError> {
    let mut doubtful = gix::index::State::new(repo.object_hash());
    doubtful.set_timestamp(index.timestamp());
    let Some(workdir) = repo.workdir() else {
        return Ok(doubtful);
    };
    let root = openat(
        nix::fcntl::AT_FDCWD,
        workdir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| {
        StateError::Worktree(format!("cannot open worktree {}: {e}", workdir.display()))
    })?;

    // A large index is looked at in two halves, the second on a thread of its own, as
    // git's preload-index splits it (one thread per 500 entries there).
    let entries = index.entries();
    let workers = if entries.len() >= SPLIT_FROM { 2 } else { 1 };
    let parts = crate::util::parts::in_parts(entries, workers, |start, part| {
        unproven(root.as_fd(), index, start..start + part.len(), options)
    });
    for (start, part, positions) in parts {
        // A thread that could not finish proves nothing: gix decides for its part.
        let positions = positions.unwrap_or_else(|_| {
            (start..start + part.len())
                .filter(|&p| entries[p].stage_raw() == 0 && !entries[p].flags.intersects(SKIPPED))
                .collect()
        });
        for position in positions {
            let entry = &entries[position];
            let path = entry.path(index);
            doubtful.dangerously_push_entry(entry.stat, entry.id, entry.flags, entry.mode, path);
        }
    }
    Ok(doubtful)
}

/// From how many index entries the stat pass (and, in `state`, the walk for untracked
/// files beside it) uses a second thread: below, one thread's start costs more than it
/// saves (a `fstatat` costs about 1.3 us on ext4, a thread about 30 us).
pub(crate) const SPLIT_FROM: usize = 1_000;

/// The positions, among `range` of `index`'s entries, of the unconflicted entries that
/// git would look at whose stat data does not prove their file unchanged (see
/// [`proven_unchanged`]), in order; `root` is the worktree's open folder (several threads
/// may look up paths from it at once).
fn unproven(
    root: BorrowedFd<'_>,
    index: &gix::index::State,
    range: std::ops::Range<usize>,
    options: &index_as_worktree::Options,
) -> Vec<usize> {
    let mut dirs = DirStack::new(root);
    let mut positions = Vec::new();
    for (position, entry) in index.entries()[range.clone()].iter().enumerate() {
        if entry.stage_raw() != 0 || entry.flags.intersects(SKIPPED) {
            continue;
        }
        let path = entry.path(index);
        let clean = !entry.flags.contains(Flags::INTENT_TO_ADD) && entry.mode != Mode::COMMIT && {
            let (dir, name) = match path.rfind_byte(b'/') {
                Some(slash) => (&path[..slash], &path[slash + 1..]),
                None => (&path[..0], path),
            };
            dirs.open(dir)
                .and_then(|fd| fstatat(fd, name.as_bytes(), AtFlags::AT_SYMLINK_NOFOLLOW).ok())
                .is_some_and(|st| proven_unchanged(entry, &st, options.fs, options.stat, index))
        };
        if !clean {
            positions.push(range.start + position);
        }
    }
    positions
}

/// Whether the stat data `st` proves the file unchanged since `entry` was written to
/// `index`, exactly as gix's `index_as_worktree` decides before it falls back to reading
/// content.
fn proven_unchanged(
    entry: &gix::index::Entry,
    st: &FileStat,
    fs: gix::fs::Capabilities,
    options: gix::index::entry::stat::Options,
    index: &gix::index::State,
) -> bool {
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    let (is_file, is_dir, is_symlink) = (
        kind == SFlag::S_IFREG,
        kind == SFlag::S_IFDIR,
        kind == SFlag::S_IFLNK,
    );
    if is_dir {
        return false;
    }
    let is_executable = is_file && st.st_mode & 0o100 != 0;
    if entry
        .mode
        .change_to_match_fs_with_values(
            is_file,
            is_dir,
            is_symlink,
            is_executable,
            fs.symlink,
            fs.executable_bit,
        )
        .is_some()
    {
        return false;
    }
    let now = Stat {
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        // Truncation to 32 bits is what git and gix store.
        dev: st.st_dev as u32,
        ino: st.st_ino as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        size: st.st_size as u32,
    };
    // An entry that records nanoseconds is compared to the nanosecond, its times and its
    // racy check alike (git built with USE_NSEC); one without, to the second.
    let precise = options.check_stat && entry.stat.mtime.nsecs != 0;
    let compare = gix::index::entry::stat::Options {
        use_nsec: options.use_nsec || precise,
        ..options
    };
    let index_time = (
        index.timestamp().unix_seconds(),
        index.timestamp().nanoseconds(),
    );
    now.matches(&entry.stat, compare)
        && (!entry.id.is_empty_blob() || entry.stat.size == 0)
        && !is_racy(entry.stat.mtime, index_time, precise)
}

/// Whether an entry last modified at `mtime` is racily clean against the index file
/// written at `index_time` (seconds and nanoseconds since the epoch): modified no earlier
/// than the index was written, so a change in the same clock tick could hide behind equal
/// stat data (`Documentation/technical/racy-git.txt`). With `precise` (the entry records
/// nanoseconds and its times were compared to the nanosecond, as git built with `USE_NSEC`
/// does) the nanoseconds decide; otherwise the second does (gix's default rule, which calls
/// every file written in the index's second racy: after a fast-forward of 3,000 files that
/// was every file, read and hashed on every status until the index was written again).
fn is_racy(mtime: Time, index_time: (i64, u32), precise: bool) -> bool {
    use std::cmp::Ordering;
    let (secs, nanos) = index_time;
    match secs.cmp(&i64::from(mtime.secs)) {
        Ordering::Less => true,
        Ordering::Equal => !precise || mtime.nsecs == 0 || nanos <= mtime.nsecs,
        Ordering::Greater => false,
    }
}

/// A stat time as the index stores it: seconds truncated to 32 bits, and zero for a time
/// before 1970 (gix's `Stat::from_fs`).
fn time(secs: i64, nsecs: i64) -> Time {
    match (u64::try_from(secs), u32::try_from(nsecs)) {
        (Ok(secs), Ok(nsecs)) if nsecs < 1_000_000_000 => Time {
            secs: secs as u32,
            nsecs,
        },
        _ => Time::default(),
    }
}

/// Open descriptors for the folders of the entry being looked at, from the worktree root
/// down. Index entries are sorted by path, so each folder is opened once. Every folder is
/// opened with `O_NOFOLLOW`: a symlink on the way fails the open, and gix then decides (it
/// reports such a file as deleted, as git does).
struct DirStack<'a> {
    root: BorrowedFd<'a>,
    /// `(component, descriptor)` for each folder below the root, outermost first.
    open: Vec<(Vec<u8>, OwnedFd)>,
}

impl<'a> DirStack<'a> {
    fn new(root: BorrowedFd<'a>) -> Self {
        Self {
            root,
            open: Vec::new(),
        }
    }

    /// The descriptor of `dir` (`/`-separated, relative to the root; empty for the root),
    /// or `None` when a folder on the way cannot be opened.
    fn open(&mut self, dir: &BStr) -> Option<BorrowedFd<'_>> {
        let components: Vec<&[u8]> = if dir.is_empty() {
            Vec::new()
        } else {
            dir.split_str("/").collect()
        };
        let shared = self
            .open
            .iter()
            .zip(&components)
            .take_while(|((have, _), want)| have.as_slice() == **want)
            .count();
        self.open.truncate(shared);
        for component in &components[shared..] {
            let parent = self.open.last().map_or(self.root, |(_, fd)| fd.as_fd());
            let fd = openat(
                parent,
                *component,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .ok()?;
            self.open.push((component.to_vec(), fd));
        }
        Some(self.open.last().map_or(self.root, |(_, fd)| fd.as_fd()))
    }
}

/// gix's comparison of the entries of `doubtful` with the worktree (lstat, then content
/// through the configured filters when stat data cannot decide), in the calling thread.
/// `index` is the whole index, where `.gitattributes` files are looked up.
fn compare_with_gix(
    repo: &gix::Repository,
    index: &gix::index::State,
    doubtful: &gix::index::State,
    options: index_as_worktree::Options,
) -> Result<HashSet<BString>, StateError> {
    let workdir = repo
        .workdir()
        .ok_or_else(|| StateError::Worktree("no worktree".to_string()))?;
    let attributes = repo
        .attributes_only(
            index,
            gix::worktree::stack::state::attributes::Source::WorktreeThenIdMapping,
        )
        .map_err(err("cannot read .gitattributes"))?
        .detach();
    let (filter, stack) = gix::filter::Pipeline::new(repo, attributes)
        .map_err(err("cannot configure filters"))?
        .into_parts();
    let (pathspec, _) = repo
        .pathspec(
            false,
            Vec::<BString>::new(),
            true,
            doubtful,
            gix::worktree::stack::state::attributes::Source::WorktreeThenIdMapping,
        )
        .map_err(err("cannot configure the pathspec"))?
        .into_parts();
    let objects = repo
        .objects
        .clone()
        .into_arc()
        .map_err(err("cannot share the object database"))?;
    let mut collector = Collector::default();
    index_as_worktree(
        doubtful,
        workdir,
        &mut collector,
        index_as_worktree::traits::FastEq,
        NoSubmodules,
        objects,
        &mut gix::progress::Discard,
        index_as_worktree::Context {
            pathspec,
            stack,
            filter,
            should_interrupt: &AtomicBool::new(false),
        },
        options,
    )
    .map_err(err("cannot compute status"))?;
    Ok(collector.unstaged)
}

/// Collects the paths of tracked files that differ from the index.
#[derive(Default)]
struct Collector {
    unstaged: HashSet<BString>,
}

impl<'index> index_as_worktree::VisitEntry<'index> for Collector {
    type ContentChange = ();
    type SubmoduleStatus = ();

    fn visit_entry(
        &mut self,
        _entries: &'index [gix::index::Entry],
        _entry: &'index gix::index::Entry,
        _entry_index: usize,
        rela_path: &'index BStr,
        status: index_as_worktree::EntryStatus<(), ()>,
    ) {
        use index_as_worktree::EntryStatus;
        match status {
            EntryStatus::Change(_) | EntryStatus::IntentToAdd => {
                self.unstaged.insert(rela_path.to_owned());
            }
            EntryStatus::Conflict { .. } | EntryStatus::NeedsUpdate(_) => {}
        }
    }
}

/// Submodules are not looked into.
#[derive(Clone, Copy)]
struct NoSubmodules;

impl index_as_worktree::traits::SubmoduleStatus for NoSubmodules {
    type Output = ();

    fn status(&mut self, _entry: &gix::index::Entry, _rela_path: &BStr) -> gix::Result<Option<()>> {
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &std::path::Path, args: &[&str]) {
        let out = std::process::Command::new("git")
            .current_dir(dir)
            .args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .expect("git is installed (apt-get install git)");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    }

    fn doubtful_paths(dir: &std::path::Path) -> Vec<String> {
        let repo = gix::open(dir).expect("open");
        let index = repo.open_index().expect("index");
        let options = options(&repo).expect("options");
        let doubtful = doubtful(&repo, &index, &options).expect("stat pass");
        doubtful
            .entries()
            .iter()
            .map(|e| e.path(&doubtful).to_string())
            .collect()
    }

    #[test]
    fn the_stat_pass_proves_untouched_files_and_doubts_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = dir.path();
        git(w, &["init", "-q"]);
        let files = ["a.txt", "d/b.txt", "d/e/c.txt", "d/e/f/g.txt", "z.txt"];
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        for f in files {
            let path = w.join(f);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, f).expect("write");
            std::fs::File::options()
                .append(true)
                .open(&path)
                .and_then(|file| file.set_modified(old))
                .expect("age the file");
        }
        // The index is written after every file's mtime: nothing is racily clean.
        git(w, &["add", "."]);
        assert_eq!(doubtful_paths(w), Vec::<String>::new(), "all proved");

        std::fs::write(w.join("d/e/c.txt"), "changed").expect("edit");
        std::fs::remove_file(w.join("d/b.txt")).expect("rm");
        // Same size and mtime as before, but a new inode: the stat data tells.
        std::fs::write(w.join("z.txt.new"), "z.txt").expect("write");
        std::fs::File::options()
            .append(true)
            .open(w.join("z.txt.new"))
            .and_then(|file| file.set_modified(old))
            .expect("age");
        std::fs::rename(w.join("z.txt.new"), w.join("z.txt")).expect("replace");
        assert_eq!(doubtful_paths(w), ["d/b.txt", "d/e/c.txt", "z.txt"]);
    }

    /// From `SPLIT_FROM` entries the stat pass runs in two threads: whatever the edits and
    /// wherever the halves meet, it doubts exactly the files changed, in index order.
    #[test]
    fn the_split_stat_pass_doubts_exactly_the_changed_files_in_order() {
        let seed = fastrand::u64(..);
        eprintln!("seed {seed}");
        let mut rng = fastrand::Rng::with_seed(seed);
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let age = |path: &std::path::Path| {
            std::fs::File::options()
                .append(true)
                .open(path)
                .and_then(|file| file.set_modified(old))
                .expect("age the file");
        };
        for _ in 0..3 {
            let dir = tempfile::tempdir().expect("tempdir");
            let w = dir.path();
            git(w, &["init", "-q"]);
            let count = SPLIT_FROM + rng.usize(..1_500);
            let names: std::collections::BTreeSet<String> = (0..count)
                .map(|i| match rng.u8(..3) {
                    0 => format!("f{i}.txt"),
                    1 => format!("d{}/f{i}.txt", rng.u8(..5)),
                    _ => format!("d{}/e{}/f{i}.txt", rng.u8(..5), rng.u8(..3)),
                })
                .collect();
            for name in &names {
                let path = w.join(name);
                std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
                std::fs::write(&path, name).expect("write");
                age(&path);
            }
            git(w, &["add", "."]);
            assert_eq!(doubtful_paths(w), Vec::<String>::new(), "all proved");

            // Random files, and always the first, the last and the two where the halves meet.
            let ordered: Vec<&String> = names.iter().collect();
            let middle = ordered.len() / 2;
            let mut changed = std::collections::BTreeSet::new();
            for (i, name) in ordered.iter().enumerate() {
                let edge = [0, middle - 1, middle, ordered.len() - 1].contains(&i);
                if edge || rng.u8(..20) == 0 {
                    changed.insert(name.to_string());
                }
            }
            for name in &changed {
                let path = w.join(name);
                match rng.u8(..3) {
                    0 => std::fs::write(&path, format!("{name}, edited")).expect("edit"),
                    1 => std::fs::remove_file(&path).expect("rm"),
                    _ => {
                        // The same bytes and times in a new inode.
                        let new = w.join("replacement");
                        std::fs::write(&new, name).expect("write");
                        age(&new);
                        std::fs::rename(&new, &path).expect("replace");
                    }
                }
            }
            let expected: Vec<String> = changed.into_iter().collect();
            assert_eq!(doubtful_paths(w), expected, "seed {seed}, {count} files");
        }
    }

    /// Files written in the same second as the index, but before it (as a fast-forward
    /// writes them), are proven unchanged by the nanoseconds; a file no older than the
    /// index is racy; a file with whole-second times in the index's second is racy.
    #[test]
    fn racy_is_decided_to_the_nanosecond_when_the_entry_has_nanoseconds() {
        let at = |secs: i64, nanos: u32| (secs, nanos);
        let t = |secs: u32, nsecs: u32| Time { secs, nsecs };
        assert!(
            !is_racy(t(100, 500), at(100, 501), true),
            "older by a nanosecond"
        );
        assert!(is_racy(t(100, 500), at(100, 501), false), "seconds only");
        assert!(is_racy(t(100, 500), at(100, 500), true), "same instant");
        assert!(is_racy(t(100, 501), at(100, 500), true), "newer");
        assert!(is_racy(t(100, 0), at(100, 900), true), "whole seconds");
        assert!(!is_racy(t(99, 999), at(100, 0), true), "an earlier second");
        assert!(is_racy(t(101, 0), at(100, 999), true), "a later second");

        // The same, through the stat pass: files written before the index in its second.
        let dir = tempfile::tempdir().expect("tempdir");
        let w = dir.path();
        git(w, &["init", "-q"]);
        for f in ["a.txt", "d/b.txt"] {
            std::fs::create_dir_all(w.join(f).parent().expect("parent")).expect("mkdir");
            std::fs::write(w.join(f), f).expect("write");
        }
        git(w, &["add", "."]);
        let newest = ["a.txt", "d/b.txt"]
            .iter()
            .map(|f| {
                std::fs::metadata(w.join(f))
                    .and_then(|m| m.modified())
                    .expect("mtime")
            })
            .max()
            .expect("files");
        let secs = newest
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970");
        if secs.subsec_nanos() < 999_999_000 {
            // The index written one microsecond after the newest file, in its second.
            let index_time = newest + std::time::Duration::from_micros(1);
            std::fs::File::options()
                .append(true)
                .open(w.join(".git/index"))
                .and_then(|file| file.set_modified(index_time))
                .expect("set the index's mtime");
            assert_eq!(doubtful_paths(w), Vec::<String>::new(), "all proved");
        }
    }

    #[test]
    fn stat_times_are_truncated_like_the_index_and_pre_1970_is_zero() {
        assert_eq!(time(5, 7), Time { secs: 5, nsecs: 7 });
        assert_eq!(
            time((1 << 32) + 9, 1),
            Time { secs: 9, nsecs: 1 },
            "32-bit seconds"
        );
        assert_eq!(time(-1, 0), Time::default());
        assert_eq!(time(1, -1), Time::default());
    }

    #[test]
    fn folders_open_once_per_path_and_a_symlinked_folder_does_not_open() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("a/b")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("c")).expect("mkdir");
        std::os::unix::fs::symlink("a", dir.path().join("link")).expect("symlink");
        let root = openat(
            nix::fcntl::AT_FDCWD,
            dir.path(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            nix::sys::stat::Mode::empty(),
        )
        .expect("open root");
        let mut dirs = DirStack::new(root.as_fd());
        assert!(dirs.open(b"a/b".as_bstr()).is_some());
        assert_eq!(dirs.open.len(), 2);
        assert!(dirs.open(b"a".as_bstr()).is_some());
        assert_eq!(dirs.open.len(), 1, "a/b closed, a kept");
        assert!(dirs.open(b"c".as_bstr()).is_some());
        assert_eq!(dirs.open[0].0, b"c");
        assert!(dirs.open(b"".as_bstr()).is_some(), "the root");
        assert!(dirs.open(b"link/b".as_bstr()).is_none(), "O_NOFOLLOW");
        assert!(dirs.open(b"missing".as_bstr()).is_none());
    }
}
