//! A bound on the system calls a client can make block.
//!
//! Some calls on a descriptor a client handed over can block for as long as
//! the client likes, however the daemon set the descriptor up: a write to
//! an eventfd blocks while its counter is at the maximum, and `O_NONBLOCK`,
//! which would make it fail instead, is a flag of the open file that the
//! client shares and may clear again at any moment. The one bound that
//! holds whatever the client does is an interruption: a thread runs such a
//! call through [`within_deadline`], and a watchdog thread that looks every
//! [`WATCH_PERIOD`] sends a thread it finds in the same call twice in a
//! row a real-time signal whose handler does nothing and is installed
//! without `SA_RESTART`, so the call returns `EINTR`. A call therefore
//! blocks for at most about two periods (10 ms; the call itself wakes a
//! sleeping watchdog); a call that does not block costs two atomic
//! increments and a load more than itself.
//!
//! The watchdog sleeps on a condition variable whenever no watched call has
//! been in progress for [`PARK_AFTER`] looks, and the next call to begin
//! wakes it (one futex wake, paid only by the first call after a quiet
//! spell): idle vGPUs, attached or not, cost no wake-ups at all.
//! [`interrupt`] sends the same signal to a given thread, for the daemon's
//! shutdown.

use std::io;
use std::ptr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// How often the watchdog looks for a blocked call while it is awake.
pub const WATCH_PERIOD: Duration = Duration::from_millis(5);
/// Looks that find no call in progress before the watchdog sleeps until
/// the next call begins.
pub const PARK_AFTER: u32 = 2;

