//! The `twofactor` admin command as a black box: every subcommand of the
//! README's "The admin command" contract, its JSON fields, exit codes and the
//! files it leaves behind, plus logins through the real module (pamtester)
//! where a command's effect is only visible there. Expected TOTP codes come
//! from `oathtool`; users are existing base-passwd accounts, never modified.

// Test helpers may panic: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

/// The RFC 6238 SHA1 seed "12345678901234567890" in base32 (160 bits).
const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
/// Bytes 1..=N in base32 (Python's `base64.b32encode`, padding removed).
const SECRET_120: &str = "AEBAGBAFAYDQQCIKBMGA2DQP";
const SECRET_128: &str = "AEBAGBAFAYDQQCIKBMGA2DQPCA";
const SECRET_512: &str = "AEBAGBAFAYDQQCIKBMGA2DQPCAIREEYUCULBOGAZDINRYHI6D4QCCIRDEQSSMJZIFEVCWLBNFYXTAMJSGM2DKNRXHA4TUOZ4HU7D6QA";
const SECRET_520: &str = "AEBAGBAFAYDQQCIKBMGA2DQPCAIREEYUCULBOGAZDINRYHI6D4QCCIRDEQSSMJZIFEVCWLBNFYXTAMJSGM2DKNRXHA4TUOZ4HU7D6QCB";
/// A base-passwd account: enrolled in the sandbox only, never changed.
const USER: &str = "daemon";
const PROMPT: &str = "Verification code: ";
const SVC: &str = "svc";
/// `[lockout] lock_seconds` default.
const LOCK_SECONDS: u64 = 1800;

/// Like [`cli`] with the clock frozen at `at` (`"YYYY-MM-DD HH:MM:SS"` UTC).
fn cli_at(sb: &Sandbox, args: &[&str], at: &str) -> CliRun {
    CliRun::from(&run_cli_with(sb, args, &[], at))
}

/// Like [`cli_at`] with `secret` and a newline on stdin, for
/// `--secret-file -` (`at` may be `""`: real clock).
fn cli_secret_at(sb: &Sandbox, args: &[&str], secret: &str, at: &str) -> CliRun {
    CliRun::from(&run_cli_with(sb, args, &[secret], at))
}

/// A sandbox with `extra` config lines.
fn sandbox(name: &str, extra: &str) -> Sandbox {
    require_tools();
    let sb = Sandbox::new(name);
    sb.write_config(extra);
    sb
}

/// A sandbox with USER enrolled with SECRET (SHA1/6/30) at T0, our module
/// alone in service SVC. Returns the `enroll --json` object.
fn enrolled(name: &str, extra: &str) -> (Sandbox, Value) {
    let sb = sandbox(name, extra);
    sb.write_service(SVC, &sb.module_line(""));
    let args = ["enroll", USER, "--secret-file", "-", "--json"];
    let out = cli_secret_at(&sb, &args, SECRET, T0).expect(0);
    let v = out.json();
    (sb, v)
}

fn file(sb: &Sandbox, name: &str) -> PathBuf {
    sb.state_dir().join(name)
}

/// `check --json` output `v` says not ok and lists exactly `want`, in
/// order: each problem's path, and a text its message contains.
fn assert_problems(v: &Value, want: &[(&Path, &str)]) {
    assert_eq!(v["ok"], json!(false), "{v}");
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), want.len(), "{v}");
    for (problem, (path, text)) in problems.iter().zip(want) {
        assert_eq!(problem["path"], json!(path.display().to_string()), "{v}");
        let message = problem["problem"].as_str().unwrap();
        assert!(message.contains(text), "{v}");
    }
}

/// A failed command printed nothing on stdout, or under `--json` only
/// the error object with its exit status.
fn assert_only_json_error(out: &CliRun, args: &[&str], exit: i32) {
    if args.contains(&"--json") {
        let v = out.json();
        assert_eq!(v["exit"], json!(exit), "{args:?}: {v}");
        assert_eq!(v["schema"], json!(1), "{args:?}: {v}");
        assert!(v["error"].is_string(), "{args:?}: {v}");
    } else {
        assert_eq!(out.stdout, "", "{args:?}");
    }
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// `path` parsed as TOML.
fn toml_file(path: &Path) -> toml::Table {
    read(path)
        .parse()
        .unwrap_or_else(|e| panic!("{} is not TOML: {e}", path.display()))
}

/// The state directory's entries, sorted.
fn entries(sb: &Sandbox) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(sb.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The README's fields of a JSON object: panics unless every one of `keys`
/// is present, and returns an object with just those. Extra fields are
/// tolerated (the CLI may grow, e.g. multi-device `label`/`devices`), so
/// the documented part can be compared exactly.
fn documented(v: &Value, keys: &[&str]) -> Value {
    let obj = v
        .as_object()
        .unwrap_or_else(|| panic!("not a JSON object: {v}"));
    let mut out = serde_json::Map::new();
    for k in keys {
        let value = obj
            .get(*k)
            .unwrap_or_else(|| panic!("documented field {k:?} missing from {v}"));
        out.insert((*k).to_string(), value.clone());
    }
    Value::Object(out)
}

const ENROLL_FIELDS: &[&str] = &[
    "user",
    "uri",
    "secret",
    "algorithm",
    "digits",
    "period",
    "backup_codes",
];
const STATUS_FIELDS: &[&str] = &[
    "user",
    "enrolled",
    "algorithm",
    "digits",
    "period",
    "backup_codes_remaining",
    "failed_attempts",
    "locked_until",
];

/// `dddd-dddd-dddd-dddd`, the documented backup-code format.
fn is_backup_code(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 4
        && groups
            .iter()
            .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_digit()))
}

/// The `backup_codes` array of a JSON object, checked: `count` distinct
/// well-formed codes.
fn backup_codes(v: &Value, count: usize) -> Vec<String> {
    let codes: Vec<String> = v["backup_codes"]
        .as_array()
        .unwrap_or_else(|| panic!("no backup_codes array in {v}"))
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    assert_eq!(codes.len(), count, "{v}");
    for c in &codes {
        assert!(
            is_backup_code(c),
            "backup code {c:?} is not dddd-dddd-dddd-dddd"
        );
    }
    let mut unique = codes.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), count, "duplicate backup codes: {codes:?}");
    codes
}

/// A pamtester login of USER answering `answer` at the frozen time `at`.
fn login(sb: &Sandbox, answer: &str, at: &str) -> PamOutcome {
    sb.pamtester(SVC, USER, &[answer], at)
}

fn assert_denied(outcome: &PamOutcome) {
    assert!(!outcome.succeeded(), "expected a denial\n{outcome}");
    assert_eq!(outcome.pam_error(), Some(pam_err::AUTH_ERR), "{outcome}");
    assert_eq!(outcome.prompt_count(PROMPT), 1, "{outcome}");
}

/// A code that is certainly wrong for SECRET at T0 (window 1), per oathtool.
fn wrong_code() -> &'static str {
    for at in [at_offset(T0, -30), T0.to_string(), at_offset(T0, 30)] {
        assert_ne!(oathtool_code(SECRET, "SHA1", 6, 30, &at), "000000");
    }
    "000000"
}

/// `n` wrong-code logins of USER at T0, each denied; the last outcome.
fn fail_logins(sb: &Sandbox, n: usize) -> PamOutcome {
    assert!(n > 0);
    let mut last = None;
    for _ in 0..n {
        let out = login(sb, wrong_code(), T0);
        assert_denied(&out);
        last = Some(out);
    }
    last.unwrap()
}

/// `enroll daemon --json` prints every documented field, a 160-bit secret and
/// 10 distinct backup codes, and leaves root-only 0600 files without any code.
#[test]
fn enroll_json_prints_every_field_and_writes_private_files_without_codes() {
    let sb = sandbox("enroll-json", "");
    let out = cli(&sb, &["enroll", USER, "--json"]).expect(0);
    let v = documented(&out.json(), ENROLL_FIELDS);
    assert_eq!(v["user"], json!(USER));
    assert_eq!(v["algorithm"], json!("SHA1"));
    assert_eq!(v["digits"], json!(6));
    assert_eq!(v["period"], json!(30));
    let secret = v["secret"].as_str().unwrap();
    assert_eq!(
        secret.len(),
        32,
        "160 bits are 32 base32 characters: {secret}"
    );
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)),
        "not RFC 4648 base32: {secret}"
    );
    let codes = backup_codes(&v, 10);

    let uri = v["uri"].as_str().unwrap();
    assert!(uri.starts_with("otpauth://totp/"), "{uri}");
    let query = uri.split_once('?').unwrap().1;
    let params: Vec<&str> = query.split('&').collect();
    assert!(
        params.contains(&format!("secret={secret}").as_str()),
        "{uri}"
    );
    // The Key URI Format defaults (SHA1, 6 digits, 30 s) are left out: a
    // smaller QR code (issue 17).
    for default in ["algorithm=", "digits=", "period="] {
        assert!(!uri.contains(default), "{default} in {uri}");
    }
    assert!(params.iter().any(|p| p.starts_with("issuer=")), "{uri}");

    // Root-only files, the directory still 0700.
    assert_eq!(mode(sb.state_dir()), 0o700);
    for name in ["daemon.secret", "daemon.state"] {
        let path = file(&sb, name);
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.is_file(), "{}", path.display());
        assert_eq!(meta.mode() & 0o7777, 0o600, "{}", path.display());
        // uid 0 when run as root (the real setup); the runner otherwise.
        assert_eq!(meta.uid(), euid(), "{}", path.display());
        assert_eq!(meta.nlink(), 1, "{}", path.display());
    }

    // The secret record holds the secret and 10 hashes, never a code.
    let text = read(&file(&sb, "daemon.secret"));
    for code in &codes {
        let digits = code.replace('-', "");
        assert!(
            !text.contains(&digits),
            "code {code} stored in clear:\n{text}"
        );
        assert!(!text.contains(code.as_str()), "code {code} stored:\n{text}");
    }
    let record = toml_file(&file(&sb, "daemon.secret"));
    let device = &record["devices"].as_array().unwrap()[0];
    assert_eq!(device["secret"].as_str(), Some(secret));
    let backup = record["backup_codes"].as_table().unwrap();
    assert_eq!(backup["kdf"].as_str(), Some("argon2id"));
    let hashes = backup["hashes"].as_array().unwrap();
    assert_eq!(hashes.len(), 10);
    for h in hashes {
        let h = h.as_str().unwrap();
        assert!(
            h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()),
            "hash {h:?}"
        );
    }

    // The secret shown is the one the module uses.
    sb.write_service(SVC, &sb.module_line(""));
    let code = oathtool_code(secret, "SHA1", 6, 30, T0);
    let ok = login(&sb, &code, T0);
    assert!(ok.succeeded(), "{ok}");
}

