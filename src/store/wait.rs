//! Waiting for a lock another process holds. flock has no timeout, and the
//! host's signals (sshd's `SIGALRM`) are not ours to use, so a waiter
//! watches the lock files with inotify: a holder closes its lock file when
//! it is done, which wakes every waiter at once, and each wait is bounded
//! by the time left. Without inotify (a per-user limit reached), the waiter
//! polls every millisecond.

use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::Duration;

use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// The longest single wait: bounds the cost of a close that happened
/// between a failed try and the watch.
const MAX_STEP: Duration = Duration::from_millis(50);
/// The step of a waiter without inotify.
const POLL_STEP: Duration = Duration::from_millis(1);

/// Wakes when one of the watched lock files is closed.
pub(super) struct Waiter {
    inotify: Option<Inotify>,
}

impl Waiter {
    /// Watches `paths` (the lock files, which exist) for a close.
    pub(super) fn watch(paths: &[PathBuf]) -> Waiter {
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .ok()
            .filter(|inotify| {
                paths.iter().all(|p| {
                    inotify
                        .add_watch(p.as_path(), AddWatchFlags::IN_CLOSE)
                        .is_ok()
                })
            });
        Waiter { inotify }
    }

    /// Sleeps until a watched file is closed, or `left` (at most
    /// `MAX_STEP`) has passed.
    pub(super) fn wait(&self, left: Duration) {
        match &self.inotify {
            Some(inotify) => {
                let step = left.min(MAX_STEP).max(Duration::from_millis(1));
                let ms = u16::try_from(step.as_millis()).unwrap_or(u16::MAX);
                let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
                if poll(&mut fds, ms).is_ok_and(|ready| ready > 0) {
                    // Drained so the next wait sleeps again; what was closed
                    // does not matter, the caller tries every lock.
                    let _ = inotify.read_events();
                }
            }
            None => std::thread::sleep(left.min(POLL_STEP)),
        }
    }
}
