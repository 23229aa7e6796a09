//! Socket ownership with real users: a vGPU whose socket is given to user
//! A with mode 0600 can be attached by A and not by B, and `control_group`
//! lets its members (A) use `vgpuctl` while others (B) are refused.
//!
//! Needs root (to create users and to act as them); run as anyone else,
//! each test says it is skipped and why, and passes. The users and groups
//! it creates have names unique to the run (`vgt<pid><letter>`) and are
//! deleted when the test ends, failed or not.
//!
//! Acting as a user: the test re-executes a copy of its own binary (or of
//! `vgpuctl`) under `setpriv`, with that user's uid, gid and supplementary
//! groups, from a directory every user can read.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use anyhow::{Context, bail, ensure};
use tempfile::TempDir;
use vgpud_tests::daemon::vgpud_binary;
use vgpud_tests::{DaemonConfig, RawClient, TestDaemon, VGPU_A, VGPU_B};

/// Set in the environment of the re-executed test binary: the socket the
/// helper connects to as another user.
const HELPER_SOCKET: &str = "VGPUD_TEST_CONNECT_AS";
/// Exit status of the helper when `connect` was refused with EACCES.
const EXIT_ACCESS_DENIED: i32 = 13;
/// Exit status of the helper when it connected and the daemon answered
/// `VERSION`.
const EXIT_ATTACHED: i32 = 0;

/// useradd and userdel lock /etc/passwd and fail rather than wait: the
/// tests of this binary take turns.
static ACCOUNTS_LOCK: Mutex<()> = Mutex::new(());

/// Not a test of its own: the body of the helper process, which runs as
/// another user. Run by the harness (without the variable) it does nothing.
#[test]
fn helper_attach_as_another_user() {
    let Some(socket) = std::env::var_os(HELPER_SOCKET) else {
        return;
    };
    let stream = match UnixStream::connect(&socket) {
        Ok(stream) => stream,
        Err(e) => {
            println!("connect: {e}");
            let denied = e.raw_os_error() == Some(libc::EACCES);
            std::process::exit(if denied { EXIT_ACCESS_DENIED } else { 1 });
        }
    };
    let version = RawClient::from_stream(stream).and_then(|mut client| {
        let v = client.handshake()?;
        Ok((v.major, v.minor))
    });
    match version {
        Ok((major, minor)) => {
            println!("attached: VERSION {major}.{minor}");
            std::process::exit(EXIT_ATTACHED);
        }
        Err(e) => {
            println!("handshake: {e}");
            std::process::exit(2);
        }
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    eprintln!("{test}: skipped: creating users and acting as them needs root");
    true
}

/// Users and groups made for one test, deleted when it is dropped.
#[derive(Debug, Default)]
struct Accounts {
    users: Vec<String>,
    groups: Vec<String>,
}

/// A user made by [`Accounts::user`].
#[derive(Debug, Clone)]
struct TestUser {
    name: String,
    uid: u32,
}

impl Accounts {
    /// A unique name for this run: `vgt<pid><tag>`.
    fn name(tag: &str) -> String {
        format!("vgt{}{tag}", std::process::id())
    }

    /// A new system group; returns its gid.
    fn group(&mut self, tag: &str) -> anyhow::Result<(String, u32)> {
        let name = Self::name(tag);
        admin("groupadd", &["--system", &name])?;
        self.groups.push(name.clone());
        let gid = id_of("group", &name)?;
        Ok((name, gid))
    }

    /// A new system user without a home or a shell, with a group of its
    /// own and the supplementary groups `groups`.
    fn user(&mut self, tag: &str, groups: &[&str]) -> anyhow::Result<TestUser> {
        let name = Self::name(tag);
        let mut args = vec![
            "--system",
            "--no-create-home",
            "--shell",
            "/usr/sbin/nologin",
            "--user-group",
        ];
        let joined = groups.join(",");
        if !groups.is_empty() {
            args.extend(["--groups", &joined]);
        }
        args.push(&name);
        admin("useradd", &args)?;
        self.users.push(name.clone());
        // Its own group is removed with it; listed too in case it is not.
        self.groups.push(name.clone());
        let uid = id_of("passwd", &name)?;
        Ok(TestUser { name, uid })
    }
}

impl Drop for Accounts {
    fn drop(&mut self) {
        // Failures are reported, not raised: a destructor that panics while
        // a failed test unwinds would abort and hide the failure.
        for user in self.users.drain(..) {
            if let Err(e) = admin("userdel", &[&user]) {
                eprintln!("cleanup: {e:#}");
            }
        }
        for group in self.groups.drain(..) {
            let _ = admin_quiet("groupdel", &[&group]);
        }
    }
}

fn admin(program: &str, args: &[&str]) -> anyhow::Result<()> {
    let output = admin_quiet(program, args)?;
    ensure!(
        output.status.success(),
        "{program} {args:?}: {}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(())
}

fn admin_quiet(program: &str, args: &[&str]) -> anyhow::Result<Output> {
    let _turn = ACCOUNTS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))
}

