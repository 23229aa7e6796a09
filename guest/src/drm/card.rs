//! A DRM card node with the legacy KMS calls the `modeset` program needs:
//! resources, connectors, encoders, CRTCs, dumb buffers, framebuffers and
//! page flips with their completion events.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use thiserror::Error;

use super::sys::{self, ModeInfo};
use crate::mapping::{Access, Mapping, MappingError};

/// Why a DRM call failed.
#[derive(Debug, Error)]
pub enum DrmError {
    /// The card node could not be opened.
    #[error("cannot open {path}")]
    Open {
        /// The node.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An ioctl failed.
    #[error("{call} failed")]
    Ioctl {
        /// Which call.
        call: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A dumb buffer could not be mapped.
    #[error("cannot map dumb buffer {handle}")]
    Map {
        /// Its handle.
        handle: u32,
        /// Why.
        #[source]
        source: MappingError,
    },
    /// The kernel kept changing a list while it was read.
    #[error("{0} kept changing while it was read")]
    Unstable(&'static str),
    /// No flip-complete event came in time.
    #[error("no flip-complete event within {0:?}")]
    FlipTimeout(Duration),
}

fn ioctl_error(call: &'static str) -> impl FnOnce(io::Error) -> DrmError {
    move |source| DrmError::Ioctl { call, source }
}

/// The KMS objects of a card.
#[derive(Debug, Clone, Default)]
pub struct Resources {
    /// CRTC ids.
    pub crtcs: Vec<u32>,
    /// Connector ids.
    pub connectors: Vec<u32>,
    /// Encoder ids.
    pub encoders: Vec<u32>,
}

/// A connector and its modes.
#[derive(Debug, Clone)]
pub struct Connector {
    /// Its id.
    pub id: u32,
    /// Whether a display is connected.
    pub connected: bool,
    /// The encoder currently driving it (0: none).
    pub encoder_id: u32,
    /// Encoders that can drive it.
    pub encoders: Vec<u32>,
    /// Its modes, as the driver lists them.
    pub modes: Vec<ModeInfo>,
}

/// An encoder.
#[derive(Debug, Clone, Copy)]
pub struct Encoder {
    /// Its id.
    pub id: u32,
    /// The CRTC currently feeding it (0: none).
    pub crtc_id: u32,
    /// Bit n set: the n-th CRTC of the resources can feed it.
    pub possible_crtcs: u32,
}

/// What a CRTC scans out.
#[derive(Debug, Clone, Copy)]
pub struct CrtcState {
    /// Its id.
    pub id: u32,
    /// The framebuffer (0: none).
    pub fb_id: u32,
    /// The mode, when one is set.
    pub mode: Option<ModeInfo>,
}

/// A dumb buffer, mapped for writing.
#[derive(Debug)]
pub struct DumbBuffer {
    /// GEM handle.
    pub handle: u32,
    /// Width in pixels.
    pub width: u32,
    /// Height in lines.
    pub height: u32,
    /// Bytes per line.
    pub pitch: u32,
    /// The CPU mapping of its memory.
    pub mapping: Mapping,
}

/// An open DRM card node.
#[derive(Debug)]
pub struct Card {
    file: File,
}

impl Card {
    /// Opens a card node (`/dev/dri/card0`).
    pub fn open(path: &Path) -> Result<Self, DrmError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| DrmError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Card { file })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }

    /// The driver's name (`bochs-drm` for bochs).
    pub fn driver_name(&self) -> Result<String, DrmError> {
        let mut name = [0u8; 64];
        let mut version = sys::Version {
            name_len: name.len(),
            name: name.as_mut_ptr() as u64,
            ..Default::default()
        };
        // SAFETY: `name` is writable for `name_len` bytes and outlives the
        // call; date and desc are null with length 0.
        unsafe { sys::ioctl(self.fd(), &mut version) }.map_err(ioctl_error("DRM_IOCTL_VERSION"))?;
        let len = version.name_len.min(name.len());
        Ok(String::from_utf8_lossy(&name[..len]).into_owned())
    }

    /// Becomes DRM master (needed for mode setting; the first opener of a
    /// card without a master already is one).
    pub fn set_master(&self) -> Result<(), DrmError> {
        sys::ioctl_none(self.fd(), sys::NR_SET_MASTER).map_err(ioctl_error("DRM_IOCTL_SET_MASTER"))
    }

    /// Gives up DRM master.
    pub fn drop_master(&self) -> Result<(), DrmError> {
        sys::ioctl_none(self.fd(), sys::NR_DROP_MASTER)
            .map_err(ioctl_error("DRM_IOCTL_DROP_MASTER"))
    }

    /// Whether the driver supports dumb buffers.
    pub fn has_dumb_buffers(&self) -> Result<bool, DrmError> {
        let mut cap = sys::GetCap {
            capability: sys::CAP_DUMB_BUFFER,
            value: 0,
        };
        // SAFETY: drm_get_cap holds no pointers.
        unsafe { sys::ioctl(self.fd(), &mut cap) }.map_err(ioctl_error("DRM_IOCTL_GET_CAP"))?;
        Ok(cap.value != 0)
    }

    /// The card's CRTCs, connectors and encoders.
    pub fn resources(&self) -> Result<Resources, DrmError> {
        for _ in 0..5 {
            let mut counts = sys::CardRes::default();
            // SAFETY: every pointer is 0, so the kernel only fills counts.
            unsafe { sys::ioctl(self.fd(), &mut counts) }
                .map_err(ioctl_error("DRM_IOCTL_MODE_GETRESOURCES"))?;
            let mut res = Resources {
                crtcs: vec![0; counts.count_crtcs as usize],
                connectors: vec![0; counts.count_connectors as usize],
                encoders: vec![0; counts.count_encoders as usize],
            };
            let mut arg = sys::CardRes {
                crtc_id_ptr: res.crtcs.as_mut_ptr() as u64,
                connector_id_ptr: res.connectors.as_mut_ptr() as u64,
                encoder_id_ptr: res.encoders.as_mut_ptr() as u64,
                count_crtcs: counts.count_crtcs,
                count_connectors: counts.count_connectors,
                count_encoders: counts.count_encoders,
                ..Default::default()
            };
            // SAFETY: each pointer is a Vec of exactly the count passed with
            // it, alive across the call; fb_id_ptr is 0 with count 0.
            unsafe { sys::ioctl(self.fd(), &mut arg) }
                .map_err(ioctl_error("DRM_IOCTL_MODE_GETRESOURCES"))?;
            // The kernel copies only when our arrays are big enough; if a
            // count grew meanwhile, ask again.
            if arg.count_crtcs <= counts.count_crtcs
                && arg.count_connectors <= counts.count_connectors
                && arg.count_encoders <= counts.count_encoders
            {
                res.crtcs.truncate(arg.count_crtcs as usize);
                res.connectors.truncate(arg.count_connectors as usize);
                res.encoders.truncate(arg.count_encoders as usize);
                return Ok(res);
            }
        }
        Err(DrmError::Unstable("the resource list"))
    }

    /// A connector with its modes; this makes the driver probe the display
    /// (read the EDID).
    pub fn connector(&self, id: u32) -> Result<Connector, DrmError> {
        for _ in 0..5 {
            let mut counts = sys::GetConnector {
                connector_id: id,
                ..Default::default()
            };
            // SAFETY: every pointer is 0 with count 0: only counts come back.
            unsafe { sys::ioctl(self.fd(), &mut counts) }
                .map_err(ioctl_error("DRM_IOCTL_MODE_GETCONNECTOR"))?;
            let mut modes = vec![ModeInfo::default(); counts.count_modes as usize];
            let mut encoders = vec![0u32; counts.count_encoders as usize];
            let mut arg = sys::GetConnector {
                connector_id: id,
                modes_ptr: modes.as_mut_ptr() as u64,
                count_modes: counts.count_modes,
                encoders_ptr: encoders.as_mut_ptr() as u64,
                count_encoders: counts.count_encoders,
                ..Default::default()
            };
            // SAFETY: modes and encoders are Vecs of exactly the counts passed
            // with them, alive across the call; props pointers are 0 with
            // count 0.
            unsafe { sys::ioctl(self.fd(), &mut arg) }
                .map_err(ioctl_error("DRM_IOCTL_MODE_GETCONNECTOR"))?;
            if arg.count_modes <= counts.count_modes && arg.count_encoders <= counts.count_encoders
            {
                modes.truncate(arg.count_modes as usize);
                encoders.truncate(arg.count_encoders as usize);
                return Ok(Connector {
                    id,
                    connected: arg.connection == sys::CONNECTED,
                    encoder_id: arg.encoder_id,
                    encoders,
                    modes,
                });
            }
        }
        Err(DrmError::Unstable("the connector's mode list"))
    }

    /// An encoder.
    pub fn encoder(&self, id: u32) -> Result<Encoder, DrmError> {
        let mut arg = sys::GetEncoder {
            encoder_id: id,
            ..Default::default()
        };
        // SAFETY: drm_mode_get_encoder holds no pointers.
        unsafe { sys::ioctl(self.fd(), &mut arg) }
            .map_err(ioctl_error("DRM_IOCTL_MODE_GETENCODER"))?;
        Ok(Encoder {
            id,
            crtc_id: arg.crtc_id,
            possible_crtcs: arg.possible_crtcs,
        })
    }

    /// What a CRTC scans out now.
    pub fn crtc(&self, id: u32) -> Result<CrtcState, DrmError> {
        let mut arg = sys::Crtc {
            crtc_id: id,
            ..Default::default()
        };
        // SAFETY: set_connectors_ptr is 0 with count 0; GETCRTC reads no
        // other pointer.
        unsafe { sys::ioctl(self.fd(), &mut arg) }
            .map_err(ioctl_error("DRM_IOCTL_MODE_GETCRTC"))?;
        Ok(CrtcState {
            id,
            fb_id: arg.fb_id,
            mode: (arg.mode_valid != 0).then_some(arg.mode),
        })
    }

    /// Sets `mode` on `crtc`, scanning out `fb_id` from its top-left corner
    /// to `connectors`.
    pub fn set_crtc(
        &self,
        crtc: u32,
        fb_id: u32,
        connectors: &[u32],
        mode: &ModeInfo,
    ) -> Result<(), DrmError> {
        let mut ids = connectors.to_vec();
        let mut arg = sys::SetCrtc(sys::Crtc {
            set_connectors_ptr: ids.as_mut_ptr() as u64,
            count_connectors: ids.len() as u32,
            crtc_id: crtc,
            fb_id,
            mode_valid: 1,
            mode: *mode,
            ..Default::default()
        });
        // SAFETY: set_connectors_ptr is a Vec of exactly count_connectors
        // ids, alive across the call.
        unsafe { sys::ioctl(self.fd(), &mut arg) }.map_err(ioctl_error("DRM_IOCTL_MODE_SETCRTC"))
    }

    /// Creates a dumb buffer of `width` x `height` 32-bit pixels and maps it.
    pub fn create_dumb(&self, width: u32, height: u32) -> Result<DumbBuffer, DrmError> {
        let mut create = sys::CreateDumb {
            width,
            height,
            bpp: 32,
            ..Default::default()
        };
        // SAFETY: drm_mode_create_dumb holds no pointers.
        unsafe { sys::ioctl(self.fd(), &mut create) }
            .map_err(ioctl_error("DRM_IOCTL_MODE_CREATE_DUMB"))?;
        let handle = create.handle;
        let mut map = sys::MapDumb {
            handle,
            ..Default::default()
        };
        // SAFETY: drm_mode_map_dumb holds no pointers.
        let mapped = unsafe { sys::ioctl(self.fd(), &mut map) }
            .map_err(ioctl_error("DRM_IOCTL_MODE_MAP_DUMB"));
        let mapping = mapped.and_then(|()| {
            let len = usize::try_from(create.size).map_err(|_| DrmError::Map {
                handle,
                source: MappingError::BadRequest {
                    offset: map.offset,
                    len: usize::MAX,
                },
            })?;
            Mapping::new(self.fd(), map.offset, len, Access::ReadWrite)
                .map_err(|source| DrmError::Map { handle, source })
        });
        match mapping {
            Ok(mapping) => Ok(DumbBuffer {
                handle,
                width,
                height,
                pitch: create.pitch,
                mapping,
            }),
            Err(e) => {
                // Best effort: the handle goes with the fd anyway.
                let _ = self.destroy_dumb(handle);
                Err(e)
            }
        }
    }

    /// Destroys a dumb buffer handle (its memory goes once no framebuffer
    /// uses it).
    pub fn destroy_dumb(&self, handle: u32) -> Result<(), DrmError> {
        let mut arg = sys::DestroyDumb { handle };
        // SAFETY: drm_mode_destroy_dumb holds no pointers.
        unsafe { sys::ioctl(self.fd(), &mut arg) }
            .map_err(ioctl_error("DRM_IOCTL_MODE_DESTROY_DUMB"))
    }

    /// Makes a framebuffer (XRGB8888: depth 24, 32 bpp) of a dumb buffer.
    pub fn add_framebuffer(&self, buffer: &DumbBuffer) -> Result<u32, DrmError> {
        let mut arg = sys::FbCmd {
            width: buffer.width,
            height: buffer.height,
            pitch: buffer.pitch,
            bpp: 32,
            depth: 24,
            handle: buffer.handle,
            ..Default::default()
        };
        // SAFETY: drm_mode_fb_cmd holds no pointers.
        unsafe { sys::ioctl(self.fd(), &mut arg) }.map_err(ioctl_error("DRM_IOCTL_MODE_ADDFB"))?;
        Ok(arg.fb_id)
    }

    /// Removes a framebuffer.
    pub fn remove_framebuffer(&self, fb_id: u32) -> Result<(), DrmError> {
        let mut arg = sys::RmFb { fb_id };
        // SAFETY: the RMFB argument is a plain id.
        unsafe { sys::ioctl(self.fd(), &mut arg) }.map_err(ioctl_error("DRM_IOCTL_MODE_RMFB"))
    }

    /// Flips `crtc` to `fb_id` and asks for a completion event carrying
    /// `user_data`.
    pub fn page_flip(&self, crtc: u32, fb_id: u32, user_data: u64) -> Result<(), DrmError> {
        let mut arg = sys::PageFlip {
            crtc_id: crtc,
            fb_id,
            flags: sys::PAGE_FLIP_EVENT,
            reserved: 0,
            user_data,
        };
        // SAFETY: user_data is an opaque cookie the kernel hands back, not
        // dereferenced.
        unsafe { sys::ioctl(self.fd(), &mut arg) }.map_err(ioctl_error("DRM_IOCTL_MODE_PAGE_FLIP"))
    }

    /// Waits up to `timeout` for the flip-complete event with `user_data`.
    pub fn wait_flip(&self, user_data: u64, timeout: Duration) -> Result<(), DrmError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || !self.readable(left)? {
                return Err(DrmError::FlipTimeout(timeout));
            }
            let mut buf = [0u8; 1024];
            let n = (&self.file)
                .read(&mut buf)
                .map_err(ioctl_error("read(drm events)"))?;
            if parse_events(&buf[..n])
                .any(|(kind, data)| kind == sys::EVENT_FLIP_COMPLETE && data == user_data)
            {
                return Ok(());
            }
        }
    }

    fn readable(&self, timeout: Duration) -> Result<bool, DrmError> {
        let mut pfd = libc::pollfd {
            fd: self.file.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `pfd` is one live pollfd, matching the count 1.
        let ret = unsafe { libc::poll(&mut pfd, 1, ms) };
        match ret {
            r if r > 0 => Ok(true),
            0 => Ok(false),
            _ => {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    Ok(false)
                } else {
                    Err(DrmError::Ioctl {
                        call: "poll(drm fd)",
                        source: e,
                    })
                }
            }
        }
    }
}

