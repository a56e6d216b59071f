//! Configuration: command-line flags, each with a `WSGATE_*` environment fallback.

use std::net::SocketAddr;

use std::sync::Arc;

use clap::{Parser, ValueEnum};
use wsgate_protocol::server::PresenceMode;

use crate::namespaces::{NamespaceOptions, Namespaces};

mod jwt;
pub use jwt::JwtArgs;

mod redis;
pub use redis::RedisArgs;

mod webhooks;
pub use webhooks::WebhookArgs;

mod hooks;
pub use hooks::{FailPolicy, HookArgs};

/// Longest `--presence-grace-ms`: one hour (a closed session's presence is kept no
/// Most `--accept-rate` (the admission window keeps one timestamp per admission).
pub const MAX_ACCEPT_RATE: u32 = 1_000_000;

/// longer; deadlines stay far from any clock overflow).
pub const MAX_PRESENCE_GRACE_MS: u64 = 3_600_000;

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Pretty,
    /// One JSON object per line.
    Json,
}

/// The gateway's configuration.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "wsgate",
    version,
    about = "wsgate: a horizontally scaled WebSocket gateway"
)]
pub struct Config {
    /// Address to listen on (use port 0 for any free port).
    #[arg(long, env = "WSGATE_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// This node's id, shown to clients in `welcome` (default: gw-<random>).
    #[arg(long, env = "WSGATE_NODE_ID")]
    pub node_id: Option<String>,

    /// Redis URL for cluster mode (`redis+cluster://host:port,…` for a Redis
    /// Cluster); absent, and no cluster or sentinels: the embedded broker.
    #[arg(long, env = "WSGATE_REDIS_URL")]
    pub redis_url: Option<String>,

    /// Redis Cluster and Sentinel.
    #[command(flatten)]
    pub redis: RedisArgs,

    /// A room's history expires after this many seconds without a message (1 s to 100
    /// years; the default namespace's, see `--config`).
    #[arg(long, env = "WSGATE_HISTORY_TTL_S", default_value_t = 604_800)]
    pub history_ttl_s: u64,

    /// Prefix of every Redis key and channel (two clusters can share one Redis).
    #[arg(long, env = "WSGATE_REDIS_PREFIX", default_value = "wsgate")]
    pub redis_prefix: String,

    /// Client tokens: their keys and required claims; none configured: development
    /// mode (query-parameter identity).
    #[command(flatten)]
    pub jwt: JwtArgs,

    /// Back-end hooks: connect, join and publish calls to the product's back end.
    #[command(flatten)]
    pub hooks: HookArgs,

    /// API key for the back-end HTTP API.
    #[arg(long, env = "WSGATE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Allow the back-end API without an API key (development only; warned at start).
    #[arg(long, env = "WSGATE_INSECURE_API", default_value_t = false)]
    pub insecure_api: bool,

    /// Notifications kept per user (the newest).
    #[arg(long, env = "WSGATE_NOTIFICATIONS_LEN", default_value_t = 200)]
    pub notifications_len: usize,

    /// How long a notification is kept (e.g. `30d`, `12h`).
    #[arg(long, env = "WSGATE_NOTIFICATIONS_TTL", default_value = "30d", value_parser = humantime::parse_duration)]
    pub notifications_ttl: std::time::Duration,

    /// How long `POST /api/publish` remembers an `idempotency_key` (a retry within it
    /// publishes nothing and gets the first answer).
    #[arg(long, env = "WSGATE_IDEMPOTENCY_TTL", default_value = "24h", value_parser = humantime::parse_duration)]
    pub idempotency_ttl: std::time::Duration,

    /// How long a user's rooms and last ids are kept after their session closes.
    #[arg(long, env = "WSGATE_SESSION_STATE_TTL", default_value = "600s", value_parser = humantime::parse_duration)]
    pub session_state_ttl: std::time::Duration,

    /// Proxies (IPs or CIDRs, comma list) whose `X-Real-IP`/`X-Forwarded-For` name the client.
    #[arg(long, env = "WSGATE_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<crate::proxy::Net>,

