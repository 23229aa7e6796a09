//! The Unix-socket round-trip floor, as `bar2_rtt` measures it: a child
//! process (this bench binary, re-executed) that answers every request of
//! a fixed size with a reply of a fixed size, the child and the measuring
//! thread both on CPU 0 (each round trip is two context switches on one
//! CPU). A trapped register access can be no faster than this: it is one
//! such round trip to the daemon.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{Context, bail};
use rustix::thread::{CpuSet, sched_getaffinity, sched_setaffinity};

const ECHO_FLAG: &str = "--echo-server";

/// vfio-user header plus the REGION_READ/WRITE fixed part, in bytes.
const ACCESS_HEADER: usize = 16 + 16;
/// A 4-byte BAR2 read: request without data, reply with it.
pub const READ_SHAPE: (usize, usize) = (ACCESS_HEADER, ACCESS_HEADER + 4);
/// A 4-byte BAR2 write (a trapped doorbell): request with data, reply
/// without.
pub const WRITE_SHAPE: (usize, usize) = (ACCESS_HEADER + 4, ACCESS_HEADER);

/// If this process was started as the echo child, serves until the parent
/// hangs up and returns true; otherwise returns false at once. Call it
/// first thing in `main`.
pub fn serve_if_child() -> anyhow::Result<bool> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) != Some(ECHO_FLAG) {
        return Ok(false);
    }
    let [path, request, reply] = &args[2..] else {
        bail!("usage: {ECHO_FLAG} SOCKET REQUEST_BYTES REPLY_BYTES");
    };
    pin_to_cpu0()?;
    let mut stream = UnixStream::connect(path)?;
    let mut request = vec![0u8; request.parse()?];
    let reply = vec![0xa5u8; reply.parse()?];
    loop {
        match stream.read_exact(&mut request) {
            Ok(()) => stream.write_all(&reply)?,
            Err(error) if error.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(true),
            Err(error) => return Err(error.into()),
        }
    }
}

/// The parent's end of the echo.
#[derive(Debug)]
pub struct Echo {
    child: Child,
    stream: UnixStream,
    request: Vec<u8>,
    reply: Vec<u8>,
    _dir: tempfile::TempDir,
}

impl Echo {
    /// Starts an echo child for `shape` (request bytes, reply bytes).
    pub fn start(shape: (usize, usize)) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("echo.sock");
        let listener = UnixListener::bind(&path)?;
        let child = Command::new(std::env::current_exe()?)
            .arg(ECHO_FLAG)
            .arg(&path)
            .arg(shape.0.to_string())
            .arg(shape.1.to_string())
            .spawn()?;
        let (stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Echo {
            child,
            stream,
            request: vec![0x5a; shape.0],
            reply: vec![0; shape.1],
            _dir: dir,
        })
    }

    /// Runs `f` with the calling thread on CPU 0, where the child is, as
    /// `bar2_rtt` measures; the thread may use every CPU again afterwards.
    pub fn pinned<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> anyhow::Result<T> {
        let before = sched_getaffinity(None).context("sched_getaffinity")?;
        pin_to_cpu0()?;
        let result = f(self);
        sched_setaffinity(None, &before).context("sched_setaffinity")?;
        Ok(result)
    }

    /// One round trip.
    pub fn round_trip(&mut self) -> anyhow::Result<()> {
        self.stream.write_all(&self.request)?;
        self.stream.read_exact(&mut self.reply)?;
        Ok(())
    }

    /// Hangs up and checks that the child ended cleanly.
    pub fn finish(mut self) -> anyhow::Result<()> {
        self.stream.shutdown(std::net::Shutdown::Both)?;
        let status = self.child.wait()?;
        if !status.success() {
            bail!("echo server exited with {status}");
        }
        Ok(())
    }
}

impl Drop for Echo {
    fn drop(&mut self) {
        // Hanging up ends the child; kill covers a child that did not end
        // within a second.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        for _ in 0..100 {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Pins the calling thread to CPU 0.
fn pin_to_cpu0() -> anyhow::Result<()> {
    let mut cpus = CpuSet::new();
    cpus.set(0);
    sched_setaffinity(None, &cpus).context("sched_setaffinity")
}
