//! Where the admin commands' enrollments live: this host's files, or with
//! `[fleet]` the fleet's database. `commands.rs` and `enroll.rs` dispatch
//! here once; both stores give the same answers and errors, so the output
//! (text and `--json`) is the same.

use pam_twofactor::admin::{
    Admin, AdminError, DeviceInfo, EnrollOptions, Enrollment, Listed, Status,
};
use pam_twofactor::config::Config;
use pam_twofactor::otp::backup::BackupCode;

use super::admin::FleetAdmin;

/// The admin commands' store.
pub enum Store {
    /// The state directory's files (no `[fleet]`).
    Files(Admin),
    /// The fleet's database (`[fleet]`).
    Fleet(FleetAdmin),
}

impl Store {
    /// The fleet when the config has `[fleet]`, else the files.
    pub fn open(admin: Admin) -> Result<Store, AdminError> {
        if admin.config.fleet.is_some() {
            Ok(Store::Fleet(FleetAdmin::connect(admin)?))
        } else {
            Ok(Store::Files(admin))
        }
    }

    pub fn admin(&self) -> &Admin {
        match self {
            Store::Files(admin) => admin,
            Store::Fleet(fleet) => &fleet.admin,
        }
    }

    pub fn config(&self) -> &Config {
        &self.admin().config
    }

    pub fn enroll(
        &mut self,
        user: &str,
        opts: &EnrollOptions,
        now: u64,
    ) -> Result<Enrollment, AdminError> {
        match self {
            Store::Files(a) => a.enroll(user, opts, now),
            Store::Fleet(f) => f.enroll(user, opts, now),
        }
    }

    pub fn list(&mut self, now: u64) -> Result<Vec<Listed>, AdminError> {
        match self {
            Store::Files(a) => a.list(now),
            Store::Fleet(f) => f.list(now),
        }
    }

    pub fn status(&mut self, user: &str, now: u64) -> Result<Status, AdminError> {
        match self {
            Store::Files(a) => a.status(user, now),
            Store::Fleet(f) => f.status(user, now),
        }
    }

    pub fn unlock(&mut self, user: &str) -> Result<bool, AdminError> {
        match self {
            Store::Files(a) => a.unlock(user),
            Store::Fleet(f) => f.unlock(user),
        }
    }

    pub fn regenerate_backup_codes(
        &mut self,
        user: &str,
        now: u64,
    ) -> Result<Vec<BackupCode>, AdminError> {
        match self {
            Store::Files(a) => a.regenerate_backup_codes(user, now),
            Store::Fleet(f) => f.regenerate_backup_codes(user, now),
        }
    }

    pub fn disable(&mut self, user: &str) -> Result<(), AdminError> {
        match self {
            Store::Files(a) => a.disable(user),
            Store::Fleet(f) => f.disable(user),
        }
    }

    pub fn devices(&mut self, user: &str) -> Result<Vec<DeviceInfo>, AdminError> {
        match self {
            Store::Files(a) => a.devices(user),
            Store::Fleet(f) => f.devices(user),
        }
    }

    pub fn remove_device(&mut self, user: &str, label: &str) -> Result<(), AdminError> {
        match self {
            Store::Files(a) => a.remove_device(user, label),
            Store::Fleet(f) => f.remove_device(user, label),
        }
    }

    pub fn set_delivery(&mut self, user: &str, target: Option<&str>) -> Result<bool, AdminError> {
        match self {
            Store::Files(a) => a.set_delivery(user, target),
            Store::Fleet(f) => f.set_delivery(user, target),
        }
    }

    /// The file store's admin for `import`, which writes only files: with
    /// `[fleet]` it is refused, naming the way that works.
    pub fn files_for_import(&self) -> Result<&Admin, AdminError> {
        match self {
            Store::Files(admin) => Ok(admin),
            Store::Fleet(_) => Err(AdminError::Usage(
                "import writes this host's files, not the fleet: import with a config that has the same state_dir and no [fleet] section (twofactor --config FILE import ...), then move the users into the fleet with: twofactor fleet push USER"
                    .into(),
            )),
        }
    }
}
