//! The daemon driven by a second, independent client: the rust-vmm
//! `vfio_user::Client`. It has no timeouts and never checks error replies,
//! so it runs on a helper thread under a deadline, and every value it
//! returns is checked here.

use std::os::fd::AsRawFd;
use std::time::Duration;

use vgpud_tests::config::STANDARD_FRAMEBUFFER;
use vgpud_tests::regs::{bar2, region};
use vgpud_tests::timeout::run_with_timeout;
use vgpud_tests::{GuestMemory, TestDaemon, VGPU_A};

const DEADLINE: Duration = Duration::from_secs(15);

#[test]
fn rust_vmm_client_reads_identity_writes_dispi_maps_memory_and_resets() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let path = daemon.socket(VGPU_A);
    let thread_path = path.clone();
    let outcome = run_with_timeout(&path, DEADLINE, move || -> anyhow::Result<()> {
        let mut client = vfio_user::Client::new(&thread_path)?;
        let bar0 = client.region(region::BAR0).expect("BAR0");
        assert_eq!(bar0.size, STANDARD_FRAMEBUFFER);
        assert_eq!(bar0.sparse_areas.len(), 1);
        assert!(bar0.file_offset.is_some(), "BAR0 fd");

        let mut identity = [0u8; 4];
        client.region_read(region::CONFIG, 0, &mut identity)?;
        assert_eq!(identity, [0x34, 0x12, 0x11, 0x11]);

        let xres = bar2::dispi(bar2::DISPI_XRES);
        client.region_write(region::BAR2, xres, &1024u16.to_le_bytes())?;
        let mut value = [0u8; 2];
        client.region_read(region::BAR2, xres, &mut value)?;
        assert_eq!(u16::from_le_bytes(value), 1024);

        let memory = GuestMemory::new(1 << 20)?;
        client.dma_map(0, 0x4000_0000, 1 << 20, memory_fd(&memory))?;

        client.reset()?;
        client.region_read(region::BAR2, xres, &mut value)?;
        assert_eq!(u16::from_le_bytes(value), 0, "XRES after reset");

        client.dma_unmap(0x4000_0000, 1 << 20)?;
        client.shutdown()?;
        Ok(())
    });
    match outcome {
        Ok(result) => result,
        Err(timed_out) => Err(anyhow::anyhow!(
            "{timed_out}; daemon stderr:\n{}",
            daemon.stderr()
        )),
    }
}

fn memory_fd(memory: &GuestMemory) -> i32 {
    use std::os::fd::AsFd;
    memory.as_fd().as_raw_fd()
}
