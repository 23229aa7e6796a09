//! What `list`, `types`, `stats` and metrics report, read from the
//! registry. None of it takes the `changes` lock or a vGPU's register-path
//! locks: counters are atomics, and each vGPU's client slot is held only
//! for bounded work.

use vgpu_mdev::VgpuStats;

use super::Registry;
use crate::control::protocol::{
    GpuEntry, ListResult, TypeAvailability, TypeEntry, TypesResult, VgpuEntry, VgpuOrigin,
    VgpuState, VgpuStatsEntry,
};
use crate::metrics::{GpuMetrics, MetricsSnapshot};
use crate::vgpu::Vgpu;

impl Registry {
    /// `list`: the GPUs, the running vGPUs, and with `defined` the
    /// definitions that are not running.
    pub fn list(&self, defined: bool) -> ListResult {
        let gpus = self
            .gpu_order
            .iter()
            .map(|id| {
                let gpu = &self.gpus[id];
                GpuEntry {
                    id: id.clone(),
                    backend: gpu.backend.name().into(),
                    vram: gpu.parent.gpu().vram_size(),
                    vram_free: gpu.parent.gpu().vram_placement().free_bytes(),
                }
            })
            .collect();
        let definitions = self.definitions();
        let auto = |uuid| definitions.iter().any(|d| d.uuid == uuid && d.auto);
        let mut vgpus: Vec<VgpuEntry> = self
            .vgpus()
            .into_iter()
            .map(|(v, origin)| running_entry(&v, origin, auto(v.uuid())))
            .collect();
        if defined {
            for d in &definitions {
                if vgpus.iter().any(|v| v.uuid == d.uuid.to_string()) {
                    continue;
                }
                let profile = self.settings().profile(&d.profile).cloned();
                vgpus.push(VgpuEntry {
                    uuid: d.uuid.to_string(),
                    gpu: d.gpu.clone().unwrap_or_default(),
                    profile: d.profile.clone(),
                    socket: self.socket_path(d.uuid).display().to_string(),
                    state: VgpuState::Defined,
                    origin: VgpuOrigin::Defined,
                    auto: d.auto,
                    client_pid: None,
                    framebuffer: profile.as_ref().map_or(0, |p| p.framebuffer),
                    channels: profile.as_ref().map_or(0, |p| p.channels),
                    max_resolution: profile.as_ref().map_or_else(String::new, |p| {
                        format!("{}x{}", p.max_resolution.0, p.max_resolution.1)
                    }),
                    attached: false,
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
                });
            }
            vgpus.sort_by(|a, b| a.uuid.cmp(&b.uuid));
        }
        ListResult { gpus, vgpus }
    }

    /// `types`: every profile and how many more fit on each GPU (or on
    /// `gpu` only).
    pub fn types(&self, gpu: Option<&str>) -> TypesResult {
        let profiles = self.settings().profiles.clone();
        let types = profiles
            .iter()
            .map(|p| TypeEntry {
                profile: p.name.clone(),
                framebuffer: p.framebuffer,
                channels: p.channels,
                max_resolution: format!("{}x{}", p.max_resolution.0, p.max_resolution.1),
                max_instances: p.max_instances,
                weight: p.weight,
                available: self
                    .gpu_order
                    .iter()
                    .filter(|id| gpu.is_none_or(|g| g == id.as_str()))
                    .map(|id| TypeAvailability {
                        gpu: id.clone(),
                        instances: self.gpus[id].parent.available(p),
                    })
                    .collect(),
            })
            .collect();
        TypesResult { types }
    }

    /// `stats`: the counters of every running vGPU.
    pub fn stats(&self) -> Vec<VgpuStatsEntry> {
        self.vgpus().iter().map(|(v, _)| stats_entry(v)).collect()
    }

