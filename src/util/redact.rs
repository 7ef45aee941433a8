//! Credentials kept out of every message, log and status line (invariant: no secret is
//! ever shown): passwords and tokens in URLs, secret query parameters, and URLs quoted
//! inside free text such as git's error messages.

/// Query parameters whose value is a secret (GitLab's `private_token`, OAuth's
/// `access_token`, and the like), compared case-insensitively.
const SECRET_PARAMS: &[&str] = &[
    "private_token",
    "access_token",
    "token",
    "password",
    "passwd",
    "secret",
    "api_key",
    "apikey",
    "key",
    "auth",
    "signature",
    "sig",
    "x-amz-signature",
    "x-amz-credential",
    "x-amz-security-token",
];

/// Replaces the value of each secret query parameter ([`SECRET_PARAMS`]) with `***`.
fn redact_query(url: &str) -> String {
    let Some((base, query)) = url.split_once('?') else {
        return url.to_string();
    };
    let (query, fragment) = match query.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (query, None),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if SECRET_PARAMS.contains(&name.to_ascii_lowercase().as_str()) => {
                format!("{name}=***")
            }
            _ => pair.to_string(),
        })
        .collect();
    let mut out = format!("{base}?{}", params.join("&"));
    if let Some(fragment) = fragment {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

/// Removes a password or token from a URL: `https://user:secret@host/x` becomes
/// `https://user:***@host/x`, a bare token (`https://token@host`) becomes
/// `https://***@host`, and secret query parameters (`?private_token=...`) become
/// `?private_token=***`. scp-like (`git@host:x`) and local paths are returned unchanged.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let url = &redact_query(url);
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    let userinfo = &authority[..at];
    let redacted = match userinfo.split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None if url.starts_with("ssh://") => userinfo.to_string(),
        None => "***".to_string(),
    };
    format!("{}{}@{}", &url[..scheme_end + 3], redacted, &rest[at + 1..])
}

/// Redacts every URL with credentials inside free text (git's error messages quote the
/// remote URL): each whitespace- or quote-separated word is passed through [`redact_url`].
pub fn redact_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    for c in text.chars() {
        if c.is_whitespace() || c == '\'' || c == '"' {
            out.push_str(&redact_url(&word));
            word.clear();
            out.push(c);
        } else {
            word.push(c);
        }
    }
    out.push_str(&redact_url(&word));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_credentials() {
        assert_eq!(
            redact_url("https://bob:hunter2@example.com/a.git"),
            "https://bob:***@example.com/a.git"
        );
        assert_eq!(
            redact_url("https://ghp_token@example.com/a.git"),
            "https://***@example.com/a.git"
        );
        assert_eq!(
            redact_url("ssh://git@example.com/a.git"),
            "ssh://git@example.com/a.git"
        );
        assert_eq!(redact_url("git@example.com:a.git"), "git@example.com:a.git");
        assert_eq!(redact_url("/srv/a.git"), "/srv/a.git");
        assert_eq!(
            redact_url("https://h/a.git?private_token=glpat-123&ref=main"),
            "https://h/a.git?private_token=***&ref=main"
        );
        assert_eq!(
            redact_url("https://u:pw@h/x?Access_Token=abc#frag"),
            "https://u:***@h/x?Access_Token=***#frag"
        );
        assert_eq!(redact_url("https://h/x?token=t"), "https://h/x?token=***");
        assert_eq!(
            redact_text("fatal: 'https://h/r?token=s3cr3t' not found"),
            "fatal: 'https://h/r?token=***' not found"
        );
        assert_eq!(
            redact_text("fatal: unable to access 'https://u:pw@h/x/': 403"),
            "fatal: unable to access 'https://u:***@h/x/': 403"
        );
    }
}
