//! The vGPU PCI functions as sysfs shows them: identity attributes, the
//! `resource` table, config space, the bound driver and the DRM and fbdev
//! nodes a driver created for them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// Where Linux lists PCI functions.
pub const SYSFS_PCI_DEVICES: &str = "/sys/bus/pci/devices";
/// Vendor id of the vGPU (the one QEMU's stdvga uses, which `bochs` binds).
pub const VENDOR_ID: u32 = 0x1234;
/// Device id of the vGPU.
pub const DEVICE_ID: u32 = 0x1111;

/// IORESOURCE_MEM in a `resource` line's flags.
const IORESOURCE_MEM: u64 = 0x0000_0200;
/// IORESOURCE_PREFETCH.
const IORESOURCE_PREFETCH: u64 = 0x0000_2000;
/// IORESOURCE_MEM_64.
const IORESOURCE_MEM_64: u64 = 0x0010_0000;

/// Why a sysfs attribute could not be read.
#[derive(Debug, Error)]
pub enum SysfsError {
    /// Reading failed.
    #[error("cannot read {path}")]
    Read {
        /// The attribute.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// It does not hold what the kernel writes there.
    #[error("{path}: unexpected content {content:?}")]
    Parse {
        /// The attribute.
        path: PathBuf,
        /// What it held.
        content: String,
    },
}

/// Parses a sysfs hex attribute (`0x1234\n`).
pub fn parse_hex(text: &str) -> Option<u64> {
    let text = text.trim();
    u64::from_str_radix(text.strip_prefix("0x").unwrap_or(text), 16).ok()
}

/// One line of a sysfs `resource` file: a BAR (lines 0–5), the ROM (6), or
/// a bridge window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// First address.
    pub start: u64,
    /// Last address (inclusive).
    pub end: u64,
    /// IORESOURCE_* flags.
    pub flags: u64,
}

impl Resource {
    /// Size in bytes; 0 for an unimplemented BAR.
    pub fn size(&self) -> u64 {
        if self.start == 0 && self.end == 0 {
            0
        } else {
            self.end.wrapping_sub(self.start).wrapping_add(1)
        }
    }

    /// Whether this is a memory BAR.
    pub fn is_memory(&self) -> bool {
        self.flags & IORESOURCE_MEM != 0
    }

    /// Whether this memory BAR is prefetchable.
    pub fn is_prefetchable(&self) -> bool {
        self.flags & IORESOURCE_PREFETCH != 0
    }

    /// Whether this memory BAR is 64-bit.
    pub fn is_64bit(&self) -> bool {
        self.flags & IORESOURCE_MEM_64 != 0
    }
}

/// Parses a `resource` file: one `0xSTART 0xEND 0xFLAGS` line per resource.
pub fn parse_resources(text: &str) -> Option<Vec<Resource>> {
    text.lines()
        .map(|line| {
            let mut fields = line.split_whitespace().map(parse_hex);
            let resource = Resource {
                start: fields.next()??,
                end: fields.next()??,
                flags: fields.next()??,
            };
            fields.next().is_none().then_some(resource)
        })
        .collect()
}

/// Identity registers of a function, as sysfs reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    /// Vendor id.
    pub vendor: u32,
    /// Device id.
    pub device: u32,
    /// Class code (base class, subclass, programming interface).
    pub class: u32,
    /// Revision id.
    pub revision: u32,
    /// Subsystem vendor id.
    pub subsystem_vendor: u32,
    /// Subsystem id.
    pub subsystem_device: u32,
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "vendor={:04x} device={:04x} class={:06x} revision={:02x} subsystem={:04x}:{:04x}",
            self.vendor,
            self.device,
            self.class,
            self.revision,
            self.subsystem_vendor,
            self.subsystem_device
        )
    }
}

/// One PCI function in sysfs.
#[derive(Debug, Clone)]
pub struct PciDevice {
    /// Its address, `DDDD:BB:DD.F`.
    pub address: String,
    dir: PathBuf,
}

impl PciDevice {
    /// The function whose sysfs directory is `dir`.
    pub fn new(dir: PathBuf) -> Self {
        let address = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        PciDevice { address, dir }
    }

    /// Every function under `devices` (normally [`SYSFS_PCI_DEVICES`]) with
    /// the vGPU's vendor and device id, in address order.
    pub fn find_vgpus(devices: &Path) -> Result<Vec<PciDevice>, SysfsError> {
        let read_error = |source| SysfsError::Read {
            path: devices.to_path_buf(),
            source,
        };
        let mut found = Vec::new();
        for entry in fs::read_dir(devices).map_err(read_error)? {
            let device = PciDevice::new(entry.map_err(read_error)?.path());
            if device.hex("vendor")? == u64::from(VENDOR_ID)
                && device.hex("device")? == u64::from(DEVICE_ID)
            {
                found.push(device);
            }
        }
        found.sort_by(|a, b| a.address.cmp(&b.address));
        Ok(found)
    }

