//! The delivery service, `twofactor deliver`: one connection, one request,
//! one run of `[delivery] command`, one answer line.

use std::fmt;
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::socket::{getsockopt, sockopt};
use nix::unistd::geteuid;
use zeroize::Zeroizing;

use super::DeliveryError;
use super::notice::{self, Notice};
use super::protocol::{self, Incoming, Request};
use crate::config::Config;
use crate::store;

/// How long the command may run.
pub(super) const TIMEOUT: Duration = Duration::from_secs(10);
/// How often the service looks whether the command has finished.
const POLL: Duration = Duration::from_millis(10);

/// What the delivery service needs from the configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Setup {
    /// `[delivery] command`.
    pub delivery: Option<PathBuf>,
    /// `[notify] command`.
    pub notify: Option<PathBuf>,
    /// The host name notices name (`Config::issuer_name`).
    pub host: String,
}

impl Setup {
    /// The service's part of `config`.
    pub fn from_config(config: &Config) -> Setup {
        Setup {
            delivery: config.delivery.command.clone(),
            notify: config.notify.command.clone(),
            host: config.issuer_name(),
        }
    }
}

/// What the service did for one connection.
#[derive(Debug)]
pub enum Served {
    /// A code was sent.
    Code(Request),
    /// A notice was handed to `[notify] command`, which succeeded.
    Notice(Notice),
}

impl fmt::Display for Served {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Served::Code(request) => write!(f, "code for {} sent", request.user.as_str()),
            Served::Notice(notice) => write!(
                f,
                "{} notified of {}",
                notice.user.as_str(),
                notice.event.word()
            ),
        }
    }
}

/// The delivery service's whole job for one connection: read a request
/// from `input` and, with `setup` (or why it is not known), either run
/// `[delivery] command` for a code and then write the answer line to
/// `output`, or, for a notification, answer `ok` once the request is read
/// and checked and only then run `[notify] command`: the login that sent it
/// is already decided and need not wait for a mail server. Returns what
/// happened, for the service's own log.
pub fn serve(
    setup: Result<Setup, DeliveryError>,
    input: &mut impl Read,
    output: &mut impl Write,
) -> Result<Served, DeliveryError> {
    let read = setup.and_then(|setup| Ok((protocol::read_incoming(input)?, setup)));
    let (incoming, setup) = match read {
        Ok(read) => read,
        Err(e) => return answered(output, Err(e)),
    };
    match incoming {
        Incoming::Code(request) => {
            let sent = setup
                .delivery
                .ok_or_else(|| DeliveryError::Config("no [delivery] command is set".into()))
                .and_then(|command| {
                    run(
                        &command,
                        request.user.as_str(),
                        &request.target,
                        &request.code,
                    )
                })
                .map(|()| Served::Code(request));
            answered(output, sent)
        }
        Incoming::Notice(notice) => {
            let Some(command) = setup.notify else {
                let unset = DeliveryError::Config("no [notify] command is set".into());
                return answered(output, Err(unset));
            };
            answered(output, Ok(()))?;
            notice::notify(&command, &notice, &setup.host)?;
            Ok(Served::Notice(notice))
        }
    }
}

