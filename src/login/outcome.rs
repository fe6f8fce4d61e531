//! The core's answer in its own words (the PAM door maps it to a PAM
//! code), and the line each outcome leaves in syslog.

use std::fmt;
use std::path::PathBuf;

use super::ConvError;
use crate::fleet::client::ClientError;
use crate::fleet::protocol::Unavailable;
use crate::host::timefmt;
use crate::policy::Failure;
use crate::records::RecordError;
use crate::records::user::FilesError;
use crate::records::username::escape;
use crate::store::StoreError;

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
    /// Fleet mode: the agent could not be asked or could not decide.
    /// Nothing but the agent's allow lets anyone in (fail closed).
    FleetUnavailable(FleetUnavailable),
}

/// Why fleet mode could not decide a login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FleetUnavailable {
    /// The agent answered that it could not decide; `detail` is its word
    /// for the log (never shown to the user).
    Agent { reason: Unavailable, detail: String },
    /// The agent could not be asked, or its reply was not understood.
    Client(ClientError),
}

impl FleetUnavailable {
    /// What the user is told.
    pub fn to_user(&self) -> &'static str {
        match self {
            FleetUnavailable::Agent { reason, .. } => reason.to_user(),
            FleetUnavailable::Client(ClientError::NotRoot { .. }) => super::NOT_ROOT_MESSAGE,
            FleetUnavailable::Client(_) => Unavailable::DatabaseDown.to_user(),
        }
    }
}

impl fmt::Display for FleetUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (reason, detail) = match self {
            FleetUnavailable::Client(e) => return write!(f, "{e}"),
            FleetUnavailable::Agent { reason, detail } => (reason, escape(detail)),
        };
        match reason {
            Unavailable::DatabaseDown => write!(
                f,
                "the fleet agent cannot reach the database ({detail}); check the database, the network and the host's credentials (twofactor check; journalctl -u pam-twofactor-agent)"
            ),
            Unavailable::Timeout => write!(
                f,
                "the database did not answer within [fleet] deadline_seconds ({detail}); a commit waiting for a missing synchronous standby looks like this (twofactor fleet status)"
            ),
            Unavailable::NotSynchronous => write!(
                f,
                "the fleet requires a synchronous standby and writes are not protected by one ({detail}); attach a standby (twofactor fleet status)"
            ),
            Unavailable::Refused => write!(
                f,
                "the database refused the host's request ({detail}); check the host role's rights and the schema version (twofactor check)"
            ),
            Unavailable::BadRequest => write!(
                f,
                "the fleet agent could not read the module's request ({detail}); do the module and the agent come from the same version?"
            ),
        }
    }
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
    /// The caller runs as this uid, not root, and the root-only state
    /// directory refused it (a screen locker running as the user).
    CallerNotRoot { uid: u32, error: StoreError },
}

/// Whether `error`, met opening the state directory as `euid`, is the
/// refusal a non-root caller gets from a root-only directory.
pub(super) fn refused_to_non_root(error: &StoreError, euid: u32) -> bool {
    euid != 0
        && matches!(
            error,
            StoreError::Io {
                errno: nix::errno::Errno::EACCES | nix::errno::Errno::EPERM,
                ..
            }
        )
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
            AuthError::CallerNotRoot { uid, error } => write!(
                f,
                "the caller runs as uid {uid}, not root, and cannot read the state directory ({error}); it cannot check codes (told the user)"
            ),
        }
    }
}

impl std::error::Error for AuthError {}

impl From<StoreError> for AuthError {
    fn from(e: StoreError) -> AuthError {
        AuthError::Store(e)
    }
}

impl From<FilesError> for AuthError {
    fn from(e: FilesError) -> AuthError {
        match e {
            FilesError::Store(e) => AuthError::Store(e),
            FilesError::Record { path, error } => AuthError::Record { path, error },
        }
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
                    format!("authentication succeeded (TOTP code, device {device})")
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
                DenyReason::FleetUnavailable(why) => format!("denied: fleet: {why}"),
            },
        }
    }
}
