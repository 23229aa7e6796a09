//! Interrupt routing: the VFIO interrupt indices, `SET_IRQS` semantics and
//! which trigger a raised vector is delivered on.
//!
//! Generic over the trigger `T` (an eventfd in the daemon, anything in
//! tests), so this stays free of the transport. Semantics follow Linux
//! vfio-pci's `VFIO_DEVICE_SET_IRQS`, with the leniencies of the device
//! interface document: several indices may hold triggers at once (a vector
//! goes to the first that can take it), and mask/unmask are accepted without
//! effect for the indices other than INTx.

use crate::errno::{EINVAL, ENOTSUP};

/// `VFIO_IRQ_INFO_EVENTFD`.
pub const IRQ_INFO_EVENTFD: u32 = 1 << 0;
/// `VFIO_IRQ_INFO_MASKABLE`.
pub const IRQ_INFO_MASKABLE: u32 = 1 << 1;
/// `VFIO_IRQ_INFO_AUTOMASKED`.
pub const IRQ_INFO_AUTOMASKED: u32 = 1 << 2;
/// `VFIO_IRQ_INFO_NORESIZE`.
pub const IRQ_INFO_NORESIZE: u32 = 1 << 3;
/// Number of interrupt indices of a VFIO PCI device.
pub const IRQ_INDEX_COUNT: u32 = 5;
/// Most vectors one index can have (the width of the fire bitmap).
pub const MAX_VECTORS: u32 = 64;

/// A VFIO PCI interrupt index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum IrqIndex {
    /// Legacy INTx (level, maskable, auto-masked).
    Intx = 0,
    /// MSI (one vector).
    Msi = 1,
    /// MSI-X (1 + channels vectors).
    Msix = 2,
    /// Error reporting.
    Err = 3,
    /// Device request (the daemon wants the device back).
    Req = 4,
}

impl IrqIndex {
    const ALL: [IrqIndex; IRQ_INDEX_COUNT as usize] = [
        IrqIndex::Intx,
        IrqIndex::Msi,
        IrqIndex::Msix,
        IrqIndex::Err,
        IrqIndex::Req,
    ];
}

impl TryFrom<u32> for IrqIndex {
    type Error = IrqError;

    fn try_from(index: u32) -> Result<Self, IrqError> {
        IrqIndex::ALL
            .get(index as usize)
            .copied()
            .ok_or(IrqError::InvalidIndex(index))
    }
}

/// What `VFIO_USER_DEVICE_GET_IRQ_INFO` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqInfo {
    /// The index.
    pub index: u32,
    /// Number of vectors.
    pub count: u32,
    /// `IRQ_INFO_*` flags.
    pub flags: u32,
}

/// `VFIO_IRQ_SET_ACTION_*`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqAction {
    /// `ACTION_MASK`.
    Mask,
    /// `ACTION_UNMASK`.
    Unmask,
    /// `ACTION_TRIGGER`.
    Trigger,
}

/// `VFIO_IRQ_SET_DATA_*`, with the payload decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IrqData<T> {
    /// `DATA_NONE`.
    None,
    /// `DATA_BOOL`: one flag per vector of the range.
    Bool(Vec<bool>),
    /// `DATA_EVENTFD`: a trigger per vector (`None` for an fd of -1); when
    /// shorter than the range, the rest of the range is unassigned.
    Triggers(Vec<Option<T>>),
}

/// A decoded `SET_IRQS` request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetIrqs<T> {
    /// Interrupt index.
    pub index: u32,
    /// What to do.
    pub action: IrqAction,
    /// First vector of the range.
    pub start: u32,
    /// Number of vectors in the range.
    pub count: u32,
    /// Payload.
    pub data: IrqData<T>,
}

/// What the owner must do after a successful `SET_IRQS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SetIrqsOutcome {
    /// Bitmap of vectors of the request's index to signal now (assigned
    /// vectors selected by `DATA_NONE`/`DATA_BOOL` with `ACTION_TRIGGER`).
    pub fire: u64,
}

