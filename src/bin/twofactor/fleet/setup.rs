//! Setting up the fleet's database: `fleet init` (the schema, its
//! functions and group roles, and the first policy), `fleet set-policy`,
//! and one login role per host (`fleet add-host`, `fleet remove-host`).
//! These run as the database administrator's role: one that may create
//! roles and schemas.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use pam_twofactor::admin::{Admin, AdminError, audit};
use pam_twofactor::otp::backup::random_bytes;
use postgres::Transaction;
use serde_json::json;
use zeroize::Zeroizing;

use super::migrate::{newest, pending};
use super::names::{HOST_GROUP, HostName, quote_ident, quote_literal};
use super::policy::{NO_SYNC_WARNING, policy_json};
use super::session::{connect, failed, fleet_section, sql_error};
use crate::output::print_json;

/// The advisory lock `fleet init` holds for its transaction, so that two
/// runs at once apply each migration once ("tf-init").
const INIT_LOCK: i64 = 0x0074_662d_696e_6974;

/// Bytes of a host role's random password (256 bits, 64 hex digits).
const PASSWORD_BYTES: usize = 32;

/// The schema version recorded in the database; 0 without a schema.
fn applied_version(tx: &mut Transaction) -> Result<i32, AdminError> {
    let exists: bool = tx
        .query_one(
            "SELECT to_regclass('twofactor.schema_version') IS NOT NULL",
            &[],
        )
        .and_then(|row| row.try_get(0))
        .map_err(failed("read the schema version"))?;
    if !exists {
        return Ok(0);
    }
    let version: Option<i32> = tx
        .query_one("SELECT max(version) FROM twofactor.schema_version", &[])
        .and_then(|row| row.try_get(0))
        .map_err(failed("read twofactor.schema_version"))?;
    Ok(version.unwrap_or(0))
}

/// `schema_version` says `version` (whatever the file itself wrote).
fn record_version(tx: &mut Transaction, version: i32) -> Result<(), AdminError> {
    let updated = tx
        .execute(
            "UPDATE twofactor.schema_version SET version = $1",
            &[&version],
        )
        .map_err(failed("record the schema version"))?;
    if updated == 0 {
        tx.execute(
            "INSERT INTO twofactor.schema_version (version) VALUES ($1)",
            &[&version],
        )
        .map_err(failed("record the schema version"))?;
    }
    Ok(())
}

/// Statement logging (`log_statement = all`, `log_min_duration_statement`)
/// writes bind parameters, which here are seeds (`admin_enroll`) and typed
/// codes (`attempt`): this database's sessions log none. A superuser's
/// setting; `false` when this role may not make it (nothing else changes).
fn keep_parameters_out_of_logs(tx: &mut Transaction) -> Result<bool, AdminError> {
    let mut savepoint = tx.transaction().map_err(failed("begin a savepoint"))?;
    let set = savepoint.batch_execute(
        "DO $$ BEGIN
           EXECUTE format('ALTER DATABASE %I SET log_parameter_max_length = 0', current_database());
           EXECUTE format('ALTER DATABASE %I SET log_parameter_max_length_on_error = 0', current_database());
         END $$",
    );
    match set {
        Ok(()) => savepoint
            .commit()
            .map_err(failed("release the savepoint"))?,
        Err(_) => {
            savepoint
                .rollback()
                .map_err(failed("roll back the savepoint"))?;
            return Ok(false);
        }
    }
    Ok(true)
}

const LOGS_WARNING: &str = "this role may not set log_parameter_max_length = 0 for the database: with statement logging on, the server would log seeds and codes; as a superuser run ALTER DATABASE <name> SET log_parameter_max_length = 0";

