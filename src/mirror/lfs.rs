//! Git LFS objects of the mirrored commits: found among the new blobs (LFS pointer files,
//! `docs/spec.md` of git-lfs), downloaded through the source's batch API
//! (`docs/api/batch.md`, `basic` transfer), checked against their sha256 while they stream
//! to disk, and stored at `lfs/objects/<aa>/<bb>/<oid>` (the layout of a repository's own
//! `.git/lfs/objects`).
//!
//! Credentials come from the source URL or from git's own `git credential fill` (asked only
//! when the server answers 401), and never appear in a message.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use sha2::Digest;

use super::publish::MirrorError;
use crate::git::ops;
use crate::store::BlobStore;

/// The first line of every LFS pointer file.
const POINTER_VERSION: &str = "version https://git-lfs.github.com/spec/v1";
/// Pointer files are small; larger blobs are not read.
const POINTER_MAX: u64 = 1024;

/// One LFS object: its sha256 (hex) and size in bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LfsObject {
    /// sha256 of the content, hex.
    pub oid: String,
    /// Size in bytes.
    pub size: u64,
}

/// The key of an LFS object in the target.
pub fn object_key(oid: &str) -> String {
    format!("lfs/objects/{}/{}/{oid}", &oid[..2], &oid[2..4])
}

/// Parses an LFS pointer file; `None` when `text` is not one.
pub fn parse_pointer(text: &str) -> Option<LfsObject> {
    let mut lines = text.lines();
    if lines.next()? != POINTER_VERSION {
        return None;
    }
    let mut oid = None;
    let mut size = None;
    for line in lines {
        if let Some(v) = line.strip_prefix("oid sha256:") {
            oid = Some(v.to_string());
        } else if let Some(v) = line.strip_prefix("size ") {
            size = v.parse().ok();
        }
    }
    let oid = oid.filter(|o| o.len() == 64 && o.bytes().all(|b| b.is_ascii_hexdigit()))?;
    Some(LfsObject {
        oid: oid.to_ascii_lowercase(),
        size: size?,
    })
}

/// The LFS objects that blobs reachable from `tips` and not from `exclude` point at.
///
/// Errors: [`MirrorError::Source`] when git fails.
pub async fn pointers(
    cache: &Path,
    tips: &BTreeSet<String>,
    exclude: &BTreeSet<String>,
    timeout: Duration,
) -> Result<BTreeSet<LfsObject>, MirrorError> {
    let git = |e: ops::GitError| MirrorError::Source(e.to_string());
    let mut revs = String::new();
    for t in tips {
        revs.push_str(&format!("{t}\n"));
    }
    for x in exclude {
        revs.push_str(&format!("^{x}\n"));
    }
    let objects = ops::run_input(
        cache,
        &["rev-list", "--objects", "--no-object-names", "--stdin"],
        revs.as_bytes(),
        timeout,
        &[],
    )
    .await
    .map_err(git)?;
    let sizes = ops::run_input(
        cache,
        &[
            "cat-file",
            "--batch-check=%(objectname) %(objecttype) %(objectsize)",
        ],
        objects.as_bytes(),
        timeout,
        &[],
    )
    .await
    .map_err(git)?;
    let small: String = sizes
        .lines()
        .filter_map(|l| {
            let mut it = l.split(' ');
            let (oid, kind, size) = (it.next()?, it.next()?, it.next()?);
            (kind == "blob" && size.parse::<u64>().ok()? <= POINTER_MAX).then(|| format!("{oid}\n"))
        })
        .collect();
    if small.is_empty() {
        return Ok(BTreeSet::new());
    }
    let contents = ops::run_input(
        cache,
        &["cat-file", "--batch"],
        small.as_bytes(),
        timeout,
        &[],
    )
    .await
    .map_err(git)?;
    // Each entry is `<oid> blob <size>\n<content>\n`; pointer files are text, so the
    // lossy string keeps them intact.
    Ok(contents
        .split(&format!("{POINTER_VERSION}\n"))
        .skip(1)
        .filter_map(|rest| parse_pointer(&format!("{POINTER_VERSION}\n{rest}")))
        .collect())
}

