//! The accept loop and one connection: check the peer, read one request
//! (bounded in size and time), run it under the deadline, write one reply,
//! close (src/fleet/protocol.rs). One thread per connection, at most
//! [`MAX_CONNECTIONS`] at once: beyond that the loop stops accepting and
//! new connections wait in the socket's backlog (each connection ends
//! within the deadline, so a place frees up within it; a module that gives
//! up first denies its login).

use std::io::{ErrorKind, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::socket::{getsockopt, sockopt};
use nix::unistd::geteuid;
use pam_twofactor::fleet::protocol::{self, MAX_MESSAGE, Reply, Request, Unavailable};

use super::call::Call;
use super::dispatch::{Connector, Dispatcher, unavailable};
use super::log;

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 64;
/// The reply is due this long before the deadline, so that it reaches a
/// module that started its own clock (at connect) a little earlier.
const REPLY_MARGIN: Duration = Duration::from_millis(250);
/// The least time a reply is given to be written.
const MIN_WRITE_TIME: Duration = Duration::from_millis(500);
/// Waits after a failed accept (out of file descriptors) before the next.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `listener` forever.
pub fn accept_loop<C: Connector>(listener: &UnixListener, dispatcher: &Arc<Dispatcher<C>>) {
    let places = Arc::new(Places::new(MAX_CONNECTIONS));
    loop {
        let place = take(&places);
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => {
                log::line(&format!("cannot accept a connection: {e}"));
                std::thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        let accepted = Instant::now();
        let dispatcher = Arc::clone(dispatcher);
        let spawned = std::thread::Builder::new()
            .name("agent-conn".into())
            .spawn(move || {
                serve_connection(stream, accepted, &dispatcher);
                drop(place);
            });
        if let Err(e) = spawned {
            log::line(&format!("cannot start a connection thread: {e}"));
        }
    }
}

/// One connection, answered by `accepted` + the deadline (minus a margin).
pub fn serve_connection<C: Connector>(
    mut stream: UnixStream,
    accepted: Instant,
    dispatcher: &Arc<Dispatcher<C>>,
) {
    let deadline = accepted + dispatcher.limits().deadline.saturating_sub(REPLY_MARGIN);
    let reply = match check_peer(&stream) {
        Ok(()) => match read_request(&mut stream, deadline) {
            Ok(request) => match Call::from_request(request) {
                Ok(call) => dispatcher.dispatch(call, deadline),
                Err(bad) => {
                    log::line(&format!("bad request: {bad}"));
                    unavailable(Unavailable::BadRequest, bad.to_string())
                }
            },
            Err(why) => {
                log::line(&format!("bad request: {why}"));
                unavailable(Unavailable::BadRequest, why)
            }
        },
        Err(why) => {
            log::line(&format!("refused a connection: {why}"));
            unavailable(Unavailable::Refused, why)
        }
    };
    write_reply(&mut stream, &reply, deadline);
}

/// Only root may ask (and the agent's own user, which is root under
/// systemd; a test runs both sides as one user). The socket is 0600 root
/// already; this holds if it is ever loosened.
pub fn check_peer(stream: &UnixStream) -> Result<(), String> {
    let peer = getsockopt(stream, sockopt::PeerCredentials)
        .map_err(|e| format!("cannot tell who is asking: {}", e.desc()))?;
    if peer.uid() == 0 || peer.uid() == geteuid().as_raw() {
        Ok(())
    } else {
        Err(format!(
            "uid {} (pid {}) is not root; only root may ask the agent",
            peer.uid(),
            peer.pid()
        ))
    }
}

/// Reads one request: everything up to the module's shutdown of its
/// side, at most [`MAX_MESSAGE`] bytes, by `deadline`. The reason it could
/// not be read never quotes the request (it may hold a code or a secret).
pub fn read_request(stream: &mut UnixStream, deadline: Instant) -> Result<Request, String> {
    let limit = usize::try_from(MAX_MESSAGE).unwrap_or(usize::MAX);
    // All of it at once: a growing Vec would leave copies of the request
    // (codes, a new secret) in freed memory that `Zeroizing` never wipes.
    let mut bytes = zeroize::Zeroizing::new(Vec::with_capacity(limit));
    let mut buffer = zeroize::Zeroizing::new([0u8; 4096]);
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err("the request did not end within the deadline".into());
        }
        stream
            .set_read_timeout(Some(remaining))
            .map_err(|e| format!("cannot set a read timeout: {e}"))?;
        match stream.read(&mut buffer[..]) {
            Ok(0) => break,
            Ok(n) => {
                if bytes.len() + n > limit {
                    return Err(format!("the request is longer than {MAX_MESSAGE} bytes"));
                }
                bytes.extend_from_slice(buffer.get(..n).unwrap_or_default());
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err("the request did not end within the deadline".into());
            }
            Err(e) => return Err(format!("cannot read the request: {e}")),
        }
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| "the request is not UTF-8".to_string())?;
    // toml's message would quote the offending line, which may hold a
    // code: say only that it is not a request.
    protocol::decode::<Request>(text)
        .map_err(|_| "the request is not a request of this agent's protocol".to_string())
}

