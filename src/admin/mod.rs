//! The admin operations behind `twofactor`: a second door over the same
//! config, store, records and policy as the module, never a copy of them.
//! Every change to a user's files happens under that user's lock, so an
//! admin command never races a login.

pub mod import;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::config::{self, Config, ConfigError};
use crate::delivery::{self, DeliveryError};
use crate::otp::backup::{self, BackupCode};
use crate::otp::{self, Algorithm, SecretError, SecretKey, TotpParams};
use crate::policy;
use crate::records::user::{FilesError, UserFiles};
use crate::records::username::{Username, UsernameError, escape};
use crate::records::{
    self, DEFAULT_DEVICE, Device, MAX_RECORD_BYTES, RecordError, SecretRecord, State,
};
use crate::store::{self, Access, Named, StoreError, TrustedDir};

/// Why an admin command failed; `exit_code` is documented in twofactor(8).
#[derive(Debug)]
pub enum AdminError {
    /// The command line cannot be used as given (exit 2, like clap's
    /// own usage errors).
    Usage(String),
    /// The default config is root's: run as root (or pass --config).
    NotRoot,
    /// The user name is not acceptable.
    BadUser(String, UsernameError),
    /// The user is not in the passwd database.
    NoSuchUser(String),
    /// The configuration cannot be used.
    Config(ConfigError),
    /// A file or directory is unsafe or an I/O call failed.
    Store(StoreError),
    /// A record exists but is damaged.
    Record { path: PathBuf, error: RecordError },
    /// `enroll` without `--force` for an enrolled user.
    AlreadyEnrolled(String),
    /// The command needs an enrolled user.
    NotEnrolled(String),
    /// The secret given (`--secret-file`) is not usable.
    BadSecret(SecretError),
    /// An option has a value outside its range.
    BadOption(String),
    /// The OS random generator or the KDF failed.
    Crypto,
}

impl AdminError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            AdminError::Usage(_) => 2,
            AdminError::NotRoot => 3,
            AdminError::BadUser(..) | AdminError::NoSuchUser(_) => 4,
            AdminError::AlreadyEnrolled(_) | AdminError::NotEnrolled(_) => 5,
            AdminError::Config(_) | AdminError::Store(_) | AdminError::Record { .. } => 6,
            AdminError::BadSecret(_) | AdminError::BadOption(_) => 7,
            AdminError::Crypto => 1,
        }
    }
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::Usage(m) => f.write_str(m),
            AdminError::NotRoot => f.write_str(
                "twofactor must run as root (try: sudo twofactor ...); it manages root-only files",
            ),
            AdminError::BadUser(name, e) => write!(f, "user {:?}: {e}", escape(name)),
            AdminError::NoSuchUser(name) => {
                write!(
                    f,
                    "user {:?} does not exist in the passwd database",
                    escape(name)
                )
            }
            AdminError::Config(e) => write!(f, "{e}"),
            AdminError::Store(e) => write!(f, "{e}"),
            AdminError::Record { path, error } => write!(f, "{}: {error}", path.display()),
            AdminError::AlreadyEnrolled(u) => write!(
                f,
                "{u} is already enrolled; use --force to replace the secret (the old app entry and backup codes stop working)"
            ),
            AdminError::NotEnrolled(u) => {
                write!(f, "{u} is not enrolled (run: twofactor enroll {u})")
            }
            AdminError::BadSecret(e) => write!(f, "--secret-file: {e}"),
            AdminError::BadOption(m) => f.write_str(m),
            AdminError::Crypto => f.write_str("the OS random generator or argon2 failed"),
        }
    }
}

impl std::error::Error for AdminError {}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> AdminError {
        AdminError::Store(e)
    }
}

impl From<FilesError> for AdminError {
    fn from(e: FilesError) -> AdminError {
        match e {
            FilesError::Store(e) => AdminError::Store(e),
            FilesError::Record { path, error } => AdminError::Record { path, error },
        }
    }
}

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

