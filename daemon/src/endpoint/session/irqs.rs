//! `GET_IRQ_INFO` and `SET_IRQS`: the interrupt triggers the client gives.

use std::sync::Arc;

use vgpu_emulation::{IrqAction, IrqData, IrqIndex, SetIrqs};
use vgpu_mdev::{Signals, Trigger, vector_bits};
use vgpu_protocol::wire::{IrqInfoFlags, IrqSetFlags};
use vgpu_protocol::{Header, IrqInfo};

use super::{Refusal, Session};
use crate::eventfd::EventFd;

impl Session<'_> {
    pub(super) fn irq_info(&mut self, header: &Header, index: u32) -> Result<(), Refusal> {
        let info = self.vgpu.hw().irqs.info(index).map_err(Refusal::IrqInfo)?;
        let wire = IrqInfo {
            index: info.index,
            flags: IrqInfoFlags::from_bits(info.flags & IrqInfoFlags::KNOWN.bits())
                .unwrap_or(IrqInfoFlags::EMPTY),
            count: info.count,
        };
        vgpu_protocol::encode_irq_info_reply(&mut self.out, header, &wire);
        Ok(())
    }

    pub(super) fn set_irqs(
        &mut self,
        flags: IrqSetFlags,
        index: u32,
        start: u32,
        count: u32,
        data: &[u8],
        fds: &mut vgpu_protocol::FdList,
    ) -> Result<(), Refusal> {
        let action = if flags.contains(IrqSetFlags::ACTION_MASK) {
            IrqAction::Mask
        } else if flags.contains(IrqSetFlags::ACTION_UNMASK) {
            IrqAction::Unmask
        } else {
            IrqAction::Trigger
        };
        let data = if flags.contains(IrqSetFlags::DATA_BOOL) {
            IrqData::Bool(data.iter().map(|&b| b != 0).collect())
        } else if flags.contains(IrqSetFlags::DATA_EVENTFD) {
            IrqData::Triggers(triggers(fds)?)
        } else {
            IrqData::None
        };
        let mut signals = Signals::default();
        {
            let mut hw = self.vgpu.hw();
            let outcome = hw
                .irqs
                .set_irqs(SetIrqs {
                    index,
                    action,
                    start,
                    count,
                    data,
                })
                .map_err(Refusal::SetIrqs)?;
            if let Ok(irq_index) = IrqIndex::try_from(index) {
                for vector in vector_bits(outcome.fire) {
                    if let Some(trigger) = hw.irqs.trigger(irq_index, vector) {
                        signals.push(trigger);
                    }
                }
            }
            let asserted = hw.irqs.intx_asserted();
            hw.device.set_intx_asserted(asserted);
        }
        signals.send(self.vgpu.stats());
        Ok(())
    }
}

/// The message's descriptors as triggers. Every descriptor is checked
/// before anything changes: one that is not an eventfd refuses the whole
/// request.
fn triggers(fds: &mut vgpu_protocol::FdList) -> Result<Vec<Option<Trigger>>, Refusal> {
    let mut triggers = Vec::with_capacity(fds.len());
    for index in 0..fds.len() {
        let trigger = match fds.take(index) {
            Some(fd) => {
                let event = EventFd::from_client(fd)
                    .map_err(|source| Refusal::Trigger { index, source })?;
                Some(Arc::new(event) as Trigger)
            }
            None => None,
        };
        triggers.push(trigger);
    }
    Ok(triggers)
}
