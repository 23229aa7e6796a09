//! A daemon of its own for these tests: unlike `TestDaemon` it keeps its
//! systemd notification socket (so a reload's `READY=1` can be awaited),
//! can be restarted on the same state directory, and takes its
//! configuration as TOML text. Plus control-API shorthands.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use rustix::process::{Pid, Signal, kill_process};
use serde_json::{Value, json};
use tempfile::TempDir;
use uuid::Uuid;
use vgpud_tests::RawClient;
use vgpud_tests::control::control_request;
use vgpud_tests::daemon::spawn;
use vgpud_tests::regs::region;

/// Generous safety net for anything that should come quickly.
pub const PATIENCE: Duration = Duration::from_secs(20);
/// BAR2 offset of the bochs DISPI id register (docs/device-interface.md).
pub const DISPI_ID: u64 = 0x500;

/// The vGPU of the standard file.
pub const CFG: Uuid = Uuid::from_u128(0x0a0a0a0a_0000_4000_8000_00000000000a);

/// Two 64 MiB GPUs, a 16 MiB profile (4 per GPU) and a 32 MiB one (1 per
/// GPU), and one `[[vgpu]]` ([`CFG`]) on gpu0.
pub fn standard_toml() -> String {
    format!("{}{}", base_toml(), vgpu_table(CFG, "gpu0", "p16"))
}

/// [`standard_toml`] without its `[[vgpu]]`.
pub fn base_toml() -> String {
    r#"
[[gpu]]
id = "gpu0"
vram = "64MiB"

[[gpu]]
id = "gpu1"
vram = "64MiB"

[[profile]]
name = "p16"
framebuffer = "16MiB"
max_instances = 4

[[profile]]
name = "p32"
framebuffer = "32MiB"
max_instances = 1
"#
    .to_string()
}

pub fn vgpu_table(uuid: Uuid, gpu: &str, profile: &str) -> String {
    format!("\n[[vgpu]]\nuuid = \"{uuid}\"\ngpu = \"{gpu}\"\nprofile = \"{profile}\"\n")
}

pub const MIB: u64 = 1 << 20;

/// A running daemon in a temporary directory (`run/`, `state/`,
/// `vgpud.toml`, its stderr).
pub struct Daemon {
    child: Option<Child>,
    notify: UnixDatagram,
    dir: TempDir,
}

impl Daemon {
    pub fn start(body: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let notify = UnixDatagram::bind(dir.path().join("notify.sock"))?;
        notify.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut daemon = Daemon {
            child: None,
            notify,
            dir,
        };
        daemon.write_config(body)?;
        daemon.launch()?;
        Ok(daemon)
    }

    pub fn standard() -> anyhow::Result<Self> {
        Self::start(&standard_toml())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.dir().join("run")
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir().join("state")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir().join("vgpud.toml")
    }

    pub fn control(&self) -> PathBuf {
        self.runtime_dir().join("control.sock")
    }

    pub fn socket(&self, uuid: Uuid) -> PathBuf {
        self.runtime_dir().join(format!("{uuid}.sock"))
    }

    pub fn definition_file(&self, uuid: Uuid) -> PathBuf {
        self.state_dir().join("vgpus").join(format!("{uuid}.toml"))
    }

    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir().join("vgpud.stderr")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Writes the configuration file: `body` under the rig's paths.
    pub fn write_config(&self, body: &str) -> anyhow::Result<()> {
        let text = format!(
            "runtime_dir = {:?}\nstate_dir = {:?}\n{body}",
            self.runtime_dir().display().to_string(),
            self.state_dir().display().to_string()
        );
        fs::write(self.config_path(), text)?;
        Ok(())
    }

    fn launch(&mut self) -> anyhow::Result<()> {
        let child = spawn(
            &self.config_path(),
            self.dir.path(),
            Some(&self.dir.path().join("notify.sock")),
        )?;
        self.child = Some(child);
        self.wait_notify("READY=1")
    }

