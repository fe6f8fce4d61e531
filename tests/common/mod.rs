//! Shared harness for the integration tests (`mod common;` in `tests/*.rs`).
//!
//! Layer 2 of `TESTING.md`: the real `libpam_twofactor.so` loaded by the real
//! libpam through pam_wrapper, driven by `pamtester`, with the clock pinned by
//! libfaketime and expected codes computed by `oathtool`. Standard library
//! (and serde_json for the CLI's `--json`) only. Nothing here skips: a
//! missing tool is a loud panic ([`require_tools`]).
//!
//! # What pamtester prints (pamtester 0.1.2, Linux-PAM 1.5.2, pam_wrapper 1.1.4)
//!
//! Observed on Debian 12 with `pamtester -v SERVICE USER authenticate`:
//!
//! * success: exit status 0, stdout ends with
//!   `pamtester: successfully authenticated\n`.
//! * any failure: exit status 1, stdout has no pamtester line, and the LAST
//!   line of stderr is `pamtester: <pam_strerror(code)>`, e.g.
//!   `pamtester: Authentication failure` (PAM_AUTH_ERR). See [`pam_err`] for
//!   the exact texts; [`PamOutcome::pam_error`] extracts it.
//! * with `-v`, stderr always starts with
//!   `pamtester: invoking pam_start(SERVICE, USER, ...)\n` and
//!   `pamtester: performing operation - authenticate\n`.
//! * prompts (PAM_PROMPT_ECHO_OFF/ON) go to STDERR with no newline after them
//!   (the answer read from a pipe is not echoed), so two prompts look like
//!   `Password: Verification code: pamtester: Authentication failure\n`.
//! * PAM_TEXT_INFO messages go to STDOUT, one `\n`-terminated line each,
//!   before the `pamtester: successfully authenticated` line.
//! * PAM_ERROR_MSG messages go to STDERR, `\n`-terminated.
//! * pamtester prints conversation messages even under `authenticate(PAM_SILENT)`;
//!   the flag only reaches the module (flags = 0x8000), honouring it is the
//!   module's job.
//! * each stdin line answers one prompt (line by line, so a password and a code
//!   can be fed in sequence). At EOF, pamtester's conversation (libpam_misc's
//!   `misc_conv`) returns PAM_SUCCESS with a response array whose `resp` is
//!   NULL — NOT PAM_CONV_ERR. An empty line gives `resp = ""`. The module must
//!   treat a NULL answer as a failure itself.
//! * a stack whose only module returns PAM_IGNORE (whatever the control
//!   value, `required` or `sufficient`) makes libpam return PAM_PERM_DENIED:
//!   exit 1, `pamtester: Permission denied`.
//! * a module returning PAM_CONV_ERR: exit 1, `pamtester: Conversation error`.
//! * a module path that does not exist: exit 1, `pamtester: Module is unknown`
//!   plus a `PWRAP_ERROR[...] - SYSLOG(3): unable to dlopen(...)` line.
//! * a service with no file in the service directory falls back to `other`
//!   (which [`Sandbox::write_service`] makes deny): `Authentication failure`.
//!   [`Sandbox::pamtester`] therefore refuses to run a service it did not write.
//! * pam_wrapper may add `PWRAP_ERROR[...] - SYSLOG(3): ...` lines to stderr
//!   (libpam's own `pam_syslog` messages, e.g. a module without
//!   `pam_sm_setcred`); never assert that stderr is empty.
//!
//! # pam_wrapper and parallel tests
//!
//! pam_wrapper's constructor runs in EVERY process that has it in
//! `LD_PRELOAD` and `PAM_WRAPPER=1` set: it picks `/tmp/pam.X` (one
//! character, starting from the pid) with an lstat-then-mkdir race, and the
//! first process to exit deletes the shared directory. Concurrent pamtesters
//! therefore sometimes fail (`Failed to create pam_wrapper config dir ... File
//! exists`, `_pam_init_handlers: no default config other`). The harness runs
//! every pamtester under `flock` on one lock file per machine and user, which
//! serialises them across threads (cargo test) and processes (nextest), and
//! puts the preload variables on pamtester alone (via `env`) so that `flock`
//! and `timeout` neither create pam_wrapper directories nor run on a frozen
//! clock. A pamtester killed by SIGKILL leaves its `/tmp/pam.X` behind;
//! pam_wrapper removes such leftovers only when their pid is <= 65535 and
//! exits with `Failed to find a possible path to create pam_wrapper config
//! dir` once all 62 names are taken (then `rm -rf /tmp/pam.?`).
#![allow(dead_code)]
// Helpers fail by panicking. clippy's allow-*-in-tests settings cover only
// `#[test]` functions and `#[cfg(test)]` modules, not this helper module.
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)]

pub mod fleet;
pub mod live;
pub mod netns;
pub mod pg;
pub mod pg_ha;

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The default pinned instant (UTC) for tests: `FAKETIME` and oathtool format.
pub const T0: &str = "2030-06-15 12:00:00";
/// [`T0`] as Unix seconds (`date -u -d '2030-06-15 12:00:00' +%s`).
pub const T0_UNIX: u64 = 1_907_755_200;

/// The line pamtester prints on stdout (exit status 0) when authentication
/// succeeded.
pub const SUCCESS_LINE: &str = "pamtester: successfully authenticated";

/// pamtester's exit status when the operation failed, whatever the PAM code.
pub const PAMTESTER_FAILED: i32 = 1;

