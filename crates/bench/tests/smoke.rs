//! Smoke test of every scenario at tiny sizes: the built `wsgate-bench` against real
//! gateways, with `--json`, checking the report's shape and its key figures.

use std::process::{Command, Output};

use serde_json::Value;
use wsgate_e2e::{Gateway, RedisServer};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_wsgate-bench"))
        .args(args)
        .args(["--json", "--no-progress"])
        .output()
        .expect("run wsgate-bench")
}

fn bench(args: &[&str]) -> Value {
    let out = run(args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "wsgate-bench {args:?} failed: {}\nstdout: {stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"));
    for key in [
        "scenario",
        "command_line",
        "started_at",
        "finished_at",
        "bench",
        "params",
        "results",
    ] {
        assert!(!v[key].is_null(), "report lacks {key}: {v}");
    }
    assert!(v["bench"]["cpu_s"].is_number(), "{v}");
    v
}

fn url(g: &Gateway) -> String {
    format!("ws://{}", g.addr)
}

#[test]
fn help_explains_every_scenario() {
    let out = Command::new(env!("CARGO_BIN_EXE_wsgate-bench"))
        .arg("--help")
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for s in [
        "fanout",
        "idle",
        "sweep",
        "rooms",
        "churn",
        "storm",
        "build",
        "--json",
        "rate-limit",
    ] {
        assert!(text.contains(s), "--help does not mention {s}:\n{text}");
    }
    for s in [
        "fanout", "idle", "sweep", "rooms", "churn", "storm", "build",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_wsgate-bench"))
            .args([s, "--help"])
            .output()
            .expect("run");
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("Reports") && text.contains("--url"),
            "{s} --help:\n{text}"
        );
    }
}

