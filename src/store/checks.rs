//! The checks a file or directory must pass, made on its open descriptor
//! (never on a path that could be swapped after the check), and the walk
//! from `/` that checks every directory on the way.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::sys::stat::Mode;
use zeroize::Zeroizing;

use super::{Access, Dir, StoreError, TrustedDir, errno_of, insecure, io_err};

/// The owner we trust: root, or the uid this process runs as (which lets
/// non-root callers such as tests use their own files, and nothing more).
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// Checks one directory's metadata: a directory, trusted owner, not
/// group/world writable; `Dir::Private` also forbids any group/other access.
/// `above` is `Some(target)` for a directory on the way to `target`, which
/// is checked by `rule`. A fix is named only for the state directory itself:
/// a directory above it (`/tmp`, `/var`) belongs to the system, never to
/// us, so the advice is to move the state directory, not to change that one.
fn check_dir(
    path: &Path,
    meta: &Metadata,
    rule: Dir,
    above: Option<&Path>,
) -> Result<(), StoreError> {
    let advice = |fix: String| {
        match (above, rule) {
        (Some(_), Dir::Private) => "; nothing below it can be trusted: state_dir must be moved below directories owned by root that nobody else can write (such as /var/lib)".to_string(),
        (Some(target), Dir::Public) => format!(
            "; nothing below it can be trusted: {} must be moved below directories owned by root that nobody else can write",
            target.display()
        ),
        (None, Dir::Private) => format!(" (fix: {fix})"),
        (None, Dir::Public) => String::new(),
    }
    };
    if !meta.is_dir() {
        return Err(insecure(path, "is not a directory".into()));
    }
    if !trusted_owner(meta.uid()) {
        return Err(insecure(
            path,
            format!(
                "is owned by uid {}; expected root{}",
                meta.uid(),
                advice(format!("chown root:root {}", path.display()))
            ),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(insecure(
            path,
            format!(
                "is group- or world-writable (mode {mode:04o}){}",
                advice(format!("chmod go-w {}", path.display()))
            ),
        ));
    }
    if above.is_none() && rule == Dir::Private && mode & 0o077 != 0 {
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
pub(super) fn fd_metadata(file: &File, path: impl Fn() -> PathBuf) -> Result<Metadata, StoreError> {
    file.metadata()
        .map_err(|e| io_err(&path(), "fstat", errno_of(&e)))
}

/// Walks from `/` to `path`. Every directory above `path` must be a real
/// directory (`lstat`: not a symlink) with a trusted owner and no group or
/// world write bit; `path` itself is then opened with `O_NOFOLLOW |
/// O_DIRECTORY` and checked on its open fd, also for `rule`. Empty and `.`
/// components are skipped, `..` is refused, and messages name the prefix
/// walked.
///
/// The directories above may be checked by path because of what is
/// checked: once `/`, `/var` and `/var/lib` are directories that nobody but
/// root (or this uid) can write, nobody else can swap an entry in any of
/// them between the check and the open, so the open goes through exactly
/// the directories checked, and the last one is checked on its fd.
pub(super) fn walk(path: &Path, rule: Dir) -> Result<File, StoreError> {
    let bytes = path.as_os_str().as_bytes();
    let bad = || StoreError::BadPath {
        path: path.to_path_buf(),
    };
    if bytes.first() != Some(&b'/') {
        return Err(bad());
    }
    // The part of `path` walked so far (`/` at first).
    let walked = |end: usize| Path::new(OsStr::from_bytes(&bytes[..end.max(1)]));
    let mut end = 0;
    while let Some((_, stop)) = next_component(bytes, end).ok_or_else(bad)? {
        let here = walked(end);
        let meta =
            std::fs::symlink_metadata(here).map_err(|e| io_err(here, "stat", errno_of(&e)))?;
        if meta.file_type().is_symlink() {
            return Err(insecure(here, "is a symbolic link".into()));
        }
        check_dir(here, &meta, rule, Some(path))?;
        end = stop;
    }
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = File::from(
        openat(AT_FDCWD, path, flags, Mode::empty()).map_err(|e| match e {
            Errno::ELOOP | Errno::ENOTDIR => {
                insecure(path, "is a symbolic link or not a directory".into())
            }
            other => io_err(path, "open", other),
        })?,
    );
    check_dir(path, &fd_metadata(&fd, || path.to_path_buf())?, rule, None)?;
    Ok(fd)
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

/// Checks an opened file: regular, trusted owner, one link, mode rule.
/// `make_path` gives the file's path, only needed for a message.
pub(super) fn check_file(
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

/// A lock's wake-up FIFO (`lock::TrustedDir::lock`): a FIFO, ours, one
/// link, no access for others.
pub(super) fn check_fifo(
    make_path: impl Fn() -> PathBuf,
    meta: &Metadata,
) -> Result<(), StoreError> {
    if !meta.file_type().is_fifo() {
        return Err(insecure(&make_path(), "is not a FIFO".into()));
    }
    check_owner_and_mode(make_path, meta, Access::Private)
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
    // The name is what follows the last `/`: a trailing `/` names no file
    // and is refused.
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
    let dir = match TrustedDir::open(parent, Dir::Public) {
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
    let dir = TrustedDir::open(parent, Dir::Public)?;
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(&dir.fd, name, flags, Mode::empty()).map_err(|e| match e {
        Errno::ELOOP => insecure(path, "is a symbolic link".into()),
        other => io_err(path, "open", other),
    })?;
    fd_metadata(&File::from(fd), || path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::testdir::scratch;
    use std::os::unix::fs::PermissionsExt;

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
            TrustedDir::open(Path::new("/run/../etc"), Dir::Public),
            Err(StoreError::BadPath { .. })
        ));
        assert!(matches!(
            TrustedDir::open(Path::new("run"), Dir::Public),
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
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
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
        let err = TrustedDir::open(&dir, Dir::Private)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/tmp: is group- or world-writable"), "{err}");
        // /tmp is the system's: move state_dir, never change /tmp.
        assert!(err.contains("state_dir must be moved below"), "{err}");
        assert!(!err.contains("chmod") && !err.contains("chown"), "{err}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