/// `twofactor fleet init`: applies every migration above the database's
/// schema version in one transaction under an advisory lock; on first
/// creation, sets the fleet policy from this config.
pub fn run_init(admin: &Admin, require_sync_standby: bool, json: bool) -> Result<u8, AdminError> {
    let fleet = fleet_section(&admin.config)?;
    let mut client = connect(fleet)?;
    let mut tx = client.transaction().map_err(failed("begin"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&INIT_LOCK])
        .map_err(failed("take fleet init's lock"))?;
    let before = applied_version(&mut tx)?;
    if before > newest() {
        return Err(AdminError::Database(format!(
            "the fleet schema is at version {before}, newer than this twofactor knows ({}): upgrade twofactor here; nothing changed",
            newest()
        )));
    }
    let applied: Vec<&'static str> = pending(before).iter().map(|m| m.name).collect();
    for m in pending(before) {
        tx.batch_execute(m.sql)
            .map_err(|e| sql_error(&format!("apply sql/{}", m.name), &e))?;
        record_version(&mut tx, m.version)?;
    }
    let logs_kept_clean = if applied.is_empty() {
        None
    } else {
        Some(keep_parameters_out_of_logs(&mut tx)?)
    };
    let created = before == 0;
    let policy = created.then(|| policy_json(&admin.config, Some(require_sync_standby)));
    if let Some(policy) = &policy {
        tx.execute(
            "SELECT twofactor.admin_set_policy($1::text::jsonb)",
            &[&policy.to_string()],
        )
        .map_err(failed("set the fleet policy"))?;
    }
    tx.commit().map_err(failed("commit"))?;
    let changed = !applied.is_empty();
    if changed {
        audit::record(&format!(
            "fleet init: schema version {before} -> {} ({})",
            newest(),
            applied.join(", ")
        ));
    }
    let mut warnings = Vec::new();
    if created && !require_sync_standby {
        eprintln!("twofactor: {NO_SYNC_WARNING}");
        warnings.push(NO_SYNC_WARNING);
    }
    if logs_kept_clean == Some(false) {
        warnings.push(LOGS_WARNING);
    }
    if !created && !require_sync_standby {
        warnings.push(
            "--no-require-sync-standby is only used when the schema is created; use twofactor fleet set-policy --require-sync-standby no",
        );
    }
    if json {
        print_json(json!({
            "schema_version_before": before,
            "schema_version": newest(),
            "applied": applied,
            "policy": policy,
            "warnings": warnings,
            "changed": changed,
        }));
    } else {
        if changed {
            println!(
                "fleet schema: version {before} -> {} (applied {})",
                newest(),
                applied.join(", ")
            );
        } else {
            println!(
                "fleet schema: already at version {before}; nothing changed (the policy is unchanged too: twofactor fleet set-policy copies this config's values)"
            );
        }
        if created {
            println!(
                "fleet policy: set from {} (require_sync_standby = {require_sync_standby})",
                admin.config_path.display()
            );
        }
        if logs_kept_clean == Some(false) {
            println!("WARNING: {LOGS_WARNING}");
        }
        if !created && !require_sync_standby {
            println!(
                "note: --no-require-sync-standby is only used when the schema is created; use twofactor fleet set-policy --require-sync-standby no"
            );
        }
        if created {
            println!(
                "next: twofactor fleet add-host NAME for each host, then twofactor fleet status"
            );
        }
    }
    Ok(0)
}

/// `twofactor fleet set-policy`: this config's values become the fleet's
/// policy (and `require_sync_standby` if given).
pub fn run_set_policy(
    admin: &Admin,
    require_sync_standby: Option<bool>,
    json: bool,
) -> Result<u8, AdminError> {
    let fleet = fleet_section(&admin.config)?;
    let mut client = connect(fleet)?;
    let policy = policy_json(&admin.config, require_sync_standby);
    client
        .execute(
            "SELECT twofactor.admin_set_policy($1::text::jsonb)",
            &[&policy.to_string()],
        )
        .map_err(failed("set the fleet policy"))?;
    audit::record(&format!(
        "fleet policy set from {}{}",
        admin.config_path.display(),
        require_sync_standby.map_or(String::new(), |r| format!(" (require_sync_standby = {r})"))
    ));
    let warning = (require_sync_standby == Some(false)).then_some(NO_SYNC_WARNING);
    if let Some(w) = warning {
        eprintln!("twofactor: {w}");
    }
    if json {
        print_json(
            json!({"policy": policy, "warnings": warning.into_iter().collect::<Vec<_>>(), "changed": true}),
        );
    } else {
        println!("fleet policy: set from {}", admin.config_path.display());
        if let Some(object) = policy.as_object() {
            for (key, value) in object {
                println!("  {key} = {value}");
            }
        }
    }
    Ok(0)
}

