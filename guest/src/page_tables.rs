//! GPU page tables as the guest builds them (docs/device-interface.md, "The
//! GPU MMU"): four levels of 4 KiB tables of 512 little-endian entries,
//! indexed like x86-64, with 2 MiB LARGE pages at level 2.
//!
//! ```text
//!  63        52 51                                12 11     4  3   2   1   0
//! +------------+------------------------------------+--------+---+---+---+---+
//! |  reserved  |   address bits 51:12               |reserved| L | S | W | V |
//! +------------+------------------------------------+--------+---+---+---+---+
//! ```
//!
//! [`PageTables`] lays the tables out one after another from a VRAM
//! offset, the level-4 table (the root) first, and gives back their images
//! for the program to store through BAR0. Pure: nothing here touches a
//! device.

/// VALID: the entry is present.
pub const PTE_VALID: u64 = 1 << 0;
/// WRITABLE: writes are allowed.
pub const PTE_WRITABLE: u64 = 1 << 1;
/// SYSTEM: the address is guest memory (IOVA), not VRAM.
pub const PTE_SYSTEM: u64 = 1 << 2;
/// LARGE: a level-2 entry that maps a 2 MiB page.
pub const PTE_LARGE: u64 = 1 << 3;
/// Entries per table.
pub const ENTRIES: usize = 512;
/// Bytes of one table.
pub const TABLE_BYTES: u64 = 4096;
/// Bytes of a LARGE page.
pub const LARGE_PAGE: u64 = 2 << 20;
/// Address bits 51:12 of an entry.
const ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;

/// Page tables under construction, placed from a VRAM offset.
#[derive(Debug, Clone)]
pub struct PageTables {
    /// VRAM offset of table 0 (the root); table `i` is `i` tables further.
    base: u64,
    tables: Vec<[u64; ENTRIES]>,
}

/// The index of `va` in the table of `level` (4 is the root).
fn index(va: u64, level: u32) -> usize {
    ((va >> (12 + 9 * (level - 1))) & 0x1ff) as usize
}

impl PageTables {
    /// An empty tree whose root lies at VRAM offset `base` (4 KiB aligned).
    pub fn new(base: u64) -> Self {
        Self {
            base,
            tables: vec![[0; ENTRIES]],
        }
    }

    /// VRAM offset of the root table, for PT_ROOT.
    pub fn root(&self) -> u64 {
        self.base
    }

    /// VRAM bytes the tables take so far.
    pub fn bytes(&self) -> u64 {
        self.tables.len() as u64 * TABLE_BYTES
    }

    /// The next-level table named by entry `slot` of table `table`,
    /// created (and named with VALID | WRITABLE) if the entry is empty.
    fn child(&mut self, table: usize, slot: usize) -> usize {
        let entry = self.tables[table][slot];
        if entry & PTE_VALID != 0 {
            return ((entry & ADDRESS_MASK) - self.base) as usize / TABLE_BYTES as usize;
        }
        let child = self.tables.len();
        self.tables.push([0; ENTRIES]);
        self.tables[table][slot] =
            (self.base + child as u64 * TABLE_BYTES) | PTE_VALID | PTE_WRITABLE;
        child
    }

    /// Sets the level-2 entry that covers `va` to `entry`, as it is (a
    /// test may store an entry the device must refuse).
    pub fn set_level2(&mut self, va: u64, entry: u64) {
        let l3 = self.child(0, index(va, 4));
        let l2 = self.child(l3, index(va, 3));
        self.tables[l2][index(va, 2)] = entry;
    }

    /// Maps `bytes` (a multiple of 2 MiB) of VRAM from offset `vram` at
    /// `va` (2 MiB aligned) with writable LARGE pages.
    pub fn map_vram(&mut self, va: u64, vram: u64, bytes: u64) {
        for page in (0..bytes).step_by(LARGE_PAGE as usize) {
            self.set_level2(
                va + page,
                (vram + page) | PTE_VALID | PTE_WRITABLE | PTE_LARGE,
            );
        }
    }

    /// Every table: its VRAM offset and its bytes, little-endian.
    pub fn images(&self) -> Vec<(u64, Vec<u8>)> {
        self.tables
            .iter()
            .enumerate()
            .map(|(i, table)| {
                let bytes = table.iter().flat_map(|e| e.to_le_bytes()).collect();
                (self.base + i as u64 * TABLE_BYTES, bytes)
            })
            .collect()
    }

    /// What a walk of `va` finds: the VRAM offset it maps to, or `None`
    /// (not present), following the rules of a valid tree only.
    pub fn translate(&self, va: u64) -> Option<u64> {
        let mut table = 0usize;
        for level in (2..=4).rev() {
            let entry = self.tables[table][index(va, level)];
            if entry & PTE_VALID == 0 {
                return None;
            }
            if level == 2 && entry & PTE_LARGE != 0 {
                return Some((entry & ADDRESS_MASK) + (va & (LARGE_PAGE - 1)));
            }
            table = ((entry & ADDRESS_MASK) - self.base) as usize / TABLE_BYTES as usize;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_gib_of_vram_takes_three_tables() {
        let mut tables = PageTables::new(0x3c00_0000);
        tables.map_vram(0x20_0000_0000, 0, 1 << 30);
        assert_eq!(tables.bytes(), 3 * TABLE_BYTES);
        let images = tables.images();
        assert_eq!(images[0].0, 0x3c00_0000);
        // Root entry 0 names the level-3 table; its entry 128 (VA bits
        // 38:30 of 128 GiB) names the level-2 table.
        let entry = |image: &[u8], i: usize| {
            u64::from_le_bytes(image[i * 8..i * 8 + 8].try_into().unwrap())
        };
        assert_eq!(entry(&images[0].1, 0), 0x3c00_1000 | 3);
        assert_eq!(entry(&images[1].1, 128), 0x3c00_2000 | 3);
        assert_eq!(entry(&images[2].1, 511), (511 << 21) | 0xb);
    }

    #[test]
    fn translate_follows_the_tree() {
        let mut tables = PageTables::new(0x10_0000);
        tables.map_vram(0x20_0000_0000, 0x40_0000, 8 << 20);
        assert_eq!(tables.translate(0x20_0000_1234), Some(0x40_1234));
        assert_eq!(tables.translate(0x20_007f_fffc), Some(0xbf_fffc));
        assert_eq!(tables.translate(0x20_0080_0000), None);
        assert_eq!(tables.translate(0), None);
    }

    #[test]
    fn a_raw_entry_is_stored_as_given() {
        let mut tables = PageTables::new(0);
        tables.map_vram(1 << 30, 0, 4 << 20);
        tables.set_level2((1 << 30) + (4 << 20), (256 << 20) | 0xb);
        assert_eq!(
            tables.translate((1 << 30) + (4 << 20) + 8),
            Some((256 << 20) + 8)
        );
        assert_eq!(tables.bytes(), 3 * TABLE_BYTES);
    }
}