/// `--secret-file/--algorithm/--digits/--period` show up in the JSON, the
/// URI and the secret record, and the module then accepts oathtool's
/// SHA256/8/60 code. The secret comes from a 0600 file (with its newline).
#[test]
fn enroll_with_explicit_parameters_reflects_each_one_everywhere() {
    let sb = sandbox("enroll-params", "issuer = \"Example\"\n");
    let seed = sb.dir().join("seed");
    write_private(&seed, &format!("{SECRET}\n"));
    let out = cli_at(
        &sb,
        &[
            "enroll",
            USER,
            "--secret-file",
            seed.to_str().unwrap(),
            "--algorithm",
            "SHA256",
            "--digits",
            "8",
            "--period",
            "60",
            "--json",
        ],
        T0,
    )
    .expect(0);
    let v = out.json();
    assert_eq!(v["user"], json!(USER));
    assert_eq!(v["secret"], json!(SECRET));
    assert_eq!(v["algorithm"], json!("SHA256"));
    assert_eq!(v["digits"], json!(8));
    assert_eq!(v["period"], json!(60));
    backup_codes(&v, 10);

    let uri = v["uri"].as_str().unwrap();
    let (label, query) = uri.split_once('?').unwrap();
    assert_eq!(label, "otpauth://totp/Example:daemon");
    let mut params: Vec<&str> = query.split('&').collect();
    params.sort_unstable();
    assert_eq!(
        params,
        [
            "algorithm=SHA256",
            "digits=8",
            "issuer=Example",
            "period=60",
            &format!("secret={SECRET}"),
        ]
    );

    let text = read(&file(&sb, "daemon.secret"));
    for line in [
        "algorithm = \"SHA256\"",
        "digits = 8",
        "period = 60",
        &format!("secret = \"{SECRET}\""),
        &format!("created = {T0_UNIX}"),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in:\n{text}"
        );
    }

    sb.write_service(SVC, &sb.module_line(""));
    let code = oathtool_code(SECRET, "SHA256", 8, 60, T0);
    assert_eq!(code.len(), 8);
    let ok = login(&sb, &code, T0);
    assert!(ok.succeeded(), "{ok}");
}

/// Plain `enroll` shows a Unicode-block QR code, the key in groups of four,
/// the otpauth URI and exactly 10 backup codes.
#[test]
fn enroll_text_output_shows_qr_grouped_key_uri_and_ten_codes() {
    let sb = sandbox("enroll-text", "");
    let out = cli_secret(&sb, &["enroll", USER, "--secret-file", "-"], SECRET).expect(0);
    let lines: Vec<&str> = out.stdout.lines().collect();

    let qr: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.contains(['█', '▀', '▄']))
        .collect();
    assert!(qr.len() >= 15, "too few QR lines:\n{}", out.stdout);
    let width = qr[0].chars().count();
    assert!(width >= 29, "QR narrower than version 1:\n{}", out.stdout);
    for l in &qr {
        assert!(
            l.chars().all(|c| " █▀▄".contains(c)),
            "QR line with other characters: {l:?}"
        );
        assert_eq!(l.chars().count(), width, "ragged QR line {l:?}");
    }

    assert!(
        lines.contains(&"Or enter this key by hand: GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ"),
        "{}",
        out.stdout
    );
    let uri_lines: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("otpauth URI: "))
        .collect();
    assert_eq!(uri_lines.len(), 1, "{}", out.stdout);
    assert!(
        uri_lines[0].starts_with("otpauth://totp/"),
        "{}",
        uri_lines[0]
    );
    assert!(
        uri_lines[0].contains(&format!("secret={SECRET}&")),
        "{}",
        uri_lines[0]
    );

    let codes: Vec<&str> = lines
        .iter()
        .map(|l| l.trim())
        .filter(|l| is_backup_code(l))
        .collect();
    assert_eq!(codes.len(), 10, "{}", out.stdout);
    let mut unique = codes.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), 10, "{codes:?}");
}

/// Enrolling again without `--force` exits 5, names `--force` and changes no
/// byte; with `--force` it exits 0 with a new secret.
#[test]
fn re_enroll_needs_force_and_force_replaces_the_secret() {
    let sb = sandbox("reenroll", "");
    let first = cli(&sb, &["enroll", USER, "--json"]).expect(0).json();
    let secret_before = fs::read(file(&sb, "daemon.secret")).unwrap();
    let state_before = fs::read(file(&sb, "daemon.state")).unwrap();

    let again = cli(&sb, &["enroll", USER, "--json"]).expect(5);
    assert!(again.stderr.contains("--force"), "{}", again.stderr);
    assert_only_json_error(&again, &["--json"], 5);
    assert_eq!(fs::read(file(&sb, "daemon.secret")).unwrap(), secret_before);
    assert_eq!(fs::read(file(&sb, "daemon.state")).unwrap(), state_before);

    let forced = cli(&sb, &["enroll", USER, "--force", "--json"])
        .expect(0)
        .json();
    assert_ne!(forced["secret"], first["secret"]);
    let secret_after = fs::read(file(&sb, "daemon.secret")).unwrap();
    assert_ne!(secret_after, secret_before);
    let text = String::from_utf8(secret_after).unwrap();
    assert!(
        text.contains(&format!(
            "secret = \"{}\"",
            forced["secret"].as_str().unwrap()
        )),
        "{text}"
    );
    assert_eq!(mode(&file(&sb, "daemon.secret")), 0o600);
}

/// Bad or unknown user names exit 4, bad option values and secrets exit 7,
/// an unknown subcommand exits 2, and none of them writes a user file.
#[test]
fn errors_exit_with_the_documented_codes_and_write_nothing() {
    let sb = sandbox("errors", "");
    let secret_file = ["enroll", USER, "--secret-file", "-"];
    // (arguments, the secret on stdin or "" for none, exit code)
    let cases: &[(&[&str], &str, i32)] = &[
        (&["enroll", "../x"], "", 4),
        (&["enroll", "a/b"], "", 4),
        (&["enroll", "no-such-user-xyz"], "", 4),
        (&["status", "../x"], "", 4),
        (&["status", "no-such-user-xyz"], "", 4),
        (&["unlock", "no-such-user-xyz"], "", 4),
        (&["backup-codes", "no-such-user-xyz"], "", 4),
        (&["disable", "a/b"], "", 4),
        (&secret_file, "notbase32!", 7),
        // 80 bits: below the 128-bit minimum.
        (&secret_file, "JBSWY3DPEHPK3PXP", 7),
        (&secret_file, SECRET_120, 7),
        (&secret_file, SECRET_520, 7),
        // Nothing on stdin (/dev/null), or only blanks.
        (&secret_file, "", 7),
        (&secret_file, "  \t ", 7),
        (&["enroll", USER, "--digits", "9"], "", 7),
        (&["enroll", USER, "--digits", "5"], "", 7),
        (&["enroll", USER, "--period", "9"], "", 7),
        (&["enroll", USER, "--period", "301"], "", 7),
        (&["enroll", USER, "--algorithm", "MD5"], "", 7),
        (&["frobnicate", USER], "", 2),
        (&["enroll"], "", 2),
    ];
    for (args, secret, code) in cases {
        let stdin: &[&str] = if secret.is_empty() { &[] } else { &[secret] };
        let out = CliRun::from(&run_cli_with(&sb, args, stdin, ""));
        assert_eq!(
            out.code, *code,
            "twofactor {args:?} <<< {secret:?}\n--- stdout ---\n{}--- stderr ---\n{}",
            out.stdout, out.stderr
        );
        assert!(!out.stderr.is_empty(), "no message for {args:?}");
    }
    let left = entries(&sb);
    assert!(
        left.iter().all(|n| n.ends_with(".lock")),
        "files written by failed commands: {left:?}"
    );
    assert!(!file(&sb, "daemon.secret").exists());
}

/// Secrets of exactly 128 and 512 bits (the documented bounds) are accepted,
/// stored in canonical base32, and the module accepts oathtool's code for them.
#[test]
fn enroll_accepts_secrets_at_the_128_and_512_bit_bounds() {
    let sb = sandbox("secret-bounds", "");
    sb.write_service(SVC, &sb.module_line(""));
    for secret in [SECRET_128, SECRET_512] {
        // Lower case, spaced and padded input decodes to the same key.
        let spaced: String = secret
            .to_ascii_lowercase()
            .as_bytes()
            .chunks(4)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" ");
        let args = ["enroll", USER, "--force", "--secret-file", "-", "--json"];
        let v = cli_secret_at(&sb, &args, &spaced, T0).expect(0).json();
        assert_eq!(v["secret"], json!(secret));
        let text = read(&file(&sb, "daemon.secret"));
        assert!(
            text.lines().any(|l| l == format!("secret = \"{secret}\"")),
            "{text}"
        );
        let ok = login(&sb, &oathtool_code(secret, "SHA1", 6, 30, T0), T0);
        assert!(ok.succeeded(), "{} bits\n{ok}", secret.len() * 5);
    }
}

/// For an existing but unenrolled user: `status` exits 0 with
/// `"enrolled":false`; `unlock`, `backup-codes` and `disable` exit 5.
#[test]
fn commands_on_an_unenrolled_user_report_not_enrolled() {
    let sb = sandbox("unenrolled", "");
    let status = cli(&sb, &["status", USER, "--json"]).expect(0).json();
    assert_eq!(status["user"], json!(USER));
    assert_eq!(status["enrolled"], json!(false));
    let text = cli(&sb, &["status", USER]).expect(0);
    assert_eq!(text.stdout, "daemon: not enrolled\n");
    for args in [
        &["unlock", USER][..],
        &["backup-codes", USER, "--json"],
        &["disable", USER],
    ] {
        let out = cli(&sb, args).expect(5);
        assert!(
            out.stderr.contains("not enrolled"),
            "{args:?}: {}",
            out.stderr
        );
    }
    assert!(!file(&sb, "daemon.secret").exists());
    assert!(!file(&sb, "daemon.state").exists());
}

