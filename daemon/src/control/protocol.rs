//! The control API's messages, shared by the daemon and `vgpuctl`.
//!
//! One JSON object per line in each direction over
//! `<runtime_dir>/control.sock`. Every request names the protocol version
//! it speaks and a command; every response says `ok` and carries either a
//! `result` or an `error`. New commands are new names: an old daemon
//! answers them with `unknown_command`, so clients can tell "not supported"
//! from "failed". The format is documented in `docs/control-api.md`.

use serde::{Deserialize, Serialize};

/// The version this build speaks.
pub const CONTROL_API_VERSION: u32 = 1;

/// Longest request line the daemon reads; longer ones are refused.
pub const MAX_REQUEST_LEN: usize = 64 * 1024;

/// A request line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub version: u32,
    pub command: String,
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub args: serde_json::Value,
}

/// A response line.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    pub version: u32,
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

/// Why a request failed: a stable machine-readable kind and a message for
/// people.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ErrorBody {
    pub kind: ErrorKind,
    pub message: String,
}

/// Stable error kinds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The line is not a request.
    BadRequest,
    /// The request's version is not one this daemon speaks.
    UnsupportedVersion,
    /// The command is not one this daemon knows.
    UnknownCommand,
    /// The command's arguments are wrong.
    BadArguments,
    /// The named vGPU does not exist.
    NotFound,
    /// The vGPU's display shows nothing (disabled, or an invalid mode).
    NoScanout,
    /// The daemon failed to carry the command out.
    Failed,
    /// The vGPU has a client attached (stop or remove it with `force`),
    /// or the daemon is doing as much of this as it allows at once (a
    /// screenshot, open control connections); try again.
    Busy,
    /// The request contradicts what exists: a UUID in use, a vGPU of the
    /// configuration file, a vGPU that is (not) running or (not) defined.
    Conflict,
    /// The vGPU does not fit: the message names what is short (VRAM on the
    /// GPU, instances of the profile, the daemon's DMA budget).
    InsufficientResources,
}

impl ErrorKind {
    /// The name on the wire (`"not_found"`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::BadRequest => "bad_request",
            ErrorKind::UnsupportedVersion => "unsupported_version",
            ErrorKind::UnknownCommand => "unknown_command",
            ErrorKind::BadArguments => "bad_arguments",
            ErrorKind::NotFound => "not_found",
            ErrorKind::NoScanout => "no_scanout",
            ErrorKind::Failed => "failed",
            ErrorKind::Busy => "busy",
            ErrorKind::Conflict => "conflict",
            ErrorKind::InsufficientResources => "insufficient_resources",
        }
    }
}

/// A request's `args` as `T` (a missing `args` is `{}`), or the
/// `bad_arguments` message, naming the command.
pub fn parse_args<T: serde::de::DeserializeOwned>(
    command: &str,
    args: &serde_json::Value,
) -> Result<T, String> {
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let args = if args.is_null() { &empty } else { args };
    T::deserialize(args).map_err(|e| format!("{command}: {e}"))
}

impl Response {
    pub fn success(result: serde_json::Value) -> Self {
        Self {
            version: CONTROL_API_VERSION,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub fn failure(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            version: CONTROL_API_VERSION,
            ok: false,
            result: None,
            error: Some(ErrorBody {
                kind,
                message: message.into(),
            }),
        }
    }
}

/// Result of `list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ListResult {
    pub gpus: Vec<GpuEntry>,
    pub vgpus: Vec<VgpuEntry>,
}

/// A physical GPU in `list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct GpuEntry {
    pub id: String,
    pub backend: String,
    /// Bytes.
    pub vram: u64,
    /// Bytes not yet given to a vGPU.
    pub vram_free: u64,
}

/// An optional flag: absent or `null` is false.
fn null_is_false<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(deserializer)?.unwrap_or(false))
}

/// The arguments of a command that takes none: absent, `null` or `{}`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NoArgs {}

/// Arguments of `list`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ListArgs {
    /// Also list definitions that are not running (state `defined`).
    #[serde(default, deserialize_with = "null_is_false")]
    pub defined: bool,
}

/// Where a vGPU is in its life.
#[derive(
    Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[serde(rename_all = "snake_case")]
pub enum VgpuState {
    /// Defined in the state directory, not running.
    #[default]
    Defined,
    /// Running, its socket listening, no client.
    Listening,
    /// Running with a client attached.
    Attached,
}

