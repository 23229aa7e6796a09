//! The `engines-hostile` program: one vGPU's guest driver turns hostile
//! while another vGPU of the same GPU keeps drawing, and the device must
//! stop only the hostile channels, with the documented errors.
//!
//! The innocent vGPU (the first, which bochs scans out) redraws the
//! engines picture of [`SEED_HOSTILE`] in a loop on its own thread, polling
//! its fences. Meanwhile, on the hostile vGPU (the last, on vfio-pci, its
//! interrupts on MSI-X eventfds):
//!
//! 1. **privileged**: channel 0 (RING_PUT) is given a FILL, then a batch
//!    that starts a second batch holding a COPY with the PHYSICAL flag
//!    (from physical address 0, where the GPU keeps another vGPU's VRAM).
//!    The validator must refuse the whole span: the channel stops with
//!    ERROR_CODE 3 (PRIVILEGED), ERROR_VA at that COPY in the nested batch,
//!    its vector fires, GET stays, and nothing of the span ran (not even
//!    the FILL before it).
//! 2. **fault**: channel 1 (control page) has page tables with one 2 MiB
//!    entry past the end of the vGPU's VRAM slice; a FILL, then a COPY
//!    into that page. The COPY's write faults: the channel stops with
//!    ERROR_CODE 16 (ENGINE_FAULT), ERROR_VA the faulting address (also in
//!    the control page's ERROR_CODE), FAULT_VA/FAULT_INFO record channel
//!    1, a write, reason 3 (outside VRAM), FAULT_COUNT goes up, IRQ_STATUS
//!    FAULT is set and vector 0 fires; the FILL before it stays written;
//!    the translate port gives reason 3 for the page.
//! 3. **isolation**: while each hostile channel sits stopped, the innocent
//!    vGPU completes a whole picture's worth of fences more; at the end its
//!    frame is still exactly its picture (and the host's screenshot of it
//!    too).
//! 4. **recover**: RESET and ENABLE bring both hostile channels back; a
//!    FENCE on each completes and interrupts.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use vgpu_commands::{FLAG_PHYSICAL, StreamBuilder};

use crate::channel::{Channel, ChannelConfig, ChannelError, Door};
use crate::checkpoint;
use crate::drawing::{Drawing, RING_BYTES, WorkArea, identity_tables, store_tables};
use crate::engines::{bochs_frame, find_devices, open_vfio, vfio_interrupt_counts};
use crate::engines_pattern::{EnginesPattern, SEED_HOSTILE};
use crate::gpu::{Gpu, VRAM_VA, channel as reg, control};
use crate::page_tables::{LARGE_PAGE, PTE_LARGE, PTE_VALID, PTE_WRITABLE};
use crate::pattern::FrameLayout;
use crate::pci::PciDevice;
use crate::report::Reporter;
use crate::vfio::VfioDevice;

/// ERROR_CODE of a refused privileged command.
const PRIVILEGED: u32 = 3;
/// ERROR_CODE of an engine access that faulted.
const ENGINE_FAULT: u32 = 16;
/// FAULT_INFO / XLATE_STATUS reason: outside VRAM.
const OUTSIDE_VRAM: u32 = 3;
/// How long an interrupt may take.
const IRQ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the innocent vGPU has to show progress.
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(20);
/// How long the innocent vGPU may take to draw its first picture.
const FIRST_ROUND_TIMEOUT: Duration = Duration::from_secs(60);

/// What the innocent vGPU's thread shares with the hostile side.
#[derive(Debug, Default)]
struct Progress {
    /// Fences completed so far, both channels together.
    fences: AtomicU64,
    /// Rounds (whole pictures) completed.
    rounds: AtomicU64,
    /// Fences of one round (one per submission, both channels).
    per_round: AtomicU64,
    /// Set when the thread gave up.
    failed: AtomicBool,
    /// Set by the hostile side when it is done.
    stop: AtomicBool,
}

