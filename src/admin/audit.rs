//! The admin's changes on record: every change `twofactor` makes to a
//! user's second factor leaves one syslog line (authpriv, ident
//! `twofactor`) saying what changed, for whom, and who acted — the uid
//! that ran the command, the login uid the kernel keeps for the session
//! (`/proc/self/loginuid`: sudo and su do not change it), and under sudo
//! the user sudo names (`SUDO_USER`; set by sudo, so only as trustworthy as
//! the root that ran the command). Never a secret, a code, a backup code or
//! a whole delivery target. Logging is best effort, as for the module.

use std::fmt;

use crate::host::log::{self, Severity};
use crate::records::username::escape;

/// Who ran the command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor {
    pub uid: u32,
    /// `None` when the kernel keeps none (a process not started from a login).
    pub login_uid: Option<u32>,
    /// `SUDO_USER`, escaped.
    pub sudo_user: Option<String>,
}

impl Actor {
    /// This process's actor.
    pub fn current() -> Actor {
        let login_uid = std::fs::read_to_string("/proc/self/loginuid")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .filter(|&uid| uid != u32::MAX);
        Actor {
            uid: nix::unistd::getuid().as_raw(),
            login_uid,
            sudo_user: std::env::var("SUDO_USER")
                .ok()
                .filter(|name| !name.is_empty())
                .map(|name| escape(&name)),
        }
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uid={}", self.uid)?;
        match self.login_uid {
            Some(uid) => write!(f, " loginuid={uid}")?,
            None => f.write_str(" loginuid=unset")?,
        }
        if let Some(name) = &self.sudo_user {
            write!(f, " sudo_user={name}")?;
        }
        Ok(())
    }
}

/// The syslog message for `event` done by `actor`.
pub fn message(event: &str, actor: &Actor) -> String {
    format!("{event}; by {actor}")
}

/// Logs `event` (e.g. "enrolled alice (device default)") as done by this
/// process's actor.
pub fn record(event: &str) {
    log::send_as(
        log::COMMAND_IDENT,
        Severity::Notice,
        &message(event, &Actor::current()),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The actor is spelled out in full, with an escaped sudo user, and a
    /// missing login uid says so.
    #[test]
    fn the_message_names_the_event_and_who_acted() {
        let actor = Actor {
            uid: 0,
            login_uid: Some(1000),
            sudo_user: Some(escape("al\nice")),
        };
        assert_eq!(
            message("unlocked bob", &actor),
            "unlocked bob; by uid=0 loginuid=1000 sudo_user=al\\x0aice"
        );
        let actor = Actor {
            uid: 0,
            login_uid: None,
            sudo_user: None,
        };
        assert_eq!(
            message("disabled bob", &actor),
            "disabled bob; by uid=0 loginuid=unset"
        );
    }
}
