//! A throwaway PostgreSQL 15 cluster of the test's own (TESTING.md, "A
//! PostgreSQL of the test's own"). Root only: callers gate on
//! [`super::root_or_skip`] first.
//!
//! ```ignore
//! let pg = Cluster::start();                 // initdb (once per process) + postgres
//! pg.create_database("fleet");               // CREATE DATABASE + sql/*.sql in order
//! let mut su = pg.client("fleet", "postgres");
//! su.batch_execute("CREATE ROLE host1 LOGIN IN ROLE twofactor_host")?;
//! pg.set_password("host1", "pw");
//! let mut host = pg.client("fleet", "host1"); // scram-sha-256 with that password
//! ```
//!
//! * Each cluster lives in a fresh root-owned directory under
//!   [`super::sandbox_base`]: `data/` and `sock/` (both 0700, owned by the
//!   `postgres` user), `postgres.log`.
//! * `initdb` runs once per test process into a template; every cluster
//!   copies it (`cp -a` of its 47 MB: 0.07 s; `initdb` itself: 0.5 s, measured here).
//! * The server listens only on a Unix socket in its private `sock/`, with
//!   a port number unique to this process and cluster (the port names the
//!   socket file and seeds the shared-memory key).
//! * `pg_hba.conf`: `local all postgres trust`, `local all all
//!   scram-sha-256`: the superuser connects without a password, every other
//!   role with the one [`Cluster::set_password`] gave it.
//! * `postgres` is started directly (no `pg_ctl`, no daemon) as a child
//!   running as the `postgres` user, so the test holds its PID. Drop stops
//!   it by that PID (SIGINT: fast shutdown; SIGKILL after 10 s) and removes
//!   the directory. Nothing here touches the machine's own cluster.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, User, chown};

/// Debian's PostgreSQL 15 binaries.
pub const BIN: &str = "/usr/lib/postgresql/15/bin";
/// The superuser `initdb` creates (connects by trust over the socket).
pub const SUPERUSER: &str = "postgres";

/// A running throwaway cluster; stopped and removed on drop.
pub struct Cluster {
    dir: PathBuf,
    port: u16,
    child: Child,
    passwords: Mutex<HashMap<String, String>>,
}

/// The `postgres` OS user's uid and gid.
pub(crate) fn postgres_ids() -> (nix::unistd::Uid, nix::unistd::Gid) {
    let user = User::from_name("postgres")
        .expect("look up the postgres user")
        .expect("no `postgres` user (package postgresql-15)");
    (user.uid, user.gid)
}

/// A command run as the `postgres` user, with no supplementary groups
/// (std drops them when root sets a uid) and a minimal environment.
pub(crate) fn as_postgres(program: &str) -> Command {
    let (uid, gid) = postgres_ids();
    let mut cmd = Command::new(Path::new(BIN).join(program));
    cmd.uid(uid.as_raw())
        .gid(gid.as_raw())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("LC_ALL", "C.UTF-8")
        .current_dir("/");
    cmd
}

/// A fresh root-owned 0755 directory under the sandbox base (the
/// `postgres` user must traverse it to reach `data/` and `sock/`).
pub(crate) fn fresh_dir(name: &str) -> PathBuf {
    static COUNT: AtomicU16 = AtomicU16::new(0);
    static STALE: OnceLock<()> = OnceLock::new();
    STALE.get_or_init(remove_stale);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let dir = super::sandbox_base().join(format!("pg-{name}-{}-{n}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::DirBuilder::new()
        .mode(0o755)
        .create(&dir)
        .unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).expect("chmod 0755");
    dir
}

/// Removes `pg-*-PID-N` directories of test processes that are gone: the
/// template of every earlier run, and clusters of runs that were killed.
fn remove_stale() {
    let Ok(entries) = fs::read_dir(super::sandbox_base()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("pg-") else {
            continue;
        };
        let pid = rest.split('-').nth(1).and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists()) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// A 0700 directory owned by `postgres`.
pub(crate) fn postgres_dir(path: &Path) {
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
    let (uid, gid) = postgres_ids();
    chown(path, Some(uid), Some(gid)).expect("chown to postgres");
    fs::set_permissions(path, fs::Permissions::from_mode(0o700)).expect("chmod 0700");
}

/// The data directory `initdb` made once for this test process.
pub(crate) fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let dir = fresh_dir("template");
        let data = dir.join("data");
        postgres_dir(&data);
        let out = as_postgres("initdb")
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "--auth-local=trust", "--auth-host=reject"])
            .args(["-E", "UTF8", "--locale=C.UTF-8", "--no-instructions"])
            .stdin(Stdio::null())
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        fs::write(
            data.join("pg_hba.conf"),
            "local all postgres trust\nlocal all all scram-sha-256\n",
        )
        .expect("write pg_hba.conf");
        // Statics are never dropped: this directory outlives the process
        // and the next test process removes it (`remove_stale`).
        data
    })
}

