//! [`EngineScheduler`]: one physical GPU engine's schedule.
//!
//! Terms (`docs/scheduling.md` is the contract):
//!
//! - *Credit*: engine time a vGPU has earned at its share's rate, less the
//!   engine time it has used. Every registered vGPU earns, with work or
//!   without; the one that runs pays for its turn as it runs, overruns
//!   included. A vGPU with no work keeps at most one slice of credit: what
//!   it earns beyond that is lost under the share policies (nobody else
//!   gets it) and goes to the vGPUs with work under best-effort.
//! - *Ready*: has work, holds no turn and has credit ≥ 0 (is within its
//!   share). Only a ready vGPU starts a turn. Under best-effort, when
//!   vGPUs have work but none is ready, they are all credited what the
//!   least indebted owes (work conservation: nobody else claims the time).
//! - *Woken*: ready since it got work (having had none), and has not had a
//!   turn since. Woken vGPUs go first, in the order they got work; then
//!   the other ready ones, in the order they became ready (round robin).
//! - A *turn* is what one `Run` decision grants: one slice, stopped at the
//!   first preemption boundary after it, or earlier when the work is done.
//!
//! Credit is kept in units of 1/W ns, W the registered vGPUs' total weight,
//! so that earning `weight` units per ns is exact; the units are rescaled
//! when W changes.
//!
//! Cost: every call is O(N) in the registered vGPUs (a linear scan; N is a
//! few dozen per GPU), allocation-free except `register`.

use std::num::NonZeroU32;

use super::{Decision, Nanos, SchedError, SchedStats, SchedulingPolicy, TimeSlice};

/// What one registered vGPU is doing, for its counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Activity {
    Running,
    Waiting,
    Idle,
}

/// The scheduler's record of one registered vGPU.
#[derive(Clone, Debug)]
struct Vgpu<K> {
    key: K,
    /// Its weight under fixed-share; 1 under the other policies.
    weight: u64,
    /// Whether it has work (the caller says so).
    runnable: bool,
    /// Credit, in units of 1/W ns (W: `EngineScheduler::total_weight`).
    credit: i128,
    /// Since when it has been ready (has work, credit ≥ 0, no turn); `None`
    /// when it is not ready. Stamped with the time its credit reached 0,
    /// not the time the scheduler noticed.
    ready_since: Option<u64>,
    /// Ready since it got work, with no turn since.
    woken: bool,
    /// Counters settled up to `since`.
    stats: SchedStats,
    /// When `stats` was last brought up to date.
    since: u64,
}

/// The turn in progress.
#[derive(Clone, Copy, Debug)]
struct Turn {
    /// Index of the vGPU that holds the engine, in `vgpus`.
    owner: usize,
    /// When its budget is spent.
    end: u64,
    /// When the caller last said, during the turn, that the owner has work
    /// (a doorbell the turn may not have seen), unless it said since that
    /// the work blocked.
    work_arrived: Option<u64>,
}

/// The schedule of one physical GPU's engine: which vGPU runs next, and for
/// how long. `K` names a vGPU (the daemon's index or UUID).
///
/// Pure bookkeeping: no threads, no clock. The runner passes the time of
/// every call (`now`), which must not go backwards; an earlier `now` than
/// one seen before is taken as the latest one seen. No sequence of calls
/// panics: a call that makes no sense is refused with a [`SchedError`].
///
/// It does no locking of its own (it is `Send` and `Sync` when `K` is):
/// the caller keeps it in the GPU's mutex, held only for these O(N)
/// updates, never while the engine runs.
#[derive(Clone, Debug)]
pub struct EngineScheduler<K> {
    policy: SchedulingPolicy,
    slice: u64,
    /// Registered vGPUs in registration order: the ring that breaks ties.
    vgpus: Vec<Vgpu<K>>,
    /// Sum of the registered vGPUs' weights: the unit of credit is 1/W ns.
    total_weight: u64,
    /// Ring index where tie-breaks start: just after the last turn's
    /// owner. Taken modulo the ring's length when used.
    next_up: usize,
    /// Latest time seen; credit and counters are up to it.
    clock: u64,
    turn: Option<Turn>,
}

