//! The randomized attack on the fast-forward (issue 11): many kinds of worktree state times
//! random pushes, through `gitsync sync` and through a running daemon, with every byte of
//! the worktree (ignored and untracked files, submodules, linked worktrees), the index,
//! HEAD and the local refs compared before and after.
//!
//! A case passes when either nothing of the repository changed at all, or the branch moved
//! to exactly the pushed commit and every file of the user's (modified, untracked, ignored,
//! inside a submodule) is still there byte for byte, or kept in `.git/gitsync/kept/`, and
//! no branch checked out in another worktree moved. `GITSYNC_ATTACK_CASES` sets the number
//! of cases (default 60; CI runs 300), `GITSYNC_ATTACK_SEED` the seed.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Env;

/// Every kind of worktree state drawn; the list is among them.
const KINDS: &[&str] = &[
    "clean",
    "untracked-in-the-way",
    "ignored-log-in-the-way",
    "ignored-exclude-in-the-way",
    "ignored-folder-where-file-comes",
    "only-ignored-folder-where-file-comes",
    "untracked-elsewhere",
    "ignored-elsewhere",
    "unstaged-edit",
    "staged-edit",
    "deleted-file",
    "chmod-x",
    "file-became-symlink",
    "submodule-modified",
    "submodule-untracked",
    "submodule-other-commit",
    "submodule-clean",
    "worktree-same-branch-clean",
    "worktree-same-branch-dirty",
    "worktree-other-branch",
    "detached",
    "no-upstream",
    "stale-index-lock",
    "merge-in-progress",
    "stash-kept",
    "local-commit-ahead",
    "empty-folder-in-the-way",
    "untracked-in-new-folder",
    "assume-unchanged-edit",
    "assume-unchanged-big-edit",
    "skip-worktree-edit",
    "symlink-into-git",
    "hard-link-to-tracked",
    "cwd-in-removed-folder",
    "lfs-clean",
    "lfs-edit",
    "read-only-folder",
    "full-filesystem",
    "separate-git-dir",
    "local-upstream",
];

/// What a random push may do; each case draws one to three.
const PUSHES: &[&str] = &[
    "modify-a",
    "add-notes-log",
    "add-new-txt",
    "add-build-file",
    "add-cache-file",
    "add-x-file",
    "delete-b",
    "file-to-folder",
    "folder-to-file",
    "chmod-a",
    "add-symlink",
    "many-files",
    "submodule-to-file",
    "bump-submodule",
    "add-in-new-folder",
    "case-only-rename",
    "crlf-attributes",
    "modify-c",
    "modify-lfs",
    "nothing",
];

struct World {
    env: Env,
    plain: PathBuf,
    with_sub: PathBuf,
    with_lfs: PathBuf,
    sub_remote: PathBuf,
}

/// The filter settings `git lfs install` writes, given to the clones that hold LFS files
/// (`git clone -c`, which keeps them in the clone's config).
const LFS_FILTER: &[&str] = &[
    "-c",
    "filter.lfs.process=git-lfs filter-process",
    "-c",
    "filter.lfs.required=true",
    "-c",
    "filter.lfs.clean=git-lfs clean -- %f",
    "-c",
    "filter.lfs.smudge=git-lfs smudge -- %f",
];

