//! A code sent by message (`[delivery]`): made here, stored as a hash,
//! handed to the delivery service.

use std::fmt;

use super::answer::hash_digits_in_slot;
use super::{AuthError, RecordChanged, update_state};
use crate::config::Config;
use crate::delivery::{self, DeliveryError};
use crate::host::clock::Clock;
use crate::host::timefmt;
use crate::otp::backup;
use crate::policy::{self, Policy, Verdict};
use crate::records::Delivered;
use crate::records::user::{ReadRecord, UserFiles};

/// Why no code could be sent by message.
#[derive(Debug)]
pub(super) enum SendFailure {
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
    pub(super) fn to_user(&self) -> String {
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
pub(super) fn send_code(
    config: &Config,
    files: &UserFiles,
    login: &ReadRecord,
    policy: &Policy,
    clock: &dyn Clock,
) -> Result<Result<String, SendFailure>, AuthError> {
    let record = &login.record;
    let (Some(_), Some(target)) = (&config.delivery.command, &record.deliver_to) else {
        return Ok(Err(SendFailure::NotSetUp));
    };
    let limit = config.delivery.max_per_hour;
    // Cheap refusals first, from a look without the lock.
    let mut hint = files.read_state()?;
    let now = clock.now();
    if let Some(verdict) = policy::refusal(&hint, now, policy) {
        return Ok(Err(SendFailure::Refused(verdict)));
    }
    if let Err(until) = policy::count_delivery(&mut hint, now, limit) {
        return Ok(Err(SendFailure::HourlyLimit { until }));
    }
    let code = backup::random_digits(config.totp.digits).ok_or(AuthError::Kdf)?;
    let hash = hash_digits_in_slot(files.dir(), &code, record)?;
    let valid_seconds = config.delivery.valid_seconds;
    let counted = update_state(files, clock, login, |state, now| {
        // Decided again as the state is under the lock: a parallel login
        // may have locked the account since the look above.
        if let Some(verdict) = policy::refusal(state, now, policy) {
            return (Err(SendFailure::Refused(verdict)), state.clone());
        }
        let mut new = state.clone();
        let counted = policy::count_delivery(&mut new, now, limit)
            .map_err(|until| SendFailure::HourlyLimit { until });
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
        Ok(Err(failure)) => return Ok(Err(failure)),
        Ok(Ok(())) => {}
    }
    Ok(delivery::request(
        config.delivery.socket(),
        files.user().as_str(),
        target,
        &code,
    )
    .map(|()| target.clone())
    .map_err(SendFailure::Command))
}
