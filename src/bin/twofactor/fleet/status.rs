//! `twofactor fleet status` (the database as the admin sees it) and the
//! fleet's part of `twofactor check` (the agent's socket and the
//! database as this host's role sees it).

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use pam_twofactor::admin::{Admin, AdminError, Problem};
use pam_twofactor::config::Fleet;
use pam_twofactor::store::{self, StoreError};
use serde_json::json;

use super::migrate::newest;
use super::names::{ADMIN_GROUP, HOST_GROUP};
use super::session::{connect, failed, fleet_section};
use crate::output::print_json;

/// What `fleet_status()` answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetStatus {
    pub schema_version: i32,
    pub synchronous_standby_names: String,
    pub synchronous_commit: String,
    pub sync_standbys: i64,
    pub host_can_read_seeds: bool,
}

/// The connected role and what it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RoleInfo {
    pub name: String,
    pub superuser: bool,
    pub host: bool,
    pub admin: bool,
}

/// Whether commits wait for a synchronous standby: `None` if they do,
/// else why not.
pub fn unprotected_writes(s: &FleetStatus) -> Option<String> {
    let mut why = Vec::new();
    if s.synchronous_standby_names.trim().is_empty() {
        why.push("synchronous_standby_names is empty".to_string());
    }
    if matches!(s.synchronous_commit.as_str(), "off" | "local") {
        why.push(format!(
            "synchronous_commit = {} (commits do not wait for a standby)",
            s.synchronous_commit
        ));
    }
    if s.sync_standbys < 1 {
        why.push("no synchronous standby is attached (pg_stat_replication)".into());
    }
    (!why.is_empty()).then(|| why.join("; "))
}

/// Everything in `s` an admin must act on, each with what to do.
pub fn warnings(s: &FleetStatus) -> Vec<String> {
    let mut found = Vec::new();
    if let Some(why) = unprotected_writes(s) {
        found.push(format!(
            "WRITES ARE NOT PROTECTED BY A SYNCHRONOUS STANDBY: {why}. A failover can lose accepted codes (replayable again), counted failures and locks; under require_sync_standby (the default) every login is refused until a synchronous standby confirms commits. Attach one and name it in synchronous_standby_names (two, as ANY 1 (s1, s2), so that one can fail)."
        ));
    }
    if s.host_can_read_seeds {
        found.push(format!(
            "{HOST_GROUP} can read twofactor.devices.secret: every host could read every seed. Revoke it (REVOKE ALL ON twofactor.devices FROM {HOST_GROUP}) and run twofactor fleet init."
        ));
    }
    match s.schema_version.cmp(&newest()) {
        std::cmp::Ordering::Less => found.push(format!(
            "schema version {} is older than this twofactor's {}: run twofactor fleet init",
            s.schema_version,
            newest()
        )),
        std::cmp::Ordering::Greater => found.push(format!(
            "schema version {} is newer than this twofactor knows ({}): upgrade twofactor here",
            s.schema_version,
            newest()
        )),
        std::cmp::Ordering::Equal => {}
    }
    found
}

fn int(row: &postgres::Row, column: &str) -> Result<i64, postgres::Error> {
    match row.try_get::<_, i64>(column) {
        Ok(v) => Ok(v),
        Err(_) => row.try_get::<_, i32>(column).map(i64::from),
    }
}

/// `twofactor.fleet_status()` on `client`.
pub fn fleet_status(client: &mut postgres::Client) -> Result<FleetStatus, AdminError> {
    let row = client
        .query_one(
            "SELECT schema_version, synchronous_standby_names, synchronous_commit, sync_standbys, host_can_read_seeds FROM twofactor.fleet_status()",
            &[],
        )
        .map_err(failed("call fleet_status()"))?;
    let read = || -> Result<FleetStatus, postgres::Error> {
        Ok(FleetStatus {
            schema_version: i32::try_from(int(&row, "schema_version")?).unwrap_or(i32::MAX),
            synchronous_standby_names: row
                .try_get::<_, Option<String>>("synchronous_standby_names")?
                .unwrap_or_default(),
            synchronous_commit: row
                .try_get::<_, Option<String>>("synchronous_commit")?
                .unwrap_or_default(),
            sync_standbys: int(&row, "sync_standbys")?,
            host_can_read_seeds: row.try_get("host_can_read_seeds")?,
        })
    };
    read().map_err(failed("read fleet_status()"))
}

