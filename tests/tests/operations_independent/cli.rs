//! `vgpuctl`'s exit codes (`vgpuctl --help`, docs/operations.md "Exit
//! codes") against the real daemon.

use std::process::{Command, Output};

use serde_json::json;

use crate::rig::{CFG, Daemon, s, uuid};

fn vgpuctl(d: &Daemon, args: &[&str]) -> anyhow::Result<Output> {
    let vgpud = vgpud_tests::daemon::vgpud_binary()?;
    let binary = vgpud.with_file_name("vgpuctl");
    anyhow::ensure!(
        binary.exists(),
        "build vgpuctl first: cargo build -p vgpud --bins"
    );
    Ok(Command::new(binary)
        .arg("--runtime-dir")
        .arg(d.runtime_dir())
        .args(args)
        .env_remove("VGPUD_RUNTIME_DIR")
        .output()?)
}

fn code(d: &Daemon, args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = vgpuctl(d, args)?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn expect_code(d: &Daemon, args: &[&str], want: i32) -> anyhow::Result<String> {
    let (got, _, stderr) = code(d, args)?;
    anyhow::ensure!(
        got == want,
        "vgpuctl {args:?}: exit {got}, want {want}; stderr: {stderr}"
    );
    if want != 0 {
        let lines: Vec<&str> = stderr.lines().collect();
        anyhow::ensure!(
            lines.first().is_some_and(|l| l.starts_with("vgpuctl: "))
                && lines.iter().any(|l| l.starts_with("hint:")),
            "vgpuctl {args:?}: error not as `vgpuctl: ...` then `hint:`: {stderr}"
        );
    }
    Ok(stderr)
}

#[test]
fn exit_codes_follow_the_error_kinds() -> anyhow::Result<()> {
    let d = Daemon::standard()?;
    let cfg = s(CFG);
    // 0, and the socket path alone on stdout.
    let (c, stdout, _) = code(&d, &["create", "--type", "p32", "--gpu", "gpu1"])?;
    anyhow::ensure!(c == 0, "create: {c}");
    let lines: Vec<&str> = stdout.lines().collect();
    anyhow::ensure!(
        lines.len() == 1 && lines[0].ends_with(".sock"),
        "stdout: {stdout:?}"
    );
    anyhow::ensure!(std::path::Path::new(lines[0]).exists());
    // 2: usage and bad_arguments.
    expect_code(&d, &["remove", "not-a-uuid"], 2)?;
    expect_code(&d, &["create", "--type", "p16", "--socket-mode", "7777"], 2)?;
    // 3: not_found.
    expect_code(&d, &["create", "--type", "nope"], 3)?;
    expect_code(&d, &["stop", &s(uuid())], 3)?;
    // 4: conflict.
    expect_code(&d, &["remove", &cfg], 4)?;
    expect_code(&d, &["create", "--type", "p16", "--uuid", &cfg], 4)?;
    // 5: insufficient_resources.
    expect_code(&d, &["create", "--type", "p32", "--gpu", "gpu1"], 5)?;
    // 6: busy.
    let _client = d.connect(CFG)?;
    d.wait_state(CFG, "attached")?;
    let t = uuid();
    d.ok("create", json!({"profile": "p16", "uuid": s(t)}))?;
    let _tc = d.connect(t)?;
    d.wait_state(t, "attached")?;
    expect_code(&d, &["remove", &s(t)], 6)?;
    // 1: failed.
    let vgpus = d.state_dir().join("vgpus");
    std::fs::rename(&vgpus, d.dir().join("kept"))?;
    std::fs::write(&vgpus, b"x")?;
    expect_code(&d, &["define", "--type", "p16"], 1)?;
    // --json before or after the verb: the result object.
    for args in [&["--json", "list"][..], &["list", "--json"][..]] {
        let (c, stdout, _) = code(&d, args)?;
        anyhow::ensure!(c == 0);
        let v: serde_json::Value = serde_json::from_str(&stdout)?;
        anyhow::ensure!(v["gpus"].is_array() && v["vgpus"].is_array(), "{v}");
    }
    Ok(())
}

#[test]
fn an_unreachable_daemon_is_exit_code_7() -> anyhow::Result<()> {
    let mut d = Daemon::standard()?;
    d.stop()?;
    expect_code(&d, &["list"], 7)?;
    Ok(())
}
