//! One authentication, from user name to outcome, over a `Conversation`
//! trait so tests can script it without PAM. The order is deliberate:
//! exemptions first (no files), then the records; prompt with no lock held
//! (a user may take minutes); a cheap look at the state refuses a locked or
//! rate-limited attempt before any argon2 work; compute argon2 hashes (slow,
//! a bounded number at once) before the lock; then lock → check the secret
//! record is the one the prompt was shown for → re-read state → read the
//! clock → decide → write durably → unlock, and only then tell the user
//! anything. The clock is read at each decision, never once at the start.

pub mod input;

use std::fmt::{self, Write as _};
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::config::{Config, Unenrolled};
use crate::delivery::{self, DeliveryError};
use crate::host::accounts;
use crate::host::clock::Clock;
use crate::host::timefmt;
use crate::otp::backup::{self, HASH_BYTES};
use crate::otp::enroll;
use crate::otp::{self, CodeMatch, SecretKey};
use crate::policy::{self, Attempt, DriftCheck, Failure, Policy, Verdict};
use crate::records::username::{Username, UsernameError};
use crate::records::{
    DEFAULT_DEVICE, Delivered, Device, MAX_RECORD_BYTES, RecordError, SecretRecord, State,
};
use crate::store::{Access, StoreError, TrustedDir};
use input::Answer;

/// The prompt every user sees, enrolled or not.
pub const PROMPT: &str = "Verification code: ";
/// The prompt after a suspected clock drift.
pub const NEXT_PROMPT: &str = "Next verification code: ";
/// The prompt after a code was sent by message.
pub const SENT_PROMPT: &str = "Code from the message: ";

/// The conversation failed, was interrupted or gave no answer.
#[derive(Debug, PartialEq, Eq)]
pub struct ConvError;

/// How the module talks to the user.
pub trait Conversation {
    /// Asks for the code with echo off.
    fn ask_code(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, ConvError>;
    /// Shows an informational line (PAM_TEXT_INFO).
    fn show_info(&mut self, message: &str);
    /// Shows an error line (PAM_ERROR_MSG).
    fn show_error(&mut self, message: &str);
}

/// How a successful login proved itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Method {
    Totp {
        device: String,
    },
    /// A TOTP code after the device's clock offset was learned.
    Drift {
        device: String,
        offset_seconds: i64,
    },
    Backup {
        remaining: usize,
    },
    /// A code sent by `[delivery]`.
    Delivered,
    /// Enrolled at this login and confirmed with a code.
    Enrolled,
}

/// Why the code was not asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// No secret record and `unenrolled = "skip"`.
    Unenrolled,
    /// A member of this `[exempt] groups` group.
    ExemptGroup(String),
    /// PAM_RHOST is in this `[exempt] networks` network.
    ExemptNetwork(String),
    /// A success from the same remote host within `[grace] seconds`.
    Grace,
}

/// Why a login was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// No secret record and `unenrolled = "deny"` (or not allowed to enroll).
    Unenrolled,
    /// The name from PAM cannot be a file name.
    BadUsername(String),
    /// A wrong, replayed or malformed code; maybe it started a lock.
    Failed {
        failure: Failure,
        locked_until: Option<u64>,
    },
    /// Locked until this time.
    LockedOut { until: u64 },
    /// Too many attempts until this time.
    RateLimited { until: u64 },
    /// Enrollment at login was not confirmed with a right code.
    EnrollmentNotConfirmed,
    /// A code by message was asked for but could not be sent.
    DeliveryFailed(String),
    /// The secret record changed while the prompt was open (an admin ran
    /// `backup-codes`, `enroll --force`, `remove-device`, `disable`, …):
    /// nothing was decided against the old one.
    RecordChanged,
}

/// The core's answer, in its own words; the PAM door maps it to a code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allow(Method),
    Deny(DenyReason),
    /// PAM_IGNORE, no prompt.
    Skip(SkipReason),
}

/// Something failed that is not the user's answer. Every variant denies.
#[derive(Debug)]
pub enum AuthError {
    /// The state directory or a file in it is unsafe or unreadable, a lock
    /// could not be taken, or the new state could not be stored.
    Store(StoreError),
    /// A record exists but cannot be parsed or checked.
    Record { path: PathBuf, error: RecordError },
    /// The conversation failed (Ctrl-C, EOF, no answer).
    Conversation,
    /// argon2 or the OS random generator failed.
    Kdf,
}

impl fmt::Display for AuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AuthError::Store(e) => write!(f, "{e}"),
            AuthError::Record { path, error } => {
                write!(f, "{}: {error} (run `twofactor check`)", path.display())
            }
            AuthError::Conversation => f.write_str("the conversation failed or gave no answer"),
            AuthError::Kdf => f.write_str("argon2 or the random generator failed"),
        }
    }
}

impl std::error::Error for AuthError {}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> AuthError {
        AuthError::Store(e)
    }
}

impl From<ConvError> for AuthError {
    fn from(_: ConvError) -> AuthError {
        AuthError::Conversation
    }
}

