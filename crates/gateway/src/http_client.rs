//! The gateway's outbound HTTP(S) client: the JWKS fetch and the back-end hooks' calls.
//! Every call is bounded: a connect timeout, a deadline over the whole exchange
//! (connect, headers and body), and a cap on the body's size; failures are values,
//! never panics.
//!
//! hyper-util's pooling client over rustls (ring). Trust: the platform's certificate
//! store (`SSL_CERT_FILE`/`SSL_CERT_DIR` override it, as in OpenSSL); a machine with none
//! (a slim container without `ca-certificates`) gets the Mozilla roots built in. HTTP/1.1
//! only; redirects are not followed (a 3xx is returned as it is).

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// Idle pooled connections are closed after this long.
const POOL_IDLE: Duration = Duration::from_secs(30);
/// Largest response head (status line and headers) read.
const MAX_HEAD_BYTES: usize = 64 << 10;

/// Why a request got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// The URL is not an absolute `http://` or `https://` URL.
    #[error("not an http(s) URL")]
    BadUrl,
    /// The request could not be sent or its answer read (DNS, refused, reset, TLS, bad
    /// HTTP).
    #[error("request failed: {0}")]
    Failed(String),
    /// The exchange did not complete within its deadline.
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// The body is over the size cap.
    #[error("response body over {0} bytes")]
    TooLarge(usize),
}

/// A complete answer.
#[derive(Debug)]
pub struct HttpResponse {
    /// Its status (any: the caller decides what a success is).
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its whole body, at most the cap asked for.
    pub body: Bytes,
}

/// Bounds of one exchange.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Deadline of the whole exchange: connect, send, headers and body.
    pub timeout: Duration,
    /// Largest body accepted.
    pub max_body: usize,
}

/// A cheap-to-clone client (clones share the connection pool).
#[derive(Clone)]
pub struct HttpClient {
    /// The pooled client; bodies are sent whole.
    inner: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
}

impl HttpClient {
    /// A client whose connections must be established within `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_nodelay(true);
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config())
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .http1_max_buf_size(MAX_HEAD_BYTES)
            .build(https);
        HttpClient { inner }
    }

    /// `GET url` with `Accept: accept`.
    ///
    /// # Errors
    /// An [`HttpError`]: a bad URL, a failed or late exchange, a body over the cap.
    pub async fn get(
        &self,
        url: &str,
        accept: &str,
        limits: Limits,
    ) -> Result<HttpResponse, HttpError> {
        let uri = parse_url(url)?;
        let req = Request::get(uri)
            .header(http::header::ACCEPT, accept)
            .header(
                http::header::USER_AGENT,
                concat!("wsgate/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(Bytes::new()))
            .map_err(|e| HttpError::Failed(e.to_string()))?;
        self.send(req, limits).await
    }

    /// Sends `req` and reads its whole answer within `limits`.
    ///
    /// # Errors
    /// An [`HttpError`]: a failed or late exchange, a body over the cap.
    pub async fn send(
        &self,
        req: Request<Full<Bytes>>,
        limits: Limits,
    ) -> Result<HttpResponse, HttpError> {
        let exchange = async {
            let res = self
                .inner
                .request(req)
                .await
                .map_err(|e| HttpError::Failed(error_chain(&e)))?;
            let declared = res
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > limits.max_body as u64) {
                return Err(HttpError::TooLarge(limits.max_body));
            }
            let (parts, body) = res.into_parts();
            let body = Limited::new(body, limits.max_body)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        HttpError::TooLarge(limits.max_body)
                    } else {
                        HttpError::Failed(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(HttpResponse {
                status: parts.status,
                headers: parts.headers,
                body,
            })
        };
        tokio::time::timeout(limits.timeout, exchange)
            .await
            .unwrap_or(Err(HttpError::Timeout(limits.timeout)))
    }
}

/// `url` as an absolute `http://` or `https://` URI.
///
/// # Errors
/// [`HttpError::BadUrl`] for anything else.
pub fn parse_url(url: &str) -> Result<Uri, HttpError> {
    let uri: Uri = url.parse().map_err(|_| HttpError::BadUrl)?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(host)) if !host.is_empty() => Ok(uri),
        _ => Err(HttpError::BadUrl),
    }
}

/// An error and its sources in one line ("client error (Connect): tcp connect error:
/// Connection refused"): hyper's own message alone rarely says what went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// rustls with the ring provider and the roots described at the top of this file.
fn tls_config() -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(native.certs);
    if added == 0 {
        tracing::info!(
            "no usable certificates in the platform store: trusting the built-in Mozilla roots"
        );
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    // ring, not aws-lc-rs: no cmake build on small machines. rustls deprecated ring's
    // provider for lacking post-quantum key exchange, which guards the secrecy of what
    // is fetched against future decryption: a JWKS is public.
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
        // The ring provider supports every default version: unreachable, but a
        // client that cannot speak TLS still serves http:// rather than panic.
        Err(e) => {
            tracing::error!(error = %e, "TLS unavailable for outbound requests");
            rustls::ClientConfig::builder_with_protocol_versions(&[])
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(parse_url("https://idp.example/.well-known/jwks.json").is_ok());
        assert!(parse_url("http://127.0.0.1:8080/jwks").is_ok());
        for bad in [
            "",
            "idp.example/jwks",
            "ftp://idp/jwks",
            "/jwks",
            "https://",
            "ws://x/y",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }

    /// A real exchange against a one-shot server on a loopback port: the body cap and
    /// the deadline hold.
    #[tokio::test]
    async fn caps_and_deadlines() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            for answer in [
                "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello".to_owned(),
                format!(
                    "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 100\r\n\r\n{}",
                    "x".repeat(100)
                ),
                format!(
                    "HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n64\r\n{}\r\n0\r\n\r\n",
                    "y".repeat(100)
                ),
                String::new(),
            ] {
                let (mut s, _) = listener.accept().await.unwrap();
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
                if answer.is_empty() {
                    // Silent: the client's deadline must end the wait.
                    tokio::time::sleep(Duration::from_secs(5)).await;
                } else {
                    let _ = s.write_all(answer.as_bytes()).await;
                }
            }
        });
        let client = HttpClient::new(Duration::from_secs(2));
        let url = format!("http://{addr}/x");
        let limits = Limits {
            timeout: Duration::from_secs(5),
            max_body: 10,
        };
        let ok = client.get(&url, "*/*", limits).await.unwrap();
        assert_eq!((ok.status, &ok.body[..]), (StatusCode::OK, &b"hello"[..]));
        assert!(matches!(
            client.get(&url, "*/*", limits).await,
            Err(HttpError::TooLarge(10))
        ));
        assert!(matches!(
            client.get(&url, "*/*", limits).await,
            Err(HttpError::TooLarge(10))
        ));
        let short = Limits {
            timeout: Duration::from_millis(200),
            max_body: 10,
        };
        assert!(matches!(
            client.get(&url, "*/*", short).await,
            Err(HttpError::Timeout(_))
        ));
    }
}
