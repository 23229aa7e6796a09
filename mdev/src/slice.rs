//! A vGPU's VRAM slice, and the memory behind it for one attachment: its
//! own memfd, shared with the VMM, and the daemon's mapping of it.
//!
//! Every slice is a separate memfd holding only that slice, because the fd
//! is handed to the VMM and a client can map any offset of an fd it is
//! given: one big VRAM file with per-vGPU offsets would hand every VMM all
//! VRAM (the CVE-2019-11085 class of bug). For the same reason each
//! attachment gets a memfd of its own: a client keeps its mapping after it
//! leaves. memfd pages are allocated when first touched, so a large
//! simulated VRAM costs nothing until used.
//!
//! The guest writes the same pages concurrently through the VMM's mapping,
//! so no Rust reference into the mapping is ever created: data moves with
//! raw-pointer copies behind bounds-checked methods, as vm-memory does for
//! guest memory.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::ptr;
use std::sync::{Arc, RwLock};

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::{FallocateFlags, MemfdFlags, SealFlags};
use thiserror::Error;

use crate::allocator::Placement;
use crate::bytesize::ByteSize;

/// A VRAM allocation or access that failed.
#[derive(Debug, Error)]
pub enum VramError {
    /// The GPU's VRAM size cannot be sliced.
    #[error("{gpu}: VRAM size {size} is not a non-zero multiple of 1 MiB")]
    VramSize {
        /// The GPU.
        gpu: String,
        /// The refused size.
        size: ByteSize,
    },
    /// A slice size that is not a power of two of at least 1 MiB.
    #[error("{gpu}: slice size {requested} is not a power of two of at least 1 MiB")]
    SliceSize {
        /// The GPU.
        gpu: String,
        /// The refused size.
        requested: ByteSize,
    },
    /// No free block is large enough for the slice.
    #[error(
        "{gpu}: cannot place a {requested} slice: {free} free, largest free block {largest_free}"
    )]
    OutOfVram {
        /// The GPU.
        gpu: String,
        /// The slice size asked for.
        requested: ByteSize,
        /// All free VRAM, possibly fragmented.
        free: ByteSize,
        /// The largest slice that would fit now.
        largest_free: ByteSize,
    },
    /// A free that does not match an allocation (a bookkeeping bug).
    #[error("{gpu}: no {size} slice is allocated at {offset:#x}")]
    NotAllocated {
        /// The GPU.
        gpu: String,
        /// Offset in the GPU's VRAM.
        offset: u64,
        /// Size of the refused free.
        size: ByteSize,
    },
    /// A read or write that does not lie inside the slice.
    #[error("{len} bytes at offset {offset:#x} are outside the {size} VRAM slice")]
    OutOfBounds {
        /// First byte of the access, in the slice.
        offset: u64,
        /// Length of the access in bytes.
        len: u64,
        /// Size of the slice.
        size: ByteSize,
    },
    /// Creating, sizing, sealing or mapping the slice's memfd failed.
    #[error("{gpu}: cannot {step} the memfd of the {size} slice at {offset:#x}")]
    Memfd {
        /// The GPU.
        gpu: String,
        /// Where the slice sits in the GPU's VRAM.
        offset: u64,
        /// Size of the slice.
        size: ByteSize,
        /// What failed: "create", "size", "seal" or "map".
        step: &'static str,
        /// The host's error.
        #[source]
        source: io::Error,
    },
}

/// One vGPU's VRAM: its range of the GPU's VRAM, and the memory behind it
/// for the current attachment ([`VramAperture`]). Dropping it returns the
/// range to the GPU's allocator.
///
/// Every client that attaches gets an aperture that no earlier client can
/// reach: a client that leaves keeps whatever mapping it made of the fd it
/// was given, so reusing that fd would let it read and write what the next
/// VM puts into the VRAM. [`VramSlice::renew`] swaps in a fresh memfd when a
/// client leaves and empties the old one, which from then on is memory of
/// the departed client alone. (A real GPU revokes the old mapping of its
/// BAR instead.)
#[derive(Debug)]
pub struct VramSlice {
    placement: Placement,
    /// The aperture of the current (or next) attachment. Held only to
    /// clone or swap the `Arc`.
    aperture: RwLock<Arc<VramAperture>>,
}

