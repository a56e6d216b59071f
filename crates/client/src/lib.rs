//! A Rust client for the wsgate protocol.
//!
//! # Layout
//!
//! - [`Client`]: one connection: send frames, receive frames (as JSON values or typed
//!   [`ServerFrame`]s), see how the server closed it.
//! - [`Error`]: what can go wrong.
//!
//! - [`reconnect`]: [`reconnect::Reconnecting`], a client that stays connected
//!   (backoff with full jitter, offline queue, resume with `since` and `epoch`,
//!   application pings), and the pure pieces it is made of.
//! - `wsgate-cli` (src/bin): the command line for people.

pub mod reconnect;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use wsgate_protocol::server::ServerFrame;

/// A client error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The WebSocket layer failed (connect, handshake refusal, I/O).
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    /// The server sent something that is not a JSON text frame.
    #[error("bad frame: {0}")]
    BadFrame(String),
    /// Nothing arrived in time.
    #[error("timed out")]
    Timeout,
    /// The connection is closed, with the server's close code if it sent one.
    #[error("closed ({0:?})")]
    Closed(Option<u16>),
}

/// Result of client operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One connection to a gateway.
pub struct Client {
    /// The socket.
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The close code the server sent, once it did.
    close_code: Option<u16>,
}

impl Client {
    /// Connects to `url` (e.g. `ws://127.0.0.1:8080/ws?user_id=alice`).
    ///
    /// # Errors
    /// [`Error::Ws`] when the connection or the handshake fails (an HTTP refusal such
    /// as 401 or 503 is `tungstenite::Error::Http`).
    pub async fn connect(url: &str) -> Result<Client> {
        let req = url.into_client_request()?;
        let config = WebSocketConfig::default().max_message_size(Some(64 << 20));
        let (ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), true).await?;
        Ok(Client {
            ws,
            close_code: None,
        })
    }

    /// Sends one JSON frame.
    ///
    /// # Errors
    /// [`Error::Ws`] when the socket is gone.
    pub async fn send(&mut self, frame: &Value) -> Result<()> {
        self.ws
            .send(Message::Text(frame.to_string().into()))
            .await?;
        Ok(())
    }

    /// Sends a raw WebSocket message (for tests of bad input).
    ///
    /// # Errors
    /// [`Error::Ws`] when the socket is gone.
    pub async fn send_raw(&mut self, msg: Message) -> Result<()> {
        self.ws.send(msg).await?;
        Ok(())
    }

    /// The next JSON frame, waiting at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Timeout`], [`Error::Closed`] with the server's close code, or
    /// [`Error::BadFrame`].
    pub async fn recv(&mut self, timeout: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .map_err(|_| Error::Timeout)?;
            match next {
                Some(Ok(Message::Text(t))) => {
                    return serde_json::from_str(t.as_str())
                        .map_err(|e| Error::BadFrame(e.to_string()))
                }
                Some(Ok(Message::Close(frame))) => {
                    self.close_code = frame.map(|f| u16::from(f.code));
                    return Err(Error::Closed(self.close_code));
                }
                Some(Ok(Message::Binary(_))) => return Err(Error::BadFrame("binary frame".into())),
                Some(Ok(_)) => continue,
                Some(Err(
                    tokio_tungstenite::tungstenite::Error::ConnectionClosed
                    | tokio_tungstenite::tungstenite::Error::AlreadyClosed,
                ))
                | None => return Err(Error::Closed(self.close_code)),
                Some(Err(e)) => return Err(Error::Ws(e)),
            }
        }
    }

    /// The next frame as a typed [`ServerFrame`].
    ///
    /// # Errors
    /// As [`Client::recv`].
    pub async fn recv_frame(&mut self, timeout: Duration) -> Result<ServerFrame> {
        let v = self.recv(timeout).await?;
        serde_json::from_value(v).map_err(|e| Error::BadFrame(e.to_string()))
    }

    /// Skips frames until one of type `kind` arrives and returns it.
    ///
    /// # Errors
    /// As [`Client::recv`].
    pub async fn recv_type(&mut self, kind: &str, timeout: Duration) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.recv(left).await?;
            if v["type"] == kind {
                return Ok(v);
            }
        }
    }

    /// Waits for the server to close the connection and returns its close code
    /// (`None` when it dropped the connection without one). Frames before the close
    /// are skipped.
    ///
    /// # Errors
    /// [`Error::Timeout`] when the connection stays open.
    pub async fn closed(&mut self, timeout: Duration) -> Result<Option<u16>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv(left).await {
                Ok(_) | Err(Error::BadFrame(_)) => continue,
                Err(Error::Closed(code)) => return Ok(code),
                Err(e) => return Err(e),
            }
        }
    }

    /// Closes the connection normally.
    ///
    /// # Errors
    /// [`Error::Ws`] when the socket is already gone.
    pub async fn close(mut self) -> Result<()> {
        self.ws.close(None).await?;
        Ok(())
    }
}
