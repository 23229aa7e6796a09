//! Shadowing throughput against a memory-read floor measured in the same
//! run: `cargo bench -p shadow-mmu --bench shadow`.
//!
//! The guest tables map 1 GiB of 4 KiB pages (262144 leaf entries, 515
//! tables, 2 MiB + 12 KiB of page-table bytes) held in a `FlatMemory`, with
//! every page either in a 2 GiB VRAM slice or in one 2 GiB DMA window.
//! Measured, interleaved round by round:
//!
//! - floor: a plain sequential read of the same page-table bytes (summing
//!   them as u64s);
//! - build: `ShadowMmu::set_root` (unmap, walk, validate, program) into a
//!   `PhysicalMmu` that writes each run into one level-1 table, as a
//!   backend programming a level-1 table in one go would;
//! - ranges: `ShadowMmu::invalidate` of each 2 MiB range in turn (512 per
//!   round, each one upper entry per level plus one level-1 table).
//!
//! Then, for the breakdown, in rounds of their own (so that their writes
//! do not evict the floor's bytes): `copy`, a plain copy of the same bytes,
//! table by table, into one 4 KiB buffer (the walker must copy guest tables
//! before it trusts them, since the guest can rewrite them at any time, and
//! this is the least such a copy costs), and `walk`, the walker alone with
//! a visitor that only counts pages.
//!
//! Rates are page-table entries examined per second (the floor's entries
//! are the same u64s), and the ratio is to the floor's rate. Set
//! `SHADOW_BENCH_ROUNDS` to change the 41 rounds; the median is reported.
//!
//! The bench pins itself to the CPU it starts on, so that every path and
//! the floor see the same caches (a move to the other core would find a
//! cold L2 in the middle of a round); `taskset -c N` chooses the CPU.
//!
//! For profiling, `SHADOW_BENCH_ONLY=build` (or `ranges`) runs just that
//! path (over pages in VRAM, or in system memory with
//! `SHADOW_BENCH_TARGET=system`) for the rounds given, printing nothing:
//! `SHADOW_BENCH_ONLY=build SHADOW_BENCH_ROUNDS=2000 perf record ...`.

use std::hint::black_box;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use shadow_mmu::testing::{FixedAllowed, FlatMemory, TableBuilder, TableSpace};
use shadow_mmu::{
    ContextId, GpuVa, Iova, MmuError, PageSize, PhysicalMmu, PteTarget, ShadowMmu, ShadowPte,
    ShadowRun, SystemWindow, VaRange, VramOffset, WalkItem, WalkLimits, Walker,
};

const GIB: u64 = 1 << 30;
const PAGES: u64 = GIB / 4096;
const CTX: ContextId = ContextId(0);
/// Where the mapping starts: an arbitrary 1 GiB-aligned VA, so that the
/// upper tables are not at index 0.
const BASE_VA: u64 = 5 << 39 | 3 << 30;

/// A physical MMU with one level-1 table and nothing else, so that the
/// benchmark measures the shadow path and not a backend's tables: a run is
/// written into that table as a backend programs a level-1 table's entries
/// in one go (each page's address, writable bit and valid bit), and single
/// pages only go into a checksum.
#[derive(Debug)]
struct CountingMmu {
    maps: u64,
    unmaps: u64,
    checksum: u64,
    table: Box<[u64; 512]>,
}

impl Default for CountingMmu {
    fn default() -> Self {
        Self {
            maps: 0,
            unmaps: 0,
            checksum: 0,
            table: Box::new([0; 512]),
        }
    }
}

impl PhysicalMmu for CountingMmu {
    fn map(
        &mut self,
        _ctx: ContextId,
        va: GpuVa,
        _size: PageSize,
        pte: &ShadowPte,
    ) -> Result<(), MmuError> {
        self.maps += 1;
        let target = match pte.target() {
            PteTarget::Vram(offset) => offset.0,
            PteTarget::System(iova) => iova.0,
        };
        self.checksum = self.checksum.wrapping_add(va.0 ^ target);
        Ok(())
    }

    fn map_run(&mut self, _ctx: ContextId, run: &ShadowRun<'_>) -> Result<(), MmuError> {
        self.maps += run.len() as u64;
        let first = ((run.va().0 >> 12) % 512) as usize;
        for (entry, (_, pte)) in self.table[first..].iter_mut().zip(run.iter()) {
            let address = match pte.target() {
                PteTarget::Vram(offset) => offset.0,
                PteTarget::System(iova) => iova.0,
            };
            *entry = address | u64::from(pte.permissions().writable) << 1 | 1;
        }
        black_box(&mut self.table);
        Ok(())
    }

