//! Servers on loopback that tests start and stop by process id: git's smart HTTP
//! (`git http-backend` behind tests/support/git_http_server.py, with an optional Git LFS
//! batch API and basic auth) and a static file server (`python3 -m http.server`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub port: u16,
}

impl Server {
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> &'static str {
    let ok = Command::new("python3").arg("--version").output();
    assert!(
        ok.is_ok_and(|o| o.status.success()),
        "python3 is required: apt-get install -y python3"
    );
    "python3"
}

fn wait_port(portfile: &Path) -> u16 {
    let start = Instant::now();
    loop {
        if let Some(port) = std::fs::read_to_string(portfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            return port;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the test server did not start within 20 s"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// Serves every repository under `root` over smart HTTP; `lfs`: a folder of LFS objects
/// named by oid for the batch API; `auth`: `user:password` required on every request.
pub fn git_http(root: &Path, lfs: Option<&Path>, auth: Option<&str>, log: &Path) -> Server {
    git_http_on(root, lfs, auth, log, 0)
}

/// As [`git_http`], on a given port (0: any free one), so a test can restart the server
/// where its clients expect it.
pub fn git_http_on(
    root: &Path,
    lfs: Option<&Path>,
    auth: Option<&str>,
    log: &Path,
    port: u16,
) -> Server {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/support/git_http_server.py");
    let portfile = log.with_extension("port");
    let _ = std::fs::remove_file(&portfile);
    let mut cmd = Command::new(python());
    cmd.arg(&script).arg(root).arg(&portfile);
    if let Some(lfs) = lfs {
        cmd.arg("--lfs").arg(lfs);
    }
    if let Some(auth) = auth {
        cmd.arg("--auth").arg(auth);
    }
    if port != 0 {
        cmd.arg("--port").arg(port.to_string());
    }
    let child = cmd
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .expect("server log"),
        )
        .spawn()
        .expect("start git_http_server.py");
    let port = wait_port(&portfile);
    Server { child, port }
}

/// Serves the files under `dir` as they are (`python3 -m http.server`).
pub fn static_files(dir: &Path) -> Server {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new(python())
        .args([
            "-m",
            "http.server",
            "--bind",
            "127.0.0.1",
            &port.to_string(),
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start python3 -m http.server");
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "http.server did not start within 20 s"
        );
        std::thread::sleep(Duration::from_millis(30));
    }
    Server { child, port }
}
