//! Harness for Layer 3 of `TESTING.md`: the real `/usr/sbin/sshd`, `sudo` and
//! `su` from Debian's packages against the built module, each in a private
//! mount namespace. Included by `tests/e2e_consumers.rs` and
//! `tests/e2e_ssh_guide.rs` as `e2e_support`.
//!
//! Nothing on the machine changes. Every consumer (and every `twofactor`
//! call that needs the test users) runs as `unshare --mount --propagation
//! private /bin/sh <sandbox>/ns.sh PROGRAM ...`, and `ns.sh` mounts a
//! read-only overlay on `/etc` whose top layer is the sandbox's `etc/`
//! (copies of `passwd`, `shadow`, `group`, `gshadow`, and `sudoers` for
//! sudo) over the host's `/etc`, then binds the sandbox's `pam.d/`
//! directory over `/etc/pam.d`. The test users exist only in those copies;
//! their homes live in the sandbox. `ns.sh` refuses to mount anything
//! unless it really is in a new mount namespace.
//!
//! Directories, never single files (TESTING.md): a bind mount of a single
//! file is silently dropped in every other namespace when the host replaces
//! that file by rename (any `useradd` or `passwd` on the machine meanwhile),
//! and sshd then sees the host's users ("Invalid user"). The overlay's top
//! layer hides the host's file whatever happens to it;
//! `a_rename_on_the_host_drops_a_bound_file_but_not_an_overlay_of_its_directory`
//! shows both. Read-only: whatever a consumer tried to write to `/etc`
//! would fail rather than land on the host.
//!
//! The clock is pinned to [`T0`] with libfaketime. sshd and the CLI get it
//! through `LD_PRELOAD`. sudo and su are setuid root, and ld.so ignores
//! `LD_PRELOAD` for them (secure-execution mode), so their sandboxes also
//! get an `etc/ld.so.preload` naming libfaketime (the host has none).
//!
//! Every process is bounded by a timeout and killed by PID (its whole
//! process tree, and for sshd everything left in its mount namespace).
//!
//! For the fleet (tests/fleet_hosts.rs) a `System` can be one host of a
//! small network ([`System::in_network_namespace`]: every command runs as
//! `ip netns exec NS unshare --mount … ns.sh …`, sshd listens on the host's
//! address and the ssh client, in the root namespace, connects to it) and
//! can run on the real clock ([`System::use_real_clock`]: the fleet's
//! database decides the time).
#![allow(dead_code)]

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{self, Sandbox, T0};

/// Every test user's password. [`PASSWORD_HASH`] is its SHA-512 crypt,
/// made with `openssl passwd -6 -salt e2etestsalt12345 'e2e-Passw0rd'`.
pub const PASSWORD: &str = "e2e-Passw0rd";
const PASSWORD_HASH: &str = "$6$e2etestsalt12345$Mg0xuAQt/ctLYCtoRitMoJyoR1paJ1SgtSEqP9WUHpOpf4jngZCSVCyA68XZ2ExqojFIv.TRQUiWPdSSVk8Hq/";
/// The base32 secret every test user is enrolled with.
pub const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
/// Test users get uids from here up (they exist only inside the namespaces).
const FIRST_UID: u32 = 64_101;
/// The limit for any one command (ssh login, sudo, su, CLI).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// The limit for sshd to start listening.
const SSHD_START_TIMEOUT: Duration = Duration::from_secs(15);
const SSHD: &str = "/usr/sbin/sshd";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The TOTP code (SHA1, 6 digits, 30 s) for [`SECRET`] at `at`, from oathtool.
pub fn code_at(at: &str) -> String {
    common::oathtool_code(SECRET, "SHA1", 6, 30, at)
}

/// A 6-digit code that is none of [`SECRET`]'s codes from 20 steps before
/// [`T0`] to 20 steps after, so it is plainly wrong (not a replay, not clock
/// drift).
pub fn wrong_code() -> String {
    wrong_code_for(SECRET)
}

/// A 6-digit code that is none of `secret`'s (SHA1, 30 s) codes from 20
/// steps before [`T0`] to 20 steps after.
pub fn wrong_code_for(secret: &str) -> String {
    let near = common::oathtool(secret, &common::at_offset(T0, -600), &["-w", "40"]);
    let lines: Vec<&str> = near.lines().map(str::trim).collect();
    assert_eq!(lines.len(), 41, "oathtool -w 40 gave {near:?}");
    let near: HashSet<&str> = lines.into_iter().collect();
    ["123456", "000000", "999999", "246802", "135791"]
        .into_iter()
        .find(|c| !near.contains(c))
        .expect("all candidate wrong codes are valid codes near T0")
        .to_string()
}

/// Whether the e2e tests can run here ([`common::root_or_skip`]): root,
/// a private mount namespace with an overlay on `/etc`, and the consumers.
/// Not root: a loud `SKIPPED <test>` line and false. Root with anything
/// missing: the test fails with the reason. libtest names each test's
/// thread after the test.
pub fn can_run() -> bool {
    let current = thread::current();
    let test = current.name().unwrap_or("an e2e consumer test");
    if !common::root_or_skip(
        test,
        "sshd, sudo and su in private mount namespaces",
        &[common::Needs::EtcOverlay],
    ) {
        return false;
    }
    require_consumer_tools();
    true
}

/// Panics, naming the packages, if a consumer or tool is missing: once the
/// machine qualifies, a missing program is a failure, not a skip.
fn require_consumer_tools() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        common::require_tools();
        let mut missing = Vec::new();
        if !Path::new(SSHD).is_file() {
            missing.push(format!("{SSHD} (openssh-server)"));
        }
        for (program, package) in [
            ("ssh", "openssh-client"),
            ("ssh-keygen", "openssh-client"),
            ("sudo", "sudo"),
            ("su", "util-linux"),
            ("runuser", "util-linux"),
            ("setpriv", "util-linux"),
            ("unshare", "util-linux"),
            ("mount", "mount"),
            ("kill", "procps"),
        ] {
            if common::find_program(program).is_none() {
                missing.push(format!("{program} ({package})"));
            }
        }
        assert!(
            missing.is_empty(),
            "\n*** e2e consumer tests CANNOT RUN: missing {}\n*** apt-get install -y \
             openssh-server openssh-client sudo\n",
            missing.join(", ")
        );
    });
}

