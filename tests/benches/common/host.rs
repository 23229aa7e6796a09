//! The machine and the daemon process: what a report says about where it
//! ran, the `vgpud` binary it ran, environment knobs, the daemon's CPU
//! time and memory from /proc, and engine time from the control API.

use std::time::Duration;

use anyhow::Context;
use uuid::Uuid;
use vgpud_tests::TestDaemon;
use vgpud_tests::control::{CONTROL_TIMEOUT, control_request};

/// Where the bench runs.
#[derive(Debug)]
pub struct Machine {
    /// CPUs this process may use.
    pub cpus: usize,
    /// `model name` of /proc/cpuinfo.
    pub model: String,
}

impl Machine {
    /// Reads it from /proc.
    pub fn read() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map(|(_, model)| model.trim().to_string())
            .unwrap_or_else(|| "unknown".into());
        let cpus = std::thread::available_parallelism().map_or(0, usize::from);
        Machine { cpus, model }
    }

    /// One line for a report, with the load average now.
    pub fn describe(&self) -> String {
        let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        let load: Vec<&str> = load.split_whitespace().take(3).collect();
        format!(
            "{} CPUs, {}, load average {} (1, 5, 15 min)",
            self.cpus,
            self.model,
            load.join(" ")
        )
    }
}

/// Makes sure the `vgpud` the harness runs is current: unless `VGPUD_BIN`
/// names one, builds it into this bench's profile (release for
/// `cargo bench`), as `bar2_rtt` does.
pub fn prepare_daemon() -> anyhow::Result<()> {
    if std::env::var_os("VGPUD_BIN").is_none() {
        vgpud_tests::daemon::build_vgpud()?;
    }
    Ok(())
}

/// The integer in environment variable `name`, or `default`.
pub fn env_u64(name: &str, default: u64) -> anyhow::Result<u64> {
    match std::env::var(name) {
        Ok(value) => value.parse().with_context(|| format!("{name}={value}")),
        Err(_) => Ok(default),
    }
}

/// The seconds (a decimal number) in environment variable `name`, or
/// `default`.
pub fn env_seconds(name: &str, default: Duration) -> anyhow::Result<Duration> {
    match std::env::var(name) {
        Ok(value) => Ok(Duration::from_secs_f64(
            value.parse().with_context(|| format!("{name}={value}"))?,
        )),
        Err(_) => Ok(default),
    }
}

/// The daemon's process id.
pub fn daemon_pid(daemon: &TestDaemon) -> anyhow::Result<u32> {
    daemon.pid().context("the daemon is not running")
}

/// utime + stime of process `pid`, in clock ticks (/proc/PID/stat).
pub fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces: state is
    // field 3, utime 14, stime 15.
    let rest = stat.rsplit_once(')').context("no ) in stat")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
pub fn ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant of the C library; it has no
    // preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).unwrap_or(100)
}

/// Every thread of process `pid`: its name and the nanoseconds it has run
/// (/proc/PID/task/TID/schedstat, first field).
pub fn thread_run_ns(pid: u32) -> anyhow::Result<Vec<(u32, String, u64)>> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let task = task?;
        let Ok(tid) = task.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // A thread may end between the listing and the reads.
        let Ok(comm) = std::fs::read_to_string(task.path().join("comm")) else {
            continue;
        };
        let Ok(schedstat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        let run_ns = schedstat
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse().ok())
            .unwrap_or(0);
        threads.push((tid, comm.trim().to_string(), run_ns));
    }
    Ok(threads)
}

/// A vGPU's engine time, from `list` (ns since start-up).
#[derive(Clone, Copy, Debug, Default)]
pub struct EngineTime {
    /// Its work held the engine.
    pub run_ns: u64,
    /// It had work and waited.
    pub wait_ns: u64,
    /// It was attached with no work.
    pub idle_ns: u64,
    /// Submissions validated and queued.
    pub submissions: u64,
}

impl EngineTime {
    /// What happened between `earlier` and `self`.
    pub fn since(&self, earlier: &EngineTime) -> EngineTime {
        EngineTime {
            run_ns: self.run_ns - earlier.run_ns,
            wait_ns: self.wait_ns - earlier.wait_ns,
            idle_ns: self.idle_ns - earlier.idle_ns,
            submissions: self.submissions - earlier.submissions,
        }
    }
}

/// The engine time of each of `uuids`, from one `list` request.
pub fn engine_times(daemon: &TestDaemon, uuids: &[Uuid]) -> anyhow::Result<Vec<EngineTime>> {
    let response = control_request(
        &daemon.control_socket(),
        "list",
        serde_json::Value::Null,
        CONTROL_TIMEOUT,
    )?;
    anyhow::ensure!(response["ok"] == true, "list failed: {response}");
    let vgpus = response["result"]["vgpus"]
        .as_array()
        .context("list has no vgpus")?;
    uuids
        .iter()
        .map(|uuid| {
            let entry = vgpus
                .iter()
                .find(|e| e["uuid"] == uuid.to_string().as_str())
                .with_context(|| format!("no vGPU {uuid} in list"))?;
            let field = |name: &str| {
                entry[name]
                    .as_u64()
                    .with_context(|| format!("no {name} in {entry}"))
            };
            Ok(EngineTime {
                run_ns: field("engine_run_ns")?,
                wait_ns: field("engine_wait_ns")?,
                idle_ns: field("engine_idle_ns")?,
                submissions: field("submissions")?,
            })
        })
        .collect()
}
