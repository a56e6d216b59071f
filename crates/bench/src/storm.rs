//! `storm`: a node is killed under load; its clients reconnect elsewhere and resume
//! with `join {since, epoch}`. One task per client (a storm is about recovery, not
//! about the bench's own efficiency).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::adapter::{self, Target};
use crate::cli::StormArgs;
use crate::conn::{self, ConnError, Endpoint, Ws};
use crate::publisher::{Failure, Phase, Publisher};
use crate::report::Meta;
use crate::stamp::{self, Scanner};
use crate::stats::{self, Tracker};
use crate::sys::{self, CpuSample};
use crate::{progress, Failed};

#[derive(Default)]
struct Shared {
    ready: AtomicU64,
    resumed: AtomicU64,
    reconnected: AtomicU64,
    unique: AtomicU64,
    killed_at_ns: AtomicU64,
    failure: Failure,
}

#[derive(Default)]
struct ClientOut {
    tracker: Tracker,
    affected: bool,
    reconnect_ns: Option<u64>,
    resume_ns: Option<u64>,
    recovered: Option<bool>,
    replayed: u64,
    attempts: u64,
    failures: BTreeMap<String, u64>,
}

struct ClientCfg {
    idx: usize,
    first: Endpoint,
    reconnect: Vec<Endpoint>,
    target: Target,
    room: String,
    timeout: Duration,
    backoff: Duration,
    run: u32,
}

async fn connect(
    ep: &Endpoint,
    c: &ClientCfg,
    since: Option<(&str, Option<&str>)>,
) -> Result<(Ws, adapter::Joined, Instant), ConnError> {
    let deadline = Instant::now() + c.timeout;
    let url = ep.request_url(c.target, &format!("storm-{}", c.idx));
    let mut ws = conn::within(
        c.timeout,
        conn::open(ep.addr, &url, None, conn::small_config()),
    )
    .await?;
    adapter::handshake(&mut ws, c.target, deadline).await?;
    let welcomed = Instant::now();
    let j = adapter::join(&mut ws, c.target, &c.room, 1, since, deadline).await?;
    Ok((ws, j, welcomed))
}

fn see(
    text: &str,
    c: &ClientCfg,
    out: &mut ClientOut,
    last_id: &mut Option<String>,
    sh: &Shared,
    scanner: &Scanner,
) {
    if let Some(id) = wsgate_protocol::server::frame_id(text) {
        *last_id = Some(id.to_string());
    }
    if let Some(st) = scanner.scan(text.as_bytes()) {
        if st.run == c.run {
            let before = out.tracker.unique;
            out.tracker.see(st.seq);
            sh.unique
                .fetch_add(out.tracker.unique - before, Ordering::Relaxed);
        }
    }
}

