//! The two per-user files, as versioned TOML with `deny_unknown_fields`,
//! read and written only through serde and the `toml` crate: raw structs
//! at the edge, checked into typed values (parse, don't validate).
//!
//! `<user>.secret` (written only by the CLI): devices with their secrets and
//! parameters, and the backup-code set (salt, cost, hashes).
//! `<user>.state` (written under the user's lock, by the module and by
//! `twofactor unlock`): last accepted step per device, failures, lock,
//! rate-limit window, used backup codes.
//!
//! Devices are a list with labels from the start so that several devices
//! per user fit without a format break; version 1 writes one, `default`.
//!
//! `secret` and `state` hold each file's typed record and its raw serde
//! form; this module the errors, limits and validators both share.
//! `user` reads and writes one user's files; `username` validates names.

mod secret;
mod state;
pub mod user;
pub mod username;

pub use secret::{BackupSet, Device, SecretRecord};
pub use state::{Delivered, STATE_VERSION, State, StateFile};

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::otp::backup::{HASH_BYTES, KdfParams, SALT_BYTES};
use crate::otp::{self, SecretError};

/// The format version both files carry.
pub const VERSION: u32 = 1;
/// No valid record is larger than this.
pub const MAX_RECORD_BYTES: u64 = 64 * 1024;
/// The label of the device `enroll` creates.
pub const DEFAULT_DEVICE: &str = "default";
/// Backup codes a record may hold (`[backup_codes] count` goes up to it).
pub const MAX_BACKUP_CODES: usize = 100;
/// Remote hosts remembered for `[grace]` per user.
pub const MAX_GRACE_HOSTS: usize = 64;
/// Devices a secret record may hold.
const MAX_DEVICES: usize = 16;
/// Clock offsets (in steps) a state may hold for a device.
const MAX_DRIFT_STEPS: u64 = 1000;

/// Why a record could not be used or written.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Not UTF-8 TOML of the expected shape (unknown keys included): the
    /// `toml` crate's message only, never its error, which holds a copy of
    /// the whole text (the secret, for a secret record).
    Parse(String),
    /// A version this build does not know.
    Version(u32),
    /// A field with a value outside its allowed range.
    Invalid(Invalid),
    /// The record could not be serialized (nothing was written).
    Write(toml::ser::Error),
    /// A state file that does not match its checksum, or has zeros in it:
    /// a write cut short (a crash), or an edit by hand.
    Torn,
}