/// A `file://` URL: git-lfs reads and writes a local remote's LFS files only through one.
fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn world() -> World {
    let env = Env::new();
    let lfs = std::process::Command::new("git-lfs")
        .arg("version")
        .output();
    assert!(
        lfs.is_ok_and(|o| o.status.success()),
        "tests/it/lost_work.rs needs git-lfs: apt-get install git-lfs (make deps does)"
    );
    let sub_remote = env.path("remotes/lib.git");
    std::fs::create_dir_all(&sub_remote).expect("mkdir");
    env.git(&sub_remote, &["init", "--bare", "-q"]);
    let seed = env.path("seeds/lib");
    std::fs::create_dir_all(&seed).expect("mkdir");
    env.git(&seed, &["init", "-q"]);
    env.write(&seed, "lib.txt", "lib one\n");
    env.git(&seed, &["add", "."]);
    env.git(&seed, &["commit", "-qm", "lib"]);
    env.write(&seed, "lib.txt", "lib two\n");
    env.git(&seed, &["commit", "-qam", "lib two"]);
    env.git(
        &seed,
        &["push", "-q", sub_remote.to_str().expect("utf8"), "main"],
    );

    let make = |name: &str, sub: bool, lfs: bool| {
        let bare = env.path(&format!("remotes/{name}.git"));
        std::fs::create_dir_all(&bare).expect("mkdir");
        env.git(&bare, &["init", "--bare", "-q"]);
        let seed = env.path(&format!("seeds/{name}"));
        std::fs::create_dir_all(&seed).expect("mkdir");
        env.git(&seed, &["init", "-q"]);
        env.write(&seed, "a.txt", "alpha\n");
        env.write(&seed, "b.txt", "bravo\n");
        env.write(&seed, "d.txt", "delta\n");
        env.write(&seed, "dir/c.txt", "charlie\n");
        env.write(&seed, "dir/deep/e.txt", "echo\n");
        env.write(&seed, ".gitignore", "*.log\nbuild/\ncache/\n");
        if lfs {
            env.git(&seed, &["lfs", "install", "--local"]);
            env.git(&seed, &["lfs", "track", "*.bin"]);
            env.write(&seed, "big.bin", &"large file, stored in LFS\n".repeat(40));
        }
        if sub {
            env.git(
                &seed,
                &[
                    "-c",
                    "protocol.file.allow=always",
                    "submodule",
                    "add",
                    "-q",
                    sub_remote.to_str().expect("utf8"),
                    "sub",
                ],
            );
            // Record the first commit, so "the other commit" exists.
            env.git(&seed.join("sub"), &["checkout", "-q", "HEAD~1"]);
        }
        env.git(&seed, &["add", "-A"]);
        env.git(&seed, &["commit", "-qm", "base"]);
        env.git(&seed, &["push", "-q", &file_url(&bare), "main"]);
        bare
    };
    let plain = make("plain", false, false);
    let with_sub = make("withsub", true, false);
    let with_lfs = make("withlfs", false, true);
    assert!(
        with_lfs.join("lfs/objects").is_dir(),
        "the LFS push stored no LFS objects"
    );
    World {
        env,
        plain,
        with_sub,
        with_lfs,
        sub_remote,
    }
}

/// One case's repository: its own bare remote and a clone under `root`.
struct Case {
    kind: &'static str,
    pushes: Vec<&'static str>,
    bare: PathBuf,
    clone: PathBuf,
    /// The clone's git folder (`clone/.git`, or elsewhere with `--separate-git-dir`).
    git_dir: PathBuf,
    linked: Option<PathBuf>,
    sub: bool,
    lfs: bool,
    /// A process whose working folder is in the worktree, stopped when the case is dropped.
    holder: Option<std::process::Child>,
    /// A full tmpfs under the worktree, unmounted when the case is dropped.
    disk: Option<common::disk::Tmpfs>,
    /// A read-only folder, made writable again when the case is dropped.
    frozen: Option<common::disk::Immutable>,
}

impl Drop for Case {
    /// Stops the holder, undoes the file-system states and removes the case's folders
    /// (the disk stays small over hundreds of cases).
    fn drop(&mut self) {
        if let Some(mut child) = self.holder.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.frozen.take();
        self.disk.take();
        let _ = std::fs::remove_dir_all(&self.clone);
        if let Some(l) = &self.linked {
            let _ = std::fs::remove_dir_all(l);
        }
        if !self.git_dir.starts_with(&self.clone) {
            let _ = std::fs::remove_dir_all(&self.git_dir);
        }
    }
}

