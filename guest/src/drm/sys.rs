//! The kernel's DRM ioctl interface (include/uapi/drm/drm.h and drm_mode.h):
//! the argument structs with their exact layouts, and the ioctl call.
//!
//! Numbers: every DRM ioctl is `_IOC(dir, 'd', nr, size)`, i.e.
//! `dir << 30 | size << 16 | 'd' << 8 | nr` on x86-64, where `dir` is 3
//! (read and write) for every ioctl with an argument and `size` is the
//! argument struct's size, which the size assertions below pin.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The DRM ioctl type byte.
const DRM_IOCTL_TYPE: u64 = b'd' as u64;
const IOC_READ_WRITE: u64 = 3;

/// DRM_IOCTL_SET_MASTER: `_IO('d', 0x1e)`.
pub const NR_SET_MASTER: u8 = 0x1e;
/// DRM_IOCTL_DROP_MASTER: `_IO('d', 0x1f)`.
pub const NR_DROP_MASTER: u8 = 0x1f;

/// DRM_CAP_DUMB_BUFFER.
pub const CAP_DUMB_BUFFER: u64 = 0x1;
/// DRM_MODE_PAGE_FLIP_EVENT.
pub const PAGE_FLIP_EVENT: u32 = 0x01;
/// DRM_EVENT_FLIP_COMPLETE.
pub const EVENT_FLIP_COMPLETE: u32 = 0x02;
/// drm_mode_get_connector.connection: connected.
pub const CONNECTED: u32 = 1;
/// DRM_MODE_FLAG_PHSYNC.
pub const FLAG_PHSYNC: u32 = 1 << 0;
/// DRM_MODE_FLAG_PVSYNC.
pub const FLAG_PVSYNC: u32 = 1 << 2;
/// DRM_MODE_TYPE_USERDEF.
pub const TYPE_USERDEF: u32 = 1 << 5;
/// DRM_MODE_TYPE_PREFERRED.
pub const TYPE_PREFERRED: u32 = 1 << 3;

/// An argument struct of a DRM ioctl that reads and writes it.
///
/// # Safety
///
/// The implementor must be `#[repr(C)]` with exactly the size and layout of
/// the kernel's argument struct for ioctl number `NR`, since the kernel
/// copies `size_of::<Self>()` bytes in and out.
pub unsafe trait DrmIoctl: Sized {
    /// The ioctl number (`nr`) in the 'd' range.
    const NR: u8;
    /// The full request code.
    const REQUEST: u64 = IOC_READ_WRITE << 30
        | (size_of::<Self>() as u64) << 16
        | DRM_IOCTL_TYPE << 8
        | Self::NR as u64;
}

/// Calls the DRM ioctl of `T` on `fd`, retrying on EINTR and EAGAIN as
/// libdrm's drmIoctl does.
///
/// # Safety
///
/// Every user pointer inside `arg` (the `*_ptr` fields) must be 0 or point
/// to writable memory of at least the element count the matching `count_*`
/// field gives, for as long as the call runs.
pub unsafe fn ioctl<T: DrmIoctl>(fd: BorrowedFd<'_>, arg: &mut T) -> io::Result<()> {
    loop {
        // SAFETY: `arg` is a live, exclusive `T` whose size the request
        // encodes (trait contract); embedded pointers are the caller's
        // contract.
        let ret = unsafe { libc::ioctl(fd.as_raw_fd(), T::REQUEST as _, arg as *mut T) };
        if ret == 0 {
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if !matches!(error.raw_os_error(), Some(libc::EINTR) | Some(libc::EAGAIN)) {
            return Err(error);
        }
    }
}

/// Calls an argument-less DRM ioctl (`_IO('d', nr)`).
pub fn ioctl_none(fd: BorrowedFd<'_>, nr: u8) -> io::Result<()> {
    let request = DRM_IOCTL_TYPE << 8 | u64::from(nr);
    // SAFETY: `_IO` requests take no argument; the kernel reads no user
    // memory for them.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, 0usize) };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// struct drm_version.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Version {
    pub version_major: i32,
    pub version_minor: i32,
    pub version_patchlevel: i32,
    pub name_len: usize,
    pub name: u64,
    pub date_len: usize,
    pub date: u64,
    pub desc_len: usize,
    pub desc: u64,
}

/// struct drm_get_cap.
#[repr(C)]
#[derive(Debug, Default)]
pub struct GetCap {
    pub capability: u64,
    pub value: u64,
}

/// struct drm_mode_modeinfo: one display mode.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ModeInfo {
    pub clock: u32,
    pub hdisplay: u16,
    pub hsync_start: u16,
    pub hsync_end: u16,
    pub htotal: u16,
    pub hskew: u16,
    pub vdisplay: u16,
    pub vsync_start: u16,
    pub vsync_end: u16,
    pub vtotal: u16,
    pub vscan: u16,
    pub vrefresh: u32,
    pub flags: u32,
    pub type_: u32,
    pub name: [u8; 32],
}

/// struct drm_mode_card_res.
#[repr(C)]
#[derive(Debug, Default)]
pub struct CardRes {
    pub fb_id_ptr: u64,
    pub crtc_id_ptr: u64,
    pub connector_id_ptr: u64,
    pub encoder_id_ptr: u64,
    pub count_fbs: u32,
    pub count_crtcs: u32,
    pub count_connectors: u32,
    pub count_encoders: u32,
    pub min_width: u32,
    pub max_width: u32,
    pub min_height: u32,
    pub max_height: u32,
}

