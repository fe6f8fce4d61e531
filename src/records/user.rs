//! One user's files in the state directory — `<user>.secret`, `<user>.state`
//! and `<user>.lock` — and the only code that reads or writes them. The
//! login and the admin commands both come here, so a record is parsed,
//! checked and written one way.
//!
//! Changes are made under the user's lock (`lock`): take it, read what
//! the decision needs, write, drop it. `<user>.lock` is never removed, so
//! every process locks the same inode.

use std::fmt;
use std::path::PathBuf;

use super::username::Username;
use super::{MAX_RECORD_BYTES, RecordError, SecretRecord, State};
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
        let name = self.user.state_file();
        match self.dir.read(&name, Access::Private, MAX_RECORD_BYTES)? {
            None => Ok(State::default()),
            Some(bytes) => State::parse(&bytes).map_err(|error| self.record_error(&name, error)),
        }
    }

    /// Replaces the state atomically and durably (the caller holds the
    /// lock), through its spare: a login writes the state every time.
    pub fn write_state(&self, state: &State) -> Result<(), FilesError> {
        let name = self.user.state_file();
        let text = state
            .to_toml()
            .map_err(|error| self.record_error(&name, error))?;
        Ok(self
            .dir
            .replace_via_spare(&name, &self.user.state_spare_file(), text.as_bytes())?)
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
