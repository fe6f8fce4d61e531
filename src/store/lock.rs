//! Exclusive locks in a [`TrustedDir`] with a bounded wait: one user's
//! lock (`lock`) and a counting semaphore of lock files (`lock_any`).
//!
//! `flock` has no timeout, and the host's signals (sshd's `SIGALRM`) are
//! not ours to use, so a waiter never blocks in `flock` itself. A user's
//! lock is handed over instead through a FIFO next to it (`.<lock>.wake`,
//! made 0600 by the first waiter, never removed): waiters open it for
//! reading and sleep in `epoll_wait` with `EPOLLEXCLUSIVE`, and a holder,
//! once it has let go, writes one byte to it, which wakes one waiter (the
//! kernel picks). Nothing is written when nobody waits: opening a FIFO for
//! writing without a reader fails (`ENXIO`), and a pipe's bytes go when its
//! last user closes it, so no stale wake-ups pile up. A waiter opens the
//! FIFO before it tries the lock again, so a holder that let go meanwhile
//! is seen by that try; a holder that died (or a version of this module
//! that does not write) is seen within `WAKE_FALLBACK`.
//!
//! Why not simpler: polling every 250 µs (the way before) kept fifteen
//! waiters of a burst of sixteen logins waking 4,000 times a second each on
//! two cores, and the lock sat free for 130 µs on average between holders;
//! waking every waiter (inotify on the lock file) let the woken crowd out
//! the next holder. bench/README.md has the measurements.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg, OFlag, openat};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::stat::Mode;
use nix::unistd::mkfifoat;

use super::checks::{check_fifo, check_file, fd_metadata};
use super::{Access, StoreError, TrustedDir, errno_of, insecure, io_err};

/// How long a login waits for another process holding the same user's lock.
/// Bounded so a stuck process can never hang sshd (LoginGraceTime).
pub(super) const LOCK_WAIT: Duration = Duration::from_secs(3);
/// How often a waiter of `lock_any` (the argon2 slots, held for tens of
/// milliseconds) tries again.
const SLOT_RETRY: Duration = Duration::from_micros(250);
/// The longest a waiter for a user's lock sleeps without a wake-up before
/// it tries again: covers a holder that died holding it.
const WAKE_FALLBACK: Duration = Duration::from_millis(2);

/// A held exclusive lock. Dropping it lets go of the lock, then wakes one
/// process waiting for it (if any).
#[derive(Debug)]
pub struct LockGuard {
    lock: Option<Flock<OwnedFd>>,
    /// The directory (its own fd) and the FIFO name waiters listen on;
    /// `None` for `lock_any`'s slots, whose waiters poll.
    wake: Option<(File, String)>,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Unlocks and closes.
        drop(self.lock.take());
        if let Some((dir, fifo)) = self.wake.take() {
            wake_one(&dir, &fifo);
        }
    }
}

/// Writes one byte to the FIFO `fifo`, which wakes one waiter if any.
/// Opened for reading and writing: a write end alone could meet a FIFO
/// whose last reader just left (`EPIPE`, and `SIGPIPE` would kill the
/// host's process). With no waiter the byte goes when we close it. Best
/// effort: a waiter not woken tries again within `WAKE_FALLBACK`.
fn wake_one(dir: &File, fifo: &str) {
    let flags = OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    // ENOENT: nobody ever waited for this lock.
    let Ok(fd) = openat(dir, fifo, flags, Mode::empty()) else {
        return;
    };
    let file = File::from(fd);
    // Only ever a byte into a FIFO, even if something else took its name.
    if file.metadata().is_ok_and(|meta| meta.file_type().is_fifo()) {
        let _ = nix::unistd::write(&file, &[0]);
    }
}

