//! The only module that touches the filesystem: trusted directories, secure
//! reads, per-user locks and atomic, durable replacement of files.
//!
//! Every rule here comes from the project's security rules: every directory
//! on the way from `/` is checked (a real directory, owner root or the
//! calling uid, not group/world writable; `checks::walk` says why checking
//! the ones above by path is safe), the last one on its open fd; files are
//! opened relative to it with
//! `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC` and checked on the open fd
//! (CVE-2024-22365: a FIFO must not hang us; CVE-2024-47191: no symlinks).
//!
//! Here: the errors, [`TrustedDir`] (read, lock, replace, remove, list)
//! and its lock guard. `checks`: the checks made on an open descriptor and
//! the walk from `/`. `named`: bounded reads and files an admin names on
//! the command line. `faults`: the hooks tests use to break a replace.

mod checks;
#[cfg(any(test, fuzzing))]
pub mod faults;
mod named;
#[cfg(test)]
pub(crate) mod testdir;

pub use checks::{check_executable, check_socket, read_path};
pub use named::{Named, read_at_most, read_named};

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{Flock, FlockArg, OFlag, RenameFlags, openat, renameat, renameat2};
use nix::sys::stat::{Mode, fstatat};
use nix::unistd::{UnlinkatFlags, fsync, unlinkat};
use zeroize::Zeroizing;

use checks::{check_file, fd_metadata};
use named::read_sized;

/// How long a login waits for another process holding the same user's lock.
/// Bounded so a stuck process can never hang sshd (LoginGraceTime).
const LOCK_WAIT: Duration = Duration::from_secs(3);
/// flock has no timeout and the host's signals (sshd's `SIGALRM`) are not
/// ours to use, so a waiter polls. The step is short because a holder keeps
/// a user's lock for about half a millisecond (its two fsyncs): waiting in
/// 10 ms steps made parallel logins of one user take about twice as long
/// (bench/results.md). Waking every waiter on each release (inotify on the
/// lock file) was tried and was slower still: on two cores the woken
/// waiters crowd out the next holder.
const LOCK_RETRY: Duration = Duration::from_micros(250);
/// Temp names tried past the first when one is taken (see `temp_name`).
const TEMP_ATTEMPTS: u32 = 8;

/// What went wrong in the store, with the path, so an admin can act on it.
#[derive(Debug)]
pub enum StoreError {
    /// A system call failed on this path.
    Io {
        path: PathBuf,
        op: &'static str,
        errno: Errno,
    },
    /// The path exists but is not safe to trust (owner, mode, type, links).
    Insecure { path: PathBuf, reason: String },
    /// The file is larger than any valid record could be.
    TooLarge { path: PathBuf, limit: u64 },
    /// Another process held the lock for longer than we wait.
    LockTimeout { path: PathBuf },
    /// The path is not absolute or has `..`/`.` components.
    BadPath { path: PathBuf },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Io { path, op, errno } => {
                write!(f, "{}: {op} failed: {}", path.display(), errno.desc())
            }
            StoreError::Insecure { path, reason } => write!(f, "{}: {reason}", path.display()),
            StoreError::TooLarge { path, limit } => write!(
                f,
                "{} is larger than {limit} bytes; it cannot be a valid file",
                path.display()
            ),
            StoreError::LockTimeout { path } => write!(
                f,
                "{} is locked by another process; gave up after {} ms",
                path.display(),
                LOCK_WAIT.as_millis()
            ),
            StoreError::BadPath { path } => write!(
                f,
                "{} must be an absolute path without '.' or '..' components",
                path.display()
            ),
        }
    }
}

impl std::error::Error for StoreError {}

/// The steps of `TrustedDir::replace`, where tests inject faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Creating the temp file.
    CreateTemp,
    /// Writing the temp file (a fault here leaves half the bytes written).
    Write,
    /// fsync of the temp file.
    FsyncFile,
    /// rename over the old file.
    Rename,
    /// fsync of the directory.
    FsyncDir,
}

impl Step {
    /// Every step, in order.
    pub const ALL: [Step; 5] = [
        Step::CreateTemp,
        Step::Write,
        Step::FsyncFile,
        Step::Rename,
        Step::FsyncDir,
    ];
}

