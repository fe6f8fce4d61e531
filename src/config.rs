//! `/etc/security/twofactor.toml`: raw serde structs at the edge, checked
//! into typed values. A missing file means all defaults; a file that exists
//! but cannot be trusted, parsed or validated is an error and the module
//! denies (duo_unix #240: fail closed, never open).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::otp::{self, Algorithm, TotpParams};
use crate::store::{self, Access, StoreError};

/// Where the module and the CLI look by default.
pub const DEFAULT_PATH: &str = "/etc/security/twofactor.toml";
/// A config file larger than this is refused.
const MAX_CONFIG_BYTES: u64 = 64 * 1024;

/// What to do for a user with no secret record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unenrolled {
    /// Show the same prompt as everyone and fail (no enrollment leak).
    Deny,
    /// Return PAM_IGNORE without prompting (roll-out period).
    Skip,
}

/// The checked configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub state_dir: PathBuf,
    pub unenrolled: Unenrolled,
    /// Name shown in apps; empty means the host name.
    pub issuer: String,
    /// Steps accepted either side of now.
    pub window: u32,
    /// Parameters for new enrollments.
    pub totp: TotpParams,
    pub max_failures: u32,
    pub lock_seconds: u64,
    pub max_attempts: u32,
    pub per_seconds: u64,
    pub backup_codes: u32,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            state_dir: PathBuf::from("/var/lib/twofactor"),
            unenrolled: Unenrolled::Deny,
            issuer: String::new(),
            window: 1,
            totp: TotpParams {
                algorithm: Algorithm::Sha1,
                digits: 6,
                period: 30,
            },
            max_failures: 5,
            lock_seconds: 1800,
            max_attempts: 10,
            per_seconds: 60,
            backup_codes: 10,
        }
    }
}

