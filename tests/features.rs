//! The features of issue 6 through the real module (pam_wrapper + pamtester)
//! and the real `twofactor` CLI: enrollment at first login, several devices,
//! exemptions, grace, clock drift, codes by message and imports. Time is
//! pinned with libfaketime; every expected TOTP code comes from `oathtool`.
//! Users are base-passwd accounts, enrolled in per-test sandboxes only.
//!
//! Conversations whose answer depends on what the module shows first (the
//! key at enrollment, the code sent by message) run pamtester live
//! ([`common::live::Live`]):
//! stdout unbuffered through coreutils' libstdbuf, stdin written one answer
//! at a time after the prompt was seen on stderr.

// Test helpers may panic: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use common::live::{Live, Stream};
use common::*;
use serde_json::{Value, json};

/// The RFC 6238 SHA1 seed "12345678901234567890" in base32.
const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
/// A second device's secret ("Hello!\xde\xad\xbe\xef" twice).
const SECRET_B: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const PROMPT: &str = "Verification code: ";
const NEXT_PROMPT: &str = "Next verification code: ";
const SENT_PROMPT: &str = "Code from the message: ";
/// Our module alone: PAM_IGNORE shows as "Permission denied".
const SVC: &str = "svc";
/// Our module then `pam_permit`: PAM_IGNORE lets the login through.
const STACK: &str = "stack";
const TARGET: &str = "+15555550100";
/// What the prompt shows after sending a code to TARGET: the target masked
/// (`delivery::mask_target`, written out here), since anyone with the
/// password sees it.
const SENT_INFO: &str = "A code was sent to +1555***0100.";

// ---------------------------------------------------------------- helpers

/// A sandbox with `extra` config and the services `svc` and `stack`.
fn sandbox(name: &str, extra: &str) -> Sandbox {
    require_tools();
    let sb = Sandbox::new(name);
    sb.write_config(extra);
    sb.write_service(SVC, &sb.module_line(""));
    sb.write_service(
        STACK,
        &format!("{}\nauth required pam_permit.so", sb.module_line("")),
    );
    sb
}

/// `twofactor enroll USER --secret-file - --json`, SECRET on stdin (must
/// succeed); the JSON.
fn enroll(sb: &Sandbox, user: &str, secret: &str) -> Value {
    cli_secret(
        sb,
        &["enroll", user, "--secret-file", "-", "--json"],
        secret,
    )
    .expect(0)
    .json()
}

/// `twofactor status USER --json`.
fn status(sb: &Sandbox, user: &str) -> Value {
    cli(sb, &["status", user, "--json"]).expect(0).json()
}

/// The SHA1, 6-digit, 30 s code of `secret` at `at`.
fn code(secret: &str, at: &str) -> String {
    oathtool_code(secret, "SHA1", 6, 30, at)
}

/// A 6-digit code that is none of `taken`.
fn other_code(taken: &[&str]) -> String {
    (0..10)
        .map(|d| d.to_string().repeat(6))
        .find(|c| !taken.contains(&c.as_str()))
        .unwrap()
}

