//! A release sent as a delta: what differs between the export and the hard-linked copy of
//! the live release on the target, decided while the secret scan runs, so that after the
//! scan passes only the changed entries cross (`rsync --files-from`), with no walk of the
//! whole tree on either side.
//!
//! Before the scan's answer nothing of the new commit leaves this machine: the target lists
//! its copy to us (GNU `find -printf`), the export is listed here (rsync's own dry run, so
//! the excludes mean what they mean to rsync), and the copy loses what the new release does
//! not hold (names the target already had). The quick check is rsync's (rsync(1), "quick
//! check"): a file whose type, size, modification time (to the nanosecond, as
//! `--modify-window=-1`) and permission bits match is unchanged; a symlink whose target
//! matches is unchanged; a folder is sent again when its bits or time differ, or when
//! anything in it changes, so that its time ends as the export's. Owners are not compared
//! (a copy keeps them, and rsync sets them on what it sends).

use super::DeployError;
use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The `find` action that lists a copy: for each entry under the current folder, its type
/// (`f`, `d`, `l`, ...), permission bits (octal), size (bytes), modification time (seconds
/// with a fraction), path, a NUL, the symlink target (empty for others), a NUL; `end` and
/// a NUL after the last, so a listing cut short or a `find` without `-printf` (BusyBox) is
/// told from an empty one.
pub const LISTING: &str = "find . -mindepth 1 -printf '%y %m %s %T@ %P\\0%l\\0' && printf 'end\\0'";

/// One entry of the copy on the target, as [`LISTING`] gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// `f` a file, `d` a folder, `l` a symlink, anything else another kind.
    pub kind: u8,
    /// Permission bits (`0o7777` at most).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time in nanoseconds since the epoch; `None` when it cannot be read
    /// (then the entry always differs).
    pub mtime_ns: Option<i128>,
    /// The symlink's target (empty for other kinds).
    pub link: Vec<u8>,
}

/// Reads a listing printed by [`LISTING`]: entries by path (relative to the copy).
/// `None` when it is not whole (no `end`) or a record is malformed.
pub fn parse_listing(bytes: &[u8]) -> Option<HashMap<Vec<u8>, Remote>> {
    let body = bytes.strip_suffix(b"end\0")?;
    let mut fields = body.split(|b| *b == 0);
    let mut out = HashMap::new();
    while let Some(head) = fields.next() {
        if head.is_empty() {
            // The split after the last record's NUL.
            if fields.next().is_some() {
                return None;
            }
            break;
        }
        let link = fields.next()?.to_vec();
        let mut parts = head.splitn(5, |b| *b == b' ');
        let kind = *parts.next()?.first()?;
        let mode = u32::from_str_radix(std::str::from_utf8(parts.next()?).ok()?, 8).ok()?;
        let size = std::str::from_utf8(parts.next()?).ok()?.parse().ok()?;
        let mtime_ns = std::str::from_utf8(parts.next()?).ok().and_then(seconds_ns);
        let path = parts.next()?.to_vec();
        if path.is_empty() {
            return None;
        }
        out.insert(
            path,
            Remote {
                kind,
                mode: mode & 0o7777,
                size,
                mtime_ns,
                link,
            },
        );
    }
    Some(out)
}

/// `find`'s `%T@` (`1796412306.0212858480`) in nanoseconds; `None` for anything else,
/// times before 1970 included.
fn seconds_ns(text: &str) -> Option<i128> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nanos: String = frac.chars().take(9).collect();
    while nanos.len() < 9 {
        nanos.push('0');
    }
    Some(secs.parse::<i128>().ok()? * 1_000_000_000 + nanos.parse::<i128>().ok()?)
}

/// What to do to the copy to make it the new release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Paths to remove from the copy first (`rm -rf`): gone from the export, of another
    /// kind now, or a file whose bits alone changed (rsync would change those in place, in
    /// the inode the live release shares). A folder's entries are not listed after it.
    pub remove: Vec<PathBuf>,
    /// Paths to send (`rsync --files-from`), `.` (the release's own folder) first when
    /// anything is.
    pub send: Vec<PathBuf>,
}