fn program(name: &str) -> PathBuf {
    common::find_program(name).unwrap_or_else(|| panic!("`{name}` is not in PATH"))
}

fn make_dir(path: &Path, mode: u32) {
    fs::DirBuilder::new()
        .mode(mode)
        .create(path)
        .unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn write_mode(path: &Path, text: &str, mode: u32) {
    fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid))
        .unwrap_or_else(|e| panic!("chown {uid} {}: {e}", path.display()));
}

fn append(path: &Path, line: &str) {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    writeln!(f, "{line}").unwrap_or_else(|e| panic!("append to {}: {e}", path.display()));
}

/// What a finished command printed.
#[derive(Debug)]
pub struct Run {
    /// The exit status (`None`: killed by a signal).
    pub status: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit status {:?}\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` in its own process group and answers prompts on its stdin:
/// for each `(prompt, answer)` in turn it waits until `prompt` appears on
/// stderr (after the previous one), then writes `answer` and a newline.
/// Then stdin is closed. A script that was not used up (the process ended
/// before one of its prompts appeared) is a failure: script only the
/// prompts that must come. Everything is bounded by `timeout`: on expiry
/// (an unexpected prompt waits for an answer that never comes) the whole
/// process tree is killed and the test panics.
pub fn drive(cmd: &mut Command, script: &[(&str, &str)], timeout: Duration) -> Run {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    let mut stdin = child.stdin.take();
    let mut out_pipe = child.stdout.take().expect("stdout pipe");
    let mut err_pipe = child.stderr.take().expect("stderr pipe");
    let (out_tx, out_rx) = mpsc::channel::<Vec<u8>>();
    thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        let _ = out_tx.send(v);
    });
    let (tx, rx) = mpsc::channel::<Vec<u8>>();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match err_pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            }
        }
    });
    let mut stderr: Vec<u8> = Vec::new();
    let mut stderr_closed = false;
    let mut matched = 0;
    let fail = |child: &mut Child, what: &str, stderr: &[u8]| -> ! {
        kill_tree(child.id());
        let _ = child.wait();
        panic!(
            "{what} within {timeout:?}: {cmd:?}\n--- stderr so far ---\n{}",
            String::from_utf8_lossy(stderr)
        );
    };
    let mut answered = 0;
    'script: for (prompt, answer) in script {
        loop {
            if let Some(at) = find(&stderr[matched..], prompt.as_bytes()) {
                matched += at + prompt.len();
                answered += 1;
                if let Some(pipe) = stdin.as_mut() {
                    // The process may already have given up (EPIPE).
                    let _ = pipe.write_all(format!("{answer}\n").as_bytes());
                    let _ = pipe.flush();
                }
                break;
            }
            if stderr_closed {
                break 'script;
            }
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(chunk) => stderr.extend_from_slice(&chunk),
                Err(RecvTimeoutError::Disconnected) => stderr_closed = true,
                Err(RecvTimeoutError::Timeout) => {
                    fail(&mut child, &format!("no prompt {prompt:?}"), &stderr)
                }
            }
        }
    }
    drop(stdin);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                fail(&mut child, "the command did not finish", &stderr)
            }
            Ok(None) => thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for {cmd:?}: {e}"),
        }
    };
    // The child is reaped: from here only its process group is safe to name.
    let lingering = |stderr: &[u8]| -> ! {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", child.id())])
            .status();
        panic!(
            "{cmd:?} exited but something kept its output open for {timeout:?}:\n{}",
            String::from_utf8_lossy(stderr)
        );
    };
    while !stderr_closed {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(chunk) => stderr.extend_from_slice(&chunk),
            Err(RecvTimeoutError::Disconnected) => stderr_closed = true,
            Err(RecvTimeoutError::Timeout) => lingering(&stderr),
        }
    }
    let stdout = out_rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .unwrap_or_else(|_| lingering(&stderr));
    let run = Run {
        status: status.code(),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    };
    assert!(
        answered == script.len(),
        "{cmd:?} ended without asking {:?}\n{run}",
        &script[answered..]
    );
    run
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// `(pid, ppid)` of every process, from `/proc/<pid>/stat`.
fn processes() -> Vec<(u32, u32)> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let rest = &stat[stat.rfind(')')? + 1..];
        let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
        Some((pid, ppid))
    })
    .collect()
}

/// `root` and all its descendants.
fn process_tree(root: u32) -> Vec<u32> {
    let all = processes();
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            all.iter()
                .filter(|&&(pid, ppid)| ppid == parent && !tree.contains(&pid))
                .map(|&(pid, _)| pid)
                .collect::<Vec<_>>(),
        );
        i += 1;
    }
    tree
}

/// The mount namespace of `pid` (`mnt:[inode]`), if it still exists.
fn mount_namespace(pid: u32) -> Option<String> {
    fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.display().to_string())
}

/// Every process in mount namespace `ns`.
fn processes_in(ns: &str) -> Vec<u32> {
    processes()
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|&pid| mount_namespace(pid).as_deref() == Some(ns))
        .collect()
}

fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn kill_tree(root: u32) {
    signal("KILL", &process_tree(root));
}

/// The machine as the consumers see it: a [`Sandbox`] (state dir, config,
/// copied `pam.d`) plus copies of the user databases, homes, `ns.sh`.
///
/// ```text
/// <sandbox>/pam.d/        copy of /etc/pam.d (pam_unix gets `nodelay`),
///                         bound over /etc/pam.d
/// <sandbox>/etc/          passwd shadow group gshadow [sudoers]
///                         [ld.so.preload]: the top layer of /etc
/// <sandbox>/home/<user>/  homes of the test users
/// <sandbox>/ns.sh         the namespace setup, then exec "$@"
/// ```
pub struct System {
    /// Declared first so that it stops before the sandbox is removed.
    sshd: RefCell<Option<Sshd>>,
    pub sb: Sandbox,
    next_uid: AtomicU32,
    next_login: AtomicU32,
    /// `(network namespace, address)`: see [`System::in_network_namespace`].
    network: RefCell<Option<(String, String)>>,
    /// The ssh client runs in that network namespace too: see
    /// [`System::ssh_from_inside`].
    ssh_inside: Cell<bool>,
    /// No libfaketime anywhere: see [`System::use_real_clock`].
    real_clock: Cell<bool>,
}

impl System {
    /// A sandbox whose config is `state_dir` plus `config_extra`.
    pub fn new(name: &str, config_extra: &str) -> System {
        let sb = Sandbox::new(name);
        sb.write_config(config_extra);
        let copy = Command::new("cp")
            .arg("-a")
            .arg("/etc/pam.d/.")
            .arg(sb.service_dir())
            .status()
            .expect("cp");
        assert!(copy.success(), "copying /etc/pam.d failed");
        let etc = sb.dir().join("etc");
        make_dir(&etc, 0o755);
        for (file, mode) in [
            ("passwd", 0o644),
            ("group", 0o644),
            ("shadow", 0o640),
            ("gshadow", 0o640),
        ] {
            let dst = etc.join(file);
            fs::copy(Path::new("/etc").join(file), &dst)
                .unwrap_or_else(|e| panic!("copy /etc/{file}: {e}"));
            fs::set_permissions(&dst, fs::Permissions::from_mode(mode)).expect("chmod");
        }
        make_dir(&sb.dir().join("home"), 0o755);
        make_dir(&sb.dir().join("logins"), 0o755);
        let system = System {
            sshd: RefCell::new(None),
            sb,
            next_uid: AtomicU32::new(FIRST_UID),
            next_login: AtomicU32::new(0),
            network: RefCell::new(None),
            ssh_inside: Cell::new(false),
            real_clock: Cell::new(false),
        };
        system.add_nodelay_to_pam_unix();
        system.write_ns_script();
        system.write_askpass();
        system
    }

