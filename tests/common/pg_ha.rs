//! A throwaway PostgreSQL 15 primary with synchronous standbys, TLS and
//! client-certificate authentication (issue 16, "a failover that loses
//! nothing"). Root only: callers gate on [`super::root_or_skip`] first.
//!
//! ```ignore
//! let ha = PgHa::start(HaOptions::loopback());   // primary + standby1 (sync)
//! ha.superuser("postgres").batch_execute("CREATE DATABASE twofactor")?;
//! let (cert, key) = ha.client_cert("tf_host_web1");   // CN = the role
//! let conn = ha.connection_string("twofactor", "tf_host_web1");
//! ha.kill_primary();                             // SIGKILL, every process gone
//! ha.promote_standby("standby1");                // the standby takes over
//! ha.rebuild_as_standby("standby1");             // the dead node comes back as its standby
//! ```
//!
//! Also: [`PgHa::stop_standby`] / [`PgHa::start_standby`] (no synchronous
//! standby, then one back), [`PgHa::set_sync_names`] (`ALTER SYSTEM` +
//! reload on the primary), [`PgHa::freeze_primary`] (SIGSTOP: a hung
//! server), [`PgHa::add_standby`], [`PgHa::tls_client`] (a role's
//! certificate through the two-server string), [`PgHa::superuser`] (the
//! primary over its Unix socket). [`HaOptions`] takes the address (e.g. a
//! bridge address of a network-namespace harness), the number of
//! standbys and `synchronous_standby_names`.
//!
//! * Everything lives in one fresh root-owned directory under
//!   [`super::sandbox_base`] (`pg-ha-PID-N`, removed on drop):
//!   `ca/` (0700 root: the CA made with the `openssl` CLI, the server's
//!   certificate, client certificates; every key 0600 root) and one
//!   `nodeN/` per server (0755 root) with `data/` and `sock/` (0700,
//!   owned by `postgres`) and `postgres.log`.
//! * Node 0 starts as the primary (a copy of [`super::pg::template`]),
//!   nodes 1.. as standbys made with `pg_basebackup -R -X stream` from it,
//!   named `standby1`, `standby2`, … (`application_name` in their
//!   `primary_conninfo`). Every server listens on TCP at the given address
//!   with a port of its own, and on a Unix socket in its private `sock/`.
//! * `postgresql.conf` (written into the primary's data directory, so the
//!   standbys copy it, as a real base backup does): `ssl = on` with the
//!   server certificate (CN and SAN = the address) and the CA for client
//!   certificates, `wal_level = replica`, `synchronous_commit = on`,
//!   `synchronous_standby_names` from [`HaOptions::sync_names`]. Settings
//!   are in the file, not on the command line: `ALTER SYSTEM` (which a test
//!   uses on a promoted standby) cannot override a command-line setting.
//! * `pg_hba.conf`: `local all postgres trust` and `local replication
//!   postgres trust` (the superuser and the standbys' WAL streams over the
//!   private Unix sockets), `hostssl all all ADDR/32 cert` (every role over
//!   TCP authenticates with a client certificate whose CN is its name), and
//!   the same for [`HaOptions::clients`] (the hosts' subnet) when given.
//! * Every server is started directly as a child running as the `postgres`
//!   user (no `pg_ctl`), so the test holds its PID; drop stops each one by
//!   that PID (SIGQUIT: immediate shutdown; SIGKILL after 5 s).
//!
//! Facts this harness lives with (../shared/FLEET.md): a promoted standby
//! keeps `synchronous_standby_names`, so with no standby left every commit
//! on it waits; `statement_timeout` does not end that wait.

use std::collections::HashMap;
use std::fs;
use std::net::{IpAddr, TcpListener};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, chown};

use super::pg::{SUPERUSER, as_postgres, fresh_dir, postgres_dir, postgres_ids, template};

/// How to build the cluster.
#[derive(Clone, Debug)]
pub struct HaOptions {
    /// Where every server listens (TCP) and what the server certificate
    /// names: loopback, or a bridge address of a network-namespace harness.
    pub addr: IpAddr,
    /// How many standbys (`standby1`, `standby2`, …); at least 1.
    pub standbys: usize,
    /// The primary's `synchronous_standby_names`; `None`: `standby1` for
    /// one standby, `ANY 1 (standby1, standby2, …)` for more.
    pub sync_names: Option<String>,
    /// A network (CIDR) clients connect from besides `addr` itself, e.g.
    /// the hosts' subnet of a network-namespace harness (`10.77.N.0/24`):
    /// `pg_hba.conf` lets it in with client certificates too.
    pub clients: Option<String>,
}

