//! [`GpuEngine`]: the engine thread of one physical GPU and its scheduler.
//!
//! One thread per GPU runs every vGPU's channel work, a turn at a time, as
//! the [`EngineScheduler`] decides (docs/scheduling.md). A vGPU takes part
//! while it is powered on (a client attached); its doorbells mark it
//! runnable and wake the thread. When nobody has work the thread sleeps
//! on a condition variable: an idle GPU costs no wake-ups.
//!
//! Lock order: the runner's `state` is a leaf with respect to the vGPUs:
//! it is never held while a vGPU's locks are taken, and a vGPU takes it
//! (to notify) holding none of its own but `work`.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::sched::{Decision, EngineScheduler, Nanos, SchedStats, SchedulingPolicy, TimeSlice};
use crate::sync::lock;
use crate::vgpu::{TurnEnd, VirtualGpu};

/// The engine of one GPU. Dropping it stops and joins the thread.
#[derive(Debug)]
pub struct GpuEngine {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    watcher: Option<JoinHandle<()>>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the engine thread (new work, stop).
    wake: Condvar,
    /// Wakes the control-page watcher (stop).
    wake_watcher: Condvar,
    epoch: Instant,
}

/// How long the control-page watcher spins after it last saw a doorbell
/// (busy polling, yielding the CPU between looks).
pub const WATCH_SPIN: Duration = Duration::from_micros(200);
/// Until this long after the last doorbell it naps between looks for…
pub const WATCH_ACTIVE: Duration = Duration::from_millis(10);
/// …this long;
pub const WATCH_NAP: Duration = Duration::from_micros(50);
/// then it looks every this long…
pub const WATCH_IDLE_PERIOD: Duration = Duration::from_millis(4);
/// …until this long has passed without a doorbell,
pub const WATCH_QUIET: Duration = Duration::from_secs(1);
/// and from then on every this long.
pub const WATCH_QUIET_PERIOD: Duration = Duration::from_millis(10);

#[derive(Debug)]
struct State {
    scheduler: EngineScheduler<u32>,
    vgpus: HashMap<u32, Weak<VirtualGpu>>,
    /// vGPUs whose work all waits on semaphores, and when to look again.
    blocked: Vec<(u32, Nanos)>,
    /// Counts changes of the watched control pages, so that the watcher
    /// does not sleep through one that came while it looked.
    pages_epoch: u64,
    /// vGPUs given work since their turn began: a turn that found no work
    /// left must not mark them idle, since the work came after it looked.
    notified: Vec<u32>,
    next_key: u32,
    stop: bool,
}

/// How often the engine looks again at a vGPU whose work all waits on a
/// semaphore (the semaphore's memory changes without telling anyone).
pub const SEMAPHORE_POLL: Duration = Duration::from_micros(50);

impl Shared {
    fn now(&self) -> Nanos {
        Nanos(self.epoch.elapsed().as_nanos() as u64)
    }
}

/// A vGPU's place in its GPU's schedule; leaves it when dropped.
#[derive(Debug)]
pub struct EngineSlot {
    shared: Arc<Shared>,
    key: u32,
}

impl EngineSlot {
    /// Marks the vGPU runnable and wakes the engine.
    pub fn notify(&self) {
        let now = self.shared.now();
        let mut state = lock(&self.shared.state);
        let _ = state.scheduler.set_runnable(self.key, true, now);
        if !state.notified.contains(&self.key) {
            state.notified.push(self.key);
        }
        drop(state);
        self.shared.wake.notify_one();
    }

    /// The vGPU's engine time so far.
    pub fn stats(&self) -> Option<SchedStats> {
        let now = self.shared.now();
        lock(&self.shared.state).scheduler.stats_at(self.key, now)
    }

    /// The channels' control pages may have changed (one was enabled,
    /// moved or disabled): the watcher looks again now, and goes back to
    /// sleep for good if none is left to watch.
    pub fn wake_watcher(&self) {
        lock(&self.shared.state).pages_epoch += 1;
        self.shared.wake_watcher.notify_all();
    }

    /// Nanoseconds since the GPU's engine started: the engine timestamp.
    pub fn timestamp(&self) -> u64 {
        self.shared.now().0
    }
}

impl EngineSlot {
    /// Leaves the schedule now and returns the vGPU's final engine time;
    /// `None` if it had left already.
    pub fn leave(&self) -> Option<SchedStats> {
        let now = self.shared.now();
        let mut state = lock(&self.shared.state);
        state.vgpus.remove(&self.key);
        state.blocked.retain(|&(key, _)| key != self.key);
        state.notified.retain(|&key| key != self.key);
        state.scheduler.unregister(self.key, now).ok()
    }
}

impl Drop for EngineSlot {
    fn drop(&mut self) {
        self.leave();
    }
}

impl GpuEngine {
    /// Starts the engine thread of GPU `name`.
    pub fn start(name: &str, policy: SchedulingPolicy, slice: TimeSlice) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                scheduler: EngineScheduler::new(policy, slice),
                vgpus: HashMap::new(),
                blocked: Vec::new(),
                pages_epoch: 0,
                notified: Vec::new(),
                next_key: 0,
                stop: false,
            }),
            wake: Condvar::new(),
            wake_watcher: Condvar::new(),
            epoch: Instant::now(),
        });
        let thread_shared = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("engine-{name}"))
            .spawn(move || run(&thread_shared))?;
        let mut engine = Self {
            shared,
            thread: Some(thread),
            watcher: None,
        };
        let watch_shared = Arc::clone(&engine.shared);
        // On failure the engine thread is stopped by the drop of `engine`.
        engine.watcher = Some(
            std::thread::Builder::new()
                .name(format!("watch-{name}"))
                .spawn(move || watch(&watch_shared))?,
        );
        Ok(engine)
    }

    /// Adds `vgpu` to the schedule with `weight`.
    pub fn join(&self, vgpu: &Arc<VirtualGpu>, weight: NonZeroU32) -> EngineSlot {
        let now = self.shared.now();
        let mut state = lock(&self.shared.state);
        let key = state.next_key;
        state.next_key = state.next_key.wrapping_add(1);
        // Keys are fresh, so registration cannot collide.
        let _ = state.scheduler.register(key, weight, now);
        state.vgpus.insert(key, Arc::downgrade(vgpu));
        EngineSlot {
            shared: Arc::clone(&self.shared),
            key,
        }
    }
}

