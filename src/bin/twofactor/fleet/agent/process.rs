//! The two things the agent does that have no safe call: ignore SIGPIPE,
//! and take over the socket systemd passed as fd 3.

use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::net::UnixListener;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

/// The first fd systemd passes (sd_listen_fds(3): SD_LISTEN_FDS_START).
const LISTEN_FDS_START: RawFd = 3;

/// A module that gives up at its deadline closes its end before our
/// reply; a database on a Unix socket can go away under the client. Either
/// must be an EPIPE error, not the end of the agent (main() restores
/// SIGPIPE's default for the CLI's other commands).
#[allow(unsafe_code)]
pub fn ignore_sigpipe() -> Result<(), String> {
    use nix::sys::signal::{SigHandler, Signal, signal};
    // SAFETY: called before the agent starts any thread; SIG_IGN installs
    // no handler code.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigIgn) }
        .map(drop)
        .map_err(|e| format!("cannot ignore SIGPIPE: {}", e.desc()))
}

/// fd 3 as a listener, close-on-exec. Only called after `LISTEN_PID` named
/// this process and `LISTEN_FDS` said one socket.
#[allow(unsafe_code)]
pub fn listener_from_systemd() -> Result<UnixListener, String> {
    // Check that fd 3 is open before taking ownership of it.
    let flags = fcntl(
        // SAFETY: a borrow for this one call; fcntl on a closed fd fails
        // with EBADF, which is reported.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(LISTEN_FDS_START) },
        FcntlArg::F_GETFD,
    )
    .map_err(|e| format!("fd 3 from systemd: {}", e.desc()))?;
    // SAFETY: systemd passed fd 3 to this process (LISTEN_PID, LISTEN_FDS
    // checked by the caller) and nothing else in the agent opens, uses or
    // closes it: the listener becomes its only owner. Called once.
    let listener = unsafe { UnixListener::from_raw_fd(LISTEN_FDS_START) };
    let mut flags = FdFlag::from_bits_truncate(flags);
    flags.insert(FdFlag::FD_CLOEXEC);
    fcntl(&listener, FcntlArg::F_SETFD(flags))
        .map_err(|e| format!("fd 3 from systemd: {}", e.desc()))?;
    Ok(listener)
}
