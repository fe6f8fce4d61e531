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
pub fn send(command: &Path, user: &str, target: &str, code: &str) -> Result<(), DeliveryError> {
    store::check_executable(command).map_err(DeliveryError::Unsafe)?;
    let mut child = Command::new(command)
        .arg(user)
        .arg(target)
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| DeliveryError::Spawn(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A command that does not read its input gets EPIPE: not our failure.
        let _ = stdin.write_all(format!("{code}\n").as_bytes());
    }
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
