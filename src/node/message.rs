//! AgentMessages across the boundary: [`JsIncoming`] out to JS, [`JsOutgoing`] in.
//!
//! Payloads travel as bytes (`data`) or as JSON text (`text`); the JS layer does the
//! `JSON.stringify`/`JSON.parse`, so Rust never parses JSON. Bytes from Rust become a
//! Buffer without a copy; bytes from JS are copied once, on the JS thread, so no
//! JS-owned memory is ever dropped on a tokio thread (that crashed an earlier quinn
//! binding for Node).

use bytes::Bytes;
use napi::bindgen_prelude::{Buffer, Uint8Array};
use napi_derive::napi;

use crate::error::Error;
use crate::handler::Peer;
use crate::message::{Encoding, Message};

/// A message arriving in JS: a request (with a `token` to answer it), a reply, or a
/// one-way message.
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
    pub peer_address: Option<String>,
    pub peer_fingerprint: Option<String>,
    /// For requests: pass it to `respond`.
    pub token: Option<u32>,
}

impl JsIncoming {
    pub(crate) fn new(message: Message, peer: Option<&Peer>, token: Option<u32>) -> Self {
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
            peer_address: peer.map(|p| p.address.to_string()),
            peer_fingerprint: peer.and_then(|p| p.fingerprint.as_deref().map(str::to_owned)),
            token,
        }
    }
}

/// A message leaving JS (the members of `sendBatch`).
#[napi(object)]
pub struct JsOutgoing {
    pub id: Option<String>,
    #[napi(js_name = "type")]
    pub kind: String,
    pub stream_id: Option<String>,
    pub data: Option<Uint8Array>,
    pub text: Option<String>,
    pub metadata: Option<String>,
}

impl TryFrom<JsOutgoing> for Message {
    type Error = Error;

    fn try_from(js: JsOutgoing) -> Result<Self, Error> {
        outgoing(
            js.id,
            js.kind,
            js.stream_id,
            js.text,
            js.data.as_deref(),
            js.metadata,
        )
    }
}

/// Builds a core message from the parts JS passes; `text` (JSON) or `data` (bytes).
pub(crate) fn outgoing(
    id: Option<String>,
    kind: String,
    channel: Option<String>,
    text: Option<String>,
    data: Option<&[u8]>,
    metadata: Option<String>,
) -> Result<Message, Error> {
    let (payload, encoding) = match (text, data) {
        (Some(text), None) => (Bytes::from(text.into_bytes()), Encoding::Json),
        (None, Some(data)) => (Bytes::copy_from_slice(data), Encoding::Binary),
        (None, None) => (Bytes::from_static(b"null"), Encoding::Json),
        (Some(_), Some(_)) => return Err(Error::invalid("payload", "both text and bytes given")),
    };
    Ok(Message {
        id: id.unwrap_or_default(),
        kind,
        channel: channel.unwrap_or_default(),
        payload,
        encoding,
        metadata: metadata.map(|m| Bytes::from(m.into_bytes())),
    })
}