/// Without `--config`, a non-root caller (`nobody`) is refused with exit 3
/// and a message saying it must run as root.
#[test]
fn without_config_a_non_root_caller_is_refused_with_exit_3() {
    if !root_or_skip(
        "without_config_a_non_root_caller_is_refused_with_exit_3",
        "it switches to user nobody",
        &[Needs::Program("setpriv", "util-linux")],
    ) {
        return;
    }
    let sb = sandbox("not-root", "");
    for args in [&["status", USER][..], &["unlock", USER], &["check"]] {
        let out = cli_as_nobody(&sb, args);
        let out = CliRun::from(&out).expect(3);
        assert!(out.stderr.contains("root"), "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout, "", "{args:?}");
    }
}

/// `status --json` is exactly the documented object after enrollment, counts
/// wrong logins, and shows the lock (RFC 3339) until it expires.
#[test]
fn status_json_is_exact_and_follows_failures_and_the_lock() {
    let (sb, _) = enrolled("status", "");
    let status = |at: &str| {
        let v = cli_at(&sb, &["status", USER, "--json"], at)
            .expect(0)
            .json();
        documented(&v, STATUS_FIELDS)
    };
    let expected = |failed: u32, locked: Value| {
        json!({
            "user": "daemon",
            "enrolled": true,
            "algorithm": "SHA1",
            "digits": 6,
            "period": 30,
            "backup_codes_remaining": 10,
            "failed_attempts": failed,
            "locked_until": locked,
        })
    };
    assert_eq!(status(T0), expected(0, Value::Null));

    fail_logins(&sb, 1);
    assert_eq!(status(T0), expected(1, Value::Null));

    let fifth = fail_logins(&sb, 4);
    assert!(
        // PAM_ERROR_MSG on stderr, right after the prompt (no newline).
        fifth.stderr.contains(
            "Verification code: Too many failed attempts: your account is locked until \
             2030-06-15 12:30:00 UTC.\n"
        ),
        "{fifth}"
    );
    // Locked at the 5th failure (frozen T0) for lock_seconds.
    let until = T0_UNIX + LOCK_SECONDS;
    assert_eq!(until, unix("2030-06-15 12:30:00"));
    let st = read(&file(&sb, "daemon.state"));
    assert!(st.lines().any(|l| l == "failures = 5"), "{st}");
    assert!(
        st.lines().any(|l| l == format!("locked_until = {until}")),
        "{st}"
    );
    assert_eq!(status(T0), expected(5, json!("2030-06-15T12:30:00Z")));
    assert_eq!(
        status(&at_offset(T0, LOCK_SECONDS as i64 - 1))["locked_until"],
        json!("2030-06-15T12:30:00Z")
    );
    assert_eq!(
        status(&at_offset(T0, LOCK_SECONDS as i64))["locked_until"],
        Value::Null
    );

    let text = cli_at(&sb, &["status", USER], T0).expect(0);
    assert_eq!(
        text.stdout,
        "daemon: enrolled (TOTP SHA1, 6 digits, 30 s)\n\
         devices:\n  \
         default\tTOTP SHA1 6 digits 30 s\tcreated 2030-06-15 12:00:00 UTC\tclock offset 0 s\n\
         codes by message: off\n\
         backup codes remaining: 10\n\
         failed attempts: 5\n\
         locked until 2030-06-15 12:30:00 UTC (clear with: twofactor unlock daemon)\n"
    );
}

/// After a lockout, `unlock` clears failures and the lock in the state file,
/// and the next correct code (oathtool) logs in.
#[test]
fn unlock_clears_the_lock_and_a_correct_code_then_logs_in() {
    let (sb, _) = enrolled("unlock", "");
    fail_logins(&sb, 5);
    let t1 = at_offset(T0, 30);
    let locked = login(&sb, &oathtool_code(SECRET, "SHA1", 6, 30, &t1), &t1);
    assert_denied(&locked);
    assert!(
        locked.stderr.contains(
            "Verification code: Your account is locked after too many failed attempts until \
             2030-06-15 12:30:00 UTC.\n"
        ),
        "{locked}"
    );

    let out = cli_at(&sb, &["unlock", USER], &t1).expect(0);
    assert_eq!(out.stdout, "daemon: failures cleared and unlocked\n");
    let st = toml_file(&file(&sb, "daemon.state"));
    assert_eq!(st["failures"].as_integer(), Some(0), "{st}");
    assert!(!st.contains_key("locked_until"), "{st}");
    assert_eq!(mode(&file(&sb, "daemon.state")), 0o600);

    let t2 = at_offset(T0, 60);
    let ok = login(&sb, &oathtool_code(SECRET, "SHA1", 6, 30, &t2), &t2);
    assert!(ok.succeeded(), "{ok}");
    let status = cli_at(&sb, &["status", USER, "--json"], &t2)
        .expect(0)
        .json();
    assert_eq!(status["failed_attempts"], json!(0));
    assert_eq!(status["locked_until"], Value::Null);
}

/// `backup-codes --json` issues 10 new codes: an original code is refused, a
/// new one is accepted once (with the "9 left" message) and never again.
#[test]
fn backup_codes_regeneration_retires_old_codes_and_new_ones_work_once() {
    let (sb, enrolled) = enrolled("backup", "");
    let old = backup_codes(&enrolled, 10);

    let v = cli_at(&sb, &["backup-codes", USER, "--json"], T0)
        .expect(0)
        .json();
    let v = documented(&v, &["user", "backup_codes"]);
    assert_eq!(v["user"], json!(USER));
    let new = backup_codes(&v, 10);
    assert!(new.iter().all(|c| !old.contains(c)), "{old:?} / {new:?}");

    assert_denied(&login(&sb, &old[0], T0));

    let ok = login(&sb, &new[0], T0);
    assert!(ok.succeeded(), "{ok}");
    assert_eq!(
        ok.info_lines(),
        ["Backup code accepted. 9 backup codes left."],
        "{ok}"
    );
    let status = cli_at(&sb, &["status", USER, "--json"], T0)
        .expect(0)
        .json();
    assert_eq!(status["backup_codes_remaining"], json!(9));

    let replay = login(&sb, &new[0], T0);
    assert_denied(&replay);
    assert!(replay.info_lines().is_empty(), "{replay}");
}

/// `disable` removes the secret and state but keeps the lock file; the user
/// is then not enrolled and, with `unenrolled = "deny"`, is prompted and denied.
#[test]
fn disable_removes_the_enrollment_and_login_is_then_denied() {
    let (sb, _) = enrolled("disable", "unenrolled = \"deny\"\n");
    assert_eq!(
        entries(&sb),
        ["daemon.lock", "daemon.secret", "daemon.state"]
    );
    let out = cli(&sb, &["disable", USER]).expect(0);
    assert_eq!(out.stdout, "daemon: enrollment removed\n");
    assert_eq!(entries(&sb), ["daemon.lock"]);
    assert_eq!(mode(sb.state_dir()), 0o700);

    let status = cli(&sb, &["status", USER, "--json"]).expect(0).json();
    assert_eq!(status["enrolled"], json!(false));

    let denied = login(&sb, &oathtool_code(SECRET, "SHA1", 6, 30, T0), T0);
    assert_denied(&denied);

    cli(&sb, &["disable", USER]).expect(5);
}

/// From its second write on, the state keeps a second copy
/// (`.daemon.state.spare`, 0600, the version before): `check` accepts it
/// when it is as safe as the state, names it (once) when it is not, and
/// `disable` removes it with the rest.
#[test]
fn the_state_spare_is_checked_and_removed_with_the_enrollment() {
    let (sb, _) = enrolled("spare", "");
    assert_eq!(
        entries(&sb),
        ["daemon.lock", "daemon.secret", "daemon.state"],
        "the first write renames its spare into place"
    );
    let enrolled_state = fs::read_to_string(file(&sb, "daemon.state")).unwrap();
    let out = login(&sb, &oathtool_code(SECRET, "SHA1", 6, 30, T0), T0);
    assert!(out.succeeded(), "{out}");
    assert_eq!(
        entries(&sb),
        [
            ".daemon.state.spare",
            "daemon.lock",
            "daemon.secret",
            "daemon.state"
        ]
    );
    let spare = file(&sb, ".daemon.state.spare");
    assert_eq!(mode(&spare), 0o600);
    assert_eq!(fs::read_to_string(&spare).unwrap(), enrolled_state);
    let logged_in = fs::read_to_string(file(&sb, "daemon.state")).unwrap();
    assert_ne!(logged_in, enrolled_state);
    cli(&sb, &["check"]).expect(0);

    fs::set_permissions(&spare, fs::Permissions::from_mode(0o644)).unwrap();
    let v = cli(&sb, &["check", "--json"]).expect(1).json();
    assert_problems(&v, &[(&spare, "the other copy of daemon's state")]);

    cli(&sb, &["disable", USER]).expect(0);
    assert_eq!(entries(&sb), ["daemon.lock"]);
}

/// A state copy edited by hand no longer matches its checksum: logins read
/// the other copy (the version before) and `check` names the edited one;
/// the next login writes over it and `check` passes again. With both
/// copies damaged the login is refused and `check` names the state.
#[test]
fn a_state_copy_that_fails_its_checksum_is_named_and_not_used() {
    let (sb, _) = enrolled("state-checksum", "");
    let first = login(&sb, &oathtool_code(SECRET, "SHA1", 6, 30, T0), T0);
    assert!(first.succeeded(), "{first}");
    let state = file(&sb, "daemon.state");
    let spare = file(&sb, ".daemon.state.spare");
    let logged_in = fs::read_to_string(&state).unwrap();
    assert!(logged_in.starts_with("checksum = \""), "{logged_in}");
    assert!(
        logged_in.contains("\nversion = 2\ngeneration = 2\n"),
        "{logged_in}"
    );
    let edited = logged_in.replace("failures = 0", "failures = 4");
    assert_ne!(edited, logged_in);
    fs::write(&state, &edited).unwrap();
    let v = cli(&sb, &["check", "--json"]).expect(1).json();
    assert_problems(&v, &[(&state, "does not match its checksum")]);

    // The copy read is the enrolled state, without the step just used:
    // the next step's code logs in, and is written over the edited copy.
    let t1 = at_offset(T0, 30);
    let ok = login(&sb, &oathtool_code(SECRET, "SHA1", 6, 30, &t1), &t1);
    assert!(ok.succeeded(), "{ok}");
    let now = fs::read_to_string(&state).unwrap();
    assert!(now.contains("\ngeneration = 2\n"), "{now}");
    assert!(now.contains("failures = 0"), "{now}");
    cli(&sb, &["check"]).expect(0);

    fs::write(&state, &edited).unwrap();
    let other = fs::read_to_string(&spare).unwrap();
    fs::write(&spare, other.replace("failures = 0", "failures = 9")).unwrap();
    let t2 = at_offset(T0, 60);
    let refused = login(&sb, &oathtool_code(SECRET, "SHA1", 6, 30, &t2), &t2);
    assert!(!refused.succeeded(), "{refused}");
    assert_eq!(
        refused.pam_error(),
        Some(pam_err::AUTHINFO_UNAVAIL),
        "{refused}"
    );
    let v = cli(&sb, &["check", "--json"]).expect(1).json();
    assert_problems(
        &v,
        &[(&state, "does not match its checksum: a write was cut short")],
    );
}

/// `check` on a freshly enrolled sandbox exits 0 and says OK; `--json` says
/// `{"ok":true,"problems":[]}`.
#[test]
fn check_passes_on_a_clean_enrolled_sandbox() {
    let (sb, _) = enrolled("check-clean", "");
    let out = cli(&sb, &["check"]).expect(0);
    assert!(out.stdout.starts_with("OK"), "{}", out.stdout);
    let v = cli(&sb, &["check", "--json"]).expect(0).json();
    assert_eq!(
        v,
        json!({"ok": true, "problems": [], "changed": false, "schema": 1})
    );
}

/// With `[delivery] command` set, `check` names a group-writable command
/// and a missing delivery-service socket (with the systemctl command that
/// starts it); with both in order it passes.
#[test]
fn check_reports_the_delivery_command_and_socket() {
    let sb = Sandbox::new("check-delivery");
    let (command, socket) = (sb.dir().join("send-code"), sb.delivery_socket());
    sb.write_config(&format!(
        "[delivery]\ncommand = \"{}\"\nsocket = \"{}\"\n",
        command.display(),
        socket.display()
    ));
    fs::write(&command, "#!/bin/sh\ncat >/dev/null\n").unwrap();
    fs::set_permissions(&command, fs::Permissions::from_mode(0o775)).unwrap();
    let v = cli(&sb, &["check", "--json"]).expect(1).json();
    assert_problems(
        &v,
        &[
            (&command, "mode 0775"),
            (
                &socket,
                "systemctl enable --now pam-twofactor-deliver.socket",
            ),
        ],
    );
    fs::set_permissions(&command, fs::Permissions::from_mode(0o755)).unwrap();
    sb.start_delivery_service();
    let v = cli(&sb, &["check", "--json"]).expect(0).json();
    assert_eq!(
        v,
        json!({"ok": true, "problems": [], "changed": false, "schema": 1})
    );
}

/// With `[notify] command` set, `check` names a group-writable notify
/// command and, with no `[delivery] command`, a missing delivery-service
/// socket (the module's notices go there); with both in order it passes.
#[test]
fn check_reports_the_notify_command_and_socket() {
    let sb = Sandbox::new("check-notify");
    let (command, socket) = (sb.dir().join("tell-user"), sb.delivery_socket());
    sb.write_config(&format!(
        "[delivery]\nsocket = \"{}\"\n[notify]\ncommand = \"{}\"\n",
        socket.display(),
        command.display()
    ));
    fs::write(&command, "#!/bin/sh\ncat >/dev/null\n").unwrap();
    fs::set_permissions(&command, fs::Permissions::from_mode(0o775)).unwrap();
    let v = cli(&sb, &["check", "--json"]).expect(1).json();
    assert_problems(
        &v,
        &[
            (&command, "mode 0775"),
            (
                &socket,
                "systemctl enable --now pam-twofactor-deliver.socket",
            ),
        ],
    );
    assert!(v.to_string().contains("[notify] command"), "{v}");
    fs::set_permissions(&command, fs::Permissions::from_mode(0o755)).unwrap();
    sb.start_delivery_service();
    let v = cli(&sb, &["check", "--json"]).expect(0).json();
    assert_eq!(
        v,
        json!({"ok": true, "problems": [], "changed": false, "schema": 1})
    );
}

/// `twofactor deliver` run by hand (a pipe, not a socket) with a relative
/// `--config`, as every other command takes it: the command gets the code
/// and the answer is `ok`; stdout carries the answer line only.
#[test]
fn deliver_by_hand_takes_a_relative_config() {
    let sb = Sandbox::new("deliver-by-hand");
    let (command, sent) = (sb.dir().join("send-code"), sb.dir().join("sent"));
    sb.write_config(&format!(
        "[delivery]\ncommand = \"{}\"\n",
        command.display()
    ));
    fs::write(
        &command,
        format!(
            "#!/bin/sh\n{{ printf '%s %s ' \"$1\" \"$2\"; cat; }} > {}\n",
            sent.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&command, fs::Permissions::from_mode(0o755)).unwrap();
    let mut cmd = Command::new(cli_path());
    cmd.current_dir(sb.dir())
        .args(["--config", "twofactor.toml", "deliver"]);
    clean_env(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"daemon\n+1 555 0100\n123456\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "twofactor deliver: code for daemon sent\n"
    );
    assert_eq!(read(&sent), "daemon +1 555 0100 123456\n");
}

/// A group-readable (0640) secret file makes `check` exit 1 naming the file
/// and `chmod 0600`, in text and in `--json`.
#[test]
fn check_reports_a_group_readable_secret_file_with_the_chmod_fix() {
    let (sb, _) = enrolled("check-mode", "");
    let path = file(&sb, "daemon.secret");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let shown = path.display().to_string();

    let out = cli(&sb, &["check"]).expect(1);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(
        lines[0].starts_with(&format!("{shown}: ")),
        "{}",
        out.stdout
    );
    assert!(lines[0].contains("chmod 0600"), "{}", out.stdout);
    assert_eq!(lines[1], "1 problem(s) found.");

    let v = cli(&sb, &["check", "--json"]).expect(1).json();
    assert_problems(&v, &[(&path, "0640")]);
    // check only reads: the mode is left for the admin to fix.
    assert_eq!(mode(&path), 0o640);
}

/// A stray `junk.txt` in the state directory is reported as unexpected.
#[test]
fn check_reports_a_stray_file_in_the_state_dir() {
    let (sb, _) = enrolled("check-junk", "");
    let junk = file(&sb, "junk.txt");
    fs::write(&junk, "hello\n").unwrap();
    fs::set_permissions(&junk, fs::Permissions::from_mode(0o600)).unwrap();
    let v = cli(&sb, &["check", "--json"]).expect(1).json();
    assert_problems(&v, &[(&junk, "unexpected")]);
}

/// A leftover temp file `.daemon.state.tmp-1-ab` is reported as stale.
#[test]
fn check_reports_a_stale_temporary_file() {
    let (sb, _) = enrolled("check-tmp", "");
    let tmp = file(&sb, ".daemon.state.tmp-1-ab");
    fs::write(&tmp, "version = 1\n").unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).unwrap();
    let out = cli(&sb, &["check"]).expect(1);
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("{}: ", tmp.display())))
        .unwrap_or_else(|| panic!("{} not named:\n{}", tmp.display(), out.stdout));
    assert!(line.contains("stale"), "{line}");
    assert!(
        out.stdout.ends_with("1 problem(s) found.\n"),
        "{}",
        out.stdout
    );
}

