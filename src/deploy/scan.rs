//! The secret gate before a ship: the exported tree is scanned, and anything but a clean
//! answer from a real scanner blocks the ship (it fails closed).
//!
//! - gitleaks (`gitleaks dir`, v8.19 or newer): `--exit-code 2` so that 1 means an error,
//!   an explicit `-c` config so a repository's own `.gitleaks.toml` cannot switch the rules
//!   off, `--ignore-gitleaks-allow`, a JSON report in a file (gitleaks `cmd/root.go`,
//!   `cmd/directory.go`).
//! - kingfisher (`kingfisher scan DIR --git-history none --no-validate -f json`): 0 clean,
//!   200 findings, 205 validated findings, anything else an error (its README).
//! - detect-secrets (`detect-secrets scan --all-files DIR`): always exits 0; the JSON
//!   `results` map is the answer.
//!
//! Every scanner reads a view of the tree in which no path of the tree appears (see
//! [`View`]), so the allowlists built into the scanners and a committed `.gitleaksignore`
//! switch nothing off, and UTF-16 files are also read as UTF-8.
//!
//! `auto` picks the first of them on `PATH`; `scan.tool` may also be a scanner's path (a
//! systemd unit's `PATH` has neither `~/.local/bin` nor a virtualenv). Only `off` ships
//! without a scan.

use super::DeployError;
use std::path::{Path, PathBuf};

pub use super::ahead::Ahead;
use crate::config::deploy::kind_of_path;
use crate::util::child::Child;

/// One secret found: where, and by which rule (the secret itself is never kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Path relative to the exported tree.
    pub file: String,
    /// 1-based line.
    pub line: u64,
    /// The scanner's rule id, such as `aws-access-token`.
    pub rule: String,
}

/// Why a ship is blocked, or that it may go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The scanner ran and found nothing.
    Clean {
        /// The scanner.
        tool: String,
    },
    /// Every file was scanned clean before, by the same scanner, version and rules
    /// ([`ScanCache`]): the scanner did not run.
    CleanBefore {
        /// The scanner.
        tool: String,
        /// How many files (contents) the tree has.
        files: usize,
    },
    /// `scan.tool: off`.
    Off,
    /// Secrets found: blocked.
    Found {
        /// The scanner.
        tool: String,
        /// What it found.
        findings: Vec<Finding>,
    },
    /// The scanner is missing, crashed, exited with an unexpected code, or wrote a report
    /// that cannot be read: blocked.
    Failed(String),
}

impl Verdict {
    /// Whether the ship may go on.
    pub fn passes(&self) -> bool {
        matches!(
            self,
            Verdict::Clean { .. } | Verdict::CleanBefore { .. } | Verdict::Off
        )
    }

    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Verdict::Clean { tool } => format!("{tool}: no secrets found"),
            Verdict::CleanBefore { tool, files } => format!(
                "{tool}: no secrets found (all {files} files scanned clean before by the same scanner and rules)"
            ),
            Verdict::Off => "secret scan off (scan.tool: off): shipped unscanned".to_string(),
            Verdict::Found { tool, findings } => {
                let list: Vec<String> = findings
                    .iter()
                    .take(10)
                    .map(|f| format!("{}:{} ({})", f.file, f.line, f.rule))
                    .collect();
                format!(
                    "{tool} found {} secret{} (values redacted): {}{}; nothing was shipped",
                    findings.len(),
                    if findings.len() == 1 { "" } else { "s" },
                    list.join(", "),
                    if findings.len() > 10 { ", ..." } else { "" }
                )
            }
            Verdict::Failed(why) => format!("secret scan failed, so nothing was shipped: {why}"),
        }
    }
}

/// The gitleaks rules used when the config names none: gitleaks' own defaults, with
/// nothing switched off.
pub const DEFAULT_GITLEAKS_CONFIG: &str = "# gitsync's gitleaks rules: gitleaks' defaults, nothing switched off.\n[extend]\nuseDefault = true\n";

/// Where `name` is on `PATH`, if anywhere.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
}

/// The scanner `tool` names (`auto`: the first installed; a path: that program), or why
/// there is none.
pub fn pick(tool: &str) -> Result<(String, PathBuf), DeployError> {
    if let Some(kind) = kind_of_path(tool) {
        let path = crate::config::expand_tilde(tool);
        let runnable = std::fs::metadata(&path).is_ok_and(|m| {
            use std::os::unix::fs::PermissionsExt;
            m.is_file() && m.permissions().mode() & 0o111 != 0
        });
        return if runnable {
            Ok((kind.to_string(), path))
        } else {
            Err(DeployError::Scanner(format!(
                "scan.tool {}: no program there (install the scanner there, or fix the path)",
                path.display()
            )))
        };
    }
    let candidates: Vec<&str> = match tool {
        "auto" => vec!["gitleaks", "kingfisher", "detect-secrets"],
        other => vec![other],
    };
    for name in &candidates {
        if let Some(path) = on_path(name) {
            return Ok((name.to_string(), path));
        }
    }
    Err(DeployError::Scanner(format!(
        "no secret scanner found on PATH (looked for {}; a systemd unit's PATH has neither ~/.local/bin nor a virtualenv): install gitleaks (see the README), or set scan.tool to its path, such as ~/.local/bin/gitleaks",
        candidates.join(", ")
    )))
}

