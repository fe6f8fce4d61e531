//! Storage faults through the real module: a full disk (a tiny tmpfs as the
//! state directory) and a read-only state directory, each in a private
//! mount namespace. The code is refused, the old state is intact, no temp
//! file is left — and once the fault is gone the same code works.
//! Root only (mounts): not root, skipped loudly; as root, a test that
//! cannot run fails with its reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::process::Command;

use common::*;

const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// What the script inside the namespace prints, one `key=value` per line.
fn run_in_namespace(sb: &Sandbox, fault: &str, answer: &str) -> String {
    let script = r#"
set -u
state=$1 fault=$2 answer=$3 saved=$4 pamd=$5 preload=$6 lock=$7
case "$fault" in
  full) mount -t tmpfs -o size=16k,mode=0700 tf-full "$state"
        cp -a "$saved"/. "$state"/
        dd if=/dev/zero of="$state/filler" bs=1k 2>/dev/null || true ;;
  readonly) mount --bind "$state" "$state" && mount -o remount,bind,ro "$state" ;;
esac
login() {
  printf '%s\n' "$answer" | flock "$lock" env LD_PRELOAD="$preload" PAM_WRAPPER=1 \
    PAM_WRAPPER_SERVICE_DIR="$pamd" FAKETIME="2030-06-15 12:00:00" FAKETIME_DONT_FAKE_MONOTONIC=1 \
    timeout 60 pamtester svc daemon authenticate 2>&1 | grep -v PWRAP | tr '\n' ' '
  echo
}
before=$(cat "$state/daemon.state")
echo "faulted=$(login)"
[ "$before" = "$(cat "$state/daemon.state")" ] && echo "state=unchanged" || echo "state=changed"
echo "temps=$(ls -A "$state" | grep -c '\.tmp-')"
case "$fault" in
  full) rm -f "$state/filler" ;;
  readonly) mount -o remount,bind,rw "$state" ;;
esac
echo "healed=$(login)"
"#;
    let saved = sb.dir().join("saved");
    let status = Command::new("cp")
        .arg("-a")
        .arg(sb.state_dir())
        .arg(&saved)
        .status()
        .unwrap();
    assert!(status.success());
    let preload = format!(
        "{} {}",
        pam_wrapper_lib().display(),
        libfaketime().display()
    );
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "bash",
            "-c",
            script,
            "fault",
        ])
        .arg(sb.state_dir())
        .arg(fault)
        .arg(answer)
        .arg(&saved)
        .arg(sb.service_dir())
        .arg(preload)
        .arg(sandbox_base().join("pam_wrapper.lock"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

/// Root with a private mount namespace; see [`root_or_skip`].
fn can_mount(test: &str) -> bool {
    root_or_skip(
        test,
        "mounts in a private mount namespace",
        &[Needs::MountNamespace],
    )
}

fn enrolled(name: &str) -> (Sandbox, Vec<String>) {
    require_tools();
    let sb = Sandbox::new(name);
    sb.write_config("");
    sb.write_service("svc", &sb.module_line(""));
    let args = ["enroll", "daemon", "--secret-file", "-", "--json"];
    let out = run_cli_with(&sb, &args, &[SECRET], "");
    assert!(out.status.success());
    let json = String::from_utf8_lossy(&out.stdout).into_owned();
    let start = json.find("\"backup_codes\":[").unwrap() + 16;
    let end = start + json[start..].find(']').unwrap();
    let codes = json[start..end]
        .split(',')
        .map(|s| s.trim_matches('"').to_string())
        .collect();
    (sb, codes)
}

fn check(text: &str) {
    let line = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key}= in {text}"))
            .to_string()
    };
    assert!(
        line("faulted").contains(pam_err::AUTHINFO_UNAVAIL),
        "{text}"
    );
    assert!(!line("faulted").contains("successfully"), "{text}");
    assert_eq!(line("state"), "unchanged", "{text}");
    assert_eq!(line("temps"), "0", "{text}");
    assert!(line("healed").contains(SUCCESS_LINE), "{text}");
}

/// Disk full: a right TOTP code is refused, nothing changes, no temp file;
/// with space again the same code logs in.
#[test]
fn full_disk_refuses_a_right_code_and_keeps_the_state() {
    if !can_mount("full_disk_refuses_a_right_code_and_keeps_the_state") {
        return;
    }
    let (sb, _) = enrolled("fault-full-totp");
    check(&run_in_namespace(
        &sb,
        "full",
        &oathtool_code(SECRET, "SHA1", 6, 30, T0),
    ));
}

/// Disk full: a backup code is refused and not consumed; it works later.
#[test]
fn full_disk_does_not_consume_a_backup_code() {
    if !can_mount("full_disk_does_not_consume_a_backup_code") {
        return;
    }
    let (sb, codes) = enrolled("fault-full-backup");
    check(&run_in_namespace(&sb, "full", &codes[0]));
}

/// Read-only state directory: a right code is refused, the state is intact.
#[test]
fn read_only_state_directory_refuses_a_right_code() {
    if !can_mount("read_only_state_directory_refuses_a_right_code") {
        return;
    }
    let (sb, _) = enrolled("fault-readonly");
    check(&run_in_namespace(
        &sb,
        "readonly",
        &oathtool_code(SECRET, "SHA1", 6, 30, T0),
    ));
}