/// The batch endpoint of a git URL (git-lfs's default: `<url>.git/info/lfs`), and the
/// user and password the URL carries, removed from it.
fn batch_endpoint(source: &str) -> Result<(reqwest::Url, Option<(String, String)>), MirrorError> {
    let mut url = reqwest::Url::parse(source).map_err(|_| {
        MirrorError::Lfs(format!(
            "the source {} is not an http(s) URL; LFS objects are fetched through the batch API over https",
            crate::util::redact::redact_url(source)
        ))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(MirrorError::Lfs(format!(
            "the source {} is not an http(s) URL; LFS objects are fetched through the batch API over https",
            crate::util::redact::redact_url(source)
        )));
    }
    let auth = (!url.username().is_empty()).then(|| {
        (
            url.username().to_string(),
            url.password().unwrap_or_default().to_string(),
        )
    });
    let _ = url.set_username("");
    let _ = url.set_password(None);
    let mut path = url.path().trim_end_matches('/').to_string();
    if !path.ends_with(".git") {
        path.push_str(".git");
    }
    url.set_path(&format!("{path}/info/lfs/objects/batch"));
    Ok((url, auth))
}

/// `git credential fill` for `url` (git's credential helpers; never a prompt).
async fn credential_fill(cache: &Path, url: &reqwest::Url) -> Option<(String, String)> {
    let input = format!(
        "protocol={}\nhost={}{}\npath={}\n\n",
        url.scheme(),
        url.host_str()?,
        url.port().map(|p| format!(":{p}")).unwrap_or_default(),
        url.path().trim_start_matches('/')
    );
    let out = ops::run_input(
        cache,
        &["credential", "fill"],
        input.as_bytes(),
        Duration::from_secs(30),
        &[],
    )
    .await
    .ok()?;
    let field = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")).map(str::to_string))
    };
    Some((field("username")?, field("password").unwrap_or_default()))
}

#[derive(serde::Deserialize)]
struct BatchResponse {
    #[serde(default)]
    objects: Vec<BatchObject>,
}

#[derive(serde::Deserialize)]
struct BatchObject {
    oid: String,
    #[serde(default)]
    actions: Option<Actions>,
    #[serde(default)]
    error: Option<BatchError>,
}

#[derive(serde::Deserialize)]
struct Actions {
    download: Option<Action>,
}

#[derive(serde::Deserialize)]
struct Action {
    href: String,
    #[serde(default)]
    header: std::collections::HashMap<String, String>,
}

#[derive(serde::Deserialize)]
struct BatchError {
    code: i64,
    message: String,
}

/// Checks content against an LFS object while it streams: never more bytes than the
/// pointer names, and the sha256 and size at the end.
pub struct Checked<'a> {
    object: &'a LfsObject,
    hasher: sha2::Sha256,
    size: u64,
}

impl<'a> Checked<'a> {
    /// A check of `object`'s content.
    pub fn new(object: &'a LfsObject) -> Self {
        Checked {
            object,
            hasher: sha2::Sha256::new(),
            size: 0,
        }
    }

    /// Takes the next `chunk`.
    ///
    /// Errors: more bytes than the pointer names.
    pub fn update(&mut self, chunk: &[u8]) -> Result<(), MirrorError> {
        self.size += chunk.len() as u64;
        if self.size > self.object.size {
            return Err(MirrorError::Lfs(format!(
                "object {}: more than the {} bytes its pointer names",
                self.object.oid, self.object.size
            )));
        }
        self.hasher.update(chunk);
        Ok(())
    }

    /// Ends the check.
    ///
    /// Errors: the size or the sha256 differ from the object's.
    pub fn finish(self) -> Result<(), MirrorError> {
        let got = hex::encode(self.hasher.finalize());
        if self.size != self.object.size || got != self.object.oid {
            return Err(MirrorError::Lfs(format!(
                "object {}: the content does not match (got {} bytes with sha256 {got})",
                self.object.oid, self.size
            )));
        }
        Ok(())
    }
}

/// Downloads `href` into `file`, hashing as it streams; checks size and sha256 against
/// `object`.
///
/// Errors: a message naming the object when the transfer fails or the content does not
/// match its oid.
pub async fn download_verified(
    request: reqwest::RequestBuilder,
    object: &LfsObject,
    file: &Path,
) -> Result<(), MirrorError> {
    use tokio::io::AsyncWriteExt;
    let mut response = request
        .send()
        .await
        .map_err(|e| MirrorError::Lfs(format!("object {}: {}", object.oid, without_url(&e))))?;
    if !response.status().is_success() {
        return Err(MirrorError::Lfs(format!(
            "object {}: the server answered {}",
            object.oid,
            response.status()
        )));
    }
    let mut out = tokio::fs::File::create(file)
        .await
        .map_err(|e| MirrorError::Lfs(format!("{}: {e}", file.display())))?;
    let mut check = Checked::new(object);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| MirrorError::Lfs(format!("object {}: {}", object.oid, without_url(&e))))?
    {
        check.update(&chunk)?;
        out.write_all(&chunk)
            .await
            .map_err(|e| MirrorError::Lfs(format!("{}: {e}", file.display())))?;
    }
    out.flush()
        .await
        .map_err(|e| MirrorError::Lfs(format!("{}: {e}", file.display())))?;
    check.finish()
}

/// A reqwest error's text without the URL it carries (which may hold a signed query).
pub fn without_url(e: &reqwest::Error) -> String {
    let text = e.to_string();
    match e.url() {
        Some(url) => text.replace(url.as_str(), "<url>"),
        None => text,
    }
}

