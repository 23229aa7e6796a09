//! The `dma` program: drives each vGPU's DMA self-test (the control block's
//! DMA registers, docs/device-interface.md) from inside the guest, so that
//! the device reaches guest RAM through the DMA maps QEMU really sends.
//!
//! For one page of the program's own memory (its guest physical address from
//! `/proc/self/pagemap`; without a vIOMMU, QEMU's IOVAs are guest physical
//! addresses): copy it to VRAM and compare through BAR0, clear it, copy it
//! back and compare; then ask for a copy from an address no map covers and
//! check that it is refused with DMA_NOT_MAPPED.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{Ordering, fence};
use std::time::Duration;

use crate::mapping::{Access, Mapping};
use crate::pattern::fill_row;
use crate::pci::{PciDevice, SYSFS_PCI_DEVICES};
use crate::registers::BAR2_SIZE;
use crate::report::Reporter;
use crate::scanout::vram_size;
use crate::wait::wait_for;

const IRQ_STATUS: usize = 0x1020;
const ERROR_CODE: usize = 0x1028;
const DMA_IOVA_LO: usize = 0x1040;
const DMA_IOVA_HI: usize = 0x1044;
const DMA_VRAM_LO: usize = 0x1048;
const DMA_VRAM_HI: usize = 0x104c;
const DMA_LENGTH: usize = 0x1050;
const DMA_CONTROL: usize = 0x1054;
const DMA_STATUS: usize = 0x1058;
const DMA_COUNT: usize = 0x105c;
/// DMA_CONTROL: guest memory → VRAM.
const TO_VRAM: u32 = 1;
/// DMA_CONTROL: VRAM → guest memory.
const FROM_VRAM: u32 = 2;
/// IRQ_STATUS bit 2.
const IRQ_DMA_DONE: u32 = 1 << 2;
/// ERROR_CODE / DMA_STATUS: part of the IOVA range is not mapped.
const DMA_NOT_MAPPED: u32 = 4;
/// An address far above the guest's RAM (and below the 40-bit physical
/// address space of the emulated CPU), which no DMA map covers.
const UNMAPPED_IOVA: u64 = 0xf0_0000_0000;
/// Seed of the page's pattern.
const SEED_DMA: u32 = 4;
/// The config space command register and its bus master bit.
const COMMAND: u64 = 0x04;
const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// DMA completion is immediate for fd-backed maps, asynchronous otherwise.
const DMA_TIMEOUT: Duration = Duration::from_secs(5);

const PAGE: usize = 4096;

/// One page of memory, page aligned so that it is one physical page.
#[repr(C, align(4096))]
struct Page([u8; PAGE]);

impl Page {
    /// The page's bytes, read volatile: the device writes them behind the
    /// compiler's back.
    fn snapshot(&self) -> Vec<u8> {
        let base = self.0.as_ptr();
        (0..PAGE)
            .map(|i| {
                let byte = base.wrapping_add(i);
                // SAFETY: `i < PAGE`, so `byte` is inside the live page that
                // `self` borrows.
                unsafe { byte.read_volatile() }
            })
            .collect()
    }
}

/// The guest physical address of the page holding `address`, from
/// /proc/self/pagemap (bits 0–54 of the entry are the frame number when
/// the reader has CAP_SYS_ADMIN; bit 63 says the page is present).
fn physical_address(address: usize) -> Result<u64, String> {
    let pagemap = File::open("/proc/self/pagemap").map_err(|e| format!("pagemap: {e}"))?;
    let mut entry = [0u8; 8];
    pagemap
        .read_exact_at(&mut entry, (address / PAGE) as u64 * 8)
        .map_err(|e| format!("pagemap: {e}"))?;
    let entry = u64::from_le_bytes(entry);
    let frame = entry & ((1 << 55) - 1);
    if entry >> 63 == 0 || frame == 0 {
        return Err(format!(
            "pagemap entry {entry:#x}: page absent or frame hidden (not root?)"
        ));
    }
    Ok(frame * PAGE as u64 + (address % PAGE) as u64)
}

/// Sets the bus master bit in the command register (bochs does not use DMA,
/// so nothing else enables it). MSI and MSI-X messages are memory writes
/// of the device, which QEMU drops while bus mastering is off.
pub fn enable_bus_master(device: &PciDevice) -> io::Result<()> {
    let config = OpenOptions::new()
        .read(true)
        .write(true)
        .open(device.dir().join("config"))?;
    let mut command = [0u8; 2];
    config.read_exact_at(&mut command, COMMAND)?;
    let value = u16::from_le_bytes(command) | COMMAND_BUS_MASTER;
    config.write_all_at(&value.to_le_bytes(), COMMAND)
}

/// BAR2 of one vGPU, mapped for writing.
struct ControlBlock(Mapping);

impl ControlBlock {
    fn read(&self, offset: usize) -> Result<u32, String> {
        self.0
            .read_u32(offset)
            .ok_or(format!("register {offset:#x} outside BAR2"))
    }

    fn write(&self, offset: usize, value: u32) -> Result<(), String> {
        self.0
            .write_u32(offset, value)
            .ok_or(format!("register {offset:#x} outside BAR2"))
    }

