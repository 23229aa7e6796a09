//! The harness behind the `device_access` fuzz target, here so that its
//! seed corpus is replayed by `cargo test` without nightly, and so that
//! the device's property tests check the same contract.
//!
//! A [`Harness`] owns a [`VgpuDevice`] and applies [`Op`]s to it the way
//! the daemon would (a raw region index goes through
//! [`RegionIndex::try_from`] first). After every step it checks what
//! `docs/device-interface.md` and the API docs promise, panicking if the
//! device breaks it:
//!
//! - an access is refused exactly when the region rules say so (BAR2: 1,
//!   2, 4 or 8 bytes, naturally aligned; config space: 1 to 4096 bytes;
//!   BAR0 is the owner's; absent and unknown regions refuse everything),
//!   with `EINVAL`, and a refused access leaves config space and BAR2 as
//!   they were;
//! - a read, taken or refused, changes nothing; a taken one fills every
//!   byte asked for, and reading again gives the same bytes;
//! - the [`Effects`] an access or an owner event returns raise only
//!   vectors the device has, ask for DMA only of 1 byte to 1 MiB inside
//!   the VRAM slice, and MMU operations only on existing channels, with
//!   invalidated ranges whole 4 KiB pages inside the 48-bit space;
//! - an owner event raises at most vector 0;
//! - a completion with no request outstanding does nothing;
//! - the identity registers, the EDID and the IDs in config space never
//!   change; a reset returns every register to its value in a new device;
//! - what the owner's accessors report (PT_ROOT, MSI-X entries, INTx
//!   disable) is what the guest reads in the registers;
//! - a scanout, when shown, is a valid mode inside the VRAM slice.
//!
//! The harness counts the requests the device hands out but does not model
//! how many it keeps, so it holds whether the device has one DMA in flight
//! or a queue of them.

mod input;
mod snapshot;

pub use input::{
    Case, FAULT_REASONS, MAX_ACCESS_LEN, MAX_OPS, Op, RESOLUTIONS, VRAM_SIZES, config,
};

use crate::bar2::DMA_MAX_LENGTH;
use crate::bar2::control::INTERFACE_VERSION;
use crate::bar2::layout::*;
use crate::bar2::mmu::{GPU_VA_END, MMU_PAGE_SIZE};
use crate::config::DeviceConfig;
use crate::effects::{Effects, MmuRequest};
use crate::errno::EINVAL;
use crate::pci::capabilities::VGPU_MAGIC;
use crate::pci::header::{
    COMMAND_INTX_DISABLE, PCI_COMMAND, PCI_DEVICE_ID, PCI_STATUS, PCI_SUBSYSTEM_VENDOR_ID,
    PCI_VENDOR_ID, PCI_VENDOR_ID_OFFSET, STATUS_INTERRUPT,
};
use crate::region::{AccessError, CONFIG_SPACE_SIZE, RegionIndex};
use crate::{MsixEntry, ScanoutMode, VgpuDevice};
use snapshot::Snapshot;

/// What one input did, so that tests can tell that a seed exercises what
/// it is meant to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FuzzOutcome {
    /// Accesses the device took.
    pub accepted: u32,
    /// Accesses refused (by the region index or by the device).
    pub refused: u32,
    /// DMA requests handed out.
    pub dma_requests: u32,
    /// MMU requests handed out.
    pub mmu_requests: u32,
    /// Every vector raised.
    pub vectors: u64,
    /// Some step showed a scanout.
    pub scanout: bool,
}

/// Runs one fuzz input. Panics if the device breaks its contract.
pub fn fuzz_device_access(data: &[u8]) -> FuzzOutcome {
    let case = Case::decode(data);
    let mut harness = Harness::new(case.config);
    for op in &case.ops {
        harness.apply(op);
    }
    harness.outcome()
}

/// What a step may do to what the guest sees.
enum Expect {
    /// The device was not called: nothing to look at.
    Untouched,
    /// Config space and BAR2 stay as they were.
    Unchanged(&'static str),
    /// Anything within the rules.
    Changed,
    /// Every register at its value in a new device.
    Reset,
}

/// A device, the requests it has handed out, and what it looked like new.
#[derive(Debug)]
pub struct Harness {
    device: VgpuDevice,
    /// What a new device looked like.
    initial: Snapshot,
    /// What the device looks like now.
    current: Snapshot,
    /// DMA requests handed out and not completed (as far as the harness
    /// can tell: the device may drop some).
    dma_outstanding: u32,
    /// Likewise for translations.
    translations_outstanding: u32,
    outcome: FuzzOutcome,
}

impl Harness {
    /// A new device for `config`.
    ///
    /// Panics if the profile is invalid (the header only chooses valid
    /// ones).
    pub fn new(config: DeviceConfig) -> Self {
        let mut device = VgpuDevice::new(config).expect("the header chooses valid profiles");
        let initial = Snapshot::take(&mut device);
        let harness = Harness {
            device,
            current: initial.clone(),
            initial,
            dma_outstanding: 0,
            translations_outstanding: 0,
            outcome: FuzzOutcome::default(),
        };
        harness.check_view();
        harness
    }

