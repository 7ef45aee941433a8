//! The secret scan started ahead of the export: the files a commit adds or changes since
//! the commit last exported, read from git's objects (`git diff-tree -r`, `git cat-file
//! --batch`) and scanned while the export moves to the commit and the scan of the export
//! builds its view. The scanner's start (gitleaks compiles its rules first: about 0.4 s)
//! then no longer waits for the export.
//!
//! It never decides alone. The scan of the export ([`super::scan::scan`]) hashes what the
//! export holds, and leaves to this scan only the files whose bytes (SHA-256, and the
//! extension they are scanned under) are the ones scanned here; anything else, such as a
//! file a checkout filter rewrote, is scanned there as before. What ships is what was
//! scanned.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use sha2::Digest;

use super::scan::{self, Verdict};
use crate::util::child::Child;

/// Most files a commit may change for its scan to start ahead; a larger change is scanned
/// from the export alone (its scan takes long enough that the scanner's start is noise).
const MOST_FILES: usize = 256;

/// Most bytes the files scanned ahead may hold together.
const MOST_BYTES: u64 = 32 << 20;

/// Longest one git command may take here.
const GIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A scan of a commit's new files, running on a thread of its own.
#[derive(Debug)]
pub struct Ahead {
    /// The content names ([`scan::ScanCache`]) of the files it scans.
    contents: HashSet<String>,
    /// The content name of each file it scans, by the commit's path.
    named: HashMap<String, String>,
    /// The scan; `None` once its answer was taken.
    scanning: Option<std::thread::JoinHandle<Verdict>>,
}

impl Ahead {
    /// Starts scanning, with the scanner `tool` (`auto`, a name or a path, as
    /// `scan.tool`) and the rules file `config`, the regular files that differ between the
    /// commits `from` and `to` (full ids) of the repository whose git folder is `git_dir`,
    /// in a fresh folder under `scratch`. Blocks only while the files are read from git
    /// (milliseconds).
    ///
    /// Returns `None`, having started nothing, when the scan is off or its scanner missing,
    /// when git cannot answer (`from` is not in the repository any more), when nothing but
    /// deletions, symlinks or submodules changed, or when more than [`MOST_FILES`] files
    /// or [`MOST_BYTES`] bytes changed: the scan of the export then does it all.
    pub fn start(
        tool: &str,
        config: Option<&Path>,
        git_dir: &Path,
        from: &str,
        to: &str,
        scratch: &Path,
    ) -> Option<Ahead> {
        if tool == "off" || from == to {
            return None;
        }
        let (name, binary) = scan::pick(tool).ok()?;
        let started = std::time::Instant::now();
        let blobs = changed_blobs(git_dir, from, to)?;
        if blobs.is_empty() || blobs.len() > MOST_FILES {
            return None;
        }
        let contents = cat_blobs(git_dir, &blobs)?;
        std::fs::create_dir_all(scratch).ok()?;
        let work = tempfile::Builder::new()
            .prefix("ahead-")
            .tempdir_in(scratch)
            .ok()?;
        let view = work.path().join("view");
        std::fs::create_dir(&view).ok()?;
        let mut named = HashMap::new();
        let mut paths = Vec::new();
        for ((path, _), bytes) in blobs.iter().zip(contents) {
            let n = paths.len();
            let ext = scan::view_extension(Path::new(path));
            let sha256 = hex::encode(sha2::Sha256::digest(&bytes));
            let file = view.join(scan::view_name(n, ext.as_deref()));
            std::fs::write(&file, &bytes).ok()?;
            if let Some(text) = scan::utf16_text(&file) {
                std::fs::write(view.join(format!("{n}.utf8")), text).ok()?;
            }
            named.insert(path.clone(), scan::content_name(&sha256, ext.as_deref()));
            paths.push(path.clone());
        }
        tracing::debug!(
            files = paths.len(),
            ms = started.elapsed().as_millis(),
            "scan: started ahead of the export"
        );
        let config = config.map(Path::to_path_buf);
        let scanning = std::thread::Builder::new()
            .name("scan-ahead".to_string())
            .spawn(move || {
                let verdict =
                    scan::run_scanner(&name, &binary, config.as_deref(), &view, work.path());
                drop(work);
                scan::findings_at(verdict, &paths)
            })
            .ok()?;
        Some(Ahead {
            contents: named.values().cloned().collect(),
            named,
            scanning: Some(scanning),
        })
    }

    /// The content names (`<sha256>.<ext>`, as [`scan::ScanCache`] names contents) of
    /// the files this scan reads.
    pub fn contents(&self) -> &HashSet<String> {
        &self.contents
    }

    /// The content name of each file it scans, by the commit's path (the path its
    /// findings name).
    pub fn named(&self) -> &HashMap<String, String> {
        &self.named
    }

    /// Waits for the scan and returns its answer, the findings named by the commit's
    /// paths. A scan thread that panicked answers [`Verdict::Failed`].
    pub fn verdict(mut self) -> Verdict {
        match self.scanning.take().map(std::thread::JoinHandle::join) {
            Some(Ok(verdict)) => verdict,
            _ => Verdict::Failed("the scan started ahead of the export stopped".to_string()),
        }
    }
}

