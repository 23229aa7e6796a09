//! Checkpoints: moments where a program holds a frame on the display and
//! lets the host look at it (take a screenshot through `vgpuctl`) before it
//! goes on.
//!
//! The program prints
//!
//! ```text
//! VGPU-SHOT <pci address> <name> seed=<seed|-> <width>x<height>[ pattern=engines]
//! ```
//!
//! on the console and waits until the host writes a line `go` to the
//! console, or [`HOLD_TIMEOUT`] passes. Checkpoints are on only when
//! `VGPU_CHECKPOINTS=1` is in the environment (the host that runs the guest
//! says so on the kernel command line), so the programs run unattended
//! everywhere else.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The environment variable that turns checkpoints on.
pub const ENV: &str = "VGPU_CHECKPOINTS";
/// How long a program holds a frame for the host at most.
pub const HOLD_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether checkpoints are on.
pub fn enabled() -> bool {
    std::env::var(ENV).is_ok_and(|v| v == "1")
}

/// What the held frame shows, for the host's comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Picture {
    /// Anything but a blank screen (the text console).
    Unknown,
    /// The test pattern of this seed ([`crate::pattern`]).
    Seed(u32),
    /// The engines picture of this seed ([`crate::engines_pattern`]).
    Engines(u32),
}

/// The checkpoint line (without the newline).
pub fn line(address: &str, name: &str, seed: Option<u32>, width: u32, height: u32) -> String {
    picture_line(
        address,
        name,
        seed.map_or(Picture::Unknown, Picture::Seed),
        width,
        height,
    )
}

/// The checkpoint line of a frame showing `picture` (without the newline):
/// an engines picture adds ` pattern=engines`.
pub fn picture_line(
    address: &str,
    name: &str,
    picture: Picture,
    width: u32,
    height: u32,
) -> String {
    let (seed, suffix) = match picture {
        Picture::Unknown => ("-".to_string(), ""),
        Picture::Seed(seed) => (seed.to_string(), ""),
        Picture::Engines(seed) => (seed.to_string(), " pattern=engines"),
    };
    format!("VGPU-SHOT {address} {name} seed={seed} {width}x{height}{suffix}")
}

/// Announces the frame shown on `address` and holds it until the host says
/// `go`. Returns whether the host answered (false: timed out, or
/// checkpoints are off).
pub fn hold(address: &str, name: &str, seed: Option<u32>, width: u32, height: u32) -> bool {
    hold_pattern(
        address,
        name,
        seed.map_or(Picture::Unknown, Picture::Seed),
        width,
        height,
    )
}

/// [`hold`] for a frame showing `picture`.
pub fn hold_pattern(address: &str, name: &str, picture: Picture, width: u32, height: u32) -> bool {
    if !enabled() {
        return false;
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "{}",
        picture_line(address, name, picture, width, height)
    );
    let _ = out.flush();
    drop(out);
    wait_for_go(HOLD_TIMEOUT)
}

/// Reads console lines until one is `go` or `timeout` passes.
fn wait_for_go(timeout: Duration) -> bool {
    let stdin = std::io::stdin();
    let fd = stdin.as_raw_fd();
    let deadline = Instant::now() + timeout;
    let mut pending = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        let mut poll = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = i32::try_from(left.as_millis()).unwrap_or(i32::MAX);
        // SAFETY: `poll` is one valid pollfd that lives across the call.
        let ready = unsafe { libc::poll(&mut poll, 1, millis) };
        if ready <= 0 {
            if ready < 0
                && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
            {
                continue;
            }
            return false;
        }
        let mut buf = [0u8; 256];
        // SAFETY: `buf` is writable for its whole length for the call.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        let Ok(n) = usize::try_from(n) else {
            return false;
        };
        if n == 0 {
            return false;
        }
        pending.extend_from_slice(&buf[..n]);
        if has_go_line(&pending) {
            return true;
        }
        // Keep only the unfinished last line.
        if let Some(end) = pending.iter().rposition(|&b| b == b'\n' || b == b'\r') {
            pending.drain(..=end);
        }
    }
}

fn has_go_line(bytes: &[u8]) -> bool {
    bytes
        .split(|&b| b == b'\n' || b == b'\r')
        .any(|l| l.trim_ascii() == b"go")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_names_the_device_the_frame_and_its_seed() {
        assert_eq!(
            line("0000:00:04.0", "draw", Some(1), 1920, 1080),
            "VGPU-SHOT 0000:00:04.0 draw seed=1 1920x1080"
        );
        assert_eq!(
            line("0000:00:05.0", "console", None, 1280, 1024),
            "VGPU-SHOT 0000:00:05.0 console seed=- 1280x1024"
        );
        assert_eq!(
            picture_line("0000:00:05.0", "engines", Picture::Engines(5), 1280, 1024),
            "VGPU-SHOT 0000:00:05.0 engines seed=5 1280x1024 pattern=engines"
        );
    }

    #[test]
    fn only_a_whole_go_line_releases_the_frame() {
        assert!(has_go_line(b"go\n"));
        assert!(has_go_line(b"noise\r\ngo\r"));
        assert!(!has_go_line(b"gone\n"));
        assert!(!has_go_line(b"ego\n"));
    }
}
