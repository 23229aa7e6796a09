use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU32, Ordering};

use memmap2::MmapRaw;
use proptest::prelude::*;
use rustix::fs::{MemfdFlags, SealFlags};

use super::*;

const PAGE: u64 = 4096;

/// A memfd standing in for guest RAM, sealed against shrinking and growing
/// as QEMU's `memory-backend-memfd` is, with a unique name to find it in
/// /proc/self/maps.
fn guest_ram(size: u64) -> (OwnedFd, String) {
    let (fd, name) = unsealed_guest_ram(size);
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).unwrap();
    (fd, name)
}

/// Guest RAM whose VMM can still truncate it (a `memory-backend-file`, or
/// a memfd without seals).
fn unsealed_guest_ram(size: u64) -> (OwnedFd, String) {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let name = format!("dma-test-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let fd =
        rustix::fs::memfd_create(&name, MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING).unwrap();
    rustix::fs::ftruncate(&fd, size).unwrap();
    (fd, name)
}

/// The VMM's (and guest's) own view of the memory.
fn guest_view(fd: &OwnedFd) -> MmapRaw {
    MmapRaw::map_raw(fd).unwrap()
}

/// Another open of the same file, read-only, as a VMM may send it.
fn reopen_read_only(fd: &OwnedFd) -> OwnedFd {
    std::fs::File::open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap()
        .into()
}

fn fd_backing(fd: &OwnedFd, offset: u64) -> DmaBacking {
    DmaBacking::Fd {
        fd: fd.try_clone().unwrap(),
        offset,
    }
}

fn guest_write(view: &MmapRaw, offset: usize, data: &[u8]) {
    assert!(offset + data.len() <= view.len());
    // SAFETY: the range is inside the live mapping (asserted above), and
    // `data` is a distinct allocation.
    let dst = unsafe { view.as_mut_ptr().add(offset) };
    // SAFETY: as above.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), dst, data.len()) };
}

fn guest_read(view: &MmapRaw, offset: usize, len: usize) -> Vec<u8> {
    assert!(offset + len <= view.len());
    let mut out = vec![0; len];
    // SAFETY: the range is inside the live mapping (asserted above).
    let src = unsafe { view.as_ptr().add(offset) };
    // SAFETY: as above; `out` is a distinct allocation of `len` bytes.
    unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), len) };
    out
}

