//! Harness for the end-to-end tests: starts the real `wsgate` binary on a free
//! loopback port, talks to it over real sockets, and stops it (by PID) when done.

pub mod redis_cluster;

pub use redis_cluster::RedisCluster;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wsgate_client::Client;

/// Generous wait for anything that should happen "now" on a loaded 2-core machine.
pub const WAIT: Duration = Duration::from_secs(10);

/// The `wsgate` binary: `$WSGATE_BIN`, or the workspace's debug build.
pub fn binary() -> PathBuf {
    if let Ok(p) = std::env::var("WSGATE_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/wsgate");
    assert!(
        bin.exists(),
        "{} is missing: build it first with `cargo build -p wsgate-gateway` (tests/run.sh does)",
        bin.display()
    );
    // `cargo test` does not rebuild another package's binary: refuse a stale one
    // rather than test old code.
    let built = std::fs::metadata(&bin).and_then(|m| m.modified()).ok();
    // The crates the binary is built from (not the bench or the client).
    let crates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crates");
    let newest = ["protocol/src", "broker/src", "gateway/src"]
        .iter()
        .filter_map(|c| newest_source(&crates.join(c)))
        .max();
    if let (Some(built), Some(newest)) = (built, newest) {
        assert!(
            newest <= built,
            "{} is older than the sources: run `cargo build -p wsgate-gateway` (tests/run.sh does)",
            bin.display()
        );
    }
    bin
}

fn newest_source(dir: &std::path::Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_source(&path)
        } else if path.extension().is_some_and(|e| e == "rs") {
            entry.metadata().and_then(|m| m.modified()).ok()
        } else {
            None
        };
        newest = newest.max(t);
    }
    newest
}

/// A running gateway process, killed when dropped.
pub struct Gateway {
    child: Option<Child>,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Every line the process wrote to stderr so far arrives here.
    logs: mpsc::Receiver<String>,
}

impl Gateway {
    /// Starts `wsgate --listen 127.0.0.1:0 ARGS…` and waits until it listens.
    pub fn start(args: &[&str]) -> Gateway {
        Gateway::start_at("127.0.0.1:0", args)
    }

    /// Starts `wsgate --listen LISTEN ARGS…` (a fixed address: to restart a node where
    /// its clients will look for it).
    pub fn start_at(listen: &str, args: &[&str]) -> Gateway {
        let mut child = Command::new(binary())
            .args(["--listen", listen, "--log-format", "json"])
            .args(args)
            .env(
                "WSGATE_LOG",
                std::env::var("WSGATE_TEST_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
            )
            // Presence leaves at once unless a test sets a grace (a flag wins).
            .env("WSGATE_PRESENCE_GRACE_MS", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start wsgate");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (addr_tx, addr_rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line.strip_prefix("wsgate listening on ") {
                    let _ = addr_tx.send(addr.trim().to_owned());
                }
            }
        });
        let (log_tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if std::env::var_os("WSGATE_TEST_LOGS").is_some() {
                    eprintln!("[wsgate] {line}");
                }
                let _ = log_tx.send(line);
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("wsgate did not start listening within 30 s");
            }
        };
        Gateway {
            child: Some(child),
            addr,
            logs,
        }
    }

    /// `ws://ADDR/ws?QUERY`.
    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws?{}", self.addr, query)
    }

    /// Connects a development-mode client and reads its `welcome`.
    pub async fn connect(&self, user_id: &str) -> (Client, Value) {
        let mut c =
            Client::connect(&self.ws_url(&format!("user_id={user_id}&username={user_id}-name")))
                .await
                .expect("connect");
        let welcome = c.recv(WAIT).await.expect("welcome");
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        (c, welcome)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM (by PID).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }

    /// Waits for the process to exit, at most `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Log lines written so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.try_iter().collect()
    }

    /// A plain HTTP GET; returns (status, headers, body).
    pub async fn get(&self, path: &str) -> (u16, String, String) {
        http_request(
            &self.addr,
            &format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends a raw HTTP request and returns (status, head, body).
pub async fn http_request(addr: &str, raw: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    s.write_all(raw.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head.to_owned(), body.to_owned())
}

/// Sends `frame` and returns the next frame of type `kind`.
pub async fn ask(c: &mut Client, frame: Value, kind: &str) -> Value {
    c.send(&frame).await.expect("send");
    c.recv_type(kind, WAIT)
        .await
        .unwrap_or_else(|e| panic!("no {kind} after {frame}: {e}"))
}

/// Joins `room` and returns `joined`.
pub async fn join(c: &mut Client, room: &str) -> Value {
    ask(c, json!({"type":"join","room":room}), "joined").await
}

/// Asserts that nothing arrives for `d`.
pub async fn assert_quiet(c: &mut Client, d: Duration) {
    match c.recv(d).await {
        Err(wsgate_client::Error::Timeout) => {}
        other => panic!("expected silence, got {other:?}"),
    }
}

/// An HS256 token.
pub fn token(secret: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("encode token")
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Skips frames until a `presence` event about `user_id` arrives; returns its `event`.
pub async fn presence_of(c: &mut Client, user_id: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = c
            .recv_type("presence", left)
            .await
            .unwrap_or_else(|e| panic!("no presence of {user_id}: {e}"));
        if f["user"]["user_id"] == user_id {
            return f["event"].as_str().unwrap_or_default().to_owned();
        }
    }
}

/// A throwaway `redis-server` on a free loopback port, without persistence (a restart
/// loses everything, as a Redis without persistence does). Stopped, by PID, on drop.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port.
    pub port: u16,
}

impl RedisServer {
    /// Starts one on a free port and waits until it answers.
    pub fn start() -> RedisServer {
        let mut r = RedisServer::reserve();
        r.spawn();
        r
    }

    /// Picks a free port without starting anything yet (see [`RedisServer::restart`]).
    pub fn reserve() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("free port");
        RedisServer { child: None, port }
    }

    /// Sends one command and returns the raw RESP reply (for checks such as
    /// `PUBSUB NUMSUB`).
    pub fn command(&self, args: &[&str]) -> String {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.port)).expect("connect redis");
        let _ = s.set_read_timeout(Some(Duration::from_millis(300)));
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{}\r\n", a.len(), a));
        }
        s.write_all(req.as_bytes()).expect("write");
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start redis-server (is it installed? tests/run.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.answers() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not answer within 20 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops it (SIGKILL: nothing is saved) and waits until the port is closed.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `check` every 50 ms until it is true or `timeout` passes.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Gateway {
    /// Sends SIGKILL (by PID): a crash, with no clean-up of any kind.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

/// Sends a `message` with a `ref` and returns `(ack, own copy of the message)`,
/// whichever arrives first (in cluster mode the copy often comes before the ack).
pub async fn send_message(c: &mut Client, room: &str, content: &str) -> (Value, Value) {
    c.send(&json!({"type":"message","room":room,"content":content,"ref":"sm"}))
        .await
        .expect("send");
    let (mut ack, mut msg) = (None, None);
    while ack.is_none() || msg.is_none() {
        let f = c.recv(WAIT).await.expect("ack and message");
        match f["type"].as_str() {
            Some("ack") if f["ref"] == "sm" => ack = Some(f),
            Some("message") if f["content"] == content => msg = Some(f),
            Some("error") => panic!("error instead of ack: {f}"),
            _ => {}
        }
    }
    (ack.unwrap_or_default(), msg.unwrap_or_default())
}
