//! Host-process hygiene (issue 4, "Faults"): the real `.so`, loaded by real
//! libpam (pam_wrapper, libfaketime) into a C host (`tests/hygiene/harness.c`)
//! that snapshots every process property a module could disturb — umask,
//! cwd, real/effective/saved ids, groups, every signal disposition and the
//! blocked mask, the environment, open fds with targets and flags, timers,
//! rlimits, thread count — then runs hundreds of logins with hostile
//! conversations and dlopen/dlclose cycles of the module, and compares.
//!
//! The harness prints the PAM code each kind of conversation got, so the
//! codes are asserted exactly here. It runs with umask 0 so that a module
//! calling `umask()` to create its files would show.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use common::*;
use nix::fcntl::{Flock, FlockArg};
use pam_twofactor::records::State;

const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
/// Enrolled in the lenient service (base-passwd accounts: only names matter).
const USER: &str = "daemon";
/// Enrolled in the strict service (locked after one failure).
const STRICT_USER: &str = "bin";
const PAM_SUCCESS: i32 = 0;
const PAM_AUTH_ERR: i32 = 7;
const PAM_CONV_ERR: i32 = 19;

/// The harness, compiled once per test process with `cc ... -lpam -ldl`.
fn harness() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        require_tools();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hygiene/harness.c");
        let bin = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hygiene-harness");
        let out = Command::new("cc")
            .args(["-std=gnu11", "-O1", "-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&bin)
            .arg(&src)
            .args(["-lpam", "-ldl"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run cc (package gcc): {e}"));
        assert!(
            out.status.success(),
            "compiling {} failed (needs libpam0g-dev):\n{}",
            src.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        bin
    })
    .clone()
}

/// A sandbox with two services using the module: `svc` (every facility;
/// no lockout or rate limit in reach, so every attempt checks the code) for
/// USER, and `strict` (locked after one failure, so messages are shown) for
/// STRICT_USER. Both users are enrolled with SECRET.
fn sandbox(name: &str) -> Sandbox {
    let sb = Sandbox::new(name);
    sb.write_config("[lockout]\nmax_failures = 1000\n[rate_limit]\nmax_attempts = 10000\n");
    let strict = sb.dir().join("strict.toml");
    fs::write(
        &strict,
        format!(
            "state_dir = \"{}\"\n[lockout]\nmax_failures = 1\nlock_seconds = 3600\n\
             [rate_limit]\nmax_attempts = 10000\n",
            sb.state_dir().display()
        ),
    )
    .unwrap();
    fs::set_permissions(&strict, fs::Permissions::from_mode(0o600)).unwrap();
    let module = module_path();
    let line = |facility: &str, config: &Path| {
        format!(
            "{facility} required {} config={}\n",
            module.display(),
            config.display()
        )
    };
    let stack: String = ["auth", "account", "session", "password"]
        .iter()
        .map(|f| line(f, sb.config_path()))
        .collect();
    sb.write_service("svc", &stack);
    sb.write_service("strict", &line("auth", &strict));
    for user in [USER, STRICT_USER] {
        let out = run_cli_with(&sb, &["enroll", user, "--secret-file", "-"], &[SECRET], "");
        assert!(
            out.status.success(),
            "enroll {user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    sb
}

/// What one kind of conversation got.
#[derive(Debug, PartialEq, Eq)]
struct Kind {
    calls: u32,
    codes: Vec<i32>,
    prompts: u32,
    infos: u32,
    errors: u32,
}

/// One harness run, parsed.
#[derive(Debug)]
struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
    kinds: BTreeMap<String, Kind>,
}

impl Run {
    /// The value of the line starting with `prefix` (the rest of the line).
    fn line(&self, prefix: &str) -> &str {
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} line\n{self}"))
    }

    /// The lines reporting a changed process property.
    fn changes(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("changed "))
            .collect()
    }

    fn kind(&self, name: &str) -> &Kind {
        self.kinds
            .get(name)
            .unwrap_or_else(|| panic!("no kind {name}\n{self}"))
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "harness exit {:?}\n--- stdout ---\n{}--- stderr (last 2000 bytes) ---\n{}",
            self.status,
            self.stdout,
            &self.stderr[self.stderr.len().saturating_sub(2000)..]
        )
    }
}

/// Runs the harness under pam_wrapper and a frozen libfaketime clock at T0,
/// holding the harness-wide pam_wrapper lock (see tests/common/mod.rs).
fn run_harness(sb: &Sandbox, iterations: u32, cycles: u32, sabotage: bool) -> Run {
    run_harness_logging_to(sb, iterations, cycles, sabotage, None)
}

