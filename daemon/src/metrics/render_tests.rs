//! Every rendered line is read back by an independent parser of the 0.0.4
//! grammar (`openmetrics-parser`'s Prometheus mode, a pest grammar that
//! refuses the whole text on any bad line).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use openmetrics_parser::prometheus::parse_prometheus;
use openmetrics_parser::{MetricsExposition, PrometheusType, PrometheusValue};
use proptest::prelude::*;

use super::*;
use crate::metrics::GpuMetrics;

type Exposition = MetricsExposition<PrometheusType, PrometheusValue>;

const ODD_PROFILE: &str = "odd \"quoted\" \\back\\slash\nnew line }{,=";

fn vgpu(uuid: &str, gpu: &str, profile: &str, state: VgpuState, seed: u64) -> VgpuStatsEntry {
    VgpuStatsEntry {
        uuid: uuid.to_owned(),
        gpu: gpu.to_owned(),
        profile: profile.to_owned(),
        state,
        client_pid: (state == VgpuState::Attached).then_some(4242),
        register_reads: seed + 1,
        register_writes: seed + 2,
        refused_messages: seed + 3,
        mmu_faults: seed + 4,
        refused_ptes: seed + 5,
        dma_maps: seed + 6,
        dma_bytes: seed + 7,
        interrupts: seed + 8,
        interrupts_coalesced: seed + 9,
        vram_touched: seed + 10,
        vram_size: seed + 11,
        submissions: seed + 12,
        commands: seed + 13,
        refused_submissions: seed + 14,
        engine_run_ns: 1_500_000_000,
        engine_wait_ns: 250_000_000,
        engine_idle_ns: seed * 1_000_000_000,
    }
}

/// Two GPUs, three vGPUs: one attached, one with a profile name that needs
/// every escape the format has.
fn sample() -> MetricsSnapshot {
    MetricsSnapshot {
        version: "0.1.0".to_owned(),
        uptime: Duration::from_millis(12_500),
        open_fds: 37,
        control_connections: 2,
        control_requests: vec![("list".to_owned(), 5), ("stats".to_owned(), 7)],
        control_errors: vec![("not_found".to_owned(), 1)],
        gpus: vec![
            GpuMetrics {
                id: "gpu0".to_owned(),
                backend: "sim".to_owned(),
                vram_bytes: 1 << 30,
                vram_free_bytes: 1 << 29,
                vgpus: 2,
                vgpus_attached: 1,
            },
            GpuMetrics {
                id: "gpu1".to_owned(),
                backend: "sim".to_owned(),
                vram_bytes: 2 << 30,
                vram_free_bytes: 2 << 30,
                vgpus: 1,
                vgpus_attached: 0,
            },
        ],
        vgpus: vec![
            vgpu(
                "aaaaaaaa-0000-0000-0000-000000000001",
                "gpu0",
                "small",
                VgpuState::Attached,
                100,
            ),
            vgpu(
                "aaaaaaaa-0000-0000-0000-000000000002",
                "gpu0",
                ODD_PROFILE,
                VgpuState::Listening,
                200,
            ),
            vgpu(
                "aaaaaaaa-0000-0000-0000-000000000003",
                "gpu1",
                "large",
                VgpuState::Listening,
                300,
            ),
        ],
    }
}

fn parse(text: &str) -> Exposition {
    parse_prometheus(text).unwrap_or_else(|e| panic!("not 0.0.4 text: {e}\n{text}"))
}

/// The value of `family`'s series whose labels include every pair of `labels`.
fn value(exposition: &Exposition, family: &str, labels: &[(&str, &str)]) -> f64 {
    let family = exposition
        .families
        .get(family)
        .unwrap_or_else(|| panic!("no family {family}"));
    let matching: Vec<f64> = family
        .iter_samples()
        .filter(|sample| {
            let set = sample.get_labelset().expect("labels");
            labels
                .iter()
                .all(|(name, want)| set.get_label_value(name) == Some(*want))
        })
        .map(|sample| match &sample.value {
            PrometheusValue::Gauge(n) => n.as_f64(),
            PrometheusValue::Counter(c) => c.value.as_f64(),
            other => panic!("unexpected value {other:?}"),
        })
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "{} series match {labels:?}",
        matching.len()
    );
    matching[0]
}

