//! [`Header`]: the parsed 16-byte message header.
//!
//! Parsing checks only what framing needs (16 bytes present, `msg_size` at
//! least 16), so that every framed message has a header to answer; the
//! type and flag bits are checked by [`decode_request`](crate::decode_request).

use zerocopy::FromBytes;

use crate::error::ProtocolError;
use crate::wire::{Command, HEADER_SIZE, HeaderFlags, RawHeader};

/// Whether a message is a command or a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageKind {
    /// A command (type 0).
    Command,
    /// A reply (type 1).
    Reply,
    /// A type the protocol does not define.
    Unknown(u32),
}

/// A message header in host form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Message id, chosen by the sender of a command and echoed in the reply.
    pub msg_id: u16,
    /// Raw command number (see [`Header::command`]).
    pub command: u16,
    /// Size of the whole message, header included; at least 16.
    pub msg_size: u32,
    /// Raw [`HeaderFlags`] bits.
    pub flags: u32,
    /// errno of an error reply.
    pub error: u32,
}

impl Header {
    /// Parses the first 16 bytes of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, ProtocolError> {
        let (raw, _) = RawHeader::read_from_prefix(bytes)
            .map_err(|_| ProtocolError::TruncatedHeader { len: bytes.len() })?;
        let header = Self::from_raw(&raw);
        if (header.msg_size as usize) < HEADER_SIZE {
            return Err(ProtocolError::MessageSizeTooSmall {
                msg_size: header.msg_size,
            });
        }
        Ok(header)
    }

    /// The header's fields, unchecked.
    pub fn from_raw(raw: &RawHeader) -> Self {
        Self {
            msg_id: raw.msg_id.get(),
            command: raw.command.get(),
            msg_size: raw.msg_size.get(),
            flags: raw.flags.get(),
            error: raw.error.get(),
        }
    }

    /// The wire form.
    pub fn to_raw(&self) -> RawHeader {
        RawHeader {
            msg_id: self.msg_id.into(),
            command: self.command.into(),
            msg_size: self.msg_size.into(),
            flags: self.flags.into(),
            error: self.error.into(),
        }
    }

    /// The command, if the number is one the protocol defines.
    pub fn command(&self) -> Result<Command, u16> {
        Command::try_from(self.command)
    }

    /// Command or reply, from the type bits.
    pub fn kind(&self) -> MessageKind {
        match self.flags & HeaderFlags::TYPE_MASK.bits() {
            0 => MessageKind::Command,
            1 => MessageKind::Reply,
            other => MessageKind::Unknown(other),
        }
    }

    /// Whether this is a reply.
    pub fn is_reply(&self) -> bool {
        self.kind() == MessageKind::Reply
    }

    /// Whether the ERROR bit is set (in a reply: the command failed with [`Header::error`]).
    pub fn is_error(&self) -> bool {
        self.flags & HeaderFlags::ERROR.bits() != 0
    }

    /// Whether the NO_REPLY bit is set.
    pub fn no_reply(&self) -> bool {
        self.flags & HeaderFlags::NO_REPLY.bits() != 0
    }

    /// Whether the sender expects an answer: a command without NO_REPLY.
    ///
    /// This holds for error answers too: a posted write that fails is not
    /// answered (QEMU would not match the reply to anything).
    pub fn wants_reply(&self) -> bool {
        self.kind() == MessageKind::Command && !self.no_reply()
    }

    /// Size of the body that follows the header.
    pub fn payload_len(&self) -> usize {
        (self.msg_size as usize).saturating_sub(HEADER_SIZE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(msg_id: u16, command: u16, size: u32, flags: u32, error: u32) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&msg_id.to_le_bytes());
        v.extend_from_slice(&command.to_le_bytes());
        v.extend_from_slice(&size.to_le_bytes());
        v.extend_from_slice(&flags.to_le_bytes());
        v.extend_from_slice(&error.to_le_bytes());
        v
    }

    #[test]
    fn parses_all_fields() {
        let header = Header::parse(&bytes(7, 9, 32, 0x10, 0)).unwrap();
        assert_eq!(
            header,
            Header {
                msg_id: 7,
                command: 9,
                msg_size: 32,
                flags: 0x10,
                error: 0
            }
        );
        assert_eq!(header.command(), Ok(Command::RegionRead));
        assert_eq!(header.kind(), MessageKind::Command);
        assert!(header.no_reply());
        assert!(!header.wants_reply());
        assert_eq!(header.payload_len(), 16);
    }

    #[test]
    fn short_input_is_a_truncated_header() {
        let err = Header::parse(&bytes(1, 1, 16, 0, 0)[..15]).unwrap_err();
        assert!(matches!(err, ProtocolError::TruncatedHeader { len: 15 }));
        assert_eq!(err.errno(), 22);
    }

    #[test]
    fn size_below_header_is_rejected() {
        let err = Header::parse(&bytes(1, 1, 15, 0, 0)).unwrap_err();
        assert!(matches!(
            err,
            ProtocolError::MessageSizeTooSmall { msg_size: 15 }
        ));
    }

    #[test]
    fn reply_and_unknown_types_are_told_apart() {
        let reply = Header::parse(&bytes(1, 1, 16, 0x21, 5)).unwrap();
        assert!(reply.is_reply() && reply.is_error());
        assert_eq!(reply.error, 5);
        let odd = Header::parse(&bytes(1, 1, 16, 0x3, 0)).unwrap();
        assert_eq!(odd.kind(), MessageKind::Unknown(3));
    }

    #[test]
    fn raw_round_trip() {
        let header = Header {
            msg_id: 0xbeef,
            command: 13,
            msg_size: 16,
            flags: 1,
            error: 22,
        };
        assert_eq!(Header::from_raw(&header.to_raw()), header);
    }
}
