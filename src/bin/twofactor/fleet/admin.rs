//! The admin commands against the fleet: the same checks, answers and
//! errors as the file store's (`pam_twofactor::admin::Admin`), made
//! through the admin functions of docs/fleet.md. A seed goes into the
//! database once (`admin_enroll`) and is never read back.

use pam_twofactor::admin::{
    self, Admin, AdminError, EnrollOptions, Enrollment, Listed, Status, check_target, existing_user,
};
use pam_twofactor::otp::backup::{BackupCode, new_backup_set};
use pam_twofactor::otp::{Algorithm, TotpParams};
use pam_twofactor::records::username::{Username, escape};
use pam_twofactor::records::{BackupSet, Device};
use postgres::{Client, GenericClient, Row};

use super::session::{connect, failed, fleet_section};

/// The admin's view of the fleet: this config and one connection.
pub struct FleetAdmin {
    pub admin: Admin,
    /// Boxed: a client is large beside the file store's `Admin`.
    client: Box<Client>,
}

/// One row of `admin_users()`.
struct UserRow {
    user: String,
    failures: u32,
    locked_until: Option<u64>,
    last_success: Option<u64>,
    backup_left: usize,
    deliver_to: Option<String>,
}

/// An integer column of any width the functions may use.
fn int(row: &Row, column: &str) -> Result<Option<i64>, postgres::Error> {
    match row.try_get::<_, Option<i64>>(column) {
        Ok(v) => Ok(v),
        Err(_) => match row.try_get::<_, Option<i32>>(column) {
            Ok(v) => Ok(v.map(i64::from)),
            Err(_) => row
                .try_get::<_, Option<i16>>(column)
                .map(|v| v.map(i64::from)),
        },
    }
}

/// A value the database should never send (a negative count or time, an
/// unknown algorithm).
fn unexpected(what: &str) -> AdminError {
    AdminError::Database(format!(
        "fleet database: unexpected {what} (is the schema the one this twofactor knows? run twofactor fleet status)"
    ))
}

fn unsigned<T: TryFrom<i64>>(value: Option<i64>, what: &str) -> Result<T, AdminError> {
    value
        .and_then(|v| T::try_from(v).ok())
        .ok_or_else(|| unexpected(what))
}

fn time(value: Option<i64>, what: &str) -> Result<Option<u64>, AdminError> {
    value
        .map(|v| u64::try_from(v).map_err(|_| unexpected(what)))
        .transpose()
}

fn user_row(row: &Row) -> Result<UserRow, AdminError> {
    let read = || -> Result<_, postgres::Error> {
        Ok((
            row.try_get::<_, String>("user_name")?,
            int(row, "failures")?,
            int(row, "locked_until")?,
            int(row, "last_success")?,
            int(row, "backup_left")?,
            row.try_get::<_, Option<String>>("deliver_to")?,
        ))
    };
    let (user, failures, locked_until, last_success, backup_left, deliver_to) =
        read().map_err(failed("read admin_users()"))?;
    Ok(UserRow {
        user,
        failures: unsigned(failures.or(Some(0)), "failure count")?,
        locked_until: time(locked_until, "lock time")?,
        last_success: time(last_success, "last success time")?,
        backup_left: unsigned(backup_left.or(Some(0)), "backup code count")?,
        deliver_to,
    })
}

fn device_row(row: &Row) -> Result<admin::DeviceInfo, AdminError> {
    let read = || -> Result<_, postgres::Error> {
        Ok((
            row.try_get::<_, String>("label")?,
            row.try_get::<_, String>("algorithm")?,
            int(row, "digits")?,
            int(row, "period")?,
            int(row, "created")?,
            int(row, "drift_steps")?,
        ))
    };
    let (label, algorithm, digits, period, created, drift_steps) =
        read().map_err(failed("read admin_devices()"))?;
    let algorithm = Algorithm::parse(&algorithm).ok_or_else(|| unexpected("algorithm"))?;
    let period: u32 = unsigned(period, "period")?;
    Ok(admin::DeviceInfo {
        label,
        created: unsigned(created, "creation time")?,
        params: TotpParams {
            algorithm,
            digits: unsigned(digits, "digits")?,
            period,
        },
        drift_seconds: drift_steps.unwrap_or(0).saturating_mul(i64::from(period)),
    })
}

