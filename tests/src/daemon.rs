//! `TestDaemon`: runs a `vgpud` binary on a configuration in a temporary
//! directory, waits for its systemd readiness notification, and stops it
//! (SIGTERM, then SIGKILL if it lingers) when dropped, so that no test
//! leaves a process behind.

use std::fs::{self, File};
use std::io;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use rustix::process::{Pid, Signal, kill_process};
use tempfile::TempDir;
use uuid::Uuid;

use crate::client::RawClient;
use crate::config::DaemonConfig;

/// How long a daemon may take to send `READY=1`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a daemon may take to exit after SIGTERM before it is killed.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// A running daemon and the temporary directory it lives in.
#[derive(Debug)]
pub struct TestDaemon {
    child: Option<Child>,
    config: DaemonConfig,
    runtime_dir: PathBuf,
    stderr_path: PathBuf,
    // Dropped last: the daemon is stopped before its directory goes.
    dir: TempDir,
}

impl TestDaemon {
    /// Starts a daemon on `config` in a new temporary directory.
    pub fn start(config: &DaemonConfig) -> anyhow::Result<Self> {
        Self::start_in(tempfile::tempdir()?, config)
    }

    /// Starts a daemon with the standard configuration.
    pub fn standard() -> anyhow::Result<Self> {
        Self::start(&DaemonConfig::standard())
    }

    /// Starts a daemon in `dir` (runtime directory `dir/run`), which may
    /// hold files prepared by the test.
    pub fn start_in(dir: TempDir, config: &DaemonConfig) -> anyhow::Result<Self> {
        let runtime_dir = dir.path().join("run");
        let config_path = dir.path().join("vgpud.toml");
        fs::write(&config_path, config.render(&runtime_dir))?;
        let notify_path = dir.path().join("notify.sock");
        let notify = UnixDatagram::bind(&notify_path)?;
        let stderr_path = dir.path().join("vgpud.stderr");
        let child = spawn(&config_path, dir.path(), Some(&notify_path))?;
        let mut daemon = TestDaemon {
            child: Some(child),
            config: config.clone(),
            runtime_dir,
            stderr_path,
            dir,
        };
        daemon.wait_ready(&notify)?;
        Ok(daemon)
    }

    fn wait_ready(&mut self, notify: &UnixDatagram) -> anyhow::Result<()> {
        let stderr_path = self.stderr_path.clone();
        wait_ready(self.child_mut()?, notify, &stderr_path)
    }

    fn child_mut(&mut self) -> anyhow::Result<&mut Child> {
        self.child
            .as_mut()
            .ok_or_else(|| anyhow!("daemon already stopped"))
    }

    /// The configuration it runs.
    pub fn config(&self) -> &DaemonConfig {
        &self.config
    }

    /// The temporary directory (config, logs, `run/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The runtime directory holding the sockets.
    pub fn runtime_dir(&self) -> &Path {
        &self.runtime_dir
    }

    /// The socket of the vGPU `uuid`.
    pub fn socket(&self, uuid: Uuid) -> PathBuf {
        self.runtime_dir.join(format!("{uuid}.sock"))
    }

    /// The control socket.
    pub fn control_socket(&self) -> PathBuf {
        self.runtime_dir.join("control.sock")
    }

    /// Connects a raw client to `uuid` and completes the handshake.
    pub fn connect(&self, uuid: Uuid) -> anyhow::Result<RawClient> {
        RawClient::connect(&self.socket(uuid))
            .with_context(|| format!("connecting to {uuid}; stderr:\n{}", self.stderr()))
    }

    /// The daemon's process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// What the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// Whether the daemon is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(Child::try_wait), Some(Ok(None)))
    }

    /// Sends SIGTERM and waits for the exit (killing after [`STOP_TIMEOUT`]).
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self
            .child
            .take()
            .ok_or_else(|| anyhow!("daemon already stopped"))?;
        stop(&mut child)
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Nothing to report from a destructor: stop() already killed the
            // process if SIGTERM did not end it.
            let _ = stop(&mut child);
        }
    }
}

/// Waits up to [`READY_TIMEOUT`] for `READY=1` on `notify` from `child`,
/// whose stderr goes to `stderr_path` (quoted when it fails to start).
pub fn wait_ready(
    child: &mut Child,
    notify: &UnixDatagram,
    stderr_path: &Path,
) -> anyhow::Result<()> {
    let stderr = || fs::read_to_string(stderr_path).unwrap_or_default();
    notify.set_read_timeout(Some(Duration::from_millis(100)))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut buf = [0u8; 4096];
    loop {
        match notify.recv(&mut buf) {
            Ok(n) => {
                let text = String::from_utf8_lossy(&buf[..n]);
                if text.lines().any(|line| line.trim() == "READY=1") {
                    return Ok(());
                }
            }
            Err(error)
                if matches!(
                    error.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(error) => return Err(error.into()),
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "vgpud exited with {status} before READY=1; stderr:\n{}",
                stderr()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "vgpud sent no READY=1 within {READY_TIMEOUT:?}; stderr:\n{}",
                stderr()
            );
        }
    }
}

