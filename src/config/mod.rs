//! `/etc/security/twofactor.toml`: raw serde structs at the edge (`raw`),
//! checked into typed values. A missing file means all defaults; a file
//! that exists but cannot be trusted, parsed or validated is an error and
//! the module denies (duo_unix #240: fail closed, never open).

pub mod net;
mod raw;

use std::fmt;
use std::path::{Path, PathBuf};

use crate::otp::{Algorithm, TotpParams};
use crate::store::{self, Access, StoreError};
use net::Cidr;

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
/// pam-twofactor-deliver.socket), which reads this same file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// Absolute path of the command; `None` = delivery off.
    pub command: Option<PathBuf>,
    /// Absolute path of the delivery service's socket; `None` is
    /// [`DEFAULT_DELIVERY_SOCKET`].
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

/// `[notify]`: users are told of every security change to their second
/// factor by `command USER EVENT`, the message on stdin. Run by `twofactor`
/// itself for the admin's changes and by the delivery service for events of
/// a login (the module never starts a process).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notify {
    /// Absolute path of the command; `None` = no notifications.
    pub command: Option<PathBuf>,
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
    pub notify: Notify,
    /// `[fleet]`: enrollments and decisions in PostgreSQL through the local
    /// agent; `None` = the file store in `state_dir`.
    pub fleet: Option<Fleet>,
}

/// `[fleet]` (docs/fleet.md). The module uses only `agent_socket` and
/// `deadline_seconds`; the agent and the admin CLI connect to `database`
/// with the files named here. No secret is ever in this file: the
/// connection string may not hold a password (the agent refuses one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fleet {
    /// A libpq-style `key=value` connection string without a password,
    /// e.g. `host=db.example.org dbname=twofactor user=tf_web1 sslmode=require`.
    pub database: String,
    /// CA certificate(s) that the server's certificate must chain to.
    pub sslrootcert: Option<PathBuf>,
    /// Client certificate and key (certificate authentication).
    pub sslcert: Option<PathBuf>,
    pub sslkey: Option<PathBuf>,
    /// A root-only file holding only the role's password.
    pub password_file: Option<PathBuf>,
    /// Where the agent listens.
    pub agent_socket: PathBuf,
    /// How long one request may take, end to end: less than sshd's
    /// LoginGraceTime (120 s by default), so a stuck database denies the
    /// login rather than hanging it.
    pub deadline_seconds: u64,
}

/// Where records live unless `state_dir` says otherwise.
const DEFAULT_STATE_DIR: &str = "/var/lib/twofactor";
/// Where pam-twofactor-deliver.socket listens (debian/).
pub const DEFAULT_DELIVERY_SOCKET: &str = "/run/pam-twofactor/deliver.sock";
/// Where pam-twofactor-agent.socket listens (debian/).
pub const DEFAULT_AGENT_SOCKET: &str = "/run/pam-twofactor/agent.sock";

impl Default for Config {
    fn default() -> Config {
        Config::with_state_dir(PathBuf::from(DEFAULT_STATE_DIR))
    }
}

impl Config {
    /// The documented defaults around `state_dir`.
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
            notify: Notify::default(),
            fleet: None,
        }
    }
}

/// Why a config could not be used. Every variant names the file.
#[derive(Debug)]
pub enum ConfigError {
    /// The file (or a directory above it) is unsafe or unreadable.
    Store(StoreError),
    /// The file is not UTF-8.
    NotUtf8 { path: PathBuf },
    /// The file is not valid TOML, or has unknown keys or wrong types.
    Parse {
        path: PathBuf,
        error: toml::de::Error,
    },
    /// A key has a value outside its allowed range.
    Invalid { path: PathBuf, problem: Invalid },
}