/// Writes the answer line for `result` to `output`, and returns `result`.
fn answered<T>(
    output: &mut impl Write,
    result: Result<T, DeliveryError>,
) -> Result<T, DeliveryError> {
    let line = protocol::answer_line(&result);
    // The module may have given up; its answer is then nobody's business.
    let _ = output
        .write_all(line.as_bytes())
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

/// Runs `command USER TARGET` with `code` on standard input
/// ([`run_command`]).
fn run(command: &Path, user: &str, target: &str, code: &str) -> Result<(), DeliveryError> {
    let mut line = Zeroizing::new(String::with_capacity(code.len() + 1));
    line.push_str(code);
    line.push('\n');
    run_command(command, [user, target], line.as_bytes())
}

/// Runs `command ARG1 ARG2` with `input` on standard input — the delivery
/// command and the notify command alike: in `/` (never a user's
/// directory), with only `PATH` in the environment, /dev/null as stdout
/// (the service's stdout is the connection to the module) and the
/// caller's stderr (the journal under systemd) as stderr. std resets the
/// signal mask and SIGPIPE's disposition in the child. The command is
/// checked like every file the module trusts (`check_executable`) and
/// killed after [`TIMEOUT`].
///
/// The input goes into the pipe *before* the command starts: it fits in
/// the pipe buffer (at most [`protocol::MAX_MESSAGE`]-sized messages), and
/// while we hold the read end no write can fail, so a command that exits
/// without reading cannot make us meet EPIPE.
pub(super) fn run_command(
    command: &Path,
    args: [&str; 2],
    input: &[u8],
) -> Result<(), DeliveryError> {
    // Written before the command starts: more than a pipe's guaranteed
    // buffer could block the service forever.
    if input.len() > protocol::MAX_MESSAGE {
        return Err(DeliveryError::BadRequest("the message is too long"));
    }
    store::check_executable(command).map_err(DeliveryError::Unsafe)?;
    let spawn_error = |e: std::io::Error| DeliveryError::Spawn(e.to_string());
    let (reader, writer) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| spawn_error(e.into()))?;
    let mut writer = std::fs::File::from(writer);
    writer.write_all(input).map_err(spawn_error)?;
    drop(writer);
    let mut child = Command::new(command)
        .args(args)
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

    /// Input larger than a message is refused before anything runs (it
    /// is written into the pipe before the command starts).
    #[test]
    fn input_longer_than_a_message_is_refused_unrun() {
        let input = vec![b'x'; protocol::MAX_MESSAGE + 1];
        let result = run_command(Path::new("/nonexistent/command"), ["u", "e"], &input);
        assert!(
            matches!(result, Err(DeliveryError::BadRequest(_))),
            "{result:?}"
        );
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::{UnixListener, UnixStream};

    /// The service answers `ok` when the command succeeded, and `error:`
    /// with the reason otherwise (no command configured, a bad request).
    #[test]
    fn serve_answers_one_line() {
        let serve_text = |command: Option<&str>, text: &[u8]| {
            let mut out = Vec::new();
            let setup = Setup {
                delivery: command.map(PathBuf::from),
                ..Setup::default()
            };
            let result = serve(Ok(setup), &mut &text[..], &mut out);
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
                "delivery::service::tests::peer_helper_connects",
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

    /// A notification is answered `ok` once read and checked — the answer
    /// is written before the command runs — and then `[notify] command`
    /// runs as `COMMAND USER EVENT` with the message on stdin; with no
    /// `[notify] command` the service answers an error.
    #[test]
    fn a_notification_is_answered_then_handed_to_the_notify_command() {
        let dir = crate::store::testdir::scratch("deliver-notify");
        let out = dir.join("out");
        let script = dir.join("tell.sh");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\n{{ echo \"argc=$# 1=$1 2=$2\"; cat; }} > {}\n",
                out.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
        let request =
            b"!notify\nuser: alice\nevent: backup-code-used\ntime: 1907000000\ncodes_left: 9\n\n";
        /// Fails the test if the command ran before the answer was written.
        struct Answer<'a>(&'a Path, Vec<u8>);
        impl Write for Answer<'_> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                assert!(!self.0.exists(), "the command ran before the answer");
                self.1.extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let setup = Setup {
            delivery: None,
            notify: Some(script.clone()),
            host: "box".into(),
        };
        let mut answer = Answer(&out, Vec::new());
        let served = serve(Ok(setup), &mut &request[..], &mut answer).unwrap();
        assert_eq!(answer.1, b"ok\n");
        assert_eq!(served.to_string(), "alice notified of backup-code-used");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "argc=2 1=alice 2=backup-code-used\nuser: alice\nevent: backup-code-used\n\
             time: 2030-06-06T18:13:20Z\nhost: box\ncodes_left: 9\n\n\
             A backup code was used to log in as alice on box; 9 left. \
             If this was not you, tell your administrator at once.\n"
        );
        let mut out = Vec::new();
        let unset = serve(Ok(Setup::default()), &mut &request[..], &mut out);
        assert!(matches!(unset, Err(DeliveryError::Config(_))), "{unset:?}");
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "error: configuration: no [notify] command is set\n"
        );
    }
}
