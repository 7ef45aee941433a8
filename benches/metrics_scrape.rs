//! Benchmark: one scrape of `/metrics` for 1,000 repositories and 5 hosts, the work the
//! handler does (every series encoded in OpenMetrics, then in Prometheus' text format), as
//! the median of ROUNDS (default 200) scrapes. Goal (issue 25): at most 5 ms.
//!
//! Run: `cargo bench --bench metrics_scrape`.

use std::time::{Duration, Instant};

use gitsync::model::{HostRecord, RepoState, Summary};
use gitsync::observe::Metrics;
use gitsync::observe::metrics::{Fetched, prometheus_text};

fn main() {
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(200);
    let metrics = Metrics::default();
    for i in 0..1_000 {
        let repo = format!("work/repo-{i:04}");
        let mut state = RepoState::error("bench", &repo, String::new());
        state.error = None;
        state.state = [Summary::UpToDate, Summary::Behind, Summary::Ahead][i % 3];
        state.behind = (i % 3 == 1) as u32;
        state.unstaged = (i % 7) as u32;
        metrics.record_state(&state);
        metrics.fetched(&repo, Fetched::Unchanged, Duration::from_millis(40));
        if i % 3 == 1 {
            metrics.fetched(&repo, Fetched::Updated, Duration::from_millis(90));
            metrics.fast_forwarded(&repo, Duration::from_millis(30));
            metrics.refused(&repo, "2 unstaged changes not committed");
        }
    }
    let now = chrono::Utc::now();
    let hosts: Vec<HostRecord> = (0..5)
        .map(|i| {
            serde_json::from_value(serde_json::json!({
                "host": format!("host-{i}"), "version": "bench", "last_seen": now,
            }))
            .expect("a host record")
        })
        .collect();
    let mut took = Vec::with_capacity(rounds);
    let mut size = 0;
    for _ in 0..rounds {
        let started = Instant::now();
        let text = prometheus_text(&metrics.encode(&hosts, &[], now).expect("encode"));
        took.push(started.elapsed());
        size = text.len();
    }
    took.sort();
    let median = took[took.len() / 2];
    println!(
        "scrape of 1,000 repositories: median {:.2} ms over {rounds} rounds, {} KiB, {} lines (goal <= 5 ms: {})",
        median.as_secs_f64() * 1000.0,
        size / 1024,
        prometheus_text(&metrics.encode(&hosts, &[], now).expect("encode"))
            .lines()
            .count(),
        if median <= Duration::from_millis(5) {
            "met"
        } else {
            "MISSED"
        }
    );
}
