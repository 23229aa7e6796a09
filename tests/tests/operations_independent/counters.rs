//! `stats` counters moving as documented when a client reads and writes
//! registers, maps DMA and touches VRAM, and the metrics text agreeing
//! with `stats` and `list` (docs/control-api.md "stats", docs/metrics.md).

use std::collections::BTreeMap;
use std::os::fd::AsFd;

use serde_json::{Value, json};
use uuid::Uuid;
use vgpud_tests::regs::region;
use vgpud_tests::{DmaMapRequest, GuestMemory};

use crate::rig::{DISPI_ID, Daemon, MIB, s, uuid};

/// Polls `stats` for `uuid` until `cond` holds on its entry.
fn stats_until(
    d: &Daemon,
    u: Uuid,
    what: &str,
    cond: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let mut last = Value::Null;
    let deadline = std::time::Instant::now() + crate::rig::PATIENCE;
    while std::time::Instant::now() < deadline {
        last = d.stats(u)?;
        if cond(&last) {
            return Ok(last);
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    anyhow::bail!("never {what}: {last}")
}

fn n(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(u64::MAX)
}

#[test]
fn stats_count_register_accesses_dma_windows_and_vram_as_documented() -> anyhow::Result<()> {
    let d = Daemon::standard()?;
    let u = uuid();
    d.ok("create", json!({"profile": "p16", "uuid": s(u)}))?;
    let fresh = d.stats(u)?;
    for key in [
        "register_reads",
        "register_writes",
        "refused_messages",
        "dma_maps",
        "dma_bytes",
        "interrupts",
        "vram_touched",
        "submissions",
    ] {
        anyhow::ensure!(fresh[key] == 0, "{key} of a new vGPU: {fresh}");
    }
    anyhow::ensure!(
        fresh["state"] == "listening" && fresh["vram_size"] == 16 * MIB,
        "{fresh}"
    );
    anyhow::ensure!(
        fresh["gpu"] == "gpu0" && fresh["profile"] == "p16",
        "{fresh}"
    );

    let mut c = d.connect(u)?;
    let base = stats_until(&d, u, "attached", |v| v["state"] == "attached")?;
    anyhow::ensure!(base["client_pid"] == std::process::id(), "{base}");
    for _ in 0..10 {
        c.read_reg(region::CONFIG, 0, 2)?;
    }
    for _ in 0..5 {
        c.read_reg(region::BAR2, DISPI_ID, 2)?;
    }
    for _ in 0..7 {
        c.write_reg(region::CONFIG, 0x04, 2, 0)?;
    }
    let after = stats_until(&d, u, "15 reads and 7 writes", |v| {
        n(v, "register_reads") >= n(&base, "register_reads") + 15
            && n(v, "register_writes") >= n(&base, "register_writes") + 7
    })?;
    anyhow::ensure!(
        n(&after, "register_reads") == n(&base, "register_reads") + 15
            && n(&after, "register_writes") == n(&base, "register_writes") + 7,
        "exactly the accesses made: {base} -> {after}"
    );
    // A refused message.
    let refused = c.read_reg(region::BAR2, 0x8000_0000, 4);
    anyhow::ensure!(refused.is_err(), "an access outside BAR2 was answered");
    stats_until(&d, u, "a refused message", |v| {
        n(v, "refused_messages") > n(&after, "refused_messages")
    })?;

    // DMA windows: gauges of what the client holds now.
    let mem1 = GuestMemory::new(MIB as usize)?;
    let mem2 = GuestMemory::new(2 * MIB as usize)?;
    c.dma_map(
        DmaMapRequest::read_write(0x1000_0000, MIB),
        Some(mem1.as_fd()),
    )?;
    c.dma_map(
        DmaMapRequest::read_write(0x2000_0000, 2 * MIB),
        Some(mem2.as_fd()),
    )?;
    stats_until(&d, u, "2 windows of 3 MiB", |v| {
        v["dma_maps"] == 2 && v["dma_bytes"] == 3 * MIB
    })?;
    c.dma_unmap(0x1000_0000, MIB)?;
    stats_until(&d, u, "1 window of 2 MiB", |v| {
        v["dma_maps"] == 1 && v["dma_bytes"] == 2 * MIB
    })?;

    // VRAM: three pages written through BAR0.
    let mut bar0 = c.map_bar0()?;
    for page in [0usize, 5, 9] {
        bar0.map[page * 4096] = 0xa5;
    }
    let touched = stats_until(&d, u, "3 pages touched", |v| {
        n(v, "vram_touched") >= 3 * 4096
    })?;
    anyhow::ensure!(n(&touched, "vram_touched") <= 16 * MIB, "{touched}");
    drop(bar0);

    // Detach: gauges go back, counters stay.
    drop(c);
    let detached = stats_until(&d, u, "listening", |v| v["state"] == "listening")?;
    anyhow::ensure!(
        detached["dma_maps"] == 0 && detached["dma_bytes"] == 0,
        "{detached}"
    );
    anyhow::ensure!(
        detached.get("client_pid").is_none_or(Value::is_null),
        "client_pid absent when none is attached: {detached}"
    );
    for key in ["register_reads", "register_writes", "refused_messages"] {
        anyhow::ensure!(
            n(&detached, key) >= n(&touched, key),
            "{key} went down: {detached}"
        );
    }
    // A new client gets an emptied slice.
    let _c2 = d.connect(u)?;
    let again = stats_until(&d, u, "attached again", |v| v["state"] == "attached")?;
    anyhow::ensure!(
        again["vram_touched"] == 0,
        "slice not emptied for the next client: {again}"
    );
    // Counters start at 0 when the vGPU starts: not carried over a
    // remove/create of the same UUID.
    drop(_c2);
    d.wait_state(u, "listening")?;
    d.ok("remove", json!({"uuid": s(u)}))?;
    d.ok("create", json!({"profile": "p16", "uuid": s(u)}))?;
    let reborn = d.stats(u)?;
    anyhow::ensure!(reborn["register_reads"] == 0, "{reborn}");
    Ok(())
}

#[test]
fn stats_lists_running_vgpus_and_time_moves() -> anyhow::Result<()> {
    let d = Daemon::standard()?;
    let def = uuid();
    d.ok("define", json!({"profile": "p16", "uuid": s(def)}))?;
    let t = uuid();
    d.ok("create", json!({"profile": "p16", "uuid": s(t)}))?;
    let first = d.ok("stats", Value::Null)?;
    std::thread::sleep(std::time::Duration::from_millis(5));
    let second = d.ok("stats", json!({}))?;
    anyhow::ensure!(
        n(&second, "time_ns") > n(&first, "time_ns"),
        "{first} {second}"
    );
    let uuids: Vec<_> = second["vgpus"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v["uuid"].clone())
        .collect();
    anyhow::ensure!(
        uuids.len() == 2 && uuids.contains(&json!(s(t))) && !uuids.contains(&json!(s(def))),
        "{uuids:?}"
    );
    Ok(())
}

/// A parsed exposition: series (name and sorted labels) to value, plus
/// the HELP and TYPE lines.
struct Exposition {
    series: BTreeMap<(String, BTreeMap<String, String>), f64>,
    order: Vec<(String, Vec<(String, String)>)>,
    help: BTreeMap<String, usize>,
    types: BTreeMap<String, String>,
}

fn parse_labels(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        anyhow::ensure!(
            chars.next() == Some('"'),
            "label {key} not quoted in {text}"
        );
        let mut value = String::new();
        loop {
            match chars.next() {
                Some('\\') => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => anyhow::bail!("dangling escape in {text}"),
                },
                Some('"') => break,
                Some(c) => value.push(c),
                None => anyhow::bail!("unterminated label in {text}"),
            }
        }
        out.push((key.trim_start_matches(',').to_string(), value));
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    Ok(out)
}

fn parse(text: &str) -> anyhow::Result<Exposition> {
    let mut e = Exposition {
        series: BTreeMap::new(),
        order: Vec::new(),
        help: BTreeMap::new(),
        types: BTreeMap::new(),
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or("").to_string();
            *e.help.entry(name).or_default() += 1;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split(' ');
            let name = parts.next().unwrap_or("").to_string();
            e.types.insert(name, parts.next().unwrap_or("").to_string());
        } else if !line.is_empty() {
            let (head, value) = line
                .rsplit_once(' ')
                .ok_or_else(|| anyhow::anyhow!("{line}"))?;
            let (name, labels) = match head.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}').unwrap_or(rest))?),
                None => (head, Vec::new()),
            };
            let value: f64 = value.parse().map_err(|e| anyhow::anyhow!("{line}: {e}"))?;
            e.order.push((name.to_string(), labels.clone()));
            e.series
                .insert((name.to_string(), labels.into_iter().collect()), value);
        }
    }
    Ok(e)
}

