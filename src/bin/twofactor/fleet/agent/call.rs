//! A request from the module, checked and decoded into the typed arguments
//! of one SQL call (docs/fleet.md, "Host functions"): hex into bytes,
//! base32 into the secret's bytes, numbers into the SQL widths. Anything
//! that does not fit is a bad request, answered before a database client is
//! even taken from the pool.

use std::fmt;

use data_encoding::HEXLOWER_PERMISSIVE;
use pam_twofactor::fleet::protocol::{BackupSetWire, Request};
use pam_twofactor::otp::backup::{HASH_BYTES, KdfParams, SALT_BYTES};
use pam_twofactor::otp::{self, Algorithm, SecretKey};
use pam_twofactor::records::MAX_BACKUP_CODES;
use pam_twofactor::records::username::Username;
use zeroize::Zeroizing;

/// The longest remote host name or device label passed on.
const MAX_TEXT: usize = 255;
/// The longest answer passed on as a code (TOTP codes have 6 to 8
/// digits; anything longer could only be a backup code, sent hashed).
const MAX_CODE: usize = 8;
/// The most digits a backup code may have.
const MAX_BACKUP_DIGITS: u8 = 32;

/// One call of a host function, with its arguments in SQL types.
#[derive(Debug)]
pub enum Call {
    /// `twofactor.begin_login(p_user, p_rhost)`.
    Begin { user: String, rhost: Option<String> },
    /// `twofactor.attempt(…)`.
    Attempt(Attempt),
    /// `twofactor.record_delivery(p_user, p_generation, p_hash)`.
    RecordDelivery {
        user: String,
        generation: i64,
        hash: Vec<u8>,
    },
    /// `twofactor.enroll_first(…)`.
    EnrollFirst(EnrollFirst),
}

/// `attempt`'s arguments.
#[derive(Debug)]
pub struct Attempt {
    pub user: String,
    pub generation: i64,
    pub code: Option<Zeroizing<String>>,
    pub hash: Option<Vec<u8>>,
    pub hash_deferred: bool,
    pub drift_device: Option<String>,
    pub drift_step: Option<i64>,
    pub rhost: Option<String>,
}

/// `enroll_first`'s arguments.
pub struct EnrollFirst {
    pub user: String,
    pub label: String,
    pub secret: SecretKey,
    pub algorithm: &'static str,
    pub digits: i32,
    pub period: i32,
    pub code: Zeroizing<String>,
    pub backup_digits: i32,
    pub backup_salt: Vec<u8>,
    pub m_cost: i32,
    pub t_cost: i32,
    pub p_cost: i32,
    pub backup_hashes: Vec<Vec<u8>>,
}

impl fmt::Debug for EnrollFirst {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret's own Debug is redacted; the code is not printed.
        f.debug_struct("EnrollFirst")
            .field("user", &self.user)
            .field("label", &self.label)
            .field("algorithm", &self.algorithm)
            .field("backup_hashes", &self.backup_hashes.len())
            .finish_non_exhaustive()
    }
}

/// Why a request cannot be called. Never holds a code, hash or secret.
#[derive(Debug, PartialEq, Eq)]
pub struct BadRequest(pub String);

impl fmt::Display for BadRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(what: impl Into<String>) -> BadRequest {
    BadRequest(what.into())
}

