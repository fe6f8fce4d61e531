//! A user's devices and where codes by message go: `devices`,
//! `remove-device` and `set-delivery` (`enroll --add` adds a device).

use super::{Admin, AdminError, DeviceInfo, check_target, device_infos, existing_user};
use crate::records::SecretRecord;
use crate::records::user::UserFiles;
use crate::records::username::{Username, escape};
use crate::store::TrustedDir;

impl Admin {
    /// Runs `change` on an enrolled user's secret record under the lock and
    /// writes it back.
    fn modify_record<T>(
        &self,
        user: &Username,
        change: impl FnOnce(&mut SecretRecord) -> Result<T, AdminError>,
    ) -> Result<T, AdminError> {
        self.modify_record_then(user, change, |_| Ok(()))
    }

    /// Like `modify_record`, then runs `after` on the directory while the
    /// lock is still held.
    fn modify_record_then<T>(
        &self,
        user: &Username,
        change: impl FnOnce(&mut SecretRecord) -> Result<T, AdminError>,
        after: impl FnOnce(&TrustedDir) -> Result<(), AdminError>,
    ) -> Result<T, AdminError> {
        let dir = self.dir()?;
        let _lock = dir.lock(&user.lock_file())?;
        let Some(mut record) = UserFiles::new(&dir, user).read_record()? else {
            return Err(AdminError::NotEnrolled(user.to_string()));
        };
        let result = change(&mut record)?;
        UserFiles::new(&dir, user).write_record(&record)?;
        after(&dir)?;
        Ok(result)
    }

    /// Drops the used step and learned clock offset kept for `label`; the
    /// caller holds the user's lock. Writes only when there was something.
    pub(super) fn forget_device(
        dir: &TrustedDir,
        user: &Username,
        label: &str,
    ) -> Result<(), AdminError> {
        let (mut state, slot) = UserFiles::new(dir, user).read_state_for_update()?;
        let used = state.last_accepted_step.remove(label).is_some();
        let drift = state.drift_steps.remove(label).is_some();
        if used || drift {
            UserFiles::new(dir, user).write_state(&state, slot)?;
        }
        Ok(())
    }

    /// The user's devices with their learned clock offsets.
    pub fn devices(&self, raw_user: &str) -> Result<Vec<DeviceInfo>, AdminError> {
        let user = existing_user(raw_user)?;
        let dir = self.dir()?;
        let Some(record) = UserFiles::new(&dir, &user).read_record()? else {
            return Err(AdminError::NotEnrolled(user.to_string()));
        };
        let state = {
            let _lock = dir.lock(&user.lock_file())?;
            UserFiles::new(&dir, &user).read_state()?
        };
        Ok(device_infos(&record, &state))
    }

    /// Removes one device; the last one cannot go (use `disable`).
    pub fn remove_device(&self, raw_user: &str, label: &str) -> Result<(), AdminError> {
        let user = existing_user(raw_user)?;
        // The record first: should the state write then fail, the stale
        // entries are harmless (no device has the label) and `enroll --add`
        // clears them before a device takes the label again.
        self.modify_record_then(&user, |record| {
            let Some(i) = record.devices.iter().position(|d| d.label == label) else {
                return Err(AdminError::BadOption(format!(
                    "{user} has no device labelled {:?} (see: twofactor devices {user})",
                    escape(label)
                )));
            };
            if record.devices.len() == 1 {
                return Err(AdminError::BadOption(format!(
                    "{label:?} is {user}'s only device; use `twofactor disable {user}` to remove the enrollment"
                )));
            }
            record.devices.remove(i);
            Ok(())
        }, |dir| Self::forget_device(dir, &user, label))
    }

    /// Sets (or with `None` clears) where codes by message are sent;
    /// `false` when the record already said so.
    pub fn set_delivery(&self, raw_user: &str, target: Option<&str>) -> Result<bool, AdminError> {
        let user = existing_user(raw_user)?;
        if let Some(t) = target {
            check_target(t)?;
        }
        self.modify_record(&user, |record| {
            let changed = record.deliver_to.as_deref() != target;
            record.deliver_to = target.map(str::to_string);
            Ok(changed)
        })
    }
}
