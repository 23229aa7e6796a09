//! Device-level conveniences on [`RawClient`]: config-space and BAR2
//! register access, mapping BAR0, and running the DMA self-test.

use std::time::{Duration, Instant};

use memmap2::{MmapMut, MmapOptions};

use crate::client::{ClientError, RawClient, Region};
use crate::regs::{bar2, region};

/// How long a DMA self-test may take to complete.
pub const DMA_TIMEOUT: Duration = Duration::from_secs(5);

/// One DMA self-test: what to program into the control block.
#[derive(Clone, Copy, Debug)]
pub struct DmaJob {
    /// Guest address (IOVA).
    pub iova: u64,
    /// Offset in the VRAM slice.
    pub vram_offset: u64,
    /// Bytes to copy.
    pub length: u32,
    /// `DMA_CONTROL` value (1: guest → VRAM, 2: VRAM → guest).
    pub control: u32,
}

/// BAR0 mapped through the fd of its region info.
#[derive(Debug)]
pub struct MappedBar0 {
    /// The region info it came from.
    pub region: Region,
    /// The mapping of the (single) sparse area.
    pub map: MmapMut,
}

impl RawClient {
    /// Reads `size` bytes of config space at `offset`, little-endian.
    pub fn config_read(&mut self, offset: u64, size: u32) -> Result<u64, ClientError> {
        self.read_reg(region::CONFIG, offset, size)
    }

    /// Writes `size` bytes of config space at `offset`.
    pub fn config_write(&mut self, offset: u64, size: u32, value: u64) -> Result<(), ClientError> {
        self.write_reg(region::CONFIG, offset, size, value)
    }

    /// Reads a 32-bit BAR2 register.
    pub fn bar2_read32(&mut self, offset: u64) -> Result<u32, ClientError> {
        Ok(self.read_reg(region::BAR2, offset, 4)? as u32)
    }

    /// Writes a 32-bit BAR2 register.
    pub fn bar2_write32(&mut self, offset: u64, value: u32) -> Result<(), ClientError> {
        self.write_reg(region::BAR2, offset, 4, u64::from(value))
    }

    /// Reads DISPI register `index`.
    pub fn dispi_read(&mut self, index: u64) -> Result<u16, ClientError> {
        Ok(self.read_reg(region::BAR2, bar2::dispi(index), 2)? as u16)
    }

    /// Writes DISPI register `index`.
    pub fn dispi_write(&mut self, index: u64, value: u16) -> Result<(), ClientError> {
        self.write_reg(region::BAR2, bar2::dispi(index), 2, u64::from(value))
    }

    /// Asks for BAR0's region info and maps its sparse area read-write.
    pub fn map_bar0(&mut self) -> anyhow::Result<MappedBar0> {
        let region = self.region_info(region::BAR0)?;
        let area = match region.sparse_areas.as_deref() {
            Some([area]) => *area,
            other => anyhow::bail!("BAR0 sparse areas: {other:?}"),
        };
        let fd = region
            .fd
            .as_ref()
            .ok_or_else(|| anyhow::anyhow!("BAR0 region info carried no fd"))?;
        // SAFETY: the fd is a memfd-like object the daemon shares for exactly
        // this purpose; the tests treat the mapping as shared memory that the
        // daemon may change at any time and only read it as bytes.
        let map = unsafe {
            MmapOptions::new()
                .offset(region.info.offset + area.offset)
                .len(usize::try_from(area.size)?)
                .map_mut(fd)?
        };
        Ok(MappedBar0 { region, map })
    }

    /// Programs and starts a DMA self-test, waits for `IRQ_STATUS.DMA_DONE`
    /// (completion is asynchronous for maps without an fd), and returns
    /// `DMA_STATUS`. A `control` other than 1 or 2 is not a DMA: its status
    /// is read back at once.
    pub fn run_dma(&mut self, job: DmaJob) -> Result<u32, ClientError> {
        self.bar2_write32(bar2::IRQ_STATUS, bar2::IRQ_DMA_DONE)?;
        self.bar2_write32(bar2::DMA_IOVA_LO, job.iova as u32)?;
        self.bar2_write32(bar2::DMA_IOVA_HI, (job.iova >> 32) as u32)?;
        self.bar2_write32(bar2::DMA_VRAM_LO, job.vram_offset as u32)?;
        self.bar2_write32(bar2::DMA_VRAM_HI, (job.vram_offset >> 32) as u32)?;
        self.bar2_write32(bar2::DMA_LENGTH, job.length)?;
        self.bar2_write32(bar2::DMA_CONTROL, job.control)?;
        if job.control != bar2::DMA_TO_VRAM && job.control != bar2::DMA_FROM_VRAM {
            // Not a DMA: the contract sets no DMA_DONE for it.
            return self.bar2_read32(bar2::DMA_STATUS);
        }
        let deadline = Instant::now() + DMA_TIMEOUT;
        while self.bar2_read32(bar2::IRQ_STATUS)? & bar2::IRQ_DMA_DONE == 0 {
            if Instant::now() > deadline {
                return Err(ClientError::BadReply(format!(
                    "DMA_DONE not set {DMA_TIMEOUT:?} after DMA_CONTROL {}",
                    job.control
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.bar2_read32(bar2::DMA_STATUS)
    }
}