/// The most `enroll --secret-file` reads: a 512-bit secret is 103 base32
/// letters (129 in groups of four), so 1 KiB holds any secret with its
/// padding and newline, and nothing much else.
pub const MAX_SECRET_INPUT: u64 = 1024;

/// The most an import file may hold (a pam_oath users file of thousands
/// of users fits).
pub const MAX_IMPORT_BYTES: u64 = 1 << 20;

/// The seed for `enroll --secret-file PATH`, surrounding whitespace
/// trimmed: from `stdin` for `-`, else from a regular file that only root
/// (or the caller) can read, opened without following a symlink or
/// blocking on a FIFO ([`store::read_named`]). Never from the command
/// line: every local user can read `/proc/PID/cmdline`. The bytes read
/// are wiped; the caller wipes the returned text.
pub fn read_secret_file(path: &Path, stdin: impl Read) -> Result<Zeroizing<String>, AdminError> {
    let bytes = if path == Path::new("-") {
        match store::read_at_most(stdin, MAX_SECRET_INPUT) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Err(AdminError::BadOption(format!(
                    "--secret-file -: more than {MAX_SECRET_INPUT} bytes on standard input; give one base32 secret"
                )));
            }
            Err(e) => {
                return Err(AdminError::BadOption(format!(
                    "--secret-file -: cannot read standard input: {e}"
                )));
            }
        }
    } else {
        store::read_named(path, Named::Seed, MAX_SECRET_INPUT)?
    };
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| AdminError::BadSecret(SecretError::NotBase32))?
        .trim();
    if text.is_empty() {
        return Err(AdminError::BadOption(format!(
            "--secret-file {}: no secret there (give one base32 secret)",
            path.display()
        )));
    }
    let mut secret = Zeroizing::new(String::with_capacity(text.len()));
    secret.push_str(text);
    Ok(secret)
}

/// A file to import from (`import --google-authenticator FILE`,
/// `--oath-usersfile FILE`): a regular file of at most
/// [`MAX_IMPORT_BYTES`], opened once without following a symlink or
/// blocking on a FIFO ([`store::read_named`]) — the google-authenticator
/// file sits in a directory its user controls. The bytes (seeds) are
/// wiped on drop.
pub fn read_import_file(path: &Path) -> Result<ImportText, AdminError> {
    let bytes = store::read_named(path, Named::Import, MAX_IMPORT_BYTES)?;
    if std::str::from_utf8(&bytes).is_err() {
        return Err(AdminError::BadOption(format!(
            "{}: not UTF-8 text",
            path.display()
        )));
    }
    Ok(ImportText(bytes))
}

/// The text of an import file, wiped on drop.
pub struct ImportText(Zeroizing<Vec<u8>>);

impl ImportText {
    pub fn as_str(&self) -> &str {
        // Checked to be UTF-8 by `read_import_file`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// One device as `devices` and `status` show it.
#[derive(Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    pub label: String,
    pub created: u64,
    pub params: TotpParams,
    /// The learned clock offset of the device.
    pub drift_seconds: i64,
}

/// Users imported, and lines skipped with why.
pub type ImportReport = (Vec<Imported>, Vec<(usize, String)>);

/// What `import` did for one user.
#[derive(Debug)]
pub struct Imported {
    pub user: String,
    /// Backup codes: the user's own scratch codes (google-authenticator)
    /// or a fresh set (pam_oath, which has none).
    pub backup_codes: Vec<String>,
    pub notes: Vec<String>,
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

/// One finding of `twofactor check`.
#[derive(Debug, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub problem: String,
}

/// The admin's view of one configuration.
pub struct Admin {
    pub config: Config,
    pub config_path: PathBuf,
}

impl Admin {
    /// Loads the config; only root may use the default (root-owned) one.
    pub fn open(config_path: Option<&Path>) -> Result<Admin, AdminError> {
        let path = match config_path {
            Some(p) => p.to_path_buf(),
            None => {
                if !nix::unistd::geteuid().is_root() {
                    return Err(AdminError::NotRoot);
                }
                PathBuf::from(config::DEFAULT_PATH)
            }
        };
        let path = if path.is_absolute() {
            path
        } else {
            std::env::current_dir()
                .map_err(|_| AdminError::BadOption("cannot resolve the config path".into()))?
                .join(path)
        };
        let config = Config::load(&path).map_err(AdminError::Config)?;
        Ok(Admin {
            config,
            config_path: path,
        })
    }

