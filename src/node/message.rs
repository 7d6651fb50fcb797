//! [`JsIncoming`]: a message handed to JS as an object, for `receive()` (the pull API;
//! the hot paths use the batched buffers of `events.rs` and `commands.rs`).
//!
//! Payloads travel as bytes (`data`) or as JSON text (`text`); the JS layer parses the
//! JSON, so Rust never does. Bytes from Rust become a Buffer without a copy.

use napi::bindgen_prelude::Buffer;
use napi_derive::napi;

use crate::handler::Peer;
use crate::message::{Encoding, Message};

/// A one-way message pulled with `receive()`.
#[napi(object)]
pub struct JsIncoming {
    pub id: String,
    #[napi(js_name = "type")]
    pub kind: String,
    pub stream_id: String,
    /// Binary payload.
    pub data: Option<Buffer>,
    /// JSON payload, as text.
    pub text: Option<String>,
    /// Metadata, as JSON text.
    pub metadata: Option<String>,
    pub peer_address: String,
    pub peer_fingerprint: Option<String>,
}

impl JsIncoming {
    pub(crate) fn new(message: Message, peer: &Peer) -> Self {
        let Message {
            id,
            kind,
            channel,
            payload,
            encoding,
            metadata,
        } = message;
        let (data, text) = match encoding {
            Encoding::Json => match String::from_utf8(Vec::from(payload)) {
                Ok(text) => (None, Some(text)),
                Err(e) => (Some(Buffer::from(e.into_bytes())), None),
            },
            Encoding::Binary => (Some(Buffer::from(Vec::from(payload))), None),
        };
        JsIncoming {
            id,
            kind,
            stream_id: if channel.is_empty() {
                crate::message::DEFAULT_CHANNEL.to_owned()
            } else {
                channel
            },
            data,
            text,
            metadata: metadata.map(|m| String::from_utf8_lossy(&m).into_owned()),
            peer_address: peer.address.to_string(),
            peer_fingerprint: peer.fingerprint.as_deref().map(str::to_owned),
        }
    }
}