/// Writes `reply` and shuts down the write side; the module may have gone
/// (it gave up at its deadline): then there is nobody to tell.
fn write_reply(stream: &mut UnixStream, reply: &Reply, deadline: Instant) {
    let text = match protocol::encode(reply) {
        Ok(text) => text,
        Err(e) => {
            log::line(&format!("cannot encode a reply: {e}"));
            return;
        }
    };
    let time = deadline
        .saturating_duration_since(Instant::now())
        .max(MIN_WRITE_TIME);
    let _ = stream.set_write_timeout(Some(time));
    if let Err(e) = stream
        .write_all(text.as_bytes())
        .and_then(|()| stream.shutdown(Shutdown::Write))
    {
        log::line(&format!(
            "cannot write a reply ({}): {e}",
            log::reply_summary(reply)
        ));
        return;
    }
    drain(stream, deadline);
}

/// Reads and drops what the peer still sends (a refused peer's request,
/// the rest of an oversize one), at most [`MAX_MESSAGE`] bytes until the
/// deadline: closing with unread data would reset the connection and the
/// peer could lose the reply. A request read to its end is at EOF already.
fn drain(stream: &mut UnixStream, deadline: Instant) {
    let remaining = deadline.saturating_duration_since(Instant::now());
    if stream
        .set_read_timeout(Some(remaining.max(Duration::from_millis(1))))
        .is_err()
    {
        return;
    }
    let _ = std::io::copy(&mut stream.take(MAX_MESSAGE), &mut std::io::sink());
}

/// A counting semaphore for connection threads.
pub struct Places {
    free: Mutex<usize>,
    freed: Condvar,
}

/// A taken place, given back on drop.
pub struct Place(Arc<Places>);

impl Places {
    pub fn new(count: usize) -> Places {
        Places {
            free: Mutex::new(count),
            freed: Condvar::new(),
        }
    }
}

