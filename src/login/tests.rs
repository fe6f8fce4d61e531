//! The login flow over a scripted conversation and a movable clock.

use std::collections::VecDeque;
use std::path::PathBuf;

use zeroize::Zeroizing;

use super::answer::KDF_SLOTS;
use super::*;
use crate::host::clock::FixedClock;
use crate::records::{DEFAULT_DEVICE, RecordError};
use crate::store::StoreError;

/// The user's state as the store holds it.
fn read_state(
    dir: &TrustedDir,
    user: &Username,
) -> Result<State, crate::records::user::FilesError> {
    UserFiles::new(dir, user).read_state()
}

/// A scripted conversation: answers in order, records everything shown,
/// runs what a test scheduled before an answer (the clock moving, an
/// admin acting while the prompt is open), panics if asked more often
/// than scripted, and checks on drop that every answer was used.
pub(super) struct Script {
    answers: VecDeque<Option<String>>,
    before: VecDeque<Option<Box<dyn FnOnce()>>>,
    pub(super) prompts: Vec<String>,
    pub(super) infos: Vec<String>,
    pub(super) errors: Vec<String>,
}

impl Script {
    pub(super) fn new(answers: &[Option<&str>]) -> Script {
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
    pub(super) fn before_answer(mut self, action: impl FnOnce() + 'static) -> Script {
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
    let dir = TrustedDir::open(&config.state_dir, crate::store::Dir::Private).unwrap();
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
    for step in Step::COPY {
        let (config, codes) = enrolled(&format!("unstorable-{step:?}"));
        // Two logins make both copies of the state; after that a write
        // makes no file and syncs no directory (`Step::COPY`).
        for code in &codes[1..3] {
            let mut script = Script::new(&[Some(code.as_str())]);
            let outcome = authenticate(&config, "daemon", &mut script, &FixedClock(NOW)).unwrap();
            assert!(matches!(outcome, Outcome::Allow(_)), "{outcome:?}");
        }
        let dir = TrustedDir::open(&config.state_dir, crate::store::Dir::Private).unwrap();
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
        let after = read_state(&dir, &user).unwrap();
        if matches!(step, Step::CreateTemp | Step::Write) {
            assert_eq!(after, before, "{step:?}");
        } else {
            // The new copy was whole (in the page cache at least) and is
            // the newer one, so it is read: the refused code counts as
            // used.
            assert_eq!(after.used_backup_codes.len(), 3, "{step:?}");
        }
        // Either way the code is accepted at most once from here on.
        let mut allowed = 0;
        for _ in 0..2 {
            let mut script = Script::new(&[Some(codes[0].as_str())]);
            let outcome = authenticate(&config, "daemon", &mut script, &FixedClock(NOW)).unwrap();
            allowed += usize::from(matches!(outcome, Outcome::Allow(_)));
        }
        let want = usize::from(matches!(step, Step::CreateTemp | Step::Write));
        assert_eq!(allowed, want, "{step:?}");
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
    // The first logins make both copies (as `code_is_refused_…`).
    for code in &codes[5..7] {
        let mut script = Script::new(&[Some(code.as_str())]);
        let outcome = authenticate(&config, "daemon", &mut script, &FixedClock(NOW)).unwrap();
        assert!(matches!(outcome, Outcome::Allow(_)), "{outcome:?}");
    }
    for (i, step) in crate::store::Step::COPY.into_iter().enumerate() {
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
                authenticate(&config, "daemon", &mut script, &FixedClock(NOW + attempt)).unwrap();
            allowed += usize::from(matches!(outcome, Outcome::Allow(Method::Backup { .. })));
        }
        // Until the new copy is whole the older one is read; a whole one
        // is read even unsynced (a process crash keeps the page cache; a
        // power loss, `records::user`'s tests).
        let want = usize::from(matches!(
            step,
            crate::store::Step::CreateTemp | crate::store::Step::Write
        ));
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
    let dir = TrustedDir::open(&config.state_dir, crate::store::Dir::Private).unwrap();
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
    let dir = TrustedDir::open(&config.state_dir, crate::store::Dir::Private).unwrap();
    let user = Username::parse("daemon").unwrap();
    let state = State {
        deliveries: vec![sent, sent + 1],
        ..State::default()
    };
    UserFiles::new(&dir, &user).reset_state(&state).unwrap();
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
    let dir = TrustedDir::open(&config.state_dir, crate::store::Dir::Private).unwrap();
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
    let dir = TrustedDir::open(&config.state_dir, crate::store::Dir::Private).unwrap();
    let user = Username::parse("daemon").unwrap();
    let state = State {
        failures: 5,
        locked_until: Some(NOW + 10),
        ..State::default()
    };
    UserFiles::new(&dir, &user).reset_state(&state).unwrap();
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

/// A non-root caller refused by the root-only state directory is told
/// plainly that this program cannot check codes (no prompt), and the error
/// names its uid; root, or another error, shows nothing and stays a store
/// error.
#[test]
fn non_root_caller_refused_by_the_state_dir_is_told_why() {
    let refused = || StoreError::Io {
        path: "/var/lib/twofactor".into(),
        op: "open",
        errno: nix::errno::Errno::EACCES,
    };
    let mut conv = Script::new(&[]);
    let err = state_dir_error(&mut conv, refused(), 1000);
    assert_eq!(conv.errors, [NOT_ROOT_MESSAGE]);
    assert!(conv.prompts.is_empty());
    assert!(matches!(err, AuthError::CallerNotRoot { uid: 1000, .. }));
    assert!(
        err.to_string()
            .starts_with("the caller runs as uid 1000, not root")
    );

    let mut conv = Script::new(&[]);
    assert!(matches!(
        state_dir_error(&mut conv, refused(), 0),
        AuthError::Store(_)
    ));
    let missing = StoreError::Io {
        path: "/var/lib/twofactor".into(),
        op: "open",
        errno: nix::errno::Errno::ENOENT,
    };
    assert!(matches!(
        state_dir_error(&mut conv, missing, 1000),
        AuthError::Store(_)
    ));
    assert!(conv.errors.is_empty());
}
