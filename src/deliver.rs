//! Sending a code by message through `[delivery] command` (an SMS gateway,
//! a chat bot, e-mail). The command is run with the user name and the target
//! as arguments and the code on standard input — never in argv or the
//! environment, which other users can read in /proc — with only PATH in
//! its environment, in `/`, and killed if it does not finish in time.

use std::ffi::CString;
use std::fmt;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, OFlag, openat};
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2};
use zeroize::Zeroizing;

use crate::store::{self, StoreError};

/// How long the command may run.
pub const TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

/// Why a code could not be sent.
#[derive(Debug)]
pub enum DeliveryError {
    /// The command is missing or unsafe (owner, mode, type).
    Unsafe(StoreError),
    /// The command could not be started.
    Spawn(String),
    /// The command exited unsuccessfully.
    Failed(String),
    /// The command did not finish within the timeout and was killed.
    Timeout,
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::Unsafe(e) => write!(f, "delivery command: {e}"),
            DeliveryError::Spawn(e) => write!(f, "delivery command could not start: {e}"),
            DeliveryError::Failed(status) => write!(f, "delivery command failed: {status}"),
            DeliveryError::Timeout => write!(
                f,
                "delivery command did not finish within {} s and was killed",
                TIMEOUT.as_secs()
            ),
        }
    }
}

impl std::error::Error for DeliveryError {}

/// The shell that starts the command in `/` (see `send`).
const SHELL: &str = "/bin/sh";
/// Its script: `$0` is the command, `$1` the user, `$2` the target; they are
/// arguments, never part of the script text, so nothing in them is parsed.
/// `cd` sets PWD and OLDPWD (the host's directory); they are removed again
/// so the command's environment is PATH alone.
const TRAMPOLINE: &str = "cd / && unset OLDPWD PWD && exec \"$0\" \"$@\"";

/// Runs `command USER TARGET` with `code` on standard input.
///
/// The code goes into the pipe *before* the command starts: it fits in the
/// pipe buffer, and while we hold the read end no write can fail, so the
/// host process never meets EPIPE or SIGPIPE (a command that exits without
/// reading would otherwise kill a host that does not ignore SIGPIPE).
///
/// Started with `posix_spawn` rather than `std::process::Command`: the
/// module is loaded by every `pam_start`, and the loader binds every libc
/// symbol the module names; Command named 26 more than this (fork,
/// execvp, setgroups, pidfd_spawnp, ...), ~19,000 instructions per host
/// process (bench/results.md, "Changes"). posix_spawn has no portable
/// working-directory action (nix 0.31 wraps none, and reaching glibc's
/// `addchdir_np` needs `unsafe`), so [`SHELL`] starts first and runs
/// [`TRAMPOLINE`]: the command then runs with the same pid, in `/` (never
/// in a user's directory, as under sudo), argv `[command, user, target]`,
/// only `PATH` in the environment, the code on a pipe as stdin, /dev/null
/// as stdout and stderr, an empty signal mask and SIGPIPE at its default.
/// The command is checked like every file the module trusts
/// (`check_executable`); the shell is the system's own, trusted like the
/// libc the host already runs on (on merged-/usr systems `/bin` is a
/// symlink, which the component checks would refuse).
pub fn send(command: &Path, user: &str, target: &str, code: &str) -> Result<(), DeliveryError> {
    store::check_executable(command).map_err(DeliveryError::Unsafe)?;
    let io_error = |e: std::io::Error| DeliveryError::Spawn(e.to_string());
    let spawn_error = |e: Errno| io_error(e.into());
    let text = |s: &[u8]| {
        CString::new(s).map_err(|_| DeliveryError::Spawn("NUL byte in an argument".into()))
    };
    let argv = [
        text(SHELL.as_bytes())?,
        text(b"-c")?,
        text(TRAMPOLINE.as_bytes())?,
        text(command.as_os_str().as_bytes())?,
        text(user.as_bytes())?,
        text(target.as_bytes())?,
    ];
    let envp = [c"PATH=/usr/sbin:/usr/bin:/sbin:/bin"];
    // Both ends close on exec; the child gets the read end as fd 0 only.
    let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC).map_err(spawn_error)?;
    let mut writer = std::fs::File::from(write_end);
    let mut line = Zeroizing::new(String::with_capacity(code.len() + 1));
    line.push_str(code);
    line.push('\n');
    writer.write_all(line.as_bytes()).map_err(io_error)?;
    drop(writer);
    let read_end = above_stdio(read_end).map_err(io_error)?;
    // openat, not open: one libc symbol fewer to bind (std names openat too).
    let null = openat(
        AT_FDCWD,
        "/dev/null",
        OFlag::O_WRONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY,
        Mode::empty(),
    )
    .map_err(spawn_error)?;
    let null = above_stdio(null).map_err(io_error)?;
    let mut actions = PosixSpawnFileActions::init().map_err(spawn_error)?;
    actions
        .add_dup2(read_end.as_raw_fd(), 0)
        .map_err(spawn_error)?;
    actions.add_dup2(null.as_raw_fd(), 1).map_err(spawn_error)?;
    actions.add_dup2(null.as_raw_fd(), 2).map_err(spawn_error)?;
    let mut attr = PosixSpawnAttr::init().map_err(spawn_error)?;
    let mut sigpipe = SigSet::empty();
    sigpipe.add(Signal::SIGPIPE);
    attr.set_sigmask(&SigSet::empty()).map_err(spawn_error)?;
    attr.set_sigdefault(&sigpipe).map_err(spawn_error)?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )
    .map_err(spawn_error)?;
    let child =
        posix_spawn(Path::new(SHELL), &actions, &attr, &argv, &envp).map_err(spawn_error)?;
    drop((read_end, null));
    let started = Instant::now();
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, 0)) => return Ok(()),
            Ok(WaitStatus::Exited(_, status)) => {
                return Err(DeliveryError::Failed(format!("exit status: {status}")));
            }
            Ok(WaitStatus::Signaled(_, signal, _)) => {
                return Err(DeliveryError::Failed(format!(
                    "signal: {} ({})",
                    signal as i32,
                    signal.as_str()
                )));
            }
            Ok(_) | Err(Errno::EINTR) if started.elapsed() < TIMEOUT => std::thread::sleep(POLL),
            Ok(_) | Err(Errno::EINTR) => {
                let _ = kill(child, Signal::SIGKILL);
                reap(child);
                return Err(DeliveryError::Timeout);
            }
            Err(e) => return Err(DeliveryError::Failed(std::io::Error::from(e).to_string())),
        }
    }
}

