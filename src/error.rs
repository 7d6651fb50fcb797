//! Errors of the transport, each with a stable [`ErrorCode`].
//!
//! Every failure a caller can see is an [`Error`]. Its [`Error::code`] is stable across
//! releases and is what the Node binding exposes as `err.code`; the message is for people.

use std::fmt;

/// Stable, machine-readable classification of an [`Error`].
///
/// The string form (`ERR_…`) is part of the public API: Node users read it as `err.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// An option or argument is invalid; the message names it.
    InvalidArg,
    /// No connection could be established (unreachable, refused, timed out).
    Connect,
    /// TLS failed: a certificate was rejected, or no way to trust the peer was configured.
    Tls,
    /// The operation did not complete in time.
    Timeout,
    /// The caller aborted the operation.
    Aborted,
    /// The connection broke while the operation was in flight.
    ConnectionLost,
    /// A message is larger than `max_message_bytes`.
    MessageTooLarge,
    /// The peer's handler failed; the message carries what it said.
    Remote,
    /// The transport was closed.
    Closed,
    /// The peer violated the wire protocol.
    Protocol,
}

impl ErrorCode {
    /// The stable string form, e.g. `"ERR_TIMEOUT"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidArg => "ERR_INVALID_ARG",
            ErrorCode::Connect => "ERR_CONNECT",
            ErrorCode::Tls => "ERR_TLS",
            ErrorCode::Timeout => "ERR_TIMEOUT",
            ErrorCode::Aborted => "ERR_ABORTED",
            ErrorCode::ConnectionLost => "ERR_CONNECTION_LOST",
            ErrorCode::MessageTooLarge => "ERR_MESSAGE_TOO_LARGE",
            ErrorCode::Remote => "ERR_REMOTE",
            ErrorCode::Closed => "ERR_CLOSED",
            ErrorCode::Protocol => "ERR_PROTOCOL",
        }
    }

    /// Parses the string form; `None` for anything unknown.
    pub fn parse(code: &str) -> Option<Self> {
        Some(match code {
            "ERR_INVALID_ARG" => ErrorCode::InvalidArg,
            "ERR_CONNECT" => ErrorCode::Connect,
            "ERR_TLS" => ErrorCode::Tls,
            "ERR_TIMEOUT" => ErrorCode::Timeout,
            "ERR_ABORTED" => ErrorCode::Aborted,
            "ERR_CONNECTION_LOST" => ErrorCode::ConnectionLost,
            "ERR_MESSAGE_TOO_LARGE" => ErrorCode::MessageTooLarge,
            "ERR_REMOTE" => ErrorCode::Remote,
            "ERR_CLOSED" => ErrorCode::Closed,
            "ERR_PROTOCOL" => ErrorCode::Protocol,
            _ => return None,
        })
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error of the transport.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// An option or argument is invalid.
    #[error("invalid {name}: {reason}")]
    InvalidArg {
        /// The option or argument, e.g. `tls.certPath`.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Dialling a peer failed.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// The address dialled.
        addr: String,
        /// Why it failed.
        reason: String,
    },
    /// TLS failed: a certificate was rejected or no trust is configured.
    #[error("tls: {0}")]
    Tls(String),
    /// The operation did not finish within its deadline.
    #[error("{what} timed out after {ms} ms")]
    Timeout {
        /// What timed out, e.g. `request`.
        what: &'static str,
        /// The deadline in milliseconds.
        ms: u64,
    },
    /// The caller aborted the operation.
    #[error("operation aborted")]
    Aborted,
    /// The connection broke while the operation was in flight.
    #[error("connection lost: {0}")]
    ConnectionLost(String),
    /// A message exceeds the configured size limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// The size of the message (or at least this many bytes, when read incrementally).
        size: u64,
        /// The configured `max_message_bytes`.
        limit: u64,
    },
    /// A message exceeds the peer's size limit (a request it refused, or a reply it
    /// could not send).
    #[error("message too large for the peer: {0}")]
    RefusedByPeer(String),
    /// The peer's handler failed.
    #[error("remote handler failed: {0}")]
    Remote(String),
    /// The transport was closed.
    #[error("transport closed")]
    Closed,
    /// The peer violated the wire protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::InvalidArg { .. } => ErrorCode::InvalidArg,
            Error::Connect { .. } => ErrorCode::Connect,
            Error::Tls(_) => ErrorCode::Tls,
            Error::Timeout { .. } => ErrorCode::Timeout,
            Error::Aborted => ErrorCode::Aborted,
            Error::ConnectionLost(_) => ErrorCode::ConnectionLost,
            Error::MessageTooLarge { .. } | Error::RefusedByPeer(_) => ErrorCode::MessageTooLarge,
            Error::Remote(_) => ErrorCode::Remote,
            Error::Closed => ErrorCode::Closed,
            Error::Protocol(_) => ErrorCode::Protocol,
        }
    }

    /// Shorthand for [`Error::InvalidArg`].
    pub fn invalid(name: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidArg {
            name: name.into(),
            reason: reason.into(),
        }
    }

    /// The text an error frame carries: the message without this crate's prefix, so
    /// the receiving side does not repeat it.
    pub(crate) fn wire_text(&self) -> String {
        /// Longest error text put on the wire; keeps error frames small.
        const MAX: usize = 4096;
        let mut text = match self {
            Error::Remote(text) | Error::Protocol(text) | Error::RefusedByPeer(text) => {
                text.clone()
            }
            other => other.to_string(),
        };
        if text.len() > MAX {
            let mut cut = MAX;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            text.push('…');
        }
        text
    }

    /// Rebuilds an error that a peer reported in an error frame.
    pub(crate) fn from_remote(code: &str, message: String) -> Self {
        match ErrorCode::parse(code) {
            Some(ErrorCode::MessageTooLarge) => Error::RefusedByPeer(message),
            Some(ErrorCode::Protocol) => Error::Protocol(message),
            _ => Error::Remote(message),
        }
    }
}
