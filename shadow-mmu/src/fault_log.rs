//! Why each unmapped range of one context faults, so that a fault the
//! physical MMU raises later (which only knows "no entry") can be reported
//! with the reason the walk found (`FAULT_INFO` bits 19:16).
//!
//! The log maps GPU VA to a reason code as ranges that never overlap, and
//! adjacent ranges with the same code are always one range: a context
//! whose whole address space faults for one reason is one range however
//! the guest invalidates it piecemeal, since each re-walk records its
//! piece again and the piece joins its neighbours. A record replaces what
//! the log said about its range; a clear forgets it. A re-walk
//! ([`FaultLog::rewalk`]) clears its range and takes the walk's faults in
//! VA order, storing each run of them with one code as one range without
//! searching the log, except for the runs at the range's ends.
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
//! never another code. Until the log first needs more room than it has,
//! no answer is `None` where a code was recorded.

use std::collections::BTreeMap;
use std::ops::Bound::{Excluded, Included};

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
        // The range holding or preceding `start`, and the first one after
        // it up to `end`: two searches, all that a record nothing overlaps
        // takes before it is stored.
        let before = self
            .ranges
            .range(..=start)
            .next_back()
            .map(|(&key, &range)| (key, range));
        let after = self
            .ranges
            .range((Excluded(start), Included(end)))
            .next()
            .map(|(&key, &range)| (key, range));
        let overlapped = before.is_some_and(|(_, (before_end, _))| before_end > start)
            || after.is_some_and(|(key, _)| key < end);
        if !overlapped {
            return self.insert(start, end, code, before, after);
        }
        // Already known: recording it again would split a range that a
        // full log could not store in two.
        if before.is_some_and(|(_, (known_end, known))| known_end >= end && known == code) {
            return;
        }
        self.forget(start, end);
        let before = self
            .ranges
            .range(..start)
            .next_back()
            .map(|(&key, &range)| (key, range));
        let after = self.ranges.get(&end).map(|&range| (end, range));
        self.insert(start, end, code, before, after);
    }

    /// Stores `start..end`, which no range overlaps, joined to `before`
    /// (the range before it, if any) and `after` (the range starting at or
    /// after `end`, if any) where they touch it and have its code.
    fn insert(
        &mut self,
        start: u64,
        end: u64,
        code: FaultCode,
        before: Option<(u64, (u64, FaultCode))>,
        after: Option<(u64, (u64, FaultCode))>,
    ) {
        let mut end = end;
        if let Some((next, (next_end, next_code))) = after
            && next == end
            && next_code == code
        {
            self.ranges.remove(&next);
            end = next_end;
        }
        if let Some((prev, (prev_end, prev_code))) = before
            && prev_end == start
            && prev_code == code
        {
            self.ranges.insert(prev, (end, code));
        } else if self.ranges.len() < CAP {
            // Joining the next range freed its entry, so this only refuses
            // a range that would be one more.
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

    /// Clears `range` for a re-walk, and takes the walk's faults.
    pub fn rewalk(&mut self, range: VaRange) -> Rewalk<'_, CAP> {
        self.clear(range);
        Rewalk {
            start: range.start().0,
            end: range.end(),
            clean: Some(range.start().0),
            gathering: None,
            log: self,
        }
    }

    /// Number of ranges held.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ranges.len()
    }
}

/// The faults of one re-walk, which come in VA order into the range just
/// cleared: consecutive faults with one code are gathered into one range,
/// and a range inside the cleared one is stored without searching for
/// what it might overlap or join, so that a walk faulting at every other
/// entry costs one insertion per fault while the log has room and none
/// once it is full. A fault out of order is recorded the general way, and
/// so is every fault after it. What is gathered last is stored when the
/// re-walk is dropped.
pub(crate) struct Rewalk<'a, const CAP: usize> {
    log: &'a mut FaultLog<CAP>,
    /// The cleared range.
    start: u64,
    end: u64,
    /// The cleared range holds nothing from here on, and nothing stored
    /// before here joins a range gathered after it; `None` once a fault
    /// came out of order.
    clean: Option<u64>,
    /// Start, end and code of the range being gathered, all past `clean`.
    gathering: Option<(u64, u64, FaultCode)>,
}

impl<const CAP: usize> Rewalk<'_, CAP> {
    /// Remembers that `len` bytes at `va` fault with `code`, as
    /// [`FaultLog::record`] does.
    pub fn record(&mut self, va: GpuVa, len: u64, code: FaultCode) {
        let (start, end) = (va.0, va.0.saturating_add(len));
        if start >= end {
            return;
        }
        if let Some((first, last, gathered)) = self.gathering {
            // Never past the cleared range, where the log may hold more.
            if last == start && gathered == code && end <= self.end {
                self.gathering = Some((first, end, code));
                return;
            }
            self.store();
        }
        match self.clean {
            Some(clean) if clean <= start && end <= self.end => {
                self.gathering = Some((start, end, code));
            }
            _ => {
                self.clean = None;
                self.log.record(va, len, code);
            }
        }
    }

    /// Stores the range gathered.
    fn store(&mut self) {
        let Some((start, end, code)) = self.gathering.take() else {
            return;
        };
        // What was stored before the re-walk lies outside the cleared
        // range, so only a range touching one of its ends can join it;
        // what this re-walk stored does not touch the range with the same
        // code, or it would have been gathered into it.
        if start == self.start || end == self.end {
            self.log.record(GpuVa(start), end - start, code);
        } else if self.log.ranges.len() < CAP {
            self.log.ranges.insert(start, (end, code));
        }
        self.clean = Some(end);
    }
}

impl<const CAP: usize> Drop for Rewalk<'_, CAP> {
    fn drop(&mut self) {
        self.store();
    }
}

#[cfg(test)]
mod tests;
