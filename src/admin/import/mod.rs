//! `twofactor import`: enrollments carried over from the modules we
//! replace, google-authenticator's `~/.google_authenticator` and pam_oath's
//! users file. The parsers (one file each) only read; the methods here
//! store what they read, under each user's lock.

mod google_authenticator;
mod oath;

pub use google_authenticator::{GoogleAuthenticator, ImportError, parse_google_authenticator};
pub use oath::{OathFile, OathUser, parse_oath_usersfile};

use super::{Admin, AdminError, existing_user};
use crate::otp::backup;
use crate::records::user::UserFiles;
use crate::records::username::Username;
use crate::records::{self, DEFAULT_DEVICE, Device, SecretRecord, State};

/// The smallest secret we import: google-authenticator's default is 80 bits.
pub const MIN_IMPORT_BITS: usize = 80;

/// What an import does to a user who is already enrolled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// Leave the enrollment as it is: the user is skipped (pam_oath) or
    /// the import refused (google-authenticator).
    Keep,
    /// Replace the secret, backup codes and state (`import --force`).
    Replace,
}

/// Users imported, and lines skipped with why.
pub type ImportReport = (Vec<Imported>, Vec<(usize, String)>);

/// Where an import puts a user's record (and a fresh state): this host's
/// files, or the fleet (the `twofactor` binary's fleet store). With
/// [`Existing::Keep`] it must refuse an enrolled user with
/// [`AdminError::AlreadyEnrolled`].
pub type ImportStore<'a> =
    dyn FnMut(&Username, &SecretRecord, Existing) -> Result<(), AdminError> + 'a;

/// What `import` did for one user.
#[derive(Debug)]
pub struct Imported {
    pub user: String,
    /// Backup codes: the user's own scratch codes (google-authenticator)
    /// or a fresh set (pam_oath, which has none).
    pub backup_codes: Vec<String>,
    pub notes: Vec<String>,
}

impl Admin {
    /// Imports a `~/.google_authenticator` file for `raw_user` into this
    /// host's files.
    pub fn import_google_authenticator(
        &self,
        raw_user: &str,
        text: &str,
        existing: Existing,
        now: u64,
    ) -> Result<Imported, AdminError> {
        self.import_google_authenticator_into(raw_user, text, existing, now, &mut |u, r, e| {
            self.store_import(u, r, e)
        })
    }

    /// [`Admin::import_google_authenticator`] into `store`.
    pub fn import_google_authenticator_into(
        &self,
        raw_user: &str,
        text: &str,
        existing: Existing,
        now: u64,
        store: &mut ImportStore,
    ) -> Result<Imported, AdminError> {
        let user = existing_user(raw_user)?;
        let ga = parse_google_authenticator(text)
            .map_err(|e| AdminError::BadOption(format!("--google-authenticator: {e}")))?;
        let salt = backup::random_bytes::<{ backup::SALT_BYTES }>().ok_or(AdminError::Crypto)?;
        let kdf = backup::KdfParams::DEFAULT;
        let mut hashes = Vec::new();
        for code in &ga.scratch_codes {
            let hash = backup::hash_digits(code, &salt, kdf).ok_or(AdminError::Crypto)?;
            if !hashes.contains(&hash) {
                hashes.push(hash);
            }
        }
        let record = SecretRecord {
            created: now,
            devices: vec![Device {
                label: DEFAULT_DEVICE.into(),
                secret: ga.secret,
                params: ga.params,
                created: now,
            }],
            backup: records::BackupSet {
                created: now,
                digits: 8,
                kdf,
                salt,
                hashes,
            },
            deliver_to: None,
        };
        store(&user, &record, existing)?;
        Ok(Imported {
            user: user.to_string(),
            backup_codes: ga.scratch_codes,
            notes: ga.notes,
        })
    }

    /// Imports every TOTP line of a pam_oath users file into this host's
    /// files; returns the users imported and the lines skipped (line, why).
    pub fn import_oath_usersfile(
        &self,
        text: &str,
        existing: Existing,
        now: u64,
    ) -> Result<ImportReport, AdminError> {
        self.import_oath_usersfile_into(text, existing, now, &mut |u, r, e| {
            self.store_import(u, r, e)
        })
    }

    /// [`Admin::import_oath_usersfile`] into `store`.
    pub fn import_oath_usersfile_into(
        &self,
        text: &str,
        existing: Existing,
        now: u64,
        store: &mut ImportStore,
    ) -> Result<ImportReport, AdminError> {
        let file = parse_oath_usersfile(text);
        let mut skipped = file.skipped;
        let mut imported = Vec::new();
        for entry in file.users {
            let user = match existing_user(&entry.user) {
                Ok(u) => u,
                Err(e) => {
                    skipped.push((entry.line, e.to_string()));
                    continue;
                }
            };
            let (backup, codes) = crate::otp::backup::new_backup_set(self.config.backup_codes, now)
                .ok_or(AdminError::Crypto)?;
            let record = SecretRecord {
                created: now,
                devices: vec![Device {
                    label: DEFAULT_DEVICE.into(),
                    secret: entry.secret,
                    params: entry.params,
                    created: now,
                }],
                backup,
                deliver_to: None,
            };
            match store(&user, &record, existing) {
                Ok(()) => imported.push(Imported {
                    user: user.to_string(),
                    backup_codes: codes.iter().map(|c| c.grouped().to_string()).collect(),
                    notes: entry.notes,
                }),
                Err(e @ AdminError::AlreadyEnrolled(_)) => {
                    skipped.push((entry.line, e.to_string()))
                }
                Err(e) => return Err(e),
            }
        }
        skipped.sort();
        Ok((imported, skipped))
    }

    /// Writes an imported record and a fresh state under the user's lock;
    /// with [`Existing::Keep`] an enrolled user is left alone
    /// ([`AdminError::AlreadyEnrolled`]).
    fn store_import(
        &self,
        user: &Username,
        record: &SecretRecord,
        existing: Existing,
    ) -> Result<(), AdminError> {
        let dir = self.dir()?;
        let _lock = dir.lock(&user.lock_file())?;
        if existing == Existing::Keep && UserFiles::new(&dir, user).record_exists()? {
            return Err(AdminError::AlreadyEnrolled(user.to_string()));
        }
        UserFiles::new(&dir, user).reset_state(&State::default())?;
        UserFiles::new(&dir, user).write_record(record)?;
        Ok(())
    }
}
