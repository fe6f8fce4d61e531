//! `/etc/security/twofactor.toml`: raw serde structs at the edge, checked
//! into typed values. A missing file means all defaults; a file that exists
//! but cannot be trusted, parsed or validated is an error and the module
//! denies (duo_unix #240: fail closed, never open).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::fasttoml::{Doc, int, list, text};
use crate::net::Cidr;
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
    /// Enroll inside the login: show the QR code, confirm with a code.
    Enroll,
}

/// `[delivery]`: codes sent by a command (SMS, Telegram, e-mail gateway).
/// The module never runs the command itself: it asks the delivery service
/// listening on `socket` (`twofactor deliver`, started per connection by
/// pam-twofactor-deliver.socket), which reads this same file (deliver.rs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Absolute path of the command; `None` = delivery off.
    pub command: Option<PathBuf>,
    /// Absolute path of the delivery service's socket; `None` is
    /// [`DEFAULT_DELIVERY_SOCKET`] (no allocation at every login).
    pub socket: Option<PathBuf>,
    pub valid_seconds: u64,
    pub max_per_hour: u32,
}

impl Delivery {
    /// Where the delivery service listens.
    pub fn socket(&self) -> &Path {
        self.socket
            .as_deref()
            .unwrap_or(Path::new(DEFAULT_DELIVERY_SOCKET))
    }
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
    /// Under `unenrolled = "enroll"`, only members of these groups may
    /// enroll at login (empty = everyone).
    pub enroll_groups: Vec<String>,
    /// How far (in steps) a device clock may be off before we stop helping.
    pub max_drift_steps: u32,
    /// Members of these groups skip the code (PAM_IGNORE).
    pub exempt_groups: Vec<String>,
    /// Remote hosts in these networks skip the code (PAM_IGNORE).
    pub exempt_networks: Vec<Cidr>,
    /// After a success from a remote host, the same user and host skip the
    /// code for this long (0 = off).
    pub grace_seconds: u64,
    pub delivery: Delivery,
}

/// Where records live unless `state_dir` says otherwise.
const DEFAULT_STATE_DIR: &str = "/var/lib/twofactor";
/// Where pam-twofactor-deliver.socket listens (debian/).
pub const DEFAULT_DELIVERY_SOCKET: &str = "/run/pam-twofactor/deliver.sock";

impl Default for Config {
    fn default() -> Config {
        Config::with_state_dir(PathBuf::from(DEFAULT_STATE_DIR))
    }
}