/// Waits for a killed child (SIGKILL cannot be caught, so this is short).
fn reap(child: Pid) {
    while let Err(Errno::EINTR) = waitpid(child, None) {}
}

/// A copy of `fd` numbered 3 or above if it is 0, 1 or 2 (a host may run
/// with those closed): `dup2` onto itself would keep close-on-exec set.
/// (`try_clone` is `F_DUPFD_CLOEXEC` from 3.)
fn above_stdio(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        Ok(fd)
    } else {
        fd.try_clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A command that exits at once without reading the code is a success
    /// (the code was already in the pipe); a failing one reports its status.
    #[test]
    fn exit_status_decides() {
        send(
            Path::new("/usr/bin/true"),
            "alice",
            "+15555550100",
            "123456",
        )
        .unwrap();
        match send(Path::new("/usr/bin/false"), "alice", "x", "123456") {
            Err(DeliveryError::Failed(status)) => assert_eq!(status, "exit status: 1"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            send(Path::new("bin/true"), "alice", "x", "123456"),
            Err(DeliveryError::Unsafe(_))
        ));
    }

    /// What the command gets: argv `[command, user, target]` (spaces and
    /// shell characters passed as they are), `/` as working directory, only
    /// PATH in the environment, the code on stdin, and its own exit status.
    #[test]
    fn command_runs_in_root_with_arguments_env_and_code() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::store::testdir::scratch("deliver-env");
        let out = dir.join("out");
        let script = dir.join("send.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n{{ echo \"argc=$#\"; echo \"0=$0\"; echo \"1=$1\"; echo \"2=$2\"; echo \"cwd=$(pwd)\"; env | sort; read -r code; echo \"code=$code\"; }} > {}\nexit 3\n",
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
        match send(&script, "alice", "+1 555 $(id) `x`", "654321") {
            Err(DeliveryError::Failed(status)) => assert_eq!(status, "exit status: 3"),
            other => panic!("{other:?}"),
        }
        let got = std::fs::read_to_string(&out).unwrap();
        let mut lines: Vec<&str> = got.lines().collect();
        // The test script is itself a dash script, and dash exports PWD.
        lines.retain(|l| *l != "PWD=/");
        assert_eq!(
            lines,
            [
                "argc=2",
                &format!("0={}", script.display()),
                "1=alice",
                "2=+1 555 $(id) `x`",
                "cwd=/",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "code=654321",
            ]
        );
    }
}
