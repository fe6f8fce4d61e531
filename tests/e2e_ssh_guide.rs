//! The README's SSH guide as written, against Debian's stock
//! `sshd_config` (TESTING.md, layer 3): the real `/usr/sbin/sshd` reads
//! `/etc/ssh/sshd_config`, a copy of the pristine file the openssh-server
//! package ships (`/usr/share/openssh/sshd_config`, so an admin's edits on
//! this machine do not count), plus exactly `conf/ssh/twofactor.conf` as
//! `sshd_config.d/twofactor.conf`. That directory is bound over `/etc/ssh`
//! in the test's private mount namespace; the machine's `/etc` is never
//! touched (see `tests/e2e/support.rs`).
//!
//! What the test itself sets is on sshd's command line (`-o`, see
//! `e2e_support::guide_options`): where to listen, the host key, the pid
//! file and the log level, nothing about authentication. Whether a login
//! needs the password and the code is decided by the stock file and the
//! drop-in alone.
//!
//! Root only. Not root, each test prints a loud `SKIPPED <name>: <reason>`
//! line and returns; as root, a test that cannot run fails with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

mod common;
#[path = "e2e/support.rs"]
mod e2e_support;

use common::T0;
use e2e_support::{PASSWORD, System, code_at};

/// The user who logs in.
const USER: &str = "e2ealice";
const KBD: &str = "keyboard-interactive";
/// The pristine `sshd_config` of Debian's openssh-server package.
const STOCK: &str = "/usr/share/openssh/sshd_config";
/// What the drop-in sets: the three lines the old guide appended to
/// `/etc/ssh/sshd_config`.
const GUIDE_LINES: [&str; 3] = [
    "UsePAM yes",
    "KbdInteractiveAuthentication yes",
    "AuthenticationMethods keyboard-interactive",
];

/// The shipped drop-in, `conf/ssh/twofactor.conf`.
fn drop_in() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/ssh/twofactor.conf");
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The lines of an sshd config file that are not comments or blank.
fn directives(text: &str) -> Vec<&str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

/// Debian's stock `sshd_config`, checked to hold what the guide relies on:
/// the `sshd_config.d` include first, and the `KbdInteractiveAuthentication
/// no` that defeats lines appended at the end.
fn stock_sshd_config() -> String {
    let text = fs::read_to_string(STOCK).unwrap_or_else(|e| {
        panic!("{STOCK}: {e} (Debian's openssh-server ships it: apt-get install openssh-server)")
    });
    let lines = directives(&text);
    assert_eq!(
        lines.first(),
        Some(&"Include /etc/ssh/sshd_config.d/*.conf"),
        "{STOCK} does not include sshd_config.d first:\n{text}"
    );
    assert!(
        lines.contains(&"KbdInteractiveAuthentication no"),
        "{STOCK} no longer says KbdInteractiveAuthentication no:\n{text}"
    );
    text
}

fn mkdir(path: &Path) {
    fs::DirBuilder::new()
        .mode(0o755)
        .create(path)
        .unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
}

fn write_644(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(0o644)).unwrap();
}

/// A directory for the namespace's `/etc/ssh`: `sshd_config` (root, 0644)
/// and an `sshd_config.d/` holding `drop_ins` (name, text).
fn etc_ssh(sys: &System, sshd_config: &str, drop_ins: &[(&str, &str)]) -> PathBuf {
    let dir = sys.sb.dir().join("etc-ssh");
    mkdir(&dir);
    write_644(&dir.join("sshd_config"), sshd_config);
    mkdir(&dir.join("sshd_config.d"));
    for (name, text) in drop_ins {
        write_644(&dir.join("sshd_config.d").join(name), text);
    }
    dir
}

/// USER enrolled, and `/etc/pam.d/sshd` as the guide's step 5 says:
/// Debian's file with `auth required pam_twofactor.so` after `@include
/// common-auth` (plus the test's `config=`).
fn guide_system(name: &str) -> System {
    let sys = System::new(name, "");
    sys.add_user(USER);
    sys.enroll(USER);
    let module = sys.module_line();
    sys.set_auth("sshd", &["@include common-auth", &module]);
    sys
}