/// What is wrong with a key of a config that parsed as TOML.
#[derive(Debug, PartialEq, Eq)]
pub enum Invalid {
    /// An integer outside `min..=max`.
    OutOfRange {
        key: &'static str,
        value: i64,
        min: i64,
        max: i64,
    },
    /// `state_dir` is relative or has a `.` or `..` component.
    StateDir,
    /// `unenrolled` is not one of its three words.
    Unenrolled(String),
    /// `issuer` is too long or has a `:` or a control character.
    Issuer,
    /// `totp.algorithm` is not SHA1, SHA256 or SHA512.
    Algorithm(String),
    /// A group name that is not a valid name.
    GroupName { key: &'static str, name: String },
    /// `exempt.networks` holds something that is not an address or network.
    Network(String),
    /// A path that must be absolute is not.
    NotAbsolute { key: &'static str },
    /// `[fleet]` without a `database`, or one with a control character.
    FleetDatabase,
}

impl Invalid {
    /// The key the problem is in, as written in the file.
    pub fn key(&self) -> &'static str {
        match self {
            Invalid::OutOfRange { key, .. }
            | Invalid::GroupName { key, .. }
            | Invalid::NotAbsolute { key } => key,
            Invalid::StateDir => "state_dir",
            Invalid::Unenrolled(_) => "unenrolled",
            Invalid::Issuer => "issuer",
            Invalid::Algorithm(_) => "totp.algorithm",
            Invalid::Network(_) => "exempt.networks",
            Invalid::FleetDatabase => "fleet.database",
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.key())?;
        match self {
            Invalid::OutOfRange {
                value, min, max, ..
            } => write!(f, "{value} is out of range {min}..={max}"),
            Invalid::StateDir => f.write_str("must be an absolute path without '.' or '..'"),
            Invalid::Unenrolled(word) => {
                write!(f, "{word:?} is not one of \"deny\", \"skip\", \"enroll\"")
            }
            Invalid::Issuer => {
                f.write_str("must be at most 64 characters, without ':' or control characters")
            }
            Invalid::Algorithm(name) => {
                write!(f, "{name:?} is not one of \"SHA1\", \"SHA256\", \"SHA512\"")
            }
            Invalid::GroupName { name, .. } => write!(
                f,
                "{:?} is not a valid group name",
                crate::records::username::escape(name)
            ),
            Invalid::Network(net) => {
                write!(f, "{net:?} is not an address or CIDR network")
            }
            Invalid::NotAbsolute { .. } => f.write_str("must be an absolute path"),
            Invalid::FleetDatabase => f.write_str(
                "must be a connection string such as \"host=db.example.org dbname=twofactor user=tf_web1 sslmode=verify-full\" (a [fleet] section means fleet mode)",
            ),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Store(e) => write!(f, "config: {e}"),
            ConfigError::NotUtf8 { path } => write!(f, "{}: not valid UTF-8", path.display()),
            ConfigError::Parse { path, error } => {
                write!(f, "{}: {}", path.display(), error.to_string().trim_end())
            }
            ConfigError::Invalid { path, problem } => {
                write!(f, "{}: {problem}", path.display())
            }
        }
    }
}

impl Config {
    /// The issuer shown in apps: the configured one, else the host name
    /// (the UTS node name, read from /proc/sys/kernel/hostname).
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
        let text = std::str::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8 {
            path: path.to_path_buf(),
        })?;
        let raw: raw::RawConfig = toml::from_str(text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            error,
        })?;
        raw.check().map_err(|problem| ConfigError::Invalid {
            path: path.to_path_buf(),
            problem,
        })
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
            include_bytes!("../../conf/twofactor.toml"),
        );
        assert_eq!(c.unwrap(), Config::default());
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

    /// Each problem reads as the file, the key, the value found and what
    /// is allowed.
    #[test]
    fn every_problem_names_the_file_the_key_and_what_is_allowed() {
        let path = PathBuf::from("/etc/security/twofactor.toml");
        let cases = [
            (
                Invalid::OutOfRange {
                    key: "totp.digits",
                    value: 9,
                    min: 6,
                    max: 8,
                },
                "totp.digits: 9 is out of range 6..=8",
            ),
            (
                Invalid::StateDir,
                "state_dir: must be an absolute path without '.' or '..'",
            ),
            (
                Invalid::Unenrolled("allow".into()),
                "unenrolled: \"allow\" is not one of \"deny\", \"skip\", \"enroll\"",
            ),
            (
                Invalid::Issuer,
                "issuer: must be at most 64 characters, without ':' or control characters",
            ),
            (
                Invalid::Algorithm("MD5".into()),
                "totp.algorithm: \"MD5\" is not one of \"SHA1\", \"SHA256\", \"SHA512\"",
            ),
            (
                Invalid::GroupName {
                    key: "exempt.groups",
                    name: "a\nb".into(),
                },
                "exempt.groups: \"a\\\\x0ab\" is not a valid group name",
            ),
            (
                Invalid::Network("10.0.0.0/33".into()),
                "exempt.networks: \"10.0.0.0/33\" is not an address or CIDR network",
            ),
            (
                Invalid::NotAbsolute {
                    key: "delivery.socket",
                },
                "delivery.socket: must be an absolute path",
            ),
        ];
        for (problem, want) in cases {
            let error = ConfigError::Invalid {
                path: path.clone(),
                problem,
            };
            assert_eq!(error.to_string(), format!("{}: {want}", path.display()));
        }
        let not_utf8 = Config::parse(&path, b"issuer = \"\xff\"").unwrap_err();
        assert!(
            matches!(not_utf8, ConfigError::NotUtf8 { .. }),
            "{not_utf8:?}"
        );
        assert_eq!(
            not_utf8.to_string(),
            "/etc/security/twofactor.toml: not valid UTF-8"
        );
    }

    /// Unknown keys, wrong types and bad syntax are the toml crate's
    /// errors, naming the file and the key or place.
    #[test]
    fn bad_toml_is_an_error_naming_the_problem() {
        let cases = [
            ("nullok = true", "unknown field `nullok`"),
            ("[totp]\ndigit = 6", "unknown field `digit`"),
            ("window = ", "line 1"),
            ("[totp]\nwindow = \"1\"", "invalid type"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err();
            assert!(matches!(err, ConfigError::Parse { .. }), "{err:?}");
            let err = err.to_string();
            assert!(err.contains(want), "{text:?} gave {err:?}");
            assert!(err.starts_with("/etc/security/twofactor.toml: "), "{err}");
        }
    }
}
