//! The listener and the node's lifetime: start, accept, shut down gracefully.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify, Semaphore};
use wsgate_broker::{Backend, Channel, RedisSettings, RoomPolicy};

use crate::config::Config;
use crate::node::Node;
use crate::slot::HttpPermit;

/// Capacity of the broker → dispatcher event channel.
const EVENT_QUEUE: usize = 4096;
/// How long a start waits for the JWKS's first fetch.
const JWKS_START_WAIT: Duration = Duration::from_secs(6);

/// A started gateway: its node and the address it listens on.
pub struct Server {
    /// The node.
    pub node: Arc<Node>,
    /// The bound address (useful with port 0).
    pub local_addr: SocketAddr,
    listener: TcpListener,
    /// The webhook delivery task, when `--webhook-url` is set.
    webhooks: Option<crate::webhooks::Handle>,
}

impl Server {
    /// Builds the broker and the node and binds the listener.
    ///
    /// # Errors
    /// A bad configuration or a listener that cannot bind.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        // Loaded again (idempotent): a caller that only parsed the flags still gets
        // the namespaces they and the config file describe.
        let config = config.load().map_err(anyhow::Error::msg)?;
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let node_id = config.resolved_node_id();
        let policy: Arc<dyn RoomPolicy> = config.namespaces.clone();
        let recording = config.webhooks.recording;
        let backend = match config.redis_topology().map_err(anyhow::Error::msg)? {
            None => Backend::memory_recording(policy, events_tx, recording),
            Some(topology) => Backend::redis_recording(
                RedisSettings {
                    topology,
                    prefix: config.redis_prefix.clone(),
                    node_id: node_id.clone(),
                    heartbeat: Duration::from_millis(config.heartbeat_ms),
                    wait_replicas: config.redis.redis_wait_replicas,
                },
                policy,
                events_tx,
                recording,
            )?,
        };
        let auth =
            crate::auth::Authenticator::from_args(&config.jwt).map_err(anyhow::Error::msg)?;
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let node = Node::new(config, node_id, backend, auth);
        // The key set's first fetch, before the address is announced (bounded: a
        // provider that is down does not keep the node from starting).
        let jwks_metrics = crate::auth::jwks::JwksMetrics {
            fetches: node.metrics.jwks_fetches.clone(),
            keys: node.metrics.jwks_keys.clone(),
        };
        node.auth
            .start(node.root.clone(), JWKS_START_WAIT, jwks_metrics)
            .await;
        tokio::spawn(crate::dispatch::run(node.clone(), events_rx));
        if let Err(e) = node.subs.ensure(&Channel::Broadcast).await {
            // Redis down at start: the node serves anyway (not ready), and the broker
            // subscribes the broadcast channel as soon as it connects.
            tracing::warn!(error = %e, "broker not reachable at start; retrying in the background");
        }
        // Registered before the address is announced when the broker answers, so the
        // first joins need not wait for the heartbeat task's first round.
        crate::heartbeat::register(&node).await;
        tokio::spawn(crate::heartbeat::run(node.clone()));
        tokio::spawn(crate::stats_room::run(node.clone()));
        tokio::spawn(crate::presence_retry::run(node.clone()));
        tokio::spawn(crate::presence_count::run(node.clone()));
        tokio::spawn(crate::presence_grace::run(node.clone()));
        let webhooks = crate::webhooks::start(&node);
        Ok(Server {
            node,
            local_addr,
            listener,
            webhooks,
        })
    }

    /// Accepts connections until `shutdown` resolves, then drains every session
    /// (close 1001 after their queues are written, up to the shutdown timeout).
    ///
    /// # Errors
    /// None today; the signature leaves room for fatal listener errors.
    pub async fn serve(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let Server {
            node,
            listener,
            webhooks,
            ..
        } = self;
        let accept = accept_loop(node.clone(), listener);
        tokio::pin!(accept);
        tokio::select! {
            _ = &mut accept => {}
            _ = shutdown => {}
        }
        tracing::info!(active = node.active(), "shutting down: draining sessions");
        // Draining: `/readyz` answers 503 and new handshakes get 503 + Retry-After (a
        // proxy moves on to the next upstream) while every session gets its queued
        // frames and then 1001. The listener stays open until the drain ends, so load
        // balancers see 503s rather than refused connections.
        node.draining.store(true, Ordering::Release);
        let deadline = Duration::from_millis(node.config.shutdown_timeout_ms);
        let started = std::time::Instant::now();
        // Sessions closed one by one, each told when to come back; then the rest.
        // The listener keeps answering meanwhile (503 to new handshakes).
        tokio::select! {
            _ = tokio::time::timeout(deadline, crate::drain::spread(&node)) => {}
            _ = &mut accept => {}
        }
        node.root.cancel();
        node.tracker.close();
        let drained = tokio::select! {
            _ = node.tracker.wait() => true,
            _ = tokio::time::sleep(deadline.saturating_sub(started.elapsed())) => false,
            _ = &mut accept => true,
        };
        if !drained {
            tracing::warn!(
                left = node.tracker.len(),
                "shutdown deadline reached with sessions still open"
            );
        }
        // Closed sessions' presence waits out its grace (their users may be
        // reconnecting to another node now), within the shutdown deadline.
        let grace_end = tokio::time::Instant::now()
            + Duration::from_millis(node.config.presence_grace_ms)
                .min(deadline.saturating_sub(started.elapsed()));
        // The listener keeps answering 503 until the very end: a connection it took
        // and left unanswered would stall a proxy until the process exits.
        let leave = async {
            crate::presence_grace::drain(&node, grace_end).await;
            // Webhook events the drain recorded (and the batch in flight) go out
            // within the deadline: the embedded outbox has no one else to send them.
            if let Some(webhooks) = webhooks {
                let left = deadline.saturating_sub(started.elapsed());
                webhooks.finish(tokio::time::Instant::now() + left).await;
            }
            node.deregistering.cancel();
            if let Err(e) = node.registry.deregister().await {
                tracing::warn!(error = %e, "could not deregister from the cluster");
            }
        };
        tokio::select! {
            _ = leave => {}
            _ = &mut accept => {}
        }
        tracing::info!("shutdown complete");
        Ok(())
    }
}

