//! The command line: global options, the verbs and their `--help` texts.
//!
//! The verbs follow mdevctl's where they fit (`types`, `list`, `create`,
//! `remove`, `define`, `undefine`, `start`, `stop`, `modify`); every one
//! has examples in its `--help`, and `vgpuctl --help` lists the exit codes.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args as ClapArgs, Parser, Subcommand};

/// Exit codes, as `vgpuctl --help` and docs/operations.md list them.
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  failure: the daemon failed (failed), sent a malformed answer, or a file
     could not be written
  2  usage error, or the daemon refused the request as malformed
     (bad_arguments, bad_request, unsupported_version, unknown_command)
  3  no such vGPU (not_found)
  4  the request contradicts what exists (conflict): a UUID in use, a vGPU
     of the configuration file, a vGPU that is (not) running or (not) defined
  5  the vGPU does not fit (insufficient_resources)
  6  busy: a VM is attached (use --force), or the daemon is doing as much
     of this as it allows at once; try again
  7  the daemon cannot be reached (no socket, refused, permission denied,
     timed out, closed without answering)
  8  the vGPU's display shows nothing (no_scanout)

Environment:
  VGPUD_RUNTIME_DIR  the daemon's runtime directory (default /run/vgpud)

Every verb takes --json: the daemon's result object as JSON instead of a
table (top: one JSON object per line per refresh).";

/// Manage the vGPUs of a running vgpud.
#[derive(Debug, Parser)]
#[command(
    version,
    about,
    long_about = "Manage the vGPUs of a running vgpud through its control socket \
(<runtime dir>/control.sock): list GPUs, profiles and vGPUs; create, define, \
start, stop and remove vGPUs at run time; read their counters.",
    after_help = EXIT_CODES
)]
pub struct Args {
    /// The daemon's runtime directory (its control socket is control.sock there).
    #[arg(
        long,
        env = "VGPUD_RUNTIME_DIR",
        default_value = "/run/vgpud",
        global = true
    )]
    pub runtime_dir: PathBuf,
    /// Print the daemon's result as JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the vGPU profiles and how many more of each fit on each GPU.
    #[command(after_help = "\
