//! Pure policy: rate limit, lockout, replay and backup-code consumption as
//! functions of `(record, state, answer, now, policy)`. No files, no PAM.

use crate::backup::{self, HASH_BYTES};
use crate::config::Config;
use crate::otp::{self, CodeMatch};
use crate::record::{SecretRecord, State};

/// The limits that apply to one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub window: u32,
    pub max_failures: u32,
    pub lock_seconds: u64,
    pub max_attempts: u32,
    pub per_seconds: u64,
}

impl From<&Config> for Policy {
    fn from(c: &Config) -> Policy {
        Policy {
            window: c.window,
            max_failures: c.max_failures,
            lock_seconds: c.lock_seconds,
            max_attempts: c.max_attempts,
            per_seconds: c.per_seconds,
        }
    }
}

/// An answer, reduced to what the policy needs. The backup-code hash is
/// computed by the caller (argon2 is slow; it runs before the lock is taken).
#[derive(Debug)]
pub enum Attempt<'a> {
    /// A TOTP code as typed (6 to 8 ASCII digits).
    Totp(&'a str),
    /// The argon2 hash of a typed backup code.
    Backup([u8; HASH_BYTES]),
    /// Input that can be neither.
    Malformed,
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
}

/// The policy's answer for one attempt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// A fresh TOTP code from this device.
    AllowTotp { device: String },
    /// An unused backup code; it is now used.
    AllowBackup { remaining: usize },
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
    if now >= state.rate_window_start.saturating_add(policy.per_seconds)
        || now < state.rate_window_start
    {
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

    let outcome = match attempt {
        Attempt::Totp(code) => match_devices(record, &state, code, now, policy.window),
        Attempt::Backup(hash) => {
            match backup::find_unused(hash, &record.backup.hashes, &state.used_backup_codes) {
                Some(i) => Ok(Success::Backup(record.backup.hashes[i])),
                None => Err(Failure::WrongCode),
            }
        }
        Attempt::Malformed => Err(Failure::Malformed),
    };

    let verdict = match outcome {
        Ok(Success::Totp { device, step }) => {
            state.last_accepted_step.insert(device.clone(), step);
            state.failures = 0;
            Verdict::AllowTotp { device }
        }
        Ok(Success::Backup(hash)) => {
            // Keep only hashes of the current set: old sets' entries are dead.
            state
                .used_backup_codes
                .retain(|h| record.backup.hashes.contains(h));
            state.used_backup_codes.push(hash);
            state.failures = 0;
            Verdict::AllowBackup {
                remaining: backup_codes_remaining(record, &state),
            }
        }
        Err(failure) => {
            state.failures = state.failures.saturating_add(1);
            let locked_until = (state.failures >= policy.max_failures).then(|| {
                let until = now.saturating_add(policy.lock_seconds);
                state.locked_until = Some(until);
                until
            });
            Verdict::Deny {
                failure,
                locked_until,
            }
        }
    };
    Decision { verdict, state }
}

enum Success {
    Totp { device: String, step: u64 },
    Backup([u8; HASH_BYTES]),
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
        match otp::match_code(&device.secret, device.params, code, now, window, last) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::{BackupCode, KdfParams, SALT_BYTES};
    use crate::otp::{Algorithm, SecretKey, TotpParams, code_at_step};
    use crate::record::{BackupSet, DEFAULT_DEVICE, Device};

    const NOW: u64 = 1_900_000_020; // inside step 63_333_334
    const KDF: KdfParams = KdfParams {
        m_cost: 64,
        t_cost: 1,
        p_cost: 1,
    };

    fn policy() -> Policy {
        Policy {
            window: 1,
            max_failures: 5,
            lock_seconds: 1800,
            max_attempts: 10,
            per_seconds: 60,
        }
    }

    fn backup_hash(code: &str) -> [u8; HASH_BYTES] {
        BackupCode::parse(code)
            .unwrap()
            .hash(&[5; SALT_BYTES], KDF)
            .unwrap()
    }

    fn record() -> SecretRecord {
        SecretRecord {
            created: 0,
            devices: vec![Device {
                label: DEFAULT_DEVICE.into(),
                secret: SecretKey::new(b"12345678901234567890".to_vec()),
                params: TotpParams {
                    algorithm: Algorithm::Sha1,
                    digits: 6,
                    period: 30,
                },
                created: 0,
            }],
            backup: BackupSet {
                created: 0,
                kdf: KDF,
                salt: [5; SALT_BYTES],
                hashes: vec![
                    backup_hash("1111111111111111"),
                    backup_hash("2222222222222222"),
                ],
            },
        }
    }

    fn code(now: u64) -> String {
        let r = record();
        code_at_step(&r.devices[0].secret, r.devices[0].params, now / 30)
            .unwrap()
            .to_string()
    }

