//! Durable writes in a [`TrustedDir`]. `replace`: atomic replacement (a
//! new temp file, fsynced, renamed over the old one, the directory
//! fsynced); a crash at any step leaves the old or the new file.
//! `write_copy`: the state's way, written over the older of two copies and
//! swapped in by name, which makes and frees no file; what makes it safe
//! against a crash is in the copies themselves (`records::user`).

use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, RenameFlags, openat, renameat, renameat2};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, fdatasync, fsync, unlinkat};

use super::checks::{check_file, fd_metadata};
use super::{Access, Step, StoreError, TrustedDir, checkpoint, errno_of, insecure, io_err};

/// Temp names tried past the first when one is taken (see `temp_name`).
const TEMP_ATTEMPTS: u32 = 8;

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

/// How much of a file `write_synced` makes durable.
#[derive(Clone, Copy)]
enum Sync {
    /// `fsync`: data and every attribute (a new file's mode and owner).
    All,
    /// `fdatasync`: the data and what reading it needs (the length).
    Data,
}

/// Writes `contents` to the start of `file`, cuts it there and syncs it
/// (the steps `Write` and `FsyncFile`).
fn write_synced(
    file: &mut File,
    path: impl Fn() -> PathBuf,
    contents: &[u8],
    sync: Sync,
) -> Result<(), StoreError> {
    // Tests stop a write half-way (Step::Write); a real build writes
    // everything with one call.
    let half = if cfg!(any(test, fuzzing)) {
        contents.len() / 2
    } else {
        contents.len()
    };
    file.write_all(&contents[..half])
        .map_err(|e| io_err(&path(), "write", errno_of(&e)))?;
    checkpoint(Step::Write).map_err(|e| io_err(&path(), "write", e))?;
    file.write_all(&contents[half..])
        .and_then(|()| file.set_len(contents.len() as u64))
        .map_err(|e| io_err(&path(), "write", errno_of(&e)))?;
    checkpoint(Step::FsyncFile)
        .and_then(|()| match sync {
            Sync::All => fsync(&*file),
            Sync::Data => fdatasync(&*file),
        })
        .map_err(|e| io_err(&path(), "fsync", e))
}

