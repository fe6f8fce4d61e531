//! One authentication, from user name to outcome, over a `Conversation`
//! trait so tests can script it without PAM. The order is deliberate:
//! exemptions first (no files), then the records; prompt with no lock held
//! (a user may take a minute); compute argon2 hashes (slow) before the lock;
//! then lock → re-read state → decide → write durably → unlock, and only
//! then tell the user anything.

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::accounts;
use crate::backup;
use crate::config::{Config, Unenrolled};
use crate::deliver::{self, DeliveryError};
use crate::enroll;
use crate::input::{self, Answer};
use crate::otp::{self, CodeMatch, SecretKey};
use crate::policy::{self, Attempt, DriftCheck, Failure, Policy, Verdict};
use crate::record::{
    DEFAULT_DEVICE, Delivered, Device, Hashes, MAX_RECORD_BYTES, RecordError, SecretRecord, State,
};
use crate::store::{Access, StoreError, TrustedDir};
use crate::timefmt;
use crate::username::{Username, UsernameError};
use crate::wipe::WipedBytes;

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
            },
        }
    }
}

/// A secret record as a login reads it: parsed without the backup-code
/// hashes (`Hashes::Skip`), with its bytes kept until an answer that could
/// be a backup code needs them decoded (`with_hashes`), never longer. The
/// bytes hold the secret too (in base32); they are wiped when dropped.
struct LoginRecord {
    record: SecretRecord,
    /// `Some` while the hashes are not decoded yet.
    undecoded: Option<WipedBytes>,
}

impl LoginRecord {
    /// The record with its hashes, decoded from the bytes read at first
    /// (never a second read of a file that may have changed).
    fn with_hashes(
        &mut self,
        dir: &TrustedDir,
        user: &Username,
    ) -> Result<&SecretRecord, AuthError> {
        if let Some(bytes) = self.undecoded.take() {
            self.record = SecretRecord::parse_with(&bytes, Hashes::Decode).map_err(|error| {
                AuthError::Record {
                    path: dir.path().join(user.secret_file()),
                    error,
                }
            })?;
        }
        Ok(&self.record)
    }
}

fn read_record(dir: &TrustedDir, user: &Username) -> Result<Option<LoginRecord>, AuthError> {
    let name = user.secret_file();
    let Some(bytes) = dir.read(&name, Access::Private, MAX_RECORD_BYTES)? else {
        return Ok(None);
    };
    match SecretRecord::parse_with(&bytes, Hashes::Skip) {
        Ok(record) => Ok(Some(LoginRecord {
            record,
            undecoded: Some(bytes),
        })),
        Err(error) => Err(AuthError::Record {
            path: dir.path().join(name),
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
            path: dir.path().join(name),
            error,
        }),
    }
}

/// Runs `change` on the user's state under the lock and stores the result
/// durably before returning it.
fn update_state<T>(
    dir: &TrustedDir,
    user: &Username,
    change: impl FnOnce(&State) -> (T, State),
) -> Result<T, AuthError> {
    let _lock = dir.lock(&user.lock_file())?;
    let state = read_state(dir, user)?;
    let (result, new) = change(&state);
    if new != state {
        // Durable before anything is acted on: a code we cannot mark as
        // used is not accepted (google-authenticator #543).
        dir.replace(&user.state_file(), new.to_toml().as_bytes())?;
    }
    Ok(result)
}

