//! The reference model for valid streams: A's memory as one flat array
//! (its VRAM slice, then its guest memory file), reached through the
//! layout's own idea of the page tables, and a planner that turns abstract
//! operations into commands that are certain to be valid while it carries
//! them out on the model.
//!
//! Semantics are those of `vgpu_commands::Command`: COPY and BLIT2D move
//! bytes (what the destination holds is unspecified where it overlaps the
//! source, so the model stops vouching for those bytes), FILL repeats its
//! pattern, FENCE and STORE_REGISTER write their values, SEMAPHORE_WAIT
//! reads, TIMESTAMP writes bytes the model does not know. Bytes the model
//! does not vouch for are copied from the device before comparing.

use vgpu_commands::{CompareOp, ReadableRegister, StreamBuilder};
use vgpu_mdev::ENGINE_CHUNK;

use crate::layout::{BadEntry, BadPage, Layout, SLOTS};
use crate::rig::{BATCH_VA, BATCHES_AT, BATCHES_LEN, PAGE, RO_FILE_OFFSET, RO_LEN, SLICE};
use crate::stream::{Addr, Op};

/// Runs of the flat memory: (start, length).
type Pieces = Vec<(usize, usize)>;

pub struct Model {
    /// A's VRAM, then A's guest memory file.
    pub mem: Vec<u8>,
    /// Ranges whose bytes the model does not vouch for.
    unknown: Vec<(usize, usize)>,
    gprs: [u32; 16],
    /// The value of the last FENCE.
    pub fence: u64,
    /// A FENCE that asked for an interrupt completed.
    pub fence_interrupt: bool,
    /// A command faulted: the channel stopped, nothing more runs.
    dead: bool,
}

fn overlaps(a: &[(usize, usize)], b: &[(usize, usize)]) -> bool {
    a.iter()
        .any(|&(s, l)| b.iter().any(|&(t, m)| s < t + m && t < s + l))
}

impl Model {
    pub fn new(mem: Vec<u8>) -> Self {
        Self {
            mem,
            unknown: Vec::new(),
            gprs: [0; 16],
            fence: 0,
            fence_interrupt: false,
            dead: false,
        }
    }

    /// Bytes written outside the commands (rings, batches).
    pub fn put(&mut self, flat: usize, bytes: &[u8]) {
        self.mem[flat..flat + bytes.len()].copy_from_slice(bytes);
    }

    fn read(&self, pieces: &[(usize, usize)]) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        for &(start, len) in pieces {
            out.extend_from_slice(&self.mem[start..start + len]);
        }
        (out, overlaps(pieces, &self.unknown))
    }

    fn write(&mut self, pieces: &[(usize, usize)], data: &[u8], unknown: bool) {
        if self.dead {
            return;
        }
        let mut at = 0;
        for &(start, len) in pieces {
            self.mem[start..start + len].copy_from_slice(&data[at..at + len]);
            at += len;
            if unknown {
                self.unknown.push((start, len));
            }
        }
    }

    /// Takes the bytes the model does not vouch for from `actual`.
    pub fn settle(&mut self, actual: &[u8]) {
        for &(start, len) in &self.unknown {
            self.mem[start..start + len].copy_from_slice(&actual[start..start + len]);
        }
    }
}

/// Turns abstract operations into valid commands, carrying them out on the
/// model in execution order (a batch's commands where it starts).
pub struct Planner<'a> {
    layout: &'a Layout,
    pub model: Model,
    /// Batch buffers: offset in the batch area and bytes.
    pub batches: Vec<(u64, Vec<u8>)>,
    next_batch: u64,
    /// The entry after the poisoned slot's last page, if a poison is
    /// planned: its VA and the entry (none: not present).
    poison: Option<(u64, Option<(BadPage, bool)>)>,
    /// The fault the stream meets: VA, write access, FAULT_INFO reason.
    pub fault: Option<(u64, bool, u32)>,
}

/// Where a planned access goes: a slot and an offset into its mapping.
#[derive(Clone, Copy)]
struct Placed {
    slot: u8,
    offset: u64,
}

