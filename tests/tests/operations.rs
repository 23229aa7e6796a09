//! Run-time operations against the real daemon (docs/control-api.md,
//! docs/operations.md): vGPUs created and removed while others work,
//! forced removal of an attached client, control connections bounded and
//! stalled clients harmless, reload with an attached client, and
//! definitions that survive SIGKILL at any moment.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use rustix::process::{Pid, Signal, kill_process};
use serde_json::{Value, json};
use uuid::Uuid;
use vgpud_tests::control::{CONTROL_TIMEOUT, control_request};
use vgpud_tests::regs::region;
use vgpud_tests::{DaemonConfig, RawClient, TestDaemon, VGPU_A, VGPU_B};

const VGPU_C: Uuid = Uuid::from_u128(0x6f1c2a4e_0d4e_4a43_9f7b_3b1d8e0c1a0c);
/// BAR2 offset of the bochs DISPI id register (docs/device-interface.md).
const DISPI_ID: u64 = 0x500;

fn call(socket: &Path, command: &str, args: Value) -> anyhow::Result<Value> {
    control_request(socket, command, args, CONTROL_TIMEOUT)
}

fn ok(socket: &Path, command: &str, args: Value) -> anyhow::Result<Value> {
    let response = call(socket, command, args)?;
    ensure!(response["ok"] == true, "{command} failed: {response}");
    Ok(response["result"].clone())
}

fn error_kind(socket: &Path, command: &str, args: Value) -> anyhow::Result<String> {
    let response = call(socket, command, args)?;
    ensure!(response["ok"] == false, "{command} should fail: {response}");
    Ok(response["error"]["kind"].as_str().unwrap_or("").to_string())
}

/// `list`'s vGPUs by UUID.
fn vgpus(socket: &Path, defined: bool) -> anyhow::Result<BTreeMap<String, Value>> {
    let list = ok(socket, "list", json!({ "defined": defined }))?;
    Ok(list["vgpus"]
        .as_array()
        .context("vgpus")?
        .iter()
        .map(|v| (v["uuid"].as_str().unwrap_or("").to_string(), v.clone()))
        .collect())
}

/// A client that keeps reading a register of its vGPU: the proof that
/// another vGPU keeps working.
fn still_works(client: &mut RawClient) -> anyhow::Result<()> {
    let id = client.read_reg(region::BAR2, DISPI_ID, 2)?;
    ensure!(id & 0xfff0 == 0xb0c0, "DISPI id {id:#x}");
    Ok(())
}

#[test]
fn create_and_remove_at_run_time_beside_a_working_vgpu() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let control = daemon.control_socket();
    let mut a = daemon.connect(VGPU_A)?;
    for round in 0..3 {
        let created = ok(
            &control,
            "create",
            json!({"profile": "test-16m", "uuid": VGPU_C.to_string()}),
        )?;
        let socket = PathBuf::from(created["socket"].as_str().context("socket")?);
        ensure!(socket == daemon.socket(VGPU_C), "round {round}: {created}");
        let mut c = RawClient::connect(&socket)?;
        still_works(&mut c)?;
        still_works(&mut a)?;
        drop(c);
        // The detach finishes on the session thread; until it has, the
        // vGPU may still count as attached.
        let deadline = Instant::now() + CONTROL_TIMEOUT;
        loop {
            let response = call(&control, "remove", json!({"uuid": VGPU_C.to_string()}))?;
            if response["ok"] == true {
                break;
            }
            ensure!(response["error"]["kind"] == "busy", "{response}");
            ensure!(Instant::now() < deadline, "the client never detached");
            std::thread::sleep(Duration::from_millis(10));
        }
        ensure!(!socket.exists(), "the socket stays after remove");
        still_works(&mut a)?;
    }
    Ok(())
}