impl Exposition {
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.series.get(&(name.to_string(), labels)).copied()
    }

    /// The value of the one series of `name` whose labels include `vgpu`.
    fn vgpu(&self, name: &str, u: Uuid) -> Option<f64> {
        self.series
            .iter()
            .find(|((n, l), _)| n == name && l.get("vgpu").is_some_and(|v| *v == s(u)))
            .map(|(_, v)| *v)
    }
}

fn metrics(d: &Daemon) -> anyhow::Result<Exposition> {
    let r = d.ok("metrics", Value::Null)?;
    anyhow::ensure!(
        r["content_type"] == "text/plain; version=0.0.4; charset=utf-8",
        "{r}"
    );
    parse(r["text"].as_str().unwrap_or(""))
}

#[test]
fn metrics_agree_with_stats_and_list() -> anyhow::Result<()> {
    let d = Daemon::standard()?;
    let u = uuid();
    d.ok(
        "create",
        json!({"profile": "p16", "uuid": s(u), "gpu": "gpu1"}),
    )?;
    let mut c = d.connect(u)?;
    for _ in 0..9 {
        c.read_reg(region::CONFIG, 0, 4)?;
    }
    c.write_reg(region::CONFIG, 0x04, 2, 0)?;
    let mem = GuestMemory::new(MIB as usize)?;
    c.dma_map(
        DmaMapRequest::read_write(0x4000_0000, MIB),
        Some(mem.as_fd()),
    )?;
    let stats = stats_until(&d, u, "quiet", |v| {
        v["dma_maps"] == 1 && n(v, "register_reads") >= 9
    })?;
    let m = metrics(&d)?;
    let pairs = [
        ("vgpud_vgpu_register_reads_total", "register_reads"),
        ("vgpud_vgpu_register_writes_total", "register_writes"),
        ("vgpud_vgpu_refused_messages_total", "refused_messages"),
        ("vgpud_vgpu_dma_maps", "dma_maps"),
        ("vgpud_vgpu_dma_bytes", "dma_bytes"),
        ("vgpud_vgpu_interrupts_total", "interrupts"),
        ("vgpud_vgpu_vram_touched_bytes", "vram_touched"),
        ("vgpud_vgpu_vram_size_bytes", "vram_size"),
        ("vgpud_vgpu_submissions_total", "submissions"),
    ];
    for (metric, key) in pairs {
        let value = m.vgpu(metric, u);
        anyhow::ensure!(
            value == Some(n(&stats, key) as f64),
            "{metric} {value:?} vs stats {key} {}",
            stats[key]
        );
    }
    let labels = [
        ("vgpu", s(u)),
        ("profile", "p16".to_string()),
        ("gpu", "gpu1".to_string()),
    ];
    let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    anyhow::ensure!(
        m.get("vgpud_vgpu_attached", &l) == Some(1.0),
        "attached with labels vgpu, profile, gpu"
    );
    let mut info = l.clone();
    info.push(("state", "attached"));
    anyhow::ensure!(
        m.get("vgpud_vgpu_info", &info) == Some(1.0),
        "vgpud_vgpu_info state"
    );
    // GPU gauges against list.
    let free = d.vram_free()?;
    for (gpu, bytes) in &free {
        anyhow::ensure!(
            m.get("vgpud_gpu_vram_free_bytes", &[("gpu", gpu)]) == Some(*bytes as f64),
            "{gpu} free"
        );
        anyhow::ensure!(m.get("vgpud_gpu_vram_bytes", &[("gpu", gpu)]) == Some((64 * MIB) as f64));
        anyhow::ensure!(m.get("vgpud_gpu_info", &[("gpu", gpu), ("backend", "sim")]) == Some(1.0));
    }
    anyhow::ensure!(m.get("vgpud_gpu_vgpus", &[("gpu", "gpu0")]) == Some(1.0));
    anyhow::ensure!(m.get("vgpud_gpu_vgpus", &[("gpu", "gpu1")]) == Some(1.0));
    anyhow::ensure!(m.get("vgpud_gpu_vgpus_attached", &[("gpu", "gpu1")]) == Some(1.0));
    anyhow::ensure!(m.get("vgpud_gpu_vgpus_attached", &[("gpu", "gpu0")]) == Some(0.0));
    // Format: every family has one HELP and one TYPE; families sorted by
    // name; series by label values; counters end in _total.
    let mut families: Vec<&String> = Vec::new();
    for (name, _) in &m.order {
        if families.last() != Some(&name) {
            anyhow::ensure!(!families.contains(&name), "{name} split in two");
            families.push(name);
        }
    }
    let mut sorted = families.clone();
    sorted.sort();
    anyhow::ensure!(
        families == sorted,
        "families not sorted by name: {families:?}"
    );
    for name in &families {
        anyhow::ensure!(m.help.get(*name) == Some(&1), "{name}: HELP");
        let kind = m.types.get(*name).map(String::as_str);
        anyhow::ensure!(
            kind == Some("counter") || kind == Some("gauge"),
            "{name}: TYPE {kind:?}"
        );
        anyhow::ensure!(
            (kind == Some("counter")) == name.ends_with("_total"),
            "{name}: {kind:?}"
        );
    }
    for family in &families {
        let values: Vec<Vec<String>> = m
            .order
            .iter()
            .filter(|(n, _)| n == *family)
            .map(|(_, l)| l.iter().map(|(_, v)| v.clone()).collect())
            .collect();
        let mut sorted = values.clone();
        sorted.sort();
        anyhow::ensure!(
            values == sorted,
            "{family}: series not sorted by label values: {values:?}"
        );
    }
    // Gone when removed.
    drop(c);
    d.wait_state(u, "listening")?;
    d.ok("remove", json!({"uuid": s(u)}))?;
    let m = metrics(&d)?;
    anyhow::ensure!(
        !m.series
            .keys()
            .any(|(_, l)| l.get("vgpu").is_some_and(|v| *v == s(u))),
        "series of a removed vGPU remain"
    );
    anyhow::ensure!(m.get("vgpud_gpu_vgpus", &[("gpu", "gpu1")]) == Some(0.0));
    anyhow::ensure!(
        m.get("vgpud_gpu_vram_free_bytes", &[("gpu", "gpu1")]) == Some((64 * MIB) as f64)
    );
    Ok(())
}