impl VramSlice {
    /// Creates the first aperture for an allocated range. The range goes
    /// back to the allocator if this fails, because `placement` is dropped
    /// with the error.
    pub(crate) fn create(placement: Placement) -> Result<Self, VramError> {
        let aperture = VramAperture::create(&placement)?;
        Ok(Self {
            placement,
            aperture: RwLock::new(Arc::new(aperture)),
        })
    }

    /// Size of the slice in bytes.
    pub fn size(&self) -> u64 {
        self.placement.size()
    }

    /// Where the slice sits in the GPU's VRAM address space.
    pub fn phys_offset(&self) -> u64 {
        self.placement.offset()
    }

    /// The current aperture: what the attached client was (or the next
    /// one will be) given.
    pub fn aperture(&self) -> Arc<VramAperture> {
        Arc::clone(&self.aperture.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Gives the slice a new, zeroed aperture that no client has seen, and
    /// returns the old one for the caller to empty ([`VramAperture::clear`],
    /// which frees its pages now rather than when its last holder lets
    /// go). Holders of the old one (an earlier client's mapping, a session
    /// still winding down) keep a valid but private memory. On failure
    /// nothing changes.
    pub fn renew(&self) -> Result<Arc<VramAperture>, VramError> {
        let fresh = Arc::new(VramAperture::create(&self.placement)?);
        Ok(std::mem::replace(
            &mut *self.aperture.write().unwrap_or_else(|e| e.into_inner()),
            fresh,
        ))
    }
}

/// The memory behind a VRAM slice for one attachment: a memfd of exactly
/// the slice's size, sealed against resizing, and the daemon's shared
/// mapping of it.
#[derive(Debug)]
pub struct VramAperture {
    map: MmapRaw,
    fd: OwnedFd,
    size: u64,
}

impl VramAperture {
    fn create(placement: &Placement) -> Result<Self, VramError> {
        let gpu = placement.gpu();
        let offset = placement.offset();
        let size = placement.size();
        let failed = |step, source: io::Error| VramError::Memfd {
            gpu: gpu.clone(),
            offset,
            size: ByteSize(size),
            step,
            source,
        };
        let fd = rustix::fs::memfd_create(
            memfd_name(&gpu, offset),
            MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
        )
        .map_err(|errno| failed("create", errno.into()))?;
        rustix::fs::ftruncate(&fd, size).map_err(|errno| failed("size", errno.into()))?;
        // A client that could shrink the file would make our own accesses
        // fault (SIGBUS); F_SEAL_SEAL keeps it from adding seals (such as
        // F_SEAL_FUTURE_WRITE) that would lock the daemon out.
        rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL)
            .map_err(|errno| failed("seal", errno.into()))?;
        let len = usize::try_from(size)
            .map_err(|_| failed("map", io::Error::from(io::ErrorKind::InvalidInput)))?;
        let map = MmapOptions::new()
            .len(len)
            .map_raw(&fd)
            .map_err(|source| failed("map", source))?;
        Ok(Self { map, fd, size })
    }

    /// Size in bytes (the slice's).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The memfd holding this aperture and nothing else, to hand to the
    /// VMM; slice offset 0 is file offset 0.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Copies `buf.len()` bytes starting at `offset` in the slice into
    /// `buf`. Bytes the guest writes meanwhile may or may not be seen.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), VramError> {
        let start = self.check(offset, buf.len())?;
        // SAFETY: `check` proved start + buf.len() <= the mapping's length,
        // so the result stays inside (or one past) the mapping.
        let src = unsafe { self.map.as_ptr().add(start) };
        // SAFETY: `src..src + buf.len()` lies inside the mapping, which lives
        // as long as `self`; `buf` is a distinct allocation: no overlap. No
        // reference into the mapping is made, so concurrent guest writes
        // only make the copied bytes stale.
        unsafe { ptr::copy_nonoverlapping(src, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }

    /// Copies `data` into the slice starting at `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), VramError> {
        let start = self.check(offset, data.len())?;
        // SAFETY: `check` proved start + data.len() <= the mapping's length,
        // so the result stays inside (or one past) the mapping.
        let dst = unsafe { self.map.as_mut_ptr().add(start) };
        // SAFETY: `dst..dst + data.len()` lies inside the shared read-write
        // mapping, which lives as long as `self`; `data` is a distinct Rust
        // allocation. No reference into the mapping exists to be aliased.
        unsafe { ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
        Ok(())
    }

    /// Copies `len` bytes from `src` to `dst`, both offsets in the slice,
    /// as `memmove` does (the ranges may overlap). An engine's copy within
    /// VRAM, with no staging buffer.
    pub fn copy_within(&self, src: u64, dst: u64, len: usize) -> Result<(), VramError> {
        let from = self.check(src, len)?;
        let to = self.check(dst, len)?;
        // SAFETY: `check` proved both ranges lie inside the mapping.
        let src = unsafe { self.map.as_ptr().add(from) };
        // SAFETY: as above, for the destination.
        let dst = unsafe { self.map.as_mut_ptr().add(to) };
        // SAFETY: both ranges lie inside the shared read-write mapping,
        // which lives as long as `self`; `ptr::copy` allows them to
        // overlap. No reference into the mapping exists to be aliased.
        unsafe { ptr::copy(src, dst, len) };
        Ok(())
    }

    /// Bytes of the aperture that hold memory: the pages written since it
    /// was made or last cleared (memfd pages are allocated when touched).
    /// Zero if the kernel cannot say.
    pub fn resident_bytes(&self) -> u64 {
        rustix::fs::fstat(&self.fd).map_or(0, |st| {
            (u64::try_from(st.st_blocks).unwrap_or(0) * 512).min(self.size)
        })
    }

    /// Zeroes the whole aperture, as seen through every mapping of the
    /// memfd (the VMM's too), and frees its pages.
    pub fn clear(&self) {
        let punched = rustix::fs::fallocate(
            &self.fd,
            FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE,
            0,
            self.size,
        );
        if let Err(errno) = punched {
            // shmem has punched holes since Linux 3.5; should it ever refuse,
            // zero through our mapping, which every mapping shares. Said
            // once: a guest can reset its device in a loop.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::warn!(error = %errno, "VRAM hole punch failed; zeroing by hand");
            });
            // SAFETY: the whole mapping (`len()` bytes from its start) is
            // live, shared and writable while `self` lives; no reference
            // into it exists.
            unsafe { ptr::write_bytes(self.map.as_mut_ptr(), 0, self.map.len()) };
        }
    }