#[test]
fn attached_vgpu_is_removed_only_by_force() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let control = daemon.control_socket();
    let mut a = daemon.connect(VGPU_A)?;
    ok(
        &control,
        "create",
        json!({"profile": "test-16m", "uuid": VGPU_C.to_string()}),
    )?;
    let mut c = daemon.connect(VGPU_C)?;
    still_works(&mut c)?;
    let listed = &vgpus(&control, false)?[&VGPU_C.to_string()];
    ensure!(listed["state"] == "attached", "{listed}");
    ensure!(
        listed["client_pid"] == std::process::id(),
        "client_pid {} is not this process",
        listed["client_pid"]
    );

    ensure!(error_kind(&control, "remove", json!({"uuid": VGPU_C.to_string()}))? == "busy");
    ensure!(error_kind(&control, "stop", json!({"uuid": VGPU_C.to_string()}))? == "busy");
    still_works(&mut c)?;

    let removed = ok(
        &control,
        "remove",
        json!({"uuid": VGPU_C.to_string(), "force": true}),
    )?;
    ensure!(removed["disconnected"] == true, "{removed}");
    // This client registered no REQ interrupt, so it could not let go.
    ensure!(removed["released"] == false, "{removed}");
    c.set_timeout(Duration::from_secs(5))?;
    ensure!(
        c.read_reg(region::BAR2, DISPI_ID, 2).is_err(),
        "the forced-off client still gets answers"
    );
    ensure!(!daemon.socket(VGPU_C).exists());
    ensure!(!vgpus(&control, false)?.contains_key(&VGPU_C.to_string()));
    still_works(&mut a)?;
    // The configuration file's vGPUs are not removed from the control
    // socket: the file says they exist.
    ensure!(error_kind(&control, "remove", json!({"uuid": VGPU_B.to_string()}))? == "conflict");
    Ok(())
}

