//! The figures `docs/scheduling.md` quotes, printed:
//! `cargo test -p vgpu-mdev sched::figures -- --ignored --nocapture`.
//! The other tests assert the bounds; this one only prints.

use super::latency::noisy_neighbour;
use super::sim::{CHUNK, MS, SECOND, SLICE, Sim, US, Work, flood, prober, run_times};
use super::*;

/// `ns` in milliseconds, with three decimals.
fn ms(ns: u64) -> String {
    format!("{:.3} ms", ns as f64 / MS as f64)
}

/// Median, 99th percentile and largest of `values`.
fn percentiles(values: &[u64]) -> String {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let at = |q: usize| sorted.get(sorted.len() * q / 100).copied().unwrap_or(0);
    format!(
        "p50 {}, p99 {}, max {}",
        ms(at(50)),
        ms(at(99)),
        ms(sorted.last().copied().unwrap_or(0))
    )
}

/// The largest relative difference between each vGPU's share and its
/// expected share.
fn worst_deviation(sim: &Sim, keys: &[(usize, f64)]) -> f64 {
    keys.iter()
        .map(|&(key, expected)| (sim.share(key) / expected - 1.0).abs())
        .fold(0.0, f64::max)
}

#[test]
#[ignore = "prints figures; asserts nothing the other tests do not"]
fn figures() {
    for policy in SchedulingPolicy::ALL {
        println!("--- {policy}");
        let mut sim = Sim::new(policy, 2);
        let floods: Vec<_> = (0..8).map(|_| sim.add(flood(), 1)).collect();
        sim.run_for(10 * SECOND);
        let expected: Vec<_> = floods.iter().map(|&key| (key, 1.0 / 8.0)).collect();
        let gap = floods.iter().map(|&key| sim.max_gap(key)).max();
        println!(
            "8 floods: Jain {:.6}, worst share off 1/8 by {:.3}%, longest wait between turns {}",
            jain_index(&run_times(&sim, floods)),
            worst_deviation(&sim, &expected) * 100.0,
            ms(gap.unwrap_or(0))
        );

        let (sim, floods, quiet) = noisy_neighbour(policy, &[1; 7], 1);
        let overrun = floods.iter().map(|&key| sim.max_overrun(key)).max();
        let gap = floods.iter().map(|&key| sim.max_gap(key)).max();
        println!(
            "7 floods + prober: prober waits {} ({} waits; bound slice + overrun {}); \
             floods Jain {:.6}, longest flood wait {}; prober share {:.5}; engine idle {:.4}",
            percentiles(sim.waits(quiet)),
            sim.waits(quiet).len(),
            ms(SLICE + overrun.unwrap_or(0)),
            jain_index(&run_times(&sim, floods.iter().copied())),
            ms(gap.unwrap_or(0)),
            sim.share(quiet),
            sim.engine_idle as f64 / sim.now() as f64,
        );

        let mut sim = Sim::new(policy, 2);
        (0..7).for_each(|_| _ = sim.add(Work::Idle, 1));
        let quiet = sim.add(prober(), 1);
        sim.run_for(10 * SECOND);
        println!(
            "7 idle + prober: prober waits {}; engine idle {:.4}",
            percentiles(sim.waits(quiet)),
            sim.engine_idle as f64 / sim.now() as f64,
        );

        let mut sim = Sim::new(policy, 2);
        let greedy = sim.add(Work::Overrun { num: 3, den: 2 }, 1);
        let hung = sim.add(Work::Flood { chunk: 5 * MS }, 1);
        sim.add(flood(), 1);
        sim.add(flood(), 1);
        sim.run_for(10 * SECOND);
        println!(
            "1.5x overrunner share {:.5}, hung (5 ms chunks) share {:.5}, of 0.25",
            sim.share(greedy),
            sim.share(hung)
        );

        let mut shares = Vec::new();
        for sleep in [US, 100 * US, MS, 5 * MS] {
            let mut sim = Sim::new(policy, 2);
            (0..7).for_each(|_| _ = sim.add(flood(), 1));
            let hostile = sim.add(
                Work::Alternate {
                    chunk: CHUNK,
                    sleep,
                },
                1,
            );
            sim.run_for(10 * SECOND);
            shares.push(format!("{:.5}", sim.share(hostile)));
        }
        println!(
            "7 floods + alternator sleeping 1 us, 0.1, 1, 5 ms: its share {} (1/8 = 0.125)",
            shares.join(", ")
        );

        let mut sim = Sim::new(policy, 2);
        let floods: Vec<_> = [1, 3, 5, 8].map(|w| sim.add(flood(), w)).into();
        (0..5).for_each(|_| _ = sim.add(Work::Idle, 4));
        sim.run_for(100 * MS);
        let quiet = sim.add(prober(), 2);
        sim.run_for(10 * SECOND);
        let overrun = floods.iter().map(|&key| sim.max_overrun(key)).max();
        println!(
            "floods of weights 1, 3, 5, 8, 5 idle of weight 4, prober of weight 2: \
             prober waits {} (bound {})",
            percentiles(sim.waits(quiet)),
            ms(SLICE + overrun.unwrap_or(0))
        );

        let mut sim = Sim::new(policy, 1);
        let floods: Vec<_> = (0..64).map(|_| sim.add(flood(), 1)).collect();
        sim.run_for(10 * SECOND);
        let expected: Vec<_> = floods.iter().map(|&key| (key, 1.0 / 64.0)).collect();
        println!(
            "64 floods, 1 ms: Jain {:.6}, worst share off 1/64 by {:.2}%",
            jain_index(&run_times(&sim, floods)),
            worst_deviation(&sim, &expected) * 100.0
        );
    }
    println!("--- shares");
    let mut sim = Sim::new(SchedulingPolicy::EqualShare, 2);
    let floods: Vec<_> = (0..4).map(|_| sim.add(flood(), 1)).collect();
    (0..4).for_each(|_| _ = sim.add(Work::Idle, 1));
    sim.run_for(10 * SECOND);
    let shares: Vec<_> = floods
        .iter()
        .map(|&key| format!("{:.5}", sim.share(key)))
        .collect();
    println!(
        "equal-share: 4 floods + 4 idle: shares {}, engine idle {:.4}",
        shares.join(", "),
        sim.engine_idle as f64 / sim.now() as f64
    );
    for weights in [&[1, 2, 3, 4][..], &[1, 31]] {
        let mut sim = Sim::new(SchedulingPolicy::FixedShare, 2);
        let total: u32 = weights.iter().sum();
        let keys: Vec<_> = (weights.iter())
            .map(|&w| (sim.add(flood(), w), f64::from(w) / f64::from(total)))
            .collect();
        sim.run_for(10 * SECOND);
        let shares: Vec<_> = (keys.iter())
            .map(|&(key, _)| format!("{:.5}", sim.share(key)))
            .collect();
        println!(
            "fixed-share: weights {weights:?}: shares {} (worst off by {:.3}%)",
            shares.join(", "),
            worst_deviation(&sim, &keys) * 100.0
        );
    }
    let mut sim = Sim::new(SchedulingPolicy::FixedShare, 1);
    let keys: Vec<_> = (0..64)
        .map(|i| {
            let w = i % 4 + 1;
            (sim.add(flood(), w), f64::from(w) / 160.0)
        })
        .collect();
    sim.run_for(20 * SECOND);
    println!(
        "fixed-share: 64 floods of weights 1 to 4, 1 ms, 20 s: worst share off by {:.2}%",
        worst_deviation(&sim, &keys) * 100.0
    );
    let mut shares = Vec::new();
    for sleep in [US, 300 * US, 3 * MS] {
        let mut sim = Sim::new(SchedulingPolicy::FixedShare, 2);
        (1..=4).for_each(|w| _ = sim.add(flood(), w));
        let hostile = sim.add(
            Work::Alternate {
                chunk: CHUNK,
                sleep,
            },
            2,
        );
        sim.run_for(10 * SECOND);
        shares.push(format!("{:.5}", sim.share(hostile)));
    }
    println!(
        "fixed-share: floods of weights 1 to 4 + alternator of weight 2 sleeping 1 us, \
         0.3, 3 ms: its share {} (2/12 = {:.5})",
        shares.join(", "),
        2.0 / 12.0
    );
    for weights in [&[1, 2, 3, 4, 5, 6, 7][..], &[31]] {
        let (sim, floods, quiet) = noisy_neighbour(SchedulingPolicy::FixedShare, weights, 1);
        let overrun = floods.iter().map(|&key| sim.max_overrun(key)).max();
        println!(
            "fixed-share: floods of weights {weights:?} + prober of weight 1: waits {} (bound {})",
            percentiles(sim.waits(quiet)),
            ms(SLICE + overrun.unwrap_or(0))
        );
    }
}
