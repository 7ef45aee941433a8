//! The fast-forward's journal, `gitsync/ff/journal` in the worktree's git folder: written
//! before anything of the user's is touched, one line per step *before* the step is done,
//! so that [`super::recover`] can always put the worktree wholly at one of the two commits.
//!
//! The format is ours (line-oriented text): a header (`pid N`, `branch REF`, `from ID`,
//! `to ID`), then `lock INO` (the inode of the `index.lock` about to be taken), the steps
//! (paths hex-encoded, so any byte may appear in a file name) and `ref` once the branch
//! moved. This module must not touch the worktree.

use super::FfError;
use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// What identifies a file's content without reading it: a save changes the inode (write
/// then rename), the size (append) or the modification time (rewrite in place).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Sig {
    pub ino: u64,
    pub size: u64,
    /// Modification time in nanoseconds since the epoch.
    pub mtime: i128,
    /// The `S_IFMT` bits of the mode.
    pub kind: u32,
}

impl Sig {
    /// The signature of what is at `path` (not following a symlink), if anything.
    pub fn of(path: &Path) -> Option<Sig> {
        path.symlink_metadata().ok().map(|m| Sig::from_meta(&m))
    }

    /// The signature in `m`.
    pub fn from_meta(m: &std::fs::Metadata) -> Sig {
        Sig {
            ino: m.ino(),
            size: m.size(),
            mtime: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            kind: m.mode() & 0o170000,
        }
    }

    fn encode(&self) -> String {
        format!("{} {} {} {}", self.ino, self.size, self.mtime, self.kind)
    }

    fn decode(words: &[&str]) -> Option<Sig> {
        Some(Sig {
            ino: words.first()?.parse().ok()?,
            size: words.get(1)?.parse().ok()?,
            mtime: words.get(2)?.parse().ok()?,
            kind: words.get(3)?.parse().ok()?,
        })
    }
}

/// One step done to the worktree, journaled *before* it is done (a kill between the two
/// leaves a line for a step that may not have happened, never the reverse; undoing a step
/// that did not happen does nothing).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Step {
    /// The file at the path was moved to `old/<path>`; its signature when it was checked.
    Out(PathBuf, Sig),
    /// The staged `new/<path>` and the file at the path were exchanged in one
    /// `renameat2(RENAME_EXCHANGE)`: the old file (its signature when checked) now waits in
    /// `new/<path>`, and the new file (its signature when staged) is at the path.
    Swap(PathBuf, Sig, Sig),
    /// An emptied folder was removed.
    Rmdir(PathBuf),
    /// A folder was created.
    Mkdir(PathBuf),
    /// The new file was renamed in; its signature.
    In(PathBuf, Sig),
}

fn hex_path(path: &Path) -> String {
    hex::encode(path.as_os_str().as_bytes())
}

fn unhex_path(text: &str) -> Option<PathBuf> {
    let bytes = hex::decode(text).ok()?;
    Some(PathBuf::from(OsStr::from_bytes(&bytes)))
}

impl Step {
    pub fn encode(&self) -> String {
        match self {
            Step::Out(p, sig) => format!("out {} {}", hex_path(p), sig.encode()),
            Step::Swap(p, old, new) => {
                format!("swap {} {} {}", hex_path(p), old.encode(), new.encode())
            }
            Step::Rmdir(p) => format!("rmdir {}", hex_path(p)),
            Step::Mkdir(p) => format!("mkdir {}", hex_path(p)),
            Step::In(p, sig) => format!("in {} {}", hex_path(p), sig.encode()),
        }
    }

    pub fn decode(line: &str) -> Option<Step> {
        let words: Vec<&str> = line.split(' ').collect();
        let path = unhex_path(words.get(1)?)?;
        match *words.first()? {
            "out" => Some(Step::Out(path, Sig::decode(words.get(2..)?)?)),
            "swap" => Some(Step::Swap(
                path,
                Sig::decode(words.get(2..6)?)?,
                Sig::decode(words.get(6..10)?)?,
            )),
            "rmdir" => Some(Step::Rmdir(path)),
            "mkdir" => Some(Step::Mkdir(path)),
            "in" => Some(Step::In(path, Sig::decode(words.get(2..)?)?)),
            _ => None,
        }
    }
}

