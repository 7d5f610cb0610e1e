//! The codec's error type.
//!
//! Every variant names the cause, so the session layer can tell a peer that sent a
//! malformed message (close the connection) from one that merely sent too much (also
//! close it, but the audit entry says "oversized"). None of the variants carry peer-supplied
//! strings: an error may be logged, and the log must not become a channel for the peer.

use thiserror::Error;

/// Everything that can be wrong with bytes received from a PostgreSQL peer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// A length word is below the minimum (4 for a message, 8 for a startup packet);
    /// negative lengths land here too.
    #[error("message length {len} is too small")]
    LengthTooSmall { len: i32 },
    /// A length word exceeds the cap the caller allows in this phase.
    #[error("message length {len} exceeds the limit of {max} bytes")]
    LengthTooLarge { len: usize, max: usize },
    /// A startup packet whose code is in the reserved 1234.x range but is not one we know.
    #[error("unknown startup request code {0}")]
    UnknownStartupCode(u32),
    /// A startup packet asking for a protocol major version other than 3.
    #[error("unsupported protocol version {}.{}", .0 >> 16, .0 & 0xffff)]
    UnsupportedProtocolVersion(u32),
    /// A startup packet's parameter list repeats a name. PostgreSQL keeps the last copy;
    /// rejecting it stops the gateway and the server from disagreeing about the user.
    #[error("startup packet repeats a parameter")]
    DuplicateStartupParameter,
    /// A string field ran to the end of its message without a NUL terminator.
    #[error("string field is missing its NUL terminator")]
    MissingNul,
    /// A string field is not valid UTF-8.
    #[error("string field is not valid UTF-8")]
    InvalidUtf8,
    /// A message ended before all of its fixed fields were read.
    #[error("{what} is truncated")]
    Truncated { what: &'static str },
    /// A message carries bytes after its last field.
    #[error("{what} has {extra} unexpected trailing bytes")]
    TrailingData { what: &'static str, extra: usize },
    /// A field length is negative but not -1 (the only negative length, meaning NULL).
    #[error("{what} has an invalid field length {len}")]
    InvalidFieldLength { what: &'static str, len: i32 },
    /// A count field promises more items than the remaining bytes could hold.
    #[error("{what} declares {count} items but only {remaining} bytes remain")]
    CountTooLarge {
        what: &'static str,
        count: i64,
        remaining: usize,
    },
    /// Describe or Close with a kind other than 'S' (statement) or 'P' (portal).
    #[error("invalid statement/portal kind byte {0:#04x}")]
    InvalidKind(u8),
    /// ReadyForQuery with a status other than 'I', 'T' or 'E'.
    #[error("invalid transaction status byte {0:#04x}")]
    InvalidTransactionStatus(u8),
    /// A tag that is not valid in this direction of the protocol.
    #[error("unexpected message tag {tag:#04x}")]
    UnexpectedMessage { tag: u8 },
}
