//! `twofactor fleet push [USER…]`: this host's file enrollments into the
//! fleet, each user in one transaction: the devices (`admin_enroll`, the
//! first `new` or with `--force` `force`, the others `add`), the backup
//! set with its hashes, then the state (`admin_import_state`: steps only
//! forward, used backup codes stay used, failures, lock, last success).
//! Never prints a seed. The files stay until the admin removes them.

use pam_twofactor::admin::{Admin, AdminError, audit};
use pam_twofactor::records::username::Username;
use pam_twofactor::records::{SecretRecord, State};
use serde_json::json;

use super::admin::{FleetAdmin, call_enroll};
use super::session::failed;
use crate::output::print_json;

/// What became of one user.
#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Moved: this many devices, backup codes left.
    Moved { devices: usize, backup_left: usize },
    /// Not moved, and why.
    Skipped(String),
    /// The push failed; nothing of the user was written.
    Failed(String),
}

/// `admin_import_state`'s arguments from a state: per device (in the
/// record's order) the last accepted step (`None`: none yet) and the
/// learned drift.
pub fn state_arrays(
    record: &SecretRecord,
    state: &State,
) -> (Vec<String>, Vec<Option<i64>>, Vec<i64>) {
    let labels: Vec<String> = record.devices.iter().map(|d| d.label.clone()).collect();
    let steps = labels
        .iter()
        .map(|l| {
            state
                .last_accepted_step
                .get(l)
                .map(|&s| i64::try_from(s).unwrap_or(i64::MAX))
        })
        .collect();
    let drifts = labels
        .iter()
        .map(|l| state.drift_steps.get(l).copied().unwrap_or(0))
        .collect();
    (labels, steps, drifts)
}

/// One user's record and state into the fleet, in one transaction (also
/// `import` with `[fleet]`, with a fresh state); with `replace` an
/// enrollment in the fleet is replaced, else it is
/// [`AdminError::AlreadyEnrolled`].
pub fn push_one(
    client: &mut postgres::Client,
    user: &Username,
    record: &SecretRecord,
    state: &State,
    replace: bool,
) -> Result<(), AdminError> {
    let mut tx = client.transaction().map_err(failed("begin"))?;
    let deliver_to = record.deliver_to.as_deref();
    let mut devices = record.devices.iter();
    let Some(first) = devices.next() else {
        return Err(AdminError::Database("the record has no device".into()));
    };
    let mode = if replace { "force" } else { "new" };
    call_enroll(&mut tx, user, first, mode, deliver_to, Some(&record.backup))?;
    for device in devices {
        call_enroll(&mut tx, user, device, "add", deliver_to, None)?;
    }
    let (labels, steps, drifts) = state_arrays(record, state);
    let used: Vec<&[u8]> = state.used_backup_codes.iter().map(|h| &h[..]).collect();
    let failures = i32::try_from(state.failures).unwrap_or(i32::MAX);
    let locked_until = state
        .locked_until
        .map(|t| i64::try_from(t).unwrap_or(i64::MAX));
    let last_success = state
        .last_success
        .map(|t| i64::try_from(t).unwrap_or(i64::MAX));
    let done: bool = tx
        .query_one(
            "SELECT twofactor.admin_import_state($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &user.as_str(),
                &failures,
                &locked_until,
                &last_success,
                &used,
                &labels,
                &steps,
                &drifts,
            ],
        )
        .and_then(|row| row.try_get(0))
        .map_err(failed("admin_import_state"))?;
    if !done {
        return Err(AdminError::Database(
            "admin_import_state found no enrollment just made; nothing was kept".into(),
        ));
    }
    tx.commit().map_err(failed("commit"))
}

/// Pushes `users` (none: every enrolled user) from `files` into `fleet`.
pub fn push(
    files: &Admin,
    fleet: &mut FleetAdmin,
    users: &[String],
    force: bool,
) -> Result<Vec<(String, Pushed)>, AdminError> {
    let names: Vec<Username> = if users.is_empty() {
        files.enrolled_users()?
    } else {
        users
            .iter()
            .map(|raw| Username::parse(raw).map_err(|e| AdminError::BadUser(raw.clone(), e)))
            .collect::<Result<_, _>>()?
    };
    let mut report = Vec::new();
    for user in names {
        let outcome = match files.read_enrollment(&user) {
            Ok(None) => Pushed::Skipped("not enrolled on this host".into()),
            Err(e) => Pushed::Failed(e.to_string()),
            Ok(Some((record, state))) => match fleet.is_enrolled(&user) {
                Err(e) => Pushed::Failed(e.to_string()),
                Ok(true) if !force => Pushed::Skipped(
                    "already enrolled in the fleet (--force replaces that enrollment)".into(),
                ),
                Ok(in_fleet) => match push_one(fleet.client(), &user, &record, &state, in_fleet) {
                    Ok(()) => {
                        audit::record(&format!(
                            "pushed {user} into the fleet ({} device(s), backup codes and state kept{})",
                            record.devices.len(),
                            if in_fleet {
                                ", replacing its fleet enrollment"
                            } else {
                                ""
                            }
                        ));
                        let backup_left =
                            pam_twofactor::policy::backup_codes_remaining(&record, &state);
                        Pushed::Moved {
                            devices: record.devices.len(),
                            backup_left,
                        }
                    }
                    // Someone enrolled the user in the fleet meanwhile.
                    Err(AdminError::AlreadyEnrolled(_)) => Pushed::Skipped(
                        "already enrolled in the fleet (--force replaces that enrollment)".into(),
                    ),
                    Err(e) => Pushed::Failed(e.to_string()),
                },
            },
        };
        report.push((user.to_string(), outcome));
    }
    Ok(report)
}

