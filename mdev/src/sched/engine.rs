//! [`EngineScheduler`]: one physical GPU engine's schedule.
//!
//! Terms (`docs/scheduling.md` is the contract):
//!
//! - A *slot* is a stretch of engine time owned by one vGPU: at most one
//!   time slice, less the overrun its previous slot left unpaid.
//!   Best-effort opens a slot only for a vGPU with work, and the slot ends
//!   with its turn. The share policies give every registered vGPU its slots
//!   whether it has work or not; a slot lasts until its end, and the engine
//!   idles through whatever part of it the owner has no work for.
//! - A *turn* is what one `Run` decision grants: the owner's work holds the
//!   engine from `next` to `finish`. A share slot may hold several turns.
//! - *Debt* is how far the owner's last turn ran past the end of its slot
//!   (the engine preempts only at chunk boundaries). The next slot is
//!   shorter by the debt; a debt of a whole slice or more skips whole slots.
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
    /// Its weight under fixed-share; 1 under the other policies, where
    /// weights do not count.
    weight: u64,
    /// Whether it has work (the caller says so).
    runnable: bool,
    /// Slots it was given (share policies), counted from a start that keeps
    /// it level with the others when it registered: its share tag.
    slots: u64,
    /// Overrun not yet paid back, in ns.
    debt: u64,
    /// Counters settled up to `since`.
    stats: SchedStats,
    /// When `stats` was last brought up to date.
    since: u64,
}

/// The slot the engine is in.
#[derive(Clone, Copy, Debug)]
struct Slot {
    /// Index of the owner in `vgpus`.
    owner: usize,
    /// When the slot's time is up.
    end: u64,
    /// When the owner's turn in progress began, if one is.
    turn_start: Option<u64>,
}

/// A share tag, `slots / weight`, kept as a fraction so that comparisons
/// are exact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Tag {
    slots: u64,
    weight: u64,
}

impl Tag {
    /// `self < other`, by cross-multiplication (u64 × u64 fits in u128).
    fn is_before(self, other: Tag) -> bool {
        u128::from(self.slots) * u128::from(other.weight)
            < u128::from(other.slots) * u128::from(self.weight)
    }
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
    /// Registered vGPUs in registration order: the round-robin ring.
    vgpus: Vec<Vgpu<K>>,
    /// Ring index where the next round-robin scan (and the share policies'
    /// tie-break) starts: just after the last slot's owner. Taken modulo
    /// the ring's length when used.
    next_up: usize,
    /// Latest time seen.
    clock: u64,
    slot: Option<Slot>,
}

