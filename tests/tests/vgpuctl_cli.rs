//! `vgpuctl` against a fake control server: the request each verb sends
//! (its `args` exactly as the protocol types serialize them), its table
//! and JSON output, the exit code of each outcome, `top`'s rates, and
//! `--help`. The fake answers canned responses, so none of this depends on
//! what the daemon implements.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use rustix::process::{Pid, Signal, kill_process};
use serde::Serialize;
use serde_json::{Value, json};
use tempfile::TempDir;
use vgpud::control::protocol::{
    CreateArgs, DefineArgs, DefinitionEntry, GpuEntry, ListArgs, ListResult, MetricsResult,
    ModifyArgs, ScreenshotArgs, ScreenshotResult, SocketAccessArgs, StartedResult, StatsArgs,
    StatsResult, StopArgs, StoppedResult, TypeAvailability, TypeEntry, TypesArgs, TypesResult,
    UuidArgs, VgpuEntry, VgpuOrigin, VgpuState, VgpuStatsEntry,
};

const U1: &str = "6f1a0a4e-0d0e-4f6e-9b3a-5f1c2d3e4f50";
const U2: &str = "0c9e2f7a-1b2c-4d3e-8f9a-0b1c2d3e4f51";
/// A safety net for a vgpuctl that hangs; never reached when it works.
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// What the fake answers a request with.
#[derive(Debug, Clone)]
enum Answer {
    Result(Value),
    Error(&'static str, &'static str),
    /// A line that is not a response.
    Raw(&'static str),
    /// Close the connection without answering.
    Close,
}

/// A control socket in a temporary runtime directory that records each
/// request and answers the next canned [`Answer`].
struct FakeDaemon {
    dir: TempDir,
    requests: Arc<Mutex<Vec<Value>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeDaemon {
    fn new(answers: Vec<Answer>) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let listener = UnixListener::bind(dir.path().join("control.sock"))?;
        // Polled, so that dropping the fake ends its thread even when
        // vgpuctl never connected.
        listener.set_nonblocking(true)?;
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let requests = Arc::clone(&requests);
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || serve(&listener, answers, &requests, &stop))
        };
        Ok(Self {
            dir,
            requests,
            stop,
            thread: Some(thread),
        })
    }

    fn runtime_dir(&self) -> &Path {
        self.dir.path()
    }

    fn requests(&self) -> Vec<Value> {
        self.requests.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Runs vgpuctl on this fake's runtime directory.
    fn vgpuctl(&self, args: &[&str]) -> anyhow::Result<Output> {
        let mut all = vec!["--runtime-dir", path_str(self.runtime_dir())?];
        all.extend_from_slice(args);
        vgpuctl(&all)
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(
    listener: &UnixListener,
    answers: Vec<Answer>,
    requests: &Mutex<Vec<Value>>,
    stop: &AtomicBool,
) {
    let mut answers = answers.into_iter();
    while !stop.load(Ordering::Relaxed) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => return,
        };
        if stream.set_nonblocking(false).is_err()
            || stream.set_read_timeout(Some(RUN_TIMEOUT)).is_err()
        {
            continue;
        }
        let mut reader = BufReader::new(&stream);
        let mut line = String::new();
        while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
            let request = serde_json::from_str(&line).unwrap_or(Value::String(line.clone()));
            line.clear();
            if let Ok(mut r) = requests.lock() {
                r.push(request);
            }
            let reply = match answers.next() {
                Some(Answer::Result(result)) => {
                    json!({"version": 1, "ok": true, "result": result}).to_string()
                }
                Some(Answer::Error(kind, message)) => json!({
                    "version": 1, "ok": false,
                    "error": {"kind": kind, "message": message}
                })
                .to_string(),
                Some(Answer::Raw(text)) => text.to_string(),
                Some(Answer::Close) | None => break,
            };
            if (&stream)
                .write_all(format!("{reply}\n").as_bytes())
                .is_err()
            {
                break;
            }
        }
    }
}