fn set_up_case(w: &World, root: &Path, n: usize, rng: &mut fastrand::Rng) -> Case {
    let env = &w.env;
    let kind = KINDS[rng.usize(..KINDS.len())];
    let sub = kind.starts_with("submodule") || (!kind.starts_with("lfs") && rng.u8(..4) == 0);
    let lfs = !sub && (kind.starts_with("lfs") || rng.u8(..6) == 0);
    let source = match (sub, lfs) {
        (true, _) => &w.with_sub,
        (_, true) => &w.with_lfs,
        _ => &w.plain,
    };
    let bare = env.path(&format!("cases/{n}.git"));
    env.git(
        env.dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            source.to_str().expect("utf8"),
            bare.to_str().expect("utf8"),
        ],
    );
    if lfs {
        // A bare clone leaves the LFS files behind: copy them over.
        let copied = std::process::Command::new("cp")
            .arg("-a")
            .arg(source.join("lfs"))
            .arg(bare.join("lfs"))
            .status()
            .expect("cp");
        assert!(copied.success(), "copying the LFS files failed");
    }
    let clone = root.join(format!("c{n:04}"));
    // A worktree on a small tmpfs that fills up; its git folder stays on the big disk, so
    // that the fetch still lands and the fast-forward is what meets the full disk.
    let disk = (kind == "full-filesystem").then(|| common::disk::Tmpfs::mount(&clone, "1m"));
    let separate = kind == "separate-git-dir" || disk.is_some();
    let git_dir = if separate {
        std::fs::create_dir_all(env.path("gitdirs")).expect("mkdir");
        env.path(&format!("gitdirs/{n}"))
    } else {
        clone.join(".git")
    };
    // `clone -c` (after `clone`) keeps the settings in the clone's own config.
    let mut args: Vec<String> = vec!["clone".to_string(), "-q".to_string()];
    if lfs {
        args.extend(LFS_FILTER.iter().map(|a| a.to_string()));
    }
    if separate {
        args.push(format!("--separate-git-dir={}", git_dir.display()));
    }
    args.push(if lfs {
        file_url(&bare)
    } else {
        bare.display().to_string()
    });
    args.push(clone.display().to_string());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.git(env.dir.path(), &args);
    if lfs {
        let big = std::fs::read(clone.join("big.bin")).expect("big.bin");
        assert!(
            !big.starts_with(b"version https://git-lfs"),
            "the clone holds the LFS pointer, not the file: git-lfs did not run"
        );
        let status = env.git(&clone, &["status", "--porcelain"]);
        assert!(
            status.is_empty(),
            "a fresh LFS clone is not clean: {status}"
        );
    }
    if sub {
        env.git(
            &clone,
            &[
                "-c",
                "protocol.file.allow=always",
                "submodule",
                "update",
                "--init",
                "-q",
            ],
        );
    }
    let mut pushes: Vec<&'static str> = (0..1 + rng.usize(..3))
        .map(|_| PUSHES[rng.usize(..PUSHES.len())])
        .filter(|p| sub || !p.contains("submodule"))
        .filter(|p| lfs || !p.contains("lfs"))
        .collect();
    pushes.sort();
    pushes.dedup();
    if pushes.is_empty() {
        pushes.push("modify-a");
    }
    // Make the in-the-way kinds meet a push that they are in the way of.
    let meets = match kind {
        "untracked-in-the-way" => Some("add-new-txt"),
        "ignored-log-in-the-way" => Some("add-notes-log"),
        "ignored-exclude-in-the-way" => Some("add-x-file"),
        "ignored-folder-where-file-comes" => Some("add-build-file"),
        "only-ignored-folder-where-file-comes" => Some("add-cache-file"),
        "empty-folder-in-the-way" => Some("add-x-file"),
        "untracked-in-new-folder" => Some("add-in-new-folder"),
        "symlink-into-git" | "hard-link-to-tracked" => Some("modify-a"),
        "cwd-in-removed-folder" => Some("folder-to-file"),
        "lfs-clean" | "lfs-edit" => Some("modify-lfs"),
        "read-only-folder" => Some(if rng.bool() {
            "modify-c"
        } else {
            "folder-to-file"
        }),
        "full-filesystem" => Some(if rng.bool() { "modify-a" } else { "many-files" }),
        "assume-unchanged-edit" | "assume-unchanged-big-edit" | "skip-worktree-edit" => {
            Some(if rng.bool() { "modify-a" } else { "chmod-a" })
        }
        "submodule-modified" | "submodule-untracked" | "submodule-other-commit" => {
            Some(if rng.bool() {
                "submodule-to-file"
            } else {
                "bump-submodule"
            })
        }
        _ => None,
    };
    if let Some(p) = meets
        && rng.u8(..4) != 0
        && !pushes.contains(&p)
    {
        pushes.push(p);
    }
    if pushes.contains(&"submodule-to-file") {
        pushes.retain(|p| *p != "bump-submodule");
    }
    let mut case = Case {
        kind,
        pushes,
        bare,
        clone,
        git_dir,
        linked: None,
        sub,
        lfs,
        holder: None,
        disk,
        frozen: None,
    };
    apply_kind(w, &mut case, n);
    case
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