/// Most bytes `ops` take in a batch buffer, with the batch buffers of
/// their own batches (each aligned to 64 bytes).
fn batch_bound(ops: &[Op]) -> u64 {
    ops.iter()
        .map(|op| match op {
            Op::Batch(inner) => 4 * 4 + 64 + batch_bound(inner) + 4,
            Op::Nop(n) => 4 * u64::from(*n).max(1),
            _ => 9 * 4,
        })
        .sum()
}

impl<'a> Planner<'a> {
    /// A planner over `layout` and A's `memory`; `poison` is the stream's
    /// one poisoned access, if it has one.
    pub fn new(layout: &'a Layout, memory: Vec<u8>, poison: Option<&Poison>) -> Self {
        Self {
            layout,
            model: Model::new(memory),
            batches: Vec::new(),
            next_batch: 0,
            poison: poison.map(|p| (poison_va(layout, p.slot % (SLOTS - 1)), p.entry)),
            fault: None,
        }
    }

    /// Plans `ops` as the ring's stream; returns its dwords and where each
    /// top-level command ends (in dwords).
    pub fn plan(&mut self, ops: &[Op]) -> (Vec<u32>, Vec<usize>) {
        let mut out = StreamBuilder::new();
        let mut ends = Vec::new();
        for op in ops {
            self.op(op, &mut out);
            let end = out.words().len();
            if ends.last() != Some(&end) {
                ends.push(end);
            }
        }
        (out.into_words(), ends)
    }

    /// The first slot from `start` on whose mapping allows the access.
    fn slot(&self, start: u8, write: bool) -> Option<u8> {
        (0..SLOTS)
            .map(|i| (start % SLOTS + i) % SLOTS)
            .find(|&s| !write || self.layout.writable(s))
    }

    /// `len` bytes at `addr`'s offset (wrapped into the slot, aligned down
    /// to `align`) of slot `slot`, which maps at least `len` bytes.
    fn at(&self, slot: u8, addr: Addr, len: u64, align: u64) -> Placed {
        let room = self.layout.len(slot) - len;
        let offset = match addr {
            Addr::Slot { offset, .. } => u64::from(offset) % (room + 1),
            Addr::Raw(va) => va % (room + 1),
        };
        Placed {
            slot,
            offset: offset / align * align,
        }
    }

    fn va(&self, p: Placed) -> u64 {
        self.layout.first_va(p.slot) + p.offset
    }

    fn pieces(&self, p: Placed, len: u64) -> Pieces {
        self.layout.pieces(p.slot, p.offset, len)
    }

    /// A slot for `addr` and `len` bytes there (exactly `len`: the value
    /// written has that size).
    fn exact(&self, addr: Addr, len: u64, write: bool) -> Option<Placed> {
        let slot = self.slot(start_slot(addr), write)?;
        Some(self.at(slot, addr, len, len))
    }

