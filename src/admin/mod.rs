//! The admin operations behind `twofactor`: a second door over the same
//! config, store, records and policy as the module, never a copy of them.
//! Every change to a user's files happens under that user's lock, so an
//! admin command never races a login.

mod account;
pub mod audit;
mod check;
mod devices;
mod enroll;
pub mod import;
mod input_files;
pub mod notify;
mod pam_stacks;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::config::{self, Config, ConfigError};
use crate::otp::{SecretError, TotpParams};
use crate::records::user::FilesError;
use crate::records::username::{Username, UsernameError, escape};
use crate::records::{self, RecordError, SecretRecord, State};
use crate::store::{StoreError, TrustedDir};

/// Why an admin command failed; `exit_code` is documented in twofactor(8).
#[derive(Debug)]
pub enum AdminError {
    /// The command line cannot be used as given (exit 2, like clap's
    /// own usage errors).
    Usage(String),
    /// The default config is root's: run as root (or pass --config).
    NotRoot,
    /// A non-root caller was denied access to a root-only file or
    /// directory (with `--config`): the error, as the store named it.
    NotRootFor(StoreError),
    /// `--config PATH` names no file: an explicit config is never
    /// replaced by the defaults.
    NoConfig(PathBuf),
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
    /// Fleet mode: the database could not be reached, refused a
    /// statement, or answered something this build does not expect (the
    /// message names which and what to do).
    Database(String),
}

impl AdminError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            AdminError::Usage(_) => 2,
            AdminError::NotRoot | AdminError::NotRootFor(_) => 3,
            AdminError::BadUser(..) | AdminError::NoSuchUser(_) => 4,
            AdminError::AlreadyEnrolled(_) | AdminError::NotEnrolled(_) => 5,
            AdminError::Config(_)
            | AdminError::NoConfig(_)
            | AdminError::Store(_)
            | AdminError::Record { .. }
            | AdminError::Database(_) => 6,
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
            AdminError::NotRootFor(e) => write!(
                f,
                "{e}: twofactor must run as root for these files (try: sudo twofactor ...)"
            ),
            AdminError::NoConfig(path) => write!(
                f,
                "--config {}: no such file (an explicit --config must name an existing configuration; without --config, {} is used)",
                path.display(),
                config::DEFAULT_PATH
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
            AdminError::Database(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for AdminError {}

impl From<StoreError> for AdminError {
    /// A permission error of a non-root caller means "run as root" (exit
    /// 3, as twofactor(8) says), not a damaged or unsafe file (exit 6).
    fn from(e: StoreError) -> AdminError {
        match &e {
            StoreError::Io {
                errno: nix::errno::Errno::EACCES | nix::errno::Errno::EPERM,
                ..
            } if !nix::unistd::geteuid().is_root() => AdminError::NotRootFor(e),
            _ => AdminError::Store(e),
        }
    }
}

impl From<ConfigError> for AdminError {
    fn from(e: ConfigError) -> AdminError {
        match e {
            ConfigError::Store(e) => match AdminError::from(e) {
                AdminError::Store(e) => AdminError::Config(ConfigError::Store(e)),
                other => other,
            },
            e => AdminError::Config(e),
        }
    }
}

impl From<FilesError> for AdminError {
    fn from(e: FilesError) -> AdminError {
        match e {
            FilesError::Store(e) => AdminError::from(e),
            FilesError::Record { path, error } => AdminError::Record { path, error },
        }
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
        require_config(&path)?;
        let config = Config::load(&path)?;
        Ok(Admin {
            config,
            config_path: path,
        })
    }

    /// The state directory, which must be private (0700-like).
    fn dir(&self) -> Result<TrustedDir<'_>, AdminError> {
        Ok(TrustedDir::open(
            &self.config.state_dir,
            crate::store::Dir::Private,
        )?)
    }
}

/// Each device of `record` with the clock offset learned for it in `state`.
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

/// An explicit `--config PATH` must exist: a typo must not silently run
/// on the defaults (another `state_dir`). Only the CLI does this; the
/// module's handling of its own config is its own.
pub fn require_config(path: &Path) -> Result<(), AdminError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Err(AdminError::NoConfig(path.to_path_buf()))
        }
        // Anything else (a symlink, no permission) is for the store's
        // checks to name.
        _ => Ok(()),
    }
}