impl Outcome {
    /// One line for syslog (no codes, no secrets).
    pub fn describe(&self) -> String {
        match self {
            Outcome::Allow(method) => match method {
                Method::Totp { device } => {
                    // The common line, built without `core::fmt`.
                    let mut line = String::with_capacity(64 + device.len());
                    line.push_str("authentication succeeded (TOTP code, device ");
                    line.push_str(device);
                    line.push(')');
                    line
                }
                Method::Drift {
                    device,
                    offset_seconds,
                } => format!(
                    "authentication succeeded (TOTP code, device {device}, clock offset {offset_seconds} s learned)"
                ),
                Method::Backup { remaining } => {
                    format!("authentication succeeded (backup code, {remaining} left)")
                }
                Method::Delivered => "authentication succeeded (code sent by message)".into(),
                Method::Enrolled => "enrolled at login and authenticated (TOTP code)".into(),
            },
            Outcome::Skip(reason) => match reason {
                SkipReason::Unenrolled => {
                    "user is not enrolled; skipped (unenrolled = \"skip\")".into()
                }
                SkipReason::ExemptGroup(g) => format!("skipped: member of exempt group {g}"),
                SkipReason::ExemptNetwork(n) => {
                    format!("skipped: remote host in exempt network {n}")
                }
                SkipReason::Grace => "skipped: success from the same host within [grace]".into(),
            },
            Outcome::Deny(reason) => match reason {
                DenyReason::Unenrolled => "denied: user is not enrolled".into(),
                DenyReason::BadUsername(why) => format!("denied: unusable user name: {why}"),
                DenyReason::Failed {
                    failure,
                    locked_until,
                } => {
                    let what = match failure {
                        Failure::WrongCode => "wrong code",
                        Failure::Replayed => "replayed code (RFC 6238 5.2)",
                        Failure::Malformed => "malformed input",
                        Failure::DriftNotConfirmed => "clock drift not confirmed by the next code",
                        Failure::DriftSuspected => "code outside the window (clock drift?)",
                    };
                    match locked_until {
                        Some(t) => format!(
                            "denied: {what}; too many failures, locked until {}",
                            timefmt::rfc3339(*t)
                        ),
                        None => format!("denied: {what}"),
                    }
                }
                DenyReason::LockedOut { until } => {
                    format!("denied: account locked until {}", timefmt::rfc3339(*until))
                }
                DenyReason::RateLimited { until } => {
                    format!(
                        "denied: rate limit reached until {}",
                        timefmt::rfc3339(*until)
                    )
                }
                DenyReason::EnrollmentNotConfirmed => {
                    "denied: enrollment at login not confirmed (nothing stored)".into()
                }
                DenyReason::DeliveryFailed(why) => format!("denied: code by message: {why}"),
                DenyReason::RecordChanged => {
                    "denied: the enrollment changed while the prompt was open (nothing decided)"
                        .into()
                }
            },
        }
    }
}

/// A secret record as a login reads it, with the bytes it was parsed
/// from. Every decision checks under the user's lock that the file still
/// holds exactly these bytes (`update_state`). The bytes hold the secret
/// too (in base32); they are wiped when dropped.
struct LoginRecord {
    record: SecretRecord,
    bytes: Zeroizing<Vec<u8>>,
}

fn read_record(dir: &TrustedDir, user: &Username) -> Result<Option<LoginRecord>, AuthError> {
    let name = user.secret_file();
    let Some(bytes) = dir.read(&name, Access::Private, MAX_RECORD_BYTES)? else {
        return Ok(None);
    };
    match SecretRecord::parse(&bytes) {
        Ok(record) => Ok(Some(LoginRecord { record, bytes })),
        Err(error) => Err(AuthError::Record {
            path: dir.path().join(&name),
            error,
        }),
    }
}

/// Reads the state file; missing means fresh. Call under the user's lock
/// before deciding (a read without the lock is fine for a hint).
pub fn read_state(dir: &TrustedDir, user: &Username) -> Result<State, AuthError> {
    let name = user.state_file();
    match dir.read(&name, Access::Private, MAX_RECORD_BYTES)? {
        None => Ok(State::default()),
        Some(bytes) => State::parse(&bytes).map_err(|error| AuthError::Record {
            path: dir.path().join(&name),
            error,
        }),
    }
}

/// Stores `state` as the user's state file (atomically, durably).
fn write_state(dir: &TrustedDir, user: &Username, state: &State) -> Result<(), AuthError> {
    let name = user.state_file();
    let text = state.to_toml().map_err(|error| AuthError::Record {
        path: dir.path().join(&name),
        error,
    })?;
    Ok(dir.replace(&name, text.as_bytes())?)
}

/// The secret record is no longer the one the prompt was shown for.
struct RecordChanged;

/// Runs `change` on the user's state under the lock and stores the result
/// durably before returning it. Under the lock it first checks that the
/// secret record still holds exactly `record` (a prompt may have been open
/// while an admin revoked backup codes or replaced the secret: decide
/// against the record as it is, or not at all), then reads the clock:
/// `change` gets the time of this decision, so a lock or window is never
/// written relative to the moment the prompt opened.
fn update_state<T>(
    dir: &TrustedDir,
    user: &Username,
    clock: &dyn Clock,
    record: &[u8],
    change: impl FnOnce(&State, u64) -> (T, State),
) -> Result<Result<T, RecordChanged>, AuthError> {
    let _lock = dir.lock(&user.lock_file())?;
    let current = dir.read(&user.secret_file(), Access::Private, MAX_RECORD_BYTES)?;
    if current.as_ref().map(|bytes| bytes.as_slice()) != Some(record) {
        return Ok(Err(RecordChanged));
    }
    let state = read_state(dir, user)?;
    let (result, new) = change(&state, clock.now());
    if new != state {
        // Durable before anything is acted on: a code we cannot mark as
        // used is not accepted (google-authenticator #543).
        write_state(dir, user, &new)?;
    }
    Ok(Ok(result))
}

/// Authenticates `raw_user` (no remote host), reading `clock` at each
/// decision.
pub fn authenticate(
    config: &Config,
    raw_user: &str,
    conv: &mut dyn Conversation,
    clock: &dyn Clock,
) -> Result<Outcome, AuthError> {
    authenticate_from(config, raw_user, None, conv, clock)
}

/// For a name without an enrollment: the enrollment of the first name of
/// its uid, if that is another name and is enrolled. Files are keyed by
/// name, but an alias (`toor`, uid 0 after `root`) is the same account: it
/// must not slip past `root`'s second factor under `unenrolled = "skip"`,
/// nor enroll a phone of its own at login. The alias then uses that
/// enrollment's codes, state and lock. (An alias listed *before* the
/// enrolled name is its uid's first name, so nothing redirects it;
/// `twofactor check` reports it.) Costs two NSS lookups, only for names
/// without a record.
fn enrolled_first_name(
    dir: &TrustedDir,
    user: &Username,
) -> Result<Option<(Username, LoginRecord)>, AuthError> {
    let Some(first) = accounts::first_name_of_uid(user.as_str()) else {
        return Ok(None);
    };
    let Ok(first) = Username::parse(&first) else {
        return Ok(None);
    };
    Ok(read_record(dir, &first)?.map(|record| (first, record)))
}