/// An unknown config key (`nullok = true`) makes `check` exit 1 naming the
/// key and the config file.
#[test]
fn check_reports_an_unknown_config_key() {
    let sb = sandbox("check-config", "nullok = true\n");
    let out = cli(&sb, &["check"]).expect(1);
    assert!(out.stdout.contains("nullok"), "{}", out.stdout);
    assert!(
        out.stdout
            .starts_with(&format!("{}: ", sb.config_path().display())),
        "{}",
        out.stdout
    );
    let v = cli(&sb, &["check", "--json"]).expect(1).json();
    assert_eq!(v["ok"], json!(false));
    assert_eq!(
        v["problems"][0]["path"],
        json!(sb.config_path().display().to_string())
    );
}

/// A state directory with mode 0755 is reported with the 0700 it needs.
#[test]
fn check_reports_a_state_dir_that_is_not_0700() {
    let (sb, _) = enrolled("check-dirmode", "");
    fs::set_permissions(sb.state_dir(), fs::Permissions::from_mode(0o755)).unwrap();
    let v = cli(&sb, &["check", "--json"]).expect(1).json();
    assert_problems(&v, &[(sb.state_dir(), "0700")]);
}

/// A stand-in for `/` for `check --root`: `etc/pam.d` with `common-auth`
/// running the module with `module_args` (after the password block, as
/// pam-auth-update puts it) and `login` and `sshd` including it, `passwd`
/// with root, daemon (enrolled in these tests) and tfalice with login
/// shells and nobody with nologin, and `group`.
fn fake_root(sb: &Sandbox, module_args: &str) -> PathBuf {
    let root = sb.dir().join("root");
    let pam_d = root.join("etc/pam.d");
    fs::create_dir_all(&pam_d).unwrap();
    fs::write(
        pam_d.join("common-auth"),
        format!(
            "# here are the per-package modules (the \"Primary\" block)\n\
             auth\t[success=1 default=ignore]\tpam_unix.so nullok\n\
             auth\trequisite\t\t\tpam_deny.so\n\
             auth\trequired\t\t\tpam_permit.so\n\
             # auth requisite pam_twofactor.so (a comment does not count)\n\
             auth\trequisite\t\t\tpam_twofactor.so {module_args}\n"
        ),
    )
    .unwrap();
    for service in ["login", "sshd"] {
        fs::write(
            pam_d.join(service),
            "@include common-auth\naccount required pam_permit.so\n",
        )
        .unwrap();
    }
    fs::write(pam_d.join("cron"), "account required pam_permit.so\n").unwrap();
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\n\
         daemon:x:1:1:daemon:/usr/sbin:/bin/sh\n\
         nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
         tfalice:x:1000:1000:Alice:/home/tfalice:/bin/bash\n",
    )
    .unwrap();
    fs::write(root.join("etc/group"), "root:x:0:\nadmins:x:50:tfalice\n").unwrap();
    root
}

/// Enabling the module under `unenrolled = "deny"` locks out every account
/// that is not enrolled (issue 17): `check` reads the PAM stacks (through
/// `@include common-auth`) and names each account with a login shell that
/// is not enrolled, root first, with the fix; nologin accounts and the
/// enrolled daemon are not named. Under `unenrolled = "skip"`, for a
/// module line with another config, or for members of `[exempt] groups`,
/// nothing (or less) is reported.
#[test]
fn check_names_accounts_the_enabled_module_would_lock_out() {
    let (sb, _) = enrolled("check-lockout", "");
    let config = format!("config={}", sb.config_path().display());
    let root = fake_root(&sb, &config);
    let root_arg = root.display().to_string();
    let common_auth = root.join("etc/pam.d/common-auth");

    let v = cli(&sb, &["check", "--json", "--root", &root_arg])
        .expect(1)
        .json();
    assert_problems(
        &v,
        &[
            (&common_auth, "root (shell /bin/bash) is not enrolled"),
            (&common_auth, "tfalice (shell /bin/bash) is not enrolled"),
        ],
    );
    let root_problem = v["problems"][0]["problem"].as_str().unwrap();
    for text in [
        "unenrolled = \"deny\"",
        "through login, sshd",
        "twofactor enroll root",
        "unenrolled = \"skip\"",
    ] {
        assert!(root_problem.contains(text), "{text}: {root_problem}");
    }
    let out = cli(&sb, &["check", "--root", &root_arg]).expect(1);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", out.stdout);
    assert!(
        lines[0].starts_with(&format!("{}: root ", common_auth.display())),
        "{}",
        out.stdout
    );
    assert_eq!(lines[2], "2 problem(s) found.");

    // Once root is enrolled, only tfalice is left.
    cli_secret_at(&sb, &["enroll", "root", "--secret-file", "-"], SECRET, T0).expect(0);
    let v = cli(&sb, &["check", "--json", "--root", &root_arg])
        .expect(1)
        .json();
    assert_problems(&v, &[(&common_auth, "tfalice (shell /bin/bash)")]);

    // A member of an [exempt] groups group skips the code.
    sb.write_config("[exempt]\ngroups = [\"admins\"]\n");
    let v = cli(&sb, &["check", "--json", "--root", &root_arg])
        .expect(0)
        .json();
    assert_eq!(
        v,
        json!({"ok": true, "problems": [], "changed": false, "schema": 1})
    );

    // unenrolled = "skip": nobody is locked out.
    sb.write_config("unenrolled = \"skip\"\n");
    cli(&sb, &["disable", "root"]).expect(0);
    let v = cli(&sb, &["check", "--json", "--root", &root_arg])
        .expect(0)
        .json();
    assert_eq!(
        v,
        json!({"ok": true, "problems": [], "changed": false, "schema": 1})
    );

    // A module line without config= reads the default config, not this
    // one: nothing to report under this config's deny.
    sb.write_config("");
    let other = fake_root(&sb, "debug").display().to_string();
    let v = cli(&sb, &["check", "--json", "--root", &other])
        .expect(0)
        .json();
    assert_eq!(
        v,
        json!({"ok": true, "problems": [], "changed": false, "schema": 1})
    );
}