/// Scans `tree` with `tool` (`auto`, a scanner's name, or `off`); `config`: the rules file
/// (gitleaks and kingfisher); `scratch`: a folder for the report and the default rules.
/// With `cache` (a file), only the files whose content was not scanned clean before by the
/// same scanner, version and rules are scanned ([`ScanCache`]); a clean scan adds them,
/// after telling `tell.passed` (so that a ship can go on while the cache is written).
/// With `ahead` (the commit's new files, scanned from git's objects while the export moved:
/// [`Ahead`]), a file whose content it holds is left to its answer rather than scanned
/// again; an answer that is neither clean nor a finding scans the whole tree without it.
/// `tell` hears of the scan's progress ([`Told`]).
/// Never panics; every failure is a blocking [`Verdict::Failed`].
pub fn scan(
    tool: &str,
    config: Option<&Path>,
    tree: &Path,
    scratch: &Path,
    cache: Option<&Path>,
    tell: &Told<'_>,
    ahead: Option<Ahead>,
) -> Verdict {
    let passed = tell.passed;
    if tool == "off" {
        return Verdict::Off;
    }
    let (name, binary) = match pick(tool) {
        Ok(found) => found,
        Err(why) => return Verdict::Failed(why.to_string()),
    };
    if let Err(e) = std::fs::create_dir_all(scratch) {
        return Verdict::Failed(format!("{}: {e}", scratch.display()));
    }
    // The cache's key; none (a full scan, nothing remembered) when the scanner's version
    // or the rules cannot be read.
    let started = std::time::Instant::now();
    let key = cache
        .and_then(|file| cache_key(&name, &binary, config, &file.with_extension("version.json")));
    let known = match (cache, &key) {
        (Some(file), Some(key)) => ScanCache::read(file, key),
        _ => ScanCache::default(),
    };
    let read = started.elapsed();
    let covered = ahead.as_ref().map(Ahead::contents);
    let view = match View::build(
        tree,
        &scratch.join("view"),
        &known.clean,
        &known.hashed,
        covered.unwrap_or(&std::collections::HashSet::new()),
    ) {
        Ok(view) => view,
        Err(why) => return Verdict::Failed(why.to_string()),
    };
    (tell.viewed)(&view.hashed);
    tracing::debug!(
        cache_read_ms = read.as_millis(),
        view_ms = (started.elapsed() - read).as_millis(),
        files = view.contents.len(),
        new = view.paths.len(),
        scanned_ahead = view.deferred,
        "scan: cache read and view built"
    );
    let save = |mut known: ScanCache, contents: Vec<String>, hashed| {
        if let (Some(file), Some(key)) = (cache, key.clone()) {
            known.key = key;
            known.clean.extend(contents);
            known.hashed = hashed;
            let started = std::time::Instant::now();
            let written = known.write(file);
            tracing::debug!(ms = started.elapsed().as_millis(), "scan: cache written");
            if let Err(e) = written {
                tracing::warn!(file = %file.display(), %e, "cannot save the scan cache; the next ship scans everything again");
            }
        }
    };
    if view.paths.is_empty() && view.deferred == 0 && !view.contents.is_empty() {
        let _ = std::fs::remove_dir_all(&view.dir);
        let files = view.contents.len();
        passed();
        save(known, Vec::new(), view.hashed);
        return Verdict::CleanBefore { tool: name, files };
    }
    let verdict = if view.paths.is_empty() && view.deferred > 0 {
        Verdict::Clean { tool: name.clone() }
    } else {
        let verdict = run_scanner(&name, &binary, config, &view.dir, scratch);
        findings_at(verdict, &view.paths)
    };
    let _ = std::fs::remove_dir_all(&view.dir);
    let verdict = match (verdict, ahead.filter(|_| view.deferred > 0)) {
        (verdict, None) => verdict,
        (failed @ Verdict::Failed(_), Some(_)) => failed,
        (verdict, Some(ahead)) => {
            let named = ahead.named().clone();
            match (verdict, ahead.verdict()) {
                (main, Verdict::Found { tool, findings }) => {
                    let mut findings = at_every_copy(findings, &named, &view.hashed);
                    if let Verdict::Found { findings: more, .. } = main {
                        findings.extend(more);
                    }
                    findings.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
                    findings.dedup();
                    Verdict::Found { tool, findings }
                }
                (found @ Verdict::Found { .. }, _) => found,
                (clean, Verdict::Clean { .. }) => clean,
                (_, other) => {
                    tracing::warn!(answer = %other.describe(), "the scan started ahead of the export did not answer; scanning the tree without it");
                    return scan(tool, config, tree, scratch, cache, tell, None);
                }
            }
        }
    };
    match verdict {
        Verdict::Clean { tool } => {
            passed();
            save(known, view.contents, view.hashed);
            Verdict::Clean { tool }
        }
        other => other,
    }
}