impl<K: Copy + Eq> EngineScheduler<K> {
    /// An engine with no vGPUs, under `policy`, with turns of `slice`.
    pub fn new(policy: SchedulingPolicy, slice: TimeSlice) -> Self {
        Self {
            policy,
            slice: slice.nanos().0,
            vgpus: Vec::new(),
            total_weight: 0,
            next_up: 0,
            clock: 0,
            turn: None,
        }
    }

    /// The policy it was built with.
    pub fn policy(&self) -> SchedulingPolicy {
        self.policy
    }

    /// The time slice it was built with.
    pub fn time_slice(&self) -> Nanos {
        Nanos(self.slice)
    }

    /// Adds a vGPU (a client attached) at `now`, with no work and no
    /// credit: it is owed nothing for the time before it existed and owes
    /// nothing. `weight` counts only under fixed-share. Its counters start
    /// at zero.
    pub fn register(&mut self, key: K, weight: NonZeroU32, now: Nanos) -> Result<(), SchedError> {
        self.tick(now);
        if self.position(key).is_some() {
            return Err(SchedError::AlreadyRegistered);
        }
        let weight = match self.policy {
            SchedulingPolicy::FixedShare => u64::from(weight.get()),
            SchedulingPolicy::BestEffort | SchedulingPolicy::EqualShare => 1,
        };
        self.rescale(self.total_weight.saturating_add(weight));
        self.vgpus.push(Vgpu {
            key,
            weight,
            runnable: false,
            credit: 0,
            ready_since: None,
            woken: false,
            stats: SchedStats::default(),
            since: self.clock,
        });
        Ok(())
    }

    /// Removes a vGPU (its client detached) at `now` and returns its final
    /// counters. A turn it holds ends here: the runner must stop its work
    /// and need not call `finish` (which would be refused).
    pub fn unregister(&mut self, key: K, now: Nanos) -> Result<SchedStats, SchedError> {
        self.tick(now);
        let index = self.position(key).ok_or(SchedError::NotRegistered)?;
        self.settle(index);
        if let Some(turn) = &mut self.turn {
            if turn.owner == index {
                self.turn = None;
            } else if turn.owner > index {
                turn.owner -= 1;
            }
        }
        if self.next_up > index {
            self.next_up -= 1;
        }
        let gone = self.vgpus.remove(index);
        self.rescale(self.total_weight.saturating_sub(gone.weight));
        Ok(gone.stats)
    }

    /// Says whether a vGPU has work, from `now`. The runner calls it when
    /// work arrives for a vGPU (and when a vGPU's work blocks outside its
    /// turn); at the end of a turn `finish` says it instead. Saying again
    /// what it already said changes nothing: a vGPU that has work is not
    /// woken again by more.
    ///
    /// Work said to arrive during the vGPU's own turn is work the turn may
    /// have missed (it came after the engine last looked): if `finish` then
    /// says the vGPU has none, it still has this, as if it arrived then.
    pub fn set_runnable(&mut self, key: K, runnable: bool, now: Nanos) -> Result<(), SchedError> {
        self.tick(now);
        let index = self.position(key).ok_or(SchedError::NotRegistered)?;
        self.settle(index);
        let clock = self.clock;
        if let Some(turn) = self.turn.as_mut().filter(|turn| turn.owner == index) {
            turn.work_arrived = runnable.then_some(clock);
            return Ok(());
        }
        let vgpu = &mut self.vgpus[index];
        if vgpu.runnable == runnable {
            return Ok(());
        }
        vgpu.runnable = runnable;
        // Got work within its share: woken. Over it (credit < 0), it
        // becomes ready, and not woken, when its credit reaches 0.
        let ready = runnable && vgpu.credit >= 0;
        vgpu.ready_since = ready.then_some(clock);
        vgpu.woken = ready;
        if !runnable {
            self.cap_idle(index);
        }
        Ok(())
    }