/// With `state_dir` under the world-writable `/tmp`, `check` and `enroll`
/// name `/tmp` and say to move `state_dir`; they never suggest changing
/// `/tmp`, a system directory twofactor does not own (issue 17).
#[test]
fn check_and_enroll_with_state_dir_under_tmp_say_to_move_it() {
    let sb = sandbox("check-tmp-state", "");
    let tmp = std::env::temp_dir().join(format!("tf-cli-tmpstate-{}", std::process::id()));
    fs::create_dir_all(&tmp).unwrap();
    fs::set_permissions(&tmp, fs::Permissions::from_mode(0o700)).unwrap();
    fs::write(
        sb.config_path(),
        format!("state_dir = \"{}\"\n", tmp.display()),
    )
    .unwrap();
    let v = cli(&sb, &["check", "--json"]).expect(1).json();
    let enroll = cli(&sb, &["enroll", USER, "--json"]);
    fs::remove_dir_all(&tmp).unwrap();
    let above = tmp.parent().unwrap();
    assert_problems(&v, &[(above, "is group- or world-writable")]);
    let problem = v["problems"][0]["problem"].as_str().unwrap();
    let enroll = enroll.expect(6);
    for text in [problem, enroll.stderr.as_str()] {
        assert!(
            text.contains(
                "state_dir must be moved below directories owned by root that nobody else can write"
            ),
            "{text}"
        );
        assert!(!text.contains("chmod") && !text.contains("chown"), "{text}");
    }
    assert!(
        enroll.stderr.contains(&format!("{}: ", above.display())),
        "{}",
        enroll.stderr
    );
}

/// A damaged secret record makes `status` exit 6 naming the file, and `check`
/// reports it.
#[test]
fn a_damaged_secret_record_is_exit_6_and_reported_by_check() {
    let (sb, _) = enrolled("damaged", "");
    let path = file(&sb, "daemon.secret");
    fs::write(&path, "version = 1\nthis is not toml = = =\n").unwrap();
    assert_eq!(mode(&path), 0o600);
    let args = ["status", USER, "--json"];
    let out = cli(&sb, &args).expect(6);
    assert!(
        out.stderr.contains(&path.display().to_string()),
        "{}",
        out.stderr
    );
    assert_only_json_error(&out, &args, 6);
    let v = cli(&sb, &["check", "--json"]).expect(1).json();
    assert_eq!(v["problems"][0]["path"], json!(path.display().to_string()));
    assert_eq!(v["problems"].as_array().unwrap().len(), 1, "{v}");
}

/// A damaged state file makes `status` and `unlock` exit 6 naming the file,
/// is never silently reset, and `check` reports it.
#[test]
fn a_damaged_state_file_is_exit_6_untouched_and_reported_by_check() {
    let (sb, _) = enrolled("damaged-state", "");
    let path = file(&sb, "daemon.state");
    let garbage = "version = 1\nfailures = \"many\"\n";
    fs::write(&path, garbage).unwrap();
    let shown = path.display().to_string();
    for args in [&["status", USER, "--json"][..], &["unlock", USER]] {
        let out = cli(&sb, args).expect(6);
        assert!(out.stderr.contains(&shown), "{args:?}: {}", out.stderr);
        assert_eq!(read(&path), garbage, "{args:?} changed the state file");
    }
    let v = cli(&sb, &["check", "--json"]).expect(1).json();
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{v}");
    assert_eq!(problems[0]["path"], json!(shown));
}

/// `check` reports a secret record whose user is not in passwd, suggesting
/// `twofactor disable`, and `disable` (which needs no passwd entry) removes it.
#[test]
fn check_reports_a_record_of_a_user_missing_from_passwd() {
    let (sb, _) = enrolled("check-orphan", "");
    let orphan = file(&sb, "no-such-user-xyz.secret");
    fs::copy(file(&sb, "daemon.secret"), &orphan).unwrap();
    fs::set_permissions(&orphan, fs::Permissions::from_mode(0o600)).unwrap();
    let v = cli(&sb, &["check", "--json"]).expect(1).json();
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{v}");
    assert_eq!(problems[0]["path"], json!(orphan.display().to_string()));
    let problem = problems[0]["problem"].as_str().unwrap();
    assert!(problem.contains("passwd"), "{problem}");
    assert!(
        problem.contains("twofactor disable no-such-user-xyz"),
        "{problem}"
    );

    cli(&sb, &["disable", "no-such-user-xyz"]).expect(0);
    assert!(!orphan.exists());
    cli(&sb, &["check"]).expect(0);
}

/// `check` reports a name listed in /etc/passwd before an enrolled name with
/// the same uid: the module redirects aliases to their uid's first name
/// only. Runs `check` in a private mount namespace whose `/etc` is a
/// read-only overlay with a `passwd` of the test's on top (root only; the
/// machine's file is never touched, and a directory rather than the file
/// alone, which a rename on the host would silently unmount: TESTING.md).
#[test]
fn check_reports_an_alias_listed_before_an_enrolled_name() {
    if !root_or_skip(
        "check_reports_an_alias_listed_before_an_enrolled_name",
        "a private /etc/passwd in a mount namespace",
        &[Needs::EtcOverlay],
    ) {
        return;
    }
    let (sb, _) = enrolled("check-alias", "");
    let real = read(Path::new("/etc/passwd"));
    let etc = sb.dir().join("etc");
    fs::create_dir(&etc).unwrap();
    let check_with = |passwd: &str| {
        fs::write(etc.join("passwd"), passwd).unwrap();
        let out = Command::new("unshare")
            .args(["-m", "--propagation", "private", "sh", "-c"])
            .arg(
                "mount -t overlay tf-etc -o \"lowerdir=$1:/etc\" /etc && \
                 exec \"$2\" --config \"$3\" check --json",
            )
            .arg("sh")
            .arg(&etc)
            .arg(cli_path())
            .arg(sb.config_path())
            .output()
            .unwrap();
        CliRun::from(&out)
    };
    let v = check_with(&real).expect(0).json();
    assert_eq!(v["problems"], json!([]), "{v}");

    // An alias of daemon (uid 1) listed first.
    let alias = "tfalias:x:1:1::/:/usr/sbin/nologin\n";
    let v = check_with(&format!("{alias}{real}")).expect(1).json();
    let problems = v["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{v}");
    assert_eq!(problems[0]["path"], json!("/etc/passwd"));
    let problem = problems[0]["problem"].as_str().unwrap();
    assert!(
        problem.starts_with("tfalias (uid 1) is listed before daemon, who is enrolled"),
        "{problem}"
    );
    // Listed after daemon it is redirected: nothing to report.
    let v = check_with(&format!("{real}{alias}")).expect(0).json();
    assert_eq!(v["problems"], json!([]), "{v}");
}

/// Once a lock has expired the module counts
/// failures from zero again (README, "Counting"), and `status` shows that
/// count: 0 and no lock, then 1 after one more failure (it once kept
/// showing 5).
#[test]
fn status_after_the_lock_expires_reports_the_count_the_module_uses() {
    let (sb, _) = enrolled("status-expired", "");
    fail_logins(&sb, 5);
    let expiry = at_offset(T0, LOCK_SECONDS as i64);
    let status = || {
        let v = cli_at(&sb, &["status", USER, "--json"], &expiry)
            .expect(0)
            .json();
        (v["failed_attempts"].clone(), v["locked_until"].clone())
    };
    assert_eq!(status(), (json!(0), Value::Null));
    // The module's count: one more wrong code at expiry is failure 1, not 6.
    assert_denied(&login(&sb, wrong_code(), &expiry));
    assert_eq!(status(), (json!(1), Value::Null));
}

/// `check` text output: each line is `PATH: problem`, and a file-safety
/// problem does not repeat the path (it once printed `PATH: PATH: ...`).
#[test]
fn check_text_names_a_problem_path_only_once_before_the_colon() {
    let (sb, _) = enrolled("check-path-once", "");
    let path = file(&sb, "daemon.secret");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
    let shown = path.display().to_string();
    let out = cli(&sb, &["check"]).expect(1);
    assert_eq!(
        out.stdout,
        format!(
            "{shown}: has mode 0640; expected 0600 (fix: chmod 0600 {shown})\n\
             1 problem(s) found.\n"
        )
    );
}

/// `--config PATH` may come after the subcommand and its arguments.
#[test]
fn config_option_works_after_the_subcommand() {
    let (sb, _) = enrolled("config-after", "");
    let out = Command::new(cli_path())
        .args(["status", USER, "--json", "--config"])
        .arg(sb.config_path())
        .env("LC_ALL", "C")
        .env_remove("LD_PRELOAD")
        .env_remove("FAKETIME")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let v = CliRun::from(&out).expect(0).json();
    assert_eq!(v["user"], json!(USER));
    assert_eq!(v["enrolled"], json!(true));
    assert_eq!(v["backup_codes_remaining"], json!(10));
}

// ------------------------------------------- secrets and files named on the command line

/// How long a command that must not block may run: it takes milliseconds
/// (argon2 aside), a command blocked on a FIFO would run forever.
const NO_HANG: Duration = Duration::from_secs(10);

