//! Taking a vGPU's interrupts in guest userspace: the function is handed to
//! the kernel's `vfio-pci` driver, opened through VFIO's group and
//! container interface (include/uapi/linux/vfio.h), and each MSI-X vector
//! is given an eventfd with `VFIO_DEVICE_SET_IRQS`. A device interrupt then
//! goes vfio-user → QEMU's MSI-X emulation → the guest's interrupt
//! remapping → vfio-pci's handler → the eventfd this program polls.
//!
//! VFIO needs an IOMMU for the group: the Debian guest kernel is built
//! without `CONFIG_VFIO_NOIOMMU`, so the end-to-end run gives the guest
//! QEMU's `intel-iommu` (with interrupt remapping, so that vfio's type1
//! backend accepts the group without `allow_unsafe_interrupts`) and boots
//! it with `iommu=pt`, which keeps every other device's DMA as it was.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use thiserror::Error;

use crate::pci::PciDevice;

/// The driver the function is handed to.
pub const VFIO_PCI: &str = "vfio-pci";
/// The container device.
const CONTAINER: &str = "/dev/vfio/vfio";
/// Where new drivers are probed for a function.
const DRIVERS_PROBE: &str = "/sys/bus/pci/drivers_probe";

/// `_IO(';', 100 + n)`: every VFIO ioctl has this form.
const fn vfio_io(n: u64) -> u64 {
    (b';' as u64) << 8 | (100 + n)
}
const VFIO_GET_API_VERSION: u64 = vfio_io(0);
const VFIO_CHECK_EXTENSION: u64 = vfio_io(1);
const VFIO_SET_IOMMU: u64 = vfio_io(2);
const VFIO_GROUP_GET_STATUS: u64 = vfio_io(3);
const VFIO_GROUP_SET_CONTAINER: u64 = vfio_io(4);
const VFIO_GROUP_GET_DEVICE_FD: u64 = vfio_io(6);
const VFIO_DEVICE_GET_IRQ_INFO: u64 = vfio_io(9);
const VFIO_DEVICE_SET_IRQS: u64 = vfio_io(10);
/// The API version this code speaks.
const VFIO_API_VERSION: i32 = 0;
/// The type1 IOMMU backends, v2 preferred.
const VFIO_TYPE1_IOMMU: u64 = 1;
const VFIO_TYPE1V2_IOMMU: u64 = 3;
/// vfio_group_status.flags: every device of the group is bound to VFIO.
const GROUP_VIABLE: u32 = 1;
/// The MSI-X interrupt index of a vfio-pci device.
const MSIX_INDEX: u32 = 2;
/// vfio_irq_set.flags: DATA_NONE, DATA_EVENTFD, ACTION_TRIGGER.
const IRQ_SET_DATA_NONE: u32 = 1 << 0;
const IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
const IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;
/// vfio_irq_info.flags: the index can carry eventfds.
const IRQ_INFO_EVENTFD: u32 = 1 << 0;

