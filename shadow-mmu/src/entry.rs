//! The guest's GPU page-table entry (docs/device-interface.md, "The GPU
//! MMU"): its bit layout, the levels it appears at, decoding a raw entry
//! into a [`GuestPte`], and encoding one back (for tests and tools).
//!
//! ```text
//!  63        52 51                                12 11     4  3   2   1   0
//! +------------+------------------------------------+--------+---+---+---+---+
//! |  reserved  |   address bits 51:12               |reserved| L | S | W | V |
//! +------------+------------------------------------+--------+---+---+---+---+
//!  V  VALID     the entry is present
//!  W  WRITABLE  writes allowed (a page is writable only if every entry on
//!               its path is)
//!  S  SYSTEM    the address is an IOVA; clear: an offset in the VRAM slice
//!  L  LARGE     level 2 only: a 2 MiB page (address bits 20:12 must be 0)
//! ```
//!
//! An entry with VALID clear is not present whatever its other bits hold
//! (as on x86, software may keep its own data there). A present entry with
//! a reserved bit set, or LARGE where it is not allowed, is invalid.
//!
//! The channel's `PT_ROOT` register uses the same format at
//! [`Level::Root`]: it names the level-4 table. Its WRITABLE bit is ignored
//! (the register documents only VALID, SYSTEM and the address, so a driver
//! that leaves W clear there must not lose write access everywhere).

use thiserror::Error;

use crate::addr::{GpuVa, Iova, PageSize, VramOffset};
use crate::pte::{Permissions, PteTarget};

/// Bit 0: the entry is present.
pub const PTE_VALID: u64 = 1 << 0;
/// Bit 1: writes are allowed through the entry.
pub const PTE_WRITABLE: u64 = 1 << 1;
/// Bit 2: the address is an IOVA (guest memory), not a VRAM offset.
pub const PTE_SYSTEM: u64 = 1 << 2;
/// Bit 3: a level-2 entry maps a 2 MiB page.
pub const PTE_LARGE: u64 = 1 << 3;
/// Bits 51:12: the address of the page or next-level table.
pub const PTE_ADDRESS_MASK: u64 = 0x000f_ffff_ffff_f000;
/// Bits 63:52 and 11:4, which must be 0 in a present entry.
pub const PTE_RESERVED_MASK: u64 = !(PTE_ADDRESS_MASK | 0xf);

/// Number of entries in one 4 KiB table.
pub const ENTRIES_PER_TABLE: usize = 512;

/// Size of one table in bytes.
pub const TABLE_BYTES: usize = ENTRIES_PER_TABLE * 8;

/// Where in the four-level tree an entry sits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// The `PT_ROOT` register: one entry naming the level-4 table.
    Root,
    /// Level 4, indexed by VA bits 47:39.
    L4,
    /// Level 3, indexed by VA bits 38:30.
    L3,
    /// Level 2, indexed by VA bits 29:21; may map 2 MiB pages.
    L2,
    /// Level 1, indexed by VA bits 20:12; maps 4 KiB pages.
    L1,
}

impl Level {
    /// The lowest VA bit that indexes a table at this level.
    const fn shift(self) -> u32 {
        match self {
            Level::Root => 48,
            Level::L4 => 39,
            Level::L3 => 30,
            Level::L2 => 21,
            Level::L1 => 12,
        }
    }

    /// Bytes of VA space one entry at this level covers.
    pub const fn span(self) -> u64 {
        1 << self.shift()
    }

    /// The index of `va`'s entry in a table at this level (always 0 for the
    /// root, which is a single entry).
    pub const fn index(self, va: GpuVa) -> usize {
        match self {
            Level::Root => 0,
            _ => ((va.0 >> self.shift()) & 0x1ff) as usize,
        }
    }

    /// The level of the table an entry at this level points to.
    pub const fn next(self) -> Option<Level> {
        match self {
            Level::Root => Some(Level::L4),
            Level::L4 => Some(Level::L3),
            Level::L3 => Some(Level::L2),
            Level::L2 => Some(Level::L1),
            Level::L1 => None,
        }
    }

    /// The level's number as the contract counts them (5 for the root).
    pub const fn number(self) -> u8 {
        match self {
            Level::Root => 5,
            Level::L4 => 4,
            Level::L3 => 3,
            Level::L2 => 2,
            Level::L1 => 1,
        }
    }
}