/// How the innocent vGPU's drawing went.
#[derive(Debug)]
struct InnocentLog {
    rounds: u64,
    fences: u64,
    longest_round: Duration,
    frame: Result<String, String>,
    layout: FrameLayout,
}

/// Runs the hostile checks; returns the number of failed checks.
pub fn run() -> usize {
    let mut report = Reporter::new("engines-hostile");
    let Some(devices) = find_devices(&mut report, "isolation") else {
        return report.failures();
    };
    let (Some(innocent), Some(hostile)) = (devices.first(), devices.last()) else {
        return report.failures();
    };
    if devices.len() < 2 {
        report.fail("isolation", "needs two vGPUs: one hostile, one innocent");
        return report.failures();
    }
    for unbound in crate::draw::unbind_fbcon() {
        report.info(format!("unbound {}", unbound.display()));
    }
    let progress = Progress::default();
    let innocent_log = std::thread::scope(|scope| {
        let drawer = scope.spawn(|| {
            let log = draw_innocent(innocent, &progress);
            if log.is_err() {
                progress.failed.store(true, Ordering::SeqCst);
            }
            log
        });
        let first =
            crate::wait::wait_for_every(FIRST_ROUND_TIMEOUT, Duration::from_millis(20), || {
                (progress.rounds.load(Ordering::SeqCst) >= 1
                    || progress.failed.load(Ordering::SeqCst))
                .then_some(())
            });
        if first.is_some() && !progress.failed.load(Ordering::SeqCst) {
            // Only the setup and the end return errors; the attacks and
            // the recovery report their own checks.
            if let Err(e) = attack(&mut report, hostile, innocent, &progress) {
                report.fail("privileged", format!("{} {e}", hostile.address));
            }
        } else {
            report.fail(
                "isolation",
                format!(
                    "{} the innocent vGPU did not draw its first picture",
                    innocent.address
                ),
            );
        }
        progress.stop.store(true, Ordering::SeqCst);
        drawer.join()
    });
    let at = innocent.address.as_str();
    match innocent_log {
        Ok(Ok(log)) => {
            report.info(format!(
                "{at} drew {} pictures ({} fences), the longest in {:.0?}",
                log.rounds, log.fences, log.longest_round
            ));
            let matched = report.record(
                "frame",
                log.frame
                    .map(|d| format!("{at} after the attacks: {d}"))
                    .map_err(|e| format!("{at} {e}")),
            );
            if matched {
                checkpoint::hold_pattern(
                    at,
                    "engines-hostile",
                    checkpoint::Picture::Engines(SEED_HOSTILE),
                    log.layout.width,
                    log.layout.height,
                );
            }
        }
        Ok(Err(e)) => report.fail("frame", format!("{at} the innocent vGPU: {e}")),
        Err(_) => report.fail("frame", format!("{at} the innocent vGPU's thread panicked")),
    }
    report.failures()
}

