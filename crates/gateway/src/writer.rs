//! A session's writer task: drains the send queue into the socket, feeding every
//! queued frame and flushing once per burst, sends heartbeat pings, and writes the
//! close frame when the session ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::{Sink, SinkExt};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use wsgate_protocol::server::stored_room_id;
use wsgate_protocol::{CloseCode, MessageId};

use crate::handle::{Control, ABNORMAL};
use crate::queue::{Outbound, Queue};

/// How long the close frame may take to go out. A slow consumer's close frame sits
/// behind everything already in the socket buffers, so it goes out only once the
/// peer reads again; after this the connection is dropped without it.
const CLOSE_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the writer needs besides the socket.
pub struct WriterParams {
    /// The session's queue.
    pub queue: Arc<Queue>,
    /// Shared end-of-session state.
    pub control: Arc<Control>,
    /// Ping interval; a peer silent for two of them is dropped.
    pub heartbeat: Duration,
    /// Milliseconds since `epoch` when the reader last heard the peer.
    pub last_seen: Arc<AtomicU64>,
    /// The reference point of `last_seen`.
    pub epoch: Instant,
    /// When the session's token expires (closed with 1008 then).
    pub expires_at: Option<SystemTime>,
    /// Deadline for draining the queue at shutdown.
    pub drain_timeout: Duration,
}

/// How the writer ended: the close code sent (1006 when none could be), and the last
/// stored frame id written in each room (for state restore).
pub type WriterOutcome = (u16, Delivered);

/// Room → the id of the last stored frame written to the socket. A short vector: a
/// session is in few rooms, and this is updated per written frame without allocating
/// (except the first time a room shows up).
pub type Delivered = Vec<(String, MessageId)>;

fn track(delivered: &mut Delivered, frame: &Utf8Bytes) {
    if let Some((room, id)) = stored_room_id(frame.as_str()) {
        match delivered.iter_mut().find(|(r, _)| r == room) {
            Some(entry) => entry.1 = id,
            None => delivered.push((room.to_owned(), id)),
        }
    }
}

/// Runs the writer until the session ends. Returns the close code it sent.
pub async fn run_writer<S>(mut sink: S, p: WriterParams) -> WriterOutcome
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    let mut ticker =
        tokio::time::interval_at(tokio::time::Instant::now() + p.heartbeat, p.heartbeat);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let expiry = p.expires_at.map(|at| {
        // Capped: a token valid for centuries must not overflow the timer.
        let left = at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .min(Duration::from_secs(365 * 24 * 3600));
        tokio::time::Instant::now() + left
    });
    let token = p.control.token.clone();
    // Created once: a fresh `cancelled()` future per loop turn costs a lock and a
    // registration with the token on every burst.
    let cancelled = token.cancelled();
    tokio::pin!(cancelled);
    let mut delivered = Delivered::new();
    let mut batch: Vec<Outbound> = Vec::new();
    loop {
        tokio::select! {
            biased;
            _ = &mut cancelled => break,
            more = p.queue.take(&mut batch) => {
                if !more { break }
                let burst = async {
                    for item in batch.drain(..) {
                        feed(&mut sink, item, &mut delivered).await?;
                    }
                    sink.flush().await
                };
                let res = tokio::select! {
                    r = burst => r,
                    _ = &mut cancelled => break,
                };
                if let Err(e) = res {
                    if peer_closed(&e) {
                        // The reader has just taken the peer's close frame (tungstenite
                        // refuses to send after it): the close handshake is under way,
                        // and `finish` flushes tungstenite's reply to it.
                        p.control.close(CloseCode::Normal);
                        break;
                    }
                    tracing::debug!(error = %e, "write failed");
                    // The socket is gone; nothing more can be written.
                    p.control.vanish();
                    p.queue.close();
                    return (ABNORMAL, delivered);
                }
                if batch.capacity() > 64 {
                    batch = Vec::new();
                }
            }
            _ = ticker.tick() => {
                let silent_ms = (p.epoch.elapsed().as_millis() as u64).saturating_sub(p.last_seen.load(Ordering::Relaxed));
                if silent_ms > 2 * p.heartbeat.as_millis() as u64 {
                    tracing::debug!(silent_ms, "heartbeat timeout");
                    // The peer is presumed dead: drop the connection without a close
                    // handshake (the client sees 1006 and reconnects).
                    p.control.vanish();
                    p.queue.close();
                    return (ABNORMAL, delivered);
                }
                let ping = async {
                    sink.feed(Message::Ping(Default::default())).await?;
                    sink.flush().await
                };
                let res = tokio::select! {
                    r = ping => r,
                    _ = &mut cancelled => break,
                };
                if res.is_err() {
                    p.control.vanish();
                    p.queue.close();
                    return (ABNORMAL, delivered);
                }
            }
            _ = sleep_until_opt(expiry) => {
                p.control.close(CloseCode::Policy);
                break;
            }
        }
    }
    drop(batch);
    // Boxed: the close sequence is a large future that an idle session's writer task
    // would otherwise carry all its life.
    let code = Box::pin(finish(sink, p, &mut delivered)).await;
    (code, delivered)
}