/// Why a present guest entry is invalid (it faults like a non-present one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum EntryError {
    /// A reserved bit is set.
    #[error("reserved bits {bits:#x} are set in level-{} entry {raw:#x}", level.number())]
    ReservedBits {
        /// The whole entry.
        raw: u64,
        /// The reserved bits that are set.
        bits: u64,
        /// Where the entry was.
        level: Level,
    },
    /// LARGE is set outside level 2.
    #[error("LARGE is set in level-{} entry {raw:#x}", level.number())]
    LargeOutsideLevel2 {
        /// The whole entry.
        raw: u64,
        /// Where the entry was.
        level: Level,
    },
    /// A 2 MiB entry's address is not 2 MiB aligned.
    #[error("2 MiB entry {raw:#x} has address bits 20:12 set")]
    MisalignedLarge {
        /// The whole entry.
        raw: u64,
    },
    /// [`GuestPte::encode`] was given an address the format cannot hold
    /// (bits outside 51:12).
    #[error("{0} does not fit an entry's address bits 51:12")]
    Unencodable(PteTarget),
}

/// A decoded guest page-table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GuestPte {
    /// VALID is clear: nothing is mapped here.
    NotPresent,
    /// The entry names the next-level table.
    Table {
        /// Where the table lives.
        table: PteTarget,
        /// The entry's own WRITABLE bit (ignored at [`Level::Root`]).
        permissions: Permissions,
    },
    /// The entry maps a page.
    Page {
        /// The first byte of the page.
        page: PteTarget,
        /// 4 KiB at level 1, 2 MiB at level 2.
        size: PageSize,
        /// The entry's own WRITABLE bit.
        permissions: Permissions,
    },
}

impl GuestPte {
    /// Decodes the raw entry `raw` found at `level`.
    #[inline]
    pub fn decode(raw: u64, level: Level) -> Result<GuestPte, EntryError> {
        if raw & PTE_VALID == 0 {
            return Ok(GuestPte::NotPresent);
        }
        let bits = raw & PTE_RESERVED_MASK;
        if bits != 0 {
            return Err(EntryError::ReservedBits { raw, bits, level });
        }
        let address = raw & PTE_ADDRESS_MASK;
        let (target, permissions) = Self::page_parts(raw);
        let large = raw & PTE_LARGE != 0;
        match level {
            Level::L1 if !large => Ok(GuestPte::Page {
                page: target,
                size: PageSize::Size4KiB,
                permissions,
            }),
            Level::L2 if large => {
                if !address.is_multiple_of(PageSize::Size2MiB.bytes()) {
                    return Err(EntryError::MisalignedLarge { raw });
                }
                Ok(GuestPte::Page {
                    page: target,
                    size: PageSize::Size2MiB,
                    permissions,
                })
            }
            _ if large => Err(EntryError::LargeOutsideLevel2 { raw, level }),
            _ => Ok(GuestPte::Table {
                table: target,
                permissions,
            }),
        }
    }

    /// Zero exactly when `raw` at level 1 decodes as a page, in bit
    /// arithmetic only, for the walker's scan of a level-1 table.
    #[inline]
    pub(crate) fn not_page_l1(raw: u64) -> u64 {
        (raw & (PTE_VALID | PTE_RESERVED_MASK | PTE_LARGE)) ^ PTE_VALID
    }

    /// Whether every entry of a level-1 table decodes as a page, from the
    /// OR (`any`) and the AND (`all`) of the entries: [`Self::not_page_l1`]
    /// is zero for each exactly when none has a reserved or LARGE bit and
    /// all have VALID. Two accumulators per entry, for the common table.
    #[inline]
    pub(crate) fn all_pages_l1(any: u64, all: u64) -> bool {
        any & (PTE_RESERVED_MASK | PTE_LARGE) == 0 && all & PTE_VALID != 0
    }

    /// The target and permission of `raw`, which decodes as a page.
    #[inline]
    pub(crate) fn page_parts(raw: u64) -> (PteTarget, Permissions) {
        let address = raw & PTE_ADDRESS_MASK;
        let target = if raw & PTE_SYSTEM != 0 {
            PteTarget::System(Iova(address))
        } else {
            PteTarget::Vram(VramOffset(address))
        };
        let permissions = Permissions {
            writable: raw & PTE_WRITABLE != 0,
        };
        (target, permissions)
    }

