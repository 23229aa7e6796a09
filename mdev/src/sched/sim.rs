//! A simulated engine loop for the scheduler's tests: vGPUs with work
//! models, driven through `next` and `finish` in virtual time, the way the
//! GPU's runner thread will drive the scheduler.
//!
//! Work is counted in virtual nanoseconds: a turn "runs" by moving the
//! clock, so a simulated 10 s takes milliseconds of real time and the
//! results never depend on the machine.

use std::num::NonZeroU32;

use super::{Decision, EngineScheduler, Nanos, SchedStats, SchedulingPolicy, TimeSlice};

/// 1 ms in ns.
pub(super) const MS: u64 = 1_000_000;
/// 1 µs in ns.
pub(super) const US: u64 = 1_000;
/// 1 s in ns.
pub(super) const SECOND: u64 = 1_000 * MS;
/// The default slice, in ns.
pub(super) const SLICE: u64 = 2 * MS;
/// Longest stretch the simulated engine runs without a preemption
/// boundary: the most a turn overruns.
pub(super) const CHUNK: u64 = 500 * US;

/// Always has work, in stretches up to [`CHUNK`].
pub(super) fn flood() -> Work {
    Work::Flood { chunk: CHUNK }
}

/// One 100 µs command every 7.3 ms: a vGPU that mostly waits on its own
/// work, submitting out of step with the slices.
pub(super) fn light() -> Work {
    Work::Periodic {
        period: 7_300 * US,
        cost: 100 * US,
        first: 300 * US,
    }
}

/// The noisy-neighbour benchmark's prober: one 100 µs command at a time,
/// the next after a random pause of 0 to 16 ms once the last is done.
pub(super) fn prober() -> Work {
    Work::Think {
        cost: 100 * US,
        max_think: 16 * MS,
    }
}

/// Asserts that `key`'s share of the engine since it registered is
/// `expected` within `tolerance` (relative).
pub(super) fn assert_share(sim: &Sim, key: usize, expected: f64, tolerance: f64) {
    let share = sim.share(key);
    assert!(
        (share - expected).abs() <= expected * tolerance,
        "vGPU {key}: share {share:.5}, expected {expected:.5} within {:.1}%",
        tolerance * 100.0
    );
}

/// The run times of `keys`, in ns.
pub(super) fn run_times(sim: &Sim, keys: impl IntoIterator<Item = usize>) -> Vec<f64> {
    keys.into_iter()
        .map(|key| sim.stats(key).run_ns as f64)
        .collect()
}

/// What one simulated vGPU submits, and how its work yields the engine.
#[derive(Clone, Copy, Debug)]
pub(super) enum Work {
    /// Always has work, made of commands and copy chunks up to `chunk` ns
    /// long (random, 1..=chunk): the engine stops at the first boundary at
    /// or after the budget, so a turn overruns by less than `chunk`. With a
    /// large `chunk` it is also the model of a hung channel: always
    /// runnable, never done early, every turn overrunning.
    Flood { chunk: u64 },
    /// Always has work, and every turn runs `num / den` of its budget (one
    /// indivisible command longer than the budget each time).
    Overrun { num: u64, den: u64 },
    /// One indivisible command of `cost` ns every `period` ns, the first at
    /// `first` ns after it is added. Commands queue if the last is not done.
    Periodic { period: u64, cost: u64, first: u64 },
    /// One indivisible command of `cost` ns at a time: the next is
    /// submitted a random 0..=`max_think` ns after the last is done (the
    /// client waits for its fence, then thinks). The first comes at once.
    Think { cost: u64, max_think: u64 },
    /// Hostile: has work for a whole turn, in chunks up to `chunk` ns as a
    /// flood, then has none for `sleep` ns, then has work again, and so on:
    /// a vGPU trying to be woken as often as it can.
    Alternate { chunk: u64, sleep: u64 },
    /// Never has work.
    Idle,
}

/// A simulated vGPU.
#[derive(Debug)]
struct SimVgpu {
    work: Work,
    /// Work queued, in ns (`u64::MAX` for the always-runnable models).
    backlog: u64,
    next_arrival: Option<u64>,
    /// When it last got work while having none, until its next turn.
    waiting_since: Option<u64>,
    /// Every wait from getting work (having had none) to its turn.
    waits: Vec<u64>,
    /// Since when it has had work without holding the engine.
    has_work_since: Option<u64>,
    /// Longest stretch with work without holding the engine.
    max_gap: u64,
    registered_at: u64,
    registered: bool,
    max_overrun: u64,
}