/// What is wrong with a field of a record that parsed as TOML.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    /// A secret record lists this many devices.
    DeviceCount(usize),
    /// A device label (in the secret record or a state table) outside
    /// `valid_label`.
    Label(String),
    /// Two devices of one secret record share a label.
    RepeatedLabel(String),
    /// A device names an algorithm other than SHA1, SHA256, SHA512.
    Algorithm { label: String, name: String },
    /// A device's code length is outside `otp::DIGITS`.
    Digits { label: String, digits: u8 },
    /// A device's time step is outside `otp::PERIODS`.
    Period { label: String, period: u32 },
    /// A device's secret is not base32 or has the wrong length.
    Secret { label: String, error: SecretError },
    /// The backup codes' KDF is not argon2id.
    Kdf(String),
    /// The argon2id cost is outside what argon2 and this build accept.
    KdfCost(KdfParams),
    /// Backup codes of a length other than 8 or 16 digits.
    BackupDigits(u8),
    /// More than `MAX_BACKUP_CODES` backup-code hashes.
    BackupCount(usize),
    /// The backup-code salt is not `SALT_BYTES` in hex.
    Salt,
    /// A backup-code hash is not `HASH_BYTES` in hex.
    BackupHash,
    /// `deliver_to` is empty, too long or has control characters.
    DeliverTo,
    /// A state table or list holds more entries than it may.
    TooMany { field: &'static str, max: usize },
    /// A learned clock offset beyond `MAX_DRIFT_STEPS`.
    Drift { label: String, steps: i64 },
    /// Only one of `delivered_code` and `delivered_expires` is present.
    DeliveredPair,
    /// `delivered_code` is not a hash in hex.
    DeliveredHash,
    /// An entry of `used_backup_codes` is not a hash in hex.
    UsedBackupHash,
    /// A version 2 state without `generation`, or a version 1 state with one.
    Generation,
    /// A version 2 state that does not begin with its checksum line.
    NoChecksum,
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Parse(m) => write!(f, "cannot parse: {}", m.trim_end()),
            RecordError::Version(v) => {
                write!(
                    f,
                    "format version {v} is not supported (this build reads secret records of \
                     version {VERSION}, states of versions {VERSION} and {STATE_VERSION})"
                )
            }
            RecordError::Invalid(what) => write!(f, "invalid: {what}"),
            RecordError::Write(e) => write!(f, "cannot be written: {e}"),
            RecordError::Torn => write!(
                f,
                "does not match its checksum: a write was cut short (a crash) or it was \
                 edited by hand (change a state only with twofactor unlock)"
            ),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const LABELS: &str = "1 to 32 of A-Z a-z 0-9 _ . -";
        let hex_digits = |n: usize| 2 * n;
        match self {
            Invalid::DeviceCount(n) => {
                write!(f, "{n} devices; 1 to {MAX_DEVICES} devices are required")
            }
            Invalid::Label(label) => write!(f, "bad device label {label:?} ({LABELS})"),
            Invalid::RepeatedLabel(label) => write!(f, "repeated device label {label:?}"),
            Invalid::Algorithm { label, name } => write!(
                f,
                "device {label:?}: unknown algorithm {name:?} (SHA1, SHA256 or SHA512)"
            ),
            Invalid::Digits { label, digits } => write!(
                f,
                "device {label:?}: digits {digits} not in {}..={}",
                otp::DIGITS.start(),
                otp::DIGITS.end()
            ),
            Invalid::Period { label, period } => write!(
                f,
                "device {label:?}: period {period} not in {}..={}",
                otp::PERIODS.start(),
                otp::PERIODS.end()
            ),
            Invalid::Secret { label, error } => write!(f, "device {label:?}: {error}"),
            Invalid::Kdf(kdf) => {
                write!(f, "backup codes: kdf {kdf:?} is not supported (argon2id)")
            }
            Invalid::KdfCost(p) => write!(
                f,
                "backup codes: unsupported argon2id cost m_cost = {}, t_cost = {}, p_cost = {} \
                 (t_cost 1..=16, p_cost at least 1, m_cost from 8 KiB per lane up to 262144 KiB)",
                p.m_cost, p.t_cost, p.p_cost
            ),
            Invalid::BackupDigits(d) => {
                write!(f, "backup codes: digits {d} is not 8 or 16")
            }
            Invalid::BackupCount(n) => {
                write!(f, "backup codes: {n} hashes, more than {MAX_BACKUP_CODES}")
            }
            Invalid::Salt => write!(
                f,
                "backup codes: bad salt (expected {} hex digits)",
                hex_digits(SALT_BYTES)
            ),
            Invalid::BackupHash => write!(
                f,
                "backup codes: bad hash (expected {} hex digits each)",
                hex_digits(HASH_BYTES)
            ),
            Invalid::DeliverTo => f.write_str("deliver_to: empty, too long or control characters"),
            Invalid::TooMany { field, max } => {
                write!(f, "too many entries in {field} (at most {max})")
            }
            Invalid::Drift { label, steps } => write!(
                f,
                "drift_steps: device {label:?}: {steps} is out of range -{MAX_DRIFT_STEPS}..={MAX_DRIFT_STEPS}"
            ),
            Invalid::DeliveredPair => {
                f.write_str("delivered_code and delivered_expires go together")
            }
            Invalid::DeliveredHash => write!(
                f,
                "bad delivered code hash (expected {} hex digits)",
                hex_digits(HASH_BYTES)
            ),
            Invalid::UsedBackupHash => write!(
                f,
                "bad used backup code hash (expected {} hex digits each)",
                hex_digits(HASH_BYTES)
            ),
            Invalid::Generation => write!(
                f,
                "a version 2 state needs a generation, a version 1 state has none"
            ),
            Invalid::NoChecksum => write!(
                f,
                "a version 2 state must begin with its checksum line (it was edited by hand?)"
            ),
        }
    }
}

impl std::error::Error for RecordError {}

impl From<Invalid> for RecordError {
    fn from(what: Invalid) -> RecordError {
        RecordError::Invalid(what)
    }
}

/// The raw form of a record: `toml` with serde, which also gives the
/// error messages.
fn from_toml<'t, T: Deserialize<'t>>(bytes: &'t [u8]) -> Result<T, RecordError> {
    let text = std::str::from_utf8(bytes).map_err(|_| RecordError::Parse("not UTF-8".into()))?;
    toml::from_str(text).map_err(|e| RecordError::Parse(e.message().to_string()))
}

/// The text of a raw record; the `toml` crate quotes keys that need it (a
/// label `work.phone` bare would be a dotted key, a table).
fn to_toml<T: Serialize>(raw: &T) -> Result<String, RecordError> {
    toml::to_string(raw).map_err(RecordError::Write)
}

/// Salts and hashes are stored as lower-case hex (and so the fleet's
/// protocol carries them).
pub(crate) fn hex(bytes: &[u8]) -> String {
    data_encoding::HEXLOWER.encode(bytes)
}

/// Exactly `N` bytes of hex (either case).
pub(crate) fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let hex = &data_encoding::HEXLOWER_PERMISSIVE;
    if hex.decode_len(text.len()).ok()? != N {
        return None;
    }
    let mut out = [0u8; N];
    hex.decode_mut(text.as_bytes(), &mut out).ok()?;
    Some(out)
}

/// Device labels that must survive a write and a read of either record
/// (`.` and `-` are allowed in labels; bare, `work.phone` would be a dotted
/// key in TOML).
#[cfg(test)]
const LABELS_TO_ROUND_TRIP: [&str; 8] = [
    "work.phone",
    "phone-2",
    "-",
    ".",
    "a..b",
    "x.",
    "_",
    "default",
];

