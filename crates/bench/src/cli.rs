//! Command-line interface: the scenarios and their flags.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::adapter::Target;
use crate::stamp::parse_duration as duration;

mod idle;
pub(crate) use idle::{IdleArgs, WorkerArgs};

/// wsgate-bench: a load generator for wsgate (and for a Socket.IO 4 peer).
#[derive(Debug, Parser)]
#[command(
    name = "wsgate-bench",
    version,
    about = "Load generator for wsgate: fan-out latency and throughput, idle memory per connection, \
             rate sweeps, many small rooms, connection churn, node failures and rolling restarts",
    long_about = "Load generator for wsgate (and, with --target socketio, for a Socket.IO 4 server).\n\n\
Every scenario connects real WebSocket clients to the given --url(s), drives a workload, and \
prints a table (or, with --json, one JSON object holding every figure, for scripts). Every \
report carries the command line, start/finish timestamps and the bench's own CPU seconds; \
give the gateway's PID(s) with --pid to get their CPU seconds, CPU per delivery and RSS.\n\n\
Messages carry their send time in `content` (\"b:<run>:<publisher>:<seq>:<ns>:xxxx…\"), so \
latency is measured end to end in this process, and (publisher, seq) gives lost, duplicated and \
out-of-order deliveries per subscriber.\n\n\
Rate limit: the gateway allows --rate-limit frames/s per connection (default 20, burst 40). \
Publishers faster than that need the gateway started with a higher --rate-limit (e.g. \
`wsgate --rate-limit 100000`); the bench stops with a clear error when the gateway answers \
`rate_limited`. For large rooms also raise the gateway's --max-connections and, for bursts, \
--send-queue.\n\n\
The bench and the gateway share this machine's cores: compare the bench's CPU with the \
gateway's before trusting a throughput ceiling. Exit status: 0 on a completed run, 1 when the \
run failed (could not connect, the server refused or closed, rate limited, …).",
    after_help = "Run `wsgate-bench <SCENARIO> --help` for what each scenario measures and reports."
)]
pub(crate) struct Cli {
    /// Print one JSON object with every figure (not the table; no progress bar).
    #[arg(long, global = true)]
    pub json: bool,

    /// Runtime worker threads: 1, one current-thread runtime; N > 1, N workers (2, the
    /// default, delivered more per CPU second than 1 on this 2-core machine).
    #[arg(long, global = true, default_value_t = 2, value_name = "N")]
    pub threads: usize,

    /// Never show a progress bar (it is shown only on a terminal anyway).
    #[arg(long, global = true)]
    pub no_progress: bool,

    /// The scenario.
    #[command(subcommand)]
    pub cmd: Command,
}

