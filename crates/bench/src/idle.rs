//! `idle`: N idle connections held open; the gateway's RSS and the kernel's slab per
//! connection. The connections are split over worker processes (this binary re-run with
//! the hidden `idle-worker` subcommand) so that no process nears its open-file limit.
//!
//! Parent ⇄ worker protocol: JSON lines on the worker's stdout (`progress`, `ready`,
//! `report`), commands on its stdin (`report`, then `exit` or end of input).

use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::adapter::{self, Target};
use crate::cli::{Common, IdleArgs, WorkerArgs};
use crate::conn;
use crate::report::Meta;
use crate::sub::{Group, Shared};
use crate::sys::{self, CpuSample};
use crate::{progress, Failed};

fn worker_command(c: &Common, sources: u8, concurrency: usize) -> Vec<String> {
    vec![
        "--url".into(),
        c.url.join(","),
        "--target".into(),
        match c.target {
            Target::Wsgate => "wsgate".into(),
            Target::Socketio => "socketio".into(),
        },
        "--sources".into(),
        sources.to_string(),
        "--connect-concurrency".into(),
        concurrency.to_string(),
        "--connect-timeout".into(),
        c.connect_timeout.as_secs_f64().to_string(),
    ]
}

fn per_conn(after: Option<u64>, before: Option<u64>, n: u64) -> Value {
    match (after, before) {
        (Some(a), Some(b)) if n > 0 => json!((a as f64 - b as f64) / n as f64),
        _ => Value::Null,
    }
}

