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
    /// The daemon is doing as much of this as it allows at once; try
    /// again.
    Busy,
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

/// A vGPU in `list`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct VgpuEntry {
    pub uuid: String,
    pub gpu: String,
    pub profile: String,
    pub socket: String,
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
