//! A loopback sshd (Debian's openssh-server) for the deploy tests, per
//! tests/support/sshd-rsync-recipe.sh: its own host key, a client key, a free port;
//! stopped by its process id when the test ends.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Sshd {
    child: Child,
    pub port: u16,
    pub dir: PathBuf,
}

impl Sshd {
    /// Starts sshd in `dir`; panics with the install command when it is missing.
    pub fn start(dir: &Path) -> Sshd {
        assert!(
            Path::new("/usr/sbin/sshd").exists()
                && Command::new("rsync").arg("--version").output().is_ok(),
            "sshd and rsync are required: apt-get install -y openssh-server rsync (make deps)"
        );
        std::fs::create_dir_all(dir).expect("mkdir");
        let _ = std::fs::create_dir_all("/run/sshd");
        for key in ["host_key", "client_key"] {
            let path = dir.join(key);
            if !path.exists() {
                let ok = Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", ""])
                    .arg("-f")
                    .arg(&path)
                    .status()
                    .expect("ssh-keygen");
                assert!(ok.success());
            }
        }
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys"))
            .expect("authorized_keys");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("port")
            .port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\nPidFile {d}/sshd.pid\nAuthorizedKeysFile {d}/authorized_keys\nStrictModes no\nPubkeyAuthentication yes\nPasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin prohibit-password\nMaxStartups 100\nMaxSessions 100\n",
                d = dir.display()
            ),
        )
        .expect("sshd_config");
        let log = dir.join("sshd.log");
        let child = Command::new("/usr/sbin/sshd")
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("start sshd");
        let started = Instant::now();
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Server listening")
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "sshd did not start: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(30));
        }
        Sshd {
            child,
            port,
            dir: dir.to_path_buf(),
        }
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join("client_key")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