/// `twofactor --config <sandbox config> args...`, stdin `/dev/null`, killed
/// after [`NO_HANG`]: a command that blocks fails the test instead of
/// hanging it.
fn cli_bounded(sb: &Sandbox, args: &[&str]) -> CliRun {
    let mut cmd = Command::new(cli_path());
    cmd.arg("--config").arg(sb.config_path()).args(args);
    clean_env(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + NO_HANG;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() >= deadline {
            // Our own child, by its pid.
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "twofactor {args:?} still ran after {NO_HANG:?} (killed): it blocks\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        thread::sleep(Duration::from_millis(10));
    }
    CliRun::from(&child.wait_with_output().unwrap())
}

/// Asserts a refused command exited `code`, said `why` on stderr, never
/// showed `secret`, and left no file in the state directory.
fn assert_refused(sb: &Sandbox, out: &CliRun, code: i32, why: &str, secret: &str) {
    assert_eq!(
        out.code, code,
        "--- stdout ---\n{}--- stderr ---\n{}",
        out.stdout, out.stderr
    );
    assert!(out.stderr.contains(why), "{:?} not in: {}", why, out.stderr);
    for stream in [&out.stdout, &out.stderr] {
        assert!(!stream.contains(secret), "the secret was shown: {stream}");
    }
    assert_eq!(entries(sb), Vec::<String>::new(), "files written");
}

/// A directory `name` (0755) in the sandbox, standing for a user's home.
fn home_dir(sb: &Sandbox, name: &str) -> PathBuf {
    let dir = sb.dir().join(name);
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .unwrap_or_else(|e| panic!("mkfifo {}: {e}", path.display()));
}

/// `enroll --secret VALUE` puts the seed where every local user can read it
/// (/proc/PID/cmdline): refused as a usage error (exit 2) that names
/// --secret-file, never repeats the value, and writes nothing (not even a
/// lock file). Also `--secret=VALUE`, a bare `--secret`, a value that looks
/// like an option, and `--secret` before the user or beside --secret-file.
#[test]
fn enroll_secret_in_the_arguments_is_refused_with_exit_2_naming_secret_file() {
    let sb = sandbox("secret-argv", "");
    let seed = sb.dir().join("seed");
    write_private(&seed, SECRET);
    let inline = format!("--secret={SECRET}");
    let dashed = format!("-{SECRET}");
    let seed = seed.to_str().unwrap();
    let cases: &[&[&str]] = &[
        &["enroll", USER, "--secret", SECRET],
        &["enroll", USER, "--secret", SECRET, "--json"],
        &["enroll", USER, &inline],
        &["enroll", "--secret", SECRET, USER, "--force"],
        &["enroll", USER, "--secret"],
        &["enroll", USER, "--secret", &dashed],
        &["enroll", USER, "--secret", SECRET, "--secret-file", seed],
    ];
    for args in cases {
        let out = cli_bounded(&sb, args);
        assert_refused(&sb, &out, 2, "--secret-file", SECRET);
        assert!(out.stderr.contains("/proc"), "{}", out.stderr);
        assert_only_json_error(&out, args, 2);
    }
    // Where clap refuses first (no user, a bad value elsewhere), its
    // message does not repeat the secret either.
    for args in [
        &["enroll", "--secret", SECRET][..],
        &["enroll", USER, "--secret", SECRET, "--digits", "x"][..],
    ] {
        let out = cli_bounded(&sb, args);
        assert_refused(&sb, &out, 2, "", SECRET);
    }
    // The refusal is ours, not clap's "unexpected argument", and --help
    // does not offer --secret.
    let help = cli(&sb, &["enroll", "--help"]).expect(0);
    assert!(
        help.stdout.contains("--secret-file <FILE>"),
        "{}",
        help.stdout
    );
    assert!(!help.stdout.contains("--secret "), "{}", help.stdout);
    assert!(!help.stdout.contains("--secret <"), "{}", help.stdout);
}

/// `--secret-file -` reads the seed from stdin (surrounding blanks and the
/// newline trimmed, lower case and groups accepted); the module then
/// accepts oathtool's code for it. More than 1 KiB on stdin is refused.
#[test]
fn enroll_secret_file_dash_reads_stdin_and_oathtools_code_logs_in() {
    let sb = sandbox("secret-stdin", "");
    sb.write_service(SVC, &sb.module_line(""));
    let grouped = format!("  {}\t", SECRET.to_ascii_lowercase());
    let args = ["enroll", USER, "--secret-file", "-", "--json"];
    let v = cli_secret_at(&sb, &args, &grouped, T0).expect(0).json();
    assert_eq!(v["secret"], json!(SECRET));
    let text = read(&file(&sb, "daemon.secret"));
    assert!(
        text.lines().any(|l| l == format!("secret = \"{SECRET}\"")),
        "{text}"
    );
    let ok = login(&sb, &oathtool_code(SECRET, "SHA1", 6, 30, T0), T0);
    assert!(ok.succeeded(), "{ok}");

    let big = "A".repeat(1025);
    let out = cli_secret(&sb, &["enroll", "bin", "--secret-file", "-"], &big);
    let out = out.expect(7);
    assert!(
        out.stderr.contains("more than 1024 bytes"),
        "{}",
        out.stderr
    );
    assert!(!file(&sb, "bin.secret").exists());
}

/// A seed file that group or others can read, or that another user owns,
/// is refused (exit 6) with its mode and the fix, and nothing is written;
/// 0600 and 0400 root files are read.
#[test]
fn enroll_secret_file_readable_by_others_is_refused_with_the_mode_and_fix() {
    let sb = sandbox("secret-file-mode", "");
    let seed = sb.dir().join("seed");
    let path = seed.to_str().unwrap();
    let args = ["enroll", USER, "--secret-file", path];
    for mode in [0o640, 0o604, 0o644, 0o660, 0o602] {
        write_file_mode(&seed, SECRET, mode);
        let out = cli_bounded(&sb, &args);
        let why = format!("has mode {mode:04o}; expected 0600 (fix: chmod 0600 {path})");
        assert_refused(&sb, &out, 6, &why, SECRET);
    }
    if root_or_skip(
        "enroll_secret_file_readable_by_others_is_refused_with_the_mode_and_fix/owner",
        "a seed file owned by another user",
        &[],
    ) {
        write_file_mode(&seed, SECRET, 0o600);
        std::os::unix::fs::chown(&seed, Some(1), Some(1)).unwrap();
        let out = cli_bounded(&sb, &args);
        assert_refused(&sb, &out, 6, "is owned by uid 1; expected root", SECRET);
        fs::remove_file(&seed).unwrap();
    }
    for mode in [0o600, 0o400] {
        write_file_mode(&seed, &format!("{SECRET}\n"), mode);
        let v = cli_bounded(
            &sb,
            &["enroll", USER, "--force", "--secret-file", path, "--json"],
        )
        .expect(0)
        .json();
        assert_eq!(v["secret"], json!(SECRET), "mode {mode:04o}");
    }
}

/// A symlink (even to a good 0600 seed file), a FIFO, a directory, a
/// device or a missing file at the `--secret-file` path is refused at once
/// (exit 6): nothing blocks on the FIFO, nothing is written.
#[test]
fn enroll_secret_file_symlink_fifo_or_directory_is_refused_without_hanging() {
    let sb = sandbox("secret-file-type", "");
    let dir = home_dir(&sb, "seeds");
    let good = dir.join("good");
    write_private(&good, SECRET);
    let link = dir.join("link");
    std::os::unix::fs::symlink(&good, &link).unwrap();
    let fifo = dir.join("fifo");
    mkfifo(&fifo);
    let cases: &[(&Path, &str)] = &[
        (&link, "is a symbolic link"),
        (&fifo, "is not a regular file"),
        (&dir, "is not a regular file"),
        (Path::new("/dev/zero"), "is not a regular file"),
        (
            &dir.join("missing"),
            "open failed: No such file or directory",
        ),
    ];
    for (path, why) in cases {
        let out = cli_bounded(
            &sb,
            &["enroll", USER, "--secret-file", path.to_str().unwrap()],
        );
        assert_refused(&sb, &out, 6, why, SECRET);
        assert!(
            out.stderr.contains(&path.display().to_string()),
            "{}",
            out.stderr
        );
    }
}

/// A google-authenticator file: the 160-bit RFC seed, TOTP, one scratch code.
const GA_FILE: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n\" TOTP_AUTH\n12345678\n";

/// A symlink (to a valid google-authenticator file: the user could point it
/// at any file root can read), a FIFO, a directory or a device at an
/// import path is refused at once with exit 6 (a file-safety problem),
/// for both kinds of import, and nothing is written.
#[test]
fn import_refuses_a_symlink_fifo_or_directory_at_the_path_without_hanging() {
    let sb = sandbox("import-type", "");
    let home = home_dir(&sb, "home");
    let real = home.join("real");
    write_file_mode(&real, GA_FILE, 0o400);
    let link = home.join(".google_authenticator");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let fifo = home.join("fifo");
    mkfifo(&fifo);
    let cases: &[(&Path, &str)] = &[
        (&link, "is a symbolic link"),
        (&fifo, "is not a regular file"),
        (&home, "is not a regular file"),
        (Path::new("/dev/zero"), "is not a regular file"),
    ];
    for (path, why) in cases {
        let path = path.to_str().unwrap();
        for args in [
            &["import", USER, "--google-authenticator", path][..],
            &["import", "--oath-usersfile", path, "--json"][..],
        ] {
            let out = cli_bounded(&sb, args);
            assert_refused(&sb, &out, 6, why, SECRET);
            assert!(out.stderr.contains(path), "{}", out.stderr);
            assert_only_json_error(&out, args, 6);
        }
    }
}

/// The user swaps a FIFO and a good file at the import path while root
/// imports (an atomic exchange, again and again): every run either imports
/// the file it opened or refuses the FIFO with exit 6; none blocks (a check
/// of the path followed by a second lookup to read it could open the FIFO
/// and wait forever for a writer).
#[test]
fn import_while_the_user_swaps_a_fifo_in_never_hangs() {
    use nix::fcntl::{AT_FDCWD, RenameFlags, renameat2};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// Stops the swapping thread however the test ends.
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    let sb = sandbox("import-swap", "");
    let home = home_dir(&sb, "home");
    let path = home.join(".google_authenticator");
    // No scratch codes: no argon2, so many runs fit in a second or two.
    write_file_mode(
        &path,
        "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\n\" TOTP_AUTH\n",
        0o400,
    );
    let fifo = home.join("fifo");
    mkfifo(&fifo);
    let stop = Stop(Arc::new(AtomicBool::new(false)));
    let swapper = {
        let (stop, path, fifo) = (stop.0.clone(), path.clone(), fifo.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                renameat2(
                    AT_FDCWD,
                    &path,
                    AT_FDCWD,
                    &fifo,
                    RenameFlags::RENAME_EXCHANGE,
                )
                .unwrap();
            }
        })
    };
    let (mut imported, mut refused) = (0, 0);
    for _ in 0..60 {
        let args = [
            "import",
            USER,
            "--google-authenticator",
            path.to_str().unwrap(),
            "--force",
        ];
        let out = cli_bounded(&sb, &args);
        match out.code {
            0 => imported += 1,
            6 if out.stderr.contains("is not a regular file") => refused += 1,
            _ => panic!(
                "exit {}\n--- stdout ---\n{}--- stderr ---\n{}",
                out.code, out.stdout, out.stderr
            ),
        }
    }
    drop(stop);
    swapper.join().unwrap();
    assert!(
        imported > 0 && refused > 0,
        "{imported} imported, {refused} refused"
    );
}

/// After a google-authenticator import the admin is told to delete the
/// user's file (it still holds the seed, readable by the user): a line of
/// text output and `delete_file` in the JSON (null for a pam_oath users
/// file). The imported seed logs in with oathtool's code.
#[test]
fn import_google_authenticator_tells_the_admin_to_delete_the_file() {
    let sb = sandbox("import-delete", "");
    sb.write_service(SVC, &sb.module_line(""));
    let home = home_dir(&sb, "home");
    let ga = home.join(".google_authenticator");
    write_file_mode(&ga, GA_FILE, 0o400);
    let path = ga.to_str().unwrap();

    let v = cli_bounded(
        &sb,
        &["import", USER, "--google-authenticator", path, "--json"],
    )
    .expect(0)
    .json();
    assert_eq!(v["delete_file"], json!(path), "{v}");
    assert_eq!(v["imported"][0]["user"], json!(USER), "{v}");
    assert_eq!(v["imported"][0]["backup_codes"], json!(["12345678"]), "{v}");
    let ok = login(&sb, &oathtool_code(SECRET, "SHA1", 6, 30, T0), T0);
    assert!(ok.succeeded(), "{ok}");

    let text = cli_bounded(
        &sb,
        &["import", USER, "--google-authenticator", path, "--force"],
    )
    .expect(0);
    let want = format!(
        "Now delete {path}: it still holds the secret, readable by its owner, and whoever reads it can make codes (rm {path})"
    );
    assert_eq!(
        text.stdout.lines().last(),
        Some(want.as_str()),
        "{}",
        text.stdout
    );
    assert!(
        ga.exists(),
        "the CLI itself must not delete the user's file"
    );

    let users = home.join("users.oath");
    write_file_mode(
        &users,
        "HOTP/T30 bin - 3132333435363738393031323334353637383930\n",
        0o600,
    );
    let v = cli_bounded(
        &sb,
        &[
            "import",
            "--oath-usersfile",
            users.to_str().unwrap(),
            "--json",
        ],
    )
    .expect(0)
    .json();
    assert_eq!(v["delete_file"], Value::Null, "{v}");
    assert_eq!(v["imported"][0]["user"], json!("bin"), "{v}");
}

// ------------------------------------------- what admins and scripts expect (issue 17)

/// `twofactor args...` without `--config` (for `--help`, `--version` and
/// `completions`, which read no configuration).
fn cli_bare(args: &[&str]) -> CliRun {
    let mut cmd = Command::new(cli_path());
    cmd.args(args);
    clean_env(&mut cmd);
    CliRun::from(&cmd.stdin(Stdio::null()).output().unwrap())
}

