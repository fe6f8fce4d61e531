//! The only module that touches the filesystem: trusted directories, secure
//! reads, per-user locks and atomic, durable replacement of files.
//!
//! Every rule here comes from ../shared/SECURITY.md: each path component is
//! opened with `O_NOFOLLOW` relative to its parent and checked (owner root or
//! the calling uid, not group/world writable); files are opened with
//! `O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC` and checked on the open fd
//! (CVE-2024-22365: a FIFO must not hang us; CVE-2024-47191: no symlinks).

use std::ffi::OsStr;
use std::fmt;
use std::fs::{File, Metadata};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, Flock, FlockArg, OFlag, openat, renameat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, fsync, unlinkat};
use zeroize::Zeroizing;

/// How long a login waits for another process holding the same user's lock.
/// Bounded so a stuck process can never hang sshd (LoginGraceTime).
const LOCK_ATTEMPTS: u32 = 300;
const LOCK_RETRY: Duration = Duration::from_millis(10);
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
                u128::from(LOCK_ATTEMPTS) * LOCK_RETRY.as_millis()
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

/// Test-only fault injection (unit tests and `cargo fuzz`, never in the
/// shipped module): make one step of the next writes on this thread fail
/// with EIO, or abort the process there to simulate a crash.
#[cfg(any(test, fuzzing))]
pub mod faults {
    use std::cell::Cell;

    /// What happens at the chosen step.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Fault {
        /// The system call fails with EIO.
        Fail,
        /// The process aborts (a crash, power loss for the page cache aside).
        Abort,
    }

    thread_local! {
        static PLAN: Cell<Option<(super::Step, Fault)>> = const { Cell::new(None) };
    }

    /// Injects `fault` at `step` for every later write on this thread.
    pub fn inject(step: super::Step, fault: Fault) {
        PLAN.with(|p| p.set(Some((step, fault))));
    }

    /// Removes any injected fault.
    pub fn clear() {
        PLAN.with(|p| p.set(None));
    }

    pub(super) fn check(step: super::Step) -> Result<(), nix::errno::Errno> {
        match PLAN.with(Cell::get) {
            Some((s, Fault::Fail)) if s == step => Err(nix::errno::Errno::EIO),
            Some((s, Fault::Abort)) if s == step => std::process::abort(),
            _ => Ok(()),
        }
    }
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

/// The owner we trust: root, or the uid this process runs as (which lets
/// non-root callers such as tests use their own files, and nothing more).
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
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

/// Checks one directory's metadata: a directory, trusted owner, not
/// group/world writable; `private` also forbids any group/other access.
fn check_dir(path: &Path, meta: &Metadata, private: bool) -> Result<(), StoreError> {
    if !meta.is_dir() {
        return Err(insecure(path, "is not a directory".into()));
    }
    if !trusted_owner(meta.uid()) {
        return Err(insecure(
            path,
            format!(
                "is owned by uid {}; expected root (fix: chown root:root {})",
                meta.uid(),
                path.display()
            ),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(insecure(
            path,
            format!(
                "is group- or world-writable (mode {mode:04o}); fix: chmod go-w {}",
                path.display()
            ),
        ));
    }
    if private && mode & 0o077 != 0 {
        return Err(insecure(
            path,
            format!(
                "is accessible by group or others (mode {mode:04o}); expected 0700 (fix: chmod 0700 {})",
                path.display()
            ),
        ));
    }
    Ok(())
}

/// `fstat` of an open file: std asks the kernel about the descriptor
/// itself (statx with an empty path, or fstat), never a path that could
/// have been swapped since the open.
fn fd_metadata(file: &File, path: impl Fn() -> PathBuf) -> Result<Metadata, StoreError> {
    file.metadata()
        .map_err(|e| io_err(&path(), "fstat", errno_of(&e)))
}

/// Reads at most `limit` bytes from `reader` into a buffer sized once for
/// `limit + 1` bytes: `None` if there was more. The buffer never grows:
/// zeroize wipes only the allocation it has at drop, so a reallocation
/// while it fills would leave an unwiped copy of a secret behind.
pub fn read_at_most(reader: impl Read, limit: u64) -> std::io::Result<Option<Zeroizing<Vec<u8>>>> {
    let room = usize::try_from(limit)
        .ok()
        .and_then(|n| n.checked_add(1))
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::OutOfMemory))?;
    let mut buf = Zeroizing::new(Vec::with_capacity(room));
    reader.take(limit + 1).read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= limit).then_some(buf))
}