    /// Starts a DMA and waits for it to complete; returns DMA_STATUS.
    fn dma(&self, iova: u64, vram: u64, length: u32, command: u32) -> Result<u32, String> {
        let count = self.read(DMA_COUNT)?;
        self.write(DMA_IOVA_LO, iova as u32)?;
        self.write(DMA_IOVA_HI, (iova >> 32) as u32)?;
        self.write(DMA_VRAM_LO, vram as u32)?;
        self.write(DMA_VRAM_HI, (vram >> 32) as u32)?;
        self.write(DMA_LENGTH, length)?;
        self.write(DMA_CONTROL, command)?;
        wait_for(DMA_TIMEOUT, || {
            self.read(DMA_COUNT)
                .ok()
                .filter(|&c| c == count.wrapping_add(1))
        })
        .ok_or(format!("DMA_COUNT stayed at {count} for {DMA_TIMEOUT:?}"))?;
        self.read(DMA_STATUS)
    }
}

/// Runs the DMA checks; returns the number of failed checks.
pub fn run() -> usize {
    let mut report = Reporter::new("dma");
    let devices = match PciDevice::find_vgpus(Path::new(SYSFS_PCI_DEVICES)) {
        Ok(devices) if !devices.is_empty() => devices,
        Ok(_) => {
            report.fail("to-vram", "no vGPU found");
            return report.failures();
        }
        Err(e) => {
            report.fail("to-vram", e);
            return report.failures();
        }
    };
    for (index, device) in devices.iter().enumerate() {
        if let Err(e) = dma_device(&mut report, device, index as u32) {
            report.fail("to-vram", format!("{} {e}", device.address));
        }
    }
    report.failures()
}

fn dma_device(report: &mut Reporter, device: &PciDevice, index: u32) -> Result<(), String> {
    let at = device.address.as_str();
    enable_bus_master(device).map_err(|e| format!("cannot enable bus mastering: {e}"))?;
    let control = Mapping::bar_with(&device.bar_path(2), 0, BAR2_SIZE, Access::ReadWrite)
        .map(ControlBlock)
        .map_err(|e| e.to_string())?;
    let size = vram_size(device).map_err(|e| e.to_string())?;
    // The last MiB of VRAM: away from every frame the other programs draw.
    let vram = size
        .checked_sub(1 << 20)
        .ok_or("VRAM is smaller than 1 MiB")?;

    let mut page = Box::new(Page([0; PAGE]));
    fill_row(&mut page.0, index, (PAGE / 4) as u32, SEED_DMA);
    // The device reads and writes the page behind the compiler's back: keep
    // the writes to it on this side of the register writes that start a DMA.
    fence(Ordering::SeqCst);
    let expected = page.0.to_vec();
    let iova = physical_address(page.0.as_ptr() as usize)?;
    control.write(ERROR_CODE, 0)?;
    control.write(IRQ_STATUS, IRQ_DMA_DONE)?;

    let status = control.dma(iova, vram, PAGE as u32, TO_VRAM)?;
    let bar0 = Mapping::bar(&device.bar_path(0), vram, PAGE).map_err(|e| e.to_string())?;
    let in_vram: Vec<u8> = (0..PAGE)
        .step_by(4)
        .flat_map(|i| bar0.read_u32(i).unwrap_or(u32::MAX).to_le_bytes())
        .collect();
    let done = control.read(IRQ_STATUS)? & IRQ_DMA_DONE != 0;
    report.record(
        "to-vram",
        match (status, in_vram == expected, done) {
            (0, true, true) => Ok(format!("{at} page at {iova:#x} -> VRAM {vram:#x}: 4096 bytes match, DMA_DONE set")),
            _ => Err(format!(
                "{at} page at {iova:#x} -> VRAM {vram:#x}: DMA_STATUS {status}, {} bytes differ, DMA_DONE {done}",
                differing(&in_vram, &expected)
            )),
        },
    );

    page.0.fill(0);
    fence(Ordering::SeqCst);
    let status = control.dma(iova, vram, PAGE as u32, FROM_VRAM)?;
    let back = page.snapshot();
    report.record(
        "from-vram",
        match (status, back == expected) {
            (0, true) => Ok(format!(
                "{at} VRAM {vram:#x} -> page at {iova:#x}: 4096 bytes match"
            )),
            _ => Err(format!(
                "{at} VRAM {vram:#x} -> page at {iova:#x}: DMA_STATUS {status}, {} bytes differ",
                differing(&back, &expected)
            )),
        },
    );

    let status = control.dma(UNMAPPED_IOVA, vram, PAGE as u32, TO_VRAM)?;
    let error = control.read(ERROR_CODE)?;
    control.write(ERROR_CODE, 0)?;
    report.record(
        "unmapped",
        match (status, error) {
            (DMA_NOT_MAPPED, DMA_NOT_MAPPED) => Ok(format!("{at} IOVA {UNMAPPED_IOVA:#x} refused: DMA_NOT_MAPPED")),
            _ => Err(format!(
                "{at} IOVA {UNMAPPED_IOVA:#x}: DMA_STATUS {status}, ERROR_CODE {error}, expected {DMA_NOT_MAPPED} (DMA_NOT_MAPPED)"
            )),
        },
    );
    Ok(())
}

fn differing(a: &[u8], b: &[u8]) -> usize {
    a.iter().zip(b).filter(|(x, y)| x != y).count() + a.len().abs_diff(b.len())
}