    /// What the engine does next, from `now`.
    ///
    /// While a turn is in progress it grants that turn again with the budget
    /// left (0 once the budget is spent), so calling it twice is harmless.
    pub fn next(&mut self, now: Nanos) -> Decision<K> {
        self.tick(now);
        if let Some(turn) = self.turn {
            return Decision::Run {
                key: self.vgpus[turn.owner].key,
                budget: Nanos(turn.end.saturating_sub(self.clock)),
            };
        }
        if self.policy == SchedulingPolicy::BestEffort {
            self.forgive();
        }
        if let Some(index) = self.select() {
            return self.start_turn(index);
        }
        // Nobody has work, or (share policies) everyone with work owes
        // credit: idle until the first of them has paid it back (each earns
        // `weight` units a ns), unless work arrives first.
        let until = self
            .vgpus
            .iter()
            .filter(|vgpu| vgpu.runnable)
            .map(|vgpu| {
                let owed = vgpu.credit.saturating_neg().max(1);
                let weight = i128::from(vgpu.weight);
                let ns = owed.saturating_add(weight - 1) / weight;
                self.clock
                    .saturating_add(u64::try_from(ns).unwrap_or(u64::MAX))
            })
            .min();
        Decision::Idle {
            until: until.map(Nanos),
        }
    }

    /// The turn that `next` granted `key` ended at `now`; `still_runnable`
    /// says whether the vGPU has more work. The turn ran from the `next`
    /// that granted it to `now`: the scheduler takes no separate duration,
    /// so that no two clocks can disagree about where time went.
    pub fn finish(&mut self, key: K, still_runnable: bool, now: Nanos) -> Result<(), SchedError> {
        self.tick(now);
        let index = self.position(key).ok_or(SchedError::NotRegistered)?;
        let Some(turn) = self.turn.filter(|turn| turn.owner == index) else {
            return Err(SchedError::NoTurn);
        };
        self.settle(index);
        self.turn = None;
        let clock = self.clock;
        let vgpu = &mut self.vgpus[index];
        let overrun = clock.saturating_sub(turn.end);
        vgpu.stats.overrun_ns = vgpu.stats.overrun_ns.saturating_add(overrun);
        // Work said to arrive during the turn, which the engine may have
        // missed: it got work then (at worst its next turn finds none and
        // ends at once).
        let arrived = turn.work_arrived.filter(|_| !still_runnable);
        let runnable = still_runnable || arrived.is_some();
        vgpu.runnable = runnable;
        vgpu.woken = arrived.is_some() && vgpu.credit >= 0;
        // Still within its share, it queues again behind the vGPUs already
        // ready (or, woken, ahead of them); otherwise it is ready when its
        // credit reaches 0.
        vgpu.ready_since = (runnable && vgpu.credit >= 0).then(|| arrived.unwrap_or(clock));
        if !runnable {
            self.cap_idle(index);
        }
        Ok(())
    }

    /// `key`'s counters up to `now`: time passes to `now` first, so that
    /// run, wait and idle add up to the whole time since it registered.
    pub fn stats_at(&mut self, key: K, now: Nanos) -> Option<SchedStats> {
        self.tick(now);
        self.stats(key)
    }

    /// A vGPU's counters, up to the latest time the scheduler was given;
    /// `None` if it is not registered.
    pub fn stats(&self, key: K) -> Option<SchedStats> {
        let index = self.position(key)?;
        let mut stats = self.vgpus[index].stats;
        let pending = self.clock - self.vgpus[index].since;
        add(&mut stats, self.activity(index), pending);
        Some(stats)
    }

    /// A vGPU's credit in ns (negative: what it owes), for the tests.
    #[cfg(test)]
    pub(super) fn credit_ns(&self, key: K) -> Option<i128> {
        let vgpu = &self.vgpus[self.position(key)?];
        Some(vgpu.credit.div_euclid(i128::from(self.total_weight.max(1))))
    }

    fn position(&self, key: K) -> Option<usize> {
        self.vgpus.iter().position(|vgpu| vgpu.key == key)
    }

    /// Moves the clock to `now` (if later), crediting every vGPU for the
    /// time in between.
    fn tick(&mut self, now: Nanos) {
        if now.0 > self.clock {
            self.accrue(self.clock, now.0);
            self.clock = now.0;
        }
    }

