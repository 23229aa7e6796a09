//! The control commands against a registry of real vGPUs on a simulated
//! GPU, without a socket: every rule of `docs/control-api.md` that does
//! not need a client attached.

use std::path::Path;
use std::sync::Arc;

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use vgpu_mdev::{DmaBudget, ParentGpu, PhysicalGpu, SimGpu, SystemLimits};

use super::handle_line;
use crate::config::Config;
use crate::control::protocol::{ErrorKind, Response};
use crate::registry::{Gpu, Registry};
use crate::state::StateDir;

const A: &str = "6f1c2a4e-0d4e-4a43-9f7b-3b1d8e0c1a01";
const B: &str = "6f1c2a4e-0d4e-4a43-9f7b-3b1d8e0c1a02";

/// A registry on one 64 MiB GPU with profiles `small` (16 MiB, 2
/// instances) and `big` (32 MiB, 4), serving in a temporary directory.
pub(crate) struct Fixture {
    pub registry: Arc<Registry>,
    /// The configuration the registry was made from.
    pub config: Config,
    pub shutdown: CancellationToken,
    // Dropped last: the registry's accept loops run on it.
    _runtime: tokio::runtime::Runtime,
    dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = Self::config_in(dir.path(), "");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let gpu: Arc<dyn PhysicalGpu> = Arc::new(SimGpu::new("gpu0", 64 << 20).unwrap());
        let gpus = vec![(
            "gpu0".to_string(),
            Gpu {
                backend: crate::config::Backend::Sim,
                parent: Arc::new(ParentGpu::new(gpu)),
            },
        )];
        let state = StateDir::open(dir.path().join("state")).unwrap();
        let shutdown = CancellationToken::new();
        let registry = Arc::new(Registry::new(
            &config,
            gpus,
            DmaBudget::new(SystemLimits {
                max_map_count: u64::MAX,
                address_space: u64::MAX,
            }),
            Some((state, Vec::new())),
            shutdown.clone(),
            runtime.handle().clone(),
        ));
        Self {
            registry,
            config,
            shutdown,
            _runtime: runtime,
            dir,
        }
    }

    /// The fixture's configuration file with `extra` (e.g. `[[vgpu]]`
    /// tables) appended, as a reload would read it.
    pub fn config_with(&self, extra: &str) -> Config {
        Self::config_in(self.dir.path(), extra)
    }

    fn config_in(dir: &Path, extra: &str) -> Config {
        let text = format!(
            r#"
runtime_dir = "{}"
[[gpu]]
id = "gpu0"
vram = "64MiB"
[[profile]]
name = "small"
framebuffer = "16MiB"
max_instances = 2
channels = 2
[[profile]]
name = "big"
framebuffer = "32MiB"
max_instances = 4
{extra}"#,
            dir.display()
        );
        Config::parse(Path::new("test.toml"), &text).unwrap()
    }

    pub fn call(&self, command: &str, args: Value) -> Response {
        let line = json!({"version": 1, "command": command, "args": args}).to_string();
        handle_line(&self.registry, &line)
    }

    pub fn ok(&self, command: &str, args: Value) -> Value {
        let response = self.call(command, args);
        assert!(response.ok, "{command}: {response:?}");
        response.result.unwrap()
    }

    pub fn error(&self, command: &str, args: Value) -> (ErrorKind, String) {
        let response = self.call(command, args);
        assert!(!response.ok, "{command} should fail: {response:?}");
        let e = response.error.unwrap();
        (e.kind, e.message)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

#[test]
fn create_then_remove_gives_the_vram_back() {
    let f = Fixture::new();
    let created = f.ok("create", json!({"profile": "big", "uuid": A}));
    assert_eq!(created["uuid"], A);
    assert_eq!(created["gpu"], "gpu0");
    let socket = created["socket"].as_str().unwrap().to_string();
    assert!(Path::new(&socket).exists());
    let list = f.ok("list", Value::Null);
    assert_eq!(list["gpus"][0]["vram_free"], 32 << 20);
    assert_eq!(list["vgpus"][0]["state"], "listening");
    assert_eq!(list["vgpus"][0]["origin"], "transient");

    let removed = f.ok("remove", json!({"uuid": A}));
    assert_eq!(removed["disconnected"], false);
    assert!(!Path::new(&socket).exists());
    let list = f.ok("list", Value::Null);
    assert_eq!(list["gpus"][0]["vram_free"], 64 << 20);
    assert_eq!(list["vgpus"].as_array().unwrap().len(), 0);
    // The same UUID and the VRAM can be used again at once.
    f.ok("create", json!({"profile": "big", "uuid": A}));
}

#[test]
fn create_without_a_uuid_makes_one() {
    let f = Fixture::new();
    let created = f.ok("create", json!({"profile": "small"}));
    assert!(uuid::Uuid::try_parse(created["uuid"].as_str().unwrap()).is_ok());
}

#[test]
fn create_names_what_is_short() {
    let f = Fixture::new();
    f.ok("create", json!({"profile": "big"}));
    f.ok("create", json!({"profile": "big"}));
    let (kind, message) = f.error("create", json!({"profile": "small"}));
    assert_eq!(kind, ErrorKind::InsufficientResources);
    assert!(message.contains("no free 16 MiB block"), "{message}");

    let f = Fixture::new();
    f.ok("create", json!({"profile": "small"}));
    f.ok("create", json!({"profile": "small"}));
    let (kind, message) = f.error("create", json!({"profile": "small"}));
    assert_eq!(kind, ErrorKind::InsufficientResources);
    assert!(message.contains("max_instances"), "{message}");
}

#[test]
fn create_refuses_bad_arguments_by_kind() {
    let f = Fixture::new();
    assert_eq!(f.error("create", json!({})).0, ErrorKind::BadArguments);
    assert_eq!(
        f.error("create", json!({"profile": "small", "uuid": "nope"}))
            .0,
        ErrorKind::BadArguments
    );
    assert_eq!(
        f.error("create", json!({"profile": "small", "bogus": 1})).0,
        ErrorKind::BadArguments
    );
    assert_eq!(
        f.error("create", json!({"profile": "huge"})).0,
        ErrorKind::NotFound
    );
    assert_eq!(
        f.error("create", json!({"profile": "small", "gpu": "gpu9"}))
            .0,
        ErrorKind::NotFound
    );
    f.ok("create", json!({"profile": "small", "uuid": A}));
    assert_eq!(
        f.error("create", json!({"profile": "small", "uuid": A})).0,
        ErrorKind::Conflict
    );
}

#[test]
fn remove_and_stop_of_unknown_vgpus_are_not_found() {
    let f = Fixture::new();
    assert_eq!(f.error("remove", json!({"uuid": A})).0, ErrorKind::NotFound);
    assert_eq!(f.error("stop", json!({"uuid": A})).0, ErrorKind::NotFound);
    assert_eq!(f.error("start", json!({"uuid": A})).0, ErrorKind::NotFound);
    assert_eq!(
        f.error("undefine", json!({"uuid": A})).0,
        ErrorKind::NotFound
    );
}

#[test]
fn define_start_stop_undefine() {
    let f = Fixture::new();
    let defined = f.ok(
        "define",
        json!({"profile": "small", "uuid": A, "auto": true}),
    );
    assert_eq!(defined["auto"], true);
    let file = defined["file"].as_str().unwrap().to_string();
    assert!(Path::new(&file).exists(), "{file}");
    // Defined, not running: only `list --defined` shows it.
    assert_eq!(
        f.ok("list", Value::Null)["vgpus"].as_array().unwrap().len(),
        0
    );
    let list = f.ok("list", json!({"defined": true}));
    assert_eq!(list["vgpus"][0]["state"], "defined");
    assert_eq!(list["vgpus"][0]["auto"], true);
    assert_eq!(f.error("stop", json!({"uuid": A})).0, ErrorKind::Conflict);

    let started = f.ok("start", json!({"uuid": A}));
    assert_eq!(started["profile"], "small");
    assert_eq!(f.error("start", json!({"uuid": A})).0, ErrorKind::Conflict);
    assert_eq!(f.error("remove", json!({"uuid": A})).0, ErrorKind::Conflict);
    assert_eq!(f.ok("list", Value::Null)["vgpus"][0]["origin"], "defined");
    f.ok("stop", json!({"uuid": A}));
    let list = f.ok("list", json!({"defined": true}));
    assert_eq!(list["vgpus"][0]["state"], "defined");

    f.ok("undefine", json!({"uuid": A}));
    assert!(!Path::new(&file).exists());
    assert_eq!(
        f.ok("list", json!({"defined": true}))["vgpus"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
}

#[test]
fn undefine_of_a_running_vgpu_leaves_it_running_as_transient() {
    let f = Fixture::new();
    f.ok("define", json!({"profile": "small", "uuid": A}));
    f.ok("start", json!({"uuid": A}));
    f.ok("undefine", json!({"uuid": A}));
    let list = f.ok("list", Value::Null);
    assert_eq!(list["vgpus"][0]["origin"], "transient");
    f.ok("remove", json!({"uuid": A}));
}

#[test]
fn define_refuses_what_cannot_start() {
    let f = Fixture::new();
    assert_eq!(
        f.error("define", json!({"profile": "huge"})).0,
        ErrorKind::NotFound
    );
    assert_eq!(
        f.error("define", json!({"profile": "small", "gpu": "gpu7"}))
            .0,
        ErrorKind::NotFound
    );
    f.ok("define", json!({"profile": "small", "uuid": A}));
    assert_eq!(
        f.error("define", json!({"profile": "small", "uuid": A})).0,
        ErrorKind::Conflict
    );
    // A defined UUID is not `create`d behind the definition's back.
    assert_eq!(
        f.error("create", json!({"profile": "small", "uuid": A})).0,
        ErrorKind::Conflict
    );
}

#[test]
fn modify_changes_the_definition_for_the_next_start() {
    let f = Fixture::new();
    f.ok("define", json!({"profile": "small", "uuid": A}));
    f.ok("start", json!({"uuid": A}));
    let modified = f.ok("modify", json!({"uuid": A, "profile": "big", "auto": true}));
    assert_eq!(modified["profile"], "big");
    assert_eq!(modified["auto"], true);
    // Running as it was started.
    assert_eq!(f.ok("list", Value::Null)["vgpus"][0]["profile"], "small");
    f.ok("stop", json!({"uuid": A}));
    assert_eq!(f.ok("start", json!({"uuid": A}))["profile"], "big");
    assert_eq!(
        f.error("modify", json!({"uuid": A, "profile": "nope"})).0,
        ErrorKind::NotFound
    );
    assert_eq!(f.error("modify", json!({"uuid": B})).0, ErrorKind::NotFound);
}

#[test]
fn types_counts_what_still_fits() {
    let f = Fixture::new();
    let types = f.ok("types", Value::Null);
    let small = &types["types"][0];
    assert_eq!(small["profile"], "small");
    assert_eq!(small["available"][0]["instances"], 2);
    assert_eq!(types["types"][1]["available"][0]["instances"], 2);
    f.ok("create", json!({"profile": "big"}));
    let types = f.ok("types", json!({"gpu": "gpu0"}));
    assert_eq!(types["types"][1]["available"][0]["instances"], 1);
    assert_eq!(
        f.error("types", json!({"gpu": "gpu1"})).0,
        ErrorKind::NotFound
    );
}

#[test]
fn stats_reports_running_vgpus() {
    let f = Fixture::new();
    f.ok("create", json!({"profile": "small", "uuid": A}));
    let stats = f.ok("stats", Value::Null);
    assert_eq!(stats["vgpus"][0]["uuid"], A);
    assert_eq!(stats["vgpus"][0]["vram_size"], 16 << 20);
    assert_eq!(stats["vgpus"][0]["register_reads"], 0);
    assert!(stats["time_ns"].as_u64().is_some());
    assert_eq!(
        f.ok("stats", json!({"uuid": A}))["vgpus"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(f.error("stats", json!({"uuid": B})).0, ErrorKind::NotFound);
}

#[test]
fn malformed_requests_are_refused_by_kind() {
    let f = Fixture::new();
    let r = handle_line(&f.registry, "not json");
    assert_eq!(r.error.unwrap().kind, ErrorKind::BadRequest);
    let r = handle_line(&f.registry, r#"{"version":1,"command":"list","extra":1}"#);
    assert_eq!(r.error.unwrap().kind, ErrorKind::BadRequest);
    let r = handle_line(&f.registry, r#"{"version":2,"command":"list"}"#);
    let e = r.error.unwrap();
    assert_eq!(e.kind, ErrorKind::UnsupportedVersion);
    assert!(e.message.contains("version 1"));
    let r = handle_line(&f.registry, r#"{"version":1,"command":"frobnicate"}"#);
    assert_eq!(r.error.unwrap().kind, ErrorKind::UnknownCommand);
    assert_eq!(
        f.error("list", json!({"defined": "yes"})).0,
        ErrorKind::BadArguments
    );
    assert_eq!(f.error("list", json!([1])).0, ErrorKind::BadArguments);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// Whatever a client sends as arguments of any command, the answer is
    /// a response (never a panic), and only `create`/`define` with a
    /// valid profile succeed in changing anything.
    #[test]
    fn arbitrary_arguments_never_panic(
        command in proptest::sample::select(super::COMMANDS.to_vec()),
        args in arbitrary_json(),
    ) {
        let f = Fixture::new();
        let line = json!({"version": 1, "command": command, "args": args}).to_string();
        let _ = handle_line(&f.registry, &line);
    }
}

fn arbitrary_json() -> impl proptest::strategy::Strategy<Value = Value> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just(A.to_string()),
            Just("small".to_string()),
            Just("gpu0".to_string()),
            Just("0600".to_string()),
            ".{0,12}",
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            proptest::collection::btree_map(
                prop_oneof![
                    Just("uuid".to_string()),
                    Just("profile".to_string()),
                    Just("gpu".to_string()),
                    Just("force".to_string()),
                    Just("auto".to_string()),
                    Just("defined".to_string()),
                    Just("socket_mode".to_string()),
                    "[a-z]{1,6}",
                ],
                inner,
                0..4
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn changing_a_vgpu_that_is_not_a_definition_is_a_conflict() {
    let f = Fixture::new();
    f.ok("create", json!({"profile": "small", "uuid": A}));
    assert_eq!(
        f.error("modify", json!({"uuid": A, "auto": true})).0,
        ErrorKind::Conflict
    );
    assert_eq!(
        f.error("undefine", json!({"uuid": A})).0,
        ErrorKind::Conflict
    );
    assert_eq!(f.error("modify", json!({"uuid": B})).0, ErrorKind::NotFound);
}

#[test]
fn optional_keys_may_be_null_and_argumentless_commands_take_none() {
    let f = Fixture::new();
    f.ok(
        "create",
        json!({"profile": "small", "uuid": A, "gpu": null}),
    );
    f.ok("remove", json!({"uuid": A, "force": null}));
    f.ok("list", json!({"defined": null}));
    f.ok("version", json!({}));
    f.ok("metrics", Value::Null);
    assert_eq!(
        f.error("version", json!({"x": 1})).0,
        ErrorKind::BadArguments
    );
    assert_eq!(f.error("metrics", json!("x")).0, ErrorKind::BadArguments);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Any text as a request line is answered with a response of a
    /// documented error kind (or success), never a panic.
    #[test]
    fn arbitrary_lines_never_panic(line in "(\\PC|[{}\\[\\]\":,])*") {
        let f = Fixture::new();
        let response = handle_line(&f.registry, &line);
        proptest::prop_assert!(response.ok || response.error.is_some());
    }
}

#[test]
fn define_with_empty_values_is_bad_arguments() {
    let f = Fixture::new();
    for args in [
        json!({"profile": "small", "gpu": ""}),
        json!({"profile": "small", "socket_owner": ""}),
        json!({"profile": "small", "socket_mode": ""}),
        json!({"profile": ""}),
    ] {
        assert_eq!(
            f.error("define", args.clone()).0,
            ErrorKind::BadArguments,
            "{args}"
        );
    }
    assert!(f.registry.definitions().is_empty());
}

#[test]
fn create_while_the_daemon_stops_leaves_no_socket_behind() {
    let f = Fixture::new();
    // The daemon's shutdown has begun: whatever stop_all takes down must
    // not grow behind its back.
    f.shutdown.cancel();
    let (kind, _) = f.error("create", json!({"profile": "small", "uuid": A}));
    assert_eq!(kind, ErrorKind::Failed);
    assert!(!f.registry.socket_path(A.parse().unwrap()).exists());
    assert!(f.registry.vgpus().is_empty());
}
