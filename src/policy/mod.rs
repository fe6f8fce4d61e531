//! Pure policy: rate limit, lockout, replay and backup-code consumption as
//! functions of `(record, state, answer, now, policy)`. No files, no PAM.

use crate::config::Config;
use crate::otp::backup::{self, HASH_BYTES};
use crate::otp::{self, CodeMatch};
use crate::records::{MAX_GRACE_HOSTS, SecretRecord, State};

/// The limits that apply to one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub window: u32,
    pub max_failures: u32,
    pub lock_seconds: u64,
    pub max_attempts: u32,
    pub per_seconds: u64,
    /// Steps beyond the window where a code means "clock drift", not "wrong".
    pub max_drift_steps: u32,
    /// Remember successful remote hosts for `[grace]` (0 = off).
    pub grace_seconds: u64,
}

impl From<&Config> for Policy {
    fn from(c: &Config) -> Policy {
        Policy {
            window: c.window,
            max_failures: c.max_failures,
            lock_seconds: c.lock_seconds,
            max_attempts: c.max_attempts,
            per_seconds: c.per_seconds,
            max_drift_steps: c.max_drift_steps,
            grace_seconds: c.grace_seconds,
        }
    }
}

/// A code that matched outside the window: the second code must be the
/// device's next one (RFC 6238 §6 resynchronisation, with confirmation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DriftCheck {
    pub device: String,
    /// The step the first code matched.
    pub step: u64,
    /// That step minus ours, in steps.
    pub offset: i64,
    /// How far that step is from the one the device was expected to show
    /// (ours plus the offset already learned), in steps: what the user is
    /// told, since an already-learned offset is not the device's error.
    pub off_by: u64,
}

/// An answer, reduced to what the policy needs. Hashes are computed by the
/// caller (argon2 is slow; it runs before the lock is taken).
#[derive(Debug, Default)]
pub struct Attempt<'a> {
    /// The digits, when they could be a TOTP code (6 to 8 ASCII digits).
    pub code: Option<&'a str>,
    /// argon2 hash of the answer, when it could be a backup or delivered code.
    pub hash: Option<[u8; HASH_BYTES]>,
    /// Set when this answer confirms a suspected clock drift.
    pub drift: Option<&'a DriftCheck>,
    /// PAM_RHOST, remembered on success for `[grace]`.
    pub rhost: Option<&'a str>,
}

/// Why an attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No device's code matches inside the window, or no unused backup code.
    WrongCode,
    /// The code matched a step not newer than the last accepted one.
    Replayed,
    /// The input was neither a TOTP nor a backup code.
    Malformed,
    /// The code after a suspected drift was not the device's next code.
    DriftNotConfirmed,
    /// The code matched a step outside the window but within
    /// `max_drift_steps`: counted like a wrong code (and that step is spent)
    /// until the next code confirms the drift.
    DriftSuspected,
}

/// The policy's answer for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A fresh TOTP code from this device.
    AllowTotp { device: String },
    /// A code confirmed after drift; the offset is now stored.
    AllowDrift { device: String, offset: i64 },
    /// An unused backup code; it is now used.
    AllowBackup { remaining: usize },
    /// The code sent by `[delivery]`; it is now spent.
    AllowDelivered,
    /// The code matched outside the window: ask for the next one. The
    /// attempt already counts as a failure and the matched step is spent;
    /// a confirmation clears the failure.
    DriftSuspected(DriftCheck),
    /// A failed attempt; `locked_until` is set if it started a lock.
    Deny {
        failure: Failure,
        locked_until: Option<u64>,
    },
    /// Locked: refused without looking at the code.
    LockedOut { until: u64 },
    /// Too many attempts in the window: refused without looking at the code.
    RateLimited { until: u64 },
}

/// The verdict and the state to store before it may be acted on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub state: State,
}

/// Backup codes in `record` that are not yet used.
pub fn backup_codes_remaining(record: &SecretRecord, state: &State) -> usize {
    record
        .backup
        .hashes
        .iter()
        .filter(|h| !state.used_backup_codes.contains(h))
        .count()
}

