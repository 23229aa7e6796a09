//! Why each unmapped range of one context faults, so that a fault the
//! physical MMU raises later (which only knows "no entry") can be reported
//! with the reason the walk found (`FAULT_INFO` bits 19:16).
//!
//! The log maps GPU VA to a reason code as ranges that never overlap, and
//! adjacent ranges with the same code are always one range: a context
//! whose whole address space faults for one reason is one range however
//! the guest invalidates it piecemeal, since each re-walk records its
//! piece again and the piece joins its neighbours. A record replaces what
//! the log said about its range; a clear forgets it.
//!
//! The log holds at most [`MAX_RANGES`] (4096) ranges per context after
//! any sequence of records and clears, so that a guest cannot grow it: 24
//! bytes a range in B-tree nodes at least 5/11 full, under 300 KiB a
//! context (about 200 KiB measured). A change that would need more drops
//! information instead: a new range with no room is not recorded, and a
//! range that a clear splits in two keeps only its larger part. Dropping
//! only ever turns an answer into `None` (which the daemon reports as
//! reason 1, not present): a lookup returns either `None` or the code of
//! the last record covering the address since the last clear covering it,
//! never another code. Until a change first finds the log within one
//! range of full, no answer is `None` where a code was recorded.

use std::collections::BTreeMap;

use crate::addr::{GpuVa, VaRange};
use crate::fault::FaultCode;

/// Most ranges remembered per context.
pub(crate) const MAX_RANGES: usize = 4096;

/// The fault log of one context, holding at most `CAP` ranges (a
/// parameter so that tests can fill it quickly).
#[derive(Debug, Default)]
pub(crate) struct FaultLog<const CAP: usize = MAX_RANGES> {
    /// Start of each range → (end, code).
    ranges: BTreeMap<u64, (u64, FaultCode)>,
}

impl<const CAP: usize> FaultLog<CAP> {
    /// Remembers that `len` bytes at `va` fault with `code`, in place of
    /// whatever the log said about them; if the log has no room for a new
    /// range, it forgets them instead.
    pub fn record(&mut self, va: GpuVa, len: u64, code: FaultCode) {
        let (start, end) = (va.0, va.0.saturating_add(len));
        if start >= end {
            return;
        }
        // Already known (a clear-and-record would split a range that a
        // full log could not store in two).
        let known = self
            .ranges
            .range(..=start)
            .next_back()
            .is_some_and(|(_, &(known_end, known))| known_end >= end && known == code);
        if known {
            return;
        }
        self.forget(start, end);
        // Nothing overlaps the range now: only a range ending at `start`
        // or one starting at `end` can join it.
        let mut end = end;
        if let Some(&(next_end, next)) = self.ranges.get(&end)
            && next == code
        {
            self.ranges.remove(&end);
            end = next_end;
        }
        if let Some((_, (prev_end, prev))) = self.ranges.range_mut(..start).next_back()
            && *prev_end == start
            && *prev == code
        {
            *prev_end = end;
            return;
        }
        // Joining the next range freed its entry, so this only refuses a
        // range that would be one more.
        if self.ranges.len() < CAP {
            self.ranges.insert(start, (end, code));
        }
    }

    /// Forgets what the log says about `range`, trimming ranges that stick
    /// out of it.
    pub fn clear(&mut self, range: VaRange) {
        self.forget(range.start().0, range.end());
    }

    fn forget(&mut self, start: u64, end: u64) {
        if let Some((&first, &(first_end, code))) = self.ranges.range(..start).next_back()
            && first_end > start
        {
            if first_end <= end {
                self.ranges.insert(first, (start, code));
            } else {
                // The range holds all of `start..end`, so nothing else is
                // in it. Split in two it needs one more entry; a full log
                // keeps only the larger part.
                let room = self.ranges.len() < CAP;
                let (head, tail) = (start - first, first_end - end);
                if room || head >= tail {
                    self.ranges.insert(first, (start, code));
                } else {
                    self.ranges.remove(&first);
                }
                if room || tail > head {
                    self.ranges.insert(end, (first_end, code));
                }
                return;
            }
        }
        // One search per range removed rather than a list of them: a
        // re-walk clears a range that mostly holds none.
        while let Some((&key, &(key_end, code))) = self.ranges.range(start..end).next() {
            self.ranges.remove(&key);
            if key_end > end {
                // Ranges do not overlap, so this was the last one inside.
                self.ranges.insert(end, (key_end, code));
                break;
            }
        }
    }

    /// Why `va` faults, if the log knows.
    pub fn lookup(&self, va: GpuVa) -> Option<FaultCode> {
        let (_, &(end, code)) = self.ranges.range(..=va.0).next_back()?;
        (va.0 < end).then_some(code)
    }

    /// Number of ranges held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ranges.len()
    }
}

#[cfg(test)]
mod tests;
