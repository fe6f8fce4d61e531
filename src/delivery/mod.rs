//! Sending a code by message through `[delivery] command` (an SMS gateway,
//! a chat bot, e-mail), in two halves:
//!
//! - [`request`], in the PAM module: it connects to `[delivery] socket`,
//!   sends `USER\nTARGET\nCODE\n` and waits for one answer line, `ok` or
//!   `error: WHY`. It never starts a process inside sshd, sudo or login.
//! - [`serve`], the delivery service (`twofactor deliver`), which
//!   pam-twofactor-deliver.socket starts for each connection (inetd style,
//!   `Accept=yes`, the connection as stdin and stdout). It reads the
//!   request, checks it, and runs the command with the user name and the
//!   target as arguments and the code on standard input — never in argv or
//!   the environment, which other users can read in /proc — with only PATH
//!   in its environment, in `/`, and killed if it does not finish in time.
//!
//! Why a service (bench/results.md, Round 7): every `pam_start` loads the
//! module, and the loader binds every libc symbol the module names;
//! spawning and reaping a process named 15 of them (~14,000 instructions
//! in every host process, whether or not anyone ever gets a code by
//! message). It also keeps the command out of the host's process (its
//! limits, namespaces and signal state), puts the command's stderr in the
//! journal, and lets systemd sandbox it. The user still learns whether the
//! code went out: the module waits for the service's answer.

use std::fmt;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, getsockopt, send, socket,
    sockopt,
};
use nix::unistd::geteuid;
use zeroize::Zeroizing;

use crate::records;
use crate::records::username::Username;
use crate::store::{self, StoreError};

/// How long the command may run.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How long the module waits for the service's answer: the command's
/// time plus a margin for starting the service.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the service looks whether the command has finished.
const POLL: Duration = Duration::from_millis(10);
/// The longest request the service reads, and the longest answer the
/// module reads (a user name, a target of at most 128 characters, a code).
const MAX_MESSAGE: usize = 1024;
/// Codes are 6 to 8 digits (`[totp] digits`).
const CODE_DIGITS: std::ops::RangeInclusive<usize> = 6..=8;

/// Why a code could not be sent.
#[derive(Debug)]
pub enum DeliveryError {
    /// The command or the socket is missing or unsafe (owner, mode, type).
    Unsafe(StoreError),
    /// The request is malformed (service side) or cannot be written
    /// (a newline in a field).
    BadRequest(&'static str),
    /// The command could not be started.
    Spawn(String),
    /// The command exited unsuccessfully.
    Failed(String),
    /// The command did not finish within the timeout and was killed.
    Timeout,
    /// The module could not reach the delivery service.
    Unreachable(String),
    /// The delivery service answered with an error (its text).
    Service(String),
    /// The delivery service did not answer in time.
    NoAnswer,
    /// The delivery service could not read its configuration, or the
    /// configuration names no command.
    Config(String),
    /// The delivery service was connected to by someone other than root.
    Peer(u32),
}

impl fmt::Display for DeliveryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeliveryError::Unsafe(e) => write!(f, "delivery: {e}"),
            DeliveryError::BadRequest(why) => write!(f, "delivery request refused: {why}"),
            DeliveryError::Spawn(e) => write!(f, "delivery command could not start: {e}"),
            DeliveryError::Failed(status) => write!(f, "delivery command failed: {status}"),
            DeliveryError::Timeout => write!(
                f,
                "delivery command did not finish within {} s and was killed",
                TIMEOUT.as_secs()
            ),
            DeliveryError::Unreachable(e) => write!(
                f,
                "delivery service not reachable: {e} (is pam-twofactor-deliver.socket enabled?)"
            ),
            DeliveryError::Service(e) => write!(f, "delivery service: {e}"),
            DeliveryError::NoAnswer => write!(
                f,
                "delivery service did not answer within {} s",
                ANSWER_TIMEOUT.as_secs()
            ),
            DeliveryError::Config(e) => write!(f, "configuration: {e}"),
            DeliveryError::Peer(uid) => {
                write!(f, "refused a request from uid {uid} (only root may ask)")
            }
        }
    }
}

impl std::error::Error for DeliveryError {}

// ------------------------------------------------------------ the module