    /// Nanoseconds since the daemon started.
    pub fn time_ns(&self) -> u64 {
        u64::try_from(self.uptime().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Everything a metrics scrape reports.
    pub fn metrics(&self) -> MetricsSnapshot {
        let vgpus = self.stats();
        let gpus = self
            .gpu_order
            .iter()
            .map(|id| {
                let gpu = &self.gpus[id];
                let on = vgpus.iter().filter(|v| v.gpu == *id);
                GpuMetrics {
                    id: id.clone(),
                    backend: gpu.backend.name().into(),
                    vram_bytes: gpu.parent.gpu().vram_size(),
                    vram_free_bytes: gpu.parent.gpu().vram_placement().free_bytes(),
                    vgpus: on.clone().count() as u64,
                    vgpus_attached: on.filter(|v| v.state == VgpuState::Attached).count() as u64,
                }
            })
            .collect();
        MetricsSnapshot {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime: self.uptime(),
            open_fds: open_fds(),
            control_connections: VgpuStats::get(&self.control.connections),
            control_requests: self.control.requests(),
            control_errors: self.control.errors(),
            gpus,
            vgpus,
        }
    }
}

fn state_of(v: &Vgpu) -> VgpuState {
    if v.is_attached() {
        VgpuState::Attached
    } else {
        VgpuState::Listening
    }
}

fn running_entry(v: &Vgpu, origin: VgpuOrigin, auto: bool) -> VgpuEntry {
    let p = v.profile();
    let stats = stats_entry(v);
    VgpuEntry {
        uuid: stats.uuid,
        gpu: stats.gpu,
        profile: stats.profile,
        socket: v.socket_path().display().to_string(),
        state: stats.state,
        origin,
        auto,
        client_pid: stats.client_pid,
        framebuffer: p.framebuffer,
        channels: p.channels,
        max_resolution: format!("{}x{}", p.max_resolution.0, p.max_resolution.1),
        attached: stats.state == VgpuState::Attached,
        refused_messages: stats.refused_messages,
        mmu_faults: stats.mmu_faults,
        refused_ptes: stats.refused_ptes,
        interrupts: stats.interrupts,
        interrupts_coalesced: stats.interrupts_coalesced,
        max_dma_maps: v.dma_allowance().windows,
        max_dma_bytes: v.dma_allowance().mapped_bytes,
        submissions: stats.submissions,
        commands: stats.commands,
        refused_submissions: stats.refused_submissions,
        engine_run_ns: stats.engine_run_ns,
        engine_wait_ns: stats.engine_wait_ns,
        engine_idle_ns: stats.engine_idle_ns,
    }
}

fn stats_entry(v: &Vgpu) -> VgpuStatsEntry {
    let engine = v.device().engine_time();
    let stats = v.stats();
    VgpuStatsEntry {
        uuid: v.uuid().to_string(),
        gpu: v.gpu_id().to_string(),
        profile: v.profile().name.clone(),
        state: state_of(v),
        client_pid: v.client_pid(),
        register_reads: VgpuStats::get(&stats.register_reads),
        register_writes: VgpuStats::get(&stats.register_writes),
        refused_messages: VgpuStats::get(&stats.refusals),
        mmu_faults: VgpuStats::get(&stats.mmu_faults),
        refused_ptes: VgpuStats::get(&stats.refused_ptes),
        dma_maps: VgpuStats::get(&stats.dma_maps),
        dma_bytes: VgpuStats::get(&stats.dma_bytes),
        interrupts: VgpuStats::get(&stats.interrupts),
        interrupts_coalesced: VgpuStats::get(&stats.interrupts_coalesced),
        vram_touched: v.vram().aperture().resident_bytes(),
        vram_size: v.vram().size(),
        submissions: VgpuStats::get(&stats.submissions),
        commands: VgpuStats::get(&stats.commands),
        refused_submissions: VgpuStats::get(&stats.refused_submissions),
        engine_run_ns: engine.run_ns,
        engine_wait_ns: engine.wait_ns,
        engine_idle_ns: engine.idle_ns,
    }
}

/// File descriptors the daemon has open (entries of /proc/self/fd).
fn open_fds() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count().saturating_sub(1) as u64)
}