/// Authenticates `raw_user` connecting from `rhost` (PAM_RHOST), reading
/// `clock` at each decision.
pub fn authenticate_from(
    config: &Config,
    raw_user: &str,
    rhost: Option<&str>,
    conv: &mut dyn Conversation,
    clock: &dyn Clock,
) -> Result<Outcome, AuthError> {
    let user = match Username::parse(raw_user) {
        Ok(user) => user,
        Err(e) => return deny_after_prompt(conv, DenyReason::BadUsername(reason(&e))),
    };
    if let Some(host) = rhost {
        if let Some(net) = config
            .exempt_networks
            .iter()
            .find(|n| n.contains_host(host))
        {
            return Ok(Outcome::Skip(SkipReason::ExemptNetwork(net.to_string())));
        }
    }
    if let Some(group) = accounts::first_shared_group(user.as_str(), &config.exempt_groups) {
        return Ok(Outcome::Skip(SkipReason::ExemptGroup(group)));
    }
    let dir = TrustedDir::open(&config.state_dir, true)?;
    let (user, login) = match read_record(&dir, &user)? {
        Some(record) => (user, record),
        None => match enrolled_first_name(&dir, &user)? {
            Some(found) => found,
            None => {
                return match config.unenrolled {
                    Unenrolled::Skip => Ok(Outcome::Skip(SkipReason::Unenrolled)),
                    Unenrolled::Deny => deny_after_prompt(conv, DenyReason::Unenrolled),
                    Unenrolled::Enroll => enroll_at_login(config, &dir, &user, conv, clock),
                };
            }
        },
    };
    if let (Some(host), true) = (rhost, config.grace_seconds > 0) {
        // A hint read without the lock: the file is replaced atomically.
        let state = read_state(&dir, &user)?;
        if policy::in_grace(&state, host, clock.now(), config.grace_seconds) {
            return Ok(Outcome::Skip(SkipReason::Grace));
        }
    }

    let policy = Policy::from(config);
    let mut prompt = PROMPT;
    let mut drift: Option<DriftCheck> = None;
    let mut delivered_now = false;
    loop {
        let raw = conv.ask_code(prompt)?;
        let answer = input::classify(&raw);
        drop(raw);
        let delivery_on = config.delivery.command.is_some();
        if answer == Answer::Empty && delivery_on && drift.is_none() && !delivered_now {
            match send_code(config, &dir, &user, &login, &policy, clock)? {
                Ok(target) => {
                    // Masked: whoever has the password sees the prompt.
                    conv.show_info(&format!(
                        "A code was sent to {}.",
                        delivery::mask_target(&target)
                    ));
                    prompt = SENT_PROMPT;
                    delivered_now = true;
                    continue;
                }
                Err(SendFailure::Refused(verdict)) => {
                    return Ok(tell(conv, &login.record, verdict));
                }
                Err(SendFailure::RecordChanged) => return Ok(record_changed(conv)),
                Err(message) => {
                    conv.show_error(&message.to_user());
                    return Ok(Outcome::Deny(DenyReason::DeliveryFailed(
                        message.to_string(),
                    )));
                }
            }
        }
        let delivery_possible = delivery_on && login.record.deliver_to.is_some();
        let mut hash = hash_needed(
            &answer,
            &login.record,
            delivery_possible,
            &dir,
            &user,
            &policy,
            clock,
        )?;
        let verdict = loop {
            if hash == AnswerHash::Needed {
                hash = AnswerHash::Done(hash_in_slot(&dir, &answer, &login.record)?);
            }
            let record = &login.record;
            let attempt = Attempt {
                code: answer.totp(),
                hash: hash.value(),
                drift: drift.as_ref(),
                rhost,
            };
            let deferred = matches!(hash, AnswerHash::Deferred);
            let decided = update_state(&dir, &user, clock, &login.bytes, |state, now| {
                if deferred && policy::refusal(state, now, &policy).is_none() {
                    // The lock ended (or an admin unlocked) since the cheap
                    // look: decide only once the answer is hashed.
                    return (None, state.clone());
                }
                let d = policy::decide(record, state, &attempt, now, &policy);
                (Some(d.verdict), d.state)
            })?;
            match decided {
                Err(RecordChanged) => return Ok(record_changed(conv)),
                Ok(Some(verdict)) => break verdict,
                Ok(None) => hash = AnswerHash::Needed,
            }
        };
        match verdict {
            Verdict::DriftSuspected(check) if drift.is_none() => {
                // Says nothing of how far off: the matched step is spent and
                // counted, and the size of the offset would only help a guesser.
                conv.show_info(
                    "The clock of your device seems to be off. Wait for the next code and enter it.",
                );
                prompt = NEXT_PROMPT;
                drift = Some(check);
            }
            verdict => return Ok(tell(conv, &login.record, verdict)),
        }
    }
}

/// Tells the user their second factor changed under the open prompt.
fn record_changed(conv: &mut dyn Conversation) -> Outcome {
    conv.show_error("Your second factor was changed while this prompt was open. Log in again.");
    Outcome::Deny(DenyReason::RecordChanged)
}

fn period_of(record: &SecretRecord, device: &str) -> u32 {
    record
        .devices
        .iter()
        .find(|d| d.label == device)
        .map_or(30, |d| d.params.period)
}

/// Whether the answer has the length of this record's backup codes.
fn backup_length(answer: &Answer, record: &SecretRecord) -> bool {
    matches!(answer, Answer::Digits(d) if d.len() == usize::from(record.backup.digits))
}