fn apply_kind(w: &World, case: &mut Case, n: usize) {
    let env = &w.env;
    let c = case.clone.clone();
    match case.kind {
        "clean" | "submodule-clean" => {}
        "untracked-in-the-way" => write(&c.join("new.txt"), b"my own new.txt\n"),
        "ignored-log-in-the-way" => write(&c.join("notes.log"), b"my notes\n"),
        "ignored-exclude-in-the-way" => {
            write(&c.join(".git/info/exclude"), b"x\n");
            write(&c.join("x"), b"excluded but mine\n");
        }
        "ignored-folder-where-file-comes" => {
            write(&c.join("build/out.o"), b"\x7fELF object\n");
            write(&c.join("build/deep/more.o"), b"more\n");
        }
        "only-ignored-folder-where-file-comes" => write(&c.join("cache/blob"), b"cached\n"),
        "untracked-elsewhere" => write(&c.join("scratch/todo.md"), b"- [ ] mine\n"),
        "ignored-elsewhere" => write(&c.join("dir/debug.log"), b"debug\n"),
        "unstaged-edit" => write(&c.join("a.txt"), b"alpha, edited by me\n"),
        "staged-edit" => {
            write(&c.join("dir/c.txt"), b"charlie staged\n");
            env.git(&c, &["add", "dir/c.txt"]);
        }
        "deleted-file" => std::fs::remove_file(c.join("d.txt")).expect("rm"),
        "chmod-x" => {
            std::fs::set_permissions(c.join("b.txt"), std::fs::Permissions::from_mode(0o755))
                .expect("chmod")
        }
        "file-became-symlink" => {
            std::fs::remove_file(c.join("b.txt")).expect("rm");
            std::os::unix::fs::symlink("a.txt", c.join("b.txt")).expect("symlink");
        }
        "submodule-modified" => write(&c.join("sub/lib.txt"), b"lib edited in the submodule\n"),
        "submodule-untracked" => write(&c.join("sub/mine.txt"), b"untracked in the submodule\n"),
        "submodule-other-commit" => {
            env.git(&c.join("sub"), &["checkout", "-q", "main"]);
        }
        "worktree-same-branch-clean" | "worktree-same-branch-dirty" | "worktree-other-branch" => {
            // `--force` checks out main a second time; `-b topic` another branch.
            let linked = c.with_file_name(format!("wt{n:04}"));
            let at = linked.to_str().expect("utf8");
            let args: &[&str] = if case.kind == "worktree-other-branch" {
                &["worktree", "add", "-q", "-b", "topic", at]
            } else {
                &["worktree", "add", "-q", "--force", at, "main"]
            };
            env.git(&c, args);
            if case.kind.ends_with("dirty") {
                write(&linked.join("a.txt"), b"edited in the linked worktree\n");
            }
            case.linked = Some(linked);
        }
        "detached" => {
            env.git(&c, &["checkout", "-q", "--detach"]);
        }
        "no-upstream" => {
            env.git(&c, &["branch", "-q", "--unset-upstream"]);
        }
        "stale-index-lock" => {
            let lock = c.join(".git/index.lock");
            write(&lock, b"");
            let old = std::time::SystemTime::now() - Duration::from_secs(3600);
            std::fs::File::options()
                .write(true)
                .open(&lock)
                .and_then(|f| f.set_modified(old))
                .expect("age");
        }
        "merge-in-progress" => {
            let head = env.head(&c);
            write(&c.join(".git/MERGE_HEAD"), format!("{head}\n").as_bytes());
        }
        "stash-kept" => {
            write(&c.join("a.txt"), b"stashed edit\n");
            env.git(&c, &["stash", "-q"]);
        }
        "local-commit-ahead" => {
            env.commit(&c, "mine.txt", "my commit\n", "mine");
        }
        "empty-folder-in-the-way" => std::fs::create_dir_all(c.join("x")).expect("mkdir"),
        "untracked-in-new-folder" => write(&c.join("newdir/mine.txt"), b"mine\n"),
        // Edits that index flags hide from `git status` (issue 20).
        "assume-unchanged-edit" => {
            env.git(&c, &["update-index", "--assume-unchanged", "a.txt"]);
            write(&c.join("a.txt"), b"alpha, edited behind assume-unchanged\n");
        }
        "assume-unchanged-big-edit" => {
            env.git(&c, &["update-index", "--assume-unchanged", "a.txt"]);
            write(&c.join("a.txt"), &vec![b'x'; 300_000]);
        }
        "skip-worktree-edit" => {
            env.git(&c, &["update-index", "--skip-worktree", "a.txt"]);
            write(&c.join("a.txt"), b"alpha, edited behind skip-worktree\n");
        }
        // A tracked file that became a symlink into the git folder: never written through.
        "symlink-into-git" => {
            std::fs::remove_file(c.join("a.txt")).expect("rm");
            std::os::unix::fs::symlink(".git/config", c.join("a.txt")).expect("symlink");
        }
        // An untracked hard link to a tracked file: it keeps the old bytes, as with git.
        "hard-link-to-tracked" => {
            std::fs::hard_link(c.join("a.txt"), c.join("linked-a.txt")).expect("ln");
        }
        // A shell sitting in a folder the push turns into a file.
        "cwd-in-removed-folder" => {
            let child = std::process::Command::new("sleep")
                .arg("120")
                .current_dir(c.join("dir/deep"))
                .spawn()
                .expect("sleep");
            case.holder = Some(child);
        }
        // A tracked LFS file (the worktree holds the file, git the pointer) edited.
        "lfs-clean" | "separate-git-dir" => {}
        "lfs-edit" => write(&c.join("big.bin"), b"my own edit of the LFS file\n"),
        // A folder nothing can be written into (chattr +i; root ignores mode bits).
        "read-only-folder" => case.frozen = Some(common::disk::Immutable::set(&c.join("dir"))),
        // The worktree's disk is full: not one more block.
        "full-filesystem" => {
            if let Some(disk) = &case.disk {
                disk.fill("filler.bin");
            }
        }
        // The checked-out branch's upstream is another local branch, which tracks origin.
        "local-upstream" => {
            env.git(&c, &["checkout", "-q", "-b", "work", "--track", "main"]);
        }
        other => panic!("unknown kind {other}"),
    }
}