/// The refusal an attempt at `now` meets before its code is looked at: the
/// rate limit, then the lock. The same rules as the start of `decide`,
/// without changing anything, so a login can refuse cheaply before any
/// argon2 work and still decide under the lock (SECURITY.md, "cheap
/// refusals first").
pub fn refusal(state: &State, now: u64, policy: &Policy) -> Option<Verdict> {
    let (start, attempts) = if rate_window_over(state, now, policy) {
        (now, 0)
    } else {
        (state.rate_window_start, state.rate_window_attempts)
    };
    if attempts >= policy.max_attempts {
        return Some(Verdict::RateLimited {
            until: start.saturating_add(policy.per_seconds),
        });
    }
    match state.locked_until {
        Some(until) if now < until => Some(Verdict::LockedOut { until }),
        _ => None,
    }
}

/// Whether the rate-limit window that `state` counts in is over at `now`
/// (or lies in the future: the clock stepped back).
fn rate_window_over(state: &State, now: u64, policy: &Policy) -> bool {
    now >= state.rate_window_start.saturating_add(policy.per_seconds)
        || now < state.rate_window_start
}

/// Counts one failure; returns the end of the lock it starts, if any. The
/// lock runs from `now`, the time of this decision (never from when the
/// prompt opened).
fn count_failure(state: &mut State, now: u64, policy: &Policy) -> Option<u64> {
    state.failures = state.failures.saturating_add(1);
    (state.failures >= policy.max_failures).then(|| {
        let until = now.saturating_add(policy.lock_seconds);
        state.locked_until = Some(until);
        until
    })
}

/// Counts one code sent by message at `now` against `max_per_hour`. Send
/// times an hour old or more, or in the future (the clock stepped back),
/// are dropped first; `Err(until)` when the hour is full, with the time the
/// oldest send leaves it.
pub fn count_delivery(state: &mut State, now: u64, max_per_hour: u32) -> Result<(), u64> {
    state.deliveries.retain(|&t| t <= now && now - t < 3600);
    if state.deliveries.len() >= usize::try_from(max_per_hour).unwrap_or(usize::MAX) {
        let oldest = state.deliveries.iter().min().copied().unwrap_or(now);
        return Err(oldest.saturating_add(3600));
    }
    state.deliveries.push(now);
    Ok(())
}

/// The consecutive failures that count at `now`: once a lock has expired
/// the next attempt starts again from zero (as `decide` does).
pub fn failures_at(state: &State, now: u64) -> u32 {
    if state.locked_until.is_some_and(|until| until <= now) {
        0
    } else {
        state.failures
    }
}

/// The end of the lock still running at `now`, if any.
pub fn lock_at(state: &State, now: u64) -> Option<u64> {
    state.locked_until.filter(|&until| until > now)
}

/// What `twofactor unlock` clears: the failures, the lock and the
/// rate-limit window. Used steps, used backup codes, learned offsets and
/// grace stay (clearing them would let a code be replayed).
pub fn unlock(state: &mut State) {
    state.failures = 0;
    state.locked_until = None;
    state.rate_window_start = 0;
    state.rate_window_attempts = 0;
}

/// Whether `rhost` had a success within `[grace]` and the user is not locked.
pub fn in_grace(state: &State, rhost: &str, now: u64, grace_seconds: u64) -> bool {
    let locked = state.locked_until.is_some_and(|until| now < until);
    !locked
        && grace_seconds > 0
        && state
            .grace
            .get(rhost)
            .is_some_and(|&t| t <= now && now - t < grace_seconds)
}