    fn unmap(&mut self, _ctx: ContextId, _va: GpuVa, _len: u64) -> Result<(), MmuError> {
        self.unmaps += 1;
        Ok(())
    }

    fn invalidate(&mut self, _ctx: ContextId) {}

    /// The bench never revokes, and this MMU keeps no tables to read.
    fn mapped_pages(
        &self,
        _ctx: ContextId,
        _va: GpuVa,
        _len: u64,
        _each: &mut dyn FnMut(GpuVa, &ShadowPte),
    ) -> Result<(), MmuError> {
        Err(MmuError::Backend("the counting MMU keeps no tables".into()))
    }
}

struct Setup {
    name: &'static str,
    tables: TableBuilder,
    allowed: FixedAllowed,
    /// The page-table bytes, for the floor.
    table_bytes: std::ops::Range<usize>,
}

fn setup(name: &'static str, system: bool) -> Setup {
    // Tables live in VRAM from offset 0; the leaves are not read, so only
    // the tables need backing.
    let table_area = 516 * 4096;
    let mut tables = TableBuilder::new(
        FlatMemory::new(table_area),
        0,
        FlatMemory::new(0),
        0,
        TableSpace::Vram,
    );
    for page in 0..PAGES {
        let va = GpuVa(BASE_VA + page * 4096);
        // Spread the targets over the 2 GiB, not in VA order.
        let addr = (page * 7919 % (2 * PAGES)) * 4096;
        let target = if system {
            PteTarget::System(Iova(4 * GIB + addr))
        } else {
            PteTarget::Vram(VramOffset(addr))
        };
        tables.map(va, PageSize::Size4KiB, target, true, TableSpace::Vram);
    }
    let allowed = FixedAllowed {
        vram_size: 2 * GIB,
        windows: vec![SystemWindow {
            iova: Iova(4 * GIB),
            size: 2 * GIB,
            writable: true,
        }],
    };
    Setup {
        name,
        tables,
        allowed,
        table_bytes: 0..515 * 4096,
    }
}

fn floor(setup: &Setup) -> (Duration, u64) {
    let bytes = &setup.tables.vram.bytes()[setup.table_bytes.clone()];
    let start = Instant::now();
    let sum = black_box(bytes)
        .chunks_exact(8)
        .map(|entry| u64::from_le_bytes(entry.try_into().expect("8 bytes")))
        .fold(0u64, u64::wrapping_add);
    let elapsed = start.elapsed();
    black_box(sum);
    (elapsed, (bytes.len() / 8) as u64)
}

fn copy(setup: &Setup, into: &mut [u8; 4096]) -> (Duration, u64) {
    let bytes = &setup.tables.vram.bytes()[setup.table_bytes.clone()];
    let start = Instant::now();
    for table in black_box(bytes).chunks_exact(4096) {
        into.copy_from_slice(table);
        black_box(&mut *into);
    }
    let elapsed = start.elapsed();
    (elapsed, (bytes.len() / 8) as u64)
}

fn walk(setup: &Setup, walker: &mut Walker) -> (Duration, u64) {
    let memory = setup.tables.memory();
    let mut pages = 0;
    let start = Instant::now();
    let stats = walker.walk(
        setup.tables.root(),
        VaRange::ALL,
        &memory,
        &setup.allowed,
        |item| {
            if let WalkItem::Leaves(run) = item {
                pages += run.len() as u64;
            }
            ControlFlow::Continue(())
        },
    );
    let elapsed = start.elapsed();
    assert_eq!(pages, PAGES);
    (elapsed, stats.entries)
}

fn build(setup: &Setup, shadow: &mut ShadowMmu, mmu: &mut CountingMmu) -> (Duration, u64) {
    let memory = setup.tables.memory();
    let root = setup.tables.root();
    let start = Instant::now();
    let summary = shadow
        .set_root(CTX, root, &memory, &setup.allowed, mmu)
        .expect("counting MMU never fails");
    let elapsed = start.elapsed();
    assert_eq!(summary.mapped, PAGES, "every page is shadowed");
    assert_eq!(summary.fault_count, 0);
    (elapsed, summary.walk.entries)
}

