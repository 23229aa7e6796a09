//! Device and region info, and BAR0 as a shared mapping of the VRAM slice.

use std::os::fd::AsFd;

use vgpud_tests::config::STANDARD_FRAMEBUFFER;
use vgpud_tests::host::pattern;
use vgpud_tests::regs::{BAR2_SIZE, CONFIG_SIZE, region};
use vgpud_tests::wire::{RegionInfo, device_flags, region_flags};
use vgpud_tests::{TestDaemon, VGPU_A, VGPU_B};

#[test]
fn device_info_reports_a_resettable_pci_device() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let info = c.device_info()?;
    assert_eq!(info.flags & device_flags::PCI, device_flags::PCI);
    assert_eq!(info.flags & device_flags::RESET, device_flags::RESET);
    assert_eq!(info.num_regions, region::COUNT);
    assert_eq!(info.num_irqs, 5);
    Ok(())
}

#[test]
fn region_sizes_and_flags_match_the_contract() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let rw = region_flags::READ | region_flags::WRITE;
    let bar0 = c.region_info(region::BAR0)?;
    assert_eq!(bar0.info.size, STANDARD_FRAMEBUFFER);
    assert_eq!(
        bar0.info.flags & (rw | region_flags::MMAP),
        rw | region_flags::MMAP
    );
    let bar2 = c.region_info(region::BAR2)?;
    assert_eq!((bar2.info.size, bar2.info.flags & rw), (BAR2_SIZE, rw));
    assert_eq!(bar2.info.flags & region_flags::MMAP, 0, "BAR2 is trapped");
    assert!(bar2.fd.is_none());
    let config = c.region_info(region::CONFIG)?;
    assert_eq!(
        (config.info.size, config.info.flags & rw),
        (CONFIG_SIZE, rw)
    );
    for absent in [region::BAR1, 3, 4, 5, region::ROM, region::VGA] {
        let info = c.region_info(absent)?;
        assert_eq!(info.info.size, 0, "region {absent}");
        assert!(info.fd.is_none(), "region {absent}");
    }
    Ok(())
}

#[test]
fn bar0_info_needs_a_second_query_for_the_sparse_area_and_fd() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let base = size_of::<RegionInfo>() as u32;
    let (first, _, first_fds) = c.region_info_once(region::BAR0, base)?;
    assert!(first.argsz > base, "argsz asks for room for the capability");
    assert!(first_fds.is_empty(), "no fd without the capability");
    let bar0 = c.region_info(region::BAR0)?;
    assert_eq!(bar0.queries, 2);
    assert_eq!(bar0.info.flags & region_flags::CAPS, region_flags::CAPS);
    let areas = bar0.sparse_areas.expect("sparse-mmap capability");
    assert_eq!(areas.len(), 1);
    assert_eq!((areas[0].offset, areas[0].size), (0, STANDARD_FRAMEBUFFER));
    let fd = bar0.fd.expect("BAR0 fd");
    // The fd must hold only this vGPU's slice (nothing to map beyond it).
    let stat = rustix::fs::fstat(fd.as_fd())?;
    assert_eq!(stat.st_size as u64, bar0.info.offset + STANDARD_FRAMEBUFFER);
    Ok(())
}

#[test]
fn bar0_mmap_and_region_access_see_the_same_bytes() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let mut bar0 = c.map_bar0()?;
    let through_mmap = pattern(4096, 1);
    bar0.map[0x10_0000..0x10_1000].copy_from_slice(&through_mmap);
    assert_eq!(c.region_read(region::BAR0, 0x10_0000, 4096)?, through_mmap);

    let through_socket = pattern(8192, 2);
    let end = STANDARD_FRAMEBUFFER as usize;
    c.region_write(region::BAR0, (end - 8192) as u64, &through_socket)?;
    assert_eq!(&bar0.map[end - 8192..end], &through_socket[..]);
    Ok(())
}

#[test]
fn bar0_region_access_takes_a_whole_mebibyte() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut c = daemon.connect(VGPU_A)?;
    let data = pattern(1 << 20, 3);
    c.region_write(region::BAR0, 1 << 20, &data)?;
    assert_eq!(c.region_read(region::BAR0, 1 << 20, 1 << 20)?, data);
    Ok(())
}

#[test]
fn bar0_slices_of_two_vgpus_do_not_overlap() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let mut a = daemon.connect(VGPU_A)?;
    let mut b = daemon.connect(VGPU_B)?;
    let mut a_bar0 = a.map_bar0()?;
    let b_bar0 = b.map_bar0()?;
    a_bar0.map.fill(0x5a);
    assert!(b_bar0.map.iter().all(|&byte| byte == 0), "B sees A's VRAM");
    assert!(
        b.region_read(region::BAR0, 0, 4096)?
            .iter()
            .all(|&x| x == 0)
    );
    Ok(())
}
