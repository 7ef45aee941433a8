//! Small edits of a configuration file's text that keep everything else as written
//! (comments, order, spacing): `gitsync aws setup --write-config` replaces the `backend`
//! and `aws` blocks and leaves the rest of the file alone.

/// Replaces the top-level block `key:` of a YAML file's `text` with `block` (text that
/// starts with `key:` and ends with a newline), or appends it when the file has no such
/// key. A block runs from its `key:` line to the next line that starts in the first column
/// (another key, or a comment there); comments indented inside the block are replaced with
/// it. Returns the new text.
pub fn replace_top_level(text: &str, key: &str, block: &str) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let is_key = |line: &str| {
        line.strip_prefix(key).is_some_and(|rest| {
            rest.trim_start().starts_with(':') && !rest.starts_with(char::is_alphanumeric)
        })
    };
    let Some(start) = lines.iter().position(|l| is_key(l)) else {
        let mut out = text.to_string();
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(block);
        return out;
    };
    let end = lines[start + 1..]
        .iter()
        .position(|l| l.starts_with(|c: char| !c.is_whitespace()))
        .map_or(lines.len(), |i| start + 1 + i);
    let mut out: String = lines[..start].concat();
    out.push_str(block);
    out.push_str(&lines[end..].concat());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_replaced_and_comments_elsewhere_stay() {
        let text = "# my config\nhostname: laptop\naws:\n  region: x\n  # old note\n  sqs: {queue: q}\n# about pull\npull:\n  interval: 5m\n";
        let out = replace_top_level(text, "aws", "aws:\n  region: eu-west-1\n");
        assert_eq!(
            out,
            "# my config\nhostname: laptop\naws:\n  region: eu-west-1\n# about pull\npull:\n  interval: 5m\n"
        );
        let out = replace_top_level(&out, "backend", "backend: aws\n");
        assert!(out.ends_with("interval: 5m\nbackend: aws\n"), "{out}");
        let again = replace_top_level(&out, "backend", "backend: aws\n");
        assert_eq!(again, out, "idempotent");
        // `aws_extra:` is another key.
        let other = replace_top_level("aws_extra: 1\n", "aws", "aws:\n  a: 1\n");
        assert_eq!(other, "aws_extra: 1\naws:\n  a: 1\n");
        assert_eq!(
            replace_top_level("root: /x", "aws", "aws: {}\n"),
            "root: /x\naws: {}\n"
        );
    }
}
