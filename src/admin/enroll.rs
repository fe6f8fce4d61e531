//! `twofactor enroll`: a new secret and backup codes for a user, or with
//! `--add` one more device beside the existing ones.

use super::{Admin, AdminError, check_target, existing_user};
use crate::otp::backup::{self, BackupCode};
use crate::otp::uri::otpauth_uri;
use crate::otp::{self, Algorithm, SecretKey, TotpParams};
use crate::records::user::UserFiles;
use crate::records::username::{Username, escape};
use crate::records::{self, DEFAULT_DEVICE, Device, SecretRecord, State};

/// Options of `twofactor enroll`.
#[derive(Debug, Default)]
pub struct EnrollOptions {
    pub secret: Option<String>,
    pub algorithm: Option<String>,
    pub digits: Option<u8>,
    pub period: Option<u32>,
    pub force: bool,
    /// Add another device to an existing enrollment (`--add`).
    pub add: bool,
    /// The device's label (`--label`, default `default`).
    pub label: Option<String>,
    /// Where codes by message go (`--deliver-to`).
    pub deliver_to: Option<String>,
}

/// An enrollment's inputs, checked, with its secret: what
/// [`Admin::check_enrollment`] hands to a store.
pub struct CheckedEnrollment {
    pub user: Username,
    pub label: String,
    pub params: TotpParams,
    pub secret: SecretKey,
}

/// What `enroll` made, to show once.
pub struct Enrollment {
    pub user: Username,
    pub label: String,
    pub params: TotpParams,
    pub secret: SecretKey,
    pub uri: String,
    pub backup_codes: Vec<BackupCode>,
}

impl Admin {
    /// The config's TOTP parameters with `--algorithm`, `--digits` and
    /// `--period` applied, each checked against its range.
    fn params(&self, opts: &EnrollOptions) -> Result<TotpParams, AdminError> {
        let mut params = self.config.totp;
        if let Some(name) = &opts.algorithm {
            params.algorithm = Algorithm::parse(&name.to_ascii_uppercase()).ok_or_else(|| {
                AdminError::BadOption(format!("--algorithm {name:?}: use SHA1, SHA256 or SHA512"))
            })?;
        }
        if let Some(digits) = opts.digits {
            if !otp::DIGITS.contains(&digits) {
                return Err(AdminError::BadOption(format!(
                    "--digits {digits}: use 6, 7 or 8"
                )));
            }
            params.digits = digits;
        }
        if let Some(period) = opts.period {
            if !otp::PERIODS.contains(&period) {
                return Err(AdminError::BadOption(format!(
                    "--period {period}: use 10 to 300 seconds"
                )));
            }
            params.period = period;
        }
        Ok(params)
    }

    /// The checks and choices of an enrollment, before any store is
    /// touched: the user, the parameters, the label, the delivery target
    /// and the secret (`--secret-file`, or 160 random bits). The file
    /// store below and the fleet (`admin_enroll`) both start here.
    pub fn check_enrollment(
        &self,
        raw_user: &str,
        opts: &EnrollOptions,
    ) -> Result<CheckedEnrollment, AdminError> {
        let user = existing_user(raw_user)?;
        let params = self.params(opts)?;
        let label = opts.label.clone().unwrap_or_else(|| DEFAULT_DEVICE.into());
        if !records::valid_label(&label) {
            return Err(AdminError::BadOption(format!(
                "--label {:?}: use 1 to 32 letters, digits, '_', '.' or '-'",
                escape(&label)
            )));
        }
        if let Some(target) = &opts.deliver_to {
            check_target(target)?;
        }
        let secret = match &opts.secret {
            Some(text) => SecretKey::from_base32(text).map_err(AdminError::BadSecret)?,
            None => SecretKey::new(
                backup::random_bytes::<20>()
                    .ok_or(AdminError::Crypto)?
                    .to_vec(),
            ),
        };
        Ok(CheckedEnrollment {
            user,
            label,
            params,
            secret,
        })
    }

    /// What to show once of a stored enrollment: the otpauth URI with
    /// this config's issuer, and the backup codes made for it.
    pub fn enrollment(&self, checked: CheckedEnrollment, codes: Vec<BackupCode>) -> Enrollment {
        let CheckedEnrollment {
            user,
            label,
            params,
            secret,
        } = checked;
        let uri = otpauth_uri(&self.config.issuer_name(), user.as_str(), &secret, params);
        Enrollment {
            user,
            label,
            params,
            secret,
            uri,
            backup_codes: codes,
        }
    }

    /// Enrolls `raw_user`: new secret (or `--secret`), new backup codes; or
    /// with `--add`, one more device beside the existing ones.
    pub fn enroll(
        &self,
        raw_user: &str,
        opts: &EnrollOptions,
        now: u64,
    ) -> Result<Enrollment, AdminError> {
        let checked = self.check_enrollment(raw_user, opts)?;
        let user = &checked.user;
        let device = Device {
            label: checked.label.clone(),
            secret: checked.secret.clone(),
            params: checked.params,
            created: now,
        };
        let dir = self.dir()?;
        let _lock = dir.lock(&user.lock_file())?;
        let codes = if opts.add {
            let Some(mut record) = UserFiles::new(&dir, user).read_record()? else {
                return Err(AdminError::NotEnrolled(user.to_string()));
            };
            if record.devices.iter().any(|d| d.label == device.label) {
                return Err(AdminError::BadOption(format!(
                    "{user} already has a device labelled {:?}; choose another --label or remove-device first",
                    device.label
                )));
            }
            if record.devices.len() >= 16 {
                return Err(AdminError::BadOption("at most 16 devices per user".into()));
            }
            // A new secret under this label: nothing learned about a device
            // once removed under the same label may carry over (its used step
            // would refuse good codes, its clock offset would shift them).
            Self::forget_device(&dir, user, &device.label)?;
            record.devices.push(device);
            if opts.deliver_to.is_some() {
                record.deliver_to.clone_from(&opts.deliver_to);
            }
            UserFiles::new(&dir, user).write_record(&record)?;
            Vec::new()
        } else {
            if !opts.force && UserFiles::new(&dir, user).record_exists()? {
                return Err(AdminError::AlreadyEnrolled(user.to_string()));
            }
            let (backup, codes) = crate::otp::backup::new_backup_set(self.config.backup_codes, now)
                .ok_or(AdminError::Crypto)?;
            let record = SecretRecord {
                created: now,
                devices: vec![device],
                backup,
                deliver_to: opts.deliver_to.clone(),
            };
            // State first: a fresh start for the new secret (no stale lock or
            // replay step), then the record that makes the user enrolled.
            UserFiles::new(&dir, user).reset_state(&State::default())?;
            UserFiles::new(&dir, user).write_record(&record)?;
            codes
        };
        Ok(self.enrollment(checked, codes))
    }
}
