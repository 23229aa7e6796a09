use super::*;
use crate::access::SocketAccess;

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

/// `MINIMAL` with top-level `lines` before its tables.
fn with_top(lines: &str) -> String {
    format!("{lines}\n{MINIMAL}")
}

/// `MINIMAL` with `lines` added to its `[[vgpu]]`.
fn with_vgpu(lines: &str) -> String {
    MINIMAL.replace("profile = \"p\"\n", &format!("profile = \"p\"\n{lines}\n"))
}

#[test]
fn access_and_metrics_keys_default_as_documented() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.state_dir, PathBuf::from(DEFAULT_STATE_DIR));
    assert_eq!(config.socket_access, SocketAccess::VGPU_DEFAULT);
    assert_eq!(config.socket_access.mode, 0o660);
    assert_eq!(config.control_access, SocketAccess::control(None));
    assert_eq!(config.control_access.mode, 0o600);
    assert_eq!(config.metrics_listen, None);
    assert!(!config.metrics_allow_remote);
    assert_eq!(config.vgpus[0].access, SocketAccess::VGPU_DEFAULT);
}

#[test]
fn top_level_socket_keys_are_every_vgpus_defaults() {
    let config = parse(&with_top(
        "state_dir = \"/srv/vgpud\"\nsocket_owner = \"root\"\nsocket_group = \"0\"\nsocket_mode = \"0600\"",
    ))
    .unwrap();
    assert_eq!(config.state_dir, PathBuf::from("/srv/vgpud"));
    let expected = SocketAccess {
        owner: Some(0),
        group: Some(0),
        mode: 0o600,
    };
    assert_eq!(config.socket_access, expected);
    assert_eq!(config.vgpus[0].access, expected);
}

#[test]
fn vgpu_socket_keys_override_the_top_level_ones() {
    let text = with_top("socket_owner = \"107\"\nsocket_mode = \"0600\"");
    let text = text.replace(
        "profile = \"p\"\n",
        "profile = \"p\"\nsocket_group = \"root\"\nsocket_mode = \"0640\"\n",
    );
    let config = parse(&text).unwrap();
    assert_eq!(
        config.vgpus[0].access,
        SocketAccess {
            owner: Some(107),
            group: Some(0),
            mode: 0o640
        }
    );
    assert_eq!(config.socket_access.mode, 0o600);
}

#[test]
fn unknown_socket_owner_is_a_located_error() {
    let text = with_vgpu("socket_owner = \"no-such-user-vgpud\"");
    let err = parse(&text).unwrap_err();
    let d = &err.diagnostics()[0];
    assert_eq!(
        d.problem,
        "user \"no-such-user-vgpud\" does not exist on this machine"
    );
    let line = text
        .lines()
        .position(|l| l.starts_with("socket_owner"))
        .unwrap();
    assert_eq!((d.location.line, d.location.column), (line + 1, 16));
    assert!(d.help.as_deref().unwrap().contains("create the user"));
}

#[test]
fn unknown_groups_are_located_errors() {
    let message = first_problem(&with_top("socket_group = \"no-such-group-vgpud\""));
    assert!(
        message.contains("test.toml:1:16: group \"no-such-group-vgpud\" does not exist"),
        "{message}"
    );
    let message = first_problem(&with_top("control_group = \"no-such-group-vgpud\""));
    assert!(
        message.contains("test.toml:1:17: group \"no-such-group-vgpud\" does not exist"),
        "{message}"
    );
}

#[test]
fn bad_socket_modes_are_refused_with_help() {
    for (mode, problem) in [
        ("\"4660\"", "sets bits outside 0777"),
        ("\"0460\"", "does not give the owner read and write"),
        ("\"rw-rw----\"", "is not an octal mode"),
        ("0o660", "socket_mode 432 is a number"),
    ] {
        let message = first_problem(&with_vgpu(&format!("socket_mode = {mode}")));
        assert!(message.contains(problem), "{mode}: {message}");
        assert!(message.contains("help: "), "{mode}: {message}");
    }
    let message = first_problem(&with_top("socket_mode = 0o660"));
    assert!(
        message.contains("quote it: socket_mode = \"0660\""),
        "{message}"
    );
}

#[test]
fn control_group_opens_the_control_socket_to_that_group() {
    let config = parse(&with_top("control_group = \"root\"")).unwrap();
    assert_eq!(
        config.control_access,
        SocketAccess {
            owner: None,
            group: Some(0),
            mode: 0o660
        }
    );
}

#[test]
fn metrics_listen_takes_a_loopback_address() {
    for addr in ["127.0.0.1:9464", "[::1]:9464", "127.0.0.2:0"] {
        let config = parse(&with_top(&format!("metrics_listen = \"{addr}\""))).unwrap();
        assert_eq!(config.metrics_listen, Some(addr.parse().unwrap()));
    }
}

#[test]
fn remote_metrics_listen_needs_metrics_allow_remote() {
    for addr in ["0.0.0.0:9464", "192.0.2.1:9464", "[::]:9464"] {
        let message = first_problem(&with_top(&format!("metrics_listen = \"{addr}\"")));
        assert!(
            message.contains("test.toml:1:18: metrics_listen")
                && message.contains("is reachable from other hosts")
                && message.contains("metrics_allow_remote = true"),
            "{addr}: {message}"
        );
        let config = parse(&with_top(&format!(
            "metrics_listen = \"{addr}\"\nmetrics_allow_remote = true"
        )))
        .unwrap();
        assert_eq!(config.metrics_listen, Some(addr.parse().unwrap()));
        assert!(config.metrics_allow_remote);
    }
}

#[test]
fn metrics_listen_must_be_an_ip_and_port() {
    for bad in ["localhost:9464", "127.0.0.1", ""] {
        let message = first_problem(&with_top(&format!("metrics_listen = \"{bad}\"")));
        assert!(
            message.contains("is not an IP address and port"),
            "{bad}: {message}"
        );
    }
}

#[test]
fn empty_state_dir_is_refused() {
    assert!(first_problem(&with_top("state_dir = \"\"")).contains("state_dir is empty"));
}