#[test]
fn fanout_steady_and_burst() {
    let g = Gateway::start(&["--rate-limit", "100000"]);
    let pid = g.pid().to_string();
    let v = bench(&[
        "fanout",
        "--url",
        &url(&g),
        "--pid",
        &pid,
        "-s",
        "6",
        "-p",
        "2",
        "-r",
        "100",
        "-d",
        "1s",
        "--warmup",
        "300ms",
    ]);
    let r = &v["results"];
    assert_eq!(v["scenario"], "fanout");
    assert_eq!(r["messages_sent"], 100, "{r}");
    assert_eq!(r["expected_deliveries"], 600, "{r}");
    assert_eq!(r["deliveries"], 600, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicated"], 0, "{r}");
    assert_eq!(r["out_of_order"], 0, "{r}");
    assert_eq!(r["subscribers_closed"], 0, "{r}");
    assert_eq!(r["latency_ms"]["count"], 600, "{r}");
    for p in ["p50", "p90", "p99", "p99_9", "max"] {
        assert!(r["latency_ms"][p].is_number(), "{r}");
    }
    assert!(r["cpu"]["gateways"][0]["cpu_s"].is_number(), "{r}");
    assert!(r["cpu"]["gateways"][0]["rss_kib"].is_number(), "{r}");

    let v = bench(&[
        "fanout",
        "--url",
        &url(&g),
        "-s",
        "4",
        "-p",
        "2",
        "--burst",
        "100",
        "--warmup",
        "0s",
    ]);
    let r = &v["results"];
    assert_eq!(r["mode"], "burst", "{r}");
    assert_eq!(r["deliveries"], 400, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert!(r["burst"]["time_to_deliver_all_ms"].is_number(), "{r}");
}

#[test]
fn fanout_fails_loudly_when_rate_limited() {
    let g = Gateway::start(&[]);
    let out = run(&[
        "fanout",
        "--url",
        &url(&g),
        "-s",
        "2",
        "-r",
        "300",
        "-d",
        "1s",
        "--warmup",
        "0s",
    ]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rate_limited") && err.contains("--rate-limit"),
        "{err}"
    );
}

#[test]
fn fanout_fails_when_nothing_listens() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let out = run(&[
        "fanout",
        "--url",
        &format!("ws://127.0.0.1:{port}"),
        "-s",
        "1",
        "-d",
        "1s",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("could not connect"));
}

#[test]
fn idle_holds_connections_through_heartbeats() {
    let g = Gateway::start(&["--heartbeat-ms", "300"]);
    let pid = g.pid().to_string();
    let v = bench(&[
        "idle",
        "--url",
        &url(&g),
        "--pid",
        &pid,
        "-n",
        "30",
        "--per-process",
        "12",
        "--sources",
        "2",
        "--hold",
        "1500ms",
        "--settle",
        "100ms",
    ]);
    let r = &v["results"];
    assert_eq!(r["connected"], 30, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert_eq!(r["workers"], 3, "{r}");
    assert_eq!(r["dropped_during_hold"], 0, "{r}");
    assert!(r["gateways"][0]["rss_per_conn_kib"].is_number(), "{r}");
    assert!(r["slab_per_conn_kib"].is_number(), "{r}");
    assert!(r["connects_per_s"].as_f64().unwrap_or(0.0) > 0.0, "{r}");
}

#[test]
fn sweep_reports_every_step() {
    let g = Gateway::start(&["--rate-limit", "100000"]);
    let v = bench(&[
        "sweep",
        "--url",
        &url(&g),
        "-s",
        "3",
        "--rates",
        "20,40",
        "-d",
        "500ms",
        "--warmup",
        "200ms",
        "--pause",
        "100ms",
        "--p99-max-ms",
        "2000",
        "--keep-going",
    ]);
    let r = &v["results"];
    let steps = r["steps"].as_array().expect("steps");
    assert_eq!(steps.len(), 2, "{r}");
    for s in steps {
        assert_eq!(s["lost"], 0, "{s}");
        assert!(s["p99_ms"].is_number(), "{s}");
    }
    assert!(r.get("highest_rate_held").is_some(), "{r}");
}

#[test]
fn rooms_delivers_to_every_room_mate() {
    let g = Gateway::start(&["--rate-limit", "1000"]);
    let pid = g.pid().to_string();
    let v = bench(&[
        "rooms",
        "--url",
        &url(&g),
        "--pid",
        &pid,
        "-m",
        "3",
        "-k",
        "3",
        "--member-rate",
        "10",
        "-d",
        "1s",
        "--warmup",
        "200ms",
    ]);
    let r = &v["results"];
    assert_eq!(r["messages_sent"], 90, "{r}");
    assert_eq!(r["expected_deliveries"], 180, "{r}");
    assert_eq!(r["deliveries"], 180, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicated"], 0, "{r}");
    assert!(r["latency_ms"]["p99"].is_number(), "{r}");
}

#[test]
fn churn_counts_cycles() {
    let g = Gateway::start(&[]);
    let pid = g.pid().to_string();
    let v = bench(&[
        "churn",
        "--url",
        &url(&g),
        "--pid",
        &pid,
        "-c",
        "3",
        "-d",
        "1s",
    ]);
    let r = &v["results"];
    assert!(r["cycles"].as_u64().unwrap_or(0) > 0, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert!(r["handshake_ms"]["p99"].is_number(), "{r}");
    assert!(r["cpu"]["gateways"][0]["cpu_s"].is_number(), "{r}");
}

#[test]
fn storm_resumes_the_killed_nodes_clients() {
    let redis = RedisServer::start();
    let a = Gateway::start(&["--redis-url", &redis.url(), "--rate-limit", "1000"]);
    let b = Gateway::start(&["--redis-url", &redis.url(), "--rate-limit", "1000"]);
    let (pid_a, pid_b) = (a.pid().to_string(), b.pid().to_string());
    let urls = format!("{},{}", url(&a), url(&b));
    let v = bench(&[
        "storm",
        "--url",
        &urls,
        "--pid",
        &pid_a,
        "-n",
        "6",
        "-r",
        "20",
        "--kill-pid",
        &pid_b,
        "--kill-url",
        &url(&b),
        "--kill-after",
        "700ms",
        "--after",
        "1s",
        "--recover-timeout",
        "15s",
    ]);
    let r = &v["results"];
    assert_eq!(r["affected"], 3, "{r}");
    assert_eq!(r["resumed"], 3, "{r}");
    assert!(r["time_to_all_resumed_ms"].is_number(), "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicated"], 0, "{r}");
    assert_eq!(r["deliveries"], r["expected_deliveries"], "{r}");
}

#[test]
fn build_forms_a_room_on_one_embedded_node() {
    let g = Gateway::start(&[]);
    let pid = g.pid().to_string();
    let started = std::time::Instant::now();
    let v = bench(&[
        "build",
        "--url",
        &url(&g),
        "--pid",
        &pid,
        "-n",
        "200",
        "--concurrency",
        "50",
        "--settle",
        "200ms",
    ]);
    let took = started.elapsed();
    let r = &v["results"];
    assert_eq!(
        (&r["joined"], &r["failed"]),
        (&200.into(), &0.into()),
        "{r}"
    );
    assert_eq!(r["max_members_count"], 200, "{r}");
    assert_eq!(v["params"]["concurrency"], 50, "{v}");
    for k in ["formation_s", "joins_per_s", "rss_kib_per_joined"] {
        assert!(r[k].is_number(), "{k}: {r}");
    }
    for p in ["p50", "p99"] {
        assert!(r["connect_join_ms"][p].is_number(), "{r}");
    }
    assert!(r["cpu"]["gateway_cpu_us_per_join"].is_number(), "{r}");
    assert_eq!(r["probe"]["room"], "probe", "{r}");
    assert_eq!(r["probe"]["lost"], 0, "{r}");
    assert!(r["probe"]["latency_ms"]["p99"].is_number(), "{r}");
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
}

#[test]
fn build_counts_refused_joins_by_error_code() {
    // Room of at most 5 distinct users: the other 5 joins get an error frame.
    let g = Gateway::start(&["--max-members", "5"]);
    let out = run(&[
        "build",
        "--url",
        &url(&g),
        "-n",
        "10",
        "--concurrency",
        "1",
        "--settle",
        "0s",
        "--probe-rate",
        "0",
    ]);
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).expect("JSON report");
    let r = &v["results"];
    assert_eq!(r["joined"], 5, "{r}");
    assert_eq!(r["failures"]["error:room_full"], 5, "{r}");
    assert!(r["probe"].is_null(), "{r}");
}

/// The uWebSockets.js peer (crates/bench/peers/uws-server.js), when node and the peers'
/// node_modules are here (`crates/bench/peers/run.sh install`); skipped otherwise.
#[test]
fn build_drives_the_uws_peer() {
    let peers = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("peers");
    let node_ok = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !node_ok
        || !peers
            .join("node_modules/@trufflesuite/uws-js-unofficial")
            .exists()
    {
        eprintln!("skipped: node or crates/bench/peers/node_modules missing (run.sh install)");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let mut child = Command::new("node")
        .arg(peers.join("uws-server.js"))
        .args(["--port", &port.to_string()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start node");
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().expect("stdout");
    let node = Stop(child);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line).expect("read");
    assert!(line.starts_with("listening on "), "uws-server.js: {line:?}");
    let pid = node.0.id().to_string();
    let v = bench(&[
        "build",
        "--url",
        &format!("ws://127.0.0.1:{port}"),
        "--pid",
        &pid,
        "-n",
        "100",
        "--concurrency",
        "20",
        "--settle",
        "100ms",
    ]);
    let r = &v["results"];
    assert_eq!(
        (&r["joined"], &r["failed"]),
        (&100.into(), &0.into()),
        "{r}"
    );
    assert_eq!(r["max_members_count"], 100, "{r}");
    assert_eq!(r["probe"]["lost"], 0, "{r}");
    assert!(r["probe"]["received"].as_u64().unwrap_or(0) > 0, "{r}");
}

#[test]
fn build_forms_a_room_of_distinct_users_on_two_nodes() {
    let redis = RedisServer::start();
    let a = Gateway::start(&["--redis-url", &redis.url()]);
    let b = Gateway::start(&["--redis-url", &redis.url()]);
    let (pid_a, pid_b) = (a.pid().to_string(), b.pid().to_string());
    let urls = format!("{},{}", url(&a), url(&b));
    let v = bench(&[
        "build",
        "--url",
        &urls,
        "--pid",
        &pid_a,
        "--pid",
        &pid_b,
        "-n",
        "150",
        "--connect-concurrency",
        "30",
        "--settle",
        "300ms",
        "--redis-url",
        &redis.url(),
    ]);
    let r = &v["results"];
    assert_eq!(
        (&r["joined"], &r["failed"]),
        (&150.into(), &0.into()),
        "{r}"
    );
    assert_eq!(r["max_members_count"], 150, "{r}");
    assert!(r["cpu"]["gateway_cpu_us_per_join"].is_number(), "{r}");
    let per_join = r["redis"]["commands_per_join"].as_f64().unwrap_or(0.0);
    assert!(per_join > 5.0 && per_join < 60.0, "{r}");
    assert_eq!(r["probe"]["lost"], 0, "{r}");
    assert!(r["probe"]["sent"].as_u64().unwrap_or(0) > 0, "{r}");
}
