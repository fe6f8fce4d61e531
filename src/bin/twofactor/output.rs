//! What `twofactor` prints: the JSON objects of `--json` and the text lines
//! that several commands share.

use pam_twofactor::admin;
use pam_twofactor::host::timefmt;
use serde_json::{Value, json};

/// The version of the JSON objects `twofactor` prints: raised when a field
/// changes meaning or goes away (new fields do not raise it).
const JSON_SCHEMA: u32 = 1;

/// Prints `value`, a JSON object, with `schema` added, on one line.
pub(crate) fn print_json(mut value: Value) {
    if let Some(object) = value.as_object_mut() {
        object.insert("schema".into(), json!(JSON_SCHEMA));
    }
    println!("{value}");
}

/// An error as the one JSON object of a `--json` run.
pub(crate) fn print_json_error(message: &str, exit: i32) {
    print_json(json!({"error": message, "exit": exit}));
}

pub(crate) fn print_codes(codes: &[pam_twofactor::otp::backup::BackupCode]) {
    for code in codes {
        println!("  {}", code.grouped().as_str());
    }
}

pub(crate) fn devices_json(devices: &[admin::DeviceInfo]) -> serde_json::Value {
    devices
        .iter()
        .map(|d| {
            json!({
                "label": d.label,
                "created": timefmt::rfc3339(d.created),
                "algorithm": d.params.algorithm.name(),
                "digits": d.params.digits,
                "period": d.params.period,
                "drift_seconds": d.drift_seconds,
            })
        })
        .collect()
}

/// "locked until …" or "not locked", as `status` and `list` print it.
pub(crate) fn lock_text(user: &str, locked_until: Option<u64>) -> String {
    match locked_until {
        Some(t) => format!(
            "locked until {} (clear with: twofactor unlock {user})",
            timefmt::human(t)
        ),
        None => "not locked".into(),
    }
}

/// One device on one line, as `devices` and `status` print it.
pub(crate) fn device_line(d: &admin::DeviceInfo) -> String {
    format!(
        "{}\tTOTP {} {} digits {} s\tcreated {}\tclock offset {} s",
        d.label,
        d.params.algorithm,
        d.params.digits,
        d.params.period,
        timefmt::human(d.created),
        d.drift_seconds
    )
}

/// The answer of a command that changes one user: a line of text, or
/// `{"user", "changed"}` and `extra` fields.
pub(crate) fn print_change(json: bool, user: &str, changed: bool, extra: Value, text: &str) {
    if json {
        let mut v = json!({"user": user, "changed": changed});
        if let (Some(object), Value::Object(more)) = (v.as_object_mut(), extra) {
            object.extend(more);
        }
        print_json(v);
    } else {
        println!("{text}");
    }
}
