//! Issue 17: users are told of every security change to their second
//! factor. `[notify] command` is a file-writing script; the admin's changes
//! run it from `twofactor`, a login's events (through the real module,
//! pam_wrapper + pamtester, time pinned with libfaketime, codes from
//! `oathtool`) reach it through the sandbox's delivery service. Every event
//! must arrive exactly once, in order, with its fields, and no code,
//! secret or backup code may appear in what the command got.

// Test helpers may panic: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The RFC 6238 SHA1 seed "12345678901234567890" in base32.
const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
/// A second device's secret.
const SECRET_B: &str = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP";
const SVC: &str = "svc";

/// Appends one line per run: the argument count, the arguments and the
/// message on stdin with its line breaks as `|`.
const RECORDING: &str = "#!/bin/sh\nmsg=$(cat)\nprintf '%s|%s|%s|%s\\n' \"$#\" \"$1\" \"$2\" \"$(printf '%s' \"$msg\" | tr '\\n' '|')\" >> OUT\n";

/// The SHA1, 6-digit, 30 s code of `secret` at `at`.
fn code(secret: &str, at: &str) -> String {
    oathtool_code(secret, "SHA1", 6, 30, at)
}

/// The recorded lines, once there are `n` of them (the delivery service
/// runs the command after it answered the module; waits at most 10 s).
fn lines_once(out: &Path, n: usize) -> Vec<String> {
    let started = Instant::now();
    loop {
        let text = fs::read_to_string(out).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n || started.elapsed() > Duration::from_secs(10) {
            assert_eq!(lines.len(), n, "{text}");
            return lines;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Adds the backup codes in `v` to `secrets`, grouped and not.
fn keep_codes(secrets: &mut Vec<String>, v: &Value) {
    for c in v["backup_codes"].as_array().unwrap() {
        let c = c.as_str().unwrap().to_string();
        secrets.push(c.replace('-', ""));
        secrets.push(c);
    }
}

/// Checks one recorded line: two arguments (user, event), the message's
/// `user`, `event`, `time` (RFC 3339 UTC) and `host` lines, then exactly
/// `fields`, an empty line and one sentence naming the user.
fn assert_event(line: &str, event: &str, fields: &[&str]) {
    let parts: Vec<&str> = line.split('|').collect();
    assert_eq!(&parts[..3], ["2", "daemon", event], "{line}");
    assert_eq!(parts[3], "user: daemon", "{line}");
    assert_eq!(parts[4], format!("event: {event}"), "{line}");
    let time = parts[5].strip_prefix("time: ").unwrap();
    assert!(
        time.len() == 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
        "{line}"
    );
    assert_eq!(parts[6], "host: notify-test", "{line}");
    assert_eq!(&parts[7..7 + fields.len()], fields, "{line}");
    assert_eq!(parts[7 + fields.len()], "", "{line}");
    let sentence = parts[8 + fields.len()];
    assert!(sentence.contains("daemon"), "{line}");
    assert_eq!(parts.len(), 9 + fields.len(), "{line}");
}

/// Every event once: enroll, enroll --add, remove-device, backup-codes, a
/// backup-code login, five wrong codes (lock), unlock, a drift login (a
/// code 5 steps ahead, then the next) and disable each leave exactly one
/// line, in order, with the right fields; the four failures before the
/// lock and the no-op unlock leave none; nothing secret reaches the
/// command.
#[test]
fn every_event_is_told_exactly_once_and_nothing_secret() {
    require_tools();
    let sb = Sandbox::new("notify-events");
    let script = sb.dir().join("tell-user");
    let out = sb.dir().join("told");
    sb.write_config(&format!(
        "issuer = \"notify-test\"\n[totp]\nmax_drift_steps = 10\n[delivery]\nsocket = \"{}\"\n[notify]\ncommand = \"{}\"\n",
        sb.delivery_socket().display(),
        script.display()
    ));
    sb.write_service(SVC, &sb.module_line(""));
    fs::write(
        &script,
        RECORDING.replace("OUT", &out.display().to_string()),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    sb.start_delivery_service();
    let mut secrets: Vec<String> = vec![SECRET.into(), SECRET_B.into()];

    let enrolled = cli_secret(
        &sb,
        &["enroll", "daemon", "--secret-file", "-", "--json"],
        SECRET,
    )
    .expect(0)
    .json();
    keep_codes(&mut secrets, &enrolled);
    let added = cli_secret(
        &sb,
        &[
            "enroll",
            "daemon",
            "--add",
            "--label",
            "phone",
            "--secret-file",
            "-",
            "--json",
        ],
        SECRET_B,
    )
    .expect(0)
    .json();
    secrets.push(added["secret"].as_str().unwrap().into());
    cli(&sb, &["remove-device", "daemon", "phone"]).expect(0);
    let codes = cli(&sb, &["backup-codes", "daemon", "--json"])
        .expect(0)
        .json();
    keep_codes(&mut secrets, &codes);
    lines_once(&out, 4);

    let backup = codes["backup_codes"][0].as_str().unwrap().to_string();
    let login = sb.pamtester(SVC, "daemon", &[&backup], T0);
    assert!(login.succeeded(), "{login}");
    lines_once(&out, 5);

    // Wrong codes: none matches a step the window or drift could accept.
    let t1 = at_offset(T0, 60);
    let near: Vec<String> = (-12..=12)
        .map(|s| code(SECRET, &at_offset(&t1, s * 30)))
        .collect();
    let wrong = (0..10)
        .map(|d| d.to_string().repeat(6))
        .find(|c| !near.contains(c))
        .unwrap();
    for i in 0..5 {
        let failed = sb.pamtester(SVC, "daemon", &[&wrong], &at_offset(&t1, i));
        assert!(!failed.succeeded(), "{failed}");
        secrets.push(wrong.clone());
    }
    lines_once(&out, 6);
    cli(&sb, &["unlock", "daemon"]).expect(0);
    cli(&sb, &["unlock", "daemon"]).expect(0); // nothing to clear: nothing told
    lines_once(&out, 7);

    let t2 = at_offset(T0, 600);
    let ahead = |s: i64| code(SECRET, &at_offset(&t2, s));
    let drift = sb.pamtester(SVC, "daemon", &[&ahead(150), &ahead(180)], &t2);
    assert!(drift.succeeded(), "{drift}");
    secrets.extend([ahead(150), ahead(180)]);
    lines_once(&out, 8);
    cli(&sb, &["disable", "daemon"]).expect(0);
    let lines = lines_once(&out, 9);

    assert_event(&lines[0], "enrolled", &[]);
    assert_event(&lines[1], "device-added", &["device: phone"]);
    assert_event(&lines[2], "device-removed", &["device: phone"]);
    assert_event(&lines[3], "backup-codes-regenerated", &[]);
    assert_event(&lines[4], "backup-code-used", &["codes_left: 9"]);
    let locked_fields: Vec<&str> = lines[5].split('|').skip(7).take(1).collect();
    assert_event(&lines[5], "locked", &locked_fields);
    // The lock began at the fifth failure and lasts 1800 s (the default).
    let until = locked_fields[0].strip_prefix("until: ").unwrap();
    let locked_at = unix(&until.replace('T', " ").replace('Z', "")) - 1800;
    assert!(
        (unix(&t1)..unix(&t1) + 30).contains(&locked_at),
        "{}",
        lines[5]
    );
    assert_event(&lines[6], "unlocked", &[]);
    assert_event(
        &lines[7],
        "drift-learned",
        &["device: default", "offset_seconds: 150"],
    );
    assert_event(&lines[8], "disabled", &[]);

    let told = fs::read_to_string(&out).unwrap();
    for secret in &secrets {
        assert!(!told.contains(secret.as_str()), "{secret} in {told}");
    }
    let log = sb.delivery_log();
    for event in ["backup-code-used", "locked", "drift-learned"] {
        assert_eq!(
            log.matches(&format!("daemon notified of {event}")).count(),
            1,
            "{log}"
        );
    }
}

/// A notify command that fails changes nothing of a login (it succeeds)
/// nor of an admin command (it succeeds, and says why on stderr); with no
/// delivery service listening, a backup-code login still succeeds.
#[test]
fn a_failing_notify_command_changes_no_outcome() {
    require_tools();
    let sb = Sandbox::new("notify-fails");
    let script = sb.dir().join("tell-user");
    sb.write_config(&format!(
        "[delivery]\nsocket = \"{}\"\n[notify]\ncommand = \"{}\"\n",
        sb.delivery_socket().display(),
        script.display()
    ));
    sb.write_service(SVC, &sb.module_line(""));
    fs::write(&script, "#!/bin/sh\ncat >/dev/null\nexit 7\n").unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let enrolled = cli_secret(
        &sb,
        &["enroll", "daemon", "--secret-file", "-", "--json"],
        SECRET,
    )
    .expect(0);
    assert!(
        enrolled.stderr.contains(
            "could not notify daemon of enrolled: delivery command failed: exit status: 7"
        ),
        "{}",
        enrolled.stderr
    );
    let codes = enrolled.json();
    let backup = |i: usize| codes["backup_codes"][i].as_str().unwrap().to_string();
    // No service listens yet.
    let login = sb.pamtester(SVC, "daemon", &[&backup(0)], T0);
    assert!(login.succeeded(), "{login}");
    sb.start_delivery_service();
    let login = sb.pamtester(SVC, "daemon", &[&backup(1)], &at_offset(T0, 60));
    assert!(login.succeeded(), "{login}");
}

/// An enrollment at first login (`unenrolled = "enroll"`) is a change too:
/// told once, as `enrolled`, through the delivery service, without the key
/// or the backup codes the login showed.
#[test]
fn enrolling_at_login_is_told() {
    use common::live::{Live, Stream};
    require_tools();
    let sb = Sandbox::new("notify-enroll-login");
    let script = sb.dir().join("tell-user");
    let out = sb.dir().join("told");
    sb.write_config(&format!(
        "unenrolled = \"enroll\"\nissuer = \"notify-test\"\n[delivery]\nsocket = \"{}\"\n[notify]\ncommand = \"{}\"\n",
        sb.delivery_socket().display(),
        script.display()
    ));
    sb.write_service(SVC, &sb.module_line(""));
    fs::write(
        &script,
        RECORDING.replace("OUT", &out.display().to_string()),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    sb.start_delivery_service();
    let mut live = Live::start(&sb, SVC, "daemon", T0);
    let key = live
        .wait_line("Or enter this key by hand: ")
        .replace(' ', "");
    live.wait_for(Stream::Err, "Verification code: ", 1);
    let first = code(&key, T0);
    live.answer(&first);
    let login = live.finish();
    assert!(login.succeeded(), "{login}");
    let lines = lines_once(&out, 1);
    assert_event(&lines[0], "enrolled", &[]);
    let told = fs::read_to_string(&out).unwrap();
    assert!(!told.contains(&key) && !told.contains(&first), "{told}");
    for line in login.info_lines() {
        let shown = line.trim();
        if shown.len() == 19 && shown.bytes().filter(|&b| b == b'-').count() == 3 {
            assert!(!told.contains(shown), "{told}");
        }
    }
}
