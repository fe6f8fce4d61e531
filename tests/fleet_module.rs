//! The real `pam_twofactor.so` in fleet mode through real libpam
//! (pam_wrapper + pamtester), with a fake agent: a thread of this test
//! serving the agent socket, checking each request and answering scripted
//! replies. No database: what the module does with the agent's answers.
//! The socket belongs to the test's own uid, which the module trusts like
//! root's (it runs in pamtester as the same uid), so no root is needed.

// Test helpers may panic: a panic is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::thread::JoinHandle;

use common::*;
use pam_twofactor::fleet::protocol::{
    self, AttemptReply, AttemptRequest, AttemptVerdict, BackupKdf, BeginReply, Reply, Request,
};

const USER: &str = "daemon";
const PROMPT: &str = "Verification code: ";
const SVC: &str = "svc";

/// A fake agent on `path` answering `replies`, one connection each;
/// joining it gives the requests it read.
fn agent(path: &Path, replies: Vec<Reply>) -> JoinHandle<Vec<Request>> {
    let listener = UnixListener::bind(path).unwrap();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        for reply in replies {
            let (mut stream, _) = listener.accept().unwrap();
            let mut text = String::new();
            stream.read_to_string(&mut text).unwrap();
            seen.push(protocol::decode::<Request>(&text).unwrap());
            stream
                .write_all(protocol::encode(&reply).unwrap().as_bytes())
                .unwrap();
        }
        seen
    })
}

fn begin_reply() -> BeginReply {
    BeginReply {
        enrolled: true,
        generation: 3,
        grace: false,
        refusal: None,
        refusal_until: None,
        deliver_to: None,
        backup: Some(BackupKdf {
            digits: 16,
            salt: "000102030405060708090a0b0c0d0e0f".into(),
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        }),
        enroll_at_login: false,
        totp_algorithm: "SHA1".into(),
        totp_digits: 6,
        totp_period: 30,
        backup_codes: 10,
        now: T0_UNIX as i64,
        delivered_pending: false,
    }
}

fn attempt_reply(verdict: AttemptVerdict, device: Option<&str>) -> AttemptReply {
    AttemptReply {
        verdict,
        device: device.map(str::to_string),
        step: None,
        drift_offset: None,
        off_by: None,
        period: None,
        remaining: None,
        until: None,
    }
}

/// A sandbox whose config has `[fleet]` with the agent socket in it, and
/// our module alone in service `svc`.
fn fleet_sandbox(name: &str) -> (Sandbox, std::path::PathBuf) {
    require_tools();
    let sb = Sandbox::new(name);
    let socket = sb.dir().join("agent.sock");
    sb.write_config(&format!(
        "[fleet]\ndatabase = \"host=db.example.org dbname=twofactor\"\nagent_socket = \"{}\"\ndeadline_seconds = 2\n",
        socket.display()
    ));
    sb.write_service(SVC, &sb.module_line(""));
    (sb, socket)
}

/// The agent's allow logs in and its refusal does not; the module sends
/// the typed code with the generation `Begin` gave, and writes nothing to
/// the state directory.
#[test]
fn the_agent_decides_the_login() {
    let (sb, socket) = fleet_sandbox("fleet-module-decides");
    let fake = agent(
        &socket,
        vec![
            Reply::Begin(begin_reply()),
            Reply::Attempt(attempt_reply(AttemptVerdict::AllowTotp, Some("phone"))),
            Reply::Begin(begin_reply()),
            Reply::Attempt(attempt_reply(AttemptVerdict::WrongCode, None)),
        ],
    );
    let out = sb.pamtester(SVC, USER, &["123 456"], T0);
    assert!(out.succeeded(), "{out}");
    assert_eq!(out.prompt_count(PROMPT), 1, "{out}");
    let out = sb.pamtester(SVC, USER, &["654321"], T0);
    assert!(!out.succeeded(), "{out}");
    assert_eq!(out.pam_error(), Some(pam_err::AUTH_ERR), "{out}");
    let attempt = |code: &str| {
        Request::Attempt(AttemptRequest {
            user: USER.into(),
            generation: 3,
            code: Some(code.to_string().into()),
            hash: None,
            hash_deferred: false,
            drift: None,
            rhost: None,
        })
    };
    let begin = Request::Begin {
        user: USER.into(),
        rhost: None,
    };
    assert_eq!(
        fake.join().unwrap(),
        vec![begin.clone(), attempt("123456"), begin, attempt("654321")]
    );
    assert_eq!(std::fs::read_dir(sb.state_dir()).unwrap().count(), 0);
}

/// No agent: PAM_AUTHINFO_UNAVAIL before any prompt, and the user is told
/// the second-factor database cannot be reached.
#[test]
fn no_agent_is_authinfo_unavailable() {
    let (sb, _socket) = fleet_sandbox("fleet-module-no-agent");
    let out = sb.pamtester(SVC, USER, &[], T0);
    assert!(!out.succeeded(), "{out}");
    assert_eq!(out.pam_error(), Some(pam_err::AUTHINFO_UNAVAIL), "{out}");
    assert_eq!(out.prompt_count(PROMPT), 0, "{out}");
    assert!(
        out.stderr
            .contains("The second-factor database cannot be reached."),
        "{out}"
    );
}
