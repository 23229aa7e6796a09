//! Definitions across restarts and reloads (docs/operations.md
//! "Reloading the configuration", "Definitions and the state directory";
//! docs/state-directory.md).

use serde_json::json;

use crate::rig::{CFG, Daemon, MIB, base_toml, s, standard_toml, still_works, uuid, vgpu_table};

#[test]
fn auto_definitions_start_with_the_daemon_and_others_stay_defined() -> anyhow::Result<()> {
    let mut d = Daemon::standard()?;
    let auto = uuid();
    let manual = uuid();
    let transient = uuid();
    let running_manual = uuid();
    d.ok("define", json!({"profile": "p16", "uuid": s(auto), "auto": true, "gpu": "gpu1", "socket_mode": "0600"}))?;
    d.ok("define", json!({"profile": "p32", "uuid": s(manual)}))?;
    d.ok(
        "define",
        json!({"profile": "p16", "uuid": s(running_manual)}),
    )?;
    d.ok("start", json!({"uuid": s(running_manual)}))?;
    d.ok("create", json!({"profile": "p16", "uuid": s(transient)}))?;
    // The file's format (docs/state-directory.md).
    let text = std::fs::read_to_string(d.definition_file(auto))?;
    let keys: Vec<&str> = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(" = ").next())
        .collect();
    anyhow::ensure!(keys == ["profile", "gpu", "auto", "socket_mode"], "{text}");
    anyhow::ensure!(text.lines().take(2).all(|l| l.starts_with('#')), "{text}");
    d.restart()?;
    let all = d.vgpus(true)?;
    anyhow::ensure!(
        !all.contains_key(&transient),
        "a transient vGPU survived a restart"
    );
    anyhow::ensure!(!d.socket(transient).exists());
    let a = all.get(&auto).ok_or_else(|| anyhow::anyhow!("auto lost"))?;
    anyhow::ensure!(
        a["state"] == "listening"
            && a["origin"] == "defined"
            && a["auto"] == true
            && a["gpu"] == "gpu1",
        "{a}"
    );
    use std::os::unix::fs::PermissionsExt;
    anyhow::ensure!(std::fs::metadata(d.socket(auto))?.permissions().mode() & 0o777 == 0o600);
    for m in [manual, running_manual] {
        let e = all.get(&m).ok_or_else(|| anyhow::anyhow!("{m} lost"))?;
        anyhow::ensure!(e["state"] == "defined" && e["auto"] == false, "{e}");
    }
    let mut c = d.connect(auto)?;
    still_works(&mut c)?;
    Ok(())
}

#[test]
fn an_auto_definition_that_no_longer_fits_is_skipped_and_the_daemon_starts() -> anyhow::Result<()> {
    let mut d = Daemon::start(&base_toml())?;
    let gone = uuid();
    let fits = uuid();
    d.ok(
        "define",
        json!({"profile": "p32", "uuid": s(gone), "auto": true, "gpu": "gpu0"}),
    )?;
    d.ok(
        "define",
        json!({"profile": "p16", "uuid": s(fits), "auto": true, "gpu": "gpu1"}),
    )?;
    // The file now fills gpu0 with two 32 MiB... the p32 has max 1: use a
    // [[vgpu]] of p32 on gpu0, so the definition's does not fit.
    d.stop()?;
    d.write_config(&format!(
        "{}{}",
        base_toml(),
        vgpu_table(CFG, "gpu0", "p32")
    ))?;
    d.restart()?;
    let all = d.vgpus(true)?;
    anyhow::ensure!(all[&CFG]["state"] == "listening");
    anyhow::ensure!(all[&fits]["state"] == "listening", "{}", all[&fits]);
    anyhow::ensure!(all[&gone]["state"] == "defined", "{}", all[&gone]);
    anyhow::ensure!(
        d.stderr().contains("cannot start a defined vGPU"),
        "not logged"
    );
    // Its profile leaves the file: still the daemon starts.
    d.stop()?;
    d.write_config(&base_toml().replace("name = \"p32\"", "name = \"p64\""))?;
    d.restart()?;
    anyhow::ensure!(d.entry(fits, false)?["state"] == "listening");
    // start of a definition whose profile left the file: conflict.
    d.expect("conflict", "start", json!({"uuid": s(gone)}))?;
    // list shows 0 and "" for its sizes.
    let e = d.entry(gone, true)?;
    anyhow::ensure!(e["framebuffer"] == 0 && e["max_resolution"] == "", "{e}");
    Ok(())
}