impl Drop for GpuEngine {
    fn drop(&mut self) {
        lock(&self.shared.state).stop = true;
        self.shared.wake.notify_all();
        self.shared.wake_watcher.notify_all();
        for thread in [self.thread.take(), self.watcher.take()]
            .into_iter()
            .flatten()
        {
            let _ = thread.join();
        }
    }
}

/// The engine loop: ask the scheduler, run the turn it grants, report it.
fn run(shared: &Shared) {
    let mut state = lock(&shared.state);
    loop {
        if state.stop {
            return;
        }
        let now = shared.now();
        // Blocked vGPUs whose time to look again has come are runnable.
        let State {
            scheduler, blocked, ..
        } = &mut *state;
        blocked.retain(|&(key, at)| {
            let due = at <= now;
            if due {
                let _ = scheduler.set_runnable(key, true, now);
            }
            !due
        });
        let recheck = state.blocked.iter().map(|&(_, at)| at).min();
        match state.scheduler.next(now) {
            Decision::Run { key, budget } => {
                let vgpu = state.vgpus.get(&key).and_then(Weak::upgrade);
                // Work given from here on is seen by this turn or by the
                // check after it.
                state.notified.retain(|&k| k != key);
                drop(state);
                let deadline = Instant::now() + Duration::from_nanos(budget.0);
                let end = vgpu.map_or(TurnEnd::Done, |v| v.run_engines(deadline));
                state = lock(&shared.state);
                let now = shared.now();
                // Work that came during the turn, after the vGPU looked for
                // the last time, keeps it runnable.
                let notified = state.notified.contains(&key);
                state.notified.retain(|&k| k != key);
                let runnable = end == TurnEnd::Preempted || notified;
                let _ = state.scheduler.finish(key, runnable, now);
                if end == TurnEnd::Blocked && state.vgpus.contains_key(&key) {
                    let at = Nanos(now.0 + SEMAPHORE_POLL.as_nanos() as u64);
                    state.blocked.push((key, at));
                }
            }
            Decision::Idle { until } => {
                let until = match (until, recheck) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                state = match until {
                    None => shared.wake.wait(state).unwrap_or_else(|e| e.into_inner()),
                    Some(until) => {
                        let wait = Duration::from_nanos(until.0.saturating_sub(now.0));
                        shared
                            .wake
                            .wait_timeout(state, wait)
                            .unwrap_or_else(|e| e.into_inner())
                            .0
                    }
                };
            }
        }
    }
}

/// The control-page watcher: looks at the PUT word of every running
/// channel's control page (docs/device-interface.md, "Channels"), and
/// rings the doorbell of each one that moved. It spins for
/// [`WATCH_SPIN`] after a doorbell, naps [`WATCH_NAP`] between looks
/// until [`WATCH_ACTIVE`] has passed without one, then looks every
/// [`WATCH_IDLE_PERIOD`], and after [`WATCH_QUIET`] every
/// [`WATCH_QUIET_PERIOD`]. While no running channel of the GPU has an
/// enabled page it sleeps until a register write changes that
/// ([`EngineSlot::wake_watcher`]): an idle GPU costs it no wake-ups.
fn watch(shared: &Shared) {
    let mut last_doorbell: Option<Instant> = None;
    let mut vgpus = Vec::new();
    loop {
        let epoch = {
            let state = lock(&shared.state);
            if state.stop {
                return;
            }
            vgpus.clear();
            vgpus.extend(state.vgpus.values().filter_map(Weak::upgrade));
            state.pages_epoch
        };
        let mut rang = false;
        let mut watched = false;
        for vgpu in vgpus.drain(..) {
            let look = vgpu.poll_control_pages();
            rang |= look.rang;
            watched |= look.watched;
        }
        let now = Instant::now();
        if rang {
            last_doorbell = Some(now);
        }
        let quiet = last_doorbell.map_or(Duration::MAX, |t| now.duration_since(t));
        if watched && quiet < WATCH_SPIN {
            std::thread::yield_now();
            continue;
        }
        let pause = if !watched {
            None
        } else if quiet < WATCH_ACTIVE {
            Some(WATCH_NAP)
        } else if quiet < WATCH_QUIET {
            Some(WATCH_IDLE_PERIOD)
        } else {
            Some(WATCH_QUIET_PERIOD)
        };
        let state = lock(&shared.state);
        if state.stop {
            return;
        }
        if state.pages_epoch != epoch {
            // The pages changed while they were looked at: look again.
            continue;
        }
        drop(match pause {
            None => shared
                .wake_watcher
                .wait(state)
                .unwrap_or_else(|e| e.into_inner()),
            Some(pause) => {
                shared
                    .wake_watcher
                    .wait_timeout(state, pause)
                    .unwrap_or_else(|e| e.into_inner())
                    .0
            }
        });
    }
}
