//! One user's files in the state directory — `<user>.secret`, `<user>.state`
//! and `<user>.lock` — and the only code that reads or writes them. The
//! login and the admin commands both come here, so a record is parsed,
//! checked and written one way.
//!
//! Changes are made under the user's lock (`lock`): take it, read what
//! the decision needs, write, drop it. `<user>.lock` is never removed, so
//! every process locks the same inode.
//!
//! The state is kept in two copies, `<user>.state` (the newest) and
//! `.<user>.state.spare` (the one before), each with a generation and a
//! checksum (`state`). A write goes over the older copy, is made durable
//! (`fdatasync`) and then takes the name `<user>.state` by swapping names;
//! the directory itself is not synced for that (only when a copy is first
//! made). So after a power loss the names may be from before the last
//! swaps, but the newest whole copy is still found: the reader takes the
//! higher generation of the copies whose checksum matches, and at most one
//! copy, the one being written, can be cut short. `read_state_for_update`
//! says which copy the next write goes over.

use std::fmt;
use std::path::PathBuf;

use super::username::Username;
use super::{MAX_RECORD_BYTES, RecordError, SecretRecord, State, StateFile};
use crate::store::{Access, KeptFile, LockGuard, StoreError, TrustedDir};

/// A user's file could not be read, parsed, written or locked.
#[derive(Debug)]
pub enum FilesError {
    /// The directory or a file in it is unsafe or unreadable, the lock could
    /// not be taken, or a write failed.
    Store(StoreError),
    /// A record exists but cannot be parsed, checked or written.
    Record { path: PathBuf, error: RecordError },
}

impl fmt::Display for FilesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilesError::Store(e) => write!(f, "{e}"),
            FilesError::Record { path, error } => {
                write!(f, "{}: {error} (run `twofactor check`)", path.display())
            }
        }
    }
}

impl std::error::Error for FilesError {}

impl From<StoreError> for FilesError {
    fn from(e: StoreError) -> FilesError {
        FilesError::Store(e)
    }
}

/// A secret record as read, with the file it came from kept open: the
/// record can be checked later to be still the one at the name
/// (`record_is`) without reading it again. The bytes read (the secret in
/// base32) are wiped when dropped.
pub struct ReadRecord {
    pub record: SecretRecord,
    file: KeptFile,
}

/// Which copy of the state the next write goes over, and the generation
/// read (the next is one more). From `read_state_for_update`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StateSlot {
    write_to: Copy,
    generation: u64,
}

/// The state as read (or why it cannot be used), and where a write goes.
type Loaded = (Result<State, FilesError>, StateSlot);

/// A copy of the state, by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Copy {
    /// `.<user>.state.spare`: written, then swapped with `<user>.state`.
    Spare,
    /// `<user>.state` itself (after a crash, when the spare is newer).
    Named,
}

/// One user's files in a trusted state directory.
pub struct UserFiles<'a> {
    dir: &'a TrustedDir<'a>,
    user: &'a Username,
}

impl<'a> UserFiles<'a> {
    pub fn new(dir: &'a TrustedDir<'a>, user: &'a Username) -> UserFiles<'a> {
        UserFiles { dir, user }
    }

    /// The state directory (for locks that are not one user's, such as
    /// the argon2 slots).
    pub fn dir(&self) -> &TrustedDir<'a> {
        self.dir
    }

    /// The user these files belong to.
    pub fn user(&self) -> &Username {
        self.user
    }

    /// Takes the user's exclusive lock, waiting a bounded time.
    pub fn lock(&self) -> Result<LockGuard, FilesError> {
        Ok(self.dir.lock(&self.user.lock_file())?)
    }

    /// The secret record and its bytes; `None` if the user is not enrolled.
    pub fn read_record_kept(&self) -> Result<Option<ReadRecord>, FilesError> {
        let name = self.user.secret_file();
        let Some(file) = self
            .dir
            .read_kept(&name, Access::Private, MAX_RECORD_BYTES)?
        else {
            return Ok(None);
        };
        let record =
            SecretRecord::parse(&file.bytes).map_err(|error| self.record_error(&name, error))?;
        Ok(Some(ReadRecord { record, file }))
    }

    /// The secret record; `None` if the user is not enrolled.
    pub fn read_record(&self) -> Result<Option<SecretRecord>, FilesError> {
        Ok(self.read_record_kept()?.map(|read| read.record))
    }

    /// Whether a secret record is there; a damaged one counts as there (so
    /// that only `enroll --force` or `disable` replaces it).
    pub fn record_exists(&self) -> Result<bool, FilesError> {
        match self.read_record() {
            Ok(found) => Ok(found.is_some()),
            Err(FilesError::Record { .. }) => Ok(true),
            Err(e) => Err(e),
        }
    }

    /// Whether the secret record at the name is still, unchanged, the file
    /// `read` came from (a login checks this under the lock: the record it
    /// prompted for may have been replaced or removed meanwhile). Every
    /// writer replaces the file by rename, and any write in place would
    /// change its change time; the kept fd stops the inode from being
    /// reused.
    pub fn record_is(&self, read: &ReadRecord) -> Result<bool, FilesError> {
        Ok(self.dir.file_id(&self.user.secret_file())? == Some(read.file.id))
    }

