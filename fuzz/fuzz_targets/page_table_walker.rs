//! Fuzzes the shadow MMU's walker and builder with hostile guest page
//! tables.
//!
//! The input describes a vGPU (VRAM slice size, up to three DMA windows,
//! walk limit), the two channel roots, an invalidation range, which window
//! `DMA_UNMAP` removes, and raw entries written into sixteen 4 KiB tables
//! (layout: `shadow_mmu::testing::fuzz_page_tables`). The harness sets the
//! roots, invalidates, revokes, re-shadows and resets, and asserts after
//! every step that each entry of the physical MMU lies inside the allowed
//! set with the permission it grants and matches the reference model.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    shadow_mmu::testing::fuzz_page_tables(data);
});
