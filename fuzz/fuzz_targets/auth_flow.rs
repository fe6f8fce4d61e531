//! The whole `login::authenticate_from` flow against a real state directory.
//!
//! The input picks a config (window, lockout, rate limit, clock-drift
//! learning, grace, exemptions, unenrolled policy), one or two devices, up
//! to four backup codes, an optional pre-existing (or damaged) state file
//! and a clock, then a series of logins: each with a time step, a user name,
//! a remote host, an answer (a code for some step, the device's next code,
//! raw bytes, a backup code, a replay, a wrong or empty code, a huge answer
//! or a conversation failure) and maybe an I/O failure injected at one step
//! of the state write (`Fault::Fail` only, never an abort).
//!
//! Every login is checked against a model of the README's rules written
//! here, with codes from our own RFC 4226 HOTP: the exact outcome, the
//! prompts and messages, the exact state on disk afterwards (unchanged after
//! a failed write), no temp file left, a state file that always parses, no
//! backup code used twice and no accepted step going back.
#![no_main]

use std::fs;
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pam_twofactor::config::net::Cidr;
use pam_twofactor::config::{Config, Unenrolled};
use pam_twofactor::host::clock;
use pam_twofactor::login::{
    self, AuthError, ConvError, Conversation, DenyReason, Method, Outcome, SkipReason,
};
use pam_twofactor::otp::backup::{BackupCode, HASH_BYTES, KdfParams, SALT_BYTES};
use pam_twofactor::otp::{Algorithm, SecretKey, TotpParams};
use pam_twofactor::policy::Failure;
use pam_twofactor::records::{
    BackupSet, DEFAULT_DEVICE, Device, MAX_GRACE_HOSTS, RecordError, SecretRecord, State,
    valid_host,
};
use pam_twofactor::store::{
    Step,
    faults::{self, Fault},
};
use pam_twofactor_fuzz::{Bytes, base32_decode, hotp};
use zeroize::Zeroizing;

/// The enrolled user (exists in every Debian passwd; only the name matters).
const USER: &str = "daemon";
/// A valid name that is never enrolled before the login.
const NEWCOMER: &str = "nobody-here";
/// Other names: one valid but unenrolled, the rest unusable as file names.
const OTHER_USERS: [&str; 6] = [NEWCOMER, "..", "a/b", "", "x\ny", "-rf"];
/// Remote hosts: two addresses, one in the exempt network, one unusable.
const RHOSTS: [Option<&str>; 4] = [None, Some("192.0.2.5"), Some("198.51.100.7"), Some("h\"x")];
const EXEMPT_NET: &str = "198.51.100.0/24";
/// A cheap argon2id cost so backup-code attempts stay fast.
const KDF: KdfParams = KdfParams {
    m_cost: 64,
    t_cost: 1,
    p_cost: 1,
};
const SALT: [u8; SALT_BYTES] = [0x5a; SALT_BYTES];
/// The backup codes; a record holds the first 0 to 4 of them.
const BACKUP_CODES: [&str; 4] = [
    "0000111122223333",
    "1234567812345678",
    "9999000099990000",
    "0101010101010101",
];
/// RFC 6238's seeds for SHA1, SHA256 and SHA512.
const SECRETS: [&[u8]; 3] = [
    b"12345678901234567890",
    b"12345678901234567890123456789012",
    b"1234567890123456789012345678901234567890123456789012345678901234",
];
const LABELS: [&str; 2] = [DEFAULT_DEVICE, "phone"];
const MAX_LOGINS: usize = 16;
/// The clock never goes past what a 64-bit `time_t` can hold.
const MAX_NOW: u64 = i64::MAX as u64;
const KEY_LINE: &str = "Or enter this key by hand: ";

struct Fixture {
    dir: PathBuf,
    hashes: Vec<[u8; HASH_BYTES]>,
}

fn make_dir(path: &Path, mode: u32) {
    match fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {}
        Err(e) => panic!("harness: create {}: {e}", path.display()),
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("harness: chmod {}: {e}", path.display()));
}

/// Once per process: `/run/pam-twofactor-fuzz/<pid>` (0700 under a 0755
/// parent; `$HOME/.cache/...` when not root; never `/tmp`, which the store
/// refuses), after removing directories of processes that are gone.
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        let base = if root {
            PathBuf::from("/run/pam-twofactor-fuzz")
        } else {
            let home = std::env::var_os("HOME").expect("harness: HOME is not set");
            let cache = PathBuf::from(home).join(".cache");
            make_dir(&cache, 0o755);
            cache.join("pam-twofactor-fuzz")
        };
        make_dir(&base, 0o755);
        if let Ok(entries) = fs::read_dir(&base) {
            for entry in entries.flatten() {
                let stale = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u32>().ok())
                    .is_some_and(|pid| !Path::new("/proc").join(pid.to_string()).exists());
                if stale {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = base.join(std::process::id().to_string());
        let _ = fs::remove_dir_all(&dir);
        make_dir(&dir, 0o700);
        let hashes = BACKUP_CODES
            .iter()
            .map(|c| {
                BackupCode::parse(c)
                    .and_then(|code| code.hash(&SALT, KDF))
                    .expect("harness: hashing a backup code")
            })
            .collect();
        Fixture { dir, hashes }
    })
}

