use super::*;

fn configs_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs")
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("test.toml"), text)
}

fn first_problem(text: &str) -> String {
    parse(text).unwrap_err().diagnostics()[0].to_string()
}

const MINIMAL: &str = r#"
[[gpu]]
id = "gpu0"
vram = "1GiB"
[[profile]]
name = "p"
framebuffer = "256MiB"
max_instances = 2
[[vgpu]]
uuid = "6f1c2a4e-0d4e-4a43-9f7b-3b1d8e0c1a01"
gpu = "gpu0"
profile = "p"
"#;

#[test]
fn example_config_is_valid() {
    let config = Config::load(&configs_dir().join("example.toml")).unwrap();
    assert_eq!(config.runtime_dir, PathBuf::from("/run/vgpud"));
    assert_eq!(config.gpus.len(), 1);
    assert_eq!(config.gpus[0].vram, 4 << 30);
    assert_eq!(config.vgpus.len(), 2);
    assert_eq!(config.vgpus[0].profile.framebuffer, 1 << 30);
    assert_eq!(config.vgpus[1].profile.subsystem_id, 0x1101);
}

/// Every file in `configs/` is valid, and every file in `configs/invalid/`
/// is refused with the message its first line names (`# expect: ...`).
#[test]
fn every_config_fixture_parses_as_its_first_line_says() {
    let mut checked = 0;
    for entry in std::fs::read_dir(configs_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Config::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            checked += 1;
        }
    }
    for entry in std::fs::read_dir(configs_dir().join("invalid")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let expect = text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix("# expect: "))
            .unwrap_or_else(|| panic!("{} lacks an `# expect:` first line", path.display()));
        let err = Config::load(&path).expect_err(&path.display().to_string());
        let message = err.to_string();
        let wanted = format!("{}:{expect}", path.display());
        assert!(
            message.contains(&wanted),
            "{}:\n wanted: {wanted}\n    got: {message}",
            path.display()
        );
        checked += 1;
    }
    assert!(checked >= 10, "only {checked} fixtures found");
}

#[test]
fn defaults_fill_optional_keys() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.runtime_dir, PathBuf::from(DEFAULT_RUNTIME_DIR));
    assert_eq!(config.gpus[0].backend, Backend::Sim);
    let p = &config.profiles[0];
    assert_eq!(p.channels, DEFAULT_CHANNELS);
    assert_eq!(p.max_resolution, DEFAULT_MAX_RESOLUTION);
    assert_eq!(p.subsystem_vendor_id, DEFAULT_SUBSYSTEM_VENDOR_ID);
    assert_eq!(p.weight, 1);
    assert_eq!(config.gpus[0].scheduler, SchedulingPolicy::BestEffort);
    assert_eq!(config.gpus[0].time_slice.millis(), 2);
}

#[test]
fn scheduler_and_time_slice_are_read_per_gpu() {
    let text = MINIMAL.replace(
        "vram = \"1GiB\"",
        "vram = \"1GiB\"\nscheduler = \"fixed-share\"\ntime_slice_ms = 30",
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.gpus[0].scheduler, SchedulingPolicy::FixedShare);
    assert_eq!(config.gpus[0].time_slice.millis(), 30);
}

#[test]
fn unknown_scheduler_is_refused_with_the_known_ones() {
    let text = MINIMAL.replace("vram = \"1GiB\"", "vram = \"1GiB\"\nscheduler = \"fair\"");
    let message = first_problem(&text);
    assert!(message.contains("unknown scheduler \"fair\""), "{message}");
    assert!(
        message.contains("best-effort, equal-share, fixed-share"),
        "{message}"
    );
}

#[test]
fn time_slice_and_weight_out_of_range_are_refused() {
    for ms in [0, 31] {
        let text = MINIMAL.replace(
            "vram = \"1GiB\"",
            &format!("vram = \"1GiB\"\ntime_slice_ms = {ms}"),
        );
        assert!(
            first_problem(&text).contains(&format!("time_slice_ms = {ms} is out of range")),
            "{ms}"
        );
    }
    for weight in [0, 101] {
        let text = MINIMAL.replace(
            "max_instances = 2",
            &format!("max_instances = 2\nweight = {weight}"),
        );
        assert!(
            first_problem(&text).contains(&format!("weight = {weight} is out of range")),
            "{weight}"
        );
    }
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text = MINIMAL
        .replace("gpu = \"gpu0\"", "gpu = \"nope\"")
        .replace("profile = \"p\"", "profile = \"q\"");
    let err = parse(&text).unwrap_err();
    let problems: Vec<String> = err
        .diagnostics()
        .iter()
        .map(|d| d.problem.clone())
        .collect();
    assert_eq!(problems, ["unknown gpu \"nope\"", "unknown profile \"q\""]);
}

#[test]
fn unknown_gpu_error_lists_defined_gpus() {
    let text = MINIMAL.replace("gpu = \"gpu0\"", "gpu = \"gpu9\"");
    assert!(first_problem(&text).contains("help: defined gpus: gpu0"));
}

#[test]
fn unknown_backend_is_refused_with_the_known_ones() {
    let text = MINIMAL.replace("vram = \"1GiB\"", "vram = \"1GiB\"\nbackend = \"cuda\"");
    let message = first_problem(&text);
    assert!(
        message.contains("unknown gpu backend \"cuda\""),
        "{message}"
    );
    assert!(message.contains("backends: sim"), "{message}");
}

#[test]
fn duplicate_gpu_and_profile_names_are_refused() {
    let text = format!("{MINIMAL}\n[[gpu]]\nid = \"gpu0\"\nvram = \"1GiB\"\n");
    assert!(first_problem(&text).contains("duplicate gpu id \"gpu0\""));
    let text = format!(
        "{MINIMAL}\n[[profile]]\nname = \"p\"\nframebuffer = \"4MiB\"\nmax_instances = 1\n"
    );
    assert!(first_problem(&text).contains("duplicate profile name \"p\""));
}

#[test]
fn channels_out_of_range_are_refused() {
    let text = MINIMAL.replace("max_instances = 2", "max_instances = 2\nchannels = 64");
    assert!(first_problem(&text).contains("channels = 64 is out of range"));
    let text = MINIMAL.replace("max_instances = 2", "max_instances = 0");
    assert!(first_problem(&text).contains("max_instances = 0 is out of range"));
}

#[test]
fn malformed_resolution_is_refused() {
    let text = MINIMAL.replace(
        "max_instances = 2",
        "max_instances = 2\nmax_resolution = \"big\"",
    );
    assert!(first_problem(&text).contains("is not WIDTHxHEIGHT"));
}

#[test]
fn vram_must_be_whole_mebibytes() {
    let text = MINIMAL.replace("vram = \"1GiB\"", "vram = \"1000KiB\"");
    assert!(first_problem(&text).contains("is not a whole number of MiB"));
}

#[test]
fn vgpus_that_fit_exactly_are_accepted() {
    let text = MINIMAL.replace("vram = \"1GiB\"", "vram = \"512MiB\"")
        + r#"
[[vgpu]]
uuid = "6f1c2a4e-0d4e-4a43-9f7b-3b1d8e0c1a02"
gpu = "gpu0"
profile = "p"
"#;
    assert_eq!(parse(&text).unwrap().vgpus.len(), 2);
}
