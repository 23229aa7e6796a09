//! Profiles: the vGPU types a parent GPU offers.
//!
//! The daemon's configuration layer builds [`Profile`]s from the operator's
//! file and calls [`Profile::validate`], the same check [`crate::ParentGpu`]
//! applies, so a bad profile is refused at load time with the same words.

use thiserror::Error;

use crate::allocator::MIN_SLICE_SIZE;
use crate::bytesize::ByteSize;

/// Most channels a vGPU can have: MSI-X vectors are 1 + channels, and 64
/// vectors is what the BAR2 MSI-X table (0x2000..0x2400) holds.
pub const MAX_CHANNELS: u32 = 63;

/// Largest width or height of the display: the EDID detailed timing
/// descriptor, which advertises `max_resolution` as the preferred mode,
/// has 12 bits for each.
pub const MAX_RESOLUTION_SIDE: u32 = 4095;

/// A vGPU type. Construct it with plain fields, then [`Profile::validate`].
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Profile {
    /// Type name, e.g. "vgpu-1g": ASCII letters, digits, '-', '_' and '.'.
    pub name: String,
    /// VRAM slice size in bytes: a power of two, at least 1 MiB.
    pub framebuffer: u64,
    /// Most instances of this type on one parent GPU (at least 1).
    pub max_instances: u32,
    /// Number of channels, `1..=MAX_CHANNELS`.
    pub channels: u32,
    /// Largest display mode as (width, height) in pixels, each
    /// `1..=MAX_RESOLUTION_SIDE`.
    pub max_resolution: (u32, u32),
    /// PCI subsystem vendor id the guest sees.
    pub subsystem_vendor_id: u16,
    /// PCI subsystem id the guest sees.
    pub subsystem_id: u16,
    /// Scheduling weight, `1..=MAX_WEIGHT`: the vGPU's share of its
    /// GPU's engines under the fixed-share policy (docs/scheduling.md).
    pub weight: u32,
}

/// Largest scheduling weight.
pub const MAX_WEIGHT: u32 = 100;

/// A profile that breaks one of the rules of [`Profile`]'s fields.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum ProfileError {
    /// `weight` is outside `1..=MAX_WEIGHT`.
    #[error("profile {profile}: weight {weight} must be 1 to {MAX_WEIGHT}")]
    Weight {
        /// The profile.
        profile: String,
        /// The refused weight.
        weight: u32,
    },
    /// The name is empty or has characters outside `[A-Za-z0-9._-]`.
    #[error("profile name `{0}` must be non-empty ASCII letters, digits, '-', '_' or '.'")]
    Name(String),
    /// The framebuffer is not a slice size.
    #[error("profile {profile}: framebuffer {framebuffer} is not a power of two of at least 1 MiB")]
    Framebuffer {
        /// The profile.
        profile: String,
        /// The refused size.
        framebuffer: ByteSize,
    },
    /// `max_instances` is 0.
    #[error("profile {0}: max_instances must be at least 1")]
    NoInstances(String),
    /// `channels` is outside `1..=MAX_CHANNELS`.
    #[error("profile {profile}: {channels} channels, must be 1 to {MAX_CHANNELS}")]
    Channels {
        /// The profile.
        profile: String,
        /// The refused count.
        channels: u32,
    },
    /// A side of `max_resolution` is outside `1..=MAX_RESOLUTION_SIDE`.
    #[error(
        "profile {profile}: max resolution {width}x{height}, each side must be 1 to {MAX_RESOLUTION_SIDE}"
    )]
    Resolution {
        /// The profile.
        profile: String,
        /// The refused width.
        width: u32,
        /// The refused height.
        height: u32,
    },
}