/// A port unique to this process and cluster (only ever a socket name).
fn next_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let base = 20_000 + (std::process::id() % 2000) as u16 * 20;
    base + n % 20
}

impl Cluster {
    /// Starts a new cluster and waits until it accepts connections.
    pub fn start() -> Cluster {
        let template = template();
        let dir = fresh_dir("cluster");
        let data = dir.join("data");
        let sock = dir.join("sock");
        let copied = Command::new("cp")
            .arg("-a")
            .arg(template)
            .arg(&data)
            .status()
            .expect("run cp");
        assert!(copied.success(), "cp -a of the template failed");
        postgres_dir(&sock);
        let port = next_port();
        let log = fs::File::create(dir.join("postgres.log")).expect("create postgres.log");
        let child = as_postgres("postgres")
            .arg("-D")
            .arg(&data)
            .arg("-k")
            .arg(&sock)
            .args(["-p", &port.to_string()])
            .args(["-c", "listen_addresses="])
            .args(["-c", "max_connections=100"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start postgres");
        let mut cluster = Cluster {
            dir,
            port,
            child,
            passwords: Mutex::new(HashMap::new()),
        };
        cluster.wait_ready();
        cluster
    }

    /// Polls until the superuser can connect (the server exiting is fatal).
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for postgres") {
                panic!("postgres exited ({status}):\n{}", self.log());
            }
            if self
                .config("postgres", SUPERUSER)
                .connect(postgres::NoTls)
                .is_ok()
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "postgres not ready after 30 s:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("postgres.log")).unwrap_or_default()
    }

    /// The directory holding the server's socket (libpq's `host`).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.join("sock")
    }

    /// The port (libpq's `port`; it names the socket file).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Connection parameters for `role` on database `db` (with the password
    /// [`Cluster::set_password`] gave the role, if any).
    pub fn config(&self, db: &str, role: &str) -> postgres::Config {
        let mut config = postgres::Config::new();
        config
            .host_path(self.socket_dir())
            .port(self.port)
            .dbname(db)
            .user(role)
            .connect_timeout(Duration::from_secs(10));
        if let Some(pw) = self.passwords.lock().expect("passwords").get(role) {
            config.password(pw);
        }
        config
    }

    /// A connection as `role` to `db`; panics with the server's error.
    pub fn client(&self, db: &str, role: &str) -> postgres::Client {
        self.config(db, role)
            .connect(postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to {db} as {role}: {e}"))
    }

    /// `CREATE DATABASE name`, then every `sql/NNN_*.sql` of the checkout in
    /// order, in one transaction, as the superuser (what `twofactor fleet
    /// init` does on a fresh database).
    pub fn create_database(&self, name: &str) {
        let mut su = self.client("postgres", SUPERUSER);
        su.batch_execute(&format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        let mut db = self.client(name, SUPERUSER);
        let mut tx = db.transaction().expect("begin");
        for file in sql_files() {
            let text = fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("read {}: {e}", file.display()));
            tx.batch_execute(&text)
                .unwrap_or_else(|e| panic!("apply {}: {}", file.display(), error_text(&e)));
        }
        tx.commit().expect("commit the schema");
    }

    /// Gives `role` (which must exist) a password for scram-sha-256 logins.
    pub fn set_password(&self, role: &str, password: &str) {
        let mut su = self.client("postgres", SUPERUSER);
        let quoted = password.replace('\'', "''");
        su.batch_execute(&format!("ALTER ROLE \"{role}\" PASSWORD '{quoted}'"))
            .unwrap_or_else(|e| panic!("set the password of {role}: {e}"));
        self.passwords
            .lock()
            .expect("passwords")
            .insert(role.to_string(), password.to_string());
    }
}

/// The server's message (and detail) of a database error, or the client's.
pub fn error_text(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{} ({}){}",
            db.message(),
            db.code().code(),
            db.detail().map(|d| format!(": {d}")).unwrap_or_default()
        ),
        None => e.to_string(),
    }
}

/// `sql/NNN_*.sql` of this checkout, in order.
pub fn sql_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("sql");
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("read sql/").path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.ends_with(".sql")
                    && n.get(..3)
                        .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()))
            })
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no sql/NNN_*.sql in {}", dir.display());
    files
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        // SIGINT is PostgreSQL's fast shutdown: clients are disconnected.
        let _ = kill(pid, Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = self.child.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
