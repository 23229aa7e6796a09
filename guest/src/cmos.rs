//! A boot counter kept in the PC's CMOS RAM, so that the guest's /init can
//! tell a first boot from the boot after a guest-initiated reboot.
//!
//! The guest has no disk, and the initramfs and kernel command line are the
//! same on every boot of one QEMU run; QEMU keeps CMOS RAM across a machine
//! reset (it is set up once, when the machine is created). The counter uses
//! two bytes at the top of the 128-byte bank, which neither QEMU's PC
//! machines nor SeaBIOS use, through the index/data ports 0x70/0x71 via
//! `/dev/port`.

use std::fs::OpenOptions;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use thiserror::Error;

/// The RTC's index port.
const INDEX_PORT: u64 = 0x70;
/// The RTC's data port.
const DATA_PORT: u64 = 0x71;
/// CMOS byte holding [`MAGIC`] once a boot has been counted.
const MAGIC_BYTE: u8 = 0x7e;
/// CMOS byte holding the count.
const COUNT_BYTE: u8 = 0x7f;
/// Marks the count as ours (a fresh QEMU starts with zeros there).
const MAGIC: u8 = 0xb5;

/// Why the counter could not be used.
#[derive(Debug, Error)]
pub enum CmosError {
    /// `/dev/port` could not be opened (kernel without CONFIG_DEVPORT?).
    #[error("cannot open {path}")]
    Open {
        /// The device.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A port access failed.
    #[error("port access failed")]
    Port(#[source] io::Error),
}

/// CMOS RAM reached through an I/O port device.
#[derive(Debug)]
pub struct Cmos {
    port: std::fs::File,
}

impl Cmos {
    /// Opens the I/O port device (normally `/dev/port`).
    pub fn open(path: &Path) -> Result<Self, CmosError> {
        let port = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| CmosError::Open {
                path: path.display().to_string(),
                source,
            })?;
        Ok(Cmos { port })
    }

    fn read(&self, index: u8) -> Result<u8, CmosError> {
        // Index bit 7 is the NMI mask: indices below 0x80 leave NMIs on.
        self.port
            .write_all_at(&[index], INDEX_PORT)
            .map_err(CmosError::Port)?;
        let mut value = [0u8];
        self.port
            .read_exact_at(&mut value, DATA_PORT)
            .map_err(CmosError::Port)?;
        Ok(value[0])
    }

    fn write(&self, index: u8, value: u8) -> Result<(), CmosError> {
        self.port
            .write_all_at(&[index], INDEX_PORT)
            .map_err(CmosError::Port)?;
        self.port
            .write_all_at(&[value], DATA_PORT)
            .map_err(CmosError::Port)
    }

    /// Counts this boot and returns its number: 1 on the first boot of the
    /// machine, 2 after one reboot, and so on (saturating at 255).
    pub fn count_boot(&self) -> Result<u8, CmosError> {
        let previous = if self.read(MAGIC_BYTE)? == MAGIC {
            self.read(COUNT_BYTE)?
        } else {
            0
        };
        let boot = next_boot(previous);
        self.write(COUNT_BYTE, boot)?;
        self.write(MAGIC_BYTE, MAGIC)?;
        Ok(boot)
    }
}

/// The number of the boot after `previous` boots.
fn next_boot(previous: u8) -> u8 {
    previous.saturating_add(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file stands in for /dev/port: with no RTC behind it, a write to
    /// the index port and a read of the data port are plain bytes, so the
    /// counter sees one shared byte; the test checks the sequence of port
    /// accesses by their effect on that file.
    #[test]
    fn count_boot_starts_at_one_and_writes_the_marker() {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), [0u8; 0x80]).unwrap();
        let cmos = Cmos::open(file.path()).unwrap();
        assert_eq!(cmos.count_boot().unwrap(), 1);
        let bytes = std::fs::read(file.path()).unwrap();
        assert_eq!(bytes[INDEX_PORT as usize], MAGIC_BYTE);
        assert_eq!(bytes[DATA_PORT as usize], MAGIC);
    }

    #[test]
    fn next_boot_saturates() {
        assert_eq!(next_boot(0), 1);
        assert_eq!(next_boot(1), 2);
        assert_eq!(next_boot(255), 255);
    }
}