/// Why VFIO could not be used.
#[derive(Debug, Error)]
pub enum VfioError {
    /// A sysfs write of the driver binding failed.
    #[error("{what} ({path})")]
    Bind {
        /// What was being done.
        what: &'static str,
        /// The file written.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The function did not end up bound to vfio-pci.
    #[error("{device} is bound to {driver:?} after the rebind, not vfio-pci")]
    NotBound {
        /// The function.
        device: String,
        /// Its driver.
        driver: Option<String>,
    },
    /// The function has no IOMMU group (no IOMMU in the guest?).
    #[error("{0} has no IOMMU group (is the guest booted with an IOMMU?)")]
    NoGroup(String),
    /// A VFIO file could not be opened.
    #[error("cannot open {path}")]
    Open {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// An ioctl failed.
    #[error("{0} failed")]
    Ioctl(&'static str, #[source] io::Error),
    /// The kernel answered something this code cannot use.
    #[error("{0}")]
    Unsupported(String),
}

fn write_sysfs(path: &Path, value: &str, what: &'static str) -> Result<(), VfioError> {
    fs::write(path, value).map_err(|source| VfioError::Bind {
        what,
        path: path.display().to_string(),
        source,
    })
}

/// Hands `device` to vfio-pci (unbinding its current driver). Returns the
/// driver it had, `None` if it was vfio-pci's already or unbound.
pub fn bind_vfio_pci(device: &PciDevice) -> Result<Option<String>, VfioError> {
    let before = device.driver();
    if before.as_deref() == Some(VFIO_PCI) {
        return Ok(None);
    }
    if before.is_some() {
        write_sysfs(
            &device.dir().join("driver/unbind"),
            &device.address,
            "unbind the driver",
        )?;
    }
    write_sysfs(
        &device.dir().join("driver_override"),
        VFIO_PCI,
        "set driver_override",
    )?;
    write_sysfs(Path::new(DRIVERS_PROBE), &device.address, "probe vfio-pci")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while device.driver().as_deref() != Some(VFIO_PCI) {
        if Instant::now() >= deadline {
            return Err(VfioError::NotBound {
                device: device.address.clone(),
                driver: device.driver(),
            });
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(before)
}

fn open(path: &str) -> Result<File, VfioError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| VfioError::Open {
            path: path.to_string(),
            source,
        })
}

/// An ioctl whose argument is a plain integer (or none); returns its
/// non-negative result.
fn ioctl_value(
    fd: &impl AsRawFd,
    request: u64,
    arg: u64,
    name: &'static str,
) -> Result<i32, VfioError> {
    // SAFETY: the VFIO ioctls called this way take their argument by value
    // (an integer or nothing) and touch no memory of this process.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg) };
    if ret < 0 {
        return Err(VfioError::Ioctl(name, io::Error::last_os_error()));
    }
    Ok(ret)
}

/// An ioctl whose argument is a pointer to `arg`, which the kernel reads
/// and may write.
///
/// # Safety
///
/// `T` must have the layout the kernel expects for `request` (a
/// `#[repr(C)]` struct whose `argsz`, if it has one, is its own size, or
/// the plain integer SET_CONTAINER reads), so that the kernel touches no
/// more than `size_of::<T>()` bytes.
unsafe fn ioctl_ptr<T>(
    fd: &impl AsRawFd,
    request: u64,
    arg: &mut T,
    name: &'static str,
) -> Result<i32, VfioError> {
    let ptr: *mut T = arg;
    // SAFETY: `arg` is an exclusive borrow of a live value for the call,
    // with the layout the caller promises for `request`.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, ptr) };
    if ret < 0 {
        return Err(VfioError::Ioctl(name, io::Error::last_os_error()));
    }
    Ok(ret)
}

/// An ioctl whose argument is `words`: a struct of 32-bit fields followed
/// by its variable-length data, `words[0]` (argsz) its size in bytes.
fn ioctl_words(
    fd: &impl AsRawFd,
    request: u64,
    words: &mut [u32],
    name: &'static str,
) -> Result<i32, VfioError> {
    if words.first().copied() != Some((words.len() * 4) as u32) {
        return Err(VfioError::Unsupported(format!(
            "{name}: argsz does not match the buffer"
        )));
    }
    let ptr = words.as_mut_ptr();
    // SAFETY: `words` is an exclusive borrow of a live buffer of
    // `words[0]` bytes for the call, and the kernel touches no more than
    // argsz bytes of it.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, ptr) };
    if ret < 0 {
        return Err(VfioError::Ioctl(name, io::Error::last_os_error()));
    }
    Ok(ret)
}

/// struct vfio_group_status.
#[repr(C)]
#[derive(Debug, Default)]
struct GroupStatus {
    argsz: u32,
    flags: u32,
}

/// struct vfio_irq_info.
#[repr(C)]
#[derive(Debug, Default)]
struct IrqInfo {
    argsz: u32,
    flags: u32,
    index: u32,
    count: u32,
}

/// A Linux eventfd: a counter the kernel adds interrupts to.
#[derive(Debug)]
pub struct EventFd(OwnedFd);

impl EventFd {
    /// A new non-blocking eventfd at 0.
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; the result is checked.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        Ok(EventFd(unsafe { OwnedFd::from_raw_fd(fd) }))
    }

    /// Takes the counter (the interrupts since the last take), 0 if none.
    pub fn take(&self) -> io::Result<u64> {
        let mut value = 0u64;
        let ptr: *mut u64 = &mut value;
        // SAFETY: an eventfd read writes exactly 8 bytes, to `value`.
        let n = unsafe { libc::read(self.0.as_raw_fd(), ptr.cast(), 8) };
        if n == 8 {
            return Ok(value);
        }
        let error = io::Error::last_os_error();
        if error.kind() == io::ErrorKind::WouldBlock {
            Ok(0)
        } else {
            Err(error)
        }
    }

    /// Waits up to `timeout` for the counter to be non-zero and takes it;
    /// 0 if the time ran out.
    pub fn wait(&self, timeout: Duration) -> io::Result<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let value = self.take()?;
            if value != 0 {
                return Ok(value);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(0);
            }
            let mut poll = libc::pollfd {
                fd: self.0.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            let millis = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
            // SAFETY: `poll` is one valid pollfd that lives across the call.
            let ready = unsafe { libc::poll(&mut poll, 1, millis) };
            if ready < 0 {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> i32 {
        self.0.as_raw_fd()
    }
}

/// A vGPU opened through VFIO, with an eventfd on each MSI-X vector once
/// [`enable_msix`](Self::enable_msix) ran. Closing it (drop) disables the
/// vectors and gives the function back to vfio-pci's idle state.
#[derive(Debug)]
pub struct VfioDevice {
    device: File,
    // The group and container stay open while the device is.
    _group: File,
    _container: File,
    vectors: Vec<EventFd>,
    /// The IOMMU backend set on the container.
    pub iommu: &'static str,
    /// The IOMMU group number.
    pub group: String,
}

impl VfioDevice {
    /// Opens `device`, which must be bound to vfio-pci.
    pub fn open(device: &PciDevice) -> Result<Self, VfioError> {
        let link = fs::read_link(device.dir().join("iommu_group"))
            .map_err(|_| VfioError::NoGroup(device.address.clone()))?;
        let group_number = link
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| VfioError::NoGroup(device.address.clone()))?;
        let container = open(CONTAINER)?;
        let version = ioctl_value(&container, VFIO_GET_API_VERSION, 0, "VFIO_GET_API_VERSION")?;
        if version != VFIO_API_VERSION {
            return Err(VfioError::Unsupported(format!(
                "VFIO API version {version}, expected {VFIO_API_VERSION}"
            )));
        }
        let (iommu, iommu_name) = [(VFIO_TYPE1V2_IOMMU, "type1v2"), (VFIO_TYPE1_IOMMU, "type1")]
            .into_iter()
            .find(|&(kind, _)| {
                ioctl_value(
                    &container,
                    VFIO_CHECK_EXTENSION,
                    kind,
                    "VFIO_CHECK_EXTENSION",
                )
                .is_ok_and(|r| r > 0)
            })
            .ok_or_else(|| {
                VfioError::Unsupported(
                    "the container offers no type1 IOMMU (vfio_iommu_type1 loaded?)".into(),
                )
            })?;

        let group = open(&format!("/dev/vfio/{group_number}"))?;
        let mut status = GroupStatus {
            argsz: size_of::<GroupStatus>() as u32,
            flags: 0,
        };
        // SAFETY: `status` is struct vfio_group_status, argsz its size.
        unsafe {
            ioctl_ptr(
                &group,
                VFIO_GROUP_GET_STATUS,
                &mut status,
                "VFIO_GROUP_GET_STATUS",
            )?
        };
        if status.flags & GROUP_VIABLE == 0 {
            return Err(VfioError::Unsupported(format!(
                "IOMMU group {group_number} is not viable: another device in it is not bound to vfio-pci"
            )));
        }
        let mut container_fd = container.as_raw_fd();
        // SAFETY: SET_CONTAINER reads one int, the container's fd.
        unsafe {
            ioctl_ptr(
                &group,
                VFIO_GROUP_SET_CONTAINER,
                &mut container_fd,
                "VFIO_GROUP_SET_CONTAINER",
            )?
        };
        ioctl_value(&container, VFIO_SET_IOMMU, iommu, "VFIO_SET_IOMMU")?;

        let mut name = device.address.clone().into_bytes();
        name.push(0);
        let name_ptr = name.as_ptr();
        // SAFETY: GET_DEVICE_FD reads the NUL-terminated name `name` holds,
        // which lives across the call, and writes nothing.
        let fd = unsafe { libc::ioctl(group.as_raw_fd(), VFIO_GROUP_GET_DEVICE_FD as _, name_ptr) };
        if fd < 0 {
            return Err(VfioError::Ioctl(
                "VFIO_GROUP_GET_DEVICE_FD",
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `fd` is a new descriptor nothing else owns.
        let device_file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
        Ok(VfioDevice {
            device: device_file,
            _group: group,
            _container: container,
            vectors: Vec::new(),
            iommu: iommu_name,
            group: group_number,
        })
    }

    /// The number of MSI-X vectors the function has.
    pub fn msix_vectors(&self) -> Result<u32, VfioError> {
        let mut info = IrqInfo {
            argsz: size_of::<IrqInfo>() as u32,
            index: MSIX_INDEX,
            ..IrqInfo::default()
        };
        // SAFETY: `info` is struct vfio_irq_info, argsz its size.
        unsafe {
            ioctl_ptr(
                &self.device,
                VFIO_DEVICE_GET_IRQ_INFO,
                &mut info,
                "VFIO_DEVICE_GET_IRQ_INFO",
            )?
        };
        if info.flags & IRQ_INFO_EVENTFD == 0 || info.count == 0 {
            return Err(VfioError::Unsupported(format!(
                "MSI-X index: flags {:#x}, count {}",
                info.flags, info.count
            )));
        }
        Ok(info.count)
    }

    /// Enables MSI-X with an eventfd on every vector; returns their count.
    pub fn enable_msix(&mut self) -> Result<u32, VfioError> {
        let count = self.msix_vectors()?;
        let vectors = (0..count)
            .map(|_| EventFd::new().map_err(|e| VfioError::Ioctl("eventfd", e)))
            .collect::<Result<Vec<_>, _>>()?;
        // struct vfio_irq_set, then one s32 fd per vector.
        let mut words: Vec<u32> = vec![
            0,
            IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER,
            MSIX_INDEX,
            0,
            count,
        ];
        words.extend(vectors.iter().map(|v| v.as_raw_fd() as u32));
        words[0] = (words.len() * 4) as u32;
        ioctl_words(
            &self.device,
            VFIO_DEVICE_SET_IRQS,
            &mut words,
            "VFIO_DEVICE_SET_IRQS",
        )?;
        self.vectors = vectors;
        Ok(count)
    }

    /// The eventfd of MSI-X vector `vector` (after [`enable_msix`](Self::enable_msix)).
    pub fn vector(&self, vector: u32) -> Option<&EventFd> {
        self.vectors.get(vector as usize)
    }

    /// Disables MSI-X (the eventfds stay, and stay quiet).
    pub fn disable_msix(&mut self) -> Result<(), VfioError> {
        let mut words: [u32; 5] = [
            20,
            IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER,
            MSIX_INDEX,
            0,
            0,
        ];
        ioctl_words(
            &self.device,
            VFIO_DEVICE_SET_IRQS,
            &mut words,
            "VFIO_DEVICE_SET_IRQS",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_are_the_kernels() {
        // include/uapi/linux/vfio.h: VFIO_TYPE ';', VFIO_BASE 100.
        assert_eq!(VFIO_GET_API_VERSION, 0x3b64);
        assert_eq!(VFIO_GROUP_GET_DEVICE_FD, 0x3b6a);
        assert_eq!(VFIO_DEVICE_SET_IRQS, 0x3b6e);
    }

    #[test]
    fn an_eventfd_counts_and_times_out() {
        let fd = EventFd::new().unwrap();
        assert_eq!(fd.wait(Duration::from_millis(1)).unwrap(), 0);
        let one = 1u64.to_ne_bytes();
        // SAFETY: an eventfd write reads exactly the 8 bytes of `one`.
        let n = unsafe { libc::write(fd.as_raw_fd(), one.as_ptr().cast(), 8) };
        assert_eq!(n, 8);
        assert_eq!(fd.wait(Duration::from_secs(1)).unwrap(), 1);
        assert_eq!(fd.take().unwrap(), 0);
    }
}