/// Writes a root-owned 0600 file the way an admin's tool would.
fn write_private(path: &Path, contents: &[u8]) {
    let _ = fs::remove_file(path);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .unwrap_or_else(|e| panic!("harness: create {}: {e}", path.display()));
    f.write_all(contents)
        .unwrap_or_else(|e| panic!("harness: write {}: {e}", path.display()));
}

fn read_opt(path: &Path) -> Option<Vec<u8>> {
    match fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == ErrorKind::NotFound => None,
        Err(e) => panic!("harness: read {}: {e}", path.display()),
    }
}

/// One scripted answer.
#[derive(Clone, Debug)]
enum Answer {
    /// These bytes, or a conversation failure.
    Fixed(Option<Vec<u8>>),
    /// The code, `offset` steps from now, for the key the module just
    /// showed (enrollment at login).
    FromShownKey { offset: i64, params: TotpParams },
}

/// The conversation: scripted answers in order; an extra prompt is a bug.
struct Script {
    answers: Vec<Answer>,
    now: u64,
    prompts: Vec<String>,
    infos: Vec<String>,
    errors: Vec<String>,
    /// What `FromShownKey` answered: the secret shown and the step used.
    enrolled: Option<(Vec<u8>, u64)>,
}

impl Conversation for Script {
    fn ask_code(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, ConvError> {
        self.prompts.push(prompt.to_string());
        let Some(answer) = self.answers.get(self.prompts.len() - 1).cloned() else {
            panic!("unexpected prompt {:?} (after {:?})", prompt, self.prompts);
        };
        match answer {
            Answer::Fixed(a) => a.map(Zeroizing::new).ok_or(ConvError),
            Answer::FromShownKey { offset, params } => {
                let shown = self
                    .infos
                    .iter()
                    .find_map(|m| m.split_once(KEY_LINE))
                    .and_then(|(_, rest)| rest.lines().next())
                    .expect("no key shown before the enrollment prompt");
                let secret = base32_decode(shown).expect("the key shown is not base32");
                let step = (self.now / u64::from(params.period)).saturating_add_signed(offset);
                let code = hotp(&secret, params.algorithm, params.digits, step);
                self.enrolled = Some((secret, step));
                Ok(Zeroizing::new(code.into_bytes()))
            }
        }
    }
    fn show_info(&mut self, message: &str) {
        self.infos.push(message.to_string());
    }
    fn show_error(&mut self, message: &str) {
        self.errors.push(message.to_string());
    }
}

/// One device as the model sees it.
#[derive(Clone, Debug)]
struct Dev {
    label: &'static str,
    secret: &'static [u8],
    params: TotpParams,
}

fn decode_params(b: u8) -> TotpParams {
    TotpParams {
        algorithm: [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512][usize::from(b % 3)],
        digits: 6 + (b / 3) % 3,
        period: [10, 30, 60, 300][usize::from((b / 9) % 4)],
    }
}

/// The digits of an answer as the README reads it: spaces and dashes
/// dropped, only ASCII digits, at most 64 bytes; `None` if malformed.
fn digits_of(raw: &[u8]) -> Option<String> {
    if raw.is_empty() || raw.len() > 64 {
        return None;
    }
    if !raw
        .iter()
        .all(|b| b.is_ascii_digit() || *b == b' ' || *b == b'-')
    {
        return None;
    }
    Some(
        raw.iter()
            .filter(|b| b.is_ascii_digit())
            .map(|&b| char::from(b))
            .collect(),
    )
}

/// A suspected clock drift: the device, the step its code matched, and that
/// step minus ours.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Drift {
    device: &'static str,
    step: u64,
    offset: i64,
}

/// What the policy makes of one answer.
#[derive(Debug)]
enum Verdict {
    Done(Outcome),
    DriftSuspected(Drift),
}

/// The model's view of the enrolled user and the config.
struct Model<'a> {
    devices: &'a [Dev],
    set: &'a [[u8; HASH_BYTES]],
    codes: &'a [&'static str],
    config: &'a Config,
}

