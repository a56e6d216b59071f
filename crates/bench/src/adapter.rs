//! The two wire formats the bench speaks, behind one small interface.
//!
//! - `wsgate`: `ws://HOST/ws?user_id=U`; `welcome`; `join` with a `ref`, answered by
//!   `joined`; `{"type":"message","room":R,"content":C}` publishes; deliveries are
//!   `message` frames.
//! - `socketio` (Socket.IO 4 / Engine.IO 4, WebSocket transport only):
//!   `/socket.io/?EIO=4&transport=websocket`; the server opens with `0{…}`, the client
//!   sends `40`, the server answers `40{…}`; `2` pings are answered `3`; `42N["join",R]`
//!   is acked by `43N[…]`; `42["publish",{room,content}]` publishes and members get
//!   `42["message",{room,content}]`.

use std::net::SocketAddrV4;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

use crate::conn::{self, ConnError, Endpoint, Ws};
pub(crate) use crate::target::Target;

/// The answer to a join.
#[derive(Debug, Default, Clone)]
pub(crate) struct Joined {
    /// `joined.epoch` (wsgate).
    pub epoch: Option<String>,
    /// `joined.last_id` (wsgate).
    pub last_id: Option<String>,
    /// `joined.recovered` (wsgate; true for Socket.IO).
    pub recovered: bool,
    /// Message frames that arrived before the answer (the replay, with `since`).
    pub replayed: Vec<Utf8Bytes>,
    /// `joined.members_count` (wsgate; the peers' count where they send one).
    pub members_count: Option<u64>,
}

/// Reads the next text frame before `deadline`, answering Socket.IO pings on the way.
pub(crate) async fn next_text(
    ws: &mut Ws,
    target: Target,
    deadline: Instant,
) -> Result<Utf8Bytes, ConnError> {
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Err(ConnError::Timeout),
            Ok(None) => return Err(ConnError::Protocol("connection closed".into())),
            Ok(Some(Err(e))) => return Err(ConnError::Protocol(format!("read failed: {e}"))),
            Ok(Some(Ok(m))) => m,
        };
        match msg {
            Message::Text(t) => {
                if target == Target::Socketio && t.as_str() == "2" {
                    ws.send(Message::text("3"))
                        .await
                        .map_err(|e| ConnError::Protocol(format!("write failed: {e}")))?;
                    continue;
                }
                return Ok(t);
            }
            Message::Close(f) => {
                let code = f.map(|f| u16::from(f.code)).unwrap_or(1005);
                return Err(ConnError::Protocol(format!(
                    "server closed the connection (code {code})"
                )));
            }
            _ => continue,
        }
    }
}

async fn send_text(ws: &mut Ws, text: String) -> Result<(), ConnError> {
    ws.send(Message::text(text))
        .await
        .map_err(|e| ConnError::Protocol(format!("write failed: {e}")))
}

/// Completes the protocol handshake; returns the `welcome` (wsgate) or `40{…}` text.
pub(crate) async fn handshake(
    ws: &mut Ws,
    target: Target,
    deadline: Instant,
) -> Result<Utf8Bytes, ConnError> {
    match target {
        Target::Wsgate => {
            let t = next_text(ws, target, deadline).await?;
            if wsgate_protocol::server::frame_type(&t) != Some("welcome") {
                return Err(ConnError::Protocol(format!(
                    "expected welcome, got {}",
                    clip(&t)
                )));
            }
            Ok(t)
        }
        Target::Socketio => {
            let open = next_text(ws, target, deadline).await?;
            if !open.starts_with('0') {
                return Err(ConnError::Protocol(format!(
                    "expected Engine.IO open (0{{…}}), got {}",
                    clip(&open)
                )));
            }
            send_text(ws, "40".into()).await?;
            loop {
                let t = next_text(ws, target, deadline).await?;
                if t.starts_with("40") {
                    return Ok(t);
                }
                if t.starts_with("44") {
                    return Err(ConnError::Protocol(format!(
                        "Socket.IO connect refused: {}",
                        clip(&t)
                    )));
                }
            }
        }
    }
}

