//! File-system states a test stands up as root: a small tmpfs standing in for a disk that
//! fills up, and folders made immutable (`chattr +i`) standing in for read-only ones (root
//! ignores permission bits, not the immutable flag).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs of `size` (mount(8)'s `size=` option: `1m`, `512k`) mounted at a folder,
/// unmounted (lazily, `umount -l`) when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts the tmpfs at `dir`, creating it; fails the test, saying how to run it, where
    /// mounting is not allowed.
    pub fn mount(dir: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).expect("mkdir");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test stands a small tmpfs in for a full disk, and mounting one needs root \
             (CAP_SYS_ADMIN): run the tests as root, as .ci/run does: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(dir.to_path_buf())
    }

    /// Fills the file system up with `name` (written until `ENOSPC`), so the next block or
    /// inode anyone asks for fails.
    pub fn fill(&self, name: &str) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.0.join(name)).expect("create filler");
        let chunk = vec![b'f'; 4096];
        while file.write_all(&chunk).is_ok() {}
        // Fill whatever part of a block is left, a byte at a time.
        while file.write_all(b"f").is_ok() {}
        let _ = file.sync_all();
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A folder made immutable with `chattr +i` (nothing in it can be created, removed or
/// renamed, even by root), made mutable again when dropped.
pub struct Immutable(PathBuf);

impl Immutable {
    /// Sets the flag on `dir`; fails the test, saying what is missing, where it cannot.
    pub fn set(dir: &Path) -> Immutable {
        let out = Command::new("chattr")
            .arg("+i")
            .arg(dir)
            .output()
            .expect("run chattr (apt-get install e2fsprogs)");
        assert!(
            out.status.success(),
            "this test stands an immutable folder in for a read-only one, which needs root \
             (CAP_LINUX_IMMUTABLE) and a file system with the flag (ext4, xfs, tmpfs): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Immutable(dir.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.0).status();
    }
}