impl Model<'_> {
    /// Steps in `first..=last` where `dev` shows `code`.
    fn steps(&self, dev: &Dev, code: &str, first: u64, last: u64) -> Vec<u64> {
        (first..=last)
            .filter(|&s| hotp(dev.secret, dev.params.algorithm, dev.params.digits, s) == code)
            .collect()
    }

    /// The README's rules for one answer (`drift`: the second answer after
    /// a suspected drift): rate limit, then lockout, then the code.
    fn decide(
        &self,
        st: &mut State,
        raw: &[u8],
        drift: Option<&Drift>,
        rhost: Option<&str>,
        now: u64,
    ) -> Verdict {
        let config = self.config;
        if now >= st.rate_window_start.saturating_add(config.per_seconds)
            || now < st.rate_window_start
        {
            st.rate_window_start = now;
            st.rate_window_attempts = 0;
        }
        if st.rate_window_attempts >= config.max_attempts {
            let until = st.rate_window_start.saturating_add(config.per_seconds);
            return Verdict::Done(Outcome::Deny(DenyReason::RateLimited { until }));
        }
        st.rate_window_attempts += 1;
        match st.locked_until {
            Some(until) if now < until => {
                return Verdict::Done(Outcome::Deny(DenyReason::LockedOut { until }));
            }
            Some(_) => {
                st.locked_until = None;
                st.failures = 0;
            }
            None => {}
        }
        let digits = digits_of(raw);
        let totp = digits.as_deref().filter(|d| (6..=8).contains(&d.len()));
        let backup = digits.as_deref().filter(|d| d.len() == 16);
        let result: Result<Method, Failure> = 'eval: {
            if let Some(check) = drift {
                // Only the device's very next step confirms the drift.
                let dev = self.devices.iter().find(|d| d.label == check.device);
                let next = check.step.saturating_add(1);
                if let (Some(code), Some(dev)) = (totp, dev) {
                    let last = st.last_accepted_step.get(dev.label).copied();
                    let fresh = code.len() == usize::from(dev.params.digits)
                        && !self.steps(dev, code, next, next).is_empty()
                        && last.is_none_or(|l| next > l);
                    if fresh {
                        st.last_accepted_step.insert(dev.label.to_string(), next);
                        st.drift_steps.insert(dev.label.to_string(), check.offset);
                        break 'eval Ok(Method::Drift {
                            device: dev.label.to_string(),
                            offset_seconds: check.offset * i64::from(dev.params.period),
                        });
                    }
                }
                break 'eval Err(Failure::DriftNotConfirmed);
            }
            let mut failure = if totp.is_some() || backup.is_some() {
                Failure::WrongCode
            } else {
                Failure::Malformed
            };
            if let Some(code) = totp {
                for dev in self.devices {
                    if code.len() != usize::from(dev.params.digits) {
                        continue;
                    }
                    let ours = now / u64::from(dev.params.period);
                    let offset = st.drift_steps.get(dev.label).copied().unwrap_or(0);
                    let center = ours.saturating_add_signed(offset);
                    let w = u64::from(config.window);
                    let matched = self.steps(
                        dev,
                        code,
                        center.saturating_sub(w),
                        center.saturating_add(w),
                    );
                    let last = st.last_accepted_step.get(dev.label).copied();
                    if let Some(&step) = matched.iter().find(|&&s| last.is_none_or(|l| s > l)) {
                        st.last_accepted_step.insert(dev.label.to_string(), step);
                        break 'eval Ok(Method::Totp {
                            device: dev.label.to_string(),
                        });
                    }
                    if !matched.is_empty() {
                        failure = Failure::Replayed;
                    }
                }
            }
            if let Some(code) = backup {
                let unused = self
                    .codes
                    .iter()
                    .position(|c| *c == code)
                    .filter(|&i| !st.used_backup_codes.contains(&self.set[i]));
                if let Some(i) = unused {
                    st.used_backup_codes.retain(|h| self.set.contains(h));
                    st.used_backup_codes.push(self.set[i]);
                    let remaining = self
                        .set
                        .iter()
                        .filter(|h| !st.used_backup_codes.contains(h))
                        .count();
                    break 'eval Ok(Method::Backup { remaining });
                }
            }
            if let (Some(code), Failure::WrongCode) = (totp, failure)
                && config.max_drift_steps > config.window
            {
                for dev in self.devices {
                    if code.len() != usize::from(dev.params.digits) {
                        continue;
                    }
                    let ours = now / u64::from(dev.params.period);
                    let offset = st.drift_steps.get(dev.label).copied().unwrap_or(0);
                    let center = ours.saturating_add_signed(offset);
                    let m = u64::from(config.max_drift_steps);
                    let last = st.last_accepted_step.get(dev.label).copied();
                    let fresh = self
                        .steps(
                            dev,
                            code,
                            center.saturating_sub(m),
                            center.saturating_add(m),
                        )
                        .into_iter()
                        .find(|&s| last.is_none_or(|l| s > l));
                    if let Some(step) = fresh {
                        // The matched step is spent and the suspicion is a
                        // counted failure until the next code confirms it.
                        let spent = st
                            .last_accepted_step
                            .entry(dev.label.to_string())
                            .or_insert(step);
                        *spent = (*spent).max(step);
                        st.failures = st.failures.saturating_add(1);
                        if st.failures >= config.max_failures {
                            let until = now.saturating_add(config.lock_seconds);
                            st.locked_until = Some(until);
                            return Verdict::Done(Outcome::Deny(DenyReason::Failed {
                                failure: Failure::DriftSuspected,
                                locked_until: Some(until),
                            }));
                        }
                        return Verdict::DriftSuspected(Drift {
                            device: dev.label,
                            step,
                            offset: step as i64 - ours as i64,
                        });
                    }
                }
            }
            Err(failure)
        };
        match result {
            Ok(method) => {
                st.failures = 0;
                st.last_success = Some(now);
                if let (Some(host), true) =
                    (rhost.filter(|h| valid_host(h)), config.grace_seconds > 0)
                {
                    st.grace
                        .retain(|_, t| now.saturating_sub(*t) < config.grace_seconds);
                    if st.grace.len() >= MAX_GRACE_HOSTS {
                        let oldest = st
                            .grace
                            .iter()
                            .min_by_key(|(_, t)| **t)
                            .map(|(h, _)| h.clone());
                        if let Some(oldest) = oldest {
                            st.grace.remove(&oldest);
                        }
                    }
                    st.grace.insert(host.to_string(), now);
                }
                Verdict::Done(Outcome::Allow(method))
            }
            Err(failure) => {
                st.failures = st.failures.saturating_add(1);
                let locked_until = (st.failures >= config.max_failures).then(|| {
                    let until = now.saturating_add(config.lock_seconds);
                    st.locked_until = Some(until);
                    until
                });
                Verdict::Done(Outcome::Deny(DenyReason::Failed {
                    failure,
                    locked_until,
                }))
            }
        }
    }
}

