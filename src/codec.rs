//! The wire framing (see `PROTOCOL.md`): one frame per message, length-prefixed.
//!
//! ```text
//! header (12 bytes): version u8 = 1 | kind u8 | flags u8 | reserved u8 = 0
//!                    | fields_len u32 BE | payload_len u32 BE
//! fields:            id_len u16 BE, id | type_len u16 BE, type
//!                    | channel_len u16 BE, channel | metadata_len u32 BE, metadata
//! payload:           payload_len bytes
//! ```

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::error::Error;
use crate::message::{Encoding, Message};

/// The framing version this crate speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// Length of the fixed frame header.
pub const HEADER_LEN: usize = 12;

const FLAG_JSON: u8 = 0b0000_0001;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameKind {
    /// A request; the reply comes back on the same bidirectional stream.
    Request = 1,
    /// A successful reply.
    Response = 2,
    /// A failed reply: `type` holds an error code, the payload a UTF-8 message.
    Error = 3,
    /// A one-way message on a unidirectional channel stream.
    Message = 4,
    /// Sent on its own bidirectional stream by a side about to close: the payload is
    /// the number of channel streams (u64 BE) it opened on this connection. The peer
    /// answers with an empty Response once it has accepted that many and read them all.
    Goodbye = 5,
}

impl FrameKind {
    fn from_u8(value: u8) -> Option<Self> {
        Some(match value {
            1 => FrameKind::Request,
            2 => FrameKind::Response,
            3 => FrameKind::Error,
            4 => FrameKind::Message,
            5 => FrameKind::Goodbye,
            _ => return None,
        })
    }
}

/// Length of the fields section plus the payload: what `max_message_bytes` limits.
pub(crate) fn body_len(message: &Message) -> u64 {
    fields_len(message) as u64 + message.payload.len() as u64
}

fn fields_len(message: &Message) -> usize {
    2 + message.id.len()
        + 2
        + message.kind.len()
        + 2
        + message.channel.len()
        + 4
        + message.metadata.as_ref().map_or(0, |m| m.len())
}

/// Encodes `message` as a frame: the header and fields, then the payload (not copied).
///
/// # Errors
/// [`Error::InvalidArg`] when a text field exceeds 65,535 bytes, and
/// [`Error::MessageTooLarge`] when the body exceeds `limit`.
pub fn encode(kind: FrameKind, message: &Message, limit: u64) -> Result<(Bytes, Bytes), Error> {
    let size = body_len(message);
    if size > limit {
        return Err(Error::MessageTooLarge { size, limit });
    }
    let payload_len = u32::try_from(message.payload.len()).map_err(|_| Error::MessageTooLarge {
        size,
        limit: u32::MAX as u64,
    })?;
    let fields = fields_len(message);
    let mut head = BytesMut::with_capacity(HEADER_LEN + fields);
    head.put_u8(PROTOCOL_VERSION);
    head.put_u8(kind as u8);
    head.put_u8(if message.encoding == Encoding::Json {
        FLAG_JSON
    } else {
        0
    });
    head.put_u8(0);
    head.put_u32(fields as u32);
    head.put_u32(payload_len);
    put_short_text(&mut head, "id", &message.id)?;
    put_short_text(&mut head, "type", &message.kind)?;
    put_short_text(&mut head, "streamId", &message.channel)?;
    let metadata = message.metadata.as_deref().unwrap_or_default();
    head.put_u32(metadata.len() as u32);
    head.put_slice(metadata);
    Ok((head.freeze(), message.payload.clone()))
}

/// Encodes a frame into one contiguous buffer (tests and benches).
pub fn encode_to_vec(kind: FrameKind, message: &Message, limit: u64) -> Result<Vec<u8>, Error> {
    let (head, payload) = encode(kind, message, limit)?;
    let mut out = Vec::with_capacity(head.len() + payload.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(&payload);
    Ok(out)
}

fn put_short_text(out: &mut BytesMut, name: &str, text: &str) -> Result<(), Error> {
    let len = u16::try_from(text.len())
        .map_err(|_| Error::invalid(name, format!("{} bytes is longer than 65535", text.len())))?;
    out.put_u16(len);
    out.put_slice(text.as_bytes());
    Ok(())
}

/// Reads the next frame. `Ok(None)` when the stream ended cleanly before a frame began.
///
/// # Errors
/// [`Error::MessageTooLarge`] when the header announces a body over `limit` (nothing more
/// is read), [`Error::Protocol`] for a malformed frame (its fields are checked before its
/// payload is read, so malformed fields fail without reading on), [`Error::ConnectionLost`]
/// when the stream fails.
///
/// Not cancel-safe: a frame may be partly consumed.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: u64,
) -> Result<Option<(FrameKind, Message)>, Error> {
    match read_wire_frame(reader, limit).await? {
        Some(frame) => Ok(Some((frame.kind, frame.into_message()?))),
        None => Ok(None),
    }
}