    /// The state; a missing file is a fresh state. Read it under the lock
    /// before deciding (without the lock it is only a hint).
    pub fn read_state(&self) -> Result<State, FilesError> {
        self.load_state()?.0
    }

    /// The state, read under the lock, and where its next version goes
    /// (for `write_state`).
    pub fn read_state_for_update(&self) -> Result<(State, StateSlot), FilesError> {
        let (state, slot) = self.load_state()?;
        Ok((state?, slot))
    }

    /// Writes `state` as the next version after the one `slot` was read
    /// with (the caller holds the lock since that read): over the older
    /// copy, durably, then named `<user>.state`.
    pub fn write_state(&self, state: &State, slot: StateSlot) -> Result<(), FilesError> {
        let name = self.user.state_file();
        let spare = self.user.state_spare_file();
        let generation = slot.generation.checked_add(1).ok_or_else(|| {
            self.record_error(&name, RecordError::Invalid(super::Invalid::Generation))
        })?;
        let text = state
            .to_file(generation)
            .map_err(|error| self.record_error(&name, error))?;
        match slot.write_to {
            Copy::Spare => self.dir.write_copy(&spare, Some(&name), text.as_bytes())?,
            Copy::Named => self.dir.write_copy(&name, None, text.as_bytes())?,
        }
        Ok(())
    }

    /// Replaces the state with `state` whatever the copies hold, damaged
    /// ones included (enrollment, import; the caller holds the lock).
    pub fn reset_state(&self, state: &State) -> Result<(), FilesError> {
        let (_, slot) = self.load_state()?;
        self.write_state(state, slot)
    }

    /// Reads both copies and picks the newest whole one (see the module
    /// comment). The state is an error when the copy named `<user>.state`
    /// is damaged in any way but a cut-short write, or both are damaged;
    /// the slot is good in every case, so that a reset can write.
    fn load_state(&self) -> Result<Loaded, FilesError> {
        let name = self.user.state_file();
        let spare_name = self.user.state_spare_file();
        let named = self.read_copy(&name)?;
        let spare = self.read_copy(&spare_name)?;
        let slot = |write_to, generation| StateSlot {
            write_to,
            generation,
        };
        Ok(match (named, spare) {
            // Nothing yet, or a first write cut short before it had a name
            // (a named copy, once there, is only ever swapped, never removed
            // but with the enrollment).
            (None, None) | (None, Some(Err(_))) => (Ok(State::default()), slot(Copy::Spare, 0)),
            (Some(Ok(n)), Some(Ok(s))) if s.generation > n.generation => {
                (Ok(s.state), slot(Copy::Named, s.generation))
            }
            (Some(Ok(n)), _) => {
                let generation = n.generation;
                (Ok(n.state), slot(Copy::Spare, generation))
            }
            // The first write's name change did not reach the disk.
            (None, Some(Ok(s))) => (Ok(s.state), slot(Copy::Named, s.generation)),
            (Some(Err(RecordError::Torn)), Some(Ok(s))) => {
                (Ok(s.state), slot(Copy::Named, s.generation))
            }
            (Some(Err(error)), Some(Ok(s))) => (
                Err(self.record_error(&name, error)),
                slot(Copy::Named, s.generation),
            ),
            (Some(Err(error)), _) => (Err(self.record_error(&name, error)), slot(Copy::Spare, 0)),
        })
    }

    /// One copy of the state: `None` if missing, else parsed or why not.
    /// Unsafe files (owner, mode, type) are an error of their own.
    fn read_copy(&self, name: &str) -> Result<Option<Result<StateFile, RecordError>>, FilesError> {
        Ok(self
            .dir
            .read(name, Access::Private, MAX_RECORD_BYTES)?
            .map(|bytes| State::parse_file(&bytes)))
    }

    /// Replaces the secret record atomically and durably (the caller holds
    /// the lock).
    pub fn write_record(&self, record: &SecretRecord) -> Result<(), FilesError> {
        let name = self.user.secret_file();
        let text = record
            .to_toml()
            .map_err(|error| self.record_error(&name, error))?;
        Ok(self.dir.replace(&name, text.as_bytes())?)
    }

    /// Removes the secret record and the state (the caller holds the lock;
    /// the lock file stays).
    pub fn remove(&self) -> Result<(), FilesError> {
        self.dir.remove(&self.user.secret_file())?;
        self.dir.remove(&self.user.state_file())?;
        self.dir.remove(&self.user.state_spare_file())?;
        Ok(())
    }

