//! The human form of each verb's result: tables and sentences.

use vgpud::control::protocol::{
    DefinitionEntry, ListResult, SocketAccessArgs, StartedResult, StatsResult, StoppedResult,
    TypesResult, VgpuOrigin, VgpuStatsEntry,
};

use crate::table::{Align, Table};
use crate::units;

pub fn types(result: &TypesResult) -> String {
    let mut table = Table::new(&[
        ("PROFILE", Align::Left),
        ("FB", Align::Right),
        ("CH", Align::Right),
        ("MAX RES", Align::Left),
        ("MAX/GPU", Align::Right),
        ("WEIGHT", Align::Right),
        ("AVAILABLE", Align::Left),
    ]);
    for t in &result.types {
        let available: Vec<String> = t
            .available
            .iter()
            .map(|a| format!("{}: {}", a.gpu, a.instances))
            .collect();
        table.row(vec![
            t.profile.clone(),
            units::bytes(t.framebuffer),
            t.channels.to_string(),
            t.max_resolution.clone(),
            t.max_instances.to_string(),
            t.weight.to_string(),
            if available.is_empty() {
                "-".into()
            } else {
                available.join(", ")
            },
        ]);
    }
    table.render()
}

pub fn list(result: &ListResult) -> String {
    let mut gpus = Table::new(&[
        ("GPU", Align::Left),
        ("BACKEND", Align::Left),
        ("VRAM", Align::Right),
        ("FREE", Align::Right),
    ]);
    for g in &result.gpus {
        gpus.row(vec![
            g.id.clone(),
            g.backend.clone(),
            units::bytes(g.vram),
            units::bytes(g.vram_free),
        ]);
    }
    let mut vgpus = Table::new(&[
        ("UUID", Align::Left),
        ("GPU", Align::Left),
        ("PROFILE", Align::Left),
        ("STATE", Align::Left),
        ("ORIGIN", Align::Left),
        ("AUTO", Align::Left),
        ("CLIENT PID", Align::Right),
        ("SOCKET", Align::Left),
    ]);
    for v in &result.vgpus {
        vgpus.row(vec![
            v.uuid.clone(),
            or_dash(&v.gpu),
            v.profile.clone(),
            v.state.name().into(),
            v.origin.name().into(),
            match (v.origin, v.auto) {
                (VgpuOrigin::Defined, true) => "yes".into(),
                (VgpuOrigin::Defined, false) => "no".into(),
                _ => "-".into(),
            },
            v.client_pid.map_or("-".into(), |p| p.to_string()),
            or_dash(&v.socket),
        ]);
    }
    format!("{}\n{}", gpus.render(), vgpus.render())
}

/// `create` and `start`: the socket path alone on standard output (so
/// `sock=$(vgpuctl create …)` works); what happened on standard error.
pub fn started(result: &StartedResult, transient: bool) -> (String, String) {
    let mut note = format!(
        "vgpuctl: {} vGPU {} (profile {} on {})\n",
        if transient { "created" } else { "started" },
        result.uuid,
        result.profile,
        result.gpu
    );
    if transient {
        note.push_str(
            "vgpuctl: it is transient, not persistent: it is gone on `vgpuctl remove` or when \
             vgpud stops; `vgpuctl define` makes one that survives restarts\n",
        );
    }
    (format!("{}\n", result.socket), note)
}

/// `remove` and `stop`.
pub fn stopped(result: &StoppedResult, verb: &str) -> String {
    let done = if verb == "remove" {
        "removed"
    } else {
        "stopped"
    };
    let client = match (result.disconnected, result.released) {
        (false, _) => String::new(),
        (true, true) => "; its VM released it and was disconnected".into(),
        (true, false) => {
            "; its VM did not release it within 500 ms and was reset and disconnected".into()
        }
    };
    format!("vGPU {} {done}{client}\n", result.uuid)
}

/// `define`, `modify` and `undefine`.
pub fn definition(entry: &DefinitionEntry, verb: &str) -> String {
    let what = match verb {
        "define" => "defined (not started: `vgpuctl start` starts it)",
        "modify" => "modified (it takes effect the next time it starts)",
        _ => "undefined (if it runs, it keeps running, as a transient vGPU)",
    };
    let mut out = format!("vGPU {} {what}\n", entry.uuid);
    let mut table = Table::new(&[("", Align::Left), ("", Align::Left)]);
    let mut field = |name: &str, value: String| table.row(vec![format!("{name}:"), value]);
    field("profile", entry.profile.clone());
    field(
        "gpu",
        entry
            .gpu
            .clone()
            .unwrap_or_else(|| "chosen when it starts".into()),
    );
    field(
        "auto",
        if entry.auto {
            "yes (starts with the daemon)".into()
        } else {
            "no".into()
        },
    );
    let SocketAccessArgs {
        socket_owner,
        socket_group,
        socket_mode,
    } = &entry.access;
    let default = || "the configuration's default".to_string();
    field("socket owner", socket_owner.clone().unwrap_or_else(default));
    field("socket group", socket_group.clone().unwrap_or_else(default));
    field("socket mode", socket_mode.clone().unwrap_or_else(default));
    field("file", entry.file.clone());
    // The header row of a table with empty headers is an empty line.
    for line in table.render().lines().skip(1) {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
    out
}

pub fn stats(result: &StatsResult) -> String {
    let mut table = Table::new(&[
        ("UUID", Align::Left),
        ("STATE", Align::Left),
        ("PID", Align::Right),
        ("REG READS", Align::Right),
        ("REG WRITES", Align::Right),
        ("IRQS", Align::Right),
        ("SUBMITS", Align::Right),
        ("CMDS", Align::Right),
        ("ENGINE RUN", Align::Right),
        ("WAIT", Align::Right),
        ("IDLE", Align::Right),
        ("DMA", Align::Right),
        ("VRAM USED", Align::Right),
        ("REFUSED M/P/S", Align::Right),
        ("MMU FAULTS", Align::Right),
    ]);
    for v in &result.vgpus {
        table.row(stats_row(v));
    }
    table.render()
}

fn stats_row(v: &VgpuStatsEntry) -> Vec<String> {
    vec![
        v.uuid.clone(),
        v.state.name().into(),
        v.client_pid.map_or("-".into(), |p| p.to_string()),
        units::count(v.register_reads),
        units::count(v.register_writes),
        units::count(v.interrupts),
        units::count(v.submissions),
        units::count(v.commands),
        units::duration_ns(v.engine_run_ns),
        units::duration_ns(v.engine_wait_ns),
        units::duration_ns(v.engine_idle_ns),
        format!("{} in {}", units::bytes(v.dma_bytes), v.dma_maps),
        format!(
            "{} / {}",
            units::bytes(v.vram_touched),
            units::bytes(v.vram_size)
        ),
        format!(
            "{}/{}/{}",
            units::count(v.refused_messages),
            units::count(v.refused_ptes),
            units::count(v.refused_submissions)
        ),
        units::count(v.mmu_faults),
    ]
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.into()
    }
}