impl<K: Copy + Eq> EngineScheduler<K> {
    /// An engine with no vGPUs, under `policy`, with turns of `slice`.
    pub fn new(policy: SchedulingPolicy, slice: TimeSlice) -> Self {
        Self {
            policy,
            slice: slice.nanos().0,
            vgpus: Vec::new(),
            next_up: 0,
            clock: 0,
            slot: None,
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

    /// Adds a vGPU (a client attached) at `now`, with no work. `weight`
    /// counts only under fixed-share. Its counters start at zero.
    pub fn register(&mut self, key: K, weight: NonZeroU32, now: Nanos) -> Result<(), SchedError> {
        self.tick(now);
        if self.position(key).is_some() {
            return Err(SchedError::AlreadyRegistered);
        }
        let weight = match self.policy {
            SchedulingPolicy::FixedShare => u64::from(weight.get()),
            SchedulingPolicy::BestEffort | SchedulingPolicy::EqualShare => 1,
        };
        // Level with the earliest next slot of those registered: it is owed
        // nothing for the time before it existed (it does not go ahead of
        // vGPUs whose turn has come), and owes nothing (it joins the
        // current round rather than waiting for the next).
        let level = self
            .vgpus
            .iter()
            .map(|vgpu| Tag {
                slots: vgpu.slots,
                weight: vgpu.weight,
            })
            .reduce(|a, b| if b.is_before(a) { b } else { a })
            .unwrap_or(Tag {
                slots: 0,
                weight: 1,
            });
        let slots = u128::from(level.slots) * u128::from(weight) / u128::from(level.weight);
        self.vgpus.push(Vgpu {
            key,
            weight,
            runnable: false,
            slots: u64::try_from(slots).unwrap_or(u64::MAX),
            debt: 0,
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
        if let Some(slot) = &mut self.slot {
            if slot.owner == index {
                self.slot = None;
            } else if slot.owner > index {
                slot.owner -= 1;
            }
        }
        if self.next_up > index {
            self.next_up -= 1;
        }
        Ok(self.vgpus.remove(index).stats)
    }

    /// Says whether a vGPU has work, from `now`. The runner calls it when
    /// work arrives for a vGPU (and when a vGPU's work blocks outside its
    /// turn); at the end of a turn `finish` says it instead.
    pub fn set_runnable(&mut self, key: K, runnable: bool, now: Nanos) -> Result<(), SchedError> {
        self.tick(now);
        let index = self.position(key).ok_or(SchedError::NotRegistered)?;
        self.settle(index);
        self.vgpus[index].runnable = runnable;
        Ok(())
    }

    /// What the engine does next, from `now`.
    ///
    /// While a turn is in progress it grants that turn again with the budget
    /// left (0 once the slot is over), so calling it twice is harmless.
    pub fn next(&mut self, now: Nanos) -> Decision<K> {
        self.tick(now);
        if let Some(slot) = self.slot {
            if slot.turn_start.is_some() {
                return Decision::Run {
                    key: self.vgpus[slot.owner].key,
                    budget: Nanos(slot.end.saturating_sub(self.clock)),
                };
            }
            // Only share slots outlive their turns.
            if self.clock < slot.end {
                if self.vgpus[slot.owner].runnable {
                    return self.start_turn();
                }
                return Decision::Idle {
                    until: Some(Nanos(slot.end)),
                };
            }
            self.slot = None;
        }
        let selected = match self.policy {
            SchedulingPolicy::BestEffort => self.select_round_robin(),
            SchedulingPolicy::EqualShare | SchedulingPolicy::FixedShare => self.select_by_share(),
        };
        let Some(owner) = selected else {
            // Nobody has work: nothing to run and, under the share policies,
            // no slot to keep for anyone. The schedule pauses until work
            // arrives, so an idle GPU costs the runner no wake-ups.
            return Decision::Idle { until: None };
        };
        let vgpu = &mut self.vgpus[owner];
        // Under a slice after selection, so the budget is at least 1 ns.
        let budget = self.slice.saturating_sub(vgpu.debt);
        vgpu.debt = 0;
        let runnable = vgpu.runnable;
        let end = self.clock.saturating_add(budget);
        self.slot = Some(Slot {
            owner,
            end,
            turn_start: None,
        });
        self.next_up = owner + 1;
        if runnable {
            self.start_turn()
        } else {
            Decision::Idle {
                until: Some(Nanos(end)),
            }
        }
    }

    /// The turn that `next` granted `key` ended at `now`; `still_runnable`
    /// says whether the vGPU has more work. The turn ran from the `next`
    /// that granted it to `now`: the scheduler takes no separate duration,
    /// so that no two clocks can disagree about where time went.
    pub fn finish(&mut self, key: K, still_runnable: bool, now: Nanos) -> Result<(), SchedError> {
        self.tick(now);
        let index = self.position(key).ok_or(SchedError::NotRegistered)?;
        let Some(slot) = self
            .slot
            .filter(|slot| slot.owner == index && slot.turn_start.is_some())
        else {
            return Err(SchedError::NoTurn);
        };
        self.settle(index);
        let vgpu = &mut self.vgpus[index];
        vgpu.runnable = still_runnable;
        if self.clock >= slot.end || self.policy == SchedulingPolicy::BestEffort {
            let overrun = self.clock.saturating_sub(slot.end);
            vgpu.debt = vgpu.debt.saturating_add(overrun);
            vgpu.stats.overrun_ns = vgpu.stats.overrun_ns.saturating_add(overrun);
            self.slot = None;
        } else {
            // A share slot is its owner's to its end: the rest idles unless
            // the owner has work again before then.
            self.slot = Some(Slot {
                turn_start: None,
                ..slot
            });
        }
        Ok(())
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

    fn position(&self, key: K) -> Option<usize> {
        self.vgpus.iter().position(|vgpu| vgpu.key == key)
    }

    fn tick(&mut self, now: Nanos) {
        self.clock = self.clock.max(now.0);
    }

    fn activity(&self, index: usize) -> Activity {
        match self.slot {
            Some(Slot {
                owner,
                turn_start: Some(_),
                ..
            }) if owner == index => Activity::Running,
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

    /// Grants the open slot's owner a turn from now to the slot's end.
    fn start_turn(&mut self) -> Decision<K> {
        let Some(slot) = self.slot else {
            return Decision::Idle { until: None };
        };
        self.settle(slot.owner);
        self.slot = Some(Slot {
            turn_start: Some(self.clock),
            ..slot
        });
        let vgpu = &mut self.vgpus[slot.owner];
        vgpu.stats.turns = vgpu.stats.turns.saturating_add(1);
        Decision::Run {
            key: vgpu.key,
            budget: Nanos(slot.end.saturating_sub(self.clock)),
        }
    }

    /// Best-effort: the first vGPU with work after the last one served,
    /// passing over (once per round) any whose debt is a whole slice or
    /// more, which pays a slice of it.
    fn select_round_robin(&mut self) -> Option<usize> {
        let len = self.vgpus.len();
        if !self.vgpus.iter().any(|vgpu| vgpu.runnable) {
            return None;
        }
        let slice = self.slice;
        for round in 0..2 {
            for step in 0..len {
                let index = (self.next_up + step) % len;
                let vgpu = &mut self.vgpus[index];
                if !vgpu.runnable {
                    continue;
                }
                if vgpu.debt >= slice {
                    vgpu.debt -= slice;
                    continue;
                }
                return Some(index);
            }
            if round == 0 {
                // Everyone with work was passed over: skip, in one step, the
                // further rounds in which all of them would be passed over
                // again. Afterwards the least indebted owes less than a
                // slice, so the second scan finds someone.
                let rounds = self
                    .vgpus
                    .iter()
                    .filter(|vgpu| vgpu.runnable)
                    .map(|vgpu| vgpu.debt / slice)
                    .min()
                    .unwrap_or(0);
                for vgpu in self.vgpus.iter_mut().filter(|vgpu| vgpu.runnable) {
                    vgpu.debt -= rounds * slice;
                }
            }
        }
        None
    }

    /// Share policies: the registered vGPU whose next slot finishes first
    /// on its share (least `(slots + 1) / weight`), ties going to the first
    /// in ring order after the last owner. `None` when nobody has work.
    fn select_by_share(&mut self) -> Option<usize> {
        if !self.vgpus.iter().any(|vgpu| vgpu.runnable) {
            return None;
        }
        let len = self.vgpus.len();
        // Ends: each pass either returns or brings one vGPU's debt under a
        // slice, which nothing in here raises again.
        loop {
            let mut best: Option<(usize, Tag)> = None;
            for step in 0..len {
                let index = (self.next_up + step) % len;
                let vgpu = &self.vgpus[index];
                let finish = Tag {
                    slots: vgpu.slots.saturating_add(1),
                    weight: vgpu.weight,
                };
                if best.is_none_or(|(_, best)| finish.is_before(best)) {
                    best = Some((index, finish));
                }
            }
            let (index, _) = best?;
            let slice = self.slice;
            let vgpu = &mut self.vgpus[index];
            if vgpu.debt >= slice {
                // Its slots until the debt is under a slice are zero long:
                // take them all at once.
                let skipped = vgpu.debt / slice;
                vgpu.slots = vgpu.slots.saturating_add(skipped);
                vgpu.debt -= skipped * slice;
                continue;
            }
            vgpu.slots = vgpu.slots.saturating_add(1);
            return Some(index);
        }
    }
}

fn add(stats: &mut SchedStats, activity: Activity, ns: u64) {
    let counter = match activity {
        Activity::Running => &mut stats.run_ns,
        Activity::Waiting => &mut stats.wait_ns,
        Activity::Idle => &mut stats.idle_ns,
    };
    *counter = counter.saturating_add(ns);
}