/// The plan that turns the copy listed in `remote` into the export at `export`, whose
/// entries (kind `f`, `d` or `L`, and path, as rsync lists them) are `entries`. With
/// `keep_git`, the copy's `.git` is left alone (it is shipped on its own).
///
/// Errors: an entry of the export that cannot be read.
pub fn plan(
    export: &Path,
    entries: &[(u8, PathBuf)],
    remote: &HashMap<Vec<u8>, Remote>,
    keep_git: bool,
) -> Result<Plan, DeployError> {
    let mut remove = BTreeSet::new();
    let mut send = BTreeSet::new();
    let mut wanted = std::collections::HashSet::new();
    for (kind, rel) in entries {
        let key = rel.as_os_str().as_bytes();
        wanted.insert(key);
        let full = export.join(rel);
        let meta = std::fs::symlink_metadata(&full).map_err(DeployError::io(&full))?;
        let mode = meta.permissions().mode() & 0o7777;
        let mtime_ns = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
        let Some(there) = remote.get(key) else {
            send.insert(rel.clone());
            continue;
        };
        let same_kind = matches!(
            (kind, there.kind),
            (b'f', b'f') | (b'd', b'd') | (b'L', b'l')
        );
        if !same_kind {
            remove.insert(rel.clone());
            send.insert(rel.clone());
            continue;
        }
        match kind {
            b'L' => {
                let target = std::fs::read_link(&full).map_err(DeployError::io(&full))?;
                if target.as_os_str().as_bytes() != there.link.as_slice() {
                    send.insert(rel.clone());
                }
            }
            b'd' => {
                if there.mode != mode || there.mtime_ns != Some(mtime_ns) {
                    send.insert(rel.clone());
                }
            }
            _ => {
                if there.size != meta.len() || there.mtime_ns != Some(mtime_ns) {
                    send.insert(rel.clone());
                } else if there.mode != mode {
                    remove.insert(rel.clone());
                    send.insert(rel.clone());
                }
            }
        }
    }
    for path in remote.keys() {
        if wanted.contains(path.as_slice()) {
            continue;
        }
        if keep_git && (path == b".git" || path.starts_with(b".git/")) {
            continue;
        }
        remove.insert(PathBuf::from(OsString::from_vec(path.clone())));
    }
    // A folder removed takes its entries with it.
    let mut pruned: Vec<PathBuf> = Vec::with_capacity(remove.len());
    for path in remove {
        if pruned.last().is_some_and(|dir| path.starts_with(dir)) {
            continue;
        }
        pruned.push(path);
    }
    // Writing into a folder moves its time: each folder written into is sent again, so
    // that rsync sets its time back to the export's at the end.
    let parents: Vec<PathBuf> = send
        .iter()
        .chain(pruned.iter())
        .filter_map(|p| p.parent().map(Path::to_path_buf))
        .filter(|p| !p.as_os_str().is_empty())
        .collect();
    send.extend(parents);
    let mut send: Vec<PathBuf> = send.into_iter().collect();
    if !send.is_empty() || !pruned.is_empty() {
        send.insert(0, PathBuf::from("."));
    }
    Ok(Plan {
        remove: pruned,
        send,
    })
}