/// Why a config could not be used. Every variant names the file.
#[derive(Debug)]
pub enum ConfigError {
    /// The file (or a directory above it) is unsafe or unreadable.
    Store(StoreError),
    /// The file is not valid TOML, or has unknown keys or wrong types.
    Parse { path: PathBuf, message: String },
    /// A key has a value outside its allowed range.
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Store(e) => write!(f, "config: {e}"),
            ConfigError::Parse { path, message } => {
                write!(f, "{}: {}", path.display(), message.trim_end())
            }
            ConfigError::Invalid { path, key, message } => {
                write!(f, "{}: {key}: {message}", path.display())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<String>,
    unenrolled: Option<String>,
    issuer: Option<String>,
    totp: Option<RawTotp>,
    lockout: Option<RawLockout>,
    rate_limit: Option<RawRateLimit>,
    backup_codes: Option<RawBackupCodes>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTotp {
    window: Option<i64>,
    algorithm: Option<String>,
    digits: Option<i64>,
    period: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLockout {
    max_failures: Option<i64>,
    lock_seconds: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    max_attempts: Option<i64>,
    per_seconds: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBackupCodes {
    count: Option<i64>,
}

impl Config {
    /// Loads `path`: missing means defaults; anything wrong is an error.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        match store::read_path(path, Access::Public, MAX_CONFIG_BYTES) {
            Ok(None) => Ok(Config::default()),
            Ok(Some(bytes)) => Config::parse(path, &bytes),
            Err(e) => Err(ConfigError::Store(e)),
        }
    }

    /// Parses and checks config text; `path` is only used in messages.
    pub fn parse(path: &Path, bytes: &[u8]) -> Result<Config, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: path.to_path_buf(),
            message,
        };
        let text = std::str::from_utf8(bytes).map_err(|_| parse_err("not valid UTF-8".into()))?;
        let raw: RawConfig = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let invalid = |key: &'static str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message,
        };
        let ranged = |key: &'static str, value: Option<i64>, default: i64, min: i64, max: i64| {
            let v = value.unwrap_or(default);
            if (min..=max).contains(&v) {
                Ok(v)
            } else {
                Err(invalid(key, format!("{v} is out of range {min}..={max}")))
            }
        };
        let d = Config::default();
        let mut config = d.clone();
        if let Some(dir) = raw.state_dir {
            let dir = PathBuf::from(dir);
            let clean = dir.is_absolute()
                && dir.components().all(|c| {
                    matches!(
                        c,
                        std::path::Component::RootDir | std::path::Component::Normal(_)
                    )
                });
            if !clean {
                return Err(invalid(
                    "state_dir",
                    "must be an absolute path without '.' or '..'".into(),
                ));
            }
            config.state_dir = dir;
        }
        config.unenrolled = match raw.unenrolled.as_deref() {
            None | Some("deny") => Unenrolled::Deny,
            Some("skip") => Unenrolled::Skip,
            Some(other) => {
                return Err(invalid(
                    "unenrolled",
                    format!("{other:?} is not one of \"deny\", \"skip\""),
                ));
            }
        };
        if let Some(issuer) = raw.issuer {
            if issuer.len() > 64 || issuer.contains(':') || issuer.chars().any(char::is_control) {
                return Err(invalid(
                    "issuer",
                    "must be at most 64 characters, without ':' or control characters".into(),
                ));
            }
            config.issuer = issuer;
        }
        let totp = raw.totp.unwrap_or_default();
        config.window = ranged("totp.window", totp.window, 1, 0, 10)? as u32;
        if let Some(name) = totp.algorithm {
            config.totp.algorithm = Algorithm::parse(&name).ok_or_else(|| {
                invalid(
                    "totp.algorithm",
                    format!("{name:?} is not one of \"SHA1\", \"SHA256\", \"SHA512\""),
                )
            })?;
        }
        config.totp.digits = ranged(
            "totp.digits",
            totp.digits,
            6,
            i64::from(*otp::DIGITS.start()),
            i64::from(*otp::DIGITS.end()),
        )? as u8;
        config.totp.period = ranged(
            "totp.period",
            totp.period,
            30,
            i64::from(*otp::PERIODS.start()),
            i64::from(*otp::PERIODS.end()),
        )? as u32;
        let lockout = raw.lockout.unwrap_or_default();
        config.max_failures =
            ranged("lockout.max_failures", lockout.max_failures, 5, 1, 1000)? as u32;
        config.lock_seconds = ranged(
            "lockout.lock_seconds",
            lockout.lock_seconds,
            1800,
            1,
            31 * 86_400,
        )? as u64;
        let rate = raw.rate_limit.unwrap_or_default();
        config.max_attempts =
            ranged("rate_limit.max_attempts", rate.max_attempts, 10, 1, 10_000)? as u32;
        config.per_seconds =
            ranged("rate_limit.per_seconds", rate.per_seconds, 60, 1, 86_400)? as u64;
        let backup = raw.backup_codes.unwrap_or_default();
        config.backup_codes = ranged("backup_codes.count", backup.count, 10, 1, 100)? as u32;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/security/twofactor.toml"), text.as_bytes())
    }

    /// An empty file gives exactly the documented defaults.
    #[test]
    fn empty_file_gives_documented_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/twofactor"));
        assert_eq!(c.unenrolled, Unenrolled::Deny);
        assert_eq!((c.window, c.totp.digits, c.totp.period), (1, 6, 30));
        assert_eq!(c.totp.algorithm, Algorithm::Sha1);
        assert_eq!((c.max_failures, c.lock_seconds), (5, 1800));
        assert_eq!(
            (c.max_attempts, c.per_seconds, c.backup_codes),
            (10, 60, 10)
        );
    }

    /// The example shipped in conf/ parses to exactly the defaults.
    #[test]
    fn shipped_example_is_the_defaults() {
        let c = Config::parse(
            Path::new("conf/twofactor.toml"),
            include_bytes!("../conf/twofactor.toml"),
        );
        assert_eq!(c.unwrap(), Config::default());
    }

    /// Every documented key is read.
    #[test]
    fn every_key_is_read() {
        let c = parse(
            r#"
state_dir = "/srv/tf"
unenrolled = "skip"
issuer = "Example"
[totp]
window = 2
algorithm = "SHA512"
digits = 8
period = 60
[lockout]
max_failures = 3
lock_seconds = 60
[rate_limit]
max_attempts = 4
per_seconds = 30
[backup_codes]
count = 5
"#,
        )
        .unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/srv/tf"));
        assert_eq!(c.unenrolled, Unenrolled::Skip);
        assert_eq!(c.issuer, "Example");
        assert_eq!(c.window, 2);
        assert_eq!(
            c.totp,
            TotpParams {
                algorithm: Algorithm::Sha512,
                digits: 8,
                period: 60
            }
        );
        assert_eq!((c.max_failures, c.lock_seconds), (3, 60));
        assert_eq!((c.max_attempts, c.per_seconds, c.backup_codes), (4, 30, 5));
    }

    /// Unknown keys, bad values and bad syntax are errors naming the key.
    #[test]
    fn bad_configs_are_errors_naming_the_problem() {
        let cases = [
            ("nullok = true", "unknown field `nullok`"),
            ("[totp]\ndigit = 6", "unknown field `digit`"),
            (
                "unenrolled = \"allow\"",
                "unenrolled: \"allow\" is not one of",
            ),
            ("[totp]\ndigits = 9", "totp.digits: 9 is out of range 6..=8"),
            ("[totp]\nperiod = 0", "totp.period: 0 is out of range"),
            ("[totp]\nalgorithm = \"MD5\"", "totp.algorithm: \"MD5\""),
            ("[lockout]\nmax_failures = 0", "lockout.max_failures: 0"),
            (
                "state_dir = \"relative\"",
                "state_dir: must be an absolute path",
            ),
            (
                "state_dir = \"/var/../tmp\"",
                "state_dir: must be an absolute path",
            ),
            ("window = ", "/etc/security/twofactor.toml"),
            ("[totp]\nwindow = \"1\"", "invalid type"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?} gave {err:?}");
            assert!(err.contains("twofactor.toml"), "{err}");
        }
    }
}