    /// A current code is accepted, its step stored and failures reset.
    #[test]
    fn current_code_is_accepted_and_step_recorded() {
        let old = State {
            failures: 3,
            ..State::default()
        };
        let d = decide(&record(), &old, &Attempt::Totp(&code(NOW)), NOW, &policy());
        assert_eq!(
            d.verdict,
            Verdict::AllowTotp {
                device: "default".into()
            }
        );
        assert_eq!(d.state.last_accepted_step["default"], NOW / 30);
        assert_eq!(d.state.failures, 0);
    }

    /// The same code twice: the second is a replay and counts as a failure.
    #[test]
    fn same_code_twice_is_refused_as_replay() {
        let c = code(NOW);
        let first = decide(
            &record(),
            &State::default(),
            &Attempt::Totp(&c),
            NOW,
            &policy(),
        );
        let second = decide(
            &record(),
            &first.state,
            &Attempt::Totp(&c),
            NOW + 5,
            &policy(),
        );
        assert_eq!(
            second.verdict,
            Verdict::Deny {
                failure: Failure::Replayed,
                locked_until: None
            }
        );
        assert_eq!(second.state.failures, 1);
    }

    /// After the clock steps back, an older step's code is still a replay.
    #[test]
    fn older_step_after_clock_steps_back_is_refused() {
        let now_code = code(NOW);
        let first = decide(
            &record(),
            &State::default(),
            &Attempt::Totp(&now_code),
            NOW,
            &policy(),
        );
        let earlier = NOW - 300;
        let d = decide(
            &record(),
            &first.state,
            &Attempt::Totp(&code(earlier)),
            earlier,
            &policy(),
        );
        assert_eq!(
            d.verdict,
            Verdict::Deny {
                failure: Failure::Replayed,
                locked_until: None
            }
        );
    }

    /// The fifth failure locks; then even a correct code is refused until
    /// the lock ends, after which it works again.
    #[test]
    fn fifth_failure_locks_and_lock_refuses_correct_code() {
        let mut state = State::default();
        for i in 1..=5u64 {
            let d = decide(
                &record(),
                &state,
                &Attempt::Totp("000000"),
                NOW + i,
                &policy(),
            );
            let expect_lock = (i == 5).then_some(NOW + 5 + 1800);
            assert_eq!(
                d.verdict,
                Verdict::Deny {
                    failure: Failure::WrongCode,
                    locked_until: expect_lock
                },
                "attempt {i}"
            );
            state = d.state;
        }
        assert_eq!(state.locked_until, Some(NOW + 1805));
        let t = NOW + 100;
        let d = decide(&record(), &state, &Attempt::Totp(&code(t)), t, &policy());
        assert_eq!(d.verdict, Verdict::LockedOut { until: NOW + 1805 });
        assert_eq!(d.state.last_accepted_step.get("default"), None);
        let after = NOW + 1805;
        let d = decide(
            &record(),
            &d.state,
            &Attempt::Totp(&code(after)),
            after,
            &policy(),
        );
        assert_eq!(
            d.verdict,
            Verdict::AllowTotp {
                device: "default".into()
            }
        );
        assert_eq!((d.state.failures, d.state.locked_until), (0, None));
    }

    /// Past max_attempts in one window every attempt is refused unchecked,
    /// and the window resets after per_seconds.
    #[test]
    fn rate_limit_caps_attempts_per_window() {
        let p = Policy {
            max_failures: 1000,
            max_attempts: 3,
            ..policy()
        };
        let mut state = State::default();
        for _ in 0..3 {
            state = decide(&record(), &state, &Attempt::Malformed, NOW, &p).state;
        }
        let d = decide(&record(), &state, &Attempt::Totp(&code(NOW)), NOW + 1, &p);
        assert_eq!(d.verdict, Verdict::RateLimited { until: NOW + 60 });
        let later = NOW + 60;
        let d = decide(&record(), &d.state, &Attempt::Totp(&code(later)), later, &p);
        assert_eq!(
            d.verdict,
            Verdict::AllowTotp {
                device: "default".into()
            }
        );
        assert_eq!(d.state.rate_window_attempts, 1);
    }

    /// A backup code works once and reports how many are left.
    #[test]
    fn backup_code_works_exactly_once() {
        let h = backup_hash("2222222222222222");
        let d = decide(
            &record(),
            &State::default(),
            &Attempt::Backup(h),
            NOW,
            &policy(),
        );
        assert_eq!(d.verdict, Verdict::AllowBackup { remaining: 1 });
        assert_eq!(d.state.used_backup_codes, vec![h]);
        let again = decide(&record(), &d.state, &Attempt::Backup(h), NOW, &policy());
        assert_eq!(
            again.verdict,
            Verdict::Deny {
                failure: Failure::WrongCode,
                locked_until: None
            }
        );
    }

    /// Malformed input counts as a failure.
    #[test]
    fn malformed_input_counts_as_failure() {
        let d = decide(
            &record(),
            &State::default(),
            &Attempt::Malformed,
            NOW,
            &policy(),
        );
        assert_eq!(d.state.failures, 1);
        assert!(matches!(
            d.verdict,
            Verdict::Deny {
                failure: Failure::Malformed,
                ..
            }
        ));
    }
}
