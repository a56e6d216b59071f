//! `rooms`: M rooms × K members, every member publishing at a per-member rate and
//! receiving its room-mates' messages. Whole rooms live in one task: each connection is
//! a stream that also sends on its own schedule, so no task or channel per connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::SelectAll;
use futures_util::{Sink, Stream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};
use tokio_tungstenite::tungstenite::Message;

use crate::adapter::{self, Target};
use crate::cli::RoomsArgs;
use crate::conn::{self, Ws};
use crate::fleet::connect_many;
use crate::progress;
use crate::publisher::Failure;
use crate::report::Meta;
use crate::stamp::{self, Scanner, Stamp};
use crate::stats::{self, RunStats, Tracker};
use crate::sub::Ev;
use crate::sys::CpuSample;

/// The measured run's tag (warm-up is 0).
const RUN: u32 = 1;

struct Schedule {
    start_ns: u64,
    interval_ns: f64,
    warm: u64,
    total: u64,
    /// With --burst: when every measured message is due (all at once).
    burst_ns: Option<u64>,
}

/// A member: reads like a subscriber and sends on its own schedule.
struct Member {
    ws: Ws,
    idx: u32,
    local: usize,
    target: Target,
    room: String,
    size: usize,
    sched: Schedule,
    k: u64,
    timer: Pin<Box<Sleep>>,
    out: Option<Message>,
    flushing: bool,
    pong: bool,
    done: bool,
    sent: Arc<Vec<AtomicU64>>,
    max_lag_us: Arc<AtomicU64>,
    content: String,
}

impl Member {
    fn deadline_ns(&self, k: u64) -> u64 {
        match self.sched.burst_ns {
            Some(at) if k >= self.sched.warm => at,
            _ => self.sched.start_ns + (k as f64 * self.sched.interval_ns) as u64,
        }
    }

    fn pump_writes(&mut self, cx: &mut Context<'_>) -> Result<(), ()> {
        loop {
            if self.out.is_none() && self.pong {
                self.pong = false;
                self.out = Some(Message::text("3"));
            }
            if self.out.is_none()
                && self.k < self.sched.total
                && self.timer.as_mut().poll(cx).is_ready()
            {
                let now = stamp::now_ns();
                let k = self.k;
                let sched = self.deadline_ns(k);
                self.max_lag_us
                    .fetch_max(now.saturating_sub(sched) / 1000, Ordering::Relaxed);
                let (run, seq) = if k < self.sched.warm {
                    (0, k)
                } else {
                    (RUN, k - self.sched.warm)
                };
                stamp::encode(
                    &mut self.content,
                    Stamp {
                        run,
                        publisher: self.idx,
                        seq,
                        nanos: now,
                    },
                    self.size,
                );
                self.out = Some(Message::text(adapter::publish_frame(
                    self.target,
                    &self.room,
                    &self.content,
                )));
                if run == RUN {
                    self.sent[self.local].fetch_add(1, Ordering::Relaxed);
                }
                self.k += 1;
                let next = self.deadline_ns(self.k);
                // In a burst every message is due at once: the fired timer stays ready.
                if next > now || self.sched.burst_ns.is_none() {
                    self.timer.as_mut().reset(stamp::instant_of(next).into());
                }
            }
            let Some(m) = self.out.take() else {
                break;
            };
            match Pin::new(&mut self.ws).poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    Pin::new(&mut self.ws).start_send(m).map_err(|_| ())?;
                    self.flushing = true;
                }
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => {
                    self.out = Some(m);
                    break;
                }
            }
        }
        if self.flushing {
            match Pin::new(&mut self.ws).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.flushing = false,
                Poll::Ready(Err(_)) => return Err(()),
                Poll::Pending => {}
            }
        }
        Ok(())
    }
}

