//! The properties the fuzz targets check, as plain functions over bytes.
//!
//! Each module's `check(data)` is one target: it feeds `data` to the code under test
//! and panics when a property does not hold. Two runners call them:
//!
//! - `cargo fuzz` (`fuzz/`, `tests/fuzz/run.sh`): coverage-guided libFuzzer, the long
//!   runs (a minute to hours per target), built with sanitizer coverage;
//! - `tests/replay.rs`, part of every test run: every committed corpus file, then a
//!   bounded number of deterministic mutations of each ([`mutate`]), with the same
//!   dictionaries, in an ordinary test build.
//!
//! Targets: [`client_frame`] (client text frames → protocol parse), [`server_frame`]
//! (the prefix readers the writer and fan-out apply to every outgoing frame, stored
//! entries, `MessageId`), [`api_bodies`] (`POST /api/publish` and `/api/notifications`
//! bodies), [`http_inputs`] (query, development identity, JWT claims,
//! `Sec-WebSocket-Key`, the SSE cursor, trusted proxies).

pub mod api_bodies;
pub mod client_frame;
pub mod http_inputs;
pub mod mutate;
pub mod server_frame;

/// A target: its name (the directory of its corpus and its dictionary) and check.
pub struct Target {
    /// `fuzz/corpus/<name>`, `fuzz_targets/<name>.rs`.
    pub name: &'static str,
    /// The dictionary file under `fuzz/dict/`, if any.
    pub dict: Option<&'static str>,
    /// The property check.
    pub check: fn(&[u8]),
}

/// Every target.
pub const TARGETS: [Target; 4] = [
    Target {
        name: "client_frame",
        dict: Some("json.dict"),
        check: client_frame::check,
    },
    Target {
        name: "server_frame",
        dict: Some("server_frame.dict"),
        check: server_frame::check,
    },
    Target {
        name: "api_bodies",
        dict: Some("json.dict"),
        check: api_bodies::check,
    },
    Target {
        name: "http_inputs",
        dict: Some("http_inputs.dict"),
        check: http_inputs::check,
    },
];