/// `pam_strerror` texts (C locale) as pamtester prints them on the last stderr
/// line after `pamtester: `. Each one was observed by a module returning the
/// code, except where noted.
pub mod pam_err {
    /// PAM_SYSTEM_ERR (4)
    pub const SYSTEM_ERR: &str = "System error";
    /// PAM_SERVICE_ERR (3)
    pub const SERVICE_ERR: &str = "Error in service module";
    /// PAM_BUF_ERR (5)
    pub const BUF_ERR: &str = "Memory buffer error";
    /// PAM_PERM_DENIED (6); also what libpam returns when every module of the
    /// stack returned PAM_IGNORE.
    pub const PERM_DENIED: &str = "Permission denied";
    /// PAM_AUTH_ERR (7); also an unknown service (falls back to `other`).
    pub const AUTH_ERR: &str = "Authentication failure";
    /// PAM_CRED_INSUFFICIENT (8)
    pub const CRED_INSUFFICIENT: &str = "Insufficient credentials to access authentication data";
    /// PAM_AUTHINFO_UNAVAIL (9)
    pub const AUTHINFO_UNAVAIL: &str = "Authentication service cannot retrieve authentication info";
    /// PAM_USER_UNKNOWN (10)
    pub const USER_UNKNOWN: &str = "User not known to the underlying authentication module";
    /// PAM_MAXTRIES (11)
    pub const MAXTRIES: &str = "Have exhausted maximum number of retries for service";
    /// PAM_CRED_ERR (17); pam_matrix returns it when the password answer is
    /// NULL (EOF on stdin).
    pub const CRED_ERR: &str = "Failure setting user credentials";
    /// PAM_CONV_ERR (19)
    pub const CONV_ERR: &str = "Conversation error";
    /// PAM_ABORT (26)
    pub const ABORT: &str = "Critical error - immediate abort";
    /// The module file could not be loaded (PAM_MODULE_UNKNOWN, 28).
    pub const MODULE_UNKNOWN: &str = "Module is unknown";
}

/// `/usr/lib/<arch>-linux-gnu`, where Debian puts the libraries below.
pub fn multiarch_lib_dir() -> PathBuf {
    PathBuf::from(format!("/usr/lib/{}-linux-gnu", std::env::consts::ARCH))
}

/// The pam_wrapper preload library (package libpam-wrapper).
pub fn pam_wrapper_lib() -> PathBuf {
    multiarch_lib_dir().join("libpam_wrapper.so")
}

/// One of pam_wrapper's test modules: `pam_matrix.so`, `pam_chatty.so`,
/// `pam_get_items.so`, `pam_set_items.so`.
pub fn pam_wrapper_module(name: &str) -> PathBuf {
    multiarch_lib_dir().join("pam_wrapper").join(name)
}

/// libfaketime's preload library (package libfaketime).
pub fn libfaketime() -> PathBuf {
    multiarch_lib_dir()
        .join("faketime")
        .join("libfaketime.so.1")
}

/// nss_wrapper's preload library (package libnss-wrapper): a private user
/// database for one process ([`Sandbox::pamtester_with_passwd`]).
pub fn nss_wrapper_lib() -> PathBuf {
    multiarch_lib_dir().join("libnss_wrapper.so")
}

/// Finds an executable in `PATH` (or the usual directories if unset).
pub fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| OsString::from("/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"));
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| fs::metadata(p).is_ok_and(|m| m.is_file() && m.mode() & 0o111 != 0))
}

/// More for one pamtester run ([`Sandbox::pamtester_command`]): libraries
/// to preload after pam_wrapper and libfaketime, and `VAR=value` settings.
#[derive(Default)]
pub struct Extra {
    pub preload: Vec<PathBuf>,
    pub settings: Vec<String>,
}

/// The absolute path of a program checked by [`require_tools`].
pub fn tool(name: &str) -> PathBuf {
    require_tools();
    find_program(name).unwrap_or_else(|| panic!("`{name}` is not in PATH"))
}

/// Panics, loudly and naming the package, if anything the PAM-level tests
/// need is missing. Tests must never skip silently. Called by every helper
/// that runs one of these tools.
pub fn require_tools() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        let mut missing = Vec::new();
        for (program, package) in [
            ("pamtester", "pamtester"),
            ("oathtool", "oathtool"),
            ("flock", "util-linux"),
            ("timeout", "coreutils"),
            ("env", "coreutils"),
        ] {
            if find_program(program).is_none() {
                missing.push(format!("program `{program}` (package {package})"));
            }
        }
        for (file, package) in [
            (pam_wrapper_lib(), "libpam-wrapper"),
            (pam_wrapper_module("pam_matrix.so"), "libpam-wrapper"),
            (libfaketime(), "libfaketime, pulled in by faketime"),
            (nss_wrapper_lib(), "libnss-wrapper"),
        ] {
            if !file.is_file() {
                missing.push(format!("{} (package {package})", file.display()));
            }
        }
        if !missing.is_empty() {
            panic!(
                "\n\n*** pam-twofactor integration tests CANNOT RUN: missing\n***   {}\n\
                 *** Install them: apt-get update && apt-get install -y \
                 libpam0g-dev pamtester libpam-wrapper oathtool faketime libnss-wrapper\n\
                 *** (these tests never skip silently)\n",
                missing.join("\n***   ")
            );
        }
    });
}

/// Builds the cdylib once per test process (`cargo build --lib`: `cargo test`
/// alone does not produce the `.so`) and returns
/// `<target>/<profile>/libpam_twofactor.so`, next to the directory holding
/// the test binary (`<target>/<profile>/deps/<test>-<hash>`).
///
/// The build uses the test binary's own target directory, profile and, for a
/// cross layout `<target>/<triple>/<profile>`, target triple, so the path it
/// fills is the path returned.
pub fn module_path() -> PathBuf {
    static MODULE: OnceLock<PathBuf> = OnceLock::new();
    MODULE.get_or_init(build_module).clone()
}