/// The innocent vGPU: draws the picture again and again until told to
/// stop (after at least two pictures), counting fences as they complete.
fn draw_innocent(device: &PciDevice, progress: &Progress) -> Result<InnocentLog, String> {
    let gpu = Gpu::open(device).map_err(|e| crate::error_chain(&e))?;
    let frame = bochs_frame(&gpu, device)?;
    let work = WorkArea::place(gpu.vram_size(), &frame)?;
    let tables = identity_tables(&gpu, &work);
    store_tables(&gpu, &tables).map_err(|e| e.to_string())?;
    let pattern = EnginesPattern::new(frame.width, frame.height, SEED_HOSTILE);
    let mut drawing = Drawing::setup(&gpu, work, tables.root(), pattern, frame)?;
    let per_round: usize = drawing.submissions().iter().sum();
    progress.per_round.store(per_round as u64, Ordering::SeqCst);
    let mut seen = vec![0u64; 2];
    let count = |drawing: &Drawing<'_>, seen: &mut Vec<u64>| {
        if let Ok(fences) = drawing.polled_fences() {
            for (old, new) in seen.iter_mut().zip(fences) {
                if new > *old {
                    progress.fences.fetch_add(new - *old, Ordering::SeqCst);
                    *old = new;
                }
            }
        }
    };
    let mut rounds = 0u64;
    let mut longest = Duration::ZERO;
    // Fence values go on from round to round, one per submission, so that
    // their sum counts the submissions completed.
    let mut bases = vec![0u64; 2];
    while rounds < 2 || !progress.stop.load(Ordering::SeqCst) {
        let started = Instant::now();
        let last = drawing
            .submit_all(&bases, false, |d| count(d, &mut seen))
            .map_err(|e| format!("picture {}: {e}", rounds + 1))?;
        bases.clone_from(&last);
        let done = crate::wait::wait_for_every(
            crate::engines::DRAW_TIMEOUT,
            Duration::from_millis(1),
            || {
                count(&drawing, &mut seen);
                seen.iter().zip(&last).all(|(s, l)| s >= l).then_some(())
            },
        );
        if done.is_none() {
            return Err(format!(
                "picture {}: fences {seen:?} after {:?}, expected {last:?}",
                rounds + 1,
                crate::engines::DRAW_TIMEOUT
            ));
        }
        rounds += 1;
        longest = longest.max(started.elapsed());
        progress.rounds.store(rounds, Ordering::SeqCst);
    }
    let frame_check = drawing.check_frame();
    drawing.stop().map_err(|e| e.to_string())?;
    Ok(InnocentLog {
        rounds,
        fences: progress.fences.load(Ordering::SeqCst),
        longest_round: longest,
        frame: frame_check,
        layout: frame,
    })
}

/// Waits until the innocent vGPU completed a whole picture's worth of
/// fences more, and checks that hostile channel `n` is still stopped
/// meanwhile.
fn innocent_keeps_drawing(
    gpu: &Gpu,
    n: u32,
    progress: &Progress,
) -> Result<(u64, Duration), String> {
    let from = progress.fences.load(Ordering::SeqCst);
    let wanted = progress.per_round.load(Ordering::SeqCst).max(1);
    let started = Instant::now();
    crate::wait::wait_for_every(PROGRESS_TIMEOUT, Duration::from_millis(5), || {
        (progress.fences.load(Ordering::SeqCst) >= from + wanted
            || progress.failed.load(Ordering::SeqCst))
        .then_some(())
    });
    let moved = progress.fences.load(Ordering::SeqCst) - from;
    if progress.failed.load(Ordering::SeqCst) || moved < wanted {
        return Err(format!(
            "the innocent vGPU completed {moved} fences in {PROGRESS_TIMEOUT:?} while hostile channel {n} was stopped"
        ));
    }
    let status = gpu.channel_reg(n, reg::STATUS).map_err(|e| e.to_string())?;
    if status & 3 != reg::STATE_STOPPED {
        return Err(format!(
            "hostile channel {n} left the stopped state meanwhile: STATUS {status:#x}"
        ));
    }
    Ok((moved, started.elapsed()))
}

/// Waits for MSI-X vector `vector`.
fn interrupt(vfio: &VfioDevice, vector: u32) -> Result<u64, String> {
    let eventfd = vfio
        .vector(vector)
        .ok_or(format!("no eventfd for vector {vector}"))?;
    match eventfd.wait(IRQ_TIMEOUT) {
        Ok(0) => Err(format!(
            "no interrupt on MSI-X vector {vector} within {IRQ_TIMEOUT:?}; {}",
            vfio_interrupt_counts()
        )),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("eventfd of vector {vector}: {e}")),
    }
}

/// `len` bytes of VRAM from `offset`, as words.
fn vram_words(gpu: &Gpu, offset: u64, len: u64) -> Result<Vec<u32>, String> {
    (0..len / 4)
        .map(|i| gpu.vram_u32(offset + 4 * i).map_err(|e| e.to_string()))
        .collect()
}

