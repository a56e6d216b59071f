//! `deploy`: a rolling restart of a cluster under load, measured. Clients (one task
//! each, as in `storm`) sit in a few rooms; a back end publishes through the HTTP API
//! and records every accepted id; a restart command runs; the clients follow the
//! draining nodes' `reconnect` hints and resume with `join {since, epoch}`. Reported:
//! every accepted message delivered to every member exactly once, how long until all
//! were back, latency during the restart, handshakes/s per node, presence churn.

mod args;
mod client;
mod http;
mod metrics;
mod publish;
mod summary;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;

pub(crate) use args::DeployArgs;
use client::{Cfg, Rec, Shared};
use http::Base;
use publish::Published;

use crate::conn;
use crate::report::Meta;
use crate::{progress, stamp, Failed};

/// What the restart command did.
#[derive(Debug)]
struct Restart {
    command: String,
    exit_code: Option<i32>,
    duration_s: f64,
}

/// Runs `cmd` with `sh -c`, its output on stderr (stdout carries the report).
async fn restart(cmd: &str) -> anyhow::Result<Restart> {
    let t0 = Instant::now();
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .await
        .map_err(|e| anyhow::anyhow!("cannot run the restart command: {e}"))?;
    Ok(Restart {
        command: cmd.to_owned(),
        exit_code: status.code(),
        duration_s: t0.elapsed().as_secs_f64(),
    })
}

fn secs(s: f64, flag: &str) -> anyhow::Result<Duration> {
    anyhow::ensure!(
        s.is_finite() && s >= 0.0,
        "{flag} must be a number of seconds ≥ 0"
    );
    Ok(Duration::from_secs_f64(s))
}

fn lock(r: &Mutex<Rec>) -> std::sync::MutexGuard<'_, Rec> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// Per client, the accepted ids of its room it still lacks (`None`: not computed yet).
/// True when every client has them all.
fn delivered_all(
    recs: &[Arc<Mutex<Rec>>],
    rooms: usize,
    accepted: &[std::collections::HashSet<wsgate_protocol::MessageId>],
    missing: &mut [Option<Vec<wsgate_protocol::MessageId>>],
) -> bool {
    let mut all = true;
    for (i, (rec, m)) in recs.iter().zip(missing.iter_mut()).enumerate() {
        let r = lock(rec);
        let m = m.get_or_insert_with(|| accepted[i % rooms].iter().copied().collect());
        m.retain(|id| !r.seen.contains(id));
        all &= m.is_empty();
    }
    all
}

