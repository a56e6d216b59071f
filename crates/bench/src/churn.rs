//! `churn`: concurrent loops of connect → welcome → join → close.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::adapter;
use crate::cli::ChurnArgs;
use crate::conn::{self, ConnError};
use crate::report::Meta;
use crate::stats;
use crate::sys::CpuSample;
use crate::{progress, Failed};

#[derive(Default)]
struct Totals {
    cycles: u64,
    failures: BTreeMap<String, u64>,
    first_failure: Option<String>,
}

/// `wsgate-bench churn`.
pub(crate) async fn churn(a: ChurnArgs, meta: Meta) -> anyhow::Result<Value> {
    anyhow::ensure!(a.concurrency >= 1, "--concurrency must be at least 1");
    anyhow::ensure!(
        wsgate_protocol::names::valid_room(&a.room),
        "--room {:?} is not a valid room name",
        a.room
    );
    let eps = conn::endpoints(&a.common.url)?;
    let srcs = conn::sources(a.common.sources.unwrap_or(0));
    let handshake = Arc::new(Mutex::new(stats::histogram()));
    let join = Arc::new(Mutex::new(stats::histogram()));
    let totals = Arc::new(Mutex::new(Totals::default()));
    let cpu0 = CpuSample::take(&a.common.pids);
    let start = Instant::now();
    let end = start + a.duration;
    let target = a.common.target;
    let timeout = a.common.connect_timeout;
    let mut loops = Vec::new();
    for l in 0..a.concurrency {
        let (eps, srcs) = (eps.clone(), srcs.clone());
        let (handshake, join, totals) = (handshake.clone(), join.clone(), totals.clone());
        let room = a.room.clone();
        loops.push(tokio::spawn(async move {
            let mut i = 0usize;
            while Instant::now() < end {
                let k = l + i * 4096;
                i += 1;
                let ep = &eps[k % eps.len()];
                let src = (!srcs.is_empty()).then(|| conn::any_port(srcs[k % srcs.len()]));
                let user = format!("churn-{l}-{i}");
                let url = ep.request_url(target, &user);
                let t0 = Instant::now();
                let deadline = t0 + timeout;
                let r: Result<(Duration, Duration), ConnError> = async {
                    let mut ws = conn::within(
                        timeout,
                        conn::open(ep.addr, &url, src, conn::small_config()),
                    )
                    .await?;
                    adapter::handshake(&mut ws, target, deadline).await?;
                    let welcomed = t0.elapsed();
                    adapter::join(&mut ws, target, &room, 1, None, deadline).await?;
                    let joined = t0.elapsed() - welcomed;
                    let _ = ws.close(None).await;
                    // Read the server's close answer, briefly.
                    let _ = tokio::time::timeout(Duration::from_secs(1), async {
                        while let Some(Ok(_)) = ws.next().await {}
                    })
                    .await;
                    Ok((welcomed, joined))
                }
                .await;
                match r {
                    Ok((w, j)) => {
                        record(&handshake, w);
                        record(&join, j);
                        totals.lock().unwrap_or_else(|e| e.into_inner()).cycles += 1;
                    }
                    Err(e) => {
                        {
                            let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
                            *t.failures.entry(e.kind()).or_default() += 1;
                            t.first_failure.get_or_insert_with(|| format!("{url}: {e}"));
                        }
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        }));
    }
    let pb = progress::bar(a.duration.as_millis() as u64, "churning");
    while Instant::now() < end {
        pb.set_position(start.elapsed().as_millis() as u64);
        tokio::time::sleep_until(end.min(Instant::now() + Duration::from_millis(200))).await;
    }
    for l in loops {
        let _ = l.await;
    }
    pb.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    let cpu1 = CpuSample::take(&a.common.pids);
    let t = std::mem::take(&mut *totals.lock().unwrap_or_else(|e| e.into_inner()));
    let hs = handshake.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let js = join.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let failed: u64 = t.failures.values().sum();
    let results = json!({
        "cycles": t.cycles,
        "cycles_per_s": t.cycles as f64 / elapsed.max(1e-9),
        "handshake_ms": stats::percentiles_ms(&hs),
        "join_ms": stats::percentiles_ms(&js),
        "failed": failed,
        "failures": t.failures,
        "first_failure": t.first_failure,
        "elapsed_s": elapsed,
        "cpu": cpu0.report(&cpu1, t.cycles, "cycle"),
    });
    let params = json!({
        "urls": a.common.url,
        "target": a.common.target,
        "pids": a.common.pids,
        "concurrency": a.concurrency,
        "duration_s": a.duration.as_secs_f64(),
        "room": a.room,
    });
    let report = meta.report("churn", params, results);
    if t.cycles == 0 {
        anyhow::bail!(Failed {
            report,
            message: format!(
                "no connect/join/close cycle completed{}",
                t.first_failure
                    .map(|f| format!(" (first failure: {f})"))
                    .unwrap_or_default()
            ),
        });
    }
    Ok(report)
}

fn record(h: &Mutex<Histogram<u64>>, d: Duration) {
    h.lock()
        .unwrap_or_else(|e| e.into_inner())
        .saturating_record(d.as_micros() as u64);
}
