//! Every documented error of every command, by kind
//! (docs/control-api.md "Commands").

use serde_json::{Value, json};

use crate::rig::{CFG, Daemon, s, uuid};

#[test]
fn create_errors_have_their_documented_kinds() -> anyhow::Result<()> {
    let mut d = Daemon::standard()?;
    // bad_arguments: a missing profile, a malformed UUID, a socket key that
    // does not resolve.
    d.expect("bad_arguments", "create", json!({}))?;
    d.expect("bad_arguments", "create", Value::Null)?;
    d.expect(
        "bad_arguments",
        "create",
        json!({"profile": "p16", "uuid": "not-a-uuid"}),
    )?;
    d.expect(
        "bad_arguments",
        "create",
        json!({"profile": "p16", "socket_owner": "no-such-user-vgpud-test"}),
    )?;
    d.expect(
        "bad_arguments",
        "create",
        json!({"profile": "p16", "socket_group": "no-such-group-vgpud-test"}),
    )?;
    d.expect(
        "bad_arguments",
        "create",
        json!({"profile": "p16", "socket_mode": "rw"}),
    )?;
    // not_found: no such profile or GPU.
    d.expect("not_found", "create", json!({"profile": "nope"}))?;
    d.expect(
        "not_found",
        "create",
        json!({"profile": "p16", "gpu": "gpu9"}),
    )?;
    // conflict: the UUID runs already (a config vGPU, a transient one), or
    // is defined.
    d.expect(
        "conflict",
        "create",
        json!({"profile": "p16", "uuid": s(CFG)}),
    )?;
    let t = uuid();
    d.ok("create", json!({"profile": "p16", "uuid": s(t)}))?;
    d.expect(
        "conflict",
        "create",
        json!({"profile": "p16", "uuid": s(t)}),
    )?;
    let defined = uuid();
    d.ok("define", json!({"profile": "p16", "uuid": s(defined)}))?;
    d.expect(
        "conflict",
        "create",
        json!({"profile": "p16", "uuid": s(defined)}),
    )?;
    // conflict: its socket path is served by another process.
    let squatter = uuid();
    let listener = std::os::unix::net::UnixListener::bind(d.socket(squatter))?;
    d.expect(
        "conflict",
        "create",
        json!({"profile": "p16", "uuid": s(squatter)}),
    )?;
    drop(listener);
    // insufficient_resources, naming the max_instances of the profile.
    d.ok("create", json!({"profile": "p32", "gpu": "gpu1"}))?;
    let message = d.expect(
        "insufficient_resources",
        "create",
        json!({"profile": "p32", "gpu": "gpu1"}),
    )?;
    anyhow::ensure!(
        message.contains("gpu1") && message.contains("max_instances"),
        "message does not name what is short: {message}"
    );
    // ... and naming VRAM (gpu0 holds CFG and t: 32 MiB; a third 16 MiB
    // and then a 32 MiB block leave no 32 MiB block).
    d.ok("create", json!({"profile": "p16", "gpu": "gpu0"}))?;
    let message = d.expect(
        "insufficient_resources",
        "create",
        json!({"profile": "p32", "gpu": "gpu0"}),
    )?;
    anyhow::ensure!(
        message.contains("gpu0") && message.contains("32 MiB") && message.contains("VRAM"),
        "message does not name the VRAM that is short: {message}"
    );
    d.assert_alive()
}

#[test]
fn create_without_gpu_names_every_gpu_tried_when_none_fits() -> anyhow::Result<()> {
    let d = Daemon::standard()?;
    d.ok("create", json!({"profile": "p32"}))?; // gpu0 (first it fits on)
    let second = d.ok("create", json!({"profile": "p32"}))?;
    anyhow::ensure!(second["gpu"] == "gpu1", "first GPU it fits on: {second}");
    let message = d.expect(
        "insufficient_resources",
        "create",
        json!({"profile": "p32"}),
    )?;
    anyhow::ensure!(
        message.contains("gpu0") && message.contains("gpu1"),
        "the message names what is short on each GPU tried: {message}"
    );
    Ok(())
}