#[test]
fn stalled_and_surplus_control_clients_block_nobody() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let control = daemon.control_socket();
    let mut a = daemon.connect(VGPU_A)?;

    // Half a request line, never finished.
    let mut stalled = UnixStream::connect(&control)?;
    stalled.write_all(br#"{"version":1,"comm"#)?;
    ok(&control, "list", Value::Null)?;

    // Up to the limit of open connections (the stalled one counts), all
    // idle; the next is answered busy and closed.
    let mut idle = Vec::new();
    for _ in 1..64 {
        idle.push(UnixStream::connect(&control)?);
    }
    // Each is accepted by the daemon in turn; the one past the limit is
    // answered at once.
    let surplus = UnixStream::connect(&control)?;
    surplus.set_read_timeout(Some(CONTROL_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(&surplus).read_line(&mut line)?;
    let response: Value = serde_json::from_str(&line)?;
    ensure!(response["error"]["kind"] == "busy", "{response}");
    still_works(&mut a)?;

    // The held connections still answer, and once they go, new ones are
    // served again.
    let held = &mut idle[0];
    held.write_all(b"{\"version\":1,\"command\":\"version\"}\n")?;
    held.set_read_timeout(Some(CONTROL_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(&*held).read_line(&mut line)?;
    ensure!(line.contains("\"ok\":true"), "{line}");
    drop(idle);
    drop(stalled);
    let deadline = Instant::now() + CONTROL_TIMEOUT;
    while call(&control, "list", Value::Null)?["ok"] != true {
        ensure!(Instant::now() < deadline, "connections never freed");
        std::thread::sleep(Duration::from_millis(10));
    }
    still_works(&mut a)?;
    Ok(())
}

#[test]
fn hostile_control_lines_get_typed_errors_and_the_daemon_lives() -> anyhow::Result<()> {
    let daemon = TestDaemon::standard()?;
    let control = daemon.control_socket();
    let mut a = daemon.connect(VGPU_A)?;
    let lines: &[&[u8]] = &[
        b"\n",
        b"\xff\xfe\n",
        b"[]\n",
        b"{\"version\":1}\n",
        b"{\"version\":1,\"command\":\"create\",\"args\":{\"profile\":7}}\n",
        b"{\"version\":1,\"command\":\"create\",\"args\":{\"profile\":\"test-16m\",\"uuid\":\"x\"}}\n",
        b"{\"version\":1,\"command\":\"remove\",\"args\":null}\n",
        b"{\"version\":1,\"command\":\"define\",\"args\":{\"profile\":\"test-16m\",\"socket_mode\":\"9999\"}}\n",
        b"{\"version\":1,\"command\":\"stats\",\"args\":{\"uuid\":[1,2]}}\n",
        b"{\"version\":4294967296,\"command\":\"list\"}\n",
    ];
    for line in lines {
        let mut stream = UnixStream::connect(&control)?;
        stream.set_read_timeout(Some(CONTROL_TIMEOUT))?;
        stream.write_all(line)?;
        let mut reply = String::new();
        BufReader::new(&stream).read_line(&mut reply)?;
        let response: Value = serde_json::from_str(&reply)
            .with_context(|| format!("{:?} got {reply:?}", String::from_utf8_lossy(line)))?;
        ensure!(
            response["ok"] == false && response["error"]["kind"].is_string(),
            "{:?} got {response}",
            String::from_utf8_lossy(line)
        );
    }
    // A line past the limit is refused and the connection closed.
    let mut stream = UnixStream::connect(&control)?;
    stream.set_read_timeout(Some(CONTROL_TIMEOUT))?;
    let long = vec![b'x'; 70 * 1024];
    let _ = stream.write_all(&long);
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply)?;
    ensure!(reply.contains("bad_request"), "{reply}");
    still_works(&mut a)?;
    ok(&control, "list", Value::Null)?;
    Ok(())
}

/// Rewrites the daemon's configuration file and sends SIGHUP.
fn reload(daemon: &TestDaemon, config: &DaemonConfig) -> anyhow::Result<()> {
    let text = config.render(daemon.runtime_dir());
    std::fs::write(daemon.dir().join("vgpud.toml"), text)?;
    let pid = Pid::from_raw(daemon.pid().context("pid")? as i32).context("pid 0")?;
    kill_process(pid, Signal::HUP)?;
    Ok(())
}

/// Waits until the daemon's stderr has `n` lines containing `needle`.
fn wait_log(daemon: &TestDaemon, needle: &str, n: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + CONTROL_TIMEOUT;
    while daemon.stderr().matches(needle).count() < n {
        ensure!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            daemon.stderr()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

#[test]
fn reload_starts_and_stops_vgpus_but_keeps_an_attached_one() -> anyhow::Result<()> {
    let config = DaemonConfig::standard();
    let daemon = TestDaemon::start(&config)?;
    let control = daemon.control_socket();
    let mut b = daemon.connect(VGPU_B)?;

    // A and B leave the file, C joins it; B has a client.
    let mut next = config.clone();
    next.vgpus.retain(|v| v.uuid != VGPU_A && v.uuid != VGPU_B);
    let mut c_spec = config.vgpus[0].clone();
    c_spec.uuid = VGPU_C;
    next.vgpus.push(c_spec);
    reload(&daemon, &next)?;
    wait_log(&daemon, "configuration reloaded", 1)?;
    let listed = vgpus(&control, false)?;
    ensure!(listed.contains_key(&VGPU_C.to_string()), "{listed:?}");
    ensure!(!listed.contains_key(&VGPU_A.to_string()), "{listed:?}");
    ensure!(listed[&VGPU_B.to_string()]["state"] == "attached");
    ensure!(daemon.socket(VGPU_C).exists() && !daemon.socket(VGPU_A).exists());
    still_works(&mut b)?;
    RawClient::connect(&daemon.socket(VGPU_C))?;

    // An invalid file changes nothing and says where it is wrong.
    std::fs::write(daemon.dir().join("vgpud.toml"), "[[gpu]]\nid = 7\n")?;
    let pid = Pid::from_raw(daemon.pid().context("pid")? as i32).context("pid 0")?;
    kill_process(pid, Signal::HUP)?;
    wait_log(&daemon, "configuration not reloaded", 1)?;
    ensure!(
        daemon.stderr().contains("vgpud.toml:2:"),
        "{}",
        daemon.stderr()
    );
    ensure!(vgpus(&control, false)?.len() == listed.len());
    still_works(&mut b)?;

    // Once B's client has gone, the next reload stops it.
    drop(b);
    let deadline = Instant::now() + CONTROL_TIMEOUT;
    while vgpus(&control, false)?[&VGPU_B.to_string()]["state"] == "attached" {
        ensure!(Instant::now() < deadline, "B's client never detached");
        std::thread::sleep(Duration::from_millis(10));
    }
    reload(&daemon, &next)?;
    wait_log(&daemon, "configuration reloaded", 2)?;
    ensure!(!vgpus(&control, false)?.contains_key(&VGPU_B.to_string()));
    Ok(())
}

/// A daemon in a directory that outlives it, for restarts.
struct Restartable {
    dir: PathBuf,
    child: Option<Child>,
}

impl Restartable {
    fn start(&mut self) -> anyhow::Result<()> {
        let notify_path = self.dir.join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path)?;
        let child = self.child.insert(vgpud_tests::daemon::spawn(
            &self.dir.join("vgpud.toml"),
            &self.dir,
            Some(&notify_path),
        )?);
        vgpud_tests::daemon::wait_ready(child, &notify, &self.dir.join("vgpud.stderr"))
    }

    fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }
}

impl Drop for Restartable {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// Sends `line` without waiting for the answer.
fn send_only(control: &Path, line: &str) -> anyhow::Result<UnixStream> {
    let mut stream = UnixStream::connect(control)?;
    stream.write_all(line.as_bytes())?;
    stream.write_all(b"\n")?;
    Ok(stream)
}

#[test]
fn definitions_survive_sigkill_at_any_moment() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let runtime_dir = dir.path().join("run");
    let config = DaemonConfig::standard();
    std::fs::write(dir.path().join("vgpud.toml"), config.render(&runtime_dir))?;
    let control = runtime_dir.join("control.sock");
    let mut daemon = Restartable {
        dir: dir.path().to_path_buf(),
        child: None,
    };
    // What the daemon acknowledged: UUID -> auto.
    let mut model: BTreeMap<String, bool> = BTreeMap::new();
    let uuids: Vec<String> = (0..6u128)
        .map(|n| Uuid::from_u128(0xd0 + n).to_string())
        .collect();
    for round in 0..24usize {
        daemon.start()?;
        let defined = vgpus(&control, true)?;
        let found: BTreeMap<String, bool> = defined
            .iter()
            .filter(|(_, v)| v["origin"] == "defined")
            .map(|(u, v)| (u.clone(), v["auto"] == true))
            .collect();
        // The one request in flight at the kill may or may not have
        // landed; everything acknowledged has.
        let in_flight = uuids[(round + uuids.len() - 1) % uuids.len()].clone();
        let mut expected = model.clone();
        if round > 0 && found.contains_key(&in_flight) != expected.contains_key(&in_flight) {
            match found.get(&in_flight) {
                Some(auto) => expected.insert(in_flight.clone(), *auto),
                None => expected.remove(&in_flight),
            };
        }
        ensure!(
            found == expected,
            "round {round}: after the restart {found:?}, acknowledged {model:?}"
        );
        model = found;
        // Auto definitions start with the daemon, as many as fit beside
        // the file's two vGPUs (32 MiB free: two of them).
        let auto = model.values().filter(|a| **a).count();
        let started = defined
            .values()
            .filter(|v| v["origin"] == "defined" && v["state"] != "defined")
            .count();
        ensure!(
            started == auto.min(2),
            "round {round}: {started} of {auto} auto vGPUs started"
        );
        // A few acknowledged changes, then one in flight when the daemon
        // is killed.
        for step in 0..(round % 4) {
            let uuid = &uuids[(round + step + 1) % uuids.len()];
            change(&control, &mut model, uuid, round + step)?;
        }
        let uuid = &uuids[round % uuids.len()];
        let line = if model.contains_key(uuid) {
            json!({"version": 1, "command": "undefine", "args": {"uuid": uuid}})
        } else {
            json!({"version": 1, "command": "define",
                   "args": {"uuid": uuid, "profile": "test-16m", "auto": round.is_multiple_of(3)}})
        };
        let stream = send_only(&control, &line.to_string())?;
        // Killed before, during or after the write, as the round says.
        if round % 3 == 1 {
            let mut byte = [0u8; 1];
            let _ = (&stream).read(&mut byte);
        } else if round % 3 == 2 {
            std::thread::yield_now();
        }
        daemon.kill()?;
        let names: Vec<String> = std::fs::read_dir(dir.path().join("state/vgpus"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        for name in &names {
            let path = dir.path().join("state/vgpus").join(name);
            if let Some(u) = name.strip_suffix(".toml")
                && Uuid::try_parse(u).is_ok()
            {
                let text = std::fs::read_to_string(&path)?;
                ensure!(
                    text.contains("profile = \"test-16m\""),
                    "round {round}: {name} is half-written: {text:?}"
                );
            }
        }
    }
    Ok(())
}

/// Defines `uuid` if it is not, undefines it if it is; records the
/// acknowledged outcome in `model`.
fn change(
    control: &Path,
    model: &mut BTreeMap<String, bool>,
    uuid: &str,
    n: usize,
) -> anyhow::Result<()> {
    if model.contains_key(uuid) {
        ok(control, "undefine", json!({"uuid": uuid}))?;
        model.remove(uuid);
    } else {
        let auto = n.is_multiple_of(2);
        ok(
            control,
            "define",
            json!({"uuid": uuid, "profile": "test-16m", "auto": auto}),
        )?;
        model.insert(uuid.to_string(), auto);
    }
    Ok(())
}

#[test]
fn reload_of_start_only_keys_changes_nothing() -> anyhow::Result<()> {
    let config = DaemonConfig::standard();
    let daemon = TestDaemon::start(&config)?;
    let control = daemon.control_socket();
    let before = vgpus(&control, false)?;
    let mut next = config.clone();
    next.gpus[0].vram = "128MiB".into();
    next.vgpus.retain(|v| v.uuid != VGPU_A);
    reload(&daemon, &next)?;
    wait_log(&daemon, "configuration not reloaded", 1)?;
    ensure!(
        daemon
            .stderr()
            .contains("[[gpu]] changed, which takes a restart"),
        "{}",
        daemon.stderr()
    );
    ensure!(vgpus(&control, false)?.keys().eq(before.keys()));
    Ok(())
}

#[test]
fn definitions_and_created_vgpus_get_the_socket_ownership_they_ask_for() -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let daemon = TestDaemon::standard()?;
    let control = daemon.control_socket();
    // Numeric ids need no user on the machine; 65534 is `nobody` on Debian.
    ok(
        &control,
        "define",
        json!({"uuid": VGPU_C.to_string(), "profile": "test-16m",
               "socket_owner": "65534", "socket_group": "65534", "socket_mode": "0600"}),
    )?;
    ok(&control, "start", json!({"uuid": VGPU_C.to_string()}))?;
    let meta = std::fs::metadata(daemon.socket(VGPU_C))?;
    ensure!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777) == (65534, 65534, 0o600),
        "uid {} gid {} mode {:o}",
        meta.uid(),
        meta.gid(),
        meta.mode() & 0o7777
    );
    // `modify` takes effect at the next start: back to the file's default
    // owner (the daemon's user) and mode 0660.
    ok(
        &control,
        "modify",
        json!({"uuid": VGPU_C.to_string(), "socket_owner": "", "socket_group": "", "socket_mode": ""}),
    )?;
    ensure!(std::fs::metadata(daemon.socket(VGPU_C))?.uid() == 65534);
    ok(&control, "stop", json!({"uuid": VGPU_C.to_string()}))?;
    ok(&control, "start", json!({"uuid": VGPU_C.to_string()}))?;
    let meta = std::fs::metadata(daemon.socket(VGPU_C))?;
    ensure!(
        meta.uid() == rustix::process::geteuid().as_raw() && meta.mode() & 0o7777 == 0o660,
        "uid {} mode {:o}",
        meta.uid(),
        meta.mode() & 0o7777
    );

    let d = Uuid::from_u128(0xd);
    ok(
        &control,
        "create",
        json!({"uuid": d.to_string(), "profile": "test-16m", "socket_mode": "0640", "socket_group": "65534"}),
    )?;
    let meta = std::fs::metadata(daemon.socket(d))?;
    ensure!((meta.gid(), meta.mode() & 0o7777) == (65534, 0o640));
    ensure!(
        error_kind(
            &control,
            "create",
            json!({"profile": "test-16m", "socket_owner": "no-such-user-here"})
        )? == "bad_arguments"
    );
    Ok(())
}

#[test]
fn a_definition_whose_socket_keys_no_longer_resolve_does_not_start() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let runtime_dir = dir.path().join("run");
    std::fs::write(
        dir.path().join("vgpud.toml"),
        DaemonConfig::standard().render(&runtime_dir),
    )?;
    // Written while the daemon was stopped, naming a user this machine
    // does not have (or one deleted since).
    let vgpus_dir = dir.path().join("state/vgpus");
    std::fs::create_dir_all(&vgpus_dir)?;
    std::fs::write(
        vgpus_dir.join(format!("{VGPU_C}.toml")),
        "profile = \"test-16m\"\nsocket_owner = \"no-such-user-here\"\n",
    )?;
    let mut daemon = Restartable {
        dir: dir.path().to_path_buf(),
        child: None,
    };
    daemon.start()?;
    let control = runtime_dir.join("control.sock");
    let response = call(&control, "start", json!({"uuid": VGPU_C.to_string()}))?;
    ensure!(response["error"]["kind"] == "conflict", "{response}");
    ensure!(
        response["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no-such-user-here")),
        "{response}"
    );
    ok(
        &control,
        "modify",
        json!({"uuid": VGPU_C.to_string(), "socket_owner": ""}),
    )?;
    ok(&control, "start", json!({"uuid": VGPU_C.to_string()}))?;
    Ok(())
}