    fn record_error(&self, name: &str, error: RecordError) -> FilesError {
        FilesError::Record {
            path: self.dir.path().join(name),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Dir;
    use crate::store::testdir::scratch;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::Path;

    fn failures(n: u32) -> State {
        State {
            failures: n,
            ..State::default()
        }
    }

    /// Puts `text` at `name` in `dir`, 0600, as a copy of the state.
    fn put(dir: &Path, name: &str, text: &str) {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// The generation a copy on disk holds (`None`: missing or damaged).
    fn generation(dir: &Path, name: &str) -> Option<u64> {
        let bytes = std::fs::read(dir.join(name)).ok()?;
        State::parse_file(&bytes).ok().map(|f| f.generation)
    }

    /// A write goes over the older copy, durably, and takes the name
    /// `<user>.state`: generations rise by one, the spare holds the one
    /// before, and after the first two writes no file is made or freed.
    #[test]
    fn each_write_goes_over_the_older_copy_and_takes_the_name() {
        let path = scratch("copies");
        let dir = TrustedDir::open(&path, Dir::Private).unwrap();
        let user = Username::parse("u").unwrap();
        let files = UserFiles::new(&dir, &user);
        assert_eq!(files.read_state().unwrap(), State::default());
        files.reset_state(&failures(1)).unwrap();
        assert_eq!(generation(&path, "u.state"), Some(1));
        assert!(!path.join(".u.state.spare").exists());
        let inode = |name: &str| std::fs::metadata(path.join(name)).unwrap().ino();
        let mut inodes = Vec::new();
        for n in 2..=5 {
            let (read, slot) = files.read_state_for_update().unwrap();
            assert_eq!(read, failures(n - 1));
            files.write_state(&failures(n), slot).unwrap();
            assert_eq!(generation(&path, "u.state"), Some(u64::from(n)));
            assert_eq!(generation(&path, ".u.state.spare"), Some(u64::from(n) - 1));
            let mut now = vec![inode("u.state"), inode(".u.state.spare")];
            now.sort_unstable();
            if n > 2 {
                assert_eq!(now, inodes, "no file made or freed");
            }
            inodes = now;
        }
        assert_eq!(files.read_state().unwrap(), failures(5));
    }

    /// After a power loss the names may be from before the last swaps, and
    /// the copy being written may be cut short: the newest whole copy is
    /// read, and the next write goes over the other one. A copy damaged in
    /// another way than a cut-short write is an error, as are two damaged
    /// copies (nobody logs in on a state that cannot be trusted).
    #[test]
    fn after_a_crash_the_newest_whole_copy_is_read() {
        let text = |n: u32, generation: u64| failures(n).to_file(generation).unwrap();
        let torn = |n: u32, generation: u64| {
            let t = text(n, generation);
            t[..t.len() - 5].to_string()
        };
        let v1 = |n: u32| format!("version = 1\nfailures = {n}\n");
        let no_sum = "version = 2\ngeneration = 9\nfailures = 9\n".to_string();
        // (named, spare) -> the failures read, or None for an error
        let cases: [(Option<String>, Option<String>, Option<u32>); 11] = [
            (Some(text(5, 5)), Some(text(6, 6)), Some(6)),
            (Some(text(6, 6)), Some(text(5, 5)), Some(6)),
            (Some(torn(7, 7)), Some(text(6, 6)), Some(6)),
            (Some(text(6, 6)), Some(torn(7, 7)), Some(6)),
            (Some(torn(7, 7)), Some(torn(6, 6)), None),
            (Some(no_sum.clone()), Some(text(6, 6)), None),
            (Some(no_sum), None, None),
            (None, Some(text(1, 1)), Some(1)),
            (Some(v1(3)), Some(v1(2)), Some(3)),
            (Some(v1(3)), Some(text(4, 1)), Some(4)),
            (Some(text(4, 1)), Some(v1(3)), Some(4)),
        ];
        for (i, (named, spare, want)) in cases.into_iter().enumerate() {
            let path = scratch(&format!("copies-crash-{i}"));
            if let Some(t) = &named {
                put(&path, "u.state", t);
            }
            if let Some(t) = &spare {
                put(&path, ".u.state.spare", t);
            }
            let dir = TrustedDir::open(&path, Dir::Private).unwrap();
            let user = Username::parse("u").unwrap();
            let files = UserFiles::new(&dir, &user);
            let Some(want) = want else {
                let e = files.read_state().unwrap_err();
                assert!(matches!(e, FilesError::Record { .. }), "case {i}: {e}");
                assert!(files.read_state_for_update().is_err(), "case {i}");
                // An admin's reset still writes, and is then what is read.
                files.reset_state(&failures(0)).unwrap();
                assert_eq!(files.read_state().unwrap(), failures(0), "case {i}");
                continue;
            };
            let (read, slot) = files.read_state_for_update().unwrap();
            assert_eq!(read, failures(want), "case {i}");
            let newest = [&named, &spare]
                .iter()
                .filter_map(|t| t.as_deref())
                .filter_map(|t| State::parse_file(t.as_bytes()).ok())
                .map(|f| f.generation)
                .max()
                .unwrap();
            files.write_state(&failures(100), slot).unwrap();
            assert_eq!(files.read_state().unwrap(), failures(100), "case {i}");
            // Written as the next generation, over the copy that was not
            // the newest: that one is still there, whole.
            assert_eq!(generation(&path, "u.state"), Some(newest + 1), "case {i}");
            let other = std::fs::read(path.join(".u.state.spare")).unwrap();
            assert_eq!(
                State::parse_file(&other).unwrap().state,
                failures(want),
                "case {i}"
            );
        }
    }
}