/// struct drm_mode_crtc (GETCRTC and SETCRTC).
#[repr(C)]
#[derive(Debug, Default)]
pub struct Crtc {
    pub set_connectors_ptr: u64,
    pub count_connectors: u32,
    pub crtc_id: u32,
    pub fb_id: u32,
    pub x: u32,
    pub y: u32,
    pub gamma_size: u32,
    pub mode_valid: u32,
    pub mode: ModeInfo,
}

/// struct drm_mode_get_encoder.
#[repr(C)]
#[derive(Debug, Default)]
pub struct GetEncoder {
    pub encoder_id: u32,
    pub encoder_type: u32,
    pub crtc_id: u32,
    pub possible_crtcs: u32,
    pub possible_clones: u32,
}

/// struct drm_mode_get_connector.
#[repr(C)]
#[derive(Debug, Default)]
pub struct GetConnector {
    pub encoders_ptr: u64,
    pub modes_ptr: u64,
    pub props_ptr: u64,
    pub prop_values_ptr: u64,
    pub count_modes: u32,
    pub count_props: u32,
    pub count_encoders: u32,
    pub encoder_id: u32,
    pub connector_id: u32,
    pub connector_type: u32,
    pub connector_type_id: u32,
    pub connection: u32,
    pub mm_width: u32,
    pub mm_height: u32,
    pub subpixel: u32,
    pub pad: u32,
}

/// struct drm_mode_fb_cmd (ADDFB, legacy: depth and bpp give the format).
#[repr(C)]
#[derive(Debug, Default)]
pub struct FbCmd {
    pub fb_id: u32,
    pub width: u32,
    pub height: u32,
    pub pitch: u32,
    pub bpp: u32,
    pub depth: u32,
    pub handle: u32,
}

/// The `unsigned int` argument of RMFB.
#[repr(C)]
#[derive(Debug, Default)]
pub struct RmFb {
    pub fb_id: u32,
}

/// struct drm_mode_crtc_page_flip.
#[repr(C)]
#[derive(Debug, Default)]
pub struct PageFlip {
    pub crtc_id: u32,
    pub fb_id: u32,
    pub flags: u32,
    pub reserved: u32,
    pub user_data: u64,
}

/// struct drm_mode_create_dumb.
#[repr(C)]
#[derive(Debug, Default)]
pub struct CreateDumb {
    pub height: u32,
    pub width: u32,
    pub bpp: u32,
    pub flags: u32,
    pub handle: u32,
    pub pitch: u32,
    pub size: u64,
}

/// struct drm_mode_map_dumb.
#[repr(C)]
#[derive(Debug, Default)]
pub struct MapDumb {
    pub handle: u32,
    pub pad: u32,
    pub offset: u64,
}

/// struct drm_mode_destroy_dumb.
#[repr(C)]
#[derive(Debug, Default)]
pub struct DestroyDumb {
    pub handle: u32,
}

/// Generates the `DrmIoctl` impls: each line names a struct above and the
/// ioctl number drm.h gives it.
macro_rules! drm_ioctls {
    ($($ty:ty => $nr:expr, $size:expr;)*) => {$(
        // SAFETY: the struct is #[repr(C)] with the fields of the kernel's
        // argument struct for this number, in order, and its size is pinned
        // to the kernel's by the assertion next to this impl.
        unsafe impl DrmIoctl for $ty {
            const NR: u8 = $nr;
        }
        const _: () = assert!(size_of::<$ty>() == $size);
    )*};
}

drm_ioctls! {
    Version => 0x00, 64;
    GetCap => 0x0c, 16;
    CardRes => 0xa0, 64;
    Crtc => 0xa1, 104;
    GetEncoder => 0xa6, 20;
    GetConnector => 0xa7, 80;
    FbCmd => 0xae, 28;
    RmFb => 0xaf, 4;
    PageFlip => 0xb0, 24;
    CreateDumb => 0xb2, 32;
    MapDumb => 0xb3, 16;
    DestroyDumb => 0xb4, 4;
}

/// DRM_IOCTL_MODE_SETCRTC shares struct drm_mode_crtc with GETCRTC.
#[repr(transparent)]
#[derive(Debug, Default)]
pub struct SetCrtc(pub Crtc);

// SAFETY: transparent over `Crtc`, the argument of SETCRTC (0xa2) too.
unsafe impl DrmIoctl for SetCrtc {
    const NR: u8 = 0xa2;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Request codes as the kernel headers expand them (from libdrm's
    /// xf86drm.h / the compiled uapi), so a layout or number mistake fails.
    #[test]
    fn request_codes_match_the_kernel_headers() {
        assert_eq!(Version::REQUEST, 0xc040_6400);
        assert_eq!(GetCap::REQUEST, 0xc010_640c);
        assert_eq!(CardRes::REQUEST, 0xc040_64a0);
        assert_eq!(Crtc::REQUEST, 0xc068_64a1);
        assert_eq!(SetCrtc::REQUEST, 0xc068_64a2);
        assert_eq!(GetEncoder::REQUEST, 0xc014_64a6);
        assert_eq!(GetConnector::REQUEST, 0xc050_64a7);
        assert_eq!(FbCmd::REQUEST, 0xc01c_64ae);
        assert_eq!(RmFb::REQUEST, 0xc004_64af);
        assert_eq!(PageFlip::REQUEST, 0xc018_64b0);
        assert_eq!(CreateDumb::REQUEST, 0xc020_64b2);
        assert_eq!(MapDumb::REQUEST, 0xc010_64b3);
        assert_eq!(DestroyDumb::REQUEST, 0xc004_64b4);
    }

    #[test]
    fn mode_info_is_68_bytes() {
        assert_eq!(size_of::<ModeInfo>(), 68);
    }
}