/// The connected role, and whether it is a host or admin role.
pub fn role_info(client: &mut postgres::Client) -> Result<RoleInfo, AdminError> {
    let row = client
        .query_one(
            "SELECT current_user::text, r.rolsuper,
                    EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = $1 AND pg_has_role(current_user, g.oid, 'MEMBER')),
                    EXISTS (SELECT 1 FROM pg_roles g WHERE g.rolname = $2 AND pg_has_role(current_user, g.oid, 'MEMBER'))
             FROM pg_roles r WHERE r.rolname = current_user",
            &[&HOST_GROUP, &ADMIN_GROUP],
        )
        .map_err(failed("read the current role"))?;
    let read = || -> Result<RoleInfo, postgres::Error> {
        Ok(RoleInfo {
            name: row.try_get(0)?,
            superuser: row.try_get(1)?,
            host: row.try_get(2)?,
            admin: row.try_get(3)?,
        })
    };
    read().map_err(failed("read the current role"))
}

/// `twofactor fleet status`: exit 0 when healthy, 1 with warnings.
pub fn run_status(admin: &Admin, json: bool) -> Result<u8, AdminError> {
    let fleet = fleet_section(&admin.config)?;
    let mut client = match connect(fleet) {
        Ok(c) => c,
        Err(e) => {
            let warning = format!("the fleet database is NOT reachable: {e}");
            if json {
                print_json(json!({
                    "reachable": false,
                    "warnings": [warning],
                    "ok": false,
                    "changed": false,
                }));
            } else {
                println!("database: NOT reachable");
                println!("WARNING: {warning}");
            }
            return Ok(1);
        }
    };
    let role = role_info(&mut client)?;
    let (status, mut found) = match fleet_status(&mut client) {
        Ok(s) => {
            let w = warnings(&s);
            (Some(s), w)
        }
        Err(e) => (
            None,
            vec![format!(
                "fleet_status() failed ({e}): is the schema there (twofactor fleet init) and may this role call it?"
            )],
        ),
    };
    // The session's value: the database's setting (fleet init's) applies.
    let logged: Option<String> = client
        .query_one("SELECT current_setting('log_parameter_max_length')", &[])
        .and_then(|row| row.try_get(0))
        .ok();
    if logged.as_deref().is_some_and(|v| v != "0") {
        found.push(
            "statement logging would write bind parameters (seeds, typed codes) to the server's log: ALTER DATABASE <name> SET log_parameter_max_length = 0 (fleet init does this as a superuser)".into(),
        );
    }
    if !role.host && !role.admin && !role.superuser {
        found.push(format!(
            "role {} is neither a member of {ADMIN_GROUP} nor of {HOST_GROUP}: the admin commands will be refused (GRANT {ADMIN_GROUP} TO {})",
            role.name, role.name
        ));
    }
    if json {
        print_json(json!({
            "reachable": true,
            "role": role.name,
            "superuser": role.superuser,
            "host_role": role.host,
            "admin_role": role.admin,
            "schema_version": status.as_ref().map(|s| s.schema_version),
            "newest_migration": newest(),
            "schema_current": status.as_ref().map(|s| s.schema_version == newest()),
            "synchronous_standby_names": status.as_ref().map(|s| s.synchronous_standby_names.clone()),
            "synchronous_commit": status.as_ref().map(|s| s.synchronous_commit.clone()),
            "sync_standbys": status.as_ref().map(|s| s.sync_standbys),
            "writes_protected": status.as_ref().map(|s| unprotected_writes(s).is_none()),
            "host_can_read_seeds": status.as_ref().map(|s| s.host_can_read_seeds),
            "warnings": found,
            "ok": found.is_empty(),
            "changed": false,
        }));
    } else {
        println!("database: reachable");
        let kinds: Vec<&str> = [
            (role.superuser, "superuser"),
            (role.admin, "admin role"),
            (role.host, "host role"),
        ]
        .iter()
        .filter(|(yes, _)| *yes)
        .map(|(_, kind)| *kind)
        .collect();
        println!(
            "role: {} ({})",
            role.name,
            if kinds.is_empty() {
                "neither admin nor host".to_string()
            } else {
                kinds.join(", ")
            }
        );
        if let Some(s) = &status {
            println!(
                "schema version: {} (this twofactor's newest: {}{})",
                s.schema_version,
                newest(),
                if s.schema_version == newest() {
                    ", applied"
                } else {
                    ", NOT the same"
                }
            );
            println!(
                "synchronous_standby_names: {}",
                if s.synchronous_standby_names.is_empty() {
                    "(empty)"
                } else {
                    &s.synchronous_standby_names
                }
            );
            println!("synchronous_commit: {}", s.synchronous_commit);
            println!("synchronous standbys attached: {}", s.sync_standbys);
            println!(
                "host role can read seeds: {}",
                if s.host_can_read_seeds {
                    "YES (must be no)"
                } else {
                    "no"
                }
            );
        }
        for w in &found {
            println!("WARNING: {w}");
        }
        if found.is_empty() {
            println!("OK: the fleet database is healthy.");
        }
    }
    Ok(u8::from(!found.is_empty()))
}

