//! Opening connections: endpoints from `--url`, source addresses, small per-connection
//! buffers, and failures sorted by kind.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

use crate::target::Target;

/// A client WebSocket over plain TCP.
pub(crate) type Ws = WebSocketStream<TcpStream>;

/// One `--url`: where to connect and the request URL without the identity part.
#[derive(Debug, Clone)]
pub(crate) struct Endpoint {
    /// The resolved address.
    pub addr: SocketAddr,
    /// `ws://host:port`.
    pub origin: String,
    /// The path and query given, if any (empty: the target's default).
    pub path: String,
}

impl Endpoint {
    /// Parses `ws://host:port[/path?query]` (or `host:port`).
    pub(crate) fn parse(url: &str) -> anyhow::Result<Endpoint> {
        let rest = url
            .strip_prefix("ws://")
            .or_else(|| url.strip_prefix("http://"))
            .unwrap_or(url);
        anyhow::ensure!(
            !url.starts_with("wss://") && !url.starts_with("https://"),
            "{url}: TLS is not supported by the bench; use ws://"
        );
        let (hostport, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let addr = hostport
            .to_socket_addrs()
            .map_err(|e| anyhow::anyhow!("{url}: cannot resolve {hostport}: {e}"))?
            .find(|a| a.is_ipv4())
            .ok_or_else(|| anyhow::anyhow!("{url}: no IPv4 address for {hostport}"))?;
        let path = if path == "/" { "" } else { path };
        Ok(Endpoint {
            addr,
            origin: format!("ws://{hostport}"),
            path: path.to_owned(),
        })
    }

    /// The request URL for `user` under `target`.
    pub(crate) fn request_url(&self, target: Target, user: &str) -> String {
        match target {
            Target::Wsgate => {
                let path = if self.path.is_empty() {
                    "/ws"
                } else {
                    &self.path
                };
                let sep = if path.contains('?') { '&' } else { '?' };
                format!("{}{path}{sep}user_id={user}", self.origin)
            }
            Target::Socketio => {
                let path = if self.path.is_empty() {
                    "/socket.io/?EIO=4&transport=websocket"
                } else {
                    &self.path
                };
                format!("{}{path}", self.origin)
            }
        }
    }
}

/// Parses every `--url`.
pub(crate) fn endpoints(urls: &[String]) -> anyhow::Result<Vec<Endpoint>> {
    anyhow::ensure!(!urls.is_empty(), "give at least one --url");
    urls.iter().map(|u| Endpoint::parse(u)).collect()
}

/// Source addresses 127.0.0.1 ..= 127.0.0.K (none when K is 0: let the kernel pick).
pub(crate) fn sources(k: u8) -> Vec<Ipv4Addr> {
    (1..=k).map(|i| Ipv4Addr::new(127, 0, 0, i)).collect()
}

/// `ip` with a port the kernel picks at `bind()`.
pub(crate) fn any_port(ip: Ipv4Addr) -> SocketAddrV4 {
    SocketAddrV4::new(ip, 0)
}

/// Small buffers for connections that mostly read small frames.
pub(crate) fn small_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
        .max_write_buffer_size(1 << 20)
        .max_message_size(Some(16 << 20))
        .max_frame_size(Some(16 << 20))
}

/// Buffers for publishers, which batch their writes.
pub(crate) fn publisher_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(16 << 10)
        .write_buffer_size(32 << 10)
        .max_message_size(Some(16 << 20))
}

/// Why a connection attempt failed.
#[derive(Debug)]
pub(crate) enum ConnError {
    /// TCP connect or bind failed.
    Tcp(std::io::Error),
    /// The server refused the upgrade with this HTTP status.
    Http(u16),
    /// The WebSocket handshake failed otherwise.
    Handshake(String),
    /// The protocol handshake (welcome, Socket.IO open/connect, join) failed.
    Protocol(String),
    /// It took longer than the connect timeout.
    Timeout,
}

impl ConnError {
    /// A short kind, for counting failures.
    pub(crate) fn kind(&self) -> String {
        match self {
            ConnError::Tcp(e) => format!("tcp:{:?}", e.kind()),
            ConnError::Http(s) => format!("http:{s}"),
            ConnError::Handshake(_) => "handshake".into(),
            ConnError::Protocol(_) => "protocol".into(),
            ConnError::Timeout => "timeout".into(),
        }
    }
}

impl fmt::Display for ConnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnError::Tcp(e) => write!(f, "TCP connect failed: {e}"),
            ConnError::Http(s) => write!(f, "upgrade refused with HTTP {s}"),
            ConnError::Handshake(e) => write!(f, "WebSocket handshake failed: {e}"),
            ConnError::Protocol(e) => write!(f, "{e}"),
            ConnError::Timeout => write!(f, "timed out"),
        }
    }
}

impl std::error::Error for ConnError {}

/// Opens a WebSocket to `url` at `addr`, bound to `source` first when given.
pub(crate) async fn open(
    addr: SocketAddr,
    url: &str,
    source: Option<SocketAddrV4>,
    config: WebSocketConfig,
) -> Result<Ws, ConnError> {
    let socket = bound(source)?;
    let stream = socket.connect(addr).await.map_err(ConnError::Tcp)?;
    let _ = stream.set_nodelay(true);
    match tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            Err(ConnError::Http(resp.status().as_u16()))
        }
        Err(e) => Err(ConnError::Handshake(e.to_string())),
    }
}

/// A socket bound to `source` when given. A port of 0 is the kernel's choice; a given
/// port is bound with `SO_REUSEADDR` (a previous run's TIME_WAIT on it does not block it)
/// and, if it is taken all the same, the kernel picks one.
///
/// Why a given port: a port that `bind()` took can no longer be used by any `connect()`
/// of this machine that lets the kernel pick, whatever the addresses (Linux skips ports
/// owned by a `bind()` in its search). Tens of thousands of clients bound to random ports
/// take nearly all of one parity of the ephemeral range, which a local proxy (nginx on
/// the same machine) then misses for its own connections to its upstreams.
fn bound(source: Option<SocketAddrV4>) -> Result<TcpSocket, ConnError> {
    let socket = TcpSocket::new_v4().map_err(ConnError::Tcp)?;
    let Some(src) = source else {
        return Ok(socket);
    };
    if src.port() != 0 {
        socket.set_reuseaddr(true).map_err(ConnError::Tcp)?;
        if socket.bind(SocketAddr::V4(src)).is_ok() {
            return Ok(socket);
        }
        return bound(Some(any_port(*src.ip())));
    }
    socket.bind(SocketAddr::V4(src)).map_err(ConnError::Tcp)?;
    Ok(socket)
}

/// Runs `fut` under a timeout, mapping the timeout to [`ConnError::Timeout`].
pub(crate) async fn within<T>(
    d: Duration,
    fut: impl std::future::Future<Output = Result<T, ConnError>>,
) -> Result<T, ConnError> {
    tokio::time::timeout(d, fut)
        .await
        .unwrap_or(Err(ConnError::Timeout))
}
