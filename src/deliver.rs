//! Sending a code by message through `[delivery] command` (an SMS gateway,
//! a chat bot, e-mail). The command is run with the user name and the target
//! as arguments and the code on standard input — never in argv or the
//! environment, which other users can read in /proc — with an empty
//! environment, and killed if it does not finish in time.

use std::fmt;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use nix::unistd::pipe2;
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

/// Runs `command USER TARGET` with `code` on standard input.
///
/// The code goes into the pipe *before* the command starts: it fits in the
/// pipe buffer, and while we hold the read end no write can fail, so the
/// host process never meets EPIPE or SIGPIPE (a command that exits without
/// reading would otherwise kill a host that does not ignore SIGPIPE).
/// `std::process::Command` costs more at load time than a hand-rolled
/// posix_spawn (bench/results.md, "Changes"), but needs no `unsafe` for the
/// working directory; the command is rare and the module's code stays safe.
pub fn send(command: &Path, user: &str, target: &str, code: &str) -> Result<(), DeliveryError> {
    store::check_executable(command).map_err(DeliveryError::Unsafe)?;
    let spawn_error = |e: std::io::Error| DeliveryError::Spawn(e.to_string());
    let (stdin, writer) = pipe2(OFlag::O_CLOEXEC).map_err(|e| spawn_error(e.into()))?;
    let mut writer = std::fs::File::from(writer);
    let mut line = Zeroizing::new(String::with_capacity(code.len() + 1));
    line.push_str(code);
    line.push('\n');
    writer.write_all(line.as_bytes()).map_err(spawn_error)?;
    drop(writer);
    let mut child = Command::new(command)
        .arg(user)
        .arg(target)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir("/")
        .stdin(stdin)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(spawn_error)?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(DeliveryError::Failed(status.to_string())),
            Ok(None) if started.elapsed() < TIMEOUT => std::thread::sleep(POLL),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(DeliveryError::Timeout);
            }
            Err(e) => return Err(DeliveryError::Failed(e.to_string())),
        }
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
}