impl HaOptions {
    /// 127.0.0.1, one synchronous standby named `standby1`.
    pub fn loopback() -> HaOptions {
        HaOptions {
            addr: IpAddr::from([127, 0, 0, 1]),
            standbys: 1,
            sync_names: None,
            clients: None,
        }
    }

    fn sync_names(&self) -> String {
        self.sync_names.clone().unwrap_or_else(|| {
            let names: Vec<String> = (1..=self.standbys).map(standby_name).collect();
            if names.len() == 1 {
                names[0].clone()
            } else {
                format!("ANY 1 ({})", names.join(", "))
            }
        })
    }
}

fn standby_name(n: usize) -> String {
    format!("standby{n}")
}

/// One server: a node directory, its port, its process when running.
struct Node {
    dir: PathBuf,
    port: u16,
    /// `application_name` while it is a standby.
    standby_as: Option<String>,
    child: Option<Child>,
    /// Stopped by [`PgHa::freeze_primary`]: drop kills it at once.
    frozen: bool,
}

impl Node {
    fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    fn sock(&self) -> PathBuf {
        self.dir.join("sock")
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    fn running(&mut self) -> bool {
        match &mut self.child {
            Some(child) => child.try_wait().expect("wait for postgres").is_none(),
            None => false,
        }
    }

    /// A superuser connection over the Unix socket.
    fn superuser(&self, db: &str) -> Result<postgres::Client, postgres::Error> {
        let mut config = postgres::Config::new();
        config
            .host_path(self.sock())
            .port(self.port)
            .dbname(db)
            .user(SUPERUSER)
            .connect_timeout(Duration::from_secs(10));
        config.connect(postgres::NoTls)
    }
}

/// A primary with synchronous standbys; every process stopped on drop.
pub struct PgHa {
    dir: PathBuf,
    addr: IpAddr,
    /// [`HaOptions::clients`].
    clients: Option<String>,
    nodes: Mutex<Vec<Node>>,
    primary: Mutex<usize>,
    certs: Mutex<HashMap<String, (PathBuf, PathBuf)>>,
}

impl PgHa {
    /// Makes the CA and the server certificate, starts the primary and
    /// the standbys, and waits until every standby is streaming and the
    /// primary reports a synchronous one in `pg_stat_replication`.
    pub fn start(options: HaOptions) -> PgHa {
        assert!(options.standbys >= 1, "a standby at least");
        let dir = fresh_dir("ha");
        let ha = PgHa {
            addr: options.addr,
            clients: options.clients.clone(),
            nodes: Mutex::new(Vec::new()),
            primary: Mutex::new(0),
            certs: Mutex::new(HashMap::new()),
            dir,
        };
        ha.make_ca();

        // The primary: the template's data directory, our configuration.
        let primary = ha.new_node(0);
        let copied = Command::new("cp")
            .arg("-a")
            .arg(template())
            .arg(primary.data())
            .status()
            .expect("run cp");
        assert!(copied.success(), "cp -a of the template failed");
        ha.configure_primary(&primary.data(), &options.sync_names());
        ha.nodes.lock().unwrap().push(primary);
        ha.start_node(0);

        for n in 1..=options.standbys {
            let node = ha.new_node(n);
            ha.nodes.lock().unwrap().push(node);
            ha.base_backup(n, &standby_name(n));
            ha.start_node(n);
        }
        for n in 1..=options.standbys {
            ha.wait_streaming(&standby_name(n));
        }
        ha.wait_synchronous();
        ha
    }

    /// The address every server listens on.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The CA's certificate (the hosts' `sslrootcert`).
    pub fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca").join("ca.crt")
    }

