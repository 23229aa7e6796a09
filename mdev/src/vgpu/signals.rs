//! Interrupt delivery: the triggers a VMM gave, picked under the device
//! lock and signalled after it is released.

use std::fmt;
use std::sync::Arc;

use vgpu_emulation::interrupts::MAX_VECTORS;

use super::stats::VgpuStats;

/// What became of one signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signalled {
    /// The trigger took it.
    Delivered,
    /// The trigger was full: the VMM has interrupts pending already, and
    /// this one is merged into them.
    Coalesced,
    /// The signal failed otherwise; the interrupt is lost.
    Failed,
}

/// Where a vGPU's interrupts go: on vfio-user, an eventfd the client gave
/// with `SET_IRQS`. A signal must finish in bounded time whatever the VMM
/// does (the daemon's eventfd gives up after a deadline).
pub trait InterruptTrigger: Send + Sync + fmt::Debug {
    /// Delivers one interrupt.
    fn signal(&self) -> Signalled;
}

/// A trigger as the device's interrupt state holds it.
pub type Trigger = Arc<dyn InterruptTrigger>;

/// Triggers picked under the `hw` lock, to be signalled after it is
/// released. Fixed-size: raising an interrupt allocates nothing.
#[derive(Debug)]
pub struct Signals {
    triggers: [Option<Trigger>; MAX_VECTORS as usize],
    len: usize,
}

impl Default for Signals {
    fn default() -> Self {
        Self {
            triggers: [const { None }; MAX_VECTORS as usize],
            len: 0,
        }
    }
}

impl Signals {
    /// Adds a trigger; past [`MAX_VECTORS`] (more than one raise can pick)
    /// it is ignored.
    pub fn push(&mut self, trigger: &Trigger) {
        if let Some(slot) = self.triggers.get_mut(self.len) {
            *slot = Some(Arc::clone(trigger));
            self.len += 1;
        }
    }

    /// Whether no trigger was picked.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Signals every trigger and counts the outcome in `stats`. Call it
    /// with no lock held: a signal can wait on the VMM up to its deadline.
    pub fn send(mut self, stats: &VgpuStats) {
        for trigger in self.triggers[..self.len].iter_mut() {
            if let Some(trigger) = trigger.take() {
                match trigger.signal() {
                    Signalled::Delivered => VgpuStats::count(&stats.interrupts, 1),
                    Signalled::Coalesced => VgpuStats::count(&stats.interrupts_coalesced, 1),
                    Signalled::Failed => {}
                }
            }
        }
    }
}

/// The vectors set in a bitmap of them, lowest first.
pub fn vector_bits(mask: u64) -> impl Iterator<Item = u32> {
    (0..64u32).filter(move |v| mask & (1 << v) != 0)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    #[derive(Debug, Default)]
    struct Counter(AtomicU32, Option<Signalled>);

    impl InterruptTrigger for Counter {
        fn signal(&self) -> Signalled {
            self.0.fetch_add(1, Ordering::Relaxed);
            self.1.unwrap_or(Signalled::Delivered)
        }
    }

    #[test]
    fn signals_are_counted_by_outcome() {
        let delivered: Trigger = Arc::new(Counter::default());
        let full: Trigger = Arc::new(Counter(AtomicU32::new(0), Some(Signalled::Coalesced)));
        let stats = VgpuStats::default();
        let mut signals = Signals::default();
        signals.push(&delivered);
        signals.push(&full);
        signals.push(&delivered);
        signals.send(&stats);
        assert_eq!(VgpuStats::get(&stats.interrupts), 2);
        assert_eq!(VgpuStats::get(&stats.interrupts_coalesced), 1);
    }

    #[test]
    fn more_triggers_than_vectors_are_dropped_not_stored() {
        let t: Trigger = Arc::new(Counter::default());
        let mut signals = Signals::default();
        for _ in 0..MAX_VECTORS + 5 {
            signals.push(&t);
        }
        let stats = VgpuStats::default();
        signals.send(&stats);
        assert_eq!(VgpuStats::get(&stats.interrupts), u64::from(MAX_VECTORS));
    }

    #[test]
    fn vector_bits_lists_set_bits_lowest_first() {
        assert_eq!(vector_bits(0b1010_0001).collect::<Vec<_>>(), [0, 5, 7]);
        assert_eq!(vector_bits(1 << 63).collect::<Vec<_>>(), [63]);
        assert_eq!(vector_bits(0).count(), 0);
    }
}