fn expected_families() -> BTreeMap<&'static str, PrometheusType> {
    let mut families: BTreeMap<&str, PrometheusType> = VGPU_FAMILIES
        .iter()
        .map(|f| {
            let kind = match f.kind {
                Kind::Counter => PrometheusType::Counter,
                Kind::Gauge => PrometheusType::Gauge,
            };
            (f.name, kind)
        })
        .collect();
    for gauge in [
        "vgpud_build_info",
        "vgpud_uptime_seconds",
        "vgpud_open_fds",
        "vgpud_control_connections",
        "vgpud_gpu_info",
        "vgpud_gpu_vram_bytes",
        "vgpud_gpu_vram_free_bytes",
        "vgpud_gpu_vgpus",
        "vgpud_gpu_vgpus_attached",
        "vgpud_vgpu_info",
    ] {
        families.insert(gauge, PrometheusType::Gauge);
    }
    families.insert("vgpud_control_requests_total", PrometheusType::Counter);
    families.insert("vgpud_control_errors_total", PrometheusType::Counter);
    families
}

#[test]
fn every_family_is_rendered_with_help_and_type() {
    let text = render(&sample());
    let exposition = parse(&text);
    let expected = expected_families();
    let got: BTreeSet<&str> = exposition.families.keys().map(String::as_str).collect();
    assert_eq!(got, expected.keys().copied().collect::<BTreeSet<_>>());
    for (name, kind) in &expected {
        let family = &exposition.families[*name];
        assert_eq!(&family.family_type, kind, "{name}");
        assert!(!family.help.is_empty(), "{name} has no HELP");
        assert!(name.starts_with("vgpud_"), "{name}");
        assert_eq!(
            name.ends_with("_total"),
            *kind == PrometheusType::Counter,
            "{name}: counters and only counters end in _total"
        );
    }
}

/// Each family opens with its HELP then its TYPE line, and every sample
/// line belongs to the family last declared: the layout the 0.0.4 format
/// asks for, checked line by line on top of the grammar.
#[test]
fn every_line_is_help_type_or_a_sample_of_the_declared_family() {
    let text = render(&sample());
    assert!(text.ends_with('\n'));
    let mut declared: Option<&str> = None;
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().expect("name");
            let next = lines.next().expect("TYPE after HELP");
            assert!(next.starts_with(&format!("# TYPE {name} ")), "{next}");
            declared = Some(name);
            continue;
        }
        let name = declared.unwrap_or_else(|| panic!("sample before any HELP: {line}"));
        let sample_name = line.split(['{', ' ']).next().expect("name");
        assert_eq!(sample_name, name, "{line}");
        // Each sample line parses alone too.
        let alone = format!("{line}\n");
        assert_eq!(parse(&alone).families.len(), 1, "{line}");
    }
}

#[test]
fn vgpu_series_carry_their_counters_and_escaped_labels() {
    let exposition = parse(&render(&sample()));
    let odd = [
        ("vgpu", "aaaaaaaa-0000-0000-0000-000000000002"),
        ("profile", ODD_PROFILE),
        ("gpu", "gpu0"),
    ];
    let cases: [(&str, f64); 14] = [
        ("vgpud_vgpu_register_reads_total", 201.0),
        ("vgpud_vgpu_register_writes_total", 202.0),
        ("vgpud_vgpu_refused_messages_total", 203.0),
        ("vgpud_vgpu_mmu_faults_total", 204.0),
        ("vgpud_vgpu_refused_ptes_total", 205.0),
        ("vgpud_vgpu_dma_maps", 206.0),
        ("vgpud_vgpu_dma_bytes", 207.0),
        ("vgpud_vgpu_interrupts_total", 208.0),
        ("vgpud_vgpu_interrupts_coalesced_total", 209.0),
        ("vgpud_vgpu_vram_touched_bytes", 210.0),
        ("vgpud_vgpu_vram_size_bytes", 211.0),
        ("vgpud_vgpu_submissions_total", 212.0),
        ("vgpud_vgpu_commands_total", 213.0),
        ("vgpud_vgpu_refused_submissions_total", 214.0),
    ];
    for (family, want) in cases {
        assert_eq!(value(&exposition, family, &odd), want, "{family}");
        assert_eq!(
            exposition.families[family].iter_samples().count(),
            3,
            "{family}"
        );
    }
    assert_eq!(
        value(&exposition, "vgpud_vgpu_engine_run_seconds_total", &odd),
        1.5
    );
    assert_eq!(
        value(&exposition, "vgpud_vgpu_engine_wait_seconds_total", &odd),
        0.25
    );
    assert_eq!(
        value(&exposition, "vgpud_vgpu_engine_idle_seconds_total", &odd),
        200.0
    );
}

