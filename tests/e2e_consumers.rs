//! End to end with the real consumers (`TESTING.md`, layer 3): Debian's
//! `/usr/sbin/sshd`, `sudo` and `su` load the built `libpam_twofactor.so`
//! from a copied `/etc/pam.d` in a private mount namespace, with throwaway
//! users that exist only in that namespace, the clock pinned at T0 by
//! libfaketime and every code computed by `oathtool`. See
//! `tests/e2e/support.rs` for how nothing on the machine changes.
//!
//! Root only. Not root, each test prints a loud `SKIPPED <name>: <reason>`
//! line and returns; as root, a test that cannot run (no `unshare -m`, no
//! overlayfs, a consumer missing) fails with its reason.
//! Tests are independent: each has its own sandbox, users, namespace and
//! sshd port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::os::unix::fs::PermissionsExt;

mod common;
#[path = "e2e/support.rs"]
mod e2e_support;

use common::{T0, T0_UNIX, utc};
use e2e_support::{PASSWORD, System, code_at, wrong_code};

/// The user who logs in (sshd, sudo) or is switched to (su).
const USER: &str = "e2ealice";
/// The non-root user who runs `su`.
const CALLER: &str = "e2ebob";
const KBD: &str = "keyboard-interactive";

/// The prompts ssh's askpass gets for `user` (OpenSSH prefixes `(user@host)`).
fn ssh_prompt(user: &str, prompt: &str) -> String {
    format!("({user}@127.0.0.1) {prompt}")
}

fn password_and_code_prompts(user: &str) -> Vec<String> {
    vec![
        ssh_prompt(user, "Password: "),
        ssh_prompt(user, "Verification code: "),
    ]
}

/// `default = <step>` in the state file: the step of the last accepted code.
fn accepted_step(at_unix: u64) -> String {
    format!("default = {}", at_unix / 30)
}

/// A system with USER (enrolled unless `enroll` is false) and sshd running
/// with `AuthenticationMethods keyboard-interactive` and the documented
/// password-then-code stack: Debian's `pam.d/sshd` with its `@include
/// common-auth` followed by our module (common-auth's pam_unix with
/// `nodelay`).
fn password_then_code(name: &str, config_extra: &str, enroll: bool) -> (System, Vec<String>) {
    let sys = System::new(name, config_extra);
    sys.add_user(USER);
    let backup = if enroll { sys.enroll(USER) } else { Vec::new() };
    let module = sys.module_line();
    sys.set_auth("sshd", &["@include common-auth", &module]);
    sys.start_sshd(KBD);
    (sys, backup)
}

/// sshd: password + current code log in and run a command; the code replayed later is refused.
#[test]
fn sshd_logs_in_with_password_and_code_and_refuses_the_code_replayed() {
    if !e2e_support::can_run() {
        return;
    }
    let (sys, _) = password_then_code("e2e-sshd-ok", "", true);
    let code = code_at(T0);

    let first = sys.ssh(USER, Some(PASSWORD), Some(&code));
    assert!(first.logged_in(), "{first}");
    assert_eq!(first.prompts, password_and_code_prompts(USER), "{first}");
    assert!(
        first.sshd_log.contains(&format!(
            "Accepted keyboard-interactive/pam for {USER} from 127.0.0.1"
        )),
        "{first}"
    );
    let state = sys.state(USER);
    assert!(state.contains(&accepted_step(T0_UNIX)), "{state}");
    assert_eq!(sys.state_value(USER, "failures").as_deref(), Some("0"));

    let replay = sys.ssh(USER, Some(PASSWORD), Some(&code));
    assert!(replay.denied(KBD), "{replay}");
    assert_eq!(replay.prompts, password_and_code_prompts(USER), "{replay}");
    assert_eq!(sys.state_value(USER, "failures").as_deref(), Some("1"));
    assert!(sys.state(USER).contains(&accepted_step(T0_UNIX)));
}