/// Accepts connections for as long as the node runs, draining included. Each
/// connection is served by hyper; an upgraded one is handed to a session task.
///
/// Until it becomes a session (WebSocket or SSE) a connection holds one of
/// `--max-handshakes` permits (beyond them a new connection is closed at once): while
/// it waits for its first request, serves plain requests, and idles between kept-alive
/// ones. It must complete its first request within `--handshake-timeout-ms` and each
/// later one within `--keepalive-timeout-ms`, or be closed: a socket that sends nothing,
/// trickles its headers, or idles after a request costs a task and a file descriptor
/// for a bounded time only, and there are at most `--max-handshakes` of them.
async fn accept_loop(node: Arc<Node>, listener: TcpListener) {
    let mut backoff = Duration::from_millis(10);
    let handshakes = Arc::new(Semaphore::new(node.config.max_handshakes));
    let deadline = Duration::from_millis(node.config.handshake_timeout_ms);
    let keepalive = Duration::from_millis(node.config.keepalive_timeout_ms);
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => {
                backoff = Duration::from_millis(10);
                x
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, never spin.
                tracing::warn!(error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().try_acquire_owned().map(HttpPermit::new) else {
            node.metrics
                .early_closes
                .get_or_create(&vec![("reason", "too_many_handshakes")])
                .inc();
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        if let Some(bytes) = node.config.socket_send_buffer() {
            // A fixed send buffer turns off the kernel's autotuning, which lets one
            // socket buffer up to several MiB: a client that stops reading would take
            // that much kernel memory before its queue ever filled and it got 1013.
            if let Err(e) = socket2::SockRef::from(&stream).set_send_buffer_size(bytes) {
                tracing::debug!(%peer, error = %e, "cannot set the send buffer size");
            }
        }
        let node = node.clone();
        tokio::spawn(async move {
            let first_request = Arc::new(Notify::new());
            let svc = {
                let node = node.clone();
                let first_request = first_request.clone();
                let permit = permit.clone();
                service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                    first_request.notify_one();
                    // The TCP peer, for the client address behind trusted proxies.
                    req.extensions_mut().insert(peer);
                    // Released by the handler that turns the connection into a session.
                    req.extensions_mut().insert(permit.clone());
                    crate::router::route(node.clone(), req)
                })
            };
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                // Later requests on a kept-alive connection (idle time included); the
                // first request's deadline is the timer below.
                .header_read_timeout(keepalive.max(deadline + Duration::from_millis(250)))
                .max_buf_size(64 * 1024)
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            tokio::pin!(conn);
            let res = tokio::select! {
                r = &mut conn => Some(r),
                _ = first_request.notified() => None,
                _ = tokio::time::sleep(deadline) => {
                    node.metrics
                        .early_closes
                        .get_or_create(&vec![("reason", "handshake_timeout")])
                        .inc();
                    tracing::debug!(%peer, "no complete request in time: closed");
                    return;
                }
            };
            let res = match res {
                Some(r) => r,
                None => conn.await,
            };
            if let Err(e) = res {
                tracing::debug!(%peer, error = %e, "http connection error");
            }
        });
    }
}

/// Raises the open-file soft limit to the hard limit and logs both.
pub fn raise_nofile_limit() {
    match rlimit::getrlimit(rlimit::Resource::NOFILE) {
        Ok((soft, hard)) => match rlimit::increase_nofile_limit(hard) {
            Ok(now) => tracing::info!(soft_before = soft, soft = now, hard, "open-file limit"),
            Err(e) => tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit"),
        },
        Err(e) => tracing::warn!(error = %e, "cannot read the open-file limit"),
    }
}

/// Registers the SIGTERM and SIGINT handlers now and returns a future that resolves
/// on the first of them.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    Ok(async move {
        tokio::select! {
            _ = int.recv() => tracing::info!("SIGINT received"),
            _ = term.recv() => tracing::info!("SIGTERM received"),
        }
    })
}