    /// Its sysfs directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn read(&self, attribute: &str) -> Result<String, SysfsError> {
        let path = self.dir.join(attribute);
        fs::read_to_string(&path).map_err(|source| SysfsError::Read { path, source })
    }

    fn hex(&self, attribute: &str) -> Result<u64, SysfsError> {
        let content = self.read(attribute)?;
        parse_hex(&content).ok_or_else(|| SysfsError::Parse {
            path: self.dir.join(attribute),
            content,
        })
    }

    /// Its identity registers.
    pub fn identity(&self) -> Result<Identity, SysfsError> {
        // The attributes are 16 bits (24 for class) wide; the casts cannot
        // lose what a kernel writes, and a bigger value fails the checks.
        let field = |name| self.hex(name).map(|v| v as u32);
        Ok(Identity {
            vendor: field("vendor")?,
            device: field("device")?,
            class: field("class")?,
            revision: field("revision")?,
            subsystem_vendor: field("subsystem_vendor")?,
            subsystem_device: field("subsystem_device")?,
        })
    }

    /// Its `resource` table.
    pub fn resources(&self) -> Result<Vec<Resource>, SysfsError> {
        let content = self.read("resource")?;
        parse_resources(&content).ok_or_else(|| SysfsError::Parse {
            path: self.dir.join("resource"),
            content,
        })
    }

    /// Its config space image (4096 bytes for root on a PCIe platform, 256
    /// on a conventional one).
    pub fn config(&self) -> Result<Vec<u8>, SysfsError> {
        let path = self.dir.join("config");
        fs::read(&path).map_err(|source| SysfsError::Read { path, source })
    }

    /// The name of the bound driver, if any.
    pub fn driver(&self) -> Option<String> {
        let target = fs::read_link(self.dir.join("driver")).ok()?;
        Some(target.file_name()?.to_string_lossy().into_owned())
    }

    /// The sysfs file that maps BAR `index` (`resourceN`).
    pub fn bar_path(&self, index: u8) -> PathBuf {
        self.dir.join(format!("resource{index}"))
    }

    /// The names of the child nodes in class directory `class` whose names
    /// are `prefix` followed by digits (`drm`/`card` gives `card0`, not the
    /// connector `card0-Virtual-1`), sorted.
    fn children(&self, class: &str, prefix: &str) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.dir.join(class)) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| {
                n.strip_prefix(prefix)
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect();
        names.sort();
        names
    }

    /// DRM card nodes of this function (`card0`), found in its sysfs `drm/`.
    pub fn drm_cards(&self) -> Vec<String> {
        self.children("drm", "card")
    }

    /// Framebuffer devices of this function (`fb0`), found in its sysfs
    /// `graphics/`.
    pub fn framebuffers(&self) -> Vec<String> {
        self.children("graphics", "fb")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_hex_takes_sysfs_attributes() {
        assert_eq!(parse_hex("0x1234\n"), Some(0x1234));
        assert_eq!(parse_hex("0x038000\n"), Some(0x038000));
        assert_eq!(parse_hex("banana"), None);
    }

    #[test]
    fn parse_resources_sizes_bars_and_reads_flags() {
        let text = "0x0000000800000000 0x000000083fffffff 0x000000000014220c\n\
                    0x0000000000000000 0x0000000000000000 0x0000000000000000\n\
                    0x00000000c1000000 0x00000000c1003fff 0x0000000000040200\n";
        let r = parse_resources(text).unwrap();
        assert_eq!(r[0].size(), 1 << 30);
        assert!(r[0].is_memory() && r[0].is_prefetchable() && r[0].is_64bit());
        assert_eq!(r[1].size(), 0);
        assert_eq!(r[2].size(), 0x4000);
        assert!(r[2].is_memory() && !r[2].is_prefetchable() && !r[2].is_64bit());
    }

    #[test]
    fn parse_resources_refuses_a_short_line() {
        assert_eq!(parse_resources("0x0 0x0\n"), None);
    }

    fn fake_function(root: &Path, address: &str, vendor: &str, device: &str) -> PathBuf {
        let dir = root.join(address);
        fs::create_dir_all(dir.join("drm/card1-Virtual-1")).unwrap();
        fs::create_dir_all(dir.join("drm/card1")).unwrap();
        fs::create_dir_all(dir.join("graphics/fb1")).unwrap();
        fs::write(dir.join("vendor"), vendor).unwrap();
        fs::write(dir.join("device"), device).unwrap();
        dir
    }

    #[test]
    fn find_vgpus_selects_1234_1111_in_address_order() {
        let root = tempfile::tempdir().unwrap();
        fake_function(root.path(), "0000:00:04.0", "0x1234\n", "0x1111\n");
        fake_function(root.path(), "0000:00:01.0", "0x8086\n", "0x29c0\n");
        fake_function(root.path(), "0000:00:03.0", "0x1234\n", "0x1111\n");
        let found = PciDevice::find_vgpus(root.path()).unwrap();
        let addresses: Vec<_> = found.iter().map(|d| d.address.as_str()).collect();
        assert_eq!(addresses, ["0000:00:03.0", "0000:00:04.0"]);
    }

    #[test]
    fn node_lists_leave_out_connectors() {
        let root = tempfile::tempdir().unwrap();
        let dir = fake_function(root.path(), "0000:00:03.0", "0x1234", "0x1111");
        let device = PciDevice::new(dir);
        assert_eq!(device.drm_cards(), ["card1"]);
        assert_eq!(device.framebuffers(), ["fb1"]);
    }
}
