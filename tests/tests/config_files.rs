//! Bad configuration files: the daemon exits nonzero and says where the
//! problem is (`FILE:LINE:COLUMN`) and what it is.

use std::time::Duration;

use vgpud_tests::DaemonConfig;
use vgpud_tests::config::VgpuSpec;
use vgpud_tests::daemon::{Exited, run_to_exit};

fn run(toml: &str) -> anyhow::Result<Exited> {
    let dir = tempfile::tempdir()?;
    let exited = run_to_exit(dir.path(), toml, Duration::from_secs(10))?;
    assert!(!exited.status.success(), "accepted:\n{toml}");
    Ok(exited)
}

fn render(config: &DaemonConfig) -> String {
    config.render(std::path::Path::new("/nonexistent/vgpud-test-run"))
}

/// The 1-based line of the first line of `toml` that contains `needle`.
fn line_of(toml: &str, needle: &str) -> usize {
    toml.lines()
        .position(|line| line.contains(needle))
        .map(|index| index + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in the config"))
}

/// The lines named as `vgpud.toml:LINE:COLUMN` in `stderr`.
fn located_lines(stderr: &str) -> Vec<usize> {
    let mut lines = Vec::new();
    for (index, _) in stderr.match_indices("vgpud.toml:") {
        let rest = &stderr[index + "vgpud.toml:".len()..];
        let mut parts = rest.splitn(3, ':');
        let line = parts.next().and_then(|s| s.parse::<usize>().ok());
        let column = parts.next().and_then(|s| s.parse::<usize>().ok());
        if let (Some(line), Some(_)) = (line, column) {
            lines.push(line);
        }
    }
    lines
}

fn assert_points_at(stderr: &str, allowed: &[usize]) {
    let lines = located_lines(stderr);
    assert!(
        lines.iter().any(|line| allowed.contains(line)),
        "no vgpud.toml:LINE:COLUMN with LINE in {allowed:?}:\n{stderr}"
    );
}

#[test]
fn unknown_key_is_refused_at_its_line() -> anyhow::Result<()> {
    let mut toml = render(&DaemonConfig::standard());
    toml.insert_str(0, "bogus_key = 1\n");
    let exited = run(&toml)?;
    assert_points_at(&exited.stderr, &[1]);
    assert!(exited.stderr.contains("bogus_key"), "{}", exited.stderr);
    Ok(())
}

#[test]
fn unknown_profile_is_refused_at_the_vgpu() -> anyhow::Result<()> {
    let mut config = DaemonConfig::standard();
    config.vgpus[1].profile = "no-such-profile".into();
    let toml = render(&config);
    let exited = run(&toml)?;
    let at = line_of(&toml, "no-such-profile");
    assert_points_at(&exited.stderr, &[at, at - 3]);
    assert!(
        exited.stderr.contains("no-such-profile"),
        "{}",
        exited.stderr
    );
    Ok(())
}

#[test]
fn duplicate_uuid_is_refused_at_the_second_vgpu() -> anyhow::Result<()> {
    let mut config = DaemonConfig::standard();
    config.vgpus[1].uuid = config.vgpus[0].uuid;
    let toml = render(&config);
    let exited = run(&toml)?;
    let uuid = config.vgpus[0].uuid.to_string();
    let second = toml
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(&uuid))
        .nth(1);
    let at = second.map(|(index, _)| index + 1).expect("two uuid lines");
    assert_points_at(&exited.stderr, &[at, at - 1]);
    Ok(())
}

#[test]
fn framebuffer_not_a_power_of_two_is_refused() -> anyhow::Result<()> {
    let mut config = DaemonConfig::standard();
    config.profiles[0].framebuffer = "24MiB".into();
    let toml = render(&config);
    let exited = run(&toml)?;
    assert_points_at(&exited.stderr, &[line_of(&toml, "24MiB")]);
    assert!(exited.stderr.contains("power of two"), "{}", exited.stderr);
    Ok(())
}

#[test]
fn more_instances_than_the_profile_allows_are_refused() -> anyhow::Result<()> {
    let mut config = DaemonConfig::standard();
    config.gpus[0].vram = "1GiB".into();
    config.profiles[0].max_instances = 2;
    let template = config.vgpus[0].clone();
    config.vgpus.push(VgpuSpec {
        uuid: uuid::Uuid::from_u128(0x6f1c2a4e_0d4e_4a43_9f7b_3b1d8e0c1a03),
        ..template
    });
    let toml = render(&config);
    let exited = run(&toml)?;
    assert!(
        !located_lines(&exited.stderr).is_empty(),
        "{}",
        exited.stderr
    );
    assert!(exited.stderr.contains("test-16m"), "{}", exited.stderr);
    Ok(())
}

#[test]
fn vram_shortfall_is_refused_with_the_amount_short() -> anyhow::Result<()> {
    let mut config = DaemonConfig::standard();
    config.profiles[0].max_instances = 8;
    // Five 16 MiB vGPUs on 64 MiB: 16 MiB short.
    for n in 3..=5u128 {
        let template = config.vgpus[0].clone();
        config.vgpus.push(VgpuSpec {
            uuid: uuid::Uuid::from_u128(0x6f1c2a4e_0d4e_4a43_9f7b_3b1d8e0c1a00 + n),
            ..template
        });
    }
    let toml = render(&config);
    let exited = run(&toml)?;
    assert!(
        !located_lines(&exited.stderr).is_empty(),
        "{}",
        exited.stderr
    );
    let stderr = &exited.stderr;
    assert!(stderr.contains("short"), "{stderr}");
    assert!(
        ["16 MiB", "16MiB", "16777216"]
            .iter()
            .any(|amount| stderr.contains(amount)),
        "amount short not named: {stderr}"
    );
    Ok(())
}