impl Call {
    /// The function's name, for log lines.
    pub fn op(&self) -> &'static str {
        match self {
            Call::Begin { .. } => "begin_login",
            Call::Attempt(_) => "attempt",
            Call::RecordDelivery { .. } => "record_delivery",
            Call::EnrollFirst(_) => "enroll_first",
        }
    }

    /// The user the call is for (a checked name, safe in a log line).
    pub fn user(&self) -> &str {
        match self {
            Call::Begin { user, .. } | Call::RecordDelivery { user, .. } => user,
            Call::Attempt(a) => &a.user,
            Call::EnrollFirst(e) => &e.user,
        }
    }

    /// Checks and decodes `request`.
    pub fn from_request(request: Request) -> Result<Call, BadRequest> {
        match request {
            Request::Begin { user, rhost } => Ok(Call::Begin {
                user: user_name(user)?,
                rhost: optional_text("rhost", rhost)?,
            }),
            Request::Attempt(a) => {
                let code = match a.code {
                    Some(code) if !is_digits(&code, 1..=MAX_CODE) => {
                        return Err(bad("code: not 1 to 8 ASCII digits"));
                    }
                    code => code,
                };
                let hash = a
                    .hash
                    .as_deref()
                    .map(|h| hex_exact("hash", h, HASH_BYTES))
                    .transpose()?;
                let (drift_device, drift_step) = match a.drift {
                    Some(echo) => (Some(text("drift.device", echo.device)?), Some(echo.step)),
                    None => (None, None),
                };
                Ok(Call::Attempt(Attempt {
                    user: user_name(a.user)?,
                    generation: a.generation,
                    code,
                    hash,
                    hash_deferred: a.hash_deferred,
                    drift_device,
                    drift_step,
                    rhost: optional_text("rhost", a.rhost)?,
                }))
            }
            Request::RecordDelivery {
                user,
                generation,
                hash,
            } => Ok(Call::RecordDelivery {
                user: user_name(user)?,
                generation,
                hash: hex_exact("hash", &hash, HASH_BYTES)?,
            }),
            Request::EnrollFirst(e) => {
                let secret = SecretKey::from_base32(&e.secret)
                    .map_err(|error| bad(format!("secret: {error}")))?;
                let algorithm = Algorithm::parse(&e.algorithm)
                    .ok_or_else(|| bad("algorithm: not SHA1, SHA256 or SHA512"))?;
                if !otp::DIGITS.contains(&e.digits) {
                    return Err(bad("digits: not 6, 7 or 8"));
                }
                if !otp::PERIODS.contains(&e.period) {
                    return Err(bad("period: not 10 to 300 seconds"));
                }
                if !is_digits(&e.code, usize::from(e.digits)..=usize::from(e.digits)) {
                    return Err(bad("code: not as many ASCII digits as the device makes"));
                }
                let backup = backup_set(&e.backup)?;
                Ok(Call::EnrollFirst(EnrollFirst {
                    user: user_name(e.user)?,
                    label: text("label", e.label)?,
                    secret,
                    algorithm: algorithm.name(),
                    digits: i32::from(e.digits),
                    period: sql_int("period", e.period)?,
                    code: e.code,
                    backup_digits: backup.0,
                    backup_salt: backup.1,
                    m_cost: backup.2.0,
                    t_cost: backup.2.1,
                    p_cost: backup.2.2,
                    backup_hashes: backup.3,
                }))
            }
        }
    }
}

/// A backup set's digits, salt, costs and hashes in SQL types.
type SqlBackupSet = (i32, Vec<u8>, (i32, i32, i32), Vec<Vec<u8>>);

fn backup_set(set: &BackupSetWire) -> Result<SqlBackupSet, BadRequest> {
    if set.digits == 0 || set.digits > MAX_BACKUP_DIGITS {
        return Err(bad("backup.digits: not 1 to 32"));
    }
    let kdf = KdfParams {
        m_cost: set.m_cost,
        t_cost: set.t_cost,
        p_cost: set.p_cost,
    };
    if !kdf.is_valid() {
        return Err(bad("backup: argon2 parameters out of range"));
    }
    if set.hashes.len() > MAX_BACKUP_CODES {
        return Err(bad(format!(
            "backup.hashes: more than {MAX_BACKUP_CODES} hashes"
        )));
    }
    let hashes = set
        .hashes
        .iter()
        .map(|h| hex_exact("backup.hashes", h, HASH_BYTES))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((
        i32::from(set.digits),
        hex_exact("backup.salt", &set.salt, SALT_BYTES)?,
        (
            sql_int("backup.m_cost", set.m_cost)?,
            sql_int("backup.t_cost", set.t_cost)?,
            sql_int("backup.p_cost", set.p_cost)?,
        ),
        hashes,
    ))
}

/// A user name as the module accepts them (records::username).
fn user_name(raw: String) -> Result<String, BadRequest> {
    Username::parse(&raw).map_err(|e| bad(format!("user: {e}")))?;
    Ok(raw)
}

/// Text PostgreSQL can store (no NUL) that a log line can show escaped.
fn text(key: &str, raw: String) -> Result<String, BadRequest> {
    if raw.is_empty() || raw.len() > MAX_TEXT || raw.contains('\0') {
        return Err(bad(format!(
            "{key}: empty, longer than {MAX_TEXT} bytes or with a NUL"
        )));
    }
    Ok(raw)
}

/// An optional text; empty is absent (PAM_RHOST is often set to "" for a
/// local login, which must not make the request bad).
fn optional_text(key: &str, raw: Option<String>) -> Result<Option<String>, BadRequest> {
    raw.filter(|raw| !raw.is_empty())
        .map(|raw| text(key, raw))
        .transpose()
}

fn is_digits(text: &str, lengths: std::ops::RangeInclusive<usize>) -> bool {
    lengths.contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit())
}

/// Exactly `bytes` bytes of hex (either case). The value is never echoed.
fn hex_exact(key: &str, text: &str, bytes: usize) -> Result<Vec<u8>, BadRequest> {
    let wrong = || bad(format!("{key}: not {bytes} bytes of hex"));
    let hex = &HEXLOWER_PERMISSIVE;
    if hex.decode_len(text.len()).map_err(|_| wrong())? != bytes {
        return Err(wrong());
    }
    hex.decode(text.as_bytes()).map_err(|_| wrong())
}

