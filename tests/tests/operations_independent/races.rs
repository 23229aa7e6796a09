//! Lifecycle commands from several threads at once: only documented
//! outcomes, never a crash, and VRAM accounting back to full once
//! everything is removed (docs/control-api.md: lifecycle commands "run
//! one at a time").

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use uuid::Uuid;

use crate::rig::{CFG, Daemon, PATIENCE, still_works, uuid};
use vgpud_tests::control::control_request;

/// Outcomes seen, by command and result (`ok` or the error kind).
type Tally = Arc<Mutex<BTreeMap<(String, String), u64>>>;

/// The first message of each (command, outcome) that was an error.
static MESSAGES: Mutex<BTreeMap<(String, String), String>> = Mutex::new(BTreeMap::new());

fn run(
    control: &std::path::Path,
    tally: &Tally,
    command: &str,
    args: Value,
) -> anyhow::Result<String> {
    let r = control_request(control, command, args, PATIENCE)?;
    let outcome = if r["ok"] == true {
        "ok".to_string()
    } else {
        r["error"]["kind"].as_str().unwrap_or("?").to_string()
    };
    if r["ok"] != true
        && let Ok(mut messages) = MESSAGES.lock()
    {
        messages
            .entry((command.to_string(), outcome.clone()))
            .or_insert_with(|| r["error"]["message"].as_str().unwrap_or("").to_string());
    }
    *tally
        .lock()
        .map_err(|_| anyhow::anyhow!("poisoned"))?
        .entry((command.to_string(), outcome.clone()))
        .or_default() += 1;
    Ok(outcome)
}

fn check(tally: &Tally, allowed: &[(&str, &[&str])]) -> anyhow::Result<()> {
    let tally = tally.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
    for ((command, outcome), n) in tally.iter() {
        let ok = allowed
            .iter()
            .any(|(c, kinds)| c == command && kinds.contains(&outcome.as_str()));
        let message = MESSAGES
            .lock()
            .ok()
            .and_then(|m| m.get(&(command.clone(), outcome.clone())).cloned())
            .unwrap_or_default();
        anyhow::ensure!(
            ok,
            "{command} answered {outcome} {n} times ({message}): {tally:?}"
        );
    }
    Ok(())
}

/// Takes down whatever the tests left: every non-config vGPU and every
/// definition.
fn clean(d: &Daemon) -> anyhow::Result<()> {
    for (u, e) in d.vgpus(true)? {
        if u == CFG {
            continue;
        }
        if e["state"] != "defined" {
            d.ok("stop", json!({"uuid": u.to_string(), "force": true}))?;
        }
        if e["origin"] == "defined" {
            d.ok("undefine", json!({"uuid": u.to_string()}))?;
        }
    }
    Ok(())
}

fn with_reader<T>(d: &Daemon, work: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let mut client = d.connect(CFG)?;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let s = stop.clone();
    let reader = std::thread::spawn(move || -> anyhow::Result<u64> {
        let mut n = 0;
        while !s.load(std::sync::atomic::Ordering::Relaxed) {
            still_works(&mut client)?;
            n += 1;
        }
        Ok(n)
    });
    let out = work();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.join().map_err(|_| anyhow::anyhow!("panic"))??;
    anyhow::ensure!(reads > 0, "the other vGPU answered no read");
    out
}

#[test]
fn create_and_remove_of_one_uuid_from_six_threads() -> anyhow::Result<()> {
    let mut d = Daemon::standard()?;
    let full = d.vram_free()?;
    let u = uuid();
    let tally: Tally = Tally::default();
    let net = with_reader(&d, || {
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (control, tally) = (d.control(), tally.clone());
                std::thread::spawn(move || -> anyhow::Result<i64> {
                    let mut net = 0;
                    for _ in 0..15 {
                        if run(
                            &control,
                            &tally,
                            "create",
                            json!({"profile": "p16", "uuid": u.to_string()}),
                        )? == "ok"
                        {
                            net += 1;
                        }
                        if run(&control, &tally, "remove", json!({"uuid": u.to_string()}))? == "ok"
                        {
                            net -= 1;
                        }
                    }
                    Ok(net)
                })
            })
            .collect();
        let mut net = 0;
        for t in threads {
            net += t.join().map_err(|_| anyhow::anyhow!("panic"))??;
        }
        Ok(net)
    })?;
    d.assert_alive()?;
    check(
        &tally,
        &[
            ("create", &["ok", "conflict"]),
            ("remove", &["ok", "not_found"]),
        ],
    )?;
    let exists = d.vgpus(true)?.contains_key(&u);
    anyhow::ensure!(
        net == i64::from(exists),
        "creates - removes = {net}, exists = {exists}"
    );
    anyhow::ensure!(
        d.socket(u).exists() == exists,
        "socket file disagrees with list"
    );
    clean(&d)?;
    anyhow::ensure!(d.vram_free()? == full, "VRAM not back to full");
    anyhow::ensure!(!d.socket(u).exists());
    Ok(())
}