fn build_module() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe() of the test binary");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .unwrap_or_else(|| {
            panic!(
                "test binary {} is not in <target>/<profile>/deps",
                exe.display()
            )
        })
        .to_path_buf();
    let so = profile_dir.join("libpam_twofactor.so");

    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
    let mut cmd = Command::new(env!("CARGO"));
    cmd.args(["build", "--lib", "--quiet", "--manifest-path"])
        .arg(&manifest);
    match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    if let Some(parent) = profile_dir.parent() {
        if parent.join("CACHEDIR.TAG").exists() {
            cmd.arg("--target-dir").arg(parent);
        } else if let (Some(triple), Some(target_dir)) = (parent.file_name(), parent.parent()) {
            // <target>/<triple>/<profile>: built with --target.
            cmd.arg("--target")
                .arg(triple)
                .arg("--target-dir")
                .arg(target_dir);
        }
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{:?}`: {e}", cmd));
    if !out.status.success() {
        panic!(
            "building the PAM module failed ({:?}, {}):\n{}{}",
            cmd,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !so.is_file() {
        panic!(
            "`cargo build --lib` succeeded but {} does not exist; is the [lib] \
             still named pam_twofactor with crate-type cdylib? ({:?})",
            so.display(),
            cmd
        );
    }
    so
}

/// The `twofactor` CLI built by cargo for the integration tests.
pub fn cli_path() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_twofactor"))
}

/// The effective uid of this process (from `/proc/self/status`; std has no
/// geteuid and unsafe code is denied).
pub fn euid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|rest| rest.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("no effective uid in /proc/self/status")
}

/// What a root-only test needs besides root ([`root_or_skip`]).
#[derive(Clone, Copy, Debug)]
pub enum Needs {
    /// A private mount namespace: `unshare --mount --propagation private true`.
    MountNamespace,
    /// A read-only overlay on `/etc` inside a mount namespace, a directory
    /// of the test's files over the host's `/etc`: how a test replaces
    /// `/etc/passwd` and friends (TESTING.md, "Bind directories, not
    /// single files").
    EtcOverlay,
    /// Network namespaces with veth pairs on a bridge (`ip netns`, see
    /// [`netns`]): simulated hosts with their own addresses.
    NetworkNamespace,
    /// A program in `PATH`, and the Debian package that ships it.
    Program(&'static str, &'static str),
}

/// Whether a root-only test (or a root-only part of one, then name it
/// `test/part`) runs here; `why` says what it needs root for.
///
/// * Not root: prints a loud `*** SKIPPED <test>: <why>` line and returns
///   false. The line goes straight to fd 2 with one write: libtest
///   captures `print!`/`eprint!` of a test (and shows them only when it
///   fails), but not writes to [`std::io::stderr`].
/// * Root (as `make test` runs in CI): every one of `needs` must be met;
///   a missing one fails the test with its reason, never a skip. Returns
///   true.
pub fn root_or_skip(test: &str, why: &str, needs: &[Needs]) -> bool {
    if euid() != 0 {
        skip_loudly(test, &format!("needs root ({why}); euid is {}", euid()));
        return false;
    }
    for need in needs {
        if let Err(reason) = prerequisite(*need) {
            panic!(
                "\n*** {test} CANNOT RUN as root: {reason}\n\
                 *** (run as root, a test fails when it cannot run; it skips only \
                 when not root)\n"
            );
        }
    }
    true
}

/// Says on the real stderr, on a line of its own that libtest does not
/// capture (see [`root_or_skip`]), that `what` did not run and why.
pub fn skip_loudly(what: &str, why: &str) {
    let line = format!("\n*** SKIPPED {what}: {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Checks one prerequisite (each probe runs once per test process).
fn prerequisite(need: Needs) -> Result<(), String> {
    static NAMESPACE: OnceLock<Result<(), String>> = OnceLock::new();
    static OVERLAY: OnceLock<Result<(), String>> = OnceLock::new();
    static NETNS: OnceLock<Result<(), String>> = OnceLock::new();
    match need {
        Needs::MountNamespace => NAMESPACE.get_or_init(probe_mount_namespace).clone(),
        Needs::EtcOverlay => {
            NAMESPACE.get_or_init(probe_mount_namespace).clone()?;
            OVERLAY.get_or_init(probe_etc_overlay).clone()
        }
        Needs::NetworkNamespace => NETNS.get_or_init(netns::probe).clone(),
        Needs::Program(name, package) => find_program(name)
            .map(drop)
            .ok_or_else(|| format!("`{name}` is not in PATH (package {package})")),
    }
}

/// Runs a probe command; `Err` names what does not work here.
fn probe(cmd: &mut Command, what: &str) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {what}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} does not work here ({}: {})",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn probe_mount_namespace() -> Result<(), String> {
    let unshare = find_program("unshare").ok_or("`unshare` is not in PATH (package util-linux)")?;
    probe(
        Command::new(unshare).args(["--mount", "--propagation", "private", "true"]),
        "`unshare --mount --propagation private true`",
    )
}

fn probe_etc_overlay() -> Result<(), String> {
    let sandbox = Sandbox::new("etc-overlay-probe");
    let top = sandbox.dir().join("etc");
    fs::create_dir(&top).map_err(|e| format!("mkdir {}: {e}", top.display()))?;
    probe(
        Command::new("unshare")
            .args(["--mount", "--propagation", "private"])
            .args(["mount", "-t", "overlay", "etc-overlay-probe", "-o"])
            .arg(format!("lowerdir={}:/etc", top.display()))
            .arg("/etc"),
        "an overlay on /etc in a mount namespace",
    )
}

/// Where sandboxes live. The module refuses a state directory with any
/// ancestor that is group/world-writable or owned by someone other than root
/// or the euid, so neither `/tmp` nor (possibly under `/tmp`) `target/` will
/// do:
/// * root: `/run/pam-twofactor-tests` (created 0755);
/// * anyone else: `$HOME/.cache/pam-twofactor-tests` (created 0755; `$HOME`
///   itself must not be group/world-writable).
///
/// The whole chain is checked here so that a bad machine fails with a clear
/// message instead of a confusing refusal from the module.
pub fn sandbox_base() -> PathBuf {
    static BASE: OnceLock<PathBuf> = OnceLock::new();
    BASE.get_or_init(|| {
        let base = if euid() == 0 {
            PathBuf::from("/run/pam-twofactor-tests")
        } else {
            let home = std::env::var_os("HOME")
                .filter(|h| !h.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    panic!("HOME is not set: non-root tests keep their state under $HOME/.cache")
                });
            assert!(
                home.is_absolute(),
                "HOME={} is not absolute",
                home.display()
            );
            let cache = home.join(".cache");
            make_dir(&cache, 0o755, false);
            cache.join("pam-twofactor-tests")
        };
        make_dir(&base, 0o755, true);
        let base = fs::canonicalize(&base)
            .unwrap_or_else(|e| panic!("canonicalize {}: {e}", base.display()));
        check_trusted_chain(&base);
        base
    })
    .clone()
}

/// Creates `dir` with `mode` if missing (a concurrent creator is fine). With
/// `force_mode`, also resets the mode of an existing directory we own.
fn make_dir(dir: &Path, mode: u32, force_mode: bool) {
    let created = match fs::DirBuilder::new().mode(mode).create(dir) {
        Ok(()) => true,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
        Err(e) => panic!("cannot create {}: {e}", dir.display()),
    };
    let meta = fs::symlink_metadata(dir).unwrap_or_else(|e| panic!("stat {}: {e}", dir.display()));
    assert!(
        meta.is_dir(),
        "{} exists and is not a directory",
        dir.display()
    );
    if (created || force_mode) && meta.uid() == euid() && meta.mode() & 0o7777 != mode {
        // The umask may have removed bits; make the mode exact.
        fs::set_permissions(dir, fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {:o} {}: {e}", mode, dir.display()));
    }
}

/// Panics unless `dir` and every ancestor is owned by root or us and is not
/// group/world-writable (the module's own rule).
fn check_trusted_chain(dir: &Path) {
    let me = euid();
    for p in dir.ancestors() {
        let meta = fs::metadata(p).unwrap_or_else(|e| panic!("stat {}: {e}", p.display()));
        let mode = meta.mode() & 0o7777;
        if (meta.uid() != 0 && meta.uid() != me) || mode & 0o022 != 0 {
            panic!(
                "test sandboxes would live under {}, but {} is owned by uid {} with \
                 mode {mode:04o}; the module refuses state below a directory that is \
                 group/world-writable or owned by anyone but root or uid {me}. \
                 Fix that directory (or run the tests as another user).",
                dir.display(),
                p.display(),
                meta.uid()
            );
        }
    }
}

/// A fresh private directory for one test, removed on drop:
///
/// ```text
/// <base>/<name>-<pid>-<n>/      0755
///     state/                    0700   (state_dir in the config)
///     pam.d/                    0755   (PAM_WRAPPER_SERVICE_DIR)
///     twofactor.toml            0600   (written by write_config)
///     passdb                    0600   (written by matrix_line)
/// ```
///
/// Set `PAM_TWOFACTOR_KEEP_SANDBOX=1` to keep the directory for debugging.
#[derive(Debug)]
pub struct Sandbox {
    dir: PathBuf,
    state: PathBuf,
    config: PathBuf,
    pamd: PathBuf,
    delivery: std::cell::RefCell<Option<DeliveryService>>,
}

static SANDBOX_COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Sandbox {
    pub fn new(name: &str) -> Sandbox {
        let clean: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(60)
            .collect();
        let n = SANDBOX_COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = sandbox_base().join(format!("{clean}-{}-{n}", std::process::id()));
        if fs::symlink_metadata(&dir).is_ok() {
            // Left over by an earlier process with the same pid.
            fs::remove_dir_all(&dir)
                .unwrap_or_else(|e| panic!("remove stale {}: {e}", dir.display()));
        }
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&dir)
            .unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", dir.display()));
        let sandbox = Sandbox {
            state: dir.join("state"),
            config: dir.join("twofactor.toml"),
            pamd: dir.join("pam.d"),
            delivery: std::cell::RefCell::new(None),
            dir,
        };
        for (d, mode) in [(&sandbox.state, 0o700), (&sandbox.pamd, 0o755)] {
            fs::DirBuilder::new()
                .mode(mode)
                .create(d)
                .unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
            fs::set_permissions(d, fs::Permissions::from_mode(mode))
                .unwrap_or_else(|e| panic!("chmod {}: {e}", d.display()));
        }
        check_trusted_chain(&sandbox.dir);
        sandbox
    }

    /// The sandbox root.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `state/` (0700): the `state_dir` written by [`Sandbox::write_config`].
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// `twofactor.toml`; the file exists only after [`Sandbox::write_config`].
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// `deliver.sock`: where [`Sandbox::start_delivery_service`] listens;
    /// put it in the config as `[delivery] socket`.
    pub fn delivery_socket(&self) -> PathBuf {
        self.dir.join("deliver.sock")
    }

    /// Starts the sandbox's delivery service (see [`DeliveryService`]); it
    /// stops when the sandbox is dropped.
    pub fn start_delivery_service(&self) {
        let service = DeliveryService::start(&self.delivery_socket(), &self.config, &self.dir);
        *self.delivery.borrow_mut() = Some(service);
    }

    /// What the delivery service's runs wrote to stderr (the journal under
    /// systemd), one line per connection.
    pub fn delivery_log(&self) -> String {
        fs::read_to_string(self.dir.join("deliver.log")).unwrap_or_default()
    }

    /// `pam.d/`, passed to pam_wrapper as `PAM_WRAPPER_SERVICE_DIR`.
    pub fn service_dir(&self) -> &Path {
        &self.pamd
    }

    /// Writes `twofactor.toml` (mode 0600) as `state_dir = "<state>"\n` then
    /// `extra` verbatim (TOML lines such as `window = 0\n`).
    pub fn write_config(&self, extra: &str) {
        let text = format!("state_dir = {}\n{extra}", toml_string(&self.state));
        write_file(&self.config, text.as_bytes(), 0o600);
    }

    /// Writes `pam.d/<service>` with `stack` (PAM config lines, a trailing
    /// newline is added if missing) and `pam.d/other` denying every facility,
    /// which also keeps pam_wrapper quiet.
    pub fn write_service(&self, service: &str, stack: &str) {
        assert!(
            !service.is_empty()
                && service != "other"
                && service
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)),
            "bad service name {service:?}"
        );
        let mut text = stack.to_string();
        if !text.ends_with('\n') {
            text.push('\n');
        }
        write_file(&self.pamd.join(service), text.as_bytes(), 0o644);
        write_file(
            &self.pamd.join("other"),
            b"auth required pam_deny.so\naccount required pam_deny.so\n\
              password required pam_deny.so\nsession required pam_deny.so\n",
            0o644,
        );
    }

    /// `auth required <module_path()> config=<config_path> <args>`.
    pub fn module_line(&self, args: &str) -> String {
        self.module_line_with("required", args)
    }

    /// Like [`Sandbox::module_line`] with another control field, e.g.
    /// `sufficient` or `[success=done default=die]`.
    pub fn module_line_with(&self, control: &str, args: &str) -> String {
        let module = module_path();
        let line = format!(
            "auth {control} {} config={} {args}",
            pam_config_word(&module),
            pam_config_word(&self.config)
        );
        line.trim_end().to_string()
    }

    /// A first factor: writes `passdb` (`user:password:service` lines, the
    /// service field only matters for acct_mgmt) and returns
    /// `auth required <pam_matrix.so> passdb=<passdb>`. pam_matrix prompts
    /// `Password: ` (echo off); a wrong password or an unknown user gives
    /// PAM_AUTH_ERR, EOF gives PAM_CRED_ERR, and it stores the password as
    /// PAM_AUTHTOK.
    pub fn matrix_line(&self, users: &[(&str, &str)]) -> String {
        let mut db = String::new();
        for (user, password) in users {
            assert!(
                !format!("{user}{password}").contains([':', '\n']),
                "pam_matrix passdb entries cannot contain ':' or newlines"
            );
            db.push_str(&format!("{user}:{password}:twofactor-test\n"));
        }
        let passdb = self.dir.join("passdb");
        write_file(&passdb, db.as_bytes(), 0o600);
        format!(
            "auth required {} passdb={}",
            pam_config_word(&pam_wrapper_module("pam_matrix.so")),
            pam_config_word(&passdb)
        )
    }

    /// Runs `pamtester -v <service> <user> authenticate` under pam_wrapper
    /// (this sandbox's `pam.d`) and libfaketime.
    ///
    /// * `stdin_lines`: one answer per prompt, joined with `\n` plus a final
    ///   `\n`; empty means stdin is `/dev/null` (EOF at the first prompt).
    /// * `faketime`: a frozen absolute UTC time `"YYYY-MM-DD HH:MM:SS"`
    ///   (see [`T0`], [`utc`]); `"@YYYY-MM-DD HH:MM:SS"` starts a running
    ///   clock there instead; `""` leaves the real clock.
    pub fn pamtester(
        &self,
        service: &str,
        user: &str,
        stdin_lines: &[&str],
        faketime: &str,
    ) -> PamOutcome {
        self.pamtester_with(service, user, stdin_lines, faketime, &[], "authenticate")
    }

    /// [`Sandbox::pamtester`] with PAM items set through `pamtester -I
    /// name=value`. pamtester 0.1.2 accepts the names `service`, `user`,
    /// `prompt`, `tty`, `ruser` and `rhost` (e.g. `("rhost", "203.0.113.7")`
    /// becomes PAM_RHOST; verified with a module reading the items).
    pub fn pamtester_items(
        &self,
        service: &str,
        user: &str,
        stdin_lines: &[&str],
        faketime: &str,
        items: &[(&str, &str)],
    ) -> PamOutcome {
        let options: Vec<String> = items
            .iter()
            .flat_map(|(k, v)| ["-I".to_string(), format!("{k}={v}")])
            .collect();
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        self.pamtester_with(
            service,
            user,
            stdin_lines,
            faketime,
            &options,
            "authenticate",
        )
    }

    /// The general form: raw pamtester `options` (`-I item=value`, `-E
    /// VAR=value` for the PAM environment) and one `operation` argument such
    /// as `authenticate`, `authenticate(PAM_SILENT)` or
    /// `authenticate(PAM_SILENT|PAM_DISALLOW_NULL_AUTHTOK)` (pamtester passes
    /// the flags to pam_authenticate; PAM_SILENT arrives as 0x8000).
    pub fn pamtester_with(
        &self,
        service: &str,
        user: &str,
        stdin_lines: &[&str],
        faketime: &str,
        options: &[&str],
        operation: &str,
    ) -> PamOutcome {
        let cmd = self.pamtester_command(
            service,
            user,
            faketime,
            options,
            operation,
            &Extra::default(),
        );
        Self::run_pamtester(cmd, stdin_lines)
    }

    /// [`Sandbox::pamtester`] with `passwd` (lines of `/etc/passwd` syntax)
    /// as pamtester's whole user database, through nss_wrapper (the
    /// machine's `/etc/passwd` is never touched; the group database is one
    /// `root` group). The CLI still sees the real database.
    pub fn pamtester_with_passwd(
        &self,
        service: &str,
        user: &str,
        stdin_lines: &[&str],
        faketime: &str,
        passwd: &str,
    ) -> PamOutcome {
        let passwd_file = self.dir.join("nss-passwd");
        let group_file = self.dir.join("nss-group");
        fs::write(&passwd_file, passwd).expect("write nss-passwd");
        fs::write(&group_file, "root:x:0:\n").expect("write nss-group");
        let extra = Extra {
            preload: vec![nss_wrapper_lib()],
            settings: vec![
                format!("NSS_WRAPPER_PASSWD={}", passwd_file.display()),
                format!("NSS_WRAPPER_GROUP={}", group_file.display()),
            ],
        };
        let cmd = self.pamtester_command(service, user, faketime, &[], "authenticate", &extra);
        Self::run_pamtester(cmd, stdin_lines)
    }

    /// The command line of one pamtester run: under the pam_wrapper lock
    /// (flock, see the module docs), bounded by `timeout` (a hung module
    /// fails the test instead of hanging it), with pam_wrapper, libfaketime
    /// when `faketime` is not `""`, and `extra` preloaded only into
    /// pamtester (`env`), in a clean environment; stdio is the caller's.
    pub fn pamtester_command(
        &self,
        service: &str,
        user: &str,
        faketime: &str,
        options: &[&str],
        operation: &str,
        extra: &Extra,
    ) -> Command {
        assert!(
            self.pamd.join(service).is_file(),
            "no {}/{service}: call write_service({service:?}, ...) first (an unknown \
             service silently falls back to `other`)",
            self.pamd.display()
        );
        let mut preload = vec![pam_wrapper_lib()];
        let mut settings = Vec::new();
        if !faketime.is_empty() {
            preload.push(libfaketime());
            settings.push(format!("FAKETIME={faketime}"));
            settings.push("FAKETIME_DONT_FAKE_MONOTONIC=1".to_string());
        }
        preload.extend(extra.preload.iter().cloned());
        settings.extend(extra.settings.iter().cloned());
        let preload: Vec<String> = preload.iter().map(|p| p.display().to_string()).collect();
        let mut cmd = Command::new(tool("flock"));
        cmd.args(["-w", "300", "-E", "75"])
            .arg(sandbox_base().join("pam_wrapper.lock"))
            .arg(tool("timeout"))
            .args(["-k", "10", "120"])
            .arg(tool("env"))
            .arg(format!("LD_PRELOAD={}", preload.join(" ")))
            .arg("PAM_WRAPPER=1")
            .arg(format!("PAM_WRAPPER_SERVICE_DIR={}", self.pamd.display()))
            .args(&settings)
            .arg(tool("pamtester"))
            .arg("-v")
            .args(options)
            .arg(service)
            .arg(user)
            .arg(operation);
        clean_env(&mut cmd);
        cmd
    }

    /// Runs a [`Sandbox::pamtester_command`] with `stdin_lines` as input.
    pub fn run_pamtester(mut cmd: Command, stdin_lines: &[&str]) -> PamOutcome {
        let output = run_with_stdin(&mut cmd, stdin_lines);
        let outcome = PamOutcome::from_output(&output);
        let status = output.status.code();
        match status {
            Some(0) | Some(1) => {}
            Some(75) => panic!("could not take the pam_wrapper lock within 300 s\n{outcome}"),
            Some(124) | Some(137) => {
                panic!("pamtester did not finish within 120 s (hung module?)\n{outcome}")
            }
            _ => panic!("pamtester exited abnormally ({})\n{outcome}", output.status),
        }
        if outcome.stderr.contains("ld.so: object") {
            panic!("a preload library was not loaded, so pam_wrapper may not be active\n{outcome}");
        }
        if outcome
            .stderr
            .contains("Failed to create pam_wrapper config dir")
        {
            panic!(
                "pam_wrapper's /tmp/pam.X directory collided with another process \
                 (a pam_wrapper user outside this harness?); result unreliable\n{outcome}"
            );
        }
        outcome
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        drop(self.delivery.take());
        if std::env::var_os("PAM_TWOFACTOR_KEEP_SANDBOX").is_some_and(|v| v == "1") {
            eprintln!("keeping sandbox {}", self.dir.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// A socket that receives what the module sends to syslog (`/dev/log`),
/// for the tests that check the log lines (root only). Where nothing is at
/// `/dev/log` (no syslog daemon: these machines, CI), it is bound there and
/// removed on drop. Where something is (a syslog daemon, or the socket of
/// another test run on the machine), it is bound in the sandbox instead,
/// and [`DevLog::wrap`] runs each command in a private mount namespace
/// with it bound over `/dev/log`: the machine's `/dev/log` is never taken
/// over, and the test still runs.
///
/// One `DevLog` at a time in a test process: two tests of one binary
/// running in parallel would otherwise race, the second going private
/// because the first holds `/dev/log`, and its namespaced commands then
/// failing to bind over a `/dev/log` the first has removed meanwhile
/// ("mount point does not exist"). The turn is held until the `DevLog`
/// is dropped (after its socket is removed).
pub struct DevLog {
    socket: std::os::unix::net::UnixDatagram,
    path: PathBuf,
    /// In the sandbox, seen as /dev/log only through [`DevLog::wrap`].
    private: bool,
    /// `(dev, ino)` of our /dev/log, so that drop removes only ours.
    inode: (u64, u64),
    /// This process's turn (declared last: released after the rest).
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// Whose turn it is to hold a [`DevLog`] in this test process.
static DEV_LOG_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl DevLog {
    pub fn bind(sb: &Sandbox) -> DevLog {
        let turn = DEV_LOG_TURN
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        use std::os::unix::net::UnixDatagram;
        let (socket, path, private) = match UnixDatagram::bind("/dev/log") {
            Ok(socket) => (socket, PathBuf::from("/dev/log"), false),
            Err(e) if e.kind() == ErrorKind::AddrInUse => {
                if let Err(why) = prerequisite(Needs::MountNamespace) {
                    panic!(
                        "/dev/log exists here (a syslog daemon?), and a socket of the \
                         test's own cannot be bound over it: {why}"
                    );
                }
                let path = sb.dir().join("dev-log");
                let socket = UnixDatagram::bind(&path)
                    .unwrap_or_else(|e| panic!("bind {}: {e}", path.display()));
                (socket, path, true)
            }
            Err(e) => panic!("cannot bind a socket at /dev/log: {e}"),
        };
        let meta =
            fs::symlink_metadata(&path).unwrap_or_else(|e| panic!("stat {}: {e}", path.display()));
        DevLog {
            socket,
            path,
            private,
            inode: (meta.dev(), meta.ino()),
            _turn: turn,
        }
    }

    /// The receiving end.
    pub fn socket(&self) -> &std::os::unix::net::UnixDatagram {
        &self.socket
    }

    /// Lets every uid send to the socket (for a module run as another uid).
    #[allow(dead_code)]
    pub fn open_to_all(&self) {
        fs::set_permissions(&self.path, fs::Permissions::from_mode(0o666)).unwrap();
    }

    /// `cmd` as it must run for its syslog messages to reach this socket:
    /// unchanged, or in a private mount namespace with the socket bound
    /// over `/dev/log` (same program, arguments, environment and working
    /// directory; set stdio on the result).
    pub fn wrap(&self, cmd: Command) -> Command {
        if !self.private {
            return cmd;
        }
        let mut wrapped = Command::new(find_program("unshare").expect("unshare"));
        wrapped
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg("mount --bind \"$0\" /dev/log && exec \"$@\"")
            .arg(&self.path)
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (key, value) in cmd.get_envs() {
            match value {
                Some(value) => wrapped.env(key, value),
                None => wrapped.env_remove(key),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            wrapped.current_dir(dir);
        }
        wrapped
    }
}

impl Drop for DevLog {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.inode);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// What systemd does for debian/pam-twofactor-deliver.socket
/// (`Accept=yes`, `StandardInput=socket`): listen on a socket (mode 0600)
/// and run `twofactor --config CONFIG deliver` for each connection, with the
/// connection as its stdin and stdout and `deliver.log` as its stderr. One
/// connection at a time; stopped (and the thread joined) on drop.
#[derive(Debug)]
pub struct DeliveryService {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl DeliveryService {
    fn start(socket: &Path, config: &Path, dir: &Path) -> DeliveryService {
        use std::os::fd::OwnedFd;
        let listener = std::os::unix::net::UnixListener::bind(socket)
            .unwrap_or_else(|e| panic!("bind {}: {e}", socket.display()));
        fs::set_permissions(socket, fs::Permissions::from_mode(0o600)).unwrap();
        // Non-blocking, so that the thread sees `stop` within a poll.
        listener.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (config, log) = (config.to_path_buf(), dir.join("deliver.log"));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            while !stopped.load(Ordering::SeqCst) {
                let stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(5));
                        continue;
                    }
                    Err(e) => panic!("accept: {e}"),
                };
                stream.set_nonblocking(false).unwrap();
                let output = OwnedFd::from(stream.try_clone().unwrap());
                let stderr = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log)
                    .unwrap();
                let mut cmd = Command::new(cli_path());
                cmd.arg("--config").arg(&config).arg("deliver");
                clean_env(&mut cmd);
                cmd.stdin(Stdio::from(OwnedFd::from(stream)))
                    .stdout(Stdio::from(output))
                    .stderr(Stdio::from(stderr))
                    .status()
                    .unwrap_or_else(|e| panic!("twofactor deliver: {e}"));
            }
        });
        DeliveryService {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for DeliveryService {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A directory to bind over `/etc/pam.d` in a private mount namespace
/// (see [`spawn_namespaced_pamtester`]): `service` with our module and
/// `config`, and `other` denying.
pub fn namespaced_pamd(dir: &Path, service: &str, config: &Path) -> PathBuf {
    let pamd = dir.join("etc-pam.d");
    fs::create_dir_all(&pamd).unwrap();
    fs::write(
        pamd.join(service),
        format!(
            "auth required {} config={}\n",
            module_path().display(),
            config.display()
        ),
    )
    .unwrap();
    fs::write(
        pamd.join("other"),
        "auth required pam_deny.so\naccount required pam_deny.so\n",
    )
    .unwrap();
    pamd
}

/// `pamtester SERVICE USER authenticate` answering `code`, in its own
/// private mount namespace with `pamd` bound over /etc/pam.d: real libpam
/// without pam_wrapper, which is not safe in parallel. Root only. With
/// `faketime`, libfaketime is preloaded into pamtester alone (a preloaded
/// `unshare` would create its shared-memory semaphore in the host's
/// /dev/shm and exec away, leaving it there). Bounded by 60 s.
pub fn spawn_namespaced_pamtester(
    pamd: &Path,
    service: &str,
    user: &str,
    code: &str,
    faketime: Option<&str>,
) -> std::process::Child {
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$0\" /etc/pam.d && exec timeout 60 env ${PRELOAD:+LD_PRELOAD=\"$PRELOAD\"} pamtester \"$1\" \"$2\" authenticate")
        .arg(pamd)
        .arg(service)
        .arg(user)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    if let Some(at) = faketime {
        cmd.env("PRELOAD", libfaketime())
            .env("FAKETIME", at)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{code}\n").as_bytes())
        .unwrap();
    child
}

/// Waits for [`spawn_namespaced_pamtester`] logins; returns how many
/// succeeded, each other one having failed with PAM_AUTH_ERR.
pub fn namespaced_successes(children: Vec<std::process::Child>) -> usize {
    let mut successes = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            assert!(stdout.contains(SUCCESS_LINE), "{stdout}{stderr}");
            successes += 1;
        } else {
            assert!(stderr.contains(pam_err::AUTH_ERR), "{stdout}{stderr}");
        }
    }
    successes
}

/// What one pamtester run produced. `stdout`/`stderr` are raw so tests can
/// assert on prompts (stderr), PAM_TEXT_INFO (stdout) and PAM_ERROR_MSG
/// (stderr) text; see the module docs for the exact layout.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PamOutcome {
    /// pamtester's exit status: 0 success, 1 any PAM failure.
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

impl PamOutcome {
    fn from_output(output: &Output) -> PamOutcome {
        PamOutcome {
            status: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Exit status 0 and `pamtester: successfully authenticated` on stdout.
    pub fn succeeded(&self) -> bool {
        self.status == 0 && self.stdout.lines().any(|l| l == SUCCESS_LINE)
    }

    /// The `pam_strerror` text of a failure, from the last stderr line
    /// `pamtester: <text>` (compare with [`pam_err`]); `None` on success.
    pub fn pam_error(&self) -> Option<&str> {
        if self.succeeded() {
            return None;
        }
        let at = self.stderr.rfind("pamtester: ")?;
        let text = self.stderr[at + "pamtester: ".len()..]
            .lines()
            .next()?
            .trim_end();
        if text.starts_with("invoking pam_start") || text.starts_with("performing operation") {
            None
        } else {
            Some(text)
        }
    }

    /// The PAM_TEXT_INFO lines: stdout without pamtester's own line.
    pub fn info_lines(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| !l.starts_with("pamtester: "))
            .collect()
    }

    /// How many times `prompt` (e.g. `"Verification code: "`) was shown.
    pub fn prompt_count(&self, prompt: &str) -> usize {
        self.stderr.matches(prompt).count()
    }
}

impl fmt::Display for PamOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pamtester exit status {}\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `oathtool --totp -b <secret> --now "<at> UTC" <extra...>` and returns
/// its trimmed output (with `-w N`, N+1 codes, one per line, for steps t..t+N).
/// `at` is `"YYYY-MM-DD HH:MM:SS"` (UTC is appended) or `"@<unix>"`.
/// `extra` examples: `["--totp=sha256"]` (the `=` is required; a TOTP mode
/// here replaces the plain `--totp`, which oathtool refuses twice), `["-d",
/// "8"]` (6, 7 or 8 only), `["-s", "60s"]`.
pub fn oathtool(secret_b32: &str, at: &str, extra: &[&str]) -> String {
    let now = if at.starts_with('@') {
        at.to_string()
    } else {
        format!("{at} UTC")
    };
    let mut cmd = Command::new(tool("oathtool"));
    if !extra.iter().any(|a| a.starts_with("--totp")) {
        cmd.arg("--totp");
    }
    cmd.arg("-b")
        .arg(secret_b32)
        .arg("--now")
        .arg(&now)
        .args(extra);
    let out = clean_env(&mut cmd)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run oathtool: {e}"));
    if !out.status.success() {
        panic!(
            "oathtool {extra:?} at {now:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The TOTP code for `secret_b32` at `at` with the given parameters:
/// `algorithm` is `SHA1`, `SHA256` or `SHA512` (any case), `digits` 6..=8,
/// `period` in seconds.
pub fn oathtool_code(
    secret_b32: &str,
    algorithm: &str,
    digits: u32,
    period: u32,
    at: &str,
) -> String {
    let mode = format!("--totp={}", algorithm.to_ascii_uppercase());
    let digits = digits.to_string();
    let period = format!("{period}s");
    oathtool(
        secret_b32,
        at,
        &[mode.as_str(), "-d", digits.as_str(), "-s", period.as_str()],
    )
}

/// What one `twofactor` run produced.
pub struct CliRun {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliRun {
    pub fn from(out: &Output) -> CliRun {
        CliRun {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Asserts the exit code, showing both streams otherwise.
    pub fn expect(self, code: i32) -> CliRun {
        assert_eq!(
            self.code, code,
            "exit code\n--- stdout ---\n{}--- stderr ---\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// stdout as one JSON value (the contract: one object).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.stdout.trim_end())
            .unwrap_or_else(|e| panic!("stdout is not one JSON value ({e}):\n{}", self.stdout))
    }
}

/// `twofactor --config <sandbox config> args...`, real clock.
pub fn cli(sb: &Sandbox, args: &[&str]) -> CliRun {
    CliRun::from(&run_cli(sb, args))
}

/// [`cli`] with `secret` and a newline on stdin: for `enroll USER
/// --secret-file -` (a seed never goes in the arguments: every local user
/// can read them in /proc).
pub fn cli_secret(sb: &Sandbox, args: &[&str], secret: &str) -> CliRun {
    CliRun::from(&run_cli_with(sb, args, &[secret], ""))
}

/// Writes `text` to `path` with mode 0600 (a seed for `--secret-file`).
pub fn write_private(path: &Path, text: &str) {
    write_file(path, text.as_bytes(), 0o600);
}

/// Writes `text` to `path` with exactly `mode`.
pub fn write_file_mode(path: &Path, text: &str, mode: u32) {
    write_file(path, text.as_bytes(), mode);
}

/// Runs `twofactor --config <config_path> <args...>` (no stdin, real clock).
pub fn run_cli(sandbox: &Sandbox, args: &[&str]) -> Output {
    run_cli_with(sandbox, args, &[], "")
}

/// [`run_cli`] with stdin lines (as for pamtester; empty = `/dev/null`) and a
/// pinned clock (`faketime` as for [`Sandbox::pamtester`], `""` = real clock;
/// only libfaketime is preloaded, never pam_wrapper).
pub fn run_cli_with(
    sandbox: &Sandbox,
    args: &[&str],
    stdin_lines: &[&str],
    faketime: &str,
) -> Output {
    let mut cmd = Command::new(cli_path());
    cmd.arg("--config").arg(sandbox.config_path()).args(args);
    clean_env(&mut cmd);
    if !faketime.is_empty() {
        require_tools();
        cmd.env("LD_PRELOAD", libfaketime())
            .env("FAKETIME", faketime)
            .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    }
    run_with_stdin(&mut cmd, stdin_lines)
}

/// Unix seconds to `"YYYY-MM-DD HH:MM:SS"` (UTC), the format FAKETIME and
/// [`oathtool`] take: `utc(T0_UNIX + 30)` is one TOTP step after [`T0`].
pub fn utc(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `"YYYY-MM-DD HH:MM:SS"` (UTC) to Unix seconds; the inverse of [`utc`].
pub fn unix(at: &str) -> u64 {
    fn parse(at: &str) -> Option<u64> {
        let (date, time) = at.trim().split_once(' ')?;
        let d: Vec<i64> = date
            .split('-')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let t: Vec<i64> = time
            .split(':')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let (&[y, m, day], &[hh, mm, ss]) = (d.as_slice(), t.as_slice()) else {
            return None;
        };
        // Howard Hinnant's days_from_civil.
        let y = y - i64::from(m <= 2);
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        u64::try_from(days * 86_400 + hh * 3600 + mm * 60 + ss).ok()
    }
    parse(at).unwrap_or_else(|| panic!("{at:?} is not \"YYYY-MM-DD HH:MM:SS\""))
}

/// `at` moved by `seconds` (may be negative), same format.
pub fn at_offset(at: &str, seconds: i64) -> String {
    utc(unix(at)
        .checked_add_signed(seconds)
        .expect("time before 1970"))
}

/// C locale (untranslated pam_strerror texts), UTC, and no inherited preload
/// or pam_wrapper/faketime settings.
pub fn clean_env(cmd: &mut Command) -> &mut Command {
    for var in [
        "LD_PRELOAD",
        "PAM_WRAPPER",
        "PAM_WRAPPER_SERVICE_DIR",
        "PAM_WRAPPER_RUNTIME_DIR",
        "FAKETIME",
        "FAKETIME_DONT_FAKE_MONOTONIC",
        "NSS_WRAPPER_PASSWD",
        "NSS_WRAPPER_GROUP",
        "LANGUAGE",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("LC_ALL", "C").env("TZ", "UTC")
}

/// Spawns `cmd` with `lines` (joined by `\n`, plus a final `\n`) on stdin, or
/// `/dev/null` if there are none, and collects its output.
fn run_with_stdin(cmd: &mut Command, lines: &[&str]) -> Output {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    if lines.is_empty() {
        cmd.stdin(Stdio::null());
    } else {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        let mut input = lines.join("\n");
        input.push('\n');
        // The child may exit before reading everything (EPIPE): that is its
        // answer, not a harness error.
        let _ = stdin.write_all(input.as_bytes());
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for {cmd:?}: {e}"))
}

/// Writes `path` with exactly `mode` (also when it already existed).
fn write_file(path: &Path, contents: &[u8], mode: u32) {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    f.write_all(contents)
        .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// A TOML basic string holding `path`.
fn toml_string(path: &Path) -> String {
    let s = path
        .to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display()));
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A path as one word of a PAM config line (which splits on whitespace).
fn pam_config_word(path: &Path) -> String {
    let s = path.display().to_string();
    assert!(
        !s.contains(char::is_whitespace) && !s.contains(['[', ']']),
        "path {s:?} cannot appear in a PAM config line"
    );
    s
}
