//! The scheduler's rules and guarantees, checked call by call and in
//! simulated time (`sim.rs`): the call contract, the credit rules, shares,
//! fairness, overrun payback, exact accounting (the waits are in
//! `latency.rs`). Every test is deterministic; none reads a clock.

use std::num::NonZeroU32;

use super::sim::{CHUNK, MS, SECOND, SLICE, Sim, US, Work, assert_share, flood, light, run_times};
use super::*;

fn weight(w: u32) -> NonZeroU32 {
    NonZeroU32::new(w).expect("positive")
}

// --- configuration values ---

#[test]
fn time_slice_is_1_to_30_ms_and_defaults_to_2() {
    assert_eq!(TimeSlice::default().millis(), 2);
    assert_eq!(TimeSlice::default().nanos(), Nanos(2_000_000));
    for ms in [1, 2, 30] {
        assert_eq!(TimeSlice::from_millis(ms).map(TimeSlice::millis), Ok(ms));
    }
    for ms in [0, 31, u64::MAX] {
        assert_eq!(
            TimeSlice::from_millis(ms),
            Err(SchedError::TimeSliceOutOfRange { ms })
        );
    }
    assert_eq!(
        TimeSlice::from_millis(31).unwrap_err().to_string(),
        "time slice of 31 ms is out of range: it must be 1 to 30 ms"
    );
}

#[test]
fn policy_names_parse_and_print_back() {
    for policy in SchedulingPolicy::ALL {
        assert_eq!(policy.to_string().parse(), Ok(policy));
    }
    assert_eq!(
        "equal-share".parse::<SchedulingPolicy>(),
        Ok(SchedulingPolicy::EqualShare)
    );
    assert_eq!(SchedulingPolicy::default(), SchedulingPolicy::BestEffort);
    for bad in ["", "Equal-Share", "equal_share", "fair"] {
        assert_eq!(
            bad.parse::<SchedulingPolicy>(),
            Err(SchedError::UnknownPolicy(bad.into()))
        );
    }
}

#[test]
fn jain_index_is_one_when_equal_and_one_over_n_when_one_takes_all() {
    assert_eq!(jain_index(&[3.0, 3.0, 3.0]), 1.0);
    assert_eq!(jain_index(&[1.0, 0.0, 0.0, 0.0]), 0.25);
    assert_eq!(jain_index(&[]), 1.0);
    assert_eq!(jain_index(&[0.0, 0.0]), 1.0);
    assert!((jain_index(&[1.0, 2.0]) - 0.9).abs() < 1e-12);
}

// --- the call contract ---

fn scheduler(policy: SchedulingPolicy) -> EngineScheduler<u8> {
    EngineScheduler::new(policy, TimeSlice::default())
}

#[test]
fn calls_that_make_no_sense_are_refused() {
    let mut sched = scheduler(SchedulingPolicy::BestEffort);
    sched.register(1, weight(1), Nanos(0)).unwrap();
    assert_eq!(
        sched.register(1, weight(2), Nanos(0)),
        Err(SchedError::AlreadyRegistered)
    );
    assert_eq!(
        sched.set_runnable(2, true, Nanos(0)),
        Err(SchedError::NotRegistered)
    );
    assert_eq!(
        sched.finish(1, true, Nanos(0)),
        Err(SchedError::NoTurn),
        "no turn was granted"
    );
    assert_eq!(
        sched.unregister(2, Nanos(0)),
        Err(SchedError::NotRegistered)
    );
    assert_eq!(sched.stats(2), None);
}

#[test]
fn asking_again_during_a_turn_grants_the_same_turn_with_what_is_left() {
    let mut sched = scheduler(SchedulingPolicy::BestEffort);
    sched.register(1, weight(1), Nanos(0)).unwrap();
    sched.set_runnable(1, true, Nanos(0)).unwrap();
    let run = |budget| Decision::Run {
        key: 1,
        budget: Nanos(budget),
    };
    assert_eq!(sched.next(Nanos(0)), run(SLICE));
    assert_eq!(sched.next(Nanos(MS)), run(SLICE - MS));
    assert_eq!(sched.next(Nanos(3 * MS)), run(0));
    sched.finish(1, false, Nanos(3 * MS)).unwrap();
    let stats = sched.stats(1).unwrap();
    assert_eq!(
        (stats.run_ns, stats.turns, stats.overrun_ns),
        (3 * MS, 1, MS)
    );
}