#[test]
fn create_and_remove_of_many_uuids_past_capacity_from_eight_threads() -> anyhow::Result<()> {
    let mut d = Daemon::standard()?;
    let full = d.vram_free()?;
    let tally: Tally = Tally::default();
    with_reader(&d, || {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (control, tally) = (d.control(), tally.clone());
                std::thread::spawn(move || -> anyhow::Result<()> {
                    for _ in 0..10 {
                        let u = Uuid::new_v4();
                        let args = json!({"profile": "p16", "uuid": u.to_string()});
                        if run(&control, &tally, "create", args)? == "ok" {
                            let r =
                                run(&control, &tally, "remove", json!({"uuid": u.to_string()}))?;
                            anyhow::ensure!(r == "ok", "remove of my own vGPU: {r}");
                        }
                    }
                    Ok(())
                })
            })
            .collect();
        for t in threads {
            t.join().map_err(|_| anyhow::anyhow!("panic"))??;
        }
        Ok(())
    })?;
    d.assert_alive()?;
    check(
        &tally,
        &[
            ("create", &["ok", "insufficient_resources"]),
            ("remove", &["ok"]),
        ],
    )?;
    anyhow::ensure!(d.vram_free()? == full, "VRAM not back to full");
    anyhow::ensure!(d.available("p16", "gpu0")? == 3 && d.available("p16", "gpu1")? == 4);
    anyhow::ensure!(d.vgpus(true)?.len() == 1, "leftovers: {:?}", d.vgpus(true)?);
    // Capacity is exact: 7 more p16 fit (3 beside CFG on gpu0, 4 on gpu1).
    let made: Vec<_> = (0..7)
        .map(|_| d.ok("create", json!({"profile": "p16"})))
        .collect::<anyhow::Result<_>>()?;
    d.expect(
        "insufficient_resources",
        "create",
        json!({"profile": "p16"}),
    )?;
    for m in made {
        d.ok("remove", json!({"uuid": m["uuid"]}))?;
    }
    anyhow::ensure!(d.vram_free()? == full);
    Ok(())
}

#[test]
fn every_lifecycle_verb_on_one_uuid_from_several_threads() -> anyhow::Result<()> {
    let mut d = Daemon::standard()?;
    every_verb_round(&mut d)
}

#[test]
#[ignore = "soak: 30 rounds of every_lifecycle_verb_on_one_uuid_from_several_threads"]
fn every_lifecycle_verb_soak() -> anyhow::Result<()> {
    let mut d = Daemon::standard()?;
    for round in 0..30 {
        every_verb_round(&mut d).map_err(|e| anyhow::anyhow!("round {round}: {e:#}"))?;
    }
    Ok(())
}

fn every_verb_round(d: &mut Daemon) -> anyhow::Result<()> {
    let full = d.vram_free()?;
    let u = uuid();
    let tally: Tally = Tally::default();
    let verbs: Vec<(&str, Value)> = vec![
        ("define", json!({"profile": "p16", "uuid": u.to_string()})),
        ("start", json!({"uuid": u.to_string()})),
        ("create", json!({"profile": "p16", "uuid": u.to_string()})),
        ("stop", json!({"uuid": u.to_string()})),
        ("remove", json!({"uuid": u.to_string()})),
        ("undefine", json!({"uuid": u.to_string()})),
        ("modify", json!({"uuid": u.to_string(), "auto": true})),
        ("modify", json!({"uuid": u.to_string(), "profile": "p32"})),
        ("stats", json!({"uuid": u.to_string()})),
    ];
    with_reader(d, || {
        let threads: Vec<_> = (0..6)
            .map(|i| {
                let (control, tally, verbs) = (d.control(), tally.clone(), verbs.clone());
                std::thread::spawn(move || -> anyhow::Result<()> {
                    for round in 0..12 {
                        let (verb, args) = &verbs[(i * 5 + round * 7) % verbs.len()];
                        run(&control, &tally, verb, args.clone())?;
                    }
                    Ok(())
                })
            })
            .collect();
        for t in threads {
            t.join().map_err(|_| anyhow::anyhow!("panic"))??;
        }
        Ok(())
    })?;
    d.assert_alive()?;
    check(
        &tally,
        &[
            ("define", &["ok", "conflict"]),
            (
                "start",
                &["ok", "not_found", "conflict", "insufficient_resources"],
            ),
            ("create", &["ok", "conflict"]),
            ("stop", &["ok", "not_found", "conflict"]),
            ("remove", &["ok", "not_found", "conflict"]),
            ("undefine", &["ok", "not_found", "conflict"]),
            ("modify", &["ok", "not_found", "conflict"]),
            ("stats", &["ok", "not_found"]),
        ],
    )?;
    // What list says agrees with the files.
    let listed = d.vgpus(true)?.get(&u).cloned();
    let defined = listed.as_ref().is_some_and(|e| e["origin"] == "defined");
    anyhow::ensure!(
        d.definition_file(u).exists() == defined,
        "file vs list: {listed:?}"
    );
    let running = listed.as_ref().is_some_and(|e| e["state"] != "defined");
    anyhow::ensure!(
        d.socket(u).exists() == running,
        "socket vs list: {listed:?}"
    );
    clean(d)?;
    anyhow::ensure!(d.vram_free()? == full, "VRAM not back to full");
    anyhow::ensure!(!d.definition_file(u).exists() && !d.socket(u).exists());
    Ok(())
}