/// Who hears of a scan's progress ([`scan`]).
pub struct Told<'a> {
    /// Told that the scan passed, before its cache is written (so that a ship can go on
    /// meanwhile).
    pub passed: &'a dyn Fn(),
    /// Told what every file of the tree holds (its stat data and SHA-256, by tree path)
    /// once the view is built, before the scanner runs; not told when the scan is off or
    /// fails before.
    pub viewed: &'a dyn Fn(&std::collections::HashMap<String, Hashed>),
}

/// The contents scanned clean, by one scanner at one version with one set of rules
/// (`~/.gitsync/deploy/<name>/scan-cache.json`). A content is named by the SHA-256 of its
/// bytes and the extension it is scanned under (rules may look at the extension). A different
/// key (another scanner, version or rules) starts an empty set: everything is scanned.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct ScanCache {
    /// The scanner's name, its version as it prints it, and a hash of the rules.
    pub key: String,
    /// The contents scanned clean under `key`.
    pub clean: std::collections::HashSet<String>,
    /// What each file of the export was when its content was hashed, by tree path.
    #[serde(default)]
    pub hashed: std::collections::HashMap<String, Hashed>,
}

/// A file of the export as it was when its content was hashed: the hash is reused while
/// its size, modification and change times (the change time only the kernel sets) and
/// inode stay as they were, as git's index trusts its stat data.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Hashed {
    /// Size in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime: i128,
    /// Change time, nanoseconds since the epoch.
    pub ctime: i128,
    /// Inode number.
    pub ino: u64,
    /// Permission bits (`st_mode & 0o7777`; absent from older caches: 0).
    #[serde(default)]
    pub mode: u32,
    /// The SHA-256 of the bytes (hex).
    pub sha256: String,
}

impl Hashed {
    /// Whether `other` has this file's stat data (size, times, inode, bits): then its
    /// content is taken to be the same, as git's index trusts its stat data.
    fn same_file(&self, other: &Hashed) -> bool {
        (self.size, self.mtime, self.ctime, self.ino, self.mode)
            == (other.size, other.mtime, other.ctime, other.ino, other.mode)
    }

    /// The stat part of `meta`, with `sha256`.
    fn of(meta: &std::fs::Metadata, sha256: String) -> Hashed {
        use std::os::unix::fs::MetadataExt;
        Hashed {
            size: meta.size(),
            mtime: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ctime: i128::from(meta.ctime()) * 1_000_000_000 + i128::from(meta.ctime_nsec()),
            ino: meta.ino(),
            mode: meta.mode() & 0o7777,
            sha256,
        }
    }
}

impl ScanCache {
    /// The cache in `file` when its key is `key`; else (absent, unreadable, or another
    /// key) an empty one: a damaged cache only costs a full scan.
    fn read(file: &Path, key: &str) -> ScanCache {
        match crate::util::fs::read_json::<ScanCache>(file) {
            Ok(cache) if cache.key == key => cache,
            _ => ScanCache {
                key: key.to_string(),
                ..ScanCache::default()
            },
        }
    }

    fn write(&self, file: &Path) -> Result<(), crate::util::fs::PathError> {
        crate::util::fs::write_json(file, self)
    }
}

/// What a scanner said its version was, and the binary (its real path and stat data) that
/// said it: asked again only when the binary is another file or was rewritten. A scanner
/// takes as long to print its version as to scan a file (gitleaks 8.30 compiles its rules
/// first: 0.46 s), and a ship after a one-file commit scans one file.
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Version {
    binary: PathBuf,
    stamp: Hashed,
    said: String,
}

/// The version the scanner at `binary` prints (`name` picks the flag), reusing what
/// `memo` holds while the binary is the same file, unchanged.
fn version(name: &str, binary: &Path, memo: &Path) -> Option<String> {
    let real = std::fs::canonicalize(binary).ok()?;
    let stamp = Hashed::of(&std::fs::metadata(&real).ok()?, String::new());
    if let Ok(known) = crate::util::fs::read_json::<Version>(memo)
        && known.binary == real
        && known.stamp == stamp
    {
        return Some(known.said);
    }
    let mut version = scanner(binary);
    match name {
        "gitleaks" => version.arg("version"),
        _ => version.arg("--version"),
    };
    let out = version.output_blocking().ok()?;
    if !out.status.success() {
        return None;
    }
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let known = Version {
        binary: real,
        stamp,
        said: said.clone(),
    };
    if let Err(e) = crate::util::fs::write_json(memo, &known) {
        tracing::debug!(%e, "cannot keep the scanner's version");
    }
    Some(said)
}

