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

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::backup::{HASH_BYTES, KdfParams, SALT_BYTES};
use crate::fasttoml::{Doc, Template, Val, borrowed, int, list, text};
use crate::otp::{self, Algorithm, SecretKey, TotpParams};
use crate::timefmt::push_decimal;

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

/// Reads a record in up to three ways, the first that answers winning:
/// 1. the template of the file as we write it (`from_template`: the text
///    is followed piece by piece, without finding out its layout; a login
///    reads two records, and this is ~5x cheaper than 2.);
/// 2. the fast reader of plain TOML with a hand mapping (`from_doc`: a
///    record edited by hand, or written by an older build);
/// 3. the toml crate with serde, which has the last word, and the error
///    messages, for everything else.
///
/// Where 1. or 2. answers, it answers exactly as 3. would (the tests below,
/// and the `record_parse` and `fasttoml_agrees` fuzz targets).
fn parse_toml<'t, T: serde::de::DeserializeOwned>(
    bytes: &'t [u8],
    as_written: impl FnOnce(Template<'t>) -> Option<T>,
    fast: impl FnOnce(&Doc<'t>) -> Option<T>,
) -> Result<T, RecordError> {
    if let Some(parsed) = as_written(Template::new(bytes)) {
        return Ok(parsed);
    }
    let text = std::str::from_utf8(bytes).map_err(|_| RecordError::Parse("not UTF-8".into()))?;
    if let Some(parsed) = crate::fasttoml::read(text).as_ref().and_then(fast) {
        return Ok(parsed);
    }
    toml::from_str(text).map_err(|e| RecordError::Parse(e.message().to_string()))
}

impl<'a> RawSecretRecord<'a> {
    /// A secret record laid out as the `toml` crate writes ours (None =
    /// read it the general way); the same checks as `from_doc`.
    fn from_template(mut t: Template<'a>, decode: Hashes) -> Option<RawSecretRecord<'a>> {
        t.expect("version = ")?;
        let version = t.int()?;
        t.expect("\ncreated = ")?;
        let created = t.int()?;
        let deliver_to = if t.eat("\ndeliver_to = ") {
            Some(t.string()?.to_string())
        } else {
            None
        };
        let mut devices = Vec::with_capacity(1);
        while t.eat("\n\n[[devices]]\nlabel = ") {
            let label = Cow::Borrowed(t.string_among(&[DEFAULT_DEVICE])?);
            t.expect("\nsecret = ")?;
            let secret = Cow::Borrowed(t.string()?);
            t.expect("\nalgorithm = ")?;
            let algorithm = Cow::Borrowed(t.string_among(&["SHA1", "SHA256", "SHA512"])?);
            t.expect("\ndigits = ")?;
            let digits = t.int()?;
            t.expect("\nperiod = ")?;
            let period = t.int()?;
            t.expect("\ncreated = ")?;
            devices.push(RawDevice {
                label,
                secret,
                algorithm,
                digits,
                period,
                created: t.int()?,
            });
        }
        t.expect("\n\n[backup_codes]\ncreated = ")?;
        let set_created = t.int()?;
        t.expect("\nkdf = ")?;
        let kdf = Cow::Borrowed(t.string_among(&["argon2id"])?);
        t.expect("\nm_cost = ")?;
        let m_cost = t.int()?;
        t.expect("\nt_cost = ")?;
        let t_cost = t.int()?;
        t.expect("\np_cost = ")?;
        let p_cost = t.int()?;
        t.expect("\nsalt = ")?;
        let salt = Cow::Borrowed(t.string()?);
        let digits = if t.eat("\ndigits = ") {
            Some(t.int()?)
        } else {
            None
        };
        t.expect("\nhashes = [")?;
        let mut hashes = Vec::new();
        let mut count = 0;
        t.items(|t| {
            count += 1;
            match decode {
                Hashes::Decode => hashes.push(Cow::Borrowed(t.string()?)),
                Hashes::Skip if count <= MAX_BACKUP_CODES => t.skip_string(2 * HASH_BYTES)?,
                Hashes::Skip => return None,
            }
            Some(())
        })?;
        t.expect("\n")?;
        t.at_end().then_some(RawSecretRecord {
            version,
            created,
            deliver_to,
            devices,
            backup_codes: RawBackupSet {
                created: set_created,
                kdf,
                m_cost,
                t_cost,
                p_cost,
                salt,
                digits,
                hashes,
            },
        })
    }

    /// The hand mapping of a fast-read secret record (None = ask toml).
    /// With `Hashes::Skip` the hashes are checked (how many, all strings
    /// of a hash's length) but not built; anything else is left to toml, so
    /// `parse_with` names the problem.
    fn from_doc(doc: &Doc<'a>, decode: Hashes) -> Option<RawSecretRecord<'a>> {
        let devices_n = doc.elements("devices");
        if doc.tables.iter().any(|t| match t.name {
            "devices" => t.elements.is_none(),
            "backup_codes" => t.elements.is_some(),
            _ => true,
        }) {
            return None;
        }
        let (mut version, mut created, mut deliver_to) = (None, None, None);
        let mut b: [Option<Val<'a>>; 8] = [None; 8];
        const DEVICE: [&str; 6] = [
            "label",
            "secret",
            "algorithm",
            "digits",
            "period",
            "created",
        ];
        const BACKUP: [&str; 8] = [
            "created", "kdf", "m_cost", "t_cost", "p_cost", "salt", "digits", "hashes",
        ];
        // The reader numbers `[[devices]]` elements as it meets them and a
        // table is never reopened, so each device's entries come together,
        // in order: a device is built when the next one (or the end) comes.
        let device = |d: &[Option<Val<'a>>; 6]| {
            Some(RawDevice {
                label: borrowed(&d[0]?)?,
                secret: borrowed(&d[1]?)?,
                algorithm: borrowed(&d[2]?)?,
                digits: int(&d[3]?)?,
                period: int(&d[4]?)?,
                created: int(&d[5]?)?,
            })
        };
        let mut devices = Vec::with_capacity(devices_n);
        let mut current: Option<(usize, [Option<Val<'a>>; 6])> = None;
        for e in doc.entries() {
            match (e.table, e.key) {
                ("", "version") => version = int(&e.value),
                ("", "created") => created = int(&e.value),
                ("", "deliver_to") => deliver_to = Some(text(&e.value)?),
                ("", _) => return None,
                ("devices", key) => {
                    let i = DEVICE.iter().position(|k| *k == key)?;
                    match &mut current {
                        Some((element, fields)) if *element == e.element => {
                            fields[i] = Some(e.value)
                        }
                        _ => {
                            if let Some((_, fields)) = &current {
                                devices.push(device(fields)?);
                            }
                            if e.element != devices.len() {
                                return None;
                            }
                            let mut fields = [None; 6];
                            fields[i] = Some(e.value);
                            current = Some((e.element, fields));
                        }
                    }
                }
                ("backup_codes", key) => b[BACKUP.iter().position(|k| *k == key)?] = Some(e.value),
                _ => return None,
            }
        }
        if let Some((_, fields)) = &current {
            devices.push(device(fields)?);
        }
        // An `[[devices]]` element without entries: toml names the error.
        if devices.len() != devices_n {
            return None;
        }
        Some(RawSecretRecord {
            version: version?,
            created: created?,
            deliver_to,
            devices,
            backup_codes: RawBackupSet {
                created: int(&b[0]?)?,
                kdf: borrowed(&b[1]?)?,
                m_cost: int(&b[2]?)?,
                t_cost: int(&b[3]?)?,
                p_cost: int(&b[4]?)?,
                salt: borrowed(&b[5]?)?,
                digits: match b[6] {
                    Some(v) => Some(int(&v)?),
                    None => None,
                },
                hashes: match (decode, b[7]?) {
                    (Hashes::Decode, v) => list(&v, borrowed)?,
                    (Hashes::Skip, Val::Array(a))
                        if a.len() <= MAX_BACKUP_CODES
                            && (a.is_empty() || a.string_len() == Some(2 * HASH_BYTES)) =>
                    {
                        Vec::new()
                    }
                    (Hashes::Skip, _) => return None,
                },
            },
        })
    }
}

impl RawState {
    /// A state laid out as `State::to_toml` writes it (None = read it the
    /// general way). Keys come in increasing order, as written from a
    /// `BTreeMap`: so none comes twice (toml refuses a repeated key).
    fn from_template(mut t: Template) -> Option<RawState> {
        fn keyed<V>(
            t: &mut Template,
            map: &mut BTreeMap<String, V>,
            value: impl Fn(&mut Template) -> Option<V>,
        ) -> Option<()> {
            let mut last: Option<&str> = None;
            while t.peek().is_some_and(|c| c != b'\n') {
                let key = t.key()?;
                if last.is_some_and(|l| l >= key) {
                    return None;
                }
                last = Some(key);
                t.expect(" = ")?;
                let v = value(t)?;
                t.expect("\n")?;
                map.insert(key.to_string(), v);
            }
            Some(())
        }
        t.expect("version = ")?;
        let version = t.int()?;
        t.expect("\nfailures = ")?;
        let failures = t.int()?;
        let locked_until = if t.eat("\nlocked_until = ") {
            Some(t.int()?)
        } else {
            None
        };
        t.expect("\nrate_window_start = ")?;
        let rate_window_start = t.int()?;
        t.expect("\nrate_window_attempts = ")?;
        let rate_window_attempts = t.int()?;
        t.expect("\nused_backup_codes = [")?;
        let mut used_backup_codes = Vec::new();
        t.items(|t| {
            used_backup_codes.push(t.string()?.to_string());
            Some(())
        })?;
        let (mut delivered_code, mut delivered_expires) = (None, None);
        if t.eat("\ndelivered_code = ") {
            delivered_code = Some(t.string()?.to_string());
            t.expect("\ndelivered_expires = ")?;
            delivered_expires = Some(t.int()?);
        }
        let mut deliveries = Vec::new();
        if t.eat("\ndeliveries = [") {
            t.items(|t| {
                deliveries.push(t.int()?);
                Some(())
            })?;
        }
        let mut raw = RawState {
            version,
            failures,
            locked_until,
            rate_window_start,
            rate_window_attempts,
            used_backup_codes,
            delivered_code,
            delivered_expires,
            deliveries,
            last_accepted_step: BTreeMap::new(),
            drift_steps: BTreeMap::new(),
            grace: BTreeMap::new(),
        };
        t.expect("\n\n[last_accepted_step]\n")?;
        keyed(&mut t, &mut raw.last_accepted_step, |t| t.int())?;
        if t.eat("\n[drift_steps]\n") {
            keyed(&mut t, &mut raw.drift_steps, |t| t.int())?;
        }
        if t.eat("\n[grace]\n") {
            keyed(&mut t, &mut raw.grace, |t| t.int())?;
        }
        t.at_end().then_some(raw)
    }

    /// The hand mapping of a fast-read state file (None = ask toml).
    fn from_doc(doc: &Doc) -> Option<RawState> {
        if doc.tables.iter().any(|t| {
            t.elements.is_some()
                || !matches!(t.name, "last_accepted_step" | "drift_steps" | "grace")
        }) {
            return None;
        }
        let mut raw = RawState {
            version: 0,
            failures: 0,
            locked_until: None,
            rate_window_start: 0,
            rate_window_attempts: 0,
            used_backup_codes: Vec::new(),
            delivered_code: None,
            delivered_expires: None,
            deliveries: Vec::new(),
            last_accepted_step: BTreeMap::new(),
            drift_steps: BTreeMap::new(),
            grace: BTreeMap::new(),
        };
        let mut version = None;
        for e in doc.entries() {
            let v = &e.value;
            match (e.table, e.key) {
                ("", "version") => version = Some(int(v)?),
                ("", "failures") => raw.failures = int(v)?,
                ("", "locked_until") => raw.locked_until = Some(int(v)?),
                ("", "rate_window_start") => raw.rate_window_start = int(v)?,
                ("", "rate_window_attempts") => raw.rate_window_attempts = int(v)?,
                ("", "used_backup_codes") => raw.used_backup_codes = list(v, text)?,
                ("", "delivered_code") => raw.delivered_code = Some(text(v)?),
                ("", "delivered_expires") => raw.delivered_expires = Some(int(v)?),
                ("", "deliveries") => raw.deliveries = list(v, int)?,
                ("last_accepted_step", key) => {
                    raw.last_accepted_step.insert(key.to_string(), int(v)?);
                }
                ("drift_steps", key) => {
                    raw.drift_steps.insert(key.to_string(), int(v)?);
                }
                ("grace", key) => {
                    raw.grace.insert(key.to_string(), int(v)?);
                }
                _ => return None,
            }
        }
        raw.version = version?;
        Some(raw)
    }
}

/// A device label as a TOML key: bare when it is one, else quoted. A
/// label may hold `.` (`valid_label`), which in a bare key would split it
/// into a dotted key, a table: `work.phone = 5` is `work = { phone = 5 }`,
/// and the state could not be read back (every later login of the user
/// refused). Quoting needs no escapes: labels are `A-Za-z0-9_.-`.
fn push_label(out: &mut String, label: &str) {
    if !label.is_empty() && label.bytes().all(crate::fasttoml::is_bare) {
        out.push_str(label);
    } else {
        out.push('"');
        out.push_str(label);
        out.push('"');
    }
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Remote hosts kept for `[grace]`: address and host-name characters only,
/// so they are safe as quoted TOML keys and in messages.
pub fn valid_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 255
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b':' | b'-' | b'_' | b'%'))
}

/// Hex digit values; 0xff for any other byte.
const HEX_VALUE: [u8; 256] = {
    let mut table = [0xffu8; 256];
    let mut c = 0;
    while c < 10 {
        table[b'0' as usize + c] = c as u8;
        c += 1;
    }
    let mut c = 0;
    while c < 6 {
        table[b'a' as usize + c] = 10 + c as u8;
        table[b'A' as usize + c] = 10 + c as u8;
        c += 1;
    }
    table
};

fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let bytes = text.as_bytes();
    if bytes.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let (high, low) = (
            HEX_VALUE[usize::from(pair[0])],
            HEX_VALUE[usize::from(pair[1])],
        );
        if (high | low) > 0x0f {
            return None;
        }
        *slot = high << 4 | low;
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
struct RawSecretRecord<'a> {
    version: u32,
    created: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    deliver_to: Option<String>,
    devices: Vec<RawDevice<'a>>,
    backup_codes: RawBackupSet<'a>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice<'a> {
    label: Cow<'a, str>,
    /// Borrowed from the record's bytes (wiped with them) on the fast path;
    /// owned from `toml`, and then wiped on drop (below).
    secret: Cow<'a, str>,
    algorithm: Cow<'a, str>,
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
struct RawBackupSet<'a> {
    created: u64,
    kdf: Cow<'a, str>,
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
    salt: Cow<'a, str>,
    /// Digits per code: 16 for ours, 8 for codes imported from
    /// google-authenticator (absent = 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    digits: Option<u8>,
    hashes: Vec<Cow<'a, str>>,
}

/// Device labels: short, printable, safe in messages.
pub fn valid_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 32
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

/// Whether `SecretRecord::parse_with` decodes the backup-code hashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hashes {
    /// Decode and check every hash (`parse`: the CLI, `check`, a backup
    /// answer at login).
    Decode,
    /// Check only their number and length, leave `backup.hashes` empty
    /// (the fast reader checks both from the array's shape, without
    /// building the list).
    /// A login reads the record before it knows the answer, and a TOTP
    /// answer never looks at the hashes, so it skips decoding them (~4,400
    /// instructions of a ~1 KiB record). An answer that could be a backup
    /// code makes the login parse the same bytes again with `Decode`, so a
    /// hash that is not hex is refused then, as a record error (the login
    /// is denied); `twofactor check` reports it either way.
    Skip,
}

impl SecretRecord {
    /// Parses and checks a secret record.
    pub fn parse(bytes: &[u8]) -> Result<SecretRecord, RecordError> {
        SecretRecord::parse_with(bytes, Hashes::Decode)
    }

    /// Parses and checks a secret record, decoding the backup-code hashes
    /// or not (see `Hashes`).
    pub fn parse_with(bytes: &[u8], decode: Hashes) -> Result<SecretRecord, RecordError> {
        let raw: RawSecretRecord = parse_toml(
            bytes,
            |t| RawSecretRecord::from_template(t, decode),
            |doc| RawSecretRecord::from_doc(doc, decode),
        )?;
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
                label: d.label.to_string(),
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
        if b.hashes.len() > MAX_BACKUP_CODES {
            return Err(RecordError::Invalid("backup codes: more than 100".into()));
        }
        let bad_hash = || RecordError::Invalid("backup codes: bad hash".into());
        let mut hashes = Vec::new();
        match decode {
            Hashes::Decode => {
                hashes.reserve_exact(b.hashes.len());
                for h in &b.hashes {
                    hashes.push(unhex::<HASH_BYTES>(h).ok_or_else(bad_hash)?);
                }
            }
            Hashes::Skip => {
                if b.hashes.iter().any(|h| h.len() != 2 * HASH_BYTES) {
                    return Err(bad_hash());
                }
            }
        }
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
                    label: Cow::Borrowed(&d.label),
                    // Copied out of the wiped buffer; RawDevice wipes the copy.
                    secret: Cow::Owned(d.secret.to_base32().to_string()),
                    algorithm: Cow::Borrowed(d.params.algorithm.name()),
                    digits: d.params.digits,
                    period: d.params.period,
                    created: d.created,
                })
                .collect(),
            backup_codes: RawBackupSet {
                created: self.backup.created,
                kdf: Cow::Borrowed("argon2id"),
                m_cost: self.backup.kdf.m_cost,
                t_cost: self.backup.kdf.t_cost,
                p_cost: self.backup.kdf.p_cost,
                salt: hex(&self.backup.salt).into(),
                digits: (self.backup.digits != 16).then_some(self.backup.digits),
                hashes: self.backup.hashes.iter().map(|h| hex(h).into()).collect(),
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
        let raw: RawState = parse_toml(bytes, RawState::from_template, RawState::from_doc)?;
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
            // Hosts the module would not record (a quote, a space: a file
            // from before hosts were restricted, or edited by hand) are
            // dropped, not refused: they could not be written back as the
            // same TOML, and losing a grace entry only means that host's
            // next login asks for a code.
            grace: raw
                .grace
                .into_iter()
                .filter(|(h, _)| valid_host(h))
                .collect(),
            delivered,
            deliveries: raw.deliveries,
        })
    }

    /// Serializes the state. Written by hand (every login writes it): keys
    /// are validated labels and hosts, values integers and hex, so nothing
    /// needs quoting rules beyond `"`; the tests check `toml` reads it back.
    pub fn to_toml(&self) -> String {
        // Every login writes this: built with pushes, no `core::fmt`.
        fn line(out: &mut String, key: &str, value: u64) {
            out.push_str(key);
            out.push_str(" = ");
            push_decimal(out, value);
            out.push('\n');
        }
        let mut out = String::with_capacity(256 + 70 * self.used_backup_codes.len());
        line(&mut out, "version", u64::from(VERSION));
        line(&mut out, "failures", u64::from(self.failures));
        if let Some(t) = self.locked_until {
            line(&mut out, "locked_until", t);
        }
        line(&mut out, "rate_window_start", self.rate_window_start);
        line(
            &mut out,
            "rate_window_attempts",
            u64::from(self.rate_window_attempts),
        );
        out.push_str("used_backup_codes = [");
        for (i, h) in self.used_backup_codes.iter().enumerate() {
            if i > 0 {
                out.push_str(", ");
            }
            out.push('"');
            out.push_str(&hex(h));
            out.push('"');
        }
        out.push_str("]\n");
        if let Some(d) = &self.delivered {
            out.push_str("delivered_code = \"");
            out.push_str(&hex(&d.hash));
            out.push_str("\"\n");
            line(&mut out, "delivered_expires", d.expires);
        }
        if !self.deliveries.is_empty() {
            out.push_str("deliveries = [");
            for (i, t) in self.deliveries.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_decimal(&mut out, *t);
            }
            out.push_str("]\n");
        }
        out.push_str("\n[last_accepted_step]\n");
        for (label, step) in &self.last_accepted_step {
            push_label(&mut out, label);
            line(&mut out, "", *step);
        }
        if !self.drift_steps.is_empty() {
            out.push_str("\n[drift_steps]\n");
            for (label, d) in &self.drift_steps {
                push_label(&mut out, label);
                out.push_str(" = ");
                if *d < 0 {
                    out.push('-');
                }
                push_decimal(&mut out, d.unsigned_abs());
                out.push('\n');
            }
        }
        if !self.grace.is_empty() {
            out.push_str("\n[grace]\n");
            for (host, t) in &self.grace {
                out.push('"');
                out.push_str(host);
                out.push('"');
                line(&mut out, "", *t);
            }
        }
        out
    }

    /// The serde form, for the tests that check the hand-written output.
    #[cfg(test)]
    fn to_toml_with_serde(&self) -> String {
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
    /// `Hashes::Skip` checks the hashes' number and length but not their
    /// digits; `Hashes::Decode` (what `parse` does) checks everything.
    #[test]
    fn skipping_hashes_still_checks_their_length() {
        let record = sample();
        let text = record.to_toml();
        let skipped = SecretRecord::parse_with(text.as_bytes(), Hashes::Skip).unwrap();
        assert!(skipped.backup.hashes.is_empty());
        assert_eq!(skipped.devices, record.devices);
        assert_eq!(skipped.backup.salt, record.backup.salt);

        let first = text.find("hashes = [\"").unwrap() + "hashes = [\"".len();
        let mut not_hex = text.to_string();
        not_hex.replace_range(first..first + 1, "z");
        assert!(SecretRecord::parse_with(not_hex.as_bytes(), Hashes::Skip).is_ok());
        assert_eq!(
            SecretRecord::parse(not_hex.as_bytes()),
            Err(RecordError::Invalid("backup codes: bad hash".into()))
        );
        let mut short = text.to_string();
        short.replace_range(first..first + 2, "");
        for mode in [Hashes::Skip, Hashes::Decode] {
            assert_eq!(
                SecretRecord::parse_with(short.as_bytes(), mode),
                Err(RecordError::Invalid("backup codes: bad hash".into())),
                "{mode:?}"
            );
        }
    }

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

    /// A label with a `.` (allowed: `add-device --label work.phone`) is
    /// written as a quoted key: bare, it was a dotted key, a table, and the
    /// state written by the device's first login could not be read again
    /// (every later login of the user refused: "invalid type: map").
    #[test]
    fn dotted_labels_survive_a_write_and_read() {
        let mut state = State::default();
        state.last_accepted_step.insert("work.phone".into(), 5);
        state.last_accepted_step.insert("default".into(), 6);
        state.drift_steps.insert("work.phone".into(), -2);
        let text = state.to_toml();
        assert!(text.contains("\n\"work.phone\" = 5\n"), "{text}");
        assert!(text.contains("\ndefault = 6\n"), "{text}");
        assert!(text.contains("\n\"work.phone\" = -2\n"), "{text}");
        assert_eq!(State::parse(text.as_bytes()).unwrap(), state);
    }

    /// Grace hosts the module would not record are dropped when read (the
    /// fuzzer's reproducers): written back by hand they would be broken or
    /// different TOML (`"a\" = 1 #"` became grace for host `a`).
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
            assert_eq!(State::parse(state.to_toml().as_bytes()).unwrap(), state);
        }
    }

    /// The hand-written state reads back through the toml crate exactly as
    /// the serde form does, and the fast and slow readers agree.
    #[test]
    fn hand_written_state_is_what_serde_would_write() {
        for s in [State::default(), every_field_state()] {
            let ours: toml::Value = toml::from_str(&s.to_toml()).unwrap();
            let serde: toml::Value = toml::from_str(&s.to_toml_with_serde()).unwrap();
            assert_eq!(ours, serde);
            let slow: RawState = toml::from_str(&s.to_toml()).unwrap();
            let fast = RawState::from_doc(&crate::fasttoml::read(&s.to_toml()).unwrap()).unwrap();
            assert_eq!(
                toml::to_string(&slow).unwrap(),
                toml::to_string(&fast).unwrap()
            );
        }
    }

    /// Every single-byte change of `text` (each byte replaced by one of
    /// a few telling bytes, or deleted) that a template still accepts is
    /// read by toml to the same value; `accepted` counts those, so that a
    /// template that accepts nothing cannot pass for one that agrees.
    /// Values are compared as toml text: `template` and `toml` give the
    /// value read, written back by serde.
    fn template_agrees_under_mutation(
        text: &str,
        template: impl Fn(&[u8]) -> Option<String>,
        toml: impl Fn(&str) -> Result<String, toml::de::Error>,
    ) -> usize {
        let mut accepted = 0;
        let bytes = text.as_bytes();
        for i in 0..bytes.len() {
            let mut variants: Vec<Vec<u8>> = b"09- \n\"a.#\\_[]=,\t\r\x7f\x80\xc3\xff"
                .iter()
                .map(|&c| {
                    let mut v = bytes.to_vec();
                    v[i] = c;
                    v
                })
                .collect();
            let mut deleted = bytes.to_vec();
            deleted.remove(i);
            variants.push(deleted);
            for v in variants {
                let fast = template(&v);
                let Ok(mutated) = std::str::from_utf8(&v) else {
                    // toml reads only UTF-8 documents; nor may a template.
                    assert_eq!(fast, None, "{}", String::from_utf8_lossy(&v));
                    continue;
                };
                if let Some(fast) = fast {
                    accepted += 1;
                    let slow = toml(mutated).unwrap_or_else(|e| {
                        panic!("template accepts, toml refuses ({e}):\n{mutated}")
                    });
                    assert_eq!(fast, slow, "{mutated}");
                }
            }
        }
        accepted
    }

    /// The state as we write it is read by its template, in all its forms,
    /// to what toml reads; and so is every one-byte change of it that the
    /// template accepts (others go to the general readers).
    #[test]
    fn state_template_reads_what_we_write_as_toml_does() {
        let mut login = State::default();
        login
            .last_accepted_step
            .insert("default".into(), 63_591_840);
        for state in [State::default(), login, every_field_state()] {
            let text = state.to_toml();
            let raw = RawState::from_template(Template::new(text.as_bytes())).expect(&text);
            let slow: RawState = toml::from_str(&text).unwrap();
            assert_eq!(
                toml::to_string(&raw).unwrap(),
                toml::to_string(&slow).unwrap()
            );
            assert_eq!(State::parse(text.as_bytes()).unwrap(), state);
            let accepted = template_agrees_under_mutation(
                &text,
                |t| RawState::from_template(Template::new(t)).map(|r| toml::to_string(&r).unwrap()),
                |t| toml::from_str::<RawState>(t).map(|r| toml::to_string(&r).unwrap()),
            );
            assert!(accepted > 20, "{accepted} accepted mutations of\n{text}");
        }
        // Keys out of order or repeated are left to the general readers.
        for text in [
            "version = 1\nfailures = 0\nrate_window_start = 0\nrate_window_attempts = 0\nused_backup_codes = []\n\n[last_accepted_step]\nb = 1\na = 2\n",
            "version = 1\nfailures = 0\nrate_window_start = 0\nrate_window_attempts = 0\nused_backup_codes = []\n\n[last_accepted_step]\na = 1\n\"a\" = 2\n",
        ] {
            assert!(
                RawState::from_template(Template::new(text.as_bytes())).is_none(),
                "{text}"
            );
        }
    }

    /// Likewise for the secret record as the toml crate writes ours, in
    /// both modes: `Skip` accepts what `Decode` accepts, hashes unbuilt.
    #[test]
    fn secret_template_reads_what_we_write_as_toml_does() {
        let two = two_devices();
        let mut bare = sample();
        bare.deliver_to = None;
        bare.backup.hashes.clear();
        for record in [sample(), two, bare] {
            let text = record.to_toml();
            let raw =
                RawSecretRecord::from_template(Template::new(text.as_bytes()), Hashes::Decode)
                    .expect(&text);
            let slow: RawSecretRecord = toml::from_str(&text).unwrap();
            assert_eq!(
                toml::to_string(&raw).unwrap(),
                toml::to_string(&slow).unwrap()
            );
            let skip = RawSecretRecord::from_template(Template::new(text.as_bytes()), Hashes::Skip)
                .unwrap();
            assert!(skip.backup_codes.hashes.is_empty());
            assert_eq!(SecretRecord::parse(text.as_bytes()).unwrap(), record);
            let accepted = template_agrees_under_mutation(
                &text,
                |t| {
                    let decoded = RawSecretRecord::from_template(Template::new(t), Hashes::Decode);
                    let skipped = RawSecretRecord::from_template(Template::new(t), Hashes::Skip);
                    if skipped.is_some() {
                        let d = decoded.as_ref().expect("Skip accepts what Decode refuses");
                        assert!(
                            d.backup_codes
                                .hashes
                                .iter()
                                .all(|h| h.len() == 2 * HASH_BYTES)
                        );
                    }
                    decoded.map(|r| toml::to_string(&r).unwrap())
                },
                |t| toml::from_str::<RawSecretRecord>(t).map(|r| toml::to_string(&r).unwrap()),
            );
            assert!(
                accepted > 20,
                "{accepted} accepted mutations of\n{}",
                text.as_str()
            );
        }
    }

    /// The fast secret-record mapping gives what toml and serde give.
    #[test]
    fn fast_secret_record_mapping_matches_serde() {
        let two = two_devices();
        let mut three = two.clone();
        let mut third = three.devices[0].clone();
        third.label = "watch".into();
        three.devices.push(third);
        for record in [sample(), two, three] {
            let text = record.to_toml();
            let slow: RawSecretRecord = toml::from_str(&text).unwrap();
            let fast =
                RawSecretRecord::from_doc(&crate::fasttoml::read(&text).unwrap(), Hashes::Decode)
                    .unwrap();
            assert_eq!(
                toml::to_string(&slow).unwrap(),
                toml::to_string(&fast).unwrap()
            );
        }
        // A device element without entries, or without one of its fields,
        // goes to toml (which refuses it), in either mode.
        let text = sample().to_toml().to_string();
        let empty_first = text.replacen("[[devices]]\n", "[[devices]]\n[[devices]]\n", 1);
        let no_period: String = text
            .lines()
            .filter(|line| !line.starts_with("period = "))
            .map(|line| format!("{line}\n"))
            .collect();
        assert!(toml::from_str::<RawSecretRecord>(&empty_first).is_err());
        assert!(toml::from_str::<RawSecretRecord>(&no_period).is_err());
        for broken in [&empty_first, &no_period] {
            for mode in [Hashes::Skip, Hashes::Decode] {
                let doc = crate::fasttoml::read(broken).unwrap();
                assert!(RawSecretRecord::from_doc(&doc, mode).is_none(), "{broken}");
            }
        }
        // Outside the mapping: unknown keys and tables go to toml (and fail there).
        for extra in ["x = 1\n", "[other]\n"] {
            let text = format!("{}{extra}", sample().to_toml().as_str());
            assert!(
                RawSecretRecord::from_doc(&crate::fasttoml::read(&text).unwrap(), Hashes::Decode)
                    .is_none()
            );
        }
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