/// The fleet's problems for `twofactor check`: the agent's socket, the
/// connection with this config, the schema version, seeds kept from the
/// host role, and commits protected by a synchronous standby.
pub fn check_problems(admin: &Admin) -> Vec<Problem> {
    let Some(fleet) = &admin.config.fleet else {
        return Vec::new();
    };
    let mut problems: Vec<Problem> = socket_problem(fleet).into_iter().collect();
    let at_config = |problem: String| Problem {
        path: admin.config_path.clone(),
        problem,
    };
    let mut client = match connect(fleet) {
        Ok(c) => c,
        Err(e) => {
            problems.push(at_config(format!(
                "{e} ([fleet]: every login is denied while the agent cannot reach the database)"
            )));
            return problems;
        }
    };
    match fleet_status(&mut client) {
        Ok(s) => problems.extend(warnings(&s).into_iter().map(at_config)),
        Err(e) => problems.push(at_config(format!("[fleet]: {e}"))),
    }
    problems
}

/// The agent's socket: there, a socket, root's, and for root only.
fn socket_problem(fleet: &Fleet) -> Option<Problem> {
    let path = &fleet.agent_socket;
    let problem = |problem: String| {
        Some(Problem {
            path: path.clone(),
            problem,
        })
    };
    match store::check_socket(path) {
        Ok(()) => {}
        Err(StoreError::Io {
            errno: nix::errno::Errno::ENOENT,
            ..
        }) => {
            return problem(
                "no agent listens here: every login is denied (systemctl enable --now pam-twofactor-agent.socket)".into(),
            );
        }
        Err(e) => {
            let text = e.to_string();
            let prefix = format!("{}: ", path.display());
            let what = text.strip_prefix(&prefix).unwrap_or(&text);
            return problem(format!(
                "{what} ([fleet] agent_socket: the module does not use a socket others could replace)"
            ));
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => problem("is not a socket".into()),
        Ok(meta) if meta.uid() != 0 => problem(format!(
            "is owned by uid {}; the agent's socket must be root's",
            meta.uid()
        )),
        Ok(meta) if meta.mode() & 0o077 != 0 => problem(format!(
            "has mode {:04o}; the agent's socket must be for root only (0600)",
            meta.mode() & 0o7777
        )),
        Ok(_) => None,
        Err(e) => problem(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy() -> FleetStatus {
        FleetStatus {
            schema_version: newest(),
            synchronous_standby_names: "ANY 1 (s1, s2)".into(),
            synchronous_commit: "on".into(),
            sync_standbys: 2,
            host_can_read_seeds: false,
        }
    }

    /// A fleet with a synchronous standby, the newest schema and seeds
    /// kept from hosts has nothing to warn of.
    #[test]
    fn a_healthy_fleet_has_no_warnings() {
        assert!(warnings(&healthy()).is_empty());
        assert_eq!(unprotected_writes(&healthy()), None);
    }

    /// No standby, no names or commits that do not wait each give the
    /// loud warning, naming every reason.
    #[test]
    fn writes_without_a_synchronous_standby_are_warned_of_loudly() {
        let mut s = healthy();
        s.sync_standbys = 0;
        let w = warnings(&s);
        assert_eq!(w.len(), 1);
        assert!(w[0].starts_with("WRITES ARE NOT PROTECTED"), "{}", w[0]);
        assert!(w[0].contains("no synchronous standby is attached"));
        let mut s = healthy();
        s.synchronous_standby_names = String::new();
        s.synchronous_commit = "local".into();
        let why = unprotected_writes(&s).unwrap();
        assert!(why.contains("synchronous_standby_names is empty"), "{why}");
        assert!(why.contains("synchronous_commit = local"), "{why}");
        s.synchronous_commit = "remote_apply".into();
        assert!(
            !unprotected_writes(&s)
                .unwrap()
                .contains("synchronous_commit")
        );
    }

    /// Seeds readable by hosts and a schema older or newer than this
    /// binary are each a warning with the fix.
    #[test]
    fn readable_seeds_and_a_different_schema_are_warned_of() {
        let mut s = healthy();
        s.host_can_read_seeds = true;
        let w = warnings(&s);
        assert_eq!(w.len(), 1);
        assert!(w[0].contains("REVOKE ALL ON twofactor.devices"), "{}", w[0]);
        let mut s = healthy();
        s.schema_version = newest() - 1;
        assert!(warnings(&s)[0].contains("run twofactor fleet init"));
        s.schema_version = newest() + 1;
        assert!(warnings(&s)[0].contains("upgrade twofactor"));
    }
}
