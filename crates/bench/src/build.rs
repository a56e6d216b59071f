//! `build`: a room forms. N distinct users connect and join one room, C in flight,
//! and stay: the formation time, joins/s, failures, the gateway's CPU per join and RSS
//! per joined connection, the largest `members_count` seen, Redis commands per join,
//! and a small room's publish latency during the storm (the probe).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::adapter::{self, Target};
use crate::cli::BuildArgs;
use crate::conn::{self, ConnError, Endpoint, Ws};
use crate::report::Meta;
use crate::sys::{self, CpuSample};
use crate::{progress, redis_stats, stats, Failed};

#[derive(Default)]
struct Totals {
    joined: u64,
    failures: BTreeMap<String, u64>,
    first_failure: Option<String>,
    /// When the last join was answered.
    last: Option<Instant>,
}

/// What the probe measured.
#[derive(Default)]
struct Probe {
    sent: u64,
    received: u64,
    latency: Option<Histogram<u64>>,
    errors: BTreeMap<String, u64>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sum of the RSS of `pids`, KiB.
fn rss(pids: &[u32]) -> u64 {
    pids.iter().filter_map(|p| sys::rss_kib(*p)).sum()
}

/// Why one user's connect+join failed, for counting: `connect:<kind>` (TCP, HTTP
/// status, upgrade), `timeout`, `error:<code>` (an error frame, e.g. refusing the join),
/// `closed[:<close code>]`, or `protocol` (anything else unexpected).
fn reason(e: &ConnError) -> String {
    match e {
        ConnError::Timeout => "timeout".into(),
        ConnError::Tcp(_) | ConnError::Http(_) | ConnError::Handshake(_) => {
            format!("connect:{}", e.kind())
        }
        ConnError::Protocol(m) => {
            if let Some(code) = error_frame_code(m) {
                format!("error:{code}")
            } else if let Some(i) = m.find("closed the connection (code ") {
                let code: String = m[i + 28..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                format!("closed:{code}")
            } else if m.contains("connection closed") || m.contains("read failed") {
                "closed".into()
            } else {
                "protocol".into()
            }
        }
    }
}

/// The `code` of an error frame quoted in a failure message (the adapter quotes the
/// frame it did not expect).
fn error_frame_code(m: &str) -> Option<String> {
    let i = m.find("\"code\":\"")? + 8;
    let code: String = m[i..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    (!code.is_empty()).then_some(code)
}

/// Reads and drops whatever `ws` receives until `stop` (answering Socket.IO pings),
/// then closes it.
async fn hold(mut ws: Ws, target: Target, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Text(t))) if target == Target::Socketio && t.as_str() == "2" => {
                    let _ = ws.send(Message::text("3")).await;
                }
                Some(Ok(_)) => {}
                _ => return,
            },
            _ = stop.changed() => break,
        }
    }
    let _ = ws.close(None).await;
}

/// The probe: one publisher and one subscriber in their own room, publishing `rate`
/// messages/s until `stop`; the subscriber times each message from its send.
async fn probe(
    ep: Endpoint,
    target: Target,
    room: String,
    rate: f64,
    timeout: Duration,
    stop: watch::Receiver<bool>,
) -> Probe {
    let mut out = Probe {
        latency: Some(stats::histogram()),
        ..Probe::default()
    };
    let deadline = Instant::now() + timeout;
    let open = |user: String| {
        let (ep, room) = (ep.clone(), room.clone());
        async move {
            let url = ep.request_url(target, &user);
            let mut ws = conn::within(
                timeout,
                conn::open(ep.addr, &url, None, conn::small_config()),
            )
            .await?;
            adapter::handshake(&mut ws, target, deadline).await?;
            adapter::join(&mut ws, target, &room, 1, None, deadline).await?;
            Ok::<Ws, ConnError>(ws)
        }
    };
    let (mut publisher, subscriber) = match (
        open(format!("{room}-pub")).await,
        open(format!("{room}-sub")).await,
    ) {
        (Ok(p), Ok(s)) => (p, s),
        (Err(e), _) | (_, Err(e)) => {
            out.errors.insert(format!("connect: {}", e.kind()), 1);
            return out;
        }
    };
    let sent_at: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let received = Arc::new(AtomicU64::new(0));
    let hist = Arc::new(Mutex::new(stats::histogram()));
    let reader = {
        let (sent_at, received, hist) = (sent_at.clone(), received.clone(), hist.clone());
        let mut sub = subscriber;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    m = sub.next() => match m {
                        Some(Ok(Message::Text(t))) => {
                            if target == Target::Socketio && t.as_str() == "2" {
                                let _ = sub.send(Message::text("3")).await;
                                continue;
                            }
                            let Some(i) = t.find("probe#") else { continue };
                            let n: usize = t[i + 6..]
                                .chars()
                                .take_while(char::is_ascii_digit)
                                .collect::<String>()
                                .parse()
                                .unwrap_or(usize::MAX);
                            let at = lock(&sent_at).get(n).copied();
                            if let Some(at) = at {
                                received.fetch_add(1, Ordering::Relaxed);
                                lock(&hist).saturating_record(at.elapsed().as_micros() as u64);
                            }
                        }
                        Some(Ok(_)) => {}
                        _ => return,
                    },
                }
            }
        })
    };
    let every = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut tick = tokio::time::interval(every);
    // A stalled tick must not turn into a burst (the gateway's per-connection rate
    // limit is 20 frames/s by default, the probe's default rate).
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stop = stop;
    let mut n = 0usize;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        lock(&sent_at).push(Instant::now());
        let frame = adapter::publish_frame(target, &room, &format!("probe#{n}"));
        n += 1;
        if publisher.send(Message::text(frame)).await.is_err() {
            *out.errors.entry("publish failed".into()).or_default() += 1;
            break;
        }
        // Answers to the publisher (its own copy, acks, errors): read what is there.
        while let Ok(Some(Ok(Message::Text(t)))) =
            tokio::time::timeout(Duration::ZERO, publisher.next()).await
        {
            if let Some(code) = adapter::error_code(target, &t) {
                *out.errors.entry(format!("error {code}")).or_default() += 1;
            }
        }
    }
    // Let the last messages arrive (a loss is one still missing 5 s later).
    let until = Instant::now() + Duration::from_secs(5);
    while received.load(Ordering::Relaxed) < n as u64 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.abort();
    let _ = publisher.close(None).await;
    out.sent = n as u64;
    out.received = received.load(Ordering::Relaxed);
    out.latency = Some(lock(&hist).clone());
    out
}