    fn dir(&self) -> Result<TrustedDir<'_>, AdminError> {
        Ok(TrustedDir::open(
            &self.config.state_dir,
            store::Dir::Private,
        )?)
    }

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

    /// Enrolls `raw_user`: new secret (or `--secret`), new backup codes; or
    /// with `--add`, one more device beside the existing ones.
    pub fn enroll(
        &self,
        raw_user: &str,
        opts: &EnrollOptions,
        now: u64,
    ) -> Result<Enrollment, AdminError> {
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
        let device = Device {
            label: label.clone(),
            secret: secret.clone(),
            params,
            created: now,
        };
        let dir = self.dir()?;
        let _lock = dir.lock(&user.lock_file())?;
        let codes = if opts.add {
            let Some(mut record) = UserFiles::new(&dir, &user).read_record()? else {
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
            Self::forget_device(&dir, &user, &device.label)?;
            record.devices.push(device);
            if opts.deliver_to.is_some() {
                record.deliver_to.clone_from(&opts.deliver_to);
            }
            UserFiles::new(&dir, &user).write_record(&record)?;
            Vec::new()
        } else {
            if !opts.force && UserFiles::new(&dir, &user).record_exists()? {
                return Err(AdminError::AlreadyEnrolled(user.to_string()));
            }
            let (backup, codes) = crate::otp::enroll::new_backup_set(self.config.backup_codes, now)
                .ok_or(AdminError::Crypto)?;
            let record = SecretRecord {
                created: now,
                devices: vec![device],
                backup,
                deliver_to: opts.deliver_to.clone(),
            };
            // State first: a fresh start for the new secret (no stale lock or
            // replay step), then the record that makes the user enrolled.
            UserFiles::new(&dir, &user).write_state(&State::default())?;
            UserFiles::new(&dir, &user).write_record(&record)?;
            codes
        };
        let uri = otpauth_uri(&self.config.issuer_name(), user.as_str(), &secret, params);
        Ok(Enrollment {
            user,
            label,
            params,
            secret,
            uri,
            backup_codes: codes,
        })
    }

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
    fn forget_device(dir: &TrustedDir, user: &Username, label: &str) -> Result<(), AdminError> {
        let mut state = UserFiles::new(dir, user).read_state()?;
        let used = state.last_accepted_step.remove(label).is_some();
        let drift = state.drift_steps.remove(label).is_some();
        if used || drift {
            UserFiles::new(dir, user).write_state(&state)?;
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

    /// Sets (or with `None` clears) where codes by message are sent.
    pub fn set_delivery(&self, raw_user: &str, target: Option<&str>) -> Result<(), AdminError> {
        let user = existing_user(raw_user)?;
        if let Some(t) = target {
            check_target(t)?;
        }
        self.modify_record(&user, |record| {
            record.deliver_to = target.map(str::to_string);
            Ok(())
        })
    }

    /// Imports a `~/.google_authenticator` file for `raw_user`.
    pub fn import_google_authenticator(
        &self,
        raw_user: &str,
        text: &str,
        force: bool,
        now: u64,
    ) -> Result<Imported, AdminError> {
        let user = existing_user(raw_user)?;
        let ga = crate::admin::import::parse_google_authenticator(text)
            .map_err(|e| AdminError::BadOption(format!("--google-authenticator: {e}")))?;
        let salt = backup::random_bytes::<{ backup::SALT_BYTES }>().ok_or(AdminError::Crypto)?;
        let kdf = backup::KdfParams::DEFAULT;
        let mut hashes = Vec::new();
        for code in &ga.scratch_codes {
            let hash = backup::hash_digits(code, &salt, kdf).ok_or(AdminError::Crypto)?;
            if !hashes.contains(&hash) {
                hashes.push(hash);
            }
        }
        let record = SecretRecord {
            created: now,
            devices: vec![Device {
                label: DEFAULT_DEVICE.into(),
                secret: ga.secret,
                params: ga.params,
                created: now,
            }],
            backup: records::BackupSet {
                created: now,
                digits: 8,
                kdf,
                salt,
                hashes,
            },
            deliver_to: None,
        };
        self.store_import(&user, &record, force)?;
        Ok(Imported {
            user: user.to_string(),
            backup_codes: ga.scratch_codes,
            notes: ga.notes,
        })
    }

    /// Imports every TOTP line of a pam_oath users file; returns the users
    /// imported and the lines skipped (line, why).
    pub fn import_oath_usersfile(
        &self,
        text: &str,
        force: bool,
        now: u64,
    ) -> Result<ImportReport, AdminError> {
        let file = crate::admin::import::parse_oath_usersfile(text);
        let mut skipped = file.skipped;
        let mut imported = Vec::new();
        for entry in file.users {
            let user = match existing_user(&entry.user) {
                Ok(u) => u,
                Err(e) => {
                    skipped.push((entry.line, e.to_string()));
                    continue;
                }
            };
            let (backup, codes) = crate::otp::enroll::new_backup_set(self.config.backup_codes, now)
                .ok_or(AdminError::Crypto)?;
            let record = SecretRecord {
                created: now,
                devices: vec![Device {
                    label: DEFAULT_DEVICE.into(),
                    secret: entry.secret,
                    params: entry.params,
                    created: now,
                }],
                backup,
                deliver_to: None,
            };
            match self.store_import(&user, &record, force) {
                Ok(()) => imported.push(Imported {
                    user: user.to_string(),
                    backup_codes: codes.iter().map(|c| c.grouped().to_string()).collect(),
                    notes: entry.notes,
                }),
                Err(e @ AdminError::AlreadyEnrolled(_)) => {
                    skipped.push((entry.line, e.to_string()))
                }
                Err(e) => return Err(e),
            }
        }
        skipped.sort();
        Ok((imported, skipped))
    }

    fn store_import(
        &self,
        user: &Username,
        record: &SecretRecord,
        force: bool,
    ) -> Result<(), AdminError> {
        let dir = self.dir()?;
        let _lock = dir.lock(&user.lock_file())?;
        if !force && UserFiles::new(&dir, user).record_exists()? {
            return Err(AdminError::AlreadyEnrolled(user.to_string()));
        }
        UserFiles::new(&dir, user).write_state(&State::default())?;
        UserFiles::new(&dir, user).write_record(record)?;
        Ok(())
    }

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
        let (backup, codes) = crate::otp::enroll::new_backup_set(self.config.backup_codes, now)
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

    /// With `[delivery] command` set: the command must pass the checks the
    /// delivery service makes before running it, and the delivery
    /// service's socket must be there and trusted, or no code by message
    /// can be sent (logins then say so and deny that way in).
    fn delivery_problems(&self) -> Vec<Problem> {
        let delivery = &self.config.delivery;
        let Some(command) = &delivery.command else {
            return Vec::new();
        };
        let mut problems = Vec::new();
        if let Err(e) = store::check_executable(command) {
            let (path, problem) = split_path(&e);
            problems.push(Problem {
                path,
                problem: format!("{problem} ([delivery] command: no code by message can be sent)"),
            });
        }
        let socket = delivery.socket();
        match delivery::check_socket(socket) {
            Ok(()) => {}
            Err(DeliveryError::Unsafe(e)) => {
                let (path, problem) = split_path(&e);
                problems.push(Problem {
                    path,
                    problem: format!(
                        "{problem} ([delivery] socket: the module will not send codes there)"
                    ),
                });
            }
            Err(_) => problems.push(Problem {
                path: socket.to_path_buf(),
                problem: "no delivery service listens here: no code by message can be sent (systemctl enable --now pam-twofactor-deliver.socket)".into(),
            }),
        }
        problems
    }

    /// Validates the config and every file in the state directory; returns
    /// every problem found (an empty list means all is well).
    pub fn check(config_path: Option<&Path>) -> Result<Vec<Problem>, AdminError> {
        let admin = match Admin::open(config_path) {
            Ok(a) => a,
            Err(AdminError::Config(e)) => {
                let path = config_path
                    .map_or_else(|| PathBuf::from(config::DEFAULT_PATH), Path::to_path_buf);
                return Ok(vec![Problem {
                    path,
                    problem: format!("{e} (fix the file; see twofactor.toml(5))"),
                }]);
            }
            Err(e) => return Err(e),
        };
        let mut problems = admin.delivery_problems();
        let dir = match admin.dir() {
            Ok(d) => d,
            Err(AdminError::Store(e)) => {
                let missing = matches!(
                    e,
                    StoreError::Io {
                        errno: nix::errno::Errno::ENOENT,
                        ..
                    }
                );
                let (path, mut problem) = split_path(&e);
                if missing {
                    problem.push_str(&format!(
                        " (create it with: install -d -o root -g root -m 0700 {})",
                        admin.config.state_dir.display()
                    ));
                }
                problems.push(Problem { path, problem });
                return Ok(problems);
            }
            Err(e) => return Err(e),
        };
        let mut enrolled = Vec::new();
        for name in dir.entries()? {
            let path = dir.path().join(&name);
            let mut report = |problem: String| {
                problems.push(Problem {
                    path: path.clone(),
                    problem,
                })
            };
            if crate::login::is_kdf_slot(&name) {
                continue;
            }
            let (stem, kind) = match name.rsplit_once('.') {
                Some((stem, kind @ ("secret" | "state" | "lock"))) => (stem, kind),
                _ => {
                    report(if name.contains(".tmp-") {
                        "stale temporary file from an interrupted write (safe to remove)".into()
                    } else {
                        "unexpected file in the state directory (move it elsewhere)".into()
                    });
                    continue;
                }
            };
            let Ok(user) = Username::parse(stem) else {
                report("file name is not a valid user name (move it elsewhere)".into());
                continue;
            };
            let bytes = match dir.read(&name, Access::Private, MAX_RECORD_BYTES) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => continue,
                Err(e) => {
                    report(split_path(&e).1);
                    continue;
                }
            };
            match kind {
                "secret" => {
                    enrolled.push(user.to_string());
                    if let Err(e) = SecretRecord::parse(&bytes) {
                        report(format!("{e} (re-enroll: twofactor enroll --force {user})"));
                    }
                    if matches!(nix::unistd::User::from_name(user.as_str()), Ok(None)) {
                        report(format!(
                            "user {user} does not exist in passwd (remove with: twofactor disable {user})"
                        ));
                    }
                }
                "state" => {
                    if let Err(e) = State::parse(&bytes) {
                        report(format!(
                            "{e} (logins of {user} fail until this is fixed; move the file away to reset it, which also forgets used backup codes: then run twofactor backup-codes {user})"
                        ));
                    }
                }
                _ => {}
            }
        }
        if let Ok(passwd) = std::fs::read_to_string(PASSWD) {
            for (first, uid, enrolled_alias) in aliases_before_enrolled(&passwd, &enrolled) {
                problems.push(Problem {
                    path: PathBuf::from(PASSWD),
                    problem: format!(
                        "{first} (uid {uid}) is listed before {enrolled_alias}, who is enrolled: logins as {first} do not use {enrolled_alias}'s enrollment (move {enrolled_alias}'s line above {first}'s, or enroll {first})"
                    ),
                });
            }
        }
        Ok(problems)
    }
}

/// The local user database `check` reads for names sharing a uid (NSS
/// sources such as LDAP are not enumerated).
const PASSWD: &str = "/etc/passwd";

/// `(first name, uid, enrolled later name)` for every uid whose first name
/// in `passwd` has no enrollment while a later name with the same uid has
/// one. The module redirects an unenrolled name to its uid's *first* name
/// (auth.rs, `enrolled_first_name`), so such a first name would get no
/// second factor of the account's under `unenrolled = "skip"`.
fn aliases_before_enrolled(passwd: &str, enrolled: &[String]) -> Vec<(String, u32, String)> {
    let mut first_of_uid: Vec<(u32, &str)> = Vec::new();
    let mut found = Vec::new();
    for line in passwd.lines() {
        let mut fields = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let Ok(uid) = uid.parse::<u32>() else {
            continue;
        };
        match first_of_uid.iter().find(|(u, _)| *u == uid) {
            None => first_of_uid.push((uid, name)),
            Some(&(_, first)) => {
                let is_enrolled = |n: &str| enrolled.iter().any(|e| e == n);
                if is_enrolled(name)
                    && !is_enrolled(first)
                    && !found
                        .iter()
                        .any(|(f, u, _): &(String, u32, String)| f == first && *u == uid)
                {
                    found.push((first.to_string(), uid, name.to_string()));
                }
            }
        }
    }
    found
}

/// A store error as (path, problem without the path), for `check`'s
/// `PATH: problem` lines.
fn split_path(e: &StoreError) -> (PathBuf, String) {
    let text = e.to_string();
    let path = match e {
        StoreError::Io { path, .. }
        | StoreError::Insecure { path, .. }
        | StoreError::TooLarge { path, .. }
        | StoreError::LockTimeout { path }
        | StoreError::BadPath { path } => path.clone(),
    };
    let prefix = format!("{}: ", path.display());
    let problem = text
        .strip_prefix(&prefix)
        .map_or(text.clone(), str::to_string);
    (path, problem)
}

fn device_infos(record: &SecretRecord, state: &State) -> Vec<DeviceInfo> {
    record
        .devices
        .iter()
        .map(|d| DeviceInfo {
            label: d.label.clone(),
            created: d.created,
            params: d.params,
            drift_seconds: state.drift_steps.get(&d.label).copied().unwrap_or(0)
                * i64::from(d.params.period),
        })
        .collect()
}

fn check_target(target: &str) -> Result<(), AdminError> {
    if records::valid_target(target) {
        Ok(())
    } else {
        Err(AdminError::BadOption(
            "--deliver-to: 1 to 128 characters without control characters".into(),
        ))
    }
}

/// A valid name that exists in the passwd database.
fn existing_user(raw: &str) -> Result<Username, AdminError> {
    let user = Username::parse(raw).map_err(|e| AdminError::BadUser(raw.into(), e))?;
    match nix::unistd::User::from_name(user.as_str()) {
        Ok(Some(_)) => Ok(user),
        _ => Err(AdminError::NoSuchUser(raw.into())),
    }
}

pub use crate::otp::enroll::{grouped_secret, otpauth_uri, qr_text};

/// Re-exported for the CLI's JSON output.
pub use records::VERSION as RECORD_VERSION;

#[cfg(test)]
mod tests {
    use super::*;

    /// The URI names every parameter and percent-encodes the label.
    #[test]
    fn uri_spells_out_every_parameter() {
        let secret = SecretKey::new(b"12345678901234567890".to_vec());
        let params = TotpParams {
            algorithm: Algorithm::Sha256,
            digits: 8,
            period: 60,
        };
        assert_eq!(
            otpauth_uri("My Host", "alice", &secret, params),
            "otpauth://totp/My%20Host:alice?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=My%20Host&algorithm=SHA256&digits=8&period=60"
        );
        assert_eq!(
            grouped_secret(&secret),
            "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ"
        );
    }

    /// The QR code renders as text.
    #[test]
    fn qr_code_renders_as_unicode_blocks() {
        let qr = qr_text("otpauth://totp/x:y?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap();
        assert!(qr.lines().count() > 10);
        assert!(qr.contains('█') || qr.contains('▀') || qr.contains('▄'));
    }

    /// Exit codes are distinct per class of error.
    /// Only an unenrolled first name before an enrolled alias is reported,
    /// once per uid.
    #[test]
    fn aliases_listed_before_an_enrolled_name_are_found() {
        let passwd = "root:x:0:0::/root:/bin/sh\n\
                      toor:x:0:0::/root:/bin/sh\n\
                      alias:x:1000:1000::/:/bin/sh\n\
                      alice:x:1000:1000::/:/bin/sh\n\
                      alice2:x:1000:1000::/:/bin/sh\n\
                      bob:x:1001:1001::/:/bin/sh\n\
                      # a comment line\n\
                      broken\n";
        let enrolled = |names: &[&str]| names.iter().map(|n| n.to_string()).collect::<Vec<_>>();
        assert_eq!(
            aliases_before_enrolled(passwd, &enrolled(&["alice", "alice2", "bob"])),
            [("alias".to_string(), 1000, "alice".to_string())]
        );
        // root first and enrolled: toor is redirected, nothing to report.
        assert!(aliases_before_enrolled(passwd, &enrolled(&["root", "toor"])).is_empty());
        assert!(aliases_before_enrolled(passwd, &enrolled(&["alias", "bob"])).is_empty());
    }

    /// `--secret-file -`: the secret is trimmed; nothing, only blanks, or
    /// more than 1 KiB on stdin is refused with exit 7.
    #[test]
    fn secret_from_stdin_is_trimmed_and_bounded() {
        let stdin = Path::new("-");
        let secret = read_secret_file(stdin, &b" \tGEZD GNBV\r\n"[..]).unwrap();
        assert_eq!(secret.as_str(), "GEZD GNBV");
        let full = vec![b'A'; MAX_SECRET_INPUT as usize];
        assert_eq!(read_secret_file(stdin, &full[..]).unwrap().len(), 1024);
        let over = vec![b'A'; MAX_SECRET_INPUT as usize + 1];
        let err = read_secret_file(stdin, &over[..]).unwrap_err();
        assert_eq!(err.exit_code(), 7, "{err}");
        assert!(err.to_string().contains("more than 1024 bytes"), "{err}");
        for empty in [&b""[..], &b" \n\n"[..]] {
            let err = read_secret_file(stdin, empty).unwrap_err();
            assert_eq!(err.exit_code(), 7, "{err}");
            assert!(err.to_string().contains("no secret"), "{err}");
        }
        let err = read_secret_file(stdin, &b"\xff\xfe"[..]).unwrap_err();
        assert!(matches!(err, AdminError::BadSecret(_)), "{err}");
    }

    #[test]
    fn exit_codes_follow_the_documented_table() {
        assert_eq!(AdminError::Usage("x".into()).exit_code(), 2);
        assert_eq!(AdminError::NotRoot.exit_code(), 3);
        assert_eq!(AdminError::NoSuchUser("x".into()).exit_code(), 4);
        assert_eq!(AdminError::AlreadyEnrolled("x".into()).exit_code(), 5);
        assert_eq!(AdminError::BadSecret(SecretError::NotBase32).exit_code(), 7);
    }
}