    /// The TCP ports of every node, in node order (dead ones included:
    /// a connection string lists them all).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.lock().unwrap().iter().map(|n| n.port).collect()
    }

    /// The index of the node that is primary now.
    pub fn primary_index(&self) -> usize {
        *self.primary.lock().unwrap()
    }

    /// The primary's postmaster PID.
    pub fn primary_pid(&self) -> u32 {
        let i = self.primary_index();
        self.nodes.lock().unwrap()[i]
            .child
            .as_ref()
            .map(Child::id)
            .expect("the primary is not running")
    }

    /// Node `i`'s postmaster PID, if it runs.
    pub fn node_pid(&self, i: usize) -> Option<u32> {
        self.nodes.lock().unwrap()[i].child.as_ref().map(Child::id)
    }

    /// Every node's log, for failure messages.
    pub fn logs(&self) -> String {
        let nodes = self.nodes.lock().unwrap();
        nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("--- node {i} (port {}) ---\n{}", n.port, n.log()))
            .collect()
    }

    /// A libpq connection string for `role` on `db` naming every node, so
    /// that a client follows the primary: `host=A,A port=P1,P2
    /// dbname=… user=… sslmode=require target_session_attrs=read-write`.
    pub fn connection_string(&self, db: &str, role: &str) -> String {
        let ports = self.ports();
        let hosts = vec![self.addr.to_string(); ports.len()].join(",");
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        format!(
            "host={hosts} port={} dbname={db} user={role} sslmode=require target_session_attrs=read-write",
            ports.join(",")
        )
    }

    /// A client certificate (CN = `role`) and its key (0600 root) signed
    /// by the CA, made on first use.
    pub fn client_cert(&self, role: &str) -> (PathBuf, PathBuf) {
        assert!(
            !role.is_empty() && role.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'),
            "role {role:?}: letters, digits and _ only"
        );
        let mut certs = self.certs.lock().unwrap();
        if let Some(pair) = certs.get(role) {
            return pair.clone();
        }
        let ca = self.dir.join("ca");
        let cert = ca.join(format!("client-{role}.crt"));
        let key = ca.join(format!("client-{role}.key"));
        self.issue(&format!("/CN={role}"), "client", &cert, &key);
        certs.insert(role.to_string(), (cert.clone(), key.clone()));
        (cert, key)
    }

    /// A TLS connection as `role` with its client certificate, through
    /// [`PgHa::connection_string`] (the `postgres` crate with OpenSSL, as
    /// the agent connects; the server's certificate checked against the CA).
    pub fn tls_client(&self, db: &str, role: &str) -> Result<postgres::Client, postgres::Error> {
        let (cert, key) = self.client_cert(role);
        let mut builder =
            openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client())
                .expect("TLS connector");
        builder.set_ca_file(self.ca_cert()).expect("CA file");
        builder
            .set_certificate_chain_file(&cert)
            .expect("client certificate");
        builder
            .set_private_key_file(&key, openssl::ssl::SslFiletype::PEM)
            .expect("client key");
        let tls = postgres_openssl::MakeTlsConnector::new(builder.build());
        let mut config = postgres::Config::from_str(&self.connection_string(db, role))
            .expect("the postgres crate parses the connection string");
        config.connect_timeout(Duration::from_secs(10));
        config.connect(tls)
    }

    /// A superuser connection to the primary over its Unix socket.
    pub fn superuser(&self, db: &str) -> postgres::Client {
        let i = self.primary_index();
        self.node_superuser(i, db)
    }

    /// A superuser connection to node `i` over its Unix socket.
    pub fn node_superuser(&self, i: usize, db: &str) -> postgres::Client {
        let nodes = self.nodes.lock().unwrap();
        nodes[i]
            .superuser(db)
            .unwrap_or_else(|e| panic!("connect to node {i} ({db}): {e}"))
    }

    /// The standby named `name` (its node index), running or not.
    fn standby_index(&self, name: &str) -> usize {
        let nodes = self.nodes.lock().unwrap();
        nodes
            .iter()
            .position(|n| n.standby_as.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no standby named {name}"))
    }

    /// `kill -9` of the primary, as a machine that died: the postmaster is
    /// stopped (no more forks), then it and every one of its processes get
    /// SIGKILL; returns once all of them are gone (reaped, or zombies
    /// waiting for init), with the PIDs that were killed.
    pub fn kill_primary(&self) -> Vec<u32> {
        self.kill_node(self.primary_index())
    }

    /// [`PgHa::kill_primary`] for node `i` (also one that is frozen).
    pub fn kill_node(&self, i: usize) -> Vec<u32> {
        let mut nodes = self.nodes.lock().unwrap();
        nodes[i].frozen = false;
        let mut child = nodes[i].child.take().expect("the node is not running");
        let postmaster = child.id();
        let _ = kill(pid(postmaster), Signal::SIGSTOP);
        let mut pids = children_of(postmaster);
        pids.push(postmaster);
        for &p in &pids {
            let _ = kill(pid(p), Signal::SIGKILL);
        }
        let _ = child.wait();
        let alive = || -> Vec<u32> { pids.iter().copied().filter(|&p| is_alive(p)).collect() };
        poll(
            10,
            || alive().is_empty(),
            || format!("processes of the killed primary still alive: {:?}", alive()),
        );
        pids
    }

    /// Freezes the primary (SIGSTOP to the postmaster and every process
    /// of it): its kernel still accepts TCP connections, nothing answers —
    /// a hung server, or a proxy whose backend is gone. Returns its node
    /// index; [`PgHa::kill_node`] ends it (drop does too).
    pub fn freeze_primary(&self) -> usize {
        let i = self.primary_index();
        let mut nodes = self.nodes.lock().unwrap();
        let postmaster = nodes[i].child.as_ref().expect("not running").id();
        let _ = kill(pid(postmaster), Signal::SIGSTOP);
        for p in children_of(postmaster) {
            let _ = kill(pid(p), Signal::SIGSTOP);
        }
        nodes[i].frozen = true;
        i
    }

    /// A new node (its own port) as a standby named `name` of the current
    /// primary; waits until it is synchronous. Returns its index.
    pub fn add_standby(&self, name: &str) -> usize {
        let i = self.nodes.lock().unwrap().len();
        let node = self.new_node(i);
        self.nodes.lock().unwrap().push(node);
        self.base_backup(i, name);
        self.start_node(i);
        self.wait_streaming(name);
        self.wait_sync(name);
        i
    }

    /// Promotes the standby `name` (`SELECT pg_promote()`), and waits until
    /// it is out of recovery and its sessions are read-write (what
    /// `target_session_attrs=read-write` checks). It keeps its
    /// `synchronous_standby_names`: its commits wait for a standby of its
    /// own ([`PgHa::rebuild_as_standby`]) or for that setting to be
    /// cleared ([`PgHa::set_sync_names`]).
    pub fn promote_standby(&self, name: &str) {
        let i = self.standby_index(name);
        let mut client = self.node_superuser(i, "postgres");
        let promoted: bool = client
            .query_one("SELECT pg_promote(true, 30)", &[])
            .unwrap_or_else(|e| panic!("pg_promote on {name}: {e}\n{}", self.logs()))
            .get(0);
        assert!(promoted, "{name} was not promoted within 30 s");
        poll(
            30,
            || {
                let mut client = self.node_superuser(i, "postgres");
                let recovery: bool = client
                    .query_one("SELECT pg_is_in_recovery()", &[])
                    .unwrap()
                    .get(0);
                let read_only: String = client
                    .query_one("SHOW transaction_read_only", &[])
                    .unwrap()
                    .get(0);
                !recovery && read_only == "off"
            },
            || format!("{name} still read-only"),
        );
        self.nodes.lock().unwrap()[i].standby_as = None;
        *self.primary.lock().unwrap() = i;
    }

    /// Stops the standby `name` (fast shutdown, by its PID): from here the
    /// primary has no synchronous standby and every commit waits.
    pub fn stop_standby(&self, name: &str) {
        let i = self.standby_index(name);
        let mut nodes = self.nodes.lock().unwrap();
        let mut child = nodes[i].child.take().expect("the standby is not running");
        stop(&mut child, Signal::SIGINT, Duration::from_secs(10));
        drop(nodes);
        self.wait_gone_from_replication(name);
    }

    /// Starts the standby `name` again and waits until the primary reports
    /// it synchronous (`sync` or `quorum`).
    pub fn start_standby(&self, name: &str) {
        let i = self.standby_index(name);
        self.start_node(i);
        self.wait_streaming(name);
        self.wait_sync(name);
    }

    /// A dead node (the killed primary) comes back as a standby named
    /// `name` of the current primary: its data directory is replaced by a
    /// new base backup and it keeps its port (so a connection string
    /// listing every node stays right). Waits until it is synchronous.
    pub fn rebuild_as_standby(&self, name: &str) {
        let i = {
            let mut nodes = self.nodes.lock().unwrap();
            let dead = nodes
                .iter_mut()
                .position(|n| !n.running())
                .expect("no dead node to rebuild");
            let data = nodes[dead].data();
            fs::remove_dir_all(&data).unwrap_or_else(|e| panic!("remove {}: {e}", data.display()));
            nodes[dead].child = None;
            dead
        };
        self.base_backup(i, name);
        self.start_node(i);
        self.wait_streaming(name);
        self.wait_sync(name);
    }

    /// `ALTER SYSTEM SET synchronous_standby_names` on the primary and a
    /// reload; returns once a new session sees the value.
    pub fn set_sync_names(&self, value: &str) {
        let quoted = value.replace('\'', "''");
        let mut su = self.superuser("postgres");
        // Two statements: several in one query string are one transaction
        // block, which ALTER SYSTEM refuses.
        su.batch_execute(&format!(
            "ALTER SYSTEM SET synchronous_standby_names = '{quoted}'"
        ))
        .unwrap();
        su.batch_execute("SELECT pg_reload_conf()").unwrap();
        poll(
            10,
            || {
                let now: String = self
                    .superuser("postgres")
                    .query_one("SHOW synchronous_standby_names", &[])
                    .unwrap()
                    .get(0);
                now == value
            },
            || "reload not seen".to_string(),
        );
    }

    /// Waits until the primary reports the standby `name` as `sync` or
    /// `quorum` in `pg_stat_replication`.
    pub fn wait_sync(&self, name: &str) {
        self.wait_replication(name, "sync_state IN ('sync', 'quorum')", "synchronous");
    }

    // ---- set-up ----

    fn new_node(&self, n: usize) -> Node {
        let dir = self.dir.join(format!("node{n}"));
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&dir)
            .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        postgres_dir(&dir.join("sock"));
        Node {
            dir,
            port: free_port(self.addr),
            standby_as: (n > 0).then(|| standby_name(n)),
            child: None,
            frozen: false,
        }
    }

    /// The CA (`ca/ca.crt`, `ca/ca.key`) and the server's certificate for
    /// the address (`ca/server.crt`, `ca/server.key`).
    fn make_ca(&self) {
        let ca = self.dir.join("ca");
        fs::DirBuilder::new().mode(0o700).create(&ca).unwrap();
        fs::set_permissions(&ca, fs::Permissions::from_mode(0o700)).unwrap();
        let san = format!("IP:{}", self.addr);
        fs::write(
            ca.join("openssl.cnf"),
            format!(
                "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n\
                 [ca]\nbasicConstraints = critical,CA:TRUE\nkeyUsage = critical,keyCertSign,cRLSign\n\
                 subjectKeyIdentifier = hash\n\
                 [server]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n\
                 extendedKeyUsage = serverAuth\nsubjectAltName = {san}\n\
                 [client]\nbasicConstraints = CA:FALSE\nkeyUsage = critical,digitalSignature\n\
                 extendedKeyUsage = clientAuth\n"
            ),
        )
        .unwrap();
        openssl(&[
            "req",
            "-x509",
            "-new",
            "-config",
            &path_str(&ca.join("openssl.cnf")),
            "-extensions",
            "ca",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &path_str(&ca.join("ca.key")),
            "-out",
            &path_str(&ca.join("ca.crt")),
            "-subj",
            "/CN=pam-twofactor test CA",
            "-days",
            "2",
        ]);
        self.issue(
            &format!("/CN={}", self.addr),
            "server",
            &ca.join("server.crt"),
            &ca.join("server.key"),
        );
    }

    /// A key and a certificate for `subject` signed by the CA, with the
    /// extensions of section `kind` of `ca/openssl.cnf`.
    fn issue(&self, subject: &str, kind: &str, cert: &Path, key: &Path) {
        static SERIAL: AtomicU32 = AtomicU32::new(2);
        let ca = self.dir.join("ca");
        let csr = cert.with_extension("csr");
        let config = path_str(&ca.join("openssl.cnf"));
        openssl(&[
            "req",
            "-new",
            "-config",
            &config,
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            &path_str(key),
            "-out",
            &path_str(&csr),
            "-subj",
            subject,
        ]);
        fs::set_permissions(key, fs::Permissions::from_mode(0o600)).unwrap();
        let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
        openssl(&[
            "x509",
            "-req",
            "-in",
            &path_str(&csr),
            "-CA",
            &path_str(&ca.join("ca.crt")),
            "-CAkey",
            &path_str(&ca.join("ca.key")),
            "-set_serial",
            &serial.to_string(),
            "-days",
            "2",
            "-extfile",
            &config,
            "-extensions",
            kind,
            "-out",
            &path_str(cert),
        ]);
        let _ = fs::remove_file(csr);
    }

    /// The primary's configuration, its TLS files and `pg_hba.conf`.
    fn configure_primary(&self, data: &Path, sync_names: &str) {
        let ca = self.dir.join("ca");
        let (uid, gid) = postgres_ids();
        for (from, to, mode) in [
            ("server.crt", "server.crt", 0o644),
            ("server.key", "server.key", 0o600),
            ("ca.crt", "root.crt", 0o644),
        ] {
            let target = data.join(to);
            fs::copy(ca.join(from), &target).unwrap();
            chown(&target, Some(uid), Some(gid)).unwrap();
            fs::set_permissions(&target, fs::Permissions::from_mode(mode)).unwrap();
        }
        let conf = data.join("postgresql.conf");
        let mut text = fs::read_to_string(&conf).unwrap();
        text.push_str(&format!(
            "\n# pam-twofactor test HA cluster\n\
             ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n\
             ssl_ca_file = 'root.crt'\n\
             wal_level = replica\nmax_wal_senders = 10\nwal_keep_size = '256MB'\n\
             hot_standby = on\nmax_connections = 100\n\
             synchronous_commit = on\nsynchronous_standby_names = '{}'\n",
            sync_names.replace('\'', "''")
        ));
        fs::write(&conf, text).unwrap();
        let prefix = if self.addr.is_ipv4() { 32 } else { 128 };
        let clients = self
            .clients
            .as_ref()
            .map(|net| format!("hostssl all all {net} cert\n"))
            .unwrap_or_default();
        fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all postgres trust\n\
                 local replication postgres trust\n\
                 hostssl all all {}/{prefix} cert\n{clients}",
                self.addr
            ),
        )
        .unwrap();
    }

    /// `pg_basebackup -R -X stream` of the primary into node `i`'s data
    /// directory (as `postgres`, over the primary's Unix socket), with
    /// `application_name=name` in its `primary_conninfo`.
    fn base_backup(&self, i: usize, name: &str) {
        let (data, primary_sock, primary_port) = {
            let nodes = self.nodes.lock().unwrap();
            let p = &nodes[self.primary_index()];
            (nodes[i].data(), p.sock(), p.port)
        };
        postgres_dir(&data);
        let out = as_postgres("pg_basebackup")
            .arg("-D")
            .arg(&data)
            .args(["-R", "-X", "stream", "-c", "fast", "-U", SUPERUSER])
            .arg("-h")
            .arg(&primary_sock)
            .args(["-p", &primary_port.to_string()])
            .stdin(Stdio::null())
            .output()
            .expect("run pg_basebackup");
        assert!(
            out.status.success(),
            "pg_basebackup failed ({}): {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        // -R wrote standby.signal and a primary_conninfo; this later line
        // of the same file wins and names the standby.
        let auto = data.join("postgresql.auto.conf");
        let mut text = fs::read_to_string(&auto).unwrap_or_default();
        text.push_str(&format!(
            "primary_conninfo = 'host={} port={primary_port} user={SUPERUSER} application_name={name}'\n",
            primary_sock.display()
        ));
        fs::write(&auto, text).unwrap();
        let (uid, gid) = postgres_ids();
        chown(&auto, Some(uid), Some(gid)).unwrap();
        self.nodes.lock().unwrap()[i].standby_as = Some(name.to_string());
    }

    /// Starts node `i`'s postmaster and waits until it takes connections.
    fn start_node(&self, i: usize) {
        let mut nodes = self.nodes.lock().unwrap();
        let node = &mut nodes[i];
        assert!(node.child.is_none(), "node {i} is running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.dir.join("postgres.log"))
            .unwrap();
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(node.data())
            .arg("-k")
            .arg(node.sock())
            .args(["-p", &node.port.to_string()])
            .args(["-c", &format!("listen_addresses={}", self.addr)])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start postgres");
        node.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if !node.running() {
                panic!("node {i}'s postgres exited:\n{}", node.log());
            }
            if node.superuser("postgres").is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} not ready after 30 s:\n{}",
                node.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn wait_streaming(&self, name: &str) {
        self.wait_replication(name, "state = 'streaming'", "streaming");
    }

    /// The primary's `pg_stat_replication` rows matching `cond` (SQL).
    fn replication_rows(&self, cond: &str) -> i64 {
        self.superuser("postgres")
            .query_one(
                &format!("SELECT count(*) FROM pg_stat_replication WHERE {cond}"),
                &[],
            )
            .unwrap()
            .get(0)
    }

    /// Waits until the primary has a standby row for `name` matching `cond`.
    fn wait_replication(&self, name: &str, cond: &str, what: &str) {
        let cond = format!("application_name = '{name}' AND {cond}");
        poll(
            30,
            || self.replication_rows(&cond) > 0,
            || format!("{name} not {what}:\n{}", self.logs()),
        );
    }

    fn wait_gone_from_replication(&self, name: &str) {
        let cond = format!("application_name = '{name}'");
        poll(
            30,
            || self.replication_rows(&cond) == 0,
            || format!("{name} still replicating"),
        );
    }

    /// Waits until the primary reports a synchronous standby.
    fn wait_synchronous(&self) {
        poll(
            30,
            || self.replication_rows("sync_state IN ('sync', 'quorum')") > 0,
            || format!("no synchronous standby:\n{}", self.logs()),
        );
    }
}

/// Polls `done` every 20 ms for up to `seconds`; fails the test with
/// `what()` if it never holds.
fn poll(seconds: u64, mut done: impl FnMut() -> bool, what: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < deadline, "after {seconds} s: {}", what());
        thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for PgHa {
    fn drop(&mut self) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        for node in nodes.iter_mut() {
            if let Some(mut child) = node.child.take() {
                // Immediate shutdown: these clusters are thrown away. A
                // frozen one would not act on it: killed at once.
                let grace = if node.frozen {
                    Duration::ZERO
                } else {
                    Duration::from_secs(5)
                };
                stop(&mut child, Signal::SIGQUIT, grace);
            }
        }
        drop(nodes);
        if std::env::var_os("PAM_TWOFACTOR_KEEP_SANDBOX").is_some_and(|v| v == "1") {
            eprintln!("keeping {}", self.dir.display());
            return;
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Stops a postmaster by its PID with `signal`; SIGKILL to it and its
/// processes if it has not exited within `grace`.
fn stop(child: &mut Child, signal: Signal, grace: Duration) {
    let postmaster = child.id();
    let _ = kill(pid(postmaster), signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    let _ = kill(pid(postmaster), Signal::SIGSTOP);
    let pids = children_of(postmaster);
    let _ = kill(pid(postmaster), Signal::SIGKILL);
    for p in pids {
        let _ = kill(pid(p), Signal::SIGKILL);
    }
    let _ = child.wait();
}

fn pid(p: u32) -> Pid {
    Pid::from_raw(i32::try_from(p).expect("pid fits i32"))
}

/// The processes whose parent is `parent` (a postmaster's backends,
/// walsenders, checkpointer, …), from /proc.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid …: comm may hold spaces, so after the last ')'.
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            pids.push(child);
        }
    }
    pids
}

/// Whether `p` still runs: it exists and is not a zombie.
fn is_alive(p: u32) -> bool {
    match fs::read_to_string(format!("/proc/{p}/stat")) {
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|close| stat[close + 1..].split_whitespace().next());
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

/// A TCP port free on `addr` now, below Linux's ephemeral range (32768
/// and up by default), so that no outgoing connection takes it between
/// this check and the server's bind.
fn free_port(addr: IpAddr) -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let base = std::process::id().wrapping_mul(7919);
    for _ in 0..200 {
        let n = base.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed).wrapping_mul(104_729));
        let port = 21_000 + u16::try_from(n % 11_000).expect("below 11000");
        if TcpListener::bind((addr, port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port on {addr} in 21000..32000");
}

fn path_str(path: &Path) -> String {
    path.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", path.display()))
        .to_string()
}

/// Runs the `openssl` CLI; panics with its output if it fails.
fn openssl(args: &[&str]) {
    let program = super::find_program("openssl")
        .unwrap_or_else(|| panic!("`openssl` is not in PATH (package openssl)"));
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