/// Joins `room`; `ack` is a per-connection increasing request number; `since` is
/// `(last id, epoch)` for a resuming wsgate join.
pub(crate) async fn join(
    ws: &mut Ws,
    target: Target,
    room: &str,
    ack: u64,
    since: Option<(&str, Option<&str>)>,
    deadline: Instant,
) -> Result<Joined, ConnError> {
    match target {
        Target::Wsgate => {
            let mut frame = serde_json::json!({"type": "join", "room": room, "ref": ack});
            if let Some((since, epoch)) = since {
                frame["since"] = since.into();
                if let Some(e) = epoch {
                    frame["epoch"] = e.into();
                }
            }
            send_text(ws, frame.to_string()).await?;
            let mut joined = Joined::default();
            loop {
                let t = next_text(ws, target, deadline).await?;
                match wsgate_protocol::server::frame_type(&t) {
                    Some("joined") => {
                        let v: serde_json::Value = serde_json::from_str(&t)
                            .map_err(|e| ConnError::Protocol(format!("bad joined frame: {e}")))?;
                        if v["ref"] != serde_json::json!(ack) {
                            continue;
                        }
                        joined.epoch = v["epoch"].as_str().map(str::to_owned);
                        joined.last_id = v["last_id"].as_str().map(str::to_owned);
                        joined.recovered = v["recovered"].as_bool().unwrap_or(false);
                        joined.members_count = v["members_count"].as_u64();
                        return Ok(joined);
                    }
                    Some("error") => {
                        return Err(ConnError::Protocol(format!(
                            "join {room} refused: {}",
                            clip(&t)
                        )))
                    }
                    Some("message") if since.is_some() => joined.replayed.push(t),
                    _ => {}
                }
            }
        }
        Target::Socketio => {
            send_text(ws, format!("42{ack}[\"join\",\"{room}\"]")).await?;
            let want = format!("43{ack}");
            loop {
                let t = next_text(ws, target, deadline).await?;
                if t.starts_with(&want) && t[want.len()..].starts_with('[') {
                    return Ok(Joined {
                        recovered: true,
                        ..Joined::default()
                    });
                }
            }
        }
    }
}

/// Opens, handshakes and joins `room` in one go, within `timeout`.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn connect_joined(
    ep: &Endpoint,
    target: Target,
    user: &str,
    source: Option<SocketAddrV4>,
    config: WebSocketConfig,
    room: &str,
    timeout: Duration,
) -> Result<Ws, ConnError> {
    let deadline = Instant::now() + timeout;
    let url = ep.request_url(target, user);
    let mut ws = conn::within(timeout, conn::open(ep.addr, &url, source, config)).await?;
    handshake(&mut ws, target, deadline).await?;
    join(&mut ws, target, room, 1, None, deadline).await?;
    Ok(ws)
}

/// The frame that publishes `content` (plain ASCII without quotes) into `room`.
pub(crate) fn publish_frame(target: Target, room: &str, content: &str) -> String {
    match target {
        Target::Wsgate => {
            format!(r#"{{"type":"message","room":"{room}","content":"{content}"}}"#)
        }
        Target::Socketio => {
            format!(r#"42["publish",{{"room":"{room}","content":"{content}"}}]"#)
        }
    }
}

/// An `error` frame's code (wsgate), read off the text.
pub(crate) fn error_code(target: Target, text: &str) -> Option<String> {
    if target != Target::Wsgate || wsgate_protocol::server::frame_type(text) != Some("error") {
        return None;
    }
    let v: serde_json::Value = serde_json::from_str(text).ok()?;
    Some(v["code"].as_str().unwrap_or("?").to_owned())
}

/// A frame clipped for an error message.
pub(crate) fn clip(t: &str) -> String {
    if t.len() <= 200 {
        t.to_owned()
    } else {
        let mut end = 200;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}…", &t[..end])
    }
}
