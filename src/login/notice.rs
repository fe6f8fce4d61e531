//! Telling the user of a login's security events (`[notify]`): a backup
//! code used, a lock begun, a device's clock drift learned, an enrollment
//! at first login. The module
//! starts no process inside sshd, sudo or login: it hands the notice to the
//! delivery service, best effort — a missing or failing service is logged
//! and never changes the login's outcome.

use crate::config::Config;
use crate::delivery::{self, Event, Notice};
use crate::host::clock::Clock;
use crate::host::log::{self, Severity};
use crate::policy::Verdict;
use crate::records::username::Username;

/// The event `verdict` (already stored) is for the user, if any; `period`
/// is that of the device an `AllowDrift` names.
pub(super) fn event_of(verdict: &Verdict, period: u32) -> Option<Event> {
    match verdict {
        Verdict::AllowBackup { remaining } => Some(Event::BackupCodeUsed {
            codes_left: u32::try_from(*remaining).unwrap_or(u32::MAX),
        }),
        Verdict::Deny {
            locked_until: Some(until),
            ..
        } => Some(Event::Locked { until: *until }),
        Verdict::AllowDrift { device, offset } => Some(Event::DriftLearned {
            device: device.clone(),
            offset_seconds: offset.saturating_mul(i64::from(period)),
        }),
        _ => None,
    }
}

/// Hands the event of `verdict` for `user` to the delivery service when
/// `[notify] command` is set; a failure is only logged.
pub(super) fn tell_of(
    config: &Config,
    user: &Username,
    verdict: &Verdict,
    period: u32,
    clock: &dyn Clock,
) {
    if let Some(event) = event_of(verdict, period) {
        tell(config, user, event, clock);
    }
}

/// Hands `event` of `user` to the delivery service when `[notify]
/// command` is set; a failure is only logged.
pub(super) fn tell(config: &Config, user: &Username, event: Event, clock: &dyn Clock) {
    if config.notify.command.is_none() {
        return;
    }
    let notice = Notice {
        user: user.clone(),
        event,
        time: clock.now(),
    };
    if let Err(e) = delivery::send_notice(config.delivery.socket(), &notice) {
        log::send(
            Severity::Warning,
            &format!("could not notify {}: {e}", notice),
        );
    }
}
