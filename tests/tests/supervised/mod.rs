//! A daemon run the way systemd runs it: `NOTIFY_SOCKET` bound by the test
//! and every notification kept (not only the first `READY=1`, as
//! `TestDaemon` does), optionally under a wrapper such as `seccomp-run`,
//! with its exit status observable. Stopped (SIGTERM, then SIGKILL) when
//! dropped.

// Each test crate that includes this module uses a part of it.
#![allow(dead_code)]

use std::ffi::OsString;
use std::fs::{self, File};
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::process::{Pid, Signal, kill_process};
use tempfile::TempDir;
use uuid::Uuid;
use vgpud_tests::daemon::vgpud_binary;
use vgpud_tests::{DaemonConfig, RawClient};

/// A safety net for any one notification or exit, not a measurement.
pub const WAIT: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub struct Supervised {
    child: Option<Child>,
    notify: UnixDatagram,
    runtime_dir: PathBuf,
    // Dropped last: the daemon is stopped before its directory goes.
    dir: TempDir,
}

impl Supervised {
    /// Starts `WRAPPER... vgpud --config FILE` on `config` (no wrapper
    /// when `wrapper` is empty). Returns before `READY=1`.
    pub fn start(config: &DaemonConfig, wrapper: &[OsString]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let runtime_dir = dir.path().join("run");
        let config_path = dir.path().join("vgpud.toml");
        fs::write(&config_path, config.render(&runtime_dir))?;
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path)?;
        notify.set_read_timeout(Some(Duration::from_millis(100)))?;
        let vgpud = vgpud_binary()?;
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(&vgpud);
                command
            }
            None => Command::new(&vgpud),
        };
        command
            .arg("--config")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(File::create(dir.path().join("vgpud.stdout"))?)
            .stderr(File::create(dir.path().join("vgpud.stderr"))?)
            .env("NOTIFY_SOCKET", &notify_path);
        let child = command.spawn().context("spawning vgpud")?;
        Ok(Supervised {
            child: Some(child),
            notify,
            runtime_dir,
            dir,
        })
    }

    /// The daemon's process id (the wrapper's, which exec'd it).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The runtime directory holding the sockets.
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// Connects a raw client to `uuid` and completes the handshake.
    pub fn connect(&self, uuid: Uuid) -> anyhow::Result<RawClient> {
        RawClient::connect(&self.runtime_dir.join(format!("{uuid}.sock")))
            .with_context(|| format!("connecting to {uuid}; stderr:\n{}", self.stderr()))
    }

    /// What the daemon (and its wrapper) wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("vgpud.stderr")).unwrap_or_default()
    }

    /// Reads notifications until one has the line `line`, and returns that
    /// one's lines (earlier ones are dropped). Fails if the daemon exits
    /// first or none comes within [`WAIT`].
    pub fn wait_for(&mut self, line: &str) -> anyhow::Result<Vec<String>> {
        let deadline = Instant::now() + WAIT;
        let mut buf = [0u8; 4096];
        let mut seen = Vec::new();
        loop {
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    let lines: Vec<String> = String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .map(str::to_owned)
                        .collect();
                    if lines.iter().any(|l| l == line) {
                        return Ok(lines);
                    }
                    seen.push(lines.join("\\n"));
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                // What it sent just before exiting is still queued.
                if let Ok(n) = self.notify.recv(&mut buf)
                    && String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .any(|l| l == line)
                {
                    return Ok(String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .map(str::to_owned)
                        .collect());
                }
                bail!(
                    "vgpud exited with {status} before {line}; saw {seen:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "no {line} within {WAIT:?}; saw {seen:?}; stderr:\n{}",
                    self.stderr()
                );
            }
        }
    }

    /// Sends `signal` to the daemon (the wrapper exec'd it, so it is the
    /// child itself).
    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let child = self.child.as_ref().context("daemon already reaped")?;
        let pid = Pid::from_raw(child.id() as i32).context("pid 0")?;
        kill_process(pid, signal)?;
        Ok(())
    }

    /// Waits for the daemon to exit (killing it after [`WAIT`]).
    pub fn wait_exit(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("daemon already reaped")?;
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.kill()?;
        let status = child.wait()?;
        bail!("vgpud did not exit within {WAIT:?} and was killed ({status})")
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Nothing to report from a destructor; SIGKILL follows if the
            // daemon ignores SIGTERM.
            let _ = vgpud_tests::daemon::stop(&mut child);
        }
    }
}
