//! The flags of `deploy` (kept with the scenario: `cli` names them in its list).

use clap::Args;

/// The short help of `deploy`.
pub(crate) const ABOUT: &str = "A rolling restart under load: messages lost or duplicated (must \
be 0), time until every client is back, latency during the restart, handshakes/s per node, \
presence churn";

/// The long help of `deploy`.
pub(crate) const LONG_ABOUT: &str = "A rolling restart of a cluster under load, measured.\n\n\
--clients clients connect round-robin over the --url(s) (usually nginx in front of the nodes) as \
users d<i + --user-offset>, client i in room deploy-<i mod --rooms> (keep rooms at most 1000 \
members: presence in full mode), and stay. Once all have joined, a back end publishes --rate \
messages/s in total, round-robin into the rooms, through POST <--api-url>/api/publish with \
--api-key, data {n, t} (t: the send time, so latency is measured from the back end's send to \
the client's receipt); every accepted id (200 {\"id\"}) is recorded per room, a 503 is counted as refused. \
After --warmup-s the bench runs --restart-cmd with `sh -c` and waits for it to exit, keeps \
publishing --settle-s more, stops, and waits (at most --timeout-s) until every client has every \
accepted message of its room.\n\n\
Clients behave as a well-made client should: on {\"type\":\"reconnect\",\"delay_ms\":N} and the \
close (1001) they wait exactly N ms, reconnect (to the hint's url, or their own URL) and rejoin \
with join {since, epoch}; a refused connection is retried (HTTP 503: after Retry-After plus a \
random fraction of a second; any other failure: jittered backoff from 100 ms to 5 s).\n\n\
Reports: accepted and refused publishes, lost (accepted ids of its room a client never \
received, summed over clients) and duplicated deliveries (both must be 0), clients that \
reconnected and how often, joins answered recovered=false, resync frames, the time from the \
restart's start until the last client was back (all_back_s), the restart command's duration and \
exit status, latency of room messages (send to receipt) before, during the restart window \
(restart start to end of settle) and overall, the peak new sessions per second on any node \
(--node-metrics: wsgate_connections_total polled every 250 ms from the end of the clients' \
first joins) and presence join/leave events \
seen during the restart (0 when users come back within the presence grace). Fails (exit 1) on \
any loss, duplicate, a client not back, or a restart command that failed.\n\n\
Example: deploy/cluster.sh up 3; wsgate-bench deploy --url ws://127.0.0.1:8080/ws --api-key k \
--clients 1000 --restart-cmd 'deploy/cluster.sh restart' \
--node-metrics http://127.0.0.1:8082,http://127.0.0.1:8083,http://127.0.0.1:8084";

/// `deploy`.
#[derive(Debug, Args, Clone)]
#[command(about = ABOUT, long_about = LONG_ABOUT)]
pub(crate) struct DeployArgs {
    /// Gateway URL(s) the clients connect to, round-robin: ws://HOST:PORT/PATH (usually
    /// nginx). Repeat or comma-separate.
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:8080/ws")]
    pub url: Vec<String>,

    /// Clients (one connection, one user, one room each).
    #[arg(long, short = 'n', default_value_t = 3000)]
    pub clients: usize,

    /// Rooms: client i joins deploy-<i mod ROOMS>.
    #[arg(long, default_value_t = 6)]
    pub rooms: usize,

    /// User ids are d<i + offset>: give concurrent bench processes distinct users.
    #[arg(long, default_value_t = 0)]
    pub user_offset: usize,

    /// First connections (connect + welcome + join) in flight at once.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub connect_concurrency: usize,

    /// Give up on one connection attempt (TCP, upgrade, welcome, joined) after this many
    /// seconds (then it is retried with backoff).
    #[arg(long, default_value_t = 15.0, value_name = "S")]
    pub connect_timeout_s: f64,

    /// Bind client i to source address 127.0.0.<1 + i mod K> (nginx hashes clients over
    /// the nodes by address: spreads them). Default: let the kernel choose.
    #[arg(long, value_name = "K")]
    pub sources: Option<u8>,

    /// Messages/s published in total, round-robin over the rooms.
    #[arg(long, short = 'r', default_value_t = 50.0)]
    pub rate: f64,

    /// Base URL of the HTTP API the messages are published through.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub api_url: String,

    /// The API key (sent as Authorization: Bearer KEY).
    #[arg(long)]
    pub api_key: Option<String>,

    /// The restart, run with `sh -c` once every client joined and --warmup-s passed (its
    /// output goes to stderr). A non-zero exit fails the run. Without it, nothing restarts.
    #[arg(long, value_name = "COMMAND")]
    pub restart_cmd: Option<String>,

    /// Publishing before the restart begins, seconds.
    #[arg(long, default_value_t = 2.0, value_name = "S")]
    pub warmup_s: f64,

    /// Publishing after the restart command exited, seconds.
    #[arg(long, default_value_t = 5.0, value_name = "S")]
    pub settle_s: f64,

    /// Waiting bound, seconds: for every client to have joined at the start, and after
    /// publishing stopped, for every client to be back with every accepted message.
    #[arg(long, default_value_t = 60.0, value_name = "S")]
    pub timeout_s: f64,

    /// Each node's base URL (http://HOST:PORT), comma-separated: its /metrics is polled
    /// every 250 ms for wsgate_connections_total (new sessions per second per node).
    #[arg(long, value_delimiter = ',', value_name = "URL")]
    pub node_metrics: Vec<String>,
}