    fn op(&mut self, op: &Op, out: &mut StreamBuilder) {
        match *op {
            Op::Nop(dwords) => {
                out.nop(dwords.max(1));
            }
            Op::Copy { src, dst, bytes } => {
                let Some(d) = self.slot(start_slot(dst), true) else {
                    return;
                };
                let s = self.slot(start_slot(src), false).expect("any slot reads");
                let len = u64::from(bytes.max(1))
                    .min(self.layout.len(d))
                    .min(self.layout.len(s));
                let (s, d) = (self.at(s, src, len, 1), self.at(d, dst, len, 1));
                let (from, to) = (self.pieces(s, len), self.pieces(d, len));
                let (data, unknown) = self.model.read(&from);
                self.model
                    .write(&to, &data, unknown || overlaps(&from, &to));
                out.copy(self.va(s), self.va(d), len as u32);
            }
            Op::Fill {
                dst,
                bytes,
                pattern,
            } => {
                let Some(d) = self.slot(start_slot(dst), true) else {
                    return;
                };
                let len = (u64::from(bytes).min(self.layout.len(d)) & !3).max(4);
                let d = self.at(d, dst, len, 4);
                let data: Vec<u8> = pattern
                    .to_le_bytes()
                    .into_iter()
                    .cycle()
                    .take(len as usize)
                    .collect();
                let to = self.pieces(d, len);
                self.model.write(&to, &data, false);
                out.fill(self.va(d), len as u32, pattern);
            }
            Op::Blit {
                src,
                dst,
                width,
                height,
                src_extra,
                dst_extra,
            } => self.blit(src, dst, [width, height, src_extra, dst_extra], out),
            Op::Fence {
                dst,
                value,
                wide,
                interrupt,
            } => {
                let len = if wide { 8 } else { 4 };
                let Some(d) = self.exact(dst, len, true) else {
                    return;
                };
                let value = if wide { value } else { u64::from(value as u32) };
                let to = self.pieces(d, len);
                self.model
                    .write(&to, &value.to_le_bytes()[..len as usize], false);
                if !self.model.dead {
                    self.model.fence = value;
                    self.model.fence_interrupt |= interrupt;
                }
                if wide {
                    out.fence64(self.va(d), value, interrupt);
                } else {
                    out.fence32(self.va(d), value as u32, interrupt);
                }
            }
            Op::Semaphore {
                addr,
                compare,
                value,
            } => {
                let a = self.exact(addr, 4, false).expect("any slot reads");
                let (word, unknown) = self.model.read(&self.pieces(a, 4));
                let memory = u32::from_le_bytes(word.try_into().expect("4 bytes"));
                let (compare, value) = if unknown {
                    (CompareOp::Ge, 0)
                } else {
                    holding(compare, memory, value)
                };
                assert!(compare.holds(memory, value) || unknown);
                out.semaphore_wait(self.va(a), compare, value);
            }
            Op::Timestamp { dst } => {
                let Some(d) = self.exact(dst, 8, true) else {
                    return;
                };
                let to = self.pieces(d, 8);
                self.model.write(&to, &[0; 8], true);
                out.timestamp(self.va(d));
            }
            Op::Lri { gpr, value } => {
                let gpr = gpr % 16;
                if !self.model.dead {
                    self.model.gprs[usize::from(gpr)] = value;
                }
                out.load_register_imm(u32::from(gpr) * 4, value);
            }
            Op::Store { register, dst } => {
                let Some(d) = self.exact(dst, 4, true) else {
                    return;
                };
                let fence = self.model.fence;
                let (value, unknown) = match register {
                    ReadableRegister::Gpr(g) => (self.model.gprs[usize::from(g.index())], false),
                    ReadableRegister::CompletedFenceLo => (fence as u32, false),
                    ReadableRegister::CompletedFenceHi => ((fence >> 32) as u32, false),
                    ReadableRegister::TimestampLo | ReadableRegister::TimestampHi => (0, true),
                };
                let to = self.pieces(d, 4);
                self.model.write(&to, &value.to_le_bytes(), unknown);
                out.store_register(register.offset(), self.va(d));
            }
            Op::TlbAll => {
                out.tlb_invalidate_all();
            }
            Op::TlbRange { start, pages } => {
                let slot = start_slot(start) % SLOTS;
                let first = self.layout.first_va(slot);
                let offset = match start {
                    Addr::Slot { offset, .. } => u64::from(offset) % self.layout.len(slot),
                    Addr::Raw(va) => va % self.layout.len(slot),
                } / PAGE
                    * PAGE;
                let start = first + offset;
                let bytes = (u64::from(pages.max(1)) * PAGE).min((1 << 48) - start);
                out.tlb_invalidate_range(start, bytes);
            }
            Op::Batch(ref inner) => {
                let room = BATCHES_LEN - self.next_batch;
                if batch_bound(inner) + 64 > room {
                    // No room left: the same commands, in the ring.
                    for op in inner {
                        self.op(op, out);
                    }
                    return;
                }
                let at = self.next_batch;
                self.next_batch += batch_bound(inner) + 64;
                let mut batch = StreamBuilder::new();
                for op in inner {
                    self.op(op, &mut batch);
                }
                batch.batch_end();
                let bytes = batch.to_bytes();
                out.batch_start(BATCH_VA + at, bytes.len() as u32);
                self.model.put((BATCHES_AT + at) as usize, &bytes);
                self.batches.push((at, bytes));
            }
            Op::Poison(ref poison) => self.poisoned(poison, out),
            // Only the hostile streams have the rest.
            _ => unreachable!("not a valid operation: {op:?}"),
        }
    }

