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
//! - [`members`]: big rooms: `joined`'s count and presence mode ([`Joined`]), the
//!   `members` request and its pages ([`MembersPage`], [`members::MemberPager`]), and
//!   [`members::MemberTracker`], what a client knows of each room's members.
//! - `wsgate-cli` (src/bin): the command line for people.

pub mod members;
pub mod reconnect;

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub use members::{AllMembers, Joined, MembersPage};
pub use wsgate_protocol::server::{Member, PresenceMode, ServerFrame};

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
    /// The server answered the request with an `error` frame (`room_full`,
    /// `forbidden`, `rate_limited`, …).
    #[error("{code}: {message}")]
    Server {
        /// The error code (docs/protocol.md, "Error codes").
        code: String,
        /// The server's reason.
        message: String,
    },
}

impl Error {
    /// The server's error code, when the server refused the request.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Server { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// Result of client operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One connection to a gateway.
pub struct Client {
    /// The socket.
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// The close code the server sent, once it did.
    close_code: Option<u16>,
    /// Frames that arrived while a request waited for its answer, for `recv`.
    stash: VecDeque<Value>,
    /// The next `ref` of a request.
    next_ref: u64,
}

/// Most `rate_limited` answers a paging request retries, a second apart.
const RATE_LIMIT_RETRIES: u32 = 5;

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
            stash: VecDeque::new(),
            next_ref: 1,
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
        if let Some(v) = self.stash.pop_front() {
            return Ok(v);
        }
        self.recv_socket(timeout).await
    }

    /// The next JSON frame from the socket itself (not the stash).
    async fn recv_socket(&mut self, timeout: Duration) -> Result<Value> {
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

    /// Sends `frame` with a fresh `ref` and waits for the frame of type `answer` that
    /// echoes it. Frames that arrive meanwhile are kept for [`Client::recv`].
    ///
    /// # Errors
    /// [`Error::Server`] when the server answers with an `error`; as [`Client::recv`].
    pub async fn request(
        &mut self,
        mut frame: Value,
        answer: &str,
        timeout: Duration,
    ) -> Result<Value> {
        let reference = format!("c{}", self.next_ref);
        self.next_ref += 1;
        frame["ref"] = Value::String(reference.clone());
        self.send(&frame).await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let v = self.recv_socket(left).await?;
            if v["ref"].as_str() == Some(reference.as_str()) {
                if v["type"] == "error" {
                    return Err(Error::Server {
                        code: v["code"].as_str().unwrap_or_default().to_owned(),
                        message: v["message"].as_str().unwrap_or_default().to_owned(),
                    });
                }
                if v["type"] == answer {
                    return Ok(v);
                }
            }
            self.stash.push_back(v);
        }
    }

    /// Joins `room` and returns the `joined` answer: its members (at most
    /// `--joined-members` of a `full` room), `members_count`, `members_more` and
    /// `presence` mode. Frames that arrive meanwhile are kept for [`Client::recv`].
    ///
    /// # Errors
    /// [`Error::Server`] (`room_full`, `forbidden`, `too_many_rooms`, …); as
    /// [`Client::recv`].
    pub async fn join(&mut self, room: &str, timeout: Duration) -> Result<Joined> {
        let v = self
            .request(
                serde_json::json!({"type": "join", "room": room}),
                "joined",
                timeout,
            )
            .await?;
        serde_json::from_value(v)
            .ok()
            .and_then(Joined::from_frame)
            .ok_or_else(|| Error::BadFrame("a joined without its fields".into()))
    }

    /// One page of `room`'s members after `cursor` (`None`: the first page), at most
    /// `limit` (1–1000; `None`: 100). Membership is not needed; an `off` room answers
    /// `forbidden`.
    ///
    /// # Errors
    /// [`Error::Server`]; as [`Client::recv`].
    pub async fn members(
        &mut self,
        room: &str,
        cursor: Option<&str>,
        limit: Option<u32>,
        timeout: Duration,
    ) -> Result<MembersPage> {
        let v = self
            .request(
                members::members_frame(room, cursor, limit),
                "members",
                timeout,
            )
            .await?;
        serde_json::from_value(v)
            .ok()
            .and_then(MembersPage::from_frame)
            .ok_or_else(|| Error::BadFrame("a members answer without its fields".into()))
    }

    /// Every member of `room`, paging `limit` at a time from the first page to the
    /// last, at most `max` users (each listed once). A `rate_limited` answer is asked
    /// again a second later (up to 5 times). `timeout` is per page.
    ///
    /// # Errors
    /// As [`Client::members`]; [`Error::BadFrame`] when the server pages in circles.
    pub async fn all_members(
        &mut self,
        room: &str,
        limit: u32,
        max: usize,
        timeout: Duration,
    ) -> Result<AllMembers> {
        let mut pager = members::MemberPager::new(limit, max, None);
        while let Some((cursor, limit)) = pager.next_request() {
            let mut tries = 0;
            let page = loop {
                match self
                    .members(room, cursor.as_deref(), Some(limit), timeout)
                    .await
                {
                    Err(e) if e.code() == Some("rate_limited") && tries < RATE_LIMIT_RETRIES => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    other => break other?,
                }
            };
            pager
                .on_page(page)
                .map_err(|e| Error::BadFrame(e.to_string()))?;
        }
        Ok(pager.finish())
    }

    /// Replaces the session's token without reconnecting; returns the new token's `exp`
    /// (seconds since the Unix epoch).
    ///
    /// # Errors
    /// [`Error::Server`]: `invalid_field` (the token does not verify), `forbidden`
    /// (another user's token; a gateway without tokens); as [`Client::recv`].
    pub async fn refresh(&mut self, token: &str, timeout: Duration) -> Result<u64> {
        let v = self
            .request(
                serde_json::json!({"type": "refresh", "token": token}),
                "refreshed",
                timeout,
            )
            .await?;
        v["exp"]
            .as_u64()
            .ok_or_else(|| Error::BadFrame("a refreshed without its exp".into()))
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