/// The shipped drop-in sets the guide's three lines, and the key + code
/// alternative only as a comment.
#[test]
fn the_drop_in_sets_the_three_lines_and_comments_the_key_alternative() {
    let text = drop_in();
    assert_eq!(directives(&text), GUIDE_LINES, "{text}");
    assert!(
        text.lines()
            .any(|l| l.trim() == "#AuthenticationMethods publickey,keyboard-interactive"),
        "{text}"
    );
}

/// The guide as written: Debian's stock `sshd_config` plus
/// `sshd_config.d/twofactor.conf` passes `sshd -t`, and sshd then logs
/// USER in with the password and the code (from oathtool); root, with the
/// right password and enrolled, is refused (`PermitRootLogin
/// prohibit-password`, the stock default): sshd hands PAM a wrong password
/// in place of root's, so common-auth fails before the module and no code
/// is asked.
#[test]
fn sshd_with_debians_stock_config_and_the_drop_in_logs_in_with_password_and_code() {
    if !e2e_support::can_run() {
        return;
    }
    let stock = stock_sshd_config();
    let sys = guide_system("e2e-guide");
    let etc = etc_ssh(&sys, &stock, &[("twofactor.conf", &drop_in())]);

    let check = sys.sshd_check_etc_ssh(&etc);
    assert_eq!(check.status, Some(0), "sshd -t failed:\n{check}");
    assert_eq!(check.stderr, "", "sshd -t complained:\n{check}");

    sys.start_sshd_with_etc_ssh(&etc);
    let login = sys.ssh(USER, Some(PASSWORD), Some(&code_at(T0)));
    assert!(login.logged_in(), "{login}");
    assert_eq!(
        login.prompts,
        [
            format!("({USER}@127.0.0.1) Password: "),
            format!("({USER}@127.0.0.1) Verification code: "),
        ],
        "{login}"
    );
    assert!(
        login.sshd_log.contains(&format!(
            "Accepted keyboard-interactive/pam for {USER} from 127.0.0.1"
        )),
        "{login}"
    );

    // The same code again is a replay: refused, so the code was checked.
    let replay = sys.ssh(USER, Some(PASSWORD), Some(&code_at(T0)));
    assert!(replay.denied(KBD), "{replay}");

    // Root, with the right password and a code, cannot log in at all.
    sys.set_password("root");
    sys.enroll("root");
    let root_state = sys.state("root");
    let root = sys.ssh("root", Some(PASSWORD), Some(&code_at(T0)));
    assert!(root.denied(KBD), "{root}");
    assert_eq!(
        root.prompts,
        ["(root@127.0.0.1) Password: ".to_string()],
        "{root}"
    );
    assert!(
        root.sshd_log
            .contains("Failed keyboard-interactive/pam for root from 127.0.0.1"),
        "{root}"
    );
    assert!(
        !root
            .sshd_log
            .contains("Accepted keyboard-interactive/pam for root"),
        "{root}"
    );
    // The module never ran for root: its record is as enrollment left it.
    assert_eq!(sys.state("root"), root_state, "{root}");
}

/// The old guide, as a negative control: the same three lines appended to
/// the end of Debian's stock `sshd_config` (no drop-in) do not enable
/// keyboard-interactive, because sshd keeps the stock file's earlier
/// `KbdInteractiveAuthentication no`, and `sshd -t` refuses the result.
#[test]
fn appending_the_three_lines_to_debians_stock_sshd_config_fails_sshd_t() {
    if !e2e_support::can_run() {
        return;
    }
    let mut appended = stock_sshd_config();
    if !appended.ends_with('\n') {
        appended.push('\n');
    }
    for line in GUIDE_LINES {
        appended.push_str(line);
        appended.push('\n');
    }
    let sys = guide_system("e2e-guide-old");
    let etc = etc_ssh(&sys, &appended, &[]);

    let check = sys.sshd_check_etc_ssh(&etc);
    assert_ne!(check.status, Some(0), "sshd -t passed:\n{check}");
    assert!(
        check.stderr.contains(
            "Disabled method \"keyboard-interactive\" in AuthenticationMethods list \
             \"keyboard-interactive\""
        ),
        "{check}"
    );
    assert!(
        check.stderr.contains(
            "AuthenticationMethods cannot be satisfied by enabled authentication methods"
        ),
        "{check}"
    );
}