#[test]
fn time_that_goes_back_is_taken_as_the_latest_seen() {
    let mut sched = scheduler(SchedulingPolicy::EqualShare);
    sched.register(1, weight(1), Nanos(10 * MS)).unwrap();
    sched.set_runnable(1, true, Nanos(5 * MS)).unwrap();
    assert!(matches!(sched.next(Nanos(0)), Decision::Run { key: 1, .. }));
    sched.finish(1, true, Nanos(11 * MS)).unwrap();
    assert_eq!(sched.stats(1).unwrap().run_ns, MS);
    assert_eq!(sched.stats(1).unwrap().elapsed_ns(), MS);
}

#[test]
fn unregistering_the_vgpu_that_runs_ends_its_turn() {
    let mut sched = scheduler(SchedulingPolicy::BestEffort);
    for key in [1, 2] {
        sched.register(key, weight(1), Nanos(0)).unwrap();
        sched.set_runnable(key, true, Nanos(0)).unwrap();
    }
    assert!(matches!(sched.next(Nanos(0)), Decision::Run { key: 1, .. }));
    let last = sched.unregister(1, Nanos(MS)).unwrap();
    assert_eq!((last.run_ns, last.elapsed_ns()), (MS, MS));
    assert_eq!(
        sched.finish(1, true, Nanos(MS)),
        Err(SchedError::NotRegistered)
    );
    assert_eq!(
        sched.next(Nanos(MS)),
        Decision::Run {
            key: 2,
            budget: Nanos(SLICE)
        }
    );
}

#[test]
fn work_that_arrives_during_a_turn_is_not_lost_when_the_turn_ends_done() {
    // The runner's engine thread saw no more work and reports the turn
    // done, but a doorbell came in between (its `set_runnable(true)` while
    // the turn was in progress): the vGPU still has work.
    for policy in SchedulingPolicy::ALL {
        let mut sched = scheduler(policy);
        sched.register(1, weight(1), Nanos(0)).unwrap();
        sched.set_runnable(1, true, Nanos(0)).unwrap();
        assert!(matches!(sched.next(Nanos(0)), Decision::Run { key: 1, .. }));
        sched.set_runnable(1, true, Nanos(300 * US)).unwrap();
        sched.finish(1, false, Nanos(400 * US)).unwrap();
        assert_eq!(
            sched.next(Nanos(400 * US)),
            Decision::Run {
                key: 1,
                budget: Nanos(SLICE)
            },
            "{policy}"
        );
        // Work that blocked again before the turn ended is not revived.
        sched.set_runnable(1, true, Nanos(500 * US)).unwrap();
        sched.set_runnable(1, false, Nanos(600 * US)).unwrap();
        sched.finish(1, false, Nanos(700 * US)).unwrap();
        assert_eq!(sched.next(Nanos(700 * US)), Decision::Idle { until: None });
    }
}

#[test]
fn with_no_work_anywhere_every_policy_waits_for_work_without_a_deadline() {
    for policy in SchedulingPolicy::ALL {
        let mut sched = scheduler(policy);
        assert_eq!(sched.next(Nanos(0)), Decision::Idle { until: None });
        sched.register(1, weight(1), Nanos(0)).unwrap();
        sched.register(2, weight(1), Nanos(0)).unwrap();
        assert_eq!(
            sched.next(Nanos(MS)),
            Decision::Idle { until: None },
            "{policy}"
        );
        assert_eq!(sched.stats(1).unwrap().idle_ns, MS);
    }
}

#[test]
fn best_effort_gives_the_rest_of_an_early_finish_to_the_next_vgpu() {
    let mut sched = scheduler(SchedulingPolicy::BestEffort);
    for key in [1, 2] {
        sched.register(key, weight(1), Nanos(0)).unwrap();
        sched.set_runnable(key, true, Nanos(0)).unwrap();
    }
    assert!(matches!(sched.next(Nanos(0)), Decision::Run { key: 1, .. }));
    sched.finish(1, false, Nanos(300 * US)).unwrap();
    assert_eq!(
        sched.next(Nanos(300 * US)),
        Decision::Run {
            key: 2,
            budget: Nanos(SLICE)
        }
    );
}

