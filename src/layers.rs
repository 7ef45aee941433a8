//! A test of the crate's shape: every `crate::` reference goes down the layer rule of
//! [`crate::util`] (`cli` -> `daemon` -> features -> services -> `config`/`model` ->
//! `util`/`logging`/`flock`), never up and never sideways, so that a reader of a feature
//! sees only what it really depends on. The model is jj's `test_no_forgotten_test_files`.

use std::collections::BTreeMap;
use std::path::Path;

/// Each top-level module and its layer (higher uses lower).
const LAYERS: &[(&str, u8)] = &[
    ("util", 0),
    ("logging", 0),
    ("flock", 0),
    ("config", 1),
    ("model", 1),
    ("git", 2),
    ("backend", 2),
    ("store", 2),
    ("discover", 2),
    ("partition", 3),
    ("mirror", 3),
    ("webhook", 3),
    ("deploy", 3),
    ("observe", 3),
    ("daemon", 4),
    ("cli", 5),
];

/// Every `crate::<module>` reference of the non-test code of `file` (a file of module
/// `me`) that breaks the rule, as `file:line crate::<module>`.
fn breaches(file: &Path, me: &str, layers: &BTreeMap<&str, u8>, out: &mut Vec<String>) {
    let Ok(text) = std::fs::read_to_string(file) else {
        out.push(format!("{}: unreadable", file.display()));
        return;
    };
    let mine = layers[me];
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("#[cfg(test)]") {
            break;
        }
        if line.trim_start().starts_with("//") {
            continue;
        }
        for (at, _) in line.match_indices("crate::") {
            let other: String = line[at + 7..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if other == me {
                continue;
            }
            match layers.get(other.as_str()) {
                Some(&theirs) if theirs < mine => {}
                Some(_) => out.push(format!("{}:{} crate::{other}", file.display(), i + 1)),
                None => {}
            }
        }
    }
}

#[test]
fn every_reference_goes_down_the_layers() {
    let layers: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = Vec::new();
    let mut unplaced = Vec::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(&src).expect("under src");
            let first = rel
                .components()
                .next()
                .and_then(|c| c.as_os_str().to_str())
                .unwrap_or_default();
            let me = first.trim_end_matches(".rs");
            if matches!(me, "lib" | "main" | "bin" | "layers") {
                continue;
            }
            if !layers.contains_key(me) {
                unplaced.push(me.to_string());
                continue;
            }
            breaches(&path, me, &layers, &mut out);
        }
    }
    unplaced.sort();
    unplaced.dedup();
    assert!(
        unplaced.is_empty(),
        "modules with no layer (add them to LAYERS in src/layers.rs): {unplaced:?}"
    );
    out.sort();
    assert!(
        out.is_empty(),
        "references that go up or sideways:\n{}",
        out.join("\n")
    );
}
