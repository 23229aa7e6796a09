//! SET_SCANOUT when it runs ("Engine errors and limits", code 18
//! BAD_SURFACE): a surface that is one run of the vGPU's VRAM is shown
//! (the control API's screenshot captures it) until a DISPI register is
//! written; any other surface stops the channel with 18 at the command's
//! VA: guest memory, VRAM pages out of order, pages that do not translate.

use vgpud_tests::control::{CONTROL_TIMEOUT, control_request};
use vgpud_tests::page_tables::Page;

use crate::cmd::{self, code};
use crate::rig::*;

fn screenshot(d: &vgpud_tests::TestDaemon) -> anyhow::Result<serde_json::Value> {
    control_request(
        &d.control_socket(),
        "screenshot",
        serde_json::json!({"uuid": VGPU_A.to_string()}),
        CONTROL_TIMEOUT,
    )
}

#[test]
fn a_surface_in_one_run_of_vram_is_shown_until_dispi_is_written() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    let before = screenshot(&d)?;
    assert_eq!(
        before["ok"], false,
        "a fresh vGPU shows something: {before}"
    );
    // 64 × 32 pixels, pitch 512, at VRAM 0x80_0000 (VA = offset).
    a.write_vram(0x80_0000, &[0x80; 512 * 32]);
    a.run_ok(
        0,
        &cmd::set_scanout(0, 0x80_0000, 512, 64, 32),
        "SET_SCANOUT",
    )?;
    let shot = screenshot(&d)?;
    assert_eq!(shot["ok"], true, "{shot}");
    let r = &shot["result"];
    assert_eq!(
        (&r["width"], &r["height"], &r["pitch"], &r["offset"]),
        (
            &serde_json::json!(64),
            &serde_json::json!(32),
            &serde_json::json!(512),
            &serde_json::json!(0x80_0000)
        ),
        "{r}"
    );
    // A read-only mapping of VRAM is still VRAM: shown.
    a.run_ok(
        0,
        &cmd::set_scanout(0, VA_RO_VRAM, 4096, 1024, 4),
        "SET_SCANOUT of read-only VRAM",
    )?;
    let shot = screenshot(&d)?;
    assert_eq!(shot["result"]["offset"], RO_VRAM, "{shot}");
    // Any DISPI write ends it (the DISPI mode is disabled: nothing shown).
    a.c.dispi_write(vgpud_tests::regs::bar2::DISPI_BANK, 0)?;
    let shot = screenshot(&d)?;
    assert_eq!(shot["ok"], false, "{shot}");
    assert_eq!(shot["error"]["kind"], "no_scanout", "{shot}");
    Ok(())
}

/// A page of the surface that does not translate at all is read by the
/// check as an access: the document's 18 ("every 4 KiB page ... must
/// translate to the next page of VRAM") and its 16 ("an access of a
/// command faulted") both fit; either is accepted there, with the fault
/// recorded for 16.
#[test]
fn a_surface_that_is_not_one_run_of_vram_is_bad_surface() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    // Two VRAM pages out of order at VA 0x5000_0000.
    let va = 0x5000_0000;
    a.map_page(va, Page::vram(0x80_1000))?;
    a.map_page(va + 0x1000, Page::vram(0x80_0000))?;
    let mut problems = Vec::new();
    for (name, surface, w, h, pitch, faulting) in [
        ("guest memory", VA_GUEST, 16, 4, 64, None),
        ("memory without an fd", VA_REMOTE, 16, 4, 64, None),
        ("VRAM pages out of order", va, 1024, 2, 4096, None),
        (
            "a surface running off the mapped VRAM",
            IDENTITY_END - 0x1000,
            1024,
            2,
            4096,
            Some(IDENTITY_END),
        ),
        (
            "an unmapped surface",
            VA_UNMAPPED,
            16,
            4,
            64,
            Some(VA_UNMAPPED),
        ),
        (
            "VRAM past the slice",
            VA_OUTSIDE,
            16,
            4,
            64,
            Some(VA_OUTSIDE),
        ),
    ] {
        a.restart(0)?;
        a.clear_device_status()?;
        let at = a.submit(
            0,
            &cmd::concat(&[cmd::set_scanout(0, surface, pitch, w, h), Vgpu::fence(0, 1)]),
        )?;
        let s = a.wait_stopped(0, DEADLINE)?;
        let bad_surface = (s.code, s.va) == (code::BAD_SURFACE, a.ring_va(0, at));
        let fault = faulting.is_some_and(|page| (s.code, s.va) == (code::ENGINE_FAULT, page))
            && a.c.fault_record()?.va == s.va;
        if !(bad_surface || fault) {
            problems.push(format!("{name}: {s:?}"));
        }
        assert_eq!(s.fence, 0);
    }
    anyhow::ensure!(
        problems.is_empty(),
        "expected 18 at the command:\n{}",
        problems.join("\n")
    );
    Ok(())
}
