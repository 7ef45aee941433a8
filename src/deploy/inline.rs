//! Small changes sent through the session that holds the target's lock
//! ([`super::target_lock::TargetLock::run_bytes`]) instead of a new rsync session. A ship
//! after a one-file commit sends a few kilobytes; an rsync of them costs a second ssh
//! session (a login shell on the target, its start-up files, two rsync processes and
//! their handshake), which is most of what the ship does after the gate.
//!
//! The result is what rsync `-a` leaves: each file is written to a temporary name beside
//! its place and renamed over it (`mv -T`: never into a folder of that name, and never a
//! write into an inode that other releases share), with the export's bytes, permission
//! bits and modification time to the nanosecond, and
//! the owner and group of the file it replaces (or of its folder, for a new file), as
//! rsync run by the same user gives them. Folders get the export's bits and times last,
//! deepest first. Only regular files and folders go this way, at most [`MOST_FILES`]
//! files and [`MOST_BYTES`] bytes; anything else goes by rsync.
//!
//! The target needs GNU `touch -d @SECONDS.NANOSECONDS` (checked by the preparation,
//! [`PROBE`]); the bytes travel as `printf` octal escapes (POSIX), so nothing else is
//! needed.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use super::DeployError;
use super::ssh::quote;

/// Most files sent this way in one ship.
pub const MOST_FILES: usize = 64;

/// Most bytes (of the files' contents) sent this way in one ship.
pub const MOST_BYTES: u64 = 64 * 1024;

/// A shell snippet that prints `inline` when the target can take changes this way (GNU
/// `touch` reads `-d @SECONDS.NANOSECONDS`; `-c` creates nothing).
pub const PROBE: &str = "if touch -c -m -d @1.000000001 ./.gitsync-probe-that-does-not-exist 2>/dev/null; then echo inline; fi";

/// The script that writes the paths `send` (relative to `export`, as [`super::delta::Plan`]
/// lists them: files, and folders to set again) into the current folder of a shell on the
/// target, and the number of bytes it is. `mark` makes the temporary names unique.
///
/// Returns `None` when they cannot go this way: a symlink or another kind of entry among
/// them, more than [`MOST_FILES`] files or [`MOST_BYTES`] bytes, or a time before 1970.
///
/// Errors: an entry of the export cannot be read, or a path cannot be quoted.
pub fn script(
    export: &Path,
    send: &[PathBuf],
    mark: &str,
) -> Result<Option<(String, u64)>, DeployError> {
    let mut files = Vec::new();
    let mut folders = std::collections::BTreeSet::new();
    let mut bytes = 0u64;
    for rel in send {
        // A name that is not UTF-8 goes by rsync.
        if rel.to_str().is_none() {
            return Ok(None);
        }
        let full = export.join(rel);
        let meta = std::fs::symlink_metadata(&full).map_err(DeployError::io(&full))?;
        if meta.is_dir() {
            folders.insert(rel.clone());
        } else if meta.is_file() {
            bytes += meta.len();
            files.push((rel.clone(), meta));
        } else {
            return Ok(None);
        }
        for parent in rel.ancestors().skip(1) {
            folders.insert(match parent.as_os_str().is_empty() {
                true => PathBuf::from("."),
                false => parent.to_path_buf(),
            });
        }
    }
    if files.len() > MOST_FILES || bytes > MOST_BYTES {
        return Ok(None);
    }
    let mut out = String::from("set -e\n");
    // Folders the export has and the target lacks are made parents first, owned as their
    // parent is.
    for folder in folders.iter().filter(|f| f.as_os_str() != ".") {
        let d = quoted(folder)?;
        let parent = quoted(&parent_of(folder))?;
        out.push_str(&format!(
            "if [ ! -d {d} ]; then mkdir {d}; chown -h --reference={parent} {d} 2>/dev/null || true; fi\n"
        ));
    }
    for (n, (rel, meta)) in files.iter().enumerate() {
        let Some(time) = touch_time(meta) else {
            return Ok(None);
        };
        let full = export.join(rel);
        let content = std::fs::read(&full).map_err(DeployError::io(&full))?;
        let dest = quoted(rel)?;
        let temp = quoted(&parent_of(rel).join(format!(".gitsync-inline-{mark}-{n}")))?;
        let parent = quoted(&parent_of(rel))?;
        out.push_str(&format!(": > {temp}\n"));
        for chunk in content.chunks(4096) {
            out.push_str(&format!("printf '{}' >> {temp}\n", escaped(chunk)));
        }
        out.push_str(&format!(
            "chmod {mode:o} {temp}\ntouch -m -d @{time} {temp}\n\
             if [ -e {dest} ]; then chown -h --reference={dest} {temp} 2>/dev/null || true; \
             else chown -h --reference={parent} {temp} 2>/dev/null || true; fi\n\
             mv -fT {temp} {dest}\n",
            mode = meta.mode() & 0o7777,
        ));
    }
    // Writing into a folder moves its time: folders are set last, deepest first.
    for folder in folders.iter().rev() {
        let full = export.join(folder);
        let meta = std::fs::symlink_metadata(&full).map_err(DeployError::io(&full))?;
        let Some(time) = touch_time(&meta) else {
            return Ok(None);
        };
        let d = quoted(folder)?;
        out.push_str(&format!(
            "chmod {mode:o} {d}\ntouch -m -d @{time} {d}\n",
            mode = meta.mode() & 0o7777
        ));
    }
    let size = out.len() as u64;
    Ok(Some((out, size)))
}

