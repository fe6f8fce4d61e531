//! The fleet flow over a scripted conversation and a fake agent: a thread
//! serving a Unix socket that records every decoded request and answers
//! scripted replies. Each test asserts the exact requests, prompts and
//! messages, and the outcome.

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::*;
use crate::config::Fleet;
use crate::fleet::protocol::{self, DeliveryReply, Unavailable};
use crate::host::clock::FixedClock;
use crate::host::timefmt;
use crate::login::tests::Script;
use crate::login::{NEXT_PROMPT, PROMPT, SENT_PROMPT, authenticate_from};

const NOW: u64 = 1_907_755_200;
const USER: &str = "alice";
const RHOST: &str = "192.0.2.7";
const SALT: &str = "000102030405060708090a0b0c0d0e0f";
/// Cheap argon2 parameters for the tests (the set's, as `Begin` gives them).
const KDF: KdfParams = KdfParams {
    m_cost: 64,
    t_cost: 1,
    p_cost: 1,
};
const RECORD_CHANGED: &str =
    "Your second factor was changed while this prompt was open. Log in again.";

/// What the fake agent does with one connection.
enum Says {
    Reply(Reply),
    /// Bytes that are no reply of the protocol.
    Raw(&'static str),
    /// Reads the request and answers nothing for this long.
    Nothing(Duration),
}

/// A fake agent on `path` serving one connection per scripted answer;
/// joining it gives the requests it decoded, in order.
fn agent(path: &Path, script: Vec<Says>) -> JoinHandle<Vec<Request>> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for says in script {
            let (mut stream, _) = listener.accept().unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).unwrap();
            seen.push(protocol::decode::<Request>(&text).unwrap_or_else(|e| panic!("{text}\n{e}")));
            match says {
                Says::Reply(reply) => {
                    let _ = stream.write_all(protocol::encode(&reply).unwrap().as_bytes());
                }
                Says::Raw(raw) => {
                    let _ = stream.write_all(raw.as_bytes());
                }
                Says::Nothing(hold) => std::thread::sleep(hold),
            }
        }
        seen
    })
}

/// A fake delivery service on `path` answering `ok` to each of `count`
/// requests; joining it gives the requests' text.
fn delivery_service(path: &Path, count: usize) -> JoinHandle<Vec<String>> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..count {
            let (mut stream, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut byte = [0u8; 1];
            loop {
                let done = if got.starts_with(b"!notify") {
                    got.ends_with(b"\n\n")
                } else {
                    got.iter().filter(|&&b| b == b'\n').count() == 3
                };
                if done || stream.read(&mut byte).unwrap() == 0 {
                    break;
                }
                got.push(byte[0]);
            }
            stream.write_all(b"ok\n").unwrap();
            seen.push(String::from_utf8(got).unwrap());
        }
        seen
    })
}

