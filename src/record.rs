//! The two per-user files, as versioned TOML with `deny_unknown_fields`.
//!
//! `<user>.secret` (written only by the CLI): devices with their secrets and
//! parameters, and the backup-code set (salt, cost, hashes).
//! `<user>.state` (written under the user's lock, by the module and by
//! `twofactor unlock`): last accepted step per device, failures, lock,
//! rate-limit window, used backup codes.
//!
//! Devices are a list with labels from the start so that several devices
//! per user fit without a format break; version 1 writes one, `default`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::backup::{HASH_BYTES, KdfParams, SALT_BYTES};
use crate::otp::{self, Algorithm, SecretKey, TotpParams};

/// The format version both files carry.
pub const VERSION: u32 = 1;
/// No valid record is larger than this.
pub const MAX_RECORD_BYTES: u64 = 64 * 1024;
/// The label of the device `enroll` creates.
pub const DEFAULT_DEVICE: &str = "default";
/// Remote hosts remembered for `[grace]` per user.
pub const MAX_GRACE_HOSTS: usize = 64;

/// Why a record could not be used.
#[derive(Debug, PartialEq, Eq)]
pub enum RecordError {
    /// Not UTF-8 TOML of the expected shape (unknown keys included).
    Parse(String),
    /// A version this build does not know.
    Version(u32),
    /// A field with a value outside its allowed range.
    Invalid(String),
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
            RecordError::Invalid(m) => write!(f, "invalid: {m}"),
        }
    }
}

impl std::error::Error for RecordError {}

