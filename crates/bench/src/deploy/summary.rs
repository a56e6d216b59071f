//! The figures of a `deploy` run, folded from every client's record and the back end's
//! accepted ids.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use super::client::Rec;
use super::publish::Published;
use crate::stats;

/// Most entries listed per detail table.
const DETAIL: usize = 20;

/// Connection attempts that failed, by kind, over every client.
pub(super) fn failures(recs: &[Arc<Mutex<Rec>>]) -> Value {
    let mut out: BTreeMap<String, u64> = BTreeMap::new();
    for r in recs {
        for (k, v) in &lock(r).failures {
            *out.entry(k.clone()).or_default() += v;
        }
    }
    json!(out)
}

fn lock(r: &Mutex<Rec>) -> std::sync::MutexGuard<'_, Rec> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// Everything measured on the clients' side.
pub(super) struct Summary {
    /// Accepted ids of its room a client never received, summed.
    pub lost: u64,
    /// Deliveries received again, summed.
    pub dup: u64,
    /// Clients joined at the end.
    pub back: u64,
    /// The last rejoin after a reconnect, ns since the origin.
    pub last_back_ns: Option<u64>,
    json: Value,
}

impl Summary {
    /// Folds the records; `restart_ns..=window_end_ns` is the restart window.
    pub(super) fn of(
        recs: &[Arc<Mutex<Rec>>],
        p: &Published,
        rooms: usize,
        restart_ns: u64,
        window_end_ns: u64,
    ) -> Summary {
        let (mut all, mut before, mut during) =
            (stats::histogram(), stats::histogram(), stats::histogram());
        let (mut lost, mut dup, mut back, mut unique, mut expected, mut unrecorded) =
            (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
        let (mut reconnected, mut rejoins, mut hints, mut unexpected, mut moved) =
            (0u64, 0u64, 0u64, 0u64, 0u64);
        let (mut recovered_false, mut resyncs) = (0u64, 0u64);
        let mut last_back_ns: Option<u64> = None;
        let mut close_codes: BTreeMap<String, u64> = BTreeMap::new();
        let mut presence: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        let mut lost_by_client = Vec::new();
        for (i, rec) in recs.iter().enumerate() {
            let r = lock(rec);
            let acc = &p.accepted[i % rooms];
            let got = acc.iter().filter(|id| r.seen.contains(id)).count() as u64;
            let l = acc.len() as u64 - got;
            if l > 0 {
                lost_by_client.push((i, l));
            }
            lost += l;
            expected += acc.len() as u64;
            unique += got;
            unrecorded += r.seen.len() as u64 - got;
            dup += r.dup;
            back += u64::from(r.joined);
            if r.rejoins > 0 {
                reconnected += 1;
                rejoins += r.rejoins;
                last_back_ns = last_back_ns.max(r.last_back_ns);
            }
            hints += r.hints;
            unexpected += r.unexpected_closes;
            moved += u64::from(r.moved);
            recovered_false += r.recovered_false;
            resyncs += r.resyncs;
            for (k, v) in &r.close_codes {
                *close_codes.entry(k.clone()).or_default() += v;
            }
            for (u, (l, j)) in &r.presence {
                let e = presence.entry(u.clone()).or_default();
                e.0 += l;
                e.1 += j;
            }
            for &(at, us) in &r.samples {
                all.saturating_record(us);
                if at < restart_ns {
                    before.saturating_record(us);
                } else if at <= window_end_ns {
                    during.saturating_record(us);
                }
            }
        }
        lost_by_client.sort_by_key(|&(i, l)| (std::cmp::Reverse(l), i));
        let mut by_user: Vec<_> = presence.iter().collect();
        by_user.sort_by_key(|(u, (l, j))| (std::cmp::Reverse(l + j), (*u).clone()));
        let json = json!({
            "published": p.sent,
            "accepted": p.accepted_n(),
            "refused": p.refused,
            "publish_errors": p.errors,
            "publish_rtt_ms": stats::percentiles_ms(&p.rtt),
            "expected_deliveries": expected,
            "deliveries": unique,
            "lost": lost,
            "clients_with_loss": lost_by_client.len(),
            "duplicated": dup,
            "received_unrecorded": unrecorded,
            "back": back,
            "reconnects": {"clients": reconnected, "total": rejoins},
            "reconnect_hints": hints,
            "unexpected_closes": unexpected,
            "moved_clients": moved,
            "close_codes": close_codes,
            "connect_failures": failures(recs),
            "recovered_false": recovered_false,
            "resyncs": resyncs,
            "latency_ms": stats::percentiles_ms(&all),
            "latency_ms_before": stats::percentiles_ms(&before),
            "latency_ms_restart": stats::percentiles_ms(&during),
            "presence_leaves": presence.values().map(|p| p.0).sum::<u64>(),
            "presence_joins": presence.values().map(|p| p.1).sum::<u64>(),
            "presence_users": presence.len(),
            "detail": {
                "lost_by_client": lost_by_client.iter().take(DETAIL)
                    .map(|(i, l)| json!({"client": i, "lost": l})).collect::<Vec<_>>(),
                "presence_by_user": by_user.iter().take(DETAIL)
                    .map(|(u, (l, j))| json!({"user": u, "leaves": l, "joins": j}))
                    .collect::<Vec<_>>(),
            },
        });
        Summary {
            lost,
            dup,
            back,
            last_back_ns,
            json,
        }
    }

    /// The figures as a JSON object.
    pub(super) fn json(&self) -> Value {
        self.json.clone()
    }
}
