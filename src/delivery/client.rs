//! The module's side of delivery: ask the service to send a code, check
//! its socket, and mask the target the prompt shows.

use std::io::{ErrorKind, Read};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, send, socket,
};

use super::DeliveryError;
use super::notice::Notice;
use super::protocol::{self, MAX_MESSAGE};
use crate::store::{self, StoreError};

/// How long the module waits for the service's answer: the command's
/// time plus a margin for starting the service.
pub(super) const ANSWER_TIMEOUT: Duration = Duration::from_secs(15);

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
    let message = protocol::encode_request(user, target, code)?;
    exchange(socket, message.as_bytes(), ANSWER_TIMEOUT)
}

/// How long the module waits for the service to take a notification: the
/// service answers as soon as it has read and checked the request, before
/// running `[notify] command`, and the login it reports on is already
/// decided, so a slow or stuck service must not hold the user long; 2 s
/// still covers socket activation starting the service.
pub(super) const NOTICE_TIMEOUT: Duration = Duration::from_secs(2);

/// Hands `notice` to the delivery service on `socket`, which runs
/// `[notify] command` for it (the module never starts a process). Waits at
/// most [`NOTICE_TIMEOUT`], with every wait bounded as in [`request`].
pub fn send_notice(socket: &Path, notice: &Notice) -> Result<(), DeliveryError> {
    let message = notice.encode()?;
    exchange(socket, message.as_bytes(), NOTICE_TIMEOUT)
}

#[cfg(test)]
fn request_within(
    path: &Path,
    user: &str,
    target: &str,
    code: &str,
    timeout: Duration,
) -> Result<(), DeliveryError> {
    let message = protocol::encode_request(user, target, code)?;
    exchange(path, message.as_bytes(), timeout)
}

/// Sends one request (`message`) to the service on `path` and reads its
/// answer, all within `timeout`.
fn exchange(path: &Path, message: &[u8], timeout: Duration) -> Result<(), DeliveryError> {
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
    let mut rest = message;
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
    protocol::parse_answer(&answer[..len])
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;
    use std::os::unix::process::ExitStatusExt;
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    use std::thread::JoinHandle;

    use nix::sys::signal::Signal;

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
                "delivery::client::tests::closed_peer_helper_requests",
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
    #[allow(unsafe_code)]
    #[test]
    #[ignore = "helper of a_closed_connection_is_an_error_not_a_sigpipe"]
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
}