/// What one login should give, according to the model.
#[derive(Debug)]
struct Expected {
    result: Want,
    prompts: Vec<&'static str>,
    infos: usize,
    errors: usize,
    disk: Disk,
}

/// The result `authenticate_from` should return.
#[derive(Debug)]
enum Want {
    Outcome(Outcome),
    Conversation,
    Record,
    Store,
    /// Enrollment at login: decided from the key the module showed.
    Enroll,
}

/// The user's state file afterwards.
#[derive(Debug)]
enum Disk {
    Unchanged,
    Is(State),
    /// The write failed at this step: the old file stays, or the new state
    /// once the rename happened.
    FailedWrite(Step, State),
}

impl Expected {
    fn simple(result: Want, prompts: Vec<&'static str>) -> Expected {
        Expected {
            result,
            prompts,
            infos: 0,
            errors: 0,
            disk: Disk::Unchanged,
        }
    }
}

/// Messages the module shows with this outcome.
fn messages_for(outcome: &Outcome) -> (usize, usize) {
    match outcome {
        Outcome::Allow(Method::Backup { .. }) => (1, 0),
        Outcome::Deny(
            DenyReason::Failed {
                locked_until: Some(_),
                ..
            }
            | DenyReason::LockedOut { .. }
            | DenyReason::RateLimited { .. },
        ) => (0, 1),
        _ => (0, 0),
    }
}

/// The enrolled user's login, answer by answer, as `auth` runs it: each
/// answer is decided under the lock and a changed state is written before
/// anything else happens; a suspected drift asks once more.
fn expect_enrolled(
    model: &Model,
    before: &Option<State>,
    rhost: Option<&str>,
    now: u64,
    fault: Option<Step>,
    mut next_answer: impl FnMut() -> Option<Vec<u8>>,
) -> Expected {
    let mut prompts = Vec::new();
    let mut infos = 0;
    let mut drift: Option<Drift> = None;
    let Some(old) = before else {
        prompts.push(login::PROMPT);
        return match next_answer() {
            None => Expected::simple(Want::Conversation, prompts),
            Some(_) => Expected::simple(Want::Record, prompts),
        };
    };
    let mut st = old.clone();
    loop {
        prompts.push(if drift.is_some() {
            login::NEXT_PROMPT
        } else {
            login::PROMPT
        });
        let disk = |st: &State| {
            if st == old {
                Disk::Unchanged
            } else {
                Disk::Is(st.clone())
            }
        };
        let raw = match next_answer() {
            Some(raw) => raw,
            None => {
                return Expected {
                    result: Want::Conversation,
                    prompts,
                    infos,
                    errors: 0,
                    disk: disk(&st),
                };
            }
        };
        let mut next = st.clone();
        let verdict = model.decide(&mut next, &raw, drift.as_ref(), rhost, now);
        if next != st {
            if let Some(step) = fault {
                return Expected {
                    result: Want::Store,
                    prompts,
                    infos,
                    errors: 0,
                    disk: Disk::FailedWrite(step, next),
                };
            }
            st = next;
        }
        match verdict {
            Verdict::DriftSuspected(check) if drift.is_none() => {
                infos += 1;
                drift = Some(check);
            }
            Verdict::DriftSuspected(_) => panic!("harness: the model suspected drift twice"),
            Verdict::Done(outcome) => {
                let (i, e) = messages_for(&outcome);
                return Expected {
                    disk: disk(&st),
                    result: Want::Outcome(outcome),
                    prompts,
                    infos: infos + i,
                    errors: e,
                };
            }
        }
    }
}

/// Decodes one answer; `next` is the step after the last code typed.
fn decode_answer(
    r: &mut Bytes,
    devices: &[Dev],
    now: u64,
    last_code: &mut Option<(usize, u64)>,
    last_answer: &mut Vec<u8>,
) -> Option<Vec<u8>> {
    let op = r.u8();
    let code_for = |i: usize, step: u64| {
        let dev = &devices[i];
        hotp(dev.secret, dev.params.algorithm, dev.params.digits, step)
    };
    let answer = match op & 7 {
        0 | 1 => {
            let i = usize::from((op >> 3) & 1) % devices.len();
            let ours = now / u64::from(devices[i].params.period);
            let step = ours.saturating_add_signed(i64::from(op >> 4) - 7);
            *last_code = Some((i, step));
            let code = code_for(i, step);
            if op & 1 != 0 {
                let (a, b) = code.split_at(3);
                Some(format!("{a} {b}").into_bytes())
            } else {
                Some(code.into_bytes())
            }
        }
        2 => {
            let (i, step) = last_code.unwrap_or((0, now / u64::from(devices[0].params.period)));
            let step = step.saturating_add(1);
            *last_code = Some((i, step));
            Some(code_for(i, step).into_bytes())
        }
        3 => match r.u8() {
            255 => Some(vec![b'7'; 100_000]),
            len => Some(r.take(usize::from(len % 80)).to_vec()),
        },
        4 => None,
        5 => {
            let i = usize::from(r.u8()) % (BACKUP_CODES.len() + 1);
            let code = match BACKUP_CODES.get(i) {
                Some(c) => (*c).to_string(),
                None => format!("{:016}", r.u64() % 10_000_000_000_000_000),
            };
            if op & 0x80 != 0 {
                let parts: Vec<&str> = (0..4).map(|k| &code[k * 4..k * 4 + 4]).collect();
                Some(parts.join("-").into_bytes())
            } else {
                Some(code.into_bytes())
            }
        }
        6 => Some(last_answer.clone()),
        _ => match (op >> 3) % 4 {
            3 => Some(Vec::new()),
            n => {
                let code = format!("{:08}", r.u64() % 100_000_000);
                Some(code.as_bytes()[..6 + usize::from(n)].to_vec())
            }
        },
    };
    if let Some(bytes) = &answer {
        last_answer.clone_from(bytes);
    }
    answer
}