#[test]
fn share_policies_idle_rather_than_run_a_vgpu_beyond_its_share() {
    for policy in [SchedulingPolicy::EqualShare, SchedulingPolicy::FixedShare] {
        let mut sched = scheduler(policy);
        for key in [1, 2] {
            sched.register(key, weight(1), Nanos(0)).unwrap();
            sched.set_runnable(key, true, Nanos(0)).unwrap();
        }
        let run = |key, budget| Decision::Run {
            key,
            budget: Nanos(budget),
        };
        assert_eq!(sched.next(Nanos(0)), run(1, SLICE));
        // Each earns half of every ns: 1 ran 0.5 ms, owes 0.25.
        sched.finish(1, false, Nanos(500 * US)).unwrap();
        assert_eq!(sched.credit_ns(1), Some(-250_000));
        assert_eq!(sched.next(Nanos(500 * US)), run(2, SLICE));
        sched.finish(2, true, Nanos(2_500 * US)).unwrap();
        assert_eq!(sched.credit_ns(2), Some(-750_000));
        // 2 has work, but has had its share: the engine idles until 2 has
        // earned back what it owes (at half speed), not giving it 1's.
        let idle = Decision::Idle {
            until: Some(Nanos(4 * MS)),
        };
        assert_eq!(sched.next(Nanos(2_500 * US)), idle, "{policy}");
        // 1, within its share, runs as soon as it has work.
        sched.set_runnable(1, true, Nanos(3 * MS)).unwrap();
        assert_eq!(sched.next(Nanos(3 * MS)), run(1, SLICE), "{policy}");
        sched.finish(1, false, Nanos(3_100 * US)).unwrap();
        assert_eq!(sched.next(Nanos(3_100 * US)), idle, "{policy}");
        assert_eq!(sched.next(Nanos(4 * MS)), run(2, SLICE), "{policy}");
        let one = sched.stats(1).unwrap();
        assert_eq!((one.run_ns, one.turns), (600 * US, 2));
        assert_eq!(sched.stats(2).unwrap().wait_ns, 2 * MS);
    }
}

#[test]
fn an_overrun_is_paid_back_from_the_next_turns() {
    for policy in SchedulingPolicy::ALL {
        let mut sched = scheduler(policy);
        for key in [1, 2] {
            sched.register(key, weight(1), Nanos(0)).unwrap();
            sched.set_runnable(key, true, Nanos(0)).unwrap();
        }
        let mut order = Vec::new();
        let mut now = 0;
        for length in [3 * MS, SLICE, SLICE, SLICE] {
            let Decision::Run { key, .. } = sched.next(Nanos(now)) else {
                panic!("{policy}: both have work, one has credit");
            };
            now += length;
            sched.finish(key, true, Nanos(now)).unwrap();
            order.push(key);
        }
        // 1 ran 1 ms over: 2 has two turns in a row to make up for it.
        assert_eq!(order, [1, 2, 2, 1], "{policy}");
        assert_eq!(sched.stats(1).unwrap().overrun_ns, MS);
    }
}

#[test]
fn a_vgpu_without_work_banks_at_most_a_slice() {
    for policy in SchedulingPolicy::ALL {
        let mut sim = Sim::new(policy, 2);
        let busy = sim.add(flood(), 1);
        let idle = sim.add(Work::Idle, 1);
        sim.run_for(SECOND);
        assert_eq!(sim.sched.credit_ns(idle), Some(i128::from(SLICE)));
        // What it could not bank went to nobody (share policies) or to the
        // vGPU with work (best-effort).
        let expected = if policy.reserves_shares() { 0.5 } else { 1.0 };
        assert_share(&sim, busy, expected, 0.01);
    }
}

