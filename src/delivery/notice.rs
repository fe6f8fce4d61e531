//! Telling a user of a security change to their second factor
//! (`[notify] command`): the events, the request the module sends the
//! delivery service for events of a login, and the message the command
//! reads on stdin. Nothing in a notice is secret: no code, seed, backup
//! code or delivery target.

use std::fmt;

use super::DeliveryError;
use crate::host::timefmt;
use crate::records;
use crate::records::username::Username;

/// The first line of a notification request. A code request starts with a
/// user name, which can never hold a `!` (`Username::parse`), so the two
/// kinds cannot be mistaken for each other.
pub(super) const NOTICE_TAG: &str = "!notify";

/// What happened to a user's second factor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Enrolled (by `enroll`, `enroll --force` or `import`).
    Enrolled,
    /// A device was added (`enroll --add`).
    DeviceAdded { device: String },
    /// A device was removed (`remove-device`).
    DeviceRemoved { device: String },
    /// New backup codes replaced the old ones (`backup-codes`).
    BackupCodesRegenerated,
    /// A login used a backup code; `codes_left` remain.
    BackupCodeUsed { codes_left: u32 },
    /// Too many failures locked the user until `until` (Unix seconds).
    Locked { until: u64 },
    /// An admin cleared the failures and the lock (`unlock`).
    Unlocked,
    /// The enrollment was removed (`disable`).
    Disabled,
    /// A login learned that `device`'s clock is off by `offset_seconds`.
    DriftLearned { device: String, offset_seconds: i64 },
}

impl Event {
    /// The event's word, the command's second argument.
    pub fn word(&self) -> &'static str {
        match self {
            Event::Enrolled => "enrolled",
            Event::DeviceAdded { .. } => "device-added",
            Event::DeviceRemoved { .. } => "device-removed",
            Event::BackupCodesRegenerated => "backup-codes-regenerated",
            Event::BackupCodeUsed { .. } => "backup-code-used",
            Event::Locked { .. } => "locked",
            Event::Unlocked => "unlocked",
            Event::Disabled => "disabled",
            Event::DriftLearned { .. } => "drift-learned",
        }
    }

    /// The event's own fields as `key: value` pairs; times are Unix
    /// seconds here (the request) and RFC 3339 in the message.
    fn fields(&self) -> Vec<(&'static str, String)> {
        match self {
            Event::DeviceAdded { device } | Event::DeviceRemoved { device } => {
                vec![("device", device.clone())]
            }
            Event::BackupCodeUsed { codes_left } => vec![("codes_left", codes_left.to_string())],
            Event::Locked { until } => vec![("until", until.to_string())],
            Event::DriftLearned {
                device,
                offset_seconds,
            } => vec![
                ("device", device.clone()),
                ("offset_seconds", offset_seconds.to_string()),
            ],
            _ => Vec::new(),
        }
    }

    /// Rebuilds an event from its word and fields (the request, read by
    /// the service); `None` if a field is missing, extra or invalid.
    fn from_parts(word: &str, fields: &[(&str, &str)]) -> Option<Event> {
        let device = |value: &str| records::valid_label(value).then(|| value.to_string());
        let event = match (word, fields) {
            ("enrolled", []) => Event::Enrolled,
            ("device-added", [("device", d)]) => Event::DeviceAdded { device: device(d)? },
            ("device-removed", [("device", d)]) => Event::DeviceRemoved { device: device(d)? },
            ("backup-codes-regenerated", []) => Event::BackupCodesRegenerated,
            ("backup-code-used", [("codes_left", n)]) => Event::BackupCodeUsed {
                codes_left: number(n)?,
            },
            ("locked", [("until", t)]) => Event::Locked { until: number(t)? },
            ("unlocked", []) => Event::Unlocked,
            ("disabled", []) => Event::Disabled,
            ("drift-learned", [("device", d), ("offset_seconds", s)]) => {
                let offset_seconds = match s.strip_prefix('-') {
                    Some(digits) => -i64::from(number::<u32>(digits)?),
                    None => i64::from(number::<u32>(s)?),
                };
                Event::DriftLearned {
                    device: device(d)?,
                    offset_seconds,
                }
            }
            _ => return None,
        };
        Some(event)
    }

    /// One sentence for people.
    fn sentence(&self, user: &str, host: &str) -> String {
        match self {
            Event::Enrolled => format!("A second factor was set up for {user} on {host}."),
            Event::DeviceAdded { device } => {
                format!("A device ({device}) was added to the second factor of {user} on {host}.")
            }
            Event::DeviceRemoved { device } => format!(
                "A device ({device}) was removed from the second factor of {user} on {host}."
            ),
            Event::BackupCodesRegenerated => format!(
                "New backup codes were made for {user} on {host}; the old ones no longer work."
            ),
            Event::BackupCodeUsed { codes_left } => {
                format!("A backup code was used to log in as {user} on {host}; {codes_left} left.")
            }
            Event::Locked { until } => format!(
                "After too many wrong codes, {user} on {host} is locked until {}.",
                timefmt::human(*until)
            ),
            Event::Unlocked => format!("An administrator unlocked {user} on {host}."),
            Event::Disabled => {
                format!("The second factor of {user} on {host} was removed.")
            }
            Event::DriftLearned {
                device,
                offset_seconds,
            } => format!(
                "The clock of device {device} of {user} is off by {offset_seconds} seconds; {host} now allows for it."
            ),
        }
    }
}

