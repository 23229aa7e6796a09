//! `configs/vgpud.service` is a unit systemd accepts: `systemd-analyze
//! verify` on a copy whose `ExecStart=` names the vgpud just built (the
//! check looks for the executable).

use std::process::Command;

use vgpud_tests::daemon::vgpud_binary;

const UNIT: &str = include_str!("../../configs/vgpud.service");

#[test]
fn systemd_analyze_verifies_the_unit() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let vgpud = vgpud_binary()?;
    let unit: String = UNIT
        .lines()
        .map(|line| match line.strip_prefix("ExecStart=") {
            Some(command) => {
                let args = command.split_once(' ').map_or("", |(_, args)| args);
                format!("ExecStart={} {args}\n", vgpud.display())
            }
            None => format!("{line}\n"),
        })
        .collect();
    let path = dir.path().join("vgpud.service");
    std::fs::write(&path, unit)?;
    let output = match Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            panic!("systemd-analyze is missing: install Debian's `systemd` package (.ci/run does)")
        }
        Err(e) => return Err(e.into()),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "systemd-analyze verify:\n{stderr}");
    // verify reports some problems (an unknown directive, a bad value) as
    // warnings with exit status 0.
    assert!(
        !stderr.contains("vgpud.service"),
        "systemd-analyze verify complained:\n{stderr}"
    );
    Ok(())
}

#[test]
fn the_unit_keeps_its_contract() {
    let directives: Vec<&str> = UNIT
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for expected in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "RuntimeDirectory=vgpud",
        "RuntimeDirectoryMode=0755",
        "StateDirectory=vgpud",
        "StateDirectoryMode=0700",
        "SystemCallFilter=@system-service",
        "SystemCallArchitectures=native",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
    ] {
        assert!(directives.contains(&expected), "{expected} is missing");
    }
}