/// `admin_enroll`'s answer.
fn enroll_answer(user: &Username, label: &str, answer: &str) -> Result<(), AdminError> {
    match answer {
        "enrolled" => Ok(()),
        "exists" => Err(AdminError::AlreadyEnrolled(user.to_string())),
        "not_enrolled" => Err(AdminError::NotEnrolled(user.to_string())),
        "label_exists" => Err(AdminError::BadOption(format!(
            "{user} already has a device labelled {label:?}; choose another --label or remove-device first"
        ))),
        other => Err(unexpected(&format!(
            "answer {:?} from admin_enroll",
            escape(other)
        ))),
    }
}

/// `admin_enroll(…)` of one device on any client (a transaction for
/// `fleet push`); `backup` with `new` and `force`, `None` with `add`.
pub fn call_enroll(
    client: &mut impl GenericClient,
    user: &Username,
    device: &Device,
    mode: &str,
    deliver_to: Option<&str>,
    backup: Option<&BackupSet>,
) -> Result<(), AdminError> {
    let int = |v: u32| i32::try_from(v).map_err(|_| unexpected("cost"));
    let digits = i32::from(device.params.digits);
    let period = int(device.params.period)?;
    let backup_digits = backup.map(|b| i32::from(b.digits));
    let salt = backup.map(|b| &b.salt[..]);
    let (m, t, p) = match backup {
        Some(b) => (
            Some(int(b.kdf.m_cost)?),
            Some(int(b.kdf.t_cost)?),
            Some(int(b.kdf.p_cost)?),
        ),
        None => (None, None, None),
    };
    let hashes: Option<Vec<&[u8]>> = backup.map(|b| b.hashes.iter().map(|h| &h[..]).collect());
    let answer: String = client
        .query_one(
            "SELECT twofactor.admin_enroll($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
            &[
                &user.as_str(),
                &device.label,
                &device.secret.as_bytes(),
                &device.params.algorithm.name(),
                &digits,
                &period,
                &mode,
                &deliver_to,
                &backup_digits,
                &salt,
                &m,
                &t,
                &p,
                &hashes,
            ],
        )
        .and_then(|row| row.try_get(0))
        .map_err(failed("admin_enroll"))?;
    enroll_answer(user, &device.label, &answer)
}

impl FleetAdmin {
    /// Connects with `[fleet]` of `admin`'s config.
    pub fn connect(admin: Admin) -> Result<FleetAdmin, AdminError> {
        let client = Box::new(connect(fleet_section(&admin.config)?)?);
        Ok(FleetAdmin { admin, client })
    }

    /// The connection (for `fleet push`).
    pub fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    /// The file store's admin (config, parsers) and the client at once.
    pub fn parts(&mut self) -> (&Admin, &mut Client) {
        (&self.admin, &mut self.client)
    }

    /// `admin_users()`'s row of `user`, if enrolled.
    fn user(&mut self, user: &Username) -> Result<Option<UserRow>, AdminError> {
        let row = self
            .client
            .query_opt(
                "SELECT * FROM twofactor.admin_users() WHERE user_name = $1",
                &[&user.as_str()],
            )
            .map_err(failed("admin_users"))?;
        row.as_ref().map(user_row).transpose()
    }

    /// Whether `user` has an enrollment in the fleet.
    pub fn is_enrolled(&mut self, user: &Username) -> Result<bool, AdminError> {
        Ok(self.user(user)?.is_some())
    }

    fn user_devices(&mut self, user: &str) -> Result<Vec<admin::DeviceInfo>, AdminError> {
        self.client
            .query("SELECT * FROM twofactor.admin_devices($1)", &[&user])
            .map_err(failed("admin_devices"))?
            .iter()
            .map(device_row)
            .collect()
    }

    /// As `Admin::enroll`: the seed is written once, never read back.
    pub fn enroll(
        &mut self,
        raw_user: &str,
        opts: &EnrollOptions,
        now: u64,
    ) -> Result<Enrollment, AdminError> {
        let checked = self.admin.check_enrollment(raw_user, opts)?;
        let device = Device {
            label: checked.label.clone(),
            secret: checked.secret.clone(),
            params: checked.params,
            created: now,
        };
        // A cheap look first, so that `--if-missing` on an enrolled user
        // makes no backup codes; admin_enroll decides under its lock.
        if !opts.add && !opts.force && self.is_enrolled(&checked.user)? {
            return Err(AdminError::AlreadyEnrolled(checked.user.to_string()));
        }
        let (mode, backup) = if opts.add {
            ("add", None)
        } else {
            let made =
                new_backup_set(self.admin.config.backup_codes, now).ok_or(AdminError::Crypto)?;
            (if opts.force { "force" } else { "new" }, Some(made))
        };
        call_enroll(
            &mut *self.client,
            &checked.user,
            &device,
            mode,
            opts.deliver_to.as_deref(),
            backup.as_ref().map(|(set, _)| set),
        )?;
        let codes = backup.map(|(_, codes)| codes).unwrap_or_default();
        Ok(self.admin.enrollment(checked, codes))
    }