/// The scenarios.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// One room, S subscribers, P publishers at a fixed open-loop rate (or one burst):
    /// deliveries/s, end-to-end latency percentiles, loss, duplicates, order, CPU per
    /// delivery.
    #[command(
        long_about = "One room, S subscribers, P publishers at a fixed open-loop rate.\n\n\
Subscribers (--subscribers) connect round-robin over the --url(s) and join --room; publishers \
(--publishers) connect the same way, join, and send --rate messages/s in aggregate, scheduled by \
absolute time (open loop: a slow server does not slow the schedule down and hide its delay; if \
the publisher itself falls behind, its lag is reported and flagged: most messages over 10 ms \
late, or one over 250 ms). Traffic during --warmup is \
not measured; then --duration is measured; then the bench waits up to --drain for deliveries in \
flight.\n\n\
Reports: offered and achieved send rate, deliveries/s (to subscribers only: a publisher also \
gets its own messages, those are not counted), latency p50/p90/p99/p99.9/max (send stamp to \
receipt), expected vs received deliveries, lost (not received by the end of --drain), \
duplicated and out-of-order deliveries, \
subscribers closed and the close codes seen (1013 = the gateway dropped a slow consumer), the \
publishers' schedule lag, and for each --pid the CPU seconds used in the measured window \
(measured phase plus drain), CPU µs per delivery and RSS; the bench's own CPU likewise.\n\n\
With --burst N the publishers instead send N messages as fast as possible (batched writes) \
after the warm-up; the report adds the time until every subscriber had all N.\n\n\
Example: wsgate --rate-limit 100000 --max-connections 20000 --send-queue 1024 & \n\
         wsgate-bench fanout --url ws://127.0.0.1:8080 --subscribers 1000 --rate 200 --duration 10s"
    )]
    Fanout(FanoutArgs),

    /// N idle connections, each welcomed and joined to a room: the gateway's RSS and the
    /// kernel's slab growth per connection, connect rate, drops during the hold.
    #[command(
        long_about = "N idle connections held open: memory per connection.\n\n\
Opens --connections WebSocket connections (each with its own user id, welcomed and joined to \
one of --rooms rooms), spread over source addresses 127.0.0.1..127.0.0.K (--sources; each gives \
about 28,000 ephemeral ports) and over worker processes (--per-process connections each, at most \
~15,000 under a 20,000 open-file limit). Reads the gateway's VmRSS (--pid) and the kernel's Slab \
(/proc/meminfo) before connecting, after all are joined (and --settle), and after --hold; the \
clients keep reading, so they answer the gateway's heartbeat pings.\n\n\
Reports: connections opened and failed (by kind), connect rate, RSS growth per connection (KiB), \
Slab growth per connection (KiB, kernel socket buffers, reported separately), connections dropped \
during the hold (with close codes), CPU of the gateway and of the bench (workers included).\n\n\
Through a proxy on this machine (nginx in front of nodes), give --source-port-base: a port \
taken by bind() to port 0 is skipped by every connect() of the machine, so tens of thousands of \
clients bound to random ports leave the proxy too few ports for its upstream connections.\n\n\
Example: wsgate-bench idle --url ws://127.0.0.1:8080 --pid $(pidof wsgate) --connections 19000 --hold 10m"
    )]
    Idle(IdleArgs),

    /// Fan-out at increasing rates: the highest rate held with p99 under --p99-max-ms and
    /// nothing lost, with a table of every step.
    #[command(
        long_about = "Fan-out at increasing rates on the same connections.\n\n\
Connects like `fanout` once, then runs one fan-out step per rate: --rates a,b,c or \
--start/--step/--max (messages/s, aggregate). A step is held when every delivery arrived (after \
--drain), nothing was duplicated, no subscriber was closed, the publishers kept their schedule \
and p99 latency ≤ --p99-max-ms. The sweep stops at the first step not held (unless \
--keep-going).\n\n\
Reports: every step (offered rate, deliveries/s, p50/p99/p99.9/max, lost, gateway and bench CPU) \
and the highest rate held with its deliveries/s."
    )]
    Sweep(SweepArgs),

    /// M rooms × K members, every member publishing at a per-member rate: deliveries/s,
    /// latency percentiles, loss.
    #[command(long_about = "Chat-like traffic over many small rooms.\n\n\
--rooms M rooms of --members K connections each; every member publishes --member-rate messages/s \
(open loop, staggered) into its room and receives what its room-mates send. A member's own \
messages come back to it too; they are not counted as deliveries.\n\n\
Reports: messages sent, deliveries/s, latency p50/p90/p99/p99.9/max, expected vs received, lost, \
duplicated, out of order, closes, and CPU per delivery for each --pid.")]
    Rooms(RoomsArgs),

    /// C concurrent loops of connect → welcome → join → close: connects/s, handshake
    /// latency, failures by kind.
    #[command(long_about = "Connection churn.\n\n\
--concurrency loops run for --duration, each repeating: open TCP, WebSocket upgrade, wait for \
welcome, join a room, close. Reports connects/s (completed cycles), the handshake latency (TCP \
connect to welcome) and the join latency percentiles, failures by kind (tcp, http:503, timeout, …), \
and CPU for each --pid.")]
    Churn(ChurnArgs),

    /// Kill a node under load: time until its clients are back and resumed, messages
    /// recovered vs lost, and the survivors' CPU.
    #[command(long_about = "A node dies under load.\n\n\
--clients clients spread over the --url(s) join --room; a publisher (on the first URL that is not \
the killed node's, or --publish-url) sends --rate messages/s. After --kill-after the bench sends \
SIGKILL to --kill-pid; the clients that were on --kill-url reconnect (to --reconnect-url, or the \
other URLs round-robin) with exponential backoff and resume with join {since, epoch}.\n\n\
Reports: clients affected, time until all reconnected (welcome), time until all resumed (joined), \
how many resumed with recovered=true, messages recovered by replay, lost and duplicated per client \
over the whole run, and the survivors' CPU during the storm (--pid).\n\n\
The node must run with a Redis broker (cluster mode) for messages to survive it.")]
    Storm(StormArgs),

    /// N distinct users join one room, C in flight, and stay: formation time, joins/s,
    /// failures, CPU per join, RSS per joined connection, Redis commands per join, and
    /// a small room's publish latency during the storm.
    #[command(
        long_about = "A room forms: --users distinct users (b<i + --user-offset>) \
connect round-robin over the --url(s), --concurrency at a time, join --room and stay. A probe \
(--probe-rate msgs/s) publishes into a small room of its own.\n\n\
Reports: formation time, joins/s, failures by reason, connect+join latency, the largest \
members_count, RSS per joined connection and CPU µs per join over the --pid(s), Redis commands \
per join (--redis-url), and the probe's latency and losses. Several processes with distinct \
--user-offset values build a bigger room (~19,000 connections each; --sources spreads them).\n\n\
Example: wsgate-bench build --url ws://127.0.0.1:8080 --pid $(pidof wsgate) --users 10000"
    )]
    Build(BuildArgs),

    Deploy(crate::deploy::DeployArgs),

    /// Internal: one worker process of `idle` (started by the bench itself).
    #[command(hide = true)]
    IdleWorker(WorkerArgs),
}

