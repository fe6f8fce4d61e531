//! What the module and the agent say to each other (docs/fleet.md, "The
//! agent protocol"): one request and one reply per connection, each a TOML
//! document ended by the writer shutting down its side (the module already
//! links `toml` for its config; no second format inside sshd). Field names
//! and verdict words are those of the SQL functions the agent calls.

use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// The most bytes a request or a reply may have (a first-login enrollment
/// with the largest backup set is under 8 KiB).
pub const MAX_MESSAGE: u64 = 64 * 1024;

/// A request from the module.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    /// `begin_login`: what the host needs before it prompts. Changes nothing.
    Begin { user: String, rhost: Option<String> },
    /// `attempt`: one answer, decided under the user's row lock.
    Attempt(AttemptRequest),
    /// `record_delivery`: store the hash of a code about to be sent by
    /// message, if the limits allow it.
    RecordDelivery {
        user: String,
        generation: i64,
        /// Hex of the argon2 hash (the set's salt and parameters).
        hash: String,
    },
    /// `enroll_first`: create the enrollment of a user who has none,
    /// confirmed by a code from the new device.
    EnrollFirst(EnrollRequest),
}

/// One answer to the prompt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptRequest {
    pub user: String,
    /// `BeginReply::generation`: the enrollment the prompt was shown for.
    pub generation: i64,
    /// The digits, when they could be a TOTP code.
    pub code: Option<Zeroizing<String>>,
    /// Hex of the argon2 hash, when the answer could be a backup or
    /// delivered code and was hashed.
    pub hash: Option<String>,
    /// The answer could be a backup code but was not hashed: the cheap
    /// look said the attempt is refused anyway.
    #[serde(default)]
    pub hash_deferred: bool,
    /// Set when confirming a suspected drift: what `DriftSuspected` said.
    pub drift: Option<DriftEcho>,
    pub rhost: Option<String>,
}

/// The device and step of a drift check, echoed with the next code; the
/// database checks them against the check it stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftEcho {
    pub device: String,
    pub step: i64,
}

/// A first-login enrollment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrollRequest {
    pub user: String,
    pub label: String,
    /// Base32 of the new secret (seen by this host once, as the QR code).
    pub secret: Zeroizing<String>,
    pub algorithm: String,
    pub digits: u8,
    pub period: u32,
    /// The code the user typed from the new device.
    pub code: Zeroizing<String>,
    pub backup: BackupSetWire,
}

/// A backup set as the database keeps it: digits, argon2 salt and
/// parameters (hex salt), and the hex hashes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupSetWire {
    pub digits: u8,
    pub salt: String,
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
    pub hashes: Vec<String>,
}

/// The agent's reply.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case", deny_unknown_fields)]
pub enum Reply {
    Begin(BeginReply),
    Attempt(AttemptReply),
    Delivery(DeliveryReply),
    Enroll {
        verdict: EnrollVerdict,
    },
    /// No decision could be made: the login is denied.
    Unavailable {
        reason: Unavailable,
        /// For the log line (never shown to the user).
        detail: String,
    },
}

/// `begin_login`'s row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeginReply {
    pub enrolled: bool,
    pub generation: i64,
    /// A success from this remote host within the fleet's grace period.
    pub grace: bool,
    /// The cheap look: `LockedOut` or `RateLimited` if the attempt would be
    /// refused before its code is looked at.
    pub refusal: Option<Refusal>,
    pub refusal_until: Option<i64>,
    pub deliver_to: Option<String>,
    /// The backup set (absent when not enrolled).
    pub backup: Option<BackupKdf>,
    /// The fleet policy allows enrollment at first login.
    pub enroll_at_login: bool,
    /// What a new enrollment uses.
    pub totp_algorithm: String,
    pub totp_digits: u8,
    pub totp_period: u32,
    pub backup_codes: u32,
    /// The database's clock.
    pub now: i64,
    /// A code sent by message is waiting to be typed (only then is a
    /// TOTP-length answer worth an argon2 hash).
    pub delivered_pending: bool,
}

