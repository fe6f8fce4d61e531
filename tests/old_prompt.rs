//! A prompt left open (su has no prompt timeout) through the real module:
//! every decision is made at the time of the answer and against the
//! records as they are then (issue 14, points 1, 2 and 4). pamtester runs
//! live ([`common::live::Live`]); its libfaketime clock moves while the
//! prompt is open, and the admin acts meanwhile with the real `twofactor`.
//! Every expected code comes from `oathtool`.

// Test helpers may panic: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;

use common::live::{Live, Stream};
use common::*;
use pam_twofactor::store::{Dir, TrustedDir};

/// The RFC 6238 SHA1 seed "12345678901234567890" in base32.
const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const USER: &str = "daemon";
const SVC: &str = "svc";
const PROMPT: &str = "Verification code: ";
const CHANGED: &str = "Your second factor was changed while this prompt was open. Log in again.";

/// A sandbox with `extra` config and the module alone in `svc`.
fn sandbox(name: &str, extra: &str) -> Sandbox {
    require_tools();
    let sb = Sandbox::new(name);
    sb.write_config(extra);
    sb.write_service(SVC, &sb.module_line(""));
    sb
}

/// Enrolls USER with SECRET; returns the backup codes.
fn enroll(sb: &Sandbox) -> Vec<String> {
    let json = cli_secret(
        sb,
        &["enroll", USER, "--secret-file", "-", "--json"],
        SECRET,
    )
    .expect(0)
    .json();
    json["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

fn code(secret: &str, at: &str) -> String {
    oathtool_code(secret, "SHA1", 6, 30, at)
}

/// USER's state file as TOML.
fn state(sb: &Sandbox) -> toml::Table {
    let text = fs::read_to_string(sb.state_dir().join(format!("{USER}.state"))).unwrap();
    text.parse().unwrap()
}

fn integer(table: &toml::Table, key: &str) -> Option<i64> {
    table.get(key).and_then(toml::Value::as_integer)
}

fn assert_denied(outcome: &PamOutcome, error: &str) {
    assert!(!outcome.succeeded(), "expected denial\n{outcome}");
    assert_eq!(outcome.pam_error(), Some(error), "{outcome}");
}

/// Point 1: the failure that locks is typed into a prompt opened ten
/// minutes earlier (longer than lock_seconds). The lock runs from the
/// answer, so a right code a second later is refused; before the fix the
/// lock was written already over and that code logged in.
#[test]
fn a_lock_runs_from_the_answer_of_an_old_prompt() {
    let sb = sandbox(
        "old-prompt-lock",
        "[lockout]\nmax_failures = 3\nlock_seconds = 60\n",
    );
    enroll(&sb);
    for _ in 0..2 {
        assert_denied(&sb.pamtester(SVC, USER, &["000000"], T0), pam_err::AUTH_ERR);
    }
    let mut live = Live::start_timed(&sb, SVC, USER, T0);
    live.wait_for(Stream::Err, PROMPT, 1);
    let answered = at_offset(T0, 600);
    live.set_time(&answered);
    live.answer("000000");
    let out = live.finish();
    assert_denied(&out, pam_err::AUTH_ERR);
    assert!(
        out.stderr.contains(
            "Too many failed attempts: your account is locked until 2030-06-15 12:11:00 UTC."
        ),
        "{out}"
    );
    let st = state(&sb);
    assert_eq!(
        integer(&st, "locked_until"),
        Some(T0_UNIX as i64 + 660),
        "{st}"
    );
    assert_eq!(
        integer(&st, "rate_window_start"),
        Some(T0_UNIX as i64 + 600),
        "{st}"
    );

    let next = at_offset(T0, 601);
    let out = sb.pamtester(SVC, USER, &[&code(SECRET, &next)], &next);
    assert_denied(&out, pam_err::AUTH_ERR);
    assert!(
        out.stderr.contains(
            "Your account is locked after too many failed attempts until 2030-06-15 12:11:00 UTC."
        ),
        "{out}"
    );
}

/// Point 1: enrollment at login checks the code at the time it is typed:
/// the QR code scanned two minutes after it was shown (4 steps, beyond
/// the window) still enrolls.
#[test]
fn enrollment_at_login_checks_the_code_when_it_is_typed() {
    let sb = sandbox("old-prompt-enroll", "unenrolled = \"enroll\"\n");
    let mut live = Live::start_timed(&sb, SVC, USER, T0);
    let key = live
        .wait_line("Or enter this key by hand: ")
        .replace(' ', "");
    live.wait_for(Stream::Err, PROMPT, 1);
    let typed = at_offset(T0, 120);
    live.set_time(&typed);
    live.answer(&code(&key, &typed));
    let out = live.finish();
    assert!(out.succeeded(), "{out}");
    let st = state(&sb);
    let steps = st["last_accepted_step"].as_table().unwrap();
    assert_eq!(
        steps["default"].as_integer(),
        Some((T0_UNIX as i64 + 120) / 30),
        "{st}"
    );
}

/// Point 2: `twofactor backup-codes` while a prompt is open: an old code
/// typed there is refused ("old codes stop working at once"), nothing is
/// counted or consumed, and the user is told why.
#[test]
fn a_backup_code_revoked_while_the_prompt_is_open_is_refused() {
    let sb = sandbox("old-prompt-revoked", "");
    let old_codes = enroll(&sb);
    let mut live = Live::start(&sb, SVC, USER, T0);
    live.wait_for(Stream::Err, PROMPT, 1);
    cli(&sb, &["backup-codes", USER]).expect(0);
    live.answer(&old_codes[0]);
    let out = live.finish();
    assert_denied(&out, pam_err::AUTH_ERR);
    assert!(out.stderr.contains(CHANGED), "{out}");
    let st = state(&sb);
    assert_eq!(integer(&st, "failures"), Some(0), "{st}");
    assert!(
        st.get("used_backup_codes")
            .and_then(toml::Value::as_array)
            .is_none_or(|a| a.is_empty()),
        "{st}"
    );
}

/// Point 2: `twofactor enroll --force` (a lost phone) while a prompt is
/// open: the old app's current code typed there is refused.
#[test]
fn a_secret_replaced_while_the_prompt_is_open_is_refused() {
    let sb = sandbox("old-prompt-replaced", "");
    enroll(&sb);
    let mut live = Live::start(&sb, SVC, USER, T0);
    live.wait_for(Stream::Err, PROMPT, 1);
    cli(&sb, &["enroll", USER, "--force"]).expect(0);
    live.answer(&code(SECRET, T0));
    let out = live.finish();
    assert_denied(&out, pam_err::AUTH_ERR);
    assert!(out.stderr.contains(CHANGED), "{out}");
    let st = state(&sb);
    assert!(
        st.get("last_accepted_step")
            .and_then(toml::Value::as_table)
            .is_none_or(|t| t.is_empty()),
        "{st}"
    );
}

/// Point 4: a locked user's backup-length answer is refused before any of
/// the backup-code work: here every argon2 slot is held (by this test), so
/// hashing the answer would time out with an error instead.
#[test]
fn a_locked_users_backup_answer_is_refused_before_the_backup_code_work() {
    let sb = sandbox("locked-backup", "[lockout]\nmax_failures = 1\n");
    let codes = enroll(&sb);
    assert_denied(&sb.pamtester(SVC, USER, &["000000"], T0), pam_err::AUTH_ERR);
    let dir = TrustedDir::open(sb.state_dir(), Dir::Private).unwrap();
    let _held: Vec<_> = (0..4)
        .map(|n| dir.lock(&format!(".kdf-slot-{n}.lock")).unwrap())
        .collect();

    let later = at_offset(T0, 5);
    let out = sb.pamtester(SVC, USER, &[&codes[0]], &later);
    assert_denied(&out, pam_err::AUTH_ERR);
    assert!(
        out.stderr
            .contains("Your account is locked after too many failed attempts until"),
        "{out}"
    );
    // Once the lock is over, the same answer needs an argon2 slot: with
    // none free, the login gives up after its bounded wait.
    let over = at_offset(T0, 1800);
    let out = sb.pamtester(SVC, USER, &[&codes[0]], &over);
    assert_denied(&out, pam_err::AUTHINFO_UNAVAIL);
}
