//! Errors of broker operations.

/// A broker operation failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The backing store cannot be reached; nothing was stored or sent.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The request cannot be served as given (a cursor this backend did not make).
    #[error("invalid: {0}")]
    Invalid(String),
    /// The gateway stopped listening for broker events (shutting down).
    #[error("broker event channel closed")]
    Closed,
}

/// Result of a broker operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
