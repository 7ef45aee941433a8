//! Fast-forward fixtures shared by the races and safety attacks: a large push, the check
//! that a repository is wholly at one commit, and what was kept aside.

use std::path::{Path, PathBuf};

use super::Env;

/// A bare remote `remotes/<name>.git` whose main holds `files` files (`f/NNNN.txt`), a clone of it at
/// `root/<name>`, and a push that rewrites every file; returns (bare, clone, old, new).
pub fn big_push(env: &Env, name: &str, files: usize) -> (PathBuf, PathBuf, String, String) {
    let bare = env.path(&format!("remotes/{name}.git"));
    std::fs::create_dir_all(&bare).expect("mkdir");
    env.git(&bare, &["init", "--bare", "-q"]);
    let seed = env.path(&format!("seeds/{name}"));
    std::fs::create_dir_all(seed.join("f")).expect("mkdir");
    env.git(&seed, &["init", "-q"]);
    for i in 0..files {
        std::fs::write(seed.join(format!("f/{i:04}.txt")), format!("line {i}\n")).expect("write");
    }
    env.git(&seed, &["add", "."]);
    env.git(&seed, &["commit", "-qm", "base"]);
    env.git(&seed, &["push", "-q", bare.to_str().expect("utf8"), "main"]);
    let old = env.head(&seed);
    let clone = env.clone_of(&bare, &format!("root/{name}"));
    for i in 0..files {
        std::fs::write(
            seed.join(format!("f/{i:04}.txt")),
            format!("line {i}, rewritten by the push\n"),
        )
        .expect("write");
    }
    env.git(&seed, &["commit", "-qam", "rewrite every file"]);
    env.git(&seed, &["push", "-q", bare.to_str().expect("utf8"), "main"]);
    let new = env.head(&seed);
    (bare, clone, old, new)
}

/// Everything a fast-forward may leave behind, and whether git sees a clean worktree.
pub fn assert_whole(env: &Env, clone: &Path, old: &str, new: &str) -> String {
    let head = env.head(clone);
    assert!(
        head == old || head == new,
        "HEAD at {head}, neither old nor new"
    );
    assert!(
        !clone.join(".git/index.lock").exists(),
        "index.lock left behind"
    );
    assert!(
        !clone.join(".git/gitsync/ff").exists(),
        "the staging folder was left behind"
    );
    let status = env.git(clone, &["status", "--porcelain"]);
    assert!(
        status.is_empty(),
        "the repository is not wholly at one commit (HEAD {head}):\n{}",
        status.lines().take(10).collect::<Vec<_>>().join("\n")
    );
    head
}

/// The text of every file a fast-forward kept aside in `clone`.
pub fn kept_texts(clone: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![clone.join(".git/gitsync/kept")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else {
                out.push(std::fs::read_to_string(entry.path()).unwrap_or_default());
            }
        }
    }
    out
}

/// What is wrong with the cache tree (gitformat-index(5) "Cache tree") of `clone`'s index,
/// as git would find it: every node that claims to be valid must name the tree git writes
/// from the index's entries below its folder, count those entries, and list every subfolder
/// of that tree. Empty when nothing is wrong (an index without a cache tree, or with only
/// invalid nodes, is right).
pub fn cache_tree_errors(env: &Env, clone: &Path) -> Vec<String> {
    let git_dir = PathBuf::from(env.git(clone, &["rev-parse", "--absolute-git-dir"]).trim());
    let index = gix::index::File::at(
        git_dir.join("index"),
        gix::hash::Kind::Sha1,
        false,
        Default::default(),
    )
    .expect("read the index");
    let Some(root) = index.tree() else {
        return Vec::new();
    };
    // The trees git writes from the entries alone: a copy of the index without its cache.
    let listing = env.git(clone, &["ls-files", "-s", "-z"]);
    let copy = git_dir.join("gitsync-test-cache-tree-index");
    let _ = std::fs::remove_file(&copy);
    let copy_env = [("GIT_INDEX_FILE", copy.to_str().expect("utf8"))];
    let mut info = env
        .git_command(clone)
        .args(["update-index", "-z", "--index-info"])
        .envs(copy_env)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("git update-index");
    {
        use std::io::Write;
        let mut stdin = info.stdin.take().expect("stdin");
        for entry in listing.split('\0').filter(|l| !l.is_empty()) {
            // "<mode> <id> <stage>\t<path>" is what --index-info reads.
            stdin.write_all(entry.as_bytes()).expect("write");
            stdin.write_all(b"\0").expect("write");
        }
    }
    assert!(info.wait().expect("wait").success(), "git update-index");
    let written = env.git_env(clone, &["write-tree"], &copy_env);
    let _ = std::fs::remove_file(&copy);
    if !written.status.success() {
        // Unmerged entries: git writes no tree, and no node may claim one.
        return if root.num_entries.is_some() {
            vec!["a valid root over an index git cannot write a tree of".to_string()]
        } else {
            Vec::new()
        };
    }
    let true_root = String::from_utf8_lossy(&written.stdout).trim().to_string();
    let paths: Vec<String> = listing
        .split('\0')
        .filter_map(|l| l.split_once('\t').map(|(_, p)| p.to_string()))
        .collect();
    let mut errors = Vec::new();
    let mut stack = vec![(String::new(), root)];
    while let Some((folder, node)) = stack.pop() {
        for child in &node.children {
            let name = String::from_utf8_lossy(&child.name).to_string();
            let below = if folder.is_empty() {
                name
            } else {
                format!("{folder}/{name}")
            };
            stack.push((below, child));
        }
        let Some(count) = node.num_entries else {
            continue;
        };
        let spec = format!("{true_root}:{folder}");
        let want = env.git_try(clone, &["rev-parse", "--verify", "-q", &spec]);
        let want = String::from_utf8_lossy(&want.stdout).trim().to_string();
        let shown = if folder.is_empty() { "(root)" } else { &folder };
        if node.id != want.as_str() {
            errors.push(format!(
                "{shown}: cached {} but git writes {want:?}",
                node.id
            ));
            continue;
        }
        let prefix = format!("{folder}/");
        let entries = paths
            .iter()
            .filter(|p| folder.is_empty() || p.starts_with(&prefix))
            .count();
        if entries != count as usize {
            errors.push(format!(
                "{shown}: cached {count} entries, the index has {entries}"
            ));
        }
        // "<mode> <type> <id>\t<name>"; `ls-tree -d` would list submodules too.
        let folders: std::collections::BTreeSet<String> = env
            .git(clone, &["ls-tree", "-z", &want])
            .split('\0')
            .filter_map(|l| l.split_once('\t'))
            .filter(|(meta, _)| meta.split(' ').nth(1) == Some("tree"))
            .map(|(_, name)| name.to_string())
            .collect();
        let listed: std::collections::BTreeSet<String> = node
            .children
            .iter()
            .map(|c| String::from_utf8_lossy(&c.name).to_string())
            .collect();
        if folders != listed {
            errors.push(format!(
                "{shown}: lists folders {listed:?}, the tree has {folders:?}"
            ));
        }
    }
    errors
}