    fn blit(&mut self, src: Addr, dst: Addr, shape: [u32; 4], out: &mut StreamBuilder) {
        let [width, height, src_extra, dst_extra] = shape;
        let Some(d) = self.slot(start_slot(dst), true) else {
            return;
        };
        let s = self.slot(start_slot(src), false).expect("any slot reads");
        let room = self.layout.len(d).min(self.layout.len(s));
        let width = u64::from(width.clamp(1, 64)).min(room / 4);
        let (src_pitch, dst_pitch) = (
            width * 4 + u64::from(src_extra) * 4,
            width * 4 + u64::from(dst_extra) * 4,
        );
        let footprint = |pitch: u64, h: u64| pitch * (h - 1) + width * 4;
        let mut height = u64::from(height.clamp(1, 16));
        while height > 1
            && (footprint(src_pitch, height) > self.layout.len(s)
                || footprint(dst_pitch, height) > self.layout.len(d))
        {
            height -= 1;
        }
        let s = self.at(s, src, footprint(src_pitch, height), 4);
        let d = self.at(d, dst, footprint(dst_pitch, height), 4);
        let rows: Vec<(Pieces, Pieces)> = (0..height)
            .map(|r| {
                let from = Placed {
                    offset: s.offset + r * src_pitch,
                    ..s
                };
                let to = Placed {
                    offset: d.offset + r * dst_pitch,
                    ..d
                };
                (self.pieces(from, width * 4), self.pieces(to, width * 4))
            })
            .collect();
        let all_from: Pieces = rows.iter().flat_map(|(f, _)| f.clone()).collect();
        let all_to: Pieces = rows.iter().flat_map(|(_, t)| t.clone()).collect();
        let clash = overlaps(&all_from, &all_to);
        // Rows are read before any is written: with no overlap between
        // source and destination, that is what the engine's row by row
        // copy comes to.
        let data: Vec<(Vec<u8>, bool)> = rows.iter().map(|(f, _)| self.model.read(f)).collect();
        for ((_, to), (bytes, unknown)) in rows.iter().zip(data) {
            self.model.write(to, &bytes, unknown || clash);
        }
        out.blit2d(
            self.va(s),
            src_pitch as u32,
            self.va(d),
            dst_pitch as u32,
            width as u32,
            height as u32,
        );
    }
}

fn start_slot(addr: Addr) -> u8 {
    match addr {
        Addr::Slot { slot, .. } => slot,
        Addr::Raw(va) => (va % u64::from(SLOTS)) as u8,
    }
}

/// A compare operation and reference value for which the wait is over at
/// once, given the value in memory; `hint` varies the value.
fn holding(compare: CompareOp, memory: u32, hint: u32) -> (CompareOp, u32) {
    let m = u64::from(memory);
    let h = u64::from(hint);
    match compare {
        CompareOp::Eq => (CompareOp::Eq, memory),
        CompareOp::Ne => (CompareOp::Ne, memory ^ (hint | 1)),
        CompareOp::Ge => (CompareOp::Ge, (h % (m + 1)) as u32),
        CompareOp::Gt if memory > 0 => (CompareOp::Gt, (h % m) as u32),
        CompareOp::Lt if memory < u32::MAX => (
            CompareOp::Lt,
            (m + 1 + h % (u64::from(u32::MAX) - m)) as u32,
        ),
        CompareOp::Le => (
            CompareOp::Le,
            (m + h % (u64::from(u32::MAX) - m + 1)) as u32,
        ),
        CompareOp::Gt | CompareOp::Lt => (CompareOp::Eq, memory),
    }
}