/// The argon2 hash an answer needs, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AnswerHash {
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
    fn value(self) -> Option<[u8; HASH_BYTES]> {
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
const KDF_SLOTS: [&str; 4] = [
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
fn hash_digits_in_slot(
    dir: &TrustedDir,
    digits: &str,
    record: &SecretRecord,
) -> Result<[u8; HASH_BYTES], AuthError> {
    let _slot = dir.lock_any(&KDF_SLOTS)?;
    backup::hash_digits(digits, &record.backup.salt, record.backup.kdf).ok_or(AuthError::Kdf)
}

/// `hash_digits_in_slot` for an answer (anything but digits hashes nothing
/// the policy could match, and is never asked for).
fn hash_in_slot(
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
fn hash_needed(
    answer: &Answer,
    record: &SecretRecord,
    delivery_possible: bool,
    dir: &TrustedDir,
    user: &Username,
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
    let hint = read_state(dir, user)?;
    if !backup_length && hint.delivered.is_none() {
        return Ok(AnswerHash::NotNeeded);
    }
    if policy::refusal(&hint, clock.now(), policy).is_some() {
        return Ok(AnswerHash::Deferred);
    }
    Ok(AnswerHash::Needed)
}

/// Turns the verdict into the outcome, telling the user what they need.
fn tell(conv: &mut dyn Conversation, record: &SecretRecord, verdict: Verdict) -> Outcome {
    match verdict {
        Verdict::AllowTotp { device } => Outcome::Allow(Method::Totp { device }),
        Verdict::AllowDrift { device, offset } => {
            let offset_seconds = offset * i64::from(period_of(record, &device));
            Outcome::Allow(Method::Drift {
                device,
                offset_seconds,
            })
        }
        Verdict::AllowDelivered => Outcome::Allow(Method::Delivered),
        Verdict::AllowBackup { remaining } => {
            let mut message = format!(
                "Backup code accepted. {remaining} backup code{} left.",
                if remaining == 1 { "" } else { "s" }
            );
            if remaining == 0 {
                message.push_str(" Ask your administrator for new ones.");
            }
            conv.show_info(&message);
            Outcome::Allow(Method::Backup { remaining })
        }
        Verdict::DriftSuspected(_) => Outcome::Deny(DenyReason::Failed {
            failure: Failure::DriftNotConfirmed,
            locked_until: None,
        }),
        Verdict::Deny {
            failure,
            locked_until,
        } => {
            if let Some(until) = locked_until {
                conv.show_error(&format!(
                    "Too many failed attempts: your account is locked until {}.",
                    timefmt::human(until)
                ));
            }
            Outcome::Deny(DenyReason::Failed {
                failure,
                locked_until,
            })
        }
        Verdict::LockedOut { until } => {
            conv.show_error(&format!(
                "Your account is locked after too many failed attempts until {}.",
                timefmt::human(until)
            ));
            Outcome::Deny(DenyReason::LockedOut { until })
        }
        Verdict::RateLimited { until } => {
            conv.show_error(&format!(
                "Too many attempts: try again after {}.",
                timefmt::human(until)
            ));
            Outcome::Deny(DenyReason::RateLimited { until })
        }
    }
}

/// Why no code could be sent by message.
#[derive(Debug)]
enum SendFailure {
    NotSetUp,
    HourlyLimit {
        until: u64,
    },
    Command(DeliveryError),
    /// Locked or rate limited: told as for any attempt.
    Refused(Verdict),
    RecordChanged,
}

impl SendFailure {
    fn to_user(&self) -> String {
        match self {
            SendFailure::NotSetUp => {
                "No code by message is set up for you: enter the code from your app.".into()
            }
            SendFailure::HourlyLimit { until } => format!(
                "Too many codes sent in the last hour: try again after {}.",
                timefmt::human(*until)
            ),
            SendFailure::Command(_) => {
                "The code could not be sent. Use your app or a backup code.".into()
            }
            SendFailure::Refused(_) | SendFailure::RecordChanged => "No code was sent.".into(),
        }
    }
}

impl fmt::Display for SendFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendFailure::NotSetUp => f.write_str("no [delivery] command or no target for the user"),
            SendFailure::HourlyLimit { until } => {
                write!(f, "max_per_hour reached until {}", timefmt::rfc3339(*until))
            }
            SendFailure::Command(e) => write!(f, "{e}"),
            SendFailure::Refused(verdict) => write!(f, "refused before sending: {verdict:?}"),
            SendFailure::RecordChanged => f.write_str("the enrollment changed meanwhile"),
        }
    }
}

/// Creates a code, stores only its hash and expiry (durably, under the
/// lock, counting it against `max_per_hour` at the time of sending), then
/// asks the delivery service to send it. A locked or rate-limited user, or
/// one over the hourly limit, costs no argon2 work and gets no code.
fn send_code(
    config: &Config,
    dir: &TrustedDir,
    user: &Username,
    login: &LoginRecord,
    policy: &Policy,
    clock: &dyn Clock,
) -> Result<Result<String, SendFailure>, AuthError> {
    let record = &login.record;
    let (Some(_), Some(target)) = (&config.delivery.command, &record.deliver_to) else {
        return Ok(Err(SendFailure::NotSetUp));
    };
    let limit = config.delivery.max_per_hour;
    // Cheap refusals first, from a look without the lock.
    let mut hint = read_state(dir, user)?;
    let now = clock.now();
    if let Some(verdict) = policy::refusal(&hint, now, policy) {
        return Ok(Err(SendFailure::Refused(verdict)));
    }
    if let Err(until) = policy::count_delivery(&mut hint, now, limit) {
        return Ok(Err(SendFailure::HourlyLimit { until }));
    }
    let code = backup::random_digits(config.totp.digits).ok_or(AuthError::Kdf)?;
    let hash = hash_digits_in_slot(dir, &code, record)?;
    let valid_seconds = config.delivery.valid_seconds;
    let counted = update_state(dir, user, clock, &login.bytes, |state, now| {
        let mut new = state.clone();
        let counted = policy::count_delivery(&mut new, now, limit);
        if counted.is_ok() {
            new.delivered = Some(Delivered {
                hash,
                expires: now.saturating_add(valid_seconds),
            });
        }
        (counted, new)
    })?;
    match counted {
        Err(RecordChanged) => return Ok(Err(SendFailure::RecordChanged)),
        Ok(Err(until)) => return Ok(Err(SendFailure::HourlyLimit { until })),
        Ok(Ok(())) => {}
    }
    Ok(
        delivery::request(config.delivery.socket(), user.as_str(), target, &code)
            .map(|()| target.clone())
            .map_err(SendFailure::Command),
    )
}

