//! Why a client's message was refused, and the errno it gets for it
//! (docs/vfio-user.md lists every one).

use thiserror::Error;
use vgpu_emulation::interrupts::IrqError;
use vgpu_emulation::region::AccessError;
use vgpu_mdev::{DmaError, VramError};
use vgpu_protocol::{EncodeError, ProtocolError, errno};

use crate::eventfd::TriggerError;

/// A request refused: the reply carries [`errno`](Self::errno), the log
/// line this error and its causes.
#[derive(Debug, Error)]
pub enum Refusal {
    /// The message could not be decoded.
    #[error("malformed request")]
    Malformed(#[source] ProtocolError),
    /// Anything but `VERSION` before the version was negotiated.
    #[error("VERSION must be the first message")]
    NotNegotiated,
    /// A second `VERSION`.
    #[error("VERSION sent twice")]
    VersionTwice,
    /// The proposed version or capabilities cannot be served.
    #[error("version negotiation failed")]
    Negotiation(#[source] ProtocolError),
    /// `DMA_MAP` refused by the vGPU's windows.
    #[error("DMA_MAP refused")]
    DmaMap(#[source] DmaError),
    /// `DMA_UNMAP` named no map exactly.
    #[error("DMA_UNMAP refused")]
    DmaUnmap(#[source] DmaError),
    /// A region index the device does not have.
    #[error("no region {0}")]
    NoRegion(u32),
    /// The device model refused a region access.
    #[error("region {region} access refused")]
    Region {
        /// The region index.
        region: u32,
        /// What the device model said.
        #[source]
        source: AccessError,
    },
    /// A BAR0 (VRAM) access outside the aperture.
    #[error("BAR0 access refused")]
    Vram(#[source] VramError),
    /// A reply that does not fit the wire format.
    #[error("the reply does not fit")]
    Reply(#[source] EncodeError),
    /// `GET_IRQ_INFO` for an index the device does not have.
    #[error("GET_IRQ_INFO refused")]
    IrqInfo(#[source] IrqError),
    /// `SET_IRQS` refused by the interrupt state.
    #[error("SET_IRQS refused")]
    SetIrqs(#[source] IrqError),
    /// `SET_IRQS` gave a descriptor that is not an eventfd.
    #[error("SET_IRQS: descriptor {index} is refused")]
    Trigger {
        /// Its position among the message's descriptors.
        index: usize,
        /// Why it is refused.
        #[source]
        source: TriggerError,
    },
    /// `DEVICE_FEATURE`: none is supported.
    #[error("device feature {0} is not supported")]
    Feature(u32),
    /// A command the server does not implement.
    #[error("{0} is not supported")]
    Unsupported(String),
    /// A reply from the client that answers nothing the server asked.
    #[error("unexpected reply")]
    UnexpectedReply(#[source] ProtocolError),
}

impl Refusal {
    /// The errno the client receives.
    pub fn errno(&self) -> i32 {
        match self {
            Refusal::Malformed(e) | Refusal::Negotiation(e) => e.errno(),
            Refusal::DmaMap(e) | Refusal::DmaUnmap(e) => dma_errno(e),
            Refusal::Region { source, .. } => source.errno(),
            Refusal::IrqInfo(e) | Refusal::SetIrqs(e) => e.errno(),
            Refusal::Feature(_) | Refusal::Unsupported(_) => errno::ENOTSUP,
            Refusal::NotNegotiated
            | Refusal::VersionTwice
            | Refusal::NoRegion(_)
            | Refusal::Vram(_)
            | Refusal::Reply(_)
            | Refusal::Trigger { .. }
            | Refusal::UnexpectedReply(_) => errno::EINVAL,
        }
    }
}

/// The errno of a refused DMA map or unmap (docs/vfio-user.md, "DMA_MAP
/// and DMA_UNMAP").
fn dma_errno(e: &DmaError) -> i32 {
    match e {
        DmaError::Overlap { .. } => errno::EEXIST,
        DmaError::TooManyWindows { .. } => errno::ENOSPC,
        DmaError::TooManyBytes { .. } => libc::ENOMEM,
        DmaError::NoSuchWindow { .. } => libc::ENOENT,
        DmaError::ReadOnly { .. } => libc::EPERM,
        DmaError::Map { .. } => errno::EFAULT,
        _ => errno::EINVAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_refusals_keep_the_protocol_errno() {
        let e = ProtocolError::UnknownCommand(99);
        let errno = e.errno();
        assert_eq!(Refusal::Malformed(e).errno(), errno);
    }

    #[test]
    fn session_order_refusals_are_einval() {
        assert_eq!(Refusal::NotNegotiated.errno(), errno::EINVAL);
        assert_eq!(Refusal::VersionTwice.errno(), errno::EINVAL);
        assert_eq!(Refusal::NoRegion(9).errno(), errno::EINVAL);
    }

    #[test]
    fn unsupported_features_are_enotsup() {
        assert_eq!(Refusal::Feature(3).errno(), errno::ENOTSUP);
        assert_eq!(
            Refusal::Unsupported("DIRTY_PAGES".into()).errno(),
            errno::ENOTSUP
        );
    }

    #[test]
    fn dma_refusals_have_their_documented_errnos() {
        let cases = [
            (
                DmaError::Overlap {
                    iova: 0,
                    size: 1,
                    existing_iova: 0,
                    existing_size: 1,
                },
                errno::EEXIST,
            ),
            (DmaError::NoSuchWindow { iova: 0, size: 1 }, libc::ENOENT),
        ];
        for (e, expected) in cases {
            assert_eq!(Refusal::DmaUnmap(e).errno(), expected);
        }
    }

    #[test]
    fn a_refused_trigger_says_which_descriptor() {
        let r = Refusal::Trigger {
            index: 2,
            source: TriggerError::NotAnEventfd {
                kind: "pipe:[1]".into(),
            },
        };
        assert_eq!(r.errno(), errno::EINVAL);
        assert!(r.to_string().contains("descriptor 2"));
    }
}
