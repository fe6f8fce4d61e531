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

pub mod user;
pub mod username;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::otp::backup::{HASH_BYTES, KdfParams, SALT_BYTES};
use crate::otp::{self, Algorithm, SecretError, SecretKey, TotpParams};

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
/// Used backup-code hashes a state may remember.
const MAX_USED_BACKUP_CODES: usize = 1000;
/// Send times a state may remember (`[delivery] max_per_hour` is at most 100).
const MAX_DELIVERIES: usize = 100;
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
}

impl fmt::Display for RecordError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RecordError::Parse(m) => write!(f, "cannot parse: {}", m.trim_end()),
            RecordError::Version(v) => {
                write!(
                    f,
                    "format version {v} is not supported (this build reads {VERSION})"
                )
            }
            RecordError::Invalid(what) => write!(f, "invalid: {what}"),
            RecordError::Write(e) => write!(f, "cannot be written: {e}"),
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

/// Salts and hashes are stored as lower-case hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly `N` bytes of hex (either case).
fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    // `from_str_radix` alone would also take a sign (`+f`).
    if text.len() != 2 * N || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Remote hosts kept for `[grace]`: address and host-name characters only,
/// so they are safe in messages and logs.
pub fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'-' | b'_' | b'%'))
}

/// One authenticator.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Device {
    pub label: String,
    pub secret: SecretKey,
    pub params: TotpParams,
    pub created: u64,
}

/// The backup-code set.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupSet {
    pub created: u64,
    /// Digits per code (16, or 8 when imported from google-authenticator).
    pub digits: u8,
    pub kdf: KdfParams,
    pub salt: [u8; SALT_BYTES],
    pub hashes: Vec<[u8; HASH_BYTES]>,
}

/// The secret record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRecord {
    pub created: u64,
    pub devices: Vec<Device>,
    pub backup: BackupSet,
    /// Where `[delivery] command` sends codes (a phone number, a chat id).
    pub deliver_to: Option<String>,
}

/// Delivery targets: printable, no control characters, bounded.
pub fn valid_target(target: &str) -> bool {
    !target.is_empty() && target.len() <= 128 && !target.chars().any(char::is_control)
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSecretRecord<'a> {
    version: u32,
    created: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deliver_to: Option<String>,
    #[serde(borrow)]
    devices: Vec<RawDevice<'a>>,
    backup_codes: RawBackupSet,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice<'a> {
    label: String,
    /// Borrowed from the record's bytes (wiped with them) when the string
    /// has no escapes; an owned copy is wiped on drop (below).
    #[serde(borrow)]
    secret: Cow<'a, str>,
    algorithm: String,
    digits: u8,
    period: u32,
    created: u64,
}