/// Splits what a read of a DRM fd returned into (type, user_data) pairs:
/// each event is `struct drm_event { u32 type; u32 length; }` followed by
/// its body, whose first 8 bytes are the user data for vblank and flip
/// events. A truncated or zero-length event ends the list.
pub fn parse_events(mut bytes: &[u8]) -> impl Iterator<Item = (u32, u64)> + '_ {
    std::iter::from_fn(move || {
        let header: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
        let kind = u32::from_le_bytes(header[..4].try_into().ok()?);
        let length = u32::from_le_bytes(header[4..].try_into().ok()?) as usize;
        if length < 8 || length > bytes.len() {
            return None;
        }
        let data = bytes
            .get(8..16)
            .filter(|_| length >= 16)
            .map_or(0, |d| u64::from_le_bytes(d.try_into().unwrap_or([0; 8])));
        bytes = &bytes[length..];
        Some((kind, data))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u32, user_data: u64) -> Vec<u8> {
        let mut e = Vec::new();
        e.extend_from_slice(&kind.to_le_bytes());
        e.extend_from_slice(&32u32.to_le_bytes());
        e.extend_from_slice(&user_data.to_le_bytes());
        e.extend_from_slice(&[0; 16]);
        e
    }

    #[test]
    fn parse_events_reads_consecutive_vblank_events() {
        let mut bytes = event(1, 7);
        bytes.extend(event(sys::EVENT_FLIP_COMPLETE, 0xfeed));
        let events: Vec<_> = parse_events(&bytes).collect();
        assert_eq!(events, [(1, 7), (sys::EVENT_FLIP_COMPLETE, 0xfeed)]);
    }

    #[test]
    fn parse_events_stops_at_a_truncated_event() {
        let mut bytes = event(2, 1);
        bytes.truncate(20);
        assert_eq!(parse_events(&bytes).count(), 0);
        assert_eq!(parse_events(&[0u8; 8]).count(), 0);
    }
}