/// `wsgate-bench deploy`.
pub(crate) async fn deploy(a: DeployArgs, meta: Meta) -> anyhow::Result<Value> {
    anyhow::ensure!(a.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(a.rooms >= 1, "--rooms must be at least 1");
    anyhow::ensure!(
        a.rate > 0.0 && a.rate.is_finite(),
        "--rate must be positive"
    );
    let attempt_timeout = secs(a.connect_timeout_s, "--connect-timeout-s")?;
    let warmup = secs(a.warmup_s, "--warmup-s")?;
    let settle = secs(a.settle_s, "--settle-s")?;
    let timeout = secs(a.timeout_s, "--timeout-s")?;
    let eps = conn::endpoints(&a.url)?;
    let api = Base::parse(&a.api_url)?;
    let nodes = a
        .node_metrics
        .iter()
        .map(|u| Base::parse(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let sources = a.sources.map(conn::sources).unwrap_or_default();
    let n = a.clients;

    // Every client connects and joins.
    let sh = Arc::new(Shared::new(n, a.user_offset));
    let recs: Vec<Arc<Mutex<Rec>>> = (0..n).map(|_| Arc::default()).collect();
    let (stop_tx, stop_rx) = watch::channel(false);
    let limit = Arc::new(Semaphore::new(a.connect_concurrency.max(1)));
    let t_form = Instant::now();
    for (i, rec) in recs.iter().enumerate() {
        let cfg = Cfg {
            idx: i,
            user: format!("d{}", i + a.user_offset),
            room: publish::room_name(i, a.rooms),
            home: eps[i % eps.len()].clone(),
            source: (!sources.is_empty()).then(|| sources[i % sources.len()]),
            attempt_timeout,
        };
        tokio::spawn(client::run(
            cfg,
            sh.clone(),
            rec.clone(),
            limit.clone(),
            stop_rx.clone(),
        ));
    }
    let stop_all = || {
        let _ = stop_tx.send(true);
    };
    let pb = progress::bar(n as u64, "connecting");
    while sh.ready.load(Ordering::Relaxed) < n as u64 {
        if t_form.elapsed() > timeout {
            stop_all();
            let ready = sh.ready.load(Ordering::Relaxed);
            let failures = summary::failures(&recs);
            anyhow::bail!(
                "only {ready} of {n} clients joined within {}s; failed attempts: {failures}",
                a.timeout_s
            );
        }
        pb.set_position(sh.ready.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pb.finish_and_clear();
    let formed_s = t_form.elapsed().as_secs_f64();

    // The node watchers and the back end.
    let (mstop_tx, mstop_rx) = watch::channel(false);
    let pollers: Vec<_> = nodes
        .into_iter()
        .map(|b| tokio::spawn(metrics::poll(b, mstop_rx.clone())))
        .collect();
    let published = Published::shared(a.rooms);
    let (pstop_tx, pstop_rx) = watch::channel(false);
    let pub_task = tokio::spawn(publish::run(
        api,
        a.api_key.clone(),
        a.rooms,
        a.rate,
        published.clone(),
        pstop_rx,
    ));
    tokio::time::sleep(warmup).await;
    {
        let p = published.lock().unwrap_or_else(|e| e.into_inner());
        if p.accepted_n() == 0 && !p.errors.is_empty() {
            let errors = json!(p.errors);
            drop(p);
            stop_all();
            let _ = pstop_tx.send(true);
            let _ = mstop_tx.send(true);
            anyhow::bail!(
                "publishing through {}/api/publish fails ({errors}): check --api-url and --api-key",
                a.api_url.trim_end_matches('/')
            );
        }
    }

    // The restart.
    let restart_ns = stamp::now_ns().max(1);
    sh.restart_ns.store(restart_ns, Ordering::Relaxed);
    let restarted = match &a.restart_cmd {
        Some(cmd) => Some(restart(cmd).await),
        None => None,
    };
    let restart_s = (stamp::now_ns() - restart_ns) as f64 / 1e9;
    tokio::time::sleep(settle).await;
    let window_end_ns = stamp::now_ns();
    sh.window_end_ns.store(window_end_ns, Ordering::Relaxed);
    let _ = pstop_tx.send(true);
    let _ = pub_task.await;
    let p = published.lock().unwrap_or_else(|e| e.into_inner()).clone();

    // Until every client is back with every accepted message of its room.
    let t_wait = Instant::now();
    let mut missing = vec![None; n];
    let pb = progress::bar(n as u64, "delivering");
    let complete = loop {
        let all = delivered_all(&recs, a.rooms, &p.accepted, &mut missing);
        let back = sh.joined_now.load(Ordering::Relaxed) >= n as u64;
        pb.set_position(
            missing
                .iter()
                .filter(|m| m.as_ref().is_some_and(Vec::is_empty))
                .count() as u64,
        );
        if (all && back) || t_wait.elapsed() > timeout {
            break all && back;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    pb.finish_and_clear();
    let wait_s = t_wait.elapsed().as_secs_f64();
    let _ = mstop_tx.send(true);
    let mut series = Vec::new();
    for t in pollers {
        if let Ok(s) = t.await {
            series.push(s);
        }
    }
    stop_all();

    let restart = match restarted {
        Some(Ok(r)) => Some(r),
        Some(Err(e)) => return Err(e),
        None => None,
    };
    let s = summary::Summary::of(&recs, &p, a.rooms, restart_ns, window_end_ns);
    let (peak, per_node) = metrics::report(&series);
    let all_back_s = (s.back == n as u64).then(|| {
        s.last_back_ns
            .map_or(0.0, |t| t.saturating_sub(restart_ns) as f64 / 1e9)
    });
    let mut results = s.json();
    let r = results.as_object_mut().expect("an object");
    for (k, v) in [
        ("clients", json!(n)),
        ("rooms", json!(a.rooms)),
        ("rate", json!(a.rate)),
        ("formed_s", json!(formed_s)),
        ("restart_s", json!(restart_s)),
        (
            "restart",
            restart.as_ref().map_or(Value::Null, |r| {
                json!({"command": r.command, "exit_code": r.exit_code, "duration_s": r.duration_s})
            }),
        ),
        ("all_back", json!(s.back == n as u64)),
        ("all_back_s", json!(all_back_s)),
        ("delivered_all", json!(complete)),
        ("wait_after_publishing_s", json!(wait_s)),
        ("peak_handshakes_per_s_per_node", peak),
        ("handshakes_per_node", per_node),
    ] {
        r.insert(k.to_owned(), v);
    }
    let params = json!({
        "urls": a.url,
        "clients": n,
        "rooms": a.rooms,
        "user_offset": a.user_offset,
        "rate": a.rate,
        "api_url": a.api_url,
        "restart_cmd": a.restart_cmd,
        "warmup_s": a.warmup_s,
        "settle_s": a.settle_s,
        "timeout_s": a.timeout_s,
        "node_metrics": a.node_metrics,
        "sources": a.sources,
        "connect_concurrency": a.connect_concurrency,
    });
    let report = meta.report("deploy", params, results);
    let mut why = Vec::new();
    if let Some(r) = &restart {
        if r.exit_code != Some(0) {
            why.push(format!(
                "the restart command exited with {}",
                r.exit_code.map_or("a signal".into(), |c| c.to_string())
            ));
        }
    }
    if s.lost > 0 {
        why.push(format!("{} deliveries lost", s.lost));
    }
    if s.dup > 0 {
        why.push(format!("{} deliveries duplicated", s.dup));
    }
    if s.back < n as u64 {
        why.push(format!("only {} of {n} clients back", s.back));
    }
    if p.accepted_n() == 0 {
        why.push("no publish was accepted".into());
    }
    if !why.is_empty() {
        anyhow::bail!(Failed {
            report,
            message: why.join("; "),
        });
    }
    Ok(report)
}