    /// `pam_unix.so nodelay` in the copied `common-auth`: a failed password
    /// would otherwise cost about 2 s.
    fn add_nodelay_to_pam_unix(&self) {
        let path = self.sb.service_dir().join("common-auth");
        let text = fs::read_to_string(&path).expect("read common-auth");
        let mut changed = 0;
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                if l.starts_with("auth") && l.contains("pam_unix.so") {
                    changed += 1;
                    format!("{l} nodelay")
                } else {
                    l.to_string()
                }
            })
            .collect();
        assert_eq!(changed, 1, "expected one pam_unix auth line in:\n{text}");
        write_mode(&path, &(lines.join("\n") + "\n"), 0o644);
    }

    fn write_ns_script(&self) {
        let dir = self.sb.dir().display().to_string();
        assert!(
            dir.chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-.".contains(c)),
            "{dir} cannot be quoted in ns.sh"
        );
        let script = format!(
            r#"#!/bin/sh
# Runs "$@" with this test's /etc files. Only ever started by
# `unshare --mount --propagation private`; refuses to mount otherwise.
set -eu
d='{dir}'
if [ "$(readlink /proc/self/ns/mnt)" = "$E2E_HOST_MOUNT_NS" ]; then
  echo "ns.sh: not in a private mount namespace; refusing to mount" >&2
  exit 99
fi
# An empty, read-only /dev/shm: libfaketime (LD_PRELOAD below, or
# ld.so.preload in the /etc overlay) then keeps no shared memory.
# Otherwise the first process that loads it creates a semaphore in the
# host's /dev/shm and becomes its "creator"; a forked copy of a creator
# unlinks it on exit, and sshd's seccomp sandbox kills a preauth child
# that calls unlink (SIGSYS, "preauth child terminated by signal 31").
mount -t tmpfs -o ro,size=4k,mode=0755 e2e-shm /dev/shm
# Whole directories only: a file bound on its own is dropped when the
# host renames another file over it (useradd, passwd), here or anywhere.
mount -t overlay e2e-etc -o "lowerdir=$d/etc:/etc" /etc
mount --bind "$d/pam.d" /etc/pam.d
# libfaketime only from here on (not in unshare and this script, whose
# exec would leave a semaphore behind in the host's /dev/shm).
if [ -n "${{E2E_PRELOAD:-}}" ]; then
  LD_PRELOAD=$E2E_PRELOAD
  export LD_PRELOAD
fi
unset E2E_PRELOAD
exec "$@"
"#
        );
        write_mode(&self.sb.dir().join("ns.sh"), &script, 0o755);
    }

    /// The askpass program for ssh: answers by prompt text (`$1`) from the
    /// files in `$E2E_ANSWERS` and logs every prompt there. If the file
    /// `code-later` exists, the code prompt is first written whole to
    /// `shown` and the answer is the file `code` once the test has written
    /// it (see [`System::ssh_answering`]); the wait is bounded (20 s).
    fn write_askpass(&self) {
        let script = r#"#!/bin/sh
a="$E2E_ANSWERS"
printf '%s\n' "$1" >> "$a/prompts"
case "$1" in
  *"Verification code: "*)
    if [ -f "$a/code-later" ]; then
      printf '%s' "$1" > "$a/shown.tmp" && mv "$a/shown.tmp" "$a/shown"
      i=0
      while [ ! -f "$a/code" ]; do
        i=$((i + 1))
        if [ "$i" -gt 400 ]; then echo "askpass: no code from the test" >&2; exit 1; fi
        sleep 0.05
      done
    fi
    exec cat "$a/code" ;;
  *"Password: "*) exec cat "$a/password" ;;
  # What the delivery command of a codes-by-message test wrote.
  *"Code from the message: "*) exec cat "$a/../../message-code" ;;
