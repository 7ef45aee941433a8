//! Whether a stock `git clone` of an S3 mirror's clone URL works without credentials. A
//! bucket is private until its policy says otherwise, and git's dumb HTTP client treats
//! only 404 as "not there": S3 answers 403 for a missing key unless anonymous readers may
//! also list the bucket (`s3:ListBucket`). Both mistakes leave a mirror that was published
//! fine and that nobody can clone, so the first publish checks them.

use std::time::Duration;

/// A file git's dumb client asks for and a mirror never has (gitrepository-layout(5)).
const NEVER_THERE: &str = "objects/info/http-alternates";

/// What an anonymous reader of `clone_url` (an `http(s)://` URL of a published mirror)
/// meets, as a sentence with what to do; `None` when a clone works, or when the URL cannot
/// be reached at all (no word is better than a wrong one).
pub async fn anonymous_problem(clone_url: &str) -> Option<String> {
    if !clone_url.starts_with("http") {
        return None;
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .ok()?;
    let status = |path: &'static str| {
        let url = format!("{}/{path}", clone_url.trim_end_matches('/'));
        let client = client.clone();
        async move {
            client
                .get(url)
                .send()
                .await
                .ok()
                .map(|r| r.status().as_u16())
        }
    };
    match status("info/refs").await? {
        401 | 403 => {
            return Some(
                "anonymous readers get HTTP 403 there, so `git clone` fails: let them read the prefix with a bucket policy (s3:GetObject on the prefix, s3:ListBucket on the bucket; README, \"The bucket side\")"
                    .to_string(),
            );
        }
        200 => {}
        _ => return None,
    }
    match status(NEVER_THERE).await? {
        403 => Some(
            "anonymous readers get HTTP 403 for files that do not exist, which git's client takes as a failure: allow s3:ListBucket on the bucket for this prefix too (README, \"The bucket side\")"
                .to_string(),
        ),
        _ => None,
    }
}