impl Drop for RawDevice<'_> {
    fn drop(&mut self) {
        if let Cow::Owned(secret) = &mut self.secret {
            secret.zeroize();
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackupSet {
    created: u64,
    kdf: String,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
    /// Digits per code: 16 for ours, 8 for codes imported from
    /// google-authenticator (absent = 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digits: Option<u8>,
    hashes: Vec<String>,
}

/// Device labels: short, printable, safe in messages.
pub fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 32
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl RawDevice<'_> {
    fn check(&self) -> Result<Device, Invalid> {
        let label = || self.label.clone();
        let algorithm = Algorithm::parse(&self.algorithm).ok_or_else(|| Invalid::Algorithm {
            label: label(),
            name: self.algorithm.clone(),
        })?;
        if !otp::DIGITS.contains(&self.digits) {
            return Err(Invalid::Digits {
                label: label(),
                digits: self.digits,
            });
        }
        if !otp::PERIODS.contains(&self.period) {
            return Err(Invalid::Period {
                label: label(),
                period: self.period,
            });
        }
        let secret =
            SecretKey::from_base32_min(&self.secret, crate::admin::import::MIN_IMPORT_BITS)
                .map_err(|error| Invalid::Secret {
                    label: label(),
                    error,
                })?;
        Ok(Device {
            label: label(),
            secret,
            params: TotpParams {
                algorithm,
                digits: self.digits,
                period: self.period,
            },
            created: self.created,
        })
    }
}

impl RawBackupSet {
    fn check(&self) -> Result<BackupSet, Invalid> {
        let kdf = KdfParams {
            m_cost: self.m_cost,
            t_cost: self.t_cost,
            p_cost: self.p_cost,
        };
        if self.kdf != "argon2id" {
            return Err(Invalid::Kdf(self.kdf.clone()));
        }
        if !kdf.is_valid() {
            return Err(Invalid::KdfCost(kdf));
        }
        let digits = self.digits.unwrap_or(16);
        if digits != 16 && digits != 8 {
            return Err(Invalid::BackupDigits(digits));
        }
        let salt = unhex::<SALT_BYTES>(&self.salt).ok_or(Invalid::Salt)?;
        if self.hashes.len() > MAX_BACKUP_CODES {
            return Err(Invalid::BackupCount(self.hashes.len()));
        }
        let hashes = self
            .hashes
            .iter()
            .map(|h| unhex::<HASH_BYTES>(h))
            .collect::<Option<Vec<_>>>()
            .ok_or(Invalid::BackupHash)?;
        Ok(BackupSet {
            created: self.created,
            digits,
            kdf,
            salt,
            hashes,
        })
    }
}

impl SecretRecord {
    /// Parses and checks a secret record.
    pub fn parse(bytes: &[u8]) -> Result<SecretRecord, RecordError> {
        let raw: RawSecretRecord = from_toml(bytes)?;
        if raw.version != VERSION {
            return Err(RecordError::Version(raw.version));
        }
        if raw.devices.is_empty() || raw.devices.len() > MAX_DEVICES {
            return Err(Invalid::DeviceCount(raw.devices.len()).into());
        }
        let mut devices: Vec<Device> = Vec::with_capacity(raw.devices.len());
        for d in &raw.devices {
            if !valid_label(&d.label) {
                return Err(Invalid::Label(d.label.clone()).into());
            }
            if devices.iter().any(|x| x.label == d.label) {
                return Err(Invalid::RepeatedLabel(d.label.clone()).into());
            }
            devices.push(d.check()?);
        }
        let backup = raw.backup_codes.check()?;
        if raw.deliver_to.as_deref().is_some_and(|t| !valid_target(t)) {
            return Err(Invalid::DeliverTo.into());
        }
        Ok(SecretRecord {
            created: raw.created,
            devices,
            deliver_to: raw.deliver_to.clone(),
            backup,
        })
    }

    /// Serializes the record (the text holds the secret: zeroized on drop).
    pub fn to_toml(&self) -> Result<Zeroizing<String>, RecordError> {
        let raw = RawSecretRecord {
            version: VERSION,
            created: self.created,
            deliver_to: self.deliver_to.clone(),
            devices: self
                .devices
                .iter()
                .map(|d| RawDevice {
                    label: d.label.clone(),
                    // Copied out of the wiped buffer; RawDevice wipes the copy.
                    secret: Cow::Owned(d.secret.to_base32().to_string()),
                    algorithm: d.params.algorithm.name().into(),
                    digits: d.params.digits,
                    period: d.params.period,
                    created: d.created,
                })
                .collect(),
            backup_codes: RawBackupSet {
                created: self.backup.created,
                kdf: "argon2id".into(),
                m_cost: self.backup.kdf.m_cost,
                t_cost: self.backup.kdf.t_cost,
                p_cost: self.backup.kdf.p_cost,
                salt: hex(&self.backup.salt),
                digits: (self.backup.digits != 16).then_some(self.backup.digits),
                hashes: self.backup.hashes.iter().map(|h| hex(h)).collect(),
            },
        };
        to_toml(&raw).map(Zeroizing::new)
    }
}

/// The mutable state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct State {
    /// Per device label: the newest time step accepted (RFC 6238 §5.2).
    pub last_accepted_step: BTreeMap<String, u64>,
    /// Consecutive failures since the last success or unlock.
    pub failures: u32,
    /// Unix time until which every attempt is refused.
    pub locked_until: Option<u64>,
    /// Start of the current rate-limit window.
    pub rate_window_start: u64,
    /// Attempts (any outcome) in the current window.
    pub rate_window_attempts: u32,
    /// Hashes of consumed backup codes.
    pub used_backup_codes: Vec<[u8; HASH_BYTES]>,
    /// Per device label: learned clock offset in steps (device minus us).
    pub drift_steps: BTreeMap<String, i64>,
    /// Per remote host: time of the last success from it (`[grace]`).
    pub grace: BTreeMap<String, u64>,
    /// A code sent by `[delivery]`: its hash and expiry.
    pub delivered: Option<Delivered>,
    /// When codes were sent (for `max_per_hour`).
    pub deliveries: Vec<u64>,
}