#[test]
fn remove_and_stop_errors_have_their_documented_kinds() -> anyhow::Result<()> {
    let mut d = Daemon::standard()?;
    for verb in ["remove", "stop"] {
        d.expect("bad_arguments", verb, json!({}))?;
        d.expect("bad_arguments", verb, Value::Null)?;
        d.expect("bad_arguments", verb, json!({"uuid": "xyz"}))?;
        d.expect(
            "bad_arguments",
            verb,
            json!({"uuid": s(uuid()), "force": "yes"}),
        )?;
        d.expect("not_found", verb, json!({"uuid": s(uuid())}))?;
        // A config vGPU is conflict for both, with or without force.
        d.expect("conflict", verb, json!({"uuid": s(CFG)}))?;
        d.expect("conflict", verb, json!({"uuid": s(CFG), "force": true}))?;
    }
    // A defined vGPU that is not running: conflict for stop; remove of a
    // defined one is conflict.
    let def = uuid();
    d.ok("define", json!({"profile": "p16", "uuid": s(def)}))?;
    d.expect("conflict", "stop", json!({"uuid": s(def)}))?;
    d.expect("conflict", "remove", json!({"uuid": s(def)}))?;
    d.ok("start", json!({"uuid": s(def)}))?;
    d.expect("conflict", "remove", json!({"uuid": s(def)}))?;
    d.expect("conflict", "remove", json!({"uuid": s(def), "force": true}))?;
    // It still runs after the refusals.
    anyhow::ensure!(d.entry(def, false)?["state"] == "listening");
    // busy: a client is attached.
    let t = uuid();
    d.ok("create", json!({"profile": "p16", "uuid": s(t)}))?;
    let mut client = d.connect(t)?;
    d.wait_state(t, "attached")?;
    d.expect("busy", "remove", json!({"uuid": s(t)}))?;
    d.expect("busy", "stop", json!({"uuid": s(t)}))?;
    d.expect("busy", "remove", json!({"uuid": s(t), "force": false}))?;
    crate::rig::still_works(&mut client)?;
    let mut client = d.connect(def)?;
    d.wait_state(def, "attached")?;
    d.expect("busy", "stop", json!({"uuid": s(def)}))?;
    crate::rig::still_works(&mut client)?;
    d.assert_alive()
}

#[test]
fn define_errors_have_their_documented_kinds() -> anyhow::Result<()> {
    let d = Daemon::standard()?;
    d.expect("bad_arguments", "define", json!({}))?;
    d.expect(
        "bad_arguments",
        "define",
        json!({"profile": "p16", "uuid": "1234"}),
    )?;
    d.expect(
        "bad_arguments",
        "define",
        json!({"profile": "p16", "auto": "yes"}),
    )?;
    d.expect("not_found", "define", json!({"profile": "nope"}))?;
    d.expect(
        "not_found",
        "define",
        json!({"profile": "p16", "gpu": "gpu7"}),
    )?;
    d.expect(
        "conflict",
        "define",
        json!({"profile": "p16", "uuid": s(CFG)}),
    )?;
    let u = uuid();
    d.ok("define", json!({"profile": "p16", "uuid": s(u)}))?;
    d.expect(
        "conflict",
        "define",
        json!({"profile": "p32", "uuid": s(u)}),
    )?;
    // The refused redefinition changed nothing.
    let entry = d.entry(u, true)?;
    anyhow::ensure!(entry["profile"] == "p16", "{entry}");
    Ok(())
}

#[test]
fn define_that_cannot_write_its_file_is_failed_and_changes_nothing() -> anyhow::Result<()> {
    let d = Daemon::standard()?;
    let first = uuid();
    d.ok("define", json!({"profile": "p16", "uuid": s(first)}))?;
    // Replace vgpus/ with a regular file: no write can land (root ignores
    // permissions, so modes would not do).
    let vgpus = d.state_dir().join("vgpus");
    let keep = d.dir().join("vgpus.kept");
    std::fs::rename(&vgpus, &keep)?;
    std::fs::write(&vgpus, b"not a directory")?;
    let u = uuid();
    d.expect("failed", "define", json!({"profile": "p16", "uuid": s(u)}))?;
    anyhow::ensure!(
        !d.vgpus(true)?.contains_key(&u),
        "a failed define must change nothing"
    );
    d.expect("failed", "undefine", json!({"uuid": s(first)}))?;
    anyhow::ensure!(
        d.vgpus(true)?.contains_key(&first),
        "failed undefine kept it"
    );
    d.expect(
        "failed",
        "modify",
        json!({"uuid": s(first), "profile": "p32"}),
    )?;
    anyhow::ensure!(
        d.entry(first, true)?["profile"] == "p16",
        "failed modify kept it"
    );
    std::fs::remove_file(&vgpus)?;
    std::fs::rename(&keep, &vgpus)?;
    d.ok("define", json!({"profile": "p16", "uuid": s(u)}))?;
    Ok(())
}

