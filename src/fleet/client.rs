//! The module's side of the agent protocol: one request, one reply, over
//! the agent's root-only Unix socket, every wait bounded.
//!
//! Whoever listens on the socket decides who logs in, so it is checked
//! first (`store::check_socket`: a socket, owned by root, in directories
//! only root can change). The module starts no thread: the deadline is
//! kept with the socket's own timeouts, set before each blocking call to
//! what is left of it.

use std::fmt;
use std::io::{ErrorKind, Read};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr, connect, send, socket,
};
use zeroize::Zeroizing;

use super::protocol::{self, MAX_MESSAGE, Reply, Request};
use crate::config::Fleet;
use crate::store::{self, StoreError};

/// What the module waits beyond `deadline_seconds`: the agent answers
/// within the deadline itself (an `Unavailable` reply when the database
/// does not); the margin covers socket activation and the exchange.
pub const MARGIN: Duration = Duration::from_secs(2);

/// Why the agent could not be asked. Every variant denies the login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientError {
    /// Nothing listens on the socket (missing, or a stale socket file).
    NotRunning { socket: PathBuf, errno: Errno },
    /// The socket or a directory above it is not what only root can make
    /// (not a socket, not owned by root, group/world-writable, a symlink).
    Unsafe { socket: PathBuf, problem: String },
    /// The caller is not root and the root-only socket refused it (a
    /// screen locker running as the user).
    NotRoot { socket: PathBuf, uid: u32 },
    /// No complete reply within `deadline_seconds` plus [`MARGIN`].
    NoAnswer { socket: PathBuf, waited: Duration },
    /// The connection failed while the request or the reply was on its way.
    Lost { socket: PathBuf, errno: Errno },
    /// The reply is longer than [`MAX_MESSAGE`].
    TooLong { socket: PathBuf },
    /// The reply is not a reply of the protocol, or not one that answers
    /// the request (a mismatched module and agent, or a broken agent).
    Garbage { why: String },
    /// The request could not be written (a bug: every field is ours).
    Request { why: String },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NotRunning { socket, errno } => write!(
                f,
                "the fleet agent is not running: {}: {} (is pam-twofactor-agent.socket enabled? systemctl enable --now pam-twofactor-agent.socket)",
                socket.display(),
                errno.desc()
            ),
            ClientError::Unsafe { socket, problem } => write!(
                f,
                "the fleet agent socket {} is unsafe, not asked: {problem}",
                socket.display()
            ),
            ClientError::NotRoot { socket, uid } => write!(
                f,
                "the caller runs as uid {uid}, not root, and cannot connect to the root-only fleet agent socket {}",
                socket.display()
            ),
            ClientError::NoAnswer { socket, waited } => write!(
                f,
                "no answer from the fleet agent on {} within {} s (deadline_seconds plus {} s); see journalctl -u pam-twofactor-agent",
                socket.display(),
                waited.as_secs(),
                MARGIN.as_secs()
            ),
            ClientError::Lost { socket, errno } => write!(
                f,
                "the connection to the fleet agent on {} failed: {}; see journalctl -u pam-twofactor-agent",
                socket.display(),
                errno.desc()
            ),
            ClientError::TooLong { socket } => write!(
                f,
                "the fleet agent on {} sent more than {MAX_MESSAGE} bytes",
                socket.display()
            ),
            ClientError::Garbage { why } => write!(
                f,
                "the fleet agent's reply is not understood: {why} (do the module and the agent come from the same version?)"
            ),
            ClientError::Request { why } => write!(f, "the fleet request cannot be written: {why}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Asks the agent of `fleet` one question and returns its reply, all
/// within `deadline_seconds` + [`MARGIN`].
pub fn ask(fleet: &Fleet, request: &Request) -> Result<Reply, ClientError> {
    let timeout = Duration::from_secs(fleet.deadline_seconds).saturating_add(MARGIN);
    ask_within(&fleet.agent_socket, request, timeout)
}

/// [`ask`] on `path` within `timeout`.
pub(crate) fn ask_within(
    path: &Path,
    request: &Request,
    timeout: Duration,
) -> Result<Reply, ClientError> {
    // Wiped on drop: a request may hold a code or a new secret.
    let text = Zeroizing::new(
        protocol::encode(request).map_err(|e| ClientError::Request { why: e.to_string() })?,
    );
    let started = Instant::now();
    let reply = exchange(path, text.as_bytes(), started, timeout)?;
    let reply = std::str::from_utf8(&reply).map_err(|_| ClientError::Garbage {
        why: "not UTF-8".into(),
    })?;
    protocol::decode::<Reply>(reply).map_err(|e| ClientError::Garbage {
        // The parser's message names the line and the key, never more than
        // a line of the reply (which holds no secret: replies carry none).
        why: e.message().to_string(),
    })
}

/// Connects, writes `message`, shuts the write side (the end of the
/// request), and reads the reply until the agent closes its side.
fn exchange(
    path: &Path,
    message: &[u8],
    started: Instant,
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    let socket_path = || path.to_path_buf();
    let euid = nix::unistd::geteuid().as_raw();
    store::check_socket(path).map_err(|e| match e {
        StoreError::Io {
            errno: Errno::ENOENT,
            ..
        } => ClientError::NotRunning {
            socket: socket_path(),
            errno: Errno::ENOENT,
        },
        // A root-only directory on the way refuses a non-root caller.
        StoreError::Io {
            errno: Errno::EACCES | Errno::EPERM,
            ..
        } if euid != 0 => ClientError::NotRoot {
            socket: socket_path(),
            uid: euid,
        },
        e => ClientError::Unsafe {
            socket: socket_path(),
            problem: e.to_string(),
        },
    })?;
    let deadline = started.checked_add(timeout).unwrap_or(started);
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            Err(ClientError::NoAnswer {
                socket: socket_path(),
                waited: timeout,
            })
        } else {
            Ok(left)
        }
    };
    let no_answer = || ClientError::NoAnswer {
        socket: socket_path(),
        waited: timeout,
    };
    let lost = |errno: Errno| ClientError::Lost {
        socket: socket_path(),
        errno,
    };
    let address = UnixAddr::new(path).map_err(lost)?;
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(lost)?;
    let mut stream = UnixStream::from(fd);
    // A blocking connect to a full listen backlog waits for room as long as
    // SO_SNDTIMEO allows: the timeout is set before connecting.
    loop {
        stream
            .set_write_timeout(Some(left()?))
            .map_err(|e| lost(store::errno_of(&e)))?;
        match connect(stream.as_raw_fd(), &address) {
            Ok(()) => break,
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Err(no_answer()),
            Err(errno @ (Errno::ENOENT | Errno::ECONNREFUSED)) => {
                return Err(ClientError::NotRunning {
                    socket: socket_path(),
                    errno,
                });
            }
            Err(errno @ (Errno::EACCES | Errno::EPERM)) => {
                return Err(if euid == 0 {
                    lost(errno)
                } else {
                    ClientError::NotRoot {
                        socket: socket_path(),
                        uid: euid,
                    }
                });
            }
            Err(e) => return Err(lost(e)),
        }
    }
    let mut rest = message;
    while !rest.is_empty() {
        stream
            .set_write_timeout(Some(left()?))
            .map_err(|e| lost(store::errno_of(&e)))?;
        // MSG_NOSIGNAL: an agent that closed the connection is EPIPE, never
        // a SIGPIPE, which kills a host process at its default disposition.
        match send(stream.as_raw_fd(), rest, MsgFlags::MSG_NOSIGNAL) {
            Ok(n) => rest = rest.get(n..).unwrap_or_default(),
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => return Err(no_answer()),
            Err(e) => return Err(lost(e)),
        }
    }
    stream
        .shutdown(Shutdown::Write)
        .map_err(|e| lost(store::errno_of(&e)))?;
    let limit = usize::try_from(MAX_MESSAGE).unwrap_or(usize::MAX);
    let mut reply = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        stream
            .set_read_timeout(Some(left()?))
            .map_err(|e| lost(store::errno_of(&e)))?;
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(reply),
            Ok(n) => {
                if reply.len().saturating_add(n) > limit {
                    return Err(ClientError::TooLong {
                        socket: socket_path(),
                    });
                }
                reply.extend_from_slice(chunk.get(..n).unwrap_or_default());
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Err(no_answer()),
            Err(e) => return Err(lost(store::errno_of(&e))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixListener;

    use crate::fleet::protocol::{Unavailable, encode};

    fn begin() -> Request {
        Request::Begin {
            user: "alice".into(),
            rhost: None,
        }
    }

    /// A listener at `dir/name` that takes one connection, reads the
    /// request to its end and writes `answer`; returns what it read.
    fn one_shot(
        dir: &Path,
        name: &str,
        answer: Vec<u8>,
    ) -> (PathBuf, std::thread::JoinHandle<Vec<u8>>) {
        let path = dir.join(name);
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut got = Vec::new();
            stream.read_to_end(&mut got).unwrap();
            let _ = stream.write_all(&answer);
            got
        });
        (path, handle)
    }

    /// The request is the TOML of the request, ended by the shut write
    /// side; the reply is read to its end and decoded.
    #[test]
    fn one_request_one_reply() {
        let dir = crate::store::testdir::scratch("fleet-client-ok");
        let reply = Reply::Unavailable {
            reason: Unavailable::Timeout,
            detail: "x".into(),
        };
        let (path, server) = one_shot(&dir, "s", encode(&reply).unwrap().into_bytes());
        let got = ask_within(&path, &begin(), Duration::from_secs(5)).unwrap();
        assert_eq!(got, reply);
        let sent = String::from_utf8(server.join().unwrap()).unwrap();
        assert_eq!(protocol::decode::<Request>(&sent).unwrap(), begin());
    }

    /// A reply that is not the protocol's, or too long, is an error.
    #[test]
    fn garbage_and_long_replies_are_errors() {
        let dir = crate::store::testdir::scratch("fleet-client-garbage");
        let (path, server) = one_shot(&dir, "g", b"reply = \"allow\"\n".to_vec());
        let got = ask_within(&path, &begin(), Duration::from_secs(5));
        assert!(matches!(got, Err(ClientError::Garbage { .. })), "{got:?}");
        server.join().unwrap();
        let (path, server) = one_shot(&dir, "l", vec![b'#'; 70 * 1024]);
        let got = ask_within(&path, &begin(), Duration::from_secs(5));
        assert!(matches!(got, Err(ClientError::TooLong { .. })), "{got:?}");
        server.join().unwrap();
    }

    /// A missing socket or one nobody listens on is "not running", with
    /// the unit to enable; an unsafe socket is not asked at all.
    #[test]
    fn missing_stale_and_unsafe_sockets() {
        let dir = crate::store::testdir::scratch("fleet-client-missing");
        let got = ask_within(&dir.join("none"), &begin(), Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(
                got,
                ClientError::NotRunning {
                    errno: Errno::ENOENT,
                    ..
                }
            ),
            "{got:?}"
        );
        assert!(
            got.to_string()
                .contains("is pam-twofactor-agent.socket enabled?")
        );
        let stale = dir.join("stale");
        drop(UnixListener::bind(&stale).unwrap());
        let got = ask_within(&stale, &begin(), Duration::from_secs(1)).unwrap_err();
        assert!(
            matches!(
                got,
                ClientError::NotRunning {
                    errno: Errno::ECONNREFUSED,
                    ..
                }
            ),
            "{got:?}"
        );
        let loose = dir.join("loose");
        let _listener = UnixListener::bind(&loose).unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o666)).unwrap();
        let got = ask_within(&loose, &begin(), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(got, ClientError::Unsafe { .. }), "{got:?}");
        assert!(got.to_string().contains("mode 0666"), "{got}");
    }

    /// An agent that never answers is given up on at the deadline.
    #[test]
    fn a_silent_agent_is_given_up_on_at_the_deadline() {
        let dir = crate::store::testdir::scratch("fleet-client-silent");
        let path = dir.join("s");
        let listener = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            std::thread::sleep(Duration::from_millis(1500));
            drop(stream);
        });
        let started = Instant::now();
        let got = ask_within(&path, &begin(), Duration::from_millis(300));
        assert!(matches!(got, Err(ClientError::NoAnswer { .. })), "{got:?}");
        assert!(started.elapsed() < Duration::from_millis(1200));
        server.join().unwrap();
    }
}
