//! Latency, checked in simulated time (`sim.rs`): how long a vGPU waits
//! for the engine from getting work, beside floods, beside idle vGPUs and
//! beside a hostile vGPU, and that nobody with work waits for ever. The
//! bounds are `docs/scheduling.md`'s, in exact virtual nanoseconds.

use super::sim::{
    CHUNK, MS, SECOND, SLICE, Sim, US, Work, assert_share, flood, light, prober, run_times,
};
use super::*;

/// The longest a vGPU that gets work within its share waits for its
/// turn, when no other vGPU got work before it and is still waiting: the
/// rest of the turn in progress, at most a slice and its overrun.
fn woken_bound(sim: &Sim, keys: &[usize]) -> u64 {
    SLICE
        + keys
            .iter()
            .map(|&key| sim.max_overrun(key))
            .max()
            .unwrap_or(0)
}

/// `floods` floods with `weights`, run for 100 ms so that none of them is
/// still waiting on its first work, then the prober with `weight`, run
/// for 10 s: the noisy-neighbour benchmark. Returns the floods' keys and
/// the prober's.
pub(super) fn noisy_neighbour(
    policy: SchedulingPolicy,
    weights: &[u32],
    weight: u32,
) -> (Sim, Vec<usize>, usize) {
    let mut sim = Sim::new(policy, 2);
    let floods: Vec<_> = weights.iter().map(|&w| sim.add(flood(), w)).collect();
    sim.run_for(100 * MS);
    let prober = sim.add(prober(), weight);
    sim.run_for(10 * SECOND);
    sim.check_accounting();
    assert!(sim.stats(prober).turns > 1_000, "{:?}", sim.stats(prober));
    (sim, floods, prober)
}

#[test]
fn the_prober_runs_within_a_slice_of_its_submission_beside_seven_floods() {
    for (policy, weights) in [
        (SchedulingPolicy::BestEffort, [1; 7]),
        (SchedulingPolicy::EqualShare, [1; 7]),
        (SchedulingPolicy::FixedShare, [1; 7]),
        (SchedulingPolicy::FixedShare, [1, 2, 3, 4, 5, 6, 7]),
    ] {
        let (sim, floods, prober) = noisy_neighbour(policy, &weights, 1);
        let bound = woken_bound(&sim, &floods);
        let waited = sim.max_latency(prober);
        assert!(waited <= bound, "{policy}: waited {waited} ns > {bound}");
        assert!(bound <= SLICE + CHUNK);
        // And the floods still share the rest by weight.
        let total: u32 = weights.iter().sum();
        for (&key, &w) in floods.iter().zip(&weights) {
            let share = sim.stats(key).run_ns as f64 / (10 * SECOND + 100 * MS) as f64;
            let expected = f64::from(w) / f64::from(total + 1);
            assert!(share >= expected * 0.98, "{policy}: {share} < {expected}");
        }
    }
}

#[test]
fn a_lone_submitter_is_not_delayed_by_idle_neighbours() {
    // Seven attached vGPUs that never have work: their shares idle, but
    // the prober, within its own, never waits for them.
    for policy in SchedulingPolicy::ALL {
        let mut sim = Sim::new(policy, 2);
        for _ in 0..7 {
            sim.add(Work::Idle, 1);
        }
        let prober = sim.add(prober(), 1);
        sim.run_for(10 * SECOND);
        assert!(sim.stats(prober).turns > 1_000);
        assert_eq!(sim.max_latency(prober), 0, "{policy}");
        assert_eq!(sim.idle_while_runnable, 0, "{policy}");
        sim.check_accounting();
    }
}

#[test]
fn a_light_vgpu_that_got_work_at_the_same_time_as_floods_waits_its_turn_among_them() {
    // Registered with the floods, the light vGPU's first command arrives
    // while six of them, which got their work earlier, still wait for
    // their first turn: it runs after them (the bound counts the vGPUs
    // woken before it), and from then on within a slice.
    for policy in SchedulingPolicy::ALL {
        let mut sim = Sim::new(policy, 2);
        let floods: Vec<_> = (0..7).map(|_| sim.add(flood(), 1)).collect();
        let quiet = sim.add(light(), 1);
        sim.run_for(20 * MS);
        let first = sim.max_latency(quiet);
        assert!(first <= 7 * woken_bound(&sim, &floods), "{policy}: {first}");
        sim.run_for(10 * SECOND);
        let waits = sim.waits(quiet);
        assert!(waits.len() > 1_000);
        let later = waits[1..].iter().max();
        let bound = woken_bound(&sim, &floods);
        assert!(
            later.is_some_and(|&wait| wait <= bound),
            "{policy}: {later:?}"
        );
    }
}

#[test]
fn under_fixed_share_a_light_weight_runs_within_a_slice_beside_a_heavy_one() {
    // Weight 1 against 31: it is owed 1/32 of the engine, uses 1/73.
    let (sim, floods, quiet) = noisy_neighbour(SchedulingPolicy::FixedShare, &[31], 1);
    let waited = sim.max_latency(quiet);
    assert!(waited <= woken_bound(&sim, &floods), "waited {waited} ns");
}