    /// Starts the daemon expecting it to fail: its exit status.
    pub fn launch_expecting_exit(&mut self) -> anyhow::Result<ExitStatus> {
        ensure!(self.child.is_none(), "still running");
        let mut child = spawn(&self.config_path(), self.dir.path(), None)?;
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("vgpud still ran; stderr:\n{}", self.stderr());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn wait_notify(&mut self, line: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        let mut buf = [0u8; 4096];
        loop {
            match self.notify.recv(&mut buf) {
                Ok(n) => {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    if text.lines().any(|l| l.trim() == line) {
                        return Ok(());
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(e.into()),
            }
            if let Some(status) = self.child.as_mut().context("not running")?.try_wait()? {
                bail!(
                    "vgpud exited ({status}) waiting for {line}; stderr:\n{}",
                    self.stderr()
                );
            }
            ensure!(
                Instant::now() < deadline,
                "no {line} within {PATIENCE:?}; stderr:\n{}",
                self.stderr()
            );
        }
    }

    /// Reads and drops the notifications queued so far, as systemd would
    /// have read them (a notification socket nobody reads fills up).
    pub fn drain_notify(&self) -> anyhow::Result<usize> {
        let mut buf = [0u8; 4096];
        let mut n = 0;
        self.notify.set_nonblocking(true)?;
        while self.notify.recv(&mut buf).is_ok() {
            n += 1;
        }
        self.notify.set_nonblocking(false)?;
        Ok(n)
    }

    /// Rewrites the file, sends SIGHUP and waits for the reload to finish
    /// (`RELOADING=1`, then `READY=1`, as docs/operations.md promises).
    pub fn reload(&mut self, body: &str) -> anyhow::Result<()> {
        self.write_config(body)?;
        self.signal(Signal::HUP)?;
        self.wait_notify("RELOADING=1")?;
        self.wait_notify("READY=1")
    }

    pub fn signal(&self, signal: Signal) -> anyhow::Result<()> {
        let pid = Pid::from_raw(self.pid() as i32).ok_or_else(|| anyhow!("no pid"))?;
        kill_process(pid, signal)?;
        Ok(())
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("not running")?;
        vgpud_tests::daemon::stop(&mut child)
    }

    /// Stops and starts again on the same directory and file.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            let status = self.stop()?;
            ensure!(status.success(), "vgpud stopped with {status}");
        }
        self.launch()
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Fails the test if the daemon died.
    pub fn assert_alive(&mut self) -> anyhow::Result<()> {
        ensure!(self.is_running(), "vgpud died; stderr:\n{}", self.stderr());
        Ok(())
    }

    pub fn call(&self, command: &str, args: Value) -> anyhow::Result<Value> {
        control_request(&self.control(), command, args, PATIENCE)
            .with_context(|| format!("{command}; stderr:\n{}", self.stderr()))
    }

    pub fn ok(&self, command: &str, args: Value) -> anyhow::Result<Value> {
        let response = self.call(command, args.clone())?;
        ensure!(
            response["ok"] == true,
            "{command} {args} should succeed: {response}"
        );
        Ok(response["result"].clone())
    }

    /// The error kind and message of a request that must fail.
    pub fn err(&self, command: &str, args: Value) -> anyhow::Result<(String, String)> {
        let response = self.call(command, args.clone())?;
        ensure!(
            response["ok"] == false,
            "{command} {args} should fail: {response}"
        );
        Ok((
            response["error"]["kind"].as_str().unwrap_or("").to_string(),
            response["error"]["message"]
                .as_str()
                .unwrap_or("")
                .to_string(),
        ))
    }

    /// Asserts `command args` fails with `kind`; returns the message.
    pub fn expect(&self, kind: &str, command: &str, args: Value) -> anyhow::Result<String> {
        let (got, message) = self.err(command, args.clone())?;
        ensure!(
            got == kind,
            "{command} {args}: expected {kind}, got {got}: {message}"
        );
        Ok(message)
    }

    /// `list` (with `defined`) by UUID.
    pub fn vgpus(&self, defined: bool) -> anyhow::Result<BTreeMap<Uuid, Value>> {
        let list = self.ok("list", json!({ "defined": defined }))?;
        list["vgpus"]
            .as_array()
            .context("vgpus")?
            .iter()
            .map(|v| {
                let uuid = v["uuid"].as_str().context("uuid")?.parse()?;
                Ok((uuid, v.clone()))
            })
            .collect()
    }

    pub fn entry(&self, uuid: Uuid, defined: bool) -> anyhow::Result<Value> {
        self.vgpus(defined)?
            .remove(&uuid)
            .with_context(|| format!("{uuid} not listed"))
    }

    /// `list`'s `vram_free` of each GPU.
    pub fn vram_free(&self) -> anyhow::Result<BTreeMap<String, u64>> {
        let list = self.ok("list", Value::Null)?;
        list["gpus"]
            .as_array()
            .context("gpus")?
            .iter()
            .map(|g| {
                Ok((
                    g["id"].as_str().context("id")?.to_string(),
                    g["vram_free"].as_u64().context("vram_free")?,
                ))
            })
            .collect()
    }

    /// `types`' `available` instances of `profile` on `gpu`.
    pub fn available(&self, profile: &str, gpu: &str) -> anyhow::Result<u64> {
        let types = self.ok("types", Value::Null)?;
        let entry = types["types"]
            .as_array()
            .context("types")?
            .iter()
            .find(|t| t["profile"] == profile)
            .with_context(|| format!("no {profile} in {types}"))?;
        entry["available"]
            .as_array()
            .context("available")?
            .iter()
            .find(|a| a["gpu"] == gpu)
            .and_then(|a| a["instances"].as_u64())
            .with_context(|| format!("no {gpu} in {entry}"))
    }

    /// Polls `cond` on `list` until it holds.
    pub fn wait_for(
        &self,
        what: &str,
        mut cond: impl FnMut(&Self) -> anyhow::Result<bool>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if cond(self)? {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Polls until `uuid` is listed in `state`.
    pub fn wait_state(&self, uuid: Uuid, state: &str) -> anyhow::Result<()> {
        self.wait_for(&format!("{uuid} {state}"), |d| {
            Ok(d.vgpus(true)?
                .get(&uuid)
                .is_some_and(|v| v["state"] == state))
        })
    }

    /// One `stats` entry.
    pub fn stats(&self, uuid: Uuid) -> anyhow::Result<Value> {
        let stats = self.ok("stats", json!({ "uuid": uuid.to_string() }))?;
        stats["vgpus"]
            .as_array()
            .and_then(|v| v.iter().find(|e| e["uuid"] == uuid.to_string().as_str()))
            .cloned()
            .with_context(|| format!("no {uuid} in {stats}"))
    }

    pub fn connect(&self, uuid: Uuid) -> anyhow::Result<RawClient> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match RawClient::connect(&self.socket(uuid)) {
                Ok(client) => return Ok(client),
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("{uuid}; stderr:\n{}", self.stderr()));
                }
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = vgpud_tests::daemon::stop(&mut child);
        }
    }
}

/// Proof that a vGPU keeps answering: the DISPI id register reads as bochs'.
pub fn still_works(client: &mut RawClient) -> anyhow::Result<()> {
    let id = client.read_reg(region::BAR2, DISPI_ID, 2)?;
    ensure!(id & 0xfff0 == 0xb0c0, "DISPI id {id:#x}");
    Ok(())
}

/// A fresh random UUID.
pub fn uuid() -> Uuid {
    Uuid::new_v4()
}

pub fn s(uuid: Uuid) -> String {
    uuid.to_string()
}