impl VgpuState {
    pub fn name(self) -> &'static str {
        match self {
            VgpuState::Defined => "defined",
            VgpuState::Listening => "listening",
            VgpuState::Attached => "attached",
        }
    }
}

/// Where a vGPU comes from, which says what may change it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum VgpuOrigin {
    /// A `[[vgpu]]` of the configuration file: changed by editing the file
    /// and reloading.
    Config,
    /// A definition in the state directory (`define`).
    Defined,
    /// Created by `create`: gone when removed or when the daemon stops.
    Transient,
}

impl VgpuOrigin {
    pub fn name(self) -> &'static str {
        match self {
            VgpuOrigin::Config => "config",
            VgpuOrigin::Defined => "defined",
            VgpuOrigin::Transient => "transient",
        }
    }
}

/// A vGPU in `list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VgpuEntry {
    pub uuid: String,
    pub gpu: String,
    pub profile: String,
    pub socket: String,
    /// defined, listening or attached.
    pub state: VgpuState,
    /// config, defined or transient.
    pub origin: VgpuOrigin,
    /// A definition's `auto` (started with the daemon); false otherwise.
    #[serde(default)]
    pub auto: bool,
    /// The attached client's process id, from the socket's peer
    /// credentials; absent when no client is attached or the kernel did
    /// not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_pid: Option<u32>,
    /// Bytes.
    pub framebuffer: u64,
    pub channels: u32,
    pub max_resolution: String,
    /// Whether a VMM is attached.
    pub attached: bool,
    /// Client messages refused since start-up.
    pub refused_messages: u64,
    /// GPU MMU accesses that faulted since start-up.
    pub mmu_faults: u64,
    /// Guest page-table entries the daemon refused to program.
    pub refused_ptes: u64,
    /// Interrupts signalled since start-up.
    #[serde(default)]
    pub interrupts: u64,
    /// Interrupts merged into earlier ones the client had not consumed
    /// (its eventfd counter was full).
    #[serde(default)]
    pub interrupts_coalesced: u64,
    /// DMA windows a client may hold at once.
    #[serde(default)]
    pub max_dma_maps: u64,
    /// Bytes of fd-backed DMA windows a client may have mapped at once.
    #[serde(default)]
    pub max_dma_bytes: u64,
    /// Ring spans validated and queued for the engines.
    #[serde(default)]
    pub submissions: u64,
    /// Commands in them.
    #[serde(default)]
    pub commands: u64,
    /// Ring spans the validator refused.
    #[serde(default)]
    pub refused_submissions: u64,
    /// Engine time: the vGPU's work ran, ns.
    #[serde(default)]
    pub engine_run_ns: u64,
    /// It had work and waited, ns.
    #[serde(default)]
    pub engine_wait_ns: u64,
    /// It was attached without work, ns.
    #[serde(default)]
    pub engine_idle_ns: u64,
}

/// Arguments of `types`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TypesArgs {
    /// Only this GPU's availability.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
}

/// Result of `types`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TypesResult {
    pub types: Vec<TypeEntry>,
}

/// A profile in `types`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TypeEntry {
    pub profile: String,
    /// Bytes.
    pub framebuffer: u64,
    pub channels: u32,
    pub max_resolution: String,
    /// Instances allowed per GPU.
    pub max_instances: u32,
    /// Scheduling weight (docs/scheduling.md).
    pub weight: u32,
    /// Per GPU: how many more instances `create` could make now.
    pub available: Vec<TypeAvailability>,
}

/// How many more instances of a profile fit on one GPU now.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct TypeAvailability {
    pub gpu: String,
    pub instances: u32,
}

/// Arguments of `create`: a transient vGPU, running at once.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateArgs {
    pub profile: String,
    /// A UUID of the caller's choice; a random one otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The GPU; otherwise the first GPU (in configuration order) it fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    #[serde(flatten)]
    pub access: SocketAccessArgs,
}

/// Who may connect to a vGPU's socket; each unset key takes the
/// configuration file's top-level default.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SocketAccessArgs {
    /// A user name or numeric uid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_owner: Option<String>,
    /// A group name or numeric gid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_group: Option<String>,
    /// Octal digits, e.g. "0660".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket_mode: Option<String>,
}

/// Result of `create` and `start`: the running vGPU.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StartedResult {
    pub uuid: String,
    pub gpu: String,
    pub profile: String,
    pub socket: String,
}

