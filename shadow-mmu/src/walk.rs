//! The walker: reads a channel's guest page tables for a range of GPU VA
//! and reports every leaf mapping and every fault it finds, in VA order.
//!
//! Bounds, so that no guest table shape can make a walk expensive:
//!
//! - depth: four levels by construction (the recursion follows [`Level`]);
//! - tables: at most [`WalkLimits::max_tables`] distinct tables are read
//!   per walk; a table reachable from several parents counts once;
//! - entries: at most [`WalkLimits::max_entries`] entries are examined per
//!   walk, counting a shared table once per parent that reaches it, so a
//!   fan-out of shared tables costs no more than that many distinct ones;
//! - cycles: an entry naming a table already on its own path faults.
//!
//! When a budget runs out the rest of the range faults with
//! [`FaultReason::WalkLimit`] and the walk ends.
//!
//! Every table must itself lie in memory the vGPU owns (the same rule as a
//! read-only 4 KiB page); otherwise the entry naming it faults.
//!
//! The guest can rewrite its tables at any moment (they sit in its mmapped
//! VRAM or its RAM), so an entry is never trusted where it lies: each visit
//! of a table copies the entries it needs into the walker's own buffer for
//! that level, and everything the walk reports is decoded from that copy.
//! The walk holds at most one table of each level at a time, so four 4 KiB
//! buffers serve any walk: the copy of a level-1 table stays in the CPU's
//! first-level cache while its pages are validated and programmed. A visit
//! copies only the entries the range needs (an invalidation of 2 MiB reads
//! one entry of each upper table, not all 512). A table reached from
//! several parents is copied at each visit; its entries count against the
//! entry budget at each visit too, so the budget bounds the bytes copied.
//! If the guest rewrites such a table during a walk, its parents may see
//! different entries, each of them validated: the same as a hardware
//! walker that reads the table twice.
//!
//! The walker does not validate pages: it reports them with their
//! effective permission (WRITABLE ANDed along the path), a level-1 table's
//! consecutive pages as one [`LeafRun`], and the shadow builder applies the
//! policy.

use std::collections::HashSet;
use std::ops::ControlFlow;
use std::sync::Arc;

use zerocopy::IntoBytes;

use crate::addr::{GpuVa, Iova, PageSize, VaRange, VramOffset};
use crate::allowed::AllowedSet;
use crate::entry::{ENTRIES_PER_TABLE, GuestPte, Level};
use crate::fault::{FaultReason, WalkFault};
use crate::leaf::{LeafRun, RunBits, accepted_run};
use crate::memory::{GuestMemory, GuestMemoryError, PageTableMemory, VramMemory};
use crate::policy::validate;
use crate::pte::{Permissions, PteTarget};

/// How much one walk may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalkLimits {
    /// Distinct tables read per walk (each at most 4 KiB).
    pub max_tables: u32,
    /// Entries examined per walk, counting a shared table's entries once
    /// per parent that reaches it.
    pub max_entries: u64,
}

impl Default for WalkLimits {
    /// 4096 tables (16 MiB of tables, 8 GiB of 4 KiB pages), and as many
    /// entries as those tables hold.
    fn default() -> Self {
        Self {
            max_tables: 4096,
            max_entries: 4096 * ENTRIES_PER_TABLE as u64,
        }
    }
}

/// What a walk reports, in VA order.
#[derive(Debug)]
pub enum WalkItem<'a> {
    /// Mapped pages.
    Leaves(LeafRun<'a>),
    /// A range without a mapping.
    Fault(WalkFault),
}

/// What a walk did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalkStats {
    /// Table reads, each one call to the page-table memory: one per
    /// visit, so a table reached from several parents counts at each.
    pub tables_read: u32,
    /// Bytes read from the page-table memory.
    pub bytes_read: u64,
    /// Entries examined.
    pub entries: u64,
    /// A limit cut the walk short.
    pub limited: bool,
    /// The visitor stopped the walk.
    pub stopped: bool,
}

/// Tables a walk holds at once: one of each level below the root.
const DEPTH: usize = 4;