/// Asks the delivery service on `socket` to send `code` to `target` for
/// `user`, and waits for its answer (at most [`ANSWER_TIMEOUT`]).
///
/// The socket is checked first (`store::check_socket`): whoever listens
/// there receives codes. Every wait (connecting while the service's
/// listen backlog is full, sending, reading the answer) is bounded by the
/// socket's timeouts, set to what is left of the deadline, so a stuck
/// service cannot hold a login past it. The request is sent with
/// `MSG_NOSIGNAL`: a service that closed the connection is an error,
/// never a SIGPIPE in the host process.
pub fn request(socket: &Path, user: &str, target: &str, code: &str) -> Result<(), DeliveryError> {
    request_within(socket, user, target, code, ANSWER_TIMEOUT)
}

fn request_within(
    path: &Path,
    user: &str,
    target: &str,
    code: &str,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let mut message = Zeroizing::new(String::with_capacity(
        user.len() + target.len() + code.len() + 3,
    ));
    for field in [user, target, code] {
        if field.is_empty() || field.contains(['\n', '\0']) {
            return Err(DeliveryError::BadRequest("an empty field or a line break"));
        }
        message.push_str(field);
        message.push('\n');
    }
    check_socket(path)?;
    let now = Instant::now();
    let deadline = now.checked_add(timeout).unwrap_or(now);
    let unreachable =
        |e: Errno| DeliveryError::Unreachable(format!("{}: {}", path.display(), e.desc()));
    let lost = |e: Errno| DeliveryError::Service(format!("connection lost: {}", e.desc()));
    let address = UnixAddr::new(path).map_err(unreachable)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(unreachable)?;
    let mut stream = UnixStream::from(fd);
    // Not UnixStream::connect: a blocking connect to a full listen backlog
    // waits for room for as long as SO_SNDTIMEO allows, so the timeout is
    // set before connecting.
    loop {
        stream
            .set_write_timeout(Some(remaining(deadline)?))
            .map_err(|e| unreachable(store::errno_of(&e)))?;
        match connect(stream.as_raw_fd(), &address) {
            Ok(()) => break,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Err(DeliveryError::NoAnswer),
            Err(e) => return Err(unreachable(e)),
        }
    }
    let mut rest = message.as_bytes();
    while !rest.is_empty() {
        stream
            .set_write_timeout(Some(remaining(deadline)?))
            .map_err(|e| lost(store::errno_of(&e)))?;
        // MSG_NOSIGNAL: a service that closed the connection must be an
        // error (EPIPE), never a SIGPIPE, which kills a host process at its
        // default disposition (sshd). std's UnixStream writes with it only
        // since rust-lang/rust#140005 (2025), newer than our rust-version.
        match send(stream.as_raw_fd(), rest, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => rest = rest.get(n..).unwrap_or_default(),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Err(DeliveryError::NoAnswer),
            Err(e) => return Err(lost(e)),
        }
    }
    let mut answer = [0u8; MAX_MESSAGE];
    let mut len = 0;
    while len < answer.len() && !answer[..len].contains(&b'\n') {
        stream
            .set_read_timeout(Some(remaining(deadline)?))
            .map_err(|e| lost(store::errno_of(&e)))?;
        match stream.read(&mut answer[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Err(DeliveryError::NoAnswer),
            Err(e) => return Err(lost(store::errno_of(&e))),
        }
    }
    parse_answer(&answer[..len])
}

/// What is left until `deadline`; nothing left is
/// [`DeliveryError::NoAnswer`] (and a zero socket timeout would mean none).
fn remaining(deadline: Instant) -> Result<Duration, DeliveryError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(DeliveryError::NoAnswer);
    }
    Ok(left)
}

/// [`store::check_socket`], with a missing socket told apart: nothing
/// listens there ([`DeliveryError::Unreachable`]) rather than a socket
/// someone else could have put there ([`DeliveryError::Unsafe`]). Also
/// what `twofactor check` asks.
pub fn check_socket(path: &Path) -> Result<(), DeliveryError> {
    store::check_socket(path).map_err(|e| match e {
        StoreError::Io {
            errno: Errno::ENOENT,
            ..
        } => DeliveryError::Unreachable(format!("{}: no such socket", path.display())),
        e => DeliveryError::Unsafe(e),
    })
}

