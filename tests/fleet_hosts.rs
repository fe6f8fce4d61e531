//! Three hosts with their own addresses on one fleet database (issue 16,
//! "Hosts with their own addresses"): each host is a network namespace
//! (tests/common/netns.rs) with its own address on a bridge, running the
//! real `/usr/sbin/sshd` with the module (the e2e harness,
//! tests/e2e/support.rs: Debian's `pam.d/sshd` with `@include
//! common-auth` then the module, keyboard-interactive, throwaway users in
//! a private mount namespace), its own `twofactor agent` in the same
//! network namespace and its own host role (`twofactor fleet add-host
//! webN`, no password: a client certificate with CN = `tf_host_webN`).
//!
//! The database, in the root namespace, is a PostgreSQL primary and a
//! synchronous standby (tests/common/pg_ha.rs: `synchronous_commit = on`,
//! `synchronous_standby_names = 'standby1'`, TLS, every role authenticated
//! by a client certificate from a throwaway CA) listening on the bridge's
//! address; `pg_hba.conf` lets the hosts' subnet in by certificate. Every
//! `[fleet]` (hosts, the admin role `tf_admin`, the DBA) has the CA, its
//! certificate and key, `sslmode=require` and the connection string naming
//! both servers with `target_session_attrs=read-write`. `fleet init`
//! leaves `require_sync_standby` on (the default). Real `ssh` logins from
//! the root namespace to each host's address; codes from oathtool on the
//! real clock (the database's clock decides: nothing here runs under
//! libfaketime).
//!
//! Root only (`root_or_skip`): namespaces, sshd, the servers as the
//! `postgres` user. Every process (sshd, agents, servers) is stopped by
//! its PID, then the namespaces, veths and bridge are deleted.
//! tests/fleet_failover.rs has the same faults (failover, no synchronous
//! standby, a compromised host) through pamtester, with the database-level
//! checks of a compromised host's rights; here they go through ssh.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "e2e/support.rs"]
mod e2e_support;

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::fleet::{Agent, State, early_in_step, ha_section, now};
use common::netns::Net;
use common::pg::SUPERUSER;
use common::pg_ha::{HaOptions, PgHa};
use common::{Needs, Sandbox, cli, write_private};
use e2e_support::{PASSWORD, SECRET, SshRun, System};

const DB: &str = "twofactor";
const USER: &str = "e2ealice";
const KBD: &str = "keyboard-interactive";
const HOSTS: usize = 3;
/// The agents' `[fleet] deadline_seconds`.
const DEADLINE: u64 = 3;
/// sshd's `LoginGraceTime` (tests/e2e/support.rs, `sshd_config_on`).
const LOGIN_GRACE: Duration = Duration::from_secs(30);
/// Enough failures and attempts for a test without a lock.
const NO_LOCK: &str = "[lockout]\nmax_failures = 100\n[rate_limit]\nmax_attempts = 100\n";
const CANNOT_REACH: &str =
    "The second-factor database cannot be reached. Try again later or ask your administrator.";
const NOT_WRITING: &str = "The second-factor database is not accepting writes. Try again later or ask your administrator.";

fn can_run(test: &str) -> bool {
    if !common::root_or_skip(
        test,
        "network namespaces, sshd in private mount namespaces, PostgreSQL as the postgres user",
        &[
            Needs::NetworkNamespace,
            Needs::EtcOverlay,
            Needs::Program("oathtool", "oathtool"),
            Needs::Program("openssl", "openssl"),
            Needs::Program("pg_basebackup", "postgresql-15"),
        ],
    ) {
        return false;
    }
    // The consumers and tools (panics, naming the packages, if missing).
    e2e_support::can_run()
}

/// A `twofactor agent` started inside host `i`'s network namespace
/// (`ip netns exec` and `setpriv` exec it, so the child's pid is the
/// agent's), stopped by that PID on drop.
fn start_agent(net: &Net, i: usize, sys: &System) -> Agent {
    // setpriv execs too: should this test process die without running
    // Drop, the parent-death signal stops the agent (as sshd).
    let mut cmd = net.exec(i, "setpriv");
    cmd.args(["--pdeathsig", "TERM", "--"])
        .arg(common::cli_path())
        .arg("--config")
        .arg(sys.sb.config_path())
        .arg("agent")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    Agent::spawn(
        cmd,
        &sys.sb.dir().join("agent.sock"),
        sys.sb.dir().join("agent.log"),
    )
}