/// A point where a test may inject a fault; nothing in a real build.
#[inline]
fn checkpoint(step: Step) -> Result<(), Errno> {
    #[cfg(any(test, fuzzing))]
    return faults::check(step);
    #[cfg(not(any(test, fuzzing)))]
    {
        let _ = step;
        Ok(())
    }
}

/// Which permission rule a file must meet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Secrets and state: no permission bits for group or others (0600).
    Private,
    /// Configuration: may be world-readable, never group/world-writable.
    Public,
}

/// Which permission rule the last directory of a path must meet; every
/// directory above it has a trusted owner and is not group/world-writable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// The state directory: no access for group or others (0700).
    Private,
    /// A directory of configuration or programs: may be world-readable.
    Public,
}

/// The errno of a failed std call (EIO if it carries none).
pub(crate) fn errno_of(e: &std::io::Error) -> Errno {
    e.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

fn io_err(path: &Path, op: &'static str, errno: Errno) -> StoreError {
    StoreError::Io {
        path: path.to_path_buf(),
        op,
        errno,
    }
}

fn insecure(path: &Path, reason: String) -> StoreError {
    StoreError::Insecure {
        path: path.to_path_buf(),
        reason,
    }
}

/// Temp files made by this process so far (see `temp_name`).
static TEMP_SERIAL: AtomicU32 = AtomicU32::new(0);

/// `.<name>.tmp-<pid>-<serial>`, in the same directory as `name` (rename is
/// atomic only within one). Unpredictable names are not needed: the
/// directory is root-only (0700, checked on every open), the temp file is
/// created with `O_EXCL | O_NOFOLLOW`, and pid + a per-process serial keep
/// live writers apart (threads of one host included). A leftover of a
/// crashed process whose pid came back only makes `O_EXCL` fail, and the
/// next serial is tried (`replace`).
fn temp_name(name: &str, pid: u32, serial: u32) -> String {
    format!(".{name}.tmp-{pid}-{serial}")
}

/// A directory we walked to from `/` without following links, every
/// component checked. Files are only ever reached relative to its fd.
#[derive(Debug)]
pub struct TrustedDir<'p> {
    fd: File,
    /// Borrowed from the caller (the config's `state_dir`), for messages.
    path: &'p Path,
}

impl<'p> TrustedDir<'p> {
    /// Opens `path`, every component checked on the way down (see
    /// `checks::walk`); `rule` is the one its last component must meet.
    pub fn open(path: &'p Path, rule: Dir) -> Result<TrustedDir<'p>, StoreError> {
        let fd = checks::walk(path, rule)?;
        Ok(TrustedDir { fd, path })
    }

    /// The directory's path, for messages.
    pub fn path(&self) -> &'p Path {
        self.path
    }