/// What the prompt shows of a target (`A code was sent to …`): anyone who
/// has the password sees it, so only enough for the user to recognise it.
///
/// - A phone number (`+`, then digits and ` -.()`, at least 7 digits)
///   keeps the `+`, up to 4 leading digits and the last 4, with at least 3
///   hidden: `+15555550100` → `+1555***0100`, `+1 555 0100` → `+1***0100`.
/// - An e-mail address (`LOCAL@DOMAIN`, both non-empty; the last `@`)
///   keeps the first character of a local part of 2 or more characters and
///   the whole domain: `alice@example.org` → `a***@example.org`.
/// - Anything else (a chat id) keeps at most its last 4 characters and
///   never more than half: `123456789` → `***6789`; 4 characters or fewer
///   are only `***`.
///
/// Counts characters, not bytes: any UTF-8 target is safe.
pub fn mask_target(target: &str) -> String {
    if let Some(masked) = mask_phone(target).or_else(|| mask_email(target)) {
        return masked;
    }
    let count = target.chars().count();
    if count <= 4 {
        return HIDDEN.to_string();
    }
    let keep = (count / 2).min(4);
    let tail: String = target.chars().skip(count.saturating_sub(keep)).collect();
    format!("{HIDDEN}{tail}")
}

/// What [`mask_target`] puts in place of what it hides. ASCII: the ssh
/// client escapes other bytes of a prompt (`\342\200\242` for a bullet)
/// when its locale is not UTF-8, as the real-sshd test showed.
const HIDDEN: &str = "***";

/// [`mask_target`] of a phone number; `None` if `target` is not one.
fn mask_phone(target: &str) -> Option<String> {
    /// Digits that stay visible at the end.
    const LAST: usize = 4;
    /// Digits that are always hidden.
    const MIN_HIDDEN: usize = 3;
    let number = target.strip_prefix('+')?;
    if !number
        .chars()
        .all(|c| c.is_ascii_digit() || " -.()".contains(c))
    {
        return None;
    }
    let digits: Vec<char> = number.chars().filter(char::is_ascii_digit).collect();
    let shown = digits.len().checked_sub(LAST + MIN_HIDDEN)?.min(4);
    let head: String = digits.iter().take(shown).collect();
    let tail: String = digits
        .iter()
        .skip(digits.len().saturating_sub(LAST))
        .collect();
    Some(format!("+{head}{HIDDEN}{tail}"))
}

/// [`mask_target`] of an e-mail address; `None` if `target` is not one.
fn mask_email(target: &str) -> Option<String> {
    let (local, domain) = target.rsplit_once('@')?;
    if local.is_empty() || domain.is_empty() {
        return None;
    }
    let mut chars = local.chars();
    let first = match (chars.next(), chars.next()) {
        (Some(first), Some(_)) => String::from(first),
        _ => String::new(),
    };
    Some(format!("{first}{HIDDEN}@{domain}"))
}

/// `ok\n` is success; `error: WHY\n` is the service's failure, kept as
/// printable ASCII (it goes into syslog); anything else is a failure too.
fn parse_answer(answer: &[u8]) -> Result<(), DeliveryError> {
    let line = match answer.iter().position(|&b| b == b'\n') {
        Some(end) => &answer[..end],
        None => {
            return Err(DeliveryError::Service(
                "closed the connection without an answer".into(),
            ));
        }
    };
    if line == b"ok" {
        return Ok(());
    }
    let why = line
        .strip_prefix(b"error: ")
        .unwrap_or(b"unexpected answer");
    let why = why
        .iter()
        .take(300)
        .map(|&b| {
            if (b' '..=b'~').contains(&b) {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect();
    Err(DeliveryError::Service(why))
}

// ----------------------------------------------------------- the service

/// One request, checked: a valid user name, a valid target, a code of
/// 6 to 8 digits.
pub struct Request {
    pub user: Username,
    pub target: String,
    pub code: Zeroizing<String>,
}

/// The code is a secret until used: never in a debug print.
impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("user", &self.user)
            .field("target", &self.target)
            .field("code", &"<redacted>")
            .finish()
    }
}

/// Reads one request (at most [`MAX_MESSAGE`] bytes, up to its third line
/// break) from `input` and checks every field; the code is wiped on drop.
fn read_request(input: &mut impl Read) -> Result<Request, DeliveryError> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_MESSAGE]);
    let mut len = 0;
    let breaks = |b: &[u8]| b.iter().filter(|&&c| c == b'\n').count();
    while len < buf.len() && breaks(&buf[..len]) < 3 {
        match input.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(DeliveryError::BadRequest("could not be read")),
        }
    }
    let text =
        std::str::from_utf8(&buf[..len]).map_err(|_| DeliveryError::BadRequest("not UTF-8"))?;
    let mut lines = text.split_terminator('\n');
    let (Some(user), Some(target), Some(code), None) =
        (lines.next(), lines.next(), lines.next(), lines.next())
    else {
        return Err(DeliveryError::BadRequest("not three lines"));
    };
    if !text.ends_with('\n') {
        return Err(DeliveryError::BadRequest("not three lines"));
    }
    let user = Username::parse(user).map_err(|_| DeliveryError::BadRequest("bad user name"))?;
    if !records::valid_target(target) {
        return Err(DeliveryError::BadRequest("bad target"));
    }
    if !CODE_DIGITS.contains(&code.len()) || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DeliveryError::BadRequest("bad code"));
    }
    Ok(Request {
        user,
        target: target.to_string(),
        code: Zeroizing::new(code.to_string()),
    })
}