/// sshd: Enter at the code prompt makes the module, inside sshd's
/// privileged monitor, hand a code to the delivery service (its socket
/// outside the login's namespace, `twofactor deliver` per connection); the
/// command writes it where the askpass reads it, and that code logs in.
#[test]
fn sshd_sends_a_code_by_message_and_it_logs_in() {
    if !e2e_support::can_run() {
        return;
    }
    let (sys, _) = password_then_code("e2e-sshd-deliver", "", true);
    let command = sys.sb.dir().join("send-code");
    let sent = sys.sb.dir().join("message-code");
    std::fs::write(
        &command,
        format!(
            "#!/bin/sh\nprintf '%s %s\\n' \"$1\" \"$2\" > {0}.args\ncat > {0}\n",
            sent.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&command, std::fs::Permissions::from_mode(0o755)).unwrap();
    sys.sb.write_config(&format!(
        "[delivery]\ncommand = \"{}\"\nsocket = \"{}\"\n",
        command.display(),
        sys.sb.delivery_socket().display()
    ));
    sys.sb.start_delivery_service();
    let target = "+15555550100";
    assert_eq!(sys.cli(&["set-delivery", USER, target]).status, Some(0));

    let run = sys.ssh(USER, Some(PASSWORD), Some(""));
    assert!(run.logged_in(), "{run}");
    // The info line comes with the next prompt, in one askpass call.
    let mut prompts = password_and_code_prompts(USER);
    // The target masked (delivery::mask_target): `+1555***0100`.
    prompts.push(ssh_prompt(USER, "A code was sent to +1555***0100."));
    prompts.push("Code from the message: ".into());
    assert_eq!(run.prompts, prompts, "{run}");
    let code = std::fs::read_to_string(&sent).unwrap();
    assert!(
        code.len() == 7 && code[..6].bytes().all(|b| b.is_ascii_digit()),
        "{code:?}"
    );
    assert_eq!(
        std::fs::read_to_string(sent.with_extension("args")).unwrap(),
        format!("{USER} {target}\n")
    );
    assert_eq!(
        sys.sb.delivery_log(),
        format!("twofactor deliver: code for {USER} sent\n")
    );
    let state = sys.state(USER);
    assert!(!state.contains("delivered_code"), "used once: {state}");
}

/// sshd: password + wrong code is refused and counted; a wrong password never reaches the code.
#[test]
fn sshd_refuses_a_wrong_code_and_never_asks_for_one_after_a_wrong_password() {
    if !e2e_support::can_run() {
        return;
    }
    let (sys, _) = password_then_code("e2e-sshd-wrong", "", true);

    let wrong = sys.ssh(USER, Some(PASSWORD), Some(&wrong_code()));
    assert!(wrong.denied(KBD), "{wrong}");
    assert_eq!(wrong.prompts, password_and_code_prompts(USER), "{wrong}");
    assert_eq!(sys.state_value(USER, "failures").as_deref(), Some("1"));

    let bad_password = sys.ssh(USER, Some("not-the-password"), Some(&code_at(T0)));
    assert!(bad_password.denied(KBD), "{bad_password}");
    assert_eq!(
        bad_password.prompts,
        vec![ssh_prompt(USER, "Password: ")],
        "{bad_password}"
    );
    assert_eq!(sys.state_value(USER, "failures").as_deref(), Some("1"));
    assert_eq!(
        sys.state_value(USER, "rate_window_attempts").as_deref(),
        Some("1")
    );
}

/// sshd: a backup code logs in once, saying how many are left; used again it is refused.
#[test]
fn sshd_accepts_a_backup_code_once() {
    if !e2e_support::can_run() {
        return;
    }
    let (sys, backup) = password_then_code("e2e-sshd-backup", "", true);
    assert_eq!(backup.len(), 10, "{backup:?}");

    let first = sys.ssh(USER, Some(PASSWORD), Some(&backup[0]));
    assert!(first.logged_in(), "{first}");
    assert!(
        first
            .run
            .stderr
            .lines()
            .any(|l| l == "Backup code accepted. 9 backup codes left."),
        "{first}"
    );
    assert!(!sys.state(USER).contains("used_backup_codes = []"));

    let again = sys.ssh(USER, Some(PASSWORD), Some(&backup[0]));
    assert!(again.denied(KBD), "{again}");
    assert!(
        !again.run.stderr.contains("Backup code accepted"),
        "{again}"
    );
    assert_eq!(sys.state_value(USER, "failures").as_deref(), Some("1"));

    let other = sys.ssh(USER, Some(PASSWORD), Some(&backup[1]));
    assert!(other.logged_in(), "{other}");
    assert!(
        other
            .run
            .stderr
            .lines()
            .any(|l| l == "Backup code accepted. 8 backup codes left."),
        "{other}"
    );
}

/// sshd: the 5th wrong code locks, ssh shows the lock message, `twofactor unlock` lets the code in.
#[test]
fn sshd_locks_after_five_failures_tells_the_client_and_unlock_clears_it() {
    if !e2e_support::can_run() {
        return;
    }
    let (sys, _) = password_then_code("e2e-sshd-lock", "", true);
    let wrong = wrong_code();
    let until = utc(T0_UNIX + 1800);

    for failures in 1..=4 {
        let run = sys.ssh(USER, Some(PASSWORD), Some(&wrong));
        assert!(run.denied(KBD), "{run}");
        assert!(!run.run.stderr.contains("locked"), "{run}");
        assert_eq!(
            sys.state_value(USER, "failures"),
            Some(failures.to_string())
        );
    }
    let fifth = sys.ssh(USER, Some(PASSWORD), Some(&wrong));
    assert!(fifth.denied(KBD), "{fifth}");
    let locked_now = format!("Too many failed attempts: your account is locked until {until} UTC.");
    assert!(fifth.run.stderr.lines().any(|l| l == locked_now), "{fifth}");
    assert_eq!(
        sys.state_value(USER, "locked_until"),
        Some((T0_UNIX + 1800).to_string())
    );

    let code = code_at(T0);
    let while_locked = sys.ssh(USER, Some(PASSWORD), Some(&code));
    assert!(while_locked.denied(KBD), "{while_locked}");
    assert_eq!(while_locked.prompts, password_and_code_prompts(USER));
    let still_locked =
        format!("Your account is locked after too many failed attempts until {until} UTC.");
    assert!(
        while_locked.run.stderr.lines().any(|l| l == still_locked),
        "{while_locked}"
    );
    assert!(!sys.state(USER).contains(&accepted_step(T0_UNIX)));

    let unlock = sys.cli(&["unlock", USER]);
    assert_eq!(unlock.status, Some(0), "{unlock}");
    assert_eq!(sys.state_value(USER, "failures").as_deref(), Some("0"));
    assert_eq!(sys.state_value(USER, "locked_until"), None);

    let after = sys.ssh(USER, Some(PASSWORD), Some(&code));
    assert!(after.logged_in(), "{after}");
    assert!(!after.run.stderr.contains("locked"), "{after}");
    assert!(sys.state(USER).contains(&accepted_step(T0_UNIX)));
}

/// A system with USER enrolled and an authorized key, and sshd with
/// `AuthenticationMethods publickey,keyboard-interactive` and the
/// key-then-code stack: Debian's `pam.d/sshd` with `@include common-auth`
/// commented out and only our module in the auth section.
fn key_then_code(name: &str) -> (System, std::path::PathBuf) {
    let sys = System::new(name, "");
    sys.add_user(USER);
    sys.enroll(USER);
    let key = sys.new_key("alice");
    sys.authorize_key(USER, &key);
    let module = sys.module_line();
    sys.set_auth("sshd", &["#@include common-auth", &module]);
    sys.start_sshd("publickey,keyboard-interactive");
    (sys, key)
}

/// sshd key + code: the key and the code (the only prompt) log in; the key + a wrong code fail.
#[test]
fn sshd_logs_in_with_key_and_code_and_refuses_the_key_with_a_wrong_code() {
    if !e2e_support::can_run() {
        return;
    }
    let (sys, key) = key_then_code("e2e-sshd-key");

    let wrong = sys.ssh_with_key(USER, &key, Some(&wrong_code()));
    assert!(wrong.denied(KBD), "{wrong}");
    assert_eq!(
        wrong.prompts,
        vec![ssh_prompt(USER, "Verification code: ")],
        "{wrong}"
    );
    assert!(
        wrong
            .sshd_log
            .contains(&format!("Partial publickey for {USER} from 127.0.0.1")),
        "{wrong}"
    );
    assert_eq!(sys.state_value(USER, "failures").as_deref(), Some("1"));

    let ok = sys.ssh_with_key(USER, &key, Some(&code_at(T0)));
    assert!(ok.logged_in(), "{ok}");
    assert_eq!(
        ok.prompts,
        vec![ssh_prompt(USER, "Verification code: ")],
        "{ok}"
    );
    assert!(sys.state(USER).contains(&accepted_step(T0_UNIX)));
}

/// sshd key + code: no key or an unauthorized key is refused before the module is ever asked.
#[test]
fn sshd_key_then_code_refuses_a_missing_or_unknown_key_before_the_code() {
    if !e2e_support::can_run() {
        return;
    }
    let (sys, _) = key_then_code("e2e-sshd-nokey");
    let enrolled_state = sys.state(USER);
    let stranger = sys.new_key("stranger");
    let code = code_at(T0);

    let unknown_key = sys.ssh_with_key(USER, &stranger, Some(&code));
    assert!(unknown_key.denied("publickey"), "{unknown_key}");
    assert!(unknown_key.prompts.is_empty(), "{unknown_key}");

    let no_key = sys.ssh(USER, Some(PASSWORD), Some(&code));
    assert!(no_key.denied("publickey"), "{no_key}");
    assert!(no_key.prompts.is_empty(), "{no_key}");

    assert_eq!(
        sys.state(USER),
        enrolled_state,
        "the module must not have run"
    );
}

/// sshd, `unenrolled = "skip"`: an unenrolled user logs in with the password alone.
#[test]
fn sshd_lets_an_unenrolled_user_in_with_the_password_alone_under_skip() {
    if !e2e_support::can_run() {
        return;
    }
    let (sys, _) = password_then_code("e2e-sshd-skip", "unenrolled = \"skip\"\n", false);
    let run = sys.ssh(USER, Some(PASSWORD), None);
    assert!(run.logged_in(), "{run}");
    assert_eq!(run.prompts, vec![ssh_prompt(USER, "Password: ")], "{run}");
}

/// sshd, `unenrolled = "deny"`: an unenrolled user gets the code prompt and is refused.
#[test]
fn sshd_refuses_an_unenrolled_user_under_deny() {
    if !e2e_support::can_run() {
        return;
    }
    let (sys, _) = password_then_code("e2e-sshd-deny", "unenrolled = \"deny\"\n", false);
    let run = sys.ssh(USER, Some(PASSWORD), Some(&code_at(T0)));
    assert!(run.denied(KBD), "{run}");
    assert_eq!(run.prompts, password_and_code_prompts(USER), "{run}");
}

/// A system with USER enrolled and allowed everything by the test sudoers,
/// and Debian's `pam.d/sudo` with our module after `@include common-auth`.
fn sudo_system(name: &str) -> System {
    let sys = System::new(name, "");
    sys.add_user(USER);
    sys.enroll(USER);
    let module = sys.module_line();
    sys.set_auth("sudo", &["@include common-auth", &module]);
    sys.write_sudoers(USER);
    sys.pin_clock_for_setuid_programs();
    sys
}

/// sudo -S: the password then the code on stdin give root, under sudo's and our own prompts.
#[test]
fn sudo_gives_root_for_the_password_and_the_code() {
    if !e2e_support::can_run() {
        return;
    }
    let sys = sudo_system("e2e-sudo-ok");
    let run = sys.sudo(USER, PASSWORD, &code_at(T0));
    assert_eq!(run.status, Some(0), "{run}");
    assert_eq!(run.stdout, "root\n", "{run}");
    assert_eq!(
        run.stderr,
        format!("[sudo] password for {USER}: Verification code: "),
        "{run}"
    );
    // The module inside setuid sudo saw the pinned clock.
    assert!(sys.state(USER).contains(&accepted_step(T0_UNIX)));
}

/// sudo -S: the right password with a wrong code is refused and counted.
#[test]
fn sudo_refuses_a_wrong_code() {
    if !e2e_support::can_run() {
        return;
    }
    let sys = sudo_system("e2e-sudo-wrong");
    let run = sys.sudo(USER, PASSWORD, &wrong_code());
    assert_eq!(run.status, Some(1), "{run}");
    assert_eq!(run.stdout, "", "{run}");
    assert_eq!(
        run.stderr,
        format!(
            "[sudo] password for {USER}: Verification code: \
             sudo: 1 incorrect password attempt\n"
        ),
        "{run}"
    );
    assert_eq!(sys.state_value(USER, "failures").as_deref(), Some("1"));
}

/// A system with CALLER (no second factor) and USER enrolled, and Debian's
/// `pam.d/su` (used by `su -` through `su-l`) with our module after
/// `@include common-auth`; root stays exempt through pam_rootok.
fn su_system(name: &str) -> System {
    let sys = System::new(name, "");
    sys.add_user(CALLER);
    sys.add_user(USER);
    sys.enroll(USER);
    let module = sys.module_line();
    sys.set_auth("su", &["@include common-auth", &module]);
    sys.pin_clock_for_setuid_programs();
    sys
}

/// su run by a non-root user: the target's password and code switch user.
#[test]
fn su_switches_user_for_the_password_and_the_code() {
    if !e2e_support::can_run() {
        return;
    }
    let sys = su_system("e2e-su-ok");
    let run = sys.su(CALLER, USER, PASSWORD, &code_at(T0));
    assert_eq!(run.status, Some(0), "{run}");
    assert_eq!(run.stdout, format!("{USER}\n"), "{run}");
    assert_eq!(run.stderr, "Password: Verification code: ", "{run}");
    assert!(sys.state(USER).contains(&accepted_step(T0_UNIX)));
}

/// su run by a non-root user: the right password with a wrong code is refused and counted.
#[test]
fn su_refuses_a_wrong_code() {
    if !e2e_support::can_run() {
        return;
    }
    let sys = su_system("e2e-su-wrong");
    let run = sys.su(CALLER, USER, PASSWORD, &wrong_code());
    assert_eq!(run.status, Some(1), "{run}");
    assert_eq!(run.stdout, "", "{run}");
    assert_eq!(
        run.stderr, "Password: Verification code: su: Authentication failure\n",
        "{run}"
    );
    assert_eq!(sys.state_value(USER, "failures").as_deref(), Some("1"));
}

// ---- enrollment at first login (`unenrolled = "enroll"`) over sshd ------

/// The config for first-login enrollment, with a fixed issuer.
const ENROLL_CONFIG: &str = "unenrolled = \"enroll\"\nissuer = \"e2e-issuer\"\n";
/// The group allowed to self-enroll in the `enroll_groups` test.
const ENROLLERS: &str = "e2e-enrollers";

/// `secret` in groups of four, as users type it into an app.
fn grouped(secret: &str) -> String {
    secret
        .as_bytes()
        .chunks(4)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Checks the whole text the ssh client showed `user` with the enrollment
/// code prompt (header, a well-formed QR code, the key by hand with its
/// parameters, the prompt last; no URI, and all of it within 24 rows of 80
/// columns) and returns the base32 secret it offers.
fn enrollment_offer(user: &str, shown: &str) -> String {
    let lines: Vec<&str> = shown.split('\n').collect();
    assert_eq!(
        lines[0],
        format!("({user}@127.0.0.1) Set up two-factor authentication: scan this QR code"),
        "{shown}"
    );
    assert_eq!(
        lines[lines.len() - 2..],
        [
            "(SHA1, 6 digits, every 30 s) Then enter the code the app shows.",
            "Verification code: "
        ],
        "{shown}"
    );
    let rows: usize = lines
        .iter()
        .map(|l| l.chars().count().div_ceil(80).max(1))
        .sum();
    assert!(rows <= 24, "{rows} rows on an 80x24 terminal:\n{shown}");
    assert!(!shown.contains("otpauth"), "{shown}");
    // The QR code: Unicode half blocks (two module rows per line) with a
    // drawn quiet zone, square, intact (not escaped by the client).
    let qr: Vec<&str> = lines[1..]
        .iter()
        .take_while(|l| !l.starts_with("Or enter this key by hand: "))
        .copied()
        .collect();
    let width = qr.first().map_or(0, |l| l.chars().count());
    assert!(width >= 21 + 2, "no QR code in:\n{shown}");
    assert_eq!(qr.len(), width.div_ceil(2), "QR code not square:\n{shown}");
    for line in &qr {
        assert_eq!(line.chars().count(), width, "ragged QR code:\n{shown}");
        assert!(
            line.chars().all(|c| "█▀▄ ".contains(c)),
            "not a QR code line (escaped? is the C.UTF-8 locale missing?): {line:?}\n{shown}"
        );
    }
    // A drawn quiet zone (1 to 4 modules): a light top module row and a
    // light first and last column.
    assert!(
        qr[0].chars().all(|c| "█▀".contains(c)),
        "no quiet zone:\n{shown}"
    );
    assert!(
        qr.iter().all(|l| l.starts_with('█') && l.ends_with('█')),
        "no quiet zone:\n{shown}"
    );

    let key_line = lines
        .iter()
        .find_map(|l| l.strip_prefix("Or enter this key by hand: "))
        .unwrap_or_else(|| panic!("no key shown:\n{shown}"));
    let secret = key_line.replace(' ', "");
    assert_eq!(key_line, grouped(&secret), "{shown}");
    // 160 random bits in base32, no padding.
    assert_eq!(secret.len(), 32, "{key_line}");
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b)),
        "{key_line}"
    );
    secret
}