#[test]
fn a_uuid_both_in_the_file_and_defined_stops_the_daemon_at_start() -> anyhow::Result<()> {
    let mut d = Daemon::start(&base_toml())?;
    let u = uuid();
    d.ok("define", json!({"profile": "p16", "uuid": s(u)}))?;
    d.stop()?;
    d.write_config(&format!("{}{}", base_toml(), vgpu_table(u, "gpu0", "p16")))?;
    let status = d.launch_expecting_exit()?;
    anyhow::ensure!(status.code() == Some(1), "exit status {status}");
    let stderr = d.stderr();
    let file = d.definition_file(u).display().to_string();
    anyhow::ensure!(
        stderr.contains(&file),
        "the error names the definition's file: {stderr}"
    );
    anyhow::ensure!(
        !d.control().exists() || std::os::unix::net::UnixStream::connect(d.control()).is_err()
    );
    Ok(())
}

#[test]
fn reload_applies_the_file_and_leaves_everything_else_alone() -> anyhow::Result<()> {
    let mut d = Daemon::standard()?;
    let transient = uuid();
    let defined = uuid();
    let added = uuid();
    d.ok(
        "create",
        json!({"profile": "p16", "uuid": s(transient), "gpu": "gpu1"}),
    )?;
    d.ok(
        "define",
        json!({"profile": "p16", "uuid": s(defined), "gpu": "gpu1"}),
    )?;
    d.ok("start", json!({"uuid": s(defined)}))?;
    let mut tc = d.connect(transient)?;
    // CFG leaves the file, `added` comes in.
    d.reload(&format!(
        "{}{}",
        base_toml(),
        vgpu_table(added, "gpu0", "p32")
    ))?;
    let all = d.vgpus(true)?;
    anyhow::ensure!(!all.contains_key(&CFG), "CFG left the file but runs");
    anyhow::ensure!(!d.socket(CFG).exists());
    anyhow::ensure!(all[&added]["origin"] == "config" && all[&added]["state"] == "listening");
    anyhow::ensure!(
        all[&transient]["state"] == "attached" && all[&defined]["state"] == "listening"
    );
    still_works(&mut tc)?;
    anyhow::ensure!(d.vram_free()?["gpu0"] == 32 * MIB);
    // The profile of `added` changes: it restarts with the new one.
    let bigger = base_toml().replace("framebuffer = \"32MiB\"", "framebuffer = \"64MiB\"");
    d.reload(&format!("{}{}", bigger, vgpu_table(added, "gpu0", "p32")))?;
    anyhow::ensure!(d.entry(added, false)?["framebuffer"] == 64 * MIB);
    anyhow::ensure!(d.vram_free()?["gpu0"] == 0);
    still_works(&mut tc)?;
    Ok(())
}

#[test]
fn reload_keeps_an_attached_config_vgpu_until_it_lets_go() -> anyhow::Result<()> {
    let mut d = Daemon::standard()?;
    let mut c = d.connect(CFG)?;
    d.wait_state(CFG, "attached")?;
    d.reload(&base_toml())?;
    anyhow::ensure!(
        d.entry(CFG, false)?["state"] == "attached",
        "an attached vGPU was stopped"
    );
    still_works(&mut c)?;
    anyhow::ensure!(
        d.stderr()
            .contains("reload: the vGPU changed or left the file but stays as it is"),
        "no warning"
    );
    drop(c);
    d.wait_state(CFG, "listening")?;
    d.reload(&base_toml())?;
    anyhow::ensure!(
        !d.vgpus(true)?.contains_key(&CFG),
        "the next reload applies it"
    );
    anyhow::ensure!(!d.socket(CFG).exists());
    Ok(())
}