    /// The raw entry for this one. It is the caller's job to place a
    /// 2 MiB page at level 2 and a 4 KiB page at level 1.
    pub fn encode(&self) -> Result<u64, EntryError> {
        let (target, permissions, large) = match *self {
            GuestPte::NotPresent => return Ok(0),
            GuestPte::Table { table, permissions } => (table, permissions, false),
            GuestPte::Page {
                page,
                size,
                permissions,
            } => (page, permissions, size == PageSize::Size2MiB),
        };
        let (address, system) = match target {
            PteTarget::Vram(offset) => (offset.0, 0),
            PteTarget::System(iova) => (iova.0, PTE_SYSTEM),
        };
        if address & !PTE_ADDRESS_MASK != 0 {
            return Err(EntryError::Unencodable(target));
        }
        let mut raw = address | system | PTE_VALID;
        if permissions.writable {
            raw |= PTE_WRITABLE;
        }
        if large {
            if address % PageSize::Size2MiB.bytes() != 0 {
                return Err(EntryError::MisalignedLarge {
                    raw: raw | PTE_LARGE,
                });
            }
            raw |= PTE_LARGE;
        }
        Ok(raw)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RW: Permissions = Permissions { writable: true };
    const RO: Permissions = Permissions { writable: false };

    #[test]
    fn valid_clear_is_not_present_whatever_else_is_set() {
        for raw in [0, PTE_WRITABLE | PTE_LARGE, !PTE_VALID] {
            for level in [Level::Root, Level::L4, Level::L2, Level::L1] {
                assert_eq!(GuestPte::decode(raw, level), Ok(GuestPte::NotPresent));
            }
        }
    }

    #[test]
    fn writable_bit_sets_the_entry_permission() {
        let ro = GuestPte::decode(0x5000 | PTE_VALID, Level::L1).unwrap();
        let rw = GuestPte::decode(0x5000 | PTE_VALID | PTE_WRITABLE, Level::L1).unwrap();
        assert!(matches!(
            ro,
            GuestPte::Page {
                permissions: RO,
                ..
            }
        ));
        assert!(matches!(
            rw,
            GuestPte::Page {
                permissions: RW,
                ..
            }
        ));
    }

    #[test]
    fn system_bit_selects_the_address_space() {
        let vram = GuestPte::decode(0x7000 | PTE_VALID, Level::L4).unwrap();
        let system = GuestPte::decode(0x7000 | PTE_VALID | PTE_SYSTEM, Level::L4).unwrap();
        assert_eq!(
            vram,
            GuestPte::Table {
                table: PteTarget::Vram(VramOffset(0x7000)),
                permissions: RO
            }
        );
        assert_eq!(
            system,
            GuestPte::Table {
                table: PteTarget::System(Iova(0x7000)),
                permissions: RO
            }
        );
    }

    #[test]
    fn address_takes_bits_51_to_12() {
        let raw = PTE_ADDRESS_MASK | PTE_VALID | PTE_SYSTEM;
        let GuestPte::Page { page, .. } = GuestPte::decode(raw, Level::L1).unwrap() else {
            panic!("not a page");
        };
        assert_eq!(page, PteTarget::System(Iova(0x000f_ffff_ffff_f000)));
    }

    #[test]
    fn every_reserved_bit_makes_the_entry_invalid() {
        for bit in (4..12).chain(52..64) {
            let raw = 0x1000 | PTE_VALID | (1 << bit);
            assert_eq!(
                GuestPte::decode(raw, Level::L1),
                Err(EntryError::ReservedBits {
                    raw,
                    bits: 1 << bit,
                    level: Level::L1
                }),
                "bit {bit}"
            );
        }
    }

    #[test]
    fn large_at_level_2_maps_a_2_mib_page() {
        let raw = 0x40_0000 | PTE_VALID | PTE_LARGE | PTE_WRITABLE;
        assert_eq!(
            GuestPte::decode(raw, Level::L2),
            Ok(GuestPte::Page {
                page: PteTarget::Vram(VramOffset(0x40_0000)),
                size: PageSize::Size2MiB,
                permissions: RW
            })
        );
    }

    #[test]
    fn large_outside_level_2_is_invalid() {
        let raw = 0x40_0000 | PTE_VALID | PTE_LARGE;
        for level in [Level::Root, Level::L4, Level::L3, Level::L1] {
            assert_eq!(
                GuestPte::decode(raw, level),
                Err(EntryError::LargeOutsideLevel2 { raw, level })
            );
        }
    }

    #[test]
    fn misaligned_large_page_is_invalid() {
        let raw = 0x40_1000 | PTE_VALID | PTE_LARGE;
        assert_eq!(
            GuestPte::decode(raw, Level::L2),
            Err(EntryError::MisalignedLarge { raw })
        );
    }

    #[test]
    fn level_2_entry_without_large_names_a_table() {
        let raw = 0x40_1000 | PTE_VALID;
        assert!(matches!(
            GuestPte::decode(raw, Level::L2),
            Ok(GuestPte::Table { .. })
        ));
    }

    #[test]
    fn encode_round_trips_through_decode() {
        let cases = [
            (
                GuestPte::Page {
                    page: PteTarget::System(Iova(0x20_0000)),
                    size: PageSize::Size2MiB,
                    permissions: RW,
                },
                Level::L2,
            ),
            (
                GuestPte::Page {
                    page: PteTarget::Vram(VramOffset(0x3000)),
                    size: PageSize::Size4KiB,
                    permissions: RO,
                },
                Level::L1,
            ),
            (
                GuestPte::Table {
                    table: PteTarget::Vram(VramOffset(0x9000)),
                    permissions: RW,
                },
                Level::L3,
            ),
            (GuestPte::NotPresent, Level::L4),
        ];
        for (pte, level) in cases {
            let raw = pte.encode().unwrap();
            assert_eq!(GuestPte::decode(raw, level), Ok(pte));
        }
    }

    #[test]
    fn encode_refuses_addresses_the_format_cannot_hold() {
        let unaligned = GuestPte::Table {
            table: PteTarget::Vram(VramOffset(0x1008)),
            permissions: RO,
        };
        assert!(matches!(
            unaligned.encode(),
            Err(EntryError::Unencodable(_))
        ));
        let too_high = GuestPte::Page {
            page: PteTarget::System(Iova(1 << 52)),
            size: PageSize::Size4KiB,
            permissions: RO,
        };
        assert!(matches!(too_high.encode(), Err(EntryError::Unencodable(_))));
        let misaligned_large = GuestPte::Page {
            page: PteTarget::System(Iova(0x1000)),
            size: PageSize::Size2MiB,
            permissions: RO,
        };
        assert!(matches!(
            misaligned_large.encode(),
            Err(EntryError::MisalignedLarge { .. })
        ));
    }

    #[test]
    fn levels_index_the_va_like_x86_64() {
        let va = GpuVa((3 << 39) | (5 << 30) | (7 << 21) | (9 << 12) | 0xabc);
        assert_eq!(Level::L4.index(va), 3);
        assert_eq!(Level::L3.index(va), 5);
        assert_eq!(Level::L2.index(va), 7);
        assert_eq!(Level::L1.index(va), 9);
        assert_eq!(Level::Root.index(va), 0);
        assert_eq!(Level::L2.span(), 2 << 20);
        assert_eq!(Level::Root.span(), 1 << 48);
    }

    proptest::proptest! {
        #[test]
        fn the_fast_level_1_page_test_agrees_with_decode(
            raw in proptest::prelude::any::<u64>(),
            flags in 0u64..16,
            clean in proptest::prelude::any::<bool>(),
        ) {
            // Mostly entries without reserved bits, which decode as pages.
            let raw = if clean { (raw & PTE_ADDRESS_MASK) | flags } else { raw };
            let decoded = GuestPte::decode(raw, Level::L1);
            let is_page = matches!(decoded, Ok(GuestPte::Page { .. }));
            proptest::prop_assert_eq!(GuestPte::not_page_l1(raw) == 0, is_page);
            if let Ok(GuestPte::Page { page, permissions, .. }) = decoded {
                proptest::prop_assert_eq!(GuestPte::page_parts(raw), (page, permissions));
            }
        }

        #[test]
        fn the_whole_table_page_test_agrees_with_the_per_entry_one(
            raws in proptest::collection::vec(proptest::prelude::any::<u64>(), 1..4),
            flags in proptest::collection::vec(0u64..16, 4),
            clean in proptest::prelude::any::<bool>(),
        ) {
            let raws: Vec<u64> = raws
                .iter()
                .zip(&flags)
                .map(|(&raw, &flags)| if clean { (raw & PTE_ADDRESS_MASK) | flags } else { raw })
                .collect();
            let any = raws.iter().fold(0, |any, &raw| any | raw);
            let all = raws.iter().fold(!0, |all, &raw| all & raw);
            let each = raws.iter().all(|&raw| GuestPte::not_page_l1(raw) == 0);
            proptest::prop_assert_eq!(GuestPte::all_pages_l1(any, all), each);
        }
    }
}