/// `unenrolled = "enroll"`: show a new secret, ask for a code from it, and
/// store the enrollment only if the code is right. Trust on first use: the
/// password is all that protects this step (README says so plainly). The
/// code is checked at the time it is typed (scanning a QR code takes a
/// while), and every string that holds the secret or the backup codes is
/// wiped when dropped.
fn enroll_at_login(
    config: &Config,
    dir: &TrustedDir,
    user: &Username,
    conv: &mut dyn Conversation,
    clock: &dyn Clock,
) -> Result<Outcome, AuthError> {
    if !config.enroll_groups.is_empty()
        && accounts::first_shared_group(user.as_str(), &config.enroll_groups).is_none()
    {
        return deny_after_prompt(conv, DenyReason::Unenrolled);
    }
    let secret = SecretKey::new(backup::random_bytes::<20>().ok_or(AuthError::Kdf)?.to_vec());
    let params = config.totp;
    let uri = Zeroizing::new(enroll::otpauth_uri(
        &config.issuer_name(),
        user.as_str(),
        &secret,
        params,
    ));
    let qr = Zeroizing::new(enroll::qr_text(&uri).unwrap_or_default());
    let key = Zeroizing::new(enroll::grouped_secret(&secret));
    // Sized up front so that writing never reallocates (a reallocation
    // would leave an unwiped copy behind).
    let mut message = Zeroizing::new(String::with_capacity(
        qr.len() + key.len() + uri.len() + 512,
    ));
    // Writing to a String cannot fail.
    let _ = write!(
        message,
        "Two-factor authentication is required and not set up for you yet.\n\
         Scan this QR code with your authenticator app:\n{}\n\
         Or enter this key by hand: {}\n\
         ({}, {} digits, every {} s)\n\
         otpauth URI: {}\n\
         Then enter the code the app shows.",
        qr.as_str(),
        key.as_str(),
        params.algorithm,
        params.digits,
        params.period,
        uri.as_str(),
    );
    conv.show_info(&message);
    drop((message, qr, key, uri));
    let raw = conv.ask_code(PROMPT)?;
    let answer = input::classify(&raw);
    drop(raw);
    let now = clock.now();
    let step = match answer.totp() {
        Some(code) => match otp::match_code(&secret, params, code, now, config.window, None) {
            CodeMatch::Fresh(step) => step,
            _ => return Ok(Outcome::Deny(DenyReason::EnrollmentNotConfirmed)),
        },
        None => return Ok(Outcome::Deny(DenyReason::EnrollmentNotConfirmed)),
    };
    let (backup, codes) = enroll::new_backup_set(config.backup_codes, now).ok_or(AuthError::Kdf)?;
    let record = SecretRecord {
        created: now,
        devices: vec![Device {
            label: DEFAULT_DEVICE.into(),
            secret,
            params,
            created: now,
        }],
        backup,
        deliver_to: None,
    };
    {
        let _lock = dir.lock(&user.lock_file())?;
        // Another login may have enrolled this user meanwhile: keep theirs.
        if read_record(dir, user)?.is_some() {
            return Ok(Outcome::Deny(DenyReason::EnrollmentNotConfirmed));
        }
        let mut state = State::default();
        state.last_accepted_step.insert(DEFAULT_DEVICE.into(), step);
        write_state(dir, user, &state)?;
        let text = record.to_toml().map_err(|error| AuthError::Record {
            path: dir.path().join(user.secret_file()),
            error,
        })?;
        dir.replace(&user.secret_file(), text.as_bytes())?;
    }
    let intro = "Two-factor authentication is set up. Your backup codes (each works once; keep them safe, they are not shown again):";
    let mut message = Zeroizing::new(String::with_capacity(intro.len() + codes.len() * 24));
    message.push_str(intro);
    for code in &codes {
        message.push_str("\n  ");
        message.push_str(code.grouped().as_str());
    }
    conv.show_info(&message);
    Ok(Outcome::Allow(Method::Enrolled))
}

fn reason(e: &UsernameError) -> String {
    e.to_string()
}