#[test]
fn a_reload_that_cannot_apply_changes_nothing() -> anyhow::Result<()> {
    let mut d = Daemon::standard()?;
    let before = d.vgpus(true)?;
    let new = uuid();
    // Invalid file.
    d.reload("this is not toml [[[")?;
    anyhow::ensure!(d.vgpus(true)? == before);
    anyhow::ensure!(
        d.stderr()
            .contains("configuration not reloaded; the daemon runs on as it was")
    );
    // [[gpu]] changed, with a new vGPU too: none of it applies.
    let gpu_changed = format!(
        "{}{}{}",
        base_toml().replace(
            "id = \"gpu1\"\nvram = \"64MiB\"",
            "id = \"gpu1\"\nvram = \"128MiB\""
        ),
        vgpu_table(CFG, "gpu0", "p16"),
        vgpu_table(new, "gpu0", "p16")
    );
    d.reload(&gpu_changed)?;
    anyhow::ensure!(
        d.vgpus(true)? == before,
        "a [[gpu]] change was partly applied"
    );
    anyhow::ensure!(d.stderr().contains("takes a restart"));
    // A file naming a defined UUID: not applied.
    let defined = uuid();
    d.ok("define", json!({"profile": "p16", "uuid": s(defined)}))?;
    let before = d.vgpus(true)?;
    let clash = format!(
        "{}{}{}",
        standard_toml(),
        vgpu_table(defined, "gpu1", "p16"),
        vgpu_table(new, "gpu0", "p16")
    );
    d.reload(&clash)?;
    let after = d.vgpus(true)?;
    anyhow::ensure!(
        after == before,
        "a file naming a definition was applied: {after:?}"
    );
    d.assert_alive()?;
    // A [[vgpu]] that does not fit: logged, the rest stands.
    let too_many = format!(
        "{}{}{}",
        standard_toml(),
        vgpu_table(new, "gpu0", "p32"),
        vgpu_table(uuid(), "gpu0", "p32")
    );
    d.reload(&too_many)?;
    // Both p32 on gpu0 is invalid as a file (max_instances 1): nothing
    // applies. One p32 that does not fit beside a transient: logged.
    anyhow::ensure!(!d.vgpus(true)?.contains_key(&new));
    let filler = uuid();
    d.ok(
        "create",
        json!({"profile": "p32", "uuid": s(filler), "gpu": "gpu0"}),
    )?;
    let with_p32 = format!("{}{}", standard_toml(), vgpu_table(new, "gpu0", "p32"));
    d.reload(&with_p32)?;
    anyhow::ensure!(
        d.stderr().contains("reload: cannot start the vGPU"),
        "not logged"
    );
    anyhow::ensure!(d.entry(CFG, false)?["state"] == "listening");
    anyhow::ensure!(d.entry(filler, false)?["state"] == "listening");
    Ok(())
}

#[test]
fn profile_changes_by_reload_apply_to_vgpus_started_from_then_on() -> anyhow::Result<()> {
    let mut d = Daemon::standard()?;
    let t = uuid();
    d.ok(
        "create",
        json!({"profile": "p32", "uuid": s(t), "gpu": "gpu1"}),
    )?;
    let def = uuid();
    d.ok(
        "define",
        json!({"profile": "p16", "uuid": s(def), "gpu": "gpu1"}),
    )?;
    // p16 becomes 8 MiB.
    let smaller = standard_toml().replace("framebuffer = \"16MiB\"", "framebuffer = \"8MiB\"");
    d.reload(&smaller)?;
    anyhow::ensure!(
        d.entry(t, false)?["framebuffer"] == 32 * MIB,
        "a running transient changed"
    );
    let started = d.ok("start", json!({"uuid": s(def)}))?;
    anyhow::ensure!(started["profile"] == "p16");
    anyhow::ensure!(
        d.entry(def, false)?["framebuffer"] == 8 * MIB,
        "start takes the profile as it is now"
    );
    // types shows the new size.
    let types = d.ok("types", json!({}))?;
    let p16 = types["types"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["profile"] == "p16")
        .cloned();
    anyhow::ensure!(p16.is_some_and(|p| p["framebuffer"] == 8 * MIB));
    Ok(())
}

#[test]
fn the_state_directory_ignores_foreign_files_and_removes_leftover_temporaries() -> anyhow::Result<()>
{
    let mut d = Daemon::start(&base_toml())?;
    let u = uuid();
    d.ok(
        "define",
        json!({"profile": "p16", "uuid": s(u), "auto": true}),
    )?;
    d.stop()?;
    let vgpus = d.state_dir().join("vgpus");
    let upper = uuid();
    std::fs::write(
        vgpus.join(format!("{}.toml", s(upper).to_uppercase())),
        "profile = \"p16\"\nauto = true\n",
    )?;
    std::fs::write(vgpus.join("notes.txt"), "hello")?;
    let tmp = vgpus.join(format!(".vgpud-tmp-{u}-1-0"));
    std::fs::write(&tmp, "profile = \"p16\"\n")?;
    d.restart()?;
    let all = d.vgpus(true)?;
    anyhow::ensure!(all.len() == 1 && all[&u]["state"] == "listening", "{all:?}");
    anyhow::ensure!(!tmp.exists(), "leftover temporary file kept");
    let log = d.stderr();
    anyhow::ensure!(
        log.contains("removed the temporary file of an interrupted write"),
        "{log}"
    );
    anyhow::ensure!(
        log.contains("notes.txt") && log.contains(&s(upper).to_uppercase()),
        "foreign files not named: {log}"
    );
    anyhow::ensure!(
        vgpus.join("notes.txt").exists(),
        "a foreign file was removed"
    );
    Ok(())
}

