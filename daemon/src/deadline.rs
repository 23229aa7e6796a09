//! A bound on one blocking system call of the calling thread.
//!
//! Some calls on a descriptor a client handed over can block for as long as
//! the client likes, however the daemon set the descriptor up: a write to
//! an eventfd blocks while its counter is at the maximum, and `O_NONBLOCK`,
//! which would make it fail instead, is a flag of the open file description
//! that the client shares and may clear again at any moment. The one bound
//! that holds whatever the client does is an interruption: each thread that
//! makes such a call has a POSIX timer that sends *this* thread (not the
//! process) a real-time signal whose handler does nothing and is installed
//! without `SA_RESTART`, so the blocked call returns `EINTR`.
//!
//! The timer is armed just before the call, fires every `limit` until it is
//! disarmed just after the call, and a signal that fires in between is
//! taken on the way back from the disarm, never during a later call. The thread's timer is created on first use and
//! deleted when the thread exits.

use std::cell::RefCell;
use std::io;
use std::ptr;
use std::sync::OnceLock;
use std::time::Duration;

/// Why a deadline could not be armed.
#[derive(Debug, thiserror::Error)]
pub enum DeadlineError {
    #[error("cannot install the handler of the deadline signal")]
    Handler(#[source] io::Error),
    #[error("cannot create this thread's deadline timer")]
    Create(#[source] io::Error),
    #[error("cannot arm this thread's deadline timer")]
    Arm(#[source] io::Error),
}

/// The signal the timers send: the first real-time signal that glibc does
/// not keep for itself, plus a fixed offset (tokio and the standard library
/// use none).
fn deadline_signal() -> libc::c_int {
    libc::SIGRTMIN() + 3
}

extern "C" fn interrupt(_: libc::c_int) {
    // Nothing to do: being delivered is what interrupts the call.
}

/// Installs the do-nothing handler once per process.
fn install_handler() -> Result<(), DeadlineError> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let installed = INSTALLED.get_or_init(|| {
        // SAFETY: `sigaction` is a plain-data C struct for which all zeroes
        // is a valid value (empty mask, no flags).
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
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

/// This thread's timer, deleted with the thread.
struct ThreadTimer(libc::timer_t);

impl ThreadTimer {
    fn create() -> Result<Self, DeadlineError> {
        // SAFETY: `sigevent` is a plain-data C struct; all zeroes is valid.
        let mut event: libc::sigevent = unsafe { std::mem::zeroed() };
        event.sigev_notify = libc::SIGEV_THREAD_ID;
        event.sigev_signo = deadline_signal();
        event.sigev_notify_thread_id = rustix::thread::gettid().as_raw_nonzero().get();
        let mut timer: libc::timer_t = ptr::null_mut();
        // SAFETY: `event` is initialised and names this thread, which owns
        // the timer until `Drop` deletes it; `timer` is a valid out pointer.
        let rc = unsafe { libc::timer_create(libc::CLOCK_MONOTONIC, &mut event, &mut timer) };
        if rc == 0 {
            Ok(Self(timer))
        } else {
            Err(DeadlineError::Create(io::Error::last_os_error()))
        }
    }

    /// Arms the timer to fire after `every` and again every `every` until
    /// it is disarmed (zero). It repeats because a signal that lands just
    /// before the call enters the kernel interrupts nothing; the next one
    /// will.
    fn set(&self, every: Duration) -> io::Result<()> {
        let period = libc::timespec {
            tv_sec: every.as_secs().try_into().unwrap_or(libc::time_t::MAX),
            tv_nsec: every.subsec_nanos().into(),
        };
        let spec = libc::itimerspec {
            it_interval: period,
            it_value: period,
        };
        // SAFETY: `self.0` is a live timer of this process (deleted only in
        // `Drop`); `spec` is initialised; the old value is not asked for.
        let rc = unsafe { libc::timer_settime(self.0, 0, &spec, ptr::null_mut()) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }
}

impl Drop for ThreadTimer {
    fn drop(&mut self) {
        // SAFETY: `self.0` was created by `timer_create` and is deleted
        // exactly once, here.
        unsafe { libc::timer_delete(self.0) };
    }
}

thread_local! {
    static TIMER: RefCell<Option<ThreadTimer>> = const { RefCell::new(None) };
}

/// Runs `call`, a single system call that may block, so that it is
/// interrupted (and returns `EINTR`) if it has not returned after `limit`
/// (at most twice `limit` if the thread was preempted just before the
/// call).
/// `call` must not retry on `EINTR`: that is the deadline speaking.
pub fn within<T>(limit: Duration, call: impl FnOnce() -> T) -> Result<T, DeadlineError> {
    install_handler()?;
    TIMER.with(|cell| {
        let mut slot = cell.borrow_mut();
        let timer = match slot.as_mut() {
            Some(timer) => timer,
            None => slot.insert(ThreadTimer::create()?),
        };
        // A zero duration would disarm instead of firing at once.
        timer
            .set(limit.max(Duration::from_nanos(1)))
            .map_err(DeadlineError::Arm)?;
        let result = call();
        if let Err(e) = timer.set(Duration::ZERO) {
            // Cannot happen for a live timer; if it did, the one signal it
            // may still send only interrupts a call that retries on EINTR.
            tracing::debug!(error = %e, "cannot disarm the deadline timer");
        }
        Ok(result)
    })
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
        let result = within(Duration::from_millis(20), || read_one(&ours)).unwrap();
        assert_eq!(result, Err(rustix::io::Errno::INTR));
    }

    #[test]
    fn a_disarmed_timer_interrupts_nothing_later() {
        let (ours, theirs) = UnixStream::pair().unwrap();
        for _ in 0..3 {
            rustix::io::write(&theirs, &[1]).unwrap();
            let n = within(Duration::from_millis(20), || read_one(&ours)).unwrap();
            assert_eq!(n, Ok(1));
        }
        // A blocking read well past the old deadline ends with data, not
        // EINTR: the timer was disarmed after each call.
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            rustix::io::write(&theirs, &[2]).unwrap();
            theirs
        });
        assert_eq!(read_one(&ours), Ok(1));
        drop(writer.join().unwrap());
    }

    #[test]
    fn each_thread_has_its_own_timer() {
        let threads: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(|| {
                    let (ours, _theirs) = UnixStream::pair().unwrap();
                    within(Duration::from_millis(10), || read_one(&ours)).unwrap()
                })
            })
            .collect();
        for thread in threads {
            assert_eq!(thread.join().unwrap(), Err(rustix::io::Errno::INTR));
        }
    }
}