/// What the host needs to hash an answer like the set's codes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupKdf {
    pub digits: u8,
    pub salt: String,
    pub m_cost: u32,
    pub t_cost: u32,
    pub p_cost: u32,
}

/// A refusal decided before the code is looked at.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Refusal {
    LockedOut,
    RateLimited,
}

/// `attempt`'s row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttemptReply {
    pub verdict: AttemptVerdict,
    pub device: Option<String>,
    pub step: Option<i64>,
    pub drift_offset: Option<i64>,
    pub off_by: Option<i64>,
    pub period: Option<u32>,
    pub remaining: Option<u32>,
    pub until: Option<i64>,
}

/// The words of `attempt`'s `verdict` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptVerdict {
    AllowTotp,
    AllowDrift,
    AllowBackup,
    AllowDelivered,
    DriftSuspected,
    WrongCode,
    Replayed,
    Malformed,
    DriftNotConfirmed,
    DriftSuspectedLocked,
    LockedOut,
    RateLimited,
    RecordChanged,
    NotEnrolled,
    RetryWithHash,
}

impl AttemptVerdict {
    /// The SQL word (the agent maps the column with this).
    pub fn parse(word: &str) -> Option<AttemptVerdict> {
        use AttemptVerdict::*;
        Some(match word {
            "allow_totp" => AllowTotp,
            "allow_drift" => AllowDrift,
            "allow_backup" => AllowBackup,
            "allow_delivered" => AllowDelivered,
            "drift_suspected" => DriftSuspected,
            "wrong_code" => WrongCode,
            "replayed" => Replayed,
            "malformed" => Malformed,
            "drift_not_confirmed" => DriftNotConfirmed,
            "drift_suspected_locked" => DriftSuspectedLocked,
            "locked_out" => LockedOut,
            "rate_limited" => RateLimited,
            "record_changed" => RecordChanged,
            "not_enrolled" => NotEnrolled,
            "retry_with_hash" => RetryWithHash,
            _ => return None,
        })
    }
}

/// `record_delivery`'s row.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryReply {
    pub verdict: DeliveryVerdict,
    pub expires: Option<i64>,
    pub until: Option<i64>,
}

/// The words of `record_delivery`'s `verdict` column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryVerdict {
    Stored,
    HourFull,
    LockedOut,
    RateLimited,
    RecordChanged,
    NotEnrolled,
    NoTarget,
}

impl DeliveryVerdict {
    /// The SQL word.
    pub fn parse(word: &str) -> Option<DeliveryVerdict> {
        use DeliveryVerdict::*;
        Some(match word {
            "stored" => Stored,
            "hour_full" => HourFull,
            "locked_out" => LockedOut,
            "rate_limited" => RateLimited,
            "record_changed" => RecordChanged,
            "not_enrolled" => NotEnrolled,
            "no_target" => NoTarget,
            _ => return None,
        })
    }
}

/// The words of `enroll_first`'s verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnrollVerdict {
    Enrolled,
    WrongCode,
    Exists,
    NotAllowed,
}

impl EnrollVerdict {
    /// The SQL word.
    pub fn parse(word: &str) -> Option<EnrollVerdict> {
        Some(match word {
            "enrolled" => EnrollVerdict::Enrolled,
            "wrong_code" => EnrollVerdict::WrongCode,
            "exists" => EnrollVerdict::Exists,
            "not_allowed" => EnrollVerdict::NotAllowed,
            _ => return None,
        })
    }
}

/// Why the agent could not decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unavailable {
    /// No connection to the database (down, unreachable, refused the
    /// host's credentials).
    DatabaseDown,
    /// The database did not answer within the deadline (a commit waiting
    /// for a synchronous standby that is not there looks like this).
    Timeout,
    /// The fleet requires a synchronous standby and writes are not
    /// protected by one.
    NotSynchronous,
    /// The database refused the request (permission, schema version).
    Refused,
    /// The request could not be read.
    BadRequest,
}