/// Why a `SET_IRQS` or `GET_IRQ_INFO` request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IrqError {
    /// The index is not one of the five.
    #[error("interrupt index {0} does not exist")]
    InvalidIndex(u32),
    /// `start..start + count` is not inside the index's vectors.
    #[error("vectors {start}+{count} are outside the {available} of index {index}")]
    OutOfRange {
        /// Interrupt index.
        index: u32,
        /// First vector requested.
        start: u32,
        /// Number of vectors requested.
        count: u32,
        /// Vectors the index has.
        available: u32,
    },
    /// `DATA_BOOL` carried a different number of flags than `count`.
    #[error("{given} flags for {count} vectors")]
    BoolCount {
        /// Vectors in the range.
        count: u32,
        /// Flags given.
        given: usize,
    },
    /// `DATA_EVENTFD` carried more triggers than `count`.
    #[error("{given} triggers for {count} vectors")]
    TooManyTriggers {
        /// Vectors in the range.
        count: u32,
        /// Triggers given.
        given: usize,
    },
    /// Mask/unmask with eventfds (irqfd-style resampling) is not supported.
    #[error("mask and unmask by eventfd are not supported")]
    MaskByTrigger,
}

impl IrqError {
    /// The errno a VMM should receive.
    pub fn errno(&self) -> i32 {
        match self {
            IrqError::MaskByTrigger => ENOTSUP,
            _ => EINVAL,
        }
    }
}

/// Triggers and INTx state of one device.
#[derive(Debug)]
pub struct Interrupts<T> {
    triggers: [Vec<Option<T>>; IRQ_INDEX_COUNT as usize],
    /// INTx is masked (by the client, or automatically when it fired).
    intx_masked: bool,
    /// INTx fired and has not been unmasked since.
    intx_asserted: bool,
}

impl<T> Interrupts<T> {
    /// Routing for a device with `msix_vectors` MSI-X vectors, every
    /// trigger unassigned.
    ///
    /// # Panics
    ///
    /// If `msix_vectors` exceeds [`MAX_VECTORS`]: the caller passes
    /// 1 + channels of a validated profile, so this is a host-side bug.
    pub fn new(msix_vectors: u32) -> Self {
        assert!(
            msix_vectors <= MAX_VECTORS,
            "{msix_vectors} MSI-X vectors do not fit the fire bitmap"
        );
        let slots = |n: u32| (0..n).map(|_| None).collect::<Vec<Option<T>>>();
        Interrupts {
            triggers: [slots(1), slots(1), slots(msix_vectors), slots(1), slots(1)],
            intx_masked: false,
            intx_asserted: false,
        }
    }

    fn count(&self, index: IrqIndex) -> u32 {
        // At most MAX_VECTORS entries.
        self.triggers[index as usize].len() as u32
    }

    /// `GET_IRQ_INFO` for `index`.
    pub fn info(&self, index: u32) -> Result<IrqInfo, IrqError> {
        let irq = IrqIndex::try_from(index)?;
        let flags = match irq {
            IrqIndex::Intx => IRQ_INFO_EVENTFD | IRQ_INFO_MASKABLE | IRQ_INFO_AUTOMASKED,
            IrqIndex::Msix => IRQ_INFO_EVENTFD | IRQ_INFO_NORESIZE,
            IrqIndex::Msi | IrqIndex::Err | IrqIndex::Req => IRQ_INFO_EVENTFD,
        };
        Ok(IrqInfo {
            index,
            count: self.count(irq),
            flags,
        })
    }

