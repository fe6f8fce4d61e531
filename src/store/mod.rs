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
//! Here: the errors and [`TrustedDir`] (open, read, remove, list).
//! `lock`: per-user locks with a bounded wait and their wake-up FIFO, and
//! the argon2 slots. `write`: durable writes (`replace`, `write_copy`).
//! `checks`: the checks made on an open descriptor and the walk from `/`.
//! `named`: bounded reads and files an admin names on the command line.
//! `faults`: the hooks tests use to break a write.

mod checks;
#[cfg(any(test, fuzzing))]
pub mod faults;
mod lock;
mod named;
#[cfg(test)]
pub(crate) mod testdir;
mod write;

pub use checks::{check_executable, check_socket, read_path};
pub use lock::LockGuard;
pub use named::{Named, read_at_most, read_named};

use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, fstatat};
use nix::unistd::{UnlinkatFlags, fsync, unlinkat};
use zeroize::Zeroizing;

use checks::{check_file, fd_metadata};
use named::read_sized;

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
                lock::LOCK_WAIT.as_millis()
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

/// The steps of `TrustedDir::replace` and `write_copy`, where tests
/// inject faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Creating the temp file (opening the copy).
    CreateTemp,
    /// Writing the file (a fault here leaves half the bytes written).
    Write,
    /// fsync (fdatasync) of the file.
    FsyncFile,
    /// rename over the old file (swap with it).
    Rename,
    /// fsync of the directory (for a copy: only when one was made).
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
    /// The steps of a state write over an existing copy (`write_copy`
    /// syncs the directory only when it makes a file).
    pub const COPY: [Step; 4] = [Step::CreateTemp, Step::Write, Step::FsyncFile, Step::Rename];
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

#[cfg(test)]
mod tests {
    use super::testdir::scratch;
    use super::*;

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
}