/// Creates `path` (0600, never over an existing file) holding `password`
/// and a newline, on disk before it returns.
fn write_password_file(path: &Path, password: &str) -> Result<(), AdminError> {
    let io = |e: std::io::Error| {
        AdminError::BadOption(format!("--password-file {}: {e}", path.display()))
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(io)?;
    let mut line = Zeroizing::new(password.to_string());
    line.push('\n');
    file.write_all(line.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)
}

/// `twofactor fleet add-host NAME [--password-file FILE]`: the host's
/// login role `tf_host_NAME`, a member of twofactor_host, and its row in
/// `twofactor.hosts`.
pub fn run_add_host(
    admin: &Admin,
    name: &str,
    password_file: Option<&Path>,
    json: bool,
) -> Result<u8, AdminError> {
    let host = HostName::parse(name).map_err(|e| AdminError::BadOption(e.to_string()))?;
    let role = host.role();
    let fleet = fleet_section(&admin.config)?;
    let mut client = connect(fleet)?;
    let taken: bool = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)",
            &[&role],
        )
        .and_then(|row| row.try_get(0))
        .map_err(failed("look for the role"))?;
    if taken {
        return Err(AdminError::BadOption(format!(
            "role {role} already exists: host {host} is in the fleet (remove it first: twofactor fleet remove-host {host})"
        )));
    }
    // The password file first: a role whose password was never stored
    // would be useless, and an existing file is never overwritten.
    let verifier = match password_file {
        Some(path) => {
            let bytes = Zeroizing::new(random_bytes::<PASSWORD_BYTES>().ok_or(AdminError::Crypto)?);
            let password = Zeroizing::new(data_encoding::HEXLOWER.encode(&bytes[..]));
            // The SCRAM verifier is computed here: the server and its logs
            // (log_statement = ddl) only ever see the verifier.
            let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
            write_password_file(path, &password)?;
            Some(verifier)
        }
        None => None,
    };
    let created = create_host_role(&mut client, &host, &role, verifier.as_deref());
    if let Err(e) = created {
        if let Some(path) = password_file {
            let _ = std::fs::remove_file(path);
        }
        return Err(e);
    }
    let database: String = client
        .query_one("SELECT current_database()", &[])
        .and_then(|row| row.try_get(0))
        .unwrap_or_else(|_| "twofactor".into());
    audit::record(&format!(
        "fleet: added host {host} (role {role}, {})",
        if verifier.is_some() {
            "password"
        } else {
            "client certificate"
        }
    ));
    let method = if verifier.is_some() {
        "scram-sha-256"
    } else {
        "cert"
    };
    let hba = format!("hostssl {database} {role} 0.0.0.0/0 {method}");
    if json {
        print_json(json!({
            "host": host.as_str(),
            "role": role,
            "password_file": password_file.map(|p| p.display().to_string()),
            "certificate_cn": verifier.is_none().then(|| role.clone()),
            "pg_hba": hba,
            "changed": true,
        }));
    } else {
        println!("host {host}: role {role} created (a member of {HOST_GROUP})");
        println!("pg_hba.conf line (narrow 0.0.0.0/0 to the host's address):\n  {hba}");
        match password_file {
            Some(path) => println!(
                "password: in {} (0600). Copy it to the host as a root-only file and name it there in [fleet] password_file; its [fleet] database says user={role}.",
                path.display()
            ),
            None => println!(
                "client certificate: the host's certificate needs CN={role} (signed by the server's ssl_ca_file); name it in the host's [fleet] sslcert and sslkey, and user={role} in its [fleet] database."
            ),
        }
    }
    Ok(0)
}

