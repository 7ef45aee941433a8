//! moto's server (the AWS-compatible test server, pinned in the Makefile) on a free
//! loopback port, started by a test and stopped when it ends.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The topic every test host uses (moto's default account).
pub const TOPIC: &str = "arn:aws:sns:us-east-1:123456789012:git.fifo";

pub struct Moto {
    child: Child,
    pub url: String,
    /// The server's request log (werkzeug prints one line per request), when started with
    /// [`Moto::start_logged`].
    pub log: Option<PathBuf>,
}

/// The moto_server binary: `$GITSYNC_MOTO_SERVER`, or `.venv/bin/moto_server` in the
/// project (what `make deps` installs).
fn binary() -> PathBuf {
    std::env::var_os("GITSYNC_MOTO_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server"))
}

impl Moto {
    /// Starts the server on a free port; panics with the command that installs it when it
    /// cannot.
    pub fn start() -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Moto::start_on(port)
    }

    /// Starts the server with its request log in `log`, so a test can count requests.
    pub fn start_logged(log: &std::path::Path) -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Moto::start_with(port, Some(log))
    }

    /// The requests logged so far, as `METHOD path` (for example `GET /bucket/p/info/refs`).
    pub fn requests(&self) -> Vec<String> {
        let log = self.log.as_ref().expect("started with start_logged");
        std::fs::read_to_string(log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let start = l.find('"')?;
                let rest = &l[start + 1..];
                let rest = rest.trim_start_matches(|c: char| {
                    c == '\u{1b}' || c == '[' || c.is_ascii_digit() || c == 'm' || c == ';'
                });
                let mut parts = rest.split(' ');
                let method = parts.next()?;
                let path = parts.next()?;
                matches!(method, "GET" | "PUT" | "POST" | "HEAD" | "DELETE")
                    .then(|| format!("{method} {path}"))
            })
            .collect()
    }

    /// Starts the server on `port` of 127.0.0.1.
    pub fn start_on(port: u16) -> Moto {
        Moto::start_with(port, None)
    }

    /// Starts a server that checks credentials and IAM policies after its first `free`
    /// requests (moto's `INITIAL_NO_AUTH_ACTION_COUNT`), so a test can set up users first.
    pub fn start_enforcing_iam(free: u32) -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Moto::start_env(
            port,
            None,
            &[("INITIAL_NO_AUTH_ACTION_COUNT", &free.to_string())],
        )
    }

    fn start_with(port: u16, log: Option<&std::path::Path>) -> Moto {
        Moto::start_env(port, log, &[])
    }

    fn start_env(port: u16, log: Option<&std::path::Path>, vars: &[(&str, &str)]) -> Moto {
        let bin = binary();
        assert!(
            bin.exists(),
            "moto's server is required at {}: run `make deps` (python3 -m venv .venv && .venv/bin/pip install 'moto[server]==5.2.5')",
            bin.display()
        );
        let child = Command::new(&bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("MOTO_SQS_ENFORCE_STRICT_QUEUE_PURGE_BEHAVIOUR", "false")
            .envs(vars.iter().copied())
            .stdout(Stdio::null())
            .stderr(match log {
                Some(path) => Stdio::from(std::fs::File::create(path).expect("moto log")),
                None => Stdio::null(),
            })
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; run `make deps`", bin.display()));
        let moto = Moto {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log: log.map(std::path::Path::to_path_buf),
        };
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "moto's server did not answer on port {port} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        moto
    }

    /// An SDK configuration for this server with static test credentials.
    pub fn sdk(&self) -> aws_config::SdkConfig {
        aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&self.url)
            .credentials_provider(aws_sdk_sqs::config::SharedCredentialsProvider::new(
                aws_sdk_sqs::config::Credentials::new("test", "test", None, None, "tests"),
            ))
            .build()
    }

    /// The config file of test host `host` using this server, the shared table `git` and
    /// topic `git.fifo`, and its own queue `host-<host>.fifo`.
    pub fn host_config(&self, host: &str, root: &std::path::Path) -> String {
        format!(
            "hostname: host-{host}\nroot: {}\nbackend: aws\naws:\n  region: us-east-1\n  endpoint_url: {}\n  dynamodb: {{table: git}}\n  sqs: {{queue: host-{host}.fifo}}\n  sns: {{topic: {{arn: \"{TOPIC}\"}}}}\npull:\n  interval: 1h\n",
            root.display(),
            self.url
        )
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
