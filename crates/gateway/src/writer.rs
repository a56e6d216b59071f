//! A session's writer task: drains the send queue into the socket, feeding every
//! queued frame and flushing once per burst, sends heartbeat pings, and writes the
//! close frame when the session ends.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{FutureExt, Sink, SinkExt};
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use wsgate_protocol::server::stored_room_id;
use wsgate_protocol::{CloseCode, MessageId};

use crate::handle::{Control, ABNORMAL};
use crate::queue::{Outbound, Queue};

mod burst;
use burst::Burst;
pub mod expiry;
use expiry::{Due, Expiry, ExpiryTimer};

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
    /// When the session's token expires (`refresh_needed` ahead of it, closed with
    /// 1008 at it); moved by a `refresh`.
    pub expiry: Option<Arc<Expiry>>,
    /// Deadline for draining the queue at shutdown.
    pub drain_timeout: Duration,
    /// A write (a burst, a ping) that takes longer closes the session as a slow
    /// consumer.
    pub write_timeout: Duration,
    /// Largest frame written; a larger one closes the session with 1011.
    pub max_out_frame: usize,
    /// The sequence number of the newest ping the peer answered (the reader records
    /// it): everything written before that ping has been read by the peer.
    pub acked_ping: Arc<AtomicU64>,
}

/// How the writer ended: the close code sent (1006 when none could be), and the last
/// stored frame id delivered in each room (for state restore): everything written when
/// the session ended cleanly; after an abnormal end (the peer vanished, stopped
/// reading, or the writer failed) only what was written before the last ping the peer
/// answered, since frames still in the socket buffers were lost with it.
pub type WriterOutcome = (u16, Delivered);

/// Pings whose answer is awaited, with what had been written when each was sent.
const PING_SNAPSHOTS: usize = 4;

/// Room → the id of the last stored frame written to the socket. A short vector: a
/// session is in few rooms, and this is updated per written frame without allocating
/// (except the first time a room shows up).
pub type Delivered = Vec<(String, MessageId)>;

fn track(delivered: &mut Delivered, frame: &Utf8Bytes) {
    if let Some((room, id)) = stored_room_id(frame.as_str()) {
        track_at(delivered, room, id);
    }
}

