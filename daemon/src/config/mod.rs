//! The daemon's configuration: TOML in, a validated [`Config`] out.
//!
//! Parsing happens in two steps, as in rathole: [`raw`] mirrors the file
//! (unknown keys refused, spans kept), then [`Config::parse`] checks every
//! rule and builds a config with no `Option` left to unwrap at run time.
//! All problems are reported at once, each with `file:line:column`, what is
//! wrong and what would fix it. The keys are documented in
//! `docs/configuration.md`.

mod error;
mod raw;
mod reach;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use toml::Spanned;
use uuid::Uuid;
use vgpu_mdev::{ByteSize, DmaAllowance, Profile, SliceAllocator};

use crate::access::SocketAccess;
pub use error::{ConfigError, Diagnostic, Location};
pub(crate) use error::{Diagnostics, SourceMap};
use raw::{RawConfig, RawGpu, RawProfile, RawVgpu};
use reach::RawAccess;

/// Where sockets go when the file does not say.
pub const DEFAULT_RUNTIME_DIR: &str = "/run/vgpud";
/// Where persistent definitions go when the file does not say.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/vgpud";
/// Channels of a profile that does not say.
pub const DEFAULT_CHANNELS: u32 = 1;
/// Display limit of a profile that does not say.
pub const DEFAULT_MAX_RESOLUTION: (u32, u32) = (1024, 768);
/// PCI subsystem ids of a profile that does not say.
pub const DEFAULT_SUBSYSTEM_VENDOR_ID: u16 = 0x1234;
pub const DEFAULT_SUBSYSTEM_ID: u16 = 0x1100;
/// Most channels a profile may have.
pub use vgpu_mdev::MAX_CHANNELS;
use vgpu_mdev::{SchedulingPolicy, TimeSlice};
/// The display limits: the EDID's detailed timing has 12 bits per side.
pub const MIN_RESOLUTION: (u32, u32) = (320, 200);
pub const MAX_RESOLUTION: (u32, u32) = (
    vgpu_mdev::MAX_RESOLUTION_SIDE,
    vgpu_mdev::MAX_RESOLUTION_SIDE,
);
/// Smallest framebuffer a profile may have.
pub const MIN_FRAMEBUFFER: u64 = 1 << 20;
/// DMA windows a vGPU's client may hold when the file does not say.
pub const DEFAULT_MAX_DMA_MAPS: u64 = 1024;
/// The most DMA windows a vGPU may be allowed (what Linux's vfio allows a
/// container by default).
pub const MAX_MAX_DMA_MAPS: u64 = 65535;
/// Bytes of fd-backed DMA windows a vGPU's client may have mapped when the
/// file does not say.
pub const DEFAULT_MAX_DMA_BYTES: u64 = 256 << 30;
/// Smallest `max_dma_bytes`: one page.
pub const MIN_MAX_DMA_BYTES: u64 = 4096;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory of the vGPU sockets and the control socket.
    pub runtime_dir: PathBuf,
    /// Directory of the persistent vGPU definitions.
    pub state_dir: PathBuf,
    /// Owner, group and mode of a vGPU socket whose definition does not
    /// say: the top-level `socket_*` keys over the built-in default.
    pub socket_access: SocketAccess,
    /// Owner, group and mode of the control socket (`control_group`).
    pub control_access: SocketAccess,
    /// Where to serve metrics over HTTP; `None` serves none.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether `metrics_listen` may be an address other hosts can reach
    /// (already enforced: a non-loopback `metrics_listen` implies it).
    pub metrics_allow_remote: bool,
    /// What each vGPU's client may make the daemon hold in DMA windows.
    pub dma: DmaAllowance,
    pub gpus: Vec<GpuConfig>,
    pub profiles: Vec<Arc<Profile>>,
    /// Persistent vGPUs, created at start-up in this order.
    pub vgpus: Vec<VgpuConfig>,
}

/// A physical GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuConfig {
    pub id: String,
    pub backend: Backend,
    /// VRAM in bytes.
    pub vram: u64,
    /// How the GPU's engines are shared among its vGPUs.
    pub scheduler: SchedulingPolicy,
    /// The scheduler's time slice.
    pub time_slice: TimeSlice,
}

/// Which implementation of the physical GPU to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The simulated GPU, the embedded default.
    Sim,
}