/// One host: its agent, its system (sshd, users, config) and an admin's
/// config on it (the `tf_admin` role over the network).
struct Host {
    agent: Agent,
    sys: System,
    admin_config: PathBuf,
}

impl Host {
    fn ssh(&self, code: &str) -> SshRun {
        self.sys.ssh(USER, Some(PASSWORD), Some(code))
    }

    /// `twofactor --config <admin config> args…` in this host's network
    /// and mount namespaces.
    fn admin(&self, args: &[&str]) -> e2e_support::Run {
        self.sys.cli_with_config(&self.admin_config, args)
    }
}

/// Field order is drop order: the hosts (agents, sshd) stop first, then
/// the servers, and the network goes last.
struct Fleet {
    hosts: Vec<Host>,
    ha: PgHa,
    dba: Sandbox,
    net: Net,
}

/// `[fleet]` of `role` (its certificate, both servers, `socket`).
fn fleet_section(ha: &PgHa, role: &str, socket: &Path) -> String {
    ha_section(ha, DB, role, socket, DEADLINE)
}

/// The network, the primary + synchronous standby on the bridge's address,
/// the database with `policy` (config lines copied by `fleet init`), and
/// three hosts web1..web3 each with sshd, agent and host role; USER exists
/// on every host (same uid).
fn fleet(name: &str, policy: &str) -> Fleet {
    let net = Net::new(HOSTS);
    let ha = PgHa::start(HaOptions {
        addr: net.bridge_address().parse().unwrap(),
        clients: Some(net.subnet()),
        ..HaOptions::loopback()
    });
    ha.superuser("postgres")
        .batch_execute(&format!("CREATE DATABASE {DB}"))
        .unwrap();
    // The DBA: the superuser by certificate over TCP, like everyone else.
    let dba = Sandbox::new(&format!("{name}-dba"));
    dba.write_config(&format!(
        "{policy}{}",
        fleet_section(&ha, SUPERUSER, &dba.dir().join("none.sock"))
    ));
    common::fleet::init_on_ha(&ha, &dba, DB, 1);

    let hosts = (0..HOSTS)
        .map(|i| {
            let host = format!("web{}", i + 1);
            let role = format!("tf_host_{host}");
            let sys = System::new(&format!("{name}-{host}"), "");
            sys.in_network_namespace(&net.netns(i), &net.address(i));
            sys.use_real_clock();
            sys.add_user(USER);
            let dir = sys.sb.dir().to_path_buf();
            // No --password-file: the role logs in with its certificate.
            let added = cli(&dba, &["fleet", "add-host", &host, "--json"])
                .expect(0)
                .json();
            assert_eq!(added["certificate_cn"], role.as_str(), "{added}");
            assert_eq!(added["password_file"], serde_json::Value::Null, "{added}");
            sys.sb
                .write_config(&fleet_section(&ha, &role, &dir.join("agent.sock")));
            let admin_config = dir.join("admin.toml");
            write_private(
                &admin_config,
                &format!(
                    "state_dir = \"{}\"\n{policy}{}",
                    sys.sb.state_dir().display(),
                    fleet_section(&ha, "tf_admin", &dir.join("none.sock"))
                ),
            );
            let module = sys.module_line();
            sys.set_auth("sshd", &["@include common-auth", &module]);
            let agent = start_agent(&net, i, &sys);
            sys.start_sshd(KBD);
            Host {
                agent,
                sys,
                admin_config,
            }
        })
        .collect();
    Fleet {
        hosts,
        ha,
        dba,
        net,
    }
}