/// The names of `user`'s files in the state directory, sorted.
fn user_files(sb: &Sandbox, user: &str) -> Vec<String> {
    let prefix = format!("{user}.");
    let mut names: Vec<String> = fs::read_dir(sb.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    names.sort();
    names
}

fn state_text(sb: &Sandbox, user: &str) -> String {
    fs::read_to_string(sb.state_dir().join(format!("{user}.state"))).unwrap()
}

fn assert_denied(outcome: &PamOutcome, error: &str) {
    assert!(!outcome.succeeded(), "expected denial\n{outcome}");
    assert_eq!(outcome.pam_error(), Some(error), "{outcome}");
}

/// Asserts the module was skipped without a prompt: PAM_IGNORE lets the
/// `stack` service through and is "Permission denied" alone in `svc`.
fn assert_skipped(sb: &Sandbox, user: &str, at: &str, items: &[(&str, &str)]) {
    let stacked = sb.pamtester_items(STACK, user, &[], at, items);
    assert!(stacked.succeeded(), "{items:?}: {stacked}");
    assert_eq!(stacked.prompt_count(PROMPT), 0, "{stacked}");
    assert!(stacked.info_lines().is_empty(), "{stacked}");
    let alone = sb.pamtester_items(SVC, user, &[], at, items);
    assert_denied(&alone, pam_err::PERM_DENIED);
    assert_eq!(alone.prompt_count(PROMPT), 0, "{alone}");
}

/// Asserts the module asked for the code (EOF answers: a conversation
/// error, nothing counted).
fn assert_prompted(sb: &Sandbox, user: &str, at: &str, items: &[(&str, &str)]) {
    let out = sb.pamtester_items(STACK, user, &[], at, items);
    assert_denied(&out, pam_err::CONV_ERR);
    assert_eq!(out.prompt_count(PROMPT), 1, "{items:?}: {out}");
}

// ------------------------------------------------ enrollment at first login

const ENROLL_CONFIG: &str = "unenrolled = \"enroll\"\nissuer = \"Example\"\n";
const SET_UP: &str = "Two-factor authentication is set up. Your backup codes (each works once; keep them safe, they are not shown again):";

/// Whether `line` is `  dddd-dddd-dddd-dddd`.
fn is_backup_code_line(line: &str) -> bool {
    let Some(code) = line.strip_prefix("  ") else {
        return false;
    };
    code.len() == 19
        && code.char_indices().all(|(i, c)| {
            if i % 5 == 4 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// A first login under `unenrolled = "enroll"` shows the key, takes a code
/// made from it, stores the enrollment, and shows 10 backup codes once; one
/// of them logs in later and the enrollment code cannot be replayed.
#[test]
fn first_login_enrolls_with_a_code_from_the_shown_key() {
    let sb = sandbox("enroll-ok", ENROLL_CONFIG);
    let mut live = Live::start(&sb, SVC, "daemon", T0);
    let key = live
        .wait_line("Or enter this key by hand: ")
        .replace(' ', "");
    assert_eq!(key.len(), 32, "a 160-bit key in base32: {key:?}");
    live.wait_for(Stream::Err, PROMPT, 1);
    assert!(
        user_files(&sb, "daemon").is_empty(),
        "stored before the code"
    );
    live.answer(&code(&key, T0));
    let out = live.finish();
    assert!(out.succeeded(), "{out}");
    assert_eq!(out.prompt_count(PROMPT), 1, "{out}");

    let info = out.info_lines();
    assert_eq!(
        info[0], "Set up two-factor authentication: scan this QR code",
        "{out}"
    );
    // The login path shows no URI (it would not fit 80x24): issue 17.
    assert!(!out.stdout.contains("otpauth"), "{out}");
    let key_at = info
        .iter()
        .position(|l| l.starts_with("Or enter this key by hand: "))
        .unwrap();
    assert!(key_at > 10, "no QR code drawn\n{out}");
    assert!(
        info[1..key_at]
            .iter()
            .all(|l| l.chars().any(|c| "█▀▄".contains(c))),
        "{out}"
    );
    // The backup codes come last, after the set-up line, exactly 10 of them.
    let set_up = info.iter().position(|l| *l == SET_UP).unwrap();
    let codes: Vec<&str> = info[set_up + 1..].to_vec();
    assert_eq!(codes.len(), 10, "{out}");
    assert!(codes.iter().all(|l| is_backup_code_line(l)), "{out}");
    assert!(set_up > key_at);

    assert_eq!(
        user_files(&sb, "daemon"),
        ["daemon.lock", "daemon.secret", "daemon.state"]
    );
    let st = status(&sb, "daemon");
    assert_eq!(st["enrolled"], json!(true), "{st}");
    assert_eq!(st["backup_codes_remaining"], json!(10), "{st}");
    assert_eq!(
        st["devices"],
        json!([{"label": "default", "created": "2030-06-15T12:00:00Z", "algorithm": "SHA1",
                "digits": 6, "period": 30, "drift_seconds": 0}]),
        "{st}"
    );

    // The enrollment code was used: replaying it is refused.
    let replay = sb.pamtester(SVC, "daemon", &[&code(&key, T0)], &at_offset(T0, 10));
    assert_denied(&replay, pam_err::AUTH_ERR);
    // A backup code shown at enrollment works; the list is not shown again.
    let later = at_offset(T0, 30);
    let backup = sb.pamtester(SVC, "daemon", &[codes[6].trim()], &later);
    assert!(backup.succeeded(), "{backup}");
    assert_eq!(
        backup.info_lines(),
        ["Backup code accepted. 9 backup codes left."]
    );
    let next = at_offset(T0, 60);
    let totp = sb.pamtester(SVC, "daemon", &[&code(&key, &next)], &next);
    assert!(totp.succeeded(), "{totp}");
    assert!(totp.info_lines().is_empty(), "{totp}");
}

/// The enrollment text names the parameters and the key; ending the
/// conversation there stores nothing.
#[test]
fn enrollment_text_is_complete_and_eof_stores_nothing() {
    let sb = sandbox("enroll-text", ENROLL_CONFIG);
    let out = sb.pamtester(SVC, "daemon", &[], T0);
    assert_denied(&out, pam_err::CONV_ERR);
    assert_eq!(out.prompt_count(PROMPT), 1);
    let info = out.info_lines();
    let key_line = info
        .iter()
        .find(|l| l.starts_with("Or enter this key by hand: "))
        .unwrap();
    let grouped = key_line.trim_start_matches("Or enter this key by hand: ");
    assert_eq!(grouped.split(' ').count(), 8, "{key_line}");
    assert!(grouped.split(' ').all(|g| g.len() == 4), "{key_line}");
    let tail: Vec<&str> = info[info.len() - 2..].to_vec();
    assert_eq!(
        tail,
        [
            *key_line,
            "(SHA1, 6 digits, every 30 s) Then enter the code the app shows.",
        ],
        "{out}"
    );
    assert!(user_files(&sb, "daemon").is_empty());
}

/// A wrong code at enrollment denies and leaves no file for the user.
#[test]
fn wrong_code_at_enrollment_stores_nothing() {
    let sb = sandbox("enroll-wrong", ENROLL_CONFIG);
    let mut live = Live::start(&sb, SVC, "daemon", T0);
    let key = live
        .wait_line("Or enter this key by hand: ")
        .replace(' ', "");
    live.wait_for(Stream::Err, PROMPT, 1);
    let near: Vec<String> = [-30, 0, 30]
        .iter()
        .map(|s| code(&key, &at_offset(T0, *s)))
        .collect();
    let near: Vec<&str> = near.iter().map(String::as_str).collect();
    live.answer(&other_code(&near));
    let out = live.finish();
    assert_denied(&out, pam_err::AUTH_ERR);
    assert_eq!(out.prompt_count(PROMPT), 1);
    assert!(!out.stdout.contains(SET_UP), "{out}");
    assert!(user_files(&sb, "daemon").is_empty());
    assert_eq!(status(&sb, "daemon")["enrolled"], json!(false));
}

/// With `enroll_groups`, a user in none of them sees the same prompt, no QR
/// code, and is denied with nothing stored; a member is offered enrollment.
#[test]
fn enroll_groups_limits_who_may_enroll_at_login() {
    let sb = sandbox(
        "enroll-groups",
        &format!("{ENROLL_CONFIG}enroll_groups = [\"nogroup\", \"lp\"]\n"),
    );
    let out = sb.pamtester(SVC, "daemon", &["123456"], T0);
    assert_denied(&out, pam_err::AUTH_ERR);
    assert_eq!(out.prompt_count(PROMPT), 1);
    assert!(out.info_lines().is_empty(), "{out}");
    assert!(user_files(&sb, "daemon").is_empty());
    // lp is in group lp: offered the key (EOF then: nothing stored).
    let member = sb.pamtester(SVC, "lp", &[], T0);
    assert_denied(&member, pam_err::CONV_ERR);
    assert!(
        member
            .stdout
            .contains("Set up two-factor authentication: scan this QR code"),
        "{member}"
    );
    assert!(user_files(&sb, "lp").is_empty());
}

// ---------------------------------------------------------- several devices

/// Two devices both log in, with replay protection per device; removing
/// one stops its codes and keeps the other's.
#[test]
fn two_devices_log_in_and_a_removed_one_stops() {
    let sb = sandbox("devices", "");
    enroll(&sb, "daemon", SECRET);
    let added = cli_secret(
        &sb,
        &[
            "enroll",
            "daemon",
            "--add",
            "--label",
            "phone2",
            "--secret-file",
            "-",
            "--json",
        ],
        SECRET_B,
    )
    .expect(0)
    .json();
    assert_eq!(added["label"], json!("phone2"));
    assert_eq!(
        added["backup_codes"],
        json!([]),
        "--add keeps the backup codes"
    );

    let (a, b) = (code(SECRET, T0), code(SECRET_B, T0));
    assert_ne!(a, b);
    let first = sb.pamtester(SVC, "daemon", &[&a], T0);
    assert!(first.succeeded(), "{first}");
    let second = sb.pamtester(SVC, "daemon", &[&b], T0);
    assert!(second.succeeded(), "{second}");
    assert_denied(&sb.pamtester(SVC, "daemon", &[&a], T0), pam_err::AUTH_ERR);
    assert_denied(&sb.pamtester(SVC, "daemon", &[&b], T0), pam_err::AUTH_ERR);
    let st = state_text(&sb, "daemon");
    let step = T0_UNIX / 30;
    assert!(
        st.contains(&format!("default = {step}")) && st.contains(&format!("phone2 = {step}")),
        "{st}"
    );

    let devices = cli(&sb, &["devices", "daemon", "--json"]).expect(0).json();
    let labels: Vec<&str> = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["default", "phone2"], "{devices}");

    let removed = cli(&sb, &["remove-device", "daemon", "phone2"]).expect(0);
    assert_eq!(removed.stdout, "daemon: device phone2 removed\n");
    let t = at_offset(T0, 30);
    assert_denied(
        &sb.pamtester(SVC, "daemon", &[&code(SECRET_B, &t)], &t),
        pam_err::AUTH_ERR,
    );
    let out = sb.pamtester(SVC, "daemon", &[&code(SECRET, &t)], &t);
    assert!(out.succeeded(), "{out}");
    let devices = cli(&sb, &["devices", "daemon", "--json"]).expect(0).json();
    assert_eq!(devices["devices"].as_array().unwrap().len(), 1, "{devices}");
    assert_eq!(devices["devices"][0]["label"], json!("default"));
}

/// A label with a `.` is allowed (`--label work.phone`); the state its
/// first login writes must read back: written as a bare key it was a dotted
/// key (a table), and every later login of the user was refused.
#[test]
fn a_dotted_device_label_keeps_logging_in() {
    let sb = sandbox("dotted", "");
    enroll(&sb, "daemon", SECRET);
    cli_secret(
        &sb,
        &[
            "enroll",
            "daemon",
            "--add",
            "--label",
            "work.phone",
            "--secret-file",
            "-",
        ],
        SECRET_B,
    )
    .expect(0);
    let first = sb.pamtester(SVC, "daemon", &[&code(SECRET_B, T0)], T0);
    assert!(first.succeeded(), "{first}");
    let st = state_text(&sb, "daemon");
    assert!(
        st.contains(&format!("\n\"work.phone\" = {}\n", T0_UNIX / 30)),
        "{st}"
    );
    let t = at_offset(T0, 30);
    for secret in [SECRET, SECRET_B] {
        let out = sb.pamtester(SVC, "daemon", &[&code(secret, &t)], &t);
        assert!(out.succeeded(), "{out}");
    }
}

// --------------------------------------------------------------- exemptions

/// A member of an `[exempt] groups` group is not prompted (PAM_IGNORE), even
/// when enrolled; a non-member still is.
#[test]
fn exempt_group_member_is_not_prompted() {
    let sb = sandbox("exempt-group", "[exempt]\ngroups = [\"daemon\"]\n");
    enroll(&sb, "daemon", SECRET);
    enroll(&sb, "bin", SECRET);
    let before = state_text(&sb, "daemon");
    assert_skipped(&sb, "daemon", T0, &[]);
    assert_eq!(
        state_text(&sb, "daemon"),
        before,
        "an exemption writes nothing"
    );
    let out = sb.pamtester(SVC, "bin", &[&code(SECRET, T0)], T0);
    assert!(out.succeeded(), "{out}");
    assert_eq!(out.prompt_count(PROMPT), 1);
}

/// A PAM_RHOST inside `[exempt] networks` (IPv4 and IPv6) skips the code;
/// one outside is prompted.
#[test]
fn exempt_networks_skip_only_their_addresses() {
    let sb = sandbox(
        "exempt-net",
        "[exempt]\nnetworks = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n",
    );
    enroll(&sb, "daemon", SECRET);
    for host in ["10.1.2.3", "2001:db8::7"] {
        assert_skipped(&sb, "daemon", T0, &[("rhost", host)]);
    }
    for host in ["192.0.2.1", "11.0.0.1", "2001:db9::7"] {
        assert_prompted(&sb, "daemon", T0, &[("rhost", host)]);
    }
    let out = sb.pamtester_items(
        SVC,
        "daemon",
        &[&code(SECRET, T0)],
        T0,
        &[("rhost", "192.0.2.1")],
    );
    assert!(out.succeeded(), "{out}");
    assert_eq!(out.prompt_count(PROMPT), 1);
}

/// A PAM_RHOST that is a host name never matches a network, not even
/// 0.0.0.0/0; an address does.
#[test]
fn host_name_rhost_is_never_exempt() {
    let sb = sandbox("exempt-name", "[exempt]\nnetworks = [\"0.0.0.0/0\"]\n");
    enroll(&sb, "daemon", SECRET);
    assert_prompted(&sb, "daemon", T0, &[("rhost", "host.example.com")]);
    assert_skipped(&sb, "daemon", T0, &[("rhost", "198.51.100.1")]);
}

// -------------------------------------------------------------------- grace

const GRACE_CONFIG: &str = "[grace]\nseconds = 600\n";

/// Logs daemon in from `host` with the right code at `at`.
fn login_from(sb: &Sandbox, host: &str, at: &str) {
    let out = sb.pamtester_items(SVC, "daemon", &[&code(SECRET, at)], at, &[("rhost", host)]);
    assert!(out.succeeded(), "{out}");
    assert_eq!(out.prompt_count(PROMPT), 1);
}

/// After a success from a host, that host skips the code for exactly
/// `[grace] seconds`.
#[test]
fn grace_skips_the_same_host_for_its_duration() {
    let sb = sandbox("grace", GRACE_CONFIG);
    enroll(&sb, "daemon", SECRET);
    let host = [("rhost", "192.0.2.5")];
    login_from(&sb, "192.0.2.5", T0);
    assert!(
        state_text(&sb, "daemon").contains(&format!("\"192.0.2.5\" = {T0_UNIX}")),
        "{}",
        state_text(&sb, "daemon")
    );
    assert_skipped(&sb, "daemon", &at_offset(T0, 60), &host);
    assert_skipped(&sb, "daemon", &at_offset(T0, 599), &host);
    assert_prompted(&sb, "daemon", &at_offset(T0, 600), &host);
    assert_prompted(&sb, "daemon", &at_offset(T0, 700), &host);
}

/// Grace covers only the host that succeeded: another host and a login
/// without PAM_RHOST are prompted, and a success without PAM_RHOST opens
/// no grace.
#[test]
fn grace_does_not_cover_other_hosts_or_local_logins() {
    let sb = sandbox("grace-other", GRACE_CONFIG);
    enroll(&sb, "daemon", SECRET);
    login_from(&sb, "192.0.2.5", T0);
    let t = at_offset(T0, 60);
    assert_prompted(&sb, "daemon", &t, &[("rhost", "192.0.2.6")]);
    assert_prompted(&sb, "daemon", &t, &[]);
    let t = at_offset(T0, 90);
    let local = sb.pamtester(SVC, "daemon", &[&code(SECRET, &t)], &t);
    assert!(local.succeeded(), "{local}");
    assert_prompted(&sb, "daemon", &at_offset(T0, 100), &[]);
}

/// While the user is locked, grace does not apply: the host is prompted and
/// refused; after `unlock` the grace period is back.
#[test]
fn grace_does_not_apply_while_locked() {
    let sb = sandbox(
        "grace-locked",
        &format!("{GRACE_CONFIG}[lockout]\nmax_failures = 2\n"),
    );
    enroll(&sb, "daemon", SECRET);
    login_from(&sb, "192.0.2.5", T0);
    let other = [("rhost", "192.0.2.6")];
    let wrong = other_code(&[&code(SECRET, &at_offset(T0, 30))]);
    let first = sb.pamtester_items(SVC, "daemon", &[&wrong], &at_offset(T0, 30), &other);
    assert_denied(&first, pam_err::AUTH_ERR);
    let second = sb.pamtester_items(SVC, "daemon", &[&wrong], &at_offset(T0, 31), &other);
    assert_denied(&second, pam_err::AUTH_ERR);
    assert!(
        second.stderr.contains(
            "Too many failed attempts: your account is locked until 2030-06-15 12:30:31 UTC."
        ),
        "{second}"
    );
    let t = at_offset(T0, 60);
    let out = sb.pamtester_items(
        STACK,
        "daemon",
        &[&code(SECRET, &t)],
        &t,
        &[("rhost", "192.0.2.5")],
    );
    assert_denied(&out, pam_err::AUTH_ERR);
    assert_eq!(out.prompt_count(PROMPT), 1, "{out}");
    assert!(
        out.stderr.contains(
            "Your account is locked after too many failed attempts until 2030-06-15 12:30:31 UTC."
        ),
        "{out}"
    );
    cli(&sb, &["unlock", "daemon"]).expect(0);
    assert_skipped(&sb, "daemon", &at_offset(T0, 90), &[("rhost", "192.0.2.5")]);
}

// -------------------------------------------------------------------- drift

const DRIFT_CONFIG: &str = "[totp]\nmax_drift_steps = 10\n";
const DRIFT_INFO: &str =
    "The clock of your device seems to be off. Wait for the next code and enter it.";

/// A device 5 steps ahead: its code, then its next code, log in; the
/// offset (150 s) is stored and later codes from it need one prompt.
#[test]
fn drift_is_learned_when_the_next_code_confirms_it() {
    let sb = sandbox("drift", DRIFT_CONFIG);
    enroll(&sb, "daemon", SECRET);
    let ahead = |s: i64| code(SECRET, &at_offset(T0, s));
    let out = sb.pamtester(SVC, "daemon", &[&ahead(150), &ahead(180)], T0);
    assert!(out.succeeded(), "{out}");
    assert_eq!(out.prompt_count(PROMPT), 1, "{out}");
    assert_eq!(out.prompt_count(NEXT_PROMPT), 1, "{out}");
    assert_eq!(out.info_lines(), [DRIFT_INFO], "{out}");
    let st = status(&sb, "daemon");
    assert_eq!(st["devices"][0]["drift_seconds"], json!(150), "{st}");
    assert_eq!(st["failed_attempts"], json!(0), "{st}");

    let t = at_offset(T0, 600);
    let later = sb.pamtester(SVC, "daemon", &[&ahead(750)], &t);
    assert!(later.succeeded(), "{later}");
    assert_eq!(later.prompt_count(PROMPT), 1);
    assert_eq!(later.prompt_count(NEXT_PROMPT), 0, "{later}");
    assert!(later.info_lines().is_empty(), "{later}");
}

/// A drifted code followed by a wrong one is refused; no offset is stored
/// and two failures are counted (the suspicion and the wrong second code).
#[test]
fn drift_not_confirmed_is_refused_and_not_stored() {
    let sb = sandbox("drift-refused", DRIFT_CONFIG);
    enroll(&sb, "daemon", SECRET);
    let first = code(SECRET, &at_offset(T0, 150));
    let wrong = other_code(&[&code(SECRET, &at_offset(T0, 180))]);
    let out = sb.pamtester(SVC, "daemon", &[&first, &wrong], T0);
    assert_denied(&out, pam_err::AUTH_ERR);
    assert_eq!(out.prompt_count(NEXT_PROMPT), 1, "{out}");
    assert_eq!(out.info_lines(), [DRIFT_INFO], "{out}");
    let st = status(&sb, "daemon");
    assert_eq!(st["devices"][0]["drift_seconds"], json!(0), "{st}");
    assert_eq!(st["failed_attempts"], json!(2), "{st}");
}

/// Issue 14.3: a guess that matches a step 5 ahead, abandoned at "Next
/// verification code" (Ctrl-C), is counted as a failure at once, and the
/// same code typed when its step comes is a refused replay — the drift
/// prompt is no free oracle.
#[test]
fn hanging_up_at_the_drift_prompt_counts_and_spends_the_code() {
    let sb = sandbox("drift-oracle", DRIFT_CONFIG);
    enroll(&sb, "daemon", SECRET);
    let later = at_offset(T0, 150);
    let guess = code(SECRET, &later);
    let out = sb.pamtester(SVC, "daemon", &[&guess], T0);
    assert_denied(&out, pam_err::CONV_ERR);
    assert_eq!(out.prompt_count(NEXT_PROMPT), 1, "{out}");
    assert_eq!(out.info_lines(), [DRIFT_INFO], "{out}");
    assert_eq!(status(&sb, "daemon")["failed_attempts"], json!(1));
    let out = sb.pamtester(SVC, "daemon", &[&guess], &later);
    assert_denied(&out, pam_err::AUTH_ERR);
    assert_eq!(out.prompt_count(NEXT_PROMPT), 0, "{out}");
    assert_eq!(status(&sb, "daemon")["failed_attempts"], json!(2));
}

/// Codes 11 and 20 steps off (beyond max_drift_steps = 10) are plain wrong
/// codes with one prompt; 10 steps off is still helped.
#[test]
fn code_beyond_max_drift_steps_is_a_plain_failure() {
    let sb = sandbox("drift-far", DRIFT_CONFIG);
    enroll(&sb, "daemon", SECRET);
    for steps in [20, 11] {
        let far = code(SECRET, &at_offset(T0, 30 * steps));
        let out = sb.pamtester(SVC, "daemon", &[&far], T0);
        assert_denied(&out, pam_err::AUTH_ERR);
        assert_eq!(out.prompt_count(PROMPT), 1, "{steps}: {out}");
        assert_eq!(out.prompt_count(NEXT_PROMPT), 0, "{steps}: {out}");
        assert!(out.info_lines().is_empty(), "{steps}: {out}");
    }
    let edge = |s: i64| code(SECRET, &at_offset(T0, 30 * s));
    let out = sb.pamtester(SVC, "daemon", &[&edge(10), &edge(11)], T0);
    assert!(out.succeeded(), "{out}");
    assert_eq!(
        status(&sb, "daemon")["devices"][0]["drift_seconds"],
        json!(300)
    );
}

/// After an offset was learned, a device whose clock was set right again is
/// re-learned (the message names no offset: that would help a guesser).
#[test]
fn corrected_device_clock_is_relearned() {
    let sb = sandbox("drift-corrected", DRIFT_CONFIG);
    enroll(&sb, "daemon", SECRET);
    let at = |s: i64| code(SECRET, &at_offset(T0, s));
    assert!(
        sb.pamtester(SVC, "daemon", &[&at(150), &at(180)], T0)
            .succeeded()
    );
    // The device's clock is right again at T0+600.
    let t = at_offset(T0, 600);
    let out = sb.pamtester(SVC, "daemon", &[&at(600), &at(630)], &t);
    assert!(out.succeeded(), "{out}");
    assert_eq!(out.prompt_count(NEXT_PROMPT), 1, "{out}");
    assert_eq!(
        status(&sb, "daemon")["devices"][0]["drift_seconds"],
        json!(0)
    );
    assert_eq!(out.info_lines(), [DRIFT_INFO], "{out}");
}

/// A device added under the label of a removed one starts with no learned
/// clock offset and no used step: its current code logs in at one prompt.
#[test]
fn device_re_added_under_a_removed_label_starts_fresh() {
    const SECRET_C: &str = "MFRGGZDFMZTWQ2LKNNWG23TPOBYXE43U";
    let sb = sandbox("drift-relabel", DRIFT_CONFIG);
    enroll(&sb, "daemon", SECRET);
    let add = |secret: &str| {
        cli_secret(
            &sb,
            &[
                "enroll",
                "daemon",
                "--add",
                "--label",
                "phone2",
                "--secret-file",
                "-",
            ],
            secret,
        )
        .expect(0);
    };
    add(SECRET_B);
    let b = |s: i64| code(SECRET_B, &at_offset(T0, s));
    let learned = sb.pamtester(SVC, "daemon", &[&b(150), &b(180)], T0);
    assert!(learned.succeeded(), "{learned}");
    cli(&sb, &["remove-device", "daemon", "phone2"]).expect(0);
    add(SECRET_C);

    let t = at_offset(T0, 60);
    let out = sb.pamtester(SVC, "daemon", &[&code(SECRET_C, &t)], &t);
    assert!(out.succeeded(), "{out}");
    assert_eq!(out.prompt_count(NEXT_PROMPT), 0, "{out}");
    let devices = cli(&sb, &["devices", "daemon", "--json"]).expect(0).json();
    assert_eq!(devices["devices"][1]["label"], json!("phone2"));
    assert_eq!(
        devices["devices"][1]["drift_seconds"],
        json!(0),
        "{devices}"
    );
}

// ----------------------------------------------------------- code by message

/// A sandbox with `[delivery]` running a `send-code` script (`body`,
/// written root-owned with `mode`; OUT in it names the file it may write)
/// and `socket` at [`Sandbox::delivery_socket`], where nothing listens yet;
/// daemon enrolled with SECRET. Returns the sandbox and OUT.
fn delivery_setup(name: &str, body: &str, mode: u32) -> (Sandbox, PathBuf) {
    let sb = Sandbox::new(name);
    let script = sb.dir().join("send-code");
    let sent = sb.dir().join("sent");
    sb.write_config(&format!(
        "[delivery]\ncommand = \"{}\"\nsocket = \"{}\"\nvalid_seconds = 60\nmax_per_hour = 2\n",
        script.display(),
        sb.delivery_socket().display()
    ));
    sb.write_service(SVC, &sb.module_line(""));
    let body = body.replace("OUT", &sent.display().to_string());
    fs::write(&script, format!("#!/bin/sh\n{body}")).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(mode)).unwrap();
    enroll(&sb, "daemon", SECRET);
    (sb, sent)
}

/// [`delivery_setup`] with the sandbox's delivery service listening, as
/// systemd would start it for each connection.
fn delivery_sandbox(name: &str, body: &str, mode: u32) -> (Sandbox, PathBuf) {
    let (sb, sent) = delivery_setup(name, body, mode);
    sb.start_delivery_service();
    (sb, sent)
}

/// Appends `USER TARGET CODE\n` (args, then stdin) to OUT, and the argument
/// count and the environment to OUT.argc and OUT.env.
const RECORDING: &str = "printf '%s %s ' \"$1\" \"$2\" >> OUT\ncat >> OUT\nprintf '%s\\n' \"$#\" >> OUT.argc\nenv > OUT.env\n";

/// `set-delivery daemon TARGET`.
fn set_target(sb: &Sandbox) {
    let out = cli(sb, &["set-delivery", "daemon", TARGET]).expect(0);
    assert_eq!(
        out.stdout,
        format!("daemon: codes by message go to {TARGET}\n")
    );
}

/// The codes in the command's output file, checking its format: the user
/// and the target as the only two arguments, a 6-digit code on stdin.
fn sent_codes(sent: &Path) -> Vec<String> {
    let text = fs::read_to_string(sent).unwrap_or_default();
    let argc = fs::read_to_string(sent.with_extension("argc")).unwrap_or_default();
    let env = fs::read_to_string(sent.with_extension("env")).unwrap_or_default();
    let codes: Vec<String> = text
        .lines()
        .map(|line| {
            let code = line
                .strip_prefix(&format!("daemon {TARGET} "))
                .unwrap_or_else(|| panic!("unexpected command output {line:?}"));
            assert!(
                code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
                "{line:?}"
            );
            assert!(!env.contains(code), "the code is in the environment: {env}");
            code.to_string()
        })
        .collect();
    assert_eq!(argc, "2\n".repeat(codes.len()), "argument counts");
    codes
}

/// A login that asks for a code by message (an empty answer at the code
/// prompt; nothing is sent before that) and answers the one code the
/// command got; it must succeed with only [`SENT_INFO`] (the target
/// masked) as information. Returns the outcome and the code.
fn login_with_a_sent_code(sb: &Sandbox, sent: &Path) -> (PamOutcome, String) {
    let mut live = Live::start(sb, SVC, "daemon", T0);
    live.wait_for(Stream::Err, PROMPT, 1);
    assert!(!sent.exists(), "sent before it was asked for");
    live.answer("");
    live.wait_for(Stream::Err, SENT_PROMPT, 1);
    let codes = sent_codes(sent);
    assert_eq!(codes.len(), 1);
    live.answer(&codes[0]);
    let out = live.finish();
    assert!(out.succeeded(), "{out}");
    assert_eq!(out.info_lines(), [SENT_INFO]);
    (out, codes[0].clone())
}

/// An empty answer sends a code to the user's target (code on stdin, never
/// in argv); typed at the next prompt it logs in, and only once.
#[test]
fn code_by_message_logs_in_once() {
    let (sb, sent) = delivery_sandbox("deliver", RECORDING, 0o755);
    set_target(&sb);
    assert_eq!(status(&sb, "daemon")["deliver_to"], json!(TARGET));
    let (out, code) = login_with_a_sent_code(&sb, &sent);
    assert_eq!(out.prompt_count(PROMPT), 1);
    assert_eq!(out.prompt_count(SENT_PROMPT), 1);
    let st = state_text(&sb, "daemon");
    assert!(!st.contains("delivered_code"), "{st}");
    assert!(st.contains(&format!("deliveries = [{T0_UNIX}]")), "{st}");

    let again = sb.pamtester(SVC, "daemon", &[&code], &at_offset(T0, 10));
    assert_denied(&again, pam_err::AUTH_ERR);
    assert_eq!(sent_codes(&sent).len(), 1);
    assert_eq!(
        sb.delivery_log(),
        "twofactor deliver: code for daemon sent\n"
    );
}

/// The same login through systemd's own inetd-style activator
/// (`systemd-socket-activate --inetd --accept`, what the packaged
/// pam-twofactor-deliver.socket does with `Accept=yes` and
/// `StandardInput=socket`) instead of the harness's: `twofactor deliver`
/// gets the connection as stdin and stdout, the command's stderr reaches
/// the service's stderr, and the code sent logs in.
#[test]
fn code_by_message_through_systemd_socket_activate() {
    let activate = find_program("systemd-socket-activate")
        .expect("systemd-socket-activate (package systemd) is missing: make test installs it");
    let body = format!("{RECORDING}echo 'from the command' >&2\n");
    let (sb, sent) = delivery_setup("deliver-systemd", &body, 0o755);
    let socket = sb.delivery_socket();
    set_target(&sb);
    let log = fs::File::create(sb.dir().join("activate.log")).unwrap();
    let mut cmd = Command::new(activate);
    cmd.args(["--inetd", "--accept", "--listen"])
        .arg(&socket)
        .arg(cli_path())
        .arg("--config")
        .arg(sb.config_path())
        .arg("deliver");
    clean_env(&mut cmd);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    // Stopped by its pid whatever happens below.
    struct Stop(Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _stop = Stop(child);
    let started = Instant::now();
    while !socket.exists() {
        assert!(started.elapsed() < Duration::from_secs(10), "no socket");
        thread::sleep(Duration::from_millis(20));
    }
    fs::set_permissions(&socket, fs::Permissions::from_mode(0o600)).unwrap();

    login_with_a_sent_code(&sb, &sent);
    let log = fs::read_to_string(sb.dir().join("activate.log")).unwrap();
    assert!(log.contains("from the command\n"), "{log}");
    assert!(
        log.contains("twofactor deliver: code for daemon sent\n"),
        "{log}"
    );
}

/// A sent code expires after `valid_seconds` (60): typed at T0+60 it is
/// refused; a fresh one typed 59 s after sending logs in.
#[test]
fn code_by_message_expires() {
    let (sb, sent) = delivery_sandbox("deliver-expiry", RECORDING, 0o755);
    set_target(&sb);
    let asked = sb.pamtester(SVC, "daemon", &[""], T0);
    assert_denied(&asked, pam_err::CONV_ERR);
    assert_eq!(asked.prompt_count(SENT_PROMPT), 1, "{asked}");
    assert_eq!(asked.info_lines(), [SENT_INFO]);
    let first = sent_codes(&sent).remove(0);
    let late = sb.pamtester(SVC, "daemon", &[&first], &at_offset(T0, 60));
    assert_denied(&late, pam_err::AUTH_ERR);

    let t = at_offset(T0, 61);
    assert_denied(&sb.pamtester(SVC, "daemon", &[""], &t), pam_err::CONV_ERR);
    let second = sent_codes(&sent).remove(1);
    let t = at_offset(T0, 61 + 59);
    let out = sb.pamtester(SVC, "daemon", &[&second], &t);
    assert!(out.succeeded(), "{out}");
}

/// At most `max_per_hour` (2) codes are sent per hour: the third request is
/// refused with a message and the command is not run; an hour after the
/// first, one more may be sent.
#[test]
fn code_by_message_is_limited_per_hour() {
    let (sb, sent) = delivery_sandbox("deliver-limit", RECORDING, 0o755);
    set_target(&sb);
    for s in [0, 10] {
        let out = sb.pamtester(SVC, "daemon", &[""], &at_offset(T0, s));
        assert_denied(&out, pam_err::CONV_ERR);
    }
    let third = sb.pamtester(SVC, "daemon", &[""], &at_offset(T0, 20));
    assert_denied(&third, pam_err::AUTH_ERR);
    assert_eq!(third.prompt_count(SENT_PROMPT), 0, "{third}");
    assert!(
        third.stderr.contains(
            "Too many codes sent in the last hour: try again after 2030-06-15 13:00:00 UTC.\n"
        ),
        "{third}"
    );
    assert_eq!(sent_codes(&sent).len(), 2);
    let out = sb.pamtester(SVC, "daemon", &[""], &at_offset(T0, 3600));
    assert_denied(&out, pam_err::CONV_ERR);
    assert_eq!(out.prompt_count(SENT_PROMPT), 1, "{out}");
    assert_eq!(sent_codes(&sent).len(), 3);
}

/// A user with no target is told so and denied; nothing is run.
#[test]
fn code_by_message_without_a_target_is_refused() {
    let (sb, sent) = delivery_sandbox("deliver-notarget", RECORDING, 0o755);
    let out = sb.pamtester(SVC, "daemon", &[""], T0);
    assert_denied(&out, pam_err::AUTH_ERR);
    assert!(
        out.stderr
            .contains("No code by message is set up for you: enter the code from your app.\n"),
        "{out}"
    );
    assert_eq!(out.prompt_count(SENT_PROMPT), 0);
    assert!(!sent.exists());
}

const NOT_SENT: &str = "The code could not be sent. Use your app or a backup code.\n";

/// A command that exits 1 denies with "could not be sent".
#[test]
fn failing_delivery_command_denies() {
    let (sb, _) = delivery_sandbox("deliver-fail", "cat > /dev/null\nexit 1\n", 0o755);
    set_target(&sb);
    let out = sb.pamtester(SVC, "daemon", &[""], T0);
    assert_denied(&out, pam_err::AUTH_ERR);
    assert!(out.stderr.contains(NOT_SENT), "{out}");
    assert_eq!(out.prompt_count(SENT_PROMPT), 0);
    assert!(out.info_lines().is_empty(), "{out}");
    assert_eq!(
        sb.delivery_log(),
        "twofactor deliver: delivery command failed: exit status: 1\n"
    );
}

/// With no delivery service listening (socket unit not enabled), the
/// module denies with "could not be sent"; nothing runs.
#[test]
fn missing_delivery_service_denies() {
    let (sb, sent) = delivery_setup("deliver-noservice", RECORDING, 0o755);
    set_target(&sb);
    let out = sb.pamtester(SVC, "daemon", &[""], T0);
    assert_denied(&out, pam_err::AUTH_ERR);
    assert!(out.stderr.contains(NOT_SENT), "{out}");
    assert!(!sent.exists(), "the command ran");
    assert_eq!(sb.delivery_log(), "");
}

/// A command that hangs is killed after 10 s and the login denied.
#[test]
fn hanging_delivery_command_is_killed() {
    let (sb, _) = delivery_sandbox("deliver-hang", "exec sleep 30\n", 0o755);
    set_target(&sb);
    let mut live = Live::start(&sb, SVC, "daemon", T0);
    live.wait_for(Stream::Err, PROMPT, 1);
    let asked = Instant::now();
    live.answer("");
    let out = live.finish();
    let took = asked.elapsed();
    assert_denied(&out, pam_err::AUTH_ERR);
    assert!(out.stderr.contains(NOT_SENT), "{out}");
    assert!(took >= Duration::from_secs(10), "{took:?}");
    assert!(took < Duration::from_secs(20), "{took:?}");
}

/// A group-writable command is refused like a failing one and never run.
#[test]
fn group_writable_delivery_command_is_never_run() {
    let (sb, sent) = delivery_sandbox("deliver-unsafe", RECORDING, 0o775);
    set_target(&sb);
    let out = sb.pamtester(SVC, "daemon", &[""], T0);
    assert_denied(&out, pam_err::AUTH_ERR);
    assert!(out.stderr.contains(NOT_SENT), "{out}");
    assert!(!sent.exists(), "the command ran");
}

// ------------------------------------------------------------------ imports

/// Debian's `google-authenticator` (package libpam-google-authenticator),
/// installed with apt-get when missing and possible; panics otherwise.
fn google_authenticator() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let apt = "apt-get update && apt-get install -y libpam-google-authenticator";
        if find_program("google-authenticator").is_none() && euid() == 0 {
            let apt_get = |args: &[&str]| {
                Command::new("apt-get")
                    .args(args)
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .stdin(Stdio::null())
                    .output()
                    .is_ok_and(|o| o.status.success())
            };
            let install = ["install", "-y", "libpam-google-authenticator"];
            if !apt_get(&install) && apt_get(&["update"]) {
                apt_get(&install);
            }
        }
        find_program("google-authenticator").unwrap_or_else(|| {
            panic!(
                "\n\n*** the import tests need `google-authenticator`: {apt}\n\
                 *** (these tests never skip silently)\n"
            )
        })
    })
    .clone()
}