/// The bytes of the copy of `user`'s state that the module reads, and the
/// steps a write of the state goes through; modelled on the rules in
/// docs/design.md ("The state's two copies"), not on the module's code: of
/// the copies that match their checksum the higher generation (the named
/// one on a tie; a named copy damaged otherwise is what is read, and
/// refused). A write goes over the other copy; over the spare it is then
/// swapped in (`Rename`); the directory is synced when a copy is made or
/// renamed into a missing name (`FsyncDir`).
fn current_copy(dir: &Path, user: &str) -> (Option<Vec<u8>>, Vec<Step>) {
    let named = read_opt(&dir.join(format!("{user}.state")));
    let spare = read_opt(&dir.join(format!(".{user}.state.spare")));
    let parse = |b: &Option<Vec<u8>>| b.as_deref().map(State::parse_file);
    let spare_newer = match (parse(&named), parse(&spare)) {
        (Some(Ok(n)), Some(Ok(s))) => s.generation > n.generation,
        (None | Some(Err(RecordError::Torn)), Some(Ok(_))) => true,
        _ => false,
    };
    let mut steps = vec![Step::CreateTemp, Step::Write, Step::FsyncFile];
    if spare_newer {
        if named.is_none() {
            steps.push(Step::FsyncDir);
        }
        (spare, steps)
    } else {
        steps.push(Step::Rename);
        if spare.is_none() || named.is_none() {
            steps.push(Step::FsyncDir);
        }
        (named, steps)
    }
}

/// Panics if anything but the users' own files is in the directory.
fn assert_no_stray_files(dir: &Path, context: &str) {
    for entry in fs::read_dir(dir).expect("harness: readdir").flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if login::is_kdf_slot(&name) {
            continue;
        }
        let ours = [USER, NEWCOMER].iter().any(|u| {
            [".secret", ".state", ".lock"]
                .iter()
                .any(|x| name == format!("{u}{x}"))
                || name == format!(".{u}.state.spare")
        });
        assert!(
            ours,
            "stray file {name:?} left in the state directory\n{context}"
        );
    }
}

/// `AUTH_FLOW_TRACE=1` prints each login (to check what a seed does).
fn trace() -> bool {
    static TRACE: OnceLock<bool> = OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("AUTH_FLOW_TRACE").is_some_and(|v| v == "1"))
}