    /// The start of `offset..offset + len` as an index into the mapping.
    fn check(&self, offset: u64, len: usize) -> Result<usize, VramError> {
        let out_of_bounds = || VramError::OutOfBounds {
            offset,
            len: len as u64,
            size: ByteSize(self.size),
        };
        let end = u64::try_from(len)
            .ok()
            .and_then(|len| offset.checked_add(len))
            .ok_or_else(out_of_bounds)?;
        if end > self.map.len() as u64 {
            return Err(out_of_bounds());
        }
        // offset <= end <= the mapping's length, which is a usize.
        usize::try_from(offset).map_err(|_| out_of_bounds())
    }
}

impl shadow_mmu::VramMemory for VramAperture {
    fn read(
        &self,
        offset: shadow_mmu::VramOffset,
        buf: &mut [u8],
    ) -> Result<(), shadow_mmu::GuestMemoryError> {
        VramAperture::read(self, offset.0, buf).map_err(|_| {
            shadow_mmu::GuestMemoryError::NotMapped {
                addr: offset.0,
                len: buf.len() as u64,
            }
        })
    }
}

/// "vgpud-vram:<gpu>:<offset>", shown in /proc/<pid>/fd and the VMM's maps.
/// The GPU id is cut short and scrubbed of control characters (a NUL would
/// make memfd_create fail) because the name is only a diagnostic.
fn memfd_name(gpu: &str, offset: u64) -> String {
    let gpu: String = gpu
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(64)
        .collect();
    format!("vgpud-vram:{gpu}:{offset:x}")
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::sync::Mutex;

    use super::*;
    use crate::allocator::SliceAllocator;

    const MIB: u64 = 1 << 20;

    fn slice_of(size: u64) -> VramSlice {
        let allocator = Arc::new(Mutex::new(SliceAllocator::new("gpu0", 4 * MIB).unwrap()));
        VramSlice::create(Placement::allocate(&allocator, size).unwrap()).unwrap()
    }

    /// The first aperture of a new slice (the slice itself is dropped: the
    /// aperture lives on its own).
    fn slice(size: u64) -> Arc<VramAperture> {
        slice_of(size).aperture()
    }

    /// A second mapping of the aperture's fd, made the way the VMM does.
    fn second_mapping(slice: &VramAperture) -> MmapRaw {
        MmapOptions::new()
            .len(slice.size() as usize)
            .map_raw(&slice.fd())
            .unwrap()
    }

    fn read_byte(map: &MmapRaw, offset: usize) -> u8 {
        assert!(offset < map.len());
        let byte = map.as_ptr().wrapping_add(offset);
        // SAFETY: `byte` is inside the live mapping (asserted above).
        unsafe { byte.read_volatile() }
    }

    #[test]
    fn resident_bytes_count_touched_pages_until_cleared() {
        let aperture = slice_of(4 * MIB).aperture();
        assert_eq!(aperture.resident_bytes(), 0);
        aperture.write(0, &[1; 8]).unwrap();
        aperture.write(3 << 20, &[1; 8]).unwrap();
        assert_eq!(aperture.resident_bytes(), 2 * 4096);
        aperture.clear();
        assert_eq!(aperture.resident_bytes(), 0);
    }

    #[test]
    fn memfd_holds_exactly_the_slice() {
        let slice = slice(2 * MIB);
        let stat = rustix::fs::fstat(slice.fd()).unwrap();
        assert_eq!(stat.st_size as u64, 2 * MIB);
        assert_eq!(slice.size(), 2 * MIB);
    }

    #[test]
    fn memfd_cannot_be_resized_or_resealed_by_a_client() {
        let slice = slice(MIB);
        assert_eq!(
            rustix::fs::ftruncate(slice.fd(), 4096),
            Err(rustix::io::Errno::PERM)
        );
        assert_eq!(
            rustix::fs::ftruncate(slice.fd(), 2 * MIB),
            Err(rustix::io::Errno::PERM)
        );
        assert_eq!(
            rustix::fs::fcntl_add_seals(slice.fd(), SealFlags::FUTURE_WRITE),
            Err(rustix::io::Errno::PERM)
        );
    }

    #[test]
    fn memfd_name_names_the_gpu_and_offset() {
        let slice = slice(MIB);
        let link = std::fs::read_link(format!("/proc/self/fd/{}", slice.fd().as_raw_fd())).unwrap();
        assert_eq!(link.to_str().unwrap(), "/memfd:vgpud-vram:gpu0:0 (deleted)");
    }

    #[test]
    fn memfd_name_is_scrubbed_and_bounded() {
        let name = memfd_name(&format!("a\0b{}", "x".repeat(300)), 0x10_0000);
        assert!(name.starts_with("vgpud-vram:a?b"));
        assert!(name.ends_with(":100000"));
        assert!(name.len() < 249, "memfd names are limited to 249 bytes");
    }

    #[test]
    fn writes_are_read_back() {
        let slice = slice(MIB);
        slice.write(MIB - 4, &[1, 2, 3, 4]).unwrap();
        let mut buf = [0; 4];
        slice.read(MIB - 4, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 3, 4]);
    }

    #[test]
    fn writes_are_seen_through_another_mapping_of_the_fd() {
        let slice = slice(MIB);
        let vmm = second_mapping(&slice);
        slice.write(0x1234, &[0xab]).unwrap();
        assert_eq!(read_byte(&vmm, 0x1234), 0xab);
    }

    #[test]
    fn accesses_outside_the_slice_are_refused() {
        let slice = slice(MIB);
        let mut buf = [0; 2];
        assert!(matches!(
            slice.read(MIB - 1, &mut buf),
            Err(VramError::OutOfBounds { .. })
        ));
        assert!(matches!(
            slice.write(MIB, &[0]),
            Err(VramError::OutOfBounds { .. })
        ));
        assert!(matches!(
            slice.write(u64::MAX, &[0]),
            Err(VramError::OutOfBounds { .. })
        ));
        assert!(slice.write(MIB, &[]).is_ok());
    }

    #[test]
    fn clear_zeroes_the_slice_through_every_mapping() {
        let slice = slice(2 * MIB);
        let vmm = second_mapping(&slice);
        slice.write(0, &[0xff; 4096]).unwrap();
        slice.write(2 * MIB - 1, &[0xee]).unwrap();
        assert_eq!(read_byte(&vmm, 2 * MIB as usize - 1), 0xee);

        slice.clear();

        assert_eq!(read_byte(&vmm, 0), 0);
        assert_eq!(read_byte(&vmm, 4095), 0);
        assert_eq!(read_byte(&vmm, 2 * MIB as usize - 1), 0);
        let mut buf = [0xaa; 16];
        slice.read(0, &mut buf).unwrap();
        assert_eq!(buf, [0; 16]);
        assert_eq!(
            rustix::fs::fstat(slice.fd()).unwrap().st_size as u64,
            2 * MIB
        );
    }

    #[test]
    fn clear_keeps_the_slice_usable() {
        let slice = slice(MIB);
        slice.clear();
        slice.write(8, &[7]).unwrap();
        let mut buf = [0];
        slice.read(8, &mut buf).unwrap();
        assert_eq!(buf, [7]);
    }

    #[test]
    fn a_renewed_slice_shares_nothing_with_its_old_aperture() {
        let slice = slice_of(MIB);
        let old = slice.aperture();
        let departed_client = second_mapping(&old);
        old.write(0x10, &[0xaa; 16]).unwrap();

        slice.renew().unwrap().clear();
        let new = slice.aperture();
        assert!(!Arc::ptr_eq(&old, &new));
        let (old_stat, new_stat) = (
            rustix::fs::fstat(old.fd()).unwrap(),
            rustix::fs::fstat(new.fd()).unwrap(),
        );
        assert_ne!(old_stat.st_ino, new_stat.st_ino);
        assert_eq!(new_stat.st_size as u64, MIB);
        // The old memory was emptied, and what goes into the new aperture
        // never shows through the departed client's mapping.
        assert_eq!(read_byte(&departed_client, 0x10), 0);
        new.write(0x10, &[0x5e; 16]).unwrap();
        assert_eq!(read_byte(&departed_client, 0x10), 0);
        // Nor does the reverse.
        old.write(0x20, &[0x77]).unwrap();
        let mut buf = [0xff];
        new.read(0x20, &mut buf).unwrap();
        assert_eq!(buf, [0]);
        // The new aperture is sealed like the first.
        assert_eq!(
            rustix::fs::ftruncate(new.fd(), 4096),
            Err(rustix::io::Errno::PERM)
        );
    }

    #[test]
    fn vram_memory_reads_the_slice_and_refuses_past_it() {
        use shadow_mmu::{GuestMemoryError, VramMemory, VramOffset};
        let slice = slice(MIB);
        slice.write(16, &[9, 8]).unwrap();
        let mut buf = [0; 2];
        VramMemory::read(&*slice, VramOffset(16), &mut buf).unwrap();
        assert_eq!(buf, [9, 8]);
        let err = VramMemory::read(&*slice, VramOffset(MIB - 1), &mut buf).unwrap_err();
        assert!(matches!(err, GuestMemoryError::NotMapped { .. }));
    }
}