/// The hostile vGPU's side.
fn attack(
    report: &mut Reporter,
    device: &PciDevice,
    innocent: &PciDevice,
    progress: &Progress,
) -> Result<(), String> {
    let at = device.address.as_str();
    let vfio = open_vfio(report, device)?;
    let gpu = Gpu::open(device).map_err(|e| crate::error_chain(&e))?;
    let frame = gpu
        .dispi()
        .ok()
        .and_then(|d| d.scanout())
        .unwrap_or(FrameLayout {
            start: 0,
            pitch: 0,
            width: 0,
            height: 0,
        });
    let work = WorkArea::place(gpu.vram_size(), &frame)?;
    let set = |offset, value| gpu.set_reg(offset, value).map_err(|e| e.to_string());
    // Faults raise vector 0; earlier ones are acknowledged.
    set(control::FAULT_COUNT, 0)?;
    set(control::IRQ_STATUS, 0xf)?;
    set(control::IRQ_MASK, control::IRQ_FAULT)?;
    for vector in 0..3 {
        if let Some(eventfd) = vfio.vector(vector) {
            eventfd.take().map_err(|e| e.to_string())?;
        }
    }

    // All of VRAM, and one 2 MiB page past its end.
    let mut tables = identity_tables(&gpu, &work);
    let mapped = gpu.vram_size() & !(LARGE_PAGE - 1);
    let bad_va = VRAM_VA + mapped;
    let outside = gpu.vram_size().next_multiple_of(LARGE_PAGE);
    tables.set_level2(bad_va, outside | PTE_VALID | PTE_WRITABLE | PTE_LARGE);
    store_tables(&gpu, &tables).map_err(|e| e.to_string())?;
    let scratch = work.scratch();
    gpu.zero_vram(scratch, 0x10000).map_err(|e| e.to_string())?;
    let start = |n: u32, door| {
        Channel::start(
            &gpu,
            ChannelConfig {
                index: n,
                ring: work.ring(n),
                ring_size: RING_BYTES,
                door,
                root: tables.root(),
            },
        )
        .map_err(|e| e.to_string())
    };
    let mut ch0 = start(0, Door::Register)?;
    let mut ch1 = start(1, Door::ControlPage(work.control_page(1)))?;

    // 1. A privileged COPY two batches deep.
    let inner_at = work.batches();
    let outer_at = inner_at + 0x100;
    let mut inner = StreamBuilder::new();
    inner.fill(VRAM_VA + scratch + 0x1000, 256, 0x1111_1111);
    let copy_va = VRAM_VA + inner_at + u64::from(inner.byte_len());
    inner
        .copy(0, VRAM_VA + scratch + 0x2000, 4096)
        .with_flags(FLAG_PHYSICAL)
        .batch_end();
    let mut outer = StreamBuilder::new();
    outer
        .nop(2)
        .batch_start(VRAM_VA + inner_at, inner.byte_len())
        .batch_end();
    gpu.write_vram_words(inner_at, inner.words())
        .and_then(|()| gpu.write_vram_words(outer_at, outer.words()))
        .map_err(|e| e.to_string())?;
    let mut ring = StreamBuilder::new();
    ring.fill(VRAM_VA + scratch, 256, 0xdead_beef)
        .batch_start(VRAM_VA + outer_at, outer.byte_len())
        .fence64(VRAM_VA + work.fence(0), 1, true);
    let refused = ch0.submit(ring.words(), Duration::from_secs(10));
    let privileged = (|| -> Result<String, String> {
        let (code, va) = match refused {
            Err(ChannelError::Stopped { code, va, .. }) => (code, va),
            Err(e) => return Err(e.to_string()),
            Ok(()) => return Err("the span was taken: GET reached PUT".to_string()),
        };
        let irqs = interrupt(&vfio, 1)?;
        let status = gpu.channel_reg(0, reg::STATUS).map_err(|e| e.to_string())?;
        let intr = gpu
            .channel_reg(0, reg::INTR_STATUS)
            .map_err(|e| e.to_string())?;
        let get = gpu
            .channel_reg(0, reg::RING_GET)
            .map_err(|e| e.to_string())?;
        let fence = gpu
            .channel_reg64(0, reg::FENCE)
            .map_err(|e| e.to_string())?;
        let untouched = vram_words(&gpu, scratch, 0x3000)?.iter().all(|&w| w == 0);
        let detail = format!(
            "ERROR_CODE {code} ERROR_VA {va:#x} (the COPY at level 2 is at {copy_va:#x}), STATUS {status:#x}, INTR_STATUS {intr:#x}, {irqs} interrupt(s) on vector 1, RING_GET {get}, FENCE {fence}, FILLs before it {}",
            if untouched { "did not run" } else { "RAN" }
        );
        if code == PRIVILEGED
            && va == copy_va
            && status & 3 == reg::STATE_STOPPED
            && intr & reg::INTR_ERROR != 0
            && get == 0
            && fence == 0
            && untouched
        {
            Ok(detail)
        } else {
            Err(detail)
        }
    })();
    let privileged_ok = report.record(
        "privileged",
        privileged
            .map(|d| format!("{at} channel 0 refused a privileged command in a nested batch: {d}"))
            .map_err(|e| format!("{at} channel 0: {e}")),
    );
    let mut isolation = Vec::new();
    if privileged_ok {
        isolation.push(
            innocent_keeps_drawing(&gpu, 0, progress).map(|(moved, took)| {
                format!(
                    "{moved} fences in {took:.0?} while hostile channel 0 was stopped (PRIVILEGED)"
                )
            }),
        );
    }

    // 2. A COPY into a page past the end of the VRAM slice.
    let faults_before = gpu.fault().map_err(|e| e.to_string())?.count;
    let fault_target = bad_va + 0x1000;
    let mut ring = StreamBuilder::new();
    ring.fill(VRAM_VA + scratch + 0x3000, 256, 0x2222_2222)
        .copy(VRAM_VA + scratch + 0x3000, fault_target, 4096)
        .fence64(VRAM_VA + work.fence(1), 1, true);
    let taken = ch1.submit(ring.words(), Duration::from_secs(10));
    let fault = (|| -> Result<String, String> {
        taken.map_err(|e| format!("the span was not taken: {e}"))?;
        let channel_irqs = interrupt(&vfio, 2)?;
        let device_irqs = interrupt(&vfio, 0)?;
        let page_code = gpu
            .vram_u32(work.control_page(1) + reg::PAGE_ERROR_CODE)
            .map_err(|e| e.to_string())?;
        let code = gpu
            .channel_reg(1, reg::ERROR_CODE)
            .map_err(|e| e.to_string())?;
        let va = gpu
            .channel_reg64(1, reg::ERROR_VA)
            .map_err(|e| e.to_string())?;
        let status = gpu.channel_reg(1, reg::STATUS).map_err(|e| e.to_string())?;
        let record = gpu.fault().map_err(|e| e.to_string())?;
        let (channel, write, reason) = record.fields();
        let irq_status = gpu.reg(control::IRQ_STATUS).map_err(|e| e.to_string())?;
        let before_ran = vram_words(&gpu, scratch + 0x3000, 256)?
            .iter()
            .all(|&w| w == 0x2222_2222);
        let fence = gpu
            .channel_reg64(1, reg::FENCE)
            .map_err(|e| e.to_string())?;
        // Acknowledge, then ask the translate port about the page.
        gpu.set_reg(control::FAULT_COUNT, 0)
            .and_then(|()| gpu.set_reg(control::IRQ_STATUS, control::IRQ_FAULT))
            .map_err(|e| e.to_string())?;
        let xlate = gpu.translate(1, bad_va, false).map_err(|e| e.to_string())?;
        gpu.set_reg(control::FAULT_COUNT, 0)
            .and_then(|()| gpu.set_reg(control::IRQ_STATUS, control::IRQ_FAULT))
            .map_err(|e| e.to_string())?;
        let detail = format!(
            "ERROR_CODE {code} (control page: {page_code}) ERROR_VA {va:#x}, STATUS {status:#x}, FAULT_VA {:#x} FAULT_INFO {:#x} (channel {channel}, {}, reason {reason}), FAULT_COUNT {faults_before} -> {}, IRQ_STATUS {irq_status:#x}, {channel_irqs} interrupt(s) on vector 2 and {device_irqs} on vector 0, the FILL before it {}, FENCE {fence}; XLATE of VA {bad_va:#x}: status {}",
            record.va,
            record.info,
            if write { "write" } else { "read" },
            record.count,
            if before_ran {
                "stayed written"
            } else {
                "is MISSING"
            },
            xlate.status
        );
        if code == ENGINE_FAULT
            && page_code == ENGINE_FAULT
            && va == fault_target
            && status & 3 == reg::STATE_STOPPED
            && record.va == fault_target
            && (channel, write, reason) == (1, true, OUTSIDE_VRAM)
            && record.count == faults_before + 1
            && irq_status & control::IRQ_FAULT != 0
            && before_ran
            && fence == 0
            && xlate.status == OUTSIDE_VRAM
        {
            Ok(detail)
        } else {
            Err(detail)
        }
    })();
    let fault_ok = report.record(
        "fault",
        fault
            .map(|d| {
                format!(
                    "{at} channel 1 stopped on a COPY into VRAM offset {outside:#x}, past its {:#x}-byte slice: {d}",
                    gpu.vram_size()
                )
            })
            .map_err(|e| format!("{at} channel 1: {e}")),
    );
    if fault_ok {
        isolation.push(innocent_keeps_drawing(&gpu, 1, progress).map(|(moved, took)| {
            format!("{moved} fences in {took:.0?} while hostile channel 1 was stopped (ENGINE_FAULT)")
        }));
    }
    let failed: Vec<&String> = isolation.iter().filter_map(|r| r.as_ref().err()).collect();
    let held: Vec<&String> = isolation.iter().filter_map(|r| r.as_ref().ok()).collect();
    report.record(
        "isolation",
        if !failed.is_empty() || held.len() != 2 {
            Err(format!(
                "{} {}",
                innocent.address,
                if failed.is_empty() {
                    "not checked: an attack above did not stop its channel".to_string()
                } else {
                    failed
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join("; ")
                }
            ))
        } else {
            Ok(format!(
                "{} kept drawing: {}",
                innocent.address,
                held.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        },
    );

    // 3. RESET and ENABLE bring both channels back.
    let mut recover = || -> Result<Vec<String>, String> {
        let mut recovered = Vec::new();
        for (channel, vector) in [(&mut ch0, 1u32), (&mut ch1, 2u32)] {
            let n = channel.index();
            channel.restart().map_err(|e| e.to_string())?;
            let mut words = StreamBuilder::new();
            words.fence64(VRAM_VA + work.fence(n), 7, true);
            channel
                .submit(words.words(), Duration::from_secs(10))
                .map_err(|e| e.to_string())?;
            interrupt(&vfio, vector)?;
            let fence = gpu
                .channel_reg64(n, reg::FENCE)
                .map_err(|e| e.to_string())?;
            let status = gpu.channel_reg(n, reg::STATUS).map_err(|e| e.to_string())?;
            let code = gpu
                .channel_reg(n, reg::ERROR_CODE)
                .map_err(|e| e.to_string())?;
            if fence != 7 || status & 3 != reg::STATE_RUNNING || code != 0 {
                return Err(format!(
                    "channel {n} after RESET and ENABLE: FENCE {fence}, STATUS {status:#x}, ERROR_CODE {code}"
                ));
            }
            recovered.push(format!(
                "channel {n} via {}: FENCE 7 on vector {vector}",
                channel.door()
            ));
        }
        Ok(recovered)
    };
    report.record(
        "recover",
        recover()
            .map(|r| {
                format!(
                    "{at} after RESET and ENABLE: {}; ERROR_CODE 0",
                    r.join(", ")
                )
            })
            .map_err(|e| format!("{at} {e}")),
    );
    ch0.reset().map_err(|e| e.to_string())?;
    ch1.reset().map_err(|e| e.to_string())?;
    set(control::IRQ_MASK, 0)?;
    Ok(())
}
