//! A bounded load generator for the webhook intake (loopback only; it stops by itself):
//! sends `COUNT` correctly signed GitHub push webhooks, each with its own delivery id,
//! `CONCURRENCY` at a time, and prints one JSON line: accepted, other answers, requests per
//! second, the p50/p99 answer time in milliseconds, and the rate (answers per second) of
//! the first and of the last 2,000 answers (0 when fewer were sent). Used by
//! benches/webhooks.py.
//!
//!     cargo run --release --example webhook_load -- URL SECRET COUNT CONCURRENCY

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 5 || !args[1].starts_with("http://127.0.0.1") {
        eprintln!("usage: webhook_load http://127.0.0.1:PORT/hooks/NAME SECRET COUNT CONCURRENCY");
        std::process::exit(2);
    }
    let (url, secret) = (args[1].clone(), args[2].clone());
    let count: usize = args[3].parse().unwrap_or(1000);
    let concurrency: usize = args[4].parse().unwrap_or(16);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("runtime: {e}"));
    runtime.block_on(async move {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(concurrency)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|e| panic!("client: {e}"));
        let body = br#"{"ref":"refs/heads/main","after":"0000000000000000000000000000000000000000"}"#;
        let sig = format!(
            "sha256={}",
            gitsync::webhook::verify::sign_hex(secret.as_bytes(), body)
        );
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (client, url, sig, next) = (client.clone(), url.clone(), sig.clone(), next.clone());
            tasks.spawn(async move {
                let mut times = Vec::new();
                let mut done = Vec::new();
                let mut accepted = 0usize;
                let mut other = 0usize;
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let t = Instant::now();
                    let answer = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-github-event", "push")
                        .header("x-github-delivery", format!("load-{i}-{}", std::process::id()))
                        .header("x-hub-signature-256", &sig)
                        .body(&body[..])
                        .send()
                        .await;
                    times.push(t.elapsed());
                    done.push(Instant::now());
                    match answer {
                        Ok(r) if r.status().as_u16() == 202 => accepted += 1,
                        _ => other += 1,
                    }
                }
                (times, done, accepted, other)
            });
        }
        let mut times = Vec::new();
        let mut done = Vec::new();
        let (mut accepted, mut other) = (0, 0);
        while let Some(Ok((t, d, a, o))) = tasks.join_next().await {
            times.extend(t);
            done.extend(d);
            accepted += a;
            other += o;
        }
        done.sort();
        const WINDOW: usize = 2000;
        let rate = |from: usize| {
            let span = done[from + WINDOW - 1].duration_since(done[from]);
            WINDOW as f64 / span.as_secs_f64().max(1e-9)
        };
        let (first, last) = if done.len() >= WINDOW {
            (rate(0), rate(done.len() - WINDOW))
        } else {
            (0.0, 0.0)
        };
        let wall = started.elapsed();
        times.sort();
        let pct = |p: f64| {
            times
                .get(((times.len() as f64 * p) as usize).min(times.len().saturating_sub(1)))
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0)
        };
        println!(
            "{{\"accepted\": {accepted}, \"other\": {other}, \"per_second\": {:.0}, \"p50_ms\": {:.2}, \"p99_ms\": {:.2}, \"first_2000_per_second\": {first:.0}, \"last_2000_per_second\": {last:.0}}}",
            count as f64 / wall.as_secs_f64(),
            pct(0.5),
            pct(0.99)
        );
    });
}
