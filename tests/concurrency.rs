//! Parallel logins: failures are counted exactly, a code is accepted once,
//! many users do not disturb each other. In-process threads (each login
//! opens its own lock fd, so flock excludes them as it does processes),
//! separate processes, and real pamtester processes in mount namespaces.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::VecDeque;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Barrier};

use common::*;
use pam_twofactor::admin::{Admin, EnrollOptions};
use pam_twofactor::config::Config;
use pam_twofactor::host::clock::FixedClock;
use pam_twofactor::login::{self, ConvError, Conversation, Method, Outcome};
use pam_twofactor::records::State;
use zeroize::Zeroizing;

const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// A scripted conversation: answers each code prompt from a list, in
/// order. These logins show nothing (no lock, no backup code), so a message,
/// a prompt other than the code prompt or one more prompt than scripted
/// panics; on drop, every answer must have been asked for.
struct Answers(VecDeque<String>);

impl Conversation for Answers {
    fn ask_code(&mut self, prompt: &str) -> Result<Zeroizing<Vec<u8>>, ConvError> {
        assert_eq!(prompt, login::PROMPT, "unexpected prompt");
        let answer = self
            .0
            .pop_front()
            .unwrap_or_else(|| panic!("unexpected prompt {prompt:?}: no answer left"));
        Ok(Zeroizing::new(answer.into_bytes()))
    }
    fn show_info(&mut self, message: &str) {
        panic!("unexpected info message {message:?}");
    }
    fn show_error(&mut self, message: &str) {
        panic!("unexpected error message {message:?}");
    }
}

impl Drop for Answers {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert!(self.0.is_empty(), "answers never asked for: {:?}", self.0);
        }
    }
}

fn login(config: &Config, user: &str, answer: &str, now: u64) -> Outcome {
    let mut conv = Answers(VecDeque::from([answer.to_string()]));
    login::authenticate(config, user, &mut conv, &FixedClock(now)).unwrap()
}

/// A sandbox whose config allows many failures and attempts, with `daemon` enrolled.
fn setup(name: &str) -> (Sandbox, Config) {
    let sb = Sandbox::new(name);
    sb.write_config("[lockout]\nmax_failures = 1000\n[rate_limit]\nmax_attempts = 10000\n");
    let admin = Admin::open(Some(sb.config_path())).unwrap();
    let opts = EnrollOptions {
        secret: Some(SECRET.into()),
        ..Default::default()
    };
    admin.enroll("daemon", &opts, T0_UNIX).unwrap();
    let config = admin.config;
    (sb, config)
}

fn state(config: &Config, user: &str) -> State {
    let text = std::fs::read(config.state_dir.join(format!("{user}.state"))).unwrap();
    State::parse(&text).unwrap()
}

/// 32 threads with wrong codes raise the failure count by exactly 32, and
/// the state file stays valid.
#[test]
fn parallel_wrong_codes_are_all_counted() {
    let (_sb, config) = setup("parallel-wrong");
    let config = Arc::new(config);
    let n = 32;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (config, barrier) = (Arc::clone(&config), Arc::clone(&barrier));
            std::thread::spawn(move || {
                barrier.wait();
                login(&config, "daemon", "000000x", T0_UNIX)
            })
        })
        .collect();
    for h in handles {
        assert!(matches!(h.join().unwrap(), Outcome::Deny(_)));
    }
    let st = state(&config, "daemon");
    assert_eq!(st.failures, 32);
    assert_eq!(st.rate_window_attempts, 32);
}

/// The same valid code sent by 32 parallel logins succeeds exactly once.
#[test]
fn same_code_in_parallel_succeeds_exactly_once() {
    let (_sb, config) = setup("parallel-same");
    let config = Arc::new(config);
    let code = oathtool_code(SECRET, "SHA1", 6, 30, T0);
    let n = 32;
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (config, barrier, code) = (Arc::clone(&config), Arc::clone(&barrier), code.clone());
            std::thread::spawn(move || {
                barrier.wait();
                login(&config, "daemon", &code, T0_UNIX)
            })
        })
        .collect();
    let allowed = handles
        .into_iter()
        .map(|h| h.join().unwrap())
        .filter(|o| matches!(o, Outcome::Allow(Method::Totp { .. })))
        .count();
    assert_eq!(allowed, 1);
    assert_eq!(state(&config, "daemon").failures, 31);
}