#[test]
fn an_invalid_definition_file_is_reported_with_file_line_and_column() -> anyhow::Result<()> {
    let mut d = Daemon::start(&base_toml())?;
    d.stop()?;
    let u = uuid();
    let file = d.definition_file(u);
    std::fs::write(&file, "profile = \"p16\"\ncolour = \"blue\"\nauto = 1\n")?;
    // Whether the daemon then starts is not said; it must either start
    // without the definition or exit with the problems listed.
    let path = file.display().to_string();
    if d.restart().is_ok() {
        anyhow::ensure!(
            !d.vgpus(true)?.contains_key(&u),
            "an invalid definition loaded"
        );
    }
    let log = d.stderr();
    anyhow::ensure!(
        log.contains(&format!("{path}:2:1: unknown key `colour`")),
        "{log}"
    );
    anyhow::ensure!(
        log.contains(&format!("{path}:3:")) && log.contains("auto must be true or false"),
        "{log}"
    );
    Ok(())
}

#[test]
fn a_storm_of_sighups_during_lifecycle_commands_breaks_nothing() -> anyhow::Result<()> {
    let mut d = Daemon::standard()?;
    let full = d.vram_free()?;
    let pid =
        rustix::process::Pid::from_raw(d.pid() as i32).ok_or_else(|| anyhow::anyhow!("pid"))?;
    let with_extra = format!("{}{}", standard_toml(), vgpu_table(uuid(), "gpu1", "p16"));
    let standard = standard_toml();
    let control = d.control();
    let worker = std::thread::spawn(move || -> anyhow::Result<()> {
        for _ in 0..8 {
            let u = uuid();
            let r = vgpud_tests::control::control_request(
                &control,
                "create",
                json!({"profile": "p16", "uuid": s(u)}),
                crate::rig::PATIENCE,
            )?;
            if r["ok"] == true {
                let r = vgpud_tests::control::control_request(
                    &control,
                    "remove",
                    json!({"uuid": s(u)}),
                    crate::rig::PATIENCE,
                )?;
                anyhow::ensure!(r["ok"] == true, "{r}");
            } else {
                anyhow::ensure!(r["error"]["kind"] == "insufficient_resources", "{r}");
            }
        }
        Ok(())
    });
    for i in 0..12 {
        d.write_config(if i % 2 == 0 { &with_extra } else { &standard })?;
        rustix::process::kill_process(pid, rustix::process::Signal::HUP)?;
        std::thread::sleep(std::time::Duration::from_millis(3));
        d.drain_notify()?;
    }
    worker.join().map_err(|_| anyhow::anyhow!("panic"))??;
    d.assert_alive()?;
    // A last SIGHUP after the last write: the daemon must end up running
    // that file (its notifications of the storm's reloads may still be
    // queued, so the state is polled instead).
    d.drain_notify()?;
    d.write_config(&standard)?;
    d.signal(rustix::process::Signal::HUP)?;
    d.wait_for("the last file applied", |d| {
        let all = d.vgpus(true)?;
        Ok(all.len() == 1 && all.contains_key(&CFG))
    })?;
    anyhow::ensure!(d.vram_free()? == full, "VRAM not back to full");
    Ok(())
}

#[test]
fn list_answers_while_a_reload_cannot_notify() -> anyhow::Result<()> {
    let d = Daemon::standard()?;
    let alt = format!("{}{}", standard_toml(), vgpu_table(uuid(), "gpu1", "p16"));
    let standard = standard_toml();
    for i in 0..12 {
        d.write_config(if i % 2 == 0 { &alt } else { &standard })?;
        d.signal(rustix::process::Signal::HUP)?;
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Nobody drained the notifications: the queue is full now.
    let r = vgpud_tests::control::control_request(
        &d.control(),
        "list",
        serde_json::Value::Null,
        std::time::Duration::from_secs(5),
    );
    d.drain_notify()?;
    anyhow::ensure!(
        r.is_ok(),
        "list got no answer while a reload waits to notify: {r:?}"
    );
    Ok(())
}