/// A frame read whole, its fields checked but not copied out of it: the Node binding
/// hands replies and requests to JS as they came (decoding each into a [`Message`] and
/// encoding it again cost three allocations per frame).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WireFrame {
    pub(crate) kind: FrameKind,
    /// The header and fields, as on the wire.
    pub(crate) head: Bytes,
    pub(crate) payload: Bytes,
}

impl WireFrame {
    /// The frame's `id` field ("" when it is not there or not UTF-8, which in a frame
    /// read by [`read_wire_frame`] it cannot be).
    pub(crate) fn id(&self) -> &str {
        head_id(&self.head)
            .and_then(|id| std::str::from_utf8(id).ok())
            .unwrap_or_default()
    }

    /// The frame as a message, its fields copied out.
    ///
    /// # Errors
    /// None in practice: the fields were checked when the frame was read.
    pub(crate) fn into_message(self) -> Result<Message, Error> {
        head_message(&self.head, self.payload)
    }
}

/// The raw `id` field of a frame whose header and fields are `head`, if it is there.
pub(crate) fn head_id(head: &[u8]) -> Option<&[u8]> {
    let fields = head.get(HEADER_LEN..)?;
    let len = u16::from_be_bytes([*fields.first()?, *fields.get(1)?]) as usize;
    fields.get(2..2 + len)
}

/// The message of a frame whose header and fields are `head` (checked already), with
/// `payload`.
pub(crate) fn head_message(head: &[u8], payload: Bytes) -> Result<Message, Error> {
    let (Some(flags), Some(fields)) = (head.get(2), head.get(HEADER_LEN..)) else {
        return Err(Error::Protocol("frame shorter than its header".into()));
    };
    let json = flags & FLAG_JSON != 0;
    let fields = Fields::parse(fields)?;
    Ok(Message {
        payload,
        encoding: if json {
            Encoding::Json
        } else {
            Encoding::Binary
        },
        ..fields.to_message()
    })
}

/// [`read_frame`], the frame kept as it was read.
pub(crate) async fn read_wire_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    limit: u64,
) -> Result<Option<WireFrame>, Error> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        let n = reader.read(&mut header[filled..]).await.map_err(io_error)?;
        if n == 0 {
            if filled == 0 {
                return Ok(None);
            }
            return Err(Error::Protocol("stream ended inside a frame header".into()));
        }
        filled += n;
    }
    let (kind, _, fields_len, payload_len) = parse_header(&header)?;
    let size = fields_len as u64 + payload_len as u64;
    if size > limit {
        return Err(Error::MessageTooLarge { size, limit });
    }
    let head_len = HEADER_LEN + fields_len as usize;
    let mut head = crate::buffer::with_capacity(head_len);
    head.put_slice(&header);
    read_into(reader, &mut head, head_len).await?;
    Fields::parse(&head[HEADER_LEN..])?;
    let mut payload = crate::buffer::with_capacity(payload_len as usize);
    read_into(reader, &mut payload, payload_len as usize).await?;
    Ok(Some(WireFrame {
        kind,
        head: head.freeze(),
        payload: payload.freeze(),
    }))
}

/// Reads into `buf` until it holds `len` bytes, without zeroing its room first (a
/// 64 MiB payload would otherwise be written twice).
async fn read_into<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    len: usize,
) -> Result<(), Error> {
    while buf.len() < len {
        let remaining = len - buf.len();
        let mut window = buf.limit(remaining);
        if reader.read_buf(&mut window).await.map_err(io_error)? == 0 {
            return Err(Error::Protocol("stream ended inside a frame".into()));
        }
    }
    Ok(())
}

