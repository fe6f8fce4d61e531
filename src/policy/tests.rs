//! The policy's rules, each shown through `decide` (and `refusal`,
//! `failures_at`, `lock_at` and `unlock`) on a record with one device and a
//! set of backup codes.

use super::*;
use crate::otp::backup::{BackupCode, KdfParams, SALT_BYTES};
use crate::otp::{Algorithm, SecretKey, TotpParams, code_at_step};
use crate::records::{BackupSet, DEFAULT_DEVICE, Device};

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
        max_drift_steps: 10,
        grace_seconds: 0,
    }
}

fn totp(code: &str) -> Attempt<'_> {
    Attempt {
        code: Some(code),
        ..Attempt::default()
    }
}

fn backup(hash: [u8; HASH_BYTES]) -> Attempt<'static> {
    Attempt {
        hash: Some(hash),
        ..Attempt::default()
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
        deliver_to: None,
        backup: BackupSet {
            created: 0,
            digits: 16,
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
    let d = decide(&record(), &old, &totp(&code(NOW)), NOW, &policy());
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
    let first = decide(&record(), &State::default(), &totp(&c), NOW, &policy());
    let second = decide(&record(), &first.state, &totp(&c), NOW + 5, &policy());
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
        &totp(&now_code),
        NOW,
        &policy(),
    );
    let earlier = NOW - 300;
    let d = decide(
        &record(),
        &first.state,
        &totp(&code(earlier)),
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
        let d = decide(&record(), &state, &totp("000000"), NOW + i, &policy());
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
    let d = decide(&record(), &state, &totp(&code(t)), t, &policy());
    assert_eq!(d.verdict, Verdict::LockedOut { until: NOW + 1805 });
    assert_eq!(d.state.last_accepted_step.get("default"), None);
    let after = NOW + 1805;
    let d = decide(&record(), &d.state, &totp(&code(after)), after, &policy());
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
        state = decide(&record(), &state, &Attempt::default(), NOW, &p).state;
    }
    let d = decide(&record(), &state, &totp(&code(NOW)), NOW + 1, &p);
    assert_eq!(d.verdict, Verdict::RateLimited { until: NOW + 60 });
    let later = NOW + 60;
    let d = decide(&record(), &d.state, &totp(&code(later)), later, &p);
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
    let d = decide(&record(), &State::default(), &backup(h), NOW, &policy());
    assert_eq!(d.verdict, Verdict::AllowBackup { remaining: 1 });
    assert_eq!(d.state.used_backup_codes, vec![h]);
    let again = decide(&record(), &d.state, &backup(h), NOW, &policy());
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
        &Attempt::default(),
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

/// A code 5 steps ahead asks for the next one; the next one logs in and
/// stores the offset, which later logins use without asking.
#[test]
fn drift_is_confirmed_by_the_next_code_and_learned() {
    let ahead = NOW + 150;
    let d = decide(
        &record(),
        &State::default(),
        &totp(&code(ahead)),
        NOW,
        &policy(),
    );
    let Verdict::DriftSuspected(check) = d.verdict.clone() else {
        panic!("{:?}", d.verdict);
    };
    assert_eq!((check.offset, check.step), (5, ahead / 30));
    assert_eq!(d.state.failures, 1, "a suspicion counts until confirmed");
    assert_eq!(d.state.last_accepted_step["default"], ahead / 30);
    let next = code(ahead + 30);
    let confirm = Attempt {
        code: Some(&next),
        drift: Some(&check),
        ..Attempt::default()
    };
    let d = decide(&record(), &d.state, &confirm, NOW, &policy());
    assert_eq!(
        d.verdict,
        Verdict::AllowDrift {
            device: "default".into(),
            offset: 5
        }
    );
    assert_eq!(d.state.drift_steps["default"], 5);
    assert_eq!(d.state.last_accepted_step["default"], ahead / 30 + 1);
    assert_eq!(d.state.failures, 0, "the confirmation clears the failure");
    let later = NOW + 600;
    let d = decide(
        &record(),
        &d.state,
        &totp(&code(later + 150)),
        later,
        &policy(),
    );
    assert_eq!(
        d.verdict,
        Verdict::AllowTotp {
            device: "default".into()
        }
    );
    // The device's clock set right again: 5 steps from where it was
    // expected, though 0 from ours.
    let again = later + 600;
    let d = decide(&record(), &d.state, &totp(&code(again)), again, &policy());
    let Verdict::DriftSuspected(check) = d.verdict else {
        panic!("{:?}", d.verdict);
    };
    assert_eq!((check.offset, check.off_by), (0, 5));
}

/// A wrong second code fails once and stores no offset; a code beyond
/// max_drift_steps is simply wrong.
#[test]
fn unconfirmed_or_far_drift_fails() {
    let ahead = NOW + 150;
    let d = decide(
        &record(),
        &State::default(),
        &totp(&code(ahead)),
        NOW,
        &policy(),
    );
    let Verdict::DriftSuspected(check) = d.verdict.clone() else {
        panic!("{:?}", d.verdict);
    };
    let confirm = Attempt {
        code: Some("000000"),
        drift: Some(&check),
        ..Attempt::default()
    };
    let d = decide(&record(), &d.state, &confirm, NOW, &policy());
    assert!(matches!(
        d.verdict,
        Verdict::Deny {
            failure: Failure::DriftNotConfirmed,
            ..
        }
    ));
    assert!(d.state.drift_steps.is_empty());
    assert_eq!(
        d.state.failures, 2,
        "the suspicion and the wrong confirmation"
    );
    let far = NOW + 30 * 12;
    let d = decide(
        &record(),
        &State::default(),
        &totp(&code(far)),
        NOW,
        &policy(),
    );
    assert!(matches!(
        d.verdict,
        Verdict::Deny {
            failure: Failure::WrongCode,
            ..
        }
    ));
}

/// A delivered code works once, and not after it expires.
#[test]
fn delivered_code_works_once_until_it_expires() {
    let h = backup_hash("1111111111111112");
    let state = State {
        delivered: Some(crate::records::Delivered {
            hash: h,
            expires: NOW + 60,
        }),
        ..State::default()
    };
    let d = decide(&record(), &state, &backup(h), NOW, &policy());
    assert_eq!(d.verdict, Verdict::AllowDelivered);
    assert_eq!(d.state.delivered, None);
    let again = decide(&record(), &d.state, &backup(h), NOW + 1, &policy());
    assert!(matches!(again.verdict, Verdict::Deny { .. }));
    let late = decide(&record(), &state, &backup(h), NOW + 60, &policy());
    assert!(matches!(late.verdict, Verdict::Deny { .. }));
}

/// A success from a remote host opens a grace period for that host only,
/// never while locked.
#[test]
fn grace_remembers_the_remote_host_of_a_success() {
    let p = Policy {
        grace_seconds: 600,
        ..policy()
    };
    let c = code(NOW);
    let a = Attempt {
        code: Some(&c),
        rhost: Some("192.0.2.5"),
        ..Attempt::default()
    };
    let d = decide(&record(), &State::default(), &a, NOW, &p);
    assert_eq!(d.state.grace["192.0.2.5"], NOW);
    assert!(in_grace(&d.state, "192.0.2.5", NOW + 599, 600));
    assert!(!in_grace(&d.state, "192.0.2.5", NOW + 600, 600));
    assert!(!in_grace(&d.state, "192.0.2.6", NOW + 1, 600));
    let locked = State {
        locked_until: Some(NOW + 100),
        ..d.state.clone()
    };
    assert!(!in_grace(&locked, "192.0.2.5", NOW + 1, 600));
    let off = decide(&record(), &State::default(), &a, NOW, &policy());
    assert!(off.state.grace.is_empty());
}

/// Issue 14.3: hanging up at "Next verification code" leaves the guess
/// counted and its step spent, so the same code typed when its step
/// comes is a replay, not a login.
#[test]
fn a_drift_match_is_counted_and_its_step_can_never_log_in() {
    let ahead = NOW + 150;
    let guess = code(ahead);
    let d = decide(&record(), &State::default(), &totp(&guess), NOW, &policy());
    assert!(
        matches!(d.verdict, Verdict::DriftSuspected(_)),
        "{:?}",
        d.verdict
    );
    assert_eq!(d.state.failures, 1);
    let d = decide(&record(), &d.state, &totp(&guess), ahead, &policy());
    assert_eq!(
        d.verdict,
        Verdict::Deny {
            failure: Failure::Replayed,
            locked_until: None
        }
    );
    assert_eq!(d.state.failures, 2);
}

/// A drift suspicion that reaches max_failures locks like any failure
/// and does not ask for the next code.
#[test]
fn a_drift_match_at_the_failure_limit_locks() {
    let state = State {
        failures: 4,
        ..State::default()
    };
    let d = decide(&record(), &state, &totp(&code(NOW + 150)), NOW, &policy());
    assert_eq!(
        d.verdict,
        Verdict::Deny {
            failure: Failure::DriftSuspected,
            locked_until: Some(NOW + 1800)
        }
    );
    assert_eq!(d.state.locked_until, Some(NOW + 1800));
}

/// `refusal` refuses exactly when `decide` refuses without looking at
/// the code, with the same verdict, over locks and windows around now.
#[test]
fn refusal_agrees_with_decide() {
    let p = Policy {
        max_attempts: 3,
        ..policy()
    };
    for locked_until in [None, Some(NOW - 1), Some(NOW), Some(NOW + 1)] {
        for start in [0, NOW - 60, NOW - 59, NOW, NOW + 5] {
            for attempts in 0..=4 {
                let state = State {
                    locked_until,
                    rate_window_start: start,
                    rate_window_attempts: attempts,
                    failures: 2,
                    ..State::default()
                };
                let d = decide(&record(), &state, &totp("000000"), NOW, &p);
                let refused = matches!(
                    d.verdict,
                    Verdict::RateLimited { .. } | Verdict::LockedOut { .. }
                );
                let want = refused.then(|| d.verdict.clone());
                assert_eq!(refusal(&state, NOW, &p), want, "{state:?}");
            }
        }
    }
}

/// An expired lock shows no failures and no lock; `unlock` clears the
/// counters and keeps what protects against replay.
#[test]
fn expired_locks_and_unlock_keep_replay_protection() {
    let mut state = State {
        failures: 5,
        locked_until: Some(NOW + 10),
        rate_window_start: NOW,
        rate_window_attempts: 7,
        ..State::default()
    };
    state.last_accepted_step.insert("default".into(), 42);
    assert_eq!(
        (failures_at(&state, NOW), lock_at(&state, NOW)),
        (5, Some(NOW + 10))
    );
    assert_eq!(
        (failures_at(&state, NOW + 10), lock_at(&state, NOW + 10)),
        (0, None)
    );
    unlock(&mut state);
    assert_eq!(
        (
            state.failures,
            state.locked_until,
            state.rate_window_start,
            state.rate_window_attempts
        ),
        (0, None, 0, 0)
    );
    assert_eq!(state.last_accepted_step["default"], 42);
}

/// Every success (a TOTP code, a backup code) records its time as the last
/// success; a failure leaves the recorded time as it was.
#[test]
fn a_success_records_its_time_and_a_failure_keeps_the_last_one() {
    let ok = decide(
        &record(),
        &State::default(),
        &totp(&code(NOW)),
        NOW,
        &policy(),
    );
    assert_eq!(ok.state.last_success, Some(NOW));
    let bad = decide(&record(), &ok.state, &totp("000000"), NOW + 60, &policy());
    assert!(
        matches!(bad.verdict, Verdict::Deny { .. }),
        "{:?}",
        bad.verdict
    );
    assert_eq!(bad.state.last_success, Some(NOW));
    let h = backup_hash("2222222222222222");
    let backup_ok = decide(&record(), &bad.state, &backup(h), NOW + 90, &policy());
    assert_eq!(backup_ok.verdict, Verdict::AllowBackup { remaining: 1 });
    assert_eq!(backup_ok.state.last_success, Some(NOW + 90));
}