#[test]
fn attached_and_info_say_which_vgpu_has_a_client() {
    let exposition = parse(&render(&sample()));
    for (uuid, attached, state) in [
        ("aaaaaaaa-0000-0000-0000-000000000001", 1.0, "attached"),
        ("aaaaaaaa-0000-0000-0000-000000000002", 0.0, "listening"),
        ("aaaaaaaa-0000-0000-0000-000000000003", 0.0, "listening"),
    ] {
        assert_eq!(
            value(&exposition, "vgpud_vgpu_attached", &[("vgpu", uuid)]),
            attached
        );
        let labels = [("vgpu", uuid), ("state", state)];
        assert_eq!(value(&exposition, "vgpud_vgpu_info", &labels), 1.0);
    }
    let large = [
        ("vgpu", "aaaaaaaa-0000-0000-0000-000000000003"),
        ("profile", "large"),
        ("gpu", "gpu1"),
    ];
    assert_eq!(value(&exposition, "vgpud_vgpu_info", &large), 1.0);
}

#[test]
fn gpu_series_carry_vram_and_vgpu_counts() {
    let exposition = parse(&render(&sample()));
    let gpu0 = [("gpu", "gpu0")];
    let gpu1 = [("gpu", "gpu1")];
    assert_eq!(
        value(
            &exposition,
            "vgpud_gpu_info",
            &[("gpu", "gpu1"), ("backend", "sim")]
        ),
        1.0
    );
    assert_eq!(
        value(&exposition, "vgpud_gpu_vram_bytes", &gpu0),
        (1u64 << 30) as f64
    );
    assert_eq!(
        value(&exposition, "vgpud_gpu_vram_free_bytes", &gpu0),
        (1u64 << 29) as f64
    );
    assert_eq!(value(&exposition, "vgpud_gpu_vgpus", &gpu0), 2.0);
    assert_eq!(value(&exposition, "vgpud_gpu_vgpus_attached", &gpu0), 1.0);
    assert_eq!(value(&exposition, "vgpud_gpu_vgpus_attached", &gpu1), 0.0);
}

#[test]
fn daemon_series_carry_version_uptime_and_control_counts() {
    let exposition = parse(&render(&sample()));
    assert_eq!(
        value(&exposition, "vgpud_build_info", &[("version", "0.1.0")]),
        1.0
    );
    assert_eq!(value(&exposition, "vgpud_uptime_seconds", &[]), 12.5);
    assert_eq!(value(&exposition, "vgpud_open_fds", &[]), 37.0);
    assert_eq!(value(&exposition, "vgpud_control_connections", &[]), 2.0);
    assert_eq!(
        value(
            &exposition,
            "vgpud_control_requests_total",
            &[("command", "list")]
        ),
        5.0
    );
    assert_eq!(
        value(
            &exposition,
            "vgpud_control_requests_total",
            &[("command", "stats")]
        ),
        7.0
    );
    assert_eq!(
        value(
            &exposition,
            "vgpud_control_errors_total",
            &[("kind", "not_found")]
        ),
        1.0
    );
}

#[test]
fn families_without_series_are_left_out() {
    let snapshot = MetricsSnapshot {
        version: "0.1.0".to_owned(),
        ..MetricsSnapshot::default()
    };
    let exposition = parse(&render(&snapshot));
    let got: BTreeSet<&str> = exposition.families.keys().map(String::as_str).collect();
    let want = BTreeSet::from([
        "vgpud_build_info",
        "vgpud_uptime_seconds",
        "vgpud_open_fds",
        "vgpud_control_connections",
    ]);
    assert_eq!(got, want);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever a profile, GPU id or command name holds, the text stays
    /// 0.0.4 and the label reads back unchanged. (A carriage return is left
    /// out: 0.0.4 lets it stand unescaped in a label value, but the test's
    /// parser takes it for a line end.)
    #[test]
    fn any_label_value_reads_back(
        profile in "[^\r]*",
        gpu in "[^\r]*",
        command in "[^\r]*",
    ) {
        let mut snapshot = sample();
        snapshot.vgpus[0].profile = profile.clone();
        snapshot.vgpus[0].gpu = gpu.clone();
        snapshot.control_requests = vec![(command.clone(), 3)];
        let exposition = parse_prometheus(&render(&snapshot))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let labels = [
            ("vgpu", "aaaaaaaa-0000-0000-0000-000000000001"),
            ("profile", profile.as_str()),
            ("gpu", gpu.as_str()),
        ];
        prop_assert_eq!(value(&exposition, "vgpud_vgpu_register_reads_total", &labels), 101.0);
        prop_assert_eq!(value(&exposition, "vgpud_control_requests_total", &[("command", command.as_str())]), 3.0);
    }
}