/// Where to connect and what to watch.
#[derive(Debug, Args, Clone)]
pub(crate) struct Common {
    /// Gateway URL(s): ws://HOST:PORT, optionally with a path (default path /ws for
    /// wsgate, /socket.io/?EIO=4&transport=websocket for socketio). Repeat or
    /// comma-separate to spread connections round-robin over nodes (or nginx).
    #[arg(long, value_delimiter = ',', default_value = "ws://127.0.0.1:8080")]
    pub url: Vec<String>,

    /// Wire format: wsgate, or socketio (Socket.IO 4 over WebSocket, the peer server).
    #[arg(long, value_enum, default_value = "wsgate")]
    pub target: Target,

    /// PID of a gateway process to measure (CPU seconds in the window, CPU per
    /// delivery, RSS). Repeatable.
    #[arg(long = "pid", value_name = "PID")]
    pub pids: Vec<u32>,

    /// Bind connections to source addresses 127.0.0.1..127.0.0.K (each gives ~28,000
    /// ephemeral ports). Default: let the kernel choose (idle: enough for --connections).
    #[arg(long, value_name = "K")]
    pub sources: Option<u8>,

    /// Connection handshakes in flight at once.
    #[arg(long, default_value_t = 200, value_name = "N")]
    pub connect_concurrency: usize,

    /// Give up on one connection (TCP + upgrade + welcome + join) after this long.
    #[arg(long, default_value = "15s", value_parser = duration, value_name = "DURATION")]
    pub connect_timeout: Duration,
}

/// The room, its subscribers and publishers.
#[derive(Debug, Args, Clone)]
pub(crate) struct Load {
    /// Subscribers in the room.
    #[arg(long, short = 's', default_value_t = 100)]
    pub subscribers: usize,

    /// Publishing connections (the rate is split evenly among them; each also joins the
    /// room, which the gateway requires to publish).
    #[arg(long, short = 'p', default_value_t = 1)]
    pub publishers: usize,

    /// Length of the measured window.
    #[arg(long, short = 'd', default_value = "10s", value_parser = duration)]
    pub duration: Duration,

    /// Traffic before the measured window, not counted (same rate).
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub warmup: Duration,

    /// After publishing, wait at most this long for deliveries still in flight.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub drain: Duration,

    /// Size of each message's content, bytes (at least the stamp, ~40 bytes).
    #[arg(long, default_value_t = 64)]
    pub size: usize,

    /// The room.
    #[arg(long, default_value = "bench")]
    pub room: String,

    /// Give every subscriber its own user id. By default all subscribers share one user
    /// id, because with distinct users every join is announced (presence) to everyone
    /// already in the room: quadratic in the room size.
    #[arg(long)]
    pub distinct_users: bool,

    /// Subscriber connections polled by one task (0: automatic, about 8 tasks per
    /// runtime thread).
    #[arg(long, default_value_t = 0)]
    pub per_task: usize,
}

/// `fanout`.
#[derive(Debug, Args, Clone)]
pub(crate) struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub load: Load,

    /// Aggregate publish rate, messages/s (each publisher sends rate/publishers). Also
    /// the warm-up rate with --burst.
    #[arg(long, short = 'r', default_value_t = 100.0)]
    pub rate: f64,

    /// Instead of the steady rate, send N messages as fast as possible (batched) after
    /// the warm-up and report the time until all were delivered.
    #[arg(long, value_name = "N")]
    pub burst: Option<u64>,
}

/// `sweep`.
#[derive(Debug, Args, Clone)]
pub(crate) struct SweepArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub load: Load,

    /// The rates to try, messages/s, comma-separated (instead of --start/--step/--max).
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,

    /// First rate, messages/s.
    #[arg(long, default_value_t = 100.0)]
    pub start: f64,

    /// Increment between steps, messages/s.
    #[arg(long, default_value_t = 100.0)]
    pub step: f64,

    /// Last rate, messages/s.
    #[arg(long, default_value_t = 1000.0)]
    pub max: f64,

    /// A step is held only with p99 latency at most this (ms).
    #[arg(long, default_value_t = 50.0)]
    pub p99_max_ms: f64,

    /// Run every step even after one was not held.
    #[arg(long)]
    pub keep_going: bool,

    /// Pause between steps.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub pause: Duration,
}