impl TrustedDir<'_> {
    /// Takes the exclusive lock `name` (created 0600 if missing, never
    /// unlinked so every process locks the same inode), waiting a bounded
    /// time; the module comment says how a waiter is woken.
    pub fn lock(&self, name: &str) -> Result<LockGuard, StoreError> {
        let mut fd = self.open_lock(name)?;
        let fifo = format!(".{name}.wake");
        let dir = self
            .fd
            .try_clone()
            .map_err(|e| io_err(self.path, "dup", errno_of(&e)))?;
        let mut deadline = None;
        // Outer None: not listening yet; inner None: polling instead.
        let mut listener: Option<Option<Listener>> = None;
        loop {
            fd = match try_lock(fd) {
                Ok(Ok(lock)) => {
                    return Ok(LockGuard {
                        lock: Some(lock),
                        wake: Some((dir, fifo)),
                    });
                }
                Ok(Err(fd)) => fd,
                Err(e) => return Err(io_err(&self.child(name), "flock", e)),
            };
            let deadline = *deadline.get_or_insert_with(|| Instant::now() + LOCK_WAIT);
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::LockTimeout {
                    path: self.child(name),
                });
            }
            match &listener {
                // Listening from now on; the lock is tried again first.
                None => listener = Some(self.listen(&fifo)?),
                Some(Some(listening)) => listening.wait(left.min(WAKE_FALLBACK)),
                Some(None) => std::thread::sleep(left.min(SLOT_RETRY)),
            }
        }
    }

    /// Takes whichever of the exclusive locks `names` is free first (each
    /// created and checked like `lock`), waiting a bounded time for one:
    /// a counting semaphore of `names.len()` slots that a crashed holder
    /// releases with its fds. Waiters poll (a slot is held for tens of
    /// milliseconds).
    pub fn lock_any(&self, names: &[&str]) -> Result<LockGuard, StoreError> {
        let mut fds = Vec::with_capacity(names.len());
        for name in names {
            fds.push(Some(self.open_lock(name)?));
        }
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            for (slot, name) in fds.iter_mut().zip(names) {
                let Some(fd) = slot.take() else { continue };
                match try_lock(fd) {
                    Ok(Ok(lock)) => {
                        return Ok(LockGuard {
                            lock: Some(lock),
                            wake: None,
                        });
                    }
                    Ok(Err(back)) => *slot = Some(back),
                    Err(e) => return Err(io_err(&self.child(name), "flock", e)),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let first = names.first().copied().unwrap_or_default();
                return Err(StoreError::LockTimeout {
                    path: self.child(first),
                });
            }
            std::thread::sleep(left.min(SLOT_RETRY));
        }
    }

    /// Opens (creating 0600 if missing) and checks the lock file `name`.
    fn open_lock(&self, name: &str) -> Result<OwnedFd, StoreError> {
        let path = || self.child(name);
        let flags = OFlag::O_RDWR
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC;
        let fd = openat(&self.fd, name, flags, Mode::from_bits_truncate(0o600)).map_err(
            |e| match e {
                Errno::ELOOP => insecure(&path(), "is a symbolic link".into()),
                other => io_err(&path(), "open", other),
            },
        )?;
        let file = File::from(fd);
        check_file(path, &fd_metadata(&file, path)?, Access::Private)?;
        Ok(OwnedFd::from(file))
    }

    /// Checks the wake-up FIFO `fifo` of a lock (for `twofactor check`):
    /// a FIFO, ours, one link, no access for others.
    pub fn check_wake(&self, fifo: &str) -> Result<(), StoreError> {
        let path = || self.child(fifo);
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd =
            openat(&self.fd, fifo, flags, Mode::empty()).map_err(|e| io_err(&path(), "open", e))?;
        check_fifo(path, &fd_metadata(&File::from(fd), path)?)
    }

    /// Opens the FIFO `fifo` (made 0600 if missing) to be woken through it.
    /// Something unsafe in its place is an error like any file here; a
    /// file system that cannot make a FIFO leaves the waiter polling
    /// (`None`).
    fn listen(&self, fifo: &str) -> Result<Option<Listener>, StoreError> {
        let path = || self.child(fifo);
        match mkfifoat(&self.fd, fifo, Mode::from_bits_truncate(0o600)) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(_) => return Ok(None),
        }
        // Read and write: with no writer left a FIFO reports a hang-up,
        // and epoll_wait would return at once, again and again.
        let flags = OFlag::O_RDWR | OFlag::O_NONBLOCK | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = openat(&self.fd, fifo, flags, Mode::empty()).map_err(|e| match e {
            Errno::ELOOP => insecure(&path(), "is a symbolic link".into()),
            other => io_err(&path(), "open", other),
        })?;
        let file = File::from(fd);
        check_fifo(path, &fd_metadata(&file, path)?)?;
        let Ok(epoll) = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) else {
            return Ok(None);
        };
        let event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLEXCLUSIVE, 0);
        if epoll.add(file.as_fd(), event).is_err() {
            return Ok(None);
        }
        Ok(Some(Listener { fifo: file, epoll }))
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: the lock, or the fd back if it is taken.
fn try_lock(fd: OwnedFd) -> Result<Result<Flock<OwnedFd>, OwnedFd>, Errno> {
    match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Ok(lock)),
        Err((back, Errno::EWOULDBLOCK | Errno::EINTR)) => Ok(Err(back)),
        Err((_, e)) => Err(e),
    }
}

/// A waiter's end of a lock's FIFO.
struct Listener {
    fifo: File,
    epoll: Epoll,
}