/// A fleet host's config in a fresh scratch directory: the state
/// directory (for the argon2 slots only) and the agent's socket in it.
fn setup(name: &str) -> (Config, PathBuf) {
    let dir = crate::store::testdir::scratch(name);
    let state_dir = dir.join("state");
    std::fs::create_dir(&state_dir).unwrap();
    std::fs::set_permissions(
        &state_dir,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let config = Config {
        state_dir,
        fleet: Some(Fleet {
            database: "host=db.example.org dbname=twofactor".into(),
            sslrootcert: None,
            sslcert: None,
            sslkey: None,
            password_file: None,
            agent_socket: dir.join("agent.sock"),
            deadline_seconds: 1,
        }),
        ..Config::default()
    };
    (config, dir)
}

fn socket(config: &Config) -> PathBuf {
    config.fleet.as_ref().unwrap().agent_socket.clone()
}

fn begin_reply(enrolled: bool) -> BeginReply {
    BeginReply {
        enrolled,
        generation: 7,
        grace: false,
        refusal: None,
        refusal_until: None,
        deliver_to: None,
        backup: enrolled.then(|| BackupKdf {
            digits: 16,
            salt: SALT.into(),
            m_cost: KDF.m_cost,
            t_cost: KDF.t_cost,
            p_cost: KDF.p_cost,
        }),
        enroll_at_login: false,
        totp_algorithm: "SHA1".into(),
        totp_digits: 6,
        totp_period: 30,
        backup_codes: 2,
        now: NOW as i64,
        delivered_pending: false,
    }
}

fn begin() -> Request {
    Request::Begin {
        user: USER.into(),
        rhost: Some(RHOST.into()),
    }
}

fn attempt_reply(verdict: AttemptVerdict) -> AttemptReply {
    AttemptReply {
        verdict,
        device: None,
        step: None,
        drift_offset: None,
        off_by: None,
        period: None,
        remaining: None,
        until: None,
    }
}

fn attempt(code: Option<&str>, hash: Option<String>, deferred: bool) -> AttemptRequest {
    AttemptRequest {
        user: USER.into(),
        generation: 7,
        code: code.map(|c| Zeroizing::new(c.into())),
        hash,
        hash_deferred: deferred,
        drift: None,
        rhost: Some(RHOST.into()),
    }
}

/// Hex of argon2 of `digits` with the test set's salt and parameters.
fn hash_of(digits: &str) -> String {
    let salt = data_encoding::HEXLOWER.decode(SALT.as_bytes()).unwrap();
    hex(&backup::hash_digits(digits, &salt, KDF).unwrap())
}

fn login(config: &Config, script: &mut Script) -> Result<Outcome, AuthError> {
    authenticate_from(config, USER, Some(RHOST), script, &FixedClock(NOW))
}

/// A TOTP code is sent as typed (spaces dropped), unhashed, with the
/// generation `Begin` gave; the agent's allow lets the user in. The
/// state directory's files are never read (a broken record there changes
/// nothing).
#[test]
fn a_totp_code_is_allowed_by_the_agent() {
    let (config, _dir) = setup("fleet-totp");
    std::fs::write(config.state_dir.join("alice.secret"), "garbage").unwrap();
    let fake = agent(
        &socket(&config),
        vec![
            Says::Reply(Reply::Begin(begin_reply(true))),
            Says::Reply(Reply::Attempt(AttemptReply {
                device: Some("phone".into()),
                step: Some(63_591_840),
                ..attempt_reply(AttemptVerdict::AllowTotp)
            })),
        ],
    );
    let mut script = Script::new(&[Some("123 456")]);
    let outcome = login(&config, &mut script).unwrap();
    assert_eq!(
        outcome,
        Outcome::Allow(Method::Totp {
            device: "phone".into()
        })
    );
    assert_eq!(
        fake.join().unwrap(),
        vec![
            begin(),
            Request::Attempt(attempt(Some("123456"), None, false))
        ]
    );
    assert_eq!(script.prompts, [PROMPT]);
    assert!(script.infos.is_empty() && script.errors.is_empty());
}

/// A wrong code that starts a lock says until when, as the file flow does;
/// a later attempt refused by the lock says so too.
#[test]
fn a_wrong_code_that_locks_and_a_locked_user_are_told() {
    let (config, _dir) = setup("fleet-wrong");
    let until = NOW + 1800;
    let fake = agent(
        &socket(&config),
        vec![
            Says::Reply(Reply::Begin(begin_reply(true))),
            Says::Reply(Reply::Attempt(AttemptReply {
                until: Some(until as i64),
                ..attempt_reply(AttemptVerdict::WrongCode)
            })),
            Says::Reply(Reply::Begin(begin_reply(true))),
            Says::Reply(Reply::Attempt(AttemptReply {
                until: Some(until as i64),
                ..attempt_reply(AttemptVerdict::LockedOut)
            })),
        ],
    );
    let mut script = Script::new(&[Some("000000")]);
    let outcome = login(&config, &mut script).unwrap();
    assert_eq!(
        outcome,
        Outcome::Deny(DenyReason::Failed {
            failure: Failure::WrongCode,
            locked_until: Some(until)
        })
    );
    assert_eq!(
        script.errors,
        [format!(
            "Too many failed attempts: your account is locked until {}.",
            timefmt::human(until)
        )]
    );
    let mut script = Script::new(&[Some("111111")]);
    let outcome = login(&config, &mut script).unwrap();
    assert_eq!(outcome, Outcome::Deny(DenyReason::LockedOut { until }));
    assert_eq!(
        script.errors,
        [format!(
            "Your account is locked after too many failed attempts until {}.",
            timefmt::human(until)
        )]
    );
    let requests = fake.join().unwrap();
    assert_eq!(
        requests,
        vec![
            begin(),
            Request::Attempt(attempt(Some("000000"), None, false)),
            begin(),
            Request::Attempt(attempt(Some("111111"), None, false)),
        ]
    );
}

/// A backup-length answer is hashed with the set's salt and parameters
/// from `Begin` (the hash the agent gets is argon2 of the typed digits)
/// and sent without the digits; the user hears how many codes are left.
#[test]
fn a_backup_code_is_sent_as_its_argon2_hash() {
    let (config, _dir) = setup("fleet-backup");
    let fake = agent(
        &socket(&config),
        vec![
            Says::Reply(Reply::Begin(begin_reply(true))),
            Says::Reply(Reply::Attempt(AttemptReply {
                remaining: Some(9),
                ..attempt_reply(AttemptVerdict::AllowBackup)
            })),
        ],
    );
    let mut script = Script::new(&[Some("1234-5678-9012-3456")]);
    let outcome = login(&config, &mut script).unwrap();
    assert_eq!(outcome, Outcome::Allow(Method::Backup { remaining: 9 }));
    let hash = hash_of("1234567890123456");
    assert_eq!(hash.len(), 2 * HASH_BYTES);
    assert_eq!(
        fake.join().unwrap(),
        vec![begin(), Request::Attempt(attempt(None, Some(hash), false))]
    );
    assert_eq!(script.infos, ["Backup code accepted. 9 backup codes left."]);
    // The slots of the state directory bounded the hash, and nothing else
    // was made there.
    let mut names: Vec<_> = std::fs::read_dir(&config.state_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, KDF_SLOTS);
}

/// `Begin` saw a lock: a backup-length answer is first sent unhashed
/// (`hash_deferred`), and hashed only when the database says the attempt
/// is no longer refused (`retry_with_hash`); still locked, no hash at all.
#[test]
fn a_refused_backup_answer_is_hashed_only_on_retry_with_hash() {
    let (config, _dir) = setup("fleet-deferred");
    let locked = BeginReply {
        refusal: Some(Refusal::LockedOut),
        refusal_until: Some(NOW as i64 + 600),
        ..begin_reply(true)
    };
    let fake = agent(
        &socket(&config),
        vec![
            Says::Reply(Reply::Begin(locked.clone())),
            Says::Reply(Reply::Attempt(attempt_reply(AttemptVerdict::RetryWithHash))),
            Says::Reply(Reply::Attempt(AttemptReply {
                remaining: Some(0),
                ..attempt_reply(AttemptVerdict::AllowBackup)
            })),
            Says::Reply(Reply::Begin(locked)),
            Says::Reply(Reply::Attempt(AttemptReply {
                until: Some(NOW as i64 + 600),
                ..attempt_reply(AttemptVerdict::LockedOut)
            })),
        ],
    );
    let mut script = Script::new(&[Some("1234567890123456")]);
    let outcome = login(&config, &mut script).unwrap();
    assert_eq!(outcome, Outcome::Allow(Method::Backup { remaining: 0 }));
    assert_eq!(
        script.infos,
        ["Backup code accepted. 0 backup codes left. Ask your administrator for new ones."]
    );
    let mut script = Script::new(&[Some("1234567890123456")]);
    let outcome = login(&config, &mut script).unwrap();
    assert_eq!(
        outcome,
        Outcome::Deny(DenyReason::LockedOut { until: NOW + 600 })
    );
    assert_eq!(
        fake.join().unwrap(),
        vec![
            begin(),
            Request::Attempt(attempt(None, None, true)),
            Request::Attempt(attempt(None, Some(hash_of("1234567890123456")), false)),
            begin(),
            Request::Attempt(attempt(None, None, true)),
        ]
    );
}

/// A code outside the window: the same message and next prompt as the
/// file flow, and the next code goes with the device and step the agent
/// named; the learned offset is logged in seconds of that device's period.
#[test]
fn a_drift_is_confirmed_with_the_next_code() {
    let (config, _dir) = setup("fleet-drift");
    let fake = agent(
        &socket(&config),
        vec![
            Says::Reply(Reply::Begin(begin_reply(true))),
            Says::Reply(Reply::Attempt(AttemptReply {
                device: Some("phone".into()),
                step: Some(63_591_845),
                drift_offset: Some(5),
                off_by: Some(5),
                ..attempt_reply(AttemptVerdict::DriftSuspected)
            })),
            Says::Reply(Reply::Attempt(AttemptReply {
                device: Some("phone".into()),
                step: Some(63_591_846),
                drift_offset: Some(5),
                period: Some(60),
                ..attempt_reply(AttemptVerdict::AllowDrift)
            })),
        ],
    );
    let mut script = Script::new(&[Some("666449"), Some("777777")]);
    let outcome = login(&config, &mut script).unwrap();
    assert_eq!(
        outcome,
        Outcome::Allow(Method::Drift {
            device: "phone".into(),
            offset_seconds: 300
        })
    );
    assert_eq!(script.prompts, [PROMPT, NEXT_PROMPT]);
    assert_eq!(script.infos, [crate::login::DRIFT_INFO]);
    let echo = AttemptRequest {
        drift: Some(DriftEcho {
            device: "phone".into(),
            step: 63_591_845,
        }),
        ..attempt(Some("777777"), None, false)
    };
    assert_eq!(
        fake.join().unwrap(),
        vec![
            begin(),
            Request::Attempt(attempt(Some("666449"), None, false)),
            Request::Attempt(echo),
        ]
    );
}

/// Grace from the fleet skips the prompt for a remote host.
#[test]
fn grace_skips_the_prompt() {
    let (config, _dir) = setup("fleet-grace");
    let fake = agent(
        &socket(&config),
        vec![Says::Reply(Reply::Begin(BeginReply {
            grace: true,
            ..begin_reply(true)
        }))],
    );
    let mut script = Script::new(&[]);
    let outcome = login(&config, &mut script).unwrap();
    assert_eq!(outcome, Outcome::Skip(SkipReason::Grace));
    assert_eq!(fake.join().unwrap(), vec![begin()]);
    assert!(script.prompts.is_empty());
}

/// An unenrolled user: skipped without a prompt under "skip", denied
/// after the same prompt under "deny", and under "enroll" without the
/// fleet policy's `enroll_at_login`; no other request is made.
#[test]
fn unenrolled_users_are_skipped_or_denied_as_configured() {
    let (mut config, _dir) = setup("fleet-unenrolled");
    let fake = agent(
        &socket(&config),
        (0..3)
            .map(|_| Says::Reply(Reply::Begin(begin_reply(false))))
            .collect(),
    );
    config.unenrolled = Unenrolled::Skip;
    let mut script = Script::new(&[]);
    assert_eq!(
        login(&config, &mut script).unwrap(),
        Outcome::Skip(SkipReason::Unenrolled)
    );
    for unenrolled in [Unenrolled::Deny, Unenrolled::Enroll] {
        config.unenrolled = unenrolled;
        let mut script = Script::new(&[Some("123456")]);
        assert_eq!(
            login(&config, &mut script).unwrap(),
            Outcome::Deny(DenyReason::Unenrolled)
        );
        assert_eq!(script.prompts, [PROMPT]);
        assert!(script.infos.is_empty() && script.errors.is_empty());
    }
    assert_eq!(fake.join().unwrap(), vec![begin(), begin(), begin()]);
}

/// Enrollment at first login: the QR code and key of the secret the agent
/// receives, the typed code, a backup set whose shown codes hash (with the
/// sent salt) to the sent hashes; then the codes are shown once.
#[test]
fn a_first_login_enrolls_through_the_agent() {
    let (mut config, _dir) = setup("fleet-enroll");
    config.unenrolled = Unenrolled::Enroll;
    let fake = agent(
        &socket(&config),
        vec![
            Says::Reply(Reply::Begin(BeginReply {
                enroll_at_login: true,
                ..begin_reply(false)
            })),
            Says::Reply(Reply::Enroll {
                verdict: EnrollVerdict::Enrolled,
            }),
        ],
    );
    let mut script = Script::new(&[Some("123456")]);
    let outcome = login(&config, &mut script).unwrap();
    assert_eq!(outcome, Outcome::Allow(Method::Enrolled));
    let requests = fake.join().unwrap();
    assert_eq!(requests.len(), 2);
    assert_eq!(requests[0], begin());
    let Request::EnrollFirst(enroll) = &requests[1] else {
        panic!("{:?}", requests[1]);
    };
    assert_eq!(
        (
            enroll.user.as_str(),
            enroll.label.as_str(),
            enroll.algorithm.as_str(),
            enroll.digits,
            enroll.period,
            enroll.code.as_str()
        ),
        (USER, DEFAULT_DEVICE, "SHA1", 6, 30, "123456")
    );
    let secret = SecretKey::from_base32(&enroll.secret).unwrap();
    assert_eq!(secret.as_bytes().len(), 20);
    assert_eq!(script.infos.len(), 2);
    assert!(
        script.infos[0].starts_with("Set up two-factor authentication: scan this QR code\n"),
        "{}",
        script.infos[0]
    );
    assert!(script.infos[0].contains(&format!(
        "Or enter this key by hand: {}\n(SHA1, 6 digits, every 30 s)",
        crate::otp::uri::grouped_secret(&secret)
    )));
    let shown: Vec<&str> = script.infos[1].lines().skip(1).map(str::trim).collect();
    assert!(script.infos[1].starts_with("Two-factor authentication is set up."));
    assert_eq!(shown.len(), 2);
    let set = &enroll.backup;
    assert_eq!((set.digits, set.hashes.len()), (16, 2));
    let salt = data_encoding::HEXLOWER.decode(set.salt.as_bytes()).unwrap();
    let kdf = KdfParams {
        m_cost: set.m_cost,
        t_cost: set.t_cost,
        p_cost: set.p_cost,
    };
    assert_eq!(kdf, KdfParams::DEFAULT);
    for (code, hash) in shown.iter().zip(&set.hashes) {
        let digits = code.replace('-', "");
        assert_eq!(
            &hex(&backup::hash_digits(&digits, &salt, kdf).unwrap()),
            hash
        );
    }
    assert_eq!(script.prompts, [PROMPT]);
}

/// Enrollment at first login that the database refuses: a wrong code
/// (nothing told, as in the file flow), an enrollment made meanwhile by
/// another login (told), or a policy changed meanwhile.
#[test]
fn a_refused_first_login_enrollment_is_denied() {
    let (mut config, _dir) = setup("fleet-enroll-refused");
    config.unenrolled = Unenrolled::Enroll;
    let allowed = BeginReply {
        enroll_at_login: true,
        backup_codes: 1,
        ..begin_reply(false)
    };
    let verdicts = [
        (
            EnrollVerdict::WrongCode,
            DenyReason::EnrollmentNotConfirmed,
            None,
        ),
        (
            EnrollVerdict::Exists,
            DenyReason::EnrollmentNotConfirmed,
            Some(ENROLLED_MEANWHILE),
        ),
        (EnrollVerdict::NotAllowed, DenyReason::Unenrolled, None),
    ];
    let fake = agent(
        &socket(&config),
        verdicts
            .iter()
            .flat_map(|(verdict, _, _)| {
                [
                    Says::Reply(Reply::Begin(allowed.clone())),
                    Says::Reply(Reply::Enroll { verdict: *verdict }),
                ]
            })
            .collect(),
    );
    for (verdict, reason, told) in verdicts {
        let mut script = Script::new(&[Some("123456")]);
        let outcome = login(&config, &mut script).unwrap();
        assert_eq!(outcome, Outcome::Deny(reason), "{verdict:?}");
        assert_eq!(script.errors, told.into_iter().collect::<Vec<_>>());
        assert_eq!(script.infos.len(), 1, "no backup codes shown: {verdict:?}");
    }
    let requests = fake.join().unwrap();
    assert_eq!(requests.len(), 6);
    assert!(
        requests
            .iter()
            .skip(1)
            .step_by(2)
            .all(|r| matches!(r, Request::EnrollFirst(_)))
    );
}

/// A code by message: an empty answer makes a code, the agent stores its
/// hash (with the set's salt) before the delivery service gets the code,
/// the masked target is shown, and the typed code goes with its hash.
#[test]
fn a_code_by_message_is_recorded_then_sent() {
    let (mut config, dir) = setup("fleet-deliver");
    let deliver_socket = dir.join("deliver.sock");
    config.delivery.command = Some(PathBuf::from("/nonexistent/deliver"));
    config.delivery.socket = Some(deliver_socket.clone());
    let service = delivery_service(&deliver_socket, 1);
    let with_target = BeginReply {
        deliver_to: Some("+15555550100".into()),
        ..begin_reply(true)
    };
    let fake = agent(
        &socket(&config),
        vec![
            Says::Reply(Reply::Begin(with_target)),
            Says::Reply(Reply::Delivery(DeliveryReply {
                verdict: DeliveryVerdict::Stored,
                expires: Some(NOW as i64 + 300),
                until: None,
            })),
            Says::Reply(Reply::Attempt(attempt_reply(
                AttemptVerdict::AllowDelivered,
            ))),
        ],
    );
    let mut script = Script::new(&[Some(""), Some("654321")]);
    let outcome = login(&config, &mut script).unwrap();
    assert_eq!(outcome, Outcome::Allow(Method::Delivered));
    assert_eq!(script.prompts, [PROMPT, SENT_PROMPT]);
    assert_eq!(script.infos, ["A code was sent to +1555***0100."]);
    let sent = service.join().unwrap();
    let lines: Vec<&str> = sent[0].lines().collect();
    assert_eq!(lines[..2], [USER, "+15555550100"]);
    let code = lines[2];
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(
        fake.join().unwrap(),
        vec![
            begin(),
            Request::RecordDelivery {
                user: USER.into(),
                generation: 7,
                hash: hash_of(code),
            },
            Request::Attempt(attempt(Some("654321"), Some(hash_of("654321")), false)),
        ]
    );
}

/// For a user who can get codes by message, a TOTP-length answer is hashed
/// (argon2) only while a sent code waits to be typed: not when `Begin`
/// says none is pending, and when it says one is.
#[test]
fn a_totp_answer_is_hashed_only_while_a_sent_code_waits() {
    for pending in [false, true] {
        let (mut config, _dir) = setup(&format!("fleet-pending-{pending}"));
        config.delivery.command = Some(PathBuf::from("/nonexistent/deliver"));
        config.delivery.socket = Some(PathBuf::from("/nonexistent/deliver.sock"));
        let fake = agent(
            &socket(&config),
            vec![
                Says::Reply(Reply::Begin(BeginReply {
                    deliver_to: Some("+15555550100".into()),
                    delivered_pending: pending,
                    ..begin_reply(true)
                })),
                Says::Reply(Reply::Attempt(attempt_reply(AttemptVerdict::WrongCode))),
            ],
        );
        let mut script = Script::new(&[Some("654321")]);
        login(&config, &mut script).unwrap();
        let hash = pending.then(|| hash_of("654321"));
        assert_eq!(
            fake.join().unwrap(),
            vec![
                begin(),
                Request::Attempt(attempt(Some("654321"), hash, false))
            ],
            "pending: {pending}"
        );
    }
}

/// A full hour sends nothing and says until when, as the file flow does.
#[test]
fn a_full_hour_sends_no_code() {
    let (mut config, _dir) = setup("fleet-deliver-full");
    config.delivery.command = Some(PathBuf::from("/nonexistent/deliver"));
    config.delivery.socket = Some(PathBuf::from("/nonexistent/deliver.sock"));
    let until = NOW + 1200;
    let fake = agent(
        &socket(&config),
        vec![
            Says::Reply(Reply::Begin(BeginReply {
                deliver_to: Some("alice@example.org".into()),
                ..begin_reply(true)
            })),
            Says::Reply(Reply::Delivery(DeliveryReply {
                verdict: DeliveryVerdict::HourFull,
                expires: None,
                until: Some(until as i64),
            })),
        ],
    );
    let mut script = Script::new(&[Some("")]);
    let outcome = login(&config, &mut script).unwrap();
    let Outcome::Deny(DenyReason::DeliveryFailed(why)) = outcome else {
        panic!("{outcome:?}");
    };
    assert!(why.starts_with("max_per_hour reached until"), "{why}");
    assert_eq!(
        script.errors,
        [format!(
            "Too many codes sent in the last hour: try again after {}.",
            timefmt::human(until)
        )]
    );
    assert_eq!(fake.join().unwrap().len(), 2);
}

/// The enrollment changed or was disabled while the prompt was open: the
/// same message as the file flow, and nothing allowed.
#[test]
fn a_record_changed_or_disabled_meanwhile_is_denied() {
    let (config, _dir) = setup("fleet-changed");
    let verdicts = [AttemptVerdict::RecordChanged, AttemptVerdict::NotEnrolled];
    let fake = agent(
        &socket(&config),
        verdicts
            .iter()
            .flat_map(|v| {
                [
                    Says::Reply(Reply::Begin(begin_reply(true))),
                    Says::Reply(Reply::Attempt(attempt_reply(*v))),
                ]
            })
            .collect(),
    );
    for verdict in verdicts {
        let mut script = Script::new(&[Some("123456")]);
        let outcome = login(&config, &mut script).unwrap();
        assert_eq!(
            outcome,
            Outcome::Deny(DenyReason::RecordChanged),
            "{verdict:?}"
        );
        assert_eq!(script.errors, [RECORD_CHANGED]);
    }
    assert_eq!(fake.join().unwrap().len(), 4);
}

/// No agent: denied before any prompt, the user told the database cannot
/// be reached, the log line naming the socket unit to enable.
#[test]
fn no_agent_denies_with_the_fix_in_the_log() {
    let (config, _dir) = setup("fleet-no-agent");
    let mut script = Script::new(&[]);
    let outcome = login(&config, &mut script).unwrap();
    let Outcome::Deny(DenyReason::FleetUnavailable(FleetUnavailable::Client(
        ClientError::NotRunning { .. },
    ))) = &outcome
    else {
        panic!("{outcome:?}");
    };
    assert!(script.prompts.is_empty());
    assert_eq!(script.errors, [Unavailable::DatabaseDown.to_user()]);
    let line = outcome.describe();
    assert!(
        line.starts_with("denied: fleet: the fleet agent is not running"),
        "{line}"
    );
    assert!(
        line.contains("is pam-twofactor-agent.socket enabled?"),
        "{line}"
    );
}

/// An agent that does not answer: denied once `deadline_seconds` and the
/// margin are over, not later.
#[test]
fn a_silent_agent_denies_within_the_deadline() {
    let (config, _dir) = setup("fleet-slow");
    let fake = agent(
        &socket(&config),
        vec![Says::Nothing(Duration::from_millis(4500))],
    );
    let started = Instant::now();
    let mut script = Script::new(&[]);
    let outcome = login(&config, &mut script).unwrap();
    let waited = started.elapsed();
    assert!(
        matches!(
            outcome,
            Outcome::Deny(DenyReason::FleetUnavailable(FleetUnavailable::Client(
                ClientError::NoAnswer { .. }
            )))
        ),
        "{outcome:?}"
    );
    assert!(waited >= Duration::from_secs(3), "{waited:?}");
    assert!(waited <= Duration::from_secs(1 + 3), "{waited:?}");
    assert_eq!(script.errors, [Unavailable::DatabaseDown.to_user()]);
    assert_eq!(fake.join().unwrap(), vec![begin()]);
}

/// The agent's own `Unavailable` (a timeout waiting for the database)
/// denies with its message to the user and its cause and fix in the log.
#[test]
fn an_unavailable_reply_denies_with_its_message() {
    let (config, _dir) = setup("fleet-unavailable");
    let fake = agent(
        &socket(&config),
        vec![
            Says::Reply(Reply::Begin(begin_reply(true))),
            Says::Reply(Reply::Unavailable {
                reason: Unavailable::Timeout,
                detail: "no commit within 8 s\n".into(),
            }),
        ],
    );
    let mut script = Script::new(&[Some("123456")]);
    let outcome = login(&config, &mut script).unwrap();
    assert_eq!(
        outcome,
        Outcome::Deny(DenyReason::FleetUnavailable(FleetUnavailable::Agent {
            reason: Unavailable::Timeout,
            detail: "no commit within 8 s\n".into()
        }))
    );
    assert_eq!(script.errors, [Unavailable::Timeout.to_user()]);
    let line = outcome.describe();
    assert!(line.contains("(no commit within 8 s\\x0a)"), "{line}");
    assert!(line.contains("twofactor fleet status"), "{line}");
    fake.join().unwrap();
}

/// Replies that do not fit deny, whatever they say: not the protocol, the
/// wrong kind of reply, an allow without its device, a `retry_with_hash`
/// for an answer that was not deferred.
#[test]
fn replies_that_do_not_fit_deny() {
    let (config, _dir) = setup("fleet-garbage");
    let allow_without_device = attempt_reply(AttemptVerdict::AllowTotp);
    let cases: Vec<(Vec<Says>, &str, &str)> = vec![
        (
            vec![Says::Raw("reply = \"allow\"\n")],
            "123456",
            "unknown variant",
        ),
        (
            vec![Says::Reply(Reply::Enroll {
                verdict: EnrollVerdict::Enrolled,
            })],
            "123456",
            "an enroll reply to a begin",
        ),
        (
            vec![
                Says::Reply(Reply::Begin(begin_reply(true))),
                Says::Reply(Reply::Attempt(allow_without_device)),
            ],
            "123456",
            "AllowTotp without device",
        ),
        (
            vec![
                Says::Reply(Reply::Begin(begin_reply(true))),
                Says::Reply(Reply::Attempt(attempt_reply(AttemptVerdict::RetryWithHash))),
            ],
            "1234567890123456",
            "retry_with_hash for an answer not deferred",
        ),
    ];
    for (i, (says, answer, why)) in cases.into_iter().enumerate() {
        let path = socket(&config).with_file_name(format!("agent{i}.sock"));
        let fake = agent(&path, says);
        let mut config = config.clone();
        config.fleet.as_mut().unwrap().agent_socket = path;
        let prompted = answer.len() > 6 || why.starts_with("AllowTotp");
        let answers = [Some(answer)];
        let mut script = Script::new(if prompted { &answers } else { &[] });
        let outcome = login(&config, &mut script).unwrap();
        let Outcome::Deny(DenyReason::FleetUnavailable(FleetUnavailable::Client(
            ClientError::Garbage { why: got },
        ))) = &outcome
        else {
            panic!("{why}: {outcome:?}");
        };
        assert!(got.contains(why), "{got:?} should say {why:?}");
        assert_eq!(script.errors, [Unavailable::DatabaseDown.to_user()]);
        fake.join().unwrap();
    }
}

/// A login's events are handed to the delivery service for `[notify]` as
/// in the file flow; a learned drift is in seconds of the period the
/// agent names for the device.
#[test]
fn a_login_s_events_are_told() {
    let (mut config, dir) = setup("fleet-notify");
    let deliver_socket = dir.join("deliver.sock");
    config.notify.command = Some(PathBuf::from("/nonexistent/notify"));
    config.delivery.socket = Some(deliver_socket.clone());
    let service = delivery_service(&deliver_socket, 2);
    let fake = agent(
        &socket(&config),
        vec![
            Says::Reply(Reply::Begin(begin_reply(true))),
            Says::Reply(Reply::Attempt(AttemptReply {
                remaining: Some(9),
                ..attempt_reply(AttemptVerdict::AllowBackup)
            })),
            Says::Reply(Reply::Begin(begin_reply(true))),
            Says::Reply(Reply::Attempt(AttemptReply {
                device: Some("phone".into()),
                drift_offset: Some(-2),
                period: Some(60),
                ..attempt_reply(AttemptVerdict::AllowDrift)
            })),
        ],
    );
    for answer in ["1234567890123456", "123456"] {
        let mut script = Script::new(&[Some(answer)]);
        let outcome = login(&config, &mut script).unwrap();
        assert!(matches!(outcome, Outcome::Allow(_)), "{outcome:?}");
    }
    assert_eq!(
        service.join().unwrap(),
        [
            format!(
                "!notify\nuser: {USER}\nevent: backup-code-used\ntime: {NOW}\ncodes_left: 9\n\n"
            ),
            format!(
                "!notify\nuser: {USER}\nevent: drift-learned\ntime: {NOW}\ndevice: phone\noffset_seconds: -120\n\n"
            ),
        ]
    );
    assert_eq!(fake.join().unwrap().len(), 4);
}