/// Checks that the stream ends here, after the last frame.
///
/// # Errors
/// [`Error::Protocol`] when more bytes follow, [`Error::ConnectionLost`] when the stream
/// fails.
pub async fn expect_end<R: AsyncRead + Unpin>(reader: &mut R) -> Result<(), Error> {
    let mut probe = [0u8; 1];
    match reader.read(&mut probe).await.map_err(io_error)? {
        0 => Ok(()),
        _ => Err(Error::Protocol("bytes follow the frame".into())),
    }
}

/// A frame found inside a larger buffer by [`take_frame`].
#[cfg_attr(not(feature = "node"), allow(dead_code))] // used by the Node binding
#[derive(Debug)]
pub(crate) struct TakenFrame {
    pub(crate) kind: FrameKind,
    /// The frame's header and fields as they are on the wire (a slice of the buffer).
    pub(crate) head: Bytes,
    /// The payload: a slice of the buffer, or the detached payload (no copy).
    pub(crate) payload: Bytes,
    /// The `streamId` field, empty when none was set (the only field most commands need
    /// apart from the frame as it is: the others are checked, not copied).
    pub(crate) channel: String,
    /// Bytes the frame occupies in the buffer.
    pub(crate) len: usize,
}

#[cfg_attr(not(feature = "node"), allow(dead_code))] // used by the Node binding
impl TakenFrame {
    /// The whole message, its fields copied out of the head.
    ///
    /// # Errors
    /// None in practice: the fields were checked when the frame was taken.
    pub(crate) fn into_message(self) -> Result<Message, Error> {
        head_message(&self.head, self.payload)
    }
}

/// Decodes the frame that starts at `at` in `buf`, without copying its payload. With
/// `detached`, that is the payload: the frame in `buf` then ends after its fields, and
/// its header's payload length must be `detached`'s.
///
/// # Errors
/// [`Error::MessageTooLarge`] over `limit`; [`Error::Protocol`] when malformed or cut.
#[cfg_attr(not(feature = "node"), allow(dead_code))] // used by the Node binding
pub(crate) fn take_frame(
    buf: &Bytes,
    at: usize,
    limit: u64,
    detached: Option<Bytes>,
) -> Result<TakenFrame, Error> {
    let rest = buf.get(at..).unwrap_or_default();
    let header: &[u8; HEADER_LEN] = rest
        .get(..HEADER_LEN)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| Error::Protocol("frame shorter than its header".into()))?;
    let (kind, _, fields_len, payload_len) = parse_header(header)?;
    let size = fields_len as u64 + payload_len as u64;
    if size > limit {
        return Err(Error::MessageTooLarge { size, limit });
    }
    let fields_end = HEADER_LEN + fields_len as usize;
    let inline = if detached.is_some() {
        0
    } else {
        payload_len as usize
    };
    let end = fields_end + inline;
    if rest.len() < end {
        return Err(Error::Protocol(
            "frame runs past the end of its buffer".into(),
        ));
    }
    let fields = Fields::parse(&rest[HEADER_LEN..fields_end])?;
    let channel = fields.channel.to_owned();
    let payload = match detached {
        Some(payload) if payload.len() as u64 == payload_len as u64 => payload,
        Some(payload) => {
            return Err(Error::Protocol(format!(
                "frame announces a {payload_len}-byte payload but its detached payload has {}",
                payload.len()
            )))
        }
        None => buf.slice(at + fields_end..at + end),
    };
    Ok(TakenFrame {
        kind,
        head: buf.slice(at..at + fields_end),
        payload,
        channel,
        len: end,
    })
}

/// Decodes one frame from a complete buffer (the inverse of [`encode_to_vec`]).
///
/// # Errors
/// As [`read_frame`], and [`Error::Protocol`] when bytes follow the frame.
pub fn decode(frame: &[u8], limit: u64) -> Result<(FrameKind, Message), Error> {
    if frame.len() < HEADER_LEN {
        return Err(Error::Protocol("frame shorter than its header".into()));
    }
    let (head, rest) = frame.split_at(HEADER_LEN);
    let (kind, json, fields_len, payload_len) = parse_header(head.try_into().expect("split"))?;
    let size = fields_len as u64 + payload_len as u64;
    if size > limit {
        return Err(Error::MessageTooLarge { size, limit });
    }
    if rest.len() as u64 != size {
        return Err(Error::Protocol(format!(
            "frame announces {size} bytes but carries {}",
            rest.len()
        )));
    }
    let (fields, payload) = rest.split_at(fields_len as usize);
    let mut message = parse_fields(fields)?;
    message.payload = Bytes::copy_from_slice(payload);
    message.encoding = if json {
        Encoding::Json
    } else {
        Encoding::Binary
    };
    Ok((kind, message))
}