/// The folder holding `rel`: `.` for a top-level entry.
fn parent_of(rel: &Path) -> PathBuf {
    match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// `rel` quoted for the shell, as `./<rel>` so that no path reads as an option.
///
/// Errors: `rel` is not UTF-8 ([`script`] sends such names by rsync).
fn quoted(rel: &Path) -> Result<String, DeployError> {
    let text = std::str::from_utf8(rel.as_os_str().as_bytes())
        .map_err(|_| DeployError::Unquotable(rel.display().to_string()))?;
    match text {
        "." => Ok(".".to_string()),
        _ => quote(&format!("./{text}")),
    }
}

/// The modification time of `meta` as GNU `touch -d @` reads it: `SECONDS.NANOSECONDS`;
/// `None` before 1970 (where the two parts would read differently).
fn touch_time(meta: &std::fs::Metadata) -> Option<String> {
    (meta.mtime() >= 0).then(|| format!("{}.{:09}", meta.mtime(), meta.mtime_nsec()))
}

/// `bytes` as the text of a `printf` format in single quotes: letters, digits and a few
/// safe marks as they are, every other byte (`%`, `\`, `'`, controls, non-ASCII) as a
/// three-digit octal escape (POSIX printf).
fn escaped(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || b" .,_/:=+-<>()[]{};!?@#*~^|&\"".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\{b:03o}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value, through the escape and a real `sh` with its `printf`, comes back
    /// as it was.
    #[test]
    fn every_byte_comes_back_through_printf() {
        let mut rng = fastrand::Rng::with_seed(22);
        for case in 0..50 {
            let bytes: Vec<u8> = match case {
                0 => (0..=255u8).collect(),
                1 => b"100% \\n 'quoted' \"double\" $HOME `tick` \x00 end".to_vec(),
                _ => (0..rng.usize(..600)).map(|_| rng.u8(..)).collect(),
            };
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '{}'", escaped(&bytes)))
                .output()
                .expect("sh");
            assert!(out.status.success(), "case {case}");
            assert_eq!(out.stdout, bytes, "case {case}");
        }
    }

    #[test]
    fn only_small_changes_of_files_and_folders_go_this_way() {
        let dir = tempfile::tempdir().expect("tmp");
        let export = dir.path();
        std::fs::create_dir_all(export.join("a b")).expect("mkdir");
        std::fs::write(export.join("a b/x.txt"), "x\n").expect("write");
        std::fs::write(export.join("big.bin"), vec![7u8; MOST_BYTES as usize + 1]).expect("write");
        std::os::unix::fs::symlink("x.txt", export.join("a b/link")).expect("symlink");
        let send = |paths: &[&str]| -> Vec<PathBuf> { paths.iter().map(PathBuf::from).collect() };
        let (text, size) = script(export, &send(&[".", "a b", "a b/x.txt"]), "m")
            .expect("script")
            .expect("small");
        assert_eq!(size, text.len() as u64);
        assert!(
            text.contains("mv -fT './a b/.gitsync-inline-m-0' './a b/x.txt'"),
            "{text}"
        );
        assert!(
            text.find("mv -fT").expect("mv") < text.find("chmod 755 './a b'").expect("folder"),
            "folders are set after the files: {text}"
        );
        assert_eq!(
            script(export, &send(&[".", "big.bin"]), "m").expect("script"),
            None
        );
        assert_eq!(
            script(export, &send(&["a b/link"]), "m").expect("script"),
            None
        );
    }
}