fn local(target: DmaTarget<'_>) -> LocalDma<'_> {
    match target {
        DmaTarget::Local(local) => local,
        DmaTarget::Remote { .. } => panic!("expected a local window"),
    }
}

/// Permissions of our mappings of the memfd called `name`, from
/// /proc/self/maps ("r--s", "rw-s").
fn mapping_permissions(name: &str) -> Vec<String> {
    let needle = format!("/memfd:{name} ");
    std::fs::read_to_string("/proc/self/maps")
        .unwrap()
        .lines()
        .filter(|line| line.contains(&needle))
        .map(|line| line.split_whitespace().nth(1).unwrap().to_owned())
        .collect()
}

#[test]
fn reads_see_what_the_guest_wrote() {
    let (fd, _) = guest_ram(4 * PAGE);
    let view = guest_view(&fd);
    guest_write(&view, PAGE as usize + 8, b"hello");
    let mut windows = DmaWindows::new();
    windows
        .map(0x10_0000, 2 * PAGE, false, fd_backing(&fd, PAGE))
        .unwrap();
    let dma = local(windows.resolve(0x10_0008, 5, false).unwrap());
    let mut buf = [0; 5];
    dma.read(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
}

#[test]
fn writes_reach_the_guest() {
    let (fd, _) = guest_ram(2 * PAGE);
    let view = guest_view(&fd);
    let mut windows = DmaWindows::new();
    windows
        .map(0x2000, 2 * PAGE, true, fd_backing(&fd, 0))
        .unwrap();
    let dma = local(windows.resolve(0x2000 + PAGE + 1, 3, true).unwrap());
    dma.write(&[7, 8, 9]).unwrap();
    assert_eq!(guest_read(&view, PAGE as usize + 1, 3), [7, 8, 9]);
}

#[test]
fn fd_is_mapped_read_only_for_read_only_windows() {
    let (fd, name) = guest_ram(PAGE);
    let mut windows = DmaWindows::new();
    windows.map(0, PAGE, false, fd_backing(&fd, 0)).unwrap();
    assert_eq!(mapping_permissions(&name), ["r--s"]);
    windows.clear();
    assert!(mapping_permissions(&name).is_empty());
}

#[test]
fn fd_is_mapped_read_write_for_writable_windows() {
    let (fd, name) = guest_ram(PAGE);
    let mut windows = DmaWindows::new();
    windows.map(0, PAGE, true, fd_backing(&fd, 0)).unwrap();
    assert_eq!(mapping_permissions(&name), ["rw-s"]);
}

#[test]
fn write_resolution_of_a_read_only_window_is_refused() {
    let (fd, _) = guest_ram(PAGE);
    let mut windows = DmaWindows::new();
    windows.map(0, PAGE, false, fd_backing(&fd, 0)).unwrap();
    assert!(matches!(
        windows.resolve(0, 4, true),
        Err(DmaError::ReadOnly { iova: 0, len: 4 })
    ));
}

#[test]
fn write_through_a_range_resolved_for_reading_is_refused() {
    let (fd, _) = guest_ram(PAGE);
    let view = guest_view(&fd);
    let mut windows = DmaWindows::new();
    windows.map(0, PAGE, true, fd_backing(&fd, 0)).unwrap();
    let dma = local(windows.resolve(0, 4, false).unwrap());
    assert!(matches!(
        dma.write(&[1; 4]),
        Err(DmaError::ResolvedForRead { iova: 0 })
    ));
    assert_eq!(guest_read(&view, 0, 4), [0; 4]);
}

#[test]
fn copies_must_match_the_resolved_length() {
    let (fd, _) = guest_ram(PAGE);
    let mut windows = DmaWindows::new();
    windows.map(0, PAGE, true, fd_backing(&fd, 0)).unwrap();
    let dma = local(windows.resolve(0, 8, true).unwrap());
    assert_eq!(dma.len(), 8);
    let mut short = [0; 4];
    assert!(matches!(
        dma.read(&mut short),
        Err(DmaError::LengthMismatch { .. })
    ));
    assert!(matches!(
        dma.write(&[0; 9]),
        Err(DmaError::LengthMismatch { .. })
    ));
}

#[test]
fn windows_past_the_end_of_the_file_are_refused() {
    let (fd, _) = guest_ram(2 * PAGE);
    let mut windows = DmaWindows::new();
    let err = windows
        .map(0, 2 * PAGE, true, fd_backing(&fd, PAGE))
        .unwrap_err();
    assert!(matches!(err, DmaError::BeyondEndOfFile { file_size, .. } if file_size == 2 * PAGE));
    assert!(windows.is_empty());
}

#[test]
fn a_writable_window_over_a_file_opened_read_only_is_refused() {
    let (fd, name) = guest_ram(PAGE);
    let read_only = reopen_read_only(&fd);
    let mut windows = DmaWindows::new();
    let err = windows
        .map(0, PAGE, true, fd_backing(&read_only, 0))
        .unwrap_err();
    assert!(matches!(err, DmaError::ReadOnlyFile { iova: 0 }));
    assert!(windows.is_empty());
    assert!(mapping_permissions(&name).is_empty(), "nothing was mapped");
}

#[test]
fn descriptors_that_are_not_files_are_refused() {
    let (socket, _peer) = std::os::unix::net::UnixStream::pair().unwrap();
    let eventfd = rustix::event::eventfd(0, rustix::event::EventfdFlags::CLOEXEC).unwrap();
    let zero = OwnedFd::from(std::fs::File::open("/dev/zero").unwrap());
    let mut windows = DmaWindows::new();
    for (what, fd) in [
        ("socket", OwnedFd::from(socket)),
        ("eventfd", eventfd),
        ("/dev/zero", zero),
    ] {
        let err = windows
            .map(0, PAGE, false, DmaBacking::Fd { fd, offset: 0 })
            .unwrap_err();
        assert!(matches!(err, DmaError::NotAFile { .. }), "{what}: {err}");
    }
    assert!(windows.is_empty());
}

#[test]
fn a_window_whose_pages_can_go_away_still_reads_and_writes() {
    let (fd, _) = unsealed_guest_ram(4 * PAGE);
    let view = guest_view(&fd);
    guest_write(&view, PAGE as usize, b"guest data");
    let mut windows = DmaWindows::new();
    windows
        .map(0x10_0000, 3 * PAGE, true, fd_backing(&fd, PAGE))
        .unwrap();
    let mut buf = [0; 10];
    local(windows.resolve(0x10_0000, 10, false).unwrap())
        .read(&mut buf)
        .unwrap();
    assert_eq!(&buf, b"guest data");
    // Across a page boundary, in one copy.
    local(windows.resolve(0x10_0000 + PAGE - 2, 4, true).unwrap())
        .write(b"dma!")
        .unwrap();
    assert_eq!(guest_read(&view, 2 * PAGE as usize - 2, 4), b"dma!");
}

#[test]
fn a_window_whose_file_is_truncated_fails_its_copies_instead_of_faulting() {
    let (fd, _) = unsealed_guest_ram(4 * PAGE);
    let mut windows = DmaWindows::new();
    windows.map(0, 4 * PAGE, true, fd_backing(&fd, 0)).unwrap();
    // The VMM shrinks its memory behind the window: a plain copy there
    // would kill this test process with SIGBUS.
    rustix::fs::ftruncate(&fd, PAGE).unwrap();
    let mut buf = [0; 8];
    local(windows.resolve(0, 8, false).unwrap())
        .read(&mut buf)
        .unwrap();
    let err = local(windows.resolve(2 * PAGE, 8, false).unwrap())
        .read(&mut buf)
        .unwrap_err();
    assert!(matches!(err, DmaError::Unreachable { iova, len: 8, .. } if iova == 2 * PAGE));
    let err = local(windows.resolve(3 * PAGE, 4, true).unwrap())
        .write(b"late")
        .unwrap_err();
    assert!(matches!(err, DmaError::Unreachable { .. }));
    // Half of this copy is still there: it fails whole.
    let err = local(windows.resolve(PAGE - 4, 8, false).unwrap())
        .read(&mut buf)
        .unwrap_err();
    assert!(matches!(err, DmaError::Unreachable { .. }));
    assert_eq!(rustix::fs::fstat(&fd).unwrap().st_size, PAGE as i64);
}

#[test]
fn an_append_only_fd_cannot_redirect_dma_writes() {
    let (fd, _) = unsealed_guest_ram(4 * PAGE);
    let view = guest_view(&fd);
    let append: OwnedFd = std::fs::OpenOptions::new()
        .read(true)
        .append(true)
        .open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap()
        .into();
    let mut windows = DmaWindows::new();
    windows
        .map(0, 4 * PAGE, true, fd_backing(&append, 0))
        .unwrap();
    local(windows.resolve(PAGE, 4, true).unwrap())
        .write(b"dma!")
        .unwrap();
    assert_eq!(guest_read(&view, PAGE as usize, 4), b"dma!");
    assert_eq!(rustix::fs::fstat(&fd).unwrap().st_size, 4 * PAGE as i64);
}

#[test]
fn a_writable_window_over_a_read_only_unsealed_file_is_refused() {
    let (fd, _) = unsealed_guest_ram(PAGE);
    let read_only = reopen_read_only(&fd);
    let mut windows = DmaWindows::new();
    let err = windows
        .map(0, PAGE, true, fd_backing(&read_only, 0))
        .unwrap_err();
    assert!(matches!(err, DmaError::ReadOnlyFile { .. }));
    // Read-only, the same file is accepted, and writes are refused.
    windows
        .map(0, PAGE, false, fd_backing(&read_only, 0))
        .unwrap();
    assert!(matches!(
        windows.resolve(0, 4, true).unwrap_err(),
        DmaError::ReadOnly { .. }
    ));
}

/// Whether this machine has a free huge page to test hugetlb memory with.
fn huge_pages_available() -> bool {
    rustix::fs::memfd_create("dma-test-probe", MemfdFlags::CLOEXEC | MemfdFlags::HUGETLB)
        .ok()
        .and_then(|fd| {
            rustix::fs::ftruncate(&fd, 2 << 20).ok()?;
            let map = MmapRaw::map_raw(&fd).ok()?;
            // Touching it is what needs the huge page.
            guest_write(&map, 0, &[1]);
            Some(())
        })
        .is_some()
}

/// The VMM's side of the hugetlb case, in a child process (run by the test
/// below): a sealed hugetlb memfd, as QEMU's
/// `memory-backend-memfd,hugetlb=on` makes, whose page the VMM discards
/// (as QEMU's balloon and virtio-mem do) while it holds every free huge
/// page, so that the page cannot come back. A plain copy there raises
/// SIGBUS; the child must exit normally.
#[test]
#[ignore = "run by a_sealed_hugetlb_window_whose_page_cannot_come_back_fails_its_copies"]
fn hugetlb_window_child() {
    use rustix::fs::FallocateFlags;
    const HUGE: u64 = 2 << 20;
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING | MemfdFlags::HUGETLB;
    let fd = rustix::fs::memfd_create("dma-test-huge", flags).unwrap();
    rustix::fs::ftruncate(&fd, HUGE).unwrap();
    rustix::fs::fcntl_add_seals(&fd, SealFlags::SHRINK | SealFlags::GROW).unwrap();
    let mut windows = DmaWindows::new();
    windows.map(0, HUGE, true, fd_backing(&fd, 0)).unwrap();
    local(windows.resolve(0, 4, true).unwrap())
        .write(b"ok!!")
        .unwrap();
    let whole = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
    rustix::fs::fallocate(&fd, whole, 0, HUGE).unwrap();
    let mut hog = Vec::new();
    while let Ok(f) =
        rustix::fs::memfd_create("dma-test-hog", MemfdFlags::CLOEXEC | MemfdFlags::HUGETLB)
    {
        rustix::fs::ftruncate(&f, HUGE).unwrap();
        match MmapRaw::map_raw(&f) {
            Ok(map) => hog.push((f, map)),
            Err(_) => break,
        }
    }
    let mut buf = [0; 4];
    let result = local(windows.resolve(0, 4, false).unwrap()).read(&mut buf);
    assert!(
        matches!(result, Err(DmaError::Unreachable { .. })),
        "{result:?}"
    );
}

#[test]
fn a_sealed_hugetlb_window_whose_page_cannot_come_back_fails_its_copies() {
    use std::os::unix::process::ExitStatusExt;
    if !huge_pages_available() {
        eprintln!("no free huge pages on this machine: the hugetlb case is not exercised");
        return;
    }
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "dma::tests::hugetlb_window_child", "--ignored"])
        .status()
        .unwrap();
    assert_eq!(
        status.signal(),
        None,
        "the copy raised a signal (7 is SIGBUS)"
    );
    assert!(status.success());
}

