//! The `wsgate` binary: parse flags, set up logging, run the node.

use clap::Parser;
use tracing_subscriber::EnvFilter;
use wsgate_gateway::{server, Config, LogFormat, Server};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    let mut filter =
        EnvFilter::try_from_env("WSGATE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if filter.max_level_hint() >= Some(tracing::level_filters::LevelFilter::TRACE) {
        // tungstenite logs every message it reads at trace level: message contents
        // never go to the logs, whatever WSGATE_LOG asks for.
        filter = filter
            .add_directive("tungstenite=debug".parse()?)
            .add_directive("tokio_tungstenite=debug".parse()?);
    }
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => logs.json().init(),
        LogFormat::Pretty => logs.init(),
    }
    let config = match config.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsgate: {e}");
            std::process::exit(2);
        }
    };
    // Key files are read again when the node is built: checked here, a bad one stops
    // the start like a bad flag, with a message naming it.
    if let Err(e) = wsgate_gateway::auth::Authenticator::key_files(&config.jwt) {
        eprintln!("wsgate: {e}");
        std::process::exit(2);
    }
    server::raise_nofile_limit();
    if config.api_key.is_none() && config.insecure_api {
        tracing::warn!("--insecure-api: the back-end HTTP API accepts requests without a key");
    }
    if !config.jwt.tokens_required() && config.hooks.hook_connect_url.is_none() {
        tracing::warn!(
            "no --jwt-secret, --jwt-public-key or --jwks-url: development mode, identities come from ?user_id= and ?username="
        );
    }
    // Listen for SIGTERM/SIGINT before announcing the address: a signal sent as soon
    // as the address line appears must drain the node, not kill it.
    let shutdown = server::shutdown_signal()?;
    let server = Server::bind(config).await?;
    tracing::info!(addr = %server.local_addr, node_id = %server.node.node_id, broker = server.node.broker.kind(), "listening");
    tracing::info!(
        "open http://{}/ in a browser for the demo chat",
        server.local_addr
    );
    // One machine-readable line on stdout, for scripts and tests that use port 0.
    println!("wsgate listening on {}", server.local_addr);
    server.serve(shutdown).await
}