#[test]
fn forced_removal_racing_clients_that_attach() -> anyhow::Result<()> {
    let mut d = Daemon::standard()?;
    let full = d.vram_free()?;
    let u = uuid();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let attachers: Vec<_> = (0..2)
        .map(|_| {
            let (socket, stop) = (d.socket(u), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(mut c) = vgpud_tests::RawClient::connect(&socket) {
                        let _ = c.set_timeout(std::time::Duration::from_secs(5));
                        let _ = still_works(&mut c);
                    }
                    std::thread::yield_now();
                }
            })
        })
        .collect();
    let tally: Tally = Tally::default();
    for _ in 0..10 {
        run(
            &d.control(),
            &tally,
            "create",
            json!({"profile": "p16", "uuid": u.to_string()}),
        )?;
        run(
            &d.control(),
            &tally,
            "remove",
            json!({"uuid": u.to_string(), "force": true}),
        )?;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for a in attachers {
        a.join().map_err(|_| anyhow::anyhow!("panic"))?;
    }
    d.assert_alive()?;
    check(&tally, &[("create", &["ok"]), ("remove", &["ok"])])?;
    anyhow::ensure!(d.vram_free()? == full, "VRAM not back to full");
    anyhow::ensure!(!d.socket(u).exists());
    Ok(())
}

#[test]
fn modify_racing_undefine_never_leaves_a_file_for_a_transient_vgpu() -> anyhow::Result<()> {
    let d = Daemon::standard()?;
    with_reader(&d, || modify_undefine_rounds(&d))
}

fn modify_undefine_rounds(d: &Daemon) -> anyhow::Result<()> {
    for round in 0..60 {
        let u = uuid();
        d.ok("define", json!({"profile": "p16", "uuid": u.to_string()}))?;
        if round % 2 == 0 {
            d.ok("start", json!({"uuid": u.to_string()}))?;
        }
        let (c1, c2) = (d.control(), d.control());
        let undefine = std::thread::spawn(move || {
            control_request(&c1, "undefine", json!({"uuid": u.to_string()}), PATIENCE)
        });
        let modify = std::thread::spawn(move || {
            control_request(
                &c2,
                "modify",
                json!({"uuid": u.to_string(), "auto": true}),
                PATIENCE,
            )
        });
        let undefined = undefine.join().map_err(|_| anyhow::anyhow!("panic"))??;
        let modified = modify.join().map_err(|_| anyhow::anyhow!("panic"))??;
        anyhow::ensure!(undefined["ok"] == true, "{undefined}");
        let listed = d.vgpus(true)?.get(&u).cloned();
        let file = d.definition_file(u).exists();
        anyhow::ensure!(
            !file,
            "round {round}: undefine answered ok, modify answered {modified}, yet the file is there; list: {listed:?}"
        );
        if let Some(e) = &listed {
            anyhow::ensure!(
                e["origin"] == "transient" && e["auto"] == false,
                "round {round}: {e}"
            );
            d.ok("remove", json!({"uuid": u.to_string()}))?;
        }
    }
    Ok(())
}