/// The key of the cache for scanner `name` at `binary` with the rules file `config` (or
/// gitsync's defaults): the name, what the scanner says its version is (kept in `memo`,
/// see [`version`]), and the SHA-256 of the rules; `None` when the version or the rules
/// cannot be read.
fn cache_key(name: &str, binary: &Path, config: Option<&Path>, memo: &Path) -> Option<String> {
    use sha2::Digest;
    let said = version(name, binary, memo)?;
    let rules = match config {
        Some(file) => std::fs::read(file).ok()?,
        None => DEFAULT_GITLEAKS_CONFIG.as_bytes().to_vec(),
    };
    Some(format!(
        "{name} {said} rules {}",
        hex::encode(sha2::Sha256::digest(&rules))
    ))
}

/// Extensions the scanners' default path allowlists skip (gitleaks' global allowlist,
/// `config/gitleaks.toml`): a file of the tree with one of them is scanned under its
/// number alone.
const SKIPPED_EXTENSIONS: [&str; 27] = [
    "bmp", "gif", "jpg", "jpeg", "png", "svg", "tif", "tiff", "eot", "otf", "ttf", "woff", "woff2",
    "doc", "docx", "xls", "xlsx", "pdf", "bin", "socket", "vsidx", "v2", "suo", "wsuo", "dll",
    "pdb", "exe",
];

/// What the scanner reads: every regular file of the exported tree, hard-linked (copied
/// across file systems) into one flat folder under a number. What ships is what is
/// scanned, and the repository cannot switch any of it off:
/// - no path of the tree reaches the scanner, so the path allowlists built into the
///   scanners (gitleaks' global one: `node_modules/`, lock files, `*.pdf`, any path holding
///   `gitleaks.toml`; detect-secrets' lock-file and Swagger filters) skip nothing, and a
///   committed `.gitleaksignore` is just another file; a file keeps its extension, for the
///   rules that look at it, unless the extension is one those allowlists skip;
/// - a UTF-16 text file (a byte-order mark, or every other byte zero) is also scanned as
///   UTF-8 (`<n>.utf8`): no scanner decodes UTF-16.
struct View {
    dir: PathBuf,
    /// The tree-relative path of each number.
    paths: Vec<String>,
    /// The content name ([`ScanCache`]) of every file of the tree, in the view or not.
    contents: Vec<String>,
    /// What each file of the tree was when its content was hashed, by tree path.
    hashed: std::collections::HashMap<String, Hashed>,
    /// How many files were left out because their content is scanned elsewhere
    /// ([`Ahead`]).
    deferred: usize,
}

impl View {
    /// Builds the view of `tree` in `dir` (emptied first), leaving out the files whose
    /// content name is in `clean` or in `covered` (scanned elsewhere: counted in
    /// [`View::deferred`]); a file whose stat data matches its entry in `before` is not
    /// read again.
    ///
    /// Errors: the tree cannot be walked, a file read, or the view written.
    fn build(
        tree: &Path,
        dir: &Path,
        clean: &std::collections::HashSet<String>,
        before: &std::collections::HashMap<String, Hashed>,
        covered: &std::collections::HashSet<String>,
    ) -> Result<View, DeployError> {
        let fail = |e: &dyn std::fmt::Display| {
            DeployError::Scanner(format!("cannot prepare the scan: {e}"))
        };
        if dir.exists() {
            std::fs::remove_dir_all(dir).map_err(|e| fail(&e))?;
        }
        std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        let mut paths = Vec::new();
        let mut contents = Vec::with_capacity(before.len());
        let mut hashed = std::collections::HashMap::with_capacity(before.len());
        let mut deferred = 0;
        // Folders to read, as (path on disk, path in the tree); symlinks are not followed.
        // Each entry's stat data is read relative to its folder (`fstatat`), not by path.
        let mut folders = vec![(tree.to_path_buf(), String::new())];
        while let Some((folder, prefix)) = folders.pop() {
            for entry in std::fs::read_dir(&folder).map_err(|e| fail(&e))? {
                let entry = entry.map_err(|e| fail(&e))?;
                let kind = entry.file_type().map_err(|e| fail(&e))?;
                let name = entry.file_name();
                let rel = format!("{prefix}{}", name.to_string_lossy());
                if kind.is_dir() {
                    folders.push((entry.path(), format!("{rel}/")));
                    continue;
                }
                if !kind.is_file() {
                    continue;
                }
                let n = paths.len();
                let ext = view_extension(Path::new(&name));
                let meta = entry.metadata().map_err(|e| fail(&e))?;
                let stamp = Hashed::of(&meta, String::new());
                let sha256 = match before.get(&rel) {
                    Some(known) if known.same_file(&stamp) => known.sha256.clone(),
                    _ => content_hash(&entry.path()).map_err(|e| fail(&e))?,
                };
                let content = content_name(&sha256, ext.as_deref());
                let seen = clean.contains(&content);
                let elsewhere = !seen && covered.contains(&content);
                contents.push(content);
                if seen || elsewhere {
                    deferred += usize::from(elsewhere);
                    hashed.insert(rel, Hashed { sha256, ..stamp });
                    continue;
                }
                let from = entry.path();
                let to = dir.join(view_name(n, ext.as_deref()));
                if std::fs::hard_link(&from, &to).is_err() {
                    std::fs::copy(&from, &to).map_err(|e| fail(&e))?;
                }
                if let Some(text) = utf16_text(&from) {
                    std::fs::write(dir.join(format!("{n}.utf8")), text).map_err(|e| fail(&e))?;
                }
                hashed.insert(rel.clone(), Hashed { sha256, ..stamp });
                paths.push(rel);
            }
        }
        Ok(View {
            dir: dir.to_path_buf(),
            paths,
            contents,
            hashed,
            deferred,
        })
    }
}