#[test]
fn a_vgpu_that_gets_work_within_its_share_runs_at_the_next_turn_boundary() {
    for policy in SchedulingPolicy::ALL {
        let mut sched = scheduler(policy);
        let mut now = 0;
        for key in 1..=4 {
            sched.register(key, weight(1), Nanos(now)).unwrap();
        }
        for key in 1..=3 {
            sched.set_runnable(key, true, Nanos(now)).unwrap();
        }
        // Rounds of the three with work (idling through 4's share under
        // the share policies), then 4 gets work 0.7 ms into a turn.
        for _ in 0..10 {
            match sched.next(Nanos(now)) {
                Decision::Run { key, budget } => {
                    now += budget.0;
                    sched.finish(key, true, Nanos(now)).unwrap();
                }
                Decision::Idle { until } => now = until.expect("work is waiting").0,
            }
        }
        let running = loop {
            match sched.next(Nanos(now)) {
                Decision::Run { key, .. } => break key,
                Decision::Idle { until } => now = until.expect("work is waiting").0,
            }
        };
        sched.set_runnable(4, true, Nanos(now + 700 * US)).unwrap();
        now += SLICE + 300 * US;
        sched.finish(running, true, Nanos(now)).unwrap();
        assert!(
            matches!(sched.next(Nanos(now)), Decision::Run { key: 4, .. }),
            "{policy}"
        );
        assert_eq!(sched.stats(4).unwrap().wait_ns, SLICE + 300 * US - 700 * US);
    }
}

/// Runs the next turn for its whole budget, the vGPU keeping its work;
/// returns whose turn it was.
fn serve(sched: &mut EngineScheduler<u8>, now: &mut u64) -> u8 {
    let Decision::Run { key, budget } = sched.next(Nanos(*now)) else {
        panic!("every vGPU has work");
    };
    *now += budget.0;
    sched.finish(key, true, Nanos(*now)).unwrap();
    key
}

#[test]
fn a_vgpu_registering_mid_round_gets_its_turn_in_that_round() {
    for policy in SchedulingPolicy::ALL {
        let mut sched = scheduler(policy);
        let mut now = 0;
        for key in 1..=4 {
            sched.register(key, weight(1), Nanos(now)).unwrap();
            sched.set_runnable(key, true, Nanos(now)).unwrap();
        }
        let mut order: Vec<u8> = (0..2).map(|_| serve(&mut sched, &mut now)).collect();
        sched.register(5, weight(1), Nanos(now)).unwrap();
        sched.set_runnable(5, true, Nanos(now)).unwrap();
        order.extend((0..8).map(|_| serve(&mut sched, &mut now)));
        assert_eq!(order, [1, 2, 3, 4, 5, 1, 2, 3, 4, 5], "{policy}");
    }
}

#[test]
fn a_heavy_vgpu_registering_is_owed_nothing_for_the_time_before() {
    // Weight 1 alone, then weight 31 joins with no credit: it is owed
    // nothing for the time before (which would hold the first back for as
    // long as it ran alone). Having just got work, it runs first; then the
    // first, within its share, and from then on 1 turn in 32 is the
    // first's (each round ends in a tie that ring order gives the first).
    let mut sched = scheduler(SchedulingPolicy::FixedShare);
    let mut now = 0;
    sched.register(1, weight(1), Nanos(now)).unwrap();
    sched.set_runnable(1, true, Nanos(now)).unwrap();
    for _ in 0..10 {
        assert_eq!(serve(&mut sched, &mut now), 1);
    }
    sched.register(2, weight(31), Nanos(now)).unwrap();
    sched.set_runnable(2, true, Nanos(now)).unwrap();
    let order: Vec<u8> = (0..64).map(|_| serve(&mut sched, &mut now)).collect();
    let ones: Vec<usize> = (0..64).filter(|&i| order[i] == 1).collect();
    assert_eq!(ones, [1, 32], "{order:?}");
}

// --- best-effort ---

#[test]
fn best_effort_never_idles_while_a_vgpu_has_work() {
    let mut sim = Sim::new(SchedulingPolicy::BestEffort, 2);
    for work in [flood(), light(), light(), Work::Idle] {
        sim.add(work, 1);
    }
    sim.run_for(5 * SECOND);
    // Alone, light vGPUs leave the engine idle, but only when neither has work.
    let mut lights = Sim::new(SchedulingPolicy::BestEffort, 2);
    lights.add(light(), 1);
    lights.add(light(), 1);
    lights.run_for(5 * SECOND);
    assert!(lights.engine_idle > 4 * SECOND);
    for sim in [sim, lights] {
        assert_eq!(sim.idle_while_runnable, 0);
        sim.check_accounting();
    }
}

