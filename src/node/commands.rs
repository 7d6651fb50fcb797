//! Commands JS submits in one Buffer per tick (`submit`), parsed here on the JS thread.
//!
//! Records (big-endian), written by `index.js`:
//! ```text
//! REQUEST  1 | token u32 | flags u8 (bit 0: cancellable) | timeout_ms u32 (0: default)
//!            | addr_len u16 | addr | frame (kind Request)
//! SEND     2 | token u32 | addr_len u16 | addr | frame (kind Message)
//! RESPOND  3 | token u32 | frame (kind Response, or Error with the message as payload)
//! ```
//! Frames are wire frames (PROTOCOL.md). A command whose code has the [`DETACHED`] bit
//! set carries its payload as the submit call's next detached Buffer: its frame stops
//! after the fields (the header still gives the payload's length). A command that cannot
//! be carried out is answered with a FAILED event for its token; a batch that does not
//! parse is refused whole.

use bytes::Bytes;

use crate::codec::{self, FrameKind, TakenFrame};
use crate::error::Error;

use super::events::DETACHED;

pub(crate) const REQUEST: u8 = 1;
pub(crate) const SEND: u8 = 2;
pub(crate) const RESPOND: u8 = 3;

/// One parsed command.
pub(crate) enum Command {
    Request {
        token: u32,
        cancellable: bool,
        timeout_ms: u32,
        /// The address as JS wrote it (UTF-8 not yet checked): a slice of the batch.
        addr: Bytes,
        frame: Result<TakenFrame, Error>,
    },
    Send {
        token: u32,
        addr: Bytes,
        frame: Result<TakenFrame, Error>,
    },
    Respond {
        token: u32,
        frame: Result<TakenFrame, Error>,
    },
}

/// Reads commands from a submitted batch.
pub(crate) struct Commands {
    buf: Bytes,
    at: usize,
    limit: u64,
    /// The payloads of DETACHED commands, in order.
    detached: std::vec::IntoIter<Bytes>,
}

impl Commands {
    pub(crate) fn new(buf: Bytes, detached: Vec<Bytes>, limit: u64) -> Self {
        Commands {
            buf,
            at: 0,
            limit,
            detached: detached.into_iter(),
        }
    }

    fn u8(&mut self) -> Result<u8, Error> {
        let value = *self.buf.get(self.at).ok_or_else(truncated)?;
        self.at += 1;
        Ok(value)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let value: [u8; N] = self
            .buf
            .get(self.at..self.at + N)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(truncated)?;
        self.at += N;
        Ok(value)
    }

    fn u32(&mut self) -> Result<u32, Error> {
        self.bytes::<4>().map(u32::from_be_bytes)
    }

    /// A length-prefixed text field, as a slice of the batch (no copy).
    fn text(&mut self) -> Result<Bytes, Error> {
        let len = u16::from_be_bytes(self.bytes::<2>()?) as usize;
        if self.buf.len() - self.at < len {
            return Err(truncated());
        }
        let raw = self.buf.slice(self.at..self.at + len);
        self.at += len;
        Ok(raw)
    }

    /// The frame at the cursor, expected of `kind`. A frame that is malformed stops the
    /// batch (its length cannot be trusted); one that is too large or of the wrong kind
    /// fails only its own command.
    /// Replies are not limited here: the core refuses an oversized reply with the right
    /// error for the requester.
    fn frame(
        &mut self,
        kinds: &[FrameKind],
        limited: bool,
        detached: bool,
    ) -> Result<Result<TakenFrame, Error>, Error> {
        let payload = match detached {
            true => Some(self.detached.next().ok_or_else(|| {
                Error::Protocol("a command's detached payload is missing".into())
            })?),
            false => None,
        };
        match codec::take_frame(&self.buf, self.at, u64::MAX, payload) {
            Ok(taken) => {
                self.at += taken.len;
                let size = (taken.head.len() - codec::HEADER_LEN + taken.payload.len()) as u64;
                if !kinds.contains(&taken.kind) {
                    Ok(Err(Error::Protocol(format!(
                        "unexpected {:?} frame",
                        taken.kind
                    ))))
                } else if limited && size > self.limit {
                    Ok(Err(Error::MessageTooLarge {
                        size,
                        limit: self.limit,
                    }))
                } else {
                    Ok(Ok(taken))
                }
            }
            Err(e) => Err(e),
        }
    }
}

impl Iterator for Commands {
    type Item = Result<Command, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at >= self.buf.len() {
            return None;
        }
        let command = (|| {
            let code = self.u8()?;
            let detached = code & DETACHED != 0;
            Ok(match code & !DETACHED {
                REQUEST => {
                    let token = self.u32()?;
                    let flags = self.u8()?;
                    let timeout_ms = self.u32()?;
                    let addr = self.text()?;
                    let frame = self.frame(&[FrameKind::Request], true, detached)?;
                    Command::Request {
                        token,
                        cancellable: flags & 1 != 0,
                        timeout_ms,
                        addr,
                        frame,
                    }
                }
                SEND => {
                    let token = self.u32()?;
                    let addr = self.text()?;
                    let frame = self.frame(&[FrameKind::Message], true, detached)?;
                    Command::Send { token, addr, frame }
                }
                RESPOND => {
                    let token = self.u32()?;
                    let frame =
                        self.frame(&[FrameKind::Response, FrameKind::Error], false, detached)?;
                    Command::Respond { token, frame }
                }
                other => return Err(Error::Protocol(format!("unknown command {other}"))),
            })
        })();
        if command.is_err() {
            self.at = self.buf.len();
        }
        Some(command)
    }
}

fn truncated() -> Error {
    Error::Protocol("command batch ends inside a command".into())
}
