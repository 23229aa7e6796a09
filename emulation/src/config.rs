//! The profile-derived parameters of one vGPU and their validation.

use crate::edid::{DetailedTiming, EdidError};

/// Smallest VRAM slice (BAR0 size): 1 MiB.
pub const MIN_VRAM_SIZE: u64 = 1 << 20;
/// Largest VRAM slice (BAR0 size): 64 GiB.
pub const MAX_VRAM_SIZE: u64 = 64 << 30;
/// Largest number of channels: MSI-X vectors (1 + channels) fill the
/// 1 KiB table at BAR2 + 0x2000 and the 64-bit PBA.
pub const MAX_CHANNELS: u32 = 63;
/// Smallest maximum resolution a profile may give.
pub const MIN_RESOLUTION: Resolution = Resolution {
    width: 320,
    height: 200,
};

/// A display resolution in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Resolution {
    /// Width in pixels.
    pub width: u32,
    /// Height in lines.
    pub height: u32,
}

/// What a vGPU profile fixes about the guest-visible device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceConfig {
    /// VRAM slice size in bytes, which is also the BAR0 size: a power of
    /// two in [`MIN_VRAM_SIZE`] ..= [`MAX_VRAM_SIZE`].
    pub vram_size: u64,
    /// Number of engine channels, 1 ..= [`MAX_CHANNELS`]; the device has
    /// 1 + `channels` MSI-X vectors.
    pub channels: u32,
    /// Largest mode the display offers: the EDID's preferred mode. Each
    /// side at least [`MIN_RESOLUTION`]'s, at most 4095 (EDID detailed
    /// timing fields), and the 60 Hz reduced-blanking pixel clock at most
    /// 655.35 MHz (3840x2160 fits; 4096-wide modes do not).
    pub max_resolution: Resolution,
    /// PCI subsystem vendor id.
    pub subsystem_vendor_id: u16,
    /// PCI subsystem id.
    pub subsystem_id: u16,
}

impl DeviceConfig {
    /// Number of MSI-X vectors: the device vector plus one per channel.
    pub fn msix_vectors(&self) -> u32 {
        1 + self.channels
    }

    /// Checks every field against the limits documented on it.
    pub fn validate(&self) -> Result<(), DeviceConfigError> {
        let size = self.vram_size;
        if !size.is_power_of_two() || !(MIN_VRAM_SIZE..=MAX_VRAM_SIZE).contains(&size) {
            return Err(DeviceConfigError::VramSize(size));
        }
        if !(1..=MAX_CHANNELS).contains(&self.channels) {
            return Err(DeviceConfigError::Channels(self.channels));
        }
        let res = self.max_resolution;
        if res.width < MIN_RESOLUTION.width || res.height < MIN_RESOLUTION.height {
            return Err(DeviceConfigError::ResolutionTooSmall(res));
        }
        DetailedTiming::cvt_reduced_blanking(res).map_err(|source| {
            DeviceConfigError::Resolution {
                resolution: res,
                source,
            }
        })?;
        Ok(())
    }
}

/// Why a [`DeviceConfig`] was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DeviceConfigError {
    /// VRAM size is not a power of two between 1 MiB and 64 GiB.
    #[error("VRAM size {0:#x} is not a power of two between 1 MiB and 64 GiB")]
    VramSize(u64),
    /// Channel count is outside 1 ..= 63.
    #[error("{0} channels: a vGPU has 1 to {MAX_CHANNELS}")]
    Channels(u32),
    /// Maximum resolution below 320x200.
    #[error("maximum resolution {}x{} is below 320x200", .0.width, .0.height)]
    ResolutionTooSmall(Resolution),
    /// Maximum resolution the EDID cannot describe.
    #[error("maximum resolution {}x{} cannot be the EDID preferred mode", .resolution.width, .resolution.height)]
    Resolution {
        /// The refused resolution.
        resolution: Resolution,
        /// What the EDID generator objected to.
        #[source]
        source: EdidError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> DeviceConfig {
        DeviceConfig {
            vram_size: 64 << 20,
            channels: 4,
            max_resolution: Resolution {
                width: 1920,
                height: 1080,
            },
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x1100,
        }
    }

    #[test]
    fn valid_profile_is_accepted() {
        assert_eq!(config().validate(), Ok(()));
        assert_eq!(config().msix_vectors(), 5);
    }

    #[test]
    fn vram_size_must_be_a_power_of_two_in_range() {
        for size in [0, (1 << 20) - 1, 3 << 20, 1 << 19, 128 << 30] {
            let bad = DeviceConfig {
                vram_size: size,
                ..config()
            };
            assert_eq!(bad.validate(), Err(DeviceConfigError::VramSize(size)));
        }
        for size in [1 << 20, 64 << 30] {
            let good = DeviceConfig {
                vram_size: size,
                ..config()
            };
            assert_eq!(good.validate(), Ok(()));
        }
    }

    #[test]
    fn channels_must_be_1_to_63() {
        for channels in [0, 64] {
            let bad = DeviceConfig {
                channels,
                ..config()
            };
            assert_eq!(bad.validate(), Err(DeviceConfigError::Channels(channels)));
        }
        let max = DeviceConfig {
            channels: 63,
            ..config()
        };
        assert_eq!(max.validate(), Ok(()));
    }

    #[test]
    fn resolution_must_fit_the_edid() {
        let small = Resolution {
            width: 319,
            height: 200,
        };
        let bad = DeviceConfig {
            max_resolution: small,
            ..config()
        };
        assert_eq!(
            bad.validate(),
            Err(DeviceConfigError::ResolutionTooSmall(small))
        );
        let huge = DeviceConfig {
            max_resolution: Resolution {
                width: 7680,
                height: 4320,
            },
            ..config()
        };
        assert!(matches!(
            huge.validate(),
            Err(DeviceConfigError::Resolution { .. })
        ));
    }
}