    /// As `Admin::list`: every user of the fleet, sorted by name.
    pub fn list(&mut self, _now: u64) -> Result<Vec<Listed>, AdminError> {
        let rows = self
            .client
            .query(
                "SELECT * FROM twofactor.admin_users() ORDER BY user_name",
                &[],
            )
            .map_err(failed("admin_users"))?;
        let users = rows.iter().map(user_row).collect::<Result<Vec<_>, _>>()?;
        let mut listed = Vec::new();
        for u in users {
            let devices = self.user_devices(&u.user)?;
            listed.push(Listed {
                user: u.user,
                devices,
                backup_codes_remaining: u.backup_left,
                failed_attempts: u.failures,
                locked_until: u.locked_until,
                last_success: u.last_success,
                deliver_to: u.deliver_to,
            });
        }
        Ok(listed)
    }

    /// As `Admin::status`.
    pub fn status(&mut self, raw_user: &str, _now: u64) -> Result<Status, AdminError> {
        let user = existing_user(raw_user)?;
        let Some(u) = self.user(&user)? else {
            return Ok(Status::not_enrolled());
        };
        let devices = self.user_devices(user.as_str())?;
        Ok(Status {
            enrolled: true,
            params: devices.first().map(|d| d.params),
            backup_codes_remaining: Some(u.backup_left),
            failed_attempts: u.failures,
            locked_until: u.locked_until,
            devices,
            deliver_to: u.deliver_to,
        })
    }

    /// As `Admin::unlock`: `false` when there were no failures and no lock.
    pub fn unlock(&mut self, raw_user: &str) -> Result<bool, AdminError> {
        let user = existing_user(raw_user)?;
        let Some(u) = self.user(&user)? else {
            return Err(AdminError::NotEnrolled(user.to_string()));
        };
        let done: bool = self
            .client
            .query_one("SELECT twofactor.admin_unlock($1)", &[&user.as_str()])
            .and_then(|row| row.try_get(0))
            .map_err(failed("admin_unlock"))?;
        if !done {
            return Err(AdminError::NotEnrolled(user.to_string()));
        }
        Ok(u.failures > 0 || u.locked_until.is_some())
    }

    /// As `Admin::regenerate_backup_codes`.
    pub fn regenerate_backup_codes(
        &mut self,
        raw_user: &str,
        now: u64,
    ) -> Result<Vec<BackupCode>, AdminError> {
        let user = existing_user(raw_user)?;
        if !self.is_enrolled(&user)? {
            return Err(AdminError::NotEnrolled(user.to_string()));
        }
        let (set, codes) =
            new_backup_set(self.admin.config.backup_codes, now).ok_or(AdminError::Crypto)?;
        if !set_backup(&mut *self.client, &user, &set)? {
            return Err(AdminError::NotEnrolled(user.to_string()));
        }
        Ok(codes)
    }

    /// As `Admin::disable`: also for users gone from passwd.
    pub fn disable(&mut self, raw_user: &str) -> Result<(), AdminError> {
        let user =
            Username::parse(raw_user).map_err(|e| AdminError::BadUser(raw_user.into(), e))?;
        let done: bool = self
            .client
            .query_one("SELECT twofactor.admin_disable($1)", &[&user.as_str()])
            .and_then(|row| row.try_get(0))
            .map_err(failed("admin_disable"))?;
        if done {
            Ok(())
        } else {
            Err(AdminError::NotEnrolled(user.to_string()))
        }
    }

    /// As `Admin::devices`.
    pub fn devices(&mut self, raw_user: &str) -> Result<Vec<admin::DeviceInfo>, AdminError> {
        let user = existing_user(raw_user)?;
        let devices = self.user_devices(user.as_str())?;
        if devices.is_empty() {
            return Err(AdminError::NotEnrolled(user.to_string()));
        }
        Ok(devices)
    }