/// Makes the case's pushes in a scratch clone and returns the pushed commit.
fn push(w: &World, case: &Case, n: usize) -> String {
    let env = &w.env;
    let s = env.path(&format!("scratch/{n}"));
    if case.lfs {
        let mut args: Vec<String> = vec!["clone".to_string(), "-q".to_string()];
        args.extend(LFS_FILTER.iter().map(|a| a.to_string()));
        args.extend([file_url(&case.bare), s.display().to_string()]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        env.git(env.dir.path(), &args);
        // The pre-push hook that uploads new LFS files.
        env.git(&s, &["lfs", "install", "--local"]);
    } else {
        env.git(
            env.dir.path(),
            &[
                "clone",
                "-q",
                case.bare.to_str().expect("utf8"),
                s.to_str().expect("utf8"),
            ],
        );
    }
    for p in &case.pushes {
        match *p {
            "modify-a" => write(&s.join("a.txt"), b"alpha, pushed\n"),
            "add-notes-log" => {
                write(&s.join("notes.log"), b"pushed log\n");
                env.git(&s, &["add", "-f", "notes.log"]);
            }
            "add-new-txt" => write(&s.join("new.txt"), b"pushed new.txt\n"),
            "add-build-file" => {
                write(&s.join("build"), b"pushed build script\n");
                env.git(&s, &["add", "-f", "build"]);
            }
            "add-cache-file" => {
                write(&s.join("cache"), b"pushed cache file\n");
                env.git(&s, &["add", "-f", "cache"]);
            }
            "add-x-file" => write(&s.join("x"), b"pushed x\n"),
            "delete-b" => {
                env.git(&s, &["rm", "-q", "b.txt"]);
            }
            "file-to-folder" => {
                env.git(&s, &["rm", "-q", "d.txt"]);
                write(&s.join("d.txt/inner.txt"), b"now a folder\n");
            }
            "folder-to-file" => {
                env.git(&s, &["rm", "-rq", "dir/deep"]);
                write(&s.join("dir/deep"), b"now a file\n");
            }
            // (After a case-only rename there is no a.txt to change.)
            "chmod-a" if s.join("a.txt").exists() => {
                std::fs::set_permissions(s.join("a.txt"), std::fs::Permissions::from_mode(0o755))
                    .expect("chmod");
            }
            "chmod-a" => {}
            "add-symlink" => {
                let _ = std::fs::remove_file(s.join("link"));
                std::os::unix::fs::symlink("dir/c.txt", s.join("link")).expect("symlink");
            }
            "many-files" => {
                for i in 0..30 {
                    write(
                        &s.join(format!("many/f{i:02}.txt")),
                        format!("file {i}\n").as_bytes(),
                    );
                }
            }
            "submodule-to-file" => {
                env.git(&s, &["rm", "-q", "sub"]);
                let _ = std::fs::remove_dir_all(s.join("sub"));
                write(&s.join("sub"), b"the submodule is a file now\n");
            }
            "bump-submodule" => {
                let main = env.git(&w.sub_remote, &["rev-parse", "main"]);
                env.git(
                    &s,
                    &[
                        "update-index",
                        "--cacheinfo",
                        &format!("160000,{},sub", main.trim()),
                    ],
                );
            }
            "add-in-new-folder" => write(&s.join("newdir/mine.txt"), b"pushed into newdir\n"),
            // Attributes that change how files are written out: git's checkout-index then
            // writes them (CRLF endings), not gitsync.
            "crlf-attributes" => {
                write(&s.join(".gitattributes"), b"*.txt text eol=crlf\n");
                write(&s.join("a.txt"), b"alpha, pushed with crlf endings\n");
            }
            // Only the case of the name changes (a delete and an add on Linux).
            "case-only-rename" => {
                if s.join("a.txt").exists() {
                    env.git(&s, &["mv", "a.txt", "A.txt"]);
                }
            }
            "modify-c" => write(&s.join("dir/c.txt"), b"charlie, pushed\n"),
            "modify-lfs" => write(&s.join("big.bin"), b"a new version of the LFS file\n"),
            // An empty commit: the branch must still move.
            "nothing" => {}
            other => panic!("unknown push {other}"),
        }
    }
    env.git(&s, &["add", "-A"]);
    env.git(&s, &["commit", "-qm", "push", "--allow-empty"]);
    env.git(&s, &["push", "-q", "origin", "main"]);
    env.head(&s)
}

/// A file's kind, mode and bytes (a symlink's target).
type Entry = (u32, Vec<u8>);

/// Every file under `dir` (including `.git/info`, submodule folders and their `.git`
/// files), except the repository's own git folder's objects and gitsync's folders.
fn files(dir: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let rel = path.strip_prefix(dir).expect("prefix").to_path_buf();
            if rel.starts_with(".git") && path.is_dir() {
                continue;
            }
            let meta = path.symlink_metadata().expect("lstat");
            if meta.is_dir() {
                out.insert(rel, (meta.mode() & 0o170000, Vec::new()));
                stack.push(path);
            } else if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&path).expect("readlink");
                out.insert(
                    rel,
                    (meta.mode(), target.into_os_string().into_encoded_bytes()),
                );
            } else {
                out.insert(rel, (meta.mode(), std::fs::read(&path).expect("read")));
            }
        }
    }
    out
}