impl Drop for Ahead {
    /// Waits for a scan whose answer was not taken, so that its scanner and folder are
    /// gone when the ship is: a thread outside the async runtime drops it.
    fn drop(&mut self) {
        if let Some(scanning) = self.scanning.take() {
            let _ = scanning.join();
        }
    }
}

/// The regular files (modes 100644 and 100755) that `to` adds or changes since `from`,
/// as (path, blob id), from `git diff-tree -r -z --no-renames` (git-diff-tree(1), "RAW
/// OUTPUT FORMAT"); `None` when git cannot answer.
fn changed_blobs(git_dir: &Path, from: &str, to: &str) -> Option<Vec<(String, String)>> {
    let mut command = Child::new("git", GIT_TIMEOUT);
    command.arg("--git-dir").arg(git_dir).args([
        "diff-tree",
        "-r",
        "-z",
        "--no-renames",
        "--raw",
        from,
        to,
    ]);
    let output = command.output_blocking().ok()?;
    if !output.status.success() {
        return None;
    }
    parse_raw(&output.stdout)
}

/// The added and changed regular files of `git diff-tree -r -z --raw` output, as (path,
/// new blob id); `None` when it is not that output.
fn parse_raw(raw: &[u8]) -> Option<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut fields = raw.split(|b| *b == 0).filter(|f| !f.is_empty());
    while let Some(meta) = fields.next() {
        let path = fields.next()?;
        let meta = std::str::from_utf8(meta).ok()?;
        let mut parts = meta.strip_prefix(':')?.split(' ');
        let (_, new_mode, _, new_id, status) = (
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
            parts.next()?,
        );
        if !matches!(new_mode, "100644" | "100755") || status.starts_with('D') {
            continue;
        }
        out.push((
            String::from_utf8_lossy(path).into_owned(),
            new_id.to_string(),
        ));
    }
    Some(out)
}

/// The bytes of each blob of `blobs`, in order, from one `git cat-file --batch-check` (the
/// sizes, checked against [`MOST_BYTES`]) and one `git cat-file --batch`
/// (git-cat-file(1), "BATCH OUTPUT"); `None` when git cannot answer or they are too big.
fn cat_blobs(git_dir: &Path, blobs: &[(String, String)]) -> Option<Vec<Vec<u8>>> {
    let ids: String = blobs.iter().map(|(_, id)| format!("{id}\n")).collect();
    let batch = |mode: &str| {
        let mut command = Child::new("git", GIT_TIMEOUT);
        command
            .arg("--git-dir")
            .arg(git_dir)
            .args(["cat-file", mode])
            .input(ids.clone().into_bytes());
        command
            .output_blocking()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| o.stdout)
    };
    let sizes = batch("--batch-check")?;
    let mut total = 0u64;
    for line in sizes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let size: u64 = std::str::from_utf8(line.rsplit(|b| *b == b' ').next()?)
            .ok()?
            .parse()
            .ok()?;
        total += size;
    }
    if total > MOST_BYTES {
        return None;
    }
    split_batch(&batch("--batch")?, blobs.len())
}

/// The contents of `count` objects in `git cat-file --batch` output (`<id> <type>
/// <size>\n<bytes>\n` each); `None` when it is not that output.
fn split_batch(mut out: &[u8], count: usize) -> Option<Vec<Vec<u8>>> {
    let mut contents = Vec::with_capacity(count);
    for _ in 0..count {
        let end = out.iter().position(|b| *b == b'\n')?;
        let header = std::str::from_utf8(&out[..end]).ok()?;
        let mut parts = header.split(' ');
        let (_, kind, size) = (parts.next()?, parts.next()?, parts.next()?);
        let size: usize = size.parse().ok()?;
        if kind != "blob" {
            return None;
        }
        let body = out.get(end + 1..end + 1 + size)?;
        contents.push(body.to_vec());
        out = out.get(end + 2 + size..)?;
    }
    Some(contents)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_added_and_changed_regular_files_are_read() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let z = "0".repeat(40);
        let raw = format!(
            ":100644 100644 {a} {b} M\0web/index.html\0:000000 100755 {z} {b} A\0run.sh\0\
             :100644 000000 {a} {z} D\0gone.txt\0:000000 120000 {z} {b} A\0link\0\
             :000000 160000 {z} {b} A\0sub\0:100644 100644 {a} {b} T\0a b.txt\0"
        );
        let found = parse_raw(raw.as_bytes()).expect("raw output");
        assert_eq!(
            found,
            vec![
                ("web/index.html".to_string(), b.clone()),
                ("run.sh".to_string(), b.clone()),
                ("a b.txt".to_string(), b.clone()),
            ]
        );
        assert_eq!(parse_raw(b"not raw\0path\0"), None);
        assert_eq!(parse_raw(b""), Some(Vec::new()));
    }

    #[test]
    fn a_batch_is_split_by_its_sizes_and_a_short_one_is_refused() {
        let a = "a".repeat(40);
        let out = format!("{a} blob 3\nx\ny\n{a} blob 0\n\n");
        assert_eq!(
            split_batch(out.as_bytes(), 2),
            Some(vec![b"x\ny".to_vec(), Vec::new()])
        );
        assert_eq!(split_batch(out.as_bytes(), 3), None);
        assert_eq!(split_batch(format!("{a} missing\n").as_bytes(), 1), None);
        assert_eq!(
            split_batch(format!("{a} blob 9\nshort\n").as_bytes(), 1),
            None
        );
    }
}