#[test]
fn remote_windows_resolve_to_the_client() {
    let mut windows = DmaWindows::new();
    windows.map(0x1000, PAGE, true, DmaBacking::Remote).unwrap();
    assert!(matches!(
        windows.resolve(0x1800, 16, true),
        Ok(DmaTarget::Remote {
            iova: 0x1800,
            len: 16
        })
    ));
}

#[test]
fn ranges_outside_or_across_windows_are_not_mapped() {
    let mut windows = DmaWindows::new();
    windows.map(0x1000, PAGE, true, DmaBacking::Remote).unwrap();
    windows.map(0x2000, PAGE, true, DmaBacking::Remote).unwrap();
    for (iova, len) in [
        (0, 1),
        (0xfff, 2),
        (0x1fff, 2),
        (0x3000, 1),
        (0x2000, u64::MAX),
    ] {
        assert!(
            matches!(
                windows.resolve(iova, len, false),
                Err(DmaError::NotMapped { .. })
            ),
            "{iova:#x}+{len:#x}"
        );
    }
    assert!(matches!(
        windows.resolve(0x1000, 0, false),
        Err(DmaError::ZeroLength { .. })
    ));
}

#[test]
fn zero_sized_and_wrapping_maps_are_refused() {
    let mut windows = DmaWindows::new();
    assert!(matches!(
        windows.map(0x1000, 0, true, DmaBacking::Remote),
        Err(DmaError::ZeroLength { iova: 0x1000 })
    ));
    assert!(matches!(
        windows.map(u64::MAX - 10, 11, true, DmaBacking::Remote),
        Err(DmaError::Overflow { .. })
    ));
    assert!(windows.is_empty());
}

