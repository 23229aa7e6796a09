//! Flag sets of the header and of the VFIO structures, as `u32` newtypes
//! with named bits and a mask of the known ones.

/// Declares a `u32` flag set newtype with named bits and a mask of the known ones.
macro_rules! flag_set {
    ($(#[$meta:meta])* $name:ident { $($(#[$bmeta:meta])* $bit:ident = $value:expr),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
        pub struct $name(u32);

        impl $name {
            $($(#[$bmeta])* pub const $bit: Self = Self($value);)+
            /// Every bit this flag set defines.
            pub const KNOWN: Self = Self(0 $(| $value)+);
            /// No bit set.
            pub const EMPTY: Self = Self(0);

            /// The flags, if `bits` sets only known bits.
            pub const fn from_bits(bits: u32) -> Option<Self> {
                if bits & !Self::KNOWN.0 == 0 { Some(Self(bits)) } else { None }
            }

            /// The raw bits.
            pub const fn bits(self) -> u32 {
                self.0
            }

            /// Whether every bit of `other` is set in `self`.
            pub const fn contains(self, other: Self) -> bool {
                self.0 & other.0 == other.0
            }

            /// Whether any bit of `other` is set in `self`.
            pub const fn intersects(self, other: Self) -> bool {
                self.0 & other.0 != 0
            }

            /// `self` with the bits of `other` cleared.
            pub const fn without(self, other: Self) -> Self {
                Self(self.0 & !other.0)
            }
        }

        impl core::ops::BitOr for $name {
            type Output = Self;
            fn bitor(self, rhs: Self) -> Self {
                Self(self.0 | rhs.0)
            }
        }
    };
}

flag_set! {
    /// Header flags (the message type is bits 0–3).
    HeaderFlags {
        /// Type bits value of a reply (a command has type 0).
        REPLY = 0x1,
        /// Type bits mask.
        TYPE_MASK = 0xf,
        /// The sender of a command wants no reply.
        NO_REPLY = 0x10,
        /// The reply reports a failure; the header's error field holds the errno.
        ERROR = 0x20,
    }
}

flag_set! {
    /// `VFIO_USER_DMA_MAP` flags.
    DmaMapFlags {
        /// The server may read the range.
        READ = 0x1,
        /// The server may write the range.
        WRITE = 0x2,
    }
}

flag_set! {
    /// `VFIO_USER_DMA_UNMAP` flags (from `struct vfio_iommu_type1_dma_unmap`).
    DmaUnmapFlags {
        /// Return a dirty bitmap (pre-v2 migration; not supported by vgpud).
        GET_DIRTY_BITMAP = 0x1,
        /// Unmap everything; address and size must be 0. QEMU sends it.
        ALL = 0x2,
        /// Invalidate the virtual address only (not meaningful over vfio-user).
        VADDR = 0x4,
    }
}

flag_set! {
    /// `struct vfio_device_info` flags.
    DeviceFlags {
        /// The device supports `VFIO_USER_DEVICE_RESET`.
        RESET = 0x1,
        /// The device is a PCI device.
        PCI = 0x2,
    }
}

flag_set! {
    /// `struct vfio_region_info` flags.
    RegionFlags {
        /// The client may read the region.
        READ = 0x1,
        /// The client may write the region.
        WRITE = 0x2,
        /// The client may mmap the file descriptor sent with the reply.
        MMAP = 0x4,
        /// A capability chain follows the region info (at `cap_offset`).
        CAPS = 0x8,
    }
}

flag_set! {
    /// `struct vfio_irq_info` flags.
    IrqInfoFlags {
        /// Triggers can be eventfds.
        EVENTFD = 0x1,
        /// `ACTION_MASK` / `ACTION_UNMASK` are supported.
        MASKABLE = 0x2,
        /// The interrupt masks itself when it fires (INTx).
        AUTOMASKED = 0x4,
        /// Vectors are enabled as a set (MSI, MSI-X).
        NORESIZE = 0x8,
    }
}

flag_set! {
    /// `struct vfio_irq_set` flags: exactly one `DATA_*` and one `ACTION_*`.
    IrqSetFlags {
        /// No data: act on every vector of the range.
        DATA_NONE = 0x1,
        /// One bool byte per vector of the range.
        DATA_BOOL = 0x2,
        /// One eventfd per vector, in the message's SCM_RIGHTS (none: unassign).
        DATA_EVENTFD = 0x4,
        /// Mask.
        ACTION_MASK = 0x8,
        /// Unmask.
        ACTION_UNMASK = 0x10,
        /// Trigger.
        ACTION_TRIGGER = 0x20,
    }
}

impl IrqSetFlags {
    /// The `DATA_*` bits.
    pub const DATA_MASK: Self = Self(0x7);
    /// The `ACTION_*` bits.
    pub const ACTION_MASK_BITS: Self = Self(0x38);
}

flag_set! {
    /// `VFIO_USER_DEVICE_FEATURE` operation bits (bits 0–15 are the feature index).
    FeatureFlags {
        /// Feature index mask.
        INDEX_MASK = 0xffff,
        /// Get the feature's data.
        GET = 0x1_0000,
        /// Set the feature's data.
        SET = 0x2_0000,
        /// Probe for support.
        PROBE = 0x4_0000,
    }
}