Examples:
  vgpuctl types
  vgpuctl types --gpu gpu0
  vgpuctl --json types")]
    Types {
        /// Only this GPU's availability.
        #[arg(long)]
        gpu: Option<String>,
    },
    /// List the physical GPUs and the vGPUs.
    #[command(
        long_about = "List the physical GPUs (free VRAM) and the running vGPUs: state \
(listening: waiting for a VM; attached: a VM is connected), origin (config: the \
configuration file; defined: a definition; transient: made by create), whether a \
definition starts with the daemon (AUTO), the attached client's process id and the \
socket a VMM connects to. --defined adds definitions that are not running.",
        after_help = "\
Examples:
  vgpuctl list
  vgpuctl list --defined
  vgpuctl --json list"
    )]
    List {
        /// Also list definitions that are not running (state `defined`).
        #[arg(long)]
        defined: bool,
    },
    /// Create a transient vGPU and start it: not persistent.
    #[command(
        long_about = "Create a vGPU of a profile and start it at once; prints its socket \
path on standard output. It is transient: gone when removed or when vgpud stops. Use \
`define` for a vGPU that survives restarts.",
        after_help = "\
Examples:
  vgpuctl create --type small
  vgpuctl create --type large --gpu gpu0 --uuid 6f1a0a4e-0d0e-4f6e-9b3a-5f1c2d3e4f50
  sock=$(vgpuctl create --type small --socket-owner qemu --socket-mode 0600)"
    )]
    Create {
        /// The profile (see `vgpuctl types`).
        #[arg(long = "type", short = 't', value_name = "PROFILE")]
        profile: String,
        /// A UUID of your choice; a random one otherwise.
        #[arg(long, short = 'u')]
        uuid: Option<String>,
        /// The GPU; otherwise the first (in configuration order) it fits.
        #[arg(long)]
        gpu: Option<String>,
        #[command(flatten)]
        socket: SocketOptions,
    },
    /// Take down a transient vGPU.
    #[command(
        long_about = "Take down a transient vGPU (made by create). A defined vGPU is \
stopped with `stop` and deleted with `undefine`; a vGPU of the configuration file \
is removed by editing the file and reloading (both are a conflict here). Refused \
(busy) while a VM is attached, unless --force.",
        after_help = "\
Examples:
  vgpuctl remove 6f1a0a4e-0d0e-4f6e-9b3a-5f1c2d3e4f50
  vgpuctl remove --force 6f1a0a4e-0d0e-4f6e-9b3a-5f1c2d3e4f50"
    )]
    Remove {
        /// The vGPU.
        uuid: String,
        #[command(flatten)]
        force: Force,
    },
    /// Write a definition: a vGPU kept in the state directory across restarts.
    #[command(
        long_about = "Write a definition to the daemon's state directory: it survives \
daemon restarts. It is not started: `vgpuctl start UUID` starts it, and --auto starts \
it whenever the daemon starts.",
        after_help = "\
Examples:
  vgpuctl define --type small --auto
  vgpuctl define --type large --gpu gpu1 --uuid 6f1a0a4e-0d0e-4f6e-9b3a-5f1c2d3e4f50
  vgpuctl define --type small --socket-group kvm --socket-mode 0660"
    )]
    Define {
        /// The profile (see `vgpuctl types`).
        #[arg(long = "type", short = 't', value_name = "PROFILE")]
        profile: String,
        /// A UUID of your choice; a random one otherwise.
        #[arg(long, short = 'u')]
        uuid: Option<String>,
        /// The GPU; otherwise chosen when it starts: the first it fits.
        #[arg(long)]
        gpu: Option<String>,
        /// Start it whenever the daemon starts.
        #[arg(long)]
        auto: bool,
        #[command(flatten)]
        socket: SocketOptions,
    },
    /// Delete a definition (a running vGPU keeps running, as a transient one).
    #[command(after_help = "\
Examples:
  vgpuctl undefine 6f1a0a4e-0d0e-4f6e-9b3a-5f1c2d3e4f50")]
    Undefine {
        /// The vGPU.
        uuid: String,
    },
    /// Start a defined vGPU; prints its socket path.
    #[command(after_help = "\
Examples:
  vgpuctl start 6f1a0a4e-0d0e-4f6e-9b3a-5f1c2d3e4f50")]
    Start {
        /// The vGPU.
        uuid: String,
    },
    /// Take down a running defined or transient vGPU (a definition stays defined).
    #[command(
        long_about = "Take down a running vGPU made by start or create. A defined one \
stays defined (start it again with `start`); a transient one is gone. Refused (busy) \
while a VM is attached, unless --force.",
        after_help = "\
Examples:
  vgpuctl stop 6f1a0a4e-0d0e-4f6e-9b3a-5f1c2d3e4f50
  vgpuctl stop --force 6f1a0a4e-0d0e-4f6e-9b3a-5f1c2d3e4f50"
    )]
    Stop {
        /// The vGPU.
        uuid: String,
        #[command(flatten)]
        force: Force,
    },
    /// Change a definition; takes effect the next time it starts.
    #[command(
        long_about = "Change a definition: each option given replaces the definition's. \
A running vGPU keeps what it was started with until it is next started. --gpu \"\" \
lets start choose the GPU; a socket option given as \"\" goes back to the \
configuration file's default.",
        after_help = "\
Examples:
  vgpuctl modify 6f1a0a4e-0d0e-4f6e-9b3a-5f1c2d3e4f50 --type large
  vgpuctl modify 6f1a0a4e-0d0e-4f6e-9b3a-5f1c2d3e4f50 --manual
  vgpuctl modify 6f1a0a4e-0d0e-4f6e-9b3a-5f1c2d3e4f50 --gpu \"\" --socket-mode \"\""
    )]
    Modify {
        /// The vGPU.
        uuid: String,
        /// The profile (see `vgpuctl types`).
        #[arg(long = "type", short = 't', value_name = "PROFILE")]
        profile: Option<String>,
        /// The GPU, or "" to let start choose.
        #[arg(long)]
        gpu: Option<String>,
        /// Start it whenever the daemon starts.
        #[arg(long, conflicts_with = "manual")]
        auto: bool,
        /// Start it only with `vgpuctl start`.
        #[arg(long)]
        manual: bool,
        #[command(flatten)]
        socket: SocketOptions,
    },
    /// Show the counters of the running vGPUs, one row each.
    #[command(after_help = "\