/// `wsgate-bench build`.
pub(crate) async fn build(a: BuildArgs, meta: Meta) -> anyhow::Result<Value> {
    anyhow::ensure!(a.users >= 1, "--users must be at least 1");
    anyhow::ensure!(
        wsgate_protocol::names::valid_room(&a.room),
        "--room {:?} is not a valid room name",
        a.room
    );
    let eps = conn::endpoints(&a.common.url)?;
    let srcs = conn::sources(a.common.sources.unwrap_or(0));
    let target = a.common.target;
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let concurrency = a.concurrency.unwrap_or(a.common.connect_concurrency).max(1);
    let probe_room = match a.user_offset {
        0 => "probe".to_owned(),
        o => format!("probe-{o}"),
    };
    let pids = a.common.pids.clone();
    let redis0 = match &a.redis_url {
        Some(url) => Some(redis_stats::snapshot(url).await?),
        None => None,
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let probe_task = (a.probe_rate > 0.0).then(|| {
        tokio::spawn(probe(
            eps[0].clone(),
            target,
            probe_room.clone(),
            a.probe_rate,
            timeout,
            stop_rx.clone(),
        ))
    });
    let rss0 = rss(&pids);
    let cpu0 = CpuSample::take(&pids);
    let gate = Arc::new(Semaphore::new(concurrency));
    let totals = Arc::new(Mutex::new(Totals::default()));
    let latency = Arc::new(Mutex::new(stats::histogram()));
    let max_count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let pb = progress::bar(a.users as u64, "joining");
    let mut holders = Vec::with_capacity(a.users);
    let mut joins = Vec::with_capacity(a.users);
    let (held_tx, mut held_rx) = tokio::sync::mpsc::unbounded_channel::<Ws>();
    for i in 0..a.users {
        let permit = gate.clone().acquire_owned().await?;
        let ep = eps[i % eps.len()].clone();
        let src = (!srcs.is_empty()).then(|| conn::any_port(srcs[i % srcs.len()]));
        let (totals, latency, max_count, room, held_tx) = (
            totals.clone(),
            latency.clone(),
            max_count.clone(),
            a.room.clone(),
            held_tx.clone(),
        );
        let user = format!("b{}", i + a.user_offset);
        joins.push(tokio::spawn(async move {
            let url = ep.request_url(target, &user);
            let t0 = Instant::now();
            let deadline = t0 + timeout;
            let r = async {
                let mut ws = conn::within(
                    timeout,
                    conn::open(ep.addr, &url, src, conn::small_config()),
                )
                .await?;
                adapter::handshake(&mut ws, target, deadline).await?;
                let joined = adapter::join(&mut ws, target, &room, 1, None, deadline).await?;
                Ok::<_, ConnError>((ws, joined))
            }
            .await;
            drop(permit);
            match r {
                Ok((ws, joined)) => {
                    let now = Instant::now();
                    lock(&latency).saturating_record((now - t0).as_micros() as u64);
                    if let Some(c) = joined.members_count {
                        max_count.fetch_max(c, Ordering::Relaxed);
                    }
                    let mut t = lock(&totals);
                    t.joined += 1;
                    t.last = Some(t.last.map_or(now, |l| l.max(now)));
                    drop(t);
                    let _ = held_tx.send(ws);
                }
                Err(e) => {
                    let mut t = lock(&totals);
                    *t.failures.entry(reason(&e)).or_default() += 1;
                    t.first_failure.get_or_insert_with(|| format!("{url}: {e}"));
                }
            }
        }));
        while let Ok(ws) = held_rx.try_recv() {
            holders.push(tokio::spawn(hold(ws, target, stop_rx.clone())));
        }
        pb.set_position(i as u64);
    }
    for j in joins {
        let _ = j.await;
    }
    drop(held_tx);
    while let Some(ws) = held_rx.recv().await {
        holders.push(tokio::spawn(hold(ws, target, stop_rx.clone())));
    }
    pb.finish_and_clear();
    let t = std::mem::take(&mut *lock(&totals));
    let formed_s = t
        .last
        .map(|l| (l - start).as_secs_f64())
        .unwrap_or_default();
    // Presence and count frames settle, then memory is read with everyone still in.
    tokio::time::sleep(a.settle).await;
    let cpu1 = CpuSample::take(&pids);
    let rss1 = rss(&pids);
    let redis = match (&a.redis_url, &redis0) {
        (Some(url), Some(r0)) => Some(redis_stats::report(
            r0,
            &redis_stats::snapshot(url).await?,
            t.joined,
        )),
        _ => None,
    };
    if !a.hold.is_zero() {
        eprintln!(
            "build: {} joined in {formed_s:.2} s; holding them for {:?}",
            t.joined, a.hold
        );
        tokio::time::sleep(a.hold).await;
    }
    let _ = stop_tx.send(true);
    let probe = match probe_task {
        Some(p) => Some(p.await?),
        None => None,
    };
    for h in holders {
        let _ = h.await;
    }
    let failed: u64 = t.failures.values().sum();
    let count = max_count.load(Ordering::Relaxed);
    let lat = lock(&latency).clone();
    let probe_json = probe.map(|p| {
        json!({
            "room": probe_room,
            "sent": p.sent,
            "received": p.received,
            "lost": p.sent.saturating_sub(p.received),
            "latency_ms": p.latency.as_ref().map(stats::percentiles_ms),
            "errors": p.errors,
        })
    });
    let results = json!({
        "users": a.users,
        "joined": t.joined,
        "failed": failed,
        "failures": t.failures,
        "first_failure": t.first_failure,
        "formation_s": formed_s,
        "joins_per_s": t.joined as f64 / formed_s.max(1e-9),
        "connect_join_ms": stats::percentiles_ms(&lat),
        "max_members_count": count,
        "rss_kib_before": rss0,
        "rss_kib_after": rss1,
        "rss_kib_per_joined": if t.joined > 0 { (rss1.saturating_sub(rss0)) as f64 / t.joined as f64 } else { 0.0 },
        "cpu": cpu0.report(&cpu1, t.joined, "join"),
        "redis": redis,
        "probe": probe_json,
    });
    let params = json!({
        "urls": a.common.url,
        "target": a.common.target,
        "pids": a.common.pids,
        "users": a.users,
        "user_offset": a.user_offset,
        "concurrency": concurrency,
        "timeout_ms": a.timeout_ms,
        "room": a.room,
        "probe": a.probe_rate > 0.0,
        "probe_rate": a.probe_rate,
        "settle_s": a.settle.as_secs_f64(),
        "hold_s": a.hold.as_secs_f64(),
    });
    let report = meta.report("build", params, results);
    // With no offset this run's users are the room: every one of them is counted.
    let count_ok = a.user_offset > 0 || target != Target::Wsgate || count >= t.joined;
    if failed > 0 || !count_ok {
        anyhow::bail!(Failed {
            report,
            message: if failed > 0 {
                format!(
                    "{failed} of {} joins failed (first: {})",
                    a.users,
                    t.first_failure.unwrap_or_default()
                )
            } else {
                format!("members_count reached {count}, not {}", t.joined)
            },
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reasons() {
        let refused = ConnError::Protocol(
            r#"join big refused: {"type":"error","code":"room_full","message":"full","ref":1}"#
                .into(),
        );
        assert_eq!(reason(&refused), "error:room_full");
        assert_eq!(reason(&ConnError::Timeout), "timeout");
        assert_eq!(reason(&ConnError::Http(503)), "connect:http:503");
        let closed = ConnError::Protocol("server closed the connection (code 1013)".into());
        assert_eq!(reason(&closed), "closed:1013");
        let eof = ConnError::Protocol("connection closed".into());
        assert_eq!(reason(&eof), "closed");
        assert_eq!(
            reason(&ConnError::Protocol("expected welcome".into())),
            "protocol"
        );
    }
}
