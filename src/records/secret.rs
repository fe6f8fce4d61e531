//! `<user>.secret`, written only by the CLI: the devices with their
//! secrets and parameters, the backup-code set (salt, cost, hashes) and
//! where delivered codes go.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use super::{
    Invalid, MAX_BACKUP_CODES, MAX_DEVICES, RecordError, VERSION, from_toml, hex, to_toml, unhex,
    valid_label, valid_target,
};
use crate::otp::backup::{HASH_BYTES, KdfParams, SALT_BYTES};
use crate::otp::{self, Algorithm, SecretKey, TotpParams};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::SecretError;
    use crate::records::DEFAULT_DEVICE;

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

    /// The secret is read in place from the record's bytes (wiped with
    /// them), not copied into a buffer nobody wipes.
    #[test]
    fn the_secret_is_borrowed_from_the_record_bytes() {
        let text = sample().to_toml().unwrap();
        let raw: RawSecretRecord = from_toml(text.as_bytes()).unwrap();
        assert!(matches!(raw.devices[0].secret, Cow::Borrowed(_)));
    }

    /// Secret records as builds before serde wrote them (the toml crate),
    /// byte for byte, read to the same values.
    #[test]
    fn secret_records_written_by_earlier_builds_read_the_same() {
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
    }

    /// A label with a `.` or `-` (allowed: `add-device --label work.phone`)
    /// survives the secret record, where labels are quoted strings.
    #[test]
    fn dotted_labels_survive_a_write_and_read() {
        let labels = super::super::LABELS_TO_ROUND_TRIP;
        let mut record = sample();
        for label in labels {
            if label != DEFAULT_DEVICE {
                let mut device = record.devices[0].clone();
                device.label = label.to_string();
                record.devices.push(device);
            }
        }
        let text = record.to_toml().unwrap();
        assert!(text.contains("label = \"work.phone\""), "{}", text.as_str());
        assert_eq!(SecretRecord::parse(text.as_bytes()).unwrap(), record);
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
    }
}
