//! The echo endpoint (`--echo-path`): every text and binary message comes back
//! unchanged. It exists so that conformance suites (Autobahn) and diagnostics exercise
//! the gateway's own WebSocket path: it is reached through the same handshake checks
//! and `WebSocketConfig` as `/ws`, reads with the same close-code mapping, writes through
//! the same bounded queue and writer task (one flush per burst, heartbeat pings), and
//! closes the same way. Only the frames' meaning differs: no JSON, no rooms, no auth.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{Sink, Stream, StreamExt};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::Instrument;
use wsgate_protocol::CloseCode;

use crate::lifecycle::Lifetime;
use crate::node::Node;
use crate::queue::Outbound;
use crate::slot::Slot;
use crate::socket::{await_close_reply, end_on_read_error};
use crate::writer::{run_writer, WriterParams};

/// Serves one upgraded echo connection until it ends.
///
/// Unlike a protocol session, whose fan-out must never wait for one slow reader, an
/// echo connection has a single producer (its own peer): when the queue is full the
/// reader waits for room instead of closing with 1013, so a peer that sends faster
/// than it reads is slowed down by TCP, not disconnected.
pub async fn run<S>(node: Arc<Node>, ws: S, slot: Slot)
where
    S: Stream<Item = Result<Message, WsError>>
        + Sink<Message, Error = WsError>
        + Unpin
        + Send
        + 'static,
{
    let span = tracing::debug_span!("echo");
    async move {
        let key = uuid::Uuid::new_v4().to_string();
        let lifetime = Lifetime::open(&node, slot, &key, None);
        let (queue, control) = (
            lifetime.handle.queue.clone(),
            lifetime.handle.control.clone(),
        );
        let (sink, mut stream) = ws.split();
        let epoch = Instant::now();
        let last_seen = Arc::new(AtomicU64::new(0));
        let acked_ping = Arc::new(AtomicU64::new(0));
        let writer = node.tracker.spawn(
            run_writer(
                sink,
                WriterParams {
                    queue: queue.clone(),
                    control: control.clone(),
                    heartbeat: Duration::from_millis(node.config.heartbeat_ms),
                    last_seen: last_seen.clone(),
                    epoch,
                    expiry: None,
                    drain_timeout: Duration::from_millis(node.config.shutdown_timeout_ms),
                    write_timeout: Duration::from_millis(node.config.write_timeout_ms),
                    max_out_frame: node.config.max_out_frame(),
                    acked_ping: acked_ping.clone(),
                },
            )
            // A debug-level child span: at info it is disabled and costs the writer,
            // which is polled once per burst, nothing.
            .instrument(tracing::debug_span!("writer")),
        );
        let token = control.token.clone();
        loop {
            let msg = tokio::select! {
                biased;
                _ = token.cancelled() => break,
                m = stream.next() => m,
            };
            last_seen.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
            let item = match msg {
                Some(Ok(Message::Text(t))) => Outbound::Frame(t),
                Some(Ok(Message::Binary(b))) => Outbound::Binary(b),
                Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                Some(Ok(Message::Close(_))) | None => {
                    control.close(CloseCode::Normal);
                    break;
                }
                Some(Err(e)) => {
                    end_on_read_error(&control, &e);
                    break;
                }
            };
            tokio::select! {
                biased;
                _ = token.cancelled() => break,
                _ = queue.room_for(item.len()) => {}
            }
            if queue.push(item).is_err() {
                // Closed: the writer has ended the connection.
                break;
            }
        }
        let (code, _) = writer.await.unwrap_or((1011, Vec::new()));
        await_close_reply(&mut stream, code).await;
        lifetime.close(Some(code));
        tracing::debug!(code, "echo closed");
    }
    .instrument(span)
    .await
}
