//! The seed corpus of the `page_table_walker` fuzz target
//! (`fuzz/seeds/page_table_walker/`), replayed through the same harness so
//! that CI exercises it without nightly. The input layout is documented on
//! `shadow_mmu::testing::fuzz_page_tables`.

use std::fs;
use std::path::PathBuf;

use shadow_mmu::testing::fuzz_page_tables;
use shadow_mmu::{PTE_LARGE, PTE_VALID, PTE_WRITABLE};

fn seed_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/page_table_walker")
}

#[test]
fn every_seed_runs_cleanly() {
    let mut seen = 0;
    for entry in fs::read_dir(seed_dir()).expect("seed directory") {
        let path = entry.unwrap().path();
        let data = fs::read(&path).unwrap();
        fuzz_page_tables(&data);
        seen += 1;
    }
    assert!(seen >= 8, "only {seen} seeds");
}

/// A fuzz input under construction.
struct Seed {
    header: [u8; 22],
    records: Vec<u8>,
}

/// Record modes: name a table, name a page in the first 4 MiB.
const TABLE: u8 = 1;
const PAGE: u8 = 2;
const RAW: u8 = 0;
const SYSTEM: u64 = 1 << 2;

impl Seed {
    /// A 1 MiB VRAM slice and windows 0–256 KiB writable, 256–512 KiB
    /// read-only, 1–2 MiB writable; both roots name table 0 in VRAM; the
    /// invalidation covers the first 2 MiB; DMA_UNMAP removes window 0.
    fn new() -> Self {
        let mut header = [0u8; 22];
        header[0] = 64;
        header[1] = 3 | (31 << 2);
        header[2..11].copy_from_slice(&[0, 15, 1, 16, 15, 0, 64, 63, 1]);
        header[13..21].copy_from_slice(&(511u64 << 36).to_le_bytes());
        Self {
            header,
            records: Vec::new(),
        }
    }

    fn root(mut self, byte: u8) -> Self {
        self.header[11] = byte;
        self.header[12] = byte;
        self
    }

    fn entry(mut self, table: u8, index: u16, mode: u8, value: u64) -> Self {
        self.records.push(table);
        self.records.extend(index.to_le_bytes());
        self.records.push(mode);
        self.records.extend(value.to_le_bytes());
        self
    }

    /// Entry `index` of `table` names table `next`.
    fn table(self, table: u8, index: u16, next: u8, flags: u64) -> Self {
        self.entry(table, index, TABLE, (u64::from(next) << 12) | flags)
    }

    /// Entry `index` of `table` maps the page at `addr`.
    fn page(self, table: u8, index: u16, addr: u64, flags: u64) -> Self {
        self.entry(table, index, PAGE, addr | flags)
    }

    /// Tables 0 → 1 → 2 → 3 in VRAM down to level 1.
    fn chain(self) -> Self {
        let rw = PTE_VALID | PTE_WRITABLE;
        self.table(0, 0, 1, rw)
            .table(1, 0, 2, rw)
            .table(2, 0, 3, rw)
    }

    fn bytes(&self) -> Vec<u8> {
        let mut bytes = self.header.to_vec();
        bytes.extend(&self.records);
        bytes
    }
}

fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let rw = PTE_VALID | PTE_WRITABLE;
    let ro = PTE_VALID;
    let vram_pages = Seed::new()
        .chain()
        .page(3, 0, 0x8_0000, rw)
        .page(3, 1, 0x8_1000, ro)
        .page(3, 511, 0xf_f000, rw);
    let system_pages = Seed::new()
        .chain()
        .page(3, 0, 0x1000, rw | SYSTEM)
        .page(3, 1, 0x4_0000, ro | SYSTEM)
        .page(3, 2, 0x10_0000, rw | SYSTEM);
    let system_tables = Seed::new()
        .root(0x10 | 4)
        .table(4, 0, 5, rw | SYSTEM)
        .table(5, 0, 6, rw | SYSTEM)
        .table(6, 0, 7, rw | SYSTEM)
        .page(7, 0, 0x2000, rw | SYSTEM)
        .page(7, 3, 0x9_0000, rw);
    let large_pages = Seed::new()
        .table(0, 0, 1, rw)
        .table(1, 0, 2, rw)
        .page(2, 0, 0, rw | PTE_LARGE)
        .page(2, 1, 0x20_0000, ro | PTE_LARGE)
        .page(2, 2, 0x10_0000, ro | PTE_LARGE | SYSTEM)
        .page(2, 3, 0x1000, ro | PTE_LARGE);
    let hostile_pages = Seed::new()
        .chain()
        .page(3, 0, 0x10_0000, rw)
        .page(3, 1, 0x4_0000, rw | SYSTEM)
        .page(3, 2, 0x8_0000, rw | SYSTEM)
        .page(3, 3, 0x3f_f000, ro | SYSTEM)
        .entry(3, 4, RAW, u64::MAX)
        .entry(3, 5, RAW, 0x1000 | PTE_VALID | (1 << 60))
        .page(3, 6, 0x1000, ro | PTE_LARGE);
    let cycle = Seed::new()
        .chain()
        .table(0, 1, 0, rw)
        .table(1, 1, 0, rw)
        .table(2, 1, 1, rw)
        .page(3, 0, 0x1000, rw);
    let shared = Seed::new()
        .chain()
        .table(2, 1, 3, rw)
        .table(2, 2, 3, ro)
        .table(1, 1, 2, rw)
        .page(3, 0, 0x1000, rw)
        .page(3, 7, 0x4000, rw | SYSTEM);
    let mut fan_out = Seed::new().table(0, 0, 1, rw);
    for index in 0..64 {
        fan_out = fan_out.table(1, index, 2, rw).table(2, index, 3, rw);
    }
    fan_out = fan_out.page(3, 0, 0x1000, rw).page(3, 511, 0x3000, rw);
    let table_outside = Seed::new()
        .table(0, 0, 1, rw)
        .entry(1, 0, RAW, (0x40_0000) | rw)
        .entry(1, 1, RAW, (0x8_0000) | rw | SYSTEM)
        .entry(1, 2, RAW, (0xf_ffff_0000_0000) | rw);
    vec![
        ("vram_pages", vram_pages.bytes()),
        ("system_pages", system_pages.bytes()),
        ("system_tables", system_tables.bytes()),
        ("large_pages", large_pages.bytes()),
        ("hostile_pages", hostile_pages.bytes()),
        ("cycle", cycle.bytes()),
        ("shared_subtree", shared.bytes()),
        ("fan_out", fan_out.bytes()),
        ("table_outside", table_outside.bytes()),
        ("empty", Vec::new()),
    ]
}

#[test]
fn the_seeds_exercise_mapping_faults_and_limits() {
    let outcomes: Vec<_> = seeds()
        .into_iter()
        .map(|(name, bytes)| (name, fuzz_page_tables(&bytes)))
        .collect();
    let outcome = |wanted: &str| {
        outcomes
            .iter()
            .find(|(name, _)| *name == wanted)
            .map(|(_, outcome)| *outcome)
            .unwrap()
    };
    // Three pages in each of the two contexts.
    assert_eq!(outcome("vram_pages").mapped, 6);
    assert_eq!(outcome("vram_pages").faults, 0);
    assert!(outcome("system_tables").mapped > 0);
    assert!(outcome("hostile_pages").faults >= 6);
    assert!(outcome("cycle").faults > 0);
    assert!(outcome("table_outside").faults >= 3);
    // 64 × 64 × 2 pages per context, more than 32 tables × 512 entries allow.
    assert!(outcome("fan_out").limited);
    assert!(outcome("fan_out").mapped > 0);
}

/// Rewrites the seed files:
/// `cargo test -p shadow-mmu --test fuzz_seeds -- --ignored`.
#[test]
#[ignore = "writes into fuzz/seeds; run by hand when the input layout changes"]
fn regenerate_seeds() {
    let dir = seed_dir();
    fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in seeds() {
        fs::write(dir.join(name), bytes).unwrap();
    }
}