    /// Credit for `from..to`, in which nothing changed: each vGPU earns
    /// `weight` units a ns (W units make a ns, so the weights' shares of
    /// the engine); the owner of the turn pays W units a ns; a vGPU with
    /// no work keeps at most a slice, and under best-effort what it cannot
    /// keep goes to the vGPUs with work.
    fn accrue(&mut self, from: u64, to: u64) {
        let dt = i128::from(to - from);
        let total = i128::from(self.total_weight);
        let cap = self.cap();
        let owner = self.turn.map(|turn| turn.owner);
        let mut excess: i128 = 0;
        for (index, vgpu) in self.vgpus.iter_mut().enumerate() {
            if !in_play(index, vgpu, owner) {
                let earned = vgpu
                    .credit
                    .saturating_add(dt.saturating_mul(i128::from(vgpu.weight)));
                vgpu.credit = earned.min(cap);
                excess = excess.saturating_add(earned - vgpu.credit);
            }
        }
        let (each, mut remainder) = self.split(excess);
        for (index, vgpu) in self.vgpus.iter_mut().enumerate() {
            if !in_play(index, vgpu, owner) {
                continue;
            }
            let mut gain = dt
                .saturating_mul(i128::from(vgpu.weight))
                .saturating_add(each)
                .saturating_add(std::mem::take(&mut remainder));
            if owner == Some(index) {
                gain = gain.saturating_sub(dt.saturating_mul(total));
            }
            let before = vgpu.credit;
            vgpu.credit = before.saturating_add(gain);
            if owner != Some(index) && vgpu.ready_since.is_none() && vgpu.credit >= 0 {
                // It earned at a steady rate over the stretch: it became
                // ready at the first ns by which it had earned what it owed.
                let at = if before >= 0 {
                    0
                } else {
                    before
                        .saturating_neg()
                        .checked_mul(dt)
                        .map_or(dt, |owed| owed.saturating_add(gain - 1) / gain)
                };
                let at = u64::try_from(at).map_or(to, |at| from.saturating_add(at).min(to));
                vgpu.ready_since = Some(at);
            }
        }
    }

    /// A vGPU that has just run out of work keeps at most a slice of
    /// credit, as if it had been capped all along.
    fn cap_idle(&mut self, index: usize) {
        let cap = self.cap();
        let vgpu = &mut self.vgpus[index];
        let excess = vgpu.credit.saturating_sub(cap);
        if excess <= 0 {
            return;
        }
        vgpu.credit = cap;
        let owner = self.turn.map(|turn| turn.owner);
        let (each, mut remainder) = self.split(excess);
        let clock = self.clock;
        for (index, vgpu) in self.vgpus.iter_mut().enumerate() {
            if in_play(index, vgpu, owner) {
                let gift = each.saturating_add(std::mem::take(&mut remainder));
                vgpu.credit = vgpu.credit.saturating_add(gift);
                if owner != Some(index) && vgpu.ready_since.is_none() && vgpu.credit >= 0 {
                    vgpu.ready_since = Some(clock);
                }
            }
        }
    }

    /// The most credit a vGPU with no work keeps: a slice, in units.
    fn cap(&self) -> i128 {
        i128::from(self.slice).saturating_mul(i128::from(self.total_weight))
    }

    /// How credit over the cap is shared among the vGPUs with work: each
    /// one's part, and the remainder that goes to the first, so that no
    /// unit is lost (best-effort); nothing (the share policies).
    fn split(&self, excess: i128) -> (i128, i128) {
        let owner = self.turn.map(|turn| turn.owner);
        let playing = (self.vgpus.iter().enumerate())
            .filter(|&(index, vgpu)| in_play(index, vgpu, owner))
            .count();
        let playing = i128::try_from(playing).unwrap_or(i128::MAX);
        match self.policy {
            SchedulingPolicy::BestEffort if playing > 0 => (excess / playing, excess % playing),
            SchedulingPolicy::BestEffort
            | SchedulingPolicy::EqualShare
            | SchedulingPolicy::FixedShare => (0, 0),
        }
    }