/// Shows the same prompt an enrolled user sees, then denies: no user
/// existence or enrollment leak.
fn deny_after_prompt(
    conv: &mut dyn Conversation,
    reason: DenyReason,
) -> Result<Outcome, AuthError> {
    let _answer = conv.ask_code(PROMPT)?;
    Ok(Outcome::Deny(reason))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::clock::FixedClock;
    use std::collections::VecDeque;

    /// A scripted conversation: answers in order, records everything shown,
    /// runs what a test scheduled before an answer (the clock moving, an
    /// admin acting while the prompt is open), panics if asked more often
    /// than scripted, and checks on drop that every answer was used.
    struct Script {
        answers: VecDeque<Option<String>>,
        before: VecDeque<Option<Box<dyn FnOnce()>>>,
        prompts: Vec<String>,
        infos: Vec<String>,
        errors: Vec<String>,
    }

    impl Script {
        fn new(answers: &[Option<&str>]) -> Script {
            Script {
                answers: answers.iter().map(|a| a.map(str::to_string)).collect(),
                before: VecDeque::new(),
                prompts: vec![],
                infos: vec![],
                errors: vec![],
            }
        }

        /// Runs `action` just before the next unscheduled answer is given
        /// (the first call for the first answer, and so on).
        fn before_answer(mut self, action: impl FnOnce() + 'static) -> Script {
            self.before.push_back(Some(Box::new(action)));
            self
        }
    }

    impl Conversation for Script {
        fn ask_code(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, ConvError> {
            self.prompts.push(prompt.to_string());
            if let Some(Some(action)) = self.before.pop_front() {
                action();
            }
            match self.answers.pop_front() {
                Some(Some(a)) => Ok(Zeroizing::new(a.into_bytes())),
                Some(None) => Err(ConvError),
                None => panic!("unexpected prompt {prompt:?}"),
            }
        }
        fn show_info(&mut self, message: &str) {
            self.infos.push(message.to_string());
        }
        fn show_error(&mut self, message: &str) {
            self.errors.push(message.to_string());
        }
    }

    impl Drop for Script {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                assert!(
                    self.answers.is_empty(),
                    "scripted answers never asked for: {:?}",
                    self.answers
                );
            }
        }
    }

    /// A clock a test moves while a prompt is open.
    #[derive(Clone, Default)]
    struct MovingClock(std::rc::Rc<std::cell::Cell<u64>>);

    impl MovingClock {
        fn at(now: u64) -> MovingClock {
            let clock = MovingClock::default();
            clock.0.set(now);
            clock
        }
        /// An action that sets the clock to `now`.
        fn set_to(&self, now: u64) -> impl FnOnce() + 'static {
            let cell = self.0.clone();
            move || cell.set(now)
        }
    }

    impl Clock for MovingClock {
        fn now(&self) -> u64 {
            self.0.get()
        }
    }

    fn config() -> Config {
        Config {
            // A directory that must never be reached by these tests.
            state_dir: PathBuf::from("/nonexistent/pam-twofactor-unit"),
            ..Config::default()
        }
    }

    /// A name that cannot be a file name gets the normal prompt, then denial,
    /// before any file is touched (the state dir here does not exist).
    #[test]
    fn unsafe_user_name_is_denied_after_the_same_prompt() {
        for name in ["..", "a/b", "", "x\ny"] {
            let mut script = Script::new(&[Some("123456")]);
            let outcome = authenticate(&config(), name, &mut script, &FixedClock(0)).unwrap();
            assert!(
                matches!(outcome, Outcome::Deny(DenyReason::BadUsername(_))),
                "{name:?}"
            );
            assert_eq!(script.prompts, vec![PROMPT.to_string()]);
            assert!(script.infos.is_empty() && script.errors.is_empty());
        }
    }

    /// A conversation error at the prompt is an error, never a success.
    #[test]
    fn conversation_error_is_a_failure() {
        let mut script = Script::new(&[None]);
        let err = authenticate(&config(), "a/b", &mut script, &FixedClock(0)).unwrap_err();
        assert!(matches!(err, AuthError::Conversation));
    }

    /// A missing state directory is an error (fail closed), not a skip.
    #[test]
    fn missing_state_directory_is_an_error() {
        let mut c = config();
        c.unenrolled = Unenrolled::Skip;
        let mut script = Script::new(&[]);
        let err = authenticate(&c, "alice", &mut script, &FixedClock(0)).unwrap_err();
        assert!(matches!(err, AuthError::Store(_)), "{err}");
        assert!(script.prompts.is_empty());
    }

    /// A user enrolled (by the admin code) in a fresh scratch state dir;
    /// returns the config and the backup codes.
    fn enrolled(name: &str) -> (Config, Vec<String>) {
        let state_dir = crate::store::testdir::scratch(name);
        let admin = crate::admin::Admin {
            config: Config {
                state_dir,
                ..Config::default()
            },
            config_path: PathBuf::from("/unused"),
        };
        let opts = crate::admin::EnrollOptions {
            secret: Some(SECRET.into()),
            ..Default::default()
        };
        let e = admin.enroll("daemon", &opts, NOW).unwrap();
        let codes = e
            .backup_codes
            .iter()
            .map(|c| c.grouped().to_string())
            .collect();
        (admin.config, codes)
    }

    const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
    const NOW: u64 = 1_907_755_200;

    /// A record whose backup-code hash is not hex is a record error for
    /// every login, before the prompt (the record is read whole, as
    /// `twofactor check` reads it), and nothing changes on disk.
    #[test]
    fn a_record_with_a_bad_hash_is_refused_before_the_prompt() {
        let (config, _codes) = enrolled("badhash");
        let path = config.state_dir.join("daemon.secret");
        let text = std::fs::read_to_string(&path).unwrap();
        let at = text.find("hashes = [\"").unwrap() + "hashes = [\"".len();
        let mut broken = text.clone();
        broken.replace_range(at..at + 1, "z");
        std::fs::write(&path, &broken).unwrap();
        let dir = TrustedDir::open(&config.state_dir, true).unwrap();
        let user = Username::parse("daemon").unwrap();
        let before = read_state(&dir, &user).unwrap();

        let mut script = Script::new(&[]);
        let result = authenticate(&config, "daemon", &mut script, &FixedClock(NOW));
        assert!(
            matches!(
                &result,
                Err(AuthError::Record {
                    error: RecordError::Invalid(crate::records::Invalid::BackupHash),
                    ..
                })
            ),
            "{result:?}"
        );
        assert_eq!(read_state(&dir, &user).unwrap(), before);
    }

    /// If the new state cannot be stored, a right code is not accepted and
    /// the old state stays (google-authenticator #543).
    #[test]
    fn code_is_refused_when_its_use_cannot_be_stored() {
        use crate::store::{Step, faults};
        let (config, codes) = enrolled("unstorable");
        for step in crate::store::Step::ALL {
            let dir = TrustedDir::open(&config.state_dir, true).unwrap();
            let user = Username::parse("daemon").unwrap();
            let before = read_state(&dir, &user).unwrap();
            let mut script = Script::new(&[Some(codes[0].as_str())]);
            faults::inject(step, faults::Fault::Fail);
            let result = authenticate(&config, "daemon", &mut script, &FixedClock(NOW));
            faults::clear();
            assert!(
                matches!(result, Err(AuthError::Store(_))),
                "{step:?}: {result:?}"
            );
            assert!(script.infos.is_empty(), "{step:?}");
            if step != Step::FsyncDir {
                assert_eq!(read_state(&dir, &user).unwrap(), before, "{step:?}");
            }
        }
    }

    /// Not a test of its own: the child half of
    /// `backup_code_is_never_usable_twice_across_crashes`, which runs it
    /// with `--ignored --exact`; it logs in with a backup code and aborts
    /// at the given step.
    #[test]
    #[ignore = "helper of backup_code_is_never_usable_twice_across_crashes"]
    fn backup_crash_child() {
        let (Ok(dir), Ok(step), Ok(code)) = (
            std::env::var("TF_CRASH_DIR"),
            std::env::var("TF_CRASH_STEP"),
            std::env::var("TF_CRASH_CODE"),
        ) else {
            panic!("a helper process: backup_code_is_never_usable_twice_across_crashes runs it");
        };
        use crate::store::{Step, faults};
        let step = Step::ALL
            .into_iter()
            .find(|s| format!("{s:?}") == step)
            .unwrap();
        let config = Config {
            state_dir: PathBuf::from(dir),
            ..Config::default()
        };
        faults::inject(step, faults::Fault::Abort);
        let mut script = Script::new(&[Some(code.as_str())]);
        let _ = authenticate(&config, "daemon", &mut script, &FixedClock(NOW));
        panic!("did not crash at {step:?}");
    }

    /// A crash at any step of consuming a backup code never lets the code
    /// log in twice: the crashed login returned nothing, and afterwards the
    /// code works at most once (not at all if the crash came after the rename).
    #[test]
    fn backup_code_is_never_usable_twice_across_crashes() {
        use std::os::unix::process::ExitStatusExt;
        let (config, codes) = enrolled("backupcrash");
        for (i, step) in crate::store::Step::ALL.into_iter().enumerate() {
            let code = &codes[i];
            let status = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--ignored",
                    "--exact",
                    "login::tests::backup_crash_child",
                    "--test-threads=1",
                ])
                .env("TF_CRASH_DIR", &config.state_dir)
                .env("TF_CRASH_STEP", format!("{step:?}"))
                .env("TF_CRASH_CODE", code)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert_eq!(status.signal(), Some(libc::SIGABRT), "{step:?}: {status}");
            let mut allowed = 0;
            for attempt in 0..2u64 {
                let mut script = Script::new(&[Some(code.as_str())]);
                let outcome =
                    authenticate(&config, "daemon", &mut script, &FixedClock(NOW + attempt))
                        .unwrap();
                allowed += usize::from(matches!(outcome, Outcome::Allow(Method::Backup { .. })));
            }
            let want = usize::from(step != crate::store::Step::FsyncDir);
            assert_eq!(allowed, want, "{step:?}");
        }
    }

    /// A lock held forever by another process makes the login give up within
    /// a bounded time with an error naming the lock file.
    #[test]
    fn lock_held_forever_gives_up_in_bounded_time() {
        use nix::fcntl::{Flock, FlockArg};
        let (config, _) = enrolled("stucklock");
        let file = std::fs::File::open(config.state_dir.join("daemon.lock")).unwrap();
        let _held = Flock::lock(file, FlockArg::LockExclusive).unwrap();
        let started = std::time::Instant::now();
        let mut script = Script::new(&[Some("123456")]);
        let err = authenticate(&config, "daemon", &mut script, &FixedClock(NOW)).unwrap_err();
        let waited = started.elapsed();
        assert!(
            matches!(err, AuthError::Store(StoreError::LockTimeout { .. })),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains("daemon.lock is locked by another process"),
            "{err}"
        );
        assert!(waited >= std::time::Duration::from_secs(2), "{waited:?}");
        assert!(waited < std::time::Duration::from_secs(10), "{waited:?}");
    }

    /// The admin side of these tests, over the same state directory.
    fn admin(config: &Config) -> crate::admin::Admin {
        crate::admin::Admin {
            config: config.clone(),
            config_path: PathBuf::from("/unused"),
        }
    }

    fn state_of(config: &Config) -> State {
        let dir = TrustedDir::open(&config.state_dir, true).unwrap();
        read_state(&dir, &Username::parse("daemon").unwrap()).unwrap()
    }

    /// Wrong codes until one failure short of the lock, at `now`.
    fn fail_until_one_short(config: &Config, now: u64) {
        for _ in 1..config.max_failures {
            let mut script = Script::new(&[Some("000000")]);
            let outcome = authenticate(config, "daemon", &mut script, &FixedClock(now)).unwrap();
            assert!(matches!(outcome, Outcome::Deny(DenyReason::Failed { .. })));
        }
    }

    /// Issue 14.1: the failure that locks is answered in a prompt opened
    /// two hours earlier (longer than lock_seconds). The lock runs from the
    /// answer, so a fresh right code just after it is refused.
    #[test]
    fn a_lock_runs_from_the_answer_not_from_when_the_prompt_opened() {
        let (config, _) = enrolled("oldprompt");
        fail_until_one_short(&config, NOW);
        let answered = NOW + 7200;
        let clock = MovingClock::at(NOW);
        let mut script = Script::new(&[Some("000000")]).before_answer(clock.set_to(answered));
        let outcome = authenticate(&config, "daemon", &mut script, &clock).unwrap();
        let until = answered + config.lock_seconds;
        assert_eq!(
            outcome,
            Outcome::Deny(DenyReason::Failed {
                failure: Failure::WrongCode,
                locked_until: Some(until)
            })
        );
        assert_eq!(state_of(&config).locked_until, Some(until));
        assert_eq!(state_of(&config).rate_window_start, answered);
        // oathtool --totp -b GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ --now "2030-06-15 14:00:30 UTC"
        let mut script = Script::new(&[Some("354846")]);
        let outcome = authenticate(&config, "daemon", &mut script, &FixedClock(answered + 30));
        assert_eq!(
            outcome.unwrap(),
            Outcome::Deny(DenyReason::LockedOut { until })
        );
    }

    /// Issue 14.1: an old prompt cannot send more codes by message than
    /// max_per_hour: the hour is counted at the time of sending.
    #[test]
    fn the_hourly_delivery_limit_counts_from_the_time_of_sending() {
        let (mut config, _) = enrolled("oldsend");
        admin(&config)
            .set_delivery("daemon", Some("+15555550100"))
            .unwrap();
        config.delivery.command = Some(PathBuf::from("/nonexistent/deliver"));
        config.delivery.max_per_hour = 2;
        let sent = NOW + 3600;
        let dir = TrustedDir::open(&config.state_dir, true).unwrap();
        let user = Username::parse("daemon").unwrap();
        let state = State {
            deliveries: vec![sent, sent + 1],
            ..State::default()
        };
        dir.replace(&user.state_file(), state.to_toml().unwrap().as_bytes())
            .unwrap();
        let clock = MovingClock::at(NOW);
        let mut script = Script::new(&[Some("")]).before_answer(clock.set_to(sent + 10));
        let outcome = authenticate(&config, "daemon", &mut script, &clock).unwrap();
        let Outcome::Deny(DenyReason::DeliveryFailed(why)) = outcome else {
            panic!("{outcome:?}");
        };
        assert!(why.starts_with("max_per_hour reached until"), "{why}");
        assert_eq!(state_of(&config).deliveries, vec![sent, sent + 1]);
    }

    /// Issue 14.2: backup codes regenerated while a prompt is open: an old
    /// code typed into that prompt is refused and nothing is recorded, so
    /// a new code already used stays used.
    #[test]
    fn a_backup_code_revoked_while_the_prompt_is_open_is_refused() {
        let (config, old_codes) = enrolled("revoked");
        let new_codes = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let (admin_side, new_side) = (admin(&config), new_codes.clone());
        let mut stale = Script::new(&[Some(old_codes[0].as_str())]).before_answer(move || {
            let codes = admin_side.regenerate_backup_codes("daemon", NOW).unwrap();
            *new_side.borrow_mut() = codes;
            // The new set's first code is used before the old prompt answers.
            let first = new_side.borrow()[0].grouped().to_string();
            let mut script = Script::new(&[Some(first.as_str())]);
            let outcome = authenticate(&admin_side.config, "daemon", &mut script, &FixedClock(NOW));
            assert!(matches!(outcome, Ok(Outcome::Allow(Method::Backup { .. }))));
        });
        let outcome = authenticate(&config, "daemon", &mut stale, &FixedClock(NOW)).unwrap();
        assert_eq!(outcome, Outcome::Deny(DenyReason::RecordChanged));
        assert_eq!(
            stale.errors,
            vec!["Your second factor was changed while this prompt was open. Log in again."]
        );
        assert_eq!(state_of(&config).used_backup_codes.len(), 1);
        assert_eq!(state_of(&config).failures, 0);
        let used = new_codes.borrow()[0].grouped().to_string();
        let mut script = Script::new(&[Some(used.as_str())]);
        let outcome = authenticate(&config, "daemon", &mut script, &FixedClock(NOW)).unwrap();
        assert!(
            matches!(outcome, Outcome::Deny(DenyReason::Failed { .. })),
            "a used code came back: {outcome:?}"
        );
    }

    /// Issue 14.2: `enroll --force` (lost phone) while a prompt is open:
    /// the old app's code typed there is refused.
    #[test]
    fn a_secret_replaced_while_the_prompt_is_open_is_refused() {
        let (config, _) = enrolled("replaced");
        let admin_side = admin(&config);
        // oathtool --totp -b GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ --now "2030-06-15 12:00:00 UTC"
        let mut stale = Script::new(&[Some("594151")]).before_answer(move || {
            let opts = crate::admin::EnrollOptions {
                force: true,
                ..Default::default()
            };
            admin_side.enroll("daemon", &opts, NOW).unwrap();
        });
        let outcome = authenticate(&config, "daemon", &mut stale, &FixedClock(NOW)).unwrap();
        assert_eq!(outcome, Outcome::Deny(DenyReason::RecordChanged));
        assert_eq!(state_of(&config), State::default());
    }

    /// Issue 14.4: a locked user's backup-length answer is refused before
    /// any argon2 work (the slots are all held: hashing would time out).
    #[test]
    fn a_locked_user_is_refused_before_any_argon2_hash() {
        let (config, codes) = enrolled("lockedhash");
        for _ in 0..config.max_failures {
            let mut script = Script::new(&[Some("000000")]);
            authenticate(&config, "daemon", &mut script, &FixedClock(NOW)).unwrap();
        }
        let dir = TrustedDir::open(&config.state_dir, true).unwrap();
        let _held: Vec<_> = KDF_SLOTS.iter().map(|s| dir.lock(s).unwrap()).collect();
        let started = std::time::Instant::now();
        let mut script = Script::new(&[Some(codes[0].as_str())]);
        let outcome = authenticate(&config, "daemon", &mut script, &FixedClock(NOW + 1)).unwrap();
        assert_eq!(
            outcome,
            Outcome::Deny(DenyReason::LockedOut {
                until: NOW + config.lock_seconds
            })
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // Unlocked, the same answer needs a slot: with none free it gives up.
        admin(&config).unlock("daemon").unwrap();
        let mut script = Script::new(&[Some(codes[0].as_str())]);
        let err = authenticate(&config, "daemon", &mut script, &FixedClock(NOW + 2)).unwrap_err();
        assert!(
            matches!(&err, AuthError::Store(StoreError::LockTimeout { path }) if path.ends_with(".kdf-slot-0.lock")),
            "{err}"
        );
    }

    /// Issue 14.4: the lock ended between the cheap look and the decision:
    /// the answer is hashed after all and the backup code works.
    #[test]
    fn a_lock_that_ends_before_the_decision_still_takes_a_backup_code() {
        let (config, codes) = enrolled("lockends");
        let dir = TrustedDir::open(&config.state_dir, true).unwrap();
        let user = Username::parse("daemon").unwrap();
        let state = State {
            failures: 5,
            locked_until: Some(NOW + 10),
            ..State::default()
        };
        dir.replace(&user.state_file(), state.to_toml().unwrap().as_bytes())
            .unwrap();
        // The cheap look sees the lock; the decision comes after it ended.
        struct Late(std::cell::Cell<u32>);
        impl Clock for Late {
            fn now(&self) -> u64 {
                let reads = self.0.get();
                self.0.set(reads + 1);
                if reads == 0 { NOW } else { NOW + 10 }
            }
        }
        let mut script = Script::new(&[Some(codes[0].as_str())]);
        let outcome = authenticate(
            &config,
            "daemon",
            &mut script,
            &Late(std::cell::Cell::new(0)),
        );
        assert_eq!(
            outcome.unwrap(),
            Outcome::Allow(Method::Backup {
                remaining: codes.len() - 1
            })
        );
    }

    /// Issue 14.3: the drift message says nothing of how far off the
    /// device is; the suspicion is already counted when the user hangs up.
    #[test]
    fn a_drift_match_tells_nothing_and_is_counted_at_once() {
        let (config, _) = enrolled("driftoracle");
        // oathtool --totp -b GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ --now "2030-06-15 12:02:30 UTC"
        let mut script = Script::new(&[Some("666449"), None]);
        let err = authenticate(&config, "daemon", &mut script, &FixedClock(NOW)).unwrap_err();
        assert!(matches!(err, AuthError::Conversation));
        assert_eq!(
            script.infos,
            vec!["The clock of your device seems to be off. Wait for the next code and enter it."]
        );
        assert_eq!(script.prompts, vec![PROMPT, NEXT_PROMPT]);
        let state = state_of(&config);
        assert_eq!(state.failures, 1);
        assert_eq!(
            state.last_accepted_step.get(DEFAULT_DEVICE),
            Some(&(NOW / 30 + 5))
        );
    }
}