/// Authenticates `raw_user` (no remote host) at time `now`.
pub fn authenticate(
    config: &Config,
    raw_user: &str,
    conv: &mut dyn Conversation,
    now: u64,
) -> Result<Outcome, AuthError> {
    authenticate_from(config, raw_user, None, conv, now)
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

/// Authenticates `raw_user` connecting from `rhost` (PAM_RHOST) at `now`.
pub fn authenticate_from(
    config: &Config,
    raw_user: &str,
    rhost: Option<&str>,
    conv: &mut dyn Conversation,
    now: u64,
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
    let (user, mut login) = match read_record(&dir, &user)? {
        Some(record) => (user, record),
        None => match enrolled_first_name(&dir, &user)? {
            Some(found) => found,
            None => {
                return match config.unenrolled {
                    Unenrolled::Skip => Ok(Outcome::Skip(SkipReason::Unenrolled)),
                    Unenrolled::Deny => deny_after_prompt(conv, DenyReason::Unenrolled),
                    Unenrolled::Enroll => enroll_at_login(config, &dir, &user, conv, now),
                };
            }
        },
    };
    if let (Some(host), true) = (rhost, config.grace_seconds > 0) {
        // A hint read without the lock: the file is replaced atomically.
        let state = read_state(&dir, &user)?;
        if policy::in_grace(&state, host, now, config.grace_seconds) {
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
        let record = if backup_length(&answer, &login.record) {
            login.with_hashes(&dir, &user)?
        } else {
            &login.record
        };
        let delivery_on = config.delivery.command.is_some();
        if answer == Answer::Empty && delivery_on && drift.is_none() && !delivered_now {
            match send_code(config, &dir, &user, record, now)? {
                Ok(target) => {
                    conv.show_info(&format!("A code was sent to {target}."));
                    prompt = SENT_PROMPT;
                    delivered_now = true;
                    continue;
                }
                Err(message) => {
                    conv.show_error(&message.to_user());
                    return Ok(Outcome::Deny(DenyReason::DeliveryFailed(
                        message.to_string(),
                    )));
                }
            }
        }
        let delivery_possible = delivery_on && record.deliver_to.is_some();
        let hash = answer_hash(&answer, record, delivery_possible, &dir, &user)?;
        let attempt = Attempt {
            code: answer.totp(),
            hash,
            drift: drift.as_ref(),
            rhost,
        };
        let decision = update_state(&dir, &user, |state| {
            let d = policy::decide(record, state, &attempt, now, &policy);
            (d.verdict, d.state)
        })?;
        match decision {
            Verdict::DriftSuspected(check) if drift.is_none() => {
                let minutes = (check
                    .off_by
                    .saturating_mul(u64::from(period_of(record, &check.device))))
                .div_ceil(60);
                conv.show_info(&format!(
                    "The clock of your device seems to be off by about {minutes} minute{}. Wait for the next code and enter it.",
                    if minutes == 1 { "" } else { "s" }
                ));
                prompt = NEXT_PROMPT;
                drift = Some(check);
            }
            verdict => return Ok(tell(conv, record, verdict)),
        }
    }
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

/// The argon2 hash of the answer, when it can be a backup code (by length)
/// or a delivered code (one is pending).
fn answer_hash(
    answer: &Answer,
    record: &SecretRecord,
    delivery_possible: bool,
    dir: &TrustedDir,
    user: &Username,
) -> Result<Option<[u8; backup::HASH_BYTES]>, AuthError> {
    let Answer::Digits(digits) = answer else {
        return Ok(None);
    };
    let backup_length = backup_length(answer, record);
    // Only users who can receive codes pay for the extra state read.
    let delivery_pending =
        delivery_possible && answer.totp().is_some() && read_state(dir, user)?.delivered.is_some();
    if !backup_length && !delivery_pending {
        return Ok(None);
    }
    backup::hash_digits(digits, &record.backup.salt, record.backup.kdf)
        .map(Some)
        .ok_or(AuthError::Kdf)
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
    HourlyLimit { until: u64 },
    Command(DeliveryError),
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
        }
    }
}

/// Creates a code, stores only its hash and expiry (durably, under the
/// lock, counting it against `max_per_hour`), then runs the command.
fn send_code(
    config: &Config,
    dir: &TrustedDir,
    user: &Username,
    record: &SecretRecord,
    now: u64,
) -> Result<Result<String, SendFailure>, AuthError> {
    let (Some(_), Some(target)) = (&config.delivery.command, &record.deliver_to) else {
        return Ok(Err(SendFailure::NotSetUp));
    };
    let code = backup::random_digits(config.totp.digits).ok_or(AuthError::Kdf)?;
    let hash =
        backup::hash_digits(&code, &record.backup.salt, record.backup.kdf).ok_or(AuthError::Kdf)?;
    let limit = config.delivery.max_per_hour as usize;
    let allowed = update_state(dir, user, |state| {
        let mut new = state.clone();
        new.deliveries.retain(|&t| t <= now && now - t < 3600);
        if new.deliveries.len() >= limit {
            let oldest = new.deliveries.iter().min().copied().unwrap_or(now);
            return (Err(oldest + 3600), new);
        }
        new.deliveries.push(now);
        new.delivered = Some(Delivered {
            hash,
            expires: now.saturating_add(config.delivery.valid_seconds),
        });
        (Ok(()), new)
    })?;
    if let Err(until) = allowed {
        return Ok(Err(SendFailure::HourlyLimit { until }));
    }
    Ok(
        deliver::request(config.delivery.socket(), user.as_str(), target, &code)
            .map(|()| target.clone())
            .map_err(SendFailure::Command),
    )
}

/// `unenrolled = "enroll"`: show a new secret, ask for a code from it, and
/// store the enrollment only if the code is right. Trust on first use: the
/// password is all that protects this step (README says so plainly).
fn enroll_at_login(
    config: &Config,
    dir: &TrustedDir,
    user: &Username,
    conv: &mut dyn Conversation,
    now: u64,
) -> Result<Outcome, AuthError> {
    if !config.enroll_groups.is_empty()
        && accounts::first_shared_group(user.as_str(), &config.enroll_groups).is_none()
    {
        return deny_after_prompt(conv, DenyReason::Unenrolled);
    }
    let secret = SecretKey::new(backup::random_bytes::<20>().ok_or(AuthError::Kdf)?.to_vec());
    let params = config.totp;
    let uri = enroll::otpauth_uri(&config.issuer_name(), user.as_str(), &secret, params);
    let qr = enroll::qr_text(&uri).unwrap_or_default();
    conv.show_info(&format!(
        "Two-factor authentication is required and not set up for you yet.\n\
         Scan this QR code with your authenticator app:\n{qr}\n\
         Or enter this key by hand: {}\n\
         ({}, {} digits, every {} s)\n\
         otpauth URI: {uri}\n\
         Then enter the code the app shows.",
        enroll::grouped_secret(&secret),
        params.algorithm,
        params.digits,
        params.period
    ));
    let raw = conv.ask_code(PROMPT)?;
    let answer = input::classify(&raw);
    drop(raw);
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
        dir.replace(&user.state_file(), state.to_toml().as_bytes())?;
        dir.replace(&user.secret_file(), record.to_toml().as_bytes())?;
    }
    let list: Vec<String> = codes
        .iter()
        .map(|c| format!("  {}", c.grouped().as_str()))
        .collect();
    conv.show_info(&format!(
        "Two-factor authentication is set up. Your backup codes (each works once; keep them safe, they are not shown again):\n{}",
        list.join("\n")
    ));
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
    use std::collections::VecDeque;

    /// A scripted conversation: answers in order, records everything shown,
    /// and panics if asked more often than scripted.
    struct Script {
        answers: VecDeque<Option<String>>,
        prompts: Vec<String>,
        infos: Vec<String>,
        errors: Vec<String>,
    }

    impl Script {
        fn new(answers: &[Option<&str>]) -> Script {
            Script {
                answers: answers.iter().map(|a| a.map(str::to_string)).collect(),
                prompts: vec![],
                infos: vec![],
                errors: vec![],
            }
        }
    }

    impl Conversation for Script {
        fn ask_code(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, ConvError> {
            self.prompts.push(prompt.to_string());
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
            let outcome = authenticate(&config(), name, &mut script, 0).unwrap();
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
        let err = authenticate(&config(), "a/b", &mut script, 0).unwrap_err();
        assert!(matches!(err, AuthError::Conversation));
    }

    /// A missing state directory is an error (fail closed), not a skip.
    #[test]
    fn missing_state_directory_is_an_error() {
        let mut c = config();
        c.unenrolled = Unenrolled::Skip;
        let mut script = Script::new(&[]);
        let err = authenticate(&c, "alice", &mut script, 0).unwrap_err();
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

    /// If the new state cannot be stored, a right code is not accepted and
    /// the old state stays (google-authenticator #543).
    /// A login decodes the backup-code hashes only for an answer that could
    /// be a backup code: a record whose first hash is not hex still takes a
    /// TOTP code, while a backup-length answer is a record error (denied)
    /// and changes nothing on disk.
    #[test]
    fn hashes_are_decoded_only_for_a_backup_answer() {
        let (config, codes) = enrolled("lazyhash");
        let path = config.state_dir.join("daemon.secret");
        let text = std::fs::read_to_string(&path).unwrap();
        let at = text.find("hashes = [\"").unwrap() + "hashes = [\"".len();
        let mut broken = text.clone();
        broken.replace_range(at..at + 1, "z");
        std::fs::write(&path, &broken).unwrap();
        let dir = TrustedDir::open(&config.state_dir, true).unwrap();
        let user = Username::parse("daemon").unwrap();
        let before = read_state(&dir, &user).unwrap();

        let mut script = Script::new(&[Some(codes[1].as_str())]);
        let result = authenticate(&config, "daemon", &mut script, NOW);
        assert!(
            matches!(
                &result,
                Err(AuthError::Record { error: RecordError::Invalid(m), .. }) if m == "backup codes: bad hash"
            ),
            "{result:?}"
        );
        assert_eq!(read_state(&dir, &user).unwrap(), before);

        // oathtool --totp -b GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ --now "2030-06-15 12:00:00 UTC"
        let mut script = Script::new(&[Some("594151")]);
        let result = authenticate(&config, "daemon", &mut script, NOW);
        assert_eq!(
            result.unwrap(),
            Outcome::Allow(Method::Totp {
                device: DEFAULT_DEVICE.into()
            })
        );
        assert_eq!(
            read_state(&dir, &user)
                .unwrap()
                .last_accepted_step
                .get(DEFAULT_DEVICE),
            Some(&(NOW / 30))
        );
    }

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
            let result = authenticate(&config, "daemon", &mut script, NOW);
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

    /// The child half of the crash test: logs in with a backup code and
    /// aborts at the given step. Does nothing unless started by the parent.
    #[test]
    fn backup_crash_child() {
        let (Ok(dir), Ok(step), Ok(code)) = (
            std::env::var("TF_CRASH_DIR"),
            std::env::var("TF_CRASH_STEP"),
            std::env::var("TF_CRASH_CODE"),
        ) else {
            return;
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
        let _ = authenticate(&config, "daemon", &mut script, NOW);
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
                    "--exact",
                    "auth::tests::backup_crash_child",
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
                let outcome = authenticate(&config, "daemon", &mut script, NOW + attempt).unwrap();
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
        let err = authenticate(&config, "daemon", &mut script, NOW).unwrap_err();
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
}
