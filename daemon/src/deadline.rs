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
//! blocks for at most two periods (10 ms); a call that
//! does not block costs two atomic increments more than itself.
//!
//! The watchdog only runs while some thread has made such a call and still
//! lives (a thread is watched from its first call until it exits), so an
//! idle daemon with no clients costs nothing. [`interrupt`] sends the same
//! signal to a given thread, for the daemon's shutdown.

use std::io;
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::Duration;

/// How often the watchdog looks for a blocked call.
pub const WATCH_PERIOD: Duration = Duration::from_millis(5);

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
    /// Wakes the watchdog when the first thread is watched.
    watched: Condvar,
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
        // What each slot read at the last look, by position; refreshed
        // whenever the set of slots changes under it.
        let mut seen: Vec<(usize, u64)> = Vec::new();
        loop {
            {
                let mut slots = self.lock();
                while slots.is_empty() {
                    seen.clear();
                    slots = self.watched.wait(slots).unwrap_or_else(|e| e.into_inner());
                }
            }
            std::thread::sleep(WATCH_PERIOD);
            let slots = self.lock();
            let now: Vec<(usize, u64)> = slots
                .iter()
                .map(|slot| {
                    (
                        Arc::as_ptr(slot) as usize,
                        slot.state.load(Ordering::Relaxed),
                    )
                })
                .collect();
            for (slot, &(id, state)) in slots.iter().zip(&now) {
                if state % 2 == 1 && seen.contains(&(id, state)) {
                    // SAFETY: the thread removes its slot, under this
                    // lock, before it exits, so `slot.thread` names a live
                    // thread; the signal has a handler that does nothing.
                    unsafe { libc::pthread_kill(slot.thread, deadline_signal()) };
                }
            }
            seen = now;
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
        watchdog.watched.notify_one();
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
        let slot = &registration.as_ref().map_err(clone_error)?.slot;
        slot.state.fetch_add(1, Ordering::Relaxed);
        let result = call();
        slot.state.fetch_add(1, Ordering::Relaxed);
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