#[test]
fn overlapping_maps_are_refused() {
    let mut windows = DmaWindows::new();
    windows
        .map(0x2000, 0x2000, true, DmaBacking::Remote)
        .unwrap();
    for (iova, size) in [(0x1000, 0x1001), (0x3fff, 1), (0x2800, 0x100), (0, 0x10000)] {
        assert!(
            matches!(
                windows.map(iova, size, true, DmaBacking::Remote),
                Err(DmaError::Overlap {
                    existing_iova: 0x2000,
                    ..
                })
            ),
            "{iova:#x}+{size:#x}"
        );
    }
    // Touching is not overlapping.
    windows
        .map(0x1000, 0x1000, true, DmaBacking::Remote)
        .unwrap();
    windows
        .map(0x4000, 0x1000, true, DmaBacking::Remote)
        .unwrap();
    assert_eq!(windows.len(), 3);
}

fn allowance(windows: u64, mapped_bytes: u64) -> DmaAllowance {
    DmaAllowance {
        windows,
        mapped_bytes,
    }
}

#[test]
fn maps_beyond_the_window_limit_are_refused() {
    let mut windows = DmaWindows::with_allowance(allowance(2, u64::MAX));
    windows.map(0, PAGE, true, DmaBacking::Remote).unwrap();
    windows.map(PAGE, PAGE, true, DmaBacking::Remote).unwrap();
    assert!(matches!(
        windows.map(2 * PAGE, PAGE, true, DmaBacking::Remote),
        Err(DmaError::TooManyWindows { max: 2, .. })
    ));
    windows.unmap(0, PAGE).unwrap();
    assert!(
        windows
            .map(2 * PAGE, PAGE, true, DmaBacking::Remote)
            .is_ok()
    );
}