/// The engine loop and its vGPUs (keys are indices into `vgpus`).
#[derive(Debug)]
pub(super) struct Sim {
    pub(super) sched: EngineScheduler<usize>,
    vgpus: Vec<SimVgpu>,
    /// The simulated time.
    now: u64,
    /// The latest time given to the scheduler.
    sched_clock: u64,
    /// Engine time spent idle while some vGPU had work.
    pub(super) idle_while_runnable: u64,
    /// Engine time spent idle.
    pub(super) engine_idle: u64,
    rng: u64,
}

impl Sim {
    pub(super) fn new(policy: SchedulingPolicy, slice_ms: u64) -> Self {
        let slice = TimeSlice::from_millis(slice_ms).expect("test slices are in range");
        Self {
            sched: EngineScheduler::new(policy, slice),
            vgpus: Vec::new(),
            now: 0,
            sched_clock: 0,
            idle_while_runnable: 0,
            engine_idle: 0,
            rng: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// Registers a vGPU now; returns its key.
    pub(super) fn add(&mut self, work: Work, weight: u32) -> usize {
        let key = self.vgpus.len();
        let weight = NonZeroU32::new(weight).expect("test weights are positive");
        self.call_at(self.now);
        self.sched
            .register(key, weight, Nanos(self.now))
            .expect("fresh key");
        let (backlog, next_arrival) = match work {
            Work::Flood { .. } | Work::Overrun { .. } => (u64::MAX, None),
            Work::Periodic { first, .. } => (0, Some(self.now + first)),
            Work::Think { .. } | Work::Alternate { .. } => (0, Some(self.now)),
            Work::Idle => (0, None),
        };
        self.vgpus.push(SimVgpu {
            work,
            backlog,
            next_arrival,
            waiting_since: None,
            waits: Vec::new(),
            has_work_since: (backlog > 0).then_some(self.now),
            max_gap: 0,
            registered_at: self.now,
            registered: true,
            max_overrun: 0,
        });
        if backlog > 0 {
            self.sched
                .set_runnable(key, true, Nanos(self.now))
                .expect("registered");
        }
        key
    }

    /// Unregisters a vGPU now (its client detached); returns its counters.
    pub(super) fn remove(&mut self, key: usize) -> SchedStats {
        self.call_at(self.now);
        self.vgpus[key].registered = false;
        self.sched
            .unregister(key, Nanos(self.now))
            .expect("registered")
    }

    /// Runs the engine loop for `ns` of simulated time (the last turn may
    /// end a little later).
    pub(super) fn run_for(&mut self, ns: u64) {
        let end = self.now + ns;
        while self.now < end {
            self.deliver_arrivals(self.now);
            self.call_at(self.now);
            match self.sched.next(Nanos(self.now)) {
                Decision::Run { key, budget } => self.run_turn(key, budget.0),
                Decision::Idle { until } => {
                    assert!(until.is_none_or(|until| until.0 > self.now), "{until:?}");
                    let wake = until
                        .map_or(end, |until| until.0.min(end))
                        .min(self.next_arrival().unwrap_or(u64::MAX));
                    let span = wake.max(self.now) - self.now;
                    self.engine_idle += span;
                    if self.any_backlog() {
                        self.idle_while_runnable += span;
                    }
                    self.now = wake.max(self.now);
                }
            }
        }
    }

    /// A vGPU's counters, checking that they account for every nanosecond
    /// since it registered.
    pub(super) fn stats(&self, key: usize) -> SchedStats {
        let stats = self.sched.stats(key).expect("registered");
        assert_eq!(
            stats.elapsed_ns(),
            self.sched_clock - self.vgpus[key].registered_at,
            "vGPU {key}: run + wait + idle is the time since it registered: {stats:?}"
        );
        stats
    }

    /// The simulated time.
    pub(super) fn now(&self) -> u64 {
        self.now
    }

    /// Its share of the engine since it registered.
    pub(super) fn share(&self, key: usize) -> f64 {
        let stats = self.stats(key);
        stats.run_ns as f64 / stats.elapsed_ns() as f64
    }

    /// Longest wait from getting work (having had none) to its turn.
    pub(super) fn max_latency(&self, key: usize) -> u64 {
        self.vgpus[key].waits.iter().copied().max().unwrap_or(0)
    }

    /// Every wait from getting work (having had none) to its turn, in
    /// order.
    pub(super) fn waits(&self, key: usize) -> &[u64] {
        &self.vgpus[key].waits
    }

    /// Longest stretch it had work without holding the engine (so far, the
    /// stretch in progress included).
    pub(super) fn max_gap(&self, key: usize) -> u64 {
        let vgpu = &self.vgpus[key];
        let current = vgpu.has_work_since.map_or(0, |since| self.now - since);
        vgpu.max_gap.max(current)
    }

    /// Longest single overrun of one of its turns.
    pub(super) fn max_overrun(&self, key: usize) -> u64 {
        self.vgpus[key].max_overrun
    }

    /// Checks the accounting of every registered vGPU.
    pub(super) fn check_accounting(&self) {
        for key in 0..self.vgpus.len() {
            if self.vgpus[key].registered {
                self.stats(key);
            }
        }
    }

    fn run_turn(&mut self, key: usize, budget: u64) {
        let slice = self.sched.time_slice().0;
        assert!(self.vgpus[key].registered, "ran vGPU {key}, unregistered");
        assert!(self.vgpus[key].backlog > 0, "ran vGPU {key}, no work");
        assert!((1..=slice).contains(&budget), "budget {budget}");
        let now = self.now;
        let vgpu = &mut self.vgpus[key];
        if let Some(since) = vgpu.waiting_since.take() {
            vgpu.waits.push(now - since);
        }
        if let Some(since) = vgpu.has_work_since.take() {
            vgpu.max_gap = vgpu.max_gap.max(now - since);
        }
        let used = self.used(key, budget);
        let vgpu = &mut self.vgpus[key];
        vgpu.max_overrun = vgpu.max_overrun.max(used.saturating_sub(budget));
        if let Work::Alternate { .. } = vgpu.work {
            vgpu.backlog = 0;
        } else if vgpu.backlog != u64::MAX {
            vgpu.backlog -= used;
        }
        let end = self.now + used;
        // Work that arrives for the others while this turn runs is told to
        // the scheduler at its time.
        while let Some(at) = self.next_arrival().filter(|&at| at <= end) {
            self.deliver_arrivals(at);
        }
        self.now = end;
        self.call_at(end);
        let still_runnable = self.vgpus[key].backlog > 0;
        self.sched
            .finish(key, still_runnable, Nanos(end))
            .expect("the turn was granted");
        if still_runnable {
            self.vgpus[key].has_work_since = Some(end);
        } else {
            // Done: the next submission comes after the client's pause.
            let pause = match self.vgpus[key].work {
                Work::Think { max_think, .. } => Some(self.random() % (max_think + 1)),
                Work::Alternate { sleep, .. } => Some(sleep),
                _ => None,
            };
            if let Some(pause) = pause {
                self.vgpus[key].next_arrival = Some(end + pause);
            }
        }
    }

    /// How long a turn with `budget` runs, by the work model.
    fn used(&mut self, key: usize, budget: u64) -> u64 {
        match self.vgpus[key].work {
            Work::Flood { chunk } | Work::Alternate { chunk, .. } => {
                let mut used = 0;
                while used < budget {
                    used += 1 + self.random() % chunk;
                }
                used
            }
            Work::Overrun { num, den } => budget * num / den,
            Work::Periodic { cost, .. } | Work::Think { cost, .. } => {
                // Whole commands: at least one, as many as start within the
                // budget.
                let commands = budget.div_ceil(cost);
                self.vgpus[key].backlog.min(commands * cost)
            }
            Work::Idle => unreachable!("an idle vGPU never runs"),
        }
    }

    fn next_arrival(&self) -> Option<u64> {
        self.vgpus
            .iter()
            .filter(|vgpu| vgpu.registered)
            .filter_map(|vgpu| vgpu.next_arrival)
            .min()
    }

    fn any_backlog(&self) -> bool {
        self.vgpus
            .iter()
            .any(|vgpu| vgpu.registered && vgpu.backlog > 0)
    }

    /// Hands the scheduler every submission due by `at`.
    fn deliver_arrivals(&mut self, at: u64) {
        for key in 0..self.vgpus.len() {
            let vgpu = &mut self.vgpus[key];
            while vgpu.registered && vgpu.next_arrival.is_some_and(|due| due <= at) {
                let due = vgpu.next_arrival.unwrap_or(at);
                let (cost, next) = match vgpu.work {
                    Work::Periodic { period, cost, .. } => (cost, Some(due + period)),
                    // The next is set when this one is done.
                    Work::Think { cost, .. } => (cost, None),
                    Work::Alternate { .. } => (u64::MAX, None),
                    Work::Flood { .. } | Work::Overrun { .. } | Work::Idle => break,
                };
                vgpu.next_arrival = next;
                let had_work = vgpu.backlog > 0;
                vgpu.backlog = vgpu.backlog.saturating_add(cost);
                if !had_work {
                    vgpu.waiting_since = Some(due);
                    vgpu.has_work_since = Some(due);
                    self.sched_clock = self.sched_clock.max(due);
                    self.sched
                        .set_runnable(key, true, Nanos(due))
                        .expect("registered");
                }
            }
        }
    }

    fn call_at(&mut self, at: u64) {
        assert!(at >= self.sched_clock, "the simulation's time went back");
        self.sched_clock = at;
    }

    /// splitmix64: deterministic chunk lengths.
    fn random(&mut self) -> u64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}