/// `paths` as one NUL-terminated list (rsync's `--from0`, `xargs -0`).
pub fn nul_list(paths: &[PathBuf]) -> Vec<u8> {
    let mut out = Vec::new();
    for path in paths {
        out.extend_from_slice(path.as_os_str().as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listing(records: &[(&str, &str)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (head, link) in records {
            out.extend_from_slice(head.as_bytes());
            out.push(0);
            out.extend_from_slice(link.as_bytes());
            out.push(0);
        }
        out.extend_from_slice(b"end\0");
        out
    }

    #[test]
    fn a_listing_is_read_only_when_whole() {
        let bytes = listing(&[
            ("f 644 2 1796412306.0212858480 d/a b", ""),
            ("l 777 3 1796412306.5 l", "d/a"),
            ("d 2755 4096 12 d", ""),
        ]);
        let read = parse_listing(&bytes).expect("whole");
        assert_eq!(read.len(), 3);
        let file = &read[b"d/a b".as_slice()];
        assert_eq!((file.kind, file.mode, file.size), (b'f', 0o644, 2));
        assert_eq!(file.mtime_ns, Some(1_796_412_306_021_285_848));
        assert_eq!(read[b"l".as_slice()].link, b"d/a");
        assert_eq!(
            read[b"l".as_slice()].mtime_ns,
            Some(1_796_412_306_500_000_000)
        );
        assert_eq!(read[b"d".as_slice()].mode, 0o2755);
        assert_eq!(parse_listing(b"end\0").map(|m| m.len()), Some(0));
        assert!(
            parse_listing(&bytes[..bytes.len() - 4]).is_none(),
            "cut short"
        );
        assert!(parse_listing(b"f 644 x 1 a\0\0end\0").is_none(), "bad size");
        assert!(parse_listing(b"find: unknown predicate `-printf'\n").is_none());
    }

    #[test]
    fn only_what_differs_is_sent_and_what_is_gone_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let export = dir.path();
        std::fs::create_dir_all(export.join("d/sub")).expect("mkdir");
        std::fs::write(export.join("d/same"), "same").expect("write");
        std::fs::write(export.join("d/changed"), "new content").expect("write");
        std::fs::write(export.join("d/chmod"), "x").expect("write");
        std::fs::write(export.join("new"), "n").expect("write");
        std::os::unix::fs::symlink("d/same", export.join("link")).expect("symlink");
        let stat = |p: &str| {
            let m = std::fs::symlink_metadata(export.join(p)).expect("stat");
            (
                m.permissions().mode() & 0o7777,
                m.len(),
                Some(i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec())),
            )
        };
        let mut remote = HashMap::new();
        let mut put =
            |path: &str, kind: u8, (mode, size, mtime_ns): (u32, u64, Option<i128>), link: &str| {
                remote.insert(
                    path.as_bytes().to_vec(),
                    Remote {
                        kind,
                        mode,
                        size,
                        mtime_ns,
                        link: link.as_bytes().to_vec(),
                    },
                );
            };
        put("d", b'd', stat("d"), "");
        put("d/sub", b'd', stat("d/sub"), "");
        put("d/same", b'f', stat("d/same"), "");
        let (mode, size, time) = stat("d/changed");
        put("d/changed", b'f', (mode, size - 1, time), "");
        let (mode, size, time) = stat("d/chmod");
        put("d/chmod", b'f', (mode ^ 0o100, size, time), "");
        put("link", b'l', stat("link"), "d/other");
        put("gone", b'd', stat("d"), "");
        put("gone/x", b'f', stat("d/same"), "");
        put(".git", b'd', stat("d"), "");
        put(".git/HEAD", b'f', stat("d/same"), "");
        let entries: Vec<(u8, PathBuf)> = [
            (b'd', "d"),
            (b'd', "d/sub"),
            (b'f', "d/same"),
            (b'f', "d/changed"),
            (b'f', "d/chmod"),
            (b'f', "new"),
            (b'L', "link"),
        ]
        .into_iter()
        .map(|(k, p)| (k, PathBuf::from(p)))
        .collect();
        let names = |v: &[PathBuf]| {
            v.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
        };
        let with_git = plan(export, &entries, &remote, false).expect("plan");
        assert_eq!(names(&with_git.remove), [".git", "d/chmod", "gone"]);
        assert_eq!(
            names(&with_git.send),
            [".", "d", "d/changed", "d/chmod", "link", "new"]
        );
        let keeping_git = plan(export, &entries, &remote, true).expect("plan");
        assert_eq!(names(&keeping_git.remove), ["d/chmod", "gone"]);
        let nothing = plan(export, &entries[..3], &remote, true).expect("plan");
        assert!(!nothing.send.iter().any(|p| p.as_os_str() == "d/same"));
    }
}
