//! Counts as a person reads them in gitsync's output: `1 commit`, `3 commits`,
//! `1,103 objects`.

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
    }
}
