//! Metrics as an operator's Prometheus sees them (docs/metrics.md): the
//! HTTP endpoint on loopback and `metrics` on the control socket, scraped
//! while a client works a vGPU, every line parsed by an independent
//! Prometheus text (0.0.4) parser.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use openmetrics_parser::PrometheusValue;
use openmetrics_parser::prometheus::parse_prometheus;
use serde_json::Value;
use vgpud_tests::control::{CONTROL_TIMEOUT, control_request};
use vgpud_tests::regs::region;
use vgpud_tests::{DaemonConfig, TestDaemon, VGPU_A, VGPU_B};

/// The address the daemon logged for its metrics endpoint.
fn metrics_addr(daemon: &TestDaemon) -> anyhow::Result<String> {
    let deadline = Instant::now() + CONTROL_TIMEOUT;
    loop {
        let log = daemon.stderr();
        if let Some(line) = log.lines().find(|l| l.contains("metrics served over HTTP")) {
            let addr = line
                .split_whitespace()
                .find_map(|w| w.strip_prefix("addr="))
                .context("no addr= in the log line")?;
            return Ok(addr.to_string());
        }
        ensure!(Instant::now() < deadline, "no metrics line in:\n{log}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(CONTROL_TIMEOUT))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

/// The value of `family`'s sample for vGPU `uuid`.
fn vgpu_value(text: &str, family: &str, uuid: &str) -> anyhow::Result<f64> {
    let exposition = parse_prometheus(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    let family = exposition
        .families
        .get(family)
        .with_context(|| format!("no family {family}"))?;
    family
        .iter_samples()
        .find(|s| {
            s.get_labelset()
                .ok()
                .is_some_and(|l| l.get_label_value("vgpu") == Some(uuid))
        })
        .map(|s| match &s.value {
            PrometheusValue::Gauge(n) => n.as_f64(),
            PrometheusValue::Counter(c) => c.value.as_f64(),
            _ => f64::NAN,
        })
        .with_context(|| format!("no sample for {uuid}"))
}

#[test]
fn metrics_are_scraped_over_http_and_the_control_socket() -> anyhow::Result<()> {
    let config = DaemonConfig::standard().with("metrics_listen = \"127.0.0.1:0\"");
    let daemon = TestDaemon::start(&config)?;
    let addr = metrics_addr(&daemon)?;
    let mut a = daemon.connect(VGPU_A)?;
    for _ in 0..10 {
        a.read_reg(region::BAR2, 0x500, 2)?;
    }

    let response = get(&addr, "/metrics")?;
    let (head, body) = response.split_once("\r\n\r\n").context("no HTTP head")?;
    ensure!(head.starts_with("HTTP/1.1 200"), "{head}");
    ensure!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4; charset=utf-8"),
        "{head}"
    );
    // Every line parses, as a whole and alone.
    parse_prometheus(body).map_err(|e| anyhow::anyhow!("not 0.0.4 text: {e}\n{body}"))?;
    for line in body.lines().filter(|l| !l.is_empty()) {
        ensure!(
            line.starts_with('#') || line.split_whitespace().count() >= 2,
            "odd line {line:?}"
        );
    }
    let a_id = VGPU_A.to_string();
    ensure!(vgpu_value(body, "vgpud_vgpu_register_reads_total", &a_id)? >= 10.0);
    ensure!(vgpu_value(body, "vgpud_vgpu_attached", &a_id)? == 1.0);
    ensure!(vgpu_value(body, "vgpud_vgpu_attached", &VGPU_B.to_string())? == 0.0);
    ensure!(body.contains("vgpud_build_info{"), "{body}");

    let control = control_request(
        &daemon.control_socket(),
        "metrics",
        Value::Null,
        CONTROL_TIMEOUT,
    )?;
    ensure!(control["ok"] == true, "{control}");
    ensure!(control["result"]["content_type"] == "text/plain; version=0.0.4; charset=utf-8");
    let text = control["result"]["text"].as_str().context("text")?;
    parse_prometheus(text).map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(vgpu_value(text, "vgpud_vgpu_register_reads_total", &a_id)? >= 10.0);

    ensure!(get(&addr, "/")?.starts_with("HTTP/1.1 404"));
    Ok(())
}

#[test]
fn a_remote_metrics_address_needs_the_explicit_key() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = DaemonConfig::standard().with("metrics_listen = \"0.0.0.0:9400\"");
    let toml = config.render(&dir.path().join("run"));
    let exited = vgpud_tests::daemon::run_to_exit(dir.path(), &toml, Duration::from_secs(20))?;
    ensure!(exited.status.code() == Some(2), "{:?}", exited.status);
    ensure!(
        exited.stderr.contains("metrics_allow_remote"),
        "{}",
        exited.stderr
    );
    Ok(())
}