fn parse_header(header: &[u8; HEADER_LEN]) -> Result<(FrameKind, bool, u32, u32), Error> {
    if header[0] != PROTOCOL_VERSION {
        return Err(Error::Protocol(format!(
            "unsupported framing version {} (this side speaks {PROTOCOL_VERSION})",
            header[0]
        )));
    }
    let kind = FrameKind::from_u8(header[1])
        .ok_or_else(|| Error::Protocol(format!("unknown frame kind {}", header[1])))?;
    if header[2] & !FLAG_JSON != 0 || header[3] != 0 {
        return Err(Error::Protocol("reserved header bits are set".into()));
    }
    let fields_len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
    let payload_len = u32::from_be_bytes([header[8], header[9], header[10], header[11]]);
    Ok((kind, header[2] & FLAG_JSON != 0, fields_len, payload_len))
}

fn parse_fields(fields: &[u8]) -> Result<Message, Error> {
    Fields::parse(fields).map(|f| f.to_message())
}

/// A frame's fields, checked, as views of its bytes.
struct Fields<'a> {
    id: &'a str,
    kind: &'a str,
    channel: &'a str,
    metadata: &'a [u8],
}

impl<'a> Fields<'a> {
    fn parse(mut fields: &'a [u8]) -> Result<Self, Error> {
        let id = take_text(&mut fields, 2, "id")?;
        let kind = take_text(&mut fields, 2, "type")?;
        let channel = take_text(&mut fields, 2, "streamId")?;
        let metadata = take(&mut fields, 4, "metadata")?;
        if !fields.is_empty() {
            return Err(Error::Protocol(format!(
                "{} stray bytes after the fields",
                fields.len()
            )));
        }
        Ok(Fields {
            id,
            kind,
            channel,
            metadata,
        })
    }

    /// A message with these fields (and no payload).
    fn to_message(&self) -> Message {
        Message {
            id: self.id.to_owned(),
            kind: self.kind.to_owned(),
            channel: self.channel.to_owned(),
            metadata: (!self.metadata.is_empty()).then(|| Bytes::copy_from_slice(self.metadata)),
            ..Message::default()
        }
    }
}

fn take<'a>(input: &mut &'a [u8], len_bytes: usize, name: &str) -> Result<&'a [u8], Error> {
    if input.len() < len_bytes {
        return Err(Error::Protocol(format!(
            "fields end before the length of {name}"
        )));
    }
    let (len, rest) = input.split_at(len_bytes);
    let len = len.iter().fold(0usize, |acc, b| (acc << 8) | *b as usize);
    if rest.len() < len {
        return Err(Error::Protocol(format!(
            "{name} runs past the end of the fields"
        )));
    }
    let (value, rest) = rest.split_at(len);
    *input = rest;
    Ok(value)
}

fn take_text<'a>(input: &mut &'a [u8], len_bytes: usize, name: &str) -> Result<&'a str, Error> {
    let bytes = take(input, len_bytes, name)?;
    std::str::from_utf8(bytes).map_err(|_| Error::Protocol(format!("{name} is not valid UTF-8")))
}