fn create_host_role(
    client: &mut postgres::Client,
    host: &HostName,
    role: &str,
    verifier: Option<&str>,
) -> Result<(), AdminError> {
    let mut sql = format!(
        "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION IN ROLE {}",
        quote_ident(role),
        quote_ident(HOST_GROUP)
    );
    if let Some(verifier) = verifier {
        let literal = quote_literal(verifier).ok_or_else(|| {
            AdminError::Database("the SCRAM verifier has unexpected characters".into())
        })?;
        sql.push_str(&format!(" PASSWORD {literal}"));
    }
    let mut tx = client.transaction().map_err(failed("begin"))?;
    tx.batch_execute(&sql)
        .map_err(failed("create the host's role"))?;
    tx.execute(
        "INSERT INTO twofactor.hosts (name, role, added) VALUES ($1, $2, extract(epoch FROM clock_timestamp())::bigint)",
        &[&host.as_str(), &role],
    )
    .map_err(failed("add the host to twofactor.hosts"))?;
    tx.commit().map_err(failed("commit"))
}

/// `twofactor fleet remove-host NAME`: the role can log in no more
/// (committed first), its sessions are ended, then the role and its row
/// go. Its logins stop at once.
pub fn run_remove_host(admin: &Admin, name: &str, json: bool) -> Result<u8, AdminError> {
    let host = HostName::parse(name).map_err(|e| AdminError::BadOption(e.to_string()))?;
    let role = host.role();
    let fleet = fleet_section(&admin.config)?;
    let mut client = connect(fleet)?;
    let found = client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1), EXISTS (SELECT 1 FROM twofactor.hosts WHERE name = $2)",
            &[&role, &host.as_str()],
        )
        .and_then(|row| Ok((row.try_get::<_, bool>(0)?, row.try_get::<_, bool>(1)?)))
        .map_err(failed("look for the host"))?;
    let (role_exists, row_exists) = found;
    if !role_exists && !row_exists {
        return Err(AdminError::BadOption(format!(
            "host {host} is not in the fleet (no role {role})"
        )));
    }
    let mut terminated = 0i64;
    if role_exists {
        // No new session from here on; then end the ones already open.
        client
            .batch_execute(&format!("ALTER ROLE {} NOLOGIN", quote_ident(&role)))
            .map_err(failed("stop the host's logins"))?;
        terminated = client
            .query_one(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = $1",
                &[&role],
            )
            .and_then(|row| row.try_get(0))
            .map_err(failed("end the host's sessions"))?;
    }
    let mut tx = client.transaction().map_err(failed("begin"))?;
    if role_exists {
        tx.batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(&role)))
            .map_err(failed("drop the host's role"))?;
    }
    tx.execute(
        "DELETE FROM twofactor.hosts WHERE name = $1",
        &[&host.as_str()],
    )
    .map_err(failed("remove the host from twofactor.hosts"))?;
    tx.commit().map_err(failed("commit"))?;
    audit::record(&format!(
        "fleet: removed host {host} (role {role} dropped, {terminated} session(s) ended)"
    ));
    if json {
        print_json(json!({
            "host": host.as_str(),
            "role": role,
            "sessions_ended": terminated,
            "changed": true,
        }));
    } else {
        println!(
            "host {host}: role {role} dropped, {terminated} open session(s) ended; its logins are refused from now on (remove its line from pg_hba.conf too)"
        );
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The password file is created 0600, holds the password and a
    /// newline, and is never written over an existing file or symlink.
    #[test]
    fn the_password_file_is_new_and_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tf-pwfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("web1.password");
        let _ = std::fs::remove_file(&path);
        write_password_file(&path, "abc123").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "abc123\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = write_password_file(&path, "other").unwrap_err();
        assert!(again.to_string().contains("exists"), "{again}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "abc123\n");
        let link = dir.join("link");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(dir.join("elsewhere"), &link).unwrap();
        assert!(write_password_file(&link, "x").is_err());
        assert!(!dir.join("elsewhere").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
