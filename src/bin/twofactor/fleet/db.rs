//! One connection to the fleet's database from `[fleet]`: the agent's (a
//! host role) and the admin commands' (an admin role). Only this binary
//! links a PostgreSQL client; the PAM module never does.

use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;
use std::sync::mpsc;
use std::time::Duration;

use openssl::ssl::{SslConnector, SslFiletype, SslMethod};
use pam_twofactor::config::Fleet;
use postgres::config::SslMode;
use postgres::{Client, Config};
use postgres_openssl::MakeTlsConnector;
use zeroize::Zeroizing;

/// The most bytes a password file may have.
const MAX_PASSWORD_FILE: u64 = 4096;

/// Why no connection was made.
#[derive(Debug)]
pub enum DbError {
    /// `[fleet] database` is not a connection string the client accepts.
    ConnectionString(String),
    /// `[fleet] database` holds a password (it belongs in `password_file`).
    PasswordInConfig,
    /// A file named in `[fleet]` could not be used.
    File { key: &'static str, error: String },
    /// TLS could not be set up from those files.
    Tls(String),
    /// The database could not be reached, or refused the credentials.
    Connect(postgres::Error),
    /// No server of `[fleet] database` gave a connection in time: why, for
    /// each one in order.
    NoServer(Vec<String>),
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::ConnectionString(e) => write!(f, "[fleet] database: {e}"),
            DbError::PasswordInConfig => f.write_str(
                "[fleet] database holds a password: put it in a root-only file named by [fleet] password_file, or use a client certificate",
            ),
            DbError::File { key, error } => write!(f, "[fleet] {key}: {error}"),
            DbError::Tls(e) => write!(f, "[fleet] TLS set-up: {e}"),
            // postgres::Error's own text is only "db error" for the
            // server's refusals: show the server's message.
            DbError::Connect(e) => {
                write!(f, "cannot connect to the fleet database: {}", reason(e))
            }
            DbError::NoServer(each) => {
                write!(f, "cannot connect to the fleet database: {}", each.join("; "))
            }
        }
    }
}

impl std::error::Error for DbError {}

/// The server's message for its refusals, the client's text otherwise.
fn reason(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}

/// The client configuration from `fleet`, with `timeout` for connecting.
pub fn config(fleet: &Fleet, timeout: Duration) -> Result<Config, DbError> {
    let mut config =
        Config::from_str(&fleet.database).map_err(|e| DbError::ConnectionString(e.to_string()))?;
    if config.get_password().is_some() {
        return Err(DbError::PasswordInConfig);
    }
    if let Some(path) = &fleet.password_file {
        let password = read_password(path).map_err(|error| DbError::File {
            key: "password_file",
            error,
        })?;
        config.password(password.as_bytes());
    }
    config.connect_timeout(timeout);
    // A dead peer (a primary that vanished) is noticed without waiting for
    // the kernel's two hours.
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    config.application_name("pam-twofactor");
    Ok(config)
}

/// One configuration per server that `config` names (`host=a,b
/// port=1,2`), in its order, each with every other setting of `config`
/// (its notice callback aside: it has no getter). The `postgres` crate
/// bounds only the TCP connect of each server by `connect_timeout`, not
/// the TLS handshake and start-up after it: a server whose kernel accepts
/// connections but that never answers (a hung or stopped postmaster, a
/// proxy whose backend is gone) would hold the connect, and the servers
/// after it would never be tried. With one configuration per server the
/// caller can bound each attempt (the agent: `sql::PgConnector`).
pub fn per_server(config: &Config) -> Vec<Config> {
    let hosts = config.get_hosts();
    let addrs = config.get_hostaddrs();
    let count = hosts.len().max(addrs.len());
    if count <= 1 {
        return vec![config.clone()];
    }
    let ports = config.get_ports();
    (0..count)
        .map(|i| {
            let mut one = Config::new();
            match hosts.get(i) {
                Some(postgres::config::Host::Tcp(host)) => {
                    one.host(host);
                }
                Some(postgres::config::Host::Unix(path)) => {
                    one.host_path(path);
                }
                None => {}
            }
            if let Some(addr) = addrs.get(i) {
                one.hostaddr(*addr);
            }
            if let Some(port) = ports.get(i).or_else(|| ports.first()) {
                one.port(*port);
            }
            if let Some(user) = config.get_user() {
                one.user(user);
            }
            if let Some(password) = config.get_password() {
                one.password(password);
            }
            if let Some(dbname) = config.get_dbname() {
                one.dbname(dbname);
            }
            if let Some(options) = config.get_options() {
                one.options(options);
            }
            if let Some(name) = config.get_application_name() {
                one.application_name(name);
            }
            one.ssl_mode(config.get_ssl_mode())
                .ssl_negotiation(config.get_ssl_negotiation());
            if let Some(timeout) = config.get_connect_timeout() {
                one.connect_timeout(*timeout);
            }
            if let Some(timeout) = config.get_tcp_user_timeout() {
                one.tcp_user_timeout(*timeout);
            }
            one.keepalives(config.get_keepalives())
                .keepalives_idle(config.get_keepalives_idle());
            if let Some(interval) = config.get_keepalives_interval() {
                one.keepalives_interval(interval);
            }
            if let Some(retries) = config.get_keepalives_retries() {
                one.keepalives_retries(retries);
            }
            one.target_session_attrs(config.get_target_session_attrs())
                .channel_binding(config.get_channel_binding())
                .load_balance_hosts(config.get_load_balance_hosts());
            one
        })
        .collect()
}

