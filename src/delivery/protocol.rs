//! What the module and the delivery service say to each other over one
//! Unix stream connection: one request (at most [`MAX_MESSAGE`] bytes),
//! then one answer line, `ok\n` or `error: WHY\n`. A request is either a
//! code request, `USER\nTARGET\nCODE\n`, or a notification, `!notify\n`,
//! `key: value` lines and an empty line (`notice`): a user name never
//! starts with `!`, so neither can be read as the other.

use std::fmt;
use std::io::Read;

use zeroize::Zeroizing;

use super::DeliveryError;
use super::notice::{NOTICE_TAG, Notice};
use crate::records;
use crate::records::username::Username;

/// The longest request the service reads, and the longest answer the
/// module reads (a user name, a target of at most 128 characters, a code).
pub(super) const MAX_MESSAGE: usize = 1024;
/// Codes are 6 to 8 digits (`[totp] digits`).
const CODE_DIGITS: std::ops::RangeInclusive<usize> = 6..=8;

/// The request text for `user`, `target` and `code`, one line each; an
/// empty field or one with a line break or NUL cannot be written.
pub(super) fn encode_request(
    user: &str,
    target: &str,
    code: &str,
) -> Result<Zeroizing<String>, DeliveryError> {
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
    Ok(message)
}

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

/// One request of either kind, checked.
#[derive(Debug)]
pub enum Incoming {
    /// Send a code.
    Code(Request),
    /// Tell a user of an event.
    Notice(Notice),
}

/// Reads one code request; a notification is refused.
#[cfg(test)]
pub(super) fn read_request(input: &mut impl Read) -> Result<Request, DeliveryError> {
    match read_incoming(input)? {
        Incoming::Code(request) => Ok(request),
        Incoming::Notice(_) => Err(DeliveryError::BadRequest("not a code request")),
    }
}

/// Reads one request (at most [`MAX_MESSAGE`] bytes: a code request up to
/// its third line break, a notification up to its empty line) from `input`
/// and checks every field; a code is wiped on drop.
pub(super) fn read_incoming(input: &mut impl Read) -> Result<Incoming, DeliveryError> {
    let mut buf = Zeroizing::new(vec![0u8; MAX_MESSAGE]);
    let mut len = 0;
    let complete = |b: &[u8]| {
        if b.starts_with(b"!") {
            b.windows(2).any(|w| w == b"\n\n")
        } else {
            b.iter().filter(|&&c| c == b'\n').count() >= 3
        }
    };
    while len < buf.len() && !complete(&buf[..len]) {
        match input.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(DeliveryError::BadRequest("could not be read")),
        }
    }
    let text =
        std::str::from_utf8(&buf[..len]).map_err(|_| DeliveryError::BadRequest("not UTF-8"))?;
    if text.starts_with('!') {
        if !text.starts_with(&format!("{NOTICE_TAG}\n")) {
            return Err(DeliveryError::BadRequest("unknown request"));
        }
        return Notice::decode(text).map(Incoming::Notice);
    }
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
    Ok(Incoming::Code(Request {
        user,
        target: target.to_string(),
        code: Zeroizing::new(code.to_string()),
    }))
}

/// The service's answer line for what it did.
pub(super) fn answer_line<T>(result: &Result<T, DeliveryError>) -> String {
    match result {
        Ok(_) => "ok\n".to_string(),
        Err(e) => format!("error: {e}\n"),
    }
}