    /// Brings every credit to the units of a new total weight (credit in
    /// ns is unchanged, but for rounding down by less than a unit).
    fn rescale(&mut self, total: u64) {
        let (old, new) = (i128::from(self.total_weight), i128::from(total));
        if old > 0 && new != old {
            for vgpu in &mut self.vgpus {
                vgpu.credit = vgpu.credit.saturating_mul(new).div_euclid(old);
            }
        }
        self.total_weight = total;
    }

    fn activity(&self, index: usize) -> Activity {
        match self.turn {
            Some(turn) if turn.owner == index => Activity::Running,
            _ if self.vgpus[index].runnable => Activity::Waiting,
            _ => Activity::Idle,
        }
    }

    /// Brings a vGPU's counters up to the clock. Called before anything
    /// that changes its activity, so each stretch of time is counted under
    /// the activity it had.
    fn settle(&mut self, index: usize) {
        let activity = self.activity(index);
        let vgpu = &mut self.vgpus[index];
        add(&mut vgpu.stats, activity, self.clock - vgpu.since);
        vgpu.since = self.clock;
    }

    /// Best-effort, with no turn in progress: if vGPUs have work but none
    /// is ready, credits them all with what the least indebted owes, so
    /// that it is ready. The engine time that nobody within their share
    /// claims goes to the vGPUs with work, equally, as they would have
    /// earned it had the others' shares been theirs; so the order among
    /// them is kept, and a vGPU that runs alone for long (its debt growing
    /// as idle vGPUs come and go and take their slice of credit with them)
    /// does not owe that time to a vGPU that gets work later.
    fn forgive(&mut self) {
        let runnable = || self.vgpus.iter().filter(|vgpu| vgpu.runnable);
        let Some(most) = runnable().map(|vgpu| vgpu.credit).max() else {
            return;
        };
        if most >= 0 {
            return;
        }
        let clock = self.clock;
        for vgpu in self.vgpus.iter_mut().filter(|vgpu| vgpu.runnable) {
            vgpu.credit = vgpu.credit.saturating_sub(most);
            if vgpu.credit >= 0 {
                vgpu.ready_since = Some(clock);
            }
        }
    }

    /// Who runs next, if anyone may: the woken vGPUs in the order they got
    /// work, then the ready ones in the order they became ready, ties going
    /// to the first in ring order after the last turn's owner.
    fn select(&self) -> Option<usize> {
        let len = self.vgpus.len();
        (0..len)
            .map(|step| (self.next_up + step) % len)
            .filter_map(|index| {
                let vgpu = &self.vgpus[index];
                if !vgpu.runnable || vgpu.credit < 0 {
                    return None;
                }
                let since = vgpu.ready_since.unwrap_or(self.clock);
                Some(((!vgpu.woken, since), index))
            })
            .reduce(|best, next| if next.0 < best.0 { next } else { best })
            .map(|(_, index)| index)
    }

    /// Grants `index` a turn of one slice from now.
    fn start_turn(&mut self, index: usize) -> Decision<K> {
        self.settle(index);
        let end = self.clock.saturating_add(self.slice);
        self.turn = Some(Turn {
            owner: index,
            end,
            work_arrived: None,
        });
        self.next_up = index + 1;
        let vgpu = &mut self.vgpus[index];
        vgpu.ready_since = None;
        vgpu.woken = false;
        vgpu.stats.turns = vgpu.stats.turns.saturating_add(1);
        Decision::Run {
            key: vgpu.key,
            budget: Nanos(end - self.clock),
        }
    }
}

/// Whether a vGPU has work or holds the engine: it is not capped, and under
/// best-effort it gets the credit those with no work cannot keep.
fn in_play<K>(index: usize, vgpu: &Vgpu<K>, owner: Option<usize>) -> bool {
    vgpu.runnable || owner == Some(index)
}

fn add(stats: &mut SchedStats, activity: Activity, ns: u64) {
    let counter = match activity {
        Activity::Running => &mut stats.run_ns,
        Activity::Waiting => &mut stats.wait_ns,
        Activity::Idle => &mut stats.idle_ns,
    };
    *counter = counter.saturating_add(ns);
}