impl Listener {
    /// Sleeps until a holder lets go (or `most` has passed), then takes
    /// the byte that woke it, if another waiter has not.
    fn wait(&self, most: Duration) {
        let millis = u16::try_from(most.as_millis().max(1)).unwrap_or(u16::MAX);
        let mut events = [EpollEvent::empty()];
        if let Ok(1) = self.epoll.wait(&mut events, EpollTimeout::from(millis)) {
            let _ = nix::unistd::read(&self.fifo, &mut [0u8; 1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::Dir;
    use super::super::testdir::scratch;
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A waiter takes the lock once its holder lets go; it waited on the
    /// lock's FIFO, made 0600, and the holder's wake-up was taken: nothing
    /// is left in the FIFO for a later waiter.
    #[test]
    fn a_waiter_takes_the_lock_when_its_holder_lets_go() {
        let path = scratch("lockwake");
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
        let held = dir.lock("u.lock").unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
        });
        let got = dir.lock("u.lock");
        releaser.join().unwrap();
        assert!(got.is_ok(), "{got:?}");
        let meta = std::fs::symlink_metadata(path.join(".u.lock.wake")).unwrap();
        assert!(meta.file_type().is_fifo());
        assert_eq!(meta.mode() & 0o7777, 0o600);
        drop(got);
        assert_eq!(unread_bytes(&path.join(".u.lock.wake")), 0);
    }

    /// Bytes waiting in the FIFO at `path` (read without blocking).
    fn unread_bytes(path: &std::path::Path) -> usize {
        use std::io::Read;
        use std::os::unix::fs::OpenOptionsExt;
        let mut fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap();
        let mut buf = [0u8; 64];
        match fifo.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => panic!("{e}"),
        }
    }

    /// A holder that never lets go: the waiter gives up after the bounded
    /// wait with `LockTimeout`, naming the lock.
    #[test]
    fn a_waiter_gives_up_after_the_bounded_wait() {
        let path = scratch("locktimeout");
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
        let _held = dir.lock("u.lock").unwrap();
        let started = Instant::now();
        let e = dir.lock("u.lock").unwrap_err();
        assert!(
            matches!(&e, StoreError::LockTimeout { path: p } if p.ends_with("u.lock")),
            "{e}"
        );
        assert!(started.elapsed() >= LOCK_WAIT, "{:?}", started.elapsed());
    }

    /// Something other than a FIFO of ours at the wake-up name: a waiter
    /// refuses it (as any unsafe file here), `check_wake` names it, and a
    /// holder's release never writes into it.
    #[test]
    fn an_unsafe_wake_up_fifo_is_refused_and_never_written() {
        let path = scratch("lockwake-unsafe");
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
        let fifo = path.join(".u.lock.wake");
        std::fs::write(&fifo, b"").unwrap();
        assert!(matches!(
            dir.check_wake(".u.lock.wake"),
            Err(StoreError::Insecure { .. })
        ));
        let held = dir.lock("u.lock").unwrap();
        assert!(matches!(
            dir.lock("u.lock"),
            Err(StoreError::Insecure { .. })
        ));
        drop(held);
        assert_eq!(std::fs::read(&fifo).unwrap(), b"", "not written to");
        std::fs::remove_file(&fifo).unwrap();
        std::os::unix::fs::symlink("/dev/null", &fifo).unwrap();
        let held = dir.lock("u.lock").unwrap();
        assert!(matches!(
            dir.lock("u.lock"),
            Err(StoreError::Insecure { .. })
        ));
        drop(held);
        assert!(matches!(
            dir.check_wake(".u.lock.wake"),
            Err(StoreError::Insecure { .. })
        ));
        std::fs::remove_file(&fifo).unwrap();
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o644)).unwrap();
        std::fs::set_permissions(&fifo, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .unwrap();
        assert!(matches!(
            dir.check_wake(".u.lock.wake"),
            Err(StoreError::Insecure { .. })
        ));
        std::fs::set_permissions(&fifo, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        dir.check_wake(".u.lock.wake").unwrap();
    }

    /// `lock_any` hands out each of its locks once: with all of them held
    /// the next taker gives up after the bounded wait; once one is
    /// released, that one is taken.
    #[test]
    fn lock_any_is_a_bounded_semaphore() {
        let path = scratch("lockany");
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
        let slots = ["s0.lock", "s1.lock", "s2.lock"];
        // Three takers get three different locks (flock on separate opens
        // of one file would conflict).
        let mut held: Vec<LockGuard> = (0..3).map(|_| dir.lock_any(&slots).unwrap()).collect();
        let started = Instant::now();
        assert!(matches!(
            dir.lock_any(&slots),
            Err(StoreError::LockTimeout { .. })
        ));
        assert!(started.elapsed() < Duration::from_secs(10));
        held.remove(1);
        let _again = dir.lock_any(&slots).unwrap();
        assert_eq!(held.len(), 2);
    }
}
