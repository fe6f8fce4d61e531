//! One authentication, from user name to outcome, over a `Conversation`
//! trait so tests can script it without PAM. The order is deliberate:
//! exemptions first (no files), then the records; prompt with no lock held
//! (a user may take minutes); a cheap look at the state refuses a locked or
//! rate-limited attempt before any argon2 work; compute argon2 hashes (slow,
//! a bounded number at once) before the lock; then lock → check the secret
//! record is the one the prompt was shown for → re-read state → read the
//! clock → decide → write durably → unlock, and only then tell the user
//! anything. The clock is read at each decision, never once at the start.

mod answer;
mod by_message;
mod conversation;
mod enroll;
mod fleet;
pub mod input;
mod notice;
mod outcome;

use crate::config::{Config, Unenrolled};
use crate::delivery;
use crate::host::accounts;
use crate::host::clock::Clock;
use crate::host::timefmt;
use crate::policy::{self, Attempt, DriftCheck, Failure, Policy, Verdict};
use crate::records::user::{ReadRecord, UserFiles};
use crate::records::username::{Username, UsernameError};
use crate::records::{SecretRecord, State};
use crate::store::{StoreError, TrustedDir};
use answer::AnswerHash;
pub use answer::is_kdf_slot;
pub use conversation::{
    ConvError, Conversation, NEXT_PROMPT, NOT_ROOT_MESSAGE, PROMPT, SENT_PROMPT,
};
use input::Answer;
pub use outcome::{AuthError, DenyReason, FleetUnavailable, Method, Outcome, SkipReason};

/// The secret record is no longer the one the prompt was shown for.
struct RecordChanged;