fn path_str(path: &Path) -> anyhow::Result<&str> {
    path.to_str().context("a temporary path that is not UTF-8")
}

/// Runs vgpuctl with `args` and no VGPUD_RUNTIME_DIR, killing it if it
/// outlives [`RUN_TIMEOUT`].
fn vgpuctl(args: &[&str]) -> anyhow::Result<Output> {
    vgpuctl_with_runtime_dir_env(args, None)
}

/// Runs vgpuctl with `args` and VGPUD_RUNTIME_DIR set to `env` (unset if
/// none), killing it if it outlives [`RUN_TIMEOUT`].
fn vgpuctl_with_runtime_dir_env(args: &[&str], env: Option<&Path>) -> anyhow::Result<Output> {
    let mut command = Command::new(vgpuctl_binary()?);
    match env {
        Some(dir) => command.env("VGPUD_RUNTIME_DIR", dir),
        None => command.env_remove("VGPUD_RUNTIME_DIR"),
    };
    let child = command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pid = Pid::from_raw(child.id() as i32).ok_or_else(|| anyhow!("pid 0"))?;
    let (done, output) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(child.wait_with_output());
    });
    match output.recv_timeout(RUN_TIMEOUT) {
        Ok(output) => Ok(output?),
        Err(_) => {
            let _ = kill_process(pid, Signal::KILL);
            bail!("vgpuctl {args:?} did not exit within {RUN_TIMEOUT:?}")
        }
    }
}

/// `$VGPUCTL_BIN`, else the vgpuctl beside this test executable, built
/// with cargo if missing.
fn vgpuctl_binary() -> anyhow::Result<PathBuf> {
    static BINARY: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BINARY
        .get_or_init(|| find_or_build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn find_or_build() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("VGPUCTL_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().context("the test has no directory")?;
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir = dir.parent().context("deps has no parent")?;
    }
    let binary = dir.join("vgpuctl");
    if binary.exists() {
        return Ok(binary);
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "-p", "vgpud", "--bin", "vgpuctl"]);
    if let Some(target) = dir.parent() {
        build.arg("--target-dir").arg(target);
    }
    let status = build.status()?;
    ensure!(
        status.success() && binary.exists(),
        "cargo build of vgpuctl failed ({status}); set VGPUCTL_BIN"
    );
    Ok(binary)
}