struct Snapshot {
    files: BTreeMap<PathBuf, Entry>,
    index: Vec<u8>,
    head: String,
    refs: String,
    user_work: BTreeSet<PathBuf>,
    /// The linked worktree's files and HEAD.
    linked: Option<(BTreeMap<PathBuf, Entry>, String)>,
}

fn snapshot(env: &Env, case: &Case) -> Snapshot {
    let c = &case.clone;
    let refs = env.git(
        c,
        &[
            "for-each-ref",
            "--format=%(refname) %(objectname)",
            "refs/heads",
            "refs/tags",
            "refs/stash",
        ],
    );
    let status = env.git(
        c,
        &[
            "status",
            "--porcelain=v1",
            "-z",
            "--ignored=matching",
            "--untracked-files=all",
        ],
    );
    let mut user_work: BTreeSet<PathBuf> = status
        .split('\0')
        .filter(|l| l.len() > 3)
        .map(|l| PathBuf::from(&l[3..]))
        .collect();
    // Paths whose edits index flags hide from `git status` (`ls-files -v`: a lowercase tag
    // is assume-unchanged, S is skip-worktree) are the user's too.
    for line in env.git(c, &["ls-files", "-v", "-z"]).split('\0') {
        let mut chars = line.chars();
        if let Some(tag) = chars.next()
            && (tag.is_ascii_lowercase() || tag == 'S')
            && line.len() > 2
        {
            user_work.insert(PathBuf::from(&line[2..]));
        }
    }
    if case.sub {
        for (p, _) in files(&c.join("sub")) {
            user_work.insert(Path::new("sub").join(p));
        }
    }
    let linked = case
        .linked
        .as_ref()
        .map(|l| (files(l), env.git(l, &["rev-parse", "HEAD"])));
    let files = files(c);
    // An ignored folder is listed once: everything in it is the user's too.
    let folders: Vec<PathBuf> = user_work.iter().cloned().collect();
    for folder in folders {
        user_work.extend(files.keys().filter(|p| p.starts_with(&folder)).cloned());
    }
    Snapshot {
        files,
        index: std::fs::read(case.git_dir.join("index")).unwrap_or_default(),
        head: env.head(c),
        refs,
        user_work,
        linked,
    }
}

/// Every file kept aside by a fast-forward, by its worktree-relative path.
fn kept(git_dir: &Path) -> BTreeMap<PathBuf, Entry> {
    let dir = git_dir.join("gitsync/kept");
    let mut out = BTreeMap::new();
    if let Ok(stamps) = std::fs::read_dir(&dir) {
        for stamp in stamps.flatten() {
            out.extend(files(&stamp.path()));
        }
    }
    out
}