/// Decides one attempt. The returned state must be durably stored before
/// an `Allow*` verdict is acted on (never accept a code you could not mark
/// as used).
pub fn decide(
    record: &SecretRecord,
    old: &State,
    attempt: &Attempt,
    now: u64,
    policy: &Policy,
) -> Decision {
    let mut state = old.clone();

    // Rate limit: a fixed window; every attempt counts, whatever its outcome.
    if rate_window_over(&state, now, policy) {
        state.rate_window_start = now;
        state.rate_window_attempts = 0;
    }
    if state.rate_window_attempts >= policy.max_attempts {
        let until = state.rate_window_start.saturating_add(policy.per_seconds);
        return Decision {
            verdict: Verdict::RateLimited { until },
            state,
        };
    }
    state.rate_window_attempts += 1;

    // Lockout (RFC 4226 §7.3): refuses even a correct code while it lasts.
    match state.locked_until {
        Some(until) if now < until => {
            return Decision {
                verdict: Verdict::LockedOut { until },
                state,
            };
        }
        Some(_) => {
            state.locked_until = None;
            state.failures = 0;
        }
        None => {}
    }

    let outcome = evaluate(record, &state, attempt, now, policy);
    let verdict = match outcome {
        Ok(Success::Totp { device, step }) => {
            state.last_accepted_step.insert(device.clone(), step);
            Verdict::AllowTotp { device }
        }
        Ok(Success::Drift {
            device,
            step,
            offset,
        }) => {
            state.last_accepted_step.insert(device.clone(), step);
            state.drift_steps.insert(device.clone(), offset);
            Verdict::AllowDrift { device, offset }
        }
        Ok(Success::Backup(hash)) => {
            // Keep only hashes of the current set: old sets' entries are dead.
            state
                .used_backup_codes
                .retain(|h| record.backup.hashes.contains(h));
            state.used_backup_codes.push(hash);
            Verdict::AllowBackup {
                remaining: backup_codes_remaining(record, &state),
            }
        }
        Ok(Success::Delivered) => {
            state.delivered = None;
            Verdict::AllowDelivered
        }
        Err(Miss::Drift(check)) => {
            // No answer is free: the matched step is spent for the device
            // (RFC 6238 §5.2: it can never be typed again as a fresh code)
            // and the guess counts as a failure until the next code confirms
            // the drift. Otherwise "Next verification code" would be an
            // oracle that tells a guesser which future code they hold.
            let last = state
                .last_accepted_step
                .entry(check.device.clone())
                .or_insert(check.step);
            *last = (*last).max(check.step);
            let verdict = match count_failure(&mut state, now, policy) {
                None => Verdict::DriftSuspected(check),
                locked_until => Verdict::Deny {
                    failure: Failure::DriftSuspected,
                    locked_until,
                },
            };
            return Decision { verdict, state };
        }
        Err(Miss::Failed(failure)) => {
            let locked_until = count_failure(&mut state, now, policy);
            return Decision {
                verdict: Verdict::Deny {
                    failure,
                    locked_until,
                },
                state,
            };
        }
    };
    // Every success resets the failures and may open a grace period.
    state.failures = 0;
    state.last_success = Some(now);
    let host = attempt.rhost.filter(|h| crate::records::valid_host(h));
    if let (Some(host), true) = (host, policy.grace_seconds > 0) {
        state
            .grace
            .retain(|_, &mut t| now.saturating_sub(t) < policy.grace_seconds);
        if state.grace.len() >= MAX_GRACE_HOSTS {
            if let Some(oldest) = state
                .grace
                .iter()
                .min_by_key(|(_, t)| **t)
                .map(|(h, _)| h.clone())
            {
                state.grace.remove(&oldest);
            }
        }
        state.grace.insert(host.to_string(), now);
    }
    Decision { verdict, state }
}

/// What an answer matched.
enum Success {
    Totp {
        device: String,
        step: u64,
    },
    Drift {
        device: String,
        step: u64,
        offset: i64,
    },
    Backup([u8; HASH_BYTES]),
    Delivered,
}

/// What an answer that logs nobody in did.
enum Miss {
    /// Matched a step outside the window: maybe the device's clock is off.
    Drift(DriftCheck),
    Failed(Failure),
}