impl Fleet {
    /// Enrolls USER once with `twofactor enroll` on host 1 (the admin
    /// role, over the network); returns the backup codes.
    fn enroll(&self) -> Vec<String> {
        let host = &self.hosts[0];
        let seed = host.sys.sb.dir().join("seed");
        write_private(&seed, &format!("{SECRET}\n"));
        let run = host.admin(&[
            "enroll",
            USER,
            "--secret-file",
            seed.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(run.status, Some(0), "{run}");
        let json: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        json["backup_codes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    }

    fn row(&self, sql: &str) -> postgres::Row {
        self.ha
            .superuser(DB)
            .query_one(sql, &[&USER])
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn failures(&self) -> i32 {
        self.row("SELECT failures FROM twofactor.users WHERE name = $1")
            .get(0)
    }

    fn last_step(&self) -> Option<i64> {
        self.row(
            "SELECT last_accepted_step FROM twofactor.devices WHERE user_name = $1 AND label = 'default'",
        )
        .get(0)
    }

    fn locked_until(&self) -> Option<i64> {
        self.row("SELECT locked_until FROM twofactor.users WHERE name = $1")
            .get(0)
    }

    fn state(&self) -> State {
        common::fleet::state(&self.ha, DB, USER)
    }

    /// A plainly wrong code through host `i` at time `t`: denied; the state
    /// after it.
    fn wrong_login(&self, i: usize, t: u64) -> State {
        let out = self.hosts[i].ssh(&wrong_code(t));
        assert!(denied(&out), "{out}");
        self.state()
    }
}

/// SECRET's code at unix time `t` (oathtool; SHA1, 6 digits, 30 s).
fn code_at(t: u64) -> String {
    common::fleet::code_at(SECRET, t)
}

/// A code that is none of SECRET's codes 20 steps around `t`: plainly
/// wrong (not a replay, not a drifted clock).
fn wrong_code(t: u64) -> String {
    let near = common::oathtool(SECRET, &format!("@{}", t - 600), &["-w", "40"]);
    let near: HashSet<&str> = near.lines().map(str::trim).collect();
    ["123456", "000000", "999999", "246802", "135791"]
        .into_iter()
        .find(|c| !near.contains(c))
        .unwrap()
        .to_string()
}

/// `ssh` exited 255 and said `Permission denied` for keyboard-interactive.
fn denied(run: &SshRun) -> bool {
    run.denied(KBD)
}

/// Enrolled once on host 1; ssh logins to hosts 1, 2 and 3 each with a
/// fresh code; the code just used on host 1 is a replay on host 2 in the
/// same step; then one code sent 20 times at once over the three hosts
/// logs in exactly once, the database holding its step and 19 failures.
///
/// `[totp] window = 2` in the fleet policy: the four fresh codes this
/// needs (steps s-2 to s+1) are all inside the window of one step s, so
/// nothing waits for the clock; only the first two logins must fall in
/// step s (`early_in_step`).
#[test]
fn three_hosts_one_enrollment_a_code_once_fleet_wide_even_in_parallel() {
    if !can_run("three_hosts_one_enrollment_a_code_once_fleet_wide_even_in_parallel") {
        return;
    }
    let started = Instant::now();
    let policy =
        "[totp]\nwindow = 2\n[lockout]\nmax_failures = 100\n[rate_limit]\nmax_attempts = 100\n";
    let f = fleet("fh-once", policy);
    eprintln!("fleet_hosts fh-once set up: {:?}", started.elapsed());
    f.enroll();
    // Nothing of the enrollment is on any host.
    for host in &f.hosts {
        assert_eq!(fs::read_dir(host.sys.sb.state_dir()).unwrap().count(), 0);
    }

    let t = early_in_step(12);
    let s = (t / 30) as i64;
    let first = f.hosts[0].ssh(&code_at(t - 60));
    assert!(first.logged_in(), "{first}");
    let address = f.net.address(0);
    assert!(
        first.sshd_log.contains(&format!(
            "Accepted keyboard-interactive/pam for {USER} from {}",
            f.net.bridge_address()
        )),
        "{first}"
    );
    assert_eq!(
        first.prompts,
        [
            format!("({USER}@{address}) Password: "),
            format!("({USER}@{address}) Verification code: ")
        ]
    );
    assert_eq!(f.last_step(), Some(s - 2));

    // Host 1's code on host 2, same step: a replay.
    let replay = f.hosts[1].ssh(&code_at(t - 60));
    assert!(denied(&replay), "{replay}");
    assert_eq!(replay.prompts.len(), 2, "{replay}");
    assert_eq!(f.failures(), 1);
    assert!(now() / 30 == t / 30, "the replay left step {s}: too slow");
    // Fresh codes on hosts 2 and 3.
    let second = f.hosts[1].ssh(&code_at(t - 30));
    assert!(second.logged_in(), "{second}");
    assert_eq!(f.last_step(), Some(s - 1));
    assert_eq!(f.failures(), 0);
    let third = f.hosts[2].ssh(&code_at(t));
    assert!(third.logged_in(), "{third}");
    assert_eq!(f.last_step(), Some(s));

    // One fresh code, 20 logins at once over the three hosts.
    // Step s+1: inside the window until step s+3 begins.
    let (code, expected_step) = (code_at(t + 30), s + 1);
    let logins: Vec<_> = (0..20)
        .map(|i| {
            f.hosts[i % HOSTS]
                .sys
                .prepare_ssh(USER, Some(PASSWORD), Some(&code))
        })
        .collect();
    let threads: Vec<_> = logins
        .into_iter()
        .map(|login| std::thread::spawn(move || login.run()))
        .collect();
    let runs: Vec<SshRun> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let mut successes = 0;
    for run in &runs {
        if run.logged_in() {
            successes += 1;
        } else {
            assert!(denied(run), "{run}");
        }
    }
    assert_eq!(successes, 1, "{runs:#?}");
    assert_eq!(f.failures(), 19);
    assert_eq!(f.last_step(), Some(expected_step));
    let accepted: usize = f
        .hosts
        .iter()
        .map(|h| {
            h.sys
                .sshd_log()
                .matches("Accepted keyboard-interactive/pam")
                .count()
        })
        .sum();
    // The three single logins plus the one of the twenty.
    assert_eq!(accepted, 4);
    for host in &f.hosts {
        assert!(
            !host.agent.log().contains(&code),
            "a code in the agent's log"
        );
    }
    eprintln!("fleet_hosts once: {:?}", started.elapsed());
}

/// Wrong codes over the three hosts lock the account at exactly
/// `max_failures` (3) in all; every host then refuses the right code with
/// the lock message; `twofactor unlock` on host 3 (the admin role, from
/// inside its namespaces) clears it everywhere.
#[test]
fn failures_over_three_hosts_lock_everywhere_and_unlock_on_host_3_clears_it() {
    if !can_run("failures_over_three_hosts_lock_everywhere_and_unlock_on_host_3_clears_it") {
        return;
    }
    let started = Instant::now();
    let f = fleet("fh-lock", "[lockout]\nmax_failures = 3\n");
    eprintln!("fleet_hosts fh-lock set up: {:?}", started.elapsed());
    f.enroll();
    // `right` stays inside the window (1) until the step after next: no
    // wait for the clock.
    let t = now();
    let right = code_at(t);
    let wrong = wrong_code(t);
    for (i, host) in f.hosts.iter().enumerate() {
        let out = host.ssh(&wrong);
        assert!(denied(&out), "{out}");
        assert_eq!(f.failures(), i as i32 + 1);
        let locks = out
            .run
            .stderr
            .contains("Too many failed attempts: your account is locked until");
        assert_eq!(locks, i == 2, "{out}");
    }
    assert!(f.locked_until().is_some());
    for host in &f.hosts {
        let out = host.ssh(&right);
        assert!(denied(&out), "{out}");
        assert!(
            out.run
                .stderr
                .contains("Your account is locked after too many failed attempts until"),
            "{out}"
        );
    }
    // Refusals while locked are not failures; the right code was not used.
    assert_eq!(f.failures(), 3);
    assert_eq!(f.last_step(), None);

    let unlock = f.hosts[2].admin(&["unlock", USER]);
    assert_eq!(unlock.status, Some(0), "{unlock}");
    assert_eq!(f.failures(), 0);
    assert_eq!(f.locked_until(), None);
    let out = f.hosts[0].ssh(&right);
    assert!(out.logged_in(), "{out}");
    let out = f.hosts[1].ssh(&code_at(t + 30));
    assert!(out.logged_in(), "{out}");
    eprintln!("fleet_hosts lock: {:?}", started.elapsed());
}

/// Host 3 cut off from the database (its veth down; the ssh client of its
/// logins runs inside its network namespace, since with its only link down
/// nothing outside reaches it): a login is denied within the agent's
/// deadline with the database message, also when the link goes down while
/// the code prompt is shown; sshd never hangs; hosts 1 and 2 keep working;
/// link up, host 3 works again.
#[test]
fn a_host_cut_off_denies_within_the_deadline_and_the_others_go_on() {
    if !can_run("a_host_cut_off_denies_within_the_deadline_and_the_others_go_on") {
        return;
    }
    let started = Instant::now();
    let policy = "[lockout]\nmax_failures = 100\n[rate_limit]\nmax_attempts = 100\n";
    let f = fleet("fh-cut", policy);
    eprintln!("fleet_hosts fh-cut set up: {:?}", started.elapsed());
    let backup = f.enroll();
    let cut = &f.hosts[2];
    cut.sys.ssh_from_inside(true);
    let bound = Duration::from_secs(DEADLINE + 4);
    let unavailable = |run: &SshRun| {
        denied(run)
            && (run.run.stderr.contains(CANNOT_REACH) || run.run.stderr.contains(NOT_WRITING))
    };

    // code(t) is used at once; code(t + 30) stays in the window for 60 s.
    let t = now();
    let out = cut.ssh(&code_at(t));
    assert!(out.logged_in(), "{out}");

    // Cut before the login: the whole ssh login ends within the bound.
    f.net.link_down(2);
    let began = Instant::now();
    let out = cut.ssh(&backup[0]);
    let took = began.elapsed();
    assert!(unavailable(&out), "{out}");
    assert!(took < bound, "{took:?}\n{out}");
    // The database's first look failed: no code was asked for.
    let address = f.net.address(2);
    assert_eq!(
        out.prompts,
        [format!("({USER}@{address}) Password: ")],
        "{out}"
    );
    eprintln!(
        "fleet_hosts cut before the login: ssh took {took:?}: {:?}",
        out.run.stderr
    );
    // The others go on meanwhile.
    let out = f.hosts[0].ssh(&code_at(t + 30));
    assert!(out.logged_in(), "{out}");
    let out = f.hosts[1].ssh(&backup[1]);
    assert!(out.logged_in(), "{out}");
    f.net.link_up(2);

    // Up again: host 3 logs in.
    let out = cut.ssh(&backup[2]);
    assert!(out.logged_in(), "{out}");

    // Cut while the code prompt is shown: the answer is denied within the
    // deadline of the code being typed.
    let mut typed = None;
    let (out, shown) = cut.sys.ssh_answering(USER, PASSWORD, |_| {
        f.net.link_down(2);
        typed = Some(Instant::now());
        backup[3].clone()
    });
    let took = typed.expect("the code prompt came").elapsed();
    assert!(shown.is_some());
    assert!(unavailable(&out), "{out}");
    assert!(took < bound, "{took:?}\n{out}");
    eprintln!(
        "fleet_hosts cut at the code prompt: denied {took:?} after the code: {:?}",
        out.run.stderr
    );
    let out = f.hosts[1].ssh(&backup[4]);
    assert!(out.logged_in(), "{out}");
    f.net.link_up(2);
    let out = cut.ssh(&backup[5]);
    assert!(out.logged_in(), "{out}");
    let log = cut.agent.log();
    assert!(!log.contains(&backup[3]), "a code in the agent's log");
    // Backup codes spent: 1, 2, 4 and 5 (their logins succeeded); 0 never
    // reached the database; 3 (typed as the link went down) may have been
    // spent when the link came back: the agent never cancels a call, it
    // finishes once the database answers (docs/fleet.md).
    let used: i64 = f
        .row("SELECT count(*) FROM twofactor.backup_codes WHERE user_name = $1 AND used_at IS NOT NULL")
        .get(0);
    assert!((4..=5).contains(&used), "{used} backup codes used");
    eprintln!("fleet_hosts cut: {used} backup codes spent (5: the one typed during the cut too)");
    eprintln!("fleet_hosts cut: {:?}", started.elapsed());
}

/// Failover through ssh: a backup code and a TOTP code are accepted
/// through host 1 and one wrong code is counted; the primary is killed
/// (`kill -9` of every process of it) and the standby promoted; as in
/// tests/fleet_failover.rs the killed node is rebuilt as `standby1` of the
/// promoted server (which keeps `synchronous_standby_names = 'standby1'`:
/// without a standby of its own every commit on it would wait). The
/// promoted database holds exactly the state of before the kill; the TOTP
/// code is refused through host 2 (a right code inside the window, so a
/// replay: the step held), the backup code used before the kill is
/// refused (still used), and fresh codes log in through all three hosts
/// (host 1's agent had pooled clients to the killed primary).
///
/// `[totp] window = 2`: the replay and the two fresh codes (steps s+1 and
/// s+2) stay inside the window however long the failover takes, up to the
/// start of step s+3 (checked).
#[test]
fn a_failover_through_ssh_loses_no_used_code_no_backup_code_and_no_failure() {
    if !can_run("a_failover_through_ssh_loses_no_used_code_no_backup_code_and_no_failure") {
        return;
    }
    let started = Instant::now();
    let f = fleet("fh-failover", &format!("[totp]\nwindow = 2\n{NO_LOCK}"));
    eprintln!("fleet_hosts fh-failover set up: {:?}", started.elapsed());
    let backup = f.enroll();
    let out = f.hosts[0].ssh(&backup[0]);
    assert!(out.logged_in(), "{out}");
    let t = early_in_step(5);
    let step = (t / 30) as i64;
    let code = code_at(t);
    let out = f.hosts[0].ssh(&code);
    assert!(out.logged_in(), "{out}");
    let before = f.wrong_login(0, t);
    assert_eq!(
        before,
        State {
            failures: 1,
            last_step: Some(step),
            backup_used: 1
        }
    );

    let failover = Instant::now();
    let old_primary = f.ha.primary_index();
    let killed = f.ha.kill_primary();
    assert!(
        killed.len() > 1,
        "the postmaster and its processes: {killed:?}"
    );
    f.ha.promote_standby("standby1");
    assert_ne!(f.ha.primary_index(), old_primary);
    let promoted = failover.elapsed();
    f.ha.rebuild_as_standby("standby1");
    let rebuilt = failover.elapsed();
    // Everything committed before the kill is on the promoted server.
    assert_eq!(f.state(), before);
    assert!(
        now() + 5 < (step as u64 + 3) * 30,
        "the failover took too long for the replay check to stay inside the window"
    );

    // Host 1's code through host 2: refused, counted, the step unchanged.
    let began = Instant::now();
    let out = f.hosts[1].ssh(&code);
    let first_login = began.elapsed();
    assert!(denied(&out), "{out}");
    assert_eq!(out.prompts.len(), 2, "{out}");
    assert_eq!(
        f.state(),
        State {
            failures: 2,
            ..before
        }
    );
    // The backup code used before the kill stays used.
    let out = f.hosts[1].ssh(&backup[0]);
    assert!(denied(&out), "{out}");
    assert_eq!(
        f.state(),
        State {
            failures: 3,
            ..before
        }
    );

    // Fresh codes through all three hosts.
    let began = Instant::now();
    let out = f.hosts[0].ssh(&code_at(t + 30));
    let host1_first = began.elapsed();
    assert!(out.logged_in(), "{out}\n{}", f.hosts[0].agent.log());
    let out = f.hosts[1].ssh(&code_at(t + 60));
    assert!(out.logged_in(), "{out}\n{}", f.hosts[1].agent.log());
    let out = f.hosts[2].ssh(&backup[1]);
    assert!(out.logged_in(), "{out}\n{}", f.hosts[2].agent.log());
    assert_eq!(
        f.state(),
        State {
            failures: 0,
            last_step: Some(step + 2),
            backup_used: 2
        }
    );
    eprintln!(
        "fleet_hosts failover: kill to promoted {promoted:?}, to a synchronous standby again \
         {rebuilt:?}; first ssh login after (host 2, replay) {first_login:?}; host 1's first \
         (stale pooled clients) {host1_first:?}; whole test {:?}",
        started.elapsed()
    );
}

/// No synchronous standby, through ssh: with the standby stopped, an ssh
/// login with the right code is denied within the agent's deadline (+3 s
/// for the ssh connection and the password) with "The second-factor
/// database is not accepting writes" shown to the user; the ssh client
/// returns, so sshd did not hang (far below its LoginGraceTime), and sshd
/// logged the failure.
///
/// Nothing half-applied, as in tests/fleet_failover.rs: (1) the login did
/// not get in; (2) while the standby is away the state anyone reads is
/// exactly the state before the attempt, the commit waiting (not
/// cancelled) on the primary; (3) once the standby is back that commit
/// completes whole: the code's step used and the failure count reset to 0
/// (allow_totp), never a mix; the code, spent without a login, is refused
/// through host 2. Then ssh logins work through all three hosts.
#[test]
fn without_a_synchronous_standby_ssh_logins_are_denied_in_time_and_nothing_is_half_applied() {
    if !can_run(
        "without_a_synchronous_standby_ssh_logins_are_denied_in_time_and_nothing_is_half_applied",
    ) {
        return;
    }
    let started = Instant::now();
    let f = fleet("fh-nosync", NO_LOCK);
    eprintln!("fleet_hosts fh-nosync set up: {:?}", started.elapsed());
    let backup = f.enroll();
    let t = early_in_step(5);
    let step = (t / 30) as i64;
    let code = code_at(t);
    let before = f.wrong_login(0, t);
    assert_eq!(
        before,
        State {
            failures: 1,
            last_step: None,
            backup_used: 0
        }
    );

    f.ha.stop_standby("standby1");
    let bound = Duration::from_secs(DEADLINE + 3);
    assert!(bound < LOGIN_GRACE);
    let began = Instant::now();
    let out = f.hosts[0].ssh(&code);
    let took = began.elapsed();
    assert!(denied(&out), "{out}");
    assert!(out.run.stderr.contains(NOT_WRITING), "{out}");
    assert_eq!(out.prompts.len(), 2, "{out}");
    assert!(took < bound, "the ssh login took {took:?}\n{out}");
    let failed = format!(
        "Failed keyboard-interactive/pam for {USER} from {}",
        f.net.bridge_address()
    );
    assert!(out.sshd_log.contains(&failed), "{out}");
    // The commit waits on the primary (not cancelled), invisible to
    // others, and completes once the standby is back.
    let after = common::fleet::commit_waits_for(&f.ha, "standby1", DB, USER, before);
    assert_eq!(
        after,
        State {
            failures: 0,
            last_step: Some(step),
            backup_used: 0
        },
        "the attempt committed whole once the standby was back"
    );
    // Spent, though nobody logged in with it.
    let out = f.hosts[1].ssh(&code);
    assert!(denied(&out), "{out}");
    // With the standby back, ssh logins work through all three hosts.
    let out = f.hosts[1].ssh(&code_at(t + 30));
    assert!(out.logged_in(), "{out}");
    let out = f.hosts[2].ssh(&backup[0]);
    assert!(out.logged_in(), "{out}");
    let out = f.hosts[0].ssh(&backup[1]);
    assert!(out.logged_in(), "{out}");
    eprintln!(
        "fleet_hosts no standby: ssh denied after {took:?}; whole test {:?}",
        started.elapsed()
    );
}

/// A compromised host removed: the DBA's `twofactor fleet remove-host
/// web2` stops host 2's ssh logins at once (refused, not timed out: the
/// role is gone and its session ended; "cannot be reached" shown, no code
/// asked for) while hosts 1 and 3 go on. (What host 2's credentials cannot
/// do in the database is tests/fleet_failover.rs's.)
#[test]
fn removing_host_2_stops_its_ssh_logins_at_once_and_the_others_go_on() {
    if !can_run("removing_host_2_stops_its_ssh_logins_at_once_and_the_others_go_on") {
        return;
    }
    let started = Instant::now();
    let f = fleet("fh-remove", NO_LOCK);
    eprintln!("fleet_hosts fh-remove set up: {:?}", started.elapsed());
    let backup = f.enroll();
    let t = now();
    let out = f.hosts[1].ssh(&code_at(t));
    assert!(out.logged_in(), "{out}");

    cli(&f.dba, &["fleet", "remove-host", "web2"]).expect(0);
    for answer in [&backup[0], &backup[1]] {
        let began = Instant::now();
        let out = f.hosts[1].ssh(answer);
        let took = began.elapsed();
        assert!(denied(&out), "{out}");
        assert!(out.run.stderr.contains(CANNOT_REACH), "{out}");
        assert_eq!(
            out.prompts,
            [format!("({USER}@{}) Password: ", f.net.address(1))],
            "{out}"
        );
        assert!(
            took < Duration::from_secs(DEADLINE),
            "a refusal, not a timeout: {took:?}\n{out}"
        );
    }
    // Nothing of those two logins reached the state.
    assert_eq!(f.state().backup_used, 0);
    // Hosts 1 and 3 go on.
    let out = f.hosts[0].ssh(&code_at(t + 30));
    assert!(out.logged_in(), "{out}");
    let out = f.hosts[2].ssh(&backup[0]);
    assert!(out.logged_in(), "{out}");
    assert_eq!(f.state().backup_used, 1);
    eprintln!("fleet_hosts remove-host: {:?}", started.elapsed());
}

/// Whether host `i` of `net` opens a TCP connection to `address:port`
/// within 3 seconds (bash's /dev/tcp inside its network namespace; a SYN
/// lost as a link comes up is sent again after 1 s).
fn connects(net: &Net, i: usize, address: &str, port: u16) -> bool {
    net.exec(i, "timeout")
        .args([
            "3",
            "bash",
            "-c",
            &format!("exec 3<>/dev/tcp/{address}/{port}"),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap()
        .success()
}

/// The harness itself: each host reaches the bridge's address from its own
/// namespace; `link_down` cuts one host and not the other; `link_up`
/// restores it; drop removes the namespaces, the bridge and the lock.
#[test]
fn the_network_cuts_one_host_and_leaves_nothing_behind() {
    if !common::root_or_skip(
        "the_network_cuts_one_host_and_leaves_nothing_behind",
        "network namespaces",
        &[Needs::NetworkNamespace],
    ) {
        return;
    }
    let net = Net::new(2);
    let bridge = net.bridge_address();
    let listener = std::net::TcpListener::bind((bridge.as_str(), 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let names = [net.netns(0), net.netns(1)];
    for name in &names {
        assert!(Path::new("/run/netns").join(name).exists(), "{name}");
    }
    // Each host has its own address, in its namespace only.
    let out = net
        .exec(1, "ip")
        .args(["-4", "-br", "addr"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("{}/24", net.address(1))), "{text}");
    assert!(!text.contains(&net.address(0)), "{text}");
    assert!(connects(&net, 0, &bridge, port));
    assert!(connects(&net, 1, &bridge, port));
    net.link_down(0);
    assert!(!connects(&net, 0, &bridge, port));
    assert!(connects(&net, 1, &bridge, port));
    net.link_up(0);
    assert!(connects(&net, 0, &bridge, port));
    drop(listener);
    let locks = |subnet: &str| {
        let n = subnet.split('.').nth(2).unwrap().to_string();
        common::sandbox_base().join(format!("netns-{n}.lock"))
    };
    let lock = locks(&net.subnet());
    assert!(lock.exists());
    drop(net);
    for name in &names {
        assert!(!Path::new("/run/netns").join(name).exists(), "{name}");
    }
    assert!(!lock.exists());
    let links = std::process::Command::new("ip")
        .args(["-br", "addr"])
        .output()
        .unwrap();
    let links = String::from_utf8_lossy(&links.stdout);
    assert!(!links.contains(&format!("{bridge}/")), "{links}");
}
