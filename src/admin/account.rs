//! One user's enrollment at a glance and its upkeep: `status`, `unlock`,
//! `backup-codes` and `disable`.

use super::{Admin, AdminError, DeviceInfo, device_infos, existing_user};
use crate::otp::TotpParams;
use crate::otp::backup::BackupCode;
use crate::policy;
use crate::records::user::UserFiles;
use crate::records::username::Username;

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

impl Admin {
    /// Reports enrollment, parameters, backup codes left and lock state.
    pub fn status(&self, raw_user: &str, now: u64) -> Result<Status, AdminError> {
        let user = existing_user(raw_user)?;
        let dir = self.dir()?;
        let Some(record) = UserFiles::new(&dir, &user).read_record()? else {
            return Ok(Status {
                enrolled: false,
                params: None,
                backup_codes_remaining: None,
                failed_attempts: 0,
                locked_until: None,
                devices: Vec::new(),
                deliver_to: None,
            });
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

    /// Clears the failure count, the lock and the rate-limit window.
    pub fn unlock(&self, raw_user: &str) -> Result<(), AdminError> {
        let user = existing_user(raw_user)?;
        let dir = self.dir()?;
        if UserFiles::new(&dir, &user).read_record()?.is_none() {
            return Err(AdminError::NotEnrolled(user.to_string()));
        }
        let files = UserFiles::new(&dir, &user);
        let _lock = files.lock()?;
        let mut state = files.read_state()?;
        policy::unlock(&mut state);
        files.write_state(&state)?;
        Ok(())
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
        let mut state = UserFiles::new(&dir, &user).read_state()?;
        state.used_backup_codes.clear();
        UserFiles::new(&dir, &user).write_state(&state)?;
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