    /// Origins allowed on `/ws` and `/events` (comma list); absent: any.
    #[arg(long, env = "WSGATE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Option<Vec<String>>,

    /// Rooms whose names start with this prefix are private: only a token's `rooms` claim grants them.
    #[arg(long, env = "WSGATE_PRIVATE_ROOM_PREFIX", default_value = "private:")]
    pub private_room_prefix: String,

    /// Most WebSocket connections this node holds; more are refused with 503 before the upgrade.
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// WebSocket + SSE sessions one client address may hold (0: no limit). Behind a
    /// proxy every client shares the proxy's address unless `--trusted-proxies` names it.
    #[arg(long, env = "WSGATE_MAX_CONNECTIONS_PER_IP", default_value_t = 0)]
    pub max_connections_per_ip: usize,

    /// A connection must deliver complete request headers within this many milliseconds
    /// of being accepted (and an API request its body within as long after them).
    #[arg(long, env = "WSGATE_HANDSHAKE_TIMEOUT_MS", default_value_t = 5_000)]
    pub handshake_timeout_ms: u64,

    /// An HTTP connection kept alive after a request is closed when its next request's
    /// headers are not complete this many milliseconds later (idle included).
    #[arg(long, env = "WSGATE_KEEPALIVE_TIMEOUT_MS", default_value_t = 60_000)]
    pub keepalive_timeout_ms: u64,

    /// HTTP connections that are not sessions, at most: waiting for their request
    /// headers, serving plain requests, or idle between kept-alive requests; a
    /// connection beyond this is closed at once. WebSocket and SSE sessions do not
    /// count (`--max-connections` bounds them).
    #[arg(long, env = "WSGATE_MAX_HANDSHAKES", default_value_t = 1024)]
    pub max_handshakes: usize,

    /// Kernel send buffer of each accepted socket, in bytes (0: the kernel's autotuning,
    /// which can grow to several MiB per socket). Bounds what a client that stops
    /// reading can hold in the kernel before its queue fills and it is closed with 1013.
    #[arg(long, env = "WSGATE_SOCKET_SEND_BUFFER", default_value_t = 65_536)]
    pub socket_send_buffer: usize,

    /// Serve a WebSocket echo endpoint at this path (e.g. `/echo`): text and binary
    /// messages come back unchanged, through the same handshake checks, limits, reader,
    /// writer and close handling as `/ws`. A conformance and diagnostics aid; off by default.
    #[arg(long, env = "WSGATE_ECHO_PATH")]
    pub echo_path: Option<String>,

    /// Largest message `content`, in bytes; a WebSocket message over this plus 4 KiB closes with 1009.
    #[arg(long, env = "WSGATE_MAX_MESSAGE_BYTES", default_value_t = 65_536)]
    pub max_message_bytes: usize,

    /// Frames queued per connection before it is closed as a slow consumer (1013).
    #[arg(long, env = "WSGATE_SEND_QUEUE", default_value_t = 256)]
    pub send_queue: usize,

    /// Bytes of frames one connection may hold (queued, or taken by its writer and not
    /// yet written) before it is closed as a slow consumer (1013). A join's replay is
    /// bounded by half of it.
    #[arg(long, env = "WSGATE_SEND_QUEUE_BYTES", default_value_t = 1 << 20)]
    pub send_queue_bytes: usize,

    /// A write to a client (a burst of frames, a ping) that does not complete within
    /// this many milliseconds closes the connection as a slow consumer (1013).
    #[arg(long, env = "WSGATE_WRITE_TIMEOUT_MS", default_value_t = 10_000)]
    pub write_timeout_ms: u64,

    /// Most members a `joined` lists (`members_more` says when there are more).
    #[arg(long, env = "WSGATE_JOINED_MEMBERS", default_value_t = 100)]
    pub joined_members: usize,

    /// Most rooms with members on this node; a join of one more room gets
    /// `too_many_rooms`.
    #[arg(long, env = "WSGATE_MAX_ROOMS", default_value_t = 100_000)]
    pub max_rooms: usize,

