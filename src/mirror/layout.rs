//! The files git's dumb HTTP client reads, as gitsync writes and reads them.
//!
//! Formats are git's own (`Documentation/gitprotocol-http.txt`, "Dumb Clients";
//! `server-info.c`, which `git update-server-info` uses; `http.c` and `remote-curl.c`,
//! which read them):
//! - `info/refs`: one `<oid>\t<refname>\n` line per ref, sorted by name; an annotated tag
//!   is followed by `<peeled oid>\t<refname>^{}\n`. Every line ends in `\n` (a last line
//!   without one is dropped by git's parser). No `HEAD` line.
//! - `HEAD`: `ref: refs/heads/<branch>\n`.
//! - `objects/info/packs`: `P pack-<hex>.pack\n` per pack, searched by the client from the
//!   last line up, then a blank line.
//! - `objects/pack/pack-<hex>.{pack,idx}`: named by the pack's trailer checksum, as
//!   `git pack-objects` names them, index version 2.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The key of the ref list.
pub const INFO_REFS: &str = "info/refs";
/// The key of the default branch.
pub const HEAD: &str = "HEAD";
/// The key of the pack list.
pub const PACKS: &str = "objects/info/packs";
/// The key of gitsync's own list of packs waiting for deletion (ignored by git).
pub const RETIRED: &str = "objects/info/gitsync-retired.json";

/// One published ref.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// Full name, such as `refs/heads/main` or `refs/tags/v1.0`.
    pub name: String,
    /// The object it names (hex).
    pub oid: String,
    /// For an annotated tag, the object it peels to (hex).
    pub peeled: Option<String>,
}

/// `info/refs` for `refs` (any order; written sorted by name).
pub fn format_info_refs(refs: &[Ref]) -> String {
    let mut sorted: Vec<&Ref> = refs.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out = String::new();
    for r in sorted {
        out.push_str(&format!("{}\t{}\n", r.oid, r.name));
        if let Some(peeled) = &r.peeled {
            out.push_str(&format!("{peeled}\t{}^{{}}\n", r.name));
        }
    }
    out
}

/// Whether `s` is a full hex object id (SHA-1 or SHA-256).
pub fn is_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The refs of an `info/refs` text: name to object id, peeled lines left out. Malformed
/// lines are skipped (a target written by another tool may hold anything).
pub fn parse_info_refs(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| {
            let (oid, name) = line.split_once('\t')?;
            (is_oid(oid) && name.starts_with("refs/") && !name.ends_with("^{}"))
                .then(|| (name.to_string(), oid.to_string()))
        })
        .collect()
}

/// `HEAD` naming `branch` (a short name such as `main`).
pub fn format_head(branch: &str) -> String {
    format!("ref: refs/heads/{branch}\n")
}

/// `objects/info/packs` listing `packs` (names such as `pack-<hex>`) in the given order;
/// git searches the last one first.
pub fn format_packs(packs: &[String]) -> String {
    let mut out: String = packs.iter().map(|p| format!("P {p}.pack\n")).collect();
    out.push('\n');
    out
}

/// The pack names (`pack-<hex>`) listed in an `objects/info/packs` text, in order; other
/// lines are skipped.
pub fn parse_packs(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| {
            let name = line.strip_prefix("P ")?.trim().strip_suffix(".pack")?;
            let hex = name.strip_prefix("pack-")?;
            is_oid(hex).then(|| name.to_string())
        })
        .collect()
}

/// The key of a pack's data (`ext` = `pack`) or index (`ext` = `idx`).
pub fn pack_key(name: &str, ext: &str) -> String {
    format!("objects/pack/{name}.{ext}")
}

/// Packs left out of `objects/info/packs` by a consolidation, deleted after the grace
/// period: name to the time it was left out (Unix seconds).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retired {
    /// `pack-<hex>` to Unix seconds.
    pub packs: BTreeMap<String, i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "1111111111111111111111111111111111111111";
    const B: &str = "2222222222222222222222222222222222222222";

    #[test]
    fn info_refs_is_sorted_peeled_and_ends_every_line() {
        let refs = vec![
            Ref {
                name: "refs/tags/v1".into(),
                oid: B.into(),
                peeled: Some(A.into()),
            },
            Ref {
                name: "refs/heads/main".into(),
                oid: A.into(),
                peeled: None,
            },
        ];
        let text = format_info_refs(&refs);
        assert_eq!(
            text,
            format!("{A}\trefs/heads/main\n{B}\trefs/tags/v1\n{A}\trefs/tags/v1^{{}}\n")
        );
        let parsed = parse_info_refs(&text);
        assert_eq!(parsed.len(), 2);
        assert_eq!(parsed["refs/tags/v1"], B);
    }

    #[test]
    fn parsing_skips_what_is_not_a_ref_line() {
        let text = format!("junk\n{A}\tHEAD\nzz\trefs/heads/x\n{A}\trefs/heads/ok");
        let parsed = parse_info_refs(&text);
        assert_eq!(parsed.keys().collect::<Vec<_>>(), vec!["refs/heads/ok"]);
    }

    #[test]
    fn packs_round_trip_and_skip_junk() {
        let packs = vec![format!("pack-{A}"), format!("pack-{B}")];
        let text = format_packs(&packs);
        assert_eq!(text, format!("P pack-{A}.pack\nP pack-{B}.pack\n\n"));
        assert_eq!(parse_packs(&text), packs);
        assert!(parse_packs("P pack-../../x.pack\nD junk\n").is_empty());
    }
}
