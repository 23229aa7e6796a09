//! Why each unmapped range of one context faults, so that a fault the
//! physical MMU raises later (which only knows "no entry") can be reported
//! with the reason the walk found (`FAULT_INFO` bits 19:16).
//!
//! Ranges never overlap: the builder clears a range before re-walking it.
//! The log holds at most [`MAX_RANGES`] ranges per context so that a guest
//! cannot grow it without bound; past that, faults read as "not present".

use std::collections::BTreeMap;

use crate::addr::{GpuVa, VaRange};
use crate::fault::FaultCode;

/// Most ranges remembered per context.
pub(crate) const MAX_RANGES: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct FaultLog {
    /// Start of each range → (end, code).
    ranges: BTreeMap<u64, (u64, FaultCode)>,
}

impl FaultLog {
    /// Remembers that `len` bytes at `va` fault with `code`, unless the log
    /// is full.
    pub fn record(&mut self, va: GpuVa, len: u64, code: FaultCode) {
        if self.ranges.len() < MAX_RANGES && len > 0 {
            self.ranges.insert(va.0, (va.0 + len, code));
        }
    }

    /// Forgets what the log says about `range`, trimming ranges that stick
    /// out of it.
    pub fn clear(&mut self, range: VaRange) {
        let (start, end) = (range.start().0, range.end());
        if let Some((&first, &(first_end, code))) = self.ranges.range(..start).next_back() {
            if first_end > start {
                self.ranges.insert(first, (start, code));
                if first_end > end {
                    self.ranges.insert(end, (first_end, code));
                }
            }
        }
        let inside: Vec<u64> = self.ranges.range(start..end).map(|(&k, _)| k).collect();
        for key in inside {
            if let Some((range_end, code)) = self.ranges.remove(&key) {
                if range_end > end {
                    self.ranges.insert(end, (range_end, code));
                }
            }
        }
    }

    /// Why `va` faults, if the log knows.
    pub fn lookup(&self, va: GpuVa) -> Option<FaultCode> {
        let (_, &(end, code)) = self.ranges.range(..=va.0).next_back()?;
        (va.0 < end).then_some(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(start: u64, len: u64) -> VaRange {
        VaRange::new(GpuVa(start), len).unwrap()
    }

    #[test]
    fn lookup_finds_the_range_holding_the_address() {
        let mut log = FaultLog::default();
        log.record(GpuVa(0x1000), 0x2000, FaultCode::OutsideVram);
        assert_eq!(log.lookup(GpuVa(0x0fff)), None);
        assert_eq!(log.lookup(GpuVa(0x1000)), Some(FaultCode::OutsideVram));
        assert_eq!(log.lookup(GpuVa(0x2fff)), Some(FaultCode::OutsideVram));
        assert_eq!(log.lookup(GpuVa(0x3000)), None);
    }

    #[test]
    fn clear_trims_ranges_that_stick_out_on_both_sides() {
        let mut log = FaultLog::default();
        log.record(GpuVa(0), 0x10_0000, FaultCode::NotMapped);
        log.record(GpuVa(0x10_0000), 0x1000, FaultCode::ReadOnly);
        log.clear(range(0x4000, 0x8000));
        assert_eq!(log.lookup(GpuVa(0x3fff)), Some(FaultCode::NotMapped));
        assert_eq!(log.lookup(GpuVa(0x4000)), None);
        assert_eq!(log.lookup(GpuVa(0xbfff)), None);
        assert_eq!(log.lookup(GpuVa(0xc000)), Some(FaultCode::NotMapped));
        assert_eq!(log.lookup(GpuVa(0x10_0000)), Some(FaultCode::ReadOnly));
        log.clear(range(0x8000, 0x10_0000));
        assert_eq!(log.lookup(GpuVa(0xc000)), None);
        assert_eq!(log.lookup(GpuVa(0x10_0fff)), None);
        assert_eq!(log.lookup(GpuVa(0x10_8000)), None);
        assert_eq!(log.lookup(GpuVa(0x3fff)), Some(FaultCode::NotMapped));
    }

    #[test]
    fn a_full_log_records_nothing_more() {
        let mut log = FaultLog::default();
        for page in 0..MAX_RANGES as u64 + 1 {
            log.record(GpuVa(page << 12), 0x1000, FaultCode::InvalidEntry);
        }
        assert_eq!(log.ranges.len(), MAX_RANGES);
        assert_eq!(log.lookup(GpuVa((MAX_RANGES as u64) << 12)), None);
    }
}