    fn child(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Reads `name` if it exists. The open fd must be a regular file with a
    /// trusted owner, one link, the `access` mode rule and at most `limit` bytes.
    pub fn read(
        &self,
        name: &str,
        access: Access,
        limit: u64,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
        Ok(self.read_kept(name, access, limit)?.map(|kept| kept.bytes))
    }

    /// Like `read`, and keeps the file open: its [`FileId`] then tells
    /// whether `name` is still this very file (`FileId::of`). Holding the
    /// fd keeps the inode from being reused while the caller waits.
    pub fn read_kept(
        &self,
        name: &str,
        access: Access,
        limit: u64,
    ) -> Result<Option<KeptFile>, StoreError> {
        // The full path is only built for a message.
        let path = || self.child(name);
        let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let fd = match openat(&self.fd, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => return Err(insecure(&path(), "is a symbolic link".into())),
            Err(e) => return Err(io_err(&path(), "open", e)),
        };
        let file = File::from(fd);
        let meta = fd_metadata(&file, path)?;
        check_file(path, &meta, access)?;
        let len = meta.size();
        if len > limit {
            return Err(StoreError::TooLarge {
                path: path(),
                limit,
            });
        }
        let id = FileId::from(&meta);
        let bytes = read_sized(&file, len, path)?;
        Ok(Some(KeptFile {
            bytes,
            id,
            _file: file,
        }))
    }

    /// The identity of whatever is at `name` now (not following a
    /// symlink), or `None` if nothing is.
    pub fn file_id(&self, name: &str) -> Result<Option<FileId>, StoreError> {
        match fstatat(&self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileId {
                dev: st.st_dev,
                ino: st.st_ino,
                size: st.st_size,
                ctime: (st.st_ctime, st.st_ctime_nsec),
            })),
            Err(Errno::ENOENT) => Ok(None),
            Err(e) => Err(io_err(&self.child(name), "stat", e)),
        }
    }

    /// Takes the exclusive lock `name` (created 0600 if missing, never
    /// unlinked so every process locks the same inode), waiting a bounded time.
    pub fn lock(&self, name: &str) -> Result<LockGuard, StoreError> {
        self.lock_any(&[name])
    }

    /// Takes whichever of the exclusive locks `names` is free first (each
    /// created and checked like `lock`), waiting a bounded time for one:
    /// a counting semaphore of `names.len()` slots that a crashed holder
    /// releases with its fds.
    pub fn lock_any(&self, names: &[&str]) -> Result<LockGuard, StoreError> {
        let mut fds = Vec::with_capacity(names.len());
        for name in names {
            fds.push(Some(self.open_lock(name)?));
        }
        let path = || self.child(names.first().copied().unwrap_or_default());
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            for (slot, name) in fds.iter_mut().zip(names) {
                let Some(fd) = slot.take() else { continue };
                match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
                    Ok(lock) => return Ok(LockGuard { _lock: lock }),
                    Err((back, Errno::EWOULDBLOCK | Errno::EINTR)) => *slot = Some(back),
                    Err((_, e)) => return Err(io_err(&self.child(name), "flock", e)),
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(StoreError::LockTimeout { path: path() });
            }
            std::thread::sleep(left.min(LOCK_RETRY));
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

    /// Atomically replaces `name` with `contents` and makes it durable:
    /// temp file (O_EXCL, 0600) in this directory, fsync, rename, fsync dir.
    /// On any failure the old file is intact and the temp file is removed.
    pub fn replace(&self, name: &str, contents: &[u8]) -> Result<(), StoreError> {
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let pid = std::process::id();
        let mut attempts = 0;
        let (fd, tmp_name) = loop {
            let tmp_name = temp_name(name, pid, TEMP_SERIAL.fetch_add(1, Ordering::Relaxed));
            let created = checkpoint(Step::CreateTemp).and_then(|()| {
                openat(
                    &self.fd,
                    tmp_name.as_str(),
                    flags,
                    Mode::from_bits_truncate(0o600),
                )
            });
            match created {
                Ok(fd) => break (fd, tmp_name),
                // A crashed process's leftover under a reused pid.
                Err(Errno::EEXIST) if attempts < TEMP_ATTEMPTS => attempts += 1,
                Err(e) => return Err(io_err(&self.child(&tmp_name), "create", e)),
            }
        };
        let result = self.finish_replace(fd, &tmp_name, name, contents);
        if result.is_err() {
            let _ = unlinkat(&self.fd, tmp_name.as_str(), UnlinkatFlags::NoRemoveDir);
        }
        result
    }

    fn finish_replace(
        &self,
        fd: OwnedFd,
        tmp_name: &str,
        name: &str,
        contents: &[u8],
    ) -> Result<(), StoreError> {
        let tmp_path = || self.child(tmp_name);
        let mut file = File::from(fd);
        // The umask may have removed bits, never added; make the mode exact.
        nix::sys::stat::fchmod(file.as_fd(), Mode::from_bits_truncate(0o600))
            .map_err(|e| io_err(&tmp_path(), "chmod", e))?;
        // Tests stop a write half-way (Step::Write); a real build writes
        // everything with one call.
        let half = if cfg!(any(test, fuzzing)) {
            contents.len() / 2
        } else {
            contents.len()
        };
        file.write_all(&contents[..half])
            .map_err(|e| io_err(&tmp_path(), "write", errno_of(&e)))?;
        checkpoint(Step::Write).map_err(|e| io_err(&tmp_path(), "write", e))?;
        file.write_all(&contents[half..])
            .map_err(|e| io_err(&tmp_path(), "write", errno_of(&e)))?;
        checkpoint(Step::FsyncFile)
            .and_then(|()| fsync(&file))
            .map_err(|e| io_err(&tmp_path(), "fsync", e))?;
        drop(file);
        checkpoint(Step::Rename)
            .and_then(|()| renameat(&self.fd, tmp_name, &self.fd, name))
            .map_err(|e| io_err(&self.child(name), "rename", e))?;
        checkpoint(Step::FsyncDir)
            .and_then(|()| fsync(&self.fd))
            .map_err(|e| io_err(self.path, "fsync", e))
    }

    /// Replaces `name` with `contents` as durably and atomically as
    /// [`replace`](Self::replace), without making or freeing a file:
    /// `contents` is written over `spare` (created 0600 the first time; it
    /// holds the version before last, which nothing reads), the spare is
    /// fsynced, the two names are swapped with `renameat2(RENAME_EXCHANGE)`
    /// and the directory is fsynced. A crash leaves `name` whole, old or
    /// new, as with `replace`. On ext4 this update costs a fraction of
    /// `replace`'s: a new inode, its allocation and the old one's release
    /// were most of a login's I/O (bench/results.md). Where the file
    /// system cannot swap names (EINVAL), and for the first version of
    /// `name`, the spare is renamed over it instead.
    pub fn replace_via_spare(
        &self,
        name: &str,
        spare: &str,
        contents: &[u8],
    ) -> Result<(), StoreError> {
        let spare_path = || self.child(spare);
        // O_NONBLOCK as for every open here: a FIFO in its place must not
        // hang the login (it is then refused as not a regular file).
        let flags = OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC;
        let fd = checkpoint(Step::CreateTemp)
            .and_then(|()| openat(&self.fd, spare, flags, Mode::from_bits_truncate(0o600)))
            .map_err(|e| match e {
                Errno::ELOOP => insecure(&spare_path(), "is a symbolic link".into()),
                other => io_err(&spare_path(), "open", other),
            })?;
        let mut file = File::from(fd);
        // Like every file here: ours, a regular file with one link.
        check_file(
            spare_path,
            &fd_metadata(&file, spare_path)?,
            Access::Private,
        )?;
        let half = if cfg!(any(test, fuzzing)) {
            contents.len() / 2
        } else {
            contents.len()
        };
        file.write_all(&contents[..half])
            .map_err(|e| io_err(&spare_path(), "write", errno_of(&e)))?;
        checkpoint(Step::Write).map_err(|e| io_err(&spare_path(), "write", e))?;
        file.write_all(&contents[half..])
            .and_then(|()| file.set_len(contents.len() as u64))
            .map_err(|e| io_err(&spare_path(), "write", errno_of(&e)))?;
        checkpoint(Step::FsyncFile)
            .and_then(|()| fsync(&file))
            .map_err(|e| io_err(&spare_path(), "fsync", e))?;
        drop(file);
        checkpoint(Step::Rename)
            .and_then(|()| {
                match renameat2(
                    &self.fd,
                    spare,
                    &self.fd,
                    name,
                    RenameFlags::RENAME_EXCHANGE,
                ) {
                    Err(Errno::ENOENT | Errno::EINVAL | Errno::ENOSYS) => {
                        renameat(&self.fd, spare, &self.fd, name)
                    }
                    done => done,
                }
            })
            .map_err(|e| io_err(&self.child(name), "rename", e))?;
        checkpoint(Step::FsyncDir)
            .and_then(|()| fsync(&self.fd))
            .map_err(|e| io_err(self.path, "fsync", e))
    }

    /// Removes `name` (missing is fine) and makes the removal durable.
    pub fn remove(&self, name: &str) -> Result<(), StoreError> {
        match unlinkat(&self.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(io_err(&self.child(name), "unlink", e)),
        }
        fsync(&self.fd).map_err(|e| io_err(self.path, "fsync", e))
    }

    /// Names of the entries in the directory (for `twofactor check`).
    pub fn entries(&self) -> Result<Vec<String>, StoreError> {
        let read =
            std::fs::read_dir(self.path).map_err(|e| io_err(self.path, "readdir", errno_of(&e)))?;
        let mut names: Vec<String> = read
            .filter_map(|entry| entry.ok())
            .map(|entry| lossy(entry.file_name().as_os_str()))
            .collect();
        names.sort();
        Ok(names)
    }
}

