//! The agent's log lines, on stderr (the journal under systemd): one per
//! outcome that needs an admin's eye (errors, timeouts, refusals, late
//! answers). User names are escaped; a code, hash or secret is never
//! written (details come from [`super::call::BadRequest`] and
//! [`super::dispatch::BackendError`], which never hold one). The module logs
//! each login's outcome itself.

use std::io::Write;

use pam_twofactor::fleet::protocol::Reply;
use pam_twofactor::records::username::escape;
use serde::Serialize;

/// One line, written with one call so that threads do not interleave.
pub fn line(message: &str) {
    let line = format!("twofactor agent: {message}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// `OP for USER: DETAIL`.
pub fn outcome(op: &str, user: &str, detail: &str) {
    line(&format!("{op} for {}: {detail}", escape(user)));
}

/// What a reply said, in the SQL words (no code, hash or secret is in a
/// reply).
pub fn reply_summary(reply: &Reply) -> String {
    match reply {
        Reply::Begin(b) => format!("begin enrolled={}", b.enrolled),
        Reply::Attempt(a) => word(&a.verdict),
        Reply::Delivery(d) => word(&d.verdict),
        Reply::Enroll { verdict } => word(verdict),
        Reply::Unavailable { reason, detail } => {
            format!("unavailable ({}): {detail}", word(reason))
        }
    }
}

/// The serde word of a verdict or reason (`allow_totp`, `timeout`, …).
fn word<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(word)) => word,
        _ => "?".into(),
    }
}