/// The verdict of one case, or a panic message describing the loss.
fn verdict(
    env: &Env,
    case: &Case,
    before: &Snapshot,
    pushed: &str,
) -> Result<&'static str, String> {
    let after = snapshot(env, case);
    let c = &case.clone;
    for leftover in ["index.lock", "gitsync/ff"] {
        let there = case.git_dir.join(leftover).exists();
        let was = leftover.ends_with("lock") && case.kind == "stale-index-lock";
        if there && !was {
            return Err(format!("{leftover} left behind"));
        }
    }
    if let (Some((_, head_before)), Some((files_after, head_after))) =
        (&before.linked, &after.linked)
    {
        if head_before != head_after {
            return Err("the linked worktree's HEAD moved under it".to_string());
        }
        if before.linked.as_ref().map(|l| &l.0) != Some(files_after) {
            return Err("the linked worktree's files changed".to_string());
        }
    }
    if after.head == before.head {
        if after.files != before.files {
            let changed: Vec<_> = before
                .files
                .iter()
                .filter(|(p, e)| after.files.get(*p) != Some(e))
                .map(|(p, _)| p.display().to_string())
                .chain(
                    after
                        .files
                        .keys()
                        .filter(|p| !before.files.contains_key(*p))
                        .map(|p| format!("+{}", p.display())),
                )
                .collect();
            return Err(format!("nothing moved, yet files changed: {changed:?}"));
        }
        if after.index != before.index {
            let (was, now) = (
                index_listing(env, case, &before.index),
                index_listing(env, case, &after.index),
            );
            let diff: Vec<String> = was
                .lines()
                .filter(|l| !now.contains(l))
                .map(|l| format!("-{l}"))
                .chain(
                    now.lines()
                        .filter(|l| !was.contains(l))
                        .map(|l| format!("+{l}")),
                )
                .collect();
            return Err(format!(
                "nothing moved, yet the index changed:\n{}",
                diff.join("\n")
            ));
        }
        // A branch that is not checked out may move, and only to the pushed commit
        // (`pull.other_branches`: strictly behind its upstream, moved by compare-and-swap).
        let moved_ok = |b: &str, a: &str| {
            b == a
                || (a.starts_with("refs/heads/")
                    && a.ends_with(&format!(" {pushed}"))
                    && b.split(' ').next() == a.split(' ').next())
        };
        let (b_lines, a_lines): (Vec<&str>, Vec<&str>) =
            (before.refs.lines().collect(), after.refs.lines().collect());
        if b_lines.len() != a_lines.len()
            || b_lines.iter().zip(&a_lines).any(|(b, a)| !moved_ok(b, a))
        {
            return Err(format!(
                "nothing moved, yet refs changed:\n{}\n{}",
                before.refs, after.refs
            ));
        }
        return Ok("not moved");
    }
    if after.head != pushed {
        return Err(format!("HEAD moved to {} instead of {pushed}", after.head));
    }
    let kept = kept(&case.git_dir);
    for path in &before.user_work {
        let was = before.files.get(path);
        let now = after.files.get(path);
        if was.is_some() && was != now && kept.get(path) != was {
            return Err(format!("lost the user's {}", path.display()));
        }
    }
    // Tracked files are exactly the pushed commit's: git sees nothing but the user's work.
    let status = env.git(
        c,
        &[
            "status",
            "--porcelain=v1",
            "-z",
            "--untracked-files=all",
            "--ignored=matching",
        ],
    );
    for line in status.split('\0').filter(|l| l.len() > 3) {
        let path = PathBuf::from(&line[3..]);
        if !before
            .user_work
            .iter()
            .any(|u| u == &path || path.starts_with(u) || u.starts_with(&path))
        {
            return Err(format!(
                "after the fast-forward git shows {line:?}, which was not the user's"
            ));
        }
    }
    // What git trusts without looking: a cache tree that names a wrong tree would make the
    // next `git commit` record one.
    let wrong = common::ff::cache_tree_errors(env, c);
    if !wrong.is_empty() {
        return Err(format!("the index's cache tree is wrong: {wrong:?}"));
    }
    Ok("moved")
}

