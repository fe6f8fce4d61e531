//! The file as written: serde structs that mirror its tables and reject
//! unknown keys, and `check`, which turns them into a [`Config`] or names
//! the first key whose value is not allowed.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::net::Cidr;
use super::{Config, DEFAULT_AGENT_SOCKET, DEFAULT_DELIVERY_SOCKET, Fleet, Invalid, Unenrolled};
use crate::otp::{self, Algorithm};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
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
    notify: Option<RawNotify>,
    fleet: Option<RawFleet>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFleet {
    database: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
    password_file: Option<String>,
    agent_socket: Option<String>,
    deadline_seconds: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    command: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawExempt {
    groups: Option<Vec<String>>,
    networks: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGrace {
    seconds: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    command: Option<String>,
    socket: Option<String>,
    valid_seconds: Option<i64>,
    max_per_hour: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTotp {
    window: Option<i64>,
    algorithm: Option<String>,
    digits: Option<i64>,
    period: Option<i64>,
    max_drift_steps: Option<i64>,
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

/// `value` (or `default` when absent) if it is in `min..=max`.
fn ranged(
    key: &'static str,
    value: Option<i64>,
    default: i64,
    min: i64,
    max: i64,
) -> Result<i64, Invalid> {
    let value = value.unwrap_or(default);
    if (min..=max).contains(&value) {
        Ok(value)
    } else {
        Err(Invalid::OutOfRange {
            key,
            value,
            min,
            max,
        })
    }
}

/// The names, if each is a valid group name.
fn group_names(key: &'static str, names: Vec<String>) -> Result<Vec<String>, Invalid> {
    if let Some(name) = names
        .iter()
        .find(|name| crate::records::username::Username::parse(name).is_err())
    {
        return Err(Invalid::GroupName {
            key,
            name: name.clone(),
        });
    }
    Ok(names)
}

/// The path, if it is absolute.
fn absolute(key: &'static str, path: &str) -> Result<PathBuf, Invalid> {
    let path = PathBuf::from(path);
    if path.is_absolute() {
        Ok(path)
    } else {
        Err(Invalid::NotAbsolute { key })
    }
}

/// An optional absolute path.
fn optional_path(key: &'static str, path: Option<String>) -> Result<Option<PathBuf>, Invalid> {
    path.filter(|p| !p.is_empty())
        .map(|p| absolute(key, &p))
        .transpose()
}

impl RawFleet {
    /// `[fleet]`: a section present means fleet mode, so `database` is
    /// required (a host with half a fleet section must not fall back to
    /// the file store).
    fn check(self) -> Result<Fleet, Invalid> {
        let database = self.database.unwrap_or_default();
        if database.trim().is_empty() || database.chars().any(char::is_control) {
            return Err(Invalid::FleetDatabase);
        }
        let agent_socket = match self.agent_socket.as_deref() {
            None | Some("") => PathBuf::from(DEFAULT_AGENT_SOCKET),
            Some(path) => absolute("fleet.agent_socket", path)?,
        };
        Ok(Fleet {
            database,
            sslrootcert: optional_path("fleet.sslrootcert", self.sslrootcert)?,
            sslcert: optional_path("fleet.sslcert", self.sslcert)?,
            sslkey: optional_path("fleet.sslkey", self.sslkey)?,
            password_file: optional_path("fleet.password_file", self.password_file)?,
            agent_socket,
            deadline_seconds: ranged("fleet.deadline_seconds", self.deadline_seconds, 10, 1, 60)?
                as u64,
        })
    }
}

impl RawConfig {
    /// The checked config, or the first key that is out of its range.
    pub(super) fn check(self) -> Result<Config, Invalid> {
        let mut config = match self.state_dir {
            None => Config::default(),
            Some(dir) => {
                // Checked on the text: `Path::components` skips `.`, and a
                // state directory reached through `.` or `..` is not the
                // one the admin meant.
                let bytes = dir.as_bytes();
                let clean = bytes.first() == Some(&b'/')
                    && bytes.split(|&c| c == b'/').all(|c| c != b"." && c != b"..");
                if !clean {
                    return Err(Invalid::StateDir);
                }
                Config::with_state_dir(PathBuf::from(dir))
            }
        };
        config.unenrolled = match self.unenrolled.as_deref() {
            None | Some("deny") => Unenrolled::Deny,
            Some("skip") => Unenrolled::Skip,
            Some("enroll") => Unenrolled::Enroll,
            Some(other) => return Err(Invalid::Unenrolled(other.to_string())),
        };
        if let Some(issuer) = self.issuer {
            if issuer.len() > 64 || issuer.contains(':') || issuer.chars().any(char::is_control) {
                return Err(Invalid::Issuer);
            }
            config.issuer = issuer;
        }
        let totp = self.totp.unwrap_or_default();
        config.window = ranged("totp.window", totp.window, 1, 0, 10)? as u32;
        if let Some(name) = totp.algorithm {
            config.totp.algorithm = Algorithm::parse(&name).ok_or(Invalid::Algorithm(name))?;
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
        let lockout = self.lockout.unwrap_or_default();
        config.max_failures =
            ranged("lockout.max_failures", lockout.max_failures, 5, 1, 1000)? as u32;
        config.lock_seconds = ranged(
            "lockout.lock_seconds",
            lockout.lock_seconds,
            1800,
            1,
            31 * 86_400,
        )? as u64;
        let rate = self.rate_limit.unwrap_or_default();
        config.max_attempts =
            ranged("rate_limit.max_attempts", rate.max_attempts, 10, 1, 10_000)? as u32;
        config.per_seconds =
            ranged("rate_limit.per_seconds", rate.per_seconds, 60, 1, 86_400)? as u64;
        let backup = self.backup_codes.unwrap_or_default();
        let most = crate::records::MAX_BACKUP_CODES as i64;
        config.backup_codes = ranged("backup_codes.count", backup.count, 10, 1, most)? as u32;
        config.max_drift_steps =
            ranged("totp.max_drift_steps", totp.max_drift_steps, 10, 0, 100)? as u32;
        config.enroll_groups =
            group_names("enroll_groups", self.enroll_groups.unwrap_or_default())?;
        let exempt = self.exempt.unwrap_or_default();
        config.exempt_groups = group_names("exempt.groups", exempt.groups.unwrap_or_default())?;
        for net in exempt.networks.unwrap_or_default() {
            let cidr = Cidr::parse(&net).ok_or(Invalid::Network(net))?;
            config.exempt_networks.push(cidr);
        }
        let grace = self.grace.unwrap_or_default();
        config.grace_seconds = ranged("grace.seconds", grace.seconds, 0, 0, 7 * 86_400)? as u64;
        let delivery = self.delivery.unwrap_or_default();
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
        config.notify.command = match self.notify.unwrap_or_default().command.as_deref() {
            None | Some("") => None,
            Some(path) => Some(absolute("notify.command", path)?),
        };
        config.fleet = self.fleet.map(RawFleet::check).transpose()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ConfigError;
    use crate::otp::TotpParams;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("/etc/security/twofactor.toml"), text.as_bytes())
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
[notify]
command = "/usr/local/sbin/tell-user"
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
            c.notify.command,
            Some(PathBuf::from("/usr/local/sbin/tell-user"))
        );
        assert_eq!(
            parse("[notify]\ncommand = \"\"").unwrap().notify.command,
            None
        );
        assert_eq!(
            (c.delivery.valid_seconds, c.delivery.max_per_hour),
            (120, 3)
        );
        for (text, want) in [
            (
                "[exempt]\nnetworks = [\"10.0.0.0/33\"]",
                Invalid::Network("10.0.0.0/33".into()),
            ),
            (
                "[exempt]\ngroups = [\"a/b\"]",
                Invalid::GroupName {
                    key: "exempt.groups",
                    name: "a/b".into(),
                },
            ),
            (
                "enroll_groups = [\"ok\", \"\"]",
                Invalid::GroupName {
                    key: "enroll_groups",
                    name: String::new(),
                },
            ),
            (
                "[notify]\ncommand = \"tell\"",
                Invalid::NotAbsolute {
                    key: "notify.command",
                },
            ),
            (
                "[delivery]\ncommand = \"send\"",
                Invalid::NotAbsolute {
                    key: "delivery.command",
                },
            ),
            (
                "[delivery]\nsocket = \"run/d.sock\"",
                Invalid::NotAbsolute {
                    key: "delivery.socket",
                },
            ),
            (
                "[grace]\nseconds = -1",
                Invalid::OutOfRange {
                    key: "grace.seconds",
                    value: -1,
                    min: 0,
                    max: 7 * 86_400,
                },
            ),
        ] {
            assert_eq!(invalid(text), want, "{text:?}");
        }
    }

    /// The problem a config that parses as TOML is refused for.
    fn invalid(text: &str) -> Invalid {
        match parse(text) {
            Err(ConfigError::Invalid { path, problem }) => {
                assert_eq!(path, Path::new("/etc/security/twofactor.toml"));
                problem
            }
            other => panic!("{text:?} gave {other:?}"),
        }
    }

    /// Bad values are refused with the problem and the key it is in.
    #[test]
    fn bad_values_are_refused_naming_the_key() {
        let range = |key, value, min, max| Invalid::OutOfRange {
            key,
            value,
            min,
            max,
        };
        let cases = [
            (
                "unenrolled = \"allow\"",
                Invalid::Unenrolled("allow".into()),
            ),
            ("[totp]\ndigits = 9", range("totp.digits", 9, 6, 8)),
            ("[totp]\nperiod = 0", range("totp.period", 0, 10, 300)),
            ("[totp]\nwindow = 11", range("totp.window", 11, 0, 10)),
            (
                "[totp]\nmax_drift_steps = 101",
                range("totp.max_drift_steps", 101, 0, 100),
            ),
            (
                "[totp]\nalgorithm = \"MD5\"",
                Invalid::Algorithm("MD5".into()),
            ),
            (
                "[lockout]\nmax_failures = 0",
                range("lockout.max_failures", 0, 1, 1000),
            ),
            (
                "[lockout]\nlock_seconds = 0",
                range("lockout.lock_seconds", 0, 1, 31 * 86_400),
            ),
            (
                "[rate_limit]\nmax_attempts = 0",
                range("rate_limit.max_attempts", 0, 1, 10_000),
            ),
            (
                "[rate_limit]\nper_seconds = 86401",
                range("rate_limit.per_seconds", 86_401, 1, 86_400),
            ),
            (
                "[backup_codes]\ncount = 101",
                range("backup_codes.count", 101, 1, 100),
            ),
            (
                "[delivery]\nvalid_seconds = 29",
                range("delivery.valid_seconds", 29, 30, 3600),
            ),
            (
                "[delivery]\nmax_per_hour = 0",
                range("delivery.max_per_hour", 0, 1, 100),
            ),
            ("issuer = \"a:b\"", Invalid::Issuer),
            ("state_dir = \"relative\"", Invalid::StateDir),
            ("state_dir = \"/var/../tmp\"", Invalid::StateDir),
            ("state_dir = \"/var/lib/..\"", Invalid::StateDir),
            ("state_dir = \"/var/./lib\"", Invalid::StateDir),
        ];
        for (text, want) in cases {
            assert_eq!(invalid(text), want, "{text:?}");
        }
    }

    /// `[fleet]` is read and checked; a section without `database` is an
    /// error, never the file store.
    #[test]
    fn fleet_section() {
        let c = parse(
            "[fleet]\ndatabase = \"host=db dbname=twofactor user=tf_web1\"\nsslcert = \"/etc/security/tf/host.crt\"\ndeadline_seconds = 8\n",
        )
        .unwrap();
        let fleet = c.fleet.unwrap();
        assert_eq!(fleet.database, "host=db dbname=twofactor user=tf_web1");
        assert_eq!(
            fleet.sslcert,
            Some(PathBuf::from("/etc/security/tf/host.crt"))
        );
        assert_eq!(fleet.sslkey, None);
        assert_eq!(fleet.agent_socket, PathBuf::from(DEFAULT_AGENT_SOCKET));
        assert_eq!(fleet.deadline_seconds, 8);
        assert_eq!(parse("").unwrap().fleet, None);
        for (text, key) in [
            ("[fleet]\n", "fleet.database"),
            ("[fleet]\ndatabase = \" \"\n", "fleet.database"),
            (
                "[fleet]\ndatabase = \"x\"\nsslkey = \"key.pem\"\n",
                "fleet.sslkey",
            ),
            (
                "[fleet]\ndatabase = \"x\"\ndeadline_seconds = 0\n",
                "fleet.deadline_seconds",
            ),
        ] {
            match parse(text) {
                Err(ConfigError::Invalid { problem, .. }) => {
                    assert_eq!(problem.key(), key, "{text}")
                }
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