impl Backend {
    const NAMES: &[(&str, Backend)] = &[("sim", Backend::Sim)];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sim => "sim",
        }
    }
}

/// A persistent vGPU.
#[derive(Debug, Clone)]
pub struct VgpuConfig {
    pub uuid: Uuid,
    /// Id of the physical GPU it is carved from.
    pub gpu: String,
    pub profile: Arc<Profile>,
    /// Who may connect to its socket: its own `socket_*` keys over
    /// [`Config::socket_access`].
    pub access: SocketAccess,
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Validates `text`; `path` only names the file in messages.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let map = SourceMap::new(path, text);
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span().unwrap_or(0..0);
            let problem = e.message().trim_end().to_string();
            let help = syntax_help(&problem);
            ConfigError::Invalid(vec![map.diagnostic(span, problem, help)])
        })?;
        let mut checker = Checker {
            map,
            diagnostics: Vec::new(),
        };
        let config = checker.check(raw);
        if checker.diagnostics.is_empty() {
            Ok(config)
        } else {
            checker
                .diagnostics
                .sort_by_key(|d| (d.location.line, d.location.column));
            Err(ConfigError::Invalid(checker.diagnostics))
        }
    }

    /// The GPU with this id.
    pub fn gpu(&self, id: &str) -> Option<&GpuConfig> {
        self.gpus.iter().find(|g| g.id == id)
    }

    /// The profile with this name.
    pub fn profile(&self, name: &str) -> Option<&Arc<Profile>> {
        self.profiles.iter().find(|p| p.name == name)
    }
}

fn syntax_help(problem: &str) -> Option<String> {
    if problem.starts_with("unknown field") {
        Some("remove the key or fix its spelling; docs/configuration.md lists every key".into())
    } else if problem.contains("missing field") {
        Some("add the key; docs/configuration.md says what it takes".into())
    } else {
        None
    }
}