fn run(data: &[u8]) {
    faults::clear();
    let fx = fixture();
    let mut r = Bytes::new(data);

    // The scenario.
    let b0 = r.u8();
    let b1 = r.u8();
    let b2 = r.u8();
    let b3 = r.u8();
    let mut config = Config {
        state_dir: fx.dir.clone(),
        unenrolled: [
            Unenrolled::Deny,
            Unenrolled::Skip,
            Unenrolled::Enroll,
            Unenrolled::Deny,
        ][usize::from(b3 % 4)],
        window: u32::from(b0 % 4),
        max_failures: 1 + u32::from(b1 & 7) % 6,
        lock_seconds: [1, 30, 600, 1800][usize::from((b1 >> 3) % 4)],
        max_attempts: 1 + u32::from(b2 & 15) % 12,
        per_seconds: [1, 10, 60, 3600][usize::from((b2 >> 4) % 4)],
        max_drift_steps: [0, 3, 10, 0][usize::from((b3 >> 2) % 4)],
        grace_seconds: [0, 0, 60, 600][usize::from((b3 >> 4) % 4)],
        backup_codes: 1,
        issuer: "fuzz".into(),
        ..Config::default()
    };
    if b3 & 0x40 != 0 {
        config.exempt_networks = vec![Cidr::parse(EXEMPT_NET).expect("harness: cidr")];
    }
    if b3 & 0x80 != 0 {
        config.exempt_groups = vec![USER.to_string()];
    }
    let d0 = r.u8();
    let mut devices = vec![Dev {
        label: LABELS[0],
        secret: SECRETS[usize::from(d0 / 36) % 3],
        params: decode_params(d0),
    }];
    config.totp = devices[0].params;
    if b0 & 0x04 != 0 {
        let d1 = r.u8();
        devices.push(Dev {
            label: LABELS[1],
            secret: SECRETS[usize::from(d1 / 36) % 3],
            params: decode_params(d1),
        });
    }
    let backup_count = usize::from(r.u8() % 5);
    let raw_now = r.u64();
    let mut now = if b0 & 0x20 != 0 {
        // Near the end of time_t: saturating arithmetic must still store.
        MAX_NOW - raw_now % (1 << 34)
    } else {
        raw_now % (1 << 40)
    };

    for entry in fs::read_dir(&fx.dir).expect("harness: readdir").flatten() {
        let _ = fs::remove_file(entry.path());
    }
    let set = &fx.hashes[..backup_count];
    let record = SecretRecord {
        created: 0,
        devices: devices
            .iter()
            .map(|d| Device {
                label: d.label.to_string(),
                secret: SecretKey::new(d.secret.to_vec()),
                params: d.params,
                created: 0,
            })
            .collect(),
        backup: BackupSet {
            created: 0,
            digits: 16,
            kdf: KDF,
            salt: SALT,
            hashes: set.to_vec(),
        },
        deliver_to: None,
    };
    let state_path = fx.dir.join(format!("{USER}.state"));
    write_private(
        &fx.dir.join(format!("{USER}.secret")),
        record
            .to_toml()
            .expect("harness: writing the record")
            .as_bytes(),
    );

    match (b0 >> 3) & 3 {
        0 => {}
        2 => write_private(&state_path, b"version = 1\nfailures = -1\n"),
        _ => {
            let (b, c, d, e) = (r.u8(), r.u8(), r.u8(), r.u8());
            let mut pre = State {
                failures: u32::from(c % 8),
                locked_until: (c & 0x08 != 0).then(|| {
                    (now + u64::from(c >> 4) * 100)
                        .saturating_sub(700)
                        .min(MAX_NOW)
                }),
                rate_window_start: now.saturating_sub(u64::from(d % 64) * 5),
                rate_window_attempts: u32::from(d >> 6) * 4,
                ..State::default()
            };
            for (i, dev) in devices.iter().enumerate() {
                let ours = now / u64::from(dev.params.period);
                if b & (1 << i) != 0 {
                    let step = ours.saturating_add_signed(i64::from((b >> 2) % 7) - 3);
                    pre.last_accepted_step.insert(dev.label.to_string(), step);
                }
                if e & (0x20 << i) != 0 {
                    pre.drift_steps
                        .insert(dev.label.to_string(), i64::from(b >> 5) - 3);
                }
            }
            if b & 0x80 != 0 {
                pre.last_accepted_step.insert("retired".to_string(), 7);
            }
            if e & 1 != 0 {
                pre.used_backup_codes.push([0xaa; HASH_BYTES]);
            }
            for (i, h) in fx.hashes.iter().enumerate() {
                if e & (2 << i) != 0 {
                    pre.used_backup_codes.push(*h);
                }
            }
            if e & 0x80 != 0 {
                pre.grace
                    .insert("192.0.2.5".into(), now.saturating_sub(u64::from(d)));
            }
            write_private(
                &state_path,
                pre.to_file(1)
                    .expect("harness: writing the state")
                    .as_bytes(),
            );
        }
    }

    let mut last_answer: Vec<u8> = Vec::new();
    let mut last_code: Option<(usize, u64)> = None;
    for login in 0..MAX_LOGINS {
        if r.is_empty() {
            break;
        }
        let ctl = r.u8();
        match (ctl >> 4) & 3 {
            0 => {}
            1 => now = now.saturating_add(u64::from(r.u8())),
            2 => now = now.saturating_add(u64::from(r.u8()) * 30),
            _ => now = now.saturating_sub(u64::from(r.u8()) * 30),
        }
        now = now.min(MAX_NOW);
        let fault = (ctl & 0x08 != 0).then(|| Step::ALL[usize::from(ctl & 7) % Step::ALL.len()]);
        let who = r.u8();
        let user = if ctl >> 6 == 3 {
            OTHER_USERS[usize::from(who & 7) % OTHER_USERS.len()]
        } else {
            USER
        };
        let rhost = RHOSTS[usize::from(who >> 4) % RHOSTS.len()];

        let (before_bytes, steps) = current_copy(&fx.dir, USER);
        // A fault injected at a step the write does not go through is
        // never met.
        let fault_met = fault.filter(|f| user != USER || steps.contains(f));
        let before = match &before_bytes {
            None => Some(State::default()),
            Some(bytes) => State::parse(bytes).ok(),
        };
        let model = Model {
            devices: &devices,
            set,
            codes: &BACKUP_CODES[..backup_count],
            config: &config,
        };
        let exempt_net = rhost
            .and_then(|h| config.exempt_networks.iter().find(|n| n.contains_host(h)))
            .map(|n| Outcome::Skip(SkipReason::ExemptNetwork(n.to_string())));

        // The answers and what the model expects of them.
        let mut answers: Vec<Answer> = Vec::new();
        // The first answer is always read, used or not, so that each login
        // takes the same bytes whatever the module does with it.
        let mut first = Some(decode_answer(
            &mut r,
            &devices,
            now,
            &mut last_code,
            &mut last_answer,
        ));
        let enrolling =
            user == NEWCOMER && config.unenrolled == Unenrolled::Enroll && exempt_net.is_none();
        let expected = if user != USER {
            let answer = if enrolling && who & 0x08 != 0 {
                Answer::FromShownKey {
                    offset: i64::from(r.u8() % 8) - 4,
                    params: config.totp,
                }
            } else {
                Answer::Fixed(first.take().flatten())
            };
            answers.push(answer.clone());
            let conv_failed = matches!(answer, Answer::Fixed(None));
            let prompt = vec![login::PROMPT];
            match (user, exempt_net) {
                (NEWCOMER, Some(skip)) => Expected::simple(Want::Outcome(skip), vec![]),
                (NEWCOMER, None) if config.unenrolled == Unenrolled::Skip => {
                    Expected::simple(Want::Outcome(Outcome::Skip(SkipReason::Unenrolled)), vec![])
                }
                _ if conv_failed => Expected {
                    infos: usize::from(enrolling),
                    ..Expected::simple(Want::Conversation, prompt)
                },
                _ if enrolling => Expected::simple(Want::Enroll, prompt),
                (NEWCOMER, None) => {
                    Expected::simple(Want::Outcome(Outcome::Deny(DenyReason::Unenrolled)), prompt)
                }
                // The reason text is checked by the username unit tests.
                _ => Expected::simple(
                    Want::Outcome(Outcome::Deny(DenyReason::BadUsername(String::new()))),
                    prompt,
                ),
            }
        } else if let Some(skip) = exempt_net {
            Expected::simple(Want::Outcome(skip), vec![])
        } else if !config.exempt_groups.is_empty() {
            let skip = Outcome::Skip(SkipReason::ExemptGroup(USER.into()));
            Expected::simple(Want::Outcome(skip), vec![])
        } else if rhost.is_some() && config.grace_seconds > 0 && before.is_none() {
            Expected::simple(Want::Record, vec![])
        } else if before.as_ref().is_some_and(|st| {
            rhost.is_some_and(|h| {
                config.grace_seconds > 0
                    && st.locked_until.is_none_or(|u| now >= u)
                    && st
                        .grace
                        .get(h)
                        .is_some_and(|&t| t <= now && now - t < config.grace_seconds)
            })
        }) {
            Expected::simple(Want::Outcome(Outcome::Skip(SkipReason::Grace)), vec![])
        } else {
            expect_enrolled(&model, &before, rhost, now, fault_met, || {
                let a = match first.take() {
                    Some(a) => a,
                    None => decode_answer(&mut r, &devices, now, &mut last_code, &mut last_answer),
                };
                answers.push(Answer::Fixed(a.clone()));
                a
            })
        };

        let mut script = Script {
            answers,
            now,
            prompts: Vec::new(),
            infos: Vec::new(),
            errors: Vec::new(),
            enrolled: None,
        };
        if let Some(step) = fault {
            faults::inject(step, Fault::Fail);
        }
        let result =
            login::authenticate_from(&config, user, rhost, &mut script, &clock::FixedClock(now));
        faults::clear();

        let (after_bytes, _) = current_copy(&fx.dir, USER);
        let shown: Vec<String> = script
            .answers
            .iter()
            .map(|a| match a {
                Answer::Fixed(Some(b)) if b.len() > 100 => format!("{} bytes", b.len()),
                Answer::Fixed(Some(b)) => format!("{:?}", String::from_utf8_lossy(b)),
                Answer::Fixed(None) => "conversation error".into(),
                other => format!("{other:?}"),
            })
            .collect();
        let context = format!(
            "login {login}: user {user:?}, rhost {rhost:?}, now {now}, answers {shown:?}, \
             fault {fault:?}\nconfig {config:?}\ndevices {devices:?}, backup codes {backup_count}\n\
             state before: {:?}\nstate after: {:?}\nresult {result:?}\nexpected {expected:?}\n\
             prompts {:?}\ninfos {:?}\nerrors {:?}",
            before_bytes.as_deref().map(String::from_utf8_lossy),
            after_bytes.as_deref().map(String::from_utf8_lossy),
            script.prompts,
            script.infos,
            script.errors,
        );

        if trace() {
            eprintln!(
                "login {login}: {user:?} from {rhost:?} at {now}, answers {shown:?}, fault {fault:?}: {result:?}"
            );
        }

        // Invariants that hold whatever the model says.
        assert_no_stray_files(&fx.dir, &context);
        if let Some(bytes) = &after_bytes {
            let parsed = State::parse(bytes);
            assert!(
                parsed.is_ok() || before.is_none(),
                "the state file no longer parses\n{context}"
            );
            if let Ok(state) = parsed {
                let mut used = state.used_backup_codes.clone();
                used.sort_unstable();
                used.dedup();
                assert_eq!(
                    used.len(),
                    state.used_backup_codes.len(),
                    "a backup code is recorded as used twice\n{context}"
                );
                for (label, step) in before.iter().flat_map(|b| &b.last_accepted_step) {
                    assert!(
                        state.last_accepted_step.get(label) >= Some(step),
                        "the last accepted step went back\n{context}"
                    );
                }
            }
        }
        if fault_met.is_some() {
            assert!(
                !matches!(result, Ok(Outcome::Allow(_))),
                "a login succeeded although its state could not be stored\n{context}"
            );
        }

        // The model.
        let unchanged = after_bytes == before_bytes;
        let on_disk = after_bytes.as_deref().map(State::parse);
        match &expected.disk {
            Disk::Unchanged => assert!(unchanged, "the state changed\n{context}"),
            Disk::Is(want) => assert!(
                matches!(&on_disk, Some(Ok(s)) if s == want),
                "wrong state stored (model: {want:?})\n{context}"
            ),
            // Once the new copy is whole it is the newer one, and read.
            Disk::FailedWrite(Step::FsyncFile | Step::Rename | Step::FsyncDir, want) => assert!(
                matches!(&on_disk, Some(Ok(s)) if s == want),
                "after a failed sync or swap the new state should be read\n{context}"
            ),
            // Half the bytes written over the older copy: it fails its
            // checksum and the state is unchanged, unless the other half
            // was already the same (the copy then is the new state, whole).
            Disk::FailedWrite(Step::Write, want) => assert!(
                unchanged || matches!(&on_disk, Some(Ok(s)) if s == want),
                "a failed write left neither the old nor the new state\n{context}"
            ),
            Disk::FailedWrite(..) => {
                assert!(unchanged, "a failed write changed the state\n{context}")
            }
        }
        let (mut want_infos, want_errors) = (expected.infos, expected.errors);
        match (&expected.result, &result) {
            (Want::Conversation, Err(AuthError::Conversation))
            | (Want::Record, Err(AuthError::Record { .. }))
            | (Want::Store, Err(AuthError::Store(_))) => {}
            (
                Want::Outcome(Outcome::Deny(DenyReason::BadUsername(_))),
                Ok(Outcome::Deny(DenyReason::BadUsername(_))),
            ) => {}
            (Want::Outcome(want), Ok(got)) if want == got => {}
            (Want::Enroll, _) => {
                want_infos =
                    check_enrollment(&fx.dir, &config, &script, &result, fault, now, &context);
            }
            _ => panic!("wrong result\n{context}"),
        }
        let want_prompts: Vec<String> = expected.prompts.iter().map(|p| p.to_string()).collect();
        assert_eq!(script.prompts, want_prompts, "wrong prompts\n{context}");
        assert_eq!(
            (script.infos.len(), script.errors.len()),
            (want_infos, want_errors),
            "wrong messages\n{context}"
        );
        for name in [".secret", ".state", ".lock"] {
            let _ = fs::remove_file(fx.dir.join(format!("{NEWCOMER}{name}")));
        }
    }
}