/// Reads the open `file` of `len` bytes (its fstat size): room for one byte
/// more and no more read, so a file that grew after fstat is refused.
fn read_sized(
    file: File,
    len: u64,
    path: impl Fn() -> PathBuf,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    match read_at_most(file, len) {
        Ok(Some(buf)) => Ok(buf),
        Ok(None) => Err(insecure(&path(), "grew while being read".into())),
        Err(e) => Err(io_err(&path(), "read", errno_of(&e))),
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
/// next serial is tried (`replace`). No random bytes are read per login.
fn temp_name(name: &str, pid: u32, serial: u32) -> String {
    format!(".{name}.tmp-{pid}-{serial}")
}

/// A directory we walked to from `/` without following links, every
/// component checked. Files are only ever reached relative to its fd.
#[derive(Debug)]
pub struct TrustedDir<'p> {
    fd: File,
    /// Borrowed from the caller (the config's `state_dir`): only messages
    /// use it, and a copy cost an allocation per open (two per login).
    path: &'p Path,
}

impl<'p> TrustedDir<'p> {
    /// Opens `path`; `private` requires the last component to be 0700-like.
    /// The walk splits the path's bytes itself: empty and `.` components
    /// are skipped, `..` is refused, and messages name the prefix walked.
    pub fn open(path: &'p Path, private: bool) -> Result<TrustedDir<'p>, StoreError> {
        let bytes = path.as_os_str().as_bytes();
        let bad = || StoreError::BadPath {
            path: path.to_path_buf(),
        };
        if bytes.first() != Some(&b'/') {
            return Err(bad());
        }
        // The part of `path` walked so far (`/` at first), for messages.
        let walked = |end: usize| Path::new(OsStr::from_bytes(&bytes[..end.max(1)]));
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let root = Path::new("/");
        let mut fd = File::from(
            openat(AT_FDCWD, root, flags, Mode::empty()).map_err(|e| io_err(root, "open", e))?,
        );
        // Each directory is checked once, on its open fd: every parent for
        // owner and write bits, the last one also for `private`.
        let mut end = 0;
        loop {
            let next = next_component(bytes, end).ok_or_else(bad)?;
            let here = walked(end);
            check_dir(
                here,
                &fd_metadata(&fd, || here.to_path_buf())?,
                private && next.is_none(),
            )?;
            let Some((start, stop)) = next else { break };
            end = stop;
            let name = OsStr::from_bytes(&bytes[start..stop]);
            fd = File::from(
                openat(&fd, name, flags, Mode::empty()).map_err(|e| match e {
                    Errno::ELOOP | Errno::ENOTDIR => {
                        insecure(walked(end), "is a symbolic link or not a directory".into())
                    }
                    other => io_err(walked(end), "open", other),
                })?,
            );
        }
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
        // The full path is only built for a message (not on every login).
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
        // Our files are replaced whole by rename, never written in place.
        read_sized(file, len, path).map(Some)
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
        for _ in 0..LOCK_ATTEMPTS {
            for (slot, name) in fds.iter_mut().zip(names) {
                let Some(fd) = slot.take() else { continue };
                match Flock::lock(fd, FlockArg::LockExclusiveNonblock) {
                    Ok(lock) => return Ok(LockGuard { _lock: lock }),
                    Err((back, Errno::EWOULDBLOCK | Errno::EINTR)) => *slot = Some(back),
                    Err((_, e)) => return Err(io_err(&self.child(name), "flock", e)),
                }
            }
            std::thread::sleep(LOCK_RETRY);
        }
        Err(StoreError::LockTimeout { path: path() })
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

/// The next component of an absolute path at or after `from`, as a byte
/// range: `Some(None)` at the end, `None` for a `..` (refused).
fn next_component(bytes: &[u8], mut from: usize) -> Option<Option<(usize, usize)>> {
    loop {
        while bytes.get(from) == Some(&b'/') {
            from += 1;
        }
        if from >= bytes.len() {
            return Some(None);
        }
        let stop = bytes[from..]
            .iter()
            .position(|&c| c == b'/')
            .map_or(bytes.len(), |k| from + k);
        match &bytes[from..stop] {
            b"." => from = stop,
            b".." => return None,
            _ => return Some(Some((from, stop))),
        }
    }
}

fn lossy(name: &OsStr) -> String {
    String::from_utf8_lossy(name.as_bytes()).into_owned()
}

/// Checks an opened file: regular, trusted owner, one link, mode rule.
/// `make_path` gives the file's path, only needed for a message.
fn check_file(
    make_path: impl Fn() -> PathBuf,
    meta: &Metadata,
    access: Access,
) -> Result<(), StoreError> {
    if !meta.is_file() {
        return Err(insecure(
            &make_path(),
            "is not a regular file (FIFO, device, directory or socket)".into(),
        ));
    }
    check_owner_and_mode(make_path, meta, access)
}

/// The owner, link-count and mode rules of [`check_file`], for any type.
fn check_owner_and_mode(
    make_path: impl Fn() -> PathBuf,
    meta: &Metadata,
    access: Access,
) -> Result<(), StoreError> {
    if !trusted_owner(meta.uid()) {
        let path = make_path();
        return Err(insecure(
            &path,
            format!(
                "is owned by uid {}; expected root (fix: chown root:root {})",
                meta.uid(),
                path.display()
            ),
        ));
    }
    if meta.nlink() != 1 {
        return Err(insecure(
            &make_path(),
            format!("has {} hard links; expected exactly 1", meta.nlink()),
        ));
    }
    let mode = meta.mode() & 0o7777;
    let (forbidden, want) = match access {
        Access::Private => (0o077, "0600"),
        Access::Public => (0o022, "0644 or stricter"),
    };
    if mode & forbidden != 0 {
        let path = make_path();
        return Err(insecure(
            &path,
            format!(
                "has mode {mode:04o}; expected {want} (fix: chmod {} {})",
                if access == Access::Private {
                    "0600"
                } else {
                    "go-w"
                },
                path.display()
            ),
        ));
    }
    Ok(())
}

/// Reads a file given by absolute path (the config file): its directory is
/// walked and checked like the state directory, minus the 0700 rule.
pub fn read_path(
    path: &Path,
    access: Access,
    limit: u64,
) -> Result<Option<Zeroizing<Vec<u8>>>, StoreError> {
    // Split at the last `/` by hand (std's `parent`/`file_name` parse the
    // whole path twice); a trailing `/` names no file and is refused.
    let bytes = path.as_os_str().as_bytes();
    let bad = || StoreError::BadPath {
        path: path.to_path_buf(),
    };
    let at = bytes.iter().rposition(|&c| c == b'/').ok_or_else(bad)?;
    let name = std::str::from_utf8(&bytes[at + 1..]).map_err(|_| bad())?;
    if name.is_empty() || name == "." || name == ".." {
        return Err(bad());
    }
    let parent = Path::new(OsStr::from_bytes(&bytes[..at.max(1)]));
    let dir = match TrustedDir::open(parent, false) {
        Ok(dir) => dir,
        // A missing parent means a missing file; anything else is an error.
        Err(StoreError::Io {
            errno: Errno::ENOENT,
            ..
        }) => return Ok(None),
        Err(e) => return Err(e),
    };
    dir.read(name, access, limit)
}

/// What a file named on the admin command line must be besides a regular
/// file of bounded size (see [`read_named`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Named {
    /// A file to import from (a user's `~/.google_authenticator`, a pam_oath
    /// users file): any owner and mode.
    Import,
    /// A seed (`enroll --secret-file`): the rules of a secret in the store —
    /// owned by root (or the caller), one link, nothing for group or others.
    Seed,
}

/// Reads a file named on the admin command line, possibly in a directory
/// another user controls (`~/.google_authenticator`). The path is opened
/// once, without following a symlink there and without blocking
/// (`O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC`); then the open fd is
/// checked — a regular file of at most `limit` bytes, and `rule` — and read.
/// Nothing is looked up by path twice, so a symlink, FIFO or device swapped
/// in fails fast instead of reading another file or hanging root's command
/// (CVE-2024-22365, CVE-2024-47191). Only the last component is refused as a
/// symlink: the directories above are the admin's choice of path.
pub fn read_named(path: &Path, rule: Named, limit: u64) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let flags = OFlag::O_RDONLY
        | OFlag::O_NOFOLLOW
        | OFlag::O_NONBLOCK
        | OFlag::O_NOCTTY
        | OFlag::O_CLOEXEC;
    let fd = openat(AT_FDCWD, path, flags, Mode::empty()).map_err(|e| match e {
        Errno::ELOOP => insecure(path, "is a symbolic link; name the file itself".into()),
        // open(2) of a socket.
        Errno::ENXIO => insecure(path, "is not a regular file".into()),
        other => io_err(path, "open", other),
    })?;
    let file = File::from(fd);
    let make_path = || path.to_path_buf();
    let meta = fd_metadata(&file, make_path)?;
    match rule {
        Named::Seed => check_file(make_path, &meta, Access::Private)?,
        Named::Import if !meta.is_file() => {
            return Err(insecure(
                path,
                "is not a regular file (FIFO, device, directory or socket)".into(),
            ));
        }
        Named::Import => {}
    }
    if meta.size() > limit {
        return Err(StoreError::TooLarge {
            path: make_path(),
            limit,
        });
    }
    read_sized(file, meta.size(), make_path)
}

/// Checks a program the delivery service runs (`[delivery] command`):
/// every directory from `/` trusted, a regular root-owned (or
/// caller-owned) file, not group/world-writable, executable.
pub fn check_executable(path: &Path) -> Result<(), StoreError> {
    let meta = stat_in_trusted_dir(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    check_file(|| path.to_path_buf(), &meta, Access::Public)?;
    if meta.mode() & 0o111 == 0 {
        return Err(insecure(path, "is not executable".into()));
    }
    Ok(())
}

/// Checks the socket the module hands codes to (`[delivery] socket`)
/// before connecting: every directory from `/` trusted, a socket owned by
/// root (or the caller), not group/world-writable. Whoever listens there
/// gets the codes, so nobody but root may be able to put a socket there.
/// Checked by path, then connected by path: with every component
/// root-owned and closed to others, only root could swap it in between.
pub fn check_socket(path: &Path) -> Result<(), StoreError> {
    // O_PATH: a socket cannot be opened for reading; fstat works on it.
    // With O_PATH, O_NOFOLLOW opens a symlink itself instead of failing.
    let meta = stat_in_trusted_dir(path, OFlag::O_PATH)?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        return Err(insecure(path, "is a symbolic link".into()));
    }
    if !kind.is_socket() {
        return Err(insecure(path, "is not a socket".into()));
    }
    check_owner_and_mode(|| path.to_path_buf(), &meta, Access::Public)
}

/// Opens `path` without following a final symlink, its directories walked
/// and checked like the state directory's (minus the 0700 rule), and
/// returns what fstat says of it.
fn stat_in_trusted_dir(path: &Path, flags: OFlag) -> Result<Metadata, StoreError> {
    let bad = || StoreError::BadPath {
        path: path.to_path_buf(),
    };
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(bad());
    };
    let dir = TrustedDir::open(parent, false)?;
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(&dir.fd, name, flags, Mode::empty()).map_err(|e| match e {
        Errno::ELOOP => insecure(path, "is a symbolic link".into()),
        other => io_err(path, "open", other),
    })?;
    fd_metadata(&File::from(fd), || path.to_path_buf())
}

/// A held exclusive lock; released when dropped (the fd is closed).
#[derive(Debug)]
pub struct LockGuard {
    _lock: Flock<OwnedFd>,
}

/// Scratch directories for unit tests, under a parent the checks accept
/// (/run as root, ~/.cache otherwise: never /tmp, which is refused).
#[cfg(test)]
pub(crate) mod testdir {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    /// A fresh 0700 directory named after the test.
    pub fn scratch(name: &str) -> PathBuf {
        let base = if nix::unistd::geteuid().is_root() {
            PathBuf::from("/run/pam-twofactor-unit")
        } else {
            PathBuf::from(std::env::var("HOME").unwrap()).join(".cache/pam-twofactor-unit")
        };
        std::fs::create_dir_all(&base).unwrap();
        std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755)).unwrap();
        let dir = base.join(format!("{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        dir
    }
}

#[cfg(test)]
mod tests {
    use super::faults::{self, Fault};
    use super::testdir::scratch;
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::ExitStatusExt;

    const OLD: &[u8] = b"version = 1\nfailures = 1\n";
    const NEW: &[u8] = b"version = 1\nfailures = 2\nrate_window_attempts = 7\n";

    /// `lock_any` hands out each of its locks once: with all of them held
    /// the next taker gives up after the bounded wait; once one is
    /// released, that one is taken.
    #[test]
    fn lock_any_is_a_bounded_semaphore() {
        let path = scratch("lockany");
        let dir = TrustedDir::open(&path, true).unwrap();
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

    /// The walk's components: `//` and `.` skipped, `..` refused.
    #[test]
    fn path_components_are_split_like_the_kernel_walks_them() {
        let all = |p: &str| {
            let b = p.as_bytes();
            let mut out = Vec::new();
            let mut at = 0;
            while let Some((s, e)) = next_component(b, at)? {
                out.push(std::str::from_utf8(&b[s..e]).unwrap().to_string());
                at = e;
            }
            Some(out)
        };
        assert_eq!(all("/"), Some(vec![]));
        assert_eq!(
            all("/var/lib/x"),
            Some(vec!["var".into(), "lib".into(), "x".into()])
        );
        assert_eq!(
            all("//var/./lib//x/"),
            Some(vec!["var".into(), "lib".into(), "x".into()])
        );
        assert_eq!(
            all("/var/.../x"),
            Some(vec!["var".into(), "...".into(), "x".into()])
        );
        assert_eq!(all("/var/../etc"), None);
        assert_eq!(all("/var/.."), None);
        assert!(matches!(
            TrustedDir::open(Path::new("/run/../etc"), false),
            Err(StoreError::BadPath { .. })
        ));
        assert!(matches!(
            TrustedDir::open(Path::new("run"), false),
            Err(StoreError::BadPath { .. })
        ));
    }

    /// `read_path` names a file: a trailing `/`, `.` or `..` as the last
    /// component, or a relative path, is refused before anything is opened.
    #[test]
    fn read_path_needs_an_absolute_file_name() {
        for bad in ["/etc/", "/etc/.", "/etc/..", "etc/passwd", "passwd", ""] {
            assert!(
                matches!(
                    read_path(Path::new(bad), Access::Public, 10),
                    Err(StoreError::BadPath { .. })
                ),
                "{bad:?}"
            );
        }
        let dir = scratch("read-path");
        std::fs::write(dir.join("f"), b"x = 1\n").unwrap();
        std::fs::set_permissions(dir.join("f"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_path(&dir.join("f"), Access::Private, 10)
                .unwrap()
                .as_deref()
                .map(Vec::as_slice),
            Some(b"x = 1\n".as_slice())
        );
        assert!(
            read_path(&dir.join("missing"), Access::Private, 10)
                .unwrap()
                .is_none()
        );
    }

    /// A file that holds more than fstat said when it was opened is
    /// refused. /proc/version is root-owned, 0444, one link and reports
    /// size 0 while it reads ~100 bytes: the same as a file growing between
    /// fstat and read, without a race.
    #[test]
    fn a_file_larger_than_its_fstat_size_is_refused() {
        let proc_size = std::fs::metadata("/proc/version").unwrap().len();
        let text = std::fs::read("/proc/version").unwrap();
        assert_eq!(proc_size, 0);
        assert!(!text.is_empty());
        let err = read_path(Path::new("/proc/version"), Access::Public, 4096).unwrap_err();
        assert_eq!(err.to_string(), "/proc/version: grew while being read");
    }

    /// A temp name taken by a leftover (a crashed writer whose pid came
    /// back) does not stop the replace; the leftover is left alone.
    #[test]
    fn leftover_temp_with_our_name_is_skipped() {
        let path = scratch("temp-taken");
        let dir = TrustedDir::open(&path, true).unwrap();
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

    /// An I/O error at any step of a replace leaves the old file (or, once
    /// renamed, the new one), reports the error, and leaves no temp file.
    #[test]
    fn io_error_at_every_step_keeps_a_whole_file_and_no_temp() {
        for step in Step::ALL {
            let path = scratch(&format!("fail-{step:?}"));
            let dir = TrustedDir::open(&path, true).unwrap();
            dir.replace("u.state", OLD).unwrap();
            faults::inject(step, Fault::Fail);
            let result = dir.replace("u.state", NEW);
            faults::clear();
            assert!(result.is_err(), "{step:?}");
            let now = dir.read("u.state", Access::Private, 100).unwrap().unwrap();
            let want = if step == Step::FsyncDir { NEW } else { OLD };
            assert_eq!(now.as_slice(), want, "{step:?}");
            assert_eq!(
                dir.entries().unwrap(),
                vec!["u.state".to_string()],
                "{step:?}"
            );
            std::fs::remove_dir_all(path).unwrap();
        }
    }

    /// Not a test of its own: the child half of
    /// `crash_at_every_step_leaves_old_or_new_file`, which runs it with
    /// `--ignored --exact`; it aborts inside a replace.
    #[test]
    #[ignore = "helper of crash_at_every_step_leaves_old_or_new_file"]
    fn crash_child() {
        let (Ok(dir), Ok(step)) = (
            std::env::var("TF_CRASH_DIR"),
            std::env::var("TF_CRASH_STEP"),
        ) else {
            panic!("a helper process: crash_at_every_step_leaves_old_or_new_file runs it");
        };
        let step = Step::ALL
            .into_iter()
            .find(|s| format!("{s:?}") == step)
            .unwrap();
        let dir = TrustedDir::open(Path::new(&dir), true).unwrap();
        faults::inject(step, Fault::Abort);
        let _ = dir.replace("u.state", NEW);
        panic!("did not crash at {step:?}");
    }

    /// A crash (abort) at any step leaves the old or the new file, never a
    /// torn one: before the rename the old, after it the new.
    #[test]
    fn crash_at_every_step_leaves_old_or_new_file() {
        for step in Step::ALL {
            let path = scratch(&format!("crash-{step:?}"));
            TrustedDir::open(&path, true)
                .unwrap()
                .replace("u.state", OLD)
                .unwrap();
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "store::tests::crash_child",
                    "--test-threads=1",
                ])
                .env("TF_CRASH_DIR", &path)
                .env("TF_CRASH_STEP", format!("{step:?}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert_eq!(status.signal(), Some(libc::SIGABRT), "{step:?}: {status}");
            let dir = TrustedDir::open(&path, true).unwrap();
            let now = dir.read("u.state", Access::Private, 100).unwrap().unwrap();
            let want = if step == Step::FsyncDir { NEW } else { OLD };
            assert_eq!(now.as_slice(), want, "{step:?}");
            // A crash may leave a temp file (reported by `twofactor check`);
            // its random name never collides with a later write.
            dir.replace("u.state", NEW).unwrap();
            std::fs::remove_dir_all(path).unwrap();
        }
    }

    /// A replaced file has the new contents, mode 0600 and no temp file beside it.
    #[test]
    fn replace_writes_new_contents_with_private_mode_and_no_temp_file() {
        let path = scratch("replace");
        let dir = TrustedDir::open(&path, true).unwrap();
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
        let dir = TrustedDir::open(&path, true).unwrap();
        let err = dir
            .read("bob.secret", Access::Private, 1 << 16)
            .unwrap_err();
        assert!(matches!(err, StoreError::Insecure { .. }), "{err}");
        std::fs::remove_dir_all(path).unwrap();
    }

    /// A group-readable record is refused with a message naming the fix.
    #[test]
    fn group_readable_file_is_refused() {
        let path = scratch("mode");
        std::fs::write(path.join("carol.secret"), "x").unwrap();
        std::fs::set_permissions(
            path.join("carol.secret"),
            std::fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let dir = TrustedDir::open(&path, true).unwrap();
        let err = dir
            .read("carol.secret", Access::Private, 100)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("mode 0640") && err.contains("chmod 0600"),
            "{err}"
        );
        std::fs::remove_dir_all(path).unwrap();
    }

    /// A state directory under the world-writable /tmp is refused.
    #[test]
    fn directory_under_tmp_is_refused() {
        let dir = std::env::temp_dir().join(format!("tf-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        let err = TrustedDir::open(&dir, true).unwrap_err().to_string();
        assert!(err.contains("/tmp: is group- or world-writable"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A file larger than the limit is refused before it is read.
    #[test]
    fn oversized_file_is_refused() {
        let path = scratch("large");
        let dir = TrustedDir::open(&path, true).unwrap();
        dir.replace("dave.state", &[b'a'; 200]).unwrap();
        let err = dir.read("dave.state", Access::Private, 100).unwrap_err();
        assert!(matches!(err, StoreError::TooLarge { limit: 100, .. }));
        std::fs::remove_dir_all(path).unwrap();
    }

    /// A missing file reads as None, not as an error.
    #[test]
    fn missing_file_reads_as_none() {
        let path = scratch("missing");
        let dir = TrustedDir::open(&path, true).unwrap();
        assert!(
            dir.read("nobody.state", Access::Private, 10)
                .unwrap()
                .is_none()
        );
        std::fs::remove_dir_all(path).unwrap();
    }

    /// A file named on the command line: a symlink (to a good file), a
    /// FIFO (no writer: a blocking open would never return), a directory
    /// or a device is refused from the open fd; a seed must be private,
    /// an import file may have any mode; both are bounded.
    #[test]
    fn named_files_are_opened_once_without_following_or_blocking() {
        let path = scratch("named");
        let file = path.join("file");
        std::fs::write(&file, "GEZDGNBV\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = path.join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        let fifo = path.join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        for rule in [Named::Import, Named::Seed] {
            for (bad, why) in [
                (&link, "is a symbolic link"),
                (&fifo, "is not a regular file"),
                (&path, "is not a regular file"),
                (&PathBuf::from("/dev/null"), "is not a regular file"),
            ] {
                let err = read_named(bad, rule, 100).unwrap_err();
                assert!(matches!(err, StoreError::Insecure { .. }), "{err}");
                assert!(err.to_string().contains(why), "{rule:?} {err}");
            }
            let err = read_named(&path.join("missing"), rule, 100).unwrap_err();
            assert!(
                matches!(
                    err,
                    StoreError::Io {
                        errno: Errno::ENOENT,
                        ..
                    }
                ),
                "{err}"
            );
        }
        let text = read_named(&file, Named::Import, 100).unwrap();
        assert_eq!(text.as_slice(), b"GEZDGNBV\n");
        let err = read_named(&file, Named::Seed, 100).unwrap_err().to_string();
        assert!(
            err.contains("has mode 0644; expected 0600 (fix: chmod 0600 "),
            "{err}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(
            read_named(&file, Named::Seed, 9).unwrap().as_slice(),
            b"GEZDGNBV\n"
        );
        let err = read_named(&file, Named::Seed, 8).unwrap_err();
        assert!(
            matches!(err, StoreError::TooLarge { limit: 8, .. }),
            "{err}"
        );
        std::fs::remove_dir_all(path).unwrap();
    }

    /// `read_at_most` takes up to the limit and says when there was more.
    #[test]
    fn read_at_most_stops_one_byte_past_the_limit() {
        assert_eq!(
            read_at_most(&b"abc"[..], 3).unwrap().unwrap().as_slice(),
            b"abc"
        );
        assert_eq!(read_at_most(&b""[..], 3).unwrap().unwrap().as_slice(), b"");
        assert!(read_at_most(&b"abcd"[..], 3).unwrap().is_none());
    }
}