#[test]
fn best_effort_splits_the_engine_evenly_among_floods() {
    let mut sim = Sim::new(SchedulingPolicy::BestEffort, 2);
    let floods: Vec<_> = (0..4).map(|_| sim.add(flood(), 1)).collect();
    sim.add(Work::Idle, 1);
    sim.run_for(10 * SECOND);
    for &key in &floods {
        assert_share(&sim, key, 0.25, 0.01);
    }
    assert!(jain_index(&run_times(&sim, floods)) >= 0.999);
}

#[test]
fn best_effort_does_not_hold_against_a_flood_the_time_it_ran_alone() {
    // Idle vGPUs come and go, each banking a slice out of the flood's
    // earnings and taking it away; the flood, working alone, runs in debt.
    // A flood that arrives later must not get the engine to itself while
    // the first pays that back: both are owed half from then on.
    for policy in SchedulingPolicy::ALL {
        let mut sim = Sim::new(policy, 2);
        let first = sim.add(flood(), 1);
        for _ in 0..500 {
            let idle = sim.add(Work::Idle, 1);
            sim.run_for(10 * MS);
            sim.remove(idle);
        }
        let second = sim.add(flood(), 1);
        sim.run_for(100 * MS);
        for fraction in fractions_of(&mut sim, &[first, second], 100 * MS) {
            assert!((fraction - 0.5).abs() <= 0.05, "{policy}: {fraction}");
        }
    }
}

// --- equal-share ---

#[test]
fn equal_share_is_fair_among_eight_floods() {
    let mut sim = Sim::new(SchedulingPolicy::EqualShare, 2);
    let floods: Vec<_> = (0..8).map(|_| sim.add(flood(), 1)).collect();
    sim.run_for(10 * SECOND);
    assert!(jain_index(&run_times(&sim, floods.iter().copied())) >= 0.999);
    for key in floods {
        assert_share(&sim, key, 1.0 / 8.0, 0.01);
    }
}

#[test]
fn equal_share_does_not_give_idle_vgpus_shares_away() {
    let mut sim = Sim::new(SchedulingPolicy::EqualShare, 2);
    let floods: Vec<_> = (0..4).map(|_| sim.add(flood(), 1)).collect();
    let idle: Vec<_> = (0..4).map(|_| sim.add(Work::Idle, 1)).collect();
    sim.run_for(10 * SECOND);
    for key in floods {
        assert_share(&sim, key, 1.0 / 8.0, 0.01);
    }
    for key in idle {
        assert_eq!(sim.stats(key).run_ns, 0);
    }
    // The idle vGPUs' half of the time: the floods' overruns into it are
    // paid back.
    let idle_fraction = sim.engine_idle as f64 / (10 * SECOND) as f64;
    assert!((idle_fraction - 0.5).abs() <= 0.005, "{idle_fraction}");
}

/// Each vGPU's fraction of what `keys` ran together during `phase`.
fn fractions_of(sim: &mut Sim, keys: &[usize], phase: u64) -> Vec<f64> {
    let before = run_times(sim, keys.iter().copied());
    sim.run_for(phase);
    let ran: Vec<f64> = run_times(sim, keys.iter().copied())
        .iter()
        .zip(&before)
        .map(|(after, before)| after - before)
        .collect();
    let total: f64 = ran.iter().sum();
    ran.iter().map(|ran| ran / total).collect()
}

#[test]
fn equal_share_follows_vgpus_registering_and_leaving() {
    let mut sim = Sim::new(SchedulingPolicy::EqualShare, 2);
    let mut keys: Vec<_> = (0..4).map(|_| sim.add(flood(), 1)).collect();
    // Mid-turn, mid-round.
    sim.run_for(SECOND + 700 * US);
    keys.extend((0..4).map(|_| sim.add(flood(), 1)));
    sim.check_accounting();
    for fraction in fractions_of(&mut sim, &keys, 2 * SECOND) {
        assert!((fraction - 1.0 / 8.0).abs() <= 0.01 / 8.0, "{fraction}");
    }
    let gone = sim.remove(keys.remove(1));
    assert_eq!(gone.elapsed_ns(), sim.now(), "registered at 0");
    sim.remove(keys.remove(4));
    sim.check_accounting();
    for fraction in fractions_of(&mut sim, &keys, 3 * SECOND) {
        assert!((fraction - 1.0 / 6.0).abs() <= 0.01 / 6.0, "{fraction}");
    }
    sim.check_accounting();
}