#[test]
fn fd_backed_bytes_beyond_the_allowance_are_refused_and_not_mapped() {
    let (fd, name) = guest_ram(4 * PAGE);
    let mut windows = DmaWindows::with_allowance(allowance(8, 3 * PAGE));
    windows.map(0, 2 * PAGE, true, fd_backing(&fd, 0)).unwrap();
    let err = windows
        .map(0x10_0000, 2 * PAGE, true, fd_backing(&fd, 2 * PAGE))
        .unwrap_err();
    assert!(matches!(
        err,
        DmaError::TooManyBytes {
            size: 0x2000,
            mapped: 0x2000,
            max: 0x3000,
            ..
        }
    ));
    assert_eq!(mapping_permissions(&name).len(), 1, "nothing more mapped");
    // Windows without an fd map nothing and cost no bytes.
    windows
        .map(0x20_0000, 1 << 40, true, DmaBacking::Remote)
        .unwrap();
    windows
        .map(0x10_0000, PAGE, true, fd_backing(&fd, 2 * PAGE))
        .unwrap();
    assert_eq!(windows.mapped_bytes(), 3 * PAGE);
    // Unmapping gives the bytes back.
    windows.unmap(0, 2 * PAGE).unwrap();
    assert_eq!(windows.mapped_bytes(), PAGE);
    windows.map(0, 2 * PAGE, true, fd_backing(&fd, 0)).unwrap();
    windows.clear();
    assert_eq!(windows.mapped_bytes(), 0);
}

#[test]
fn unmap_removes_exactly_the_named_window() {
    let mut windows = DmaWindows::new();
    for iova in [0x1000, 0x3000, 0x5000] {
        windows.map(iova, 0x1000, true, DmaBacking::Remote).unwrap();
    }
    windows.unmap(0x3000, 0x1000).unwrap();
    assert_eq!(
        windows.iter().map(|w| w.iova).collect::<Vec<_>>(),
        [0x1000, 0x5000]
    );
    // Gone: a second unmap covers no window, and removes nothing.
    windows.unmap(0x3000, 0x1000).unwrap();
    assert_eq!(windows.len(), 2);
}