/// A delivered code waiting to be typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    pub hash: [u8; HASH_BYTES],
    pub expires: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawState {
    version: u32,
    #[serde(default)]
    failures: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    locked_until: Option<u64>,
    #[serde(default)]
    rate_window_start: u64,
    #[serde(default)]
    rate_window_attempts: u32,
    #[serde(default)]
    used_backup_codes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delivered_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    delivered_expires: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    deliveries: Vec<u64>,
    #[serde(default)]
    last_accepted_step: BTreeMap<String, u64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    drift_steps: BTreeMap<String, i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    grace: BTreeMap<String, u64>,
}

impl State {
    /// Parses and checks a state file.
    pub fn parse(bytes: &[u8]) -> Result<State, RecordError> {
        let raw: RawState = from_toml(bytes)?;
        if raw.version != VERSION {
            return Err(RecordError::Version(raw.version));
        }
        for (field, len, max) in [
            (
                "used_backup_codes",
                raw.used_backup_codes.len(),
                MAX_USED_BACKUP_CODES,
            ),
            (
                "last_accepted_step",
                raw.last_accepted_step.len(),
                MAX_DEVICES,
            ),
            ("drift_steps", raw.drift_steps.len(), MAX_DEVICES),
            ("grace", raw.grace.len(), MAX_GRACE_HOSTS),
            ("deliveries", raw.deliveries.len(), MAX_DELIVERIES),
        ] {
            if len > max {
                return Err(Invalid::TooMany { field, max }.into());
            }
        }
        if let Some(label) = raw
            .last_accepted_step
            .keys()
            .chain(raw.drift_steps.keys())
            .find(|l| !valid_label(l))
        {
            return Err(Invalid::Label(label.clone()).into());
        }
        if let Some((label, &steps)) = raw
            .drift_steps
            .iter()
            .find(|(_, d)| d.unsigned_abs() > MAX_DRIFT_STEPS)
        {
            return Err(Invalid::Drift {
                label: label.clone(),
                steps,
            }
            .into());
        }
        let delivered = match (&raw.delivered_code, raw.delivered_expires) {
            (None, None) => None,
            (Some(h), Some(expires)) => Some(Delivered {
                hash: unhex::<HASH_BYTES>(h).ok_or(Invalid::DeliveredHash)?,
                expires,
            }),
            _ => return Err(Invalid::DeliveredPair.into()),
        };
        let used_backup_codes = raw
            .used_backup_codes
            .iter()
            .map(|h| unhex::<HASH_BYTES>(h))
            .collect::<Option<Vec<_>>>()
            .ok_or(Invalid::UsedBackupHash)?;
        Ok(State {
            last_accepted_step: raw.last_accepted_step,
            failures: raw.failures,
            locked_until: raw.locked_until,
            rate_window_start: raw.rate_window_start,
            rate_window_attempts: raw.rate_window_attempts,
            used_backup_codes,
            drift_steps: raw.drift_steps,
            // Hosts the module would not record (a quote, a space: a file
            // from before hosts were restricted, or edited by hand) are
            // dropped, not refused: they never came from a login, and
            // losing a grace entry only means that host's next login asks
            // for a code.
            grace: raw
                .grace
                .into_iter()
                .filter(|(h, _)| valid_host(h))
                .collect(),
            delivered,
            deliveries: raw.deliveries,
        })
    }