Examples:
  vgpuctl stats
  vgpuctl stats 6f1a0a4e-0d0e-4f6e-9b3a-5f1c2d3e4f50
  vgpuctl --json stats")]
    Stats {
        /// Only this vGPU.
        uuid: Option<String>,
    },
    /// Watch the running vGPUs: rates and engine time share per interval.
    #[command(
        long_about = "Read the counters every interval and show what each vGPU did in \
it: register accesses, interrupts, submissions and commands per second, and the \
share of the interval its work ran on the engines (and waited for them). On a \
terminal the table is redrawn in place (Ctrl-C quits); otherwise one line per vGPU \
per interval, with a timestamp. The first refresh has no rates yet (-).",
        after_help = "\
Examples:
  vgpuctl top
  vgpuctl top --interval 5 --count 12 > vgpus.log
  vgpuctl --json top --count 10"
    )]
    Top {
        /// Seconds between refreshes (0.1 to 3600).
        #[arg(long, short = 'i', default_value = "1", value_parser = parse_interval)]
        interval: Duration,
        /// Stop after this many refreshes (default: until Ctrl-C).
        #[arg(long, short = 'n', value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
    },
    /// Print the daemon's metrics (Prometheus text format) as they are.
    #[command(after_help = "\
Examples:
  vgpuctl metrics
  vgpuctl metrics | grep vgpud_vgpu_interrupts_total")]
    Metrics,
    /// Save what a vGPU's display shows now as a PNG file.
    #[command(after_help = "\
Examples:
  vgpuctl screenshot 6f1a0a4e-0d0e-4f6e-9b3a-5f1c2d3e4f50 screen.png")]
    Screenshot {
        /// The vGPU.
        uuid: String,
        /// Where to write the PNG.
        file: PathBuf,
    },
    /// Show the daemon's version and control API version.
    #[command(after_help = "\
Examples:
  vgpuctl version
  vgpuctl --json version")]
    Version,
}

/// Who may connect to the vGPU's socket; each one not given takes the
/// configuration file's default.
#[derive(Debug, Clone, ClapArgs)]
pub struct SocketOptions {
    /// The socket's owner: a user name or numeric uid.
    #[arg(long, value_name = "USER")]
    pub socket_owner: Option<String>,
    /// The socket's group: a group name or numeric gid.
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,
    /// The socket's mode, in octal (e.g. 0660).
    #[arg(long, value_name = "MODE")]
    pub socket_mode: Option<String>,
}

/// `--force` of `remove` and `stop`.
#[derive(Debug, Clone, Copy, ClapArgs)]
pub struct Force {
    /// Take the vGPU from an attached VM: signal its REQ interrupt, give it
    /// 500 ms to let go, then reset and disconnect it.
    #[arg(long, short = 'f')]
    pub force: bool,
}

/// Refresh intervals `top` accepts: short enough to watch, long enough not
/// to keep the daemon answering.
const MIN_INTERVAL: Duration = Duration::from_millis(100);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);

fn parse_interval(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    let interval = Duration::try_from_secs_f64(seconds)
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
        return Err(format!(
            "the interval must be between {} and {} s",
            MIN_INTERVAL.as_secs_f64(),
            MAX_INTERVAL.as_secs()
        ));
    }
    Ok(interval)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn intervals_outside_the_bounds_are_refused() {
        assert_eq!(parse_interval("0.5"), Ok(Duration::from_millis(500)));
        assert!(parse_interval("0").is_err());
        assert!(parse_interval("-1").is_err());
        assert!(parse_interval("NaN").is_err());
        assert!(parse_interval("7200").is_err());
    }
}