fn to_json(value: impl Serialize) -> Value {
    serde_json::to_value(value).expect("protocol types serialize")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

// Canned results, built from the protocol types so that they are what a
// daemon of this contract sends.

fn started(uuid: &str) -> Value {
    to_json(StartedResult {
        uuid: uuid.into(),
        gpu: "gpu0".into(),
        profile: "small".into(),
        socket: format!("/run/vgpud/{uuid}.sock"),
    })
}

fn stopped(uuid: &str) -> Value {
    to_json(StoppedResult {
        uuid: uuid.into(),
        disconnected: true,
        released: false,
    })
}

fn definition(uuid: &str) -> Value {
    to_json(DefinitionEntry {
        uuid: uuid.into(),
        profile: "small".into(),
        gpu: None,
        auto: true,
        access: SocketAccessArgs {
            socket_group: Some("kvm".into()),
            ..SocketAccessArgs::default()
        },
        file: format!("/var/lib/vgpud/vgpus/{uuid}.toml"),
    })
}

fn types() -> Value {
    to_json(TypesResult {
        types: vec![TypeEntry {
            profile: "small".into(),
            framebuffer: 256 << 20,
            channels: 4,
            max_resolution: "1920x1080".into(),
            max_instances: 8,
            weight: 1,
            available: vec![TypeAvailability {
                gpu: "gpu0".into(),
                instances: 3,
            }],
        }],
    })
}

fn vgpu_entry(uuid: &str, state: VgpuState, origin: VgpuOrigin) -> VgpuEntry {
    VgpuEntry {
        uuid: uuid.into(),
        gpu: "gpu0".into(),
        profile: "small".into(),
        socket: format!("/run/vgpud/{uuid}.sock"),
        state,
        origin,
        auto: origin == VgpuOrigin::Defined,
        client_pid: (state == VgpuState::Attached).then_some(4242),
        framebuffer: 256 << 20,
        channels: 4,
        max_resolution: "1920x1080".into(),
        attached: state == VgpuState::Attached,
        refused_messages: 0,
        mmu_faults: 0,
        refused_ptes: 0,
        interrupts: 0,
        interrupts_coalesced: 0,
        max_dma_maps: 0,
        max_dma_bytes: 0,
        submissions: 0,
        commands: 0,
        refused_submissions: 0,
        engine_run_ns: 0,
        engine_wait_ns: 0,
        engine_idle_ns: 0,
    }
}

fn list() -> Value {
    to_json(ListResult {
        gpus: vec![GpuEntry {
            id: "gpu0".into(),
            backend: "sim".into(),
            vram: 4 << 30,
            vram_free: 3 << 29,
        }],
        vgpus: vec![
            vgpu_entry(U1, VgpuState::Attached, VgpuOrigin::Config),
            vgpu_entry(U2, VgpuState::Defined, VgpuOrigin::Defined),
        ],
    })
}

fn stats_entry(uuid: &str, step: u64) -> VgpuStatsEntry {
    VgpuStatsEntry {
        uuid: uuid.into(),
        gpu: "gpu0".into(),
        profile: "small".into(),
        state: VgpuState::Attached,
        client_pid: Some(4242),
        register_reads: 1000 + 600 * step,
        register_writes: 200 + 200 * step,
        interrupts: 10 + 100 * step,
        submissions: 5 + 20 * step,
        commands: 50 + 2000 * step,
        engine_run_ns: 1_000_000_000 + 500_000_000 * step,
        engine_wait_ns: 100_000_000 * step,
        engine_idle_ns: 3_000_000_000,
        dma_maps: 2,
        dma_bytes: 2 << 30,
        vram_touched: 64 << 20,
        vram_size: 256 << 20,
        ..VgpuStatsEntry::default()
    }
}

/// Two seconds of the daemon's clock apart.
fn stats(step: u64) -> Value {
    to_json(StatsResult {
        time_ns: 10_000_000_000 + 2_000_000_000 * step,
        vgpus: vec![stats_entry(U1, step)],
    })
}

fn metrics() -> Value {
    to_json(MetricsResult {
        content_type: "text/plain; version=0.0.4; charset=utf-8".into(),
        text: "# TYPE vgpud_vgpus gauge\nvgpud_vgpus 2\n".into(),
    })
}

/// The base64 of the eight bytes that start every PNG file.
const PNG_SIGNATURE_BASE64: &str = "iVBORw0KGgo=";
const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

fn screenshot() -> Value {
    to_json(ScreenshotResult {
        width: 640,
        height: 480,
        bpp: 32,
        pitch: 2560,
        offset: 0,
        png_base64: PNG_SIGNATURE_BASE64.into(),
    })
}

/// A verb's command line, the request it must send and the result the
/// fake answers with.
struct Case {
    argv: Vec<&'static str>,
    command: &'static str,
    args: Value,
    result: Value,
}

fn case(argv: &[&'static str], command: &'static str, args: Value, result: Value) -> Case {
    Case {
        argv: argv.to_vec(),
        command,
        args,
        result,
    }
}

fn cases() -> Vec<Case> {
    let socket = |owner: Option<&str>, group: Option<&str>, mode: Option<&str>| SocketAccessArgs {
        socket_owner: owner.map(Into::into),
        socket_group: group.map(Into::into),
        socket_mode: mode.map(Into::into),
    };
    vec![
        case(&["types"], "types", to_json(TypesArgs::default()), types()),
        case(
            &["types", "--gpu", "gpu0"],
            "types",
            to_json(TypesArgs {
                gpu: Some("gpu0".into()),
            }),
            types(),
        ),
        case(&["list"], "list", to_json(ListArgs::default()), list()),
        case(
            &["list", "--defined"],
            "list",
            to_json(ListArgs { defined: true }),
            list(),
        ),
        case(
            &["create", "--type", "small"],
            "create",
            to_json(CreateArgs {
                profile: "small".into(),
                ..CreateArgs::default()
            }),
            started(U1),
        ),
        case(
            &[
                "create",
                "--type",
                "small",
                "--uuid",
                U1,
                "--gpu",
                "gpu0",
                "--socket-owner",
                "qemu",
                "--socket-group",
                "kvm",
                "--socket-mode",
                "0660",
            ],
            "create",
            to_json(CreateArgs {
                profile: "small".into(),
                uuid: Some(U1.into()),
                gpu: Some("gpu0".into()),
                access: socket(Some("qemu"), Some("kvm"), Some("0660")),
            }),
            started(U1),
        ),
        case(
            &["remove", U1],
            "remove",
            to_json(StopArgs {
                uuid: U1.into(),
                force: false,
            }),
            stopped(U1),
        ),
        case(
            &["remove", "--force", U1],
            "remove",
            to_json(StopArgs {
                uuid: U1.into(),
                force: true,
            }),
            stopped(U1),
        ),
        case(
            &["define", "--type", "small"],
            "define",
            to_json(DefineArgs {
                profile: "small".into(),
                ..DefineArgs::default()
            }),
            definition(U2),
        ),
        case(
            &[
                "define",
                "--type",
                "small",
                "--uuid",
                U2,
                "--gpu",
                "gpu1",
                "--auto",
                "--socket-group",
                "kvm",
            ],
            "define",
            to_json(DefineArgs {
                profile: "small".into(),
                uuid: Some(U2.into()),
                gpu: Some("gpu1".into()),
                auto: true,
                access: socket(None, Some("kvm"), None),
            }),
            definition(U2),
        ),
        case(
            &["undefine", U2],
            "undefine",
            to_json(UuidArgs { uuid: U2.into() }),
            definition(U2),
        ),
        case(
            &["start", U2],
            "start",
            to_json(UuidArgs { uuid: U2.into() }),
            started(U2),
        ),
        case(
            &["stop", U2],
            "stop",
            to_json(StopArgs {
                uuid: U2.into(),
                force: false,
            }),
            stopped(U2),
        ),
        case(
            &["stop", "-f", U2],
            "stop",
            to_json(StopArgs {
                uuid: U2.into(),
                force: true,
            }),
            stopped(U2),
        ),
        case(
            &["modify", U2, "--type", "large", "--manual"],
            "modify",
            to_json(ModifyArgs {
                uuid: U2.into(),
                profile: Some("large".into()),
                auto: Some(false),
                ..ModifyArgs::default()
            }),
            definition(U2),
        ),
        case(
            &[
                "modify",
                U2,
                "--auto",
                "--gpu",
                "",
                "--socket-owner",
                "qemu",
                "--socket-mode",
                "",
            ],
            "modify",
            to_json(ModifyArgs {
                uuid: U2.into(),
                gpu: Some(String::new()),
                auto: Some(true),
                access: socket(Some("qemu"), None, Some("")),
                ..ModifyArgs::default()
            }),
            definition(U2),
        ),
        case(
            &["modify", U2],
            "modify",
            json!({"uuid": U2}),
            definition(U2),
        ),
        case(&["stats"], "stats", to_json(StatsArgs::default()), stats(0)),
        case(
            &["stats", U1],
            "stats",
            to_json(StatsArgs {
                uuid: Some(U1.into()),
            }),
            stats(0),
        ),
        case(&["metrics"], "metrics", Value::Null, metrics()),
        case(
            &["version"],
            "version",
            Value::Null,
            json!({"daemon": "0.1.0", "api": 1}),
        ),
    ]
}

/// The request line vgpuctl sent, as the daemon reads it: `args` absent
/// when the command has none.
fn expected_request(command: &str, args: &Value) -> Value {
    let mut request = json!({"version": 1, "command": command});
    if !args.is_null() {
        request["args"] = args.clone();
    }
    request
}

#[test]
fn each_verb_sends_its_arguments_as_the_protocol_types_serialize() -> anyhow::Result<()> {
    for case in cases() {
        let fake = FakeDaemon::new(vec![Answer::Result(case.result.clone())])?;
        let output = fake.vgpuctl(&case.argv)?;
        ensure!(
            output.status.success(),
            "{:?}: {}; stderr: {}",
            case.argv,
            output.status,
            stderr(&output)
        );
        assert_eq!(
            fake.requests(),
            vec![expected_request(case.command, &case.args)],
            "{:?}",
            case.argv
        );
        ensure!(
            !stdout(&output).is_empty(),
            "{:?} printed nothing",
            case.argv
        );
    }
    Ok(())
}

#[test]
fn json_prints_each_verbs_result_as_the_daemon_sent_it() -> anyhow::Result<()> {
    for case in cases() {
        let mut result = case.result.clone();
        // Fields this client does not know are passed through.
        result["from_a_newer_daemon"] = json!(true);
        let fake = FakeDaemon::new(vec![Answer::Result(result.clone())])?;
        let mut argv = vec!["--json"];
        argv.extend(&case.argv);
        let output = fake.vgpuctl(&argv)?;
        ensure!(output.status.success(), "{argv:?}: {}", stderr(&output));
        let printed: Value = serde_json::from_slice(&output.stdout)
            .with_context(|| format!("{argv:?} printed {}", stdout(&output)))?;
        assert_eq!(printed, result, "{argv:?}");
    }
    Ok(())
}

#[test]
fn list_prints_the_gpus_and_the_vgpus_as_tables() -> anyhow::Result<()> {
    let fake = FakeDaemon::new(vec![Answer::Result(list())])?;
    let text = stdout(&fake.vgpuctl(&["list", "--defined"])?);
    let lines: Vec<&str> = text.lines().collect();
    let words = |i: usize| {
        lines
            .get(i)
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
    };
    assert_eq!(
        words(0),
        Some(vec!["GPU", "BACKEND", "VRAM", "FREE"]),
        "{text}"
    );
    assert_eq!(
        words(1),
        Some(vec!["gpu0", "sim", "4", "GiB", "1.5", "GiB"]),
        "{text}"
    );
    let header = lines.get(3).context("no vGPU table")?;
    for column in [
        "UUID",
        "GPU",
        "PROFILE",
        "STATE",
        "ORIGIN",
        "AUTO",
        "CLIENT PID",
        "SOCKET",
    ] {
        ensure!(header.contains(column), "no {column} in {header}");
    }
    let attached =
        format!("{U1}  gpu0  small    attached  config   -           4242  /run/vgpud/{U1}.sock");
    let defined =
        format!("{U2}  gpu0  small    defined   defined  yes            -  /run/vgpud/{U2}.sock");
    assert_eq!(lines.get(4), Some(&attached.as_str()), "{text}");
    assert_eq!(lines.get(5), Some(&defined.as_str()), "{text}");
    Ok(())
}

#[test]
fn stats_prints_a_row_per_vgpu_in_readable_units() -> anyhow::Result<()> {
    let fake = FakeDaemon::new(vec![Answer::Result(stats(0))])?;
    let text = stdout(&fake.vgpuctl(&["stats"])?);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    for column in ["UUID", "STATE", "REG READS", "IRQS", "ENGINE RUN", "DMA"] {
        ensure!(lines[0].contains(column), "no {column} in {}", lines[0]);
    }
    for cell in [
        U1,
        "attached",
        "4242",
        "1k",
        "1 s",
        "3 s",
        "2 GiB in 2",
        "64 MiB / 256 MiB",
    ] {
        ensure!(lines[1].contains(cell), "no {cell:?} in {}", lines[1]);
    }
    Ok(())
}

#[test]
fn create_prints_the_socket_and_says_the_vgpu_is_not_persistent() -> anyhow::Result<()> {
    let fake = FakeDaemon::new(vec![Answer::Result(started(U1))])?;
    let output = fake.vgpuctl(&["create", "--type", "small"])?;
    assert_eq!(stdout(&output), format!("/run/vgpud/{U1}.sock\n"));
    let note = stderr(&output);
    ensure!(
        note.contains(U1) && note.contains("not persistent"),
        "{note}"
    );
    Ok(())
}

#[test]
fn each_error_kind_has_its_exit_code_and_a_hint() -> anyhow::Result<()> {
    let kinds = [
        ("failed", 1),
        ("bad_arguments", 2),
        ("bad_request", 2),
        ("unsupported_version", 2),
        ("unknown_command", 2),
        ("not_found", 3),
        ("conflict", 4),
        ("insufficient_resources", 5),
        ("busy", 6),
        ("no_scanout", 8),
    ];
    for (kind, exit) in kinds {
        let fake = FakeDaemon::new(vec![Answer::Error(kind, "what the daemon said")])?;
        let output = fake.vgpuctl(&["start", U1])?;
        assert_eq!(code(&output), Some(exit), "{kind}: {}", stderr(&output));
        let text = stderr(&output);
        ensure!(
            text.starts_with("vgpuctl: what the daemon said\nhint: "),
            "{kind}: {text}"
        );
        ensure!(stdout(&output).is_empty(), "{kind}: {}", stdout(&output));
    }
    Ok(())
}

#[test]
fn a_busy_remove_says_to_stop_the_vm_or_force() -> anyhow::Result<()> {
    let fake = FakeDaemon::new(vec![Answer::Error("busy", "vGPU has a client attached")])?;
    let output = fake.vgpuctl(&["remove", U1])?;
    assert_eq!(code(&output), Some(6));
    let text = stderr(&output);
    ensure!(
        text.contains("hint: a VM is attached; stop it first, or use --force to disconnect it"),
        "{text}"
    );
    Ok(())
}

#[test]
fn a_malformed_answer_exits_1() -> anyhow::Result<()> {
    for answer in [
        Answer::Raw("this is not json"),
        Answer::Raw(r#"{"version":1,"ok":true}"#),
        // A result that is not the command's.
        Answer::Result(json!({"uuid": 7})),
    ] {
        let fake = FakeDaemon::new(vec![answer.clone()])?;
        let output = fake.vgpuctl(&["start", U1])?;
        assert_eq!(code(&output), Some(1), "{answer:?}: {}", stderr(&output));
        ensure!(stderr(&output).contains("malformed"), "{}", stderr(&output));
    }
    Ok(())
}

#[test]
fn an_unreachable_daemon_exits_7() -> anyhow::Result<()> {
    // No socket.
    let empty = tempfile::tempdir()?;
    let output = vgpuctl(&["--runtime-dir", path_str(empty.path())?, "list"])?;
    assert_eq!(code(&output), Some(7), "{}", stderr(&output));
    let text = stderr(&output);
    ensure!(
        text.contains("cannot reach vgpud") && text.contains("VGPUD_RUNTIME_DIR"),
        "{text}"
    );
    // A socket nobody listens on (a daemon that died).
    drop(UnixListener::bind(empty.path().join("control.sock"))?);
    let output = vgpuctl(&["--runtime-dir", path_str(empty.path())?, "list"])?;
    assert_eq!(code(&output), Some(7), "{}", stderr(&output));
    // The environment names the runtime directory too.
    let nowhere = empty.path().join("nowhere");
    let output = vgpuctl_with_runtime_dir_env(&["--json", "version"], Some(&nowhere))?;
    assert_eq!(code(&output), Some(7), "{}", stderr(&output));
    ensure!(stderr(&output).contains("nowhere"), "{}", stderr(&output));
    Ok(())
}

#[test]
fn a_daemon_that_closes_without_answering_exits_7() -> anyhow::Result<()> {
    let fake = FakeDaemon::new(vec![Answer::Close])?;
    let output = fake.vgpuctl(&["list"])?;
    assert_eq!(code(&output), Some(7), "{}", stderr(&output));
    Ok(())
}

#[test]
fn screenshot_writes_the_png_and_exits_1_when_it_cannot() -> anyhow::Result<()> {
    let fake = FakeDaemon::new(vec![
        Answer::Result(screenshot()),
        Answer::Result(screenshot()),
    ])?;
    let file = fake.runtime_dir().join("shot.png");
    let output = fake.vgpuctl(&["screenshot", U1, path_str(&file)?])?;
    ensure!(output.status.success(), "{}", stderr(&output));
    assert_eq!(std::fs::read(&file)?, PNG_SIGNATURE);
    assert_eq!(
        fake.requests(),
        vec![expected_request(
            "screenshot",
            &to_json(ScreenshotArgs { uuid: U1.into() })
        )]
    );
    let nowhere = fake.runtime_dir().join("no/such/dir/shot.png");
    let output = fake.vgpuctl(&["--json", "screenshot", U1, path_str(&nowhere)?])?;
    assert_eq!(code(&output), Some(1), "{}", stderr(&output));
    ensure!(
        stderr(&output).contains("cannot write"),
        "{}",
        stderr(&output)
    );
    Ok(())
}

#[test]
fn usage_errors_exit_2() -> anyhow::Result<()> {
    for argv in [
        vec!["remove"],
        vec!["frobnicate"],
        vec!["create"],
        vec!["modify", U1, "--auto", "--manual"],
        vec!["top", "--interval", "0"],
        vec!["top", "--count", "0"],
    ] {
        let output = vgpuctl(&argv)?;
        assert_eq!(code(&output), Some(2), "{argv:?}: {}", stderr(&output));
    }
    Ok(())
}

/// The TIME cell of a `top` line: ISO 8601 UTC to the second.
fn is_timestamp(cell: &str) -> bool {
    let b = cell.as_bytes();
    b.len() == 20
        && b[4] == b'-'
        && b[10] == b'T'
        && b[19] == b'Z'
        && cell[..4].bytes().all(|c| c.is_ascii_digit())
}

#[test]
fn top_prints_a_line_per_vgpu_per_refresh_with_the_intervals_rates() -> anyhow::Result<()> {
    let fake = FakeDaemon::new(vec![Answer::Result(stats(0)), Answer::Result(stats(1))])?;
    let output = fake.vgpuctl(&["top", "--interval", "0.1", "--count", "2"])?;
    ensure!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    ensure!(
        !text.contains('\x1b'),
        "escape codes off a terminal: {text:?}"
    );
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(lines.len(), 3, "a header and a line per refresh: {text}");
    assert_eq!(
        lines[0],
        [
            "TIME",
            "UUID",
            "STATE",
            "ENGINE",
            "WAIT",
            "REGS/S",
            "IRQS/S",
            "SUBMITS/S",
            "CMDS/S",
            "REFUSED/S",
            "FAULTS/S",
            "DMA",
            "VRAM",
            "USED"
        ]
    );
    for line in &lines[1..] {
        ensure!(is_timestamp(line[0]), "{line:?}");
        assert_eq!(line[1], U1);
    }
    // The first refresh has nothing to compare with.
    assert_eq!(lines[1][3..11], ["-"; 8]);
    // Over the 2 s between the readings: 0.5 s of 2 s ran, 0.1 s waited;
    // 800 register accesses, 100 interrupts, 20 submissions, 2000 commands.
    assert_eq!(
        lines[2][3..11],
        ["25.0%", "5.0%", "400", "50", "10", "1k", "0", "0"]
    );
    assert_eq!(fake.requests().len(), 2);
    for request in fake.requests() {
        assert_eq!(
            request,
            expected_request("stats", &to_json(StatsArgs::default()))
        );
    }
    Ok(())
}

#[test]
fn top_json_prints_an_object_per_refresh_per_line() -> anyhow::Result<()> {
    let fake = FakeDaemon::new(vec![Answer::Result(stats(0)), Answer::Result(stats(1))])?;
    let output = fake.vgpuctl(&["--json", "top", "--interval", "0.1", "--count", "2"])?;
    ensure!(output.status.success(), "{}", stderr(&output));
    let refreshes: Vec<Value> = stdout(&output)
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(refreshes.len(), 2);
    assert_eq!(refreshes[0]["interval_ns"], Value::Null);
    assert_eq!(refreshes[0]["vgpus"][0]["rates"], Value::Null);
    assert_eq!(refreshes[1]["time_ns"], 12_000_000_000u64);
    assert_eq!(refreshes[1]["interval_ns"], 2_000_000_000u64);
    let vgpu = &refreshes[1]["vgpus"][0];
    assert_eq!(vgpu["uuid"], U1);
    assert_eq!(vgpu["register_reads"], 1600);
    assert_eq!(vgpu["rates"]["engine_run_percent"], 25.0);
    assert_eq!(vgpu["rates"]["register_accesses_per_s"], 400.0);
    assert_eq!(vgpu["rates"]["commands_per_s"], 1000.0);
    Ok(())
}

#[test]
fn a_failing_stats_call_stops_top_with_its_exit_code() -> anyhow::Result<()> {
    let fake = FakeDaemon::new(vec![
        Answer::Result(stats(0)),
        Answer::Error("not_found", "no vGPU"),
    ])?;
    let output = fake.vgpuctl(&["top", "--interval", "0.1", "--count", "5"])?;
    assert_eq!(code(&output), Some(3), "{}", stderr(&output));
    Ok(())
}

#[test]
fn every_verb_has_help_with_an_example() -> anyhow::Result<()> {
    let verbs = [
        "types",
        "list",
        "create",
        "remove",
        "define",
        "undefine",
        "start",
        "stop",
        "modify",
        "stats",
        "top",
        "metrics",
        "screenshot",
        "version",
    ];
    for verb in verbs {
        let output = vgpuctl(&[verb, "--help"])?;
        ensure!(
            output.status.success(),
            "{verb} --help: {}",
            stderr(&output)
        );
        let text = stdout(&output);
        ensure!(
            text.contains(&format!("Examples:\n  vgpuctl {verb}"))
                || text.contains(&format!("Examples:\n  vgpuctl --json {verb}")),
            "{verb} --help has no example:\n{text}"
        );
    }
    let text = stdout(&vgpuctl(&["--help"])?);
    for verb in verbs {
        ensure!(
            text.contains(&format!("  {verb} ")),
            "--help lists no {verb}"
        );
    }
    for line in [
        "Exit codes:",
        "  3  no such vGPU",
        "  6  busy",
        "  7  the daemon cannot be reached",
    ] {
        ensure!(text.contains(line), "--help lacks {line:?}:\n{text}");
    }
    Ok(())
}

#[test]
fn top_on_a_terminal_redraws_in_place_and_gives_the_cursor_back() -> anyhow::Result<()> {
    // util-linux `script` gives vgpuctl a pseudo-terminal as stdout.
    if std::process::Command::new("script")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("skipped: no `script` (util-linux) to give vgpuctl a terminal");
        return Ok(());
    }
    let fake = FakeDaemon::new(vec![Answer::Result(stats(0)), Answer::Result(stats(1))])?;
    let command = format!(
        "{} --runtime-dir {} top --interval 0.1 --count 2",
        path_str(&vgpuctl_binary()?)?,
        path_str(fake.runtime_dir())?
    );
    let output = std::process::Command::new("script")
        .args(["-qefc", &command, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()?;
    ensure!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    // Each refresh clears the screen and starts at the top; the cursor is
    // hidden while it runs and shown again at the end.
    ensure!(text.matches("\x1b[H\x1b[2J").count() == 2, "{text:?}");
    ensure!(text.starts_with("\x1b[?25l"), "{text:?}");
    ensure!(text.trim_end().ends_with("\x1b[?25h"), "{text:?}");
    ensure!(
        text.contains("25.0%"),
        "the second refresh's rates: {text:?}"
    );
    Ok(())
}