/// `rooms`.
#[derive(Debug, Args, Clone)]
pub(crate) struct RoomsArgs {
    #[command(flatten)]
    pub common: Common,

    /// Rooms.
    #[arg(long, short = 'm', default_value_t = 100)]
    pub rooms: usize,

    /// Members per room (each one publishes and receives).
    #[arg(long, short = 'k', default_value_t = 10)]
    pub members: usize,

    /// Messages/s each member sends.
    #[arg(long, default_value_t = 1.0)]
    pub member_rate: f64,

    /// Length of the measured window.
    #[arg(long, short = 'd', default_value = "10s", value_parser = duration)]
    pub duration: Duration,

    /// Traffic before the measured window, not counted.
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub warmup: Duration,

    /// After publishing, wait at most this long for deliveries in flight.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub drain: Duration,

    /// Size of each message's content, bytes.
    #[arg(long, default_value_t = 64)]
    pub size: usize,

    /// Instead of the steady rate, every member sends N messages at once after the
    /// warm-up; reports the time until all were delivered and the rates over it.
    #[arg(long, value_name = "N")]
    pub burst: Option<u64>,
}

/// `churn`.
#[derive(Debug, Args, Clone)]
pub(crate) struct ChurnArgs {
    #[command(flatten)]
    pub common: Common,

    /// Concurrent connect/close loops.
    #[arg(long, short = 'c', default_value_t = 50)]
    pub concurrency: usize,

    /// How long to run.
    #[arg(long, short = 'd', default_value = "10s", value_parser = duration)]
    pub duration: Duration,

    /// Room each cycle joins.
    #[arg(long, default_value = "churn")]
    pub room: String,
}

/// `build`.
#[derive(Debug, Args, Clone)]
pub(crate) struct BuildArgs {
    #[command(flatten)]
    pub common: Common,

    /// Distinct users joining the room.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub users: usize,

    /// User ids are b<i + offset>: give concurrent bench processes distinct users.
    #[arg(long, default_value_t = 0)]
    pub user_offset: usize,

    /// The room.
    #[arg(long, default_value = "big")]
    pub room: String,

    /// Connects + joins in flight (default: --connect-concurrency, 200).
    #[arg(long, short = 'c', value_name = "C")]
    pub concurrency: Option<usize>,

    /// Give up on one user's connect + join after this many ms (instead of --connect-timeout).
    #[arg(long, default_value_t = 30_000, value_name = "MS")]
    pub timeout_ms: u64,

    /// The probe's publish rate in a room of its own, messages/s (0: no probe).
    #[arg(long, default_value_t = 20.0)]
    pub probe_rate: f64,

    /// After the last join, wait this long before reading CPU, memory and Redis.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub settle: Duration,

    /// Redis of a cluster: report its commands per join (INFO commandstats).
    #[arg(long)]
    pub redis_url: Option<String>,

    /// Keep the members connected this long after the measurement.
    #[arg(long, default_value = "0s", value_parser = duration)]
    pub hold: Duration,
}

/// `storm`.
#[derive(Debug, Args, Clone)]
pub(crate) struct StormArgs {
    #[command(flatten)]
    pub common: Common,

    /// Clients, spread round-robin over the --url(s).
    #[arg(long, short = 'n', default_value_t = 300)]
    pub clients: usize,

    /// The room every client joins.
    #[arg(long, default_value = "storm")]
    pub room: String,

    /// Publish rate, messages/s (one publisher).
    #[arg(long, short = 'r', default_value_t = 20.0)]
    pub rate: f64,

    /// The URL the publisher connects to (default: the first --url other than
    /// --kill-url).
    #[arg(long)]
    pub publish_url: Option<String>,

    /// PID of the node to kill with SIGKILL.
    #[arg(long)]
    pub kill_pid: u32,

    /// The --url served by the node that is killed (its clients are the affected ones).
    #[arg(long)]
    pub kill_url: String,

    /// Kill the node this long after every client has joined.
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub kill_after: Duration,

    /// Where affected clients reconnect (default: the other --url(s), round-robin).
    #[arg(long)]
    pub reconnect_url: Vec<String>,

    /// First reconnect backoff (doubles per failed attempt, with jitter, up to 2 s).
    #[arg(long, default_value = "50ms", value_parser = duration)]
    pub backoff: Duration,

    /// Keep publishing this long after the kill, then wait for the rest.
    #[arg(long, default_value = "3s", value_parser = duration)]
    pub after: Duration,

    /// Give up waiting for clients to come back after this long.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub recover_timeout: Duration,

    /// After the publisher stops, wait at most this long for deliveries in flight.
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub drain: Duration,
}