/// `wsgate-bench idle`.
pub(crate) async fn idle(a: IdleArgs, meta: Meta, soft: u64) -> anyhow::Result<Value> {
    let n = a.connections;
    anyhow::ensure!(n >= 1, "--connections must be at least 1");
    let rooms = if a.rooms == 0 {
        n.div_ceil(20)
    } else {
        a.rooms
    }
    .max(1);
    let sources = a
        .common
        .sources
        .unwrap_or_else(|| n.div_ceil(20_000).min(250) as u8);
    let per_process = a.per_process.max(1);
    if a.source_port_base != 0 {
        let top = a.source_port_base as usize + n.div_ceil(sources.max(1) as usize);
        anyhow::ensure!(
            top <= u16::MAX as usize,
            "--source-port-base {} leaves no room for {n} connections over {sources} sources",
            a.source_port_base
        );
    }
    if per_process as u64 + 100 > soft {
        eprintln!(
            "wsgate-bench: note: --per-process {per_process} is near this process's open-file limit {soft}"
        );
    }
    conn::endpoints(&a.common.url)?;
    let workers = n.div_ceil(per_process);
    let pids = a.common.pids.clone();
    let rss0: Vec<Option<u64>> = pids.iter().map(|p| sys::rss_kib(*p)).collect();
    let slab0 = sys::slab_kib();
    let cpu0 = CpuSample::take(&pids);
    let exe = std::env::current_exe().context("cannot find the bench's own executable")?;
    let conc = a.common.connect_concurrency.div_ceil(workers).max(1);
    let (tx, mut rx) = mpsc::channel::<(usize, Option<Value>)>(1024);
    let mut children = Vec::new();
    let t0 = Instant::now();
    for w in 0..workers {
        let offset = w * per_process;
        let count = per_process.min(n - offset);
        let mut child = tokio::process::Command::new(&exe)
            .arg("idle-worker")
            .args(worker_command(&a.common, sources, conc))
            .args([
                "--offset",
                &offset.to_string(),
                "--count",
                &count.to_string(),
            ])
            .args(["--rooms", &rooms.to_string()])
            .args(["--source-port-base", &a.source_port_base.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start an idle worker process")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&l) {
                    let _ = tx.send((w, Some(v))).await;
                }
            }
            let _ = tx.send((w, None)).await;
        });
        children.push(child);
    }
    drop(tx);
    // Connect phase: wait for every worker's `ready`.
    let pb = progress::bar(n as u64, "connecting");
    let mut progress_of = vec![0u64; workers];
    let mut ready: Vec<Option<Value>> = vec![None; workers];
    while ready.iter().any(Option::is_none) {
        let Some((w, ev)) = rx.recv().await else {
            break;
        };
        let Some(ev) = ev else {
            if ready[w].is_none() {
                pb.finish_and_clear();
                anyhow::bail!("idle worker {w} exited before all its connections were made");
            }
            continue;
        };
        match ev["event"].as_str() {
            Some("progress") => {
                progress_of[w] = ev["done"].as_u64().unwrap_or(0);
                pb.set_position(progress_of.iter().sum());
            }
            Some("ready") => ready[w] = Some(ev),
            _ => {}
        }
    }
    pb.finish_and_clear();
    let connect_s = t0.elapsed().as_secs_f64();
    let ready: Vec<Value> = ready.into_iter().flatten().collect();
    let connected: u64 = ready.iter().filter_map(|r| r["connected"].as_u64()).sum();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_failure = None;
    for r in &ready {
        if let Some(m) = r["failures"].as_object() {
            for (k, v) in m {
                *failures.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
        if first_failure.is_none() && !r["first_failure"].is_null() {
            first_failure = Some(r["first_failure"].clone());
        }
    }
    let failed: u64 = failures.values().sum();
    let closed_at_ready: u64 = ready.iter().filter_map(|r| r["closed"].as_u64()).sum();
    // Settle, then measure.
    tokio::time::sleep(a.settle).await;
    let rss1: Vec<Option<u64>> = pids.iter().map(|p| sys::rss_kib(*p)).collect();
    let slab1 = sys::slab_kib();
    let cpu1 = CpuSample::take(&pids);
    // Hold.
    let pb = progress::bar(a.hold.as_millis() as u64, "holding");
    let hold_end = Instant::now() + a.hold;
    while Instant::now() < hold_end {
        pb.set_position(
            (a.hold.as_millis() as u64).saturating_sub(
                hold_end
                    .saturating_duration_since(Instant::now())
                    .as_millis() as u64,
            ),
        );
        tokio::time::sleep_until(hold_end.min(Instant::now() + Duration::from_millis(200))).await;
    }
    pb.finish_and_clear();
    let cpu2 = CpuSample::take(&pids);
    let rss2: Vec<Option<u64>> = pids.iter().map(|p| sys::rss_kib(*p)).collect();
    let slab2 = sys::slab_kib();
    for c in children.iter_mut() {
        if let Some(stdin) = c.stdin.as_mut() {
            let _ = stdin.write_all(b"report\n").await;
        }
    }
    let mut reports: Vec<Option<Value>> = vec![None; workers];
    let deadline = Instant::now() + Duration::from_secs(30);
    while reports.iter().any(Option::is_none) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some((w, Some(ev)))) if ev["event"] == "report" => reports[w] = Some(ev),
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    for c in children.iter_mut() {
        if let Some(mut stdin) = c.stdin.take() {
            let _ = stdin.write_all(b"exit\n").await;
        }
    }
    for c in children.iter_mut() {
        if tokio::time::timeout(Duration::from_secs(10), c.wait())
            .await
            .is_err()
        {
            let _ = c.start_kill();
        }
    }
    let reports: Vec<Value> = reports.into_iter().flatten().collect();
    let closed_at_report: u64 = reports.iter().filter_map(|r| r["closed"].as_u64()).sum();
    let mut codes: BTreeMap<String, u64> = BTreeMap::new();
    for r in &reports {
        if let Some(m) = r["close_codes"].as_object() {
            for (k, v) in m {
                *codes.entry(k.clone()).or_default() += v.as_u64().unwrap_or(0);
            }
        }
    }
    let workers_cpu: f64 = reports.iter().filter_map(|r| r["cpu_s"].as_f64()).sum();
    let workers_cpu_ready: f64 = ready.iter().filter_map(|r| r["cpu_s"].as_f64()).sum();
    let workers_rss: u64 = reports.iter().filter_map(|r| r["rss_kib"].as_u64()).sum();
    let gateways: Vec<Value> = pids
        .iter()
        .enumerate()
        .map(|(i, pid)| {
            json!({
                "pid": pid,
                "rss_before_kib": rss0[i],
                "rss_joined_kib": rss1[i],
                "rss_after_hold_kib": rss2[i],
                "rss_per_conn_kib": per_conn(rss1[i], rss0[i], connected),
                "rss_per_conn_after_hold_kib": per_conn(rss2[i], rss0[i], connected),
            })
        })
        .collect();
    let dropped = closed_at_report.saturating_sub(closed_at_ready);
    let results = json!({
        "connections": n,
        "connected": connected,
        "failed": failed,
        "failures": failures,
        "first_failure": first_failure,
        "rooms": rooms,
        "workers": workers,
        "sources": sources,
        "connect_s": connect_s,
        "connects_per_s": connected as f64 / connect_s.max(1e-9),
        "gateways": gateways,
        "rss_per_conn_kib": gateways.first().map(|g| g["rss_per_conn_kib"].clone()),
        "slab_before_kib": slab0,
        "slab_joined_kib": slab1,
        "slab_after_hold_kib": slab2,
        "slab_per_conn_kib": per_conn(slab1, slab0, connected),
        "hold_s": a.hold.as_secs_f64(),
        "closed_before_hold": closed_at_ready,
        "dropped_during_hold": dropped,
        "close_codes": codes,
        "cpu_connect": cpu0.report(&cpu1, 0, ""),
        "cpu_hold": cpu1.report(&cpu2, 0, ""),
        "bench_workers_cpu_s": workers_cpu,
        // From each worker's `ready` to its report: the settle and the hold.
        "bench_workers_cpu_hold_s": workers_cpu - workers_cpu_ready,
        "bench_workers_rss_kib": workers_rss,
    });
    let params = json!({
        "urls": a.common.url,
        "target": a.common.target,
        "pids": pids,
        "connections": n,
        "rooms": rooms,
        "hold_s": a.hold.as_secs_f64(),
        "settle_s": a.settle.as_secs_f64(),
        "per_process": per_process,
        "sources": sources,
        "source_port_base": a.source_port_base,
    });
    let report = meta.report("idle", params, results);
    if failed > 0 || connected == 0 || reports.len() < workers {
        let why = if reports.len() < workers {
            format!(
                "{} of {workers} worker(s) did not report",
                workers - reports.len()
            )
        } else {
            format!(
                "{failed} of {n} connections failed ({}){}",
                failures
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                first_failure
                    .map(|f| format!("; first: {}", f.as_str().unwrap_or_default()))
                    .unwrap_or_default()
            )
        };
        anyhow::bail!(Failed {
            report,
            message: why
        });
    }
    Ok(report)
}