struct Checker<'a> {
    map: SourceMap<'a>,
    diagnostics: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error(&mut self, span: Range<usize>, problem: impl Into<String>, help: Option<String>) {
        let d = self.map.diagnostic(span, problem, help);
        self.diagnostics.push(d);
    }

    fn check(&mut self, raw: RawConfig) -> Config {
        let runtime_dir = match raw.runtime_dir {
            Some(dir) if dir.get_ref().is_empty() => {
                self.error(
                    dir.span(),
                    "runtime_dir is empty",
                    Some(format!("name a directory, e.g. \"{DEFAULT_RUNTIME_DIR}\"")),
                );
                PathBuf::new()
            }
            Some(dir) => PathBuf::from(dir.into_inner()),
            None => PathBuf::from(DEFAULT_RUNTIME_DIR),
        };
        let state_dir = match raw.state_dir {
            Some(dir) if dir.get_ref().is_empty() => {
                self.error(
                    dir.span(),
                    "state_dir is empty",
                    Some(format!("name a directory, e.g. \"{DEFAULT_STATE_DIR}\"")),
                );
                PathBuf::new()
            }
            Some(dir) => PathBuf::from(dir.into_inner()),
            None => PathBuf::from(DEFAULT_STATE_DIR),
        };
        let socket_access = self.socket_access(
            RawAccess {
                owner: raw.socket_owner.as_ref(),
                group: raw.socket_group.as_ref(),
                mode: raw.socket_mode.as_ref(),
            },
            &SocketAccess::VGPU_DEFAULT,
        );
        let control_access = self.control_access(raw.control_group.as_ref());
        let (metrics_listen, metrics_allow_remote) = self.metrics(
            raw.metrics_listen.as_ref(),
            raw.metrics_allow_remote.as_ref(),
        );

        let windows = match &raw.max_dma_maps {
            Some(n) => self
                .ranged(n, "max_dma_maps", 1, MAX_MAX_DMA_MAPS as i64)
                .map(u64::from),
            None => Some(DEFAULT_MAX_DMA_MAPS),
        };
        let mapped_bytes = match &raw.max_dma_bytes {
            Some(size) => self.size(size, "max_dma_bytes").and_then(|bytes| {
                if bytes < MIN_MAX_DMA_BYTES {
                    self.error(
                        size.span(),
                        format!("max_dma_bytes {} is below one page", ByteSize(bytes)),
                        Some(
                            "give at least the guest's RAM, e.g. max_dma_bytes = \"64GiB\"".into(),
                        ),
                    );
                    None
                } else {
                    Some(bytes)
                }
            }),
            None => Some(DEFAULT_MAX_DMA_BYTES),
        };
        let dma = DmaAllowance {
            windows: windows.unwrap_or(DEFAULT_MAX_DMA_MAPS),
            mapped_bytes: mapped_bytes.unwrap_or(DEFAULT_MAX_DMA_BYTES),
        };

        let mut gpus: Vec<(GpuConfig, Range<usize>)> = Vec::new();
        for gpu in raw.gpu {
            let span = gpu.span();
            if let Some(g) = self.check_gpu(gpu.into_inner()) {
                if let Some((_, first)) = gpus.iter().find(|(o, _)| o.id == g.id) {
                    let first = self.map.locate(first.clone());
                    self.error(
                        span,
                        format!(
                            "duplicate gpu id \"{}\" (first defined at line {})",
                            g.id, first.line
                        ),
                        Some("give every [[gpu]] its own id".into()),
                    );
                } else {
                    gpus.push((g, span));
                }
            }
        }

        let mut profiles: Vec<(Arc<Profile>, Range<usize>)> = Vec::new();
        for profile in raw.profile {
            let span = profile.span();
            if let Some(p) = self.check_profile(profile.into_inner()) {
                if let Some((_, first)) = profiles.iter().find(|(o, _)| o.name == p.name) {
                    let first = self.map.locate(first.clone());
                    self.error(
                        span,
                        format!(
                            "duplicate profile name \"{}\" (first defined at line {})",
                            p.name, first.line
                        ),
                        Some("give every [[profile]] its own name".into()),
                    );
                } else {
                    profiles.push((Arc::new(p), span));
                }
            }
        }

        let vgpus = self.check_vgpus(raw.vgpu, &gpus, &profiles, &socket_access);

        Config {
            runtime_dir,
            state_dir,
            socket_access,
            control_access,
            metrics_listen,
            metrics_allow_remote,
            dma,
            gpus: gpus.into_iter().map(|(g, _)| g).collect(),
            profiles: profiles.into_iter().map(|(p, _)| p).collect(),
            vgpus,
        }
    }

    fn check_gpu(&mut self, raw: RawGpu) -> Option<GpuConfig> {
        let mut ok = true;
        let id = raw.id.get_ref().clone();
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            self.error(
                raw.id.span(),
                format!("gpu id \"{id}\" is not a plain name"),
                Some("use letters, digits, '-' and '_', e.g. \"gpu0\"".into()),
            );
            ok = false;
        }
        let backend = match &raw.backend {
            None => Backend::Sim,
            Some(b) => match Backend::NAMES.iter().find(|(n, _)| n == b.get_ref()) {
                Some((_, backend)) => *backend,
                None => {
                    let known: Vec<&str> = Backend::NAMES.iter().map(|(n, _)| *n).collect();
                    self.error(
                        b.span(),
                        format!("unknown gpu backend \"{}\"", b.get_ref()),
                        Some(format!("backends: {}", known.join(", "))),
                    );
                    ok = false;
                    Backend::Sim
                }
            },
        };
        let vram = self.size(&raw.vram, "vram");
        if let Some(v) = vram
            && (v < MIN_FRAMEBUFFER || v % MIN_FRAMEBUFFER != 0)
        {
            self.error(
                raw.vram.span(),
                format!(
                    "vram {} is not a whole number of MiB (at least 1 MiB)",
                    ByteSize(v)
                ),
                Some("VRAM is carved in MiB units, e.g. vram = \"4GiB\"".into()),
            );
            ok = false;
        }
        let scheduler = match &raw.scheduler {
            None => SchedulingPolicy::BestEffort,
            Some(name) => match name.get_ref().parse() {
                Ok(policy) => policy,
                Err(_) => {
                    let known: Vec<&str> = SchedulingPolicy::ALL.iter().map(|p| p.name()).collect();
                    self.error(
                        name.span(),
                        format!("unknown scheduler \"{}\"", name.get_ref()),
                        Some(format!("schedulers: {}", known.join(", "))),
                    );
                    ok = false;
                    SchedulingPolicy::BestEffort
                }
            },
        };
        let time_slice = match &raw.time_slice_ms {
            None => Some(TimeSlice::default()),
            Some(ms) => self
                .ranged(
                    ms,
                    "time_slice_ms",
                    TimeSlice::MIN_MS as i64,
                    TimeSlice::MAX_MS as i64,
                )
                .and_then(|ms| TimeSlice::from_millis(u64::from(ms)).ok()),
        };
        Some(GpuConfig {
            id,
            backend,
            vram: vram?,
            scheduler,
            time_slice: time_slice?,
        })
        .filter(|_| ok)
    }

    fn check_profile(&mut self, raw: RawProfile) -> Option<Profile> {
        let mut ok = true;
        let name = raw.name.get_ref().clone();
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            self.error(
                raw.name.span(),
                format!("profile name \"{name}\" is empty or has spaces"),
                Some("use a name such as \"vgpu-1g\"".into()),
            );
            ok = false;
        }
        let framebuffer = self.size(&raw.framebuffer, "framebuffer");
        if let Some(fb) = framebuffer
            && (fb == 0 || !fb.is_power_of_two() || fb < MIN_FRAMEBUFFER)
        {
            let below = prev_power_of_two(fb).max(MIN_FRAMEBUFFER);
            self.error(
                raw.framebuffer.span(),
                format!(
                    "framebuffer {} is not a power of two of at least 1 MiB",
                    ByteSize(fb)
                ),
                Some(format!(
                    "the VRAM slice is a power-of-two BAR: use e.g. \"{}\" or \"{}\"",
                    ByteSize(below),
                    ByteSize(below.saturating_mul(2))
                )),
            );
            ok = false;
        }
        let max_instances = self.ranged(&raw.max_instances, "max_instances", 1, u32::MAX as i64);
        let channels = match &raw.channels {
            Some(c) => self.ranged(c, "channels", 1, MAX_CHANNELS as i64),
            None => Some(DEFAULT_CHANNELS),
        };
        let max_resolution = match &raw.max_resolution {
            Some(r) => self.resolution(r),
            None => Some(DEFAULT_MAX_RESOLUTION),
        };
        let subsystem_vendor_id = match &raw.subsystem_vendor_id {
            Some(v) => self
                .ranged(v, "subsystem_vendor_id", 0, 0xffff)
                .map(|v| v as u16),
            None => Some(DEFAULT_SUBSYSTEM_VENDOR_ID),
        };
        let subsystem_id = match &raw.subsystem_id {
            Some(v) => self.ranged(v, "subsystem_id", 0, 0xffff).map(|v| v as u16),
            None => Some(DEFAULT_SUBSYSTEM_ID),
        };
        let weight = match &raw.weight {
            Some(v) => self.ranged(v, "weight", 1, i64::from(vgpu_mdev::MAX_WEIGHT)),
            None => Some(1),
        };
        if let (Some(fb), Some((w, h))) = (framebuffer, max_resolution) {
            let frame = u64::from(w) * u64::from(h) * 4;
            if fb.is_power_of_two() && frame > fb {
                let span = raw
                    .max_resolution
                    .as_ref()
                    .map_or(raw.framebuffer.span(), |r| r.span());
                self.error(
                    span,
                    format!(
                        "a {w}x{h} 32-bit frame ({}) does not fit the {} framebuffer",
                        ByteSize(frame),
                        ByteSize(fb)
                    ),
                    Some(format!(
                        "raise framebuffer to at least \"{}\" or lower max_resolution",
                        ByteSize(frame.next_power_of_two())
                    )),
                );
                ok = false;
            }
        }
        let profile = Profile {
            name,
            framebuffer: framebuffer?,
            max_instances: max_instances?,
            channels: channels?,
            max_resolution: max_resolution?,
            subsystem_vendor_id: subsystem_vendor_id?,
            subsystem_id: subsystem_id?,
            weight: weight?,
        };
        if ok {
            // The device model's own rules are the last word; the checks
            // above only exist to point at the right key.
            if let Err(e) = profile.validate() {
                self.error(
                    raw.name.span(),
                    format!("profile \"{}\": {e}", profile.name),
                    None,
                );
                ok = false;
            }
        }
        Some(profile).filter(|_| ok)
    }

    fn check_vgpus(
        &mut self,
        raw: Vec<Spanned<RawVgpu>>,
        gpus: &[(GpuConfig, Range<usize>)],
        profiles: &[(Arc<Profile>, Range<usize>)],
        socket_access: &SocketAccess,
    ) -> Vec<VgpuConfig> {
        let mut seen: HashMap<Uuid, Range<usize>> = HashMap::new();
        let mut counts: HashMap<(String, String), u32> = HashMap::new();
        // Placement is dry-run with the allocator the GPU itself uses, in
        // file order, so a configuration accepted here is one that start-up
        // can create.
        let mut allocators: HashMap<String, SliceAllocator> = gpus
            .iter()
            .filter_map(|(g, _)| {
                Some((
                    g.id.clone(),
                    SliceAllocator::new(g.id.clone(), g.vram).ok()?,
                ))
            })
            .collect();
        let mut unplaced: Vec<(String, Range<usize>, Uuid, u64)> = Vec::new();
        let mut vgpus = Vec::new();

        for entry in raw {
            let span = entry.span();
            let v = entry.into_inner();
            let access = self.socket_access(
                RawAccess {
                    owner: v.socket_owner.as_ref(),
                    group: v.socket_group.as_ref(),
                    mode: v.socket_mode.as_ref(),
                },
                socket_access,
            );
            let uuid = match Uuid::try_parse(v.uuid.get_ref()) {
                Ok(u) => Some(u),
                Err(e) => {
                    self.error(
                        v.uuid.span(),
                        format!("\"{}\" is not a UUID: {e}", v.uuid.get_ref()),
                        Some("write it as 8-4-4-4-12 hex digits; `uuidgen` makes one".into()),
                    );
                    None
                }
            };
            if let Some(u) = uuid {
                if let Some(first) = seen.get(&u) {
                    let first = self.map.locate(first.clone());
                    self.error(
                        v.uuid.span(),
                        format!(
                            "duplicate vGPU uuid {u} (first used at line {})",
                            first.line
                        ),
                        Some("every vGPU needs its own UUID".into()),
                    );
                    continue;
                }
                seen.insert(u, v.uuid.span());
            }
            let gpu = gpus.iter().find(|(g, _)| g.id == *v.gpu.get_ref());
            if gpu.is_none() {
                let known: Vec<&str> = gpus.iter().map(|(g, _)| g.id.as_str()).collect();
                self.error(
                    v.gpu.span(),
                    format!("unknown gpu \"{}\"", v.gpu.get_ref()),
                    Some(one_of("gpu", "[[gpu]]", &known)),
                );
            }
            let profile = profiles
                .iter()
                .find(|(p, _)| p.name == *v.profile.get_ref());
            if profile.is_none() {
                let known: Vec<&str> = profiles.iter().map(|(p, _)| p.name.as_str()).collect();
                self.error(
                    v.profile.span(),
                    format!("unknown profile \"{}\"", v.profile.get_ref()),
                    Some(one_of("profile", "[[profile]]", &known)),
                );
            }
            let (Some(uuid), Some((gpu, _)), Some((profile, _))) = (uuid, gpu, profile) else {
                continue;
            };

            let count = counts
                .entry((gpu.id.clone(), profile.name.clone()))
                .or_default();
            *count += 1;
            if *count > profile.max_instances {
                self.error(
                    span,
                    format!(
                        "vGPU {uuid} is instance {} of profile \"{}\" on {}, which allows {}",
                        count, profile.name, gpu.id, profile.max_instances
                    ),
                    Some("raise max_instances of the profile or remove a [[vgpu]]".into()),
                );
                continue;
            }
            let Some(allocator) = allocators.get_mut(&gpu.id) else {
                continue;
            };
            if allocator.allocate(profile.framebuffer).is_err() {
                unplaced.push((gpu.id.clone(), span, uuid, profile.framebuffer));
                continue;
            }
            vgpus.push(VgpuConfig {
                uuid,
                gpu: gpu.id.clone(),
                profile: profile.clone(),
                access,
            });
        }
        self.report_unplaced(gpus, &vgpus, &unplaced, &allocators);
        vgpus
    }

    /// One error per GPU whose vGPUs do not all fit, at the first that does
    /// not, naming the whole shortfall so one edit fixes it.
    fn report_unplaced(
        &mut self,
        gpus: &[(GpuConfig, Range<usize>)],
        placed: &[VgpuConfig],
        unplaced: &[(String, Range<usize>, Uuid, u64)],
        allocators: &HashMap<String, SliceAllocator>,
    ) {
        let mut reported: HashSet<&str> = HashSet::new();
        for (gpu_id, span, uuid, framebuffer) in unplaced {
            if !reported.insert(gpu_id) {
                continue;
            }
            let Some((gpu, _)) = gpus.iter().find(|(g, _)| g.id == *gpu_id) else {
                continue;
            };
            let demand: u64 = placed
                .iter()
                .filter(|v| v.gpu == *gpu_id)
                .map(|v| v.profile.framebuffer)
                .chain(unplaced.iter().filter(|u| u.0 == *gpu_id).map(|u| u.3))
                .sum();
            let problem = if demand > gpu.vram {
                format!(
                    "the vGPUs on {gpu_id} need {} of VRAM but it has {}: {} short",
                    ByteSize(demand),
                    ByteSize(gpu.vram),
                    ByteSize(demand - gpu.vram)
                )
            } else {
                let free = allocators.get(gpu_id).map_or(0, SliceAllocator::free_bytes);
                format!(
                    "vGPU {uuid} does not fit on {gpu_id}: no aligned free block for its {} slice ({} free in smaller blocks)",
                    ByteSize(*framebuffer),
                    ByteSize(free),
                )
            };
            self.error(
                span.clone(),
                problem,
                Some(format!(
                    "raise vram of {gpu_id}, or use smaller profiles or fewer vGPUs"
                )),
            );
        }
    }

    fn size(&mut self, value: &Spanned<String>, key: &str) -> Option<u64> {
        match value.get_ref().parse::<ByteSize>() {
            Ok(size) => Some(size.0),
            Err(e) => {
                self.error(
                    value.span(),
                    format!("{key} \"{}\" is not a size: {e}", value.get_ref()),
                    Some("write sizes like \"512MiB\" or \"4GiB\" (units KiB, MiB, GiB)".into()),
                );
                None
            }
        }
    }

    fn ranged(&mut self, value: &Spanned<i64>, key: &str, min: i64, max: i64) -> Option<u32> {
        let v = *value.get_ref();
        if (min..=max).contains(&v) {
            Some(v as u32)
        } else {
            self.error(
                value.span(),
                format!("{key} = {v} is out of range"),
                Some(format!("{key} takes {min} to {max}")),
            );
            None
        }
    }

    fn resolution(&mut self, value: &Spanned<String>) -> Option<(u32, u32)> {
        let text = value.get_ref();
        let parsed = text.split_once(['x', 'X']).and_then(|(w, h)| {
            Some((w.trim().parse::<u32>().ok()?, h.trim().parse::<u32>().ok()?))
        });
        let help = Some(format!(
            "write WIDTHxHEIGHT between {}x{} and {}x{}, e.g. \"1920x1080\"",
            MIN_RESOLUTION.0, MIN_RESOLUTION.1, MAX_RESOLUTION.0, MAX_RESOLUTION.1
        ));
        match parsed {
            Some((w, h))
                if (MIN_RESOLUTION.0..=MAX_RESOLUTION.0).contains(&w)
                    && (MIN_RESOLUTION.1..=MAX_RESOLUTION.1).contains(&h) =>
            {
                Some((w, h))
            }
            Some(_) => {
                self.error(
                    value.span(),
                    format!("max_resolution \"{text}\" is out of range"),
                    help,
                );
                None
            }
            None => {
                self.error(
                    value.span(),
                    format!("max_resolution \"{text}\" is not WIDTHxHEIGHT"),
                    help,
                );
                None
            }
        }
    }
}

fn one_of(what: &str, table: &str, known: &[&str]) -> String {
    if known.is_empty() {
        format!("no {table} is defined: add one, or fix the {what} name")
    } else {
        format!("defined {what}s: {}", known.join(", "))
    }
}

fn prev_power_of_two(v: u64) -> u64 {
    if v == 0 {
        0
    } else {
        1 << (63 - v.leading_zeros())
    }
}

#[cfg(test)]
mod tests;
