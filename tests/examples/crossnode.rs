//! Cross-node latency probe (a stop-gap until `wsgate-bench`): a publisher on one
//! node sends one message at a time into a room, a subscriber on another node
//! receives it; prints the round's latency percentiles.
//!
//! `cargo run --release -p wsgate-e2e --example crossnode -- ws://A/ws ws://B/ws 2000`

use std::time::{Duration, Instant};

use serde_json::json;
use wsgate_client::Client;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (a, b) = (&args[1], &args[2]);
    let n: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let wait = Duration::from_secs(10);
    let mut sub = Client::connect(&format!("{b}?user_id=sub"))
        .await
        .expect("connect sub");
    sub.recv(wait).await.expect("welcome");
    sub.send(&json!({"type":"join","room":"latency"}))
        .await
        .unwrap();
    sub.recv_type("joined", wait).await.unwrap();
    let mut publ = Client::connect(&format!("{a}?user_id=pub"))
        .await
        .expect("connect pub");
    publ.recv(wait).await.expect("welcome");
    publ.send(&json!({"type":"join","room":"latency"}))
        .await
        .unwrap();
    publ.recv_type("joined", wait).await.unwrap();
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 100 {
        let started = Instant::now();
        publ.send(&json!({"type":"message","room":"latency","content":format!("{i}")}))
            .await
            .unwrap();
        loop {
            let f = sub.recv_type("message", wait).await.expect("message");
            if f["content"] == format!("{i}") {
                break;
            }
        }
        if i >= 100 {
            samples.push(started.elapsed());
        }
    }
    samples.sort();
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "samples={} p50={:?} p90={:?} p99={:?} max={:?}",
        samples.len(),
        pct(0.50),
        pct(0.90),
        pct(0.99),
        samples[samples.len() - 1]
    );
}
