//! TLB_INVALIDATE as a command ("The commands": it invalidates "as
//! INV_CONTROL does for the channel"): a table change takes effect for
//! the commands after it; and the walk it causes is bounded like any walk,
//! costs only its own vGPU ("a walk of the whole space can take about a
//! second, during which the vGPU's client waits (other vGPUs do not)",
//! `docs/device-interface.md`; "a step runs at most one 64 KiB chunk",
//! `docs/vfio-user.md`), and when the watchdog ends a submission of them,
//! it reports 17.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use vgpud_tests::page_tables::{Page, pte};

use crate::cmd::{self, code};
use crate::rig::*;

#[test]
fn a_table_change_takes_effect_after_tlb_invalidate() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    let va = 0x5000_0000;
    let (p1, p2) = (DATA + 0x1000, DATA + 0x2000);
    a.map_page(va, Page::vram(p1))?;
    a.run_ok(
        0,
        &cmd::fill(va, 16, 0x1111_1111),
        "FILL via the first page",
    )?;
    assert_eq!(a.u32_at(p1), 0x1111_1111);
    // Remap without telling the MMU, then invalidate with the command.
    a.tables.map(&mut a.bar0, va, Page::vram(p2))?;
    a.run_ok(
        0,
        &cmd::concat(&[
            cmd::tlb_invalidate(va, 0x1000),
            cmd::fill(va, 16, 0x2222_2222),
        ]),
        "TLB_INVALIDATE then FILL",
    )?;
    assert_eq!(
        a.u32_at(p2),
        0x2222_2222,
        "the range invalidation was not seen"
    );
    assert_eq!(a.u32_at(p1), 0x1111_1111);
    // Unmap it and invalidate everything: the FILL faults (not present).
    a.tables.map(&mut a.bar0, va, Page::vram(p2))?;
    let l1 = a
        .tables
        .table(&mut a.bar0, va, vgpud_tests::page_tables::Level::L1)?;
    a.tables.set_entry(
        &mut a.bar0,
        l1,
        vgpud_tests::page_tables::Level::L1.index(va),
        0,
    )?;
    a.restart(0)?;
    a.submit(
        0,
        &cmd::concat(&[cmd::tlb_invalidate_all(), cmd::fill(va, 16, 0x3333_3333)]),
    )?;
    let s = a.wait_stopped(0, DEADLINE)?;
    assert_eq!((s.code, s.va), (code::ENGINE_FAULT, va), "{s:x?}");
    assert_eq!(a.u32_at(p2), 0x2222_2222);
    Ok(())
}

/// Adds, under level-4 entry 1 of `a`'s tree (VAs 2^39 .. 2^40, which
/// nothing of the rig uses), a level-3 table whose first `fan` entries
/// all name one level-2 table, whose 512 entries all name one empty
/// level-1 table: a walk of that range examines about fan × 2^18 entries
/// while reading three tables. The roots are not recommitted: only a
/// TLB_INVALIDATE command walks it.
fn heavy_subtree(a: &mut Vgpu, fan: usize) -> anyhow::Result<()> {
    let l3 = a.tables.new_table(&mut a.bar0)?;
    let l2 = a.tables.new_table(&mut a.bar0)?;
    let l1 = a.tables.new_table(&mut a.bar0)?;
    let ptr = |t: u64| t | pte::VALID | pte::WRITABLE;
    a.tables.fill_table(&mut a.bar0, l2, &[ptr(l1); 512])?;
    let mut entries = [0u64; 512];
    entries.iter_mut().take(fan).for_each(|e| *e = ptr(l2));
    a.tables.fill_table(&mut a.bar0, l3, &entries)?;
    let root = a.tables.root();
    a.tables.set_entry(&mut a.bar0, root, 1, ptr(l3))
}

#[test]
fn a_tlb_invalidate_walk_does_not_stall_the_other_vgpu() -> anyhow::Result<()> {
    let d = daemon()?;
    let (mut a, mut b) = pair(&d)?;
    a.enable(0)?;
    b.enable(0)?;
    heavy_subtree(&mut a, 2)?;
    let stop = AtomicBool::new(false);
    let (took, worst) = std::thread::scope(|s| -> anyhow::Result<_> {
        let tb = s.spawn(|| -> anyhow::Result<Duration> {
            let mut k = 0;
            let mut worst = Duration::ZERO;
            while !stop.load(Ordering::Relaxed) {
                k += 1;
                let t = Instant::now();
                b.submit(0, &Vgpu::fence(0, k))?;
                b.wait_fence(0, k)?;
                worst = worst.max(t.elapsed());
                std::thread::sleep(Duration::from_millis(2));
            }
            Ok(worst)
        });
        std::thread::sleep(Duration::from_millis(50));
        let t = Instant::now();
        a.submit(
            0,
            &cmd::concat(&[cmd::tlb_invalidate_all(), Vgpu::fence(0, 1)]),
        )?;
        // Done, or ended by the watchdog (17): either way the walk is over.
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = a.chan(0)?;
            if s.fence == 1 || s.code == code::WATCHDOG {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline && s.code == 0, "{s:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
        let took = t.elapsed();
        std::thread::sleep(Duration::from_millis(50));
        stop.store(true, Ordering::Relaxed);
        Ok((took, tb.join().expect("B")?))
    })?;
    eprintln!("A's TLB_INVALIDATE ALL took {took:?}; B's slowest FENCE {worst:?}");
    assert!(
        worst < Duration::from_millis(150),
        "the other vGPU's FENCE waited {worst:?} while vGPU A's TLB_INVALIDATE ({took:?}) ran"
    );
    Ok(())
}

#[test]
fn a_tlb_invalidate_ended_by_the_watchdog_reports_17() -> anyhow::Result<()> {
    let d = daemon()?;
    let mut a = Vgpu::attach(&d, VGPU_A)?;
    a.enable(0)?;
    heavy_subtree(&mut a, 8)?;
    // Four whole-space invalidations of about half a second or more each
    // in one submission: more than its 1 s of engine time.
    let one = cmd::tlb_invalidate_all();
    let at = a.submit(
        0,
        &cmd::concat(&[
            one.clone(),
            one.clone(),
            one.clone(),
            one,
            Vgpu::fence(0, 1),
        ]),
    )?;
    let start = Instant::now();
    let s = a.wait_stopped_long(0, Duration::from_secs(8))?;
    let elapsed = start.elapsed();
    let vas: Vec<u64> = (0..4).map(|i| a.ring_va(0, at + 20 * i)).collect();
    assert!(
        elapsed >= Duration::from_millis(900),
        "stopped after {elapsed:?}: {s:?}"
    );
    assert!(
        s.code == code::WATCHDOG && vas.contains(&s.va),
        "a submission of TLB_INVALIDATEs past 1 s of engine time: {s:x?} (expected 17 at one of {vas:x?})"
    );
    Ok(())
}
