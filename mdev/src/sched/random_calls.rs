//! Random call sequences: whatever the runner and the control plane do, in
//! whatever order and with whatever times, the scheduler never panics, its
//! decisions follow the contract, and its counters account for every
//! nanosecond.

use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::num::NonZeroU32;

use proptest::prelude::*;

use super::sim::MS;
use super::{Decision, EngineScheduler, Nanos, SchedError, SchedulingPolicy, TimeSlice};

#[derive(Clone, Debug)]
enum Call {
    Register(u8, u32),
    Unregister(u8),
    SetRunnable(u8, bool),
    Next,
    /// `None`: the vGPU that holds the turn, if any.
    Finish(Option<u8>, bool),
}

fn call() -> impl Strategy<Value = Call> {
    let key = 0u8..6;
    prop_oneof![
        2 => (key.clone(), 1u32..40).prop_map(|(k, w)| Call::Register(k, w)),
        1 => key.clone().prop_map(Call::Unregister),
        3 => (key.clone(), any::<bool>()).prop_map(|(k, r)| Call::SetRunnable(k, r)),
        4 => Just(Call::Next),
        3 => (proptest::option::weighted(0.8, key), any::<bool>())
            .prop_map(|(k, r)| Call::Finish(k, r)),
    ]
}

/// How far each call moves the caller's clock: mostly small steps, some
/// whole seconds, and some steps back (which the scheduler must take as no
/// step at all).
fn step() -> impl Strategy<Value = i64> {
    prop_oneof![
        6 => 0i64..(3 * MS as i64),
        1 => Just(0i64),
        1 => 0i64..(5_000 * MS as i64),
        1 => -(2 * MS as i64)..0,
    ]
}

fn policy() -> impl Strategy<Value = SchedulingPolicy> {
    prop_oneof![
        Just(SchedulingPolicy::BestEffort),
        Just(SchedulingPolicy::EqualShare),
        Just(SchedulingPolicy::FixedShare),
    ]
}

/// What the test knows of each vGPU.
#[derive(Debug)]
struct Known {
    registered_at: u64,
    runnable: bool,
    /// Said to have work during its turn (the last word in the turn).
    arrived_in_turn: bool,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_calls_keep_the_contract_and_the_accounting(
        policy in policy(),
        slice_ms in 1u64..=30,
        calls in proptest::collection::vec((call(), step()), 1..300),
    ) {
        let slice = TimeSlice::from_millis(slice_ms).unwrap();
        let mut sched = EngineScheduler::new(policy, slice);
        let mut known: BTreeMap<u8, Known> = BTreeMap::new();
        let mut turn: Option<u8> = None;
        let mut clock = 0u64;
        let mut asked = 0u64;
        // Run time of vGPUs that left, so that the engine total can be checked.
        let mut departed_run = 0u64;
        for (call, step) in calls {
            asked = asked.saturating_add_signed(step);
            clock = clock.max(asked);
            let now = Nanos(asked);
            match call {
                Call::Register(key, w) => {
                    let result = sched.register(key, NonZeroU32::new(w).unwrap(), now);
                    if let Entry::Vacant(entry) = known.entry(key) {
                        prop_assert_eq!(result, Ok(()));
                        entry.insert(Known { registered_at: clock, runnable: false, arrived_in_turn: false });
                    } else {
                        prop_assert_eq!(result, Err(SchedError::AlreadyRegistered));
                    }
                }
                Call::Unregister(key) => {
                    let result = sched.unregister(key, now);
                    match known.remove(&key) {
                        None => prop_assert_eq!(result, Err(SchedError::NotRegistered)),
                        Some(gone) => {
                            let stats = result.unwrap();
                            prop_assert_eq!(stats.elapsed_ns(), clock - gone.registered_at);
                            departed_run += stats.run_ns;
                            if turn == Some(key) {
                                turn = None;
                            }
                        }
                    }
                }
                Call::SetRunnable(key, runnable) => {
                    let result = sched.set_runnable(key, runnable, now);
                    match known.get_mut(&key) {
                        None => prop_assert_eq!(result, Err(SchedError::NotRegistered)),
                        Some(vgpu) => {
                            prop_assert_eq!(result, Ok(()));
                            if turn == Some(key) {
                                vgpu.arrived_in_turn = runnable;
                            } else {
                                vgpu.runnable = runnable;
                            }
                        }
                    }
                }
                Call::Next => {
                    let decision = sched.next(now);
                    let anyone_runnable = known.values().any(|vgpu| vgpu.runnable);
                    match decision {
                        Decision::Run { key, budget } => {
                            prop_assert!(budget <= slice.nanos());
                            match turn {
                                Some(holder) => prop_assert_eq!(key, holder),
                                None => {
                                    prop_assert!(known[&key].runnable, "granted a vGPU with no work");
                                    prop_assert_eq!(budget, slice.nanos());
                                    known.get_mut(&key).unwrap().arrived_in_turn = false;
                                    if policy.reserves_shares() {
                                        let credit = sched.credit_ns(key).unwrap();
                                        prop_assert!(credit >= 0, "granted a vGPU over its share");
                                    }
                                    turn = Some(key);
                                }
                            }
                        }
                        Decision::Idle { until } => {
                            prop_assert_eq!(turn, None, "idle while a turn is in progress");
                            match until {
                                None => prop_assert!(!anyone_runnable, "waits for work while some is there"),
                                Some(until) => {
                                    prop_assert!(policy.reserves_shares(), "best-effort idled with a deadline");
                                    prop_assert!(anyone_runnable, "idles with a deadline for nobody");
                                    prop_assert!(until.0 > clock);
                                    // Nobody had credit; at `until` someone has.
                                    let mut later = sched.clone();
                                    let run = matches!(later.next(until), Decision::Run { .. });
                                    prop_assert!(run, "idle until {:?}, and then idle again", until);
                                }
                            }
                        }
                    }
                }
                Call::Finish(key, still_runnable) => {
                    let key = key.or(turn).unwrap_or(0);
                    let result = sched.finish(key, still_runnable, now);
                    if !known.contains_key(&key) {
                        prop_assert_eq!(result, Err(SchedError::NotRegistered));
                    } else if turn == Some(key) {
                        prop_assert_eq!(result, Ok(()));
                        turn = None;
                        let vgpu = known.get_mut(&key).unwrap();
                        // Work said to arrive during the turn is not lost.
                        vgpu.runnable = still_runnable || vgpu.arrived_in_turn;
                    } else {
                        prop_assert_eq!(result, Err(SchedError::NoTurn));
                    }
                }
            }
            // Every registered vGPU's time is all accounted for, the engine
            // ran at most one vGPU at a time, and no vGPU without work
            // banks more than a slice of credit.
            let mut total_run = departed_run;
            for (key, vgpu) in &known {
                let stats = sched.stats(*key).unwrap();
                prop_assert_eq!(stats.elapsed_ns(), clock - vgpu.registered_at, "{:?}", stats);
                total_run += stats.run_ns;
                if !vgpu.runnable && turn != Some(*key) {
                    let credit = sched.credit_ns(*key).unwrap();
                    prop_assert!(credit <= i128::from(slice.nanos().0), "{} banked", credit);
                }
            }
            prop_assert!(total_run <= clock);
        }
    }
}