fn lossy(name: &OsStr) -> String {
    String::from_utf8_lossy(name.as_bytes()).into_owned()
}

/// Which file a name pointed to, and the last change to it: the same
/// device, inode, size and change time mean the same bytes (every write,
/// rename or chmod sets the change time).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileId {
    dev: u64,
    ino: u64,
    size: i64,
    ctime: (i64, i64),
}

impl From<&std::fs::Metadata> for FileId {
    fn from(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
            size: i64::try_from(meta.size()).unwrap_or(i64::MAX),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }
}

/// A file read by [`TrustedDir::read_kept`]: its bytes (wiped on drop), its
/// identity, and the open file that pins the inode.
#[derive(Debug)]
pub struct KeptFile {
    pub bytes: Zeroizing<Vec<u8>>,
    pub id: FileId,
    _file: File,
}

/// A held exclusive lock; released when dropped (the fd is closed).
#[derive(Debug)]
pub struct LockGuard {
    _lock: Flock<OwnedFd>,
}

#[cfg(test)]
mod tests {
    use super::testdir::scratch;
    use super::*;

    /// A waiter takes the lock once its holder lets go (woken by the
    /// holder's close, within the bounded wait).
    #[test]
    fn a_waiter_takes_the_lock_when_its_holder_lets_go() {
        let path = super::testdir::scratch("lockwake");
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
        let held = dir.lock("u.lock").unwrap();
        let releaser = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            drop(held);
        });
        let got = dir.lock("u.lock");
        releaser.join().unwrap();
        assert!(got.is_ok(), "{got:?}");
    }

    /// `file_id` tells a kept file from one renamed over it, from one
    /// rewritten in place with the same size, and from none at all.
    #[test]
    fn a_kept_file_is_told_from_any_change_at_its_name() {
        let path = super::testdir::scratch("fileid");
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
        dir.replace("f", b"one").unwrap();
        let kept = dir.read_kept("f", Access::Private, 64).unwrap().unwrap();
        assert_eq!(kept.bytes.as_slice(), b"one");
        assert_eq!(dir.file_id("f").unwrap(), Some(kept.id));
        dir.replace("f", b"two").unwrap();
        assert_ne!(dir.file_id("f").unwrap(), Some(kept.id));
        let kept = dir.read_kept("f", Access::Private, 64).unwrap().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(path.join("f"), b"owt").unwrap();
        assert_ne!(dir.file_id("f").unwrap(), Some(kept.id), "written in place");
        dir.remove("f").unwrap();
        assert_eq!(dir.file_id("f").unwrap(), None);
    }
    use std::os::unix::fs::MetadataExt;

    const NEW: &[u8] = b"version = 1\nfailures = 2\nrate_window_attempts = 7\n";

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
        let started = std::time::Instant::now();
        assert!(matches!(
            dir.lock_any(&slots),
            Err(StoreError::LockTimeout { .. })
        ));
        assert!(started.elapsed() < Duration::from_secs(10));
        held.remove(1);
        let _again = dir.lock_any(&slots).unwrap();
        assert_eq!(held.len(), 2);
    }

    /// A temp name taken by a leftover (a crashed writer whose pid came
    /// back) does not stop the replace; the leftover is left alone.
    #[test]
    fn leftover_temp_with_our_name_is_skipped() {
        let path = scratch("temp-taken");
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
        let next = TEMP_SERIAL.load(Ordering::Relaxed);
        let pid = std::process::id();
        // Leftovers under the next few serials this process would use.
        for serial in next..next + 3 {
            std::fs::write(path.join(temp_name("u.state", pid, serial)), b"old").unwrap();
        }
        dir.replace("u.state", NEW).unwrap();
        assert_eq!(std::fs::read(path.join("u.state")).unwrap(), NEW);
        let temps = std::fs::read_dir(&path)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp-")
            })
            .count();
        // The three leftovers, untouched; ours was renamed to u.state.
        assert_eq!(temps, 3);
    }

    /// A replaced file has the new contents, mode 0600 and no temp file beside it.
    #[test]
    fn replace_writes_new_contents_with_private_mode_and_no_temp_file() {
        let path = scratch("replace");
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
        dir.replace("alice.state", b"one").unwrap();
        dir.replace("alice.state", b"two").unwrap();
        let read = dir
            .read("alice.state", Access::Private, 100)
            .unwrap()
            .unwrap();
        assert_eq!(read.as_slice(), b"two");
        let meta = std::fs::metadata(path.join("alice.state")).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(dir.entries().unwrap(), vec!["alice.state".to_string()]);
        std::fs::remove_dir_all(path).unwrap();
    }

    /// A symlink where a record should be is refused, not followed.
    #[test]
    fn symlinked_file_is_refused() {
        let path = scratch("symlink");
        std::os::unix::fs::symlink("/etc/passwd", path.join("bob.secret")).unwrap();
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
        let err = dir
            .read("bob.secret", Access::Private, 1 << 16)
            .unwrap_err();
        assert!(matches!(err, StoreError::Insecure { .. }), "{err}");
        std::fs::remove_dir_all(path).unwrap();
    }

    /// A file larger than the limit is refused before it is read.
    #[test]
    fn oversized_file_is_refused() {
        let path = scratch("large");
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
        dir.replace("dave.state", &[b'a'; 200]).unwrap();
        let err = dir.read("dave.state", Access::Private, 100).unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { limit: 100, .. }));
        std::fs::remove_dir_all(path).unwrap();
    }

    /// A missing file reads as None, not as an error.
    #[test]
    fn missing_file_reads_as_none() {
        let path = scratch("missing");
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
        assert!(
            dir.read("nobody.state", Access::Private, 10)
                .unwrap()
                .is_none()
        );
        std::fs::remove_dir_all(path).unwrap();
    }

    /// `replace_via_spare` makes the spare once, then only swaps names: the
    /// state and its spare keep their two inodes, the spare holds the
    /// version before, and a shorter version leaves no tail of the longer.
    #[test]
    fn replace_via_spare_swaps_two_files() {
        use std::os::unix::fs::MetadataExt;
        let path = scratch("spare-swap");
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
        let read = |name: &str| {
            dir.read(name, Access::Private, 100)
                .unwrap()
                .map(|b| b.to_vec())
        };
        let inode = |name: &str| std::fs::metadata(path.join(name)).unwrap().ino();
        dir.replace_via_spare("u.state", ".u.state.spare", b"first version")
            .unwrap();
        assert_eq!(read("u.state"), Some(b"first version".to_vec()));
        assert_eq!(read(".u.state.spare"), None, "renamed into place");
        dir.replace_via_spare("u.state", ".u.state.spare", b"second, longer version")
            .unwrap();
        assert_eq!(read(".u.state.spare"), Some(b"first version".to_vec()));
        let mut inodes = vec![inode("u.state"), inode(".u.state.spare")];
        inodes.sort_unstable();
        dir.replace_via_spare("u.state", ".u.state.spare", b"third")
            .unwrap();
        assert_eq!(read("u.state"), Some(b"third".to_vec()));
        assert_eq!(
            read(".u.state.spare"),
            Some(b"second, longer version".to_vec())
        );
        let mut now = vec![inode("u.state"), inode(".u.state.spare")];
        now.sort_unstable();
        assert_eq!(now, inodes, "no file made or freed");
        for name in ["u.state", ".u.state.spare"] {
            let mode = std::fs::metadata(path.join(name)).unwrap().mode() & 0o7777;
            assert_eq!(mode, 0o600, "{name}");
        }
        std::fs::remove_dir_all(path).unwrap();
    }

    /// A spare that is a symbolic link, or readable by others, is refused
    /// and the state stays as it was.
    #[test]
    fn an_unsafe_spare_is_refused() {
        let path = scratch("spare-unsafe");
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
        dir.replace_via_spare("u.state", ".u.state.spare", b"kept")
            .unwrap();
        std::os::unix::fs::symlink("/etc/hostname", path.join(".u.state.spare")).unwrap();
        let e = dir
            .replace_via_spare("u.state", ".u.state.spare", b"new")
            .unwrap_err();
        assert!(matches!(e, StoreError::Insecure { .. }), "{e}");
        std::fs::remove_file(path.join(".u.state.spare")).unwrap();
        std::fs::write(path.join(".u.state.spare"), b"x").unwrap();
        std::fs::set_permissions(
            path.join(".u.state.spare"),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
        let e = dir
            .replace_via_spare("u.state", ".u.state.spare", b"new")
            .unwrap_err();
        assert!(matches!(e, StoreError::Insecure { .. }), "{e}");
        assert_eq!(
            dir.read("u.state", Access::Private, 100)
                .unwrap()
                .map(|b| b.to_vec()),
            Some(b"kept".to_vec())
        );
        std::fs::remove_dir_all(path).unwrap();
    }
}