/// The walker's copies of the tables on the current path, one per level.
type TableCopies = [[u64; ENTRIES_PER_TABLE]; DEPTH];

/// A walker with its reusable per-walk state (the set of tables seen and
/// the table copies, kept between walks so that walking does not allocate
/// once warm).
#[derive(Debug)]
pub struct Walker {
    limits: WalkLimits,
    /// Tables read in the current walk, to count each once against
    /// [`WalkLimits::max_tables`].
    seen: SeenTables,
    /// `copies[d]` holds the table at depth `d` of the current path
    /// (depth 0 is the level-4 table).
    copies: Box<TableCopies>,
}

/// The distinct tables of one walk, counted without a hash per visit in
/// the common case: while a walk has made no more visits than the table
/// budget, it cannot have read more distinct tables than that either, so
/// visits are only listed. The first visit past the budget turns the list
/// into a set, and from then on each visit is looked up.
#[derive(Debug, Default)]
struct SeenTables {
    visits: Vec<PteTarget>,
    distinct: Option<HashSet<PteTarget>>,
}

impl SeenTables {
    fn clear(&mut self) {
        self.visits.clear();
        self.distinct = None;
    }

    /// Notes a visit of `table`; false if it would be distinct table
    /// number `max + 1`.
    fn visit(&mut self, table: PteTarget, max: u32) -> bool {
        let max = max as usize;
        if let Some(distinct) = &mut self.distinct {
            return if distinct.len() < max || distinct.contains(&table) {
                distinct.insert(table);
                true
            } else {
                false
            };
        }
        if self.visits.len() < max {
            self.visits.push(table);
            return true;
        }
        let distinct: HashSet<PteTarget> = self.visits.drain(..).collect();
        self.distinct = Some(distinct);
        self.visit(table, max as u32)
    }
}

enum LoadError {
    Limit,
    Unreadable(GuestMemoryError),
}

impl Walker {
    /// A walker that enforces `limits`.
    pub fn new(limits: WalkLimits) -> Self {
        Self {
            limits,
            seen: SeenTables::default(),
            copies: Box::new([[0; ENTRIES_PER_TABLE]; DEPTH]),
        }
    }

    /// Changes the limits the next walks obey. (A budget across walks is
    /// the shadow builder's page cap, `ShadowMmu::set_max_pages`, not
    /// these: the limits bound one walk's time, whatever came before.)
    pub fn set_limits(&mut self, limits: WalkLimits) {
        self.limits = limits;
    }

    /// The limits every walk obeys.
    pub fn limits(&self) -> WalkLimits {
        self.limits
    }

    /// Walks `range` of the tables under `root` (a raw `PT_ROOT` value),
    /// calling `visit` for every leaf and fault in VA order until it
    /// returns [`ControlFlow::Break`].
    pub fn walk<G, V, A, F>(
        &mut self,
        root: u64,
        range: VaRange,
        memory: &PageTableMemory<'_, G, V>,
        allowed: &A,
        visit: F,
    ) -> WalkStats
    where
        G: GuestMemory + ?Sized,
        V: VramMemory + ?Sized,
        A: AllowedSet + ?Sized,
        F: FnMut(WalkItem<'_>) -> ControlFlow<()>,
    {
        self.seen.clear();
        let mut walk = Walk {
            limits: self.limits,
            seen: &mut self.seen,
            copies: &mut self.copies,
            memory,
            allowed,
            visit,
            start: range.start().0,
            end: range.end(),
            stats: WalkStats::default(),
            path: [PteTarget::Vram(VramOffset(0)); 4],
            depth: 0,
        };
        let _ = walk.entry(Level::Root, 0, root, true);
        walk.stats
    }
}

/// One walk in progress.
struct Walk<'w, 'm, G: ?Sized, V: ?Sized, A: ?Sized, F> {
    limits: WalkLimits,
    seen: &'w mut SeenTables,
    copies: &'w mut TableCopies,
    memory: &'w PageTableMemory<'m, G, V>,
    allowed: &'w A,
    visit: F,
    start: u64,
    end: u64,
    stats: WalkStats,
    /// The tables from the level-4 table down to the current one.
    path: [PteTarget; 4],
    depth: usize,
}

/// The fault for the entry at `level` covering `entry_va`, clipped to
/// `start..end`.
fn clipped(
    level: Level,
    entry_va: u64,
    start: u64,
    end: u64,
    reason: FaultReason,
) -> WalkItem<'static> {
    let va = entry_va.max(start);
    let entry_end = entry_va.saturating_add(level.span());
    WalkItem::Fault(WalkFault {
        va: GpuVa(va),
        len: entry_end.min(end) - va,
        level,
        reason,
    })
}

