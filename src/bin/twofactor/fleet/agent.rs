//! `twofactor agent`: the fleet's local agent (docs/fleet.md, twofactor(8)
//! AGENT). Long-lived, as root: the PAM module asks it one request per
//! connection over a root-only Unix socket, and it answers with one call
//! of a host function in the fleet's database, within `[fleet]
//! deadline_seconds`. It holds the database connections and the host's
//! credentials so that the module never links a database client.
//!
//! `listen` gets the socket, `serve` reads requests and writes replies,
//! `call` checks and decodes them, `dispatch` runs them under the deadline
//! with a pool of clients, `sql` is the PostgreSQL side, `log` the journal
//! lines, and `process` the two calls that have no safe form.

mod call;
mod dispatch;
mod listen;
mod log;
mod process;
mod serve;
mod sql;

use std::path::Path;
use std::time::Duration;

use pam_twofactor::admin::Admin;

use super::db;
use dispatch::{Dispatcher, Limits};

/// Exit status: the configuration or the socket is unusable.
const EXIT_CONFIG: u8 = 6;

/// Runs the agent until it is stopped; returns only on a set-up error.
pub fn run(config_path: Option<&Path>) -> u8 {
    let admin = match Admin::open(config_path) {
        Ok(admin) => admin,
        Err(e) => {
            log::line(&e.to_string());
            // As every command: 3 not root, 6 the configuration.
            return u8::try_from(e.exit_code()).unwrap_or(EXIT_CONFIG);
        }
    };
    match start(admin) {
        Ok(()) => 0,
        Err(e) => {
            log::line(&e);
            EXIT_CONFIG
        }
    }
}

fn start(admin: Admin) -> Result<(), String> {
    process::ignore_sigpipe()?;
    let shown = admin.config_path.display();
    let fleet = admin.config.fleet.ok_or_else(|| {
        format!("{shown} has no [fleet] section: the agent serves fleet mode only (see twofactor.toml(5), [fleet])")
    })?;
    let deadline = Duration::from_secs(fleet.deadline_seconds);
    // The connection settings are checked now (a password in the string,
    // a bad key); the database itself is reached at the first request.
    db::config(&fleet, deadline).map_err(|e| e.to_string())?;
    let (listener, how) = match listen::inherited()? {
        Some(listener) => (listener, "the socket from systemd".to_string()),
        None => (
            listen::bind(&fleet.agent_socket)?,
            fleet.agent_socket.display().to_string(),
        ),
    };
    log::line(&format!(
        "serving {how} for {shown}, deadline {} s",
        fleet.deadline_seconds
    ));
    let dispatcher = Dispatcher::new(sql::PgConnector::new(fleet), Limits::new(deadline));
    serve::accept_loop(&listener, &dispatcher);
    Ok(())
}
