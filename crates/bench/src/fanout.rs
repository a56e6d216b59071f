//! `fanout` and `sweep`: one room, many subscribers, open-loop publishers.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::adapter::Target;
use crate::cli::{Common, FanoutArgs, Load, SweepArgs};
use crate::fleet::Fleet;
use crate::publisher::Phase;
use crate::report::Meta;
use crate::stats::{self, RunStats};
use crate::sys::CpuSample;
use crate::{progress, stamp};

/// One measured step.
pub(crate) struct StepSpec {
    /// Aggregate msgs/s (the warm-up rate with a burst).
    pub rate: f64,
    /// Burst size instead of a steady rate.
    pub burst: Option<u64>,
    /// Measured window.
    pub duration: Duration,
    /// Unmeasured traffic before it.
    pub warmup: Duration,
    /// Bound on the wait for deliveries in flight.
    pub drain: Duration,
}

/// The verdict figures of a step.
pub(crate) struct StepOutcome {
    /// Everything, for the report.
    pub json: Value,
    /// p99 latency, ms.
    pub p99_ms: f64,
    /// Lost deliveries.
    pub lost: u64,
    /// Duplicated deliveries.
    pub dup: u64,
    /// Subscribers closed during the step.
    pub closed: u64,
    /// The publishers could not keep the schedule.
    pub behind: bool,
    /// Deliveries/s.
    pub deliveries_per_s: f64,
}