/// The state directory's file `name`: root:root, 0600, a plain regular
/// file with one link (the store's own rules); returns its text.
fn root_only_file(sys: &System, name: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    let path = sys.sb.state_dir().join(name);
    let meta = std::fs::symlink_metadata(&path)
        .unwrap_or_else(|e| panic!("{} is missing: {e}", path.display()));
    assert!(
        meta.file_type().is_file(),
        "{} is not a file",
        path.display()
    );
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777, meta.nlink()),
        (0, 0, 0o600, 1),
        "{}: owner, group, mode, links",
        path.display()
    );
    std::fs::read_to_string(&path).unwrap()
}

/// The names in the state directory.
fn state_files(sys: &System) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(sys.sb.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Nothing of `user`'s is stored but (at most) the lock file, which is never
/// unlinked by design.
fn assert_nothing_stored_for(sys: &System, user: &str) {
    let files = state_files(sys);
    let theirs: Vec<&String> = files
        .iter()
        .filter(|f| f.starts_with(&format!("{user}.")) && **f != format!("{user}.lock"))
        .collect();
    assert!(theirs.is_empty(), "stored for {user}: {files:?}");
}

/// Checks the secret record of a user enrolled at login at T0 with `secret`
/// (one default device, SHA1/6/30, ten backup-code hashes); returns its text.
fn assert_enrolled_at_login(sys: &System, user: &str, secret: &str) -> String {
    let text = root_only_file(sys, &format!("{user}.secret"));
    let record: toml::Table = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}:\n{text}"));
    let devices = record["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1, "{text}");
    let device = devices[0].as_table().expect("device table");
    assert_eq!(device["label"].as_str(), Some("default"), "{text}");
    assert_eq!(device["secret"].as_str(), Some(secret), "{text}");
    assert_eq!(device["algorithm"].as_str(), Some("SHA1"), "{text}");
    assert_eq!(device["digits"].as_integer(), Some(6), "{text}");
    assert_eq!(device["period"].as_integer(), Some(30), "{text}");
    assert_eq!(
        device["created"].as_integer(),
        Some(T0_UNIX as i64),
        "{text}"
    );
    assert_eq!(
        record["created"].as_integer(),
        Some(T0_UNIX as i64),
        "{text}"
    );
    let hashes = record["backup_codes"]["hashes"].as_array().expect("hashes");
    assert_eq!(hashes.len(), 10, "{text}");
    text
}

/// The backup codes the client was shown once after enrolling.
fn shown_backup_codes(run: &e2e_support::SshRun) -> Vec<String> {
    let stderr = &run.run.stderr;
    let header = "Two-factor authentication is set up. Your backup codes (each works once; \
                  keep them safe, they are not shown again):";
    let after = stderr
        .split_once(&format!("{header}\n"))
        .unwrap_or_else(|| panic!("no backup codes shown:\n{run}"))
        .1;
    let codes: Vec<String> = after
        .lines()
        .map_while(|l| l.strip_prefix("  "))
        .map(str::to_string)
        .collect();
    assert_eq!(codes.len(), 10, "{run}");
    for code in &codes {
        let groups: Vec<&str> = code.split('-').collect();
        assert!(
            groups.len() == 4
                && groups
                    .iter()
                    .all(|g| g.len() == 4 && g.bytes().all(|b| b.is_ascii_digit())),
            "backup code {code:?} is not 16 digits in groups of four"
        );
    }
    codes
}

/// sshd, `unenrolled = "enroll"`: the client is shown the QR code, URI and
/// key; the code computed from them enrolls and logs in; the record is
/// stored root-only with that secret; later logins need a code (the
/// enrollment code replayed is refused, a fresh one and a shown backup
/// code work).
#[test]
fn sshd_enrolls_an_unenrolled_user_at_first_login_and_then_asks_for_codes() {
    if !e2e_support::can_run() {
        return;
    }
    let (sys, _) = password_then_code("e2e-sshd-enroll", ENROLL_CONFIG, false);
    assert_nothing_stored_for(&sys, USER);

    let mut enrollment_code = String::new();
    let (first, shown) = sys.ssh_answering(USER, PASSWORD, |text| {
        let secret = enrollment_offer(USER, text);
        enrollment_code = common::oathtool_code(&secret, "SHA1", 6, 30, T0);
        enrollment_code.clone()
    });
    let shown = shown.unwrap_or_else(|| panic!("no code prompt came\n{first}"));
    let secret = enrollment_offer(USER, &shown);
    assert!(first.logged_in(), "{first}");
    assert_eq!(first.prompts.first(), Some(&ssh_prompt(USER, "Password: ")));
    assert_eq!(
        first.prompts.len(),
        shown.split('\n').count() + 1,
        "exactly two prompts: {first}"
    );
    assert!(
        first.sshd_log.contains(&format!(
            "Accepted keyboard-interactive/pam for {USER} from 127.0.0.1"
        )),
        "{first}"
    );
    let backup = shown_backup_codes(&first);
    assert!(
        !first.run.stderr.contains(&secret),
        "the secret was shown again after enrolling:\n{first}"
    );

    // On disk: the record with the secret the client showed, and the
    // enrollment code's step already used.
    let record = assert_enrolled_at_login(&sys, USER, &secret);
    let state = root_only_file(&sys, &format!("{USER}.state"));
    assert!(state.contains(&accepted_step(T0_UNIX)), "{state}");
    assert_eq!(sys.state_value(USER, "failures").as_deref(), Some("0"));
    for code in &backup {
        assert!(!record.contains(code.as_str()) && !record.contains(&code.replace('-', "")));
    }

    // The next time step: the enrollment code is still inside the window,
    // so only replay protection refuses it; no enrollment is offered again.
    let t1 = common::at_offset(T0, 30);
    let t1_unix = T0_UNIX + 30;
    sys.restart_sshd_at(KBD, &t1);
    let replay = sys.ssh(USER, Some(PASSWORD), Some(&enrollment_code));
    assert!(replay.denied(KBD), "{replay}");
    assert_eq!(replay.prompts, password_and_code_prompts(USER), "{replay}");
    assert_eq!(sys.state_value(USER, "failures").as_deref(), Some("1"));
    assert!(sys.state(USER).contains(&accepted_step(T0_UNIX)));

    let fresh = common::oathtool_code(&secret, "SHA1", 6, 30, &t1);
    assert_ne!(fresh, enrollment_code);
    let second = sys.ssh(USER, Some(PASSWORD), Some(&fresh));
    assert!(second.logged_in(), "{second}");
    assert_eq!(second.prompts, password_and_code_prompts(USER), "{second}");
    assert!(sys.state(USER).contains(&accepted_step(t1_unix)));
    assert_eq!(sys.state_value(USER, "failures").as_deref(), Some("0"));

    let with_backup = sys.ssh(USER, Some(PASSWORD), Some(&backup[3]));
    assert!(with_backup.logged_in(), "{with_backup}");
    assert!(
        with_backup
            .run
            .stderr
            .lines()
            .any(|l| l == "Backup code accepted. 9 backup codes left."),
        "{with_backup}"
    );
    // Logging in never re-enrolled: same record, same secret.
    assert_eq!(root_only_file(&sys, &format!("{USER}.secret")), record);
}

/// sshd, `unenrolled = "enroll"`: a wrong confirmation code refuses the
/// login and stores nothing; the next login offers a new secret.
#[test]
fn sshd_enrollment_with_a_wrong_code_is_refused_and_stores_nothing() {
    if !e2e_support::can_run() {
        return;
    }
    let (sys, _) = password_then_code("e2e-sshd-enroll-wrong", ENROLL_CONFIG, false);

    let (wrong, shown) = sys.ssh_answering(USER, PASSWORD, |text| {
        e2e_support::wrong_code_for(&enrollment_offer(USER, text))
    });
    let shown = shown.unwrap_or_else(|| panic!("no code prompt came\n{wrong}"));
    let offered = enrollment_offer(USER, &shown);
    assert!(wrong.denied(KBD), "{wrong}");
    assert!(!wrong.run.stderr.contains("backup codes"), "{wrong}");
    assert!(
        !wrong.sshd_log.contains("Accepted keyboard-interactive"),
        "{wrong}"
    );
    assert_nothing_stored_for(&sys, USER);

    // Not enrolled: the next login is offered enrollment again, with a new
    // secret; that one is what gets stored.
    let (again, shown) = sys.ssh_answering(USER, PASSWORD, |text| {
        common::oathtool_code(&enrollment_offer(USER, text), "SHA1", 6, 30, T0)
    });
    let secret = enrollment_offer(USER, &shown.expect("a code prompt"));
    assert_ne!(secret, offered, "the refused secret was offered again");
    assert!(again.logged_in(), "{again}");
    assert_enrolled_at_login(&sys, USER, &secret);
}

/// sshd, `enroll_groups`: a user outside the groups is treated as under
/// `deny` (the plain code prompt, refused, nothing stored); a member of the
/// group is offered enrollment and enrolls.
#[test]
fn sshd_enrollment_is_limited_to_enroll_groups() {
    if !e2e_support::can_run() {
        return;
    }
    let sys = System::new(
        "e2e-sshd-enroll-groups",
        &format!("{ENROLL_CONFIG}enroll_groups = [\"{ENROLLERS}\"]\n"),
    );
    sys.add_user(USER);
    sys.add_user(CALLER);
    sys.add_group(ENROLLERS, &[CALLER]);
    let module = sys.module_line();
    sys.set_auth("sshd", &["@include common-auth", &module]);
    sys.start_sshd(KBD);

    let outsider = sys.ssh(USER, Some(PASSWORD), Some(&code_at(T0)));
    assert!(outsider.denied(KBD), "{outsider}");
    assert_eq!(
        outsider.prompts,
        password_and_code_prompts(USER),
        "no enrollment offered: {outsider}"
    );
    assert!(!outsider.run.stderr.contains("otpauth"), "{outsider}");
    assert_nothing_stored_for(&sys, USER);

    let (member, shown) = sys.ssh_answering(CALLER, PASSWORD, |text| {
        common::oathtool_code(&enrollment_offer(CALLER, text), "SHA1", 6, 30, T0)
    });
    let secret = enrollment_offer(CALLER, &shown.unwrap_or_else(|| panic!("{member}")));
    assert!(member.logged_in(), "{member}");
    assert_enrolled_at_login(&sys, CALLER, &secret);
    assert_nothing_stored_for(&sys, USER);
}

/// What `ns.sh` mounts are whole directories (an overlay on `/etc`, the
/// `pam.d` copy, an empty `/dev/shm`), never a single file, also with the
/// `sudoers` and `ld.so.preload` of the setuid consumers; and the
/// namespace's `/etc` shows the test's copies.
#[test]
fn the_namespace_mounts_directories_only() {
    if !e2e_support::can_run() {
        return;
    }
    let sys = sudo_system("e2e-mounts");
    // Each mount point, and whether it is a directory, as the namespace sees it.
    let script = r#"while read -r _ _ _ _ point _; do
  if [ -d "$point" ]; then echo "dir $point"; else echo "file $point"; fi
done < /proc/self/mountinfo
grep -c '^e2ealice[: ]' /etc/passwd /etc/shadow /etc/group /etc/gshadow /etc/sudoers
cat /etc/ld.so.preload"#;
    let run = e2e_support::drive(
        &mut sys.ns_command(&["/bin/sh", "-c", script]),
        &[],
        std::time::Duration::from_secs(30),
    );
    assert_eq!(run.status, Some(0), "{run}");
    let host = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mut host_points: Vec<&str> = host.lines().filter_map(|l| l.split(' ').nth(4)).collect();
    let mut added = Vec::new();
    for line in run.stdout.lines() {
        let Some((kind, point)) = line
            .strip_prefix("dir ")
            .map(|p| ("dir", p))
            .or_else(|| line.strip_prefix("file ").map(|p| ("file", p)))
        else {
            continue;
        };
        match host_points.iter().position(|p| *p == point) {
            Some(i) => {
                host_points.swap_remove(i);
            }
            None => added.push(format!("{kind} {point}")),
        }
    }
    added.sort();
    assert_eq!(
        added,
        ["dir /dev/shm", "dir /etc", "dir /etc/pam.d"],
        "{run}"
    );
    for file in ["passwd", "shadow", "group", "gshadow"] {
        assert!(
            run.stdout.contains(&format!("/etc/{file}:1\n")),
            "{file}: {run}"
        );
    }
    assert!(run.stdout.contains("/etc/sudoers:1\n"), "{run}");
    assert!(
        run.stdout
            .contains(&common::libfaketime().display().to_string()),
        "{run}"
    );
}

/// Why the harness mounts directories (TESTING.md, "Bind directories, not
/// single files"), shown on a scratch directory standing in for `/etc`:
/// while two namespaces hold their own `passwd`, one bound over the file,
/// one as the top layer of an overlay of the directory (as `ns.sh` does),
/// the host renames a new file over its `passwd` (what `useradd` or
/// `passwd` anywhere on the machine does). The bound file is silently
/// gone, the namespace sees the host's file; the overlay keeps the copy.
/// The machine's `/etc` is never touched.
#[test]
fn a_rename_on_the_host_drops_a_bound_file_but_not_an_overlay_of_its_directory() {
    use std::io::{BufRead, BufReader, Write};
    use std::process::{Command, Stdio};
    if !common::root_or_skip(
        "a_rename_on_the_host_drops_a_bound_file_but_not_an_overlay_of_its_directory",
        "mounts in private mount namespaces",
        &[common::Needs::EtcOverlay],
    ) {
        return;
    }
    let sb = common::Sandbox::new("e2e-rename");
    let dir = |name: &str| {
        let d = sb.dir().join(name);
        std::fs::create_dir(&d).unwrap();
        d
    };
    let (host, top) = (dir("host"), dir("top"));
    std::fs::write(host.join("passwd"), "host's old passwd\n").unwrap();
    std::fs::write(top.join("passwd"), "the test's passwd\n").unwrap();
    let copy = sb.dir().join("passwd-copy");
    std::fs::write(&copy, "the test's passwd\n").unwrap();
    // Each namespace mounts, says so, waits for a line, then reads passwd.
    let namespace = |mount: String| {
        let mut child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(format!(
                "set -e; {mount}; echo mounted; read -r _; cat \"$0/passwd\""
            ))
            .arg(&host)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert_eq!(line, "mounted\n", "{mount}");
        (child, stdout)
    };
    let bound = namespace(format!("mount --bind '{}' \"$0/passwd\"", copy.display()));
    let overlay = namespace(format!(
        "mount -t overlay e2e-rename -o 'lowerdir={}:'\"$0\" \"$0\"",
        top.display()
    ));
    let new = host.join("passwd+");
    std::fs::write(&new, "host's new passwd\n").unwrap();
    std::fs::rename(&new, host.join("passwd")).unwrap();
    let read =
        |(mut child, mut stdout): (std::process::Child, BufReader<std::process::ChildStdout>)| {
            child.stdin.take().unwrap().write_all(b"go\n").unwrap();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut stdout, &mut text).unwrap();
            assert!(child.wait().unwrap().success());
            text
        };
    assert_eq!(
        read(bound),
        "host's new passwd\n",
        "the bind mount of the file survived the rename (then this test's \
         reason for the harness is gone, not the harness wrong)"
    );
    assert_eq!(read(overlay), "the test's passwd\n");
}
