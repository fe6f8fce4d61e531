//! The fleet under the faults of a real database (issue 16): a primary
//! killed and its synchronous standby promoted, the synchronous standby
//! gone, and a compromised host. The database is a PostgreSQL 15 primary
//! with a synchronous standby (tests/common/pg_ha.rs): TLS on TCP, every
//! role authenticated by a client certificate from a throwaway CA, hosts
//! given a connection string naming both servers with
//! `target_session_attrs=read-write`. `fleet init` leaves
//! `require_sync_standby` on (the default).
//!
//! Hosts are as in tests/fleet.rs: a sandbox with its config, its own
//! host role (`twofactor fleet add-host` without `--password-file`: a
//! client certificate with CN = the role) and its own `twofactor agent`,
//! logins through the real `pam_twofactor.so` and real libpam (pamtester
//! under pam_wrapper). The database's clock decides, so codes come from
//! oathtool for the real clock.
//!
//! Root only (the servers run as the `postgres` user; the agents as root).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use common::fleet::{Agent, State, Syslog, code_at, early_in_step, now};
use common::pg_ha::{HaOptions, PgHa};
use common::*;
use serde_json::Value;

const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const DB: &str = "twofactor";
const SVC: &str = "tf";
const PROMPT: &str = "Verification code: ";
/// The agents' `[fleet] deadline_seconds` here.
const DEADLINE: u64 = 3;
/// Enough failures for every test here without a lock.
const POLICY: &str = "[lockout]\nmax_failures = 10\n";

const CANNOT_REACH: &str =
    "The second-factor database cannot be reached. Try again later or ask your administrator.";
const NOT_WRITING: &str = "The second-factor database is not accepting writes. Try again later or ask your administrator.";

/// One simulated host: its sandbox (config, pam.d, state dir) and agent.
struct Host {
    sb: Sandbox,
    agent: Agent,
}

impl Host {
    fn login(&self, user: &str, answers: &[&str]) -> PamOutcome {
        let _turn = login_turn();
        self.sb.pamtester(SVC, user, answers, "")
    }
}

/// One login of this file's tests at a time. The harness runs every
/// pamtester under one machine-wide lock (pam_wrapper is not safe in
/// parallel) anyway; taking turns here first means a login timed by one
/// test never includes waiting for another test's slow denial.
fn login_turn() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The HA database, the DBA's and an admin's `twofactor` configs, hosts.
/// Field order is drop order: agents and sandboxes first, the servers last.
struct Fleet {
    hosts: Vec<Host>,
    dba: Sandbox,
    admin: Sandbox,
    ha: PgHa,
}

/// `[fleet]` for `role` with its client certificate, the CA and the
/// connection string naming both servers.
fn fleet_section(ha: &PgHa, role: &str, socket: &Path) -> String {
    common::fleet::ha_section(ha, DB, role, socket, DEADLINE)
}

/// A fleet of `hosts` hosts on a primary + synchronous standby; its
/// policy from `policy` (copied by `fleet init`).
fn ha_fleet(name: &str, hosts: usize, policy: &str) -> Fleet {
    ha_fleet_with(name, hosts, policy, HaOptions::loopback())
}