impl Profile {
    /// Checks every field's rule; the first broken one is reported.
    pub fn validate(&self) -> Result<(), ProfileError> {
        let name_ok = !self.name.is_empty()
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        if !name_ok {
            return Err(ProfileError::Name(self.name.clone()));
        }
        let profile = || self.name.clone();
        if !self.framebuffer.is_power_of_two() || self.framebuffer < MIN_SLICE_SIZE {
            return Err(ProfileError::Framebuffer {
                profile: profile(),
                framebuffer: ByteSize(self.framebuffer),
            });
        }
        if self.max_instances == 0 {
            return Err(ProfileError::NoInstances(profile()));
        }
        if !(1..=MAX_CHANNELS).contains(&self.channels) {
            return Err(ProfileError::Channels {
                profile: profile(),
                channels: self.channels,
            });
        }
        let (width, height) = self.max_resolution;
        let side_ok = |side| (1..=MAX_RESOLUTION_SIDE).contains(&side);
        if !side_ok(width) || !side_ok(height) {
            return Err(ProfileError::Resolution {
                profile: profile(),
                width,
                height,
            });
        }
        if !(1..=MAX_WEIGHT).contains(&self.weight) {
            return Err(ProfileError::Weight {
                profile: profile(),
                weight: self.weight,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A valid profile to vary in tests.
    pub(crate) fn profile(name: &str, framebuffer: u64, max_instances: u32) -> Profile {
        Profile {
            name: name.to_owned(),
            framebuffer,
            max_instances,
            channels: 4,
            max_resolution: (1920, 1080),
            subsystem_vendor_id: 0x1af4,
            subsystem_id: 0x1100,
            weight: 1,
        }
    }

    fn valid() -> Profile {
        profile("vgpu-1g", 1 << 30, 4)
    }

    #[test]
    fn a_valid_profile_passes() {
        assert_eq!(valid().validate(), Ok(()));
    }

    #[test]
    fn name_must_be_a_plain_identifier() {
        for name in ["", "vgpu 1g", "vgpu/1g", "vgpü"] {
            let bad = Profile {
                name: name.into(),
                ..valid()
            };
            assert_eq!(
                bad.validate(),
                Err(ProfileError::Name(name.into())),
                "{name:?}"
            );
        }
        let dotted = Profile {
            name: "A_b-1.0".into(),
            ..valid()
        };
        assert_eq!(dotted.validate(), Ok(()));
    }

    #[test]
    fn framebuffer_must_be_a_power_of_two_of_at_least_1_mib() {
        for framebuffer in [0, 512 << 10, 3 << 20] {
            let bad = Profile {
                framebuffer,
                ..valid()
            };
            assert!(matches!(
                bad.validate(),
                Err(ProfileError::Framebuffer { .. })
            ));
        }
        let smallest = Profile {
            framebuffer: 1 << 20,
            ..valid()
        };
        assert_eq!(smallest.validate(), Ok(()));
    }

    #[test]
    fn framebuffer_error_prints_the_size() {
        let bad = Profile {
            framebuffer: 3 << 20,
            ..valid()
        };
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "profile vgpu-1g: framebuffer 3 MiB is not a power of two of at least 1 MiB"
        );
    }

    #[test]
    fn at_least_one_instance_is_required() {
        let bad = Profile {
            max_instances: 0,
            ..valid()
        };
        assert_eq!(
            bad.validate(),
            Err(ProfileError::NoInstances("vgpu-1g".into()))
        );
    }

    #[test]
    fn channels_must_be_1_to_63() {
        for channels in [0, 64] {
            let bad = Profile {
                channels,
                ..valid()
            };
            assert!(matches!(bad.validate(), Err(ProfileError::Channels { .. })));
        }
        for channels in [1, 63] {
            let good = Profile {
                channels,
                ..valid()
            };
            assert_eq!(good.validate(), Ok(()));
        }
    }

    #[test]
    fn resolution_sides_must_be_1_to_4095() {
        for max_resolution in [(0, 1080), (1920, 0), (4096, 2160)] {
            let bad = Profile {
                max_resolution,
                ..valid()
            };
            assert!(matches!(
                bad.validate(),
                Err(ProfileError::Resolution { .. })
            ));
        }
        let largest = Profile {
            max_resolution: (4095, 4095),
            ..valid()
        };
        assert_eq!(largest.validate(), Ok(()));
    }
}