/// A number that fits PostgreSQL's `int`.
fn sql_int(key: &str, value: u32) -> Result<i32, BadRequest> {
    i32::try_from(value).map_err(|_| bad(format!("{key}: too large")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pam_twofactor::fleet::protocol::{AttemptRequest, DriftEcho, EnrollRequest};

    fn attempt(code: Option<&str>, hash: Option<&str>) -> Request {
        Request::Attempt(AttemptRequest {
            user: "alice".into(),
            generation: 4,
            code: code.map(|c| Zeroizing::new(c.into())),
            hash: hash.map(Into::into),
            hash_deferred: false,
            drift: Some(DriftEcho {
                device: "work.phone".into(),
                step: 59_000_000,
            }),
            rhost: Some("192.0.2.7".into()),
        })
    }

    fn enroll(secret: &str, salt: &str, hashes: Vec<String>) -> Request {
        Request::EnrollFirst(EnrollRequest {
            user: "carol".into(),
            label: "default".into(),
            secret: Zeroizing::new(secret.into()),
            algorithm: "SHA256".into(),
            digits: 8,
            period: 60,
            code: Zeroizing::new("01234567".into()),
            backup: BackupSetWire {
                digits: 16,
                salt: salt.into(),
                m_cost: 19_456,
                t_cost: 2,
                p_cost: 1,
                hashes,
            },
        })
    }

    /// A well-formed attempt decodes into its SQL arguments, hash as bytes.
    #[test]
    fn attempt_decodes_into_typed_arguments() {
        let Ok(Call::Attempt(a)) =
            Call::from_request(attempt(Some("012345"), Some(&"Ab".repeat(32))))
        else {
            panic!("not decoded");
        };
        assert_eq!(a.user, "alice");
        assert_eq!(a.generation, 4);
        assert_eq!(a.code.as_deref().map(String::as_str), Some("012345"));
        assert_eq!(a.hash, Some(vec![0xab; 32]));
        assert_eq!(a.drift_device.as_deref(), Some("work.phone"));
        assert_eq!(a.drift_step, Some(59_000_000));
        assert_eq!(a.rhost.as_deref(), Some("192.0.2.7"));
    }

    /// A first-login enrollment decodes secret, salt and hashes to bytes.
    #[test]
    fn enrollment_decodes_secret_salt_and_hashes() {
        let Ok(Call::EnrollFirst(e)) = Call::from_request(enroll(
            "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
            &"00".repeat(16),
            vec!["11".repeat(32), "22".repeat(32)],
        )) else {
            panic!("not decoded");
        };
        assert_eq!(e.secret.as_bytes().len(), 20);
        assert_eq!(e.algorithm, "SHA256");
        assert_eq!((e.digits, e.period), (8, 60));
        assert_eq!(e.backup_salt, vec![0; 16]);
        assert_eq!(e.backup_hashes, vec![vec![0x11; 32], vec![0x22; 32]]);
        assert_eq!((e.m_cost, e.t_cost, e.p_cost), (19_456, 2, 1));
        // Neither the secret nor the code reaches Debug.
        let debug = format!("{e:?}");
        assert!(
            !debug.contains("01234567") && !debug.contains("JBSWY3DP"),
            "{debug}"
        );
    }

    /// An empty remote host (a local login) is no remote host, not an error.
    #[test]
    fn empty_rhost_is_none() {
        let request = Request::Begin {
            user: "bob".into(),
            rhost: Some(String::new()),
        };
        assert!(matches!(
            Call::from_request(request),
            Ok(Call::Begin { rhost: None, .. })
        ));
    }

    /// Garbage in any field is a bad request that does not echo the value.
    #[test]
    fn garbage_is_a_bad_request_without_the_value() {
        let cases = [
            attempt(Some("12a456"), None),
            attempt(Some("123456789"), None),
            attempt(None, Some("zz")),
            attempt(None, Some(&"ab".repeat(31))),
            Request::Begin {
                user: "../etc".into(),
                rhost: None,
            },
            Request::Begin {
                user: "bob".into(),
                rhost: Some("a\0b".into()),
            },
            Request::RecordDelivery {
                user: "bob".into(),
                generation: 1,
                hash: "secret-ish".into(),
            },
            enroll("not base32!", &"00".repeat(16), vec![]),
            enroll("JBSWY3DPEHPK3PXP", &"00".repeat(16), vec![]),
            enroll("JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP", "00", vec![]),
            enroll(
                "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP",
                &"00".repeat(16),
                vec!["x".into()],
            ),
        ];
        for request in cases {
            let shown = format!("{request:?}");
            match Call::from_request(request) {
                Err(BadRequest(why)) => {
                    for value in ["12a456", "123456789", "secret-ish", "not base32"] {
                        assert!(!why.contains(value), "{why}");
                    }
                }
                Ok(call) => panic!("accepted {shown}: {call:?}"),
            }
        }
    }
}
