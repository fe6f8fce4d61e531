//! Best-effort syslog (facility authpriv): ident `pam_twofactor` for the
//! module, `twofactor` for the admin command's record of changes.
//!
//! We write the datagram ourselves instead of calling openlog(3)/syslog(3):
//! openlog changes the host process's (sshd's, sudo's) own ident, and the
//! socket is non-blocking so a full or missing syslog never delays or
//! changes a login (../shared/SECURITY.md, "Inside the host process").

use std::os::fd::AsRawFd;

use nix::sys::socket::{AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, sendto, socket};

/// Where syslog listens.
const SOCKET: &str = "/dev/log";
/// The module's ident.
const IDENT: &str = "pam_twofactor";
/// The admin command's ident.
pub const COMMAND_IDENT: &str = "twofactor";
const AUTHPRIV: u8 = 10;

/// Message severities we use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Something is misconfigured or broken: the admin must act.
    Error,
    /// An authentication failure or a lockout.
    Warning,
    /// A change an admin made (the audit trail).
    Notice,
    /// A success or an expected skip.
    Info,
    /// Extra detail, only with the `debug` module argument.
    Debug,
}

impl Severity {
    fn code(self) -> u8 {
        match self {
            Severity::Error => 3,
            Severity::Warning => 4,
            Severity::Notice => 5,
            Severity::Info => 6,
            Severity::Debug => 7,
        }
    }
}

/// Formats one syslog line: `<PRI>pam_twofactor[PID]: message`, the
/// message given in parts joined without separators.
pub fn format_line(severity: Severity, parts: &[&str]) -> String {
    format_line_as(IDENT, severity, parts)
}

/// `format_line` with another ident.
fn format_line_as(ident: &str, severity: Severity, parts: &[&str]) -> String {
    let priority = u32::from(AUTHPRIV) * 8 + u32::from(severity.code());
    let mut line = format!("<{priority}>{ident}[{}]: ", std::process::id());
    line.extend(parts.iter().copied());
    line
}

/// Sends one message; every error is ignored (logging is best effort).
pub fn send(severity: Severity, message: &str) {
    send_parts(severity, &[message]);
}

/// Sends one message given in parts (see `format_line`).
pub fn send_parts(severity: Severity, parts: &[&str]) {
    send_line(&format_line(severity, parts));
}

/// Sends one message under `ident` (the admin command's `COMMAND_IDENT`).
pub fn send_as(ident: &str, severity: Severity, message: &str) {
    send_line(&format_line_as(ident, severity, &[message]));
}

fn send_line(line: &str) {
    // Non-blocking from the start (no FIONBIO ioctl); closed on drop.
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    if let (Ok(socket), Ok(addr)) = (
        socket(AddressFamily::Unix, SockType::Datagram, flags, None),
        UnixAddr::new(SOCKET),
    ) {
        let _ = sendto(
            socket.as_raw_fd(),
            line.as_bytes(),
            &addr,
            MsgFlags::MSG_NOSIGNAL,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The priority is authpriv (10) * 8 + severity, as syslog(3) encodes it.
    #[test]
    fn line_carries_authpriv_priority_and_ident() {
        let line = format_line(Severity::Warning, &["hel", "lo"]);
        assert_eq!(
            line,
            format!("<84>pam_twofactor[{}]: hello", std::process::id())
        );
        assert!(format_line(Severity::Info, &["x"]).starts_with("<86>"));
    }
}