/// The address `bytes` into the table at `table`. Table addresses come
/// from bits 51:12 of an entry, so adding less than 4 KiB cannot overflow.
fn offset(table: PteTarget, bytes: usize) -> PteTarget {
    let bytes = bytes as u64;
    match table {
        PteTarget::Vram(offset) => PteTarget::Vram(VramOffset(offset.0 + bytes)),
        PteTarget::System(iova) => PteTarget::System(Iova(iova.0 + bytes)),
    }
}

impl<G, V, A, F> Walk<'_, '_, G, V, A, F>
where
    G: GuestMemory + ?Sized,
    V: VramMemory + ?Sized,
    A: AllowedSet + ?Sized,
    F: FnMut(WalkItem<'_>) -> ControlFlow<()>,
{
    fn fault(&mut self, level: Level, entry_va: u64, reason: FaultReason) -> ControlFlow<()> {
        let item = clipped(level, entry_va, self.start, self.end, reason);
        self.emit(item)
    }

    fn emit(&mut self, item: WalkItem<'_>) -> ControlFlow<()> {
        let flow = (self.visit)(item);
        if flow.is_break() {
            self.stats.stopped = true;
        }
        flow
    }

    /// Faults the rest of the range from the entry at `entry_va` on, and
    /// ends the walk.
    fn limit(&mut self, level: Level, entry_va: u64) -> ControlFlow<()> {
        self.stats.limited = true;
        let va = entry_va.max(self.start);
        let _ = self.emit(WalkItem::Fault(WalkFault {
            va: GpuVa(va),
            len: self.end - va,
            level,
            reason: FaultReason::WalkLimit,
        }));
        ControlFlow::Break(())
    }

    /// Handles the entry `raw` at `level` covering `entry_va`, reached
    /// through a path that is `writable` so far.
    fn entry(&mut self, level: Level, entry_va: u64, raw: u64, writable: bool) -> ControlFlow<()> {
        match GuestPte::decode(raw, level) {
            Ok(GuestPte::NotPresent) => self.fault(level, entry_va, FaultReason::NotPresent),
            Err(e) => self.fault(level, entry_va, FaultReason::InvalidEntry(e)),
            Ok(GuestPte::Page { size, .. }) => {
                let stored = raw.to_le();
                self.emit(WalkItem::Leaves(LeafRun::new(
                    entry_va,
                    size,
                    std::slice::from_ref(&stored),
                    writable,
                )))
            }
            Ok(GuestPte::Table { table, permissions }) => {
                // The root's WRITABLE bit is not part of the path (see the
                // entry module).
                let writable = writable && (level == Level::Root || permissions.writable);
                self.descend(level, entry_va, table, writable)
            }
        }
    }

    /// Walks the table that the entry at `level` covering `entry_va` names.
    fn descend(
        &mut self,
        level: Level,
        entry_va: u64,
        table: PteTarget,
        writable: bool,
    ) -> ControlFlow<()> {
        // Level-1 entries decode only as pages, so there is always a next
        // level here.
        let Some(child) = level.next() else {
            return ControlFlow::Continue(());
        };
        if self.path[..self.depth].contains(&table) {
            return self.fault(level, entry_va, FaultReason::Cycle { table });
        }
        let read_only = Permissions { writable: false };
        if let Err(rejection) = validate(table, PageSize::Size4KiB, read_only, self.allowed) {
            return self.fault(level, entry_va, FaultReason::Rejected(rejection));
        }
        let span = child.span();
        let lo = ((entry_va.max(self.start) - entry_va) / span) as usize;
        let hi = ((entry_va.saturating_add(level.span()).min(self.end) - entry_va).div_ceil(span))
            as usize;
        let entries = (hi - lo) as u64;
        if self.stats.entries + entries > self.limits.max_entries {
            return self.limit(level, entry_va);
        }
        self.stats.entries += entries;
        let depth = self.depth;
        match self.load(table, depth, lo, hi) {
            Ok(()) => {}
            Err(LoadError::Limit) => return self.limit(level, entry_va),
            Err(LoadError::Unreadable(source)) => {
                let reason = FaultReason::TableUnreadable {
                    table,
                    source: Arc::new(source),
                };
                return self.fault(level, entry_va, reason);
            }
        }
        self.path[depth] = table;
        self.depth += 1;
        let flow = if child == Level::L1 {
            self.leaves(depth, lo, hi, entry_va, writable)
        } else {
            let mut flow = ControlFlow::Continue(());
            for index in lo..hi {
                // Deeper visits overwrite only deeper copies.
                let raw = u64::from_le(self.copies[depth][index]);
                flow = self.entry(child, entry_va + index as u64 * span, raw, writable);
                if flow.is_break() {
                    break;
                }
            }
            flow
        };
        self.depth -= 1;
        flow
    }

    /// The hot loop: entries `lo..hi` of the level-1 table copied at
    /// `depth`, which can only be pages or faults. Runs of pages go out
    /// whole; each other entry is a fault of its own.
    fn leaves(
        &mut self,
        depth: usize,
        lo: usize,
        hi: usize,
        table_va: u64,
        writable: bool,
    ) -> ControlFlow<()> {
        let (start, end) = (self.start, self.end);
        let span = Level::L1.span();
        let entries = &self.copies[depth][lo..hi];
        // The common table, all pages, in one pass that also gathers the
        // bits the policy accepts a run by; once per table, so a table
        // that fails it costs one extra pass, never more.
        let bits = RunBits::of(entries);
        if GuestPte::all_pages_l1(bits.any, bits.all) && !entries.is_empty() {
            let va = table_va + lo as u64 * span;
            let run = LeafRun::with_bits(va, PageSize::Size4KiB, entries, writable, bits);
            if (self.visit)(WalkItem::Leaves(run)).is_break() {
                self.stats.stopped = true;
                return ControlFlow::Break(());
            }
            return ControlFlow::Continue(());
        }
        let mut at = 0;
        while at < entries.len() {
            let (run, bits) = accepted_run(&entries[at..], GuestPte::not_page_l1);
            let va = table_va + (lo + at) as u64 * span;
            let item = if run > 0 {
                WalkItem::Leaves(LeafRun::with_bits(
                    va,
                    PageSize::Size4KiB,
                    &entries[at..at + run],
                    writable,
                    bits,
                ))
            } else {
                let reason = match GuestPte::decode(u64::from_le(entries[at]), Level::L1) {
                    Err(e) => FaultReason::InvalidEntry(e),
                    Ok(_) => FaultReason::NotPresent,
                };
                clipped(Level::L1, va, start, end, reason)
            };
            at += run.max(1);
            if (self.visit)(item).is_break() {
                self.stats.stopped = true;
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    /// Copies entries `lo..hi` of `table` into the copy at `depth`,
    /// counting the table against the table budget the first time this
    /// walk reads it.
    fn load(
        &mut self,
        table: PteTarget,
        depth: usize,
        lo: usize,
        hi: usize,
    ) -> Result<(), LoadError> {
        if !self.seen.visit(table, self.limits.max_tables) {
            return Err(LoadError::Limit);
        }
        let buf = self.copies[depth][lo..hi].as_mut_bytes();
        self.stats.tables_read += 1;
        self.stats.bytes_read += buf.len() as u64;
        self.memory
            .read(offset(table, lo * 8), buf)
            .map_err(LoadError::Unreadable)
    }
}

#[cfg(test)]
mod tests;