/// The id of `name` in the `passwd` or `group` database.
fn id_of(database: &str, name: &str) -> anyhow::Result<u32> {
    let output = Command::new("getent").args([database, name]).output()?;
    let line = String::from_utf8_lossy(&output.stdout);
    line.split(':')
        .nth(2)
        .and_then(|id| id.trim().parse().ok())
        .with_context(|| format!("getent {database} {name}: {line:?}"))
}

/// Runs `program args` as `user` (its uid, its group, its supplementary
/// groups) in `cwd`, with `env` added.
fn run_as(
    user: &TestUser,
    cwd: &Path,
    env: &[(&str, &Path)],
    program: &Path,
    args: &[&str],
) -> anyhow::Result<Output> {
    let mut command = Command::new("setpriv");
    command
        .arg(format!("--reuid={}", user.name))
        .arg(format!("--regid={}", user.name))
        .arg("--init-groups")
        .arg("--")
        .arg(program)
        .args(args)
        .current_dir(cwd)
        .stdin(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().context("running setpriv")
}

/// Attaches to `socket` as `user`: the helper's exit status.
fn attach_as(bin: &Path, user: &TestUser, socket: &Path) -> anyhow::Result<(i32, String)> {
    let output = run_as(
        user,
        bin,
        &[(HELPER_SOCKET, socket)],
        &bin.join("socket_access"),
        &[
            "--exact",
            "helper_attach_as_another_user",
            "--nocapture",
            "--test-threads=1",
        ],
    )?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let code = output
        .status
        .code()
        .with_context(|| format!("helper killed: {text}"))?;
    Ok((code, text))
}

/// A temporary directory every user can enter (tempfile makes them
/// 0700), holding world-readable copies of this test binary and of
/// `vgpuctl` in `bin/`: the originals may sit under a directory other
/// users cannot enter.
fn shared_dir() -> anyhow::Result<(TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755))?;
    let bin = dir.path().join("bin");
    fs::create_dir(&bin)?;
    fs::set_permissions(&bin, fs::Permissions::from_mode(0o755))?;
    let vgpuctl = vgpud_binary()?.with_file_name("vgpuctl");
    if !vgpuctl.exists() {
        bail!(
            "no {}: build it with `cargo build -p vgpud --bins`",
            vgpuctl.display()
        );
    }
    for (from, to) in [
        (std::env::current_exe()?, "socket_access"),
        (vgpuctl, "vgpuctl"),
    ] {
        let copy = bin.join(to);
        fs::copy(&from, &copy).with_context(|| format!("copying {}", from.display()))?;
        fs::set_permissions(&copy, fs::Permissions::from_mode(0o755))?;
    }
    Ok((dir, bin))
}

/// The standard configuration with its two vGPUs rewritten with the
/// access keys `a` and `b` (lines for their `[[vgpu]]` tables), and the
/// top-level `top` lines.
fn config_with_access(top: &[String], a: &[String], b: &[String]) -> DaemonConfig {
    let mut config = DaemonConfig::standard();
    config.vgpus.clear();
    config.top_level.extend(top.iter().cloned());
    // The harness renders top-level lines before the tables and has no
    // per-vGPU keys: the vGPU tables go last among those lines (TOML
    // allows arrays of tables in any order).
    for (uuid, lines) in [(VGPU_A, a), (VGPU_B, b)] {
        let mut table =
            format!("\n[[vgpu]]\nuuid = \"{uuid}\"\ngpu = \"gpu0\"\nprofile = \"test-16m\"");
        for line in lines {
            table.push('\n');
            table.push_str(line);
        }
        config.top_level.push(table);
    }
    config
}