/// SIGTERM, bounded wait ([`STOP_TIMEOUT`]), then SIGKILL: how every
/// harness takes a daemon down. Errors if the process had to be killed or
/// could not be reaped.
pub fn stop(child: &mut Child) -> anyhow::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let pid = Pid::from_raw(child.id() as i32).ok_or_else(|| anyhow!("pid 0"))?;
    // The process may have exited between try_wait and here; waiting below
    // reaps it either way.
    let _ = kill_process(pid, Signal::TERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill()?;
    let status = child.wait()?;
    bail!("vgpud ignored SIGTERM for {STOP_TIMEOUT:?} and was killed ({status})")
}

/// Starts `vgpud --config CONFIG` with stdout and stderr going to files in
/// `log_dir`, and `NOTIFY_SOCKET` set if given.
pub fn spawn(config: &Path, log_dir: &Path, notify: Option<&Path>) -> anyhow::Result<Child> {
    let mut command = Command::new(vgpud_binary()?);
    command
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(File::create(log_dir.join("vgpud.stdout"))?)
        .stderr(File::create(log_dir.join("vgpud.stderr"))?)
        .env_remove("NOTIFY_SOCKET");
    if let Ok(level) = std::env::var("VGPUD_TEST_LOG") {
        command.arg("--log-level").arg(level);
    }
    if let Some(notify) = notify {
        command.env("NOTIFY_SOCKET", notify);
    }
    command.spawn().context("spawning vgpud")
}

/// How a daemon that was expected to exit ended.
#[derive(Debug)]
pub struct Exited {
    /// Its exit status.
    pub status: ExitStatus,
    /// Everything it wrote to stderr.
    pub stderr: String,
}

/// Runs `vgpud --config FILE` on `toml` (written to `dir/vgpud.toml`) and
/// waits up to `timeout` for it to exit; a daemon still running then is
/// stopped and reported as an error.
pub fn run_to_exit(dir: &Path, toml: &str, timeout: Duration) -> anyhow::Result<Exited> {
    let config_path = dir.join("vgpud.toml");
    fs::write(&config_path, toml)?;
    let mut child = spawn(&config_path, dir, None)?;
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            let stderr = fs::read_to_string(dir.join("vgpud.stderr")).unwrap_or_default();
            return Ok(Exited { status, stderr });
        }
        if Instant::now() > deadline {
            let status = stop(&mut child);
            let stderr = fs::read_to_string(dir.join("vgpud.stderr")).unwrap_or_default();
            bail!("vgpud still ran after {timeout:?} ({status:?}); stderr:\n{stderr}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The `vgpud` binary to test: `$VGPUD_BIN`, else the one in this test
/// executable's profile directory, built with cargo if it is missing.
pub fn vgpud_binary() -> anyhow::Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| find_or_build().map_err(|error| format!("{error:#}")))
        .clone()
        .map_err(|error| anyhow!(error))
}

fn find_or_build() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("VGPUD_BIN") {
        return Ok(PathBuf::from(path));
    }
    let binary = profile_dir()?.join("vgpud");
    if binary.exists() {
        return Ok(binary);
    }
    build_vgpud()
}

/// The `<target>/<profile>` directory this executable was built into
/// (test and bench executables live in its `deps/`).
fn profile_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let mut dir = exe
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", exe.display()))?;
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir = dir.parent().ok_or_else(|| anyhow!("deps has no parent"))?;
    }
    Ok(dir.to_path_buf())
}

/// Builds `vgpud` with cargo (`$CARGO`) into this executable's target and
/// profile (`--release` when that is `release`, as for benches), even if a
/// binary is there already, and returns its path.
pub fn build_vgpud() -> anyhow::Result<PathBuf> {
    let profile_dir = profile_dir()?;
    let binary = profile_dir.join("vgpud");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.args(["build", "-p", "vgpud", "--bin", "vgpud"]);
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        command.arg("--release");
    }
    if let Some(target_dir) = profile_dir.parent() {
        command.arg("--target-dir").arg(target_dir);
    }
    let status = command.status().context("running cargo build for vgpud")?;
    if !status.success() || !binary.exists() {
        bail!("cargo build -p vgpud failed ({status}); set VGPUD_BIN to a built vgpud");
    }
    Ok(binary)
}
