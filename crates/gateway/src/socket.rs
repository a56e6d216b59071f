//! What `/ws` sessions and the echo endpoint do alike with a WebSocket: map a read
//! error to its close code, and let the peer answer the close frame before the socket
//! is dropped.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio_tungstenite::tungstenite::error::{CapacityError, ProtocolError};
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use wsgate_protocol::CloseCode;

use crate::handle::{Control, ABNORMAL};

/// How long the reader waits for the peer's close reply after the session ended.
/// A live peer answers at once; the wait matters for a slow consumer, whose close
/// frame sits behind the backlog in the socket buffers: dropping the socket before the
/// peer has read up to it would lose the close frame (the kernel resets a connection
/// closed with unread data), so the peer would never learn its close code.
const CLOSE_HANDSHAKE_WAIT: Duration = Duration::from_secs(10);

/// Ends a connection after a read error: with the close code the contract gives
/// the error (1009 too big, 1007 invalid UTF-8, 1002 protocol error), or without a
/// close frame when the peer is gone.
pub fn end_on_read_error(control: &Control, e: &WsError) {
    let code = match e {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => CloseCode::TooBig,
        WsError::Capacity(_) => CloseCode::TooBig,
        WsError::Utf8(_) => CloseCode::InvalidPayload,
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => return control.vanish(),
        WsError::Protocol(_) => CloseCode::Protocol,
        _ => return control.vanish(),
    };
    tracing::debug!(error = %e, code = code.code(), "read error");
    control.close(code);
}

/// When the server sent the close frame (`code`), lets the peer read up to it and
/// answer before the socket is dropped (bounded by [`CLOSE_HANDSHAKE_WAIT`]).
pub async fn await_close_reply<S>(stream: &mut S, code: u16)
where
    S: Stream<Item = Result<Message, WsError>> + Unpin,
{
    if code != ABNORMAL && code != CloseCode::Normal.code() {
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_WAIT, async {
            while stream.next().await.is_some() {}
        })
        .await;
    }
}
