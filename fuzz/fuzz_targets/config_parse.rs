//! `Config::parse` on arbitrary bytes: never panics, every accepted config
//! is inside the documented ranges, and writing the accepted values back as
//! TOML (our own writer, every documented key) parses to the same values.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use pam_twofactor::config::{Config, Unenrolled};
use toml::Value;

/// The config as TOML text written here, key by key.
fn write_back(c: &Config) -> Option<String> {
    let strings = |v: &[String]| Value::from(v.to_vec());
    let networks: Vec<String> = c.exempt_networks.iter().map(|n| n.to_string()).collect();
    let command = match &c.delivery.command {
        Some(p) => p.to_str()?.to_string(),
        None => String::new(),
    };
    Some(format!(
        "state_dir = {}\nunenrolled = {}\nissuer = {}\nenroll_groups = {}\n\
         [totp]\nwindow = {}\nalgorithm = \"{}\"\ndigits = {}\nperiod = {}\nmax_drift_steps = {}\n\
         [lockout]\nmax_failures = {}\nlock_seconds = {}\n\
         [rate_limit]\nmax_attempts = {}\nper_seconds = {}\n\
         [backup_codes]\ncount = {}\n\
         [exempt]\ngroups = {}\nnetworks = {}\n\
         [grace]\nseconds = {}\n\
         [delivery]\ncommand = {}\nsocket = {}\nvalid_seconds = {}\nmax_per_hour = {}\n",
        Value::from(c.state_dir.to_str()?),
        Value::from(match c.unenrolled {
            Unenrolled::Deny => "deny",
            Unenrolled::Skip => "skip",
            Unenrolled::Enroll => "enroll",
        }),
        Value::from(c.issuer.as_str()),
        strings(&c.enroll_groups),
        c.window,
        c.totp.algorithm.name(),
        c.totp.digits,
        c.totp.period,
        c.max_drift_steps,
        c.max_failures,
        c.lock_seconds,
        c.max_attempts,
        c.per_seconds,
        c.backup_codes,
        strings(&c.exempt_groups),
        Value::from(networks),
        c.grace_seconds,
        Value::from(command),
        Value::from(c.delivery.socket().to_str()?),
        c.delivery.valid_seconds,
        c.delivery.max_per_hour,
    ))
}

fuzz_target!(|data: &[u8]| {
    let path = Path::new("/fuzz.toml");
    let Ok(config) = Config::parse(path, data) else {
        return;
    };
    assert!(config.state_dir.is_absolute(), "{config:?}");
    assert!(
        config
            .state_dir
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_))),
        "{config:?}"
    );
    assert!(config.issuer.len() <= 64 && !config.issuer.contains(':'));
    assert!(!config.issuer.chars().any(char::is_control));
    assert!(config.window <= 10);
    assert!((6..=8).contains(&config.totp.digits));
    assert!((10..=300).contains(&config.totp.period));
    assert!((1..=1000).contains(&config.max_failures));
    assert!((1..=31 * 86_400).contains(&config.lock_seconds));
    assert!((1..=10_000).contains(&config.max_attempts));
    assert!((1..=86_400).contains(&config.per_seconds));
    assert!((1..=100).contains(&config.backup_codes));
    assert!(config.max_drift_steps <= 100);
    assert!(config.grace_seconds <= 7 * 86_400);
    assert!((30..=3600).contains(&config.delivery.valid_seconds));
    assert!((1..=100).contains(&config.delivery.max_per_hour));
    assert!(
        config
            .delivery
            .command
            .as_ref()
            .is_none_or(|p| p.is_absolute())
    );
    assert!(config.delivery.socket().is_absolute());

    let text = write_back(&config)
        .unwrap_or_else(|| panic!("accepted a path that is not UTF-8: {config:?}"));
    match Config::parse(path, text.as_bytes()) {
        Ok(again) => assert_eq!(again, config, "round trip through\n{text}"),
        Err(e) => panic!("an accepted config written back is refused: {e}\n{text}"),
    }
});
