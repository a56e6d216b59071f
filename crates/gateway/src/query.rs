//! A request's query string, decoded once (`/ws`, `/events` and the API read it).

/// A request's decoded query parameters.
pub struct Query(Vec<(String, String)>);

impl Query {
    /// Decodes the query of `uri` (none: empty).
    pub fn of(uri: &http::Uri) -> Self {
        Query(
            uri.query()
                .map(|q| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .into_owned()
                        .collect()
                })
                .unwrap_or_default(),
        )
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every pair, in order.
    pub fn pairs(&self) -> &[(String, String)] {
        &self.0
    }
}