/// Why a call could not be bounded or a thread signalled.
#[derive(Debug, thiserror::Error)]
pub enum DeadlineError {
    #[error("cannot install the handler of the deadline signal")]
    Handler(#[source] io::Error),
    #[error("cannot start the watchdog thread")]
    Watchdog(#[source] io::Error),
    #[error("cannot signal the thread")]
    Interrupt(#[source] io::Error),
}

/// The signal: the first real-time signal that glibc does not keep for
/// itself, plus a fixed offset (tokio and the standard library use none).
fn deadline_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

extern "C" fn do_nothing(_: libc::c_int) {
    // Being delivered is what interrupts the call.
}

/// Installs the do-nothing handler once per process.
fn install_handler() -> Result<(), DeadlineError> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        // SAFETY: `sigaction` is a plain-data C struct for which all zeroes
        // is a valid value (empty mask, no flags).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = do_nothing as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // No SA_RESTART: the interrupted call must return EINTR.
        action.sa_flags = 0;
        // SAFETY: `action` is initialised, the handler is async-signal-safe
        // (it does nothing), and no other part of the process uses this
        // signal.
        let rc = unsafe { libc::sigaction(deadline_signal(), &action, ptr::null_mut()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
        }
    });
    installed.map_err(|errno| DeadlineError::Handler(io::Error::from_raw_os_error(errno)))
}

/// One watched thread.
#[derive(Debug)]
struct Slot {
    thread: libc::pthread_t,
    /// Odd while the thread is in a watched call; goes up by one at each
    /// entry and exit, so two equal odd readings mean the same call.
    state: AtomicU64,
}

#[derive(Debug, Default)]
struct Watchdog {
    /// The watched threads; each removes its own slot before it exits, so
    /// a thread is never signalled after it is gone.
    slots: Mutex<Vec<Arc<Slot>>>,
    /// Set (under `slots`) while the watchdog waits for a call to begin.
    parked: AtomicBool,
    /// Wakes a parked watchdog.
    wake: Condvar,
}

impl Watchdog {
    fn get() -> Result<&'static Watchdog, DeadlineError> {
        static WATCHDOG: OnceLock<Result<&'static Watchdog, i32>> = OnceLock::new();
        let started = WATCHDOG.get_or_init(|| {
            let watchdog: &'static Watchdog = Box::leak(Box::default());
            std::thread::Builder::new()
                .name("vgpud-watchdog".into())
                .spawn(move || watchdog.run())
                .map(|_| watchdog)
                .map_err(|e| e.raw_os_error().unwrap_or(0))
        });
        started.map_err(|errno| DeadlineError::Watchdog(io::Error::from_raw_os_error(errno)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Arc<Slot>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn run(&self) {
        // What each slot read at the last look, by identity.
        let mut seen: Vec<(usize, u64)> = Vec::new();
        let mut quiet_looks = 0;
        loop {
            if quiet_looks >= PARK_AFTER {
                self.park();
                seen.clear();
                quiet_looks = 0;
            }
            std::thread::sleep(WATCH_PERIOD);
            let slots = self.lock();
            let now: Vec<(usize, u64)> = slots
                .iter()
                .map(|slot| {
                    (
                        Arc::as_ptr(slot) as usize,
                        slot.state.load(Ordering::SeqCst),
                    )
                })
                .collect();
            let mut in_call = false;
            for (slot, &(id, state)) in slots.iter().zip(&now) {
                if state % 2 == 0 {
                    continue;
                }
                in_call = true;
                if seen.contains(&(id, state)) {
                    // SAFETY: the thread removes its slot, under this
                    // lock, before it exits, so `slot.thread` names a live
                    // thread; the signal has a handler that does nothing.
                    unsafe { libc::pthread_kill(slot.thread, deadline_signal()) };
                }
            }
            quiet_looks = if in_call { 0 } else { quiet_looks + 1 };
            seen = now;
        }
    }

    /// Waits until a watched call begins. `parked` is set before the
    /// states are read and a caller sets its state before it reads
    /// `parked` (both sequentially consistent), so a call that began
    /// meanwhile is either seen here or wakes the watchdog.
    fn park(&self) {
        let mut slots = self.lock();
        self.parked.store(true, Ordering::SeqCst);
        if slots
            .iter()
            .any(|slot| slot.state.load(Ordering::SeqCst) % 2 == 1)
        {
            self.parked.store(false, Ordering::SeqCst);
            return;
        }
        while self.parked.load(Ordering::SeqCst) {
            slots = self.wake.wait(slots).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Called by a thread that has just begun a watched call.
    fn call_began(&self) {
        if self.parked.load(Ordering::SeqCst) {
            let _slots = self.lock();
            self.parked.store(false, Ordering::SeqCst);
            self.wake.notify_one();
        }
    }
}

/// Keeps this thread's slot in the watchdog's list until the thread exits.
struct Registration {
    slot: Arc<Slot>,
    watchdog: &'static Watchdog,
}

impl Registration {
    fn new() -> Result<Self, DeadlineError> {
        install_handler()?;
        let watchdog = Watchdog::get()?;
        let slot = Arc::new(Slot {
            // SAFETY: pthread_self has no preconditions.
            thread: unsafe { libc::pthread_self() },
            state: AtomicU64::new(0),
        });
        watchdog.lock().push(Arc::clone(&slot));
        Ok(Self { slot, watchdog })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.watchdog
            .lock()
            .retain(|slot| !Arc::ptr_eq(slot, &self.slot));
    }
}

thread_local! {
    static REGISTRATION: Result<Registration, DeadlineError> = Registration::new();
}

/// Runs `call`, a single system call on a client's descriptor that may
/// block, so that it is interrupted (and returns `EINTR`) if it has not
/// returned after two [`WATCH_PERIOD`]s. `call` must not retry on `EINTR`:
/// that is the deadline speaking. Fails, without running `call`, only if
/// the watchdog cannot be set up.
pub fn within_deadline<T>(call: impl FnOnce() -> T) -> Result<T, DeadlineError> {
    REGISTRATION.with(|registration| {
        let registration = registration.as_ref().map_err(clone_error)?;
        registration.slot.state.fetch_add(1, Ordering::SeqCst);
        registration.watchdog.call_began();
        let result = call();
        registration.slot.state.fetch_add(1, Ordering::Relaxed);
        Ok(result)
    })
}

fn clone_error(e: &DeadlineError) -> DeadlineError {
    let copy = |source: &io::Error| io::Error::new(source.kind(), source.to_string());
    match e {
        DeadlineError::Handler(source) => DeadlineError::Handler(copy(source)),
        DeadlineError::Watchdog(source) => DeadlineError::Watchdog(copy(source)),
        DeadlineError::Interrupt(source) => DeadlineError::Interrupt(copy(source)),
    }
}

/// Interrupts whatever blocking system call `thread` is in (it returns
/// `EINTR`); a thread that is in none takes the signal and goes on.
pub fn interrupt<T>(thread: &std::thread::JoinHandle<T>) -> Result<(), DeadlineError> {
    use std::os::unix::thread::JoinHandleExt;
    // Without the handler, the signal's default action would end the
    // process.
    install_handler()?;
    // SAFETY: the handle is not joined, so its pthread_t names a thread
    // whose resources are still held (even if it has finished); the signal
    // has a handler that does nothing.
    let rc = unsafe { libc::pthread_kill(thread.as_pthread_t(), deadline_signal()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(DeadlineError::Interrupt(io::Error::from_raw_os_error(rc)))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixStream;

    use super::*;

    fn read_one(socket: &UnixStream) -> rustix::io::Result<usize> {
        let mut buf = [0u8; 1];
        rustix::io::read(socket, &mut buf)
    }

    #[test]
    fn a_blocked_read_is_interrupted() {
        let (ours, _theirs) = UnixStream::pair().unwrap();
        let result = within_deadline(|| read_one(&ours)).unwrap();
        assert_eq!(result, Err(rustix::io::Errno::INTR));
    }

    #[test]
    fn calls_that_return_are_left_alone_and_so_is_the_thread_after_them() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        for _ in 0..3 {
            rustix::io::write(&theirs, &[1]).unwrap();
            assert_eq!(within_deadline(|| read_one(&ours)).unwrap(), Ok(1));
        }
        // A blocking read outside a watched call, well past a deadline,
        // ends with data, not EINTR.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(WATCH_PERIOD * 20);
            rustix::io::write(&theirs, &[2]).unwrap();
            theirs
        });
        assert_eq!(read_one(&ours), Ok(1));
        drop(writer.join().unwrap());
    }

    #[test]
    fn many_threads_are_watched_at_once() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let (ours, _theirs) = UnixStream::pair().unwrap();
                    within_deadline(|| read_one(&ours)).unwrap()
                })
            })
            .collect();
        for thread in threads {
            assert_eq!(thread.join().unwrap(), Err(rustix::io::Errno::INTR));
        }
    }

    #[test]
    fn another_thread_is_interrupted_out_of_a_blocked_call() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let blocked = std::thread::spawn(move || read_one(&ours));
        // Until the thread is in its read, a signal interrupts nothing:
        // keep sending until the read returns.
        while !blocked.is_finished() {
            interrupt(&blocked).unwrap();
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(blocked.join().unwrap(), Err(rustix::io::Errno::INTR));
        drop(theirs);
    }
}