/// Copies the LFS objects that the commits new to the target point at: batch API, then
/// each object streamed to a temporary file, verified, and uploaded. Returns the count and
/// total bytes copied.
///
/// Errors: [`MirrorError::Lfs`] when the source is not http(s), the batch API fails, an
/// object is missing at the source, or a download does not match its oid. The caller
/// publishes no ref then.
pub async fn copy_new(
    cache: &Path,
    store: &dyn BlobStore,
    source: &str,
    tips: &BTreeSet<String>,
    exclude: &BTreeSet<String>,
    timeout: Duration,
) -> Result<(usize, u64), MirrorError> {
    let wanted = pointers(cache, tips, exclude, timeout).await?;
    if wanted.is_empty() {
        return Ok((0, 0));
    }
    let (endpoint, mut auth) = batch_endpoint(source)?;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| MirrorError::Lfs(e.to_string()))?;
    let body = serde_json::json!({
        "operation": "download",
        "transfers": ["basic"],
        "objects": wanted.iter().map(|o| serde_json::json!({"oid": o.oid, "size": o.size})).collect::<Vec<_>>(),
    });
    let mut asked = false;
    let response = loop {
        let mut request = client
            .post(endpoint.clone())
            .header("Accept", "application/vnd.git-lfs+json")
            .header("Content-Type", "application/vnd.git-lfs+json")
            .body(body.to_string());
        if let Some((user, password)) = &auth {
            request = request.basic_auth(user, Some(password));
        }
        let response = request
            .send()
            .await
            .map_err(|e| MirrorError::Lfs(format!("batch API: {}", without_url(&e))))?;
        if response.status() == reqwest::StatusCode::UNAUTHORIZED && !asked && auth.is_none() {
            asked = true;
            auth = credential_fill(cache, &endpoint).await;
            if auth.is_some() {
                continue;
            }
        }
        break response;
    };
    if !response.status().is_success() {
        return Err(MirrorError::Lfs(format!(
            "batch API at {} answered {}",
            endpoint.host_str().unwrap_or_default(),
            response.status()
        )));
    }
    let bytes = response
        .bytes()
        .await
        .map_err(|e| MirrorError::Lfs(format!("batch API: {}", without_url(&e))))?;
    let batch: BatchResponse = serde_json::from_slice(&bytes)
        .map_err(|e| MirrorError::Lfs(format!("batch API: unreadable answer: {e}")))?;
    let dir = tempfile::tempdir().map_err(|e| MirrorError::Lfs(e.to_string()))?;
    let mut copied = (0, 0);
    for object in &wanted {
        let Some(entry) = batch.objects.iter().find(|o| o.oid == object.oid) else {
            return Err(MirrorError::Lfs(format!(
                "object {}: not in the batch answer",
                object.oid
            )));
        };
        if let Some(err) = &entry.error {
            return Err(MirrorError::Lfs(format!(
                "object {}: {} ({})",
                object.oid, err.message, err.code
            )));
        }
        let Some(action) = entry.actions.as_ref().and_then(|a| a.download.as_ref()) else {
            return Err(MirrorError::Lfs(format!(
                "object {}: no download action",
                object.oid
            )));
        };
        let mut request = client.get(&action.href);
        for (k, v) in &action.header {
            request = request.header(k, v);
        }
        let file = dir.path().join(&object.oid);
        download_verified(request, object, &file).await?;
        store
            .put_file(&object_key(&object.oid), &file)
            .await
            .map_err(|e| MirrorError::Store {
                target: store.describe(),
                source: e,
            })?;
        let _ = std::fs::remove_file(&file);
        copied.0 += 1;
        copied.1 += object.size;
    }
    Ok(copied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointers_parse_and_junk_does_not() {
        let oid = "a".repeat(64);
        let text = format!("{POINTER_VERSION}\noid sha256:{oid}\nsize 12\n");
        assert_eq!(
            parse_pointer(&text),
            Some(LfsObject {
                oid: oid.clone(),
                size: 12
            })
        );
        assert_eq!(parse_pointer("hello\n"), None);
        assert_eq!(
            parse_pointer(&format!("{POINTER_VERSION}\noid sha256:../../x\nsize 1\n")),
            None
        );
        assert_eq!(object_key(&oid), format!("lfs/objects/aa/aa/{oid}"));
    }

    #[test]
    fn the_batch_endpoint_drops_credentials() {
        let (url, auth) = batch_endpoint("https://u:secret@example.com/team/api").unwrap();
        assert_eq!(
            url.as_str(),
            "https://example.com/team/api.git/info/lfs/objects/batch"
        );
        assert_eq!(auth, Some(("u".into(), "secret".into())));
        let (url, _) = batch_endpoint("http://127.0.0.1:9/x.git/").unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/x.git/info/lfs/objects/batch"
        );
        assert!(batch_endpoint("git@example.com:x.git").is_err());
    }
}