/// Creates and removes one UUID from `threads` threads, `rounds` times
/// each; the tally of outcomes.
fn churn_one_uuid(d: &Daemon, threads: usize, rounds: usize) -> anyhow::Result<Tally> {
    let u = uuid();
    let tally: Tally = Tally::default();
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let (control, tally) = (d.control(), tally.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                for _ in 0..rounds {
                    run(
                        &control,
                        &tally,
                        "create",
                        json!({"profile": "p16", "uuid": u.to_string()}),
                    )?;
                    run(&control, &tally, "remove", json!({"uuid": u.to_string()}))?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join().map_err(|_| anyhow::anyhow!("panic"))??;
    }
    Ok(tally)
}

#[test]
fn create_right_after_remove_of_the_same_uuid_in_one_thread_succeeds() -> anyhow::Result<()> {
    // Sequential: each remove has answered before the next create, so the
    // UUID is free ("VRAM and instance are free again when the answer
    // arrives"); every create must succeed.
    let d = Daemon::standard()?;
    let tally = churn_one_uuid(&d, 1, 150)?;
    check(&tally, &[("create", &["ok"]), ("remove", &["ok"])])
}

#[test]
fn create_racing_remove_of_the_same_uuid_is_ok_or_conflict_only() -> anyhow::Result<()> {
    let d = Daemon::standard()?;
    with_reader(&d, || {
        for _ in 0..25 {
            let tally = churn_one_uuid(&d, 8, 25)?;
            check(
                &tally,
                &[
                    ("create", &["ok", "conflict"]),
                    ("remove", &["ok", "not_found"]),
                ],
            )?;
        }
        Ok(())
    })
}

#[test]
fn simultaneous_creates_of_one_uuid_give_one_ok_and_conflicts() -> anyhow::Result<()> {
    let d = Daemon::standard()?;
    with_reader(&d, || simultaneous_creates(&d))
}

fn simultaneous_creates(d: &Daemon) -> anyhow::Result<()> {
    for round in 0..30 {
        let u = uuid();
        let barrier = Arc::new(std::sync::Barrier::new(6));
        let tally: Tally = Tally::default();
        let handles: Vec<_> = (0..6)
            .map(|_| {
                let (control, tally, barrier) = (d.control(), tally.clone(), barrier.clone());
                std::thread::spawn(move || -> anyhow::Result<()> {
                    barrier.wait();
                    run(
                        &control,
                        &tally,
                        "create",
                        json!({"profile": "p16", "uuid": u.to_string()}),
                    )?;
                    Ok(())
                })
            })
            .collect();
        for h in handles {
            h.join().map_err(|_| anyhow::anyhow!("panic"))??;
        }
        check(&tally, &[("create", &["ok", "conflict"])])
            .map_err(|e| anyhow::anyhow!("round {round}: {e}"))?;
        let oks = tally
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .get(&("create".to_string(), "ok".to_string()))
            .copied();
        anyhow::ensure!(oks == Some(1), "round {round}: {oks:?} creates succeeded");
        d.ok("remove", json!({"uuid": u.to_string()}))?;
    }
    Ok(())
}

/// Sends `a` and `b` at once from two threads; their answers.
fn at_once(
    d: &Daemon,
    a: (&'static str, Value),
    b: (&'static str, Value),
) -> anyhow::Result<(Value, Value)> {
    let barrier = Arc::new(std::sync::Barrier::new(2));
    let spawn = |(command, args): (&'static str, Value)| {
        let (control, barrier) = (d.control(), barrier.clone());
        std::thread::spawn(move || {
            barrier.wait();
            control_request(&control, command, args, PATIENCE)
        })
    };
    let (ha, hb) = (spawn(a), spawn(b));
    let ra = ha.join().map_err(|_| anyhow::anyhow!("panic"))??;
    let rb = hb.join().map_err(|_| anyhow::anyhow!("panic"))??;
    Ok((ra, rb))
}

/// The registry and the state directory agree about `u`: a file exactly
/// when `list --defined` shows a definition.
fn consistent(d: &Daemon, u: Uuid, what: &str) -> anyhow::Result<()> {
    let listed = d.vgpus(true)?.get(&u).cloned();
    let defined = listed.as_ref().is_some_and(|e| e["origin"] == "defined");
    let file = d.definition_file(u).exists();
    anyhow::ensure!(file == defined, "{what}: file {file}, list {listed:?}");
    Ok(())
}

#[test]
fn create_and_define_of_one_uuid_at_once_agree_with_the_state_directory() -> anyhow::Result<()> {
    let d = Daemon::standard()?;
    with_reader(&d, || {
        for round in 0..100 {
            let u = uuid();
            let (c, f) = at_once(
                &d,
                ("create", json!({"profile": "p16", "uuid": u.to_string()})),
                ("define", json!({"profile": "p16", "uuid": u.to_string()})),
            )?;
            consistent(&d, u, &format!("round {round}: create {c}, define {f}"))?;
            clean(&d)?;
        }
        Ok(())
    })
}