/// Runs `change` on the user's state under the lock and stores the result
/// durably before returning it. Under the lock it first checks that the
/// secret record is still the file `record` was read from (a prompt may have been open
/// while an admin revoked backup codes or replaced the secret: decide
/// against the record as it is, or not at all), then reads the clock:
/// `change` gets the time of this decision, so a lock or window is never
/// written relative to the moment the prompt opened.
fn update_state<T>(
    files: &UserFiles,
    clock: &dyn Clock,
    record: &ReadRecord,
    change: impl FnOnce(&State, u64) -> (T, State),
) -> Result<Result<T, RecordChanged>, AuthError> {
    let _lock = files.lock()?;
    if !files.record_is(record)? {
        return Ok(Err(RecordChanged));
    }
    let (state, slot) = files.read_state_for_update()?;
    let (result, new) = change(&state, clock.now());
    if new != state {
        // Durable before anything is acted on: a code we cannot mark as
        // used is not accepted (google-authenticator #543).
        files.write_state(&new, slot)?;
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
) -> Result<Option<(Username, ReadRecord)>, AuthError> {
    let Some(first) = accounts::first_name_of_uid(user.as_str()) else {
        return Ok(None);
    };
    let Ok(first) = Username::parse(&first) else {
        return Ok(None);
    };
    let found = UserFiles::new(dir, &first).read_record_kept()?;
    Ok(found.map(|record| (first, record)))
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
    if let Some(fleet) = &config.fleet {
        // Exemptions stay host-local; everything else is the fleet's.
        return fleet::authenticate(config, fleet, user, rhost, conv, clock);
    }
    let dir = TrustedDir::open(&config.state_dir, crate::store::Dir::Private)
        .map_err(|e| state_dir_error(conv, e, nix::unistd::geteuid().as_raw()))?;
    let (user, login) = match UserFiles::new(&dir, &user).read_record_kept()? {
        Some(record) => (user, record),
        None => match enrolled_first_name(&dir, &user)? {
            Some(found) => found,
            None => {
                return match config.unenrolled {
                    Unenrolled::Skip => Ok(Outcome::Skip(SkipReason::Unenrolled)),
                    Unenrolled::Deny => deny_after_prompt(conv, DenyReason::Unenrolled),
                    Unenrolled::Enroll => {
                        enroll::enroll_at_login(config, &UserFiles::new(&dir, &user), conv, clock)
                    }
                };
            }
        },
    };
    let files = UserFiles::new(&dir, &user);
    if let (Some(host), true) = (rhost, config.grace_seconds > 0) {
        // A hint read without the lock: the file is replaced atomically.
        let state = files.read_state()?;
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
            match by_message::send_code(config, &files, &login, &policy, clock)? {
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
                Err(by_message::SendFailure::Refused(verdict)) => {
                    return Ok(tell(conv, verdict, DEFAULT_PERIOD));
                }
                Err(by_message::SendFailure::RecordChanged) => return Ok(record_changed(conv)),
                Err(message) => {
                    conv.show_error(&message.to_user());
                    return Ok(Outcome::Deny(DenyReason::DeliveryFailed(
                        message.to_string(),
                    )));
                }
            }
        }
        let delivery_possible = delivery_on && login.record.deliver_to.is_some();
        let mut hash = answer::hash_needed(
            &answer,
            &login.record,
            delivery_possible,
            &files,
            &policy,
            clock,
        )?;
        let verdict = loop {
            if hash == AnswerHash::Needed {
                hash = AnswerHash::Done(answer::hash_in_slot(&dir, &answer, &login.record)?);
            }
            let record = &login.record;
            let attempt = Attempt {
                code: answer.totp(),
                hash: hash.value(),
                drift: drift.as_ref(),
                rhost,
            };
            let deferred = matches!(hash, AnswerHash::Deferred);
            let decided = update_state(&files, clock, &login, |state, now| {
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
                conv.show_info(DRIFT_INFO);
                prompt = NEXT_PROMPT;
                drift = Some(check);
            }
            verdict => {
                let period = period_of_verdict(&login.record, &verdict);
                // Stored already; told before the user hears the outcome.
                notice::tell_of(config, &user, &verdict, period, clock);
                return Ok(tell(conv, verdict, period));
            }
        }
    }
}

/// Told when a code matched outside the window. Says nothing of how far
/// off: the matched step is spent and counted, and the size of the offset
/// would only help a guesser.
const DRIFT_INFO: &str =
    "The clock of your device seems to be off. Wait for the next code and enter it.";

/// Tells the user their second factor changed under the open prompt.
fn record_changed(conv: &mut dyn Conversation) -> Outcome {
    conv.show_error("Your second factor was changed while this prompt was open. Log in again.");
    Outcome::Deny(DenyReason::RecordChanged)
}

/// The period assumed where a verdict names no device.
const DEFAULT_PERIOD: u32 = 30;

/// The period of the device a verdict names (for a learned drift's offset
/// in seconds), from the record the verdict was decided against.
fn period_of_verdict(record: &SecretRecord, verdict: &Verdict) -> u32 {
    let Verdict::AllowDrift { device, .. } = verdict else {
        return DEFAULT_PERIOD;
    };
    record
        .devices
        .iter()
        .find(|d| &d.label == device)
        .map_or(DEFAULT_PERIOD, |d| d.params.period)
}

/// Turns the verdict into the outcome, telling the user what they need;
/// `period` is that of the device an `AllowDrift` names (its offset is
/// logged in seconds). Shared by the file and the fleet flows, so both
/// say the same.
fn tell(conv: &mut dyn Conversation, verdict: Verdict, period: u32) -> Outcome {
    match verdict {
        Verdict::AllowTotp { device } => Outcome::Allow(Method::Totp { device }),
        Verdict::AllowDrift { device, offset } => {
            let offset_seconds = offset.saturating_mul(i64::from(period));
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

/// The state directory could not be opened. A caller that is not root (a
/// screen locker runs as the user) is refused by the root-only directory:
/// tell the user plainly, or PAM shows only "cannot retrieve authentication
/// info". Users never read their own seed (google-authenticator #240), so
/// such a caller cannot check codes at all.
fn state_dir_error(conv: &mut dyn Conversation, error: StoreError, euid: u32) -> AuthError {
    if !outcome::refused_to_non_root(&error, euid) {
        return AuthError::Store(error);
    }
    conv.show_error(NOT_ROOT_MESSAGE);
    AuthError::CallerNotRoot { uid: euid, error }
}

#[cfg(test)]
mod tests;
