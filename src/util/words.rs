//! Counts, sizes and commit ids as a person reads them in gitsync's output: `1 commit`,
//! `3 commits`, `1,103 objects`, `4.2 KiB`, `1a2b3c4`.

/// How many hex digits of a commit id people are shown (git's own default, `core.abbrev`'s
/// minimum).
pub const SHORT_ID: usize = 7;

/// The first [`SHORT_ID`] characters of an object id (all of it when shorter).
pub fn short_id(oid: &str) -> &str {
    oid.get(..SHORT_ID).unwrap_or(oid)
}

/// Bytes as a person reads them: `912 B`, `4.2 KiB`, `1.3 MiB`, `2.0 GiB`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// `n` with thousands separators (`1,103`; indicatif's `HumanCount`).
pub fn number(n: u64) -> String {
    indicatif::HumanCount(n).to_string()
}

/// `n` and `word`, with an `s` unless `n` is 1: `plural(2, "ref")` is `2 refs`.
pub fn plural(n: impl Into<u64>, word: &str) -> String {
    let n = n.into();
    format!("{} {word}{}", number(n), if n == 1 { "" } else { "s" })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_read_as_words() {
        assert_eq!(plural(1u32, "commit"), "1 commit");
        assert_eq!(plural(0u32, "commit"), "0 commits");
        assert_eq!(plural(1103u64, "object"), "1,103 objects");
        assert_eq!(number(999), "999");
        assert_eq!(number(1_000_000), "1,000,000");
        assert_eq!(short_id("0123456789abcdef"), "0123456");
        assert_eq!(short_id("abc"), "abc");
        assert_eq!(human_size(912), "912 B");
        assert_eq!(human_size(4300), "4.2 KiB");
    }
}