impl Stream for Member {
    type Item = (u32, Ev);

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        let local = this.local as u32;
        if this.pump_writes(cx).is_err() {
            this.done = true;
            return Poll::Ready(Some((local, Ev::Closed("1006".into()))));
        }
        loop {
            match Pin::new(&mut this.ws).poll_next(cx) {
                Poll::Ready(Some(Ok(Message::Text(t)))) => {
                    if this.target == Target::Socketio && t.as_str() == "2" {
                        this.pong = true;
                        if this.pump_writes(cx).is_err() {
                            this.done = true;
                            return Poll::Ready(Some((local, Ev::Closed("1006".into()))));
                        }
                        continue;
                    }
                    return Poll::Ready(Some((local, Ev::Text(t))));
                }
                Poll::Ready(Some(Ok(Message::Close(f)))) => {
                    this.done = true;
                    let code = f.map(|f| u16::from(f.code)).unwrap_or(1005);
                    return Poll::Ready(Some((local, Ev::Closed(code.to_string()))));
                }
                Poll::Ready(Some(Ok(_))) => continue,
                Poll::Ready(Some(Err(_))) | Poll::Ready(None) => {
                    this.done = true;
                    return Poll::Ready(Some((local, Ev::Closed("1006".into()))));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

enum Cmd {
    Collect(oneshot::Sender<RunStats>),
    Stop(oneshot::Sender<()>),
}

struct RoomGroup {
    cmd: mpsc::Sender<Cmd>,
    delivered: Arc<AtomicU64>,
    sent: Arc<Vec<AtomicU64>>,
}

#[allow(clippy::too_many_arguments)]
async fn task(
    mut all: SelectAll<Member>,
    n: usize,
    k: usize,
    base: u32,
    sent: Arc<Vec<AtomicU64>>,
    delivered: Arc<AtomicU64>,
    failure: Arc<Failure>,
    target: Target,
    mut rx: mpsc::Receiver<Cmd>,
) {
    let scanner = Scanner::new();
    let mut trackers: Vec<Vec<Tracker>> = vec![vec![Tracker::default(); k]; n];
    let mut stats = RunStats::default();
    loop {
        tokio::select! {
            biased;
            cmd = rx.recv() => match cmd {
                Some(Cmd::Collect(reply)) => {
                    let mut out = std::mem::take(&mut stats);
                    for (local, t) in trackers.iter().enumerate() {
                        let room0 = local / k * k;
                        let mut s: Vec<u64> = (0..k)
                            .map(|p| sent[room0 + p].load(Ordering::Relaxed))
                            .collect();
                        s[local % k] = 0; // its own messages are not deliveries
                        out.account(t, &s);
                    }
                    out.closed = stats.closed;
                    out.close_codes = stats.close_codes.clone();
                    let _ = reply.send(out);
                }
                Some(Cmd::Stop(done)) => {
                    for c in all.iter_mut() {
                        let _ = c.ws.close(None).await;
                    }
                    drop(all);
                    let _ = done.send(());
                    return;
                }
                None => return,
            },
            Some((local, ev)) = all.next(), if !all.is_empty() => match ev {
                Ev::Text(t) => {
                    let Some(st) = scanner.scan(t.as_bytes()) else {
                        if let Some(code) = adapter::error_code(target, &t) {
                            failure.set(format!(
                                "member {}: the gateway answered error {code}{} ({})",
                                base as usize + local as usize,
                                if code == "rate_limited" {
                                    ": --member-rate is above the gateway's --rate-limit (default 20/s); restart it with a higher --rate-limit"
                                } else { "" },
                                adapter::clip(&t)
                            ));
                        }
                        continue;
                    };
                    if st.run != RUN {
                        stats.stray += 1;
                        continue;
                    }
                    let local = local as usize;
                    if st.publisher as usize == base as usize + local {
                        continue; // its own message
                    }
                    let now = stamp::now_ns();
                    stats.hist.saturating_record(now.saturating_sub(st.nanos) / 1000);
                    stats.deliveries += 1;
                    stats.first_ns = stats.first_ns.min(now);
                    stats.last_ns = now;
                    delivered.fetch_add(1, Ordering::Relaxed);
                    let pos = (st.publisher as usize) % k;
                    if let Some(t) = trackers[local].get_mut(pos) {
                        t.see(st.seq);
                    }
                }
                Ev::Closed(code) => {
                    stats.closed += 1;
                    *stats.close_codes.entry(code).or_default() += 1;
                }
            },
        }
    }
}

/// `wsgate-bench rooms`.
pub(crate) async fn rooms(a: RoomsArgs, meta: Meta) -> anyhow::Result<Value> {
    let (m, k) = (a.rooms, a.members);
    anyhow::ensure!(m >= 1 && k >= 2, "need --rooms ≥ 1 and --members ≥ 2");
    anyhow::ensure!(a.member_rate > 0.0, "--member-rate must be positive");
    if a.common.target == Target::Wsgate && a.member_rate > 20.0 {
        eprintln!(
            "wsgate-bench: note: each member sends {:.0} msgs/s; the gateway must run with --rate-limit above that (default 20/s)",
            a.member_rate
        );
    }
    let eps = conn::endpoints(&a.common.url)?;
    let n = m * k;
    let t_connect = Instant::now();
    // Members of one room are consecutive: idx = room * K + position.
    let conns = connect_many(
        "member",
        n,
        &eps,
        &a.common,
        |i| format!("room-{}", i / k),
        |i| format!("room-{}-{}", i / k, i % k),
        conn::small_config(),
        0,
    )
    .await?;
    let connect_s = t_connect.elapsed().as_secs_f64();
    let failure = Arc::new(Failure::default());
    let interval_ns = 1e9 / a.member_rate;
    let warm = (a.warmup.as_secs_f64() * a.member_rate).round() as u64;
    let steady = (a.duration.as_secs_f64() * a.member_rate).round() as u64;
    let meas = a.burst.unwrap_or(steady).max(1);
    let t0 = stamp::now_ns() + 100_000_000;
    // After every member's last warm-up message (members start within one interval).
    let burst_ns = a
        .burst
        .map(|_| t0 + (a.warmup.as_nanos() as u64).max((warm as f64 * interval_ns) as u64));
    let rooms_per_task = (crate::fleet::per_task(n, 0) / k).max(1);
    let max_lag_us = Arc::new(AtomicU64::new(0));
    let mut groups = Vec::new();
    let mut it = conns.into_iter().enumerate().peekable();
    while it.peek().is_some() {
        let chunk: Vec<(usize, Ws)> = it.by_ref().take(rooms_per_task * k).collect();
        let base = chunk[0].0;
        let local_n = chunk.len();
        let sent: Arc<Vec<AtomicU64>> = Arc::new((0..local_n).map(|_| AtomicU64::new(0)).collect());
        let mut all = SelectAll::new();
        for (local, (idx, ws)) in chunk.into_iter().enumerate() {
            let start_ns = t0 + (idx as f64 / n as f64 * interval_ns) as u64;
            let timer = Box::pin(tokio::time::sleep_until(stamp::instant_of(start_ns).into()));
            all.push(Member {
                ws,
                idx: idx as u32,
                local,
                target: a.common.target,
                room: format!("room-{}", idx / k),
                size: a.size,
                sched: Schedule {
                    start_ns,
                    interval_ns,
                    warm,
                    total: warm + meas,
                    burst_ns,
                },
                k: 0,
                timer,
                out: None,
                flushing: false,
                pong: false,
                done: false,
                sent: sent.clone(),
                max_lag_us: max_lag_us.clone(),
                content: String::with_capacity(a.size + 64),
            });
        }
        let (tx, rx) = mpsc::channel(4);
        let delivered = Arc::new(AtomicU64::new(0));
        tokio::spawn(task(
            all,
            local_n,
            k,
            base as u32,
            sent.clone(),
            delivered.clone(),
            failure.clone(),
            a.common.target,
            rx,
        ));
        groups.push(RoomGroup {
            cmd: tx,
            delivered,
            sent,
        });
    }
    let sent_total = |g: &[RoomGroup]| -> u64 {
        g.iter()
            .flat_map(|g| g.sent.iter())
            .map(|s| s.load(Ordering::Relaxed))
            .sum()
    };
    let delivered_total =
        |g: &[RoomGroup]| -> u64 { g.iter().map(|g| g.delivered.load(Ordering::Relaxed)).sum() };
    let measure_at: Instant = match burst_ns {
        Some(at) => stamp::instant_of(at).into(),
        None => Instant::from(stamp::instant_of(t0)) + a.warmup,
    };
    let pb = progress::bar((a.warmup + a.duration).as_millis() as u64, "running");
    let started = Instant::now();
    let mut cpu0 = None;
    let want = n as u64 * meas;
    let give_up = measure_at + a.duration + Duration::from_secs(10);
    let result: anyhow::Result<()> = async {
        loop {
            failure.check()?;
            if cpu0.is_none() && Instant::now() >= measure_at {
                cpu0 = Some(CpuSample::take(&a.common.pids));
            }
            if sent_total(&groups) >= want || Instant::now() >= give_up {
                break;
            }
            pb.set_position(started.elapsed().as_millis() as u64);
            let wake = if cpu0.is_none() {
                measure_at.min(Instant::now() + Duration::from_millis(50))
            } else {
                Instant::now() + Duration::from_millis(20)
            };
            tokio::time::sleep_until(wake).await;
        }
        Ok(())
    }
    .await;
    pb.finish_and_clear();
    if let Err(e) = result {
        for g in &groups {
            let (tx, rx) = oneshot::channel();
            if g.cmd.send(Cmd::Stop(tx)).await.is_ok() {
                let _ = rx.await;
            }
        }
        return Err(e);
    }
    let cpu0 = cpu0.unwrap_or_else(|| CpuSample::take(&a.common.pids));
    let messages = sent_total(&groups);
    let expected = messages * (k as u64 - 1);
    let drain_start = Instant::now();
    let deadline = drain_start + a.drain;
    while delivered_total(&groups) < expected && Instant::now() < deadline {
        failure.check()?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let drain_s = drain_start.elapsed().as_secs_f64();
    let cpu1 = CpuSample::take(&a.common.pids);
    let mut all = RunStats::default();
    for g in &groups {
        let (tx, rx) = oneshot::channel();
        if g.cmd.send(Cmd::Collect(tx)).await.is_ok() {
            if let Ok(s) = rx.await {
                all.merge(&s);
            }
        }
    }
    for g in &groups {
        let (tx, rx) = oneshot::channel();
        if g.cmd.send(Cmd::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
    // The window the rates are over: the measured one, or the burst until its last delivery.
    let window_s = match burst_ns {
        Some(at) => all.last_ns.saturating_sub(at) as f64 / 1e9,
        None => a.duration.as_secs_f64(),
    }
    .max(1e-9);
    let results = json!({
        "rooms": m,
        "members": k,
        "connections": n,
        "connect_s": connect_s,
        "member_rate": a.member_rate,
        "offered_rate": a.member_rate * n as f64,
        "messages_sent": messages,
        "expected_deliveries": expected,
        "deliveries": all.deliveries,
        "deliveries_per_s": all.deliveries as f64 / window_s,
        "published_per_s": messages as f64 / window_s,
        "burst": a.burst,
        "burst_s": burst_ns.map(|_| window_s),
        "latency_ms": stats::percentiles_ms(&all.hist),
        "lost": all.lost,
        "duplicated": all.dup,
        "out_of_order": all.ooo,
        "drained": all.deliveries >= expected,
        "drain_s": drain_s,
        "closed": all.closed,
        "close_codes": all.close_codes,
        "publisher_lag_max_ms": max_lag_us.load(Ordering::Relaxed) as f64 / 1000.0,
        "cpu": cpu0.report(&cpu1, all.deliveries, "delivery"),
    });
    let params = json!({
        "urls": a.common.url,
        "target": a.common.target,
        "pids": a.common.pids,
        "rooms": m,
        "members": k,
        "member_rate": a.member_rate,
        "burst": a.burst,
        "duration_s": a.duration.as_secs_f64(),
        "warmup_s": a.warmup.as_secs_f64(),
        "size": a.size,
    });
    Ok(meta.report("rooms", params, results))
}
