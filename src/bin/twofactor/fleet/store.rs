//! Where the admin commands' enrollments live: this host's files, or with
//! `[fleet]` the fleet's database. `commands.rs` and `enroll.rs` dispatch
//! here once; both stores give the same answers and errors, so the output
//! (text and `--json`) is the same.

use pam_twofactor::admin::{
    Admin, AdminError, DeviceInfo, EnrollOptions, Enrollment, Existing, ImportReport, Imported,
    Listed, Status,
};
use pam_twofactor::config::Config;
use pam_twofactor::otp::backup::BackupCode;
use pam_twofactor::records::State;

use super::admin::FleetAdmin;
use super::push::push_one;

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

    /// `import USER --google-authenticator FILE`: into the files, or with
    /// `[fleet]` into the fleet with a fresh state (one transaction).
    pub fn import_google_authenticator(
        &mut self,
        user: &str,
        text: &str,
        existing: Existing,
        now: u64,
    ) -> Result<Imported, AdminError> {
        match self {
            Store::Files(a) => a.import_google_authenticator(user, text, existing, now),
            Store::Fleet(f) => {
                let (admin, client) = f.parts();
                admin.import_google_authenticator_into(user, text, existing, now, &mut |u, r, e| {
                    push_one(client, u, r, &State::default(), e == Existing::Replace)
                })
            }
        }
    }

    /// `import --oath-usersfile FILE`, into the files or the fleet.
    pub fn import_oath_usersfile(
        &mut self,
        text: &str,
        existing: Existing,
        now: u64,
    ) -> Result<ImportReport, AdminError> {
        match self {
            Store::Files(a) => a.import_oath_usersfile(text, existing, now),
            Store::Fleet(f) => {
                let (admin, client) = f.parts();
                admin.import_oath_usersfile_into(text, existing, now, &mut |u, r, e| {
                    push_one(client, u, r, &State::default(), e == Existing::Replace)
                })
            }
        }
    }
}
