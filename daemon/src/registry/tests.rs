//! Reloads against a registry of real vGPUs on a simulated GPU.

use std::os::unix::fs::PermissionsExt;

use serde_json::json;
use uuid::Uuid;

use crate::control::Fixture;

const A: &str = "6f1c2a4e-0d4e-4a43-9f7b-3b1d8e0c1a01";

fn a() -> Uuid {
    A.parse().unwrap()
}

fn vgpu_table(uuid: &str, extra: &str) -> String {
    format!("[[vgpu]]\nuuid = \"{uuid}\"\ngpu = \"gpu0\"\nprofile = \"small\"\n{extra}\n")
}

#[test]
fn a_vgpu_started_by_a_reload_gets_its_own_socket_keys() {
    let f = Fixture::new();
    let new = f.config_with(&vgpu_table(A, "socket_mode = \"0600\""));
    let outcome = f.registry.reload(&new, &f.config).unwrap();
    assert_eq!(outcome.started, vec![a()]);
    let mode = std::fs::metadata(f.registry.socket_path(a()))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the file's socket_mode, not the default 0660"
    );
}

#[test]
fn a_reload_naming_a_transient_vgpu_reports_it_failed() {
    let f = Fixture::new();
    f.ok("create", json!({"profile": "big", "uuid": A}));
    let new = f.config_with(&vgpu_table(A, ""));
    let outcome = f.registry.reload(&new, &f.config).unwrap();
    assert_eq!(outcome.started, Vec::<Uuid>::new());
    assert_eq!(
        outcome.failed.iter().map(|(u, _)| *u).collect::<Vec<_>>(),
        vec![a()],
        "{outcome:?}"
    );
    // Left as it is.
    assert_eq!(f.ok("list", json!(null))["vgpus"][0]["origin"], "transient");
}