/// Runs google-authenticator non-interactively to write `file`.
fn make_google_authenticator_file(file: &Path, mode_args: &[&str]) -> String {
    let out = Command::new(google_authenticator())
        .args(mode_args)
        .args(["-f", "-q", "-C", "-Q", "NONE", "-w", "3", "-e", "5", "-s"])
        .arg(file)
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "google-authenticator failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::read_to_string(file).unwrap()
}

/// A real TOTP file from google-authenticator imports with notes; its
/// secret's codes log in, a scratch code works once, and re-importing
/// needs --force.
#[test]
fn google_authenticator_totp_file_imports() {
    let sb = sandbox("import-ga", "");
    let file = sb.dir().join("google_authenticator");
    let text = make_google_authenticator_file(&file, &["-t", "-d", "-r", "3", "-R", "30"]);
    let secret = text.lines().next().unwrap().to_string();
    let scratch: Vec<&str> = text
        .lines()
        .filter(|l| l.len() == 8 && l.bytes().all(|b| b.is_ascii_digit()))
        .collect();
    assert_eq!(scratch.len(), 5, "{text}");
    let path = file.to_str().unwrap();

    let run = cli(
        &sb,
        &["import", "daemon", "--google-authenticator", path, "--json"],
    )
    .expect(0);
    assert_eq!(
        run.json(),
        json!({
            "imported": [{
                "user": "daemon",
                "backup_codes": scratch,
                "notes": [
                    "RATE_LIMIT ignored: use [rate_limit] in the config",
                    "WINDOW_SIZE 3 ignored: the window is [totp] window in the config (clock drift is learned per device)",
                    "DISALLOW_REUSE: codes are always accepted once",
                ],
            }],
            "skipped": [],
            "delete_file": path,
            "changed": true,
            "schema": 1,
        })
    );
    let st = status(&sb, "daemon");
    assert_eq!(st["backup_codes_remaining"], json!(5), "{st}");
    assert_eq!(
        (&st["devices"][0]["digits"], &st["devices"][0]["period"]),
        (&json!(6), &json!(30))
    );

    let out = sb.pamtester(SVC, "daemon", &[&code(&secret, T0)], T0);
    assert!(out.succeeded(), "{out}");
    let t = at_offset(T0, 30);
    let out = sb.pamtester(SVC, "daemon", &[scratch[2]], &t);
    assert!(out.succeeded(), "{out}");
    assert_eq!(
        out.info_lines(),
        ["Backup code accepted. 4 backup codes left."]
    );
    assert_denied(
        &sb.pamtester(SVC, "daemon", &[scratch[2]], &at_offset(T0, 31)),
        pam_err::AUTH_ERR,
    );

    let again = cli(&sb, &["import", "daemon", "--google-authenticator", path]).expect(5);
    assert!(
        again.stderr.contains("daemon is already enrolled"),
        "{}",
        again.stderr
    );
    cli(
        &sb,
        &[
            "import",
            "daemon",
            "--google-authenticator",
            path,
            "--force",
        ],
    )
    .expect(0);
}

