//! The one system call neither std nor nix offers in the form the store
//! needs, kept apart as ../shared/STYLE.md asks of FFI the bindings lack.
//!
//! `fstat` of an open fd with only the fields the store checks. std's
//! `File::metadata` makes the same `statx` call but copies out a full
//! `Metadata` (~210 instructions a call, 15 calls a login); nix's `fstat`
//! goes through glibc's `fstat`, which interposers such as libfaketime
//! wrap at several times the cost. Here: one `statx` into a stack buffer.
#![allow(unsafe_code)]

use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// The fields of an open file the store's trust checks look at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStat {
    /// Type and permission bits (`st_mode`).
    pub mode: u32,
    pub uid: u32,
    pub nlink: u32,
    pub size: u64,
}

impl FileStat {
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }

    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
}

/// The fields `FileStat` holds; a kernel that cannot report one of them
/// makes the call fail (the store then refuses the file: fail closed).
const WANTED: u32 =
    libc::STATX_TYPE | libc::STATX_MODE | libc::STATX_UID | libc::STATX_NLINK | libc::STATX_SIZE;

/// `statx(fd, "", AT_EMPTY_PATH)`: the open file itself, never a path.
/// On kernels before 4.11 glibc answers `statx` with `fstatat` itself; a
/// seccomp filter that refuses it makes this an error, and the store then
/// refuses the file (fail closed, with the errno in the message). No
/// `fstat` fallback: one libc symbol fewer for every host to bind.
pub fn fstat(fd: BorrowedFd<'_>) -> Result<FileStat, Errno> {
    let mut buf = MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: the path is a NUL-terminated static string, `fd` is open for
    // the whole call (borrowed), and `buf` is a writable `statx` buffer that
    // outlives the call; the kernel writes at most `size_of::<statx>()`.
    let rc = unsafe {
        libc::statx(
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | libc::AT_STATX_SYNC_AS_STAT,
            WANTED,
            buf.as_mut_ptr(),
        )
    };
    Errno::result(rc)?;
    // SAFETY: zero bytes are a valid `statx` (plain integers), and the
    // successful call filled in the fields `stx_mask` reports.
    let st = unsafe { buf.assume_init() };
    if st.stx_mask & WANTED != WANTED {
        return Err(Errno::EIO);
    }
    Ok(FileStat {
        mode: u32::from(st.stx_mode),
        uid: st.stx_uid,
        nlink: st.stx_nlink,
        size: st.stx_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn agrees_with_std_metadata() {
        for path in ["/", "/etc/passwd", "/dev/null"] {
            let file = std::fs::File::open(path).unwrap();
            let meta = file.metadata().unwrap();
            let st = fstat(file.as_fd()).unwrap();
            assert_eq!(st.mode, meta.mode(), "{path}");
            assert_eq!(st.uid, meta.uid(), "{path}");
            assert_eq!(u64::from(st.nlink), meta.nlink(), "{path}");
            assert_eq!(st.size, meta.size(), "{path}");
            assert_eq!(st.is_dir(), meta.is_dir(), "{path}");
            assert_eq!(st.is_file(), meta.is_file(), "{path}");
        }
    }
}