/// `ok\n` is success; `error: WHY\n` is the service's failure, kept as
/// printable ASCII (it goes into syslog); anything else is a failure too.
pub(super) fn parse_answer(answer: &[u8]) -> Result<(), DeliveryError> {
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

#[cfg(test)]
mod tests {
    use super::*;

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

    /// What the module writes, the service reads back field by field; a
    /// field that would break the lines is refused before anything is
    /// sent; the answer lines the service writes read back as what it did.
    #[test]
    fn requests_and_answers_read_back_as_written() {
        let text = encode_request("alice", "+1 555 0100", "123456").unwrap();
        assert_eq!(text.as_str(), "alice\n+1 555 0100\n123456\n");
        let read = read_request(&mut text.as_bytes()).unwrap();
        assert_eq!(
            (read.user.as_str(), read.target.as_str(), read.code.as_str()),
            ("alice", "+1 555 0100", "123456")
        );
        for (user, target, code) in [("", "x", "1"), ("a", "x\ny", "1"), ("a", "x", "1\0")] {
            assert!(matches!(
                encode_request(user, target, code),
                Err(DeliveryError::BadRequest(_))
            ));
        }
        assert!(parse_answer(answer_line(&Ok::<(), _>(())).as_bytes()).is_ok());
        let failed = answer_line::<()>(&Err(DeliveryError::Timeout));
        match parse_answer(failed.as_bytes()) {
            Err(DeliveryError::Service(why)) => {
                assert_eq!(why, DeliveryError::Timeout.to_string())
            }
            other => panic!("{other:?}"),
        }
    }

    /// A notification request reads back as the notice it was made from,
    /// for every event, and carries no more than user, event, time and the
    /// event's fields.
    #[test]
    fn notifications_read_back_as_written() {
        use super::super::notice::Event;
        let events = [
            Event::Enrolled,
            Event::DeviceAdded {
                device: "phone".into(),
            },
            Event::DeviceRemoved {
                device: "old.tab-1".into(),
            },
            Event::BackupCodesRegenerated,
            Event::BackupCodeUsed { codes_left: 9 },
            Event::Locked {
                until: 1_907_000_000,
            },
            Event::Unlocked,
            Event::Disabled,
            Event::DriftLearned {
                device: "default".into(),
                offset_seconds: -150,
            },
        ];
        for event in events {
            let notice = Notice {
                user: Username::parse("alice").unwrap(),
                event,
                time: 1_906_999_000,
            };
            let text = notice.encode().unwrap();
            assert!(text.starts_with("!notify\nuser: alice\nevent: "), "{text}");
            match read_incoming(&mut text.as_bytes()).unwrap() {
                Incoming::Notice(read) => assert_eq!(read, notice),
                other => panic!("{other:?}"),
            }
        }
        let bad_label = Notice {
            user: Username::parse("alice").unwrap(),
            event: Event::DeviceAdded {
                device: "a\nevent: disabled".into(),
            },
            time: 0,
        };
        assert!(matches!(
            bad_label.encode(),
            Err(DeliveryError::BadRequest("bad device label"))
        ));
    }

    /// A code request is never read as a notification nor the other way
    /// round: a user name cannot start with `!`, and each kind is checked
    /// in full.
    #[test]
    fn code_requests_and_notifications_cannot_be_mistaken() {
        let read = |text: &[u8]| read_incoming(&mut &text[..]);
        assert!(matches!(
            read(b"alice\n+1\n123456\n"),
            Ok(Incoming::Code(_))
        ));
        assert!(matches!(
            read(b"!notify\nuser: alice\nevent: unlocked\ntime: 5\n\n"),
            Ok(Incoming::Notice(_))
        ));
        // A notification's lines are not a code request's three lines.
        assert!(matches!(
            read_request(&mut &b"!notify\nuser: alice\nevent: unlocked\ntime: 5\n\n"[..]),
            Err(DeliveryError::BadRequest(_))
        ));
        for (text, want) in [
            (&b"!notify\nalice\n+1\n123456\n"[..], "not a notification"),
            (b"!notify\nalice\n+1\n123456\n\n", "not a key: value line"),
            (b"!other\nuser: alice\n\n", "unknown request"),
            (
                b"!notify\nuser: alice\nevent: unlocked\n\n",
                "user, event and time missing",
            ),
            (
                b"!notify\nevent: unlocked\nuser: alice\ntime: 5\n\n",
                "user, event and time missing",
            ),
            (
                b"!notify\nuser: ../root\nevent: unlocked\ntime: 5\n\n",
                "bad user name",
            ),
            (
                b"!notify\nuser: alice\nevent: unlocked\ntime: -5\n\n",
                "bad time",
            ),
            (
                b"!notify\nuser: alice\nevent: rooted\ntime: 5\n\n",
                "bad event",
            ),
            (
                b"!notify\nuser: alice\nevent: unlocked\ntime: 5\ncode: 123456\n\n",
                "bad event",
            ),
            (
                b"!notify\nuser: alice\nevent: device-added\ntime: 5\ndevice: a/b\n\n",
                "bad event",
            ),
            (
                b"!notify\nuser: alice\nevent: backup-code-used\ntime: 5\ncodes_left: \xd9\xa3\n\n",
                "bad event",
            ),
            (
                b"!notify\nuser: alice\nevent: locked\ntime: 5\n",
                "not a notification",
            ),
        ] {
            match read(text) {
                Err(DeliveryError::BadRequest(why)) => assert_eq!(why, want, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let long = format!("!notify\nuser: alice\n{}", "x".repeat(2000));
        assert!(matches!(
            read(long.as_bytes()),
            Err(DeliveryError::BadRequest(_))
        ));
    }
}
