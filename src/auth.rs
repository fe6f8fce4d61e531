//! One authentication, from user name to outcome, over a `Conversation`
//! trait so tests can script it without PAM. The order is deliberate:
//! prompt with no lock held (a user may take a minute), compute the
//! backup-code hash (slow) before the lock, then lock → re-read state →
//! decide → write durably → unlock, and only then tell the user anything.

use std::fmt;
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::config::{Config, Unenrolled};
use crate::input::{self, Answer};
use crate::policy::{self, Attempt, Failure, Policy, Verdict};
use crate::record::{MAX_RECORD_BYTES, RecordError, SecretRecord, State};
use crate::store::{Access, StoreError, TrustedDir};
use crate::timefmt;
use crate::username::{Username, UsernameError};

/// The prompt every user sees, enrolled or not.
pub const PROMPT: &str = "Verification code: ";

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
    Totp { device: String },
    Backup { remaining: usize },
}

/// Why a login was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DenyReason {
    /// No secret record and `unenrolled = "deny"`.
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
}

/// The core's answer, in its own words; the PAM door maps it to a code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Allow(Method),
    Deny(DenyReason),
    /// Unenrolled under `unenrolled = "skip"`: PAM_IGNORE, no prompt.
    Skip,
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
    /// argon2 refused to run (memory allocation failure, bad parameters).
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
            AuthError::Kdf => f.write_str("the backup-code hash could not be computed"),
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
            Outcome::Allow(Method::Totp { device }) => {
                format!("authentication succeeded (TOTP code, device {device})")
            }
            Outcome::Allow(Method::Backup { remaining }) => {
                format!("authentication succeeded (backup code, {remaining} left)")
            }
            Outcome::Skip => "user is not enrolled; skipped (unenrolled = \"skip\")".into(),
            Outcome::Deny(reason) => match reason {
                DenyReason::Unenrolled => {
                    "denied: user is not enrolled (unenrolled = \"deny\")".into()
                }
                DenyReason::BadUsername(why) => format!("denied: unusable user name: {why}"),
                DenyReason::Failed {
                    failure,
                    locked_until,
                } => {
                    let what = match failure {
                        Failure::WrongCode => "wrong code",
                        Failure::Replayed => "replayed code (RFC 6238 5.2)",
                        Failure::Malformed => "malformed input",
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
            },
        }
    }
}

fn read_record(dir: &TrustedDir, user: &Username) -> Result<Option<SecretRecord>, AuthError> {
    let name = user.secret_file();
    match dir.read(&name, Access::Private, MAX_RECORD_BYTES)? {
        None => Ok(None),
        Some(bytes) => SecretRecord::parse(&bytes)
            .map(Some)
            .map_err(|error| AuthError::Record {
                path: dir.path().join(&name),
                error,
            }),
    }
}

/// Reads the state file under the caller's lock; missing means fresh.
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

/// Authenticates `raw_user` at time `now`.
pub fn authenticate(
    config: &Config,
    raw_user: &str,
    conv: &mut dyn Conversation,
    now: u64,
) -> Result<Outcome, AuthError> {
    let user = match Username::parse(raw_user) {
        Ok(user) => user,
        Err(e) => return deny_after_prompt(conv, DenyReason::BadUsername(reason(&e))),
    };
    let dir = TrustedDir::open(&config.state_dir, true)?;
    let Some(record) = read_record(&dir, &user)? else {
        return match config.unenrolled {
            Unenrolled::Skip => Ok(Outcome::Skip),
            Unenrolled::Deny => deny_after_prompt(conv, DenyReason::Unenrolled),
        };
    };

    let raw = conv.ask_code(PROMPT)?;
    let answer = input::classify(&raw);
    drop(raw);
    let attempt = match &answer {
        Answer::Totp(code) => Attempt::Totp(code.as_str()),
        Answer::Backup(code) => Attempt::Backup(
            code.hash(&record.backup.salt, record.backup.kdf)
                .ok_or(AuthError::Kdf)?,
        ),
        Answer::Malformed => Attempt::Malformed,
    };

    let decision = {
        let _lock = dir.lock(&user.lock_file())?;
        let state = read_state(&dir, &user)?;
        let decision = policy::decide(&record, &state, &attempt, now, &Policy::from(config));
        if decision.state != state {
            // Durable before anything is acted on: a code we cannot mark as
            // used is not accepted (google-authenticator #543).
            dir.replace(&user.state_file(), decision.state.to_toml().as_bytes())?;
        }
        decision
    };

    Ok(match decision.verdict {
        Verdict::AllowTotp { device } => Outcome::Allow(Method::Totp { device }),
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
    })
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