#[test]
fn undefine_start_modify_errors_have_their_documented_kinds() -> anyhow::Result<()> {
    let d = Daemon::standard()?;
    // undefine
    d.expect("not_found", "undefine", json!({"uuid": s(uuid())}))?;
    d.expect("conflict", "undefine", json!({"uuid": s(CFG)}))?;
    let t = uuid();
    d.ok("create", json!({"profile": "p16", "uuid": s(t)}))?;
    d.expect("conflict", "undefine", json!({"uuid": s(t)}))?;
    d.expect("bad_arguments", "undefine", json!({"uuid": 7}))?;
    // start
    d.expect("not_found", "start", json!({"uuid": s(uuid())}))?;
    let def = uuid();
    d.ok("define", json!({"profile": "p16", "uuid": s(def)}))?;
    d.ok("start", json!({"uuid": s(def)}))?;
    d.expect("conflict", "start", json!({"uuid": s(def)}))?;
    let big = uuid();
    d.ok(
        "define",
        json!({"profile": "p32", "gpu": "gpu0", "uuid": s(big)}),
    )?;
    // gpu0 now holds CFG, t (first fit) and def: 48 of 64 MiB.
    d.expect("insufficient_resources", "start", json!({"uuid": s(big)}))?;
    anyhow::ensure!(d.entry(big, true)?["state"] == "defined");
    d.expect("bad_arguments", "start", json!({}))?;
    // modify
    d.expect(
        "not_found",
        "modify",
        json!({"uuid": s(uuid()), "auto": true}),
    )?;
    d.expect(
        "not_found",
        "modify",
        json!({"uuid": s(def), "profile": "nope"}),
    )?;
    d.expect(
        "not_found",
        "modify",
        json!({"uuid": s(def), "gpu": "gpu9"}),
    )?;
    d.expect("conflict", "modify", json!({"uuid": s(t), "auto": true}))?;
    d.expect("conflict", "modify", json!({"uuid": s(CFG), "auto": true}))?;
    d.expect(
        "bad_arguments",
        "modify",
        json!({"uuid": s(def), "auto": "on"}),
    )?;
    d.expect(
        "bad_arguments",
        "modify",
        json!({"uuid": s(def), "socket_mode": "9"}),
    )?;
    d.expect("bad_arguments", "modify", json!({"auto": true}))?;
    // None of the refusals changed the definition.
    let entry = d.entry(def, true)?;
    anyhow::ensure!(
        entry["profile"] == "p16" && entry["auto"] == false,
        "{entry}"
    );
    Ok(())
}

#[test]
fn read_commands_errors_have_their_documented_kinds() -> anyhow::Result<()> {
    let d = Daemon::standard()?;
    d.expect("not_found", "types", json!({"gpu": "gpu9"}))?;
    d.expect("not_found", "stats", json!({"uuid": s(uuid())}))?;
    let def = uuid();
    d.ok("define", json!({"profile": "p16", "uuid": s(def)}))?;
    // stats: not_found if it is not running.
    d.expect("not_found", "stats", json!({"uuid": s(def)}))?;
    d.expect("bad_arguments", "stats", json!({"uuid": "zz"}))?;
    d.expect("bad_arguments", "list", json!({"defined": "yes"}))?;
    d.expect("bad_arguments", "types", json!({"gpu": 0}))?;
    // types with a GPU limits available to that GPU.
    let types = d.ok("types", json!({"gpu": "gpu1"}))?;
    for t in types["types"].as_array().into_iter().flatten() {
        let gpus: Vec<_> = t["available"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| a["gpu"].clone())
            .collect();
        anyhow::ensure!(gpus == vec![json!("gpu1")], "{types}");
    }
    // Framing-level errors.
    let r = d.call("frobnicate", Value::Null)?;
    anyhow::ensure!(r["error"]["kind"] == "unknown_command", "{r}");
    Ok(())
}

#[test]
fn version_and_unknown_keys_are_refused_as_documented() -> anyhow::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let d = Daemon::standard()?;
    let ask = |line: &str| -> anyhow::Result<Value> {
        let stream = std::os::unix::net::UnixStream::connect(d.control())?;
        stream.set_read_timeout(Some(crate::rig::PATIENCE))?;
        (&stream).write_all(line.as_bytes())?;
        let mut answer = String::new();
        BufReader::new(&stream).read_line(&mut answer)?;
        Ok(serde_json::from_str(&answer)?)
    };
    let r = ask("{\"version\":2,\"command\":\"list\"}\n")?;
    anyhow::ensure!(r["error"]["kind"] == "unsupported_version", "{r}");
    let r = ask("{\"version\":1,\"command\":\"list\",\"extra\":1}\n")?;
    anyhow::ensure!(r["error"]["kind"] == "bad_request", "{r}");
    let r = ask("{\"command\":\"list\"}\n")?;
    anyhow::ensure!(r["error"]["kind"] == "bad_request", "no version: {r}");
    let r = ask("not json\n")?;
    anyhow::ensure!(r["error"]["kind"] == "bad_request", "{r}");
    let r = ask("{\"version\":1,\"command\":\"version\"}\n")?;
    anyhow::ensure!(r["ok"] == true && r["result"]["api"] == 1, "{r}");
    // Every response carries version and ok.
    anyhow::ensure!(r["version"] == 1, "{r}");
    Ok(())
}