/// The delivery service's whole job for one connection: read a request
/// from `input`, run `command` (`[delivery] command`, or why it is not
/// known) for it, and write the answer line to `output`. Returns what
/// happened, for the service's own log.
pub fn serve(
    command: Result<Option<PathBuf>, DeliveryError>,
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<Request, DeliveryError> {
    let result = command.and_then(|command| {
        let request = read_request(input)?;
        let command =
            command.ok_or_else(|| DeliveryError::Config("no [delivery] command is set".into()))?;
        run(
            &command,
            request.user.as_str(),
            &request.target,
            &request.code,
        )?;
        Ok(request)
    });
    let answer = match &result {
        Ok(_) => "ok\n".to_string(),
        Err(e) => format!("error: {e}\n"),
    };
    // The module may have given up; its answer is then nobody's business.
    let _ = output
        .write_all(answer.as_bytes())
        .and_then(|()| output.flush());
    result
}

/// Who may ask the service: on a socket, only a peer running as root (or
/// as the service's own user, as tests do); the unit's socket is 0600
/// root already, this holds if it is ever loosened. Not a socket means a
/// run by hand, with the caller's own rights.
pub fn check_peer(connection: impl AsFd) -> Result<(), DeliveryError> {
    match getsockopt(&connection, sockopt::PeerCredentials) {
        Ok(peer) if peer.uid() == 0 || peer.uid() == geteuid().as_raw() => Ok(()),
        Ok(peer) => Err(DeliveryError::Peer(peer.uid())),
        Err(Errno::ENOTSOCK) => Ok(()),
        Err(e) => Err(DeliveryError::Config(format!(
            "cannot tell who is asking: {}",
            e.desc()
        ))),
    }
}

/// The PATH the command gets, and the only variable in its environment.
const PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs `command USER TARGET` with `code` on standard input, in the
/// delivery service: in `/` (never a user's directory), with only `PATH` in
/// the environment, /dev/null as stdout (the service's stdout is the
/// connection to the module) and the service's stderr (the journal under
/// systemd) as stderr. std resets the signal mask and SIGPIPE's disposition
/// in the child. The command is checked like every file the module trusts
/// (`check_executable`) and killed after [`TIMEOUT`].
///
/// The code goes into the pipe *before* the command starts: it fits in the
/// pipe buffer, and while we hold the read end no write can fail, so a
/// command that exits without reading cannot make us meet EPIPE.
fn run(command: &Path, user: &str, target: &str, code: &str) -> Result<(), DeliveryError> {
    store::check_executable(command).map_err(DeliveryError::Unsafe)?;
    let spawn_error = |e: std::io::Error| DeliveryError::Spawn(e.to_string());
    let (reader, writer) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| spawn_error(e.into()))?;
    let mut writer = std::fs::File::from(writer);
    let mut line = Zeroizing::new(String::with_capacity(code.len() + 1));
    line.push_str(code);
    line.push('\n');
    writer.write_all(line.as_bytes()).map_err(spawn_error)?;
    drop(writer);
    let mut child = Command::new(command)
        .args([user, target])
        .env_clear()
        .env("PATH", PATH)
        .current_dir("/")
        .stdin(reader)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(spawn_error)?;
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return exit_result(status),
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

/// Success for exit status 0; otherwise the status or the signal, by name.
fn exit_result(status: ExitStatus) -> Result<(), DeliveryError> {
    match (status.code(), status.signal()) {
        (Some(0), _) => Ok(()),
        (Some(code), _) => Err(DeliveryError::Failed(format!("exit status: {code}"))),
        (None, Some(number)) => Err(DeliveryError::Failed(format!(
            "signal: {number} ({})",
            Signal::try_from(number).map_or("unknown", Signal::as_str)
        ))),
        (None, None) => Err(DeliveryError::Failed(status.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;
    use std::thread::JoinHandle;

    /// A listener at `dir/name` that takes one connection, reads the whole
    /// request (three lines) and answers `answer` (`None`: never answers,
    /// holds the connection for `hold`). Returns what it read.
    fn one_shot(
        dir: &Path,
        name: &str,
        answer: Option<&'static [u8]>,
        hold: Duration,
    ) -> (PathBuf, JoinHandle<Vec<u8>>) {
        let path = dir.join(name);
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            let mut byte = [0u8; 1];
            while got.iter().filter(|&&b| b == b'\n').count() < 3 {
                if stream.read(&mut byte).unwrap() == 0 {
                    break;
                }
                got.push(byte[0]);
            }
            match answer {
                Some(answer) => stream.write_all(answer).unwrap(),
                None => std::thread::sleep(hold),
            }
            got
        });
        (path, handle)
    }

    /// The module sends `USER\nTARGET\nCODE\n` and reads the answer line:
    /// `ok` is success, `error: WHY` is the service's failure (printable
    /// ASCII only), a closed connection or anything else is a failure.
    #[test]
    fn request_sends_three_lines_and_reads_the_answer() {
        let dir = crate::store::testdir::scratch("deliver-request");
        let cases: [(&[u8], Result<(), &str>); 5] = [
            (b"ok\n", Ok(())),
            (
                b"error: delivery command failed: exit status: 1\n",
                Err("delivery command failed: exit status: 1"),
            ),
            (b"error: bad\x1b[31m\n", Err("bad?[31m")),
            (b"", Err("closed the connection without an answer")),
            (b"okay\n", Err("unexpected answer")),
        ];
        for (i, (answer, want)) in cases.into_iter().enumerate() {
            let answer: &'static [u8] = Box::leak(answer.to_vec().into_boxed_slice());
            let (path, server) = one_shot(&dir, &format!("s{i}"), Some(answer), Duration::ZERO);
            let got = request(&path, "alice", "+1 555 0100", "123456");
            assert_eq!(server.join().unwrap(), b"alice\n+1 555 0100\n123456\n");
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(DeliveryError::Service(why)), Err(want)) => assert_eq!(why, want),
                (got, want) => panic!("{answer:?}: {got:?}, want {want:?}"),
            }
        }
    }

    /// The prompt shows a phone number's `+`, up to 4 leading and the last
    /// 4 digits (at least 3 hidden), an e-mail address's first character and
    /// domain, and of anything else at most the last 4 characters and never
    /// more than half; short targets only `***`. Non-ASCII never panics.
    #[test]
    fn targets_are_masked() {
        let cases = [
            ("+15555550100", "+1555***0100"),
            ("+1 555 0100", "+1***0100"),
            ("+44 (20) 7946-0958", "+4420***0958"),
            ("+12345678", "+1***5678"),
            ("+1234567", "+***4567"),
            ("+123456", "***456"),
            ("+1", "***"),
            ("alice@example.org", "a***@example.org"),
            ("a@example.org", "***@example.org"),
            ("\"a@b\"@example.org", "\"***@example.org"),
            ("ünïcode@exämple.org", "ü***@exämple.org"),
            ("@example.org", "***.org"),
            ("alice@", "***ce@"),
            ("123456789", "***6789"),
            ("-1001234567890", "***7890"),
            ("@channel", "***nnel"),
            ("12345", "***45"),
            ("日本語のチャット", "***チャット"),
            ("abcd", "***"),
            ("ü", "***"),
            ("", "***"),
        ];
        for (target, want) in cases {
            assert_eq!(mask_target(target), want, "{target:?}");
        }
        // Whatever the target, some of it is hidden.
        let mut targets: Vec<String> = cases.iter().map(|(t, _)| t.to_string()).collect();
        for n in 1..40 {
            targets.push(format!("+{}", "7".repeat(n)));
            targets.push("ü".repeat(n));
            targets.push(format!("{}@{}", "é".repeat(n), "x".repeat(n)));
        }
        for target in targets.iter().filter(|t| !t.is_empty()) {
            let masked = mask_target(target);
            assert!(masked.contains("***"), "{target:?}: {masked:?}");
            assert!(!masked.contains(target.as_str()), "{target:?}: {masked:?}");
        }
    }

    /// A service that never answers is given up on after the timeout.
    #[test]
    fn a_silent_service_times_out() {
        let dir = crate::store::testdir::scratch("deliver-silent");
        let (path, server) = one_shot(&dir, "s", None, Duration::from_millis(700));
        let started = Instant::now();
        let got = request_within(&path, "alice", "x", "123456", Duration::from_millis(200));
        assert!(matches!(got, Err(DeliveryError::NoAnswer)), "{got:?}");
        assert!(started.elapsed() < Duration::from_millis(700));
        server.join().unwrap();
    }

    /// A service whose listen backlog is full (it accepts nothing) is
    /// waited for until the deadline and no longer: a blocking connect
    /// waits for room only as long as the socket's send timeout allows.
    #[test]
    fn a_full_backlog_is_waited_for_only_until_the_deadline() {
        use nix::sys::socket::{Backlog, bind, listen};
        let dir = crate::store::testdir::scratch("deliver-backlog");
        let path = dir.join("s");
        let address = UnixAddr::new(&path).unwrap();
        let listener = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        bind(listener.as_raw_fd(), &address).unwrap();
        listen(&listener, Backlog::new(0).unwrap()).unwrap();
        // A backlog of 0 holds one connection, which nobody accepts.
        let queued = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        let _ = connect(queued.as_raw_fd(), &address);
        let (done, result) = std::sync::mpsc::channel();
        let started = Instant::now();
        std::thread::spawn(move || {
            let timeout = Duration::from_millis(300);
            let _ = done.send(request_within(&path, "alice", "x", "123456", timeout));
        });
        let got = result
            .recv_timeout(Duration::from_secs(10))
            .expect("the request was still waiting to connect after 10 s");
        assert!(matches!(got, Err(DeliveryError::NoAnswer)), "{got:?}");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    /// A service that closes the connection before the request is written
    /// is an error for the module, never a SIGPIPE: sshd, sudo and login
    /// leave SIGPIPE at its default disposition, which kills the process.
    /// The test harness ignores SIGPIPE, so the request runs in a child,
    /// this test binary again (`closed_peer_helper_requests`), which
    /// restores the default first; the child must exit normally, having
    /// printed what `request` returned.
    #[test]
    fn a_closed_connection_is_an_error_not_a_sigpipe() {
        let dir = crate::store::testdir::scratch("deliver-sigpipe");
        let path = dir.join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || drop(listener.accept().unwrap()));
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "delivery::tests::closed_peer_helper_requests",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CLOSED_PEER_SOCKET, &path)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        // Unblocks the accept if the child never connected.
        let _ = UnixStream::connect(&path);
        server.join().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.signal(),
            None,
            "the request was killed by signal {:?} ({}); stdout: {stdout} stderr: {stderr}",
            out.status.signal(),
            out.status
                .signal()
                .and_then(|n| Signal::try_from(n).ok())
                .map_or("?", Signal::as_str),
        );
        assert!(
            out.status.success(),
            "{}; stdout: {stdout} stderr: {stderr}",
            out.status
        );
        assert!(
            stdout.contains(&format!(
                "{CLOSED_PEER_RESULT}Err(Service(\"connection lost: "
            )),
            "the helper did not run the request: {stdout}"
        );
    }

    /// Where `closed_peer_helper_requests` connects to.
    const CLOSED_PEER_SOCKET: &str = "PAM_TWOFACTOR_TEST_CLOSED_PEER_SOCKET";
    /// What `closed_peer_helper_requests` prints before its result.
    const CLOSED_PEER_RESULT: &str = "closed peer request: ";

    /// Not a test of its own: `a_closed_connection_is_an_error_not_a_sigpipe`
    /// runs it in a child process. SIGPIPE at its default disposition, as
    /// in sshd; a request of 4 MiB, more than a socket buffer holds, so the
    /// write is still going on when the service closes the connection.
    #[test]
    #[ignore = "helper of a_closed_connection_is_an_error_not_a_sigpipe"]
    #[allow(unsafe_code)]
    fn closed_peer_helper_requests() {
        use nix::sys::signal::{SigHandler, signal};
        let Some(path) = std::env::var_os(CLOSED_PEER_SOCKET) else {
            panic!("a helper process: a_closed_connection_is_an_error_not_a_sigpipe runs it");
        };
        // SAFETY: SIG_DFL installs no handler; this child process runs only
        // this test, and nothing in it relies on SIGPIPE being ignored.
        unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.unwrap();
        let target = "9".repeat(4 << 20);
        let got = request(Path::new(&path), "alice", &target, "123456");
        println!("{CLOSED_PEER_RESULT}{got:?}");
    }

    /// Nothing is sent to a socket anyone but root could have put there,
    /// nor to a missing socket, a symlink or a file; a field with a line
    /// break is refused before connecting.
    #[test]
    fn unsafe_or_missing_sockets_get_nothing() {
        let dir = crate::store::testdir::scratch("deliver-unsafe-socket");
        let send = |path: &Path| request_within(path, "alice", "x", "123456", Duration::ZERO);
        match send(&dir.join("missing")) {
            Err(DeliveryError::Unreachable(why)) => {
                assert!(why.ends_with("no such socket"), "{why}")
            }
            other => panic!("{other:?}"),
        }
        let file = dir.join("file");
        std::fs::write(&file, "").unwrap();
        let open_dir = dir.join("open");
        std::fs::create_dir(&open_dir).unwrap();
        let _in_open_dir = UnixListener::bind(open_dir.join("s")).unwrap();
        std::fs::set_permissions(&open_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let loose = dir.join("loose");
        let _loose = UnixListener::bind(&loose).unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o666)).unwrap();
        let link = dir.join("link");
        let _target = UnixListener::bind(dir.join("target")).unwrap();
        std::os::unix::fs::symlink(dir.join("target"), &link).unwrap();
        for (path, want) in [
            (file, "is not a socket"),
            (open_dir.join("s"), "mode 0777"),
            (loose, "mode 0666"),
            (link, "is a symbolic link"),
        ] {
            match send(&path) {
                Err(DeliveryError::Unsafe(e)) => assert!(e.to_string().contains(want), "{e}"),
                other => panic!("{}: {other:?}", path.display()),
            }
        }
        assert!(matches!(
            request_within(
                &dir.join("target"),
                "alice",
                "x\ny",
                "123456",
                Duration::ZERO
            ),
            Err(DeliveryError::BadRequest(_))
        ));
    }

    /// The service reads exactly three valid lines; anything else is
    /// refused without running anything.
    #[test]
    fn requests_are_checked() {
        let read = |text: &[u8]| read_request(&mut &text[..]);
        let ok = read(b"alice\n+1 555 0100\n12345678\n").unwrap();
        assert!(!format!("{ok:?}").contains("12345678"), "{ok:?}");
        assert_eq!(
            (ok.user.as_str(), ok.target.as_str(), ok.code.as_str()),
            ("alice", "+1 555 0100", "12345678")
        );
        for (text, want) in [
            (&b"alice\n+1\n"[..], "not three lines"),
            (b"alice\n+1\n123456", "not three lines"),
            (b"alice\n+1\n123456\nmore\n", "not three lines"),
            (b"../root\n+1\n123456\n", "bad user name"),
            (b"alice\n\n123456\n", "bad target"),
            (b"alice\n+1\x07\n123456\n", "bad target"),
            (b"alice\n+1\n12345\n", "bad code"),
            (b"alice\n+1\n123456789\n", "bad code"),
            (b"alice\n+1\n12345a\n", "bad code"),
            (b"alice\n+\xff\n123456\n", "not UTF-8"),
        ] {
            match read(text) {
                Err(DeliveryError::BadRequest(why)) => assert_eq!(why, want, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let long = format!("alice\n{}\n123456\n", "9".repeat(2000));
        assert!(matches!(
            read(long.as_bytes()),
            Err(DeliveryError::BadRequest(_))
        ));
    }

    /// The service answers `ok` when the command succeeded, and `error:`
    /// with the reason otherwise (no command configured, a bad request).
    #[test]
    fn serve_answers_one_line() {
        let serve_text = |command: Option<&str>, text: &[u8]| {
            let mut out = Vec::new();
            let result = serve(Ok(command.map(PathBuf::from)), &mut &text[..], &mut out);
            (result.is_ok(), String::from_utf8(out).unwrap())
        };
        let good = b"alice\n+1\n123456\n";
        assert_eq!(
            serve_text(Some("/usr/bin/true"), good),
            (true, "ok\n".into())
        );
        assert_eq!(
            serve_text(Some("/usr/bin/false"), good),
            (
                false,
                "error: delivery command failed: exit status: 1\n".into()
            )
        );
        assert_eq!(
            serve_text(None, good),
            (
                false,
                "error: configuration: no [delivery] command is set\n".into()
            )
        );
        assert_eq!(
            serve_text(Some("/usr/bin/true"), b"alice\n"),
            (
                false,
                "error: delivery request refused: not three lines\n".into()
            )
        );
        let mut out = Vec::new();
        let refused = serve(Err(DeliveryError::Peer(1000)), &mut &good[..], &mut out);
        assert!(matches!(refused, Err(DeliveryError::Peer(1000))));
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "error: refused a request from uid 1000 (only root may ask)\n"
        );
    }

    /// A connection from our own user is accepted, and so is a pipe (a run
    /// by hand); a connection from another uid (this test binary run again
    /// as `nobody`, see `peer_helper_connects`) is refused.
    #[test]
    fn peers_of_our_own_user_may_ask() {
        let (a, _b) = UnixStream::pair().unwrap();
        check_peer(&a).unwrap();
        let (reader, _writer) = nix::unistd::pipe().unwrap();
        check_peer(&reader).unwrap();
        if !geteuid().is_root() {
            // Straight to fd 2 in one write: libtest captures eprintln!.
            let _ = std::io::stderr().write_all(
                b"\n*** SKIPPED part of peers_of_our_own_user_may_ask: connecting as \
                  another uid needs root\n",
            );
            return;
        }
        use std::os::unix::process::CommandExt;
        let dir = crate::store::testdir::scratch("deliver-peer");
        let _cleanup = RemoveOnDrop(dir.clone());
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        // nobody runs a copy in the 0755 scratch directory: the checkout,
        // and so this binary, may sit in a 0700 directory (TESTING.md,
        // "Clones anywhere").
        let exe = dir.join("test-binary");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.join("s");
        let listener = UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
        let mut helper = Command::new(&exe)
            .args([
                "--exact",
                "delivery::tests::peer_helper_connects",
                "--ignored",
            ])
            .env(PEER_SOCKET, &path)
            .current_dir(&dir)
            .uid(65534)
            .gid(65534)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let (stream, _) = listener.accept().unwrap();
        let refused = check_peer(&stream);
        drop(stream);
        assert!(helper.wait().unwrap().success());
        assert!(
            matches!(refused, Err(DeliveryError::Peer(65534))),
            "{refused:?}"
        );
    }

    /// Removes a scratch directory when the test ends, passed or not (the
    /// copy of the test binary in it is large, and /run is memory).
    struct RemoveOnDrop(PathBuf);

    impl Drop for RemoveOnDrop {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// Where `peer_helper_connects` connects to.
    const PEER_SOCKET: &str = "PAM_TWOFACTOR_TEST_PEER_SOCKET";

    /// Not a test of its own: `peers_of_our_own_user_may_ask` runs it as
    /// `nobody` to make a connection from another uid.
    #[test]
    #[ignore = "helper of peers_of_our_own_user_may_ask"]
    fn peer_helper_connects() {
        let Some(path) = std::env::var_os(PEER_SOCKET) else {
            panic!("a helper process: peers_of_our_own_user_may_ask runs it");
        };
        let mut stream = UnixStream::connect(path).unwrap();
        let _ = stream.read(&mut [0u8; 1]);
    }

    /// A command that exits at once without reading the code is a success
    /// (the code was already in the pipe); a failing one reports its status.
    #[test]
    fn exit_status_decides() {
        run(
            Path::new("/usr/bin/true"),
            "alice",
            "+15555550100",
            "123456",
        )
        .unwrap();
        match run(Path::new("/usr/bin/false"), "alice", "x", "123456") {
            Err(DeliveryError::Failed(status)) => assert_eq!(status, "exit status: 1"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            run(Path::new("bin/true"), "alice", "x", "123456"),
            Err(DeliveryError::Unsafe(_))
        ));
    }

    /// What the command gets: argv `[command, user, target]` (spaces and
    /// shell characters passed as they are), `/` as working directory, only
    /// PATH in the environment, the code on stdin, and its own exit status;
    /// a command killed by a signal is reported by the signal's name.
    #[test]
    fn command_runs_in_root_with_arguments_env_and_code() {
        let dir = crate::store::testdir::scratch("deliver-env");
        let out = dir.join("out");
        let script = dir.join("send.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n{{ echo \"argc=$#\"; echo \"0=$0\"; echo \"1=$1\"; echo \"2=$2\"; echo \"cwd=$(pwd)\"; env | sort; read -r code; echo \"code=$code\"; }} > {}\n[ \"$2\" = kill ] && kill -TERM $$\nexit 3\n",
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
        match run(&script, "alice", "+1 555 $(id) `x`", "654321") {
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
        match run(&script, "alice", "kill", "654321") {
            Err(DeliveryError::Failed(status)) => assert_eq!(status, "signal: 15 (SIGTERM)"),
            other => panic!("{other:?}"),
        }
    }
}
