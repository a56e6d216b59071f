//! The demo chat page, the SSE feed page, the dashboard and the browser client, built
//! into the binary so that `cargo run` and a browser are all a newcomer needs.

use http::{header, HeaderValue, Response};

use crate::response::{full, Body};

/// A static file: its body and content type.
pub struct Asset {
    /// The bytes served.
    pub body: &'static str,
    /// Its `Content-Type`.
    pub content_type: &'static str,
}

/// The asset served at `path`, if any.
pub fn find(path: &str) -> Option<Asset> {
    let html = "text/html; charset=utf-8";
    let (body, content_type) = match path {
        "/" | "/index.html" => (include_str!("../static/index.html"), html),
        "/feed" => (include_str!("../static/feed.html"), html),
        "/dashboard" => (include_str!("../static/dashboard.html"), html),
        "/client.js" => (
            include_str!("../static/client.js"),
            "text/javascript; charset=utf-8",
        ),
        "/client.d.ts" => (
            include_str!("../static/client.d.ts"),
            "application/typescript; charset=utf-8",
        ),
        _ => return None,
    };
    Some(Asset { body, content_type })
}

impl Asset {
    /// The response that serves it (revalidated on every load: `no-cache`).
    pub fn response(&self) -> Response<Body> {
        let mut res = Response::new(full(self.body));
        let h = res.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(self.content_type),
        );
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        res
    }
}