#[test]
fn control_request_and_error_counters_count_by_command_and_kind() -> anyhow::Result<()> {
    let d = Daemon::standard()?;
    let before = metrics(&d)?;
    let count = |m: &Exposition, name: &str, label: &str, value: &str| {
        m.get(name, &[(label, value)]).unwrap_or(0.0)
    };
    d.expect("not_found", "stats", json!({"uuid": s(uuid())}))?;
    d.expect("not_found", "stats", json!({"uuid": s(uuid())}))?;
    d.expect("conflict", "remove", json!({"uuid": s(crate::rig::CFG)}))?;
    let r = d.call("frobnicate", Value::Null)?;
    anyhow::ensure!(r["error"]["kind"] == "unknown_command");
    let after = metrics(&d)?;
    let req = "vgpud_control_requests_total";
    let err = "vgpud_control_errors_total";
    anyhow::ensure!(
        count(&after, req, "command", "stats") - count(&before, req, "command", "stats") == 2.0
    );
    anyhow::ensure!(
        count(&after, req, "command", "remove") - count(&before, req, "command", "remove") == 1.0
    );
    anyhow::ensure!(
        count(&after, req, "command", "unknown") - count(&before, req, "command", "unknown") == 1.0,
        "an unknown command counts as unknown"
    );
    anyhow::ensure!(
        count(&after, req, "command", "frobnicate") == 0.0,
        "the client chose a label value"
    );
    // The first metrics request is counted by the second.
    anyhow::ensure!(
        count(&after, req, "command", "metrics") - count(&before, req, "command", "metrics") == 1.0
    );
    anyhow::ensure!(
        count(&after, err, "kind", "not_found") - count(&before, err, "kind", "not_found") == 2.0
    );
    anyhow::ensure!(
        count(&after, err, "kind", "conflict") - count(&before, err, "kind", "conflict") == 1.0
    );
    anyhow::ensure!(
        count(&after, err, "kind", "unknown_command")
            - count(&before, err, "kind", "unknown_command")
            == 1.0
    );
    // Many distinct unknown commands do not grow the label set.
    for i in 0..50 {
        d.call(&format!("junk{i}"), Value::Null)?;
    }
    let last = metrics(&d)?;
    let commands = last.series.keys().filter(|(n, _)| n == req).count();
    anyhow::ensure!(commands < 20, "{commands} command label values");
    Ok(())
}

#[test]
fn label_values_are_escaped_whatever_the_profile_name() -> anyhow::Result<()> {
    // A profile name with a quote and a backslash (no spaces, as the
    // configuration asks). If the file is refused, there is nothing to
    // escape and the test has nothing to check.
    let name = r#"we"ird\name"#;
    let body = format!(
        "[[gpu]]\nid = \"gpu0\"\nvram = \"64MiB\"\n\n[[profile]]\nname = '{name}'\nframebuffer = \"16MiB\"\nmax_instances = 2\n"
    );
    let Ok(d) = Daemon::start(&body) else {
        eprintln!("skipped: the configuration refuses the name");
        return Ok(());
    };
    let u = uuid();
    d.ok("create", json!({"profile": name, "uuid": s(u)}))?;
    let m = metrics(&d)?;
    let labels = [
        ("vgpu", s(u)),
        ("profile", name.to_string()),
        ("gpu", "gpu0".to_string()),
    ];
    let l: Vec<(&str, &str)> = labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
    anyhow::ensure!(
        m.get("vgpud_vgpu_attached", &l) == Some(0.0),
        "profile label not escaped and read back"
    );
    Ok(())
}