fn emit(v: Value) {
    println!("{v}");
}

/// `wsgate-bench idle-worker`: connects its share, reports, holds until told to exit.
pub(crate) async fn worker(a: WorkerArgs) -> anyhow::Result<Value> {
    let c = &a.common;
    let eps = conn::endpoints(&c.url)?;
    let srcs = conn::sources(c.sources.unwrap_or(0));
    let target = c.target;
    let timeout = c.connect_timeout;
    let rooms = a.rooms.max(1);
    let shared = std::sync::Arc::new(Shared::default());
    let chunk = crate::fleet::per_task(a.count, 0);
    let mut results = futures_util::stream::iter(0..a.count)
        .map(|i| {
            let k = a.offset + i;
            let ep = eps[k % eps.len()].clone();
            let src = (!srcs.is_empty()).then(|| {
                let port = match a.source_port_base {
                    0 => 0,
                    // Checked by the parent to fit.
                    base => base.saturating_add((k / srcs.len()) as u16),
                };
                SocketAddrV4::new(srcs[k % srcs.len()], port)
            });
            async move {
                let user = format!("idle-{k}");
                let room = format!("idle-{}", k % rooms);
                adapter::connect_joined(
                    &ep,
                    target,
                    &user,
                    src,
                    conn::small_config(),
                    &room,
                    timeout,
                )
                .await
                .map_err(|e| (e.kind(), format!("{}: {e}", ep.request_url(target, &user))))
            }
        })
        .buffer_unordered(c.connect_concurrency.max(1));
    let mut groups = Vec::new();
    let mut pending = Vec::new();
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut first_failure: Option<String> = None;
    let (mut done, mut connected) = (0u64, 0u64);
    while let Some(r) = results.next().await {
        done += 1;
        match r {
            Ok(ws) => {
                connected += 1;
                pending.push((ws, target));
                if pending.len() >= chunk {
                    groups.push(Group::spawn(
                        std::mem::take(&mut pending),
                        0,
                        shared.clone(),
                    ));
                }
            }
            Err((kind, msg)) => {
                *failures.entry(kind).or_default() += 1;
                first_failure.get_or_insert(msg);
            }
        }
        if done % 500 == 0 {
            emit(json!({"event": "progress", "done": done}));
        }
    }
    drop(results);
    if !pending.is_empty() {
        groups.push(Group::spawn(pending, 0, shared.clone()));
    }
    let closed = |stats: &[crate::stats::RunStats]| -> (u64, BTreeMap<String, u64>) {
        let mut codes = BTreeMap::new();
        let mut n = 0;
        for s in stats {
            n += s.closed;
            for (k, v) in &s.close_codes {
                *codes.entry(k.clone()).or_default() += v;
            }
        }
        (n, codes)
    };
    let mut at_ready = Vec::new();
    for g in &groups {
        at_ready.push(g.collect(Vec::new()).await);
    }
    emit(json!({
        "event": "ready",
        "connected": connected,
        "failures": failures,
        "first_failure": first_failure,
        "closed": closed(&at_ready).0,
        "cpu_s": sys::self_cpu(),
    }));
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(l)) = lines.next_line().await {
        match l.trim() {
            "report" => {
                let mut now = Vec::new();
                for g in &groups {
                    now.push(g.collect(Vec::new()).await);
                }
                let (n, codes) = closed(&now);
                emit(json!({
                    "event": "report",
                    "closed": n,
                    "close_codes": codes,
                    "cpu_s": sys::self_cpu(),
                    "rss_kib": sys::rss_kib(std::process::id()),
                }));
            }
            "exit" => break,
            _ => {}
        }
    }
    for g in &groups {
        g.stop().await;
    }
    Ok(Value::Null)
}