/// Whether a write failed because the peer's close frame has been read: tungstenite
/// then refuses new frames and holds its own close reply until the next flush.
fn peer_closed(e: &WsError) -> bool {
    matches!(
        e,
        WsError::Protocol(ProtocolError::SendAfterClosing) | WsError::AlreadyClosed
    )
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

async fn feed<S>(sink: &mut S, item: Outbound, delivered: &mut Delivered) -> Result<(), WsError>
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    match item {
        Outbound::Frame(f) => {
            track(delivered, &f);
            sink.feed(Message::Text(f)).await
        }
        Outbound::Binary(b) => sink.feed(Message::Binary(b)).await,
        Outbound::Batch(frames) => {
            for f in frames {
                track(delivered, &f);
                sink.feed(Message::Text(f)).await?;
            }
            Ok(())
        }
    }
}

/// Writes what the end of the session calls for, then the close frame.
async fn finish<S>(mut sink: S, p: WriterParams, delivered: &mut Delivered) -> u16
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    // Producers are refused from now on; what they queued is written only at shutdown.
    p.queue.close();
    let code = match p.control.code() {
        Some(ABNORMAL) => return ABNORMAL,
        // The peer closed: tungstenite has queued its close reply; flush it.
        Some(c) if c == CloseCode::Normal.code() => {
            let _ = tokio::time::timeout(CLOSE_WRITE_TIMEOUT, sink.flush()).await;
            return c;
        }
        Some(c) => CloseCode::from_u16(c).unwrap_or(CloseCode::Internal),
        None => {
            // Shutdown: drain what is queued, up to the deadline, then 1001.
            let drain = async {
                let mut rest = Vec::new();
                p.queue.take_now(&mut rest);
                for item in rest {
                    feed(&mut sink, item, delivered).await?;
                }
                sink.flush().await
            };
            let _ = tokio::time::timeout(p.drain_timeout, drain).await;
            CloseCode::GoingAway
        }
    };
    let frame = CloseFrame {
        code: WsCloseCode::from(code.code()),
        reason: code.reason().into(),
    };
    let close = async {
        match sink.send(Message::Close(Some(frame))).await {
            // The peer closed first: tungstenite has queued its reply; flush that.
            Err(e) if peer_closed(&e) => return sink.flush().await,
            r => r?,
        }
        sink.close().await
    };
    match tokio::time::timeout(CLOSE_WRITE_TIMEOUT, close).await {
        Ok(_) => code.code(),
        Err(_) => ABNORMAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::protocol::Role;
    use tokio_tungstenite::WebSocketStream;
    use tokio_util::sync::CancellationToken;

    /// A frame queued for the writer just as the reader takes the peer's close frame:
    /// tungstenite refuses to send it, and the peer must still get the close reply
    /// (found by the hostile campaign under load: the reply was lost with the socket).
    #[tokio::test]
    async fn a_frame_racing_the_peers_close_does_not_lose_the_close_reply() {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let server = WebSocketStream::from_raw_socket(a, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(b, Role::Client, None).await;
        let (sink, mut stream) = server.split();
        // The peer closes with a code it may not send: the reply is 1002.
        let bad = CloseFrame {
            code: WsCloseCode::from(2999),
            reason: "".into(),
        };
        client.send(Message::Close(Some(bad))).await.unwrap();
        assert!(matches!(stream.next().await, Some(Ok(Message::Close(_)))));
        // The reader has not told the writer yet; a fan-out frame is waiting.
        let queue = Queue::new(8);
        queue
            .push(Outbound::Frame(Utf8Bytes::from_static("{}")))
            .unwrap();
        let control = Arc::new(Control::new(CancellationToken::new()));
        let params = WriterParams {
            queue,
            control: control.clone(),
            heartbeat: Duration::from_secs(60),
            last_seen: Arc::new(AtomicU64::new(0)),
            epoch: Instant::now(),
            expires_at: None,
            drain_timeout: Duration::from_secs(1),
        };
        let (code, _) = tokio::time::timeout(Duration::from_secs(10), run_writer(sink, params))
            .await
            .expect("the writer ends");
        assert_eq!(code, CloseCode::Normal.code());
        let reply = tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .expect("a frame in time");
        match reply {
            Some(Ok(Message::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1002),
            other => panic!("expected the close reply, got {other:?}"),
        }
    }
}