/// The journal as read back by [`super::recover`].
#[derive(Debug)]
pub(super) struct Journal {
    pub pid: i32,
    pub lock_ino: u64,
    pub branch: String,
    pub to: String,
    pub steps: Vec<Step>,
    pub ref_moved: bool,
}

impl Journal {
    /// Reads a journal's text. A line cut short by a kill is skipped.
    ///
    /// Errors: a message when the header (the `pid` line) is missing.
    pub fn parse(text: &str) -> Result<Journal, FfError> {
        let mut journal = Journal {
            pid: 0,
            lock_ino: 0,
            branch: String::new(),
            to: String::new(),
            steps: Vec::new(),
            ref_moved: false,
        };
        for line in text.lines() {
            if let Some(pid) = line.strip_prefix("pid ") {
                journal.pid = pid.trim().parse().unwrap_or(0);
            } else if let Some(ino) = line.strip_prefix("lock ") {
                journal.lock_ino = ino.trim().parse().unwrap_or(0);
            } else if let Some(branch) = line.strip_prefix("branch ") {
                journal.branch = branch.trim().to_string();
            } else if let Some(to) = line.strip_prefix("to ") {
                journal.to = to.trim().to_string();
            } else if line == "ref" {
                journal.ref_moved = true;
            } else if let Some(step) = Step::decode(line) {
                journal.steps.push(step);
            }
        }
        if journal.pid == 0 {
            return Err(FfError::Journal(
                "the journal of an interrupted fast-forward is unreadable".to_string(),
            ));
        }
        Ok(journal)
    }
}

/// The journal being written. Each line is one `write(2)`: a process kill never loses a
/// line that was written (the page cache outlives the process).
pub(super) struct Writer {
    file: fs::File,
}

impl Writer {
    /// Creates the journal at `path` with its header, written aside and renamed into place,
    /// so a journal that exists always names its process.
    ///
    /// Errors: the I/O error, with the path.
    pub fn create(path: &Path, header: &str) -> Result<Writer, FfError> {
        let aside = path.with_extension("new");
        let write = || -> std::io::Result<fs::File> {
            let mut file = fs::File::create(&aside)?;
            file.write_all(header.as_bytes())?;
            fs::rename(&aside, path)?;
            Ok(file)
        };
        write().map(|file| Writer { file }).map_err(|e| {
            FfError::Journal(format!("cannot write the journal {}: {e}", path.display()))
        })
    }

    /// Appends one line.
    ///
    /// Errors: the I/O error (a full disk): the caller stops before doing the step.
    pub fn line(&mut self, line: &str) -> Result<(), FfError> {
        self.lines(&[line])
    }

    /// Appends `lines`, one after another, in one write.
    ///
    /// Errors: the I/O error (a full disk): the caller stops before doing any of the steps.
    pub fn lines<S: AsRef<str>>(&mut self, lines: &[S]) -> Result<(), FfError> {
        let mut buf = Vec::with_capacity(lines.iter().map(|l| l.as_ref().len() + 1).sum());
        for line in lines {
            buf.extend_from_slice(line.as_ref().as_bytes());
            buf.push(b'\n');
        }
        self.file
            .write_all(&buf)
            .map_err(|e| FfError::Journal(format!("cannot write the journal: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_steps_round_trip_any_path_bytes() {
        let sig = Sig {
            ino: 42,
            size: 7,
            mtime: -5,
            kind: 0o100000,
        };
        let path = PathBuf::from(OsStr::from_bytes(b"we ird/\xff name"));
        for step in [
            Step::Out(path.clone(), sig),
            Step::Swap(path.clone(), sig, Sig { ino: 99, ..sig }),
            Step::In(path.clone(), sig),
            Step::Mkdir(path.clone()),
            Step::Rmdir(path.clone()),
        ] {
            assert_eq!(Step::decode(&step.encode()), Some(step));
        }
        let journal = Journal::parse(&format!(
            "pid 12\nlock 9\n{}\nref\nswap 61 1",
            Step::Mkdir(path).encode()
        ))
        .expect("parse");
        assert_eq!(
            (journal.pid, journal.lock_ino, journal.ref_moved),
            (12, 9, true)
        );
        // The cut-short last line is skipped.
        assert_eq!(journal.steps.len(), 1);
    }

    #[test]
    fn a_journal_without_its_header_is_an_error() {
        assert!(Journal::parse("lock 3\n").is_err());
    }
}
