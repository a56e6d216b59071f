//! Where a [`super::Reconnecting`] client gets its tokens: [`GetToken`], asked before
//! every connection and when the server sends `refresh_needed` (the new token then
//! goes to the open session in a `refresh` frame), and [`with_token`], the URL of a
//! connection made with one.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What a token source may fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The future a [`GetToken`] returns.
pub type TokenFuture = Pin<Box<dyn Future<Output = Result<String, BoxError>> + Send>>;

/// A source of fresh tokens (an identity provider, a file a login process keeps
/// current, …), asked each time the client needs one.
#[derive(Clone)]
pub struct GetToken(Arc<dyn Fn() -> TokenFuture + Send + Sync>);

impl GetToken {
    /// A source that calls `f` for every token.
    pub fn new<F, Fut>(f: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<String, BoxError>> + Send + 'static,
    {
        GetToken(Arc::new(move || Box::pin(f())))
    }

    /// A fresh token.
    ///
    /// # Errors
    /// Whatever the source failed with.
    pub fn get(&self) -> TokenFuture {
        (self.0)()
    }
}

impl std::fmt::Debug for GetToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GetToken(..)")
    }
}

/// `url` with its `token` query parameter set to `token` (any other `token` dropped,
/// the rest of the query kept).
pub fn with_token(url: &str, token: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && *p != "token" && !p.starts_with("token="))
        .map(str::to_owned)
        .collect();
    params.push(format!("token={}", encode(token)));
    format!("{base}?{}", params.join("&"))
}

/// Percent-encodes all but the unreserved characters (a JWT is made of them and `.`).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_parameter_is_replaced_and_the_rest_kept() {
        assert_eq!(
            with_token("ws://h/ws", "a.b-c_d"),
            "ws://h/ws?token=a.b-c_d"
        );
        assert_eq!(
            with_token("ws://h/ws?token=old&x=1&tokens=2&token", "new"),
            "ws://h/ws?x=1&tokens=2&token=new"
        );
        assert_eq!(
            with_token("ws://h/ws?", "a b+/="),
            "ws://h/ws?token=a%20b%2B%2F%3D"
        );
    }

    #[tokio::test]
    async fn a_source_is_asked_each_time() {
        let n = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let counter = n.clone();
        let source = GetToken::new(move || {
            let i = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            async move {
                if i == 1 {
                    Err("down".into())
                } else {
                    Ok(format!("t{i}"))
                }
            }
        });
        assert_eq!(source.get().await.unwrap(), "t0");
        assert_eq!(source.get().await.unwrap_err().to_string(), "down");
        assert_eq!(source.clone().get().await.unwrap(), "t2");
        assert_eq!(format!("{source:?}"), "GetToken(..)");
    }
}