/// The extension a file at `path` keeps in a view (lower case, at most 8 letters or
/// digits), unless it is one the scanners' path allowlists skip ([`SKIPPED_EXTENSIONS`]).
pub(super) fn view_extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .filter(|e| {
            e.len() <= 8
                && e.bytes().all(|b| b.is_ascii_alphanumeric())
                && !SKIPPED_EXTENSIONS.contains(&e.as_str())
        })
}

/// The name of file number `n` in a view: `<n>.<ext>`, or `<n>` without an extension.
pub(super) fn view_name(n: usize, ext: Option<&str>) -> String {
    match ext {
        Some(ext) => format!("{n}.{ext}"),
        None => n.to_string(),
    }
}

/// The content name the cache knows a file by ([`ScanCache`]): `<sha256>.<ext>`.
pub(super) fn content_name(sha256: &str, ext: Option<&str>) -> String {
    format!("{sha256}.{}", ext.unwrap_or(""))
}

/// The path, among `paths` (by number), of the view file `file` (relative to the view,
/// as a scanner reports it); `file` itself when it names none.
fn original(paths: &[String], file: &str) -> String {
    let name = Path::new(file)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(file);
    let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| paths.get(n))
        .cloned()
        .unwrap_or_else(|| file.to_string())
}

/// `verdict` with the files of its findings named by their paths (`paths`, by view
/// number) rather than by their view names.
pub(super) fn findings_at(verdict: Verdict, paths: &[String]) -> Verdict {
    match verdict {
        Verdict::Found { tool, findings } => Verdict::Found {
            tool,
            findings: findings
                .into_iter()
                .map(|f| Finding {
                    file: original(paths, &f.file),
                    ..f
                })
                .collect(),
        },
        other => other,
    }
}

/// `findings` (named by the paths of the files scanned ahead, whose content names `named`
/// holds) found at every path of the tree that holds the same content (by `hashed`, the
/// view's record of the tree): a file left to the scan ahead because its bytes are those
/// of another path is named too.
fn at_every_copy(
    findings: Vec<Finding>,
    named: &std::collections::HashMap<String, String>,
    hashed: &std::collections::HashMap<String, Hashed>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    for finding in findings {
        if let Some(content) = named.get(&finding.file) {
            for (path, stamp) in hashed {
                let ext = view_extension(Path::new(path));
                if path != &finding.file && &content_name(&stamp.sha256, ext.as_deref()) == content
                {
                    out.push(Finding {
                        file: path.clone(),
                        ..finding.clone()
                    });
                }
            }
        }
        out.push(finding);
    }
    out
}

/// Runs the scanner `name` (at `binary`, with the rules file `config`) over the view
/// folder `dir`, its report and default rules in `scratch`.
pub(super) fn run_scanner(
    name: &str,
    binary: &Path,
    config: Option<&Path>,
    dir: &Path,
    scratch: &Path,
) -> Verdict {
    match name {
        "gitleaks" => gitleaks(binary, config, dir, scratch),
        "kingfisher" => kingfisher(binary, config, dir, scratch),
        "detect-secrets" => detect_secrets(binary, dir, scratch),
        other => Verdict::Failed(format!("unknown scanner {other:?}")),
    }
}

/// The SHA-256 of the bytes of the file at `path` (hex), read as a stream.
fn content_hash(path: &Path) -> std::io::Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// The UTF-8 text of the file at `path` when it is UTF-16 (little- or big-endian, with a
/// byte-order mark, or without one when every other byte of its start is zero), else
/// `None`. Files over 64 MiB are left alone.
pub(super) fn utf16_text(path: &Path) -> Option<String> {
    let size = std::fs::metadata(path).ok()?.len();
    if !(4..=64 << 20).contains(&size) || size % 2 != 0 {
        return None;
    }
    let bytes = std::fs::read(path).ok()?;
    let little = match bytes.get(..2)? {
        [0xff, 0xfe] => true,
        [0xfe, 0xff] => false,
        _ => {
            let head = &bytes[..bytes.len().min(512)];
            let zeros_at = |odd: usize| {
                head.iter()
                    .skip(odd)
                    .step_by(2)
                    .filter(|b| **b == 0)
                    .count()
            };
            let half = head.len() / 2;
            if zeros_at(1) * 10 >= half * 9 && zeros_at(0) * 10 < half {
                true
            } else if zeros_at(0) * 10 >= half * 9 && zeros_at(1) * 10 < half {
                false
            } else {
                return None;
            }
        }
    };
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| {
            if little {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        })
        .collect();
    Some(String::from_utf16_lossy(&units))
}