/// The `--json` object of a push: one entry per user, in order.
pub fn report_json(report: &[(String, Pushed)], state_dir: &str) -> serde_json::Value {
    let users: Vec<_> = report
        .iter()
        .map(|(user, p)| match p {
            Pushed::Moved {
                devices,
                backup_left,
            } => json!({"user": user, "result": "pushed", "devices": devices, "backup_codes_remaining": backup_left}),
            Pushed::Skipped(why) => json!({"user": user, "result": "skipped", "reason": why}),
            Pushed::Failed(why) => json!({"user": user, "result": "failed", "error": why}),
        })
        .collect();
    let moved = report
        .iter()
        .any(|(_, p)| matches!(p, Pushed::Moved { .. }));
    json!({"users": users, "state_dir": state_dir, "changed": moved})
}

/// `twofactor fleet push`: exit 0 when nothing failed, 1 otherwise.
pub fn run_push(
    fleet: &mut FleetAdmin,
    users: &[String],
    force: bool,
    json: bool,
) -> Result<u8, AdminError> {
    let files = Admin {
        config: fleet.admin.config.clone(),
        config_path: fleet.admin.config_path.clone(),
    };
    let report = push(&files, fleet, users, force)?;
    let state_dir = files.config.state_dir.display().to_string();
    let failed_any = report.iter().any(|(_, p)| matches!(p, Pushed::Failed(_)));
    let moved = report
        .iter()
        .any(|(_, p)| matches!(p, Pushed::Moved { .. }));
    if json {
        print_json(report_json(&report, &state_dir));
    } else {
        if report.is_empty() {
            println!("no user is enrolled in {state_dir}; nothing to push");
        }
        for (user, p) in &report {
            match p {
                Pushed::Moved {
                    devices,
                    backup_left,
                } => println!(
                    "{user}: pushed ({devices} device(s), {backup_left} backup code(s) left, state kept)"
                ),
                Pushed::Skipped(why) => println!("{user}: skipped: {why}"),
                Pushed::Failed(why) => println!("{user}: FAILED, nothing of it was pushed: {why}"),
            }
        }
        if moved {
            println!(
                "The files in {state_dir} stay: remove them once this host uses [fleet] (its logins then no longer read them)."
            );
        }
    }
    Ok(u8::from(failed_any))
}

#[cfg(test)]
mod tests {
    use super::*;
    use pam_twofactor::otp::backup::{KdfParams, new_backup_set};
    use pam_twofactor::otp::{Algorithm, SecretKey, TotpParams};
    use pam_twofactor::records::Device;

    fn device(label: &str) -> Device {
        Device {
            label: label.into(),
            secret: SecretKey::new(vec![7; 20]),
            params: TotpParams {
                algorithm: Algorithm::Sha1,
                digits: 6,
                period: 30,
            },
            created: 1,
        }
    }

    /// Each device gets its used step (or none) and its drift, in the
    /// record's order; entries of devices no longer there are dropped.
    #[test]
    fn the_state_arrays_follow_the_records_devices() {
        let (mut backup, _) = new_backup_set(1, 0).unwrap();
        backup.kdf = KdfParams::DEFAULT;
        let record = SecretRecord {
            created: 0,
            devices: vec![device("phone"), device("tablet")],
            backup,
            deliver_to: None,
        };
        let mut state = State::default();
        state.last_accepted_step.insert("tablet".into(), 55_000_000);
        state.last_accepted_step.insert("gone".into(), 9);
        state.drift_steps.insert("phone".into(), -2);
        let (labels, steps, drifts) = state_arrays(&record, &state);
        assert_eq!(labels, ["phone", "tablet"]);
        assert_eq!(steps, [None, Some(55_000_000)]);
        assert_eq!(drifts, [-2, 0]);
    }

    /// Each user is one entry saying what became of it; "changed" only
    /// when someone was pushed.
    #[test]
    fn the_json_report_has_one_entry_per_user() {
        let report = vec![
            (
                "alice".to_string(),
                Pushed::Moved {
                    devices: 2,
                    backup_left: 9,
                },
            ),
            ("bob".to_string(), Pushed::Skipped("already".into())),
            ("carol".to_string(), Pushed::Failed("down".into())),
        ];
        assert_eq!(
            report_json(&report, "/var/lib/twofactor"),
            json!({
                "users": [
                    {"user": "alice", "result": "pushed", "devices": 2, "backup_codes_remaining": 9},
                    {"user": "bob", "result": "skipped", "reason": "already"},
                    {"user": "carol", "result": "failed", "error": "down"},
                ],
                "state_dir": "/var/lib/twofactor",
                "changed": true,
            })
        );
        let none = report_json(&report[1..], "/x");
        assert_eq!(none["changed"], json!(false));
    }
}