    /// Serializes the state.
    pub fn to_toml(&self) -> Result<String, RecordError> {
        to_toml(&RawState {
            version: VERSION,
            failures: self.failures,
            locked_until: self.locked_until,
            rate_window_start: self.rate_window_start,
            rate_window_attempts: self.rate_window_attempts,
            used_backup_codes: self.used_backup_codes.iter().map(|h| hex(h)).collect(),
            delivered_code: self.delivered.as_ref().map(|d| hex(&d.hash)),
            delivered_expires: self.delivered.as_ref().map(|d| d.expires),
            deliveries: self.deliveries.clone(),
            last_accepted_step: self.last_accepted_step.clone(),
            drift_steps: self.drift_steps.clone(),
            grace: self.grace.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SecretRecord {
        SecretRecord {
            created: 1_900_000_000,
            devices: vec![Device {
                label: DEFAULT_DEVICE.into(),
                secret: SecretKey::new(b"12345678901234567890".to_vec()),
                params: TotpParams {
                    algorithm: Algorithm::Sha256,
                    digits: 8,
                    period: 60,
                },
                created: 1_900_000_000,
            }],
            deliver_to: Some("+15555550100".into()),
            backup: BackupSet {
                created: 1_900_000_001,
                digits: 16,
                kdf: KdfParams::DEFAULT,
                salt: [0xab; SALT_BYTES],
                hashes: vec![[1; HASH_BYTES], [2; HASH_BYTES]],
            },
        }
    }

    /// `sample` with a second device (`tablet`) and 8-digit backup codes.
    fn two_devices() -> SecretRecord {
        let mut two = sample();
        let mut second = two.devices[0].clone();
        second.label = "tablet".into();
        two.devices.push(second);
        two.backup.digits = 8;
        two
    }

    /// A state with every optional field set and entries in every table,
    /// dotted labels among them (written quoted).
    fn every_field_state() -> State {
        let mut state = State {
            failures: 2,
            locked_until: Some(5),
            rate_window_start: 1_907_755_200,
            rate_window_attempts: 3,
            used_backup_codes: vec![[1; HASH_BYTES], [2; HASH_BYTES]],
            delivered: Some(Delivered {
                hash: [3; HASH_BYTES],
                expires: 9,
            }),
            deliveries: vec![1, 2],
            ..State::default()
        };
        state
            .last_accepted_step
            .insert("default".into(), 63_591_840);
        state.last_accepted_step.insert("work.phone".into(), 7);
        state.drift_steps.insert("phone-2".into(), -4);
        state.drift_steps.insert("a.b".into(), 1);
        state.drift_steps.insert("tablet".into(), 3);
        state.grace.insert("192.0.2.5".into(), 1_781_524_800);
        state.grace.insert("2001:db8::1".into(), 3);
        state
    }

    /// A secret record survives a write and read unchanged.
    #[test]
    fn secret_record_round_trips() {
        for record in [sample(), two_devices()] {
            let text = record.to_toml().unwrap();
            assert!(text.contains("version = 1"), "{}", text.as_str());
            assert!(text.contains("secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\""));
            assert_eq!(SecretRecord::parse(text.as_bytes()).unwrap(), record);
        }
    }

    /// The state survives a write and read unchanged.
    #[test]
    fn state_round_trips() {
        let mut state = State {
            failures: 3,
            locked_until: Some(1_900_000_100),
            rate_window_start: 1_900_000_000,
            rate_window_attempts: 4,
            used_backup_codes: vec![[9; HASH_BYTES]],
            ..State::default()
        };
        state
            .last_accepted_step
            .insert("default".into(), 63_333_333);
        for state in [State::default(), state, every_field_state()] {
            let text = state.to_toml().unwrap();
            assert!(text.starts_with("version = 1\n"), "{text}");
            assert_eq!(State::parse(text.as_bytes()).unwrap(), state);
        }
    }

    /// The secret is read in place from the record's bytes (wiped with
    /// them), not copied into a buffer nobody wipes.
    #[test]
    fn the_secret_is_borrowed_from_the_record_bytes() {
        let text = sample().to_toml().unwrap();
        let raw: RawSecretRecord = from_toml(text.as_bytes()).unwrap();
        assert!(matches!(raw.devices[0].secret, Cow::Borrowed(_)));
    }

    /// Records as builds before serde wrote them, byte for byte (the
    /// secret record by the toml crate, the state by a hand writer), read
    /// to the same values.
    #[test]
    fn records_written_by_earlier_builds_read_the_same() {
        let secret = "version = 1
created = 1900000000
deliver_to = \"+15555550100\"

[[devices]]
label = \"default\"
secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"
algorithm = \"SHA256\"
digits = 8
period = 60
created = 1900000000

[[devices]]
label = \"tablet\"
secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\"
algorithm = \"SHA256\"
digits = 8
period = 60
created = 1900000000

[backup_codes]
created = 1900000001
kdf = \"argon2id\"
m_cost = 19456
t_cost = 2
p_cost = 1
salt = \"abababababababababababababababab\"
digits = 8
hashes = [\"0101010101010101010101010101010101010101010101010101010101010101\", \"0202020202020202020202020202020202020202020202020202020202020202\"]
";
        assert_eq!(
            SecretRecord::parse(secret.as_bytes()).unwrap(),
            two_devices()
        );
        let fresh = "version = 1
failures = 0
rate_window_start = 0
rate_window_attempts = 0
used_backup_codes = []

[last_accepted_step]
";
        assert_eq!(State::parse(fresh.as_bytes()).unwrap(), State::default());
        let state = "version = 1
failures = 2
locked_until = 5
rate_window_start = 1907755200
rate_window_attempts = 3
used_backup_codes = [\"0101010101010101010101010101010101010101010101010101010101010101\", \"0202020202020202020202020202020202020202020202020202020202020202\"]
delivered_code = \"0303030303030303030303030303030303030303030303030303030303030303\"
delivered_expires = 9
deliveries = [1, 2]

[last_accepted_step]
default = 63591840
\"work.phone\" = 7

[drift_steps]
\"a.b\" = 1
phone-2 = -4
tablet = 3

[grace]
\"192.0.2.5\" = 1781524800
\"2001:db8::1\" = 3
";
        assert_eq!(State::parse(state.as_bytes()).unwrap(), every_field_state());
    }

    /// A label with a `.` or `-` (allowed: `add-device --label work.phone`)
    /// survives the state's per-device tables and the secret record: bare,
    /// `work.phone = 5` would be a dotted key, a table, and the state
    /// written by the device's first login could not be read again (every
    /// later login of the user refused: "invalid type: map").
    #[test]
    fn dotted_labels_survive_a_write_and_read() {
        let labels = [
            "work.phone",
            "phone-2",
            "-",
            ".",
            "a..b",
            "x.",
            "_",
            "default",
        ];
        let mut state = State::default();
        let mut record = sample();
        for (i, label) in labels.iter().enumerate() {
            state
                .last_accepted_step
                .insert(label.to_string(), i as u64 + 1);
            state.drift_steps.insert(label.to_string(), -(i as i64) - 1);
            if *label != DEFAULT_DEVICE {
                let mut device = record.devices[0].clone();
                device.label = label.to_string();
                record.devices.push(device);
            }
        }
        let text = state.to_toml().unwrap();
        assert!(text.contains("\n\"work.phone\" = 1\n"), "{text}");
        assert!(text.contains("\n\"work.phone\" = -1\n"), "{text}");
        assert!(text.contains("\nphone-2 = 2\n"), "{text}");
        assert_eq!(State::parse(text.as_bytes()).unwrap(), state);
        let text = record.to_toml().unwrap();
        assert!(text.contains("label = \"work.phone\""), "{}", text.as_str());
        assert_eq!(SecretRecord::parse(text.as_bytes()).unwrap(), record);
    }

    /// Grace hosts the module would not record are dropped when read (the
    /// fuzzer's reproducers: hosts with a quote or a space).
    #[test]
    fn unrecordable_grace_hosts_are_dropped_on_read() {
        for text in [
            "version = 1\n[grace]\n\"a\\\"b\" = 5\n\"192.0.2.1\" = 7\n",
            "version = 1\n[grace]\n\"a\\\" = 1 #\" = 5\n\"192.0.2.1\" = 7\n",
            "version = 1\n[grace]\n\"a b\" = 5\n\"192.0.2.1\" = 7\n",
        ] {
            let state = State::parse(text.as_bytes()).unwrap();
            assert_eq!(
                state.grace.keys().collect::<Vec<_>>(),
                ["192.0.2.1"],
                "{text}"
            );
            let again = state.to_toml().unwrap();
            assert_eq!(State::parse(again.as_bytes()).unwrap(), state);
        }
    }

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

    /// A backup-code hash that is not hex, or too short, refuses the record.
    #[test]
    fn a_bad_backup_hash_is_refused() {
        let text = sample().to_toml().unwrap();
        let first = text.find("hashes = [\"").unwrap() + "hashes = [\"".len();
        let mut not_hex = text.to_string();
        not_hex.replace_range(first..first + 1, "z");
        let mut short = text.to_string();
        short.replace_range(first..first + 2, "");
        for broken in [not_hex, short] {
            assert_eq!(
                SecretRecord::parse(broken.as_bytes()),
                Err(RecordError::Invalid(Invalid::BackupHash)),
                "{broken}"
            );
        }
    }

    /// Unknown fields, other versions and out-of-range values are refused,
    /// each with the variant that names the problem.
    #[test]
    fn bad_records_are_refused() {
        let good = sample().to_toml().unwrap().to_string();
        let label = || DEFAULT_DEVICE.to_string();
        let cases = [
            (
                good.replace("version = 1", "version = 2"),
                RecordError::Version(2),
            ),
            (
                good.replace("digits = 8", "digits = 11"),
                Invalid::Digits {
                    label: label(),
                    digits: 11,
                }
                .into(),
            ),
            (
                good.replace("digits = 8", "digits = 0"),
                Invalid::Digits {
                    label: label(),
                    digits: 0,
                }
                .into(),
            ),
            (
                good.replace("period = 60", "period = 0"),
                Invalid::Period {
                    label: label(),
                    period: 0,
                }
                .into(),
            ),
            (
                good.replace("SHA256", "MD5"),
                Invalid::Algorithm {
                    label: label(),
                    name: "MD5".into(),
                }
                .into(),
            ),
            (
                good.replace("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "GEZDGNBV"),
                Invalid::Secret {
                    label: label(),
                    error: SecretError::BadLength(40),
                }
                .into(),
            ),
            (
                good.replace("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "not-base32!"),
                Invalid::Secret {
                    label: label(),
                    error: SecretError::NotBase32,
                }
                .into(),
            ),
            (
                good.replace("label = \"default\"", "label = \"../x\""),
                Invalid::Label("../x".into()).into(),
            ),
            (
                two_devices()
                    .to_toml()
                    .unwrap()
                    .replace("label = \"tablet\"", "label = \"default\""),
                Invalid::RepeatedLabel(label()).into(),
            ),
            (
                format!(
                    "version = 1\ncreated = 1\ndevices = []\n{}",
                    &good[good.find("[backup_codes]").unwrap()..]
                ),
                Invalid::DeviceCount(0).into(),
            ),
            (
                good.replace("argon2id", "scrypt"),
                Invalid::Kdf("scrypt".into()).into(),
            ),
            (
                good.replace("t_cost = 2", "t_cost = 0"),
                Invalid::KdfCost(KdfParams {
                    t_cost: 0,
                    ..KdfParams::DEFAULT
                })
                .into(),
            ),
            (
                good.replace("p_cost = 1\n", "p_cost = 1\ndigits = 10\n"),
                Invalid::BackupDigits(10).into(),
            ),
            (
                good.replace("salt = \"ab", "salt = \"zz"),
                Invalid::Salt.into(),
            ),
            (good.replace("+15555550100", ""), Invalid::DeliverTo.into()),
            (
                format!("extra = 1\n{good}"),
                RecordError::Parse(String::new()),
            ),
            ("\u{0}".to_string(), RecordError::Parse(String::new())),
            (
                good[..good.len() / 2].to_string(),
                RecordError::Parse(String::new()),
            ),
        ];
        for (text, want) in cases {
            let got = SecretRecord::parse(text.as_bytes()).unwrap_err();
            match (&got, &want) {
                // The message is the toml crate's.
                (RecordError::Parse(_), RecordError::Parse(_)) => {}
                _ => assert_eq!(got, want, "{text}"),
            }
        }
        let mut many = sample();
        many.backup.hashes = vec![[0; HASH_BYTES]; MAX_BACKUP_CODES + 1];
        assert_eq!(
            SecretRecord::parse(many.to_toml().unwrap().as_bytes()),
            Err(Invalid::BackupCount(101).into())
        );
        let Err(RecordError::Parse(unknown)) =
            SecretRecord::parse(format!("extra = 1\n{good}").as_bytes())
        else {
            panic!("an unknown field parsed");
        };
        assert!(unknown.contains("unknown field"), "{unknown}");
        assert!(matches!(
            State::parse(b"version = 1\nfailures = -1"),
            Err(RecordError::Parse(_))
        ));
        assert!(matches!(
            State::parse(b"version = 1\nnope = 1"),
            Err(RecordError::Parse(_))
        ));
        assert!(matches!(
            State::parse(b"failures = 1"),
            Err(RecordError::Parse(_))
        ));
        assert_eq!(State::parse(b"version = 1").unwrap(), State::default());
    }

    /// A state with a bad label, drift, hash or too many entries is refused
    /// with the variant that names the problem.
    #[test]
    fn bad_states_are_refused() {
        let hash = format!("\"{}\"", "ab".repeat(HASH_BYTES));
        let many_hosts: String = (0..=MAX_GRACE_HOSTS)
            .map(|i| format!("\"h{i}\" = 1\n"))
            .collect();
        let cases: [(String, Invalid); 8] = [
            (
                "[last_accepted_step]\n\"a b\" = 1\n".into(),
                Invalid::Label("a b".into()),
            ),
            (
                "[drift_steps]\nx = 1001\n".into(),
                Invalid::Drift {
                    label: "x".into(),
                    steps: 1001,
                },
            ),
            (
                "[drift_steps]\nx = -1001\n".into(),
                Invalid::Drift {
                    label: "x".into(),
                    steps: -1001,
                },
            ),
            (format!("delivered_code = {hash}\n"), Invalid::DeliveredPair),
            ("delivered_expires = 5\n".into(), Invalid::DeliveredPair),
            (
                "delivered_code = \"ab\"\ndelivered_expires = 5\n".into(),
                Invalid::DeliveredHash,
            ),
            (
                format!("used_backup_codes = [{hash}, \"ab\"]\n"),
                Invalid::UsedBackupHash,
            ),
            (
                format!("[grace]\n{many_hosts}"),
                Invalid::TooMany {
                    field: "grace",
                    max: MAX_GRACE_HOSTS,
                },
            ),
        ];
        for (body, want) in cases {
            let text = format!("version = 1\n{body}");
            assert_eq!(
                State::parse(text.as_bytes()),
                Err(RecordError::Invalid(want)),
                "{text}"
            );
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
                "format version 2 is not supported (this build reads 1)",
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
        ];
        for (error, want) in cases {
            assert_eq!(error.to_string(), want);
        }
    }
}
