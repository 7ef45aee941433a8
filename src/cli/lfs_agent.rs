//! `gitsync lfs-agent`: a Git LFS standalone custom transfer agent (git-lfs
//! `docs/custom-transfers.md`) that downloads LFS objects from a gitsync mirror, where they
//! live at `<clone URL>/lfs/objects/<aa>/<bb>/<oid>`: a bucket cannot answer the batch API,
//! so git-lfs is told to ask this agent instead. Each object is checked against its oid
//! (sha256) and size while it streams. Uploads are refused: a mirror is read-only.
//!
//! Enable it in a clone of a mirror (or with `-c` on `git clone`):
//! `git config lfs.standalonetransferagent gitsync`,
//! `git config lfs.customtransfer.gitsync.path gitsync`,
//! `git config lfs.customtransfer.gitsync.args lfs-agent`.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::{Value, json};

use crate::mirror::MirrorError;
use crate::mirror::lfs::{Checked, LfsObject, download_verified, object_key};

/// Arguments of `gitsync lfs-agent` (none: git-lfs drives it over stdin and stdout).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Where the objects come from.
enum Base {
    Http(reqwest::Client, String),
    Folder(PathBuf),
}

fn git_out(args: &[&str]) -> Option<String> {
    let mut command = std::process::Command::new("git");
    crate::util::child::quiet(&mut command);
    let out = command.args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn base_of(remote: &str) -> Result<Base, MirrorError> {
    let url = git_out(&["remote", "get-url", remote])
        .or_else(|| Some(remote.to_string()).filter(|r| r.contains("://")))
        .ok_or_else(|| MirrorError::Lfs(format!("no remote {remote:?} in this repository")))?;
    let url = url.trim_end_matches('/').to_string();
    if url.starts_with("http://") || url.starts_with("https://") {
        let client = reqwest::Client::builder()
            .build()
            .map_err(|e| MirrorError::Lfs(e.to_string()))?;
        return Ok(Base::Http(client, url));
    }
    let path = url.strip_prefix("file://").unwrap_or(&url);
    Ok(Base::Folder(PathBuf::from(path)))
}

/// Fetches one object into a new file in `tmp`; returns its path.
async fn fetch(base: &Base, object: &LfsObject, tmp: &Path) -> Result<PathBuf, MirrorError> {
    std::fs::create_dir_all(tmp)
        .map_err(|e| MirrorError::Lfs(format!("{}: {e}", tmp.display())))?;
    let file = tempfile::Builder::new()
        .prefix("gitsync-")
        .tempfile_in(tmp)
        .map_err(|e| MirrorError::Lfs(format!("{}: {e}", tmp.display())))?;
    let (_, path) = file.keep().map_err(|e| MirrorError::Lfs(e.to_string()))?;
    let result = match base {
        Base::Http(client, url) => {
            let request = client.get(format!("{url}/{}", object_key(&object.oid)));
            download_verified(request, object, &path).await
        }
        Base::Folder(root) => {
            let src = root.join(object_key(&object.oid));
            verify_copy(&src, &path, object)
        }
    };
    match result {
        Ok(()) => Ok(path),
        Err(e) => {
            let _ = std::fs::remove_file(&path);
            Err(e)
        }
    }
}

fn verify_copy(src: &Path, dst: &Path, object: &LfsObject) -> Result<(), MirrorError> {
    let mut input = std::fs::File::open(src)
        .map_err(|e| MirrorError::Lfs(format!("object {}: {e}", object.oid)))?;
    let mut output = std::fs::File::create(dst)
        .map_err(|e| MirrorError::Lfs(format!("{}: {e}", dst.display())))?;
    let mut check = Checked::new(object);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = std::io::Read::read(&mut input, &mut buf)
            .map_err(|e| MirrorError::Lfs(format!("object {}: {e}", object.oid)))?;
        if n == 0 {
            break;
        }
        check.update(&buf[..n])?;
        output
            .write_all(&buf[..n])
            .map_err(|e| MirrorError::Lfs(format!("{}: {e}", dst.display())))?;
    }
    check.finish()
}

fn reply(out: &mut impl Write, value: Value) -> bool {
    writeln!(out, "{value}").and_then(|_| out.flush()).is_ok()
}

/// Runs the agent until git-lfs sends `terminate` or closes stdin. Exit code 0.
pub fn run(_args: &Args) -> ExitCode {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return ExitCode::from(1);
    };
    let tmp = git_out(&["rev-parse", "--git-path", "lfs/tmp"])
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut base: Option<Base> = None;
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let event = message["event"].as_str().unwrap_or_default();
        let ok = match event {
            "init" => {
                let remote = message["remote"].as_str().unwrap_or("origin");
                match base_of(remote) {
                    Ok(b) => {
                        base = Some(b);
                        reply(&mut stdout, json!({}))
                    }
                    Err(e) => reply(
                        &mut stdout,
                        json!({"error": {"code": 32, "message": e.to_string()}}),
                    ),
                }
            }
            "download" => {
                let oid = message["oid"].as_str().unwrap_or_default().to_string();
                let object = LfsObject {
                    oid: oid.clone(),
                    size: message["size"].as_u64().unwrap_or_default(),
                };
                let valid = oid.len() == 64 && oid.bytes().all(|b| b.is_ascii_hexdigit());
                let result = match (&base, valid) {
                    (_, false) => Err(MirrorError::Lfs(format!("{oid:?} is not an LFS oid"))),
                    (None, _) => Err(MirrorError::Lfs("download before init".to_string())),
                    (Some(base), true) => runtime.block_on(fetch(base, &object, &tmp)),
                };
                match result {
                    Ok(path) => reply(
                        &mut stdout,
                        json!({"event": "complete", "oid": oid, "path": path}),
                    ),
                    Err(e) => reply(
                        &mut stdout,
                        json!({"event": "complete", "oid": oid, "error": {"code": 2, "message": e.to_string()}}),
                    ),
                }
            }
            "upload" => reply(
                &mut stdout,
                json!({"event": "complete", "oid": message["oid"], "error": {"code": 2, "message": "a gitsync mirror is read-only: push to the source"}}),
            ),
            "terminate" => break,
            _ => true,
        };
        if !ok {
            break;
        }
    }
    ExitCode::SUCCESS
}