#[test]
fn an_unmap_of_a_range_with_no_window_removes_nothing_and_succeeds() {
    let mut windows = DmaWindows::new();
    windows
        .map(0x3000, 0x2000, true, DmaBacking::Remote)
        .unwrap();
    for (iova, size) in [(0x9000, 0x1000), (0x0, 0x3000), (0x5000, u64::MAX)] {
        windows.unmap(iova, size).unwrap();
    }
    assert_eq!(windows.len(), 1);
}

#[test]
fn unmaps_that_do_not_name_a_window_exactly_are_refused_and_remove_nothing() {
    let mut windows = DmaWindows::new();
    windows
        .map(0x1000, 0x1000, true, DmaBacking::Remote)
        .unwrap();
    windows
        .map(0x3000, 0x2000, true, DmaBacking::Remote)
        .unwrap();
    for (iova, size) in [
        // Both windows and the gap between them.
        (0x1000, 0x4000),
        // A range holding the first window whole.
        (0x0, 0x2800),
        // The right start, the wrong size.
        (0x3000, 0x1000),
        (0x3000, 0x3000),
        // Inside a window.
        (0x3800, 0x800),
        // From before the first window to past the second.
        (0x0, 0x10000),
    ] {
        assert!(
            matches!(
                windows.unmap(iova, size),
                Err(DmaError::NoSuchWindow { .. })
            ),
            "{iova:#x}+{size:#x}"
        );
    }
    assert_eq!(windows.len(), 2);
}

#[test]
fn unmapped_windows_no_longer_resolve() {
    let (fd, name) = guest_ram(PAGE);
    let mut windows = DmaWindows::new();
    windows.map(0x8000, PAGE, true, fd_backing(&fd, 0)).unwrap();
    windows.unmap(0x8000, PAGE).unwrap();
    assert!(matches!(
        windows.resolve(0x8000, 1, false),
        Err(DmaError::NotMapped { .. })
    ));
    assert!(
        mapping_permissions(&name).is_empty(),
        "the daemon's mapping is gone"
    );
}

#[test]
fn window_containing_finds_the_window_of_an_address() {
    let mut windows = DmaWindows::new();
    windows
        .map(0x1000, 0x1000, false, DmaBacking::Remote)
        .unwrap();
    assert_eq!(
        windows.window_containing(0x1fff).map(|w| w.iova),
        Some(0x1000)
    );
    assert_eq!(windows.window_containing(0x2000), None);
    assert_eq!(windows.window_containing(0xfff), None);
}

/// The reference model: a plain list of windows.
#[derive(Debug, Default)]
struct Model {
    windows: Vec<(u64, u64, bool)>,
}

#[derive(Debug, Clone)]
enum Op {
    Map(u64, u64, bool),
    Unmap(u64, u64),
    Resolve(u64, u64, bool),
}

const MODEL_MAX: u64 = 6;

impl Model {
    /// The error kind (or the result) the real thing must give.
    fn map(&mut self, iova: u64, size: u64, writable: bool) -> Result<(), &'static str> {
        let end = Self::end(iova, size)?;
        if self
            .windows
            .iter()
            .any(|&(w, s, _)| iova < w + s && w < end)
        {
            return Err("overlap");
        }
        if self.windows.len() as u64 >= MODEL_MAX {
            return Err("too many");
        }
        self.windows.push((iova, size, writable));
        Ok(())
    }

    fn unmap(&mut self, iova: u64, size: u64) -> Result<(), &'static str> {
        let end = iova.saturating_add(size);
        if size != 0
            && !self
                .windows
                .iter()
                .any(|&(w, s, _)| iova < w + s && w < end)
        {
            // A range with no window in it: nothing to remove.
            return Ok(());
        }
        let at = self
            .windows
            .iter()
            .position(|&(w, s, _)| w == iova && s == size)
            .ok_or("no such window")?;
        self.windows.remove(at);
        Ok(())
    }

    fn resolve(&self, iova: u64, len: u64, write: bool) -> Result<(), &'static str> {
        if len == 0 {
            return Err("zero");
        }
        let Some(end) = iova.checked_add(len) else {
            return Err("not mapped");
        };
        let &(_, _, writable) = self
            .windows
            .iter()
            .find(|&&(w, s, _)| w <= iova && end <= w + s)
            .ok_or("not mapped")?;
        if write && !writable {
            return Err("read-only");
        }
        Ok(())
    }

    fn end(iova: u64, size: u64) -> Result<u64, &'static str> {
        if size == 0 {
            return Err("zero");
        }
        iova.checked_add(size).ok_or("overflow")
    }
}

