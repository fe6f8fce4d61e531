//! Sending a code by message through `[delivery] command` (an SMS gateway,
//! a chat bot, e-mail). The command is run with the user name and the target
//! as arguments and the code on standard input — never in argv or the
//! environment, which other users can read in /proc — with an empty
//! environment, and killed if it does not finish in time.

use std::ffi::CString;
use std::fmt;
use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
use nix::sys::signal::{SigSet, Signal, kill};
use nix::sys::stat::Mode;
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::{Pid, pipe2};

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

/// Runs `command USER TARGET` with `code` on standard input.
///
/// Started with `posix_spawn` rather than `std::process::Command`: the
/// module is loaded by every `pam_start`, and with `-z now` the loader binds
/// each libc symbol the module names; Command alone named ~38 of them
/// (fork, execvp, setgroups, ...), ~38,000 instructions per host process
/// (bench/results.md, "Changes"). What the child gets is unchanged: the
/// absolute command, argv `[command, user, target]`, only `PATH` in the
/// environment, `/` as working directory, the code on a pipe as stdin,
/// /dev/null as stdout and stderr, an empty signal mask and SIGPIPE at its
/// default.
pub fn send(command: &Path, user: &str, target: &str, code: &str) -> Result<(), DeliveryError> {
    store::check_executable(command).map_err(DeliveryError::Unsafe)?;
    let io_error = |e: std::io::Error| DeliveryError::Spawn(e.to_string());
    let spawn_error = |e: Errno| io_error(e.into());
    let text = |s: &[u8]| {
        CString::new(s).map_err(|_| DeliveryError::Spawn("NUL byte in an argument".into()))
    };
    let argv = [
        text(command.as_os_str().as_bytes())?,
        text(user.as_bytes())?,
        text(target.as_bytes())?,
    ];
    let envp = [c"PATH=/usr/sbin:/usr/bin:/sbin:/bin"];
    // Both ends close on exec; the child gets the read end as fd 0 only.
    let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC).map_err(spawn_error)?;
    let read_end = above_stdio(read_end).map_err(io_error)?;
    let null = open(
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
    add_chdir_root(&mut actions).map_err(spawn_error)?;
    let mut attr = PosixSpawnAttr::init().map_err(spawn_error)?;
    let mut sigpipe = SigSet::empty();
    sigpipe.add(Signal::SIGPIPE);
    attr.set_sigmask(&SigSet::empty()).map_err(spawn_error)?;
    attr.set_sigdefault(&sigpipe).map_err(spawn_error)?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK | PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF,
    )
    .map_err(spawn_error)?;
    let child = posix_spawn(command, &actions, &attr, &argv, &envp).map_err(spawn_error)?;
    drop((read_end, null));
    // A command that does not read its input gets EPIPE: not our failure.
    let mut stdin = std::fs::File::from(write_end);
    let mut line = String::with_capacity(code.len() + 1);
    line.push_str(code);
    line.push('\n');
    let _ = stdin.write_all(line.as_bytes());
    drop(stdin);
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

/// The child starts in `/`, not in the host's working directory (which
/// may be a user's). nix 0.31 has no wrapper for this one file action.
#[allow(unsafe_code)]
fn add_chdir_root(actions: &mut PosixSpawnFileActions) -> nix::Result<()> {
    const _: () = assert!(
        size_of::<PosixSpawnFileActions>() == size_of::<libc::posix_spawn_file_actions_t>()
            && align_of::<PosixSpawnFileActions>()
                == align_of::<libc::posix_spawn_file_actions_t>()
    );
    let raw = std::ptr::from_mut(actions).cast::<libc::posix_spawn_file_actions_t>();
    // SAFETY: nix 0.31 declares PosixSpawnFileActions `#[repr(transparent)]`
    // over an initialised `posix_spawn_file_actions_t` (checked in size and
    // alignment above), borrowed mutably here for the call only; the path is
    // a NUL-terminated static string, copied by glibc.
    let res = unsafe { libc::posix_spawn_file_actions_addchdir_np(raw, c"/".as_ptr()) };
    Errno::result(res).map(drop)
}
