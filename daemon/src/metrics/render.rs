//! The Prometheus text exposition (format 0.0.4) of one snapshot, written by
//! the `prometheus` crate's `TextEncoder` from metric families built afresh
//! for every scrape: nothing is kept between scrapes, so a removed vGPU's
//! series simply stop appearing.

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{CounterVec, Gauge, GaugeVec, Opts, Registry, TextEncoder};

use super::MetricsSnapshot;
use crate::control::protocol::{MetricsResult, VgpuState, VgpuStatsEntry};

/// The `Content-Type` of [`render`]'s text.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Labels of every per-vGPU series.
const VGPU_LABELS: [&str; 3] = ["vgpu", "profile", "gpu"];

#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
}

/// One per-vGPU family: its name, help, type and where its value comes from.
struct VgpuFamily {
    name: &'static str,
    help: &'static str,
    kind: Kind,
    value: fn(&VgpuStatsEntry) -> f64,
}

/// Nanoseconds as seconds, the unit Prometheus wants for time.
fn seconds(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Every per-vGPU family, one per field of [`VgpuStatsEntry`].
/// `docs/metrics.md` lists the same table.
const VGPU_FAMILIES: &[VgpuFamily] = &[
    VgpuFamily {
        name: "vgpud_vgpu_register_reads_total",
        help: "Emulated register reads (config space and BARs).",
        kind: Kind::Counter,
        value: |e| e.register_reads as f64,
    },
    VgpuFamily {
        name: "vgpud_vgpu_register_writes_total",
        help: "Emulated register writes (config space and BARs).",
        kind: Kind::Counter,
        value: |e| e.register_writes as f64,
    },
    VgpuFamily {
        name: "vgpud_vgpu_refused_messages_total",
        help: "vfio-user messages from the client that were refused.",
        kind: Kind::Counter,
        value: |e| e.refused_messages as f64,
    },
    VgpuFamily {
        name: "vgpud_vgpu_mmu_faults_total",
        help: "GPU MMU accesses that faulted.",
        kind: Kind::Counter,
        value: |e| e.mmu_faults as f64,
    },
    VgpuFamily {
        name: "vgpud_vgpu_refused_ptes_total",
        help: "Guest page-table entries refused by the shadow MMU.",
        kind: Kind::Counter,
        value: |e| e.refused_ptes as f64,
    },
    VgpuFamily {
        name: "vgpud_vgpu_dma_maps",
        help: "DMA windows the client holds now.",
        kind: Kind::Gauge,
        value: |e| e.dma_maps as f64,
    },
    VgpuFamily {
        name: "vgpud_vgpu_dma_bytes",
        help: "Bytes of guest memory in the client's DMA windows now.",
        kind: Kind::Gauge,
        value: |e| e.dma_bytes as f64,
    },
    VgpuFamily {
        name: "vgpud_vgpu_interrupts_total",
        help: "Interrupts signalled to the client.",
        kind: Kind::Counter,
        value: |e| e.interrupts as f64,
    },
    VgpuFamily {
        name: "vgpud_vgpu_interrupts_coalesced_total",
        help: "Interrupts merged into an earlier one still pending.",
        kind: Kind::Counter,
        value: |e| e.interrupts_coalesced as f64,
    },
    VgpuFamily {
        name: "vgpud_vgpu_vram_touched_bytes",
        help: "Bytes of the VRAM slice that hold memory (pages written since the last client attached).",
        kind: Kind::Gauge,
        value: |e| e.vram_touched as f64,
    },
    VgpuFamily {
        name: "vgpud_vgpu_vram_size_bytes",
        help: "Bytes of the vGPU's VRAM slice.",
        kind: Kind::Gauge,
        value: |e| e.vram_size as f64,
    },
    VgpuFamily {
        name: "vgpud_vgpu_submissions_total",
        help: "Ring spans validated and queued to the engine.",
        kind: Kind::Counter,
        value: |e| e.submissions as f64,
    },
    VgpuFamily {
        name: "vgpud_vgpu_commands_total",
        help: "Commands in the validated ring spans.",
        kind: Kind::Counter,
        value: |e| e.commands as f64,
    },
    VgpuFamily {
        name: "vgpud_vgpu_refused_submissions_total",
        help: "Ring spans the command validator refused.",
        kind: Kind::Counter,
        value: |e| e.refused_submissions as f64,
    },
    VgpuFamily {
        name: "vgpud_vgpu_engine_run_seconds_total",
        help: "Seconds the vGPU's work held the GPU's engine, overruns included.",
        kind: Kind::Counter,
        value: |e| seconds(e.engine_run_ns),
    },
    VgpuFamily {
        name: "vgpud_vgpu_engine_wait_seconds_total",
        help: "Seconds the vGPU had work but did not hold the engine (another vGPU ran, or its share was used up).",
        kind: Kind::Counter,
        value: |e| seconds(e.engine_wait_ns),
    },
    VgpuFamily {
        name: "vgpud_vgpu_engine_idle_seconds_total",
        help: "Seconds the vGPU had no work and did not hold the engine.",
        kind: Kind::Counter,
        value: |e| seconds(e.engine_idle_ns),
    },
    VgpuFamily {
        name: "vgpud_vgpu_attached",
        help: "1 if a client is attached to the vGPU, 0 if its socket is listening.",
        kind: Kind::Gauge,
        value: |e| f64::from(u8::from(e.state == VgpuState::Attached)),
    },
];

/// The exposition of `snapshot`. Families with no series (no vGPUs yet, no
/// control request yet) are left out, as Prometheus clients do.
pub fn render(snapshot: &MetricsSnapshot) -> String {
    let families = match families(snapshot) {
        Ok(families) => families,
        Err(error) => {
            // Only a bad metric or label name, fixed in this file, gets
            // here; the tests render every family, so it is a bug.
            tracing::error!(%error, "metrics: building the metric families failed");
            return String::new();
        }
    };
    let mut text = String::new();
    if let Err(error) = TextEncoder::new().encode_utf8(&families, &mut text) {
        // The registry leaves out empty families, the encoder's only
        // refusal: a bug as above.
        tracing::error!(%error, "metrics: encoding failed");
    }
    text
}

/// The answer to the control command `metrics`: the same text as the HTTP
/// endpoint serves.
pub fn control_result(snapshot: &MetricsSnapshot) -> MetricsResult {
    MetricsResult {
        content_type: CONTENT_TYPE.to_owned(),
        text: render(snapshot),
    }
}

/// The metric families of `snapshot`, sorted by name, series sorted by
/// label values.
fn families(snapshot: &MetricsSnapshot) -> prometheus::Result<Vec<MetricFamily>> {
    let registry = Registry::new();
    add_daemon(&registry, snapshot)?;
    add_gpus(&registry, snapshot)?;
    add_vgpus(&registry, &snapshot.vgpus)?;
    Ok(registry.gather())
}

fn gauge(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<GaugeVec> {
    let vec = GaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

fn counter(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> prometheus::Result<CounterVec> {
    let vec = CounterVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(vec.clone()))?;
    Ok(vec)
}

/// A gauge with no labels.
fn single(registry: &Registry, name: &str, help: &str, value: f64) -> prometheus::Result<()> {
    let gauge = Gauge::with_opts(Opts::new(name, help))?;
    gauge.set(value);
    registry.register(Box::new(gauge))
}

fn add_daemon(registry: &Registry, snapshot: &MetricsSnapshot) -> prometheus::Result<()> {
    gauge(
        registry,
        "vgpud_build_info",
        "Always 1; the label says which vgpud is running.",
        &["version"],
    )?
    .with_label_values(&[snapshot.version.as_str()])
    .set(1.0);
    single(
        registry,
        "vgpud_uptime_seconds",
        "Seconds since the daemon started.",
        snapshot.uptime.as_secs_f64(),
    )?;
    single(
        registry,
        "vgpud_open_fds",
        "File descriptors the daemon has open.",
        snapshot.open_fds as f64,
    )?;
    single(
        registry,
        "vgpud_control_connections",
        "Control socket connections open now.",
        snapshot.control_connections as f64,
    )?;
    let requests = counter(
        registry,
        "vgpud_control_requests_total",
        "Control requests answered, by command (unknown commands count as \"unknown\").",
        &["command"],
    )?;
    for (command, count) in &snapshot.control_requests {
        requests
            .with_label_values(&[command.as_str()])
            .inc_by(*count as f64);
    }
    let errors = counter(
        registry,
        "vgpud_control_errors_total",
        "Control requests that failed, by error kind.",
        &["kind"],
    )?;
    for (kind, count) in &snapshot.control_errors {
        errors
            .with_label_values(&[kind.as_str()])
            .inc_by(*count as f64);
    }
    Ok(())
}

fn add_gpus(registry: &Registry, snapshot: &MetricsSnapshot) -> prometheus::Result<()> {
    let info = gauge(
        registry,
        "vgpud_gpu_info",
        "Always 1; the labels say which backend drives the GPU.",
        &["gpu", "backend"],
    )?;
    let vram = gauge(
        registry,
        "vgpud_gpu_vram_bytes",
        "Bytes of the GPU's VRAM.",
        &["gpu"],
    )?;
    let free = gauge(
        registry,
        "vgpud_gpu_vram_free_bytes",
        "Bytes of the GPU's VRAM not given to a running vGPU.",
        &["gpu"],
    )?;
    let vgpus = gauge(
        registry,
        "vgpud_gpu_vgpus",
        "Running vGPUs on the GPU.",
        &["gpu"],
    )?;
    let attached = gauge(
        registry,
        "vgpud_gpu_vgpus_attached",
        "Running vGPUs on the GPU with a client attached.",
        &["gpu"],
    )?;
    for gpu in &snapshot.gpus {
        let id = [gpu.id.as_str()];
        info.with_label_values(&[gpu.id.as_str(), gpu.backend.as_str()])
            .set(1.0);
        vram.with_label_values(&id).set(gpu.vram_bytes as f64);
        free.with_label_values(&id).set(gpu.vram_free_bytes as f64);
        vgpus.with_label_values(&id).set(gpu.vgpus as f64);
        attached
            .with_label_values(&id)
            .set(gpu.vgpus_attached as f64);
    }
    Ok(())
}

fn add_vgpus(registry: &Registry, entries: &[VgpuStatsEntry]) -> prometheus::Result<()> {
    let info = gauge(
        registry,
        "vgpud_vgpu_info",
        "Always 1; the state label is \"listening\" or \"attached\".",
        &["vgpu", "profile", "gpu", "state"],
    )?;
    for entry in entries {
        info.with_label_values(&[
            entry.uuid.as_str(),
            entry.profile.as_str(),
            entry.gpu.as_str(),
            entry.state.name(),
        ])
        .set(1.0);
    }
    for family in VGPU_FAMILIES {
        let collector: Box<dyn Collector> = match family.kind {
            Kind::Counter => {
                let vec = CounterVec::new(Opts::new(family.name, family.help), &VGPU_LABELS)?;
                for entry in entries {
                    vec.with_label_values(&vgpu_labels(entry))
                        .inc_by((family.value)(entry));
                }
                Box::new(vec)
            }
            Kind::Gauge => {
                let vec = GaugeVec::new(Opts::new(family.name, family.help), &VGPU_LABELS)?;
                for entry in entries {
                    vec.with_label_values(&vgpu_labels(entry))
                        .set((family.value)(entry));
                }
                Box::new(vec)
            }
        };
        registry.register(collector)?;
    }
    Ok(())
}

fn vgpu_labels(entry: &VgpuStatsEntry) -> [&str; 3] {
    [
        entry.uuid.as_str(),
        entry.profile.as_str(),
        entry.gpu.as_str(),
    ]
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