fn kind(err: &DmaError) -> &'static str {
    match err {
        DmaError::ZeroLength { .. } => "zero",
        DmaError::Overflow { .. } => "overflow",
        DmaError::Overlap { .. } => "overlap",
        DmaError::TooManyWindows { .. } => "too many",
        DmaError::NoSuchWindow { .. } => "no such window",
        DmaError::NotMapped { .. } => "not mapped",
        DmaError::ReadOnly { .. } => "read-only",
        _ => "other",
    }
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    // Mostly a small page-granular space so that windows meet, with an
    // occasional address near the top to exercise overflow.
    let addr = prop_oneof![
        8 => (0u64..32).prop_map(|page| page * 0x1000),
        1 => (0u64..0x1000).prop_map(|back| u64::MAX - back),
        1 => any::<u64>(),
    ];
    let len = prop_oneof![
        8 => (0u64..8).prop_map(|pages| pages * 0x1000),
        2 => 0u64..0x2000,
        1 => any::<u64>(),
    ];
    let op = prop_oneof![
        (addr.clone(), len.clone(), any::<bool>()).prop_map(|(a, l, w)| Op::Map(a, l, w)),
        (addr.clone(), len.clone()).prop_map(|(a, l)| Op::Unmap(a, l)),
        (addr, len, any::<bool>()).prop_map(|(a, l, w)| Op::Resolve(a, l, w)),
    ];
    prop::collection::vec(op, 0..48)
}

proptest! {
    #[test]
    fn windows_agree_with_a_reference_model(ops in ops()) {
        let mut windows = DmaWindows::with_allowance(allowance(MODEL_MAX, u64::MAX));
        let mut model = Model::default();
        for op in ops {
            match op {
                Op::Map(iova, size, writable) => {
                    let real = windows.map(iova, size, writable, DmaBacking::Remote);
                    prop_assert_eq!(real.map_err(|e| kind(&e)), model.map(iova, size, writable));
                }
                Op::Unmap(iova, size) => {
                    let real = windows.unmap(iova, size);
                    prop_assert_eq!(real.map_err(|e| kind(&e)), model.unmap(iova, size));
                }
                Op::Resolve(iova, len, write) => {
                    let real = windows.resolve(iova, len, write);
                    let real = real.map(|target| match target {
                        DmaTarget::Remote { iova: at, len: n } => (at, n),
                        DmaTarget::Local(_) => (0, 0),
                    });
                    let expected = model.resolve(iova, len, write).map(|()| (iova, len));
                    prop_assert_eq!(real.map_err(|e| kind(&e)), expected);
                }
            }
            prop_assert_eq!(windows.len(), model.windows.len());
        }
        let mut expected: Vec<_> = model.windows.clone();
        expected.sort_unstable();
        let real: Vec<_> = windows.iter().map(|w| (w.iova, w.size, w.writable)).collect();
        prop_assert_eq!(real, expected);
    }
}

#[test]
fn window_bytes_count_every_window_until_unmapped_or_cleared() {
    let mut windows = DmaWindows::new();
    windows.map(0x1000, PAGE, true, DmaBacking::Remote).unwrap();
    windows
        .map(0x10_0000, 4 * PAGE, false, DmaBacking::Remote)
        .unwrap();
    assert_eq!(windows.window_bytes(), 5 * PAGE);
    windows.unmap(0x1000, PAGE).unwrap();
    assert_eq!(windows.window_bytes(), 4 * PAGE);
    // Refused and no-op unmaps change nothing.
    assert!(windows.unmap(0x10_0000, PAGE).is_err());
    windows.unmap(0x4000_0000, PAGE).unwrap();
    assert_eq!(windows.window_bytes(), 4 * PAGE);
    windows.clear();
    assert_eq!(windows.window_bytes(), 0);
}