esac
echo "askpass: unexpected prompt: $1" >&2
exit 1
"#;
        write_mode(&self.sb.dir().join("askpass"), script, 0o755);
    }

    /// From now on this system is a host with its own address: every
    /// command of [`System::ns_command`] runs in the network namespace
    /// `netns` (made by the caller, e.g. `common::netns::Net`) as `ip netns
    /// exec NETNS unshare --mount …`, in that order (`ip netns exec` enters
    /// a mount namespace of its own and execs, so the pid stays the
    /// program's and `ns.sh` mounts in a namespace of that process alone);
    /// sshd listens on `address` (an address of that namespace) and
    /// [`System::ssh`] connects to it from the caller's namespace. Call it
    /// before starting sshd.
    pub fn in_network_namespace(&self, netns: &str, address: &str) {
        assert!(self.sshd.borrow().is_none(), "sshd already started");
        *self.network.borrow_mut() = Some((netns.to_string(), address.to_string()));
    }

    /// Whether [`System::ssh`] and friends run the ssh client inside this
    /// host's network namespace (`ip netns exec NETNS ssh …`, no mount
    /// namespace): a user on the host's side of a cut link, who reaches the
    /// host's address while the host reaches nothing else.
    pub fn ssh_from_inside(&self, inside: bool) {
        assert!(
            !inside || self.network.borrow().is_some(),
            "in_network_namespace first"
        );
        self.ssh_inside.set(inside);
    }

    /// From now on nothing runs under libfaketime: sshd and the CLI see
    /// the real clock (the fleet's database decides the time; codes come
    /// from oathtool for the moment of the login).
    pub fn use_real_clock(&self) {
        self.real_clock.set(true);
    }

    /// The address sshd listens on and ssh connects to.
    pub fn address(&self) -> String {
        self.network
            .borrow()
            .as_ref()
            .map_or_else(|| "127.0.0.1".to_string(), |(_, a)| a.clone())
    }

    /// A command run as `unshare --mount --propagation private ns.sh argv...`
    /// (after `ip netns exec NETNS`, see [`System::in_network_namespace`])
    /// with a clean environment (C locale, UTC, a standard PATH).
    pub fn ns_command(&self, argv: &[&str]) -> Command {
        static HOST_NS: OnceLock<String> = OnceLock::new();
        let host_ns = HOST_NS
            .get_or_init(|| mount_namespace(std::process::id()).expect("own mount namespace"));
        let mut cmd = match self.network.borrow().as_ref() {
            Some((netns, _)) => {
                let mut cmd = Command::new(program("ip"));
                cmd.args(["netns", "exec", netns]).arg(program("unshare"));
                cmd
            }
            None => Command::new(program("unshare")),
        };
        cmd.args(["--mount", "--propagation", "private", "/bin/sh"])
            .arg(self.sb.dir().join("ns.sh"))
            .args(argv)
            .env_clear()
            .env("PATH", PATH)
            .env("LC_ALL", "C")
            .env("TZ", "UTC")
            .env("E2E_HOST_MOUNT_NS", host_ns);
        cmd
    }

    /// [`System::ns_command`] with the clock pinned at `at` through
    /// `LD_PRELOAD` (for programs that are not setuid).
    /// With [`System::use_real_clock`], the real clock instead.
    pub fn ns_command_at(&self, argv: &[&str], at: &str) -> Command {
        let mut cmd = self.ns_command(argv);
        if self.real_clock.get() {
            return cmd;
        }
        // ns.sh sets LD_PRELOAD from this just before it execs `argv`.
        cmd.env("E2E_PRELOAD", common::libfaketime())
            .env("FAKETIME", at)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        cmd
    }

    /// Adds `user` (password [`PASSWORD`], own group, home in the sandbox,
    /// shell `/bin/sh`) to the copied user databases.
    pub fn add_user(&self, user: &str) {
        let uid = self.next_uid.fetch_add(1, Ordering::SeqCst);
        let home = self.home(user);
        make_dir(&home, 0o755);
        chown(&home, uid);
        let etc = self.sb.dir().join("etc");
        for (file, id) in [("passwd", uid), ("group", uid)] {
            let text = fs::read_to_string(etc.join(file)).expect("read copy");
            assert!(
                !text.lines().any(|l| l.starts_with(&format!("{user}:"))
                    || l.split(':').nth(2) == Some(&id.to_string())),
                "{user} or id {id} already in /etc/{file}"
            );
        }
        append(
            &etc.join("passwd"),
            &format!(
                "{user}:x:{uid}:{uid}:e2e test user:{}:/bin/sh",
                home.display()
            ),
        );
        // lastchg 19000 (2022) and max 99999 days: valid at T0.
        append(
            &etc.join("shadow"),
            &format!("{user}:{PASSWORD_HASH}:19000:0:99999:7:::"),
        );
        append(&etc.join("group"), &format!("{user}:x:{uid}:"));
        append(&etc.join("gshadow"), &format!("{user}:!::"));
    }

    /// Gives `user`, who is already in the copied `shadow` (root, say),
    /// the password [`PASSWORD`] there.
    pub fn set_password(&self, user: &str) {
        let path = self.sb.dir().join("etc/shadow");
        let text = fs::read_to_string(&path).expect("read shadow copy");
        let mut found = 0;
        let lines: Vec<String> = text
            .lines()
            .map(|l| {
                let mut fields: Vec<&str> = l.split(':').collect();
                if fields.len() == 9 && fields[0] == user {
                    found += 1;
                    fields[1] = PASSWORD_HASH;
                    // Changed in 2022, no forced change: valid at T0.
                    fields[2] = "19000";
                    fields.join(":")
                } else {
                    l.to_string()
                }
            })
            .collect();
        assert_eq!(found, 1, "{user} is not once in the copied /etc/shadow");
        write_mode(&path, &(lines.join("\n") + "\n"), 0o640);
    }

    /// Adds the group `group` (own gid, the given supplementary members) to
    /// the copied group databases.
    pub fn add_group(&self, group: &str, members: &[&str]) {
        let gid = self.next_uid.fetch_add(1, Ordering::SeqCst);
        let etc = self.sb.dir().join("etc");
        let text = fs::read_to_string(etc.join("group")).expect("read copy");
        assert!(
            !text.lines().any(|l| l.starts_with(&format!("{group}:"))
                || l.split(':').nth(2) == Some(&gid.to_string())),
            "{group} or gid {gid} already in /etc/group"
        );
        let members = members.join(",");
        append(&etc.join("group"), &format!("{group}:x:{gid}:{members}"));
        append(&etc.join("gshadow"), &format!("{group}:!::{members}"));
    }

    pub fn home(&self, user: &str) -> PathBuf {
        self.sb.dir().join("home").join(user)
    }

    /// Enrolls `user` with [`SECRET`] (CLI in the namespace, clock at T0;
    /// the seed in a 0600 file, never in the arguments) and returns the
    /// backup codes.
    pub fn enroll(&self, user: &str) -> Vec<String> {
        let seed = self.sb.dir().join("seed");
        write_mode(&seed, &format!("{SECRET}\n"), 0o600);
        let seed = seed.display().to_string();
        let run = self.cli(&["enroll", user, "--secret-file", &seed, "--json"]);
        assert_eq!(run.status, Some(0), "enroll {user} failed\n{run}");
        let json: serde_json::Value = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("enroll --json output is not JSON ({e}):\n{run}"));
        json["backup_codes"]
            .as_array()
            .unwrap_or_else(|| panic!("no backup_codes in {json}"))
            .iter()
            .map(|c| c.as_str().expect("backup code string").to_string())
            .collect()
    }

    /// `twofactor --config <config> args...` in the namespace (it needs the
    /// test users in passwd), clock at [`T0`].
    pub fn cli(&self, args: &[&str]) -> Run {
        self.cli_with_config(self.sb.config_path(), args)
    }

    /// [`System::cli`] with another config file (an admin's `[fleet]`
    /// role, say).
    pub fn cli_with_config(&self, config: &Path, args: &[&str]) -> Run {
        let cli = common::cli_path();
        let config = config.display().to_string();
        let mut argv = vec![cli.to_str().expect("UTF-8 CLI path"), "--config", &config];
        argv.extend_from_slice(args);
        drive(&mut self.ns_command_at(&argv, T0), &[], COMMAND_TIMEOUT)
    }

    /// `auth required <module> config=<config>`.
    pub fn module_line(&self) -> String {
        self.sb.module_line("")
    }

    /// Replaces the single `@include common-auth` line of the copied Debian
    /// `pam.d/<service>` with `lines`; returns the new file.
    pub fn set_auth(&self, service: &str, lines: &[&str]) -> String {
        let path = self.sb.service_dir().join(service);
        let text = fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read copied pam.d/{service}: {e}"));
        let count = text
            .lines()
            .filter(|l| l.trim() == "@include common-auth")
            .count();
        assert_eq!(
            count, 1,
            "pam.d/{service} has no single `@include common-auth`:\n{text}"
        );
        let new: Vec<&str> = text
            .lines()
            .flat_map(|l| {
                if l.trim() == "@include common-auth" {
                    lines.to_vec()
                } else {
                    vec![l]
                }
            })
            .collect();
        let new = new.join("\n") + "\n";
        write_mode(&path, &new, 0o644);
        new
    }

    /// The user's state file, or `""` if there is none yet.
    pub fn state(&self, user: &str) -> String {
        fs::read_to_string(self.sb.state_dir().join(format!("{user}.state"))).unwrap_or_default()
    }

    /// The value of a top-level `key = value` line of the user's state file.
    pub fn state_value(&self, user: &str, key: &str) -> Option<String> {
        self.state(user)
            .lines()
            .take_while(|l| !l.starts_with('['))
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == key).then(|| v.trim().to_string())
            })
    }

    // ---- sshd ------------------------------------------------------------

    /// Starts `/usr/sbin/sshd -D` in the namespace on a free port of
    /// 127.0.0.1 with `AuthenticationMethods methods`, clock frozen at T0.
    /// It runs until the `System` is dropped.
    pub fn start_sshd(&self, methods: &str) {
        assert!(self.sshd.borrow().is_none(), "sshd already started");
        let sshd = self.spawn_sshd(methods, T0);
        *self.sshd.borrow_mut() = Some(sshd);
    }

    /// Stops the running sshd (and everything in its namespace) and starts
    /// a new one with the same host key and the clock frozen at `at` (a
    /// later time step for the next logins; the state on disk stays).
    pub fn restart_sshd_at(&self, methods: &str, at: &str) {
        let old = self.sshd.borrow_mut().take();
        assert!(old.is_some(), "start_sshd first");
        drop(old);
        let sshd = self.spawn_sshd(methods, at);
        *self.sshd.borrow_mut() = Some(sshd);
    }

    /// The sshd log so far.
    pub fn sshd_log(&self) -> String {
        self.sshd
            .borrow()
            .as_ref()
            .map(Sshd::log)
            .unwrap_or_default()
    }

    /// Starts `/usr/sbin/sshd -D` as an admin's machine runs it: no `-f`,
    /// so sshd reads `/etc/ssh/sshd_config`, with the directory `etc_ssh`
    /// bound over `/etc/ssh` in its namespace (so its `Include
    /// /etc/ssh/sshd_config.d/*.conf` sees only what `etc_ssh` holds).
    /// The command line sets only what a test must: see [`guide_options`].
    /// Clock frozen at T0; it runs until the `System` is dropped.
    pub fn start_sshd_with_etc_ssh(&self, etc_ssh: &Path) {
        assert!(self.sshd.borrow().is_none(), "sshd already started");
        let sshd = self.spawn_sshd_as(&SshdConfig::EtcSsh(etc_ssh), T0);
        *self.sshd.borrow_mut() = Some(sshd);
    }

    /// `sshd -t` (check the configuration and the keys, then exit) with
    /// `etc_ssh` bound over `/etc/ssh` and the command line of
    /// [`System::start_sshd_with_etc_ssh`].
    pub fn sshd_check_etc_ssh(&self, etc_ssh: &Path) -> Run {
        let host_key = self.host_key();
        let options = guide_options(free_port(), &host_key, self.sb.dir());
        let mut argv: Vec<String> = bind_etc_ssh(etc_ssh);
        argv.extend([SSHD.to_string(), "-t".to_string()]);
        argv.extend(options);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        drive(&mut self.ns_command_at(&argv, T0), &[], COMMAND_TIMEOUT)
    }

    /// The sandbox's sshd host key, made on first use.
    fn host_key(&self) -> PathBuf {
        let host_key = self.sb.dir().join("ssh_host_ed25519_key");
        if !host_key.exists() {
            ssh_keygen(&host_key);
        }
        host_key
    }

    fn spawn_sshd(&self, methods: &str, at: &str) -> Sshd {
        self.spawn_sshd_as(&SshdConfig::Test(methods), at)
    }

    fn spawn_sshd_as(&self, how: &SshdConfig, at: &str) -> Sshd {
        if !Path::new("/run/sshd").is_dir() {
            // sshd's privilege-separation directory (normally made by systemd).
            let _ = fs::DirBuilder::new().mode(0o755).create("/run/sshd");
        }
        let host_key = self.host_key();
        let log = self.sb.dir().join("sshd.log");
        let stderr_file = self.sb.dir().join("sshd.stderr");
        let config = self.sb.dir().join("sshd_config");
        let mut last_error = String::new();
        for _ in 0..5 {
            let port = free_port();
            let _ = fs::remove_file(&log);
            // unshare, ns.sh, sh (for EtcSsh) and setpriv all exec, so sshd
            // keeps the pid we spawned: if this test process dies without
            // running Drop, the parent-death signal stops sshd. It stays in
            // our process group so that Ctrl-C reaches it too.
            let setpriv = program("setpriv");
            let mut argv: Vec<String> = Vec::new();
            if let SshdConfig::EtcSsh(etc_ssh) = how {
                argv.extend(bind_etc_ssh(etc_ssh));
            }
            argv.extend(
                [
                    setpriv.to_str().expect("path"),
                    "--pdeathsig",
                    "TERM",
                    "--",
                    SSHD,
                    "-D",
                    "-E",
                ]
                .map(String::from),
            );
            argv.push(log.display().to_string());
            match how {
                SshdConfig::Test(methods) => {
                    write_mode(
                        &config,
                        &sshd_config_on(&self.address(), port, &host_key, self.sb.dir(), methods),
                        0o644,
                    );
                    argv.extend(["-f".to_string(), config.display().to_string()]);
                }
                SshdConfig::EtcSsh(_) => {
                    argv.extend(guide_options(port, &host_key, self.sb.dir()));
                }
            }
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let mut cmd = self.ns_command_at(&argv, at);
            cmd.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(fs::File::create(&stderr_file).expect("sshd.stderr"));
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start sshd: {e}"));
            let mut sshd = Sshd {
                child,
                namespace: None,
                port,
                log: log.clone(),
            };
            let address = match how {
                SshdConfig::Test(_) => self.address(),
                SshdConfig::EtcSsh(_) => "127.0.0.1".to_string(),
            };
            let listening = format!("Server listening on {address} port {port}.");
            let deadline = Instant::now() + SSHD_START_TIMEOUT;
            loop {
                let text = fs::read_to_string(&log).unwrap_or_default();
                if text.contains(&listening) {
                    sshd.namespace = mount_namespace(sshd.child.id());
                    assert!(sshd.namespace.is_some(), "sshd vanished after starting");
                    return sshd;
                }
                if let Ok(Some(status)) = sshd.child.try_wait() {
                    last_error = format!(
                        "sshd exited ({status}) before listening:\n{text}{}",
                        fs::read_to_string(&stderr_file).unwrap_or_default()
                    );
                    break;
                }
                if Instant::now() >= deadline {
                    panic!("sshd did not listen within {SSHD_START_TIMEOUT:?}:\n{text}");
                }
                thread::sleep(Duration::from_millis(20));
            }
            // Dropping `sshd` reaps it; retry only if another process took the port.
            if !last_error.contains("Address already in use") {
                break;
            }
        }
        panic!("could not start sshd: {last_error}");
    }

    /// A new ed25519 key pair `<sandbox>/keys/<name>` (private) and `.pub`.
    pub fn new_key(&self, name: &str) -> PathBuf {
        let dir = self.sb.dir().join("keys");
        if !dir.exists() {
            make_dir(&dir, 0o700);
        }
        let key = dir.join(name);
        ssh_keygen(&key);
        key
    }

    /// Puts `key`'s public half in `user`'s `~/.ssh/authorized_keys`
    /// (owned by the user, 0700/0600, as sshd's StrictModes wants).
    pub fn authorize_key(&self, user: &str, key: &Path) {
        let uid = self.uid(user);
        let ssh_dir = self.home(user).join(".ssh");
        make_dir(&ssh_dir, 0o700);
        chown(&ssh_dir, uid);
        let public = fs::read_to_string(key.with_extension("pub")).expect("public key");
        let auth = ssh_dir.join("authorized_keys");
        write_mode(&auth, &public, 0o600);
        chown(&auth, uid);
    }

    fn uid(&self, user: &str) -> u32 {
        let passwd = fs::read_to_string(self.sb.dir().join("etc/passwd")).expect("passwd");
        passwd
            .lines()
            .find_map(|l| {
                let fields: Vec<&str> = l.split(':').collect();
                (fields.first() == Some(&user)).then(|| fields[2].parse().expect("uid"))
            })
            .unwrap_or_else(|| panic!("no test user {user}"))
    }

    /// `ssh -p PORT user@127.0.0.1 echo e2e-ok` (the address of
    /// [`System::in_network_namespace`] if given), keyboard-interactive only,
    /// through the askpass script answering `password` and `code` (`None`:
    /// not expected; the askpass fails, as a user pressing Ctrl-C).
    pub fn ssh(&self, user: &str, password: Option<&str>, code: Option<&str>) -> SshRun {
        self.ssh_login(user, password, code, None)
    }

    /// [`System::ssh`] offering the key pair `key` first
    /// (`PreferredAuthentications publickey,keyboard-interactive`).
    pub fn ssh_with_key(&self, user: &str, key: &Path, code: Option<&str>) -> SshRun {
        self.ssh_login(user, None, code, Some(key))
    }

    fn ssh_login(
        &self,
        user: &str,
        password: Option<&str>,
        code: Option<&str>,
        key: Option<&Path>,
    ) -> SshRun {
        let (mut cmd, answers) = self.ssh_command(user, password, code, key, false);
        let run = drive(&mut cmd, &[], COMMAND_TIMEOUT);
        self.ssh_result(run, &answers)
    }

    /// [`System::ssh`] for a code that depends on what the server shows
    /// (enrollment at login): answers the password, then hands the whole
    /// text the ssh client showed with the code prompt (what its askpass
    /// got, info lines included) to `answer` and sends the code it returns.
    /// Also returns that text, or `None` if no code prompt came.
    pub fn ssh_answering(
        &self,
        user: &str,
        password: &str,
        answer: impl FnOnce(&str) -> String,
    ) -> (SshRun, Option<String>) {
        let (mut cmd, answers) = self.ssh_command(user, Some(password), None, None, true);
        // A UTF-8 terminal's locale: in the C locale the ssh client shows
        // the QR code's half blocks as octal escapes.
        cmd.env("LC_ALL", "C.UTF-8");
        let login = thread::spawn(move || drive(&mut cmd, &[], COMMAND_TIMEOUT));
        let shown_path = answers.join("shown");
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        let mut shown = None;
        while !login.is_finished() && Instant::now() < deadline {
            if let Ok(text) = fs::read_to_string(&shown_path) {
                // If `answer` panics (its checks failed), the login still
                // gets an (empty) answer and ends before the panic goes on.
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| answer(&text)));
                let tmp = answers.join("code.tmp");
                let line = code
                    .as_deref()
                    .map_or(String::from("\n"), |c| format!("{c}\n"));
                write_mode(&tmp, &line, 0o600);
                fs::rename(&tmp, answers.join("code")).expect("rename code.tmp");
                if let Err(panic) = code {
                    let _ = login.join();
                    std::panic::resume_unwind(panic);
                }
                shown = Some(text);
                break;
            }
            thread::sleep(Duration::from_millis(10));
        }
        // drive() bounds the login itself and panics (here re-raised) on expiry.
        let run = login
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (self.ssh_result(run, &answers), shown)
    }

    /// The ssh command line for a login and its answers directory.
    fn ssh_command(
        &self,
        user: &str,
        password: Option<&str>,
        code: Option<&str>,
        key: Option<&Path>,
        code_later: bool,
    ) -> (Command, PathBuf) {
        let port = self
            .sshd
            .borrow()
            .as_ref()
            .map(|s| s.port)
            .expect("start_sshd first");
        let n = self.next_login.fetch_add(1, Ordering::SeqCst);
        let answers = self.sb.dir().join("logins").join(n.to_string());
        make_dir(&answers, 0o700);
        if let Some(p) = password {
            write_mode(&answers.join("password"), &format!("{p}\n"), 0o600);
        }
        if let Some(c) = code {
            write_mode(&answers.join("code"), &format!("{c}\n"), 0o600);
        }
        if code_later {
            write_mode(&answers.join("code-later"), "", 0o600);
        }
        let mut cmd = match self.network.borrow().as_ref() {
            Some((netns, _)) if self.ssh_inside.get() => {
                let mut cmd = Command::new(program("ip"));
                cmd.args(["netns", "exec", netns]).arg(program("ssh"));
                cmd
            }
            _ => Command::new(program("ssh")),
        };
        cmd.args(["-F", "/dev/null", "-p"])
            .arg(port.to_string())
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "NumberOfPasswordPrompts=1",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "IdentityAgent=none",
            ]);
        match key {
            Some(key) => {
                cmd.args([
                    "-o",
                    "PreferredAuthentications=publickey,keyboard-interactive",
                    "-o",
                    "IdentitiesOnly=yes",
                    "-o",
                ])
                .arg(format!("IdentityFile={}", key.display()));
            }
            None => {
                cmd.args([
                    "-o",
                    "PreferredAuthentications=keyboard-interactive",
                    "-o",
                    "PubkeyAuthentication=no",
                ]);
            }
        }
        cmd.arg(format!("{user}@{}", self.address()))
            .args(["echo", "e2e-ok"])
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", self.sb.dir())
            .env("LC_ALL", "C")
            .env("SSH_ASKPASS", self.sb.dir().join("askpass"))
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("E2E_ANSWERS", &answers);
        (cmd, answers)
    }

    fn ssh_result(&self, run: Run, answers: &Path) -> SshRun {
        SshRun {
            run,
            prompts: askpass_prompts(answers),
            sshd_log: self.sshd_log(),
        }
    }

    /// [`System::ssh`] made ready to run on another thread (many logins
    /// at once): [`PreparedSsh::run`].
    pub fn prepare_ssh(
        &self,
        user: &str,
        password: Option<&str>,
        code: Option<&str>,
    ) -> PreparedSsh {
        let (cmd, answers) = self.ssh_command(user, password, code, None, false);
        PreparedSsh { cmd, answers }
    }

    // ---- sudo and su -----------------------------------------------------

    /// From now on the namespace has an `/etc/ld.so.preload` naming
    /// libfaketime (see the module docs), so setuid programs see T0 too.
    pub fn pin_clock_for_setuid_programs(&self) {
        write_mode(
            &self.sb.dir().join("etc/ld.so.preload"),
            &format!("{}\n", common::libfaketime().display()),
            0o644,
        );
    }

    /// The test `sudoers` in the namespace's `/etc`: `user` may run anything
    /// as anyone after authenticating, every time, with one try.
    pub fn write_sudoers(&self, user: &str) -> String {
        let ts = self.sb.dir().join("sudo-ts");
        make_dir(&ts, 0o700);
        let text = format!(
            "Defaults !lecture, timestamp_timeout=0, passwd_tries=1, !fqdn\n\
             Defaults timestampdir={}\n\
             {user} ALL=(ALL:ALL) ALL\n",
            ts.display()
        );
        write_mode(&self.sb.dir().join("etc/sudoers"), &text, 0o440);
        text
    }

    /// As `user`: `sudo -S -k id -un`, answering the password prompt and
    /// then the code prompt on stdin; clock at T0.
    pub fn sudo(&self, user: &str, password: &str, code: &str) -> Run {
        let runuser = program("runuser");
        let sudo = program("sudo");
        let argv = [
            runuser.to_str().expect("path"),
            "-u",
            user,
            "--",
            sudo.to_str().expect("path"),
            "-S",
            "-k",
            "id",
            "-un",
        ];
        let prompt = format!("[sudo] password for {user}: ");
        let mut cmd = self.ns_command(&argv);
        cmd.env("FAKETIME", T0)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        drive(
            &mut cmd,
            &[(&prompt, password), ("Verification code: ", code)],
            COMMAND_TIMEOUT,
        )
    }

    /// As `caller`: `su - target -c 'id -un'`, answering the password and
    /// code prompts on stdin; clock at T0.
    pub fn su(&self, caller: &str, target: &str, password: &str, code: &str) -> Run {
        let runuser = program("runuser");
        let su = program("su");
        let argv = [
            runuser.to_str().expect("path"),
            "-u",
            caller,
            "--",
            su.to_str().expect("path"),
            "-",
            target,
            "-c",
            "id -un",
        ];
        let mut cmd = self.ns_command(&argv);
        cmd.env("FAKETIME", T0)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
        drive(
            &mut cmd,
            &[("Password: ", password), ("Verification code: ", code)],
            COMMAND_TIMEOUT,
        )
    }
}

