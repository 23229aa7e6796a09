//! Why a submission was refused: the channel error codes a guest sees, and
//! the typed error the validator returns.

use std::error::Error;
use std::fmt;

use thiserror::Error;

use crate::addr::GpuVa;
use crate::decode::{DecodeError, Privileged};
use crate::memory::FetchFault;
use crate::ring::RingError;
use crate::validator::{MAX_BATCH_DEPTH, MAX_BATCH_STARTS, MAX_SUBMISSION_BYTES};

/// The first channel error code that is not the validator's: 16 and above
/// belong to the engines (16 engine MMU fault, 17 watchdog).
pub const FIRST_ENGINE_ERROR_CODE: u32 = 16;

/// A channel error code, as a guest reads it (codes 1 to 15 are the
/// validator's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ChannelErrorCode {
    /// The opcode is not assigned.
    UnknownOpcode = 1,
    /// The header's length is not the opcode's, or the command runs past
    /// the end of its ring span or batch.
    BadLength = 2,
    /// Physical addressing, a privileged batch, a context or page-table
    /// root switch.
    Privileged = 3,
    /// LOAD_REGISTER_IMM or STORE_REGISTER outside the guest whitelist.
    RegisterNotAllowed = 4,
    /// SET_SCANOUT to a head other than head 0.
    DisplayHead = 5,
    /// BATCH_START nested deeper than [`MAX_BATCH_DEPTH`].
    BatchDepth = 6,
    /// The submission would copy more than [`MAX_SUBMISSION_BYTES`], or
    /// run more than [`MAX_BATCH_STARTS`] batches.
    StreamTooLong = 7,
    /// A reserved bit, an address at or above 2^48, a range past 2^48, a
    /// compare operation, a misaligned or out-of-bounds field.
    BadField = 8,
    /// The ring or a batch could not be read through the channel's MMU.
    FetchFault = 9,
    /// The ring registers: size, base, GET or PUT.
    BadRing = 10,
    /// A batch whose length ends without BATCH_END.
    UnterminatedBatch = 11,
    /// BATCH_END in the ring, or before the last dword of its batch.
    StrayBatchEnd = 12,
}

impl ChannelErrorCode {
    /// Every code, in numeric order.
    pub const ALL: [ChannelErrorCode; 12] = [
        ChannelErrorCode::UnknownOpcode,
        ChannelErrorCode::BadLength,
        ChannelErrorCode::Privileged,
        ChannelErrorCode::RegisterNotAllowed,
        ChannelErrorCode::DisplayHead,
        ChannelErrorCode::BatchDepth,
        ChannelErrorCode::StreamTooLong,
        ChannelErrorCode::BadField,
        ChannelErrorCode::FetchFault,
        ChannelErrorCode::BadRing,
        ChannelErrorCode::UnterminatedBatch,
        ChannelErrorCode::StrayBatchEnd,
    ];

    /// The code's number.
    pub const fn value(self) -> u32 {
        self as u32
    }

    /// The name the device interface uses (`"BAD_LENGTH"`).
    pub const fn name(self) -> &'static str {
        match self {
            ChannelErrorCode::UnknownOpcode => "UNKNOWN_OPCODE",
            ChannelErrorCode::BadLength => "BAD_LENGTH",
            ChannelErrorCode::Privileged => "PRIVILEGED",
            ChannelErrorCode::RegisterNotAllowed => "REGISTER_NOT_ALLOWED",
            ChannelErrorCode::DisplayHead => "DISPLAY_HEAD",
            ChannelErrorCode::BatchDepth => "BATCH_DEPTH",
            ChannelErrorCode::StreamTooLong => "STREAM_TOO_LONG",
            ChannelErrorCode::BadField => "BAD_FIELD",
            ChannelErrorCode::FetchFault => "FETCH_FAULT",
            ChannelErrorCode::BadRing => "BAD_RING",
            ChannelErrorCode::UnterminatedBatch => "UNTERMINATED_BATCH",
            ChannelErrorCode::StrayBatchEnd => "STRAY_BATCH_END",
        }
    }
}

impl fmt::Display for ChannelErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.value())
    }
}