/// Only plain ASCII digits, as everywhere codes and counts are read.
fn number<T: std::str::FromStr>(text: &str) -> Option<T> {
    if text.is_empty() || text.len() > 20 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// One event for one user at one time (Unix seconds).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    pub user: Username,
    pub event: Event,
    pub time: u64,
}

impl Notice {
    /// The notification request: `!notify`, `user:`, `event:`, `time:`
    /// and the event's fields, one `key: value` line each, then an empty
    /// line. Refused if a device label is not a valid label.
    pub(super) fn encode(&self) -> Result<String, DeliveryError> {
        let mut text = format!(
            "{NOTICE_TAG}\nuser: {}\nevent: {}\ntime: {}\n",
            self.user.as_str(),
            self.event.word(),
            self.time
        );
        for (key, value) in self.event.fields() {
            if key == "device" && !records::valid_label(&value) {
                return Err(DeliveryError::BadRequest("bad device label"));
            }
            text.push_str(&format!("{key}: {value}\n"));
        }
        text.push('\n');
        Ok(text)
    }

    /// Reads a notification request (the whole text, `!notify` first,
    /// ending with an empty line), checking every field.
    pub(super) fn decode(text: &str) -> Result<Notice, DeliveryError> {
        let bad = DeliveryError::BadRequest;
        let body = text
            .strip_prefix(NOTICE_TAG)
            .and_then(|rest| rest.strip_prefix('\n'))
            .and_then(|rest| rest.strip_suffix("\n\n"))
            .ok_or(bad("not a notification"))?;
        let mut pairs = Vec::new();
        for line in body.split('\n') {
            let (key, value) = line.split_once(": ").ok_or(bad("not a key: value line"))?;
            pairs.push((key, value));
        }
        let (Some(("user", user)), Some(("event", word)), Some(("time", time))) =
            (pairs.first(), pairs.get(1), pairs.get(2))
        else {
            return Err(bad("user, event and time missing"));
        };
        let user = Username::parse(user).map_err(|_| bad("bad user name"))?;
        let time = number(time).ok_or(bad("bad time"))?;
        let event =
            Event::from_parts(word, pairs.get(3..).unwrap_or_default()).ok_or(bad("bad event"))?;
        Ok(Notice { user, event, time })
    }

    /// What the command reads on stdin: `key: value` lines (`user`,
    /// `event`, `time` and the event's fields, times in RFC 3339 UTC, and
    /// `host`), an empty line, and one sentence for people.
    pub fn message(&self, host: &str) -> String {
        let user = self.user.as_str();
        let mut text = format!(
            "user: {user}\nevent: {}\ntime: {}\nhost: {host}\n",
            self.event.word(),
            timefmt::rfc3339(self.time)
        );
        for (key, value) in self.event.fields() {
            let value = match (&self.event, key) {
                (Event::Locked { until }, "until") => timefmt::rfc3339(*until),
                _ => value,
            };
            text.push_str(&format!("{key}: {value}\n"));
        }
        text.push('\n');
        text.push_str(&self.event.sentence(user, host));
        text.push_str(" If this was not you, tell your administrator at once.\n");
        text
    }
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {}", self.user.as_str(), self.event.word())
    }
}

/// Runs `command USER EVENT` with the notice's message on stdin, as the
/// delivery command runs (`service::run_command`: only PATH, in `/`,
/// killed after 10 s). Used by the delivery service for events of a login
/// and by `twofactor` itself for the admin's changes.
pub fn notify(command: &std::path::Path, notice: &Notice, host: &str) -> Result<(), DeliveryError> {
    let message = notice.message(host);
    super::service::run_command(
        command,
        [notice.user.as_str(), notice.event.word()],
        message.as_bytes(),
    )
}
