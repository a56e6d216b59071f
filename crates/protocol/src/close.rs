//! WebSocket close codes and what each means in this protocol.

/// A close code of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum CloseCode {
    /// Normal closure.
    Normal = 1000,
    /// The node is shutting down (graceful drain): reconnect elsewhere.
    GoingAway = 1001,
    /// WebSocket protocol error.
    Protocol = 1002,
    /// A binary frame: this protocol is text only.
    Unsupported = 1003,
    /// Invalid UTF-8 in a text frame.
    InvalidPayload = 1007,
    /// Policy: the token expired while connected, or the session was kicked.
    Policy = 1008,
    /// A frame or message over the size limit.
    TooBig = 1009,
    /// Internal error.
    Internal = 1011,
    /// Slow consumer: the send queue overflowed.
    TryAgainLater = 1013,
}

impl CloseCode {
    /// Every code, for metrics that pre-register their label values.
    pub const ALL: [CloseCode; 9] = [
        CloseCode::Normal,
        CloseCode::GoingAway,
        CloseCode::Protocol,
        CloseCode::Unsupported,
        CloseCode::InvalidPayload,
        CloseCode::Policy,
        CloseCode::TooBig,
        CloseCode::Internal,
        CloseCode::TryAgainLater,
    ];

    /// The numeric code sent on the wire.
    pub fn code(self) -> u16 {
        self as u16
    }

    /// The code for a number, when it is one of the contract's.
    pub fn from_u16(code: u16) -> Option<Self> {
        CloseCode::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The short reason sent in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            CloseCode::Normal => "normal closure",
            CloseCode::GoingAway => "node shutting down",
            CloseCode::Protocol => "protocol error",
            CloseCode::Unsupported => "binary frames are not supported",
            CloseCode::InvalidPayload => "invalid utf-8",
            CloseCode::Policy => "policy violation",
            CloseCode::TooBig => "message too big",
            CloseCode::Internal => "internal error",
            CloseCode::TryAgainLater => "slow consumer",
        }
    }
}