    /// Interval of protocol pings; a peer silent for two intervals is closed.
    #[arg(long, env = "WSGATE_HEARTBEAT_MS", default_value_t = 25_000)]
    pub heartbeat_ms: u64,

    /// Messages kept per room's history.
    #[arg(long, env = "WSGATE_HISTORY_LEN", default_value_t = 1000)]
    pub history_len: usize,

    /// Rooms one connection may be in at once.
    #[arg(long, env = "WSGATE_MAX_ROOMS_PER_CONNECTION", default_value_t = 64)]
    pub max_rooms_per_connection: usize,

    /// Frames per second one connection may send (burst: twice as many); `ping` is free.
    #[arg(long, env = "WSGATE_RATE_LIMIT", default_value_t = 20.0)]
    pub rate_limit: f64,

    /// How long a graceful shutdown may take to drain sessions.
    #[arg(long, env = "WSGATE_SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
    pub shutdown_timeout_ms: u64,

    /// A draining node closes its sessions (1001) one by one, evenly over this many
    /// milliseconds (faster when it has few: at least 100 a second; at most half the
    /// shutdown timeout), so their reconnections do not reach the other nodes all at
    /// once (0: all at once).
    #[arg(long, env = "WSGATE_DRAIN_SPREAD_MS", default_value_t = 5000)]
    pub drain_spread_ms: u64,

    /// Each session closed by a drain first gets `reconnect` with a delay drawn
    /// uniformly from 0 to this many milliseconds.
    #[arg(long, env = "WSGATE_RECONNECT_WINDOW_MS", default_value_t = 1000)]
    pub reconnect_window_ms: u64,

    /// Where the `reconnect` hint sends clients (a `ws://` or `wss://` URL, e.g. the
    /// load balancer's); unset: the hint names no URL and clients reuse theirs.
    #[arg(long, env = "WSGATE_RECONNECT_URL")]
    pub reconnect_url: Option<String>,

    /// New sessions (WebSocket and SSE handshakes) this node admits per second, with
    /// bursts of as many; beyond it they get 503 with a jittered `Retry-After`
    /// (0: no limit).
    #[arg(long, env = "WSGATE_ACCEPT_RATE", default_value_t = 0)]
    pub accept_rate: u32,

    /// Log format.
    #[arg(long, env = "WSGATE_LOG_FORMAT", value_enum, default_value = "pretty")]
    pub log_format: LogFormat,

    /// TOML file of per-namespace room options (docs/operations.md); every option a
    /// namespace leaves out takes the flag's value.
    #[arg(long, env = "WSGATE_CONFIG")]
    pub config: Option<std::path::PathBuf>,

    /// Presence of the default namespace: `full` (lists and events), `count` or `off`.
    #[arg(long, env = "WSGATE_PRESENCE", default_value = "full")]
    pub presence: PresenceMode,

    /// A `full` room with more distinct users than this shows only its count, until
    /// it is back to nine tenths of it.
    #[arg(long, env = "WSGATE_PRESENCE_MAX_MEMBERS", default_value_t = 1000)]
    pub presence_max_members: u64,

    /// A closed session's presence is removed this many milliseconds later: a user
    /// who comes back within it is announced neither leaving nor joining (0: at once).
    #[arg(long, env = "WSGATE_PRESENCE_GRACE_MS", default_value_t = 5000)]
    pub presence_grace_ms: u64,

    /// Whether clients may send `message` in the default namespace.
    #[arg(long, env = "WSGATE_CLIENT_PUBLISH", default_value_t = true, action = clap::ArgAction::Set)]
    pub client_publish: bool,

    /// Most distinct users per room of the default namespace (none when unset); a
    /// further user's join gets `room_full`.
    #[arg(long, env = "WSGATE_MAX_MEMBERS")]
    pub max_members: Option<u64>,

    /// Webhooks: events POSTed to a back end.
    #[command(flatten)]
    pub webhooks: WebhookArgs,

    /// Every namespace's options (the flags', and the config file's), made by
    /// [`Config::load`].
    #[arg(skip)]
    pub namespaces: Arc<Namespaces>,
}