fn ssh_keygen(path: &Path) {
    let out = Command::new(program("ssh-keygen"))
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "e2e", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("ssh-keygen");
    assert!(
        out.status.success(),
        "ssh-keygen failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A port that was free on 127.0.0.1 a moment ago (sshd retries on a clash).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// The test `sshd_config` (sshd is started with `-f`, so nothing of the
/// system's `/etc/ssh/sshd_config` applies).
pub fn sshd_config(port: u16, host_key: &Path, dir: &Path, methods: &str) -> String {
    sshd_config_on("127.0.0.1", port, host_key, dir, methods)
}

/// [`sshd_config`] listening on `address`.
pub fn sshd_config_on(
    address: &str,
    port: u16,
    host_key: &Path,
    dir: &Path,
    methods: &str,
) -> String {
    format!(
        "ListenAddress {address}\n\
         Port {port}\n\
         HostKey {}\n\
         PidFile {}\n\
         UsePAM yes\n\
         KbdInteractiveAuthentication yes\n\
         PasswordAuthentication no\n\
         PubkeyAuthentication yes\n\
         AuthenticationMethods {methods}\n\
         LoginGraceTime 30\n\
         LogLevel VERBOSE\n",
        host_key.display(),
        dir.join("sshd.pid").display()
    )
}

/// Which configuration an sshd started by [`System`] reads.
enum SshdConfig<'a> {
    /// The test's own `sshd_config` (see [`sshd_config`]) with this
    /// `AuthenticationMethods`, given with `-f`.
    Test(&'a str),
    /// `/etc/ssh/sshd_config` as on an admin's machine, with this directory
    /// bound over `/etc/ssh`, plus [`guide_options`].
    EtcSsh(&'a Path),
}

/// The start of an argv (run by `ns.sh`) that binds the directory
/// `etc_ssh` over `/etc/ssh` in the namespace and execs the rest. A whole
/// directory, never a single file (TESTING.md); the host's `/etc/ssh`
/// (its `sshd_config.d/` included) is not seen at all.
fn bind_etc_ssh(etc_ssh: &Path) -> Vec<String> {
    vec![
        "/bin/sh".to_string(),
        "-c".to_string(),
        r#"mount --bind "$0" /etc/ssh && exec "$@""#.to_string(),
        etc_ssh.display().to_string(),
    ]
}

/// The `-o` options an sshd reading the admin's `/etc/ssh/sshd_config`
/// gets on its command line, and nothing else: where to listen (a free
/// port on 127.0.0.1, not port 22 on every address), the sandbox's host
/// key and pid file (not the host's), and `LogLevel VERBOSE` (so the log
/// says when sshd listens and how each login went). None of them is about
/// authentication: whether and how a user logs in is decided by the files
/// in `/etc/ssh` alone. (For each keyword sshd keeps the first value it
/// sees, and the command line comes first.)
pub fn guide_options(port: u16, host_key: &Path, dir: &Path) -> Vec<String> {
    [
        "ListenAddress=127.0.0.1".to_string(),
        format!("Port={port}"),
        format!("HostKey={}", host_key.display()),
        format!("PidFile={}", dir.join("sshd.pid").display()),
        "LogLevel=VERBOSE".to_string(),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect()
}

/// A running sshd, stopped (with everything in its namespace) on drop.
pub struct Sshd {
    child: Child,
    namespace: Option<String>,
    pub port: u16,
    log: PathBuf,
}

impl Sshd {
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // The child's pid is only used while it is unreaped (so not reused).
        let root = self.child.id();
        let namespace = self.namespace.clone();
        let members = |with_tree: bool| -> Vec<u32> {
            let mut pids = if with_tree {
                process_tree(root)
            } else {
                Vec::new()
            };
            if let Some(ns) = &namespace {
                pids.extend(processes_in(ns));
            }
            pids.sort_unstable();
            pids.dedup();
            pids
        };
        signal("TERM", &members(true));
        let mut reaped = false;
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            reaped = reaped || matches!(self.child.try_wait(), Ok(Some(_)));
            if reaped && members(false).is_empty() {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        signal("KILL", &members(!reaped));
        if !reaped {
            let _ = self.child.wait();
        }
    }
}

/// The prompts the askpass of one login was given.
fn askpass_prompts(answers: &Path) -> Vec<String> {
    fs::read_to_string(answers.join("prompts"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// An ssh login from [`System::prepare_ssh`].
pub struct PreparedSsh {
    cmd: Command,
    answers: PathBuf,
}

impl PreparedSsh {
    /// Runs the login (bounded as [`System::ssh`]); the result's
    /// `sshd_log` is empty (read the system's when needed).
    pub fn run(mut self) -> SshRun {
        let run = drive(&mut self.cmd, &[], COMMAND_TIMEOUT);
        SshRun {
            run,
            prompts: askpass_prompts(&self.answers),
            sshd_log: String::new(),
        }
    }
}

/// One ssh login: what ssh printed, the prompts its askpass was given, and
/// the sshd log at the end (for failure messages).
#[derive(Debug)]
pub struct SshRun {
    pub run: Run,
    pub prompts: Vec<String>,
    pub sshd_log: String,
}

impl SshRun {
    /// ssh exited 0 and the remote `echo e2e-ok` printed exactly that.
    pub fn logged_in(&self) -> bool {
        self.run.status == Some(0) && self.run.stdout == "e2e-ok\n"
    }

    /// ssh gave up with `Permission denied (<methods>).` and ran nothing.
    pub fn denied(&self, methods: &str) -> bool {
        self.run.status == Some(255)
            && self.run.stdout.is_empty()
            && self
                .run
                .stderr
                .lines()
                .any(|l| l.ends_with(&format!(": Permission denied ({methods}).")))
    }
}

impl std::fmt::Display for SshRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ssh {}\nprompts: {:?}\n--- sshd log ---\n{}--- end sshd log ---",
            self.run, self.prompts, self.sshd_log
        )
    }
}