fn relative(tree: &Path, file: &str) -> String {
    let path = Path::new(file);
    path.strip_prefix(tree)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| file.trim_start_matches("./").to_string())
}

/// Longest a scanner may run before it is stopped (and the ship blocked).
const SCAN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// Runs `command` (a [`Child`] stopped after [`SCAN_TIMEOUT`]) to its end, from a thread
/// outside the async runtime, whatever its exit status.
///
/// Errors: it cannot start, or it was stopped.
fn run(command: Child) -> Result<std::process::Output, DeployError> {
    command
        .output_blocking()
        .map_err(|e| DeployError::Scanner(e.to_string()))
}

/// A scanner's command: `binary`, stopped after [`SCAN_TIMEOUT`].
fn scanner(binary: &Path) -> Child {
    Child::new(binary, SCAN_TIMEOUT)
}

fn gitleaks(binary: &Path, config: Option<&Path>, tree: &Path, scratch: &Path) -> Verdict {
    let config = match config {
        Some(c) => c.to_path_buf(),
        None => {
            let path = scratch.join("gitleaks.toml");
            if let Err(e) = std::fs::write(&path, DEFAULT_GITLEAKS_CONFIG) {
                return Verdict::Failed(format!("{}: {e}", path.display()));
            }
            path
        }
    };
    let report = scratch.join("gitleaks-report.json");
    let _ = std::fs::remove_file(&report);
    let mut command = scanner(binary);
    command
        .arg("dir")
        .arg("--no-banner")
        .args(["--exit-code", "2"])
        .arg("-c")
        .arg(&config)
        .arg("--ignore-gitleaks-allow")
        .args(["--report-format", "json", "--report-path"])
        .arg(&report)
        .args(["--log-level", "error"])
        .arg(tree)
        // The repository's own `.gitleaksignore` is read from the working folder:
        // run from gitsync's scratch folder instead.
        .current_dir(scratch)
        .env_remove("GITLEAKS_CONFIG")
        .env_remove("GITLEAKS_CONFIG_TOML");
    let output = match run(command) {
        Ok(o) => o,
        Err(why) => return Verdict::Failed(why.to_string()),
    };
    let code = output.status.code();
    if !matches!(code, Some(0) | Some(2)) {
        return Verdict::Failed(format!(
            "gitleaks exited with {} ({})",
            code.map_or("a signal".to_string(), |c| format!("code {c}")),
            String::from_utf8_lossy(&output.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("no message")
        ));
    }
    let text = match std::fs::read(&report) {
        Ok(t) => t,
        Err(e) => return Verdict::Failed(format!("gitleaks wrote no readable report: {e}")),
    };
    #[derive(serde::Deserialize)]
    struct Leak {
        #[serde(rename = "RuleID")]
        rule: String,
        #[serde(rename = "File")]
        file: String,
        #[serde(rename = "StartLine")]
        line: u64,
    }
    let leaks: Vec<Leak> = match serde_json::from_slice(&text) {
        Ok(l) => l,
        Err(e) => return Verdict::Failed(format!("gitleaks' report is unreadable: {e}")),
    };
    if code == Some(0) && leaks.is_empty() {
        return Verdict::Clean {
            tool: "gitleaks".to_string(),
        };
    }
    if leaks.is_empty() {
        return Verdict::Failed("gitleaks reported findings but listed none".to_string());
    }
    Verdict::Found {
        tool: "gitleaks".to_string(),
        findings: leaks
            .into_iter()
            .map(|l| Finding {
                file: relative(tree, &l.file),
                line: l.line,
                rule: l.rule,
            })
            .collect(),
    }
}

fn kingfisher(binary: &Path, config: Option<&Path>, tree: &Path, scratch: &Path) -> Verdict {
    let mut command = scanner(binary);
    command
        .arg("scan")
        .arg(tree)
        .args([
            "--git-history",
            "none",
            "--no-validate",
            "--no-update-check",
            "-f",
            "json",
        ])
        .current_dir(scratch);
    if let Some(c) = config {
        command.arg("--rules-path").arg(c);
    }
    let output = match run(command) {
        Ok(o) => o,
        Err(why) => return Verdict::Failed(why.to_string()),
    };
    let code = output.status.code();
    if !matches!(code, Some(0) | Some(200) | Some(205)) {
        return Verdict::Failed(format!("kingfisher exited with {code:?}"));
    }
    // JSON lines or one document: every object with a rule and a location is a finding.
    let text = String::from_utf8_lossy(&output.stdout);
    let mut findings = Vec::new();
    let mut parsed_any = false;
    for value in serde_json::Deserializer::from_str(&text).into_iter::<serde_json::Value>() {
        let Ok(value) = value else {
            return Verdict::Failed("kingfisher's report is unreadable".to_string());
        };
        parsed_any = true;
        collect_kingfisher(&value, tree, &mut findings);
    }
    if code == Some(0) && findings.is_empty() {
        return Verdict::Clean {
            tool: "kingfisher".to_string(),
        };
    }
    if findings.is_empty() || !parsed_any {
        return Verdict::Failed("kingfisher reported findings that cannot be read".to_string());
    }
    Verdict::Found {
        tool: "kingfisher".to_string(),
        findings,
    }
}

fn collect_kingfisher(value: &serde_json::Value, tree: &Path, out: &mut Vec<Finding>) {
    match value {
        serde_json::Value::Array(items) => {
            items.iter().for_each(|v| collect_kingfisher(v, tree, out))
        }
        serde_json::Value::Object(map) => {
            let rule = map
                .get("rule")
                .and_then(|r| r.get("id").or(Some(r)))
                .and_then(|r| r.as_str());
            let file = map
                .get("finding")
                .and_then(|f| f.get("path"))
                .or_else(|| map.get("path"))
                .and_then(|p| p.as_str());
            if let (Some(rule), Some(file)) = (rule, file) {
                let line = map
                    .get("finding")
                    .and_then(|f| f.get("line"))
                    .and_then(|l| l.as_u64())
                    .unwrap_or(0);
                out.push(Finding {
                    file: relative(tree, file),
                    line,
                    rule: rule.to_string(),
                });
            } else {
                map.values().for_each(|v| collect_kingfisher(v, tree, out));
            }
        }
        _ => {}
    }
}

fn detect_secrets(binary: &Path, tree: &Path, scratch: &Path) -> Verdict {
    let mut command = scanner(binary);
    command
        .args(["scan", "--all-files"])
        // Inline `pragma: allowlist secret` comments are the repository's to write:
        // they do not switch the gate off.
        .args([
            "--disable-filter",
            "detect_secrets.filters.allowlist.is_line_allowlisted",
        ])
        .arg(".")
        .current_dir(tree)
        .env("HOME", scratch);
    let output = match run(command) {
        Ok(o) => o,
        Err(why) => return Verdict::Failed(why.to_string()),
    };
    if output.status.code() != Some(0) {
        return Verdict::Failed(format!(
            "detect-secrets exited with {:?}: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
                .trim()
                .lines()
                .last()
                .unwrap_or("")
        ));
    }
    let report: serde_json::Value = match serde_json::from_slice(&output.stdout) {
        Ok(v) => v,
        Err(e) => return Verdict::Failed(format!("detect-secrets' report is unreadable: {e}")),
    };
    let Some(results) = report.get("results").and_then(|r| r.as_object()) else {
        return Verdict::Failed("detect-secrets' report has no `results`".to_string());
    };
    let findings: Vec<Finding> = results
        .iter()
        .flat_map(|(file, items)| {
            items
                .as_array()
                .into_iter()
                .flatten()
                .map(move |item| Finding {
                    file: relative(tree, file),
                    line: item
                        .get("line_number")
                        .and_then(|l| l.as_u64())
                        .unwrap_or(0),
                    rule: item
                        .get("type")
                        .and_then(|t| t.as_str())
                        .unwrap_or("secret")
                        .to_string(),
                })
        })
        .collect();
    if findings.is_empty() {
        Verdict::Clean {
            tool: "detect-secrets".to_string(),
        }
    } else {
        Verdict::Found {
            tool: "detect-secrets".to_string(),
            findings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf16_is_read_with_or_without_a_byte_order_mark_and_binary_is_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, bytes: &[u8]| {
            let p = dir.path().join(name);
            std::fs::write(&p, bytes).expect("write");
            p
        };
        let le: Vec<u8> = "key=ghp_x\n"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        let be: Vec<u8> = "key=ghp_x\n"
            .encode_utf16()
            .flat_map(u16::to_be_bytes)
            .collect();
        let with_bom = [vec![0xff, 0xfe], le.clone()].concat();
        let be_bom = [vec![0xfe, 0xff], be.clone()].concat();
        assert_eq!(
            utf16_text(&write("a", &with_bom)).as_deref(),
            Some("\u{feff}key=ghp_x\n")
        );
        assert_eq!(utf16_text(&write("b", &le)).as_deref(), Some("key=ghp_x\n"));
        assert_eq!(utf16_text(&write("c", &be)).as_deref(), Some("key=ghp_x\n"));
        assert!(utf16_text(&write("d", &be_bom)).is_some_and(|t| t.ends_with("key=ghp_x\n")));
        assert_eq!(utf16_text(&write("e", b"plain ascii text\n")), None);
        assert_eq!(utf16_text(&write("f", &[0u8; 64])), None, "all zeros");
    }

    #[test]
    fn a_hash_is_reused_only_while_the_files_stat_data_stays() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(&tree).expect("mkdir");
        for (p, body) in [("a.txt", "alpha"), ("b.txt", "bravo"), ("c.txt", "charl")] {
            std::fs::write(tree.join(p), body).expect("write");
        }
        let none = std::collections::HashSet::new();
        let first = View::build(
            &tree,
            &dir.path().join("v1"),
            &none,
            &Default::default(),
            &Default::default(),
        )
        .expect("view");
        assert_eq!(first.hashed.len(), 3);
        // Linking a file into a view changes its change time: the next build reads those
        // again (and links nothing, everything being clean).
        let clean: std::collections::HashSet<String> = first.contents.iter().cloned().collect();
        let settled = View::build(
            &tree,
            &dir.path().join("v0"),
            &clean,
            &first.hashed,
            &Default::default(),
        )
        .expect("view");
        assert!(settled.paths.is_empty());
        // a.txt's remembered hash replaced: with its stat data unchanged, the remembered
        // hash is used (the file is not read again).
        let mut before = settled.hashed.clone();
        before.get_mut("a.txt").expect("a").sha256 = "remembered".to_string();
        let second = View::build(
            &tree,
            &dir.path().join("v2"),
            &clean,
            &before,
            &Default::default(),
        )
        .expect("view");
        assert_eq!(second.paths, ["a.txt"], "only a.txt's content name changed");
        assert!(second.contents.contains(&"remembered.txt".to_string()));
        // b.txt rewritten in place with the same size and its modification time put back:
        // its change time moved, so it is read again and its new content is scanned.
        let meta = std::fs::metadata(tree.join("b.txt")).expect("stat");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(tree.join("b.txt"), "BRAVO").expect("write");
        let file = std::fs::File::options()
            .write(true)
            .open(tree.join("b.txt"))
            .expect("open");
        file.set_modified(meta.modified().expect("mtime"))
            .expect("set mtime");
        drop(file);
        let third = View::build(
            &tree,
            &dir.path().join("v3"),
            &clean,
            &settled.hashed,
            &Default::default(),
        )
        .expect("view");
        assert_eq!(third.paths, ["b.txt"], "the edited file is scanned");
    }

    #[test]
    fn the_view_names_no_path_of_the_tree_and_maps_findings_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        for (p, body) in [
            ("node_modules/x/package-lock.json", "a"),
            ("keys.pdf", "b"),
            (".gitleaksignore", "c"),
            ("cert.p12", "d"),
        ] {
            std::fs::create_dir_all(tree.join(p).parent().expect("parent")).expect("mkdir");
            std::fs::write(tree.join(p), body).expect("write");
        }
        let view = View::build(
            &tree,
            &dir.path().join("view"),
            &Default::default(),
            &Default::default(),
            &Default::default(),
        )
        .expect("view");
        let mut names: Vec<String> = std::fs::read_dir(&view.dir)
            .expect("read")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), 4);
        assert!(
            names
                .iter()
                .all(|n| n.starts_with(|c: char| c.is_ascii_digit())),
            "{names:?}"
        );
        assert!(names.iter().any(|n| n.ends_with(".p12")), "{names:?}");
        assert!(names.iter().any(|n| n.ends_with(".json")), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("pdf")), "{names:?}");
        for name in &names {
            let original = original(&view.paths, name);
            let body = std::fs::read_to_string(tree.join(&original)).expect("original");
            assert_eq!(
                std::fs::read_to_string(view.dir.join(name)).expect("view"),
                body
            );
        }
    }

    #[test]
    fn a_missing_scanner_blocks() {
        let dir = tempfile::tempdir().expect("tmp");
        let v = scan(
            "no-such-scanner-xyz",
            None,
            dir.path(),
            &dir.path().join("s"),
            None,
            &Told {
                passed: &|| panic!("a missing scanner never passes"),
                viewed: &|_| (),
            },
            None,
        );
        assert!(!v.passes(), "{v:?}");
        assert!(v.describe().contains("nothing was shipped"));
        assert!(
            scan(
                "off",
                None,
                dir.path(),
                dir.path(),
                None,
                &Told {
                    passed: &|| (),
                    viewed: &|_| ()
                },
                None
            )
            .passes()
        );
    }

    #[test]
    fn findings_name_file_line_and_rule_only() {
        let v = Verdict::Found {
            tool: "gitleaks".into(),
            findings: vec![Finding {
                file: "config/aws.txt".into(),
                line: 3,
                rule: "aws-access-token".into(),
            }],
        };
        assert_eq!(
            v.describe(),
            "gitleaks found 1 secret (values redacted): config/aws.txt:3 (aws-access-token); nothing was shipped"
        );
    }
}