/// Tries, in order: the drift confirmation, every device's TOTP (with its
/// learned offset), a delivered code, a backup code, and finally whether
/// the code matches outside the window (drift).
fn evaluate(
    record: &SecretRecord,
    state: &State,
    attempt: &Attempt,
    now: u64,
    policy: &Policy,
) -> Result<Success, Miss> {
    if let Some(check) = attempt.drift {
        return confirm_drift(record, state, attempt.code, check);
    }
    let mut failure = if attempt.code.is_some() || attempt.hash.is_some() {
        Failure::WrongCode
    } else {
        Failure::Malformed
    };
    if let Some(code) = attempt.code {
        match match_devices(record, state, code, now, policy.window) {
            Ok(success) => return Ok(success),
            Err(f) => failure = f,
        }
    }
    if let Some(hash) = &attempt.hash {
        if let Some(delivered) = &state.delivered {
            let equal: bool = subtle::ConstantTimeEq::ct_eq(&delivered.hash[..], &hash[..]).into();
            if equal && now < delivered.expires {
                return Ok(Success::Delivered);
            }
        }
        if let Some(i) = backup::find_unused(hash, &record.backup.hashes, &state.used_backup_codes)
        {
            if let Some(used) = record.backup.hashes.get(i) {
                return Ok(Success::Backup(*used));
            }
        }
    }
    if let (Some(code), Failure::WrongCode) = (attempt.code, failure) {
        if let Some(check) = find_drift(record, state, code, now, policy) {
            return Err(Miss::Drift(check));
        }
    }
    Err(Miss::Failed(failure))
}

/// The step a device is at now: ours plus its learned offset.
fn device_step(now: u64, period: u32, offset: i64) -> u64 {
    otp::step_at(now, period).saturating_add_signed(offset)
}

/// Tries every device whose digit count fits; replay protection is per device.
fn match_devices(
    record: &SecretRecord,
    state: &State,
    code: &str,
    now: u64,
    window: u32,
) -> Result<Success, Failure> {
    let mut failure = Failure::WrongCode;
    for device in &record.devices {
        if code.len() != usize::from(device.params.digits) {
            continue;
        }
        let last = state.last_accepted_step.get(&device.label).copied();
        let offset = state.drift_steps.get(&device.label).copied().unwrap_or(0);
        let center = device_step(now, device.params.period, offset);
        let (first, end) = (
            center.saturating_sub(u64::from(window)),
            center.saturating_add(u64::from(window)),
        );
        match otp::match_in_steps(&device.secret, device.params, code, first, end, last) {
            CodeMatch::Fresh(step) => {
                return Ok(Success::Totp {
                    device: device.label.clone(),
                    step,
                });
            }
            CodeMatch::Replayed(_) => failure = Failure::Replayed,
            CodeMatch::None => {}
        }
    }
    Err(failure)
}

/// A fresh match outside the window but within `max_drift_steps` of the
/// device's expected step. Costs at most 2 × max_drift_steps + 1 HMACs per
/// device (google-authenticator searches ±25 hours on every wrong code).
fn find_drift(
    record: &SecretRecord,
    state: &State,
    code: &str,
    now: u64,
    policy: &Policy,
) -> Option<DriftCheck> {
    if policy.max_drift_steps <= policy.window {
        return None;
    }
    for device in &record.devices {
        if code.len() != usize::from(device.params.digits) {
            continue;
        }
        let ours = otp::step_at(now, device.params.period);
        let offset = state.drift_steps.get(&device.label).copied().unwrap_or(0);
        let center = ours.saturating_add_signed(offset);
        let max = u64::from(policy.max_drift_steps);
        let last = state.last_accepted_step.get(&device.label).copied();
        if let CodeMatch::Fresh(step) = otp::match_in_steps(
            &device.secret,
            device.params,
            code,
            center.saturating_sub(max),
            center.saturating_add(max),
            last,
        ) {
            return Some(DriftCheck {
                device: device.label.clone(),
                step,
                offset: i64::try_from(step).ok()? - i64::try_from(ours).ok()?,
                off_by: step.abs_diff(center),
            });
        }
    }
    None
}

/// The confirming code must be exactly the device's next step.
fn confirm_drift(
    record: &SecretRecord,
    state: &State,
    code: Option<&str>,
    check: &DriftCheck,
) -> Result<Success, Miss> {
    let failed = Err(Miss::Failed(Failure::DriftNotConfirmed));
    let (Some(code), Some(device)) = (
        code,
        record.devices.iter().find(|d| d.label == check.device),
    ) else {
        return failed;
    };
    let next = check.step.saturating_add(1);
    let last = state.last_accepted_step.get(&device.label).copied();
    match otp::match_in_steps(&device.secret, device.params, code, next, next, last) {
        CodeMatch::Fresh(step) => Ok(Success::Drift {
            device: device.label.clone(),
            step,
            offset: check.offset,
        }),
        _ => failed,
    }
}

#[cfg(test)]
mod tests;