/// An access that runs off the end of a slot's mapping into the page
/// after it, which holds `entry` (or nothing): where it faults, and what
/// it wrote before, is the model's to say.
#[derive(Clone, Debug)]
pub struct Poison {
    /// The slot (0–6: slot 7 ends at 2^48).
    pub slot: u8,
    /// The entry of the page after the slot's last one, and its WRITABLE.
    pub entry: Option<(BadPage, bool)>,
    pub op: PoisonOp,
    /// Where the access starts: this many bytes before the slot's end
    /// (wrapped into the slot).
    pub back: u32,
    /// How far it runs past the slot's end.
    pub beyond: u32,
    /// A COPY's other end, placed as valid streams place addresses.
    pub other: Addr,
}

#[derive(Clone, Copy, Debug)]
pub enum PoisonOp {
    Fill,
    /// A COPY whose source runs off the slot.
    CopyFrom,
    /// A COPY whose destination runs off the slot.
    CopyTo,
    Fence,
    Semaphore,
}

/// The entry `poison` needs in A's tables: right after its slot's last
/// page.
pub fn poison_entry(layout: &Layout, poison: &Poison) -> Option<(u64, BadEntry)> {
    let va = poison_va(layout, poison.slot % (SLOTS - 1));
    poison
        .entry
        .map(|(page, writable)| (va, BadEntry::Page { page, writable }))
}

/// The poison of `ops`, wherever it is.
pub fn find_poison(ops: &[Op]) -> Option<&Poison> {
    ops.iter().find_map(|op| match op {
        Op::Poison(p) => Some(p),
        Op::Batch(inner) => find_poison(inner),
        _ => None,
    })
}

/// The first VA past `slot`'s mapping.
fn poison_va(layout: &Layout, slot: u8) -> u64 {
    layout.first_va(slot) + layout.len(slot)
}

/// What an access of the page after the poisoned slot meets: the page's
/// place in the flat memory, or the FAULT_INFO reason
/// (docs/device-interface.md, "The GPU MMU" and "Engine errors and
/// limits").
fn poison_page(entry: Option<(BadPage, bool)>, write: bool) -> Result<usize, u32> {
    let Some((page, writable)) = entry else {
        return Err(1);
    };
    match page {
        BadPage::ReservedBit(_) | BadPage::LargeAtLevel1 => Err(2),
        BadPage::VramBeyond(_) | BadPage::VramFar(_) => Err(3),
        // Not A's (the tail past the read-only window, B's window), or
        // A's window without an fd, which engines cannot reach.
        BadPage::BWindow(_) | BadPage::Tail(_) => Err(4),
        // The walk takes the page (the window exists, read-write), so a
        // write through a read-only entry is refused by the MMU first.
        BadPage::Remote(_) if write && !writable => Err(5),
        BadPage::Remote(_) => Err(4),
        BadPage::ReadOnlyWindow(_) if writable || write => Err(5),
        BadPage::ReadOnlyWindow(n) => {
            let page = u64::from(n % 64);
            assert!(page * PAGE < RO_LEN);
            Ok((SLICE + RO_FILE_OFFSET + page * PAGE) as usize)
        }
    }
}