    /// Applies a `SET_IRQS` request. On error nothing changes.
    pub fn set_irqs(&mut self, req: SetIrqs<T>) -> Result<SetIrqsOutcome, IrqError> {
        let index = IrqIndex::try_from(req.index)?;
        let available = self.count(index);
        let end = req.start.checked_add(req.count);
        // As Linux does: start must name a vector even when count is 0.
        if req.start >= available || end.is_none_or(|end| end > available) {
            return Err(IrqError::OutOfRange {
                index: req.index,
                start: req.start,
                count: req.count,
                available,
            });
        }
        let range = req.start as usize..(req.start + req.count) as usize;
        let mut outcome = SetIrqsOutcome::default();
        match (req.action, req.data) {
            (IrqAction::Trigger, IrqData::None) if req.count == 0 => {
                self.triggers[index as usize]
                    .iter_mut()
                    .for_each(|t| *t = None);
                if index == IrqIndex::Intx {
                    self.intx_masked = false;
                    self.intx_asserted = false;
                }
            }
            (IrqAction::Trigger, IrqData::None) => {
                outcome.fire = self.assigned_bits(index, range, |_| true);
            }
            (IrqAction::Trigger, IrqData::Bool(flags)) => {
                check_bool_count(req.count, &flags)?;
                outcome.fire = self.assigned_bits(index, range, |i| flags[i]);
            }
            (IrqAction::Trigger, IrqData::Triggers(given)) => {
                if given.len() > range.len() {
                    return Err(IrqError::TooManyTriggers {
                        count: req.count,
                        given: given.len(),
                    });
                }
                let mut given = given.into_iter();
                for slot in &mut self.triggers[index as usize][range] {
                    *slot = given.next().flatten();
                }
            }
            (IrqAction::Mask | IrqAction::Unmask, IrqData::Triggers(_)) => {
                return Err(IrqError::MaskByTrigger);
            }
            (action @ (IrqAction::Mask | IrqAction::Unmask), data) => {
                let selected = match data {
                    IrqData::Bool(flags) => {
                        check_bool_count(req.count, &flags)?;
                        flags.first().copied().unwrap_or(false)
                    }
                    _ => req.count > 0,
                };
                if index == IrqIndex::Intx && selected {
                    self.set_intx_masked(action == IrqAction::Mask);
                }
            }
        }
        Ok(outcome)
    }

    /// Bitmap of the vectors in `range` that hold a trigger and `pick`
    /// selects (by position in the range).
    fn assigned_bits(
        &self,
        index: IrqIndex,
        range: std::ops::Range<usize>,
        pick: impl Fn(usize) -> bool,
    ) -> u64 {
        let start = range.start;
        self.triggers[index as usize][range]
            .iter()
            .enumerate()
            .filter(|&(i, t)| t.is_some() && pick(i))
            .fold(0, |bits, (i, _)| bits | (1u64 << (start + i)))
    }

    fn set_intx_masked(&mut self, masked: bool) {
        self.intx_masked = masked;
        if !masked {
            // Unmasking is the guest's end-of-interrupt: the line drops.
            self.intx_asserted = false;
        }
    }

    /// Delivers device vector `vector`: on MSI-X vector `vector` if it has a
    /// trigger, else on MSI, else on INTx unless INTx is masked or
    /// `intx_disabled` (command register bit 10); INTx then auto-masks and
    /// is asserted until unmasked. Returns the trigger to signal.
    pub fn raise(&mut self, vector: u32, intx_disabled: bool) -> Option<&T> {
        let msix = &self.triggers[IrqIndex::Msix as usize];
        if msix.get(vector as usize).is_some_and(Option::is_some) {
            return self.trigger(IrqIndex::Msix, vector);
        }
        if self.triggers[IrqIndex::Msi as usize][0].is_some() {
            return self.trigger(IrqIndex::Msi, 0);
        }
        let intx_ready = self.triggers[IrqIndex::Intx as usize][0].is_some();
        if !intx_ready || self.intx_masked || intx_disabled {
            return None;
        }
        self.intx_masked = true;
        self.intx_asserted = true;
        self.trigger(IrqIndex::Intx, 0)
    }

    /// The trigger assigned to `vector` of `index`, if any.
    pub fn trigger(&self, index: IrqIndex, vector: u32) -> Option<&T> {
        self.triggers[index as usize].get(vector as usize)?.as_ref()
    }

    /// True while INTx fired and has not been unmasked: the owner mirrors
    /// it into the status register with
    /// [`VgpuDevice::set_intx_asserted`](crate::VgpuDevice::set_intx_asserted).
    pub fn intx_asserted(&self) -> bool {
        self.intx_asserted
    }

    /// True while INTx is masked.
    pub fn intx_masked(&self) -> bool {
        self.intx_masked
    }

    /// Drops every trigger and unmasks INTx.
    pub fn reset(&mut self) {
        for slots in &mut self.triggers {
            slots.iter_mut().for_each(|t| *t = None);
        }
        self.intx_masked = false;
        self.intx_asserted = false;
    }
}

fn check_bool_count(count: u32, flags: &[bool]) -> Result<(), IrqError> {
    if flags.len() == count as usize {
        Ok(())
    } else {
        Err(IrqError::BoolCount {
            count,
            given: flags.len(),
        })
    }
}

#[cfg(test)]
mod tests;