fn ranges(setup: &Setup, shadow: &mut ShadowMmu, mmu: &mut CountingMmu) -> (Duration, u64) {
    let memory = setup.tables.memory();
    let mut entries = 0;
    let mut mapped = 0;
    let start = Instant::now();
    for chunk in 0..PAGES / 512 {
        let range = VaRange::new(GpuVa(BASE_VA + chunk * (2 << 20)), 2 << 20).expect("range");
        let summary = shadow
            .invalidate(CTX, range, &memory, &setup.allowed, mmu)
            .expect("counting MMU never fails");
        entries += summary.walk.entries;
        mapped += summary.mapped;
    }
    let elapsed = start.elapsed();
    assert_eq!(mapped, PAGES);
    (elapsed, entries)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Measures `path` in one warm-up and `rounds` measured runs.
struct Row {
    path: &'static str,
    samples: Vec<Duration>,
    entries: u64,
}

impl Row {
    fn new(path: &'static str) -> Self {
        Self {
            path,
            samples: Vec::new(),
            entries: 0,
        }
    }

    fn record(&mut self, round: usize, (time, entries): (Duration, u64)) {
        self.entries = entries;
        if round > 0 {
            self.samples.push(time);
        }
    }

    fn rate(&self) -> f64 {
        self.entries as f64 / median(self.samples.clone()).as_secs_f64()
    }
}

fn main() {
    // `cargo bench` passes `--bench`; there are no filters to parse.
    let rounds: usize = std::env::var("SHADOW_BENCH_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(41)
        .max(1);
    pin_to_current_cpu();
    if let Ok(path) = std::env::var("SHADOW_BENCH_ONLY") {
        profile(&path, rounds);
        return;
    }
    println!("shadow-mmu: 1 GiB of 4 KiB pages, {rounds} rounds, median");
    println!(
        "{:<7} {:<6} {:>10} {:>14} {:>9}",
        "target", "path", "time", "entries/s", "vs floor"
    );
    for (name, system) in [("VRAM", false), ("system", true)] {
        let setup = setup(name, system);
        let mut shadow = ShadowMmu::default();
        let mut mmu = CountingMmu::default();
        let (mut floor_row, mut build_row, mut ranges_row) =
            (Row::new("floor"), Row::new("build"), Row::new("ranges"));
        for round in 0..=rounds {
            floor_row.record(round, floor(&setup));
            build_row.record(round, build(&setup, &mut shadow, &mut mmu));
            ranges_row.record(round, ranges(&setup, &mut shadow, &mut mmu));
        }
        let mut walker = Walker::new(WalkLimits::default());
        let mut buffer = [0u8; 4096];
        let (mut copy_row, mut walk_row) = (Row::new("copy"), Row::new("walk"));
        for round in 0..=rounds {
            copy_row.record(round, copy(&setup, &mut buffer));
            walk_row.record(round, walk(&setup, &mut walker));
        }
        let floor_rate = floor_row.rate();
        for row in [floor_row, build_row, ranges_row, copy_row, walk_row] {
            let time = median(row.samples.clone());
            println!(
                "{:<7} {:<6} {:>8.3}ms {:>14.0} {:>9.3}",
                setup.name,
                row.path,
                time.as_secs_f64() * 1e3,
                row.rate(),
                row.rate() / floor_rate
            );
        }
        black_box((mmu.maps, mmu.unmaps, mmu.checksum, &mmu.table));
    }
}

/// Runs one path alone, for a profiler.
fn profile(path: &str, rounds: usize) {
    let target = std::env::var("SHADOW_BENCH_TARGET").unwrap_or_default();
    let setup = setup("profile", target == "system");
    let mut shadow = ShadowMmu::default();
    let mut mmu = CountingMmu::default();
    // Ranges re-shadow what a build set up.
    build(&setup, &mut shadow, &mut mmu);
    for _ in 0..rounds {
        match path {
            "build" => black_box(build(&setup, &mut shadow, &mut mmu)),
            "ranges" => black_box(ranges(&setup, &mut shadow, &mut mmu)),
            other => panic!("SHADOW_BENCH_ONLY is build or ranges, not {other:?}"),
        };
    }
    black_box((mmu.maps, mmu.unmaps, mmu.checksum));
}

/// Pins the bench to the CPU it runs on now (one of those `taskset` gave).
fn pin_to_current_cpu() {
    let cpu = rustix::thread::sched_getcpu();
    let mut cpus = rustix::thread::CpuSet::new();
    cpus.set(cpu);
    if let Err(e) = rustix::thread::sched_setaffinity(None, &cpus) {
        eprintln!("cannot pin the bench to CPU {cpu} ({e}); running unpinned");
    }
}
