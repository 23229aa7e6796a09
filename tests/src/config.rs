//! Daemon configurations for tests, rendered to the TOML that `vgpud
//! --config` reads.

use std::fmt::Write as _;
use std::path::Path;

use uuid::Uuid;

/// First vGPU of [`DaemonConfig::standard`].
pub const VGPU_A: Uuid = Uuid::from_u128(0x6f1c2a4e_0d4e_4a43_9f7b_3b1d8e0c1a01);
/// Second vGPU of [`DaemonConfig::standard`].
pub const VGPU_B: Uuid = Uuid::from_u128(0x6f1c2a4e_0d4e_4a43_9f7b_3b1d8e0c1a02);

/// A `[[gpu]]` table.
#[derive(Clone, Debug)]
pub struct GpuSpec {
    /// `id`.
    pub id: String,
    /// `vram`, e.g. `"64MiB"`.
    pub vram: String,
    /// `scheduler` (`"best-effort"`, `"equal-share"`, `"fixed-share"`);
    /// `None` leaves the key out (the daemon's default).
    pub scheduler: Option<String>,
    /// `time_slice_ms`; `None` leaves the key out.
    pub time_slice_ms: Option<u32>,
}

/// A `[[profile]]` table.
#[derive(Clone, Debug)]
pub struct ProfileSpec {
    /// `name`.
    pub name: String,
    /// `framebuffer`, e.g. `"16MiB"`.
    pub framebuffer: String,
    /// `max_instances`.
    pub max_instances: u32,
    /// `channels`.
    pub channels: u32,
    /// `max_resolution` as (width, height).
    pub max_resolution: (u32, u32),
    /// `subsystem_vendor_id` and `subsystem_id`, if set.
    pub subsystem: Option<(u16, u16)>,
    /// `weight` (the share under `fixed-share`); `None` leaves the key out.
    pub weight: Option<u32>,
}

/// A `[[vgpu]]` table.
#[derive(Clone, Debug)]
pub struct VgpuSpec {
    /// `uuid`.
    pub uuid: Uuid,
    /// `gpu`.
    pub gpu: String,
    /// `profile`.
    pub profile: String,
}

/// A whole configuration (without `runtime_dir`, which the harness picks).
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// Physical GPUs.
    pub gpus: Vec<GpuSpec>,
    /// Profiles.
    pub profiles: Vec<ProfileSpec>,
    /// Persistent vGPUs.
    pub vgpus: Vec<VgpuSpec>,
    /// Top-level `key = value` lines, as written (e.g. `max_dma_maps = 64`).
    pub top_level: Vec<String>,
}

/// Framebuffer of the standard profile, in bytes.
pub const STANDARD_FRAMEBUFFER: u64 = 16 << 20;
/// Channels of the standard profile.
pub const STANDARD_CHANNELS: u32 = 4;
/// Maximum resolution of the standard profile.
pub const STANDARD_MAX_RESOLUTION: (u32, u32) = (1920, 1080);
/// Subsystem ids of the standard profile.
pub const STANDARD_SUBSYSTEM: (u16, u16) = (0x1af4, 0x1100);

impl DaemonConfig {
    /// One simulated GPU with 64 MiB of VRAM and two vGPUs ([`VGPU_A`],
    /// [`VGPU_B`]) of a 16 MiB, 4-channel, 1920x1080 profile. Small, so that
    /// resets (which clear VRAM) stay cheap.
    pub fn standard() -> Self {
        DaemonConfig {
            gpus: vec![GpuSpec {
                id: "gpu0".into(),
                vram: "64MiB".into(),
                scheduler: None,
                time_slice_ms: None,
            }],
            profiles: vec![ProfileSpec {
                name: "test-16m".into(),
                framebuffer: "16MiB".into(),
                max_instances: 4,
                channels: STANDARD_CHANNELS,
                max_resolution: STANDARD_MAX_RESOLUTION,
                subsystem: Some(STANDARD_SUBSYSTEM),
                weight: None,
            }],
            vgpus: [VGPU_A, VGPU_B]
                .into_iter()
                .map(|uuid| VgpuSpec {
                    uuid,
                    gpu: "gpu0".into(),
                    profile: "test-16m".into(),
                })
                .collect(),
            top_level: Vec::new(),
        }
    }

    /// This configuration with a top-level `line` added.
    pub fn with(mut self, line: impl Into<String>) -> Self {
        self.top_level.push(line.into());
        self
    }

    /// The TOML text, with `runtime_dir` set to `runtime_dir`.
    pub fn render(&self, runtime_dir: &Path) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = writeln!(out, "runtime_dir = {:?}", runtime_dir.display().to_string());
        // Definitions beside the runtime directory, never in the host's
        // /var/lib/vgpud.
        let state_dir = runtime_dir.parent().unwrap_or(runtime_dir).join("state");
        let _ = writeln!(out, "state_dir = {:?}", state_dir.display().to_string());
        for line in &self.top_level {
            let _ = writeln!(out, "{line}");
        }
        for gpu in &self.gpus {
            let _ = write!(
                out,
                "\n[[gpu]]\nid = {:?}\nbackend = \"sim\"\nvram = {:?}\n",
                gpu.id, gpu.vram
            );
            if let Some(scheduler) = &gpu.scheduler {
                let _ = writeln!(out, "scheduler = {scheduler:?}");
            }
            if let Some(slice) = gpu.time_slice_ms {
                let _ = writeln!(out, "time_slice_ms = {slice}");
            }
        }
        for profile in &self.profiles {
            let _ = write!(
                out,
                "\n[[profile]]\nname = {:?}\nframebuffer = {:?}\nmax_instances = {}\n\
                 channels = {}\nmax_resolution = \"{}x{}\"\n",
                profile.name,
                profile.framebuffer,
                profile.max_instances,
                profile.channels,
                profile.max_resolution.0,
                profile.max_resolution.1
            );
            if let Some((vendor, id)) = profile.subsystem {
                let _ = write!(
                    out,
                    "subsystem_vendor_id = {vendor:#06x}\nsubsystem_id = {id:#06x}\n"
                );
            }
            if let Some(weight) = profile.weight {
                let _ = writeln!(out, "weight = {weight}");
            }
        }
        for vgpu in &self.vgpus {
            let _ = write!(
                out,
                "\n[[vgpu]]\nuuid = \"{}\"\ngpu = {:?}\nprofile = {:?}\n",
                vgpu.uuid, vgpu.gpu, vgpu.profile
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lines of the `[[header]]` table of `toml` that `header` opens
    /// first.
    fn table<'a>(toml: &'a str, header: &str) -> Vec<&'a str> {
        toml.lines()
            .skip_while(|line| *line != header)
            .skip(1)
            .take_while(|line| !line.starts_with("[["))
            .collect()
    }

    #[test]
    fn scheduler_keys_render_into_their_tables_only_when_set() {
        let mut config = DaemonConfig::standard();
        let runtime = Path::new("/nonexistent");
        let plain = config.render(runtime);
        assert!(!plain.contains("scheduler") && !plain.contains("weight"));
        config.gpus[0].scheduler = Some("fixed-share".into());
        config.gpus[0].time_slice_ms = Some(3);
        config.profiles[0].weight = Some(4);
        let toml = config.render(runtime);
        let gpu = table(&toml, "[[gpu]]");
        assert!(gpu.contains(&"scheduler = \"fixed-share\""), "{toml}");
        assert!(gpu.contains(&"time_slice_ms = 3"), "{toml}");
        assert!(
            table(&toml, "[[profile]]").contains(&"weight = 4"),
            "{toml}"
        );
    }
}