impl TrustedDir<'_> {
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
        nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(0o600))
            .map_err(|e| io_err(&tmp_path(), "chmod", e))?;
        write_synced(&mut file, tmp_path, contents, Sync::All)?;
        drop(file);
        checkpoint(Step::Rename)
            .and_then(|()| renameat(&self.fd, tmp_name, &self.fd, name))
            .map_err(|e| io_err(&self.child(name), "rename", e))?;
        checkpoint(Step::FsyncDir)
            .and_then(|()| fsync(&self.fd))
            .map_err(|e| io_err(self.path, "fsync", e))
    }

    /// Writes `contents` over the file `target` (created 0600 if missing)
    /// and makes them durable (`fdatasync`: data and length); then, with
    /// `swap_with`, swaps the two names (`renameat2(RENAME_EXCHANGE)`; a
    /// plain rename where `swap_with` does not exist yet or the file
    /// system cannot swap). This makes and frees no file: on ext4 a new
    /// inode per write, its allocation and the old one's release were
    /// most of a login's I/O (bench/results.md).
    ///
    /// Not atomic by itself, and the directory is synced only when a name
    /// was made or removed: the caller keeps two copies that say which is
    /// newer and whether they are whole (`records::user`), and holds the
    /// lock that guards them.
    pub fn write_copy(
        &self,
        target: &str,
        swap_with: Option<&str>,
        contents: &[u8],
    ) -> Result<(), StoreError> {
        let path = || self.child(target);
        // O_NONBLOCK as for every open here: a FIFO in its place must not
        // hang the login (it is then refused as not a regular file).
        let flags = OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
        let open = |flags| {
            checkpoint(Step::CreateTemp)
                .and_then(|()| openat(&self.fd, target, flags, Mode::from_bits_truncate(0o600)))
                .map_err(|e| match e {
                    Errno::ELOOP => insecure(&path(), "is a symbolic link".into()),
                    other => io_err(&path(), "open", other),
                })
        };
        let (fd, created) = match open(flags) {
            Err(StoreError::Io {
                errno: Errno::ENOENT,
                ..
            }) => (open(flags | OFlag::O_CREAT | OFlag::O_EXCL)?, true),
            other => (other?, false),
        };
        let mut file = File::from(fd);
        // Like every file here: ours, a regular file with one link, no
        // access for others; a new one exactly 0600 (it got the umask).
        check_file(path, &fd_metadata(&file, path)?, Access::Private)?;
        if created {
            nix::sys::stat::fchmod(&file, Mode::from_bits_truncate(0o600))
                .map_err(|e| io_err(&path(), "chmod", e))?;
        }
        // A new file's mode and owner with it; after that only its data
        // and length change.
        let sync = if created { Sync::All } else { Sync::Data };
        write_synced(&mut file, path, contents, sync)?;
        drop(file);
        let mut renamed = false;
        if let Some(name) = swap_with {
            checkpoint(Step::Rename)
                .and_then(|()| {
                    match renameat2(
                        &self.fd,
                        target,
                        &self.fd,
                        name,
                        RenameFlags::RENAME_EXCHANGE,
                    ) {
                        Err(Errno::ENOENT | Errno::EINVAL | Errno::ENOSYS) => {
                            renamed = true;
                            renameat(&self.fd, target, &self.fd, name)
                        }
                        done => done,
                    }
                })
                .map_err(|e| io_err(&self.child(name), "rename", e))?;
        }
        if created || renamed {
            checkpoint(Step::FsyncDir)
                .and_then(|()| fsync(&self.fd))
                .map_err(|e| io_err(self.path, "fsync", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testdir::scratch;
    use super::super::{Dir, StoreError};
    use super::*;
    use std::os::unix::fs::MetadataExt;

    const NEW: &[u8] = b"version = 1\nfailures = 2\n";

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

    /// `write_copy` with a swap makes the spare once, then only swaps
    /// names: the state and its spare keep their two inodes, the spare
    /// holds the version before, and a shorter version leaves no tail of
    /// the longer. Without a swap it writes over the file named.
    #[test]
    fn write_copy_swaps_two_files() {
        use std::os::unix::fs::MetadataExt;
        let path = scratch("spare-swap");
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
        let read = |name: &str| {
            dir.read(name, Access::Private, 100)
                .unwrap()
                .map(|b| b.to_vec())
        };
        let inode = |name: &str| std::fs::metadata(path.join(name)).unwrap().ino();
        dir.write_copy(".u.state.spare", Some("u.state"), b"first version")
            .unwrap();
        assert_eq!(read("u.state"), Some(b"first version".to_vec()));
        assert_eq!(read(".u.state.spare"), None, "renamed into place");
        dir.write_copy(".u.state.spare", Some("u.state"), b"second, longer version")
            .unwrap();
        assert_eq!(read(".u.state.spare"), Some(b"first version".to_vec()));
        let mut inodes = vec![inode("u.state"), inode(".u.state.spare")];
        inodes.sort_unstable();
        dir.write_copy(".u.state.spare", Some("u.state"), b"third")
            .unwrap();
        assert_eq!(read("u.state"), Some(b"third".to_vec()));
        assert_eq!(
            read(".u.state.spare"),
            Some(b"second, longer version".to_vec())
        );
        let mut now = vec![inode("u.state"), inode(".u.state.spare")];
        now.sort_unstable();
        assert_eq!(now, inodes, "no file made or freed");
        let named = inode("u.state");
        dir.write_copy("u.state", None, b"fourth").unwrap();
        assert_eq!(read("u.state"), Some(b"fourth".to_vec()));
        assert_eq!(inode("u.state"), named, "written over, not swapped");
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
        dir.write_copy(".u.state.spare", Some("u.state"), b"kept")
            .unwrap();
        std::os::unix::fs::symlink("/etc/hostname", path.join(".u.state.spare")).unwrap();
        let e = dir
            .write_copy(".u.state.spare", Some("u.state"), b"new")
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
            .write_copy(".u.state.spare", Some("u.state"), b"new")
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