impl Config {
    /// The documented defaults around `state_dir` (a login's parse builds
    /// the directory it read, not the default path as well).
    fn with_state_dir(state_dir: PathBuf) -> Config {
        Config {
            state_dir,
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
            enroll_groups: Vec::new(),
            max_drift_steps: 10,
            exempt_groups: Vec::new(),
            exempt_networks: Vec::new(),
            grace_seconds: 0,
            delivery: Delivery {
                command: None,
                socket: None,
                valid_seconds: 300,
                max_per_hour: 5,
            },
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
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
struct RawConfig {
    state_dir: Option<String>,
    unenrolled: Option<String>,
    issuer: Option<String>,
    totp: Option<RawTotp>,
    lockout: Option<RawLockout>,
    rate_limit: Option<RawRateLimit>,
    backup_codes: Option<RawBackupCodes>,
    enroll_groups: Option<Vec<String>>,
    exempt: Option<RawExempt>,
    grace: Option<RawGrace>,
    delivery: Option<RawDelivery>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
struct RawExempt {
    groups: Option<Vec<String>>,
    networks: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
struct RawGrace {
    seconds: Option<i64>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    command: Option<String>,
    socket: Option<String>,
    valid_seconds: Option<i64>,
    max_per_hour: Option<i64>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
struct RawTotp {
    window: Option<i64>,
    algorithm: Option<String>,
    digits: Option<i64>,
    period: Option<i64>,
    max_drift_steps: Option<i64>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
struct RawLockout {
    max_failures: Option<i64>,
    lock_seconds: Option<i64>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
struct RawRateLimit {
    max_attempts: Option<i64>,
    per_seconds: Option<i64>,
}

#[derive(Deserialize, Default)]
#[cfg_attr(test, derive(Debug, PartialEq))]
#[serde(deny_unknown_fields)]
struct RawBackupCodes {
    count: Option<i64>,
}

impl RawConfig {
    /// The hand mapping of a fast-read config (None = ask toml, which also
    /// gives the error message). Where it answers, it answers as serde
    /// would (`fast_mapping_matches_serde` below).
    fn from_doc(doc: &Doc) -> Option<RawConfig> {
        let mut raw = RawConfig::default();
        for table in doc.tables.iter() {
            if table.elements.is_some() {
                return None;
            }
            match table.name {
                "totp" => raw.totp = Some(RawTotp::default()),
                "lockout" => raw.lockout = Some(RawLockout::default()),
                "rate_limit" => raw.rate_limit = Some(RawRateLimit::default()),
                "backup_codes" => raw.backup_codes = Some(RawBackupCodes::default()),
                "exempt" => raw.exempt = Some(RawExempt::default()),
                "grace" => raw.grace = Some(RawGrace::default()),
                "delivery" => raw.delivery = Some(RawDelivery::default()),
                _ => return None,
            }
        }
        for e in doc.entries() {
            let v = &e.value;
            match (e.table, e.key) {
                ("", "state_dir") => raw.state_dir = Some(text(v)?),
                ("", "unenrolled") => raw.unenrolled = Some(text(v)?),
                ("", "issuer") => raw.issuer = Some(text(v)?),
                ("", "enroll_groups") => raw.enroll_groups = Some(list(v, text)?),
                ("totp", key) => {
                    let t = raw.totp.as_mut()?;
                    match key {
                        "window" => t.window = Some(int(v)?),
                        "algorithm" => t.algorithm = Some(text(v)?),
                        "digits" => t.digits = Some(int(v)?),
                        "period" => t.period = Some(int(v)?),
                        "max_drift_steps" => t.max_drift_steps = Some(int(v)?),
                        _ => return None,
                    }
                }
                ("lockout", "max_failures") => raw.lockout.as_mut()?.max_failures = Some(int(v)?),
                ("lockout", "lock_seconds") => raw.lockout.as_mut()?.lock_seconds = Some(int(v)?),
                ("rate_limit", "max_attempts") => {
                    raw.rate_limit.as_mut()?.max_attempts = Some(int(v)?);
                }
                ("rate_limit", "per_seconds") => {
                    raw.rate_limit.as_mut()?.per_seconds = Some(int(v)?);
                }
                ("backup_codes", "count") => raw.backup_codes.as_mut()?.count = Some(int(v)?),
                ("exempt", "groups") => raw.exempt.as_mut()?.groups = Some(list(v, text)?),
                ("exempt", "networks") => raw.exempt.as_mut()?.networks = Some(list(v, text)?),
                ("grace", "seconds") => raw.grace.as_mut()?.seconds = Some(int(v)?),
                ("delivery", key) => {
                    let d = raw.delivery.as_mut()?;
                    match key {
                        "command" => d.command = Some(text(v)?),
                        "socket" => d.socket = Some(text(v)?),
                        "valid_seconds" => d.valid_seconds = Some(int(v)?),
                        "max_per_hour" => d.max_per_hour = Some(int(v)?),
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
        Some(raw)
    }
}

impl Config {
    /// The issuer shown in apps: the configured one, else the host name.
    ///
    /// The host name is read from /proc/sys/kernel/hostname (the same UTS
    /// name `gethostname` returns) rather than through `gethostname`: one
    /// libc symbol fewer for every host process to bind when it loads the
    /// module (bench/results.md, Round 7).
    pub fn issuer_name(&self) -> String {
        if self.issuer.is_empty() {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim_end_matches('\n').to_string())
                .filter(|h| !h.is_empty() && !h.contains(':'))
                .unwrap_or_else(|| "pam-twofactor".into())
        } else {
            self.issuer.clone()
        }
    }

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
        let fast = crate::fasttoml::read(text).and_then(|doc| RawConfig::from_doc(&doc));
        let raw: RawConfig = match fast {
            Some(raw) => raw,
            None => toml::from_str(text).map_err(|e| parse_err(e.to_string()))?,
        };
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
        let mut config = match raw.state_dir {
            None => Config::default(),
            Some(dir) => {
                // Checked on the bytes (a `Components` walk costs ~500
                // instructions per login); `.` is refused too, as the
                // message says.
                let bytes = dir.as_bytes();
                let clean = bytes.first() == Some(&b'/')
                    && bytes.split(|&c| c == b'/').all(|c| c != b"." && c != b"..");
                if !clean {
                    return Err(invalid(
                        "state_dir",
                        "must be an absolute path without '.' or '..'".into(),
                    ));
                }
                Config::with_state_dir(PathBuf::from(dir))
            }
        };
        config.unenrolled = match raw.unenrolled.as_deref() {
            None | Some("deny") => Unenrolled::Deny,
            Some("skip") => Unenrolled::Skip,
            Some("enroll") => Unenrolled::Enroll,
            Some(other) => {
                return Err(invalid(
                    "unenrolled",
                    format!("{other:?} is not one of \"deny\", \"skip\", \"enroll\""),
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
        let most = crate::record::MAX_BACKUP_CODES as i64;
        config.backup_codes = ranged("backup_codes.count", backup.count, 10, 1, most)? as u32;
        config.max_drift_steps =
            ranged("totp.max_drift_steps", totp.max_drift_steps, 10, 0, 100)? as u32;
        let group_names = |key: &'static str, names: Vec<String>| {
            for name in &names {
                if crate::username::Username::parse(name).is_err() {
                    return Err(invalid(
                        key,
                        format!(
                            "{:?} is not a valid group name",
                            crate::username::escape(name)
                        ),
                    ));
                }
            }
            Ok(names)
        };
        config.enroll_groups = group_names("enroll_groups", raw.enroll_groups.unwrap_or_default())?;
        let exempt = raw.exempt.unwrap_or_default();
        config.exempt_groups = group_names("exempt.groups", exempt.groups.unwrap_or_default())?;
        for net in exempt.networks.unwrap_or_default() {
            let cidr = Cidr::parse(&net).ok_or_else(|| {
                invalid(
                    "exempt.networks",
                    format!("{net:?} is not an address or CIDR network"),
                )
            })?;
            config.exempt_networks.push(cidr);
        }
        let grace = raw.grace.unwrap_or_default();
        config.grace_seconds = ranged("grace.seconds", grace.seconds, 0, 0, 7 * 86_400)? as u64;
        let delivery = raw.delivery.unwrap_or_default();
        let absolute = |key: &'static str, path: &str| {
            let path = PathBuf::from(path);
            if path.is_absolute() {
                Ok(path)
            } else {
                Err(invalid(key, "must be an absolute path".into()))
            }
        };
        config.delivery.command = match delivery.command.as_deref() {
            None | Some("") => None,
            Some(path) => Some(absolute("delivery.command", path)?),
        };
        // The default path stays `None`: one value for one meaning.
        if let Some(path) = delivery.socket.as_deref() {
            let path = absolute("delivery.socket", path)?;
            config.delivery.socket = (path != Path::new(DEFAULT_DELIVERY_SOCKET)).then_some(path);
        }
        config.delivery.valid_seconds = ranged(
            "delivery.valid_seconds",
            delivery.valid_seconds,
            300,
            30,
            3600,
        )? as u64;
        config.delivery.max_per_hour =
            ranged("delivery.max_per_hour", delivery.max_per_hour, 5, 1, 100)? as u32;
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

    /// The keys of first-login enrollment, drift, exemptions, grace and
    /// delivery are read and checked.
    #[test]
    fn extension_keys_are_read() {
        let c = parse(
            r#"
unenrolled = "enroll"
enroll_groups = ["staff"]
[totp]
max_drift_steps = 4
[exempt]
groups = ["robots"]
networks = ["10.0.0.0/8", "2001:db8::/32"]
[grace]
seconds = 600
[delivery]
command = "/usr/local/sbin/send-code"
socket = "/run/tf/deliver.sock"
valid_seconds = 120
max_per_hour = 3
"#,
        )
        .unwrap();
        assert_eq!(c.unenrolled, Unenrolled::Enroll);
        assert_eq!(c.enroll_groups, vec!["staff".to_string()]);
        assert_eq!(c.max_drift_steps, 4);
        assert_eq!(c.exempt_groups, vec!["robots".to_string()]);
        assert_eq!(c.exempt_networks.len(), 2);
        assert!(c.exempt_networks[0].contains_host("10.1.2.3"));
        assert_eq!(c.grace_seconds, 600);
        assert_eq!(
            c.delivery.command,
            Some(PathBuf::from("/usr/local/sbin/send-code"))
        );
        assert_eq!(c.delivery.socket(), Path::new("/run/tf/deliver.sock"));
        assert_eq!(
            parse("").unwrap().delivery.socket(),
            Path::new("/run/pam-twofactor/deliver.sock")
        );
        assert_eq!(
            (c.delivery.valid_seconds, c.delivery.max_per_hour),
            (120, 3)
        );
        for (text, want) in [
            ("[exempt]\nnetworks = [\"10.0.0.0/33\"]", "exempt.networks"),
            ("[exempt]\ngroups = [\"a/b\"]", "exempt.groups"),
            (
                "[delivery]\ncommand = \"send\"",
                "delivery.command: must be an absolute path",
            ),
            (
                "[delivery]\nsocket = \"run/d.sock\"",
                "delivery.socket: must be an absolute path",
            ),
            ("[grace]\nseconds = -1", "grace.seconds"),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?} gave {err:?}");
        }
    }

    /// With no issuer set, apps show the host name: the UTS node name, as
    /// `uname -n` reports it.
    #[test]
    fn issuer_defaults_to_the_host_name() {
        let uname = std::process::Command::new("uname")
            .arg("-n")
            .output()
            .unwrap();
        let host = String::from_utf8(uname.stdout).unwrap();
        assert_eq!(Config::default().issuer_name(), host.trim_end());
        let named = parse("issuer = \"Example\"").unwrap();
        assert_eq!(named.issuer_name(), "Example");
    }

    /// Where the fast reader's hand mapping answers, it gives what serde
    /// gives from the toml crate; otherwise it leaves the file to toml.
    #[test]
    fn fast_mapping_matches_serde() {
        let answered = [
            "",
            include_str!("../conf/twofactor.toml"),
            "state_dir = \"/srv/tf\"\nunenrolled = \"skip\"\nissuer = \"Example\"\n[totp]\nwindow = 2\nalgorithm = \"SHA512\"\ndigits = 8\nperiod = 60\nmax_drift_steps = 4\n[lockout]\nmax_failures = 3\nlock_seconds = 60\n[rate_limit]\nmax_attempts = 4\nper_seconds = 30\n[backup_codes]\ncount = 5\n",
            "unenrolled = \"enroll\"\nenroll_groups = [\"staff\"]\n[exempt]\ngroups = [\"robots\"]\nnetworks = [\"10.0.0.0/8\", \"2001:db8::/32\"]\n[grace]\nseconds = 600\n[delivery]\ncommand = \"/usr/local/sbin/send-code\"\nsocket = \"/run/tf/d.sock\"\nvalid_seconds = 120\nmax_per_hour = 3\n",
            "[totp]\n[lockout]\n",
            "[grace]\nseconds = -1",
        ];
        for text in answered {
            let doc = crate::fasttoml::read(text).unwrap();
            let fast = RawConfig::from_doc(&doc);
            let slow: RawConfig = toml::from_str(text).unwrap();
            assert_eq!(fast, Some(slow), "{text:?}");
        }
        let left_to_toml = [
            "nullok = 1",
            "[totp]\ndigit = 6",
            "[totp]\nwindow = \"1\"",
            "state_dir = 5",
            "enroll_groups = [1]",
            "[[totp]]\nwindow = 1",
            "[other]\n",
            "totp = 1",
        ];
        for text in left_to_toml {
            let doc = crate::fasttoml::read(text).unwrap();
            assert_eq!(RawConfig::from_doc(&doc), None, "{text:?}");
            assert!(toml::from_str::<RawConfig>(text).is_err(), "{text:?}");
        }
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
            (
                "state_dir = \"/var/lib/..\"",
                "state_dir: must be an absolute path",
            ),
            (
                "state_dir = \"/var/./lib\"",
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
