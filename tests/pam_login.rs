//! The real `pam_twofactor.so` through real libpam (pam_wrapper + pamtester),
//! time pinned with libfaketime, every expected code from `oathtool`.

// Test helpers may panic: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;

const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
/// A base-passwd account: the CLI needs a user that exists; nothing about it changes.
const USER: &str = "daemon";
const PROMPT: &str = "Verification code: ";
const SVC: &str = "svc";

/// A sandbox with `extra` config, our module alone in service `svc`, and
/// USER enrolled with SECRET plus `enroll_args`. Returns the enroll stdout.
fn enrolled(name: &str, extra: &str, enroll_args: &[&str]) -> (Sandbox, String) {
    require_tools();
    let sb = Sandbox::new(name);
    sb.write_config(extra);
    sb.write_service(SVC, &sb.module_line(""));
    let mut args = vec!["enroll", USER, "--secret-file", "-", "--json"];
    args.extend_from_slice(enroll_args);
    let out = run_cli_with(&sb, &args, &[SECRET], "");
    assert!(
        out.status.success(),
        "enroll failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (sb, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn code(at: &str) -> String {
    oathtool_code(SECRET, "SHA1", 6, 30, at)
}

fn state(sb: &Sandbox) -> String {
    fs::read_to_string(sb.state_dir().join(format!("{USER}.state"))).unwrap()
}

fn login(sb: &Sandbox, answer: &str, at: &str) -> PamOutcome {
    sb.pamtester(SVC, USER, &[answer], at)
}

/// The backup codes from `enroll --json` output.
fn backup_codes(json: &str) -> Vec<String> {
    let start = json.find("\"backup_codes\":[").unwrap() + "\"backup_codes\":[".len();
    let end = start + json[start..].find(']').unwrap();
    json[start..end]
        .split(',')
        .map(|s| s.trim_matches('"').to_string())
        .collect()
}

fn assert_denied(outcome: &PamOutcome, error: &str) {
    assert!(!outcome.succeeded(), "expected denial\n{outcome}");
    assert_eq!(outcome.pam_error(), Some(error), "{outcome}");
}

/// The current code logs in; the accepted step (T0 / 30) is stored durably.
#[test]
fn correct_code_logs_in_and_records_the_step() {
    let (sb, _) = enrolled("correct", "", &[]);
    let out = login(&sb, &code(T0), T0);
    assert!(out.succeeded(), "{out}");
    assert_eq!(out.prompt_count(PROMPT), 1);
    assert!(out.info_lines().is_empty(), "{out}");
    let st = state(&sb);
    assert!(st.contains(&format!("default = {}", T0_UNIX / 30)), "{st}");
    assert!(st.contains("failures = 0"), "{st}");
    let mode = fs::metadata(sb.state_dir().join("daemon.state"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o600);
}

/// A wrong code is refused with PAM_AUTH_ERR and counted in the state file.
#[test]
fn wrong_code_is_refused_and_counted() {
    let (sb, _) = enrolled("wrong", "", &[]);
    let right = code(T0);
    let wrong = if right == "123456" {
        "654321"
    } else {
        "123456"
    };
    assert_denied(&login(&sb, wrong, T0), pam_err::AUTH_ERR);
    assert!(state(&sb).contains("failures = 1"), "{}", state(&sb));
}

/// The same code a second time, even 10 s later in the same step, is refused.
#[test]
fn replayed_code_is_refused() {
    let (sb, _) = enrolled("replay", "", &[]);
    let c = code(T0);
    assert!(login(&sb, &c, T0).succeeded());
    let again = login(&sb, &c, &at_offset(T0, 10));
    assert_denied(&again, pam_err::AUTH_ERR);
    let st = state(&sb);
    assert!(
        st.contains("failures = 1") && st.contains(&format!("default = {}", T0_UNIX / 30)),
        "{st}"
    );
}

/// After a later step was accepted, an earlier step's code is refused even
/// when the clock is set back to that earlier time.
#[test]
fn earlier_code_after_clock_steps_back_is_refused() {
    let (sb, _) = enrolled("clockback", "", &[]);
    let later = at_offset(T0, 300);
    assert!(login(&sb, &code(&later), &later).succeeded());
    assert_denied(&login(&sb, &code(T0), T0), pam_err::AUTH_ERR);
}

/// With window = 1, codes one step either side are accepted, two are not
/// (drift help off: with it, two steps away asks for the next code).
#[test]
fn window_edges_are_exact() {
    let (sb, _) = enrolled("window", "[totp]\nmax_drift_steps = 0\n", &[]);
    assert_denied(
        &login(&sb, &code(&at_offset(T0, -60)), T0),
        pam_err::AUTH_ERR,
    );
    assert!(login(&sb, &code(&at_offset(T0, -30)), T0).succeeded());
    assert_denied(
        &login(&sb, &code(&at_offset(T0, 60)), T0),
        pam_err::AUTH_ERR,
    );
    let out = login(&sb, &code(&at_offset(T0, 30)), T0);
    assert!(out.succeeded(), "{out}");
    assert!(state(&sb).contains(&format!("default = {}", T0_UNIX / 30 + 1)));
}

/// window = 0 accepts only the current step.
#[test]
fn window_zero_accepts_only_the_current_step() {
    let (sb, _) = enrolled("window0", "[totp]\nwindow = 0\nmax_drift_steps = 0\n", &[]);
    assert_denied(
        &login(&sb, &code(&at_offset(T0, -30)), T0),
        pam_err::AUTH_ERR,
    );
    assert!(login(&sb, &code(T0), T0).succeeded());
}

/// SHA256, 8 digits, 60 s: oathtool's code works, a SHA1 6-digit one does not.
#[test]
fn sha256_eight_digit_sixty_second_codes_work() {
    let (sb, _) = enrolled(
        "sha256",
        "",
        &["--algorithm", "SHA256", "--digits", "8", "--period", "60"],
    );
    assert_denied(&login(&sb, &code(T0), T0), pam_err::AUTH_ERR);
    let c = oathtool_code(SECRET, "SHA256", 8, 60, &at_offset(T0, 61));
    let out = login(&sb, &c, &at_offset(T0, 61));
    assert!(out.succeeded(), "{out}");
    assert!(state(&sb).contains(&format!("default = {}", (T0_UNIX + 61) / 60)));
}

/// SHA512 codes from oathtool work.
#[test]
fn sha512_codes_work() {
    let (sb, _) = enrolled("sha512", "", &["--algorithm", "SHA512", "--digits", "7"]);
    let c = oathtool_code(SECRET, "SHA512", 7, 30, T0);
    assert!(login(&sb, &c, T0).succeeded());
}

/// Spaces and dashes in the answer are ignored.
#[test]
fn spaces_and_dashes_in_the_code_are_ignored() {
    let (sb, _) = enrolled("spaces", "", &[]);
    let c = code(T0);
    let typed = format!("{} {}", &c[..3], &c[3..]);
    assert!(login(&sb, &typed, T0).succeeded());
}

/// A backup code works once (typed with spaces instead of dashes), says how
/// many are left, and is refused the second time.
#[test]
fn backup_code_works_once() {
    let (sb, json) = enrolled("backup", "", &[]);
    let codes = backup_codes(&json);
    assert_eq!(codes.len(), 10);
    let typed = codes[3].replace('-', " ");
    let out = login(&sb, &typed, T0);
    assert!(out.succeeded(), "{out}");
    assert_eq!(
        out.info_lines(),
        vec!["Backup code accepted. 9 backup codes left."]
    );
    assert!(
        state(&sb).contains("used_backup_codes = [\""),
        "{}",
        state(&sb)
    );
    assert_denied(&login(&sb, &codes[3], &at_offset(T0, 5)), pam_err::AUTH_ERR);
    let out = login(&sb, &codes[4], &at_offset(T0, 10));
    assert_eq!(
        out.info_lines(),
        vec!["Backup code accepted. 8 backup codes left."]
    );
}

/// The fifth failure locks and says until when; while locked even the right
/// code is refused; `twofactor unlock` clears it.
#[test]
fn fifth_failure_locks_until_unlock() {
    let (sb, _) = enrolled("lockout", "", &[]);
    for i in 1..=4 {
        let out = login(&sb, "000000x", &at_offset(T0, i));
        assert_denied(&out, pam_err::AUTH_ERR);
        assert!(!out.stderr.contains("locked"), "attempt {i}: {out}");
    }
    let fifth = login(&sb, "000000x", &at_offset(T0, 5));
    assert_denied(&fifth, pam_err::AUTH_ERR);
    assert!(
        fifth.stderr.contains(
            "Too many failed attempts: your account is locked until 2030-06-15 12:30:05 UTC."
        ),
        "{fifth}"
    );
    assert!(state(&sb).contains(&format!("locked_until = {}", T0_UNIX + 5 + 1800)));
    let t = at_offset(T0, 60);
    let locked = login(&sb, &code(&t), &t);
    assert_denied(&locked, pam_err::AUTH_ERR);
    assert!(
        locked
            .stderr
            .contains("locked after too many failed attempts until 2030-06-15 12:30:05 UTC."),
        "{locked}"
    );
    assert!(!state(&sb).contains(&format!("default = {}", T0_UNIX / 30 + 2)));
    let out = run_cli(&sb, &["unlock", USER]);
    assert!(out.status.success());
    let t = at_offset(T0, 90);
    let out = login(&sb, &code(&t), &t);
    assert!(out.succeeded(), "{out}");
}

/// The lock ends by itself after lock_seconds.
#[test]
fn lock_expires_after_lock_seconds() {
    let (sb, _) = enrolled(
        "lockexpiry",
        "[lockout]\nmax_failures = 2\nlock_seconds = 120\n",
        &[],
    );
    login(&sb, "999999x", T0);
    login(&sb, "999999x", T0);
    let t = at_offset(T0, 90);
    assert_denied(&login(&sb, &code(&t), &t), pam_err::AUTH_ERR);
    let t = at_offset(T0, 150);
    assert!(login(&sb, &code(&t), &t).succeeded());
}

/// Past max_attempts per window even a right code is refused, with a message.
#[test]
fn rate_limit_refuses_until_the_window_ends() {
    let (sb, _) = enrolled(
        "ratelimit",
        "[lockout]\nmax_failures = 100\n[rate_limit]\nmax_attempts = 3\nper_seconds = 60\n",
        &[],
    );
    for i in 0..3 {
        assert_denied(&login(&sb, "1", &at_offset(T0, i)), pam_err::AUTH_ERR);
    }
    let t = at_offset(T0, 30);
    let out = login(&sb, &code(&t), &t);
    assert_denied(&out, pam_err::AUTH_ERR);
    assert!(
        out.stderr
            .contains("Too many attempts: try again after 2030-06-15 12:01:00 UTC."),
        "{out}"
    );
    let t = at_offset(T0, 60);
    assert!(login(&sb, &code(&t), &t).succeeded());
}

/// An unenrolled user under "deny" sees the same prompt and fails; nothing is written.
#[test]
fn unenrolled_user_is_denied_after_the_same_prompt() {
    let (sb, _) = enrolled("unenrolled-deny", "", &[]);
    let out = sb.pamtester(SVC, "bin", &["123456"], T0);
    assert_denied(&out, pam_err::AUTH_ERR);
    assert_eq!(out.prompt_count(PROMPT), 1);
    assert!(!sb.state_dir().join("bin.state").exists());
    assert!(!sb.state_dir().join("bin.lock").exists());
}

/// Under "skip" an unenrolled user is not prompted and the module is ignored:
/// the documented stack (module then pam_permit) lets them in; enrolled users
/// still need a code.
#[test]
fn unenrolled_user_is_skipped_under_skip() {
    let (sb, _) = enrolled("unenrolled-skip", "unenrolled = \"skip\"\n", &[]);
    sb.write_service(
        "stack",
        &format!("{}\nauth required pam_permit.so", sb.module_line("")),
    );
    let out = sb.pamtester("stack", "bin", &[], T0);
    assert!(out.succeeded(), "{out}");
    assert_eq!(out.prompt_count(PROMPT), 0);
    let out = sb.pamtester("stack", USER, &["000000x"], T0);
    assert_denied(&out, pam_err::AUTH_ERR);
    // Alone in the stack, PAM_IGNORE is no success (libpam: Permission denied).
    assert_denied(&sb.pamtester(SVC, "bin", &[], T0), pam_err::PERM_DENIED);
}

/// EOF at the prompt is a conversation error; no failure is counted.
#[test]
fn eof_at_the_prompt_is_a_conversation_error() {
    let (sb, _) = enrolled("eof", "", &[]);
    let out = sb.pamtester(SVC, USER, &[], T0);
    assert_denied(&out, pam_err::CONV_ERR);
    assert!(state(&sb).contains("failures = 0"));
}

/// A config with an unknown key denies without prompting.
#[test]
fn bad_config_denies_without_prompting() {
    let (sb, _) = enrolled("badconfig", "", &[]);
    fs::write(sb.config_path(), "nullok = true\n").unwrap();
    let out = login(&sb, &code(T0), T0);
    assert_denied(&out, pam_err::SERVICE_ERR);
    assert_eq!(out.prompt_count(PROMPT), 0);
}

/// A group-writable config is refused like a malformed one.
#[test]
fn group_writable_config_is_refused() {
    let (sb, _) = enrolled("configmode", "", &[]);
    fs::set_permissions(sb.config_path(), fs::Permissions::from_mode(0o620)).unwrap();
    assert_denied(&login(&sb, &code(T0), T0), pam_err::SERVICE_ERR);
}

/// An unknown module argument denies.
#[test]
fn unknown_module_argument_denies() {
    let (sb, _) = enrolled("badarg", "", &[]);
    sb.write_service("args", &sb.module_line("nullok"));
    let out = sb.pamtester("args", USER, &[&code(T0)], T0);
    assert_denied(&out, pam_err::SERVICE_ERR);
}

/// A secret file readable by others is refused without prompting.
#[test]
fn group_readable_secret_is_refused() {
    let (sb, _) = enrolled("secretmode", "", &[]);
    let path = sb.state_dir().join("daemon.secret");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let out = login(&sb, &code(T0), T0);
    assert_denied(&out, pam_err::AUTHINFO_UNAVAIL);
    assert_eq!(out.prompt_count(PROMPT), 0);
}

/// A symlink where the secret should be is refused, not followed.
#[test]
fn symlinked_secret_is_refused() {
    let (sb, _) = enrolled("secretlink", "", &[]);
    let path = sb.state_dir().join("daemon.secret");
    fs::rename(&path, sb.dir().join("elsewhere.secret")).unwrap();
    std::os::unix::fs::symlink(sb.dir().join("elsewhere.secret"), &path).unwrap();
    assert_denied(&login(&sb, &code(T0), T0), pam_err::AUTHINFO_UNAVAIL);
}

/// A damaged state file denies, and is left as it was for the admin.
#[test]
fn damaged_state_denies_and_is_kept() {
    let (sb, _) = enrolled("badstate", "", &[]);
    let path = sb.state_dir().join("daemon.state");
    fs::write(&path, "version = 1\nfailures = \"x\"\n").unwrap();
    assert_denied(&login(&sb, &code(T0), T0), pam_err::AUTHINFO_UNAVAIL);
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "version = 1\nfailures = \"x\"\n"
    );
}

/// A state directory under /tmp is refused (world-writable ancestor).
#[test]
fn state_directory_under_tmp_is_refused() {
    let (sb, _) = enrolled("tmpstate", "", &[]);
    let tmp = std::env::temp_dir().join(format!("pam-twofactor-tmpstate-{}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(
        sb.config_path(),
        format!("state_dir = \"{}\"\n", tmp.display()),
    )
    .unwrap();
    let out = login(&sb, &code(T0), T0);
    fs::remove_dir_all(&tmp).unwrap();
    assert_denied(&out, pam_err::AUTHINFO_UNAVAIL);
}

/// A user name that cannot be a file name is prompted and denied.
#[test]
fn unsafe_user_names_are_denied_after_the_prompt() {
    let (sb, _) = enrolled("badname", "", &[]);
    for name in ["../daemon", "a/b", ".", "daemon\u{1b}[31m"] {
        let out = sb.pamtester(SVC, name, &[&code(T0)], T0);
        assert_denied(&out, pam_err::AUTH_ERR);
        assert_eq!(out.prompt_count(PROMPT), 1, "{name:?}");
    }
    let entries: Vec<_> = fs::read_dir(sb.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries.len(), 3, "{entries:?}");
}

/// Password (pam_matrix) then code: both prompts, and both must be right.
#[test]
fn password_then_code_needs_both() {
    let (sb, _) = enrolled("password", "", &[]);
    let stack = format!(
        "{}\n{}",
        sb.matrix_line(&[(USER, "hunter2")]),
        sb.module_line("")
    );
    sb.write_service("both", &stack);
    let out = sb.pamtester("both", USER, &["hunter2", &code(T0)], T0);
    assert!(out.succeeded(), "{out}");
    assert_eq!(out.prompt_count("Password: "), 1);
    assert_eq!(out.prompt_count(PROMPT), 1);
    let t = at_offset(T0, 30);
    assert_denied(
        &sb.pamtester("both", USER, &["hunter2", "000000x"], &t),
        pam_err::AUTH_ERR,
    );
}

/// Under PAM_SILENT the lock message is not shown (the login still fails).
#[test]
fn silent_flag_hides_messages() {
    let (sb, _) = enrolled("silent", "[lockout]\nmax_failures = 1\n", &[]);
    let out = sb.pamtester_with(SVC, USER, &["1"], T0, &[], "authenticate(PAM_SILENT)");
    assert_denied(&out, pam_err::AUTH_ERR);
    assert!(!out.stderr.contains("locked"), "{out}");
    let out = sb.pamtester(SVC, USER, &["1"], T0);
    assert!(out.stderr.contains("locked"), "{out}");
}

/// What goes to syslog: ident, authpriv priority, user, service and rhost,
/// the outcome, and never the code or the secret. Root only: a socket of
/// the test's own at /dev/log ([`DevLog`]).
#[test]
fn outcomes_are_logged_to_syslog_without_codes() {
    if !root_or_skip(
        "outcomes_are_logged_to_syslog_without_codes",
        "a socket of its own at /dev/log",
        &[],
    ) {
        return;
    }
    let (sb, json) = enrolled("syslog", "", &[]);
    let log = DevLog::bind(&sb);
    let socket = log.socket();
    socket.set_nonblocking(true).unwrap();
    let good = code(T0);
    let backup = backup_codes(&json).remove(0);
    let login = |answer: &str, at: &str| {
        let cmd = sb.pamtester_command(
            SVC,
            USER,
            at,
            &["-I", "rhost=203.0.113.9"],
            "authenticate",
            &Extra::default(),
        );
        Sandbox::run_pamtester(log.wrap(cmd), &[answer])
    };
    let ok = login(&good, T0);
    let bad = login("123456", &at_offset(T0, 30));
    let via_backup = login(&backup, &at_offset(T0, 31));
    let mut lines = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = socket.recv(&mut buf) {
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        // Other tests log too while the socket exists; keep this test's lines.
        if line.contains("rhost=203.0.113.9") {
            lines.push(line);
        }
    }
    assert!(ok.succeeded() && !bad.succeeded() && via_backup.succeeded());
    let all = lines.join("\n");
    assert_eq!(lines.len(), 3, "{all}");
    assert!(lines[0].starts_with("<86>pam_twofactor["), "{all}");
    assert!(lines[0].contains("authentication succeeded (TOTP code, device default) user=daemon service=svc rhost=203.0.113.9"), "{all}");
    assert!(lines[1].starts_with("<84>pam_twofactor["), "{all}");
    assert!(
        lines[1].contains("denied: wrong code user=daemon service=svc rhost=203.0.113.9"),
        "{all}"
    );
    assert!(
        lines[2].contains("authentication succeeded (backup code, 9 left)"),
        "{all}"
    );
    for secret in [
        good.as_str(),
        "123456",
        SECRET,
        backup.as_str(),
        &backup.replace('-', ""),
    ] {
        assert!(!all.contains(secret), "syslog leaked {secret:?}: {all}");
    }
}