impl Unavailable {
    /// What the user is told.
    pub fn to_user(self) -> &'static str {
        match self {
            Unavailable::DatabaseDown | Unavailable::Refused | Unavailable::BadRequest => {
                "The second-factor database cannot be reached. Try again later or ask your administrator."
            }
            Unavailable::Timeout | Unavailable::NotSynchronous => {
                "The second-factor database is not accepting writes. Try again later or ask your administrator."
            }
        }
    }
}

/// The TOML text of a message.
pub fn encode<T: Serialize>(message: &T) -> Result<String, toml::ser::Error> {
    toml::to_string(message)
}

/// A message from its TOML text.
pub fn decode<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, toml::de::Error> {
    toml::from_str(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(message: &T) -> T
    where
        T: Serialize + for<'de> Deserialize<'de>,
    {
        let text = encode(message).expect("encodes");
        decode(&text).unwrap_or_else(|e| panic!("{text}\n{e}"))
    }

    #[test]
    fn requests_round_trip() {
        let requests = [
            Request::Begin {
                user: "alice".into(),
                rhost: Some("192.0.2.7".into()),
            },
            Request::Begin {
                user: "bob".into(),
                rhost: None,
            },
            Request::Attempt(AttemptRequest {
                user: "alice".into(),
                generation: 3,
                code: Some(Zeroizing::new("123456".into())),
                hash: None,
                hash_deferred: false,
                drift: Some(DriftEcho {
                    device: "work.phone".into(),
                    step: 59_000_000,
                }),
                rhost: None,
            }),
            Request::RecordDelivery {
                user: "alice".into(),
                generation: 1,
                hash: "00ff".into(),
            },
            Request::EnrollFirst(EnrollRequest {
                user: "carol".into(),
                label: "default".into(),
                secret: Zeroizing::new("JBSWY3DPEHPK3PXP".into()),
                algorithm: "SHA1".into(),
                digits: 6,
                period: 30,
                code: Zeroizing::new("000000".into()),
                backup: BackupSetWire {
                    digits: 16,
                    salt: "aa".into(),
                    m_cost: 19_456,
                    t_cost: 2,
                    p_cost: 1,
                    hashes: vec!["bb".into(), "cc".into()],
                },
            }),
        ];
        for request in requests {
            assert_eq!(round_trip(&request), request);
        }
    }

    #[test]
    fn replies_round_trip() {
        let replies = [
            Reply::Begin(BeginReply {
                enrolled: true,
                generation: 7,
                grace: false,
                refusal: Some(Refusal::LockedOut),
                refusal_until: Some(1_800_000_000),
                deliver_to: None,
                backup: Some(BackupKdf {
                    digits: 16,
                    salt: "00".into(),
                    m_cost: 19_456,
                    t_cost: 2,
                    p_cost: 1,
                }),
                enroll_at_login: false,
                totp_algorithm: "SHA1".into(),
                totp_digits: 6,
                totp_period: 30,
                backup_codes: 10,
                now: 1_799_999_000,
                delivered_pending: false,
            }),
            Reply::Attempt(AttemptReply {
                verdict: AttemptVerdict::AllowBackup,
                device: None,
                step: None,
                drift_offset: None,
                off_by: None,
                period: None,
                remaining: Some(9),
                until: None,
            }),
            Reply::Delivery(DeliveryReply {
                verdict: DeliveryVerdict::HourFull,
                expires: None,
                until: Some(5),
            }),
            Reply::Enroll {
                verdict: EnrollVerdict::Exists,
            },
            Reply::Unavailable {
                reason: Unavailable::Timeout,
                detail: "no answer within 8 s".into(),
            },
        ];
        for reply in replies {
            assert_eq!(round_trip(&reply), reply);
        }
    }

    #[test]
    fn unknown_fields_and_words_are_refused() {
        assert!(decode::<Request>("op = \"begin\"\nuser = \"a\"\nextra = 1\n").is_err());
        assert!(decode::<Request>("op = \"drop_table\"\nuser = \"a\"\n").is_err());
        assert_eq!(AttemptVerdict::parse("allow_everyone"), None);
        assert_eq!(
            AttemptVerdict::parse("drift_suspected_locked"),
            Some(AttemptVerdict::DriftSuspectedLocked)
        );
    }
}
