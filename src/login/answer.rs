//! The argon2 work an answer may need (a backup code, a code sent by
//! message): cheap refusals first, then at most a few hashes at once per host.

use super::AuthError;
use super::input::Answer;
use crate::host::clock::Clock;
use crate::otp::backup::{self, HASH_BYTES};
use crate::policy::{self, Policy};
use crate::records::SecretRecord;
use crate::records::user::UserFiles;
use crate::store::TrustedDir;

/// Whether the answer has the length of this record's backup codes.
pub(super) fn backup_length(answer: &Answer, record: &SecretRecord) -> bool {
    matches!(answer, Answer::Digits(d) if d.len() == usize::from(record.backup.digits))
}

/// The argon2 hash an answer needs, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum AnswerHash {
    /// The answer cannot be a backup or delivered code.
    NotNeeded,
    /// It could be, but a look at the state without the lock showed the
    /// attempt will be refused anyway (locked, rate limited): not hashed
    /// unless the decision under the lock finds otherwise.
    Deferred,
    /// It could be, and nothing refuses it yet: to be hashed.
    Needed,
    Done([u8; HASH_BYTES]),
}

impl AnswerHash {
    pub(super) fn value(self) -> Option<[u8; HASH_BYTES]> {
        match self {
            AnswerHash::Done(hash) => Some(hash),
            AnswerHash::NotNeeded | AnswerHash::Deferred | AnswerHash::Needed => None,
        }
    }
}

/// How many argon2 hashes a host runs at once for logins, whatever the
/// number of parallel attempts: each takes `m_cost` KiB (19 MiB by
/// default), so 64 parallel backup-code attempts stay within about 80 MiB
/// of hashing memory. The slots are lock files in the state directory
/// (names no user name can have: they start with a dot); a crashed holder
/// releases its slot with its fds.
pub(super) const KDF_SLOTS: [&str; 4] = [
    ".kdf-slot-0.lock",
    ".kdf-slot-1.lock",
    ".kdf-slot-2.lock",
    ".kdf-slot-3.lock",
];

/// Whether `name` in the state directory is one of the `KDF_SLOTS`.
pub fn is_kdf_slot(name: &str) -> bool {
    KDF_SLOTS.contains(&name)
}

/// argon2 of `digits` with the record's salt, in one of the `KDF_SLOTS`.
pub(super) fn hash_digits_in_slot(
    dir: &TrustedDir,
    digits: &str,
    record: &SecretRecord,
) -> Result<[u8; HASH_BYTES], AuthError> {
    let _slot = dir.lock_any(&KDF_SLOTS)?;
    backup::hash_digits(digits, &record.backup.salt, record.backup.kdf).ok_or(AuthError::Kdf)
}

/// `hash_digits_in_slot` for an answer (anything but digits hashes nothing
/// the policy could match, and is never asked for).
pub(super) fn hash_in_slot(
    dir: &TrustedDir,
    answer: &Answer,
    record: &SecretRecord,
) -> Result<[u8; HASH_BYTES], AuthError> {
    match answer {
        Answer::Digits(digits) => hash_digits_in_slot(dir, digits, record),
        _ => Err(AuthError::Kdf),
    }
}

/// Whether the answer needs an argon2 hash: when it can be a backup code
/// (by length) or a delivered code (one is pending) — unless the attempt is
/// refused anyway: cheap refusals first (SECURITY.md), so a locked account
/// costs no memory-hard work per guess.
pub(super) fn hash_needed(
    answer: &Answer,
    record: &SecretRecord,
    delivery_possible: bool,
    files: &UserFiles,
    policy: &Policy,
    clock: &dyn Clock,
) -> Result<AnswerHash, AuthError> {
    let Answer::Digits(_) = answer else {
        return Ok(AnswerHash::NotNeeded);
    };
    let backup_length = backup_length(answer, record);
    // Only users who can receive codes pay for the state read of a TOTP code.
    let could_be_delivered = delivery_possible && answer.totp().is_some();
    if !backup_length && !could_be_delivered {
        return Ok(AnswerHash::NotNeeded);
    }
    // Read without the lock: a hint, re-checked under the lock.
    let hint = files.read_state()?;
    if !backup_length && hint.delivered.is_none() {
        return Ok(AnswerHash::NotNeeded);
    }
    if policy::refusal(&hint, clock.now(), policy).is_some() {
        return Ok(AnswerHash::Deferred);
    }
    Ok(AnswerHash::Needed)
}
