//! The configuration file as written: serde structs that mirror the TOML
//! one to one, refuse unknown keys, and keep every value's source span so
//! that validation errors can point at the line and column to fix.

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub runtime_dir: Option<Spanned<String>>,
    pub max_dma_maps: Option<Spanned<i64>>,
    pub max_dma_bytes: Option<Spanned<String>>,
    pub state_dir: Option<Spanned<String>>,
    pub socket_owner: Option<Spanned<String>>,
    pub socket_group: Option<Spanned<String>>,
    pub socket_mode: Option<Spanned<RawMode>>,
    pub control_group: Option<Spanned<String>>,
    pub metrics_listen: Option<Spanned<String>>,
    pub metrics_allow_remote: Option<Spanned<bool>>,
    #[serde(default)]
    pub gpu: Vec<Spanned<RawGpu>>,
    #[serde(default)]
    pub profile: Vec<Spanned<RawProfile>>,
    #[serde(default)]
    pub vgpu: Vec<Spanned<RawVgpu>>,
}

/// One `[[gpu]]` table: a physical GPU.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGpu {
    pub id: Spanned<String>,
    pub backend: Option<Spanned<String>>,
    pub vram: Spanned<String>,
    pub scheduler: Option<Spanned<String>>,
    pub time_slice_ms: Option<Spanned<i64>>,
}

/// One `[[profile]]` table: a vGPU type.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProfile {
    pub name: Spanned<String>,
    pub framebuffer: Spanned<String>,
    pub max_instances: Spanned<i64>,
    pub channels: Option<Spanned<i64>>,
    pub max_resolution: Option<Spanned<String>>,
    pub subsystem_vendor_id: Option<Spanned<i64>>,
    pub subsystem_id: Option<Spanned<i64>>,
    pub weight: Option<Spanned<i64>>,
}

/// One `[[vgpu]]` table: a persistent vGPU.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVgpu {
    pub uuid: Spanned<String>,
    pub gpu: Spanned<String>,
    pub profile: Spanned<String>,
    pub socket_owner: Option<Spanned<String>>,
    pub socket_group: Option<Spanned<String>>,
    pub socket_mode: Option<Spanned<RawMode>>,
}

/// A `socket_mode`: octal digits in a string. A TOML integer (`0o660`,
/// or `660` read as decimal) is taken too, only so that the checker can
/// say to quote it instead of serde's "expected a string".
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub(super) enum RawMode {
    Text(String),
    Number(i64),
}
