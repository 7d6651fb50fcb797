//! The unit agents exchange: [`Message`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use bytes::Bytes;

/// How a message's payload bytes are to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encoding {
    /// Opaque bytes.
    #[default]
    Binary,
    /// UTF-8 JSON text.
    Json,
}

/// A message between agents: a request, a reply or a one-way message.
///
/// This is the `AgentMessage` of the Node API: `kind` is its `type`, `channel` its
/// `streamId`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Message {
    /// Identifier; [`Message::ensure_id`] fills it in when empty. A reply carries the id of
    /// its request.
    pub id: String,
    /// What the message is: `task`, `result`, `status`, `coordination`, `heartbeat`, …
    pub kind: String,
    /// The ordered channel a one-way message travels on (`default` when empty).
    pub channel: String,
    /// The payload.
    pub payload: Bytes,
    /// How to read [`Message::payload`].
    pub encoding: Encoding,
    /// Optional metadata as UTF-8 JSON text.
    pub metadata: Option<Bytes>,
}

/// The channel used when a message names none.
pub const DEFAULT_CHANNEL: &str = "default";

impl Message {
    /// A message with a binary payload.
    pub fn binary(kind: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Message {
            kind: kind.into(),
            payload: payload.into(),
            encoding: Encoding::Binary,
            ..Message::default()
        }
    }

    /// A message whose payload is JSON text (not checked here; the receiver parses it).
    pub fn json(kind: impl Into<String>, json_text: impl Into<Bytes>) -> Self {
        Message {
            kind: kind.into(),
            payload: json_text.into(),
            encoding: Encoding::Json,
            ..Message::default()
        }
    }

    /// Sets the channel (`streamId`).
    pub fn with_channel(mut self, channel: impl Into<String>) -> Self {
        self.channel = channel.into();
        self
    }

    /// Sets the id.
    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// The channel name, `default` when none was set.
    pub fn channel_name(&self) -> &str {
        if self.channel.is_empty() {
            DEFAULT_CHANNEL
        } else {
            &self.channel
        }
    }

    /// Gives the message a process-unique id if it has none.
    pub fn ensure_id(&mut self) {
        if self.id.is_empty() {
            self.id = next_id();
        }
    }

    /// Size on the wire of the variable part (fields and payload), as limited by
    /// `max_message_bytes`.
    pub fn wire_size(&self) -> u64 {
        crate::codec::body_len(self)
    }
}

/// A process-unique id: a random 64-bit prefix chosen once, then a counter.
fn next_id() -> String {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| {
        let mut bytes = [0u8; 8];
        // The system RNG only fails when the OS has no entropy source at all; a fixed
        // prefix then still gives ids unique within the process.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        u64::from_le_bytes(bytes)
    });
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix:016x}-{n:x}")
}