/// Remote hosts kept for `[grace]`: address and host-name characters only,
/// so they are safe in messages and logs.
pub fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'-' | b'_' | b'%'))
}

/// Delivery targets: printable, no control characters, bounded.
pub fn valid_target(target: &str) -> bool {
    !target.is_empty() && target.len() <= 128 && !target.chars().any(char::is_control)
}

/// Device labels: short, printable, safe in messages.
pub fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 32
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hex is read in either case, exactly `N` bytes long, digits only
    /// (`from_str_radix` alone would take `+f`).
    #[test]
    fn hex_reads_only_hex_of_the_right_length() {
        assert_eq!(unhex::<2>("0aFf"), Some([0x0a, 0xff]));
        assert_eq!(hex(&[0x0a, 0xff]), "0aff");
        for bad in ["0aF", "0aFf0", "+f00", "0x0a", "g000", "é0", ""] {
            assert_eq!(unhex::<2>(bad), None, "{bad:?}");
        }
    }

    /// Every error says what is wrong in words an admin can act on: the
    /// field, the value found and what is allowed.
    #[test]
    fn every_error_names_the_field_and_what_is_allowed() {
        let label = || "work.phone".to_string();
        let write = <toml::ser::Error as serde::ser::Error>::custom("unsupported value");
        let cases: Vec<(RecordError, &str)> = vec![
            (
                RecordError::Parse("unknown field `x`\n".into()),
                "cannot parse: unknown field `x`",
            ),
            (
                RecordError::Version(2),
                "format version 2 is not supported (this build reads secret records of version 1, states of versions 1 and 2)",
            ),
            (
                RecordError::Write(write),
                "cannot be written: unsupported value",
            ),
            (
                Invalid::DeviceCount(17).into(),
                "invalid: 17 devices; 1 to 16 devices are required",
            ),
            (
                Invalid::Label("a b".into()).into(),
                "invalid: bad device label \"a b\" (1 to 32 of A-Z a-z 0-9 _ . -)",
            ),
            (
                Invalid::RepeatedLabel(label()).into(),
                "invalid: repeated device label \"work.phone\"",
            ),
            (
                Invalid::Algorithm {
                    label: label(),
                    name: "MD5".into(),
                }
                .into(),
                "invalid: device \"work.phone\": unknown algorithm \"MD5\" (SHA1, SHA256 or SHA512)",
            ),
            (
                Invalid::Digits {
                    label: label(),
                    digits: 11,
                }
                .into(),
                "invalid: device \"work.phone\": digits 11 not in 6..=8",
            ),
            (
                Invalid::Period {
                    label: label(),
                    period: 0,
                }
                .into(),
                "invalid: device \"work.phone\": period 0 not in 10..=300",
            ),
            (
                Invalid::Secret {
                    label: label(),
                    error: SecretError::NotBase32,
                }
                .into(),
                "invalid: device \"work.phone\": the secret is not valid base32 (A-Z, 2-7)",
            ),
            (
                Invalid::Kdf("scrypt".into()).into(),
                "invalid: backup codes: kdf \"scrypt\" is not supported (argon2id)",
            ),
            (
                Invalid::KdfCost(KdfParams {
                    t_cost: 0,
                    ..KdfParams::DEFAULT
                })
                .into(),
                "invalid: backup codes: unsupported argon2id cost m_cost = 19456, t_cost = 0, p_cost = 1 \
                 (t_cost 1..=16, p_cost at least 1, m_cost from 8 KiB per lane up to 262144 KiB)",
            ),
            (
                Invalid::BackupDigits(10).into(),
                "invalid: backup codes: digits 10 is not 8 or 16",
            ),
            (
                Invalid::BackupCount(101).into(),
                "invalid: backup codes: 101 hashes, more than 100",
            ),
            (
                Invalid::Salt.into(),
                "invalid: backup codes: bad salt (expected 32 hex digits)",
            ),
            (
                Invalid::BackupHash.into(),
                "invalid: backup codes: bad hash (expected 64 hex digits each)",
            ),
            (
                Invalid::DeliverTo.into(),
                "invalid: deliver_to: empty, too long or control characters",
            ),
            (
                Invalid::TooMany {
                    field: "grace",
                    max: 64,
                }
                .into(),
                "invalid: too many entries in grace (at most 64)",
            ),
            (
                Invalid::Drift {
                    label: label(),
                    steps: -1001,
                }
                .into(),
                "invalid: drift_steps: device \"work.phone\": -1001 is out of range -1000..=1000",
            ),
            (
                Invalid::DeliveredPair.into(),
                "invalid: delivered_code and delivered_expires go together",
            ),
            (
                Invalid::DeliveredHash.into(),
                "invalid: bad delivered code hash (expected 64 hex digits)",
            ),
            (
                Invalid::UsedBackupHash.into(),
                "invalid: bad used backup code hash (expected 64 hex digits each)",
            ),
            (
                Invalid::Generation.into(),
                "invalid: a version 2 state needs a generation, a version 1 state has none",
            ),
            (
                Invalid::NoChecksum.into(),
                "invalid: a version 2 state must begin with its checksum line (it was edited by hand?)",
            ),
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
    }
}