/// Waits for a free place in `places`.
fn take(places: &Arc<Places>) -> Place {
    let mut free = places.free.lock().unwrap_or_else(PoisonError::into_inner);
    while *free == 0 {
        free = places
            .freed
            .wait(free)
            .unwrap_or_else(PoisonError::into_inner);
    }
    *free -= 1;
    Place(Arc::clone(places))
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut free = self.0.free.lock().unwrap_or_else(PoisonError::into_inner);
        *free += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::agent::dispatch::Limits;
    use crate::fleet::agent::dispatch::tests::{Behaviour, Fake, allow};
    use std::os::unix::fs::PermissionsExt;
    use std::path::{Path, PathBuf};

    /// Set for the re-executed test binary that plays a non-root module.
    const CLIENT_SOCKET_ENV: &str = "TWOFACTOR_AGENT_TEST_SOCKET";
    const BEGIN: &str = "op = \"begin\"\nuser = \"alice\"\n";

    /// A private directory of the test's own, traversable by every user
    /// (the non-root client needs to reach the socket and the binary).
    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "twofactor-agent-serve-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        dir
    }

    /// An agent with `behaviour` serving a socket in `dir`, in the
    /// background (its accept loop runs until the test process ends).
    fn agent(dir: &Path, behaviour: Behaviour, deadline: Duration) -> PathBuf {
        let path = dir.join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let dispatcher = Dispatcher::new(Fake::new(behaviour), Limits::new(deadline));
        std::thread::spawn(move || accept_loop(&listener, &dispatcher));
        path
    }

    /// What a module does: connect, write the request, shut down the
    /// write side, read the reply to the end.
    fn ask(socket: &Path, request: &[u8]) -> String {
        let mut stream = UnixStream::connect(socket).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // The agent may answer (and close) before all of an oversize
        // request is written.
        let _ = stream
            .write_all(request)
            .and_then(|()| stream.shutdown(Shutdown::Write));
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    }

    fn unavailable_reason(reply: &str) -> Unavailable {
        match protocol::decode::<Reply>(reply) {
            Ok(Reply::Unavailable { reason, .. }) => reason,
            other => panic!("not unavailable: {other:?}\n{reply}"),
        }
    }

    /// A TOML request over the socket gets the backend's reply as TOML.
    #[test]
    fn request_over_the_socket_gets_the_reply() {
        let dir = scratch("reply");
        let socket = agent(
            &dir,
            Behaviour::Answer(Duration::ZERO),
            Duration::from_secs(5),
        );
        let reply = ask(&socket, BEGIN.as_bytes());
        assert_eq!(protocol::decode::<Reply>(&reply).unwrap(), allow());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A slow database: the module gets Timeout before its deadline (the
    /// agent answers REPLY_MARGIN early), never later.
    #[test]
    fn slow_database_answers_timeout_before_the_deadline() {
        let dir = scratch("slow");
        let deadline = Duration::from_secs(1);
        let socket = agent(&dir, Behaviour::Answer(Duration::from_secs(3)), deadline);
        let start = Instant::now();
        let reply = ask(&socket, BEGIN.as_bytes());
        let took = start.elapsed();
        assert_eq!(unavailable_reason(&reply), Unavailable::Timeout);
        assert!(took < deadline, "answered after {took:?}");
        assert!(
            took >= deadline - REPLY_MARGIN - Duration::from_millis(50),
            "{took:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// No database: DatabaseDown over the socket.
    #[test]
    fn unreachable_database_answers_database_down() {
        let dir = scratch("down");
        let socket = agent(&dir, Behaviour::Unreachable, Duration::from_secs(5));
        let reply = ask(&socket, BEGIN.as_bytes());
        assert_eq!(unavailable_reason(&reply), Unavailable::DatabaseDown);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Garbage, a bad field, and a request over MAX_MESSAGE are bad
    /// requests, and the reply does not quote them.
    #[test]
    fn garbage_and_oversize_requests_are_bad_requests() {
        let dir = scratch("garbage");
        let socket = agent(
            &dir,
            Behaviour::Answer(Duration::ZERO),
            Duration::from_secs(5),
        );
        let oversize = format!(
            "op = \"begin\"\nuser = \"alice\"\n# {}\n",
            "x".repeat(usize::try_from(MAX_MESSAGE).unwrap())
        );
        let attempt_with_letters =
            "op = \"attempt\"\nuser = \"alice\"\ngeneration = 1\ncode = \"98a7654\"\n";
        let requests: [&[u8]; 6] = [
            b"",
            b"\xff\xfe not utf-8",
            b"op = \"attempt\"\ncode = \"987654\"\n",
            b"op = \"begin\"\nuser = \"../../etc\"\n",
            attempt_with_letters.as_bytes(),
            oversize.as_bytes(),
        ];
        for request in requests {
            let reply = ask(&socket, request);
            assert_eq!(
                unavailable_reason(&reply),
                Unavailable::BadRequest,
                "{reply}"
            );
            assert!(
                !reply.contains("987654") && !reply.contains("98a7654"),
                "{reply}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A module that never ends its request is answered BadRequest at the
    /// deadline, not waited for.
    #[test]
    fn unfinished_request_is_answered_at_the_deadline() {
        let dir = scratch("unfinished");
        let socket = agent(
            &dir,
            Behaviour::Answer(Duration::ZERO),
            Duration::from_secs(1),
        );
        let mut stream = UnixStream::connect(&socket).unwrap();
        stream.write_all(BEGIN.as_bytes()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let start = Instant::now();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        assert!(start.elapsed() < Duration::from_secs(1));
        assert_eq!(unavailable_reason(&reply), Unavailable::BadRequest);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A peer that is not root is refused before its request is read:
    /// the test binary, copied where `nobody` can run it, plays the module
    /// as uid 65534 (see `non_root_client`) against a socket opened to
    /// everyone for the test.
    #[test]
    fn non_root_peer_is_refused() {
        if !nix::unistd::geteuid().is_root() {
            let line = "\n*** SKIPPED non_root_peer_is_refused: needs root to run a client as another uid; the peer check itself is covered by the other tests (same uid accepted)\n";
            let _ = std::io::stderr().write_all(line.as_bytes());
            return;
        }
        let dir = scratch("peer");
        let fake = Fake::new(Behaviour::Answer(Duration::ZERO));
        let completed = Arc::clone(&fake.completed);
        let path = dir.join("agent.sock");
        let listener = UnixListener::bind(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let dispatcher = Dispatcher::new(fake, Limits::new(Duration::from_secs(5)));
        std::thread::spawn(move || accept_loop(&listener, &dispatcher));
        let exe = dir.join("client");
        std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let output = {
            use std::os::unix::process::CommandExt;
            std::process::Command::new(&exe)
                .args([
                    "--exact",
                    "fleet::agent::serve::tests::non_root_client",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CLIENT_SOCKET_ENV, &path)
                .uid(65534)
                .gid(65534)
                .output()
                .unwrap()
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let reply = stdout
            .split("REPLY<<")
            .nth(1)
            .and_then(|rest| rest.split(">>REPLY").next())
            .unwrap_or_else(|| panic!("no reply in:\n{stdout}"));
        assert_eq!(unavailable_reason(reply), Unavailable::Refused, "{reply}");
        assert!(reply.contains("uid 65534"), "{reply}");
        assert_eq!(completed.load(std::sync::atomic::Ordering::SeqCst), 0);
        // Root, on the same socket, is served.
        assert_eq!(
            protocol::decode::<Reply>(&ask(&path, BEGIN.as_bytes())).unwrap(),
            allow()
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Not a test on its own: run by `non_root_peer_is_refused` as another
    /// uid, it asks the agent and prints the reply.
    #[test]
    fn non_root_client() {
        if let Some(socket) = std::env::var_os(CLIENT_SOCKET_ENV) {
            let reply = ask(Path::new(&socket), BEGIN.as_bytes());
            println!("REPLY<<{reply}>>REPLY");
        }
    }

    /// check_peer accepts this process's own uid (root under systemd).
    #[test]
    fn own_uid_is_accepted() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(check_peer(&a), Ok(()));
    }
}