/// A counter-based (HOTP) google-authenticator file is refused (exit 7,
/// the message names HOTP) and nothing is stored.
#[test]
fn google_authenticator_hotp_file_is_refused() {
    let sb = sandbox("import-ga-hotp", "");
    let file = sb.dir().join("google_authenticator");
    let text = make_google_authenticator_file(&file, &["-c", "-u"]);
    assert!(text.contains("\" HOTP_COUNTER "), "{text}");
    let run = cli(
        &sb,
        &[
            "import",
            "bin",
            "--google-authenticator",
            file.to_str().unwrap(),
            "--json",
        ],
    )
    .expect(7);
    assert!(
        run.stderr.contains("counter-based (HOTP)"),
        "{}",
        run.stderr
    );
    // Under --json the error is also one object on stdout.
    let v = run.json();
    assert_eq!(v["exit"], json!(7), "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("counter-based (HOTP)"),
        "{v}"
    );
    assert!(user_files(&sb, "bin").is_empty());
}

/// "12345678901234567890" and bytes 0..=19, in hex for pam_oath.
const OATH_HEX_A: &str = "3132333435363738393031323334353637383930";
const OATH_HEX_B: &str = "000102030405060708090a0b0c0d0e0f10111213";

/// oathtool's TOTP code for a hex key.
fn oathtool_hex(hex: &str, digits: u32, period: u32, at: &str) -> String {
    let out = Command::new(tool("oathtool"))
        .args(["--totp", "-d", &digits.to_string(), "-s"])
        .arg(format!("{period}s"))
        .arg("--now")
        .arg(format!("{at} UTC"))
        .arg(hex)
        .env_remove("LD_PRELOAD")
        .env_remove("FAKETIME")
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A pam_oath users file: the time-based lines are imported with their
/// period and digits and log in; every other line is reported with its
/// number and reason.
#[test]
fn oath_usersfile_imports_time_based_lines() {
    let sb = sandbox("import-oath", "");
    let file = sb.dir().join("users.oath");
    fs::write(
        &file,
        format!(
            "# pam_oath users\n\
             HOTP/T30 daemon - {OATH_HEX_A}\n\
             HOTP/T60/8 bin 1234 {OATH_HEX_B} 0 12345678 2020-01-01T00:00:00L\n\
             HOTP sys - {OATH_HEX_A}\n\
             HOTP/T30 games\n\
             HOTP/T30 tf-no-such-user - {OATH_HEX_A}\n"
        ),
    )
    .unwrap();
    let run = cli(
        &sb,
        &[
            "import",
            "--oath-usersfile",
            file.to_str().unwrap(),
            "--json",
        ],
    )
    .expect(0);
    let report = run.json();
    let users: Vec<(&str, &Value)> = report["imported"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["user"].as_str().unwrap(), &u["notes"]))
        .collect();
    assert_eq!(
        users,
        [
            ("daemon", &json!([])),
            (
                "bin",
                &json!(["PIN dropped: the password step before the module takes its place"])
            ),
        ],
        "{report}"
    );
    for user in report["imported"].as_array().unwrap() {
        assert_eq!(user["backup_codes"].as_array().unwrap().len(), 10, "{user}");
    }
    assert_eq!(
        report["skipped"],
        json!([
            {"line": 4, "reason": "HOTP is counter-based (HOTP), not time-based: re-enroll this user"},
            {"line": 5, "reason": "fewer than 4 fields (TYPE USER PIN SECRET)"},
            {"line": 6, "reason": "user \"tf-no-such-user\" does not exist in the passwd database"},
        ]),
        "{report}"
    );
    assert!(user_files(&sb, "sys").is_empty());
    let bin = status(&sb, "bin");
    assert_eq!(
        (&bin["devices"][0]["digits"], &bin["devices"][0]["period"]),
        (&json!(8), &json!(60)),
        "{bin}"
    );

    let t = at_offset(T0, 45);
    let daemon = sb.pamtester(SVC, "daemon", &[&oathtool_hex(OATH_HEX_A, 6, 30, &t)], &t);
    assert!(daemon.succeeded(), "{daemon}");
    let bin_code = oathtool_hex(OATH_HEX_B, 8, 60, &t);
    assert_eq!(bin_code.len(), 8);
    let out = sb.pamtester(SVC, "bin", &[&bin_code], &t);
    assert!(out.succeeded(), "{out}");

    // Importing again never replaces an enrollment without --force: both
    // lines are reported (exit 1: nothing imported), the records stay
    // byte for byte; with --force both are replaced.
    let records =
        || ["daemon", "bin"].map(|u| fs::read(sb.state_dir().join(format!("{u}.secret"))).unwrap());
    let before = records();
    let path = file.to_str().unwrap();
    let again = cli(&sb, &["import", "--oath-usersfile", path, "--json"]).expect(1);
    let report = again.json();
    assert_eq!(report["imported"], json!([]), "{report}");
    let lines: Vec<(u64, bool)> = report["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let reason = s["reason"].as_str().unwrap();
            (
                s["line"].as_u64().unwrap(),
                reason.contains("already enrolled"),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [(2, true), (3, true), (4, false), (5, false), (6, false)],
        "{report}"
    );
    assert_eq!(records(), before);
    let forced = cli(
        &sb,
        &["import", "--oath-usersfile", path, "--force", "--json"],
    )
    .expect(0)
    .json();
    assert_eq!(forced["imported"].as_array().unwrap().len(), 2, "{forced}");
    assert_ne!(records()[0], before[0]);
}
