//! Hostile input through the real module: planted files, damaged records,
//! hostile user names, odd answers and callers. Each case asserts the exact
//! PAM result, that the state directory is byte-for-byte what it was (nothing
//! unexpected written), and — through the harness's timeout — that the host
//! process neither hung nor crashed. docs/threat-model.md maps each case here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use common::*;

const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const USER: &str = "daemon";

/// Every entry of a directory: name, type, mode, owner, size, contents or link target.
fn snapshot(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = fs::symlink_metadata(e.path()).unwrap();
            let body = if meta.file_type().is_symlink() {
                format!("-> {}", fs::read_link(e.path()).unwrap().display())
            } else if meta.is_file() && meta.len() < 1 << 20 {
                format!("{:?}", fs::read(e.path()).unwrap())
            } else {
                String::new()
            };
            format!(
                "{:?} {:o} {} {} {} {body}",
                e.file_name(),
                meta.mode(),
                meta.uid(),
                meta.len(),
                meta.nlink()
            )
        })
        .collect();
    out.sort();
    out
}

/// A sandbox with `daemon` (and `bin`) enrolled and service `svc`.
fn enrolled(name: &str) -> Sandbox {
    require_tools();
    let sb = Sandbox::new(name);
    sb.write_config("");
    sb.write_service("svc", &sb.module_line(""));
    for user in [USER, "bin"] {
        let out = run_cli_with(&sb, &["enroll", user, "--secret-file", "-"], &[SECRET], "");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    sb
}

fn right_code() -> String {
    oathtool_code(SECRET, "SHA1", 6, 30, T0)
}

/// Applies `plant`, logs in with the right code, and checks the result and
/// that the state directory did not change.
fn case(name: &str, expect: Option<&str>, plant: impl FnOnce(&Sandbox)) {
    let sb = enrolled(name);
    plant(&sb);
    let before = snapshot(sb.state_dir());
    let out = sb.pamtester("svc", USER, &[&right_code()], T0);
    match expect {
        None => assert!(out.succeeded(), "{name}: {out}"),
        Some(error) => {
            assert!(!out.succeeded(), "{name}: {out}");
            assert_eq!(out.pam_error(), Some(error), "{name}: {out}");
            assert_eq!(snapshot(sb.state_dir()), before, "{name}: files changed");
        }
    }
}

fn secret_path(sb: &Sandbox) -> std::path::PathBuf {
    sb.state_dir().join("daemon.secret")
}

fn state_path(sb: &Sandbox) -> std::path::PathBuf {
    sb.state_dir().join("daemon.state")
}

fn write_private(path: &Path, bytes: &[u8]) {
    let _ = fs::remove_file(path);
    fs::write(path, bytes).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
}

fn edit_secret(sb: &Sandbox, from: &str, to: &str) {
    let text = fs::read_to_string(secret_path(sb)).unwrap();
    assert!(text.contains(from), "{from:?} not in record");
    write_private(&secret_path(sb), text.replacen(from, to, 1).as_bytes());
}

const UNAVAIL: Option<&str> = Some(pam_err::AUTHINFO_UNAVAIL);

/// Symlinks at the record, the state, the lock and the directory are refused.
#[test]
fn symlinks_are_refused() {
    case("link-shadow", UNAVAIL, |sb| {
        fs::remove_file(secret_path(sb)).unwrap();
        std::os::unix::fs::symlink("/etc/shadow", secret_path(sb)).unwrap();
    });
    case("link-other-user", UNAVAIL, |sb| {
        fs::remove_file(secret_path(sb)).unwrap();
        std::os::unix::fs::symlink("bin.secret", secret_path(sb)).unwrap();
    });
    case("link-state", UNAVAIL, |sb| {
        fs::remove_file(state_path(sb)).unwrap();
        std::os::unix::fs::symlink("bin.state", state_path(sb)).unwrap();
    });
    case("link-lock", UNAVAIL, |sb| {
        let lock = sb.state_dir().join("daemon.lock");
        fs::remove_file(&lock).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", &lock).unwrap();
    });
    // The state directory itself, and a component above it, as symlinks.
    let sb = enrolled("link-dir");
    let real = sb.dir().join("real-state");
    fs::rename(sb.state_dir(), &real).unwrap();
    std::os::unix::fs::symlink(&real, sb.state_dir()).unwrap();
    let out = sb.pamtester("svc", USER, &[&right_code()], T0);
    assert_eq!(out.pam_error(), Some(pam_err::AUTHINFO_UNAVAIL), "{out}");
    let sb = enrolled("link-parent");
    let moved = sb.dir().join("moved");
    fs::create_dir(&moved).unwrap();
    fs::rename(sb.state_dir(), moved.join("state")).unwrap();
    let via = sb.dir().join("via");
    std::os::unix::fs::symlink(&moved, &via).unwrap();
    fs::write(
        sb.config_path(),
        format!("state_dir = \"{}/state\"\n", via.display()),
    )
    .unwrap();
    let out = sb.pamtester("svc", USER, &[&right_code()], T0);
    assert_eq!(out.pam_error(), Some(pam_err::AUTHINFO_UNAVAIL), "{out}");
}

/// Hard links, FIFOs, devices and directories where a record should be are
/// refused at once (a FIFO must not hang the login: CVE-2024-22365).
#[test]
fn non_regular_files_are_refused() {
    case("hardlink", UNAVAIL, |sb| {
        fs::hard_link(secret_path(sb), sb.dir().join("copy")).unwrap();
    });
    case("fifo", UNAVAIL, |sb| {
        fs::remove_file(secret_path(sb)).unwrap();
        nix::unistd::mkfifo(
            &secret_path(sb),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
    });
    case("fifo-state", UNAVAIL, |sb| {
        fs::remove_file(state_path(sb)).unwrap();
        nix::unistd::mkfifo(
            &state_path(sb),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
    });
    if root_or_skip("non_regular_files_are_refused/device", "mknod", &[]) {
        case("device", UNAVAIL, |sb| {
            fs::remove_file(secret_path(sb)).unwrap();
            let status = Command::new("mknod")
                .arg(secret_path(sb))
                .args(["c", "1", "3"])
                .status()
                .unwrap();
            assert!(status.success());
        });
    }
    case("directory", UNAVAIL, |sb| {
        fs::remove_file(secret_path(sb)).unwrap();
        fs::create_dir(secret_path(sb)).unwrap();
    });
}

/// Group/world-writable or readable files and directories, and files owned
/// by another user, are refused.
#[test]
fn loose_permissions_and_wrong_owners_are_refused() {
    for mode in [0o640, 0o604, 0o660, 0o666] {
        case(&format!("secret-mode-{mode:o}"), UNAVAIL, |sb| {
            fs::set_permissions(secret_path(sb), fs::Permissions::from_mode(mode)).unwrap();
        });
    }
    case("state-mode", UNAVAIL, |sb| {
        fs::set_permissions(state_path(sb), fs::Permissions::from_mode(0o644)).unwrap();
    });
    case("dir-0750", UNAVAIL, |sb| {
        fs::set_permissions(sb.state_dir(), fs::Permissions::from_mode(0o750)).unwrap();
    });
    case("dir-0777", UNAVAIL, |sb| {
        fs::set_permissions(sb.state_dir(), fs::Permissions::from_mode(0o777)).unwrap();
    });
    case("parent-group-writable", UNAVAIL, |sb| {
        // A group-writable directory between / and the state directory.
        let nested = sb.dir().join("nested");
        fs::create_dir(&nested).unwrap();
        fs::set_permissions(&nested, fs::Permissions::from_mode(0o775)).unwrap();
        fs::rename(sb.state_dir(), nested.join("state")).unwrap();
        std::os::unix::fs::symlink(nested.join("state"), sb.state_dir()).unwrap();
        fs::write(
            sb.config_path(),
            format!("state_dir = \"{}/state\"\n", nested.display()),
        )
        .unwrap();
    });
    if root_or_skip(
        "loose_permissions_and_wrong_owners_are_refused/owner",
        "chown",
        &[],
    ) {
        case("owner-nobody", UNAVAIL, |sb| {
            std::os::unix::fs::chown(secret_path(sb), Some(65534), None).unwrap();
        });
        case("dir-owner-nobody", UNAVAIL, |sb| {
            std::os::unix::fs::chown(sb.state_dir(), Some(65534), None).unwrap();
        });
    }
}

/// Empty, huge, sparse, NUL, non-UTF-8, truncated and garbage records are
/// refused; CRLF line ends are valid TOML and work.
#[test]
fn damaged_records_are_refused() {
    case("empty-secret", UNAVAIL, |sb| {
        write_private(&secret_path(sb), b"")
    });
    case("empty-state", UNAVAIL, |sb| {
        write_private(&state_path(sb), b"")
    });
    case("huge", UNAVAIL, |sb| {
        let mut text = fs::read(secret_path(sb)).unwrap();
        text.extend(std::iter::repeat_n(b'#', 70_000));
        write_private(&secret_path(sb), &text);
    });
    case("sparse", UNAVAIL, |sb| {
        let f = fs::OpenOptions::new()
            .write(true)
            .open(state_path(sb))
            .unwrap();
        f.set_len(1 << 30).unwrap();
    });
    case("nul", UNAVAIL, |sb| {
        let mut text = fs::read(secret_path(sb)).unwrap();
        text.insert(10, 0);
        write_private(&secret_path(sb), &text);
    });
    case("non-utf8", UNAVAIL, |sb| {
        let mut text = fs::read(secret_path(sb)).unwrap();
        text.extend_from_slice(b"# \xff\xfe\n");
        write_private(&secret_path(sb), &text);
    });
    case("truncated", UNAVAIL, |sb| {
        let text = fs::read(secret_path(sb)).unwrap();
        write_private(&secret_path(sb), &text[..text.len() / 2]);
    });
    case("garbage", UNAVAIL, |sb| {
        write_private(&state_path(sb), b"\x1b[2J[[[ not toml")
    });
    case("crlf", None, |sb| {
        let text = fs::read_to_string(secret_path(sb)).unwrap();
        write_private(&secret_path(sb), text.replace('\n', "\r\n").as_bytes());
    });
}

/// Unknown fields and out-of-range values in records are refused.
#[test]
fn invalid_record_values_are_refused() {
    let edits: [(&str, &str, &str); 10] = [
        ("unknown-field", "version = 1", "version = 1\nnullok = true"),
        ("version-2", "version = 1", "version = 2"),
        ("period-0", "period = 30", "period = 0"),
        ("digits-0", "digits = 6", "digits = 0"),
        ("digits-11", "digits = 6", "digits = 11"),
        ("algorithm-md5", "\"SHA1\"", "\"MD5\""),
        ("short-secret", SECRET, "GEZDGNBVGY3TQ"),
        ("invalid-base32", SECRET, "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJ1"),
        ("empty-secret-value", SECRET, ""),
        ("bad-salt", "salt = \"", "salt = \"zz"),
    ];
    for (name, from, to) in edits {
        case(name, UNAVAIL, |sb| edit_secret(sb, from, to));
    }
    case("state-unknown-field", UNAVAIL, |sb| {
        write_private(&state_path(sb), b"version = 1\nskip_checks = true\n");
    });
    case("state-negative", UNAVAIL, |sb| {
        write_private(&state_path(sb), b"version = 1\nfailures = -5\n")
    });
}

/// Stale temp files and an existing, unlocked lock file do not disturb a
/// login, and the temp file is left alone.
#[test]
fn stale_temp_and_lock_files_are_harmless() {
    let sb = enrolled("stale");
    let temp = sb.state_dir().join(".daemon.state.tmp-99-00112233");
    write_private(&temp, b"version = 1\nfailures = 0\n");
    let out = sb.pamtester("svc", USER, &[&right_code()], T0);
    assert!(out.succeeded(), "{out}");
    assert_eq!(fs::read(&temp).unwrap(), b"version = 1\nfailures = 0\n");
}

/// Hostile user names from PAM get the normal prompt and AUTH_ERR, or (not
/// UTF-8) fail before it; nothing is created anywhere.
#[test]
fn hostile_user_names_are_denied() {
    let sb = enrolled("names");
    let before = snapshot(sb.state_dir());
    let long = "a".repeat(1000);
    for name in [
        ".",
        "..",
        "../daemon",
        "a/b",
        "/etc/shadow",
        "x\ny",
        "a\u{1b}[31m",
        "-daemon",
        &long,
    ] {
        let out = sb.pamtester("svc", name, &[&right_code()], T0);
        assert_eq!(out.pam_error(), Some(pam_err::AUTH_ERR), "{name:?}: {out}");
        assert_eq!(out.prompt_count("Verification code: "), 1, "{name:?}");
    }
    let out = sb.pamtester_with(
        "svc",
        OsStr::from_bytes(b"dae\xffmon")
            .to_str()
            .unwrap_or("dae\u{fffd}mon"),
        &[&right_code()],
        T0,
        &[],
        "authenticate",
    );
    assert!(!out.succeeded(), "{out}");
    assert_eq!(snapshot(sb.state_dir()), before);
}

/// Odd answers: non-ASCII digits, wrong lengths, letters, a megabyte line.
#[test]
fn odd_answers_are_refused() {
    let sb = enrolled("answers");
    sb.write_config("[lockout]\nmax_failures = 100\n");
    let right = right_code();
    let seven = format!("{right}1");
    let arabic: String = right
        .chars()
        .map(|c| char::from_u32(0x0660 + c.to_digit(10).unwrap()).unwrap())
        .collect();
    let megabyte = "1".repeat(1 << 20);
    for answer in [
        arabic.as_str(),
        "12345",
        seven.as_str(),
        "12345a",
        "",
        megabyte.as_str(),
    ] {
        let out = sb.pamtester("svc", USER, &[answer], T0);
        assert_eq!(
            out.pam_error(),
            Some(pam_err::AUTH_ERR),
            "{:.40}: {out}",
            answer
        );
    }
    // None of them was taken for the right code.
    assert!(sb.pamtester("svc", USER, &[&right], T0).succeeded());
}

/// A non-root caller (a screen locker runs as the user) cannot read the
/// root-only state: a clear failure, never a skip, even under "skip". The
/// user is told plainly that this program cannot check codes (no prompt),
/// and syslog says which uid the caller runs as and why.
#[test]
fn non_root_caller_fails_closed() {
    if !root_or_skip(
        "non_root_caller_fails_closed",
        "it switches to user nobody",
        &[Needs::Program("setpriv", "util-linux")],
    ) {
        return;
    }
    let sb = enrolled("nonroot");
    // nobody loads a copy of the module from the sandbox (0755 all the
    // way): the checkout, and so target/, may sit in a 0700 directory
    // (TESTING.md, "Clones anywhere").
    let module = sb.dir().join("libpam_twofactor.so");
    fs::copy(module_path(), &module).unwrap();
    fs::set_permissions(&module, fs::Permissions::from_mode(0o755)).unwrap();
    sb.write_service(
        "svc",
        &format!(
            "auth required {} config={}",
            module.display(),
            sb.config_path().display()
        ),
    );
    // Let nobody read the config (0644) so the state directory is what stops it.
    fs::write(
        sb.config_path(),
        format!(
            "state_dir = \"{}\"\nunenrolled = \"skip\"\n",
            sb.state_dir().display()
        ),
    )
    .unwrap();
    fs::set_permissions(sb.config_path(), fs::Permissions::from_mode(0o644)).unwrap();
    let preload = format!(
        "{} {}",
        pam_wrapper_lib().display(),
        libfaketime().display()
    );
    let log = DevLog::bind(&sb);
    log.open_to_all();
    log.socket().set_nonblocking(true).unwrap();
    let mut cmd = Command::new("flock");
    cmd.arg(sandbox_base().join("pam_wrapper.lock"))
        .args([
            "setpriv",
            "--reuid=nobody",
            "--regid=nogroup",
            "--clear-groups",
            "env",
        ])
        .arg(format!("LD_PRELOAD={preload}"))
        .arg("PAM_WRAPPER=1")
        .arg(format!(
            "PAM_WRAPPER_SERVICE_DIR={}",
            sb.service_dir().display()
        ))
        .arg(format!("FAKETIME={T0}"))
        .arg("FAKETIME_DONT_FAKE_MONOTONIC=1")
        .args(["timeout", "60", "pamtester", "svc", USER, "authenticate"]);
    let out = log
        .wrap(cmd)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains(pam_err::AUTHINFO_UNAVAIL), "{stderr}");
    assert!(
        stderr.contains("This program cannot check verification codes: it does not run as root"),
        "{stderr}"
    );
    assert!(!stdout.contains("Verification code") && !stderr.contains("Verification code"));
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap().uid;
    let mut lines = Vec::new();
    let mut buf = [0u8; 4096];
    while let Ok(n) = log.socket().recv(&mut buf) {
        lines.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let all = lines.join("\n");
    assert!(
        lines.iter().any(|l| l.starts_with("<83>pam_twofactor[")
            && l.contains(&format!(
                "the caller runs as uid {nobody}, not root, and cannot read the state directory"
            ))
            && l.contains(&format!("user={USER} service=svc"))),
        "{all}"
    );
}

/// Two names for one uid: `daemon2`, an alias listed after `daemon` (uid 1),
/// has no enrollment of its own. Under `unenrolled = "skip"` it must not log
/// in without `daemon`'s code: it uses `daemon`'s record, state and lock,
/// and nothing is written under its own name. An alias listed first is its
/// uid's first name and is not redirected (documented in
/// docs/threat-model.md); a name with a uid of its own is simply unenrolled.
#[test]
fn alias_of_an_enrolled_uid_needs_its_code() {
    let sb = enrolled("alias");
    sb.write_config("unenrolled = \"skip\"\n");
    // After pam_permit, a skip is a success without a prompt.
    let svc = "then-permit";
    sb.write_service(
        svc,
        &format!("{}\nauth required pam_permit.so", sb.module_line("")),
    );
    let daemon = "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n";
    let alias = "daemon2:x:1:1:alias:/usr/sbin:/usr/sbin/nologin\n";
    let after = format!("root:x:0:0:root:/root:/bin/bash\n{daemon}{alias}");
    let wrong = if right_code() == "123456" {
        "654321"
    } else {
        "123456"
    };

    let out = sb.pamtester_with_passwd(svc, "daemon2", &[wrong], T0, &after);
    assert_eq!(out.pam_error(), Some(pam_err::AUTH_ERR), "{out}");
    assert_eq!(out.prompt_count("Verification code: "), 1, "{out}");
    let state = fs::read_to_string(state_path(&sb)).unwrap();
    assert!(state.contains("failures = 1\n"), "daemon's state:\n{state}");

    let out = sb.pamtester_with_passwd(svc, "daemon2", &[&right_code()], T0, &after);
    assert!(out.succeeded(), "{out}");
    // The step is now used for daemon itself: the same code is a replay.
    let out = sb.pamtester(svc, USER, &[&right_code()], T0);
    assert_eq!(out.pam_error(), Some(pam_err::AUTH_ERR), "{out}");
    let names: Vec<String> = fs::read_dir(sb.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("daemon2"))
        .collect();
    assert!(names.is_empty(), "files written for the alias: {names:?}");

    // Listed first, the alias is its uid's first name: not redirected.
    let first = format!("root:x:0:0:root:/root:/bin/bash\n{alias}{daemon}");
    let out = sb.pamtester_with_passwd(svc, "daemon2", &[], T0, &first);
    assert!(out.succeeded(), "{out}");
    assert_eq!(out.prompt_count("Verification code: "), 0, "{out}");
    // Its own uid: plainly unenrolled, skipped without a prompt.
    let own = format!("{after}daemon3:x:4242:4242::/:/bin/false\n");
    let out = sb.pamtester_with_passwd(svc, "daemon3", &[], T0, &own);
    assert!(out.succeeded(), "{out}");
    assert_eq!(out.prompt_count("Verification code: "), 0, "{out}");
}