fn parse_toml<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, RecordError> {
    let text = std::str::from_utf8(bytes).map_err(|_| RecordError::Parse("not UTF-8".into()))?;
    // The fast reader covers what we write; the toml crate has the last word
    // (and the error messages) for everything else.
    if let Some(value) = crate::fasttoml::parse(text) {
        if let Ok(parsed) = T::deserialize(value) {
            return Ok(parsed);
        }
    }
    toml::from_str(text).map_err(|e| RecordError::Parse(e.message().to_string()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != 2 * N {
        return None;
    }
    let nibble = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in bytes.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
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
struct RawSecretRecord {
    version: u32,
    created: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deliver_to: Option<String>,
    devices: Vec<RawDevice>,
    backup_codes: RawBackupSet,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    label: String,
    secret: Zeroizing<String>,
    algorithm: String,
    digits: u8,
    period: u32,
    created: u64,
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

impl SecretRecord {
    /// Parses and checks a secret record.
    pub fn parse(bytes: &[u8]) -> Result<SecretRecord, RecordError> {
        let raw: RawSecretRecord = parse_toml(bytes)?;
        if raw.version != VERSION {
            return Err(RecordError::Version(raw.version));
        }
        if raw.devices.is_empty() || raw.devices.len() > 16 {
            return Err(RecordError::Invalid("1 to 16 devices are required".into()));
        }
        let mut devices = Vec::with_capacity(raw.devices.len());
        for d in &raw.devices {
            if !valid_label(&d.label) || devices.iter().any(|x: &Device| x.label == d.label) {
                return Err(RecordError::Invalid(format!(
                    "bad or repeated device label {:?}",
                    d.label
                )));
            }
            let algorithm = Algorithm::parse(&d.algorithm).ok_or_else(|| {
                RecordError::Invalid(format!("unknown algorithm {:?}", d.algorithm))
            })?;
            if !otp::DIGITS.contains(&d.digits) {
                return Err(RecordError::Invalid(format!(
                    "digits {} not in 6..=8",
                    d.digits
                )));
            }
            if !otp::PERIODS.contains(&d.period) {
                return Err(RecordError::Invalid(format!(
                    "period {} not in 10..=300",
                    d.period
                )));
            }
            let secret = SecretKey::from_base32_min(&d.secret, crate::import::MIN_IMPORT_BITS)
                .map_err(|e| RecordError::Invalid(format!("device {:?}: {e}", d.label)))?;
            devices.push(Device {
                label: d.label.clone(),
                secret,
                params: TotpParams {
                    algorithm,
                    digits: d.digits,
                    period: d.period,
                },
                created: d.created,
            });
        }
        let b = &raw.backup_codes;
        let kdf = KdfParams {
            m_cost: b.m_cost,
            t_cost: b.t_cost,
            p_cost: b.p_cost,
        };
        if b.kdf != "argon2id" || !kdf.is_valid() {
            return Err(RecordError::Invalid(
                "backup codes: unsupported kdf or cost".into(),
            ));
        }
        let digits = b.digits.unwrap_or(16);
        if digits != 16 && digits != 8 {
            return Err(RecordError::Invalid(format!(
                "backup codes: digits {digits} is not 8 or 16"
            )));
        }
        if raw.deliver_to.as_deref().is_some_and(|t| !valid_target(t)) {
            return Err(RecordError::Invalid(
                "deliver_to: empty, too long or control characters".into(),
            ));
        }
        let salt = unhex::<SALT_BYTES>(&b.salt)
            .ok_or_else(|| RecordError::Invalid("backup codes: bad salt".into()))?;
        if b.hashes.len() > 100 {
            return Err(RecordError::Invalid("backup codes: more than 100".into()));
        }
        let hashes = b
            .hashes
            .iter()
            .map(|h| unhex::<HASH_BYTES>(h))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| RecordError::Invalid("backup codes: bad hash".into()))?;
        Ok(SecretRecord {
            created: raw.created,
            devices,
            deliver_to: raw.deliver_to.clone(),
            backup: BackupSet {
                created: b.created,
                digits,
                kdf,
                salt,
                hashes,
            },
        })
    }

    /// Serializes the record (the text holds the secret: zeroized on drop).
    pub fn to_toml(&self) -> Zeroizing<String> {
        let raw = RawSecretRecord {
            version: VERSION,
            created: self.created,
            deliver_to: self.deliver_to.clone(),
            devices: self
                .devices
                .iter()
                .map(|d| RawDevice {
                    label: d.label.clone(),
                    secret: d.secret.to_base32(),
                    algorithm: d.params.algorithm.name().to_string(),
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
        Zeroizing::new(toml::to_string(&raw).unwrap_or_default())
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
        let raw: RawState = parse_toml(bytes)?;
        if raw.version != VERSION {
            return Err(RecordError::Version(raw.version));
        }
        if raw.used_backup_codes.len() > 1000
            || raw.last_accepted_step.len() > 16
            || raw.drift_steps.len() > 16
            || raw.grace.len() > MAX_GRACE_HOSTS
            || raw.deliveries.len() > 100
        {
            return Err(RecordError::Invalid("too many entries".into()));
        }
        if raw
            .last_accepted_step
            .keys()
            .chain(raw.drift_steps.keys())
            .any(|l| !valid_label(l))
        {
            return Err(RecordError::Invalid("bad device label".into()));
        }
        if raw
            .grace
            .keys()
            .any(|h| h.is_empty() || h.len() > 255 || h.chars().any(char::is_control))
        {
            return Err(RecordError::Invalid("bad grace host".into()));
        }
        if raw.drift_steps.values().any(|d| d.unsigned_abs() > 1000) {
            return Err(RecordError::Invalid("drift out of range".into()));
        }
        let delivered = match (&raw.delivered_code, raw.delivered_expires) {
            (None, None) => None,
            (Some(h), Some(expires)) => Some(Delivered {
                hash: unhex::<HASH_BYTES>(h)
                    .ok_or_else(|| RecordError::Invalid("bad delivered code hash".into()))?,
                expires,
            }),
            _ => {
                return Err(RecordError::Invalid(
                    "delivered_code and delivered_expires go together".into(),
                ));
            }
        };
        let used_backup_codes = raw
            .used_backup_codes
            .iter()
            .map(|h| unhex::<HASH_BYTES>(h))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| RecordError::Invalid("bad used backup code hash".into()))?;
        Ok(State {
            last_accepted_step: raw.last_accepted_step,
            failures: raw.failures,
            locked_until: raw.locked_until,
            rate_window_start: raw.rate_window_start,
            rate_window_attempts: raw.rate_window_attempts,
            used_backup_codes,
            drift_steps: raw.drift_steps,
            grace: raw.grace,
            delivered,
            deliveries: raw.deliveries,
        })
    }

    /// Serializes the state.
    pub fn to_toml(&self) -> String {
        let raw = RawState {
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
        };
        toml::to_string(&raw).unwrap_or_default()
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

    /// A secret record survives a write and read unchanged.
    #[test]
    fn secret_record_round_trips() {
        let record = sample();
        let text = record.to_toml();
        assert!(text.contains("version = 1"), "{}", text.as_str());
        assert!(text.contains("secret = \"GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\""));
        assert_eq!(SecretRecord::parse(text.as_bytes()).unwrap(), record);
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
        assert_eq!(State::parse(state.to_toml().as_bytes()).unwrap(), state);
    }

    /// Unknown fields, other versions and out-of-range values are refused.
    #[test]
    fn bad_records_are_refused() {
        let good = sample().to_toml().to_string();
        let cases = [
            (good.replace("version = 1", "version = 2"), "version 2"),
            (format!("extra = 1\n{good}"), "unknown field"),
            (good.replace("digits = 8", "digits = 11"), "digits 11"),
            (good.replace("digits = 8", "digits = 0"), "digits 0"),
            (good.replace("period = 60", "period = 0"), "period 0"),
            (good.replace("SHA256", "MD5"), "unknown algorithm"),
            (
                good.replace("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "GEZDGNBV"),
                "bits",
            ),
            (
                good.replace("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ", "not-base32!"),
                "base32",
            ),
            (
                good.replace("label = \"default\"", "label = \"../x\""),
                "label",
            ),
            ("\u{0}".to_string(), "parse"),
            (good[..good.len() / 2].to_string(), "parse"),
        ];
        for (text, want) in cases {
            let err = SecretRecord::parse(text.as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "want {want:?}, got {err:?}");
        }
        assert!(State::parse(b"version = 1\nfailures = -1").is_err());
        assert!(State::parse(b"version = 1\nnope = 1").is_err());
        assert!(matches!(
            State::parse(b"failures = 1"),
            Err(RecordError::Parse(_))
        ));
        assert_eq!(State::parse(b"version = 1").unwrap(), State::default());
    }
}