/// Arguments of `remove` and `stop`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StopArgs {
    pub uuid: String,
    /// Take it from an attached client: signal its REQ interrupt, wait the
    /// release grace, then reset and disconnect it.
    #[serde(default, deserialize_with = "null_is_false")]
    pub force: bool,
}

/// Result of `remove` and `stop`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoppedResult {
    pub uuid: String,
    /// A client was attached and was disconnected.
    pub disconnected: bool,
    /// The client released the vGPU itself within the grace period
    /// (meaningful when `disconnected`).
    pub released: bool,
}

/// Arguments of `define`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DefineArgs {
    pub profile: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The GPU; otherwise chosen when the vGPU starts: the first it fits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    /// Start it whenever the daemon starts.
    #[serde(default, deserialize_with = "null_is_false")]
    pub auto: bool,
    #[serde(flatten)]
    pub access: SocketAccessArgs,
}

/// Arguments of `undefine` and `start`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UuidArgs {
    pub uuid: String,
}

/// Arguments of `modify`: each key given replaces the definition's; the
/// running vGPU keeps what it was started with until it is next started.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ModifyArgs {
    pub uuid: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// A GPU id, or "" to let start choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto: Option<bool>,
    /// Each given key replaces the definition's; "" removes it (back to
    /// the file's default).
    #[serde(flatten)]
    pub access: SocketAccessArgs,
}

/// A definition, as `define`, `modify` and `undefine` return it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DefinitionEntry {
    pub uuid: String,
    pub profile: String,
    /// Absent: chosen at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<String>,
    pub auto: bool,
    #[serde(flatten)]
    pub access: SocketAccessArgs,
    /// The file holding it in the state directory.
    pub file: String,
}

/// Arguments of `stats`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StatsArgs {
    /// Only this vGPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// Result of `stats`: counters of every running vGPU, as of `time_ns`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct StatsResult {
    /// Nanoseconds since the daemon started, when the counters were read:
    /// rates are differences of two results over differences of this.
    pub time_ns: u64,
    pub vgpus: Vec<VgpuStatsEntry>,
}

/// One running vGPU's counters. Counters (`_total` in metrics) only grow
/// while the vGPU runs; gauges say how things are now.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VgpuStatsEntry {
    pub uuid: String,
    pub gpu: String,
    pub profile: String,
    pub state: VgpuState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_pid: Option<u32>,
    /// Counter: emulated register reads (config space and BARs).
    pub register_reads: u64,
    /// Counter: emulated register writes.
    pub register_writes: u64,
    /// Counter: client messages refused.
    pub refused_messages: u64,
    /// Counter: GPU MMU accesses that faulted.
    pub mmu_faults: u64,
    /// Counter: guest page-table entries refused.
    pub refused_ptes: u64,
    /// Gauge: DMA windows the client holds.
    pub dma_maps: u64,
    /// Gauge: bytes of guest memory in those windows.
    pub dma_bytes: u64,
    /// Counter: interrupts signalled.
    pub interrupts: u64,
    /// Counter: interrupts merged into earlier ones.
    pub interrupts_coalesced: u64,
    /// Gauge: bytes of the VRAM slice that hold memory (pages written
    /// since the last client attached).
    pub vram_touched: u64,
    /// Gauge: bytes of the VRAM slice.
    pub vram_size: u64,
    /// Counter: ring spans validated and queued.
    pub submissions: u64,
    /// Counter: commands in them.
    pub commands: u64,
    /// Counter: ring spans the validator refused.
    pub refused_submissions: u64,
    /// Counter: engine time, ns (docs/scheduling.md).
    pub engine_run_ns: u64,
    pub engine_wait_ns: u64,
    pub engine_idle_ns: u64,
}

/// Result of `metrics`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MetricsResult {
    /// "text/plain; version=0.0.4; charset=utf-8".
    pub content_type: String,
    /// The Prometheus text exposition.
    pub text: String,
}

/// Arguments of `screenshot`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ScreenshotArgs {
    pub uuid: String,
}

/// Result of `screenshot`: the scanout mode and the frame as a PNG.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ScreenshotResult {
    pub width: u32,
    pub height: u32,
    /// Bits per pixel of the scanout (16, 24 or 32).
    pub bpp: u32,
    /// Bytes per line in VRAM.
    pub pitch: u32,
    /// Byte offset of the first visible pixel in the VRAM slice.
    pub offset: u64,
    /// The PNG file (8-bit RGB), base64-encoded.
    pub png_base64: String,
}