/// What the validator refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum Refusal {
    /// The command does not decode (codes 1, 2, 8).
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A privileged form (codes 3, 4, 5).
    #[error("{0}")]
    Privileged(Privileged),
    /// BATCH_START would run a batch at nesting level `level` (the ring is
    /// level 0).
    #[error("BATCH_START would nest a batch at level {level}, past {MAX_BATCH_DEPTH}")]
    BatchDepth {
        /// The level the batch would run at.
        level: u8,
    },
    /// BATCH_START would bring the bytes copied for the submission to
    /// `bytes`.
    #[error("BATCH_START would copy {bytes} bytes in one submission, past {MAX_SUBMISSION_BYTES}")]
    StreamTooLong {
        /// Ring span and batches, this one included.
        bytes: u64,
    },
    /// BATCH_START would be the submission's 4097th.
    #[error("BATCH_START would run more than {MAX_BATCH_STARTS} batches in one submission")]
    TooManyBatches,
    /// The ring span or a batch could not be read.
    #[error("the commands could not be read through the channel's MMU")]
    FetchFault(#[source] FetchFault),
    /// The ring registers break their rules.
    #[error(transparent)]
    BadRing(#[from] RingError),
    /// The batch ends without BATCH_END.
    #[error("the batch ends without BATCH_END")]
    UnterminatedBatch,
    /// BATCH_END in the ring, or not as the last dword of its batch.
    #[error("BATCH_END in the ring or before the last dword of its batch")]
    StrayBatchEnd,
}

impl Refusal {
    /// The channel error code.
    pub const fn code(&self) -> ChannelErrorCode {
        match self {
            Refusal::Decode(error) => error.code(),
            Refusal::Privileged(form) => form.code(),
            Refusal::BatchDepth { .. } => ChannelErrorCode::BatchDepth,
            Refusal::StreamTooLong { .. } | Refusal::TooManyBatches => {
                ChannelErrorCode::StreamTooLong
            }
            Refusal::FetchFault(_) => ChannelErrorCode::FetchFault,
            Refusal::BadRing(_) => ChannelErrorCode::BadRing,
            Refusal::UnterminatedBatch => ChannelErrorCode::UnterminatedBatch,
            Refusal::StrayBatchEnd => ChannelErrorCode::StrayBatchEnd,
        }
    }
}

/// Where a refused command sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CommandSite {
    /// GPU VA of the command's header dword.
    pub va: GpuVa,
    /// Its nesting level: 0 in the ring, n in a batch started at level
    /// n − 1.
    pub level: u8,
}

/// A refused submission: nothing of it runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ValidateError {
    refusal: Refusal,
    site: Option<CommandSite>,
}

impl ValidateError {
    pub(crate) fn at(site: CommandSite, refusal: impl Into<Refusal>) -> Self {
        Self {
            refusal: refusal.into(),
            site: Some(site),
        }
    }

    pub(crate) fn ring(error: RingError) -> Self {
        Self {
            refusal: Refusal::BadRing(error),
            site: None,
        }
    }

    /// The channel error code (for the channel's error register).
    pub const fn code(&self) -> ChannelErrorCode {
        self.refusal.code()
    }

    /// The channel error's detail (for an ERROR_INFO register): the GPU VA
    /// of the offending command's header; for FETCH_FAULT the command that
    /// named the unreadable memory (the BATCH_START, or for the ring span
    /// itself the ring's VA at GET); for BAD_RING the offending register's
    /// value.
    pub const fn info(&self) -> u64 {
        match (&self.refusal, self.site) {
            (_, Some(site)) => site.va.get(),
            (Refusal::BadRing(error), None) => error.value(),
            (_, None) => 0,
        }
    }

    /// What was refused.
    pub const fn refusal(&self) -> &Refusal {
        &self.refusal
    }

    /// The offending command; `None` for BAD_RING.
    pub const fn site(&self) -> Option<CommandSite> {
        self.site
    }
}

impl fmt::Display for ValidateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "channel error {}", self.code())?;
        if let Some(site) = self.site {
            write!(f, " at GPU VA {} (level {})", site.va, site.level)?;
        }
        write!(f, ": {}", self.refusal)
    }
}

// The refusal is part of the message, so the chain goes on from its own
// source (the MMU's fault) rather than repeating it.
impl Error for ValidateError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.refusal.source()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_1_to_12_and_leave_16_up_to_the_engines() {
        for (index, code) in ChannelErrorCode::ALL.into_iter().enumerate() {
            assert_eq!(code.value() as usize, index + 1);
            assert!(code.value() < FIRST_ENGINE_ERROR_CODE);
        }
    }

    #[test]
    fn info_is_the_command_va_or_the_ring_register() {
        let site = CommandSite {
            va: GpuVa::new(0x1234).unwrap(),
            level: 2,
        };
        let error = ValidateError::at(site, Refusal::StrayBatchEnd);
        assert_eq!(error.info(), 0x1234);
        assert_eq!(error.code().value(), 12);
        let ring = ValidateError::ring(RingError::Get(6));
        assert_eq!((ring.info(), ring.code().value()), (6, 10));
        assert_eq!(ring.site(), None);
    }

    #[test]
    fn a_fetch_fault_is_the_source_not_part_of_the_message() {
        let fault = FetchFault {
            va: 0x5000,
            reason: 3,
        };
        let site = CommandSite {
            va: GpuVa::new(0x40).unwrap(),
            level: 0,
        };
        let error = ValidateError::at(site, Refusal::FetchFault(fault));
        assert_eq!(
            error.to_string(),
            "channel error FETCH_FAULT (9) at GPU VA 0x40 (level 0): the commands could not be \
             read through the channel's MMU"
        );
        assert_eq!(error.source().unwrap().to_string(), fault.to_string());
    }
}
