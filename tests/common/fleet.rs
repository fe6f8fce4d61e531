//! What the fleet tests (tests/fleet.rs, fleet_failover.rs, fleet_hosts.rs)
//! share: a `twofactor agent` run as a child and stopped by its PID, the
//! module's syslog lines read as they come, codes on the real clock (the
//! database's clock decides in fleet mode, so these tests cannot pin time
//! with libfaketime), and, for the two on the HA cluster
//! (tests/common/pg_ha.rs), a role's `[fleet]` section with its client
//! certificate and what the database holds of a user.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::pg_ha::PgHa;
use super::{DevLog, Sandbox};

/// A running `twofactor agent`, stopped by its PID on drop (SIGTERM, then
/// SIGKILL after 5 s).
pub struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    /// `twofactor --config CONFIG agent`, with a clean environment.
    pub fn command(config: &Path) -> Command {
        let mut cmd = Command::new(super::cli_path());
        cmd.arg("--config")
            .arg(config)
            .arg("agent")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        cmd
    }

    /// Starts `cmd` (an agent, maybe wrapped in `ip netns exec`: the
    /// wrappers must exec, so that the child's PID is the agent's), its
    /// stderr to `log`, and waits until `socket` exists.
    pub fn spawn(mut cmd: Command, socket: &Path, log: PathBuf) -> Agent {
        let stderr = fs::File::create(&log).unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("start {cmd:?}: {e}"));
        let mut agent = Agent { child, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            if let Some(status) = agent.child.try_wait().unwrap() {
                panic!("agent exited ({status}): {}", agent.log());
            }
            assert!(
                Instant::now() < deadline,
                "no agent socket: {}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    /// The agent of a sandbox whose config names `<dir>/agent.sock`.
    pub fn start(sb: &Sandbox) -> Agent {
        Agent::spawn(
            Agent::command(sb.config_path()),
            &sb.dir().join("agent.sock"),
            sb.dir().join("agent.log"),
        )
    }

    /// What the agent wrote to stderr so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// What the module sends to syslog, kept by a thread that reads the
/// socket all the time: a datagram socket queues only
/// `net.unix.max_dgram_qlen` messages (10 here), and the module drops a
/// line rather than block when the queue is full, which other programs'
/// messages to a shared `/dev/log` can cause between two reads.
pub struct Syslog {
    log: DevLog,
    lines: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl Syslog {
    pub fn bind(sb: &Sandbox) -> Syslog {
        let log = DevLog::bind(sb);
        let socket = log.socket().try_clone().unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let (lines, stop) = (Arc::clone(&lines), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while !stop.load(Ordering::Relaxed) {
                    if let Ok(n) = socket.recv(&mut buf) {
                        let line = String::from_utf8_lossy(&buf[..n]).into_owned();
                        lines.lock().unwrap().push(line);
                    }
                }
            })
        };
        Syslog {
            log,
            lines,
            stop,
            reader: Some(reader),
        }
    }

    /// `cmd` as it must run for its syslog lines to reach this socket.
    pub fn wrap(&self, cmd: Command) -> Command {
        self.log.wrap(cmd)
    }

    /// The lines of logins from `rhost` received so far.
    pub fn lines(&self, rhost: &str) -> Vec<String> {
        let needle = format!("rhost={rhost}");
        let lines = self.lines.lock().unwrap();
        lines
            .iter()
            .filter(|l| l.contains(&needle))
            .cloned()
            .collect()
    }

    /// Waits (up to 2 s: the reader may not have taken it yet) for a line
    /// of a login from `rhost` containing `text`.
    pub fn expect_line(&self, rhost: &str, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let lines = self.lines(rhost);
            if lines.iter().any(|l| l.contains(text)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no log line with {text:?}: {lines:#?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Syslog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// Unix time now (the real clock).
pub fn now() -> u64 {
    pam_twofactor::host::clock::now()
}

/// Waits, if needed, until at least `margin` seconds are left in the
/// current 30-second step, and returns the time then: a code taken for it
/// stays the current one while a login or a few run.
pub fn early_in_step(margin: u64) -> u64 {
    loop {
        let t = now();
        if 30 - t % 30 >= margin {
            return t;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// The code of `secret` at unix time `t` (oathtool; SHA1, 6 digits, 30 s).
pub fn code_at(secret: &str, t: u64) -> String {
    super::oathtool(secret, &format!("@{t}"), &[])
}

/// The `[fleet]` section of `role` on the HA cluster `ha`: the connection
/// string naming every server (`target_session_attrs=read-write`,
/// `sslmode=require`), the CA, the role's client certificate (CN = the
/// role) and key, the agent's socket and `deadline_seconds`.
pub fn ha_section(ha: &PgHa, db: &str, role: &str, socket: &Path, deadline: u64) -> String {
    let (cert, key) = ha.client_cert(role);
    format!(
        "[fleet]\ndatabase = \"{}\"\nsslrootcert = \"{}\"\nsslcert = \"{}\"\nsslkey = \"{}\"\n\
         agent_socket = \"{}\"\ndeadline_seconds = {deadline}\n",
        ha.connection_string(db, role),
        ha.ca_cert().display(),
        cert.display(),
        key.display(),
        socket.display()
    )
}

/// What the database holds of one user: the failure count, the `default`
/// device's last used step and how many backup codes are used.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct State {
    pub failures: i32,
    pub last_step: Option<i64>,
    pub backup_used: i64,
}

/// [`State`] of `user` in `db`, read as the superuser on the primary.
pub fn state(ha: &PgHa, db: &str, user: &str) -> State {
    let row = ha
        .superuser(db)
        .query_one(
            "SELECT u.failures, d.last_accepted_step, \
                    (SELECT count(*) FROM twofactor.backup_codes b \
                      WHERE b.user_name = u.name AND b.used_at IS NOT NULL) \
               FROM twofactor.users u JOIN twofactor.devices d ON d.user_name = u.name \
              WHERE u.name = $1 AND d.label = 'default'",
            &[&user],
        )
        .unwrap();
    State {
        failures: row.get(0),
        last_step: row.get(1),
        backup_used: row.get(2),
    }
}

/// `twofactor fleet init` run by the DBA's sandbox `dba` on the HA cluster
/// (its `[fleet]` naming database `db`): schema version 2,
/// `require_sync_standby` left on (the default), `fleet status` seeing
/// `standbys` synchronous standbys; then the admin role `tf_admin` (a
/// member of `twofactor_admin`, logging in by certificate).
pub fn init_on_ha(ha: &PgHa, dba: &Sandbox, db: &str, standbys: usize) {
    let init = super::cli(dba, &["fleet", "init", "--json"]).expect(0);
    assert_eq!(init.json()["schema_version"], 2, "{}", init.stdout);
    let require: bool = ha
        .superuser(db)
        .query_one("SELECT require_sync_standby FROM twofactor.policy", &[])
        .unwrap()
        .get(0);
    assert!(require, "fleet init left require_sync_standby off");
    let status = super::cli(dba, &["fleet", "status", "--json"])
        .expect(0)
        .json();
    assert_eq!(status["sync_standbys"], standbys, "{status}");
    ha.superuser(db)
        .batch_execute("CREATE ROLE tf_admin LOGIN IN ROLE twofactor_admin")
        .unwrap();
}

/// For a login denied while no synchronous standby is attached (the
/// standby `standby` stopped): exactly one commit waits for it on the
/// primary (the agent did not cancel it) and the state of `user` is still
/// `before` (the waiting transaction is not visible); then the standby is
/// started again and the state is returned once the waiting commit has
/// completed (it changed; at most 10 s).
pub fn commit_waits_for(ha: &PgHa, standby: &str, db: &str, user: &str, before: State) -> State {
    let waiting: i64 = ha
        .superuser("postgres")
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(waiting, 1, "one commit waits for the standby");
    assert_eq!(state(ha, db, user), before);
    ha.start_standby(standby);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = state(ha, db, user);
        if now != before {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the waiting commit never completed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `twofactor enroll USER --secret-file - --json` with `admin`'s config
/// (a fleet admin role), the seed on stdin; its JSON answer (the backup
/// codes among it).
pub fn enroll_json(admin: &Sandbox, user: &str, secret: &str) -> serde_json::Value {
    super::cli_secret(
        admin,
        &["enroll", user, "--secret-file", "-", "--json"],
        secret,
    )
    .expect(0)
    .json()
}