    /// The device, to read between steps (a change made through it fails
    /// the next step's checks).
    pub fn device(&mut self) -> &mut VgpuDevice {
        &mut self.device
    }

    /// What the steps so far did.
    pub fn outcome(&self) -> FuzzOutcome {
        self.outcome
    }

    /// Applies one step and checks the contract; returns the effects (none
    /// for reads, refusals and resets), for a caller that acts as the
    /// owner.
    pub fn apply(&mut self, op: &Op) -> Effects {
        let (effects, expect) = match op {
            Op::Read {
                region,
                offset,
                len,
            } => (Effects::NONE, self.read(*region, *offset, *len)),
            Op::Write {
                region,
                offset,
                data,
            } => self.write(*region, *offset, data),
            Op::CompleteDma(result) => {
                let idle = self.dma_outstanding == 0;
                self.dma_outstanding = self.dma_outstanding.saturating_sub(1);
                let effects = self.device.complete_dma(*result);
                self.completed("complete_dma", idle, effects)
            }
            Op::CompleteTranslate(result) => {
                let idle = self.translations_outstanding == 0;
                self.translations_outstanding = self.translations_outstanding.saturating_sub(1);
                let effects = self.device.complete_translate(*result);
                self.completed("complete_translate", idle, effects)
            }
            Op::RecordFault(fault) => {
                let effects = self.device.record_fault(*fault);
                self.check_owner_event(effects);
                (effects, Expect::Changed)
            }
            Op::SetIntxAsserted(asserted) => {
                self.device.set_intx_asserted(*asserted);
                (Effects::NONE, Expect::Changed)
            }
            Op::Reset => {
                self.device.reset();
                self.dma_outstanding = 0;
                self.translations_outstanding = 0;
                (Effects::NONE, Expect::Reset)
            }
        };
        let after = match expect {
            Expect::Untouched => return effects,
            _ => Snapshot::take(&mut self.device),
        };
        match expect {
            Expect::Unchanged(what) => self.current.assert_same(&after, what),
            Expect::Reset => {
                self.initial.assert_same(&after, "reset");
                assert_eq!(self.device.scanout(), None, "scanout after reset");
            }
            _ => {}
        }
        self.current = after;
        if let Op::SetIntxAsserted(asserted) = op {
            let status = self
                .current
                .bytes(RegionIndex::CONFIG, u64::from(PCI_STATUS), 2);
            assert_eq!(
                u16::from_le_bytes([status[0], status[1]]) & STATUS_INTERRUPT != 0,
                *asserted,
                "status bit 3 does not follow INTx"
            );
        }
        self.check_view();
        if let Some(mode) = self.device.scanout() {
            check_scanout(self.device.config(), mode);
            self.outcome.scanout = true;
        }
        effects
    }

    fn read(&mut self, raw: u32, offset: u64, len: usize) -> Expect {
        let Some(region) = self.region(raw) else {
            return Expect::Untouched;
        };
        let mut zeros = vec![0u8; len];
        let result = self.device.read(region, offset, &mut zeros);
        if self.check_acceptance(region, offset, len, result) {
            let mut ones = vec![0xffu8; len];
            self.device
                .read(region, offset, &mut ones)
                .expect("the same read is taken twice");
            assert!(
                zeros == ones,
                "{len}-byte read at {offset:#x} of {region} did not fill every byte, or changed what it read"
            );
        }
        Expect::Unchanged("a read")
    }

    fn write(&mut self, raw: u32, offset: u64, data: &[u8]) -> (Effects, Expect) {
        let Some(region) = self.region(raw) else {
            return (Effects::NONE, Expect::Untouched);
        };
        let result = self.device.write(region, offset, data);
        let effects = result.unwrap_or(Effects::NONE);
        let expect = if self.check_acceptance(region, offset, data.len(), result.map(|_| ())) {
            Expect::Changed
        } else {
            Expect::Unchanged("a refused write")
        };
        self.check_effects(effects);
        (effects, expect)
    }