/// Runs one step on `fleet`.
pub(crate) async fn step(
    fleet: &mut Fleet,
    spec: &StepSpec,
    room: &str,
    size: usize,
    pids: &[u32],
) -> anyhow::Result<StepOutcome> {
    let run = fleet.next_run;
    fleet.next_run += 1;
    fleet.shared.active_run.store(run, Ordering::Relaxed);
    let p = fleet.pubs.len();
    let per_pub = spec.rate / p as f64;
    let t0 = Instant::now() + Duration::from_millis(20);
    let measure_at = t0 + spec.warmup;
    let mut handles = Vec::new();
    for (i, mut publisher) in fleet.pubs.drain(..).enumerate() {
        let offset = Duration::from_secs_f64(i as f64 / spec.rate.max(1e-9));
        let mut phases = Vec::new();
        let warm = (spec.warmup.as_secs_f64() * per_pub).round() as u64;
        if warm > 0 {
            phases.push(Phase::Steady {
                run: 0,
                rate: per_pub,
                count: warm,
                start: t0 + offset,
            });
        }
        match spec.burst {
            Some(n) => {
                let count = n / p as u64 + u64::from((i as u64) < n % p as u64);
                phases.push(Phase::Burst {
                    run,
                    count,
                    start: measure_at,
                });
            }
            None => phases.push(Phase::Steady {
                run,
                rate: per_pub,
                count: (spec.duration.as_secs_f64() * per_pub).round().max(1.0) as u64,
                start: measure_at + offset,
            }),
        }
        let room = room.to_owned();
        handles.push(tokio::spawn(async move {
            let r = publisher.run(&phases, &room, size).await;
            (publisher, r)
        }));
    }
    let total_secs = spec.warmup
        + if spec.burst.is_some() {
            Duration::ZERO
        } else {
            spec.duration
        };
    let pb = progress::bar(total_secs.as_millis() as u64, "publishing");
    let mut cpu0 = None;
    while !handles.iter().all(|h| h.is_finished()) {
        if let Err(e) = fleet.failure.check() {
            for h in &handles {
                h.abort();
            }
            pb.finish_and_clear();
            return Err(e);
        }
        if cpu0.is_none() && Instant::now() >= measure_at {
            cpu0 = Some(CpuSample::take(pids));
        }
        pb.set_position(t0.elapsed().as_millis() as u64);
        let wake = if cpu0.is_none() {
            measure_at.min(Instant::now() + Duration::from_millis(100))
        } else {
            Instant::now() + Duration::from_millis(50)
        };
        tokio::time::sleep_until(wake).await;
    }
    pb.finish_and_clear();
    let cpu0 = cpu0.unwrap_or_else(|| CpuSample::take(pids));
    let mut sent = vec![0u64; p];
    let mut lag = stats::histogram();
    let (mut first_send, mut last_send) = (u64::MAX, 0u64);
    let mut pubs = Vec::with_capacity(p);
    let mut err = None;
    for (i, h) in handles.into_iter().enumerate() {
        let (publisher, r) = h.await.context("publisher task")?;
        pubs.push(publisher);
        match r {
            Ok(phases) => {
                if let Some(m) = phases.last() {
                    sent[i] = m.sent;
                    let _ = lag.add(&m.lag);
                    first_send = first_send.min(m.first_ns);
                    last_send = last_send.max(m.last_ns);
                }
            }
            Err(e) => err = Some(e),
        }
    }
    fleet.pubs = pubs;
    fleet.failure.check()?;
    if let Some(e) = err {
        return Err(e);
    }
    let messages: u64 = sent.iter().sum();
    let expected = messages * fleet.subscribers as u64;
    // Drain: wait for what is in flight, bounded.
    let drain_start = Instant::now();
    let deadline = drain_start + spec.drain;
    let pb = progress::bar(expected, "draining");
    loop {
        let got = fleet.delivered();
        pb.set_position(got);
        if got >= expected || Instant::now() >= deadline {
            break;
        }
        fleet.failure.check()?;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    pb.finish_and_clear();
    let drain_s = drain_start.elapsed().as_secs_f64();
    let cpu1 = CpuSample::take(pids);
    let mut all = RunStats::default();
    for g in &fleet.groups {
        all.merge(&g.collect(sent.clone()).await);
    }
    fleet.shared.active_run.store(0, Ordering::Relaxed);
    let echoes: u64 = fleet
        .pubs
        .iter()
        .map(|p| p.echoes.swap(0, Ordering::Relaxed))
        .sum();
    let closed = all.closed.saturating_sub(fleet.closed_seen);
    fleet.closed_seen = all.closed;
    let send_s = last_send.saturating_sub(first_send) as f64 / 1e9;
    let lag_max_ms = lag.max() as f64 / 1000.0;
    // Behind schedule: most messages late by more than 10 ms and two intervals, or one
    // by more than 250 ms and two intervals (a noisy machine delays a timer now and then).
    let lag_bound_us = (2e6 * p as f64 / spec.rate.max(1e-9)) as u64;
    let behind = spec.burst.is_none()
        && (lag.value_at_quantile(0.90) > lag_bound_us.max(10_000)
            || lag.max() > lag_bound_us.max(250_000)
            || (messages as f64) < 0.99 * spec.rate * spec.duration.as_secs_f64());
    let window = if spec.burst.is_some() {
        all.last_ns.saturating_sub(first_send) as f64 / 1e9
    } else {
        spec.duration.as_secs_f64()
    };
    let deliveries_per_s = all.deliveries as f64 / window.max(1e-9);
    let mut j = json!({
        "mode": if spec.burst.is_some() { "burst" } else { "steady" },
        "offered_rate": if spec.burst.is_some() { Value::Null } else { json!(spec.rate) },
        "messages_sent": messages,
        "send_rate": if send_s > 0.0 { json!(messages as f64 / send_s) } else { Value::Null },
        "subscribers": fleet.subscribers,
        "publishers": p,
        "expected_deliveries": expected,
        "deliveries": all.deliveries,
        "deliveries_per_s": deliveries_per_s,
        "lost": all.lost,
        "duplicated": all.dup,
        "out_of_order": all.ooo,
        "stray_deliveries": all.stray,
        "publisher_own_copies": echoes,
        "latency_ms": stats::percentiles_ms(&all.hist),
        "publisher_lag_ms": {
            "p99": lag.value_at_quantile(0.99) as f64 / 1000.0,
            "max": lag_max_ms,
            "behind_schedule": behind,
        },
        "drain_s": drain_s,
        "drained": all.deliveries >= expected,
        "subscribers_closed": closed,
        "close_codes": all.close_codes,
        "cpu": cpu0.report(&cpu1, all.deliveries, "delivery"),
    });
    if spec.burst.is_some() {
        j["burst"] = json!({
            "messages": messages,
            "send_ms": send_s * 1000.0,
            "time_to_deliver_all_ms": if all.deliveries >= expected {
                json!(all.last_ns.saturating_sub(first_send) as f64 / 1e6)
            } else {
                Value::Null
            },
        });
    }
    Ok(StepOutcome {
        p99_ms: stats::p99_ms(&all.hist),
        lost: all.lost,
        dup: all.dup,
        closed,
        behind,
        deliveries_per_s,
        json: j,
    })
}

fn load_params(c: &Common, l: &Load) -> Value {
    json!({
        "urls": c.url,
        "target": c.target,
        "pids": c.pids,
        "subscribers": l.subscribers,
        "publishers": l.publishers,
        "duration_s": l.duration.as_secs_f64(),
        "warmup_s": l.warmup.as_secs_f64(),
        "drain_s": l.drain.as_secs_f64(),
        "size": l.size,
        "room": l.room,
        "distinct_users": l.distinct_users,
    })
}

fn warn_rate(c: &Common, l: &Load, rate: f64, burst: Option<u64>) {
    if c.target != Target::Wsgate {
        return;
    }
    let per_pub = rate / l.publishers as f64;
    if per_pub > 20.0 || burst.is_some_and(|b| b / l.publishers as u64 > 40) {
        eprintln!(
            "wsgate-bench: note: each publisher sends {}; the gateway must run with \
             --rate-limit above that (its default is 20/s, burst 40)",
            match burst {
                Some(b) => format!("a burst of {}", b / l.publishers as u64),
                None => format!("{per_pub:.0} msgs/s"),
            }
        );
    }
}

/// `wsgate-bench fanout`.
pub(crate) async fn fanout(a: FanoutArgs, meta: Meta) -> anyhow::Result<Value> {
    anyhow::ensure!(a.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(a.load.subscribers >= 1, "--subscribers must be at least 1");
    stamp::init();
    warn_rate(&a.common, &a.load, a.rate, a.burst);
    let mut fleet =
        Fleet::connect(&a.common, &a.load, a.rate.max(a.burst.unwrap_or(0) as f64)).await?;
    let spec = StepSpec {
        rate: a.rate,
        burst: a.burst,
        duration: a.load.duration,
        warmup: a.load.warmup,
        drain: a.load.drain,
    };
    let r = step(&mut fleet, &spec, &a.load.room, a.load.size, &a.common.pids).await;
    let setup = fleet.setup.clone();
    fleet.close().await;
    let out = r?;
    let mut params = load_params(&a.common, &a.load);
    params["rate"] = json!(a.rate);
    params["burst"] = json!(a.burst);
    let mut results = out.json;
    results["setup"] = setup;
    Ok(meta.report("fanout", params, results))
}

/// `wsgate-bench sweep`.
pub(crate) async fn sweep(a: SweepArgs, meta: Meta) -> anyhow::Result<Value> {
    stamp::init();
    let rates: Vec<f64> = if !a.rates.is_empty() {
        a.rates.clone()
    } else {
        anyhow::ensure!(
            a.step > 0.0 && a.start > 0.0,
            "--start and --step must be positive"
        );
        let mut v = Vec::new();
        let mut r = a.start;
        while r <= a.max + 1e-9 {
            v.push(r);
            r += a.step;
        }
        v
    };
    anyhow::ensure!(
        !rates.is_empty() && rates.iter().all(|r| *r > 0.0),
        "no positive rate to sweep"
    );
    let max_rate = rates.iter().cloned().fold(0.0, f64::max);
    warn_rate(&a.common, &a.load, max_rate, None);
    let mut fleet = Fleet::connect(&a.common, &a.load, max_rate).await?;
    let mut steps = Vec::new();
    let mut best: Option<(f64, f64, f64)> = None;
    let mut failure = None;
    for (i, &rate) in rates.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(a.pause).await;
        }
        let spec = StepSpec {
            rate,
            burst: None,
            duration: a.load.duration,
            warmup: a.load.warmup,
            drain: a.load.drain,
        };
        let out = match step(&mut fleet, &spec, &a.load.room, a.load.size, &a.common.pids).await {
            Ok(o) => o,
            Err(e) => {
                failure = Some(format!("step at {rate} msgs/s failed: {e:#}"));
                break;
            }
        };
        let new_closes = out.closed;
        let held = out.lost == 0
            && out.dup == 0
            && new_closes == 0
            && !out.behind
            && out.p99_ms <= a.p99_max_ms
            && out.json["drained"] == true;
        let mut s = json!({
            "rate": rate,
            "held": held,
            "deliveries_per_s": out.deliveries_per_s,
            "p50_ms": out.json["latency_ms"]["p50"],
            "p99_ms": out.json["latency_ms"]["p99"],
            "p99_9_ms": out.json["latency_ms"]["p99_9"],
            "max_ms": out.json["latency_ms"]["max"],
            "lost": out.lost,
            "duplicated": out.dup,
            "closed": new_closes,
            "behind": out.behind,
            "gateway_cpu_us_per_delivery": out.json["cpu"]["gateway_cpu_us_per_delivery"],
            "gateway_cpu_s": out.json["cpu"]["gateway_cpu_s_total"],
            "bench_cpu_s": out.json["cpu"]["bench_cpu_s"],
        });
        s["detail"] = out.json.clone();
        if held && best.is_none_or(|b| rate > b.0) {
            best = Some((rate, out.deliveries_per_s, out.p99_ms));
        }
        steps.push(s);
        if !held && !a.keep_going {
            break;
        }
    }
    let setup = fleet.setup.clone();
    fleet.close().await;
    let mut params = load_params(&a.common, &a.load);
    params["rates"] = json!(rates);
    params["p99_max_ms"] = json!(a.p99_max_ms);
    // The table shows the summary columns; the JSON keeps each step's full detail.
    let results = json!({
        "highest_rate_held": best.map(|b| b.0),
        "deliveries_per_s_at_best": best.map(|b| b.1),
        "p99_ms_at_best": best.map(|b| b.2),
        "failure": failure,
        "steps": steps,
        "setup": setup,
    });
    let report = meta.report("sweep", params, results);
    if let Some(f) = failure {
        anyhow::bail!(crate::Failed { report, message: f });
    }
    Ok(report)
}