/// Connects as `fleet` says, TLS unless `sslmode=disable` (with TLS the
/// server's certificate and name are always verified, against
/// `sslrootcert` or the system's CAs). For the one-shot admin commands:
/// each server of `[fleet] database` is tried in order for at most its
/// share of `timeout` in all, TLS and start-up included (see
/// [`per_server`]), so an admin is answered within `timeout` even when a
/// server accepts connections and never answers — a failover is when
/// admins run these commands. An attempt past its share is left to the
/// end of the process; the agent, which lives on, keeps count of its own
/// (`agent::sql::PgConnector`).
pub fn connect(fleet: &Fleet, timeout: Duration) -> Result<Client, DbError> {
    let config = config(fleet, timeout)?;
    let servers = per_server(&config);
    let count = servers.len();
    let share = timeout / u32::try_from(count).unwrap_or(u32::MAX);
    let mut errors = Vec::new();
    for (i, mut server) in servers.into_iter().enumerate() {
        server.connect_timeout(share);
        let (sender, receiver) = mpsc::sync_channel(1);
        let fleet = fleet.clone();
        std::thread::Builder::new()
            .name("connect".into())
            .spawn(move || {
                let _ = sender.send(connect_with(&fleet, &server));
            })
            .map_err(|e| DbError::NoServer(vec![format!("cannot start a thread: {e}")]))?;
        match receiver.recv_timeout(share) {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(DbError::Connect(e))) if count == 1 => return Err(DbError::Connect(e)),
            Ok(Err(DbError::Connect(e))) => {
                errors.push(format!("server {}: {}", i + 1, reason(&e)))
            }
            // TLS files or the password file: the same for every server.
            Ok(Err(other)) => return Err(other),
            Err(_) => errors.push(format!(
                "server {} did not complete a connection within {:.1} s",
                i + 1,
                share.as_secs_f64()
            )),
        }
    }
    Err(DbError::NoServer(errors))
}

/// Connects with `config` (from [`config`], with the caller's additions
/// such as a notice callback), TLS set up from `fleet` as [`connect`] does.
pub fn connect_with(fleet: &Fleet, config: &Config) -> Result<Client, DbError> {
    if config.get_ssl_mode() == SslMode::Disable {
        return config.connect(postgres::NoTls).map_err(DbError::Connect);
    }
    config.connect(tls(fleet)?).map_err(DbError::Connect)
}

/// The OpenSSL connector from `sslrootcert`, `sslcert` and `sslkey`.
fn tls(fleet: &Fleet) -> Result<MakeTlsConnector, DbError> {
    let tls = |e: openssl::error::ErrorStack| DbError::Tls(e.to_string());
    let mut builder = SslConnector::builder(SslMethod::tls_client()).map_err(tls)?;
    if let Some(ca) = &fleet.sslrootcert {
        builder
            .set_ca_file(ca)
            .map_err(|e| file_error("sslrootcert", ca, e))?;
    }
    match (&fleet.sslcert, &fleet.sslkey) {
        (Some(cert), Some(key)) => {
            builder
                .set_certificate_chain_file(cert)
                .map_err(|e| file_error("sslcert", cert, e))?;
            builder
                .set_private_key_file(key, SslFiletype::PEM)
                .map_err(|e| file_error("sslkey", key, e))?;
            builder
                .check_private_key()
                .map_err(|e| file_error("sslkey", key, e))?;
        }
        (None, None) => {}
        (Some(_), None) | (None, Some(_)) => {
            return Err(DbError::Tls(
                "sslcert and sslkey go together: set both or neither".into(),
            ));
        }
    }
    Ok(MakeTlsConnector::new(builder.build()))
}

fn file_error(key: &'static str, path: &Path, e: openssl::error::ErrorStack) -> DbError {
    DbError::File {
        key,
        error: format!("{}: {e}", path.display()),
    }
}

/// The password from a root-only file (its first line).
fn read_password(path: &Path) -> Result<Zeroizing<String>, String> {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.mode() & 0o077 != 0 || meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(format!(
            "{}: must be owned by the user running twofactor and readable by nobody else (chmod 0600)",
            path.display()
        ));
    }
    let mut text = Zeroizing::new(String::new());
    file.take(MAX_PASSWORD_FILE)
        .read_to_string(&mut text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let line = text.lines().next().unwrap_or("");
    if line.is_empty() {
        return Err(format!("{}: is empty", path.display()));
    }
    Ok(Zeroizing::new(line.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::from_str(text).unwrap()
    }

    /// Each server's configuration is the string with that server alone:
    /// every other setting carried over (compared through Debug, which
    /// shows every field and hides the password).
    #[test]
    fn per_server_keeps_every_setting() {
        let rest = "dbname=twofactor user=tf_host_web1 password=pw options='-c a=b' \
                    application_name=x sslmode=require connect_timeout=7 \
                    tcp_user_timeout=9 keepalives=1 keepalives_idle=30 \
                    keepalives_interval=5 keepalives_retries=3 \
                    target_session_attrs=read-write channel_binding=require";
        let both = parse(&format!("host=10.0.0.1,db2 port=5432,6543 {rest}"));
        let each = per_server(&both);
        assert_eq!(each.len(), 2);
        for (config, (host, port)) in each.iter().zip([("10.0.0.1", 5432), ("db2", 6543)]) {
            let alone = parse(&format!("host={host} port={port} {rest}"));
            assert_eq!(format!("{config:?}"), format!("{alone:?}"));
            assert_eq!(config.get_password(), Some(&b"pw"[..]));
        }
        // One port for every server.
        let each = per_server(&parse("host=a,b port=7 user=u"));
        assert_eq!(each[1].get_ports(), [7]);
        // A single server: the configuration itself.
        let one = parse(&format!("host=a port=1 {rest}"));
        let each = per_server(&one);
        assert_eq!(each.len(), 1);
        assert_eq!(format!("{:?}", each[0]), format!("{one:?}"));
    }
}