    /// As `Admin::remove_device`: not the last one.
    pub fn remove_device(&mut self, raw_user: &str, label: &str) -> Result<(), AdminError> {
        let user = existing_user(raw_user)?;
        let answer: String = self
            .client
            .query_one(
                "SELECT twofactor.admin_remove_device($1, $2)",
                &[&user.as_str(), &label],
            )
            .and_then(|row| row.try_get(0))
            .map_err(failed("admin_remove_device"))?;
        match answer.as_str() {
            "removed" => Ok(()),
            "not_enrolled" => Err(AdminError::NotEnrolled(user.to_string())),
            "no_such_device" => Err(AdminError::BadOption(format!(
                "{user} has no device labelled {:?} (see: twofactor devices {user})",
                escape(label)
            ))),
            "last_device" => Err(AdminError::BadOption(format!(
                "{label:?} is {user}'s only device; use `twofactor disable {user}` to remove the enrollment"
            ))),
            other => Err(unexpected(&format!(
                "answer {:?} from admin_remove_device",
                escape(other)
            ))),
        }
    }

    /// As `Admin::set_delivery`: `false` when the fleet already said so.
    pub fn set_delivery(
        &mut self,
        raw_user: &str,
        target: Option<&str>,
    ) -> Result<bool, AdminError> {
        let user = existing_user(raw_user)?;
        if let Some(t) = target {
            check_target(t)?;
        }
        let Some(u) = self.user(&user)? else {
            return Err(AdminError::NotEnrolled(user.to_string()));
        };
        if u.deliver_to.as_deref() == target {
            return Ok(false);
        }
        let done: bool = self
            .client
            .query_one(
                "SELECT twofactor.admin_set_delivery($1, $2)",
                &[&user.as_str(), &target],
            )
            .and_then(|row| row.try_get(0))
            .map_err(failed("admin_set_delivery"))?;
        if !done {
            return Err(AdminError::NotEnrolled(user.to_string()));
        }
        Ok(true)
    }
}

/// `admin_set_backup(…)`: `false` when the user is not enrolled.
pub fn set_backup(
    client: &mut impl GenericClient,
    user: &Username,
    set: &BackupSet,
) -> Result<bool, AdminError> {
    let int = |v: u32| i32::try_from(v).map_err(|_| unexpected("cost"));
    let hashes: Vec<&[u8]> = set.hashes.iter().map(|h| &h[..]).collect();
    client
        .query_one(
            "SELECT twofactor.admin_set_backup($1, $2, $3, $4, $5, $6, $7)",
            &[
                &user.as_str(),
                &i32::from(set.digits),
                &&set.salt[..],
                &int(set.kdf.m_cost)?,
                &int(set.kdf.t_cost)?,
                &int(set.kdf.p_cost)?,
                &hashes,
            ],
        )
        .and_then(|row| row.try_get(0))
        .map_err(failed("admin_set_backup"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each answer of admin_enroll is the file store's error for the same
    /// case; an unknown answer is an error, never success.
    #[test]
    fn enroll_answers_map_to_the_file_stores_errors() {
        let alice = Username::parse("alice").unwrap();
        assert!(enroll_answer(&alice, "phone", "enrolled").is_ok());
        assert!(matches!(
            enroll_answer(&alice, "phone", "exists"),
            Err(AdminError::AlreadyEnrolled(u)) if u == "alice"
        ));
        assert!(matches!(
            enroll_answer(&alice, "phone", "not_enrolled"),
            Err(AdminError::NotEnrolled(_))
        ));
        let e = enroll_answer(&alice, "phone", "label_exists").unwrap_err();
        assert_eq!(
            e.to_string(),
            "alice already has a device labelled \"phone\"; choose another --label or remove-device first"
        );
        assert!(matches!(
            enroll_answer(&alice, "phone", "Enrolled"),
            Err(AdminError::Database(_))
        ));
    }

    /// Negative counts and times from the database are refused, not
    /// wrapped around.
    #[test]
    fn negative_numbers_from_the_database_are_refused() {
        assert_eq!(unsigned::<u32>(Some(3), "x").unwrap(), 3);
        assert!(unsigned::<u32>(Some(-1), "x").is_err());
        assert!(unsigned::<u8>(Some(300), "x").is_err());
        assert!(unsigned::<u32>(None, "x").is_err());
        assert_eq!(time(None, "x").unwrap(), None);
        assert_eq!(time(Some(5), "x").unwrap(), Some(5));
        assert!(time(Some(-5), "x").is_err());
    }
}