/// [`ha_fleet`] on servers built with `options`.
fn ha_fleet_with(name: &str, hosts: usize, policy: &str, options: HaOptions) -> Fleet {
    let sync_standbys = options.standbys;
    let ha = PgHa::start(options);
    ha.superuser("postgres")
        .batch_execute(&format!("CREATE DATABASE {DB}"))
        .unwrap();
    // The DBA: the superuser, by certificate over TCP like everyone else,
    // through the same two-server string (so it follows the primary).
    let dba = Sandbox::new(&format!("{name}-dba"));
    dba.write_config(&format!(
        "{policy}{}",
        fleet_section(&ha, "postgres", &dba.dir().join("none.sock"))
    ));
    common::fleet::init_on_ha(&ha, &dba, DB, sync_standbys);
    let admin = Sandbox::new(&format!("{name}-admin"));
    admin.write_config(&format!(
        "{policy}{}",
        fleet_section(&ha, "tf_admin", &admin.dir().join("none.sock"))
    ));

    let hosts = (1..=hosts)
        .map(|n| {
            let host = format!("web{n}");
            let role = format!("tf_host_{host}");
            let sb = Sandbox::new(&format!("{name}-{host}"));
            // No --password-file: the role logs in with a certificate.
            // What add-host tells the DBA, in words, for the first host.
            if n == 1 {
                let added = cli(&dba, &["fleet", "add-host", &host]).expect(0);
                for line in [
                    format!("hostssl {DB} {role} 0.0.0.0/0 cert"),
                    format!("client certificate: the host's certificate needs CN={role}"),
                ] {
                    assert!(added.stdout.contains(&line), "{}", added.stdout);
                }
                cli(&dba, &["fleet", "remove-host", &host]).expect(0);
            }
            let added = cli(&dba, &["fleet", "add-host", &host, "--json"])
                .expect(0)
                .json();
            assert_eq!(added["role"], role.as_str(), "{added}");
            assert_eq!(added["certificate_cn"], role.as_str(), "{added}");
            assert_eq!(added["password_file"], Value::Null, "{added}");
            assert_eq!(
                added["pg_hba"],
                format!("hostssl {DB} {role} 0.0.0.0/0 cert"),
                "{added}"
            );
            let password: Option<String> = ha
                .superuser(DB)
                .query_one(
                    "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                    &[&role],
                )
                .unwrap()
                .get(0);
            assert_eq!(password, None, "a certificate host has no password");
            sb.write_config(&fleet_section(&ha, &role, &sb.dir().join("agent.sock")));
            sb.write_service(SVC, &sb.module_line(""));
            let agent = Agent::start(&sb);
            Host { sb, agent }
        })
        .collect();
    Fleet {
        hosts,
        dba,
        admin,
        ha,
    }
}

impl Fleet {
    fn enroll(&self, user: &str, secret: &str) -> Value {
        common::fleet::enroll_json(&self.admin, user, secret)
    }

    fn state(&self, user: &str) -> State {
        common::fleet::state(&self.ha, DB, user)
    }
}

/// A code that is not `right`.
fn wrong_for(right: &str) -> &'static str {
    if right == "000000" {
        "111111"
    } else {
        "000000"
    }
}