    /// Checks what a completion returned; with nothing outstanding it must
    /// do nothing.
    fn completed(&mut self, what: &'static str, idle: bool, effects: Effects) -> (Effects, Expect) {
        self.check_owner_event(effects);
        if !idle {
            return (effects, Expect::Changed);
        }
        assert!(
            effects.is_empty(),
            "{what} with nothing outstanding returned {effects:?}"
        );
        (effects, Expect::Unchanged(what))
    }

    /// The region a raw index names, as the daemon decodes it.
    fn region(&mut self, raw: u32) -> Option<RegionIndex> {
        match RegionIndex::try_from(raw) {
            Ok(region) => {
                assert_eq!(region.raw(), raw);
                Some(region)
            }
            Err(error) => {
                assert_eq!(error, AccessError::NoSuchRegion(raw));
                assert!(raw >= 9, "region index {raw} refused");
                self.outcome.refused += 1;
                None
            }
        }
    }

    /// Checks that the region rules agree with the device about an access;
    /// returns whether it was taken.
    fn check_acceptance(
        &mut self,
        region: RegionIndex,
        offset: u64,
        len: usize,
        result: Result<(), AccessError>,
    ) -> bool {
        let accepted = accepted(region, offset, len);
        match result {
            Ok(()) => {
                assert!(
                    accepted,
                    "{len}-byte access at {offset:#x} of {region} was taken"
                );
                self.outcome.accepted += 1;
            }
            Err(error) => {
                assert!(
                    !accepted,
                    "{len}-byte access at {offset:#x} of {region} was refused: {error}"
                );
                assert_eq!(error.errno(), EINVAL);
                match region {
                    RegionIndex::BAR0 => assert_eq!(error, AccessError::NotEmulated(region)),
                    RegionIndex::BAR2 | RegionIndex::CONFIG => assert!(matches!(
                        error,
                        AccessError::BadLength { .. }
                            | AccessError::OutOfRange { .. }
                            | AccessError::Misaligned { .. }
                    )),
                    _ => assert_eq!(error, AccessError::EmptyRegion(region)),
                }
                self.outcome.refused += 1;
            }
        }
        accepted
    }

    /// What any access may return.
    fn check_effects(&mut self, effects: Effects) {
        let config = self.device.config();
        let vectors = config.msix_vectors();
        assert_eq!(
            effects.vectors.checked_shr(vectors).unwrap_or(0),
            0,
            "{effects:?} raises a vector past the {vectors} the device has"
        );
        if let Some(dma) = effects.dma {
            assert!(
                (1..=DMA_MAX_LENGTH).contains(&dma.len),
                "{dma:?} has a bad length"
            );
            let end = dma.vram_offset.checked_add(u64::from(dma.len));
            assert!(
                end.is_some_and(|end| end <= config.vram_size),
                "{dma:?} is outside the {:#x}-byte VRAM slice",
                config.vram_size
            );
            self.dma_outstanding += 1;
            self.outcome.dma_requests += 1;
        }
        if let Some(request) = effects.mmu {
            check_mmu_request(config, request);
            if let MmuRequest::Translate { .. } = request {
                self.translations_outstanding += 1;
            }
            self.outcome.mmu_requests += 1;
        }
        self.outcome.vectors |= effects.vectors;
    }

    /// What a completion or a recorded fault may return.
    fn check_owner_event(&mut self, effects: Effects) {
        assert_eq!(effects.vectors & !1, 0, "an owner event raised {effects:?}");
        self.check_effects(effects);
    }