/// What a delivery target must look like: an E.164 phone number, an
/// e-mail address or a chat id; `Err` says why `target` is none of them.
pub fn check_target_shape(target: &str) -> Result<(), String> {
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let why = if let Some(number) = target.strip_prefix('+') {
        if all_digits(number) && (8..=15).contains(&number.len()) {
            return Ok(());
        }
        "a phone number is + and 8 to 15 digits (E.164), e.g. +15555550100"
    } else if target.contains('@') {
        let ok = target.split('@').count() == 2
            && target.split_once('@').is_some_and(|(local, domain)| {
                !local.is_empty()
                    && domain.contains('.')
                    && !domain.starts_with('.')
                    && !domain.ends_with('.')
                    && !domain.contains("..")
            })
            && target.len() <= 128
            && target
                .chars()
                .all(|c| c.is_ascii_graphic() && !matches!(c, '<' | '>' | '"' | '\\' | ',' | ';'));
        if ok {
            return Ok(());
        }
        "an e-mail address has one @, a dot in the domain and no blanks, quotes or brackets, e.g. alice@example.org"
    } else {
        let id = target.strip_prefix('-').unwrap_or(target);
        if all_digits(id) && id.len() <= 20 {
            return Ok(());
        }
        "use a phone number (+ and 8 to 15 digits, E.164), an e-mail address (alice@example.org) or a chat id (digits, optionally with a leading -)"
    };
    Err(why.into())
}

/// A delivery target (`set-delivery`, `enroll --deliver-to`) of a known
/// shape, that the record can hold (also what the fleet store checks).
pub fn check_target(target: &str) -> Result<(), AdminError> {
    check_target_shape(target)
        .and_then(|()| {
            if records::valid_target(target) {
                Ok(())
            } else {
                Err("1 to 128 characters without control characters".into())
            }
        })
        .map_err(|why| {
            AdminError::BadOption(format!("delivery target {:?}: {why}", escape(target)))
        })
}

/// A valid name that exists in the passwd database (also what the fleet
/// store checks).
pub fn existing_user(raw: &str) -> Result<Username, AdminError> {
    let user = Username::parse(raw).map_err(|e| AdminError::BadUser(raw.into(), e))?;
    match nix::unistd::User::from_name(user.as_str()) {
        Ok(Some(_)) => Ok(user),
        _ => Err(AdminError::NoSuchUser(raw.into())),
    }
}

pub use crate::otp::uri::{grouped_secret, otpauth_uri, qr_text};
pub use account::{Listed, Status};
pub use check::Problem;
pub use enroll::{CheckedEnrollment, EnrollOptions, Enrollment};
pub use import::{Existing, ImportReport, ImportStore, Imported};
pub use input_files::{
    ImportText, MAX_IMPORT_BYTES, MAX_SECRET_INPUT, read_import_file, read_secret_file,
};

/// Re-exported for the CLI's JSON output.
pub use records::VERSION as RECORD_VERSION;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otp::{Algorithm, SecretKey};

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
    #[test]
    fn exit_codes_follow_the_documented_table() {
        assert_eq!(AdminError::Usage("x".into()).exit_code(), 2);
        assert_eq!(AdminError::NotRoot.exit_code(), 3);
        assert_eq!(AdminError::NoSuchUser("x".into()).exit_code(), 4);
        assert_eq!(AdminError::AlreadyEnrolled("x".into()).exit_code(), 5);
        assert_eq!(AdminError::BadSecret(SecretError::NotBase32).exit_code(), 7);
        assert_eq!(AdminError::NoConfig("/x".into()).exit_code(), 6);
        assert_eq!(AdminError::Database("x".into()).exit_code(), 6);
        let denied = StoreError::Io {
            path: "/x".into(),
            op: "open",
            errno: nix::errno::Errno::EACCES,
        };
        assert_eq!(AdminError::NotRootFor(denied).exit_code(), 3);
    }

    /// Phone numbers (E.164), e-mail addresses and chat ids pass; anything
    /// else is refused with a reason.
    #[test]
    fn delivery_targets_must_have_a_known_shape() {
        for good in [
            "+15555550100",
            "+12345678",
            "+123456789012345",
            "alice@example.org",
            "a.b+c@mail.example.co.uk",
            "123456789",
            "-1001234567890",
        ] {
            assert_eq!(check_target_shape(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "+",
            "+1234567",
            "+1234567890123456",
            "+1 555 555 0100",
            "15555550100x",
            "alice",
            "alice@",
            "@example.org",
            "alice@example",
            "a@b@example.org",
            "alice@example.org.",
            "alice @example.org",
            "--5",
            "-",
            "\u{202e}123",
        ] {
            let why = check_target_shape(bad).unwrap_err();
            assert!(!why.is_empty(), "{bad}");
        }
    }
}