/// 64 users logging in at once all succeed, each with their own state.
#[test]
fn many_users_in_parallel_all_succeed() {
    let (_sb, config) = setup("parallel-users");
    // Records for 64 users, written the way the CLI writes them, but
    // without the passwd lookup (the module never consults passwd).
    let template = std::fs::read(config.state_dir.join("daemon.secret")).unwrap();
    for i in 0..64 {
        let path = config.state_dir.join(format!("user{i}.secret"));
        std::fs::write(&path, &template).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }
    let config = Arc::new(config);
    let code = oathtool_code(SECRET, "SHA1", 6, 30, T0);
    let barrier = Arc::new(Barrier::new(64));
    let handles: Vec<_> = (0..64)
        .map(|i| {
            let (config, barrier, code) = (Arc::clone(&config), Arc::clone(&barrier), code.clone());
            std::thread::spawn(move || {
                barrier.wait();
                login(&config, &format!("user{i}"), &code, T0_UNIX)
            })
        })
        .collect();
    for h in handles {
        assert!(matches!(h.join().unwrap(), Outcome::Allow(_)));
    }
    for i in 0..64 {
        let st = state(&config, &format!("user{i}"));
        assert_eq!(st.last_accepted_step["default"], T0_UNIX / 30);
    }
}

/// Not a test of its own: the child half of
/// `parallel_processes_count_every_failure`, which runs it with `--ignored
/// --exact`; one wrong login.
#[test]
#[ignore = "helper of parallel_processes_count_every_failure"]
fn process_child() {
    let Ok(config_path) = std::env::var("TF_CHILD_CONFIG") else {
        panic!("a helper process: parallel_processes_count_every_failure runs it");
    };
    let admin = Admin::open(Some(Path::new(&config_path))).unwrap();
    let outcome = login(&admin.config, "daemon", "000000x", T0_UNIX);
    assert!(matches!(outcome, Outcome::Deny(_)), "{outcome:?}");
}

/// 16 separate processes with wrong codes raise the count by exactly 16.
#[test]
fn parallel_processes_count_every_failure() {
    let (sb, config) = setup("parallel-procs");
    let children: Vec<_> = (0..16)
        .map(|_| {
            Command::new(std::env::current_exe().unwrap())
                .args(["--ignored", "--exact", "process_child", "--test-threads=1"])
                .env("TF_CHILD_CONFIG", sb.config_path())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // libtest says `running 0 tests` (and succeeds) if no helper ran.
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("test process_child ... ok"), "{stdout}");
    }
    assert_eq!(state(&config, "daemon").failures, 16);
}

/// Real pamtester processes, each in its own mount namespace with the test
/// service bound over /etc/pam.d (pam_wrapper is not safe in parallel):
/// the same code from 12 logins at once succeeds exactly once. Root only.
#[test]
fn parallel_pamtester_logins_accept_a_code_once() {
    if !root_or_skip(
        "parallel_pamtester_logins_accept_a_code_once",
        "pamtester in private mount namespaces",
        &[Needs::MountNamespace],
    ) {
        return;
    }
    require_tools();
    let (sb, config) = setup("parallel-pamtester");
    let pamd = namespaced_pamd(sb.dir(), "tfpar", sb.config_path());
    let code = oathtool_code(SECRET, "SHA1", 6, 30, T0);
    let children: Vec<_> = (0..12)
        .map(|_| spawn_namespaced_pamtester(&pamd, "tfpar", "daemon", &code, Some(T0)))
        .collect();
    assert_eq!(namespaced_successes(children), 1);
    assert_eq!(state(&config, "daemon").failures, 11);
}