/// Checks an enrollment at login against the key the module showed: the
/// right code (inside the window) enrolls with exactly that key and step,
/// anything else stores nothing. Returns the number of info messages due.
fn check_enrollment(
    dir: &Path,
    config: &Config,
    script: &Script,
    result: &Result<Outcome, AuthError>,
    fault: Option<Step>,
    now: u64,
    context: &str,
) -> usize {
    let shown = script
        .infos
        .first()
        .and_then(|m| m.split_once(KEY_LINE))
        .and_then(|(_, rest)| rest.lines().next())
        .and_then(base32_decode)
        .unwrap_or_else(|| panic!("no key shown before the enrollment prompt\n{context}"));
    let typed = match script.answers.first() {
        Some(Answer::Fixed(Some(raw))) => digits_of(raw),
        Some(Answer::FromShownKey { .. }) => script
            .enrolled
            .as_ref()
            .map(|(_, step)| hotp(&shown, config.totp.algorithm, config.totp.digits, *step)),
        _ => None,
    };
    let p = config.totp;
    let ours = now / u64::from(p.period);
    let w = u64::from(config.window);
    let step = typed
        .filter(|t| t.len() == usize::from(p.digits))
        .and_then(|t| {
            (ours.saturating_sub(w)..=ours.saturating_add(w))
                .find(|&s| hotp(&shown, p.algorithm, p.digits, s) == t)
        });
    let secret_file = read_opt(&dir.join(format!("{NEWCOMER}.secret")));
    match (step, fault, result) {
        (Some(step), None, Ok(Outcome::Allow(Method::Enrolled))) => {
            let record = secret_file
                .as_deref()
                .map(SecretRecord::parse)
                .unwrap_or_else(|| panic!("enrolled but no secret record\n{context}"))
                .unwrap_or_else(|e| panic!("enrolled with a bad record: {e}\n{context}"));
            assert_eq!(record.devices.len(), 1, "{context}");
            assert_eq!(record.devices[0].secret.as_bytes(), &shown[..], "{context}");
            assert_eq!(record.devices[0].params, p, "{context}");
            assert_eq!(
                record.backup.hashes.len(),
                config.backup_codes as usize,
                "{context}"
            );
            let state = read_opt(&dir.join(format!("{NEWCOMER}.state")))
                .as_deref()
                .map(State::parse);
            assert!(
                matches!(&state, Some(Ok(s)) if s.last_accepted_step.get(DEFAULT_DEVICE) == Some(&step)),
                "enrolled without recording the step {step}\n{context}"
            );
            2
        }
        (Some(_), Some(_), Err(AuthError::Store(_)))
        | (None, _, Ok(Outcome::Deny(DenyReason::EnrollmentNotConfirmed))) => {
            assert!(
                secret_file.is_none(),
                "a failed enrollment stored a secret\n{context}"
            );
            1
        }
        _ => panic!("wrong enrollment result (matching step {step:?})\n{context}"),
    }
}

fuzz_target!(|data: &[u8]| run(data));