/// [`run_harness`] with the module's syslog messages going to `log`.
fn run_harness_logging_to(
    sb: &Sandbox,
    iterations: u32,
    cycles: u32,
    sabotage: bool,
    log: Option<&DevLog>,
) -> Run {
    let right = oathtool_code(SECRET, "SHA1", 6, 30, T0);
    let window: Vec<String> = [-30, 0, 30]
        .iter()
        .map(|s| oathtool_code(SECRET, "SHA1", 6, 30, &at_offset(T0, *s)))
        .collect();
    let wrong = (0..)
        .map(|n| format!("{n:06}"))
        .find(|c| !window.contains(c))
        .unwrap();
    let lock_file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(sandbox_base().join("pam_wrapper.lock"))
        .unwrap();
    let _lock = Flock::lock(lock_file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("flock pam_wrapper.lock");
    let timeout = find_program("timeout").expect("timeout (coreutils)");
    let mut cmd = Command::new(timeout);
    cmd.args(["-k", "10", "300"])
        .arg(harness())
        .args(["svc", USER, &right, &wrong, "strict", STRICT_USER])
        .arg(module_path())
        .args([iterations.to_string(), cycles.to_string(), "0".into()])
        .args(sabotage.then_some("sabotage"))
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env(
            "LD_PRELOAD",
            format!(
                "{} {}",
                pam_wrapper_lib().display(),
                libfaketime().display()
            ),
        )
        .env("PAM_WRAPPER", "1")
        .env("PAM_WRAPPER_SERVICE_DIR", sb.service_dir())
        .env("FAKETIME", T0)
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1")
        .stdin(Stdio::null());
    if let Some(log) = log {
        cmd = log.wrap(cmd);
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .expect("run the hygiene harness");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let kinds = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("kind "))
        .map(|l| {
            let mut words = l.split(' ');
            let name = words.next().unwrap().to_string();
            let fields: BTreeMap<&str, &str> = words.filter_map(|w| w.split_once('=')).collect();
            let num = |k: &str| fields[k].parse::<u32>().unwrap();
            let codes = fields["codes"]
                .split(',')
                .filter(|c| !c.is_empty())
                .map(|c| c.parse().unwrap())
                .collect();
            let kind = Kind {
                calls: num("calls"),
                codes,
                prompts: num("prompts"),
                infos: num("infos"),
                errors: num("errors"),
            };
            (name, kind)
        })
        .collect();
    let run = Run {
        status: out.status.code(),
        stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        kinds,
    };
    assert!(
        !run.stderr.contains("ld.so: object"),
        "a preload library was not loaded\n{run}"
    );
    run
}

/// Asserts what every run must show: nothing changed, the exact codes per
/// kind of conversation, the entry points all there, no temp file, and a
/// state file written 0600 (umask 0) that parses.
fn assert_clean_run(sb: &Sandbox, run: &Run, iterations: u32, cycles: u32) {
    assert_eq!(run.changes(), Vec::<&str>::new(), "\n{run}");
    assert_eq!(run.line("hygiene "), "unchanged", "\n{run}");
    assert_eq!(run.status, Some(0), "\n{run}");
    assert_eq!(
        run.line("umask-around-success "),
        "before=0000 after=0000",
        "\n{run}"
    );
    assert_eq!(
        run.line("dlopen "),
        format!("cycles={cycles} missing=0 failures=0"),
        "\n{run}"
    );
    let success = run.kind("success");
    assert_eq!(
        (success.calls, &success.codes[..]),
        (1, &[PAM_SUCCESS][..]),
        "\n{run}"
    );
    let per_kind = iterations / 9;
    for (name, code) in [
        ("wrong", PAM_AUTH_ERR),
        ("silent-wrong", PAM_AUTH_ERR),
        ("backup-like", PAM_AUTH_ERR),
        ("megabyte", PAM_AUTH_ERR),
        ("null-answer", PAM_CONV_ERR),
        ("conv-err", PAM_CONV_ERR),
        ("no-conv", PAM_CONV_ERR),
        ("locked-loud", PAM_AUTH_ERR),
        ("locked-silent", PAM_AUTH_ERR),
    ] {
        let kind = run.kind(name);
        assert_eq!(kind.codes, vec![code], "{name}\n{run}");
        assert!(kind.calls >= per_kind, "{name}: {kind:?}\n{run}");
    }
    // One prompt per login; the strict user's lock is announced on every
    // loud login and never under PAM_SILENT.
    let loud = run.kind("locked-loud");
    assert_eq!(
        (loud.prompts, loud.errors),
        (loud.calls, loud.calls),
        "\n{run}"
    );
    let silent = run.kind("locked-silent");
    assert_eq!(
        (silent.prompts, silent.infos, silent.errors),
        (silent.calls, 0, 0),
        "\n{run}"
    );
    assert_eq!(run.kind("no-conv").prompts, 0, "\n{run}");
    assert_eq!(
        run.line("entry "),
        "setcred=0 acct_mgmt=6 open_session=6 close_session=6 chauthtok=6",
        "\n{run}"
    );

    let names: Vec<String> = fs::read_dir(sb.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // Temp files start with a dot; so do the argon2 slot locks and the
    // state's spare, which stay.
    let spares = [USER, STRICT_USER].map(|user| format!(".{user}.state.spare"));
    assert!(
        names.iter().all(|n| !n.starts_with('.')
            || pam_twofactor::login::is_kdf_slot(n)
            || spares.contains(n)),
        "temp files left: {names:?}"
    );
    let state = sb.state_dir().join(format!("{USER}.state"));
    let mode = fs::metadata(&state).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "state file mode under umask 0");
    let parsed = State::parse(&fs::read(&state).unwrap()).unwrap();
    assert_eq!(
        parsed.last_accepted_step.get("default"),
        Some(&(T0_UNIX / 30))
    );
}

/// Removes our /dev/log socket even when an assertion fails.
/// 270 logins with hostile conversations (wrong, silent, 16-digit,
/// megabyte, NULL answer, PAM_CONV_ERR, no conversation function, locked
/// loud and silent) and 200 dlopen/dlclose cycles, without a syslog socket:
/// exact PAM codes, and the host process is left exactly as it was.
#[test]
fn hostile_conversations_get_exact_codes_and_leave_the_host_process_unchanged() {
    let sb = sandbox("hygiene");
    if fs::symlink_metadata("/dev/log").is_ok() {
        eprintln!("note: /dev/log exists here; this run logs to it");
    }
    let run = run_harness(&sb, 270, 200, false);
    assert_clean_run(&sb, &run, 270, 200);
}

/// With a syslog socket that is never read (so the first sends succeed and
/// the rest hit a full queue), logging leaks no fd and changes nothing; the
/// messages that arrived hold no code. Root only: a socket of the test's
/// own at /dev/log ([`DevLog`]).
#[test]
fn a_full_syslog_socket_leaks_no_fd_and_changes_nothing() {
    if !root_or_skip(
        "a_full_syslog_socket_leaks_no_fd_and_changes_nothing",
        "a socket of its own at /dev/log",
        &[],
    ) {
        return;
    }
    let sb = sandbox("hygiene-syslog");
    let log = DevLog::bind(&sb);
    let run = run_harness_logging_to(&sb, 90, 20, false, Some(&log));
    let socket = log.socket();
    socket.set_nonblocking(true).unwrap();
    let mut messages = Vec::new();
    let mut buf = vec![0u8; 65536];
    while let Ok(n) = socket.recv(&mut buf) {
        messages.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    drop(log);
    assert_clean_run(&sb, &run, 90, 20);
    let ours: Vec<&String> = messages
        .iter()
        .filter(|m| m.contains("pam_twofactor[") && m.contains("service=svc"))
        .collect();
    assert!(
        !ours.is_empty(),
        "no message reached /dev/log: {messages:?}"
    );
    let right = oathtool_code(SECRET, "SHA1", 6, 30, T0);
    for m in &messages {
        assert!(
            !m.contains(&right) && !m.contains(SECRET),
            "a code or the secret reached syslog: {m}"
        );
    }
}

/// The harness itself notices what it should: asked to sabotage its own
/// process after the logins (leak an fd, set an environment variable,
/// change the umask and the cwd, install a signal handler, keep the module
/// loaded and, as root, change its saved uid), it reports each one, so a
/// clean run above means each property really was unchanged.
#[test]
fn the_harness_notices_each_kind_of_change_to_the_host_process() {
    let sb = sandbox("hygiene-sabotage");
    let run = run_harness(&sb, 9, 1, true);
    assert_eq!(run.status, Some(1), "\n{run}");
    assert_eq!(run.line("hygiene "), "CHANGED", "\n{run}");
    let changes = run.changes().join("\n");
    let mut wanted = vec![
        "changed fd: +fd ".to_string(),
        "changed env: +env HYGIENE_SABOTAGE=1".to_string(),
        "changed umask: -umask 0000".to_string(),
        "changed umask: +umask 0077".to_string(),
        "changed signal: +signal 14 handler=0x".to_string(),
        "changed cwd: +cwd /".to_string(),
        format!("changed mapped: +mapped {}", module_path().display()),
    ];
    let uid_part = root_or_skip(
        "the_harness_notices_each_kind_of_change_to_the_host_process/uid",
        "only root can change its saved uid",
        &[],
    );
    if uid_part {
        assert_eq!(run.line("sabotage uid="), "yes", "\n{run}");
        wanted.push("changed uid: +uid 0 0 65534".to_string());
    }
    for want in &wanted {
        assert!(
            changes.contains(want.as_str()),
            "missing {want:?} in\n{run}"
        );
    }
    // Nothing else changed: each sabotage shows as itself only (an fd
    // line, umask and uid lines in pairs, and so on).
    let groups: std::collections::BTreeSet<&str> = run
        .changes()
        .iter()
        .filter_map(|l| l.strip_prefix("changed ")?.split(':').next())
        .collect();
    let expected: std::collections::BTreeSet<&str> =
        ["cwd", "env", "fd", "mapped", "signal", "umask"]
            .into_iter()
            .chain(uid_part.then_some("uid"))
            .collect();
    assert_eq!(groups, expected, "\n{run}");
}