fn track_at(delivered: &mut Delivered, room: &str, id: MessageId) {
    match delivered.iter_mut().find(|(r, _)| r == room) {
        Some(entry) => entry.1 = id,
        None => delivered.push((room.to_owned(), id)),
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
    // Boxed: an idle writer without a token carries no timer.
    let mut expiry = p.expiry.clone().map(|e| Box::new(ExpiryTimer::new(e)));
    let token = p.control.token.clone();
    // Created once: a fresh `cancelled()` future per loop turn costs a lock and a
    // registration with the token on every burst.
    let cancelled = token.cancelled();
    tokio::pin!(cancelled);
    let mut delivered = Delivered::new();
    let mut confirmed = Delivered::new();
    let mut pings: std::collections::VecDeque<(u64, Delivered)> = Default::default();
    let mut next_ping: u64 = 1;
    let mut batch: Vec<Outbound> = Vec::new();
    let abnormal = |p: &WriterParams| {
        p.control.vanish();
        p.queue.close_and_clear();
    };
    loop {
        tokio::select! {
            biased;
            // The queue first, while no close code is chosen: a wake with frames (the
            // common one) then costs no look at the token (a mutex in tokio-util). A
            // drain (cancelled without a code) writes what is queued either way; a
            // chosen code (1013, 1008…) disables this branch, so such a backlog is
            // dropped by `finish`, not written.
            more = p.queue.take(&mut batch), if p.control.code().is_none() => {
                if !more { break }
                let taken = batch.len();
                if let Some(big) = batch.iter().map(Outbound::len).max().filter(|n| *n > p.max_out_frame) {
                    // Every reply is paged or capped below the limit: this is a bug, and
                    // it ends in a close code, never in a silent drop.
                    tracing::warn!(bytes = big, limit = p.max_out_frame, "an outgoing frame is over the limit: closing with 1011");
                    p.control.close(CloseCode::Internal);
                    break;
                }
                let res = {
                let burst = Burst::new(&mut sink, batch.drain(..), &mut delivered);
                tokio::pin!(burst);
                // Most bursts fit the socket buffer and finish on their first poll:
                // those need no deadline timer (arming and cancelling one per burst
                // per subscriber showed in the fan-out profile).
                // The slow path is boxed: its timers would otherwise take room in
                // every idle connection's writer task.
                match burst.as_mut().now_or_never() {
                    Some(r) => r,
                    None => Box::pin(async {
                let deadline = tokio::time::sleep(p.write_timeout);
                tokio::pin!(deadline);
                loop {
                    tokio::select! {
                        r = &mut burst => break r,
                        _ = &mut cancelled => {
                            // A drain (no close code) writes what it had taken from
                            // the queue too: dropping the burst would drop the rest of
                            // the batch (a `reconnect` hint among it).
                            if p.control.code().is_some() {
                                break Ok(());
                            }
                            break tokio::time::timeout(p.drain_timeout, &mut burst)
                                .await
                                .unwrap_or(Ok(()));
                        }
                        _ = &mut deadline => {
                            // The peer does not read: its backlog is dropped now, and the
                            // close frame gets its own bounded chance in `finish`.
                            tracing::debug!(timeout_ms = p.write_timeout.as_millis() as u64, "write deadline: slow consumer");
                            p.control.close(CloseCode::TryAgainLater);
                            break Ok(());
                        }
                        _ = ticker.tick() => {
                            if silent(&p) {
                                break Err(WsError::ConnectionClosed);
                            }
                        }
                    }
                }
                    }).await,
                }
                };
                if p.control.token.is_cancelled() {
                    break;
                }
                if let Err(e) = res {
                    if peer_closed(&e) {
                        // The reader has just taken the peer's close frame (tungstenite
                        // refuses to send after it): the close handshake is under way,
                        // and `finish` flushes tungstenite's reply to it.
                        p.control.close(CloseCode::Normal);
                        break;
                    }
                    tracing::debug!(error = %e, "write failed (or the peer went silent)");
                    // The socket is gone; nothing more can be written.
                    abnormal(&p);
                    return (ABNORMAL, acked(&p, &mut pings, confirmed));
                }
                p.queue.written();
                // Given back once bursts calm down (a small one after a big one), not
                // after every burst: reallocating it per burst showed in the profile.
                if batch.capacity() > 64 && taken < batch.capacity() / 8 {
                    batch = Vec::new();
                }
            }
            _ = &mut cancelled => break,
            _ = ticker.tick() => {
                if silent(&p) {
                    // The peer is presumed dead: drop the connection without a close
                    // handshake (the client sees 1006 and reconnects).
                    abnormal(&p);
                    return (ABNORMAL, acked(&p, &mut pings, confirmed));
                }
                confirmed = acked(&p, &mut pings, confirmed);
                let seq = next_ping;
                next_ping += 1;
                if pings.len() == PING_SNAPSHOTS {
                    pings.pop_front();
                }
                pings.push_back((seq, delivered.clone()));
                // Between heartbeats an idle connection keeps no buffers of ours.
                batch = Vec::new();
                p.queue.release_idle();
                // Boxed, once per heartbeat: its timer would otherwise take room in
                // every idle connection's writer task.
                let sent = Box::pin(async {
                    let ping = async {
                        sink.feed(Message::Ping(seq.to_be_bytes().to_vec().into())).await?;
                        sink.flush().await
                    };
                    tokio::select! {
                        r = ping => Some(r),
                        _ = &mut cancelled => None,
                        _ = tokio::time::sleep(p.write_timeout) => {
                            p.control.close(CloseCode::TryAgainLater);
                            None
                        }
                    }
                })
                .await;
                match sent {
                    None => break,
                    Some(Ok(())) => {}
                    Some(Err(_)) => {
                        abnormal(&p);
                        return (ABNORMAL, acked(&p, &mut pings, confirmed));
                    }
                }
            }
            due = expiry::due(&mut expiry) => match due {
                Due::Notice(exp) => {
                    if let Some(e) = &p.expiry {
                        expiry::queue_notice(e, &p.queue, &p.control, exp);
                    }
                }
                Due::Expired => {
                    p.control.close(CloseCode::Policy);
                    break;
                }
            },
        }
    }
    drop(batch);
    // Boxed: the close sequence is a large future that an idle session's writer task
    // would otherwise carry all its life.
    let code = Box::pin(finish(sink, &p, &mut delivered)).await;
    let clean = matches!(
        CloseCode::from_u16(code),
        Some(CloseCode::Normal | CloseCode::GoingAway | CloseCode::Policy)
    );
    if clean {
        (code, delivered)
    } else {
        (code, acked(&p, &mut pings, confirmed))
    }
}

/// Whether the peer has been silent for two heartbeat intervals.
fn silent(p: &WriterParams) -> bool {
    let silent_ms =
        (p.epoch.elapsed().as_millis() as u64).saturating_sub(p.last_seen.load(Ordering::Relaxed));
    let dead = silent_ms > 2 * p.heartbeat.as_millis() as u64;
    if dead {
        tracing::debug!(silent_ms, "heartbeat timeout");
    }
    dead
}

/// What the peer has confirmed reading: the snapshot of the newest answered ping
/// (older snapshots go), or `confirmed` as it was.
fn acked(
    p: &WriterParams,
    pings: &mut std::collections::VecDeque<(u64, Delivered)>,
    mut confirmed: Delivered,
) -> Delivered {
    let acked = p.acked_ping.load(Ordering::Acquire);
    while pings.front().is_some_and(|(seq, _)| *seq <= acked) {
        if let Some((_, snapshot)) = pings.pop_front() {
            confirmed = snapshot;
        }
    }
    confirmed
}

/// The sequence number a ping carries (what [`WriterParams::acked_ping`] records from
/// the pong that answers it); `None` for a pong that is not an answer of ours.
pub fn ping_seq(payload: &[u8]) -> Option<u64> {
    <[u8; 8]>::try_from(payload).ok().map(u64::from_be_bytes)
}

/// Whether a write failed because the peer's close frame has been read: tungstenite
/// then refuses new frames and holds its own close reply until the next flush.
fn peer_closed(e: &WsError) -> bool {
    matches!(
        e,
        WsError::Protocol(ProtocolError::SendAfterClosing) | WsError::AlreadyClosed
    )
}

/// Writes what the end of the session calls for, then the close frame.
async fn finish<S>(mut sink: S, p: &WriterParams, delivered: &mut Delivered) -> u16
where
    S: Sink<Message, Error = WsError> + Unpin,
{
    // Producers are refused from now on; what they queued is written only at shutdown,
    // and dropped at once otherwise.
    match p.control.code() {
        None => p.queue.close(),
        Some(_) => p.queue.close_and_clear(),
    }
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
            let mut rest = Vec::new();
            p.queue.take_now(&mut rest);
            let drain = Burst::new(&mut sink, rest.drain(..), delivered);
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
    /// Every idle connection carries its writer task's state: a change that grows it
    /// shows here before it shows in RSS. 816 bytes when this was written (1,136
    /// with an `async` burst and the ping's timer inline).
    #[test]
    fn a_writer_task_stays_small() {
        type Ws = WebSocketStream<hyper_util::rt::TokioIo<hyper::upgrade::Upgraded>>;
        fn future_size<A, B, F: Fn(A, B) -> Fut, Fut>(_: F) -> usize {
            std::mem::size_of::<Fut>()
        }
        let size = future_size(run_writer::<futures_util::stream::SplitSink<Ws, Message>>);
        assert!(size <= 1024, "the writer future is {size} bytes");
    }

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
        let queue = Queue::new(8, 1 << 20);
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
            expiry: None,
            drain_timeout: Duration::from_secs(1),
            write_timeout: Duration::from_secs(10),
            max_out_frame: 1 << 20,
            acked_ping: Arc::new(AtomicU64::new(0)),
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