fn io_error(err: std::io::Error) -> Error {
    Error::ConnectionLost(err.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Message {
        Message {
            id: "abc".into(),
            kind: "task".into(),
            channel: "jobs".into(),
            payload: Bytes::from_static(b"{\"n\":1}"),
            encoding: Encoding::Json,
            metadata: Some(Bytes::from_static(b"{\"p\":2}")),
        }
    }

    #[test]
    fn round_trips() {
        let frame = encode_to_vec(FrameKind::Request, &sample(), 1 << 20).unwrap();
        assert_eq!(frame.len() as u64, HEADER_LEN as u64 + sample().wire_size());
        let (kind, decoded) = decode(&frame, 1 << 20).unwrap();
        assert_eq!(kind, FrameKind::Request);
        assert_eq!(decoded, sample());
    }

    #[tokio::test]
    async fn reads_frames_from_a_stream_in_order() {
        let mut bytes = encode_to_vec(FrameKind::Message, &sample(), 1 << 20).unwrap();
        let second = Message::binary("status", vec![0u8, 255, 7]).with_id("2");
        bytes.extend(encode_to_vec(FrameKind::Message, &second, 1 << 20).unwrap());
        let mut reader = &bytes[..];
        let (_, first) = read_frame(&mut reader, 1 << 20).await.unwrap().unwrap();
        assert_eq!(first, sample());
        let (_, next) = read_frame(&mut reader, 1 << 20).await.unwrap().unwrap();
        assert_eq!(next, second);
        assert_eq!(read_frame(&mut reader, 1 << 20).await.unwrap(), None);
    }

    #[test]
    fn refuses_oversized_bodies_on_both_ends() {
        let big = Message::binary("x", vec![0u8; 100]);
        let err = encode(FrameKind::Message, &big, 50).unwrap_err();
        assert_eq!(err.code(), crate::ErrorCode::MessageTooLarge);
        let frame = encode_to_vec(FrameKind::Message, &big, 1000).unwrap();
        assert_eq!(
            decode(&frame, 50).unwrap_err().code(),
            crate::ErrorCode::MessageTooLarge
        );
    }

    #[test]
    fn rejects_malformed_frames_without_panicking() {
        let good = encode_to_vec(FrameKind::Request, &sample(), 1 << 20).unwrap();
        // Every truncation, and every single-byte corruption, is an error or a value,
        // never a panic.
        for cut in 0..good.len() {
            assert!(decode(&good[..cut], 1 << 20).is_err());
        }
        for i in 0..good.len() {
            for value in [0u8, 1, 0x7f, 0xff] {
                let mut bad = good.clone();
                bad[i] = value;
                let _ = decode(&bad, 1 << 20);
            }
        }
        let mut wrong_version = good.clone();
        wrong_version[0] = 9;
        assert_eq!(
            decode(&wrong_version, 1 << 20).unwrap_err().code(),
            crate::ErrorCode::Protocol
        );
    }

    #[test]
    fn takes_frames_out_of_a_larger_buffer_without_copying() {
        let mut buf = vec![9u8, 9];
        buf.extend(encode_to_vec(FrameKind::Request, &sample(), 1 << 20).unwrap());
        let second = Message::binary("x", vec![1, 2, 3]);
        buf.extend(encode_to_vec(FrameKind::Message, &second, 1 << 20).unwrap());
        let buf = Bytes::from(buf);
        let first = take_frame(&buf, 2, 1 << 20, None).unwrap();
        let first_len = first.len;
        assert_eq!(first.channel, "jobs");
        assert_eq!(
            (first.kind, first.into_message().unwrap()),
            (FrameKind::Request, sample())
        );
        let next = take_frame(&buf, 2 + first_len, 1 << 20, None).unwrap();
        assert_eq!(next.channel, "");
        assert_eq!(2 + first_len + next.len, buf.len());
        assert_eq!(next.into_message().unwrap(), second);
        assert!(take_frame(&buf, 3, 1 << 20, None).is_err());
        assert_eq!(
            take_frame(&buf, 2, 10, None).unwrap_err().code(),
            crate::ErrorCode::MessageTooLarge
        );
    }

    #[test]
    fn takes_a_frame_whose_payload_is_detached() {
        let message = Message::binary("big", vec![5u8; 300]);
        let (head, payload) = encode(FrameKind::Request, &message, u64::MAX).unwrap();
        let mut buf = head.to_vec();
        buf.push(0xee); // the next record
        let buf = Bytes::from(buf);
        let taken = take_frame(&buf, 0, 1 << 20, Some(payload.clone())).unwrap();
        assert_eq!(taken.len, head.len());
        assert_eq!(taken.payload.as_ptr(), payload.as_ptr(), "copied");
        assert_eq!(taken.into_message().unwrap(), message);
        let short = payload.slice(1..);
        assert_eq!(
            take_frame(&buf, 0, 1 << 20, Some(short))
                .unwrap_err()
                .code(),
            crate::ErrorCode::Protocol
        );
        assert_eq!(
            take_frame(&buf, 0, 100, Some(payload)).unwrap_err().code(),
            crate::ErrorCode::MessageTooLarge
        );
    }

    #[test]
    fn refuses_text_fields_over_u16() {
        let long = Message::binary("x".repeat(70_000), Vec::new());
        assert_eq!(
            encode(FrameKind::Request, &long, u64::MAX)
                .unwrap_err()
                .code(),
            crate::ErrorCode::InvalidArg
        );
    }
}
