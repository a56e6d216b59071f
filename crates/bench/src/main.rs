//! `wsgate-bench`: the load generator of wsgate. See `wsgate-bench --help`.

mod adapter;
mod build;
mod churn;
mod cli;
mod conn;
mod deploy;
mod fanout;
mod fleet;
mod idle;
mod progress;
mod publisher;
mod redis_stats;
mod report;
mod rooms;
mod stamp;
mod stats;
mod storm;
mod sub;
mod sys;
mod target;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};

use clap::Parser;
use serde_json::{json, Value};

use cli::{Cli, Command};

static THREADS: AtomicUsize = AtomicUsize::new(1);

/// Runtime threads in use.
pub(crate) fn threads() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// A run that failed after producing a report worth printing.
#[derive(Debug)]
pub(crate) struct Failed {
    /// The report so far.
    pub report: Value,
    /// Why the run failed.
    pub message: String,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failed {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    stamp::init();
    // Resolved once here: it may run `getconf`, which must not stall the runtime later.
    sys::clk_tck();
    let json_out = cli.json;
    progress::enable(!cli.json && !cli.no_progress && std::io::stderr().is_terminal());
    let threads = cli.threads.max(1);
    THREADS.store(threads, Ordering::Relaxed);
    let (soft, _) = sys::raise_nofile();
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("wsgate-bench: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let meta = report::Meta::start(threads);
    let scenario = match &cli.cmd {
        Command::Fanout(_) => "fanout",
        Command::Idle(_) => "idle",
        Command::Sweep(_) => "sweep",
        Command::IdleWorker(_) => "idle-worker",
        Command::Rooms(_) => "rooms",
        Command::Churn(_) => "churn",
        Command::Storm(_) => "storm",
        Command::Build(_) => "build",
        Command::Deploy(_) => "deploy",
    };
    let result = rt.block_on(async move {
        match cli.cmd {
            Command::Fanout(a) => fanout::fanout(a, meta).await,
            Command::Sweep(a) => fanout::sweep(a, meta).await,
            Command::Idle(a) => idle::idle(a, meta, soft).await,
            Command::IdleWorker(a) => idle::worker(a).await,
            Command::Rooms(a) => rooms::rooms(a, meta).await,
            Command::Churn(a) => churn::churn(a, meta).await,
            Command::Storm(a) => storm::storm(a, meta).await,
            Command::Build(a) => build::build(a, meta).await,
            Command::Deploy(a) => deploy::deploy(a, meta).await,
        }
    });
    // Do not wait for connections still being torn down.
    rt.shutdown_background();
    match result {
        Ok(Value::Null) => ExitCode::SUCCESS,
        Ok(report) => {
            report::emit(&report, json_out);
            ExitCode::SUCCESS
        }
        Err(e) => {
            if let Some(f) = e.downcast_ref::<Failed>() {
                report::emit(&f.report, json_out);
            } else if json_out {
                println!(
                    "{}",
                    json!({"scenario": scenario, "command_line": report::command_line(), "error": format!("{e:#}")})
                );
            }
            eprintln!("wsgate-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
