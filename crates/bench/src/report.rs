//! Output: one JSON object (`--json`) or a human table, both carrying the command line,
//! timestamps and the bench's own CPU.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde_json::{json, Map, Value};

/// What every report starts with.
pub(crate) struct Meta {
    started: SystemTime,
    cpu0: f64,
    threads: usize,
}

impl Meta {
    /// Starts the clock.
    pub(crate) fn start(threads: usize) -> Meta {
        Meta {
            started: SystemTime::now(),
            cpu0: crate::sys::self_cpu(),
            threads,
        }
    }

    /// The full report of a scenario.
    pub(crate) fn report(&self, scenario: &str, params: Value, results: Value) -> Value {
        let finished = SystemTime::now();
        let wall = finished
            .duration_since(self.started)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        json!({
            "scenario": scenario,
            "command_line": command_line(),
            "started_at": humantime::format_rfc3339_millis(self.started).to_string(),
            "finished_at": humantime::format_rfc3339_millis(finished).to_string(),
            "wall_s": wall,
            "bench": {
                "pid": std::process::id(),
                "threads": self.threads,
                "cpu_s": crate::sys::self_cpu() - self.cpu0,
            },
            "params": params,
            "results": results,
        })
    }
}

/// The command line, shell-quoted where needed.
pub(crate) fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@%+".contains(c))
            {
                a
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Prints the report to stdout.
pub(crate) fn emit(report: &Value, json: bool) {
    if json {
        println!("{report}");
    } else {
        let mut out = String::new();
        human(&mut out, report, 0);
        print!("{out}");
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => {
                let a = f.abs();
                if a == 0.0 {
                    "0".into()
                } else if a >= 1000.0 {
                    format!("{f:.0}")
                } else if a >= 10.0 {
                    format!("{f:.1}")
                } else if a >= 0.01 {
                    format!("{f:.3}")
                } else {
                    format!("{f:.5}")
                }
            }
            _ => n.to_string(),
        },
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        other => other.to_string(),
    }
}

/// Flattens an object into `a.b` keys of scalars (arrays of scalars joined).
fn flatten(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, v) in ordered(m) {
                if k == "detail" {
                    continue;
                }
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        Value::Array(a) if a.iter().all(|x| !x.is_object() && !x.is_array()) => {
            out.push((
                prefix.to_owned(),
                a.iter().map(scalar).collect::<Vec<_>>().join(", "),
            ));
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                flatten(&format!("{prefix}[{i}]"), x, out);
            }
        }
        _ => out.push((prefix.to_owned(), scalar(v))),
    }
}

fn table(out: &mut String, rows: &[Value], indent: usize) {
    let mut cols: Vec<String> = Vec::new();
    let flat: Vec<Vec<(String, String)>> = rows
        .iter()
        .map(|r| {
            let mut f = Vec::new();
            flatten("", r, &mut f);
            for (k, _) in &f {
                if !cols.contains(k) {
                    cols.push(k.clone());
                }
            }
            f
        })
        .collect();
    let cell = |row: &Vec<(String, String)>, c: &str| {
        row.iter()
            .find(|(k, _)| k == c)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| "-".into())
    };
    let widths: Vec<usize> = cols
        .iter()
        .map(|c| {
            flat.iter()
                .map(|r| cell(r, c).len())
                .chain([c.len()])
                .max()
                .unwrap_or(1)
        })
        .collect();
    let pad = " ".repeat(indent);
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
    };
    let _ = writeln!(out, "{pad}{}", line(cols.clone()));
    for r in &flat {
        let _ = writeln!(
            out,
            "{pad}{}",
            line(cols.iter().map(|c| cell(r, c)).collect())
        );
    }
}

fn human(out: &mut String, v: &Value, indent: usize) {
    let Value::Object(m) = v else {
        let _ = writeln!(out, "{}{}", " ".repeat(indent), scalar(v));
        return;
    };
    let width = m.keys().map(|k| k.len()).max().unwrap_or(0);
    let pad = " ".repeat(indent);
    for (k, v) in ordered(m) {
        if k == "detail" {
            continue;
        }
        match v {
            Value::Object(inner) if is_small(inner) => {
                let parts: Vec<String> = ordered(inner)
                    .into_iter()
                    .map(|(k, v)| format!("{k}={}", scalar(v)))
                    .collect();
                let _ = writeln!(out, "{pad}{k:<width$}  {}", parts.join("  "));
            }
            Value::Object(_) => {
                let _ = writeln!(out, "{pad}{k}:");
                human(out, v, indent + 2);
            }
            Value::Array(a) if a.iter().any(|x| x.is_object()) => {
                let _ = writeln!(out, "{pad}{k}:");
                table(out, a, indent + 2);
            }
            _ => {
                let mut flat = Vec::new();
                flatten("", v, &mut flat);
                let s = flat.first().map(|(_, s)| s.clone()).unwrap_or_default();
                let _ = writeln!(out, "{pad}{k:<width$}  {s}");
            }
        }
    }
}

/// Keys shown first, in this order; the others follow alphabetically.
const ORDER: &[&str] = &[
    "scenario",
    "error",
    "command_line",
    "started_at",
    "finished_at",
    "wall_s",
    "bench",
    "params",
    "results",
    "highest_rate_held",
    "deliveries_per_s_at_best",
    "p99_ms_at_best",
    "failure",
    "rate",
    "held",
    "mode",
    "offered_rate",
    "messages_sent",
    "send_rate",
    "subscribers",
    "publishers",
    "clients",
    "rooms",
    "members",
    "expected_deliveries",
    "deliveries",
    "deliveries_per_s",
    "latency_ms",
    "p50_ms",
    "p99_ms",
    "p99_9_ms",
    "max_ms",
    "lost",
    "duplicated",
    "out_of_order",
    "closed",
    "behind",
    "drained",
    "drain_s",
    "subscribers_closed",
    "close_codes",
    "publisher_lag_ms",
    "burst",
    "connections",
    "connected",
    "failed",
    "failures",
    "first_failure",
    "connect_s",
    "connects_per_s",
    "cycles",
    "cycles_per_s",
    "handshake_ms",
    "join_ms",
    "rss_per_conn_kib",
    "slab_per_conn_kib",
    "dropped_during_hold",
    "gateways",
    "pid",
    "cpu_s",
    "cpu_pct",
    "cpu",
    "steps",
];

fn rank(k: &str) -> usize {
    ORDER.iter().position(|o| *o == k).unwrap_or(ORDER.len())
}

fn ordered(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut v: Vec<_> = m.iter().collect();
    v.sort_by(|a, b| rank(a.0).cmp(&rank(b.0)).then(a.0.cmp(b.0)));
    v
}

fn is_small(m: &Map<String, Value>) -> bool {
    m.len() <= 8 && m.values().all(|v| !v.is_object() && !v.is_array())
}