#[test]
fn socket_owner_and_control_group_decide_who_connects() -> anyhow::Result<()> {
    if skip_unless_root("socket_owner_and_control_group_decide_who_connects") {
        return Ok(());
    }
    let mut accounts = Accounts::default();
    let (admins, _) = accounts.group("c")?;
    let user_a = accounts.user("a", &[&admins])?;
    let user_b = accounts.user("b", &[])?;
    let (dir, bin) = shared_dir()?;
    let config = config_with_access(
        &[format!("control_group = \"{admins}\"")],
        &[
            format!("socket_owner = \"{}\"", user_a.name),
            "socket_mode = \"0600\"".into(),
        ],
        &[format!("socket_owner = \"{}\"", user_b.name)],
    );
    let daemon = TestDaemon::start_in(dir, &config)?;

    let runtime_mode = fs::metadata(daemon.runtime_dir())?.mode() & 0o7777;
    ensure!(
        runtime_mode == 0o755,
        "runtime directory mode {runtime_mode:o}, not 755"
    );

    let (code, text) = attach_as(&bin, &user_a, &daemon.socket(VGPU_A))?;
    ensure!(
        code == EXIT_ATTACHED,
        "A could not attach to its own vGPU ({code}): {text}\ndaemon:\n{}",
        daemon.stderr()
    );
    let (code, text) = attach_as(&bin, &user_a, &daemon.socket(VGPU_B))?;
    ensure!(
        code == EXIT_ACCESS_DENIED,
        "A's connect to B's vGPU was not refused with EACCES ({code}): {text}"
    );
    let (code, text) = attach_as(&bin, &user_b, &daemon.socket(VGPU_B))?;
    ensure!(
        code == EXIT_ATTACHED,
        "B could not attach to its own vGPU ({code}): {text}"
    );

    let runtime = daemon.runtime_dir().to_str().context("runtime path")?;
    let vgpuctl = bin.join("vgpuctl");
    let list = ["--runtime-dir", runtime, "list"];
    let output = run_as(&user_a, &bin, &[], &vgpuctl, &list)?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    ensure!(
        output.status.success() && stdout.contains(&VGPU_A.to_string()),
        "vgpuctl list as A (in control_group) failed: {output:?}"
    );
    let output = run_as(&user_b, &bin, &[], &vgpuctl, &list)?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(
        !output.status.success() && stderr.contains("Permission denied"),
        "vgpuctl list as B (not in control_group) was not refused: {output:?}"
    );
    drop(daemon);
    drop(accounts);
    Ok(())
}

#[test]
fn sockets_have_the_configured_owner_group_and_mode() -> anyhow::Result<()> {
    if skip_unless_root("sockets_have_the_configured_owner_group_and_mode") {
        return Ok(());
    }
    let mut accounts = Accounts::default();
    let (group, gid) = accounts.group("g")?;
    let (admins, admins_gid) = accounts.group("k")?;
    let owner = accounts.user("o", &[])?;
    let (dir, _bin) = shared_dir()?;
    // A takes the top-level defaults, B overrides each of them (numeric
    // ids included).
    let config = config_with_access(
        &[
            format!("socket_owner = \"{}\"", owner.name),
            format!("socket_group = \"{group}\""),
            "socket_mode = \"0640\"".into(),
            format!("control_group = \"{admins}\""),
        ],
        &[],
        &[
            "socket_owner = \"0\"".into(),
            format!("socket_group = \"{admins_gid}\""),
            "socket_mode = \"0600\"".into(),
        ],
    );
    let daemon = TestDaemon::start_in(dir, &config)?;
    let stat = |path: &Path| -> anyhow::Result<(u32, u32, u32)> {
        let meta = fs::symlink_metadata(path).with_context(|| path.display().to_string())?;
        Ok((meta.uid(), meta.gid(), meta.mode() & 0o7777))
    };
    assert_eq!(stat(&daemon.socket(VGPU_A))?, (owner.uid, gid, 0o640));
    assert_eq!(stat(&daemon.socket(VGPU_B))?, (0, admins_gid, 0o600));
    assert_eq!(stat(&daemon.control_socket())?, (0, admins_gid, 0o660));
    drop(daemon);
    drop(accounts);
    Ok(())
}
