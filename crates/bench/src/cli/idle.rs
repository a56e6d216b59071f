//! The arguments of `idle` and of its worker processes.

use std::time::Duration;

use clap::Args;

use super::Common;
use crate::stamp::parse_duration as duration;

/// `idle`.
#[derive(Debug, Args, Clone)]
pub(crate) struct IdleArgs {
    #[command(flatten)]
    pub common: Common,

    /// Connections to open.
    #[arg(long, short = 'n', default_value_t = 1000)]
    pub connections: usize,

    /// Rooms the connections are spread over (0: one per 20 connections).
    #[arg(long, default_value_t = 0)]
    pub rooms: usize,

    /// How long to hold them after all joined.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub hold: Duration,

    /// Wait after all joined before reading RSS and Slab (let the gateway settle).
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub settle: Duration,

    /// Connections per worker process (each process stays under its open-file limit).
    #[arg(long, default_value_t = 15000)]
    pub per_process: usize,

    /// Bind connection k to port P + k / K of its source address (K: --sources), so that
    /// every source address uses the same few ports, below the ephemeral range; 0: the
    /// kernel picks. For a proxy on this machine: a port taken by bind() is lost to
    /// every connect() here (see the idle long help). A taken port falls back to 0.
    #[arg(long, default_value_t = 0, value_name = "P")]
    pub source_port_base: u16,
}

/// `idle-worker` (internal).
#[derive(Debug, Args, Clone)]
pub(crate) struct WorkerArgs {
    #[command(flatten)]
    pub common: Common,
    /// First connection index.
    #[arg(long)]
    pub offset: usize,
    /// Connections to open.
    #[arg(long)]
    pub count: usize,
    /// Rooms overall.
    #[arg(long)]
    pub rooms: usize,
    /// See `idle --source-port-base`.
    #[arg(long, default_value_t = 0)]
    pub source_port_base: u16,
}