    /// The registers no step can change, and the owner's accessors against
    /// the registers the guest reads.
    fn check_view(&self) {
        let (device, now) = (&self.device, &self.current);
        let config = device.config();
        let res = config.max_resolution;
        let identity = [
            (
                RegionIndex::CONFIG,
                u64::from(PCI_VENDOR_ID_OFFSET),
                u32::from(PCI_DEVICE_ID) << 16 | u32::from(PCI_VENDOR_ID),
            ),
            (
                RegionIndex::CONFIG,
                u64::from(PCI_SUBSYSTEM_VENDOR_ID),
                u32::from(config.subsystem_id) << 16 | u32::from(config.subsystem_vendor_id),
            ),
            (RegionIndex::BAR2, CTRL_MAGIC, VGPU_MAGIC),
            (RegionIndex::BAR2, CTRL_VERSION, INTERFACE_VERSION),
            (
                RegionIndex::BAR2,
                CTRL_VRAM_SIZE_LO,
                config.vram_size as u32,
            ),
            (
                RegionIndex::BAR2,
                CTRL_VRAM_SIZE_HI,
                (config.vram_size >> 32) as u32,
            ),
            (RegionIndex::BAR2, CTRL_CHANNELS, config.channels),
            (RegionIndex::BAR2, CTRL_MSIX_VECTORS, config.channels + 1),
            (
                RegionIndex::BAR2,
                CTRL_MAX_RESOLUTION,
                res.width | res.height << 16,
            ),
        ];
        for (region, offset, value) in identity {
            assert_eq!(now.u32(region, offset), value, "{region} at {offset:#x}");
        }
        let edid = device.edid();
        assert_eq!(
            now.bytes(RegionIndex::BAR2, EDID_OFFSET, edid.len()),
            edid,
            "the EDID in BAR2"
        );
        assert_eq!(
            self.initial
                .bytes(RegionIndex::BAR2, EDID_OFFSET, edid.len()),
            edid,
            "the EDID changed"
        );

        let command = now.u32(RegionIndex::CONFIG, u64::from(PCI_COMMAND)) as u16;
        assert_eq!(
            device.intx_disabled(),
            command & COMMAND_INTX_DISABLE != 0,
            "intx_disabled() and the command register"
        );
        for channel in 0..=CHANNEL_MMU_SIZE / CHANNEL_MMU_STRIDE {
            let channel = channel as u32;
            let root = (channel < config.channels).then(|| now.bar2_u64(pt_root_offset(channel)));
            assert_eq!(
                device.page_table_root(channel),
                root,
                "PT_ROOT of channel {channel}"
            );
        }
        for vector in 0..=config.msix_vectors() {
            let entry = MSIX_TABLE_OFFSET + u64::from(vector) * MSIX_ENTRY_SIZE;
            let registers = (vector < config.msix_vectors()).then(|| MsixEntry {
                address: now.bar2_u64(entry),
                data: now.u32(RegionIndex::BAR2, entry + 8),
                control: now.u32(RegionIndex::BAR2, entry + 12),
            });
            assert_eq!(device.msix_entry(vector), registers, "MSI-X entry {vector}");
        }
    }
}

/// Whether the region rules take an access (the model the device is
/// checked against, written from the device interface document).
fn accepted(region: RegionIndex, offset: u64, len: usize) -> bool {
    let inside = |size: u64| {
        u64::try_from(len)
            .ok()
            .and_then(|len| offset.checked_add(len))
            .is_some_and(|end| end <= size)
    };
    match region {
        RegionIndex::BAR2 => {
            matches!(len, 1 | 2 | 4 | 8) && offset.is_multiple_of(len as u64) && inside(BAR2_SIZE)
        }
        RegionIndex::CONFIG => len >= 1 && inside(CONFIG_SPACE_SIZE),
        _ => false,
    }
}

/// What the device promises about the MMU requests it hands out.
fn check_mmu_request(config: &DeviceConfig, request: MmuRequest) {
    let channels = config.channels;
    match request {
        MmuRequest::SetRoot { channel, .. }
        | MmuRequest::InvalidateAll { channel }
        | MmuRequest::Translate { channel, .. } => {
            assert!(channel < channels, "{request:?} names no channel");
        }
        MmuRequest::Invalidate { channel, va, size } => {
            assert!(channel < channels, "{request:?} names no channel");
            assert!(
                va % MMU_PAGE_SIZE == 0 && size % MMU_PAGE_SIZE == 0 && size != 0,
                "{request:?} is not whole pages"
            );
            assert!(
                va.checked_add(size).is_some_and(|end| end <= GPU_VA_END),
                "{request:?} leaves the 48-bit space"
            );
        }
    }
}

/// What a shown scanout promises: a valid mode no larger than the
/// profile's, whose last visible byte is inside the VRAM slice.
fn check_scanout(config: &DeviceConfig, mode: ScanoutMode) {
    let max = config.max_resolution;
    assert!(matches!(mode.bpp, 16 | 24 | 32), "{mode:?}");
    assert!((1..=max.width).contains(&mode.width), "{mode:?}");
    assert!((1..=max.height).contains(&mode.height), "{mode:?}");
    let line = u64::from(mode.width) * u64::from(mode.bytes_per_pixel());
    assert!(u64::from(mode.pitch) >= line, "{mode:?}");
    let end = u64::from(mode.height - 1)
        .checked_mul(u64::from(mode.pitch))
        .and_then(|lines| lines.checked_add(line))
        .and_then(|frame| frame.checked_add(mode.offset));
    assert!(
        end.is_some_and(|end| end <= config.vram_size),
        "{mode:?} leaves the {:#x}-byte VRAM slice",
        config.vram_size
    );
}
