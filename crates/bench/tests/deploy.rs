//! Smoke test of `wsgate-bench deploy` against one embedded gateway, with a restart
//! command that does nothing: every accepted message reaches every member once.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use wsgate_e2e::Gateway;

#[test]
fn deploy_with_a_no_op_restart_delivers_everything() {
    let g = Gateway::start(&["--api-key", "k"]);
    let t0 = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_wsgate-bench"))
        .args([
            "deploy",
            "--url",
            &format!("ws://{}/ws", g.addr),
            "--api-url",
            &format!("http://{}", g.addr),
            "--api-key",
            "k",
            "--clients",
            "20",
            "--rooms",
            "2",
            "--rate",
            "20",
            "--warmup-s",
            "0.5",
            "--settle-s",
            "0.5",
            "--timeout-s",
            "5",
            "--restart-cmd",
            "true",
            "--node-metrics",
            &format!("http://{}", g.addr),
            "--json",
            "--no-progress",
        ])
        .output()
        .expect("run wsgate-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "deploy failed: {}\nstdout: {stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {stdout}"));
    assert_eq!(v["scenario"], "deploy", "{v}");
    let r = &v["results"];
    assert!(r["accepted"].as_u64().unwrap_or(0) > 0, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["duplicated"], 0, "{r}");
    assert_eq!(r["back"], 20, "{r}");
    assert_eq!(r["all_back"], true, "{r}");
    assert_eq!(r["recovered_false"], 0, "{r}");
    // Presence churn is reported, not asserted here: the exact check is the Python
    // rolling-restart test. (One run of this smoke test saw 3 clients report a `leave`
    // of one connected user with no restart at all; see the issue-16 closing note.)
    assert!(
        r["presence_leaves"].is_number() && r["presence_joins"].is_number(),
        "{r}"
    );
    assert_eq!(r["restart"]["exit_code"], 0, "{r}");
    // Every member of a room gets every accepted message of it.
    let accepted = r["accepted"].as_u64().unwrap_or(0);
    assert_eq!(r["expected_deliveries"], accepted * 10, "{r}");
    assert_eq!(r["deliveries"], accepted * 10, "{r}");
    assert!(r["latency_ms"]["p99"].is_number(), "{r}");
    assert!(r["peak_handshakes_per_s_per_node"].is_number(), "{r}");
    assert!(
        r["handshakes_per_node"][0]["polls"].as_u64().unwrap_or(0) > 0,
        "{r}"
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
}