async fn client(
    c: ClientCfg,
    sh: Arc<Shared>,
    limit: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> ClientOut {
    let scanner = Scanner::new();
    let mut out = ClientOut::default();
    let first = {
        let _permit = limit.acquire().await;
        connect(&c.first, &c, None).await
    };
    let (mut ws, joined, _) = match first {
        Ok(x) => x,
        Err(e) => {
            sh.failure.set(format!(
                "client {}: could not connect to {}: {e}",
                c.idx,
                c.first.request_url(c.target, &format!("storm-{}", c.idx))
            ));
            return out;
        }
    };
    let mut last_id = joined.last_id.clone();
    let mut epoch = joined.epoch.clone();
    sh.ready.fetch_add(1, Ordering::Relaxed);
    loop {
        let ended = tokio::select! {
            _ = stop.changed() => return out,
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    see(&t, &c, &mut out, &mut last_id, &sh, &scanner);
                    false
                }
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => true,
                Some(Ok(_)) => false,
            },
        };
        if !ended {
            continue;
        }
        // Lost the node: reconnect with backoff, then resume.
        out.affected = true;
        let mut delay = c.backoff;
        let mut attempt = 0usize;
        loop {
            if *stop.borrow() {
                return out;
            }
            let ep = &c.reconnect[(c.idx + attempt) % c.reconnect.len()];
            attempt += 1;
            out.attempts += 1;
            let since = last_id.clone().unwrap_or_else(|| "0-0".into());
            match connect(ep, &c, Some((&since, epoch.as_deref()))).await {
                Ok((new_ws, j, welcomed)) => {
                    let killed = stamp::instant_of(sh.killed_at_ns.load(Ordering::Relaxed));
                    if out.reconnect_ns.is_none() {
                        out.reconnect_ns = Some(
                            welcomed
                                .into_std()
                                .saturating_duration_since(killed)
                                .as_nanos() as u64,
                        );
                        sh.reconnected.fetch_add(1, Ordering::Relaxed);
                    }
                    for t in &j.replayed {
                        out.replayed += 1;
                        see(t, &c, &mut out, &mut last_id, &sh, &scanner);
                    }
                    if j.last_id.is_some() && last_id.is_none() {
                        last_id = j.last_id.clone();
                    }
                    epoch = j.epoch.clone().or(epoch);
                    if out.resume_ns.is_none() {
                        out.resume_ns = Some(
                            std::time::Instant::now()
                                .saturating_duration_since(killed)
                                .as_nanos() as u64,
                        );
                        out.recovered = Some(j.recovered);
                        sh.resumed.fetch_add(1, Ordering::Relaxed);
                    }
                    ws = new_ws;
                    break;
                }
                Err(e) => {
                    *out.failures.entry(e.kind()).or_default() += 1;
                    let jitter = (stamp::now_ns() ^ (c.idx as u64).wrapping_mul(2654435761))
                        % (delay.as_nanos() as u64 / 2 + 1);
                    tokio::time::sleep(delay + Duration::from_nanos(jitter)).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// `wsgate-bench storm`.
pub(crate) async fn storm(a: StormArgs, meta: Meta) -> anyhow::Result<Value> {
    anyhow::ensure!(a.clients >= 1, "--clients must be at least 1");
    anyhow::ensure!(a.rate > 0.0, "--rate must be positive");
    let eps = conn::endpoints(&a.common.url)?;
    let kill_ep = Endpoint::parse(&a.kill_url)?;
    let same = |e: &Endpoint| e.addr == kill_ep.addr && e.path == kill_ep.path;
    anyhow::ensure!(
        eps.iter().any(same),
        "--kill-url {} is not one of the --url(s)",
        a.kill_url
    );
    let reconnect: Vec<Endpoint> = if a.reconnect_url.is_empty() {
        eps.iter().filter(|e| !same(e)).cloned().collect()
    } else {
        conn::endpoints(&a.reconnect_url)?
    };
    anyhow::ensure!(
        !reconnect.is_empty(),
        "nowhere to reconnect: give another --url or --reconnect-url"
    );
    let pub_ep = match &a.publish_url {
        Some(u) => Endpoint::parse(u)?,
        None => reconnect[0].clone(),
    };
    let run = std::process::id().max(1);
    let sh = Arc::new(Shared::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let limit = Arc::new(Semaphore::new(a.common.connect_concurrency.max(1)));
    let mut tasks = Vec::new();
    for i in 0..a.clients {
        let cfg = ClientCfg {
            idx: i,
            first: eps[i % eps.len()].clone(),
            reconnect: reconnect.clone(),
            target: a.common.target,
            room: a.room.clone(),
            timeout: a.common.connect_timeout,
            backoff: a.backoff,
            run,
        };
        tasks.push(tokio::spawn(client(
            cfg,
            sh.clone(),
            limit.clone(),
            stop_rx.clone(),
        )));
    }
    let affected_n = (0..a.clients).filter(|i| same(&eps[i % eps.len()])).count() as u64;
    let pb = progress::bar(a.clients as u64, "connecting");
    let deadline =
        Instant::now() + a.common.connect_timeout + Duration::from_secs(a.clients as u64 / 100);
    let stop_all = |_: ()| {
        let _ = stop_tx.send(true);
    };
    while sh.ready.load(Ordering::Relaxed) < a.clients as u64 {
        if let Err(e) = sh.failure.check() {
            stop_all(());
            return Err(e);
        }
        if Instant::now() > deadline {
            stop_all(());
            anyhow::bail!("not every client connected in time");
        }
        pb.set_position(sh.ready.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    pb.finish_and_clear();
    // The publisher, on a node that survives.
    let pub_failure = Arc::new(Failure::default());
    let ws = adapter::connect_joined(
        &pub_ep,
        a.common.target,
        "storm-publisher",
        None,
        conn::publisher_config(),
        &a.room,
        a.common.connect_timeout,
    )
    .await
    .map_err(|e| anyhow::anyhow!("publisher: could not connect to {}: {e}", pub_ep.origin))?;
    let mut publisher = Publisher::new(ws, 0, a.common.target, pub_failure.clone(), a.rate);
    let count = ((a.kill_after + a.after).as_secs_f64() * a.rate)
        .round()
        .max(1.0) as u64;
    let start = Instant::now() + Duration::from_millis(20);
    let room = a.room.clone();
    let size = 64;
    let pub_task = tokio::spawn(async move {
        let r = publisher
            .run(
                &[Phase::Steady {
                    run,
                    rate: a.rate,
                    count,
                    start,
                }],
                &room,
                size,
            )
            .await;
        (publisher, r)
    });
    tokio::time::sleep_until(start + a.kill_after).await;
    pub_failure.check()?;
    let cpu0 = CpuSample::take(&a.common.pids);
    sh.killed_at_ns.store(stamp::now_ns(), Ordering::Relaxed);
    let killed_at = Instant::now();
    sys::kill(a.kill_pid, "KILL")?;
    // Wait until every affected client resumed (bounded).
    let pb = progress::bar(affected_n, "resuming");
    let recover_deadline = killed_at + a.recover_timeout;
    let mut all_resumed_at = None;
    while Instant::now() < recover_deadline {
        let r = sh.resumed.load(Ordering::Relaxed);
        pb.set_position(r);
        if r >= affected_n {
            all_resumed_at = Some(killed_at.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    pb.finish_and_clear();
    let cpu_resumed = CpuSample::take(&a.common.pids);
    let (publisher, r) = pub_task.await?;
    let sent = r?.last().map(|p| p.sent).unwrap_or(0);
    publisher.close().await;
    pub_failure.check()?;
    let expected = sent * a.clients as u64;
    let drain_deadline = Instant::now() + a.drain;
    while sh.unique.load(Ordering::Relaxed) < expected && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cpu1 = CpuSample::take(&a.common.pids);
    let _ = stop_tx.send(true);
    let mut outs = Vec::new();
    for t in tasks {
        if let Ok(o) = t.await {
            outs.push(o);
        }
    }
    let mut reconnect_h = stats::histogram();
    let mut resume_h = stats::histogram();
    let (mut unique, mut dup, mut ooo, mut replayed, mut attempts) = (0u64, 0u64, 0u64, 0u64, 0u64);
    let (mut affected, mut recovered_true, mut resumed) = (0u64, 0u64, 0u64);
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    let mut lost = 0u64;
    for o in &outs {
        unique += o.tracker.unique;
        dup += o.tracker.dup;
        ooo += o.tracker.ooo;
        lost += sent.saturating_sub(o.tracker.unique);
        replayed += o.replayed;
        attempts += o.attempts;
        if o.affected {
            affected += 1;
        }
        if let Some(ns) = o.reconnect_ns {
            reconnect_h.saturating_record(ns / 1000);
        }
        if let Some(ns) = o.resume_ns {
            resume_h.saturating_record(ns / 1000);
            resumed += 1;
        }
        if o.recovered == Some(true) {
            recovered_true += 1;
        }
        for (k, v) in &o.failures {
            *failures.entry(k.clone()).or_default() += v;
        }
    }
    let max_ms = |h: &hdrhistogram::Histogram<u64>| {
        if h.is_empty() {
            Value::Null
        } else {
            json!(h.max() as f64 / 1000.0)
        }
    };
    let results = json!({
        "clients": a.clients,
        "affected": affected,
        "expected_affected": affected_n,
        "reconnected": reconnect_h.len(),
        "resumed": resumed,
        "resumed_recovered_true": recovered_true,
        "time_to_all_reconnected_ms": if reconnect_h.len() >= affected_n { max_ms(&reconnect_h) } else { Value::Null },
        "time_to_all_resumed_ms": all_resumed_at.map(|d| d.as_secs_f64() * 1000.0),
        "reconnect_ms": stats::percentiles_ms(&reconnect_h),
        "resume_ms": stats::percentiles_ms(&resume_h),
        "reconnect_attempts": attempts,
        "reconnect_failures": failures,
        "messages_sent": sent,
        "expected_deliveries": expected,
        "deliveries": unique,
        "recovered_by_replay": replayed,
        "lost": lost,
        "duplicated": dup,
        "out_of_order": ooo,
        "cpu_until_resumed": cpu0.report(&cpu_resumed, 0, ""),
        "cpu_storm": cpu0.report(&cpu1, unique, "delivery"),
    });
    let params = json!({
        "urls": a.common.url,
        "target": a.common.target,
        "pids": a.common.pids,
        "clients": a.clients,
        "room": a.room,
        "rate": a.rate,
        "kill_pid": a.kill_pid,
        "kill_url": a.kill_url,
        "kill_after_s": a.kill_after.as_secs_f64(),
        "after_s": a.after.as_secs_f64(),
        "reconnect_urls": reconnect.iter().map(|e| e.origin.clone()).collect::<Vec<_>>(),
        "publish_url": pub_ep.origin,
    });
    let report = meta.report("storm", params, results);
    if all_resumed_at.is_none() {
        anyhow::bail!(Failed {
            report,
            message: format!(
                "only {resumed} of {affected_n} affected clients resumed within {:?}",
                a.recover_timeout
            ),
        });
    }
    Ok(report)
}