/// `git ls-files --stage --debug` of the index file whose bytes are `index`: each entry's
/// mode, id, flags and stat data, one field per line.
fn index_listing(env: &Env, case: &Case, index: &[u8]) -> String {
    let file = case.git_dir.join("gitsync-test-index");
    std::fs::write(&file, index).expect("write index copy");
    let out = std::process::Command::new("git")
        .args(["ls-files", "--stage", "--debug"])
        .current_dir(&case.clone)
        .env("GIT_INDEX_FILE", &file)
        .env("HOME", env.home("default"))
        .output()
        .expect("git ls-files");
    let _ = std::fs::remove_file(&file);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The verdict with the reason the pull was refused (its first words), for the table.
fn label(result: &Result<&'static str, String>, state: Option<&serde_json::Value>) -> String {
    let verdict = result.clone().unwrap_or("LOST");
    match state.and_then(|s| s["pull_blocked"].as_str()) {
        Some(why) => format!("{verdict}: {}", why.chars().take(48).collect::<String>()),
        None => verdict.to_string(),
    }
}

fn cases() -> usize {
    std::env::var("GITSYNC_ATTACK_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60)
}

fn report(path: &str, table: &BTreeMap<(String, String), usize>) {
    let mut text = format!("{path}: kind x verdict\n");
    for ((kind, verdict), n) in table {
        text.push_str(&format!("  {kind:<38} {n:>3}  {verdict}\n"));
    }
    eprintln!("{text}");
}

#[test]
fn randomized_states_and_pushes_through_sync_lose_nothing() {
    let w = world();
    let seed = common::attack_seed();
    let mut rng = fastrand::Rng::with_seed(seed);
    let home = w.env.home("sync");
    let root = w.env.path("root");
    std::fs::create_dir_all(&root).expect("mkdir");
    let total = cases() * 2 / 3;
    let mut table = BTreeMap::new();
    let mut failures = Vec::new();
    for n in 0..total {
        let case = set_up_case(&w, &root, n, &mut rng);
        let pushed = push(&w, &case, n);
        let before = snapshot(&w.env, &case);
        if std::env::var_os("GITSYNC_ATTACK_LOG").is_some() {
            let status = w.env.git(&case.clone, &["status", "--porcelain"]);
            eprintln!("case {n} before: {status:?}");
        }
        let out = w.env.gitsync(
            &home,
            &["sync", "--root", case.clone.to_str().expect("utf8")],
        );
        let result = verdict(&w.env, &case, &before, &pushed);
        let states = w.env.status(&home, &[]);
        let name = label(&result, common::find(&states, None, "."));
        if std::env::var_os("GITSYNC_ATTACK_LOG").is_some() {
            eprintln!("case {n}: {} {:?} -> {name}", case.kind, case.pushes);
        }
        *table.entry((case.kind.to_string(), name)).or_default() += 1;
        if let Err(why) = result {
            failures.push(format!(
                "case {n} kind {} pushes {:?}: {why}\nsync said: {}",
                case.kind,
                case.pushes,
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // Keep the disk small: a case's folders go once judged.
        drop(case);
    }
    report("sync", &table);
    assert!(failures.is_empty(), "seed {seed}:\n{}", failures.join("\n"));
    let moved: usize = table
        .iter()
        .filter(|((_, v), _)| v == "moved")
        .map(|(_, n)| n)
        .sum();
    assert!(
        moved > 0,
        "no case fast-forwarded: the attack proves nothing"
    );
}

#[test]
fn randomized_states_and_pushes_through_the_daemon_lose_nothing() {
    let w = world();
    let seed = common::attack_seed();
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x5eed);
    let total = (cases() / 3).max(5);
    let batch = 25;
    let mut table = BTreeMap::new();
    let mut failures = Vec::new();
    let mut n = 0;
    while n < total {
        let root = w.env.path(&format!("droot{n}"));
        std::fs::create_dir_all(&root).expect("mkdir");
        let home = w.env.home(&format!("d{n}"));
        w.env.config(
            &home,
            &format!(
                "hostname: attacked\nroot: {}\npull:\n  interval: 1s\nhooks:\n  install: false\n",
                root.display()
            ),
        );
        let mut group = Vec::new();
        while group.len() < batch && n < total {
            let case = set_up_case(&w, &root, n, &mut rng);
            group.push((n, case));
            n += 1;
        }
        let befores: Vec<Snapshot> = group.iter().map(|(_, c)| snapshot(&w.env, c)).collect();
        let mut daemon = w.env.spawn(&home, &[]);
        daemon.wait_log("ready", Duration::from_secs(60));
        let pushed: Vec<String> = group.iter().map(|(i, c)| push(&w, c, *i)).collect();
        // Each repository settles: at the pushed commit, or its pull refused with a reason.
        common::wait_for_logged(
            "every repository to settle",
            Duration::from_secs(60),
            &[&daemon],
            || {
                let states = w.env.status(&home, &[]);
                group
                    .iter()
                    .zip(&pushed)
                    .all(|((_, c), p)| {
                        let name = c
                            .clone
                            .file_name()
                            .expect("name")
                            .to_string_lossy()
                            .into_owned();
                        w.env.head(&c.clone) == *p
                            || common::find(&states, None, &name).is_some_and(|s| {
                                !s["pull_blocked"].is_null()
                                    || s["state"] != "behind" && s["state"] != "up_to_date"
                            })
                    })
                    .then_some(())
            },
        );
        let states = w.env.status(&home, &[]);
        assert_eq!(daemon.stop(), Some(0), "{}", daemon.log_text());
        for (((i, case), before), p) in group.iter().zip(&befores).zip(&pushed) {
            let result = verdict(&w.env, case, before, p);
            let repo = case
                .clone
                .file_name()
                .expect("name")
                .to_string_lossy()
                .into_owned();
            let name = label(&result, common::find(&states, None, &repo));
            *table.entry((case.kind.to_string(), name)).or_default() += 1;
            if let Err(why) = result {
                failures.push(format!(
                    "case {i} kind {} pushes {:?}: {why}",
                    case.kind, case.pushes
                ));
            }
        }
    }
    report("daemon", &table);
    assert!(failures.is_empty(), "seed {seed}:\n{}", failures.join("\n"));
}
