//! Bounded reads of an open file, and files named by an admin on the
//! command line (a seed file, an import file), which may sit in a
//! directory another user controls.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::Mode;
use zeroize::Zeroizing;

use super::checks::{check_file, fd_metadata};
use super::{Access, StoreError, errno_of, insecure, io_err};

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
pub(super) fn read_sized(
    file: impl Read,
    len: u64,
    path: impl Fn() -> PathBuf,
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    match read_at_most(file, len) {
        Ok(Some(buf)) => Ok(buf),
        Ok(None) => Err(insecure(&path(), "grew while being read".into())),
        Err(e) => Err(io_err(&path(), "read", errno_of(&e))),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::read_path;
    use crate::store::testdir::scratch;
    use std::os::unix::fs::PermissionsExt;

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