/// `list --json` shows every enrolled user, sorted, with devices, backup
/// codes left, failures, lock and the last success the module recorded
/// (null before the first); the text form has one line per user.
#[test]
fn list_shows_every_enrolled_user_with_codes_failures_lock_and_last_success() {
    let (sb, _) = enrolled("list", "");
    let t1 = at_offset(T0, 30);
    let ok = login(&sb, &oathtool_code(SECRET, "SHA1", 6, 30, &t1), &t1);
    assert!(ok.succeeded(), "{ok}");
    let t2 = at_offset(T0, 60);
    assert_denied(&login(&sb, wrong_code(), &t2));
    cli_secret_at(&sb, &["enroll", "bin", "--secret-file", "-"], SECRET, T0).expect(0);
    cli_at(&sb, &["set-delivery", "bin", "+15555550100"], T0).expect(0);

    let v = cli_at(&sb, &["list", "--json"], &t2).expect(0).json();
    let device = json!({
        "label": "default",
        "created": "2030-06-15T12:00:00Z",
        "algorithm": "SHA1",
        "digits": 6,
        "period": 30,
        "drift_seconds": 0,
    });
    assert_eq!(
        v,
        json!({
            "schema": 1,
            "changed": false,
            "users": [
                {
                    "user": "bin",
                    "devices": [device],
                    "backup_codes_remaining": 10,
                    "failed_attempts": 0,
                    "locked_until": null,
                    "last_success": null,
                    "deliver_to": "+15555550100",
                },
                {
                    "user": "daemon",
                    "devices": [device],
                    "backup_codes_remaining": 10,
                    "failed_attempts": 1,
                    "locked_until": null,
                    "last_success": "2030-06-15T12:00:30Z",
                    "deliver_to": null,
                },
            ],
        })
    );
    let st = toml_file(&file(&sb, "daemon.state"));
    assert_eq!(
        st["last_success"].as_integer(),
        Some(T0_UNIX as i64 + 30),
        "{st}"
    );

    let text = cli_at(&sb, &["list"], &t2).expect(0);
    assert_eq!(
        text.stdout,
        "USER\tDEVICES\tBACKUP CODES LEFT\tFAILURES\tLOCK\tLAST SUCCESS\n\
         bin\tdefault\t10\t0\t-\tnever\n\
         daemon\tdefault\t10\t1\t-\t2030-06-15 12:00:30 UTC\n"
    );
    cli(&sb, &["disable", "bin"]).expect(0);
    cli(&sb, &["disable", USER]).expect(0);
    let empty = cli(&sb, &["list", "--json"]).expect(0).json();
    assert_eq!(empty, json!({"schema": 1, "changed": false, "users": []}));
    assert_eq!(
        cli(&sb, &["list"]).expect(0).stdout,
        "no user is enrolled\n"
    );
}

/// Under `--json`, every error is exactly one object `{"error", "exit",
/// "schema"}` on stdout, `exit` equal to the exit status documented in
/// twofactor(8); the message also goes to stderr.
#[test]
fn errors_under_json_are_one_object_on_stdout_with_the_documented_exit() {
    let (sb, _) = enrolled("json-errors", "");
    let missing = sb.dir().join("no-such.toml");
    let missing = missing.to_str().unwrap();
    let cases: &[(&[&str], i32, &str)] = &[
        (&["status", "no-such-user-xyz", "--json"], 4, "passwd"),
        (&["enroll", USER, "--json"], 5, "already enrolled"),
        (&["unlock", "bin", "--json"], 5, "not enrolled"),
        (&["disable", "bin", "--json"], 5, "not enrolled"),
        (
            &["enroll", USER, "--force", "--digits", "9", "--json"],
            7,
            "--digits",
        ),
        (
            &["set-delivery", USER, "nobody", "--json"],
            7,
            "phone number",
        ),
        (
            &[
                "import",
                USER,
                "--google-authenticator",
                "/nonexistent/ga",
                "--json",
            ],
            6,
            "/nonexistent/ga",
        ),
        (&["list", "--json", "--config", missing], 6, "no such file"),
        (&["list", "--json", "--frobnicate"], 2, "--frobnicate"),
    ];
    for (args, code, text) in cases {
        let out = cli(&sb, args);
        assert_eq!(out.code, *code, "{args:?}\n{}{}", out.stdout, out.stderr);
        assert_eq!(out.stdout.lines().count(), 1, "{args:?}: {}", out.stdout);
        let v = out.json();
        let obj = v.as_object().unwrap();
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["error", "exit", "schema"], "{args:?}: {v}");
        assert_eq!(v["exit"], json!(code), "{args:?}: {v}");
        assert_eq!(v["schema"], json!(1), "{args:?}: {v}");
        let message = v["error"].as_str().unwrap();
        assert!(message.contains(text), "{args:?}: {message}");
        assert!(!out.stderr.is_empty(), "{args:?}: no message on stderr");
    }
}

/// An explicit `--config PATH` that does not exist is exit 6 naming the
/// path, for every command (also `check`), never the defaults; nothing
/// is written.
#[test]
fn an_explicit_config_that_does_not_exist_is_exit_6_for_every_command() {
    let sb = sandbox("no-config", "");
    let missing = sb.dir().join("typo.toml");
    for args in [
        &["status", USER][..],
        &["list"],
        &["check"],
        &["enroll", USER],
    ] {
        let mut cmd = Command::new(cli_path());
        cmd.args(args).arg("--config").arg(&missing);
        clean_env(&mut cmd);
        let out = CliRun::from(&cmd.stdin(Stdio::null()).output().unwrap()).expect(6);
        assert!(
            out.stderr
                .contains(&format!("--config {}: no such file", missing.display())),
            "{args:?}: {}",
            out.stderr
        );
        assert_eq!(out.stdout, "", "{args:?}");
    }
    assert_eq!(entries(&sb), Vec::<String>::new());
}

/// With `--config`, a non-root caller denied root's state directory exits
/// 3 ("not root", as without `--config`) with the path and `sudo`, not 6.
#[test]
fn with_config_a_non_root_caller_denied_root_files_exits_3() {
    if !root_or_skip(
        "with_config_a_non_root_caller_denied_root_files_exits_3",
        "it switches to user nobody",
        &[Needs::Program("setpriv", "util-linux")],
    ) {
        return;
    }
    let (sb, _) = enrolled("not-root-config", "");
    fs::set_permissions(sb.config_path(), fs::Permissions::from_mode(0o644)).unwrap();
    for args in [
        &["status", USER][..],
        &["list"],
        &["unlock", USER],
        &["check"],
    ] {
        let mut with_config = vec!["--config", sb.config_path().to_str().unwrap()];
        with_config.extend_from_slice(args);
        let out = cli_as_nobody(&sb, &with_config);
        let out = CliRun::from(&out).expect(3);
        assert!(
            out.stderr.contains("must run as root"),
            "{args:?}: {}",
            out.stderr
        );
        assert!(out.stderr.contains("sudo"), "{args:?}: {}", out.stderr);
    }
}

/// `enroll --if-missing` on an enrolled user and `disable --if-enrolled`
/// on an unenrolled one exit 0 with `"changed": false` and leave the files
/// byte for byte; the first run of each changes and says `true`.
#[test]
fn if_missing_and_if_enrolled_make_enroll_and_disable_idempotent() {
    let sb = sandbox("idempotent", "");
    let enroll = ["enroll", USER, "--if-missing", "--json"];
    let first = cli_at(&sb, &enroll, T0).expect(0).json();
    assert_eq!(first["changed"], json!(true));
    assert_eq!(first["schema"], json!(1));
    backup_codes(&first, 10);
    let secret_before = read(&file(&sb, "daemon.secret"));
    let state_before = read(&file(&sb, "daemon.state"));
    let again = cli_at(&sb, &enroll, T0).expect(0).json();
    assert_eq!(again, json!({"schema": 1, "user": USER, "changed": false}));
    let text = cli_at(&sb, &["enroll", USER, "--if-missing"], T0).expect(0);
    assert_eq!(text.stdout, "daemon: already enrolled; nothing changed\n");
    assert_eq!(read(&file(&sb, "daemon.secret")), secret_before);
    assert_eq!(read(&file(&sb, "daemon.state")), state_before);
    // Without it, the same enroll is still refused.
    cli_at(&sb, &["enroll", USER], T0).expect(5);
    // --if-missing with --force or --add is a usage error.
    cli(&sb, &["enroll", USER, "--if-missing", "--force"]).expect(2);
    cli(
        &sb,
        &["enroll", USER, "--if-missing", "--add", "--label", "x"],
    )
    .expect(2);

    let disable = ["disable", USER, "--if-enrolled", "--json"];
    let gone = cli(&sb, &disable).expect(0).json();
    assert_eq!(gone, json!({"schema": 1, "user": USER, "changed": true}));
    assert!(!file(&sb, "daemon.secret").exists());
    let still = cli(&sb, &disable).expect(0).json();
    assert_eq!(still, json!({"schema": 1, "user": USER, "changed": false}));
    let text = cli(&sb, &["disable", USER, "--if-enrolled"]).expect(0);
    assert_eq!(text.stdout, "daemon: not enrolled; nothing changed\n");
    cli(&sb, &["disable", USER]).expect(5);
    assert!(entries(&sb).iter().all(|n| n.ends_with(".lock")));
}

/// Every command's `--json` object carries `"schema": 1` and `"changed"`:
/// true where the command changed the user's files, false where it did not
/// (read-only commands, an unlock or delivery target with nothing to do).
#[test]
fn every_json_output_carries_schema_1_and_changed() {
    let (sb, _) = enrolled("schema", "");
    let ga = home_dir(&sb, "home-bin").join(".google_authenticator");
    fs::write(&ga, format!("{SECRET}\n\" TOTP_AUTH\n")).unwrap();
    let ga = ga.to_str().unwrap();
    let cases: &[(&[&str], bool)] = &[
        (&["status", USER, "--json"], false),
        (&["devices", USER, "--json"], false),
        (&["list", "--json"], false),
        (&["check", "--json"], false),
        (
            &["enroll", USER, "--add", "--label", "tablet", "--json"],
            true,
        ),
        (&["remove-device", USER, "tablet", "--json"], true),
        (&["set-delivery", USER, "+15555550100", "--json"], true),
        (&["set-delivery", USER, "+15555550100", "--json"], false),
        (&["set-delivery", USER, "--json"], true),
        (&["unlock", USER, "--json"], false),
        (&["backup-codes", USER, "--json"], true),
        (
            &["import", "bin", "--google-authenticator", ga, "--json"],
            true,
        ),
        (&["disable", "bin", "--json"], true),
    ];
    for (args, changed) in cases {
        let v = cli_at(&sb, args, T0).expect(0).json();
        assert_eq!(v["schema"], json!(1), "{args:?}: {v}");
        assert_eq!(v["changed"], json!(changed), "{args:?}: {v}");
    }
    fail_logins(&sb, 1);
    let v = cli_at(&sb, &["unlock", USER, "--json"], T0)
        .expect(0)
        .json();
    assert_eq!(v, json!({"schema": 1, "user": USER, "changed": true}));
    let st = toml_file(&file(&sb, "daemon.state"));
    assert_eq!(st["failures"].as_integer(), Some(0), "{st}");
}