#[test]
fn latency_bounds_hold_with_idle_vgpus_and_mixed_weights() {
    // Floods of weights 1, 3, 5, 8, five idle vGPUs of weight 4 and the
    // prober of weight 2: within its share (2/39), it waits at most the
    // turn in progress under every policy.
    for policy in SchedulingPolicy::ALL {
        let mut sim = Sim::new(policy, 2);
        let floods: Vec<_> = [1, 3, 5, 8].map(|w| sim.add(flood(), w)).into();
        for _ in 0..5 {
            sim.add(Work::Idle, 4);
        }
        sim.run_for(100 * MS);
        let quiet = sim.add(prober(), 2);
        sim.run_for(10 * SECOND);
        let waited = sim.max_latency(quiet);
        let bound = woken_bound(&sim, &floods);
        assert!(waited <= bound, "{policy}: waited {waited} ns > {bound}");
        sim.check_accounting();
    }
}

#[test]
fn a_vgpu_over_its_share_waits_for_credit_and_gets_its_share() {
    // Weight 1 against 31, submitting 1 ms commands with pauses of 0 to
    // 2 ms: it wants about half the engine and is owed 1/32.
    for policy in [SchedulingPolicy::EqualShare, SchedulingPolicy::FixedShare] {
        let mut sim = Sim::new(policy, 2);
        let heavy = sim.add(flood(), 31);
        let greedy = sim.add(
            Work::Think {
                cost: MS,
                max_think: 2 * MS,
            },
            1,
        );
        sim.run_for(10 * SECOND);
        let share = match policy {
            SchedulingPolicy::FixedShare => 1.0 / 32.0,
            _ => 0.5,
        };
        assert!(
            sim.share(greedy) <= share * 1.01,
            "{policy}: {}",
            sim.share(greedy)
        );
        assert!(sim.share(heavy) >= (1.0 - share) * 0.99, "{policy}");
    }
}

// --- a hostile vGPU ---

#[test]
fn a_vgpu_that_sleeps_between_turns_to_be_woken_gets_no_more_than_its_share() {
    // Each turn it runs a whole slice and overruns as a flood, then goes
    // idle briefly and gets work again: it is woken whenever its credit
    // allows, never more.
    for policy in SchedulingPolicy::ALL {
        for sleep in [US, 100 * US, MS, 5 * MS] {
            let mut sim = Sim::new(policy, 2);
            let floods: Vec<_> = (0..7).map(|_| sim.add(flood(), 1)).collect();
            let hostile = sim.add(
                Work::Alternate {
                    chunk: CHUNK,
                    sleep,
                },
                1,
            );
            sim.run_for(10 * SECOND);
            let share = sim.share(hostile);
            assert!(share <= 0.125 * 1.01, "{policy}, sleep {sleep}: {share}");
            assert!(jain_index(&run_times(&sim, floods.iter().copied())) >= 0.999);
            for key in floods {
                assert_share(&sim, key, 0.125, 0.02);
            }
        }
    }
}

#[test]
fn under_fixed_share_a_hostile_vgpu_gets_no_more_than_its_weight() {
    for sleep in [US, 300 * US, 3 * MS] {
        let mut sim = Sim::new(SchedulingPolicy::FixedShare, 2);
        let floods: Vec<_> = (1..=4).map(|w| (sim.add(flood(), w), w)).collect();
        let hostile = sim.add(
            Work::Alternate {
                chunk: CHUNK,
                sleep,
            },
            2,
        );
        sim.run_for(10 * SECOND);
        let share = sim.share(hostile);
        assert!(share <= 2.0 / 12.0 * 1.01, "sleep {sleep}: {share}");
        for (key, w) in floods {
            assert_share(&sim, key, f64::from(w) / 12.0, 0.02);
        }
    }
}

// --- nobody starves ---

/// The longest a vGPU of share `share` that keeps its work after a turn
/// waits for its next (docs/scheduling.md): until it has paid the turn
/// for, then one turn of each of the `n - 1` others, plus the turns of
/// vGPUs woken meanwhile, which their credit limits: here one turn covers
/// them (the prober's are 0.1 ms; the hostile vGPU's credit allows it one
/// slice in 8). A turn is at most a slice and `overrun`.
fn starvation_bound(share: f64, n: usize, overrun: u64) -> u64 {
    let turn = (SLICE + overrun) as f64;
    (turn * (1.0 / share - 1.0)) as u64 + n as u64 * (SLICE + overrun)
}

#[test]
fn every_vgpu_with_work_gets_a_turn_within_the_bound() {
    for policy in SchedulingPolicy::ALL {
        let (sim, floods, _) = noisy_neighbour(policy, &[1; 7], 1);
        for key in floods {
            let bound = starvation_bound(1.0 / 8.0, 8, sim.max_overrun(key).max(CHUNK));
            assert!(sim.max_gap(key) <= bound, "{policy}: {}", sim.max_gap(key));
        }
        let mut sim = Sim::new(policy, 2);
        let floods: Vec<_> = (0..7).map(|_| sim.add(flood(), 1)).collect();
        sim.add(
            Work::Alternate {
                chunk: CHUNK,
                sleep: MS,
            },
            1,
        );
        sim.run_for(10 * SECOND);
        for key in floods {
            let bound = starvation_bound(1.0 / 8.0, 8, CHUNK);
            assert!(sim.max_gap(key) <= bound, "{policy}: {}", sim.max_gap(key));
        }
    }
    let mut sim = Sim::new(SchedulingPolicy::FixedShare, 2);
    let keys: Vec<_> = [1, 2, 3, 4, 31].map(|w| (sim.add(flood(), w), w)).into();
    sim.run_for(10 * SECOND);
    for (key, w) in keys {
        let bound = starvation_bound(f64::from(w) / 41.0, 5, CHUNK);
        assert!(
            sim.max_gap(key) <= bound,
            "weight {w}: {}",
            sim.max_gap(key)
        );
    }
}
