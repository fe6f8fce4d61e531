//! Telling a user of the admin's change to their second factor
//! (`[notify] command`). `twofactor` is no host process, so it runs the
//! command itself, after the change succeeded; a failing command is
//! reported on stderr and in syslog but never undoes or fails the change.

use crate::config::Config;
use crate::delivery::{self, Event, Notice};
use crate::host::log::{self, Severity};
use crate::records::username::{Username, escape};

/// Runs `[notify] command` (if set) for `event` of `user` at `now` (the
/// time the command read once).
pub fn user_event(config: &Config, user: &str, event: Event, now: u64) {
    let Some(command) = &config.notify.command else {
        return;
    };
    let Ok(name) = Username::parse(user) else {
        // Not reached: the change itself refused such a name.
        return;
    };
    let notice = Notice {
        user: name,
        event,
        time: now,
    };
    if let Err(e) = delivery::notify(command, &notice, &config.issuer_name()) {
        let message = format!("could not notify {}: {e}", escape(&notice.to_string()));
        eprintln!("twofactor: {message}");
        log::send_as(log::COMMAND_IDENT, Severity::Warning, &message);
    }
}
