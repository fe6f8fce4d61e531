//! End to end with the real consumers (`TESTING.md`, layer 3): Debian's
//! `/usr/sbin/sshd`, `sudo` and `su` load the built `libpam_twofactor.so`
//! from a copied `/etc/pam.d` in a private mount namespace, with throwaway
//! users that exist only in that namespace, the clock pinned at T0 by
//! libfaketime and every code computed by `oathtool`. See
//! `tests/e2e/support.rs` for how nothing on the machine changes.
//!
//! Root only; each test prints `SKIPPED <name>: <reason>` and returns when
//! it cannot run (no root, no `unshare -m`, or for sudo/su no overlayfs).
//! Tests are independent: each has its own sandbox, users, namespace and
//! sshd port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
    if !e2e_support::can_run(false) {
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

/// sshd: password + wrong code is refused and counted; a wrong password never reaches the code.
#[test]
fn sshd_refuses_a_wrong_code_and_never_asks_for_one_after_a_wrong_password() {
    if !e2e_support::can_run(false) {
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
    if !e2e_support::can_run(false) {
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
    if !e2e_support::can_run(false) {
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
    if !e2e_support::can_run(false) {
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
    if !e2e_support::can_run(false) {
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
    if !e2e_support::can_run(false) {
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
    if !e2e_support::can_run(false) {
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
    if !e2e_support::can_run(true) {
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
    if !e2e_support::can_run(true) {
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
    if !e2e_support::can_run(true) {
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
    if !e2e_support::can_run(true) {
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
