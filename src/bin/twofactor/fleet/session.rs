//! The admin commands' connection to the fleet and how its errors read:
//! each names what was being done and, where PostgreSQL says why, what
//! to do about it.

use std::time::Duration;

use pam_twofactor::admin::AdminError;
use pam_twofactor::config::{Config, Fleet};
use postgres::Client;
use postgres::error::SqlState;

use super::db;

/// `[fleet]` of `config`, or the error a fleet command gives without it.
pub fn fleet_section(config: &Config) -> Result<&Fleet, AdminError> {
    config.fleet.as_ref().ok_or_else(|| {
        AdminError::Usage(
            "this configuration has no [fleet] section: the fleet commands need one naming the database and the admin role's credentials (see twofactor.toml(5))"
                .into(),
        )
    })
}

/// Connects with `[fleet]`, waiting at most `deadline_seconds` for the
/// connection (statements may wait longer: a commit waits for the
/// synchronous standby, and an admin can press Ctrl-C).
pub fn connect(fleet: &Fleet) -> Result<Client, AdminError> {
    db::connect(fleet, Duration::from_secs(fleet.deadline_seconds))
        .map_err(|e| AdminError::Database(e.to_string()))
}

/// A failed statement as an admin reads it: `what` was being done, the
/// server's message, and a hint for the usual causes.
pub fn sql_error(what: &str, e: &postgres::Error) -> AdminError {
    let Some(db) = e.as_db_error() else {
        return AdminError::Database(format!("fleet database: {what}: {e}"));
    };
    let hint = match *db.code() {
        SqlState::INSUFFICIENT_PRIVILEGE => {
            " (is the [fleet] database user an admin role, a member of twofactor_admin? `twofactor fleet status` shows the role)"
        }
        SqlState::UNDEFINED_FUNCTION
        | SqlState::UNDEFINED_TABLE
        | SqlState::INVALID_SCHEMA_NAME => {
            " (is the fleet schema there, and as new as this twofactor? twofactor fleet status shows its version; twofactor fleet init creates or updates it)"
        }
        _ => "",
    };
    let mut text = format!("fleet database: {what}: {}", db.message());
    if let Some(detail) = db.detail() {
        text.push_str(&format!(" ({detail})"));
    }
    if let Some(server_hint) = db.hint() {
        text.push_str(&format!(" (hint: {server_hint})"));
    }
    text.push_str(hint);
    AdminError::Database(text)
}

/// `sql_error` as a closure for `map_err`.
pub fn failed(what: &'static str) -> impl Fn(postgres::Error) -> AdminError {
    move |e| sql_error(what, &e)
}