/// The subcommands `--help` describes, each with the options and
/// arguments it must name.
const HELP: &[(&str, &[&str])] = &[
    (
        "enroll",
        &[
            "<USER>",
            "--secret-file",
            "--algorithm",
            "--digits",
            "--period",
            "--force",
            "--add",
            "--label",
            "--deliver-to",
            "--if-missing",
            "--json",
            "--config",
        ],
    ),
    ("list", &["--json", "--config"]),
    ("devices", &["<USER>", "--json"]),
    ("remove-device", &["<USER>", "<LABEL>", "--json"]),
    ("set-delivery", &["<USER>", "[TARGET]", "--json", "E.164"]),
    (
        "import",
        &[
            "[USER]",
            "--google-authenticator",
            "--oath-usersfile",
            "--force",
            "--json",
        ],
    ),
    ("status", &["<USER>", "--json"]),
    ("unlock", &["<USER>", "--json"]),
    ("backup-codes", &["<USER>", "--json"]),
    ("disable", &["<USER>", "--if-enrolled", "--json"]),
    ("check", &["--json"]),
    ("deliver", &[]),
    ("agent", &[]),
];

/// `--help` of every command names each of its options and arguments with
/// a description and shows an example; `--version` prints the version.
#[test]
fn help_of_every_command_describes_each_option_and_shows_an_example() {
    for (command, words) in HELP {
        let out = cli_bare(&[command, "--help"]).expect(0);
        assert!(out.stdout.contains("Example"), "{command}: {}", out.stdout);
        assert!(
            out.stdout.contains(&format!("twofactor {command}")),
            "{command}: no example of it\n{}",
            out.stdout
        );
        for word in *words {
            // The option's line has a description after the name.
            let line = out
                .stdout
                .lines()
                .find(|l| l.trim_start().starts_with(word) || l.contains(&format!(" {word} ")))
                .or_else(|| out.stdout.lines().find(|l| l.contains(word)));
            let line = line.unwrap_or_else(|| panic!("{command}: {word} missing\n{}", out.stdout));
            assert!(!line.trim().is_empty(), "{command}: {word}");
        }
        for line in out.stdout.lines() {
            let t = line.trim_start();
            if t.starts_with("--") || t.starts_with('<') || t.starts_with('[') {
                let described = t.split("  ").filter(|p| !p.trim().is_empty()).count() > 1;
                assert!(
                    described,
                    "{command}: {t:?} has no description\n{}",
                    out.stdout
                );
            }
        }
    }
    let top = cli_bare(&["--help"]).expect(0);
    for (command, _) in HELP {
        assert!(top.stdout.contains(command), "{command} not in --help");
    }
    assert!(top.stdout.contains("Example"), "{}", top.stdout);
    let version = cli_bare(&["--version"]).expect(0);
    assert_eq!(
        version.stdout,
        format!("twofactor {}\n", env!("CARGO_PKG_VERSION"))
    );
}

/// `completions bash|zsh|fish` prints a non-empty script; each names
/// every subcommand, the hidden `completions` is not offered, and an
/// unknown shell is a usage error.
#[test]
fn completions_are_generated_for_bash_zsh_and_fish_and_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let out = cli_bare(&["completions", shell]).expect(0);
        assert!(out.stdout.len() > 500, "{shell}: {}", out.stdout);
        assert!(out.stdout.contains("twofactor"), "{shell}");
        for (command, _) in HELP {
            assert!(out.stdout.contains(command), "{shell}: {command} missing");
        }
        assert!(out.stdout.contains("if-missing"), "{shell}");
    }
    let bash = cli_bare(&["completions", "bash"]).stdout;
    assert!(bash.contains("complete -F _twofactor"), "{bash}");
    assert!(bash.contains("enroll") && bash.contains("set-delivery") && bash.contains("list"));
    assert!(
        cli_bare(&["completions", "zsh"])
            .stdout
            .starts_with("#compdef twofactor")
    );
    let help = cli_bare(&["--help"]).stdout;
    assert!(!help.contains("completions"), "{help}");
    cli_bare(&["completions", "powershell"]).expect(2);
}

/// `status` in text shows every device with its parameters and the
/// delivery target, as `--json` does.
#[test]
fn status_text_shows_every_device_and_the_delivery_target() {
    let (sb, _) = enrolled("status-text", "");
    let add = [
        "enroll", USER, "--add", "--label", "tablet", "--digits", "8", "--period", "60",
    ];
    cli_at(&sb, &add, T0).expect(0);
    cli(&sb, &["set-delivery", USER, "alice@example.org"]).expect(0);
    let text = cli_at(&sb, &["status", USER], T0).expect(0);
    assert_eq!(
        text.stdout,
        "daemon: enrolled (TOTP SHA1, 6 digits, 30 s)\n\
         devices:\n  \
         default\tTOTP SHA1 6 digits 30 s\tcreated 2030-06-15 12:00:00 UTC\tclock offset 0 s\n  \
         tablet\tTOTP SHA1 8 digits 60 s\tcreated 2030-06-15 12:00:00 UTC\tclock offset 0 s\n\
         codes by message to: alice@example.org\n\
         backup codes remaining: 10\n\
         failed attempts: 0\n\
         not locked\n"
    );
}

/// `set-delivery` and `enroll --deliver-to` take an E.164 number, an
/// e-mail address or a chat id, and refuse anything else with exit 7 and
/// the reason, leaving the record as it was.
#[test]
fn delivery_targets_of_an_unknown_shape_are_refused_with_exit_7_and_the_reason() {
    let (sb, _) = enrolled("target-shape", "");
    for good in [
        "+15555550100",
        "alice@example.org",
        "123456789",
        "-1001234567890",
    ] {
        cli(&sb, &["set-delivery", USER, good]).expect(0);
        let v = cli(&sb, &["status", USER, "--json"]).expect(0).json();
        assert_eq!(v["deliver_to"], json!(good));
    }
    let before = read(&file(&sb, "daemon.secret"));
    let cases = [
        ("5555550100x", "chat id"),
        ("+1234567", "8 to 15 digits"),
        ("+1555555010012345", "8 to 15 digits"),
        ("+1 555 555 0100", "E.164"),
        ("alice@example", "dot in the domain"),
        ("a@b@example.org", "one @"),
        ("alice", "e-mail address"),
    ];
    for (bad, why) in cases {
        let out = cli(&sb, &["set-delivery", USER, bad]).expect(7);
        assert!(out.stderr.contains(why), "{bad}: {}", out.stderr);
        assert_eq!(read(&file(&sb, "daemon.secret")), before, "{bad}");
    }
    let out = cli(&sb, &["enroll", "bin", "--deliver-to", "alice"]).expect(7);
    assert!(out.stderr.contains("e-mail address"), "{}", out.stderr);
    assert!(!file(&sb, "bin.secret").exists());
}

/// Runs `twofactor --config <sandbox config> args...` as `log` needs it
/// (its messages reach the test's /dev/log), with `SUDO_USER` set and
/// `stdin` as standard input.
fn cli_logged(sb: &Sandbox, log: &DevLog, sudo_user: &str, args: &[&str], stdin: &str) -> CliRun {
    use std::io::Write;
    let mut cmd = Command::new(cli_path());
    cmd.arg("--config").arg(sb.config_path()).args(args);
    clean_env(&mut cmd);
    cmd.env("SUDO_USER", sudo_user);
    let mut cmd = log.wrap(cmd);
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run twofactor");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    CliRun::from(&child.wait_with_output().unwrap())
}

/// Every change an admin makes leaves one syslog line (authpriv notice,
/// ident `twofactor`) naming the change, the user and who acted (uid,
/// login uid, sudo user), in order; never the secret, a backup code or
/// the whole delivery target; a command that changes nothing leaves none.
/// Root only: a socket of the test's own at /dev/log.
#[test]
fn admin_changes_are_logged_with_who_acted_and_no_secret() {
    if !root_or_skip(
        "admin_changes_are_logged_with_who_acted_and_no_secret",
        "a socket of its own at /dev/log",
        &[],
    ) {
        return;
    }
    let sb = sandbox("audit", "");
    let log = DevLog::bind(&sb);
    log.socket().set_nonblocking(true).unwrap();
    // Other tests log too while the socket exists: this marker is ours.
    let marker = format!("audit-{}", std::process::id());
    let run = |args: &[&str], stdin: &str| cli_logged(&sb, &log, &marker, args, stdin);
    let secret_in = format!("{SECRET}\n");
    let enrolled = run(
        &["enroll", USER, "--secret-file", "-", "--json"],
        &secret_in,
    )
    .expect(0)
    .json();
    run(&["status", USER], "").expect(0);
    run(&["unlock", USER], "").expect(0);
    run(&["set-delivery", USER, "+15555550100"], "").expect(0);
    run(
        &[
            "enroll",
            USER,
            "--add",
            "--label",
            "tablet",
            "--secret-file",
            "-",
        ],
        &format!("{SECRET_128}\n"),
    )
    .expect(0);
    run(&["remove-device", USER, "tablet"], "").expect(0);
    let again = run(&["backup-codes", USER, "--json"], "").expect(0).json();
    run(&["disable", USER], "").expect(0);

    let mut lines = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = log.socket().recv(&mut buf) {
        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
        if line.contains(&marker) {
            lines.push(line);
        }
    }
    let all = lines.join("\n");
    let events: Vec<&str> = lines
        .iter()
        .map(|l| {
            assert!(l.starts_with("<85>twofactor["), "{all}");
            assert!(
                l.contains("; by uid=0 loginuid=") && l.ends_with(&format!(" sudo_user={marker}")),
                "{all}"
            );
            let start = l.find("]: ").unwrap() + 3;
            &l[start..l.find("; by ").unwrap()]
        })
        .collect();
    assert_eq!(
        events,
        [
            "enrolled daemon (device default)",
            "set where codes by message for daemon go: +1555***0100",
            "added device tablet for daemon",
            "removed device tablet of daemon",
            "made new backup codes for daemon (the old ones no longer work)",
            "disabled daemon (secret and state removed)",
        ],
        "{all}"
    );
    let mut secrets = vec![
        SECRET.to_string(),
        SECRET_128.to_string(),
        "15555550100".into(),
    ];
    for json in [&enrolled, &again] {
        for code in json["backup_codes"].as_array().unwrap() {
            secrets.push(code.as_str().unwrap().replace('-', ""));
            secrets.push(code.as_str().unwrap().to_string());
        }
    }
    for secret in &secrets {
        assert!(!all.contains(secret.as_str()), "{secret} logged:\n{all}");
    }
}

/// Runs a copy of `twofactor` (in the sandbox's 0755 chain, so nobody can
/// run it wherever the checkout lives) as nobody with `args`, in C locale
/// (set after `--reset-env`, which clears the environment).
fn cli_as_nobody(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    let exe = sb.dir().join("twofactor");
    if !exe.exists() {
        fs::copy(cli_path(), &exe).unwrap();
        fs::set_permissions(&exe, fs::Permissions::from_mode(0o755)).unwrap();
    }
    Command::new(find_program("setpriv").unwrap())
        .args([
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "--reset-env",
            "env",
            "LC_ALL=C",
        ])
        .arg(&exe)
        .args(args)
        .env_remove("LD_PRELOAD")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}