impl Config {
    /// The node id, made up when none was configured.
    pub fn resolved_node_id(&self) -> String {
        self.node_id
            .clone()
            .unwrap_or_else(|| format!("gw-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]))
    }

    /// Whether `origin` (an `Origin` header) may open `/ws` or `/events`. Requests
    /// without an `Origin` (not from a browser) are not restricted.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match (&self.allowed_origins, origin) {
            (None, _) | (_, None) => true,
            (Some(list), Some(o)) => list.iter().any(|a| a.trim() == o || a.trim() == "*"),
        }
    }

    /// Largest WebSocket message accepted: the content limit plus room for the JSON envelope.
    pub fn max_frame_bytes(&self) -> usize {
        self.max_message_bytes + 4096
    }

    /// Largest frame the server sends: history and notification pages are cut to fit,
    /// and every other frame is smaller by construction; the writer closes a connection
    /// with 1011 rather than send a larger one.
    pub fn max_out_frame(&self) -> usize {
        (256 << 10).max(2 * self.max_frame_bytes())
    }

    /// Most bytes a join's replay (and a pending join's held-back frames) may take.
    pub fn replay_max_bytes(&self) -> usize {
        self.send_queue_bytes / 2
    }

    /// The send buffer to set on accepted sockets, if any.
    pub fn socket_send_buffer(&self) -> Option<usize> {
        (self.socket_send_buffer > 0).then_some(self.socket_send_buffer)
    }

