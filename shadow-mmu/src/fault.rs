//! Why a range of GPU VA has no shadow entry: the faults a walk finds, and
//! the reason codes the device reports for them in `FAULT_INFO` bits 19:16.

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

use crate::addr::GpuVa;
use crate::entry::{EntryError, Level};
use crate::memory::GuestMemoryError;
use crate::policy::PteRejection;
use crate::pte::PteTarget;

/// A fault reason as the device interface numbers it (`FAULT_INFO` bits
/// 19:16, `XLATE_STATUS`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum FaultCode {
    /// 1: an entry on the path is not present.
    NotPresent = 1,
    /// 2: an entry on the path is invalid (reserved bits, misplaced LARGE).
    InvalidEntry = 2,
    /// 3: a page or table lies (partly) outside the VRAM slice.
    OutsideVram = 3,
    /// 4: a page or table is not inside one DMA map, or the map was removed.
    NotMapped = 4,
    /// 5: a write through a read-only map, entry or path.
    ReadOnly = 5,
    /// 6: the walk hit its bounds (table or entry limit, a cycle, or the
    /// owner's page budget).
    WalkLimit = 6,
}

impl FaultCode {
    /// The code's number.
    pub const fn number(self) -> u8 {
        self as u8
    }
}

impl fmt::Display for FaultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            FaultCode::NotPresent => "not present",
            FaultCode::InvalidEntry => "invalid entry",
            FaultCode::OutsideVram => "outside VRAM",
            FaultCode::NotMapped => "not mapped",
            FaultCode::ReadOnly => "read-only",
            FaultCode::WalkLimit => "walk limit",
        };
        f.write_str(name)
    }
}

/// Why a walk could not produce a mapping.
#[derive(Clone, Debug, Error)]
pub enum FaultReason {
    /// VALID is clear in an entry on the path.
    #[error("entry not present")]
    NotPresent,
    /// An entry on the path is malformed.
    #[error("invalid entry")]
    InvalidEntry(#[source] EntryError),
    /// A page, or a table on the path, is not memory the vGPU owns (or not
    /// with the permission the entry asks for).
    #[error("entry refused")]
    Rejected(#[source] PteRejection),
    /// A table on the path is owned but could not be read.
    #[error("reading the table at {table} failed")]
    TableUnreadable {
        /// Where the table is.
        table: PteTarget,
        /// Why the read failed (behind an `Arc` so that faults stay
        /// cheap to clone; the error itself is not `Clone`).
        #[source]
        source: Arc<GuestMemoryError>,
    },
    /// An entry names a table that is already on its own path.
    #[error("the table at {table} is on its own path")]
    Cycle {
        /// The table named a second time.
        table: PteTarget,
    },
    /// The walk read as many tables, or examined as many entries, as its
    /// limits allow; the rest of the range was not walked.
    #[error("walk limit reached")]
    WalkLimit,
    /// The re-shadow mapped as many pages as its owner allowed (the
    /// vGPU's budget of translations is spent); the rest of the range was
    /// not walked.
    #[error("page budget spent")]
    PageBudget,
}

impl FaultReason {
    /// The reason code the device reports.
    pub fn code(&self) -> FaultCode {
        match self {
            FaultReason::NotPresent => FaultCode::NotPresent,
            FaultReason::InvalidEntry(_) => FaultCode::InvalidEntry,
            FaultReason::Rejected(rejection) => match rejection {
                // The decoder only yields aligned addresses, so this is
                // unreachable from guest tables; it is still an invalid entry.
                PteRejection::Misaligned { .. } => FaultCode::InvalidEntry,
                PteRejection::OutsideVram { .. } => FaultCode::OutsideVram,
                PteRejection::NotMapped { .. } => FaultCode::NotMapped,
                PteRejection::ReadOnly { .. } => FaultCode::ReadOnly,
            },
            FaultReason::TableUnreadable { .. } => FaultCode::NotMapped,
            FaultReason::Cycle { .. } | FaultReason::WalkLimit | FaultReason::PageBudget => {
                FaultCode::WalkLimit
            }
        }
    }
}

/// A range of GPU VA that a walk left without a mapping, and why.
#[derive(Clone, Debug, Error)]
#[error("GPU VA {va}, {len:#x} bytes, level-{} entry", level.number())]
pub struct WalkFault {
    /// First faulting address: the entry's span, clipped to the walked
    /// range.
    pub va: GpuVa,
    /// Bytes of VA the fault covers.
    pub len: u64,
    /// Level of the entry that faulted (the entry naming a table, for a
    /// fault about that table).
    pub level: Level,
    /// Why.
    #[source]
    pub reason: FaultReason,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::addr::{Iova, PageSize, VramOffset};

    #[test]
    fn codes_follow_the_device_interface() {
        let size = PageSize::Size4KiB;
        let cases = [
            (FaultReason::NotPresent, 1),
            (
                FaultReason::InvalidEntry(EntryError::MisalignedLarge { raw: 0 }),
                2,
            ),
            (
                FaultReason::Rejected(PteRejection::OutsideVram {
                    offset: VramOffset(0),
                    size,
                    slice_size: 0,
                }),
                3,
            ),
            (
                FaultReason::Rejected(PteRejection::NotMapped {
                    iova: Iova(0),
                    size,
                }),
                4,
            ),
            (
                FaultReason::Rejected(PteRejection::ReadOnly {
                    iova: Iova(0),
                    size,
                }),
                5,
            ),
            (FaultReason::WalkLimit, 6),
            (FaultReason::PageBudget, 6),
            (
                FaultReason::Cycle {
                    table: PteTarget::Vram(VramOffset(0)),
                },
                6,
            ),
        ];
        for (reason, number) in cases {
            assert_eq!(reason.code().number(), number, "{reason:?}");
        }
    }
}
