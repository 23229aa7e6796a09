//! [`ProtocolError`]: why a message from the client was refused, and the
//! errno the server puts in its error reply.

use crate::wire::Command;

/// errno values used in error replies (Linux numbering, which both ends of
/// a Unix socket share).
pub mod errno {
    /// Argument list too long: a transfer over `max_data_xfer_size`.
    pub const E2BIG: i32 = 7;
    /// Bad file descriptor.
    pub const EBADF: i32 = 9;
    /// Bad address.
    pub const EFAULT: i32 = 14;
    /// Already exists (a DMA map over an existing one).
    pub const EEXIST: i32 = 17;
    /// Invalid argument.
    pub const EINVAL: i32 = 22;
    /// No space left (e.g. too many DMA maps).
    pub const ENOSPC: i32 = 28;
    /// Function not implemented: an unknown command number.
    pub const ENOSYS: i32 = 38;
    /// Protocol error.
    pub const EPROTO: i32 = 71;
    /// Operation not supported.
    pub const ENOTSUP: i32 = 95;
}

/// A message from the peer that the decoder refuses.
///
/// Every variant maps to a nonzero errno with [`ProtocolError::errno`], for
/// the error reply.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// Fewer than 16 bytes where a header was expected.
    #[error("truncated header: {len} bytes")]
    TruncatedHeader {
        /// Bytes available.
        len: usize,
    },
    /// `msg_size` smaller than the header itself: the stream cannot be framed.
    #[error("message size {msg_size} is smaller than the header")]
    MessageSizeTooSmall {
        /// The header's `msg_size`.
        msg_size: u32,
    },
    /// `msg_size` does not match the bytes that came with the header.
    #[error("message size {msg_size} does not match the {payload_len}-byte payload")]
    MessageSizeMismatch {
        /// The header's `msg_size`.
        msg_size: u32,
        /// Payload bytes received.
        payload_len: usize,
    },
    /// A reply where a command was expected.
    #[error("unexpected reply (id {msg_id}, command {command})")]
    UnexpectedReply {
        /// The reply's message id.
        msg_id: u16,
        /// The reply's command number.
        command: u16,
    },
    /// Type bits other than command (0) or reply (1).
    #[error("unknown message type {0}")]
    UnknownMessageType(u32),
    /// Header flag bits that the protocol does not define, or ERROR on a command.
    #[error("invalid header flags {0:#x}")]
    InvalidHeaderFlags(u32),
    /// A command number the protocol does not define.
    #[error("unknown command {0}")]
    UnknownCommand(u16),
    /// A server → client command sent by the client.
    #[error("{0:?} is a server-to-client command")]
    WrongDirection(Command),
    /// A body whose length is wrong for the command.
    #[error("{command:?}: {len}-byte body, expected {expected}")]
    BodyLength {
        /// The command.
        command: Command,
        /// Body length received.
        len: usize,
        /// What the command needs ("32", "at least 20", ...).
        expected: &'static str,
    },
    /// `argsz` smaller than the fixed structure.
    #[error("{command:?}: argsz {argsz} is smaller than {min}")]
    ArgszTooSmall {
        /// The command.
        command: Command,
        /// The request's argsz.
        argsz: u32,
        /// The structure size.
        min: u32,
    },
    /// Flag bits that the command does not define, or a combination it forbids.
    #[error("{command:?}: invalid flags {flags:#x}")]
    InvalidFlags {
        /// The command.
        command: Command,
        /// The flags.
        flags: u32,
    },
    /// Flags that are defined but that vgpud does not implement.
    #[error("{command:?}: unsupported flags {flags:#x}")]
    UnsupportedFlags {
        /// The command.
        command: Command,
        /// The flags.
        flags: u32,
    },
    /// A field that must be zero is not.
    #[error("{command:?}: reserved field {field} is {value:#x}")]
    ReservedNonZero {
        /// The command.
        command: Command,
        /// The field's name.
        field: &'static str,
        /// Its value.
        value: u64,
    },
    /// The number of file descriptors does not fit the command.
    #[error("{command:?}: {received} file descriptors, expected {expected}")]
    WrongFdCount {
        /// The command.
        command: Command,
        /// File descriptors received with the message.
        received: usize,
        /// What the command takes ("0", "0 or 1", "at most count").
        expected: &'static str,
    },
    /// A count that disagrees with the data that came with it.
    #[error("{command:?}: count {count} but {data_len} bytes of data")]
    CountMismatch {
        /// The command.
        command: Command,
        /// The count field.
        count: u64,
        /// Data bytes received.
        data_len: usize,
    },
    /// A transfer larger than the negotiated `max_data_xfer_size`.
    #[error("{command:?}: {count}-byte transfer exceeds max_data_xfer_size {max}")]
    TransferTooLarge {
        /// The command.
        command: Command,
        /// The requested size.
        count: u64,
        /// The negotiated maximum.
        max: u32,
    },
    /// A zero-length access or mapping.
    #[error("{command:?}: zero length")]
    ZeroLength {
        /// The command.
        command: Command,
    },
    /// `base + len` overflows 64 (or, for IRQ ranges, 32) bits.
    #[error("{command:?}: range {base:#x} + {len:#x} overflows")]
    RangeOverflow {
        /// The command.
        command: Command,
        /// Start of the range.
        base: u64,
        /// Length of the range.
        len: u64,
    },
    /// The version's capability string is not NUL-terminated, UTF-8, or JSON
    /// of the right shape.
    #[error("invalid version capabilities: {reason}")]
    InvalidCapabilities {
        /// What is wrong.
        reason: &'static str,
        /// The JSON parser's error, when that is what failed.
        #[source]
        source: Option<serde_json::Error>,
    },
    /// A protocol major version other than 0.
    #[error("unsupported protocol version {major}.{minor}")]
    UnsupportedVersion {
        /// Proposed major.
        major: u16,
        /// Proposed minor.
        minor: u16,
    },
    /// Capabilities that leave nothing in common (e.g. no shared page size).
    #[error("incompatible capabilities: {0}")]
    IncompatibleCapabilities(&'static str),
}

impl ProtocolError {
    /// The errno for the error reply: never 0.
    pub fn errno(&self) -> i32 {
        use errno::*;
        match self {
            Self::UnknownCommand(_) => ENOSYS,
            Self::UnexpectedReply { .. } => EPROTO,
            Self::TransferTooLarge { .. } => E2BIG,
            Self::UnsupportedFlags { .. } | Self::UnsupportedVersion { .. } => ENOTSUP,
            Self::IncompatibleCapabilities(_) => ENOTSUP,
            Self::TruncatedHeader { .. }
            | Self::MessageSizeTooSmall { .. }
            | Self::MessageSizeMismatch { .. }
            | Self::UnknownMessageType(_)
            | Self::InvalidHeaderFlags(_)
            | Self::WrongDirection(_)
            | Self::BodyLength { .. }
            | Self::ArgszTooSmall { .. }
            | Self::InvalidFlags { .. }
            | Self::ReservedNonZero { .. }
            | Self::WrongFdCount { .. }
            | Self::CountMismatch { .. }
            | Self::ZeroLength { .. }
            | Self::RangeOverflow { .. }
            | Self::InvalidCapabilities { .. } => EINVAL,
        }
    }
}
