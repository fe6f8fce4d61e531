//! One user's enrollment at a glance and its upkeep: `status`, `list`,
//! `unlock`, `backup-codes` and `disable`.

use super::{Admin, AdminError, DeviceInfo, device_infos, existing_user};
use crate::otp::TotpParams;
use crate::otp::backup::BackupCode;
use crate::policy;
use crate::records::user::UserFiles;
use crate::records::username::Username;
use crate::records::{SecretRecord, State};

/// What `status` reports.
#[derive(Debug, PartialEq, Eq)]
pub struct Status {
    pub enrolled: bool,
    pub params: Option<TotpParams>,
    pub backup_codes_remaining: Option<usize>,
    pub failed_attempts: u32,
    pub locked_until: Option<u64>,
    pub devices: Vec<DeviceInfo>,
    pub deliver_to: Option<String>,
}

impl Status {
    /// The status of a user who is not enrolled (in the files or the fleet).
    pub fn not_enrolled() -> Status {
        Status {
            enrolled: false,
            params: None,
            backup_codes_remaining: None,
            failed_attempts: 0,
            locked_until: None,
            devices: Vec::new(),
            deliver_to: None,
        }
    }
}

/// One enrolled user as `list` shows it.
#[derive(Debug, PartialEq, Eq)]
pub struct Listed {
    pub user: String,
    pub devices: Vec<DeviceInfo>,
    pub backup_codes_remaining: usize,
    pub failed_attempts: u32,
    pub locked_until: Option<u64>,
    /// The last accepted code, as the module recorded it (`None` before
    /// the first one, or in a state from before it was recorded).
    pub last_success: Option<u64>,
    pub deliver_to: Option<String>,
}

impl Admin {
    /// Every enrolled user (every `<user>.secret` in the state directory,
    /// also of users since deleted from passwd), sorted by name. Names
    /// that are not valid user names are skipped here; `check` names them.
    pub fn list(&self, now: u64) -> Result<Vec<Listed>, AdminError> {
        let dir = self.dir()?;
        let mut listed = Vec::new();
        for name in dir.entries()? {
            let Some(user) = name
                .strip_suffix(".secret")
                .and_then(|stem| Username::parse(stem).ok())
            else {
                continue;
            };
            let files = UserFiles::new(&dir, &user);
            let _lock = files.lock()?;
            // Removed (`disable`) since the directory was read.
            let Some(record) = files.read_record()? else {
                continue;
            };
            let state = files.read_state()?;
            listed.push(Listed {
                user: user.to_string(),
                devices: device_infos(&record, &state),
                backup_codes_remaining: policy::backup_codes_remaining(&record, &state),
                failed_attempts: policy::failures_at(&state, now),
                locked_until: policy::lock_at(&state, now),
                last_success: state.last_success,
                deliver_to: record.deliver_to.clone(),
            });
        }
        Ok(listed)
    }

    /// Every enrolled user's name (a `<user>.secret` in the state
    /// directory), sorted, for `twofactor fleet push`.
    pub fn enrolled_users(&self) -> Result<Vec<Username>, AdminError> {
        let dir = self.dir()?;
        // `entries` is sorted.
        Ok(dir
            .entries()?
            .iter()
            .filter_map(|name| name.strip_suffix(".secret"))
            .filter_map(|stem| Username::parse(stem).ok())
            .collect())
    }

    /// A user's secret record and state as they are under the user's lock
    /// (`None`: not enrolled), for `twofactor fleet push`.
    pub fn read_enrollment(
        &self,
        user: &Username,
    ) -> Result<Option<(SecretRecord, State)>, AdminError> {
        let dir = self.dir()?;
        let files = UserFiles::new(&dir, user);
        let _lock = files.lock()?;
        let Some(record) = files.read_record()? else {
            return Ok(None);
        };
        let state = files.read_state()?;
        Ok(Some((record, state)))
    }

    /// Reports enrollment, parameters, backup codes left and lock state.
    pub fn status(&self, raw_user: &str, now: u64) -> Result<Status, AdminError> {
        let user = existing_user(raw_user)?;
        let dir = self.dir()?;
        let Some(record) = UserFiles::new(&dir, &user).read_record()? else {
            return Ok(Status::not_enrolled());
        };
        let state = {
            let _lock = dir.lock(&user.lock_file())?;
            UserFiles::new(&dir, &user).read_state()?
        };
        Ok(Status {
            enrolled: true,
            params: record.devices.first().map(|d| d.params),
            backup_codes_remaining: Some(policy::backup_codes_remaining(&record, &state)),
            failed_attempts: policy::failures_at(&state, now),
            locked_until: policy::lock_at(&state, now),
            devices: device_infos(&record, &state),
            deliver_to: record.deliver_to.clone(),
        })
    }

    /// Clears the failure count, the lock and the rate-limit window;
    /// `false` when there was nothing to clear (nothing is written).
    pub fn unlock(&self, raw_user: &str) -> Result<bool, AdminError> {
        let user = existing_user(raw_user)?;
        let dir = self.dir()?;
        if UserFiles::new(&dir, &user).read_record()?.is_none() {
            return Err(AdminError::NotEnrolled(user.to_string()));
        }
        let files = UserFiles::new(&dir, &user);
        let _lock = files.lock()?;
        let (mut state, slot) = files.read_state_for_update()?;
        let before = state.clone();
        policy::unlock(&mut state);
        if state == before {
            return Ok(false);
        }
        files.write_state(&state, slot)?;
        Ok(true)
    }

    /// Replaces the backup codes; the old ones stop working at once.
    pub fn regenerate_backup_codes(
        &self,
        raw_user: &str,
        now: u64,
    ) -> Result<Vec<BackupCode>, AdminError> {
        let user = existing_user(raw_user)?;
        let dir = self.dir()?;
        let _lock = dir.lock(&user.lock_file())?;
        let Some(mut record) = UserFiles::new(&dir, &user).read_record()? else {
            return Err(AdminError::NotEnrolled(user.to_string()));
        };
        let (backup, codes) = crate::otp::backup::new_backup_set(self.config.backup_codes, now)
            .ok_or(AdminError::Crypto)?;
        record.backup = backup;
        UserFiles::new(&dir, &user).write_record(&record)?;
        let (mut state, slot) = UserFiles::new(&dir, &user).read_state_for_update()?;
        state.used_backup_codes.clear();
        UserFiles::new(&dir, &user).write_state(&state, slot)?;
        Ok(codes)
    }

    /// Removes the user's secret and state (the lock file stays: it is
    /// never unlinked). Works for users already deleted from passwd.
    pub fn disable(&self, raw_user: &str) -> Result<(), AdminError> {
        let user =
            Username::parse(raw_user).map_err(|e| AdminError::BadUser(raw_user.into(), e))?;
        let dir = self.dir()?;
        let _lock = dir.lock(&user.lock_file())?;
        if !UserFiles::new(&dir, &user).record_exists()? {
            return Err(AdminError::NotEnrolled(user.to_string()));
        }
        UserFiles::new(&dir, &user).remove()?;
        Ok(())
    }
}