// --- fixed-share ---

#[test]
fn fixed_share_divides_by_weight_despite_overruns() {
    let mut sim = Sim::new(SchedulingPolicy::FixedShare, 2);
    let keys: Vec<_> = (1..=4).map(|w| (sim.add(flood(), w), w)).collect();
    sim.run_for(10 * SECOND);
    for (key, w) in keys {
        assert!(sim.max_overrun(key) > CHUNK / 2, "the floods do overrun");
        assert_share(&sim, key, f64::from(w) / 10.0, 0.005);
    }
}

#[test]
fn fixed_share_holds_with_very_uneven_weights() {
    let mut sim = Sim::new(SchedulingPolicy::FixedShare, 2);
    let light = sim.add(flood(), 1);
    let heavy = sim.add(flood(), 31);
    sim.run_for(10 * SECOND);
    assert_share(&sim, light, 1.0 / 32.0, 0.01);
    assert_share(&sim, heavy, 31.0 / 32.0, 0.01);
}

#[test]
fn fixed_share_keeps_an_idle_vgpus_share_for_it() {
    let mut sim = Sim::new(SchedulingPolicy::FixedShare, 2);
    let busy = sim.add(flood(), 1);
    sim.add(Work::Idle, 3);
    sim.run_for(10 * SECOND);
    assert_share(&sim, busy, 0.25, 0.01);
}

// --- overruns and hung channels ---

#[test]
fn a_vgpu_that_overruns_every_turn_by_half_pays_it_back() {
    for policy in SchedulingPolicy::ALL {
        let mut sim = Sim::new(policy, 2);
        let greedy = sim.add(Work::Overrun { num: 3, den: 2 }, 1);
        let others: Vec<_> = (0..3).map(|_| sim.add(flood(), 1)).collect();
        sim.run_for(10 * SECOND);
        assert_share(&sim, greedy, 0.25, 0.01);
        for key in others {
            assert_share(&sim, key, 0.25, 0.01);
        }
        assert!(sim.stats(greedy).overrun_ns > SECOND / 2, "{policy}");
    }
}

#[test]
fn a_hung_vgpu_takes_no_more_than_its_share() {
    for policy in SchedulingPolicy::ALL {
        // Its work never ends and never yields early, and its indivisible
        // stretches (5 ms) are longer than the slice: every turn overruns
        // by more than a whole slice.
        let mut sim = Sim::new(policy, 2);
        let hung = sim.add(Work::Flood { chunk: 5 * MS }, 1);
        let others: Vec<_> = (0..3).map(|_| sim.add(flood(), 1)).collect();
        sim.run_for(10 * SECOND);
        assert_share(&sim, hung, 0.25, 0.01);
        for key in others {
            assert_share(&sim, key, 0.25, 0.01);
        }
    }
}

// --- many vGPUs ---

#[test]
fn sixty_four_vgpus_share_fairly_under_every_policy() {
    for policy in SchedulingPolicy::ALL {
        let mut sim = Sim::new(policy, 1);
        let floods: Vec<_> = (0..64).map(|_| sim.add(flood(), 1)).collect();
        sim.run_for(10 * SECOND);
        assert!(jain_index(&run_times(&sim, floods.iter().copied())) >= 0.999);
        for key in floods {
            assert_share(&sim, key, 1.0 / 64.0, 0.02);
        }
    }
}

#[test]
fn sixty_four_weighted_vgpus_divide_fixed_share() {
    // Weights 1 to 4, 16 of each: a weight-1 vGPU's share is 1/160, some
    // 125 turns of 1 ms in 20 s, so one turn is 0.8% of it.
    let mut sim = Sim::new(SchedulingPolicy::FixedShare, 1);
    let keys: Vec<_> = (0..64)
        .map(|i| {
            let w = i % 4 + 1;
            (sim.add(flood(), w), w)
        })
        .collect();
    sim.run_for(20 * SECOND);
    for (key, w) in keys {
        assert_share(&sim, key, f64::from(w) / 160.0, 0.02);
    }
}