fn backup_codes(enrolled: &Value) -> Vec<String> {
    enrolled["backup_codes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect()
}

/// A login on `host` from `rhost` with one answer, its syslog lines going
/// to `log`, timed.
fn timed_login(
    host: &Host,
    log: &Syslog,
    rhost: &str,
    user: &str,
    answer: &str,
) -> (PamOutcome, Duration) {
    let item = format!("rhost={rhost}");
    let cmd = host.sb.pamtester_command(
        SVC,
        user,
        "",
        &["-I", &item],
        "authenticate",
        &Extra::default(),
    );
    let _turn = login_turn();
    let started = Instant::now();
    let out = Sandbox::run_pamtester(log.wrap(cmd), &[answer]);
    (out, started.elapsed())
}

/// A login on `host`, timed from when it has its turn ([`login_turn`]).
fn timed(host: &Host, user: &str, answer: &str) -> (PamOutcome, Duration) {
    let _turn = login_turn();
    let started = Instant::now();
    let out = host.sb.pamtester(SVC, user, &[answer], "");
    (out, started.elapsed())
}

fn root(test: &str) -> bool {
    root_or_skip(
        test,
        "a PostgreSQL primary and standby run as the postgres user, agents as root",
        &[
            Needs::Program("oathtool", "oathtool"),
            Needs::Program("openssl", "openssl"),
            Needs::Program("pg_basebackup", "postgresql-15"),
        ],
    )
}

/// Failover: a backup code and a TOTP code are accepted through host 1
/// and one wrong code is counted; the primary is killed (SIGKILL, every
/// process of it gone) and the standby promoted. The promoted database
/// holds exactly that state; the TOTP code is refused through host 2 as a
/// replay (still inside the window: the log says "replayed"), the backup
/// code stays used; fresh codes work through both hosts once the agents
/// reconnect.
///
/// The promoted server keeps `synchronous_standby_names = 'standby1'`, so
/// with no standby its commits would all wait. The test first clears it
/// (`ALTER SYSTEM` + reload) and shows that `require_sync_standby` then
/// refuses attempts at once ("not accepting writes", nothing written:
/// nothing would protect the next failover); then it names `standby1`
/// again and attaches a new standby: the killed node rebuilt as
/// `standby1` of the promoted server (a new base backup, the same port).
/// Logins work from there.
#[test]
fn a_failover_loses_no_used_code_no_backup_code_and_no_failure() {
    if !root("a_failover_loses_no_used_code_no_backup_code_and_no_failure") {
        return;
    }
    let started = Instant::now();
    let f = ha_fleet("failover", 2, POLICY);
    let enrolled = f.enroll("daemon", SECRET);
    let codes = backup_codes(&enrolled);
    let log = Syslog::bind(&f.hosts[0].sb);
    let rhost = "198.51.100.81";

    let (out, _) = timed_login(&f.hosts[0], &log, rhost, "daemon", &codes[0]);
    assert!(out.succeeded(), "{out}");
    // A code of this step: its replay below must be decided while the
    // database still takes this step (the window is 1), i.e. before the
    // end of the next step, at least 30 s away; the failover takes a few
    // seconds (checked below).
    let t = early_in_step(5);
    let step = t / 30;
    let code = code_at(SECRET, t);
    let (out, _) = timed_login(&f.hosts[0], &log, rhost, "daemon", &code);
    assert!(out.succeeded(), "{out}");
    let (out, _) = timed_login(&f.hosts[0], &log, rhost, "daemon", wrong_for(&code));
    assert_eq!(out.pam_error(), Some(pam_err::AUTH_ERR), "{out}");
    let before = f.state("daemon");
    assert_eq!(
        before,
        State {
            failures: 1,
            last_step: Some(step as i64),
            backup_used: 1
        }
    );

    let old_primary = f.ha.primary_index();
    let failover = Instant::now();
    let killed = f.ha.kill_primary();
    assert!(
        killed.len() > 1,
        "the postmaster and its processes: {killed:?}"
    );
    // Before the promotion no server takes writes: a clean denial, quickly.
    let (out, took) = timed_login(&f.hosts[0], &log, rhost, "daemon", wrong_for(&code));
    assert_eq!(out.pam_error(), Some(pam_err::AUTHINFO_UNAVAIL), "{out}");
    assert!(out.stderr.contains(CANNOT_REACH), "{out}");
    assert!(took < Duration::from_secs(DEADLINE), "{took:?}");
    f.ha.promote_standby("standby1");
    assert_ne!(f.ha.primary_index(), old_primary);
    let promoted = failover.elapsed(); // with the denied login between

    // Everything committed before the kill is on the promoted server.
    assert_eq!(f.state("daemon"), before);

    // The promoted server still names standby1, which is gone. Cleared,
    // commits would no longer wait for anyone: require_sync_standby then
    // refuses every attempt at once, before anything is written.
    f.ha.set_sync_names("");
    let (out, refused) = timed_login(&f.hosts[0], &log, rhost, "daemon", wrong_for(&code));
    assert_eq!(out.pam_error(), Some(pam_err::AUTHINFO_UNAVAIL), "{out}");
    assert!(out.stderr.contains(NOT_WRITING), "{out}");
    assert!(
        refused < Duration::from_secs(DEADLINE),
        "not a timeout: {refused:?}"
    );
    log.expect_line(rhost, "the fleet requires a synchronous standby");
    assert_eq!(f.state("daemon"), before);
    // What this test does instead: name standby1 again and attach a new
    // one, the killed node rebuilt (a new base backup, the same port).
    f.ha.set_sync_names("standby1");
    f.ha.rebuild_as_standby("standby1");
    let rebuilt = failover.elapsed();
    // The two-server string skips the first server, a read-only standby
    // now, for the promoted one (target_session_attrs=read-write).
    let mut client = f.ha.tls_client(DB, "tf_admin").unwrap();
    let row = client
        .query_one("SELECT pg_is_in_recovery(), inet_server_port()", &[])
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    let port = f.ha.ports()[f.ha.primary_index()];
    assert_eq!(row.get::<_, Option<i32>>(1), Some(i32::from(port)));
    assert_eq!(f.ha.primary_index(), 1);
    drop(client);

    // The first login after the promotion: host 2 (no pooled client yet),
    // the code host 1 accepted before the kill.
    assert!(
        now() + 3 < (step + 2) * 30,
        "the failover took too long for the replay check to stay inside the window"
    );
    let (out, first_login) = timed_login(&f.hosts[1], &log, rhost, "daemon", &code);
    assert_eq!(out.pam_error(), Some(pam_err::AUTH_ERR), "{out}");
    assert_eq!(out.prompt_count(PROMPT), 1, "{out}");
    log.expect_line(rhost, "denied: replayed code");
    assert_eq!(f.state("daemon").failures, 2);

    // The backup code used before the kill stays used.
    let (out, _) = timed_login(&f.hosts[1], &log, rhost, "daemon", &codes[0]);
    assert_eq!(out.pam_error(), Some(pam_err::AUTH_ERR), "{out}");
    assert_eq!(f.state("daemon").failures, 3);
    assert_eq!(f.state("daemon").backup_used, 1);

    // Fresh codes work through both hosts: host 1's agent had pooled
    // clients to the killed primary.
    let (out, host1_first) =
        timed_login(&f.hosts[0], &log, rhost, "daemon", &code_at(SECRET, t + 30));
    assert!(out.succeeded(), "{out}\n{}", f.hosts[0].agent.log());
    let (out, _) = timed_login(&f.hosts[1], &log, rhost, "daemon", &codes[1]);
    assert!(out.succeeded(), "{out}");
    assert_eq!(
        out.info_lines(),
        ["Backup code accepted. 8 backup codes left."]
    );
    assert_eq!(
        f.state("daemon"),
        State {
            failures: 0,
            last_step: Some(step as i64 + 1),
            backup_used: 2
        }
    );
    eprintln!(
        "failover timings: kill to promoted {promoted:?}; first login on the promoted \
         server (host 1, stale pooled clients; refused, no standby named) {refused:?}; \
         kill to new standby synchronous {rebuilt:?}; first login after that (host 2, \
         new connection) {first_login:?}; host 1's first success {host1_first:?}; \
         whole test {:?}",
        started.elapsed()
    );
}

/// No synchronous standby: with the standby stopped, a login with the
/// right code is denied within the agent's deadline (+ margin) with the
/// "not accepting writes" message — never let in, and the agent does not
/// cancel the waiting commit.
///
/// "Nothing half-applied", precisely: (1) the login that was denied did
/// not get in; (2) while the standby is away, the state anyone reads is
/// exactly the state before the attempt (the waiting transaction is not
/// visible); (3) the waiting commit is NOT cancelled, so once the standby
/// is back it completes as a whole: the state is then exactly that of the
/// decided attempt (allow_totp: the code's step used and the failure count
/// reset to 0), never a mix of the two; the code is spent without a login,
/// and its replay is refused. Once the standby is back, logins work.
#[test]
fn without_a_synchronous_standby_logins_are_denied_and_nothing_is_half_applied() {
    if !root("without_a_synchronous_standby_logins_are_denied_and_nothing_is_half_applied") {
        return;
    }
    let started = Instant::now();
    let f = ha_fleet("nosync", 2, POLICY);
    let backup = backup_codes(&f.enroll("daemon", SECRET));
    let log = Syslog::bind(&f.hosts[0].sb);
    let rhost = "198.51.100.82";
    let t = early_in_step(5);
    let step = t / 30;
    let code = code_at(SECRET, t);
    let (out, _) = timed_login(&f.hosts[0], &log, rhost, "daemon", wrong_for(&code));
    assert_eq!(out.pam_error(), Some(pam_err::AUTH_ERR), "{out}");
    let before = f.state("daemon");
    assert_eq!(
        before,
        State {
            failures: 1,
            last_step: None,
            backup_used: 0
        }
    );

    f.ha.stop_standby("standby1");
    let (out, took) = timed_login(&f.hosts[0], &log, rhost, "daemon", &code);
    assert_eq!(out.pam_error(), Some(pam_err::AUTHINFO_UNAVAIL), "{out}");
    assert!(out.stderr.contains(NOT_WRITING), "{out}");
    assert_eq!(out.prompt_count(PROMPT), 1, "{out}");
    assert!(
        took < Duration::from_secs(DEADLINE + 3),
        "denied after {took:?}"
    );
    log.expect_line(rhost, "did not answer within [fleet] deadline_seconds");
    // The commit waits on the primary (not cancelled), invisible to
    // others, and completes once the standby is back.
    let after = common::fleet::commit_waits_for(&f.ha, "standby1", DB, "daemon", before);
    assert_eq!(
        after,
        State {
            failures: 0,
            last_step: Some(step as i64),
            backup_used: 0
        },
        "the attempt committed whole once the standby was back"
    );
    // Spent, though nobody logged in with it.
    let (out, _) = timed_login(&f.hosts[1], &log, rhost, "daemon", &code);
    assert_eq!(out.pam_error(), Some(pam_err::AUTH_ERR), "{out}");
    // With the standby back, logins work through both hosts.
    let (out, _) = timed_login(&f.hosts[1], &log, rhost, "daemon", &code_at(SECRET, t + 30));
    assert!(out.succeeded(), "{out}");
    let (out, _) = timed_login(&f.hosts[0], &log, rhost, "daemon", &backup[0]);
    assert!(out.succeeded(), "{out}");
    eprintln!(
        "no-standby denial took {took:?}; whole test {:?}",
        started.elapsed()
    );
}

/// A compromised host: with host 2's certificate and key, straight to the
/// database (the `postgres` crate with OpenSSL, as the agent connects):
/// reading seeds, resetting failures, unlocking, deciding an attempt at an
/// older time (a step backwards) and importing state all fail with
/// permission denied (42501), and the state is unchanged. Then the DBA's
/// `twofactor fleet remove-host web2` stops host 2's logins at once
/// (AUTHINFO_UNAVAIL, no wait for the deadline) while host 1 goes on.
#[test]
fn a_compromised_host_cannot_touch_state_and_removing_it_cuts_it_off() {
    if !root("a_compromised_host_cannot_touch_state_and_removing_it_cuts_it_off") {
        return;
    }
    let f = ha_fleet("compromised", 2, POLICY);
    f.enroll("daemon", SECRET);
    let t = early_in_step(5);
    let code = code_at(SECRET, t);
    let out = f.hosts[1].login("daemon", &[&code]);
    assert!(out.succeeded(), "{out}");
    let out = f.hosts[1].login("daemon", &[wrong_for(&code)]);
    assert_eq!(out.pam_error(), Some(pam_err::AUTH_ERR), "{out}");
    let before = f.state("daemon");
    assert_eq!(before.failures, 1);

    let mut evil =
        f.ha.tls_client(DB, "tf_host_web2")
            .unwrap_or_else(|e| panic!("host 2's certificate: {e}"));
    let who: String = evil
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(who, "tf_host_web2");
    // Host 2's agent is connected the same way: TLS, its certificate.
    let agent_sessions: i64 =
        f.ha.superuser("postgres")
            .query_one(
                "SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
              WHERE a.usename = 'tf_host_web2' AND a.application_name = 'pam-twofactor' \
                AND s.ssl AND s.client_dn = '/CN=tf_host_web2'",
                &[],
            )
            .unwrap()
            .get(0);
    assert!(
        agent_sessions >= 1,
        "host 2's agent is not on TLS with its certificate"
    );
    // What the role may do works (so the refusals below are refusals).
    let status = evil.query_one("SELECT * FROM twofactor.fleet_status()", &[]);
    assert!(status.is_ok(), "{status:?}");
    for sql in [
        "SELECT secret FROM twofactor.devices",
        "UPDATE twofactor.users SET failures = 0",
        "SELECT twofactor.admin_unlock('daemon')",
        "SELECT * FROM twofactor.attempt_at('daemon', 1, '123456', NULL::bytea, false, \
         NULL::text, NULL::bigint, NULL::text, \
         p_now => extract(epoch FROM now())::bigint - 3600)",
        "SELECT twofactor.admin_import_state('daemon', 0, NULL::bigint, NULL::bigint, \
         NULL::bytea[], ARRAY['default'], ARRAY[0]::bigint[], ARRAY[0]::bigint[])",
        "SELECT twofactor.admin_set_policy('{\"max_failures\": 1000}')",
    ] {
        let e = evil
            .batch_execute(sql)
            .expect_err(&format!("host 2 may not: {sql}"));
        let code = e.code().map(|c| c.code().to_string());
        assert_eq!(
            code.as_deref(),
            Some("42501"),
            "{sql}: {}",
            common::pg::error_text(&e)
        );
    }
    assert_eq!(f.state("daemon"), before);

    cli(&f.dba, &["fleet", "remove-host", "web2"]).expect(0);
    let log = Syslog::bind(&f.hosts[0].sb);
    let rhost = "198.51.100.83";
    let (out, took) = timed_login(&f.hosts[1], &log, rhost, "daemon", &code_at(SECRET, t + 30));
    assert_eq!(out.pam_error(), Some(pam_err::AUTHINFO_UNAVAIL), "{out}");
    assert!(out.stderr.contains(CANNOT_REACH), "{out}");
    assert!(
        took < Duration::from_secs(DEADLINE),
        "a refusal, not a timeout: {took:?}"
    );
    log.expect_line(rhost, "cannot reach the database");
    // Its open session was ended, and its certificate opens none.
    assert!(evil.batch_execute("SELECT 1").is_err());
    assert!(f.ha.tls_client(DB, "tf_host_web2").is_err());
    let (out, _) = timed_login(&f.hosts[0], &log, rhost, "daemon", &code_at(SECRET, t + 30));
    assert!(out.succeeded(), "{out}");
    assert_eq!(f.state("daemon").failures, 0);
}

/// The README's advice, held to: with `synchronous_standby_names = 'ANY 1
/// (standby1, standby2)'` one standby can fail and logins go on (each
/// commit waits for the other); with both gone, logins are denied within
/// the deadline; one back, they work again.
#[test]
fn with_two_standbys_one_may_fail() {
    if !root("with_two_standbys_one_may_fail") {
        return;
    }
    let options = HaOptions {
        standbys: 2,
        ..HaOptions::loopback()
    };
    let f = ha_fleet_with("any1", 1, POLICY, options);
    let backup = backup_codes(&f.enroll("daemon", SECRET));
    let t = early_in_step(5);
    f.ha.stop_standby("standby1");
    let out = f.hosts[0].login("daemon", &[&code_at(SECRET, t)]);
    assert!(out.succeeded(), "{out}");
    assert_eq!(f.state("daemon").last_step, Some((t / 30) as i64));

    f.ha.stop_standby("standby2");
    let (out, took) = timed(&f.hosts[0], "daemon", &backup[0]);
    assert_eq!(out.pam_error(), Some(pam_err::AUTHINFO_UNAVAIL), "{out}");
    assert!(out.stderr.contains(NOT_WRITING), "{out}");
    assert!(took < Duration::from_secs(DEADLINE + 3), "{took:?}");

    f.ha.start_standby("standby1");
    let out = f.hosts[0].login("daemon", &[&code_at(SECRET, t + 30)]);
    assert!(out.succeeded(), "{out}");
    // The backup code of the denied login was spent when its commit
    // completed (with standby1 back): it is refused now, another works.
    let out = f.hosts[0].login("daemon", &[&backup[0]]);
    assert_eq!(out.pam_error(), Some(pam_err::AUTH_ERR), "{out}");
    let out = f.hosts[0].login("daemon", &[&backup[1]]);
    assert!(out.succeeded(), "{out}");
    assert_eq!(f.state("daemon").backup_used, 2);
}

/// `twofactor ARGS` as `sb`'s config says, and how long it took; fails the
/// test (after killing it) if it runs longer than `limit`.
fn cli_within(sb: &Sandbox, args: &[&str], limit: Duration) -> (std::process::Output, Duration) {
    let mut cmd = std::process::Command::new(cli_path());
    cmd.arg("--config").arg(sb.config_path()).args(args);
    clean_env(&mut cmd)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let started = Instant::now();
    let mut child = cmd.spawn().expect("run twofactor");
    while child.try_wait().expect("wait for twofactor").is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reap twofactor");
            panic!(
                "twofactor {args:?} still running after {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let took = started.elapsed();
    (
        child.wait_with_output().expect("read twofactor's output"),
        took,
    )
}

/// A failover whose old primary hangs instead of dying (SIGSTOP to all
/// its processes: its kernel still accepts connections and nothing
/// answers — a hung postmaster, or a proxy whose backend is gone). The
/// standby is promoted and given a standby of its own. The agents must
/// not wait on the hung server forever: a login may be denied (within the
/// deadline) while an agent gives up on it, then logins work through both
/// hosts — host 1 had pooled clients to the hung server, host 2 none.
/// (Before the agent bounded each server's attempt, the client's
/// `connect_timeout` covered only the TCP connect: every connect hung in
/// the TLS handshake with the old primary and no login worked again.)
#[test]
fn a_hung_old_primary_is_skipped_after_a_failover() {
    if !root("a_hung_old_primary_is_skipped_after_a_failover") {
        return;
    }
    let f = ha_fleet("hung", 2, POLICY);
    let backup = backup_codes(&f.enroll("daemon", SECRET));
    let t = early_in_step(5);
    let out = f.hosts[0].login("daemon", &[&code_at(SECRET, t)]);
    assert!(out.succeeded(), "{out}");
    let hung = f.ha.freeze_primary();
    f.ha.promote_standby("standby1");
    f.ha.add_standby("standby1");
    // An admin command names the hung server first, like the agents: it is
    // answered from the promoted one within deadline_seconds, not held by
    // the hung one's TLS handshake forever.
    let (status, took) = cli_within(
        &f.admin,
        &["fleet", "status", "--json"],
        Duration::from_secs(DEADLINE + 10),
    );
    let stdout = String::from_utf8_lossy(&status.stdout);
    let json: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "fleet status --json: {e}\n{stdout}\n{}",
            String::from_utf8_lossy(&status.stderr)
        )
    });
    assert_eq!(json["schema_version"], 2, "{json}");
    assert!(took < Duration::from_secs(DEADLINE + 2), "{took:?}");
    let started = Instant::now();
    let mut next = backup.iter();
    for (h, host) in f.hosts.iter().enumerate() {
        let mut denied = 0;
        loop {
            let code = next.next().unwrap();
            let (out, took) = timed(host, "daemon", code);
            if out.succeeded() {
                break;
            }
            assert_eq!(out.pam_error(), Some(pam_err::AUTHINFO_UNAVAIL), "{out}");
            assert!(took < Duration::from_secs(DEADLINE + 3), "{took:?}");
            denied += 1;
            assert!(
                denied < 4,
                "host {} still denies logins {:?} after the failover:\n{out}\n{}",
                h + 1,
                started.elapsed(),
                host.agent.log()
            );
        }
        // From here without waiting for the hung server.
        let (out, took) = timed(host, "daemon", next.next().unwrap());
        assert!(out.succeeded(), "{out}");
        // Answered, not timed out.
        assert!(
            took < Duration::from_secs(DEADLINE),
            "host {}: {took:?}\n{}",
            h + 1,
            host.agent.log()
        );
        eprintln!(
            "hung old primary: host {} denied {denied} login(s), working {:?} after the promotion",
            h + 1,
            started.elapsed()
        );
    }
    f.ha.kill_node(hung);
}
