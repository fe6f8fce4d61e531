//! The fleet's policy (`twofactor.policy`, set by `admin_set_policy`) from
//! a config file: the rules live in the database so that one host's
//! config cannot loosen them; `fleet init` and `fleet set-policy` copy
//! them from the admin's config.

use pam_twofactor::config::{Config, Unenrolled};
use serde_json::{Value, json};

/// The policy keys of docs/fleet.md from `config`; `require_sync_standby`
/// only when given (the database keeps its value, true by default,
/// otherwise).
pub fn policy_json(config: &Config, require_sync_standby: Option<bool>) -> Value {
    let mut policy = json!({
        "window": config.window,
        "max_failures": config.max_failures,
        "lock_seconds": config.lock_seconds,
        "max_attempts": config.max_attempts,
        "per_seconds": config.per_seconds,
        "max_drift_steps": config.max_drift_steps,
        "grace_seconds": config.grace_seconds,
        "backup_codes": config.backup_codes,
        "delivery_valid_seconds": config.delivery.valid_seconds,
        "delivery_max_per_hour": config.delivery.max_per_hour,
        "enroll_at_login": config.unenrolled == Unenrolled::Enroll,
        "totp_algorithm": config.totp.algorithm.name(),
        "totp_digits": config.totp.digits,
        "totp_period": config.totp.period,
    });
    if let (Some(require), Some(object)) = (require_sync_standby, policy.as_object_mut()) {
        object.insert("require_sync_standby".into(), json!(require));
    }
    policy
}

/// The warning `--no-require-sync-standby` and `--require-sync-standby
/// no` print.
pub const NO_SYNC_WARNING: &str = "WARNING: require_sync_standby = false: logins are decided even when no synchronous standby confirms the commit. A failover can then lose accepted codes (replayable again), counted failures and locks. Use this only for a test fleet or while building the standby; turn it back on with: twofactor fleet set-policy --require-sync-standby yes";

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every key of the policy table comes from the config, under its
    /// table's name; `require_sync_standby` only when asked.
    #[test]
    fn the_policy_is_the_configs_values_under_the_tables_names() {
        let config = Config::parse(
            Path::new("/etc/security/twofactor.toml"),
            br#"unenrolled = "enroll"
[totp]
window = 2
algorithm = "SHA256"
digits = 8
period = 60
max_drift_steps = 4
[lockout]
max_failures = 3
lock_seconds = 600
[rate_limit]
max_attempts = 7
per_seconds = 120
[backup_codes]
count = 12
[grace]
seconds = 900
[delivery]
valid_seconds = 120
max_per_hour = 3
"#,
        )
        .unwrap();
        let want = json!({
            "window": 2, "max_failures": 3, "lock_seconds": 600,
            "max_attempts": 7, "per_seconds": 120, "max_drift_steps": 4,
            "grace_seconds": 900, "backup_codes": 12,
            "delivery_valid_seconds": 120, "delivery_max_per_hour": 3,
            "enroll_at_login": true, "totp_algorithm": "SHA256",
            "totp_digits": 8, "totp_period": 60,
        });
        assert_eq!(policy_json(&config, None), want);
        let mut off = want.clone();
        off.as_object_mut()
            .unwrap()
            .insert("require_sync_standby".into(), json!(false));
        assert_eq!(policy_json(&config, Some(false)), off);
        let defaults = policy_json(&Config::default(), Some(true));
        assert_eq!(defaults["enroll_at_login"], json!(false));
        assert_eq!(defaults["totp_algorithm"], json!("SHA1"));
        assert_eq!(defaults["require_sync_standby"], json!(true));
    }
}