    /// Checks values that clap cannot.
    ///
    /// # Errors
    /// A message naming the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        if self.send_queue == 0 {
            return Err("--send-queue must be at least 1".into());
        }
        if self.send_queue_bytes < 4096 {
            return Err("--send-queue-bytes must be at least 4096".into());
        }
        if self.write_timeout_ms < 10 {
            return Err("--write-timeout-ms must be at least 10".into());
        }
        if self.max_rooms == 0 {
            return Err("--max-rooms must be at least 1".into());
        }
        self.jwt.validate()?;
        self.hooks.validate()?;
        if self.heartbeat_ms < 10 {
            return Err("--heartbeat-ms must be at least 10".into());
        }
        if self.history_len == 0 {
            return Err("--history-len must be at least 1".into());
        }
        if self.max_rooms_per_connection == 0 {
            return Err("--max-rooms-per-connection must be at least 1".into());
        }
        if !(self.rate_limit > 0.0 && self.rate_limit.is_finite()) {
            return Err("--rate-limit must be a positive number".into());
        }
        if self.max_message_bytes == 0 || self.max_message_bytes > 16 << 20 {
            return Err("--max-message-bytes must be between 1 and 16777216".into());
        }
        if let Some(id) = &self.node_id {
            if !wsgate_protocol::names::valid_epoch(id) {
                return Err("--node-id must be 1-32 characters of [A-Za-z0-9_-]".into());
            }
        }
        self.redis_topology()?;
        self.webhooks.validate()?;
        if self.api_key.as_deref().is_some_and(str::is_empty) {
            return Err("--api-key must not be empty (leave it unset to disable the API)".into());
        }
        if self.notifications_len == 0 {
            return Err("--notifications-len must be at least 1".into());
        }
        if self.notifications_ttl.is_zero() || self.session_state_ttl.is_zero() {
            return Err("--notifications-ttl and --session-state-ttl must be positive".into());
        }
        if self.idempotency_ttl < std::time::Duration::from_secs(1) {
            return Err("--idempotency-ttl must be at least 1s".into());
        }
        if self.handshake_timeout_ms < 10 {
            return Err("--handshake-timeout-ms must be at least 10".into());
        }
        if self.socket_send_buffer > 0 && self.socket_send_buffer < 4096 {
            return Err("--socket-send-buffer must be 0 (kernel default) or at least 4096".into());
        }
        if self.keepalive_timeout_ms < 10 {
            return Err("--keepalive-timeout-ms must be at least 10".into());
        }
        if self.max_handshakes == 0 {
            return Err("--max-handshakes must be at least 1".into());
        }
        if let Some(p) = &self.echo_path {
            let reserved = ["/ws", "/events", "/healthz", "/readyz", "/metrics"];
            if !p.starts_with('/')
                || p.len() < 2
                || reserved.contains(&p.as_str())
                || p.starts_with("/api/")
            {
                return Err(
                    "--echo-path must be a path such as /echo that no other route uses".into(),
                );
            }
        }
        if self.redis_prefix.is_empty() {
            return Err("--redis-prefix must not be empty".into());
        }
        if self.presence_max_members == 0 {
            return Err("--presence-max-members must be at least 1".into());
        }
        if self.max_members == Some(0) {
            return Err("--max-members must be at least 1 (leave it unset for no limit)".into());
        }
        if self.history_len > crate::namespaces::MAX_HISTORY_LEN {
            return Err("--history-len must be at most 1000000".into());
        }
        if self.history_ttl_s == 0 || self.history_ttl_s > crate::namespaces::MAX_HISTORY_TTL_S {
            return Err(format!(
                "--history-ttl-s must be between 1 and {} (100 years)",
                crate::namespaces::MAX_HISTORY_TTL_S
            ));
        }
        if self.accept_rate > MAX_ACCEPT_RATE {
            return Err(format!(
                "--accept-rate must be at most {MAX_ACCEPT_RATE} a second (0: no limit)"
            ));
        }
        if self.reconnect_window_ms > 600_000 {
            return Err("--reconnect-window-ms must be at most 600000 (ten minutes)".into());
        }
        if let Some(url) = &self.reconnect_url {
            let ok = (url.starts_with("ws://") || url.starts_with("wss://"))
                && url.len() <= 2048
                && url.parse::<http::Uri>().is_ok();
            if !ok {
                return Err("--reconnect-url must be a ws:// or wss:// URL".into());
            }
        }
        if self.presence_grace_ms > MAX_PRESENCE_GRACE_MS {
            return Err(format!(
                "--presence-grace-ms must be at most {MAX_PRESENCE_GRACE_MS} (one hour; 0 disables it)"
            ));
        }
        Ok(())
    }

    /// The drain spread in effect: `--drain-spread-ms`, at most half the shutdown
    /// timeout (the other half is for the last sessions' queues and the grace).
    pub fn drain_spread(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.drain_spread_ms.min(self.shutdown_timeout_ms / 2))
    }

    /// Checks the flags ([`Config::validate`]) and reads the config file into
    /// [`Config::namespaces`].
    ///
    /// # Errors
    /// A message naming the bad flag, file or key.
    pub fn load(mut self) -> Result<Self, String> {
        self.validate()?;
        self.webhooks.recording = self.webhooks.selected();
        self.namespaces = Arc::new(Namespaces::load(
            self.default_namespace(),
            &self.private_room_prefix,
            self.config.as_deref(),
        )?);
        Ok(self)
    }

    /// Where Redis is; `None`: the embedded broker.
    ///
    /// # Errors
    /// A message naming the flag ([`RedisArgs::topology`]).
    pub fn redis_topology(&self) -> Result<Option<wsgate_broker::RedisTopology>, String> {
        self.redis
            .topology(self.redis_url.as_deref(), &self.redis_prefix)
    }

    /// The default namespace's options: the flags'.
    pub fn default_namespace(&self) -> NamespaceOptions {
        NamespaceOptions {
            presence: self.presence,
            presence_max_members: self.presence_max_members,
            history_len: self.history_len,
            history_ttl_s: self.history_ttl_s,
            client_publish: self.client_publish,
            private: false,
            max_members: self.max_members,
            webhook_client_messages: self.webhooks.webhook_client_messages,
        }
    }

    /// A configuration with every default, listening on `listen` (for tests).
    pub fn for_tests(listen: SocketAddr) -> Self {
        let mut c = Config::parse_from(["wsgate"]);
        c.listen = listen;
        c.load()
            .unwrap_or_else(|e| panic!("default configuration: {e}"))
    }
}
