//! Finding where a key path stands in the YAML text, for error messages.
//!
//! serde reports *which* key is wrong; this module finds *where* it is. It follows block
//! mappings and block sequences by indentation, which is how configuration files are
//! written; inside a flow collection (`{a: 1}`) it reports the line of the nearest key it
//! could find.

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// A mapping key.
    Key(String),
    /// A sequence index, 0-based.
    Index(usize),
}

/// Turns serde_path_to_error's path into segments.
pub fn segments(path: &serde_path_to_error::Path) -> Vec<Segment> {
    use serde_path_to_error::Segment as S;
    path.iter()
        .filter_map(|s| match s {
            S::Map { key } => Some(Segment::Key(key.clone())),
            S::Seq { index } => Some(Segment::Index(*index)),
            S::Enum { .. } | S::Unknown => None,
        })
        .collect()
}

/// Renders segments as `a.b[2].c`.
pub fn dotted(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        match segment {
            Segment::Key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// Removes the value at `segments` from `value`. Returns false when nothing was removed.
pub fn remove(value: &mut yaml_serde::Value, segments: &[Segment]) -> bool {
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut current = value;
    for segment in parents {
        let next = match (segment, current) {
            (Segment::Key(key), yaml_serde::Value::Mapping(map)) => map.get_mut(key.as_str()),
            (Segment::Index(i), yaml_serde::Value::Sequence(seq)) => seq.get_mut(*i),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return false,
        }
    }
    match (last, current) {
        (Segment::Key(key), yaml_serde::Value::Mapping(map)) => map.remove(key.as_str()).is_some(),
        (Segment::Index(i), yaml_serde::Value::Sequence(seq)) if *i < seq.len() => {
            seq.remove(*i);
            true
        }
        _ => false,
    }
}

/// The 1-based line of the key path in `text`, or of the deepest part of it that was found;
/// `None` when not even the first key is in the text.
pub fn key_line(text: &str, segments: &[Segment]) -> Option<usize> {
    // (line number, indent, content) of every line that is not blank or a comment.
    let lines: Vec<(usize, usize, &str)> = text
        .lines()
        .enumerate()
        .filter_map(|(i, raw)| {
            let content = raw.trim_start();
            let keep = !content.is_empty() && !content.starts_with('#');
            keep.then_some((i, raw.len() - content.len(), content))
        })
        .collect();
    let mut from = 0usize;
    // Indent of the parent and whether the parent is a sequence item.
    let mut parent: Option<(usize, bool)> = None;
    let mut found = None;
    for segment in segments {
        let mut seq_count = 0usize;
        let mut hit = None;
        for (j, &(_, indent, content)) in lines.iter().enumerate().skip(from) {
            let is_item = content.starts_with("- ") || content == "-";
            let (body, body_indent) = match content.strip_prefix("- ") {
                Some(rest) => (rest.trim_start(), indent + 2),
                None => (content, indent),
            };
            match parent {
                Some((p, true)) if j != from && indent <= p => break,
                Some((p, false)) if indent < p || (indent == p && !is_item) => break,
                _ => {}
            }
            match segment {
                Segment::Key(key) => {
                    let body = body.trim_start_matches(['"', '\'']);
                    let is_key = body
                        .strip_prefix(key.as_str())
                        .map(|rest| rest.trim_start_matches(['"', '\'']).starts_with(':'))
                        .unwrap_or(false);
                    if is_key {
                        hit = Some((j, body_indent, false));
                        break;
                    }
                }
                Segment::Index(n) => {
                    if is_item {
                        if seq_count == *n {
                            hit = Some((j, indent, true));
                            break;
                        }
                        seq_count += 1;
                    }
                }
            }
        }
        let Some((j, indent, item)) = hit else {
            return found;
        };
        found = Some(lines[j].0 + 1);
        // An item's first key stands on the item's own line; a key's children follow it.
        from = if item { j } else { j + 1 };
        parent = Some((indent, item));
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Segment {
        Segment::Key(s.to_string())
    }

    #[test]
    fn finds_nested_keys_and_indexes() {
        let text = "root: /x\nrepositories:\n  - a\n  - b\naws:\n  # c\n  sqs:\n    queue: q\n";
        assert_eq!(key_line(text, &[k("root")]), Some(1));
        assert_eq!(
            key_line(text, &[k("repositories"), Segment::Index(1)]),
            Some(4)
        );
        assert_eq!(key_line(text, &[k("aws"), k("sqs"), k("queue")]), Some(8));
        assert_eq!(key_line(text, &[k("aws"), k("sns")]), Some(5));
    }
}