impl Planner<'_> {
    /// Where the page at `page_va` is for an access, or why it faults.
    fn page(&self, page_va: u64, write: bool) -> Result<usize, u32> {
        for slot in 0..SLOTS {
            let first = self.layout.first_va(slot);
            if (first..first + self.layout.len(slot)).contains(&page_va) {
                if write && !self.layout.writable(slot) {
                    return Err(5);
                }
                return Ok(self.layout.pieces(slot, page_va - first, PAGE)[0].0);
            }
        }
        match self.poison {
            Some((va, entry)) if va == page_va => poison_page(entry, write),
            _ => Err(1),
        }
    }

    /// The flat pieces of `len` bytes at `va`, or the first VA that
    /// faults and why.
    fn reach(&self, va: u64, len: u64, write: bool) -> Result<Pieces, (u64, u32)> {
        let mut out: Pieces = Vec::new();
        let mut at = va;
        while at < va + len {
            let page_va = at / PAGE * PAGE;
            let n = (page_va + PAGE).min(va + len) - at;
            let flat = self.page(page_va, write).map_err(|reason| (at, reason))?;
            let start = flat + (at - page_va) as usize;
            match out.last_mut() {
                Some((s, l)) if *s + *l == start => *l += n as usize,
                _ => out.push((start, n as usize)),
            }
            at += n;
        }
        Ok(out)
    }

    /// A write from `start` met a fault at `fault`: what it reached before
    /// may or may not be written ("the chunks before the fault completed";
    /// of the chunk that faulted, the device promises nothing), so the
    /// model stops vouching for it. `data` is what would be written there.
    fn unvouch(&mut self, start: u64, fault: u64, data: &[u8]) {
        if fault > start {
            let pieces = self
                .reach(start, fault - start, true)
                .expect("reached before the fault");
            self.model
                .write(&pieces, &data[..(fault - start) as usize], true);
        }
    }

    /// The channel meets a fault: it stops, and nothing more runs.
    fn meet(&mut self, (va, reason): (u64, u32), write: bool) {
        if !self.model.dead {
            self.fault = Some((va, write, reason));
            self.model.dead = true;
        }
    }

    fn poisoned(&mut self, p: &Poison, out: &mut StreamBuilder) {
        let slot = p.slot % (SLOTS - 1);
        // Streams have one poison: its entry is the one in the tables.
        assert_eq!(
            self.poison.map(|(va, _)| va),
            Some(poison_va(self.layout, slot))
        );
        let end = poison_va(self.layout, slot);
        let back = u64::from(p.back) % (self.layout.len(slot) + 1);
        let len = back + u64::from(p.beyond.max(1));
        match p.op {
            PoisonOp::Fill => {
                let dst = (end - back) & !3;
                let len = (end + len - back - dst).next_multiple_of(4);
                out.fill(dst, len as u32, 0xeeee_eeee);
                for done in (0..len).step_by(ENGINE_CHUNK as usize) {
                    let n = (len - done).min(ENGINE_CHUNK);
                    match self.reach(dst + done, n, true) {
                        Ok(to) => self.model.write(&to, &vec![0xee; n as usize], false),
                        Err(fault) => {
                            self.unvouch(dst + done, fault.0, &[0xee; ENGINE_CHUNK as usize]);
                            return self.meet(fault, true);
                        }
                    }
                }
            }
            PoisonOp::CopyFrom | PoisonOp::CopyTo => {
                let from = matches!(p.op, PoisonOp::CopyFrom);
                let Some(other) = self.slot(start_slot(p.other), from) else {
                    return;
                };
                let len = len.min(self.layout.len(other));
                let placed = self.at(other, p.other, len, 1);
                let (other_va, edge) = (self.va(placed), end - back);
                let (src, dst) = if from {
                    (edge, other_va)
                } else {
                    (other_va, edge)
                };
                out.copy(src, dst, len as u32);
                for done in (0..len).step_by(ENGINE_CHUNK as usize) {
                    let n = (len - done).min(ENGINE_CHUNK);
                    let from = match self.reach(src + done, n, false) {
                        Ok(pieces) => pieces,
                        Err(fault) => return self.meet(fault, false),
                    };
                    let (data, unknown) = self.model.read(&from);
                    let to = match self.reach(dst + done, n, true) {
                        Ok(pieces) => pieces,
                        Err(fault) => {
                            self.unvouch(dst + done, fault.0, &data);
                            return self.meet(fault, true);
                        }
                    };
                    self.model
                        .write(&to, &data, unknown || overlaps(&from, &to));
                }
            }
            PoisonOp::Fence => {
                let dst = (end - back) & !7;
                out.fence64(dst, 0xfeed_0000_0000_0000 | back, false);
                match self.reach(dst, 8, true) {
                    Ok(to) => {
                        self.model
                            .write(&to, &(0xfeed_0000_0000_0000 | back).to_le_bytes(), false);
                        if !self.model.dead {
                            self.model.fence = 0xfeed_0000_0000_0000 | back;
                        }
                    }
                    Err(fault) => self.meet(fault, true),
                }
            }
            PoisonOp::Semaphore => {
                let addr = (end - back) & !3;
                out.semaphore_wait(addr, CompareOp::Ge, 0);
                if let Err(fault) = self.reach(addr, 4, false) {
                    self.meet(fault, false);
                }
            }
        }
    }
}
