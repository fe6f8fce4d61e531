//! The fleet's SQL functions (sql/001_init.sql) held to the Rust policy and
//! to independent codes.
//!
//! * `case_table_against_rust_policy` (no root): every case of
//!   tests/fleet_cases.toml through `pam_twofactor::policy::decide`.
//! * `case_table_against_sql` (root): the same cases through
//!   `twofactor.attempt_at` in a throwaway PostgreSQL (tests/common/pg.rs),
//!   time pinned, comparing the verdict and the tables afterwards.
//! * RFC 6238 Appendix B through `twofactor.hotp`, the roles' rights, 40
//!   parallel logins with one code and 20 parallel wrong codes on the real
//!   database clock, `record_delivery`, `enroll_first`, the one-answer drift
//!   check, `retry_with_hash`, and `require_sync_standby`.
//!
//! Expected codes come from oathtool or the RFC (never from our code).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

use serde::Deserialize;

use common::pg::{Cluster, error_text};
use common::{Needs, oathtool_code, root_or_skip};
use pam_twofactor::login::input::{Answer, classify};
use pam_twofactor::otp::backup::{HASH_BYTES, KdfParams, hash_digits};
use pam_twofactor::otp::{Algorithm, SecretKey, TotpParams};
use pam_twofactor::policy::{self, Attempt, DriftCheck, Failure, Policy, Verdict};
use pam_twofactor::records::{BackupSet, Delivered, Device, SecretRecord, State};

const CASES: &str = include_str!("fleet_cases.toml");
const DB: &str = "fleet";

// ------------------------------------------------------------------ the table

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Table {
    policy: PolicyToml,
    records: BTreeMap<String, RecordToml>,
    case: Vec<Case>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct PolicyToml {
    window: u32,
    max_failures: u32,
    lock_seconds: u64,
    max_attempts: u32,
    per_seconds: u64,
    max_drift_steps: u32,
    grace_seconds: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PolicyOverride {
    window: Option<u32>,
    max_failures: Option<u32>,
    lock_seconds: Option<u64>,
    max_attempts: Option<u32>,
    per_seconds: Option<u64>,
    max_drift_steps: Option<u32>,
    grace_seconds: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordToml {
    devices: Vec<DeviceToml>,
    backup: BackupToml,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceToml {
    label: String,
    secret: String,
    algorithm: String,
    digits: u8,
    period: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BackupToml {
    digits: u8,
    salt: String,
    kdf: KdfToml,
    codes: Vec<String>,
}

#[derive(Deserialize, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct KdfToml {
    m_cost: u32,
    t_cost: u32,
    p_cost: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DriftToml {
    device: String,
    step: u64,
    offset: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    record: String,
    now: u64,
    answer: String,
    rhost: Option<String>,
    #[serde(default)]
    policy: PolicyOverride,
    drift: Option<DriftToml>,
    #[serde(default)]
    before: StateToml,
    verdict: String,
    device: Option<String>,
    step: Option<u64>,
    drift_offset: Option<i64>,
    off_by: Option<u64>,
    remaining: Option<usize>,
    until: Option<u64>,
    after: StateToml,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct StateToml {
    failures: Option<u32>,
    locked_until: Option<u64>,
    rate_window_start: Option<u64>,
    rate_window_attempts: Option<u32>,
    last_success: Option<u64>,
    #[serde(default)]
    last_accepted_step: BTreeMap<String, u64>,
    #[serde(default)]
    drift_steps: BTreeMap<String, i64>,
    used_backup: Option<Vec<String>>,
    #[serde(default)]
    grace: BTreeMap<String, u64>,
    delivered: Option<DeliveredToml>,
    deliveries: Option<Vec<u64>>,
    #[serde(default)]
    clear: Vec<String>,
    #[serde(default)]
    grace_removed: Vec<String>,
    grace_fill: Option<GraceFill>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveredToml {
    code: String,
    expires: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GraceFill {
    prefix: String,
    count: u64,
    first_at: u64,
}

fn table() -> Table {
    toml::from_str(CASES).expect("tests/fleet_cases.toml parses")
}

impl Table {
    fn policy(&self, case: &Case) -> Policy {
        let (p, o) = (self.policy, &case.policy);
        Policy {
            window: o.window.unwrap_or(p.window),
            max_failures: o.max_failures.unwrap_or(p.max_failures),
            lock_seconds: o.lock_seconds.unwrap_or(p.lock_seconds),
            max_attempts: o.max_attempts.unwrap_or(p.max_attempts),
            per_seconds: o.per_seconds.unwrap_or(p.per_seconds),
            max_drift_steps: o.max_drift_steps.unwrap_or(p.max_drift_steps),
            grace_seconds: o.grace_seconds.unwrap_or(p.grace_seconds),
        }
    }

    fn record(&self, case: &Case) -> SecretRecord {
        let raw = self
            .records
            .get(&case.record)
            .unwrap_or_else(|| panic!("{}: no record {:?}", case.name, case.record));
        record_of(raw)
    }
}

fn kdf_of(k: KdfToml) -> KdfParams {
    KdfParams {
        m_cost: k.m_cost,
        t_cost: k.t_cost,
        p_cost: k.p_cost,
    }
}

fn record_of(raw: &RecordToml) -> SecretRecord {
    let salt: [u8; 16] = data_encoding::HEXLOWER
        .decode(raw.backup.salt.as_bytes())
        .expect("salt is hex")
        .try_into()
        .expect("salt is 16 bytes");
    let kdf = kdf_of(raw.backup.kdf);
    let devices = raw
        .devices
        .iter()
        .zip(1000u64..)
        .map(|(d, created)| Device {
            label: d.label.clone(),
            secret: SecretKey::from_base32(&d.secret).expect("secret is base32"),
            params: TotpParams {
                algorithm: Algorithm::parse(&d.algorithm).expect("algorithm"),
                digits: d.digits,
                period: d.period,
            },
            created,
        })
        .collect();
    let backup = BackupSet {
        created: 1000,
        digits: raw.backup.digits,
        kdf,
        salt,
        hashes: raw
            .backup
            .codes
            .iter()
            .map(|c| hash(c, &salt, kdf))
            .collect(),
    };
    SecretRecord {
        created: 1000,
        devices,
        backup,
        deliver_to: None,
    }
}

fn hash(code: &str, salt: &[u8], kdf: KdfParams) -> [u8; HASH_BYTES] {
    hash_digits(code, salt, kdf).expect("argon2")
}

/// `base` with the changes of `patch` (see the table's header).
fn apply(base: &State, patch: &StateToml, record: &SecretRecord) -> State {
    let mut s = base.clone();
    let (salt, kdf) = (&record.backup.salt, record.backup.kdf);
    if let Some(v) = patch.failures {
        s.failures = v;
    }
    if let Some(v) = patch.locked_until {
        s.locked_until = Some(v);
    }
    if let Some(v) = patch.rate_window_start {
        s.rate_window_start = v;
    }
    if let Some(v) = patch.rate_window_attempts {
        s.rate_window_attempts = v;
    }
    if let Some(v) = patch.last_success {
        s.last_success = Some(v);
    }
    s.last_accepted_step
        .extend(patch.last_accepted_step.clone());
    s.drift_steps.extend(patch.drift_steps.clone());
    if let Some(codes) = &patch.used_backup {
        s.used_backup_codes = codes.iter().map(|c| hash(c, salt, kdf)).collect();
    }
    if let Some(fill) = &patch.grace_fill {
        for i in 0..fill.count {
            s.grace
                .insert(format!("{}{i:02}", fill.prefix), fill.first_at + i);
        }
    }
    for host in &patch.grace_removed {
        assert!(
            s.grace.remove(host).is_some(),
            "grace_removed {host}: absent"
        );
    }
    s.grace.extend(patch.grace.clone());
    if let Some(d) = &patch.delivered {
        s.delivered = Some(Delivered {
            hash: hash(&d.code, salt, kdf),
            expires: d.expires,
        });
    }
    if let Some(v) = &patch.deliveries {
        s.deliveries = v.clone();
    }
    for field in &patch.clear {
        match field.as_str() {
            "locked_until" => s.locked_until = None,
            "last_success" => s.last_success = None,
            "delivered" => s.delivered = None,
            other => panic!("clear: unknown field {other}"),
        }
    }
    s
}

/// States compared as sets where order means nothing, and an offset of 0
/// the same as none.
fn normal(mut s: State) -> State {
    s.used_backup_codes.sort();
    s.drift_steps.retain(|_, d| *d != 0);
    s
}

/// A verdict with the fields both implementations report.
#[derive(Debug, PartialEq, Eq, Default)]
struct Outcome {
    verdict: String,
    device: Option<String>,
    step: Option<u64>,
    drift_offset: Option<i64>,
    off_by: Option<u64>,
    remaining: Option<usize>,
    until: Option<u64>,
}

impl Case {
    fn expected(&self) -> Outcome {
        Outcome {
            verdict: self.verdict.clone(),
            device: self.device.clone(),
            step: self.step,
            drift_offset: self.drift_offset,
            off_by: self.off_by,
            remaining: self.remaining,
            until: self.until,
        }
    }

    /// The answer as the login hands it to the policy: the TOTP-length
    /// digits, and the argon2 hash when it can be a backup or delivered code.
    fn attempt_parts(
        &self,
        record: &SecretRecord,
        before: &State,
    ) -> (Option<String>, Option<[u8; HASH_BYTES]>) {
        let answer = classify(self.answer.as_bytes());
        let code = answer.totp().map(str::to_string);
        let hash = match &answer {
            Answer::Digits(d)
                if d.len() == usize::from(record.backup.digits)
                    || (code.is_some() && before.delivered.is_some()) =>
            {
                Some(hash(d, &record.backup.salt, record.backup.kdf))
            }
            _ => None,
        };
        (code, hash)
    }
}

fn rust_outcome(verdict: Verdict) -> Outcome {
    let named = |v: &str| Outcome {
        verdict: v.to_string(),
        ..Outcome::default()
    };
    match verdict {
        Verdict::AllowTotp { device } => Outcome {
            device: Some(device),
            ..named("allow_totp")
        },
        Verdict::AllowDrift { device, offset } => Outcome {
            device: Some(device),
            drift_offset: Some(offset),
            ..named("allow_drift")
        },
        Verdict::AllowBackup { remaining } => Outcome {
            remaining: Some(remaining),
            ..named("allow_backup")
        },
        Verdict::AllowDelivered => named("allow_delivered"),
        Verdict::DriftSuspected(check) => Outcome {
            device: Some(check.device),
            step: Some(check.step),
            drift_offset: Some(check.offset),
            off_by: Some(check.off_by),
            ..named("drift_suspected")
        },
        Verdict::Deny {
            failure,
            locked_until,
        } => Outcome {
            until: locked_until,
            ..named(match failure {
                Failure::WrongCode => "wrong_code",
                Failure::Replayed => "replayed",
                Failure::Malformed => "malformed",
                Failure::DriftNotConfirmed => "drift_not_confirmed",
                Failure::DriftSuspected => "drift_suspected_locked",
            })
        },
        Verdict::LockedOut { until } => Outcome {
            until: Some(until),
            ..named("locked_out")
        },
        Verdict::RateLimited { until } => Outcome {
            until: Some(until),
            ..named("rate_limited")
        },
    }
}

/// (a) Every case through the Rust policy: needs nothing but the table.
#[test]
fn case_table_against_rust_policy() {
    let table = table();
    assert!(table.case.len() >= 40, "the table lost cases");
    let mut failed = Vec::new();
    for case in &table.case {
        let record = table.record(case);
        let before = apply(&State::default(), &case.before, &record);
        let want_state = apply(&before, &case.after, &record);
        let (code, hash) = case.attempt_parts(&record, &before);
        let drift = case.drift.as_ref().map(|d| DriftCheck {
            device: d.device.clone(),
            step: d.step,
            offset: d.offset,
            off_by: 0,
        });
        let attempt = Attempt {
            code: code.as_deref(),
            hash,
            drift: drift.as_ref(),
            rhost: case.rhost.as_deref(),
        };
        let d = policy::decide(&record, &before, &attempt, case.now, &table.policy(case));
        let got = rust_outcome(d.verdict);
        if got != case.expected() {
            failed.push(format!(
                "{}: verdict {got:?}, want {:?}",
                case.name,
                case.expected()
            ));
        }
        if normal(d.state.clone()) != normal(want_state.clone()) {
            failed.push(format!(
                "{}: state\n  got  {:?}\n  want {:?}",
                case.name, d.state, want_state
            ));
        }
    }
    assert!(failed.is_empty(), "Rust policy:\n{}", failed.join("\n"));
}

// ------------------------------------------------------------------ SQL side

fn i(v: u64) -> i64 {
    i64::try_from(v).expect("fits in bigint")
}

fn u(v: i64) -> u64 {
    u64::try_from(v).expect("not negative")
}

/// A cluster with the schema in database `fleet`, or `None` when not root.
fn cluster(test: &str) -> Option<Cluster> {
    if !root_or_skip(
        test,
        "starts its own PostgreSQL as the postgres user",
        &[Needs::Program("oathtool", "oathtool")],
    ) {
        return None;
    }
    let pg = Cluster::start();
    pg.create_database(DB);
    Some(pg)
}

/// A login role in `group` with a password, and a connection as it.
fn login_as(pg: &Cluster, role: &str, group: &str) -> postgres::Client {
    let mut su = pg.client(DB, "postgres");
    su.batch_execute(&format!("CREATE ROLE {role} LOGIN IN ROLE {group}"))
        .expect("create login role");
    pg.set_password(role, &format!("pw-{role}"));
    pg.client(DB, role)
}

fn set_policy(db: &mut postgres::Client, json: &str) {
    db.execute(
        "SELECT twofactor.admin_set_policy($1::text::jsonb)",
        &[&json],
    )
    .unwrap_or_else(|e| panic!("admin_set_policy {json}: {}", error_text(&e)));
}

/// Writes `record` and `state` as user `name`, with `pending` as the drift
/// check of its device, straight into the tables (superuser).
fn write_user(
    db: &mut postgres::Client,
    name: &str,
    record: &SecretRecord,
    state: &State,
    pending: Option<&DriftToml>,
) {
    let b = &record.backup;
    let delivered_hash = state.delivered.as_ref().map(|d| d.hash.to_vec());
    let delivered_expires = state.delivered.as_ref().map(|d| i(d.expires));
    let deliveries: Vec<i64> = state.deliveries.iter().map(|&t| i(t)).collect();
    db.execute(
        "INSERT INTO twofactor.users (name, generation, created, backup_created, backup_digits, \
         backup_salt, backup_m_cost, backup_t_cost, backup_p_cost, failures, locked_until, \
         rate_window_start, rate_window_attempts, last_success, delivered_hash, \
         delivered_expires, deliveries) \
         VALUES ($1, 1, 1000, 1000, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
        &[
            &name,
            &i32::from(b.digits),
            &b.salt.as_slice(),
            &(b.kdf.m_cost as i32),
            &(b.kdf.t_cost as i32),
            &(b.kdf.p_cost as i32),
            &(state.failures as i32),
            &state.locked_until.map(i),
            &i(state.rate_window_start),
            &(state.rate_window_attempts as i32),
            &state.last_success.map(i),
            &delivered_hash,
            &delivered_expires,
            &deliveries,
        ],
    )
    .unwrap_or_else(|e| panic!("insert user {name}: {}", error_text(&e)));
    for d in &record.devices {
        let pending = pending.filter(|p| p.device == d.label);
        db.execute(
            "INSERT INTO twofactor.devices (user_name, label, secret, algorithm, digits, period, \
             created, last_accepted_step, drift_steps, drift_pending_step, drift_pending_offset) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &name,
                &d.label,
                &d.secret.as_bytes(),
                &d.params.algorithm.name(),
                &i32::from(d.params.digits),
                &(d.params.period as i32),
                &i(d.created),
                &state.last_accepted_step.get(&d.label).map(|&s| i(s)),
                &state.drift_steps.get(&d.label).copied().unwrap_or(0),
                &pending.map(|p| i(p.step)),
                &pending.map(|p| p.offset),
            ],
        )
        .unwrap_or_else(|e| panic!("insert device: {}", error_text(&e)));
    }
    for h in &b.hashes {
        let used = state.used_backup_codes.contains(h).then_some(999i64);
        db.execute(
            "INSERT INTO twofactor.backup_codes (user_name, hash, used_at) VALUES ($1, $2, $3)",
            &[&name, &h.as_slice(), &used],
        )
        .expect("insert backup code");
    }
    for (host, at) in &state.grace {
        db.execute(
            "INSERT INTO twofactor.grace (user_name, host, at) VALUES ($1, $2, $3)",
            &[&name, host, &i(*at)],
        )
        .expect("insert grace");
    }
}

/// A pending drift check as stored: (device, step, offset).
type Pending = (String, u64, i64);

/// Reads user `name`'s state back from the tables.
fn read_user(db: &mut postgres::Client, name: &str) -> (State, Vec<Pending>) {
    let row = db
        .query_one(
            "SELECT failures, locked_until, rate_window_start, rate_window_attempts, \
             last_success, delivered_hash, delivered_expires, deliveries \
             FROM twofactor.users WHERE name = $1",
            &[&name],
        )
        .expect("read user");
    let mut s = State {
        failures: u32::try_from(row.get::<_, i32>(0)).expect("failures"),
        locked_until: row.get::<_, Option<i64>>(1).map(u),
        rate_window_start: u(row.get(2)),
        rate_window_attempts: u32::try_from(row.get::<_, i32>(3)).expect("attempts"),
        last_success: row.get::<_, Option<i64>>(4).map(u),
        deliveries: row.get::<_, Vec<i64>>(7).into_iter().map(u).collect(),
        ..State::default()
    };
    if let (Some(hash), Some(expires)) = (
        row.get::<_, Option<Vec<u8>>>(5),
        row.get::<_, Option<i64>>(6),
    ) {
        s.delivered = Some(Delivered {
            hash: hash.try_into().expect("32-byte hash"),
            expires: u(expires),
        });
    }
    let mut pending = Vec::new();
    for d in db
        .query(
            "SELECT label, last_accepted_step, drift_steps, drift_pending_step, \
             drift_pending_offset FROM twofactor.devices WHERE user_name = $1",
            &[&name],
        )
        .expect("read devices")
    {
        let label: String = d.get(0);
        if let Some(step) = d.get::<_, Option<i64>>(1) {
            s.last_accepted_step.insert(label.clone(), u(step));
        }
        s.drift_steps.insert(label.clone(), d.get(2));
        if let Some(step) = d.get::<_, Option<i64>>(3) {
            pending.push((label, u(step), d.get::<_, i64>(4)));
        }
    }
    for b in db
        .query(
            "SELECT hash FROM twofactor.backup_codes WHERE user_name = $1 AND used_at IS NOT NULL",
            &[&name],
        )
        .expect("read backup codes")
    {
        s.used_backup_codes
            .push(b.get::<_, Vec<u8>>(0).try_into().expect("32-byte hash"));
    }
    for g in db
        .query(
            "SELECT host, at FROM twofactor.grace WHERE user_name = $1",
            &[&name],
        )
        .expect("read grace")
    {
        s.grace.insert(g.get(0), u(g.get(1)));
    }
    (s, pending)
}

/// A row of `attempt`/`attempt_at` as an `Outcome` (the step only where
/// the contract gives it to be echoed: drift_suspected).
fn sql_outcome(row: &postgres::Row) -> Outcome {
    let verdict: String = row.get("verdict");
    Outcome {
        step: row
            .get::<_, Option<i64>>("step")
            .filter(|_| verdict == "drift_suspected")
            .map(u),
        device: row.get("device"),
        drift_offset: row.get("drift_offset"),
        off_by: row.get::<_, Option<i64>>("off_by").map(u),
        remaining: row
            .get::<_, Option<i32>>("remaining")
            .map(|r| usize::try_from(r).expect("remaining")),
        until: row.get::<_, Option<i64>>("until").map(u),
        verdict,
    }
}

const ATTEMPT_AT: &str = "SELECT * FROM twofactor.attempt_at($1, $2, $3, $4, $5, $6, $7, $8, $9)";

/// (b) Every case through `twofactor.attempt_at`, time pinned.
#[test]
fn case_table_against_sql() {
    let Some(pg) = cluster("case_table_against_sql") else {
        return;
    };
    let table = table();
    let mut db = pg.client(DB, "postgres");
    let mut failed = Vec::new();
    for (n, case) in table.case.iter().enumerate() {
        let user = format!("case{n}");
        let record = table.record(case);
        let p = table.policy(case);
        db.execute(
            "UPDATE twofactor.policy SET \"window\" = $1, max_failures = $2, lock_seconds = $3, \
             max_attempts = $4, per_seconds = $5, max_drift_steps = $6, grace_seconds = $7, \
             require_sync_standby = false",
            &[
                &(p.window as i32),
                &(p.max_failures as i32),
                &i(p.lock_seconds),
                &(p.max_attempts as i32),
                &i(p.per_seconds),
                &(p.max_drift_steps as i32),
                &i(p.grace_seconds),
            ],
        )
        .expect("set policy");
        let before = apply(&State::default(), &case.before, &record);
        let want_state = apply(&before, &case.after, &record);
        write_user(&mut db, &user, &record, &before, case.drift.as_ref());
        let (code, hash) = case.attempt_parts(&record, &before);
        let row = db
            .query_one(
                ATTEMPT_AT,
                &[
                    &user,
                    &1i64,
                    &code,
                    &hash.map(|h| h.to_vec()),
                    &false,
                    &case.drift.as_ref().map(|d| d.device.clone()),
                    &case.drift.as_ref().map(|d| i(d.step)),
                    &case.rhost,
                    &i(case.now),
                ],
            )
            .unwrap_or_else(|e| panic!("{}: attempt_at: {}", case.name, error_text(&e)));
        let got = sql_outcome(&row);
        if got != case.expected() {
            failed.push(format!(
                "{}: verdict {got:?}, want {:?}",
                case.name,
                case.expected()
            ));
        }
        let (state, pending) = read_user(&mut db, &user);
        if normal(state.clone()) != normal(want_state.clone()) {
            failed.push(format!(
                "{}: state\n  got  {state:?}\n  want {want_state:?}",
                case.name
            ));
        }
        // The drift check to confirm is stored for one answer only.
        let want_pending: Vec<Pending> = match (&got.device, got.step) {
            (Some(device), Some(step)) if got.verdict == "drift_suspected" => {
                vec![(device.clone(), step, got.drift_offset.unwrap_or_default())]
            }
            _ => Vec::new(),
        };
        if pending != want_pending {
            failed.push(format!(
                "{}: pending drift {pending:?}, want {want_pending:?}",
                case.name
            ));
        }
    }
    assert!(failed.is_empty(), "SQL attempt_at:\n{}", failed.join("\n"));
}

/// RFC 6238 Appendix B, every row, all three algorithms (8 digits), through
/// the SQL HOTP (pgcrypto hmac + dynamic truncation); RFC 4226 Appendix D
/// for 6 digits; an unknown algorithm is an error, not a code.
#[test]
fn rfc_vectors_through_sql_hotp() {
    let Some(pg) = cluster("rfc_vectors_through_sql_hotp") else {
        return;
    };
    let mut db = pg.client(DB, "postgres");
    let seeds = [
        ("SHA1", &b"12345678901234567890"[..]),
        ("SHA256", &b"12345678901234567890123456789012"[..]),
        (
            "SHA512",
            &b"1234567890123456789012345678901234567890123456789012345678901234"[..],
        ),
    ];
    let table: [(i64, [&str; 3]); 6] = [
        (59, ["94287082", "46119246", "90693936"]),
        (1_111_111_109, ["07081804", "68084774", "25091201"]),
        (1_111_111_111, ["14050471", "67062674", "99943326"]),
        (1_234_567_890, ["89005924", "91819424", "93441116"]),
        (2_000_000_000, ["69279037", "90698825", "38618901"]),
        (20_000_000_000, ["65353130", "77737706", "47863826"]),
    ];
    for (time, codes) in table {
        for ((algorithm, seed), want) in seeds.iter().zip(codes) {
            let got: String = db
                .query_one(
                    "SELECT twofactor.hotp($1, $2, $3, 8)",
                    &[seed, algorithm, &(time / 30)],
                )
                .expect("hotp")
                .get(0);
            assert_eq!(got, want, "{algorithm} at {time}");
        }
    }
    let rfc4226 = [
        "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583", "399871",
        "520489",
    ];
    for (counter, want) in (0i64..).zip(rfc4226) {
        let got: String = db
            .query_one(
                "SELECT twofactor.hotp($1, 'SHA1', $2, 6)",
                &[&seeds[0].1, &counter],
            )
            .expect("hotp")
            .get(0);
        assert_eq!(got, want, "RFC 4226 counter {counter}");
    }
    let e = db
        .query_one("SELECT twofactor.hotp('\\x00'::bytea, 'MD5', 1, 6)", &[])
        .expect_err("MD5 must be refused");
    assert_eq!(
        e.code().map(|c| c.code()),
        Some("22023"),
        "{}",
        error_text(&e)
    );
}

// ------------------------------------------------------------------ rights

/// Enrolls `user` with secret A (SHA1, 6 digits, 30 s) and one backup hash
/// as the superuser; returns the generation.
fn enroll(db: &mut postgres::Client, user: &str) -> i64 {
    let verdict: String = db
        .query_one(
            "SELECT twofactor.admin_enroll($1, 'phone', $2, 'SHA1', 6, 30, 'new', NULL, 16, $3, \
             64, 1, 1, ARRAY[$4::bytea])",
            &[
                &user,
                &SECRET_A.as_slice(),
                &SALT.as_slice(),
                &[7u8; 32].as_slice(),
            ],
        )
        .unwrap_or_else(|e| panic!("admin_enroll: {}", error_text(&e)))
        .get(0);
    assert_eq!(verdict, "enrolled");
    generation(db, user)
}

fn generation(db: &mut postgres::Client, user: &str) -> i64 {
    db.query_one(
        "SELECT generation FROM twofactor.users WHERE name = $1",
        &[&user],
    )
    .expect("generation")
    .get(0)
}

/// "12345678901234567890": base32 GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ.
const SECRET_A: [u8; 20] = *b"12345678901234567890";
const SECRET_A_B32: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
const SALT: [u8; 16] = [0x5a; 16];

/// The error `sql` meets as `db`'s role, as (SQLSTATE, message).
fn refused(db: &mut postgres::Client, sql: &str) -> (String, String) {
    let Err(e) = db.batch_execute(sql) else {
        panic!("must be refused: {sql}");
    };
    let db_error = e.as_db_error().expect("a server error");
    (
        db_error.code().code().to_string(),
        db_error.message().to_string(),
    )
}

fn assert_denied(db: &mut postgres::Client, sql: &str) {
    let (code, message) = refused(db, sql);
    assert_eq!(code, "42501", "{sql}: {message}");
    assert!(message.contains("permission denied"), "{sql}: {message}");
}

/// A host's role executes the host functions only; an admin's writes seeds
/// but never reads one back; PUBLIC executes nothing of ours.
#[test]
fn roles_get_only_their_functions() {
    let Some(pg) = cluster("roles_get_only_their_functions") else {
        return;
    };
    let mut su = pg.client(DB, "postgres");
    enroll(&mut su, "alice");
    let mut host = login_as(&pg, "host1", "twofactor_host");
    let mut admin = login_as(&pg, "admin1", "twofactor_admin");

    for sql in [
        "SELECT secret FROM twofactor.devices",
        "SELECT * FROM twofactor.users",
        "UPDATE twofactor.users SET failures = 0",
        "UPDATE twofactor.devices SET last_accepted_step = 0",
        "DELETE FROM twofactor.backup_codes",
        "SELECT twofactor.admin_unlock('alice')",
        "SELECT twofactor.admin_enroll('mallory', 'p', '\\x3132333435363738393031323334353637383930', \
         'SHA1', 6, 30, 'force', NULL, 16, '\\x00000000000000000000000000000000', 64, 1, 1, \
         ARRAY['\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea])",
        "SELECT * FROM twofactor.attempt_at('alice', 1, '123456', NULL, false, NULL, NULL, NULL, 0)",
        "SELECT twofactor.hotp('\\x00', 'SHA1', 1, 6)",
        "SELECT * FROM twofactor.admin_devices('alice')",
    ] {
        assert_denied(&mut host, sql);
    }
    let status = host
        .query_one("SELECT * FROM twofactor.fleet_status()", &[])
        .expect("host may read fleet_status");
    assert_eq!(status.get::<_, Option<i32>>("schema_version"), Some(2));
    assert!(!status.get::<_, bool>("host_can_read_seeds"));
    let begin = host
        .query_one("SELECT * FROM twofactor.begin_login('alice', NULL)", &[])
        .expect("host may call begin_login");
    assert!(begin.get::<_, bool>("enrolled"));

    for sql in [
        "SELECT secret FROM twofactor.devices",
        "SELECT * FROM twofactor.devices",
        "UPDATE twofactor.users SET failures = 0",
        "SELECT * FROM twofactor.attempt('alice', 1, '123456', NULL, false, NULL, NULL, NULL)",
        "SELECT * FROM twofactor.begin_login('alice', NULL)",
    ] {
        assert_denied(&mut admin, sql);
    }
    assert!(
        admin
            .query_one("SELECT twofactor.admin_unlock('alice')", &[])
            .expect("admin may unlock")
            .get::<_, bool>(0)
    );
    let devices = admin
        .query("SELECT * FROM twofactor.admin_devices('alice')", &[])
        .expect("admin may list devices");
    assert_eq!(devices.len(), 1);
    for row in devices.iter().chain(
        &admin
            .query("SELECT * FROM twofactor.admin_users()", &[])
            .expect("admin_users"),
    ) {
        for column in row.columns() {
            assert!(
                !column.name().contains("secret")
                    && column.type_() != &postgres::types::Type::BYTEA,
                "an admin function returns {} ({})",
                column.name(),
                column.type_()
            );
        }
    }

    // No function that hosts or admins may run returns a seed: the only
    // bytea any of them returns is begin_login's backup salt.
    let outputs: Vec<(String, String)> = su
        .query(
            "SELECT p.proname::text, a.name FROM pg_proc p, \
             unnest(p.proallargtypes, p.proargmodes, p.proargnames) AS a(type, mode, name) \
             WHERE p.pronamespace = 'twofactor'::regnamespace AND a.mode IN ('o', 't', 'b') \
             AND a.type = 'bytea'::regtype \
             AND (has_function_privilege('twofactor_host', p.oid, 'EXECUTE') \
                  OR has_function_privilege('twofactor_admin', p.oid, 'EXECUTE'))",
            &[],
        )
        .expect("list bytea outputs")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        outputs,
        [("begin_login".to_string(), "backup_salt".to_string())]
    );

    // Every function of ours: owned by twofactor_owner, no EXECUTE for
    // PUBLIC; every one that runs as its owner fixes its search_path.
    let bad: Vec<String> = su
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p \
             WHERE p.pronamespace = 'twofactor'::regnamespace \
             AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.objid = p.oid AND e.deptype = 'e') \
             AND (p.proowner <> 'twofactor_owner'::regrole \
                  OR p.proacl IS NULL \
                  OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) x WHERE x.grantee = 0) \
                  OR NOT EXISTS (SELECT 1 FROM unnest(p.proconfig) c \
                                 WHERE c LIKE 'search_path=pg\\_catalog, %pg\\_temp'))",
            &[],
        )
        .expect("check functions")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        bad.is_empty(),
        "functions with wrong owner, PUBLIC EXECUTE or search_path: {bad:?}"
    );
    let tables: Vec<String> = su
        .query(
            "SELECT c.relname::text FROM pg_class c \
             WHERE c.relnamespace = 'twofactor'::regnamespace AND c.relkind = 'r' \
             AND NOT EXISTS (SELECT 1 FROM pg_depend e WHERE e.objid = c.oid AND e.deptype = 'e') \
             AND (c.relowner <> 'twofactor_owner'::regrole OR c.relacl IS NOT NULL)",
            &[],
        )
        .expect("check tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(
        tables.is_empty(),
        "tables with another owner or any grant: {tables:?}"
    );
}

// ------------------------------------------------------------------ concurrency

/// The database's clock (the one that decides), in Unix seconds.
fn db_now(db: &mut postgres::Client) -> u64 {
    u(db.query_one("SELECT twofactor._clock()", &[])
        .expect("read the database clock")
        .get(0))
}

/// Waits, if needed, until at least 5 s of the current 30 s step remain
/// on the database's clock, so that a code from oathtool now is still the
/// current code when the database decides (the window of 1 would accept it
/// a step later too; this keeps the step the test expects).
fn settle_in_step(db: &mut postgres::Client) -> u64 {
    let now = db_now(db);
    if now % 30 >= 25 {
        thread::sleep(Duration::from_secs(30 - now % 30 + 1));
    }
    db_now(db)
}

/// Runs `sql` with `params` from `n` connections of `role` at once (all
/// connected before any starts); returns each verdict.
fn in_parallel(
    pg: &Cluster,
    role: &str,
    n: usize,
    sql: &'static str,
    code: &str,
    generation: i64,
) -> Vec<String> {
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let mut db = pg.client(DB, role);
            let barrier = Arc::clone(&barrier);
            let code = code.to_string();
            thread::spawn(move || {
                barrier.wait();
                let row = db
                    .query_one(sql, &[&"alice", &generation, &code])
                    .unwrap_or_else(|e| panic!("attempt: {}", error_text(&e)));
                row.get::<_, String>("verdict")
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("attempt thread"))
        .collect()
}

const ATTEMPT: &str =
    "SELECT * FROM twofactor.attempt($1, $2, $3, NULL, false, NULL, NULL, '192.0.2.9')";

fn count(verdicts: &[String], verdict: &str) -> usize {
    verdicts.iter().filter(|v| *v == verdict).count()
}

/// 40 parallel submissions of one right code, each on its own connection
/// as a host: exactly one is accepted, 39 are replays. Then 20 parallel
/// wrong codes with max_failures 3: exactly 3 failures, 17 refused locked.
#[test]
fn parallel_attempts_are_decided_one_at_a_time() {
    let Some(pg) = cluster("parallel_attempts_are_decided_one_at_a_time") else {
        return;
    };
    let mut su = pg.client(DB, "postgres");
    set_policy(
        &mut su,
        r#"{"require_sync_standby": false, "max_attempts": 1000, "max_failures": 1000}"#,
    );
    let generation = enroll(&mut su, "alice");
    login_as(&pg, "host1", "twofactor_host");

    let now = settle_in_step(&mut su);
    let code = oathtool_code(SECRET_A_B32, "SHA1", 6, 30, &format!("@{now}"));
    let verdicts = in_parallel(&pg, "host1", 40, ATTEMPT, &code, generation);
    assert_eq!(count(&verdicts, "allow_totp"), 1, "{verdicts:?}");
    assert_eq!(count(&verdicts, "replayed"), 39, "{verdicts:?}");
    let (failures, step): (i32, i64) = {
        let row = su
            .query_one(
                "SELECT u.failures, d.last_accepted_step FROM twofactor.users u \
                 JOIN twofactor.devices d ON d.user_name = u.name WHERE u.name = 'alice'",
                &[],
            )
            .expect("state");
        (row.get(0), row.get(1))
    };
    // The success came first (a replay needs it), then 39 failures.
    assert_eq!(step, i(now / 30), "the accepted step is the code's");
    assert_eq!(failures, 39, "every replay counts a failure");

    // 8 digits for a 6-digit device: always wrong, whatever the clock.
    su.query_one("SELECT twofactor.admin_unlock('alice')", &[])
        .expect("unlock");
    set_policy(&mut su, r#"{"max_failures": 3}"#);
    let verdicts = in_parallel(&pg, "host1", 20, ATTEMPT, "00000000", generation);
    assert_eq!(count(&verdicts, "wrong_code"), 3, "{verdicts:?}");
    assert_eq!(count(&verdicts, "locked_out"), 17, "{verdicts:?}");
    let failures: i32 = su
        .query_one(
            "SELECT failures FROM twofactor.users WHERE name = 'alice'",
            &[],
        )
        .expect("failures")
        .get(0);
    assert_eq!(failures, 3);
}

// ------------------------------------------------------------------ host functions

const RECORD_DELIVERY_AT: &str = "SELECT * FROM twofactor.record_delivery_at($1, $2, $3, $4)";

fn delivery(
    db: &mut postgres::Client,
    generation: i64,
    hash: &[u8],
    now: i64,
) -> (String, Option<i64>, Option<i64>) {
    let row = db
        .query_one(RECORD_DELIVERY_AT, &[&"alice", &generation, &hash, &now])
        .unwrap_or_else(|e| panic!("record_delivery_at: {}", error_text(&e)));
    (row.get("verdict"), row.get("expires"), row.get("until"))
}

/// `record_delivery`: not enrolled, no target, the generation, the stored
/// hash and expiry (then accepted once by `attempt`), the hourly limit
/// (counted at the time of sending, old sends dropped), and the refusals.
#[test]
fn record_delivery_as_by_message() {
    let Some(pg) = cluster("record_delivery_as_by_message") else {
        return;
    };
    let mut su = pg.client(DB, "postgres");
    set_policy(
        &mut su,
        r#"{"require_sync_standby": false, "delivery_max_per_hour": 3, "delivery_valid_seconds": 300}"#,
    );
    let h = [9u8; 32];
    let t: i64 = 1_907_755_210;
    let row = su
        .query_one(RECORD_DELIVERY_AT, &[&"nobody", &1i64, &h.as_slice(), &t])
        .expect("record_delivery_at");
    assert_eq!(row.get::<_, String>("verdict"), "not_enrolled");

    let old = enroll(&mut su, "alice");
    assert_eq!(delivery(&mut su, old, &h, t).0, "no_target");
    assert!(
        su.query_one(
            "SELECT twofactor.admin_set_delivery('alice', '+15550100')",
            &[]
        )
        .expect("set delivery")
        .get::<_, bool>(0)
    );
    assert_eq!(
        delivery(&mut su, old, &h, t).0,
        "record_changed",
        "the target is part of the enrollment"
    );
    let generation = generation(&mut su, "alice");
    assert_ne!(generation, old);

    let pending = |db: &mut postgres::Client, now: i64| -> bool {
        db.query_one(
            "SELECT delivered_pending FROM twofactor.begin_login_at('alice', NULL, $1)",
            &[&now],
        )
        .unwrap_or_else(|e| panic!("begin_login_at: {}", error_text(&e)))
        .get(0)
    };
    assert!(!pending(&mut su, t), "nothing sent yet");
    assert_eq!(
        delivery(&mut su, generation, &h, t),
        ("stored".into(), Some(t + 300), None)
    );
    assert!(pending(&mut su, t + 299));
    assert!(!pending(&mut su, t + 300), "expired");
    // The delivered code is a hash match (with a TOTP-length answer that
    // is no TOTP code), accepted once.
    let attempt = |db: &mut postgres::Client, now: i64| -> String {
        db.query_one(
            ATTEMPT_AT,
            &[
                &"alice",
                &generation,
                &Some("00000000"),
                &Some(h.to_vec()),
                &false,
                &None::<String>,
                &None::<i64>,
                &None::<String>,
                &now,
            ],
        )
        .unwrap_or_else(|e| panic!("attempt_at: {}", error_text(&e)))
        .get("verdict")
    };
    assert_eq!(attempt(&mut su, t + 1), "allow_delivered");
    assert_eq!(attempt(&mut su, t + 2), "wrong_code", "spent");

    // 3 per hour: sends at t, t+10, t+20 fill it until t+3600.
    assert_eq!(delivery(&mut su, generation, &h, t + 10).0, "stored");
    assert_eq!(delivery(&mut su, generation, &h, t + 20).0, "stored");
    assert_eq!(
        delivery(&mut su, generation, &h, t + 30),
        ("hour_full".into(), None, Some(t + 3600))
    );
    // An hour after the first send, it has left the hour (and is dropped).
    assert_eq!(delivery(&mut su, generation, &h, t + 3600).0, "stored");
    let sends: Vec<i64> = su
        .query_one(
            "SELECT deliveries FROM twofactor.users WHERE name = 'alice'",
            &[],
        )
        .expect("deliveries")
        .get(0);
    assert_eq!(sends, [t + 10, t + 20, t + 3600]);

    su.batch_execute("UPDATE twofactor.users SET locked_until = 1907760000, failures = 5")
        .expect("lock");
    assert_eq!(
        delivery(&mut su, generation, &h, t + 3700),
        ("locked_out".into(), None, Some(1_907_760_000))
    );
    su.batch_execute(
        "UPDATE twofactor.users SET locked_until = NULL, failures = 0, \
         rate_window_start = 1907759000, rate_window_attempts = 10",
    )
    .expect("rate limit");
    assert_eq!(
        delivery(&mut su, generation, &h, t + 3800),
        ("rate_limited".into(), None, Some(1_907_759_060))
    );
}

fn enroll_first(
    db: &mut postgres::Client,
    user: &str,
    algorithm: &str,
    code: &str,
    now: i64,
) -> Result<String, postgres::Error> {
    db.query_one(
        "SELECT twofactor.enroll_first_at($1, 'default', $2, $3, 6, 30, $4, 16, $5, 64, 1, 1, \
         $6, $7)",
        &[
            &user,
            &SECRET_A.as_slice(),
            &algorithm,
            &code,
            &SALT.as_slice(),
            &vec![vec![1u8; 32], vec![2u8; 32]],
            &now,
        ],
    )
    .map(|row| row.get(0))
}

/// `enroll_first`: only when the policy allows it, only with a right code
/// at the database's time (whose step is then used), only once.
#[test]
fn enroll_first_confirms_with_a_code() {
    let Some(pg) = cluster("enroll_first_confirms_with_a_code") else {
        return;
    };
    let mut su = pg.client(DB, "postgres");
    set_policy(
        &mut su,
        r#"{"require_sync_standby": false, "backup_codes": 2}"#,
    );
    let t: i64 = 1_907_755_210;
    let code = oathtool_code(SECRET_A_B32, "SHA1", 6, 30, &format!("@{t}"));
    assert_eq!(code, "594151", "the table's code at S");
    assert_eq!(
        enroll_first(&mut su, "bob", "SHA1", &code, t).expect("enroll"),
        "not_allowed"
    );
    set_policy(&mut su, r#"{"enroll_at_login": true}"#);
    assert_eq!(
        enroll_first(&mut su, "bob", "SHA1", "000000", t).expect("enroll"),
        "wrong_code"
    );
    assert_eq!(
        enroll_first(&mut su, "bob", "SHA1", &code, t + 3600).expect("enroll"),
        "wrong_code",
        "the code is checked at the database's time"
    );
    let users: i64 = su
        .query_one("SELECT count(*) FROM twofactor.users", &[])
        .expect("count")
        .get(0);
    assert_eq!(users, 0, "nothing stored for a wrong code");
    assert_eq!(
        enroll_first(&mut su, "bob", "SHA1", &code, t).expect("enroll"),
        "enrolled"
    );
    assert_eq!(
        enroll_first(&mut su, "bob", "SHA1", &code, t).expect("enroll"),
        "exists"
    );
    let generation = generation(&mut su, "bob");
    let verdict: String = su
        .query_one(
            ATTEMPT_AT,
            &[
                &"bob",
                &generation,
                &Some(code.as_str()),
                &None::<Vec<u8>>,
                &false,
                &None::<String>,
                &None::<i64>,
                &None::<String>,
                &(t + 5),
            ],
        )
        .expect("attempt_at")
        .get("verdict");
    assert_eq!(verdict, "replayed", "the enrolling code's step is used");
    let backup: i64 = su
        .query_one(
            "SELECT count(*) FROM twofactor.backup_codes WHERE user_name = 'bob'",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(backup, 2);

    let e = enroll_first(&mut su, "carol", "MD5", &code, t).expect_err("MD5");
    assert_eq!(
        e.code().map(|c| c.code()),
        Some("22023"),
        "{}",
        error_text(&e)
    );
    let e = enroll_first(&mut su, "carol", "SHA256", &code, t).expect_err("not the policy's");
    assert_eq!(
        e.code().map(|c| c.code()),
        Some("22023"),
        "{}",
        error_text(&e)
    );
}

/// The drift check lives in the database for one answer: a confirmation
/// must echo the step it was given; `retry_with_hash` writes nothing;
/// `begin_login` refuses cheaply and sees grace.
#[test]
fn drift_echo_retry_with_hash_and_begin_login() {
    let Some(pg) = cluster("drift_echo_retry_with_hash_and_begin_login") else {
        return;
    };
    let mut su = pg.client(DB, "postgres");
    set_policy(
        &mut su,
        r#"{"require_sync_standby": false, "grace_seconds": 600}"#,
    );
    let generation = enroll(&mut su, "alice");
    let t: i64 = 1_907_755_210;
    let call = |db: &mut postgres::Client,
                code: Option<&str>,
                hash: Option<Vec<u8>>,
                deferred: bool,
                drift: Option<(&str, i64)>,
                now: i64| {
        let row = db
            .query_one(
                ATTEMPT_AT,
                &[
                    &"alice",
                    &generation,
                    &code,
                    &hash,
                    &deferred,
                    &drift.map(|d| d.0.to_string()),
                    &drift.map(|d| d.1),
                    &Some("192.0.2.1"),
                    &now,
                ],
            )
            .unwrap_or_else(|e| panic!("attempt_at: {}", error_text(&e)));
        sql_outcome(&row)
    };
    // S+5 (666449) suspected; echoing another step does not confirm S+6.
    let first = call(&mut su, Some("666449"), None, false, None, t);
    assert_eq!(
        (first.verdict.as_str(), first.step),
        ("drift_suspected", Some(63_591_845))
    );
    let wrong_echo = call(
        &mut su,
        Some("325957"),
        None,
        false,
        Some(("phone", 63_591_844)),
        t + 1,
    );
    assert_eq!(wrong_echo.verdict, "drift_not_confirmed");
    // Suspected again at S+7 (585640), confirmed by S+8 (838057).
    assert_eq!(
        call(&mut su, Some("585640"), None, false, None, t + 2).verdict,
        "drift_suspected"
    );
    let confirmed = call(
        &mut su,
        Some("838057"),
        None,
        false,
        Some(("phone", 63_591_847)),
        t + 3,
    );
    assert_eq!(
        (confirmed.verdict.as_str(), confirmed.drift_offset),
        ("allow_drift", Some(7))
    );
    // The check was for one answer: echoing it again confirms nothing.
    let again = call(
        &mut su,
        Some("121552"),
        None,
        false,
        Some(("phone", 63_591_848)),
        t + 4,
    );
    assert_eq!(again.verdict, "drift_not_confirmed");

    let begin = su
        .query_one(
            "SELECT * FROM twofactor.begin_login_at('alice', '192.0.2.1', $1)",
            &[&(t + 5)],
        )
        .expect("begin_login_at");
    assert!(
        begin.get::<_, bool>("grace"),
        "the success opened grace for that host"
    );
    assert_eq!(begin.get::<_, Option<String>>("refusal"), None);
    assert_eq!(begin.get::<_, i64>("now"), t + 5);

    // Deferred hash while nothing refuses: hash and ask again, nothing written.
    let before = read_user(&mut su, "alice");
    let retry = call(&mut su, Some("1234567890123456"), None, true, None, t + 6);
    assert_eq!(retry.verdict, "retry_with_hash");
    assert_eq!(
        read_user(&mut su, "alice"),
        before,
        "retry_with_hash writes nothing"
    );
    // Deferred hash while locked: decided (and counted) as locked.
    su.batch_execute("UPDATE twofactor.users SET locked_until = 1907760000")
        .expect("lock");
    let locked = call(&mut su, None, None, true, None, t + 7);
    assert_eq!(
        (locked.verdict.as_str(), locked.until),
        ("locked_out", Some(1_907_760_000))
    );
    let begin = su
        .query_one(
            "SELECT * FROM twofactor.begin_login_at('alice', '192.0.2.1', $1)",
            &[&(t + 8)],
        )
        .expect("begin_login_at");
    assert_eq!(
        begin.get::<_, Option<String>>("refusal").as_deref(),
        Some("locked_out")
    );
    assert!(!begin.get::<_, bool>("grace"), "no grace while locked");

    let stale = su
        .query_one(
            ATTEMPT_AT,
            &[
                &"alice",
                &(generation - 1),
                &Some("594151"),
                &None::<Vec<u8>>,
                &false,
                &None::<String>,
                &None::<i64>,
                &None::<String>,
                &t,
            ],
        )
        .expect("attempt_at");
    assert_eq!(stale.get::<_, String>("verdict"), "record_changed");
}

/// With `require_sync_standby` (the default) and no synchronous standby,
/// every write function refuses with SQLSTATE TF001.
#[test]
fn require_sync_standby_refuses_without_a_standby() {
    let Some(pg) = cluster("require_sync_standby_refuses_without_a_standby") else {
        return;
    };
    let mut su = pg.client(DB, "postgres");
    enroll(&mut su, "alice");
    let mut host = login_as(&pg, "host1", "twofactor_host");
    let mut admin = login_as(&pg, "admin1", "twofactor_admin");
    let status = admin
        .query_one("SELECT * FROM twofactor.fleet_status()", &[])
        .expect("fleet_status");
    assert_eq!(status.get::<_, String>("synchronous_standby_names"), "");
    assert_eq!(status.get::<_, i32>("sync_standbys"), 0);
    for sql in [
        "SELECT * FROM twofactor.attempt('alice', 1, '123456', NULL, false, NULL, NULL, NULL)",
        "SELECT * FROM twofactor.record_delivery('alice', 1, '\\x0000000000000000000000000000000000000000000000000000000000000000')",
        "SELECT twofactor.enroll_first('bob', 'default', '\\x3132333435363738393031323334353637383930', \
         'SHA1', 6, 30, '123456', 16, '\\x00000000000000000000000000000000', 64, 1, 1, \
         ARRAY['\\x0000000000000000000000000000000000000000000000000000000000000000'::bytea])",
    ] {
        let (code, message) = refused(&mut host, sql);
        assert_eq!(code, "TF001", "{sql}: {message}");
        assert_eq!(message, "writes are not protected by a synchronous standby");
    }
    // A standby named but commits not waiting: still refused.
    su.batch_execute("ALTER SYSTEM SET synchronous_standby_names = 's1'")
        .expect("name a standby");
    su.batch_execute("SELECT pg_reload_conf()").expect("reload");
    let mut host = pg.client(DB, "host1");
    let (code, _) = refused(
        &mut host,
        "SET synchronous_commit = local; \
         SELECT * FROM twofactor.attempt('alice', 1, '123456', NULL, false, NULL, NULL, NULL)",
    );
    assert_eq!(code, "TF001");
}

fn text(db: &mut postgres::Client, sql: &str) -> String {
    db.query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {}", error_text(&e)))
        .get(0)
}

fn yes(db: &mut postgres::Client, sql: &str) -> bool {
    db.query_one(sql, &[])
        .unwrap_or_else(|e| panic!("{sql}: {}", error_text(&e)))
        .get(0)
}

/// The admin functions, as an admin's role: enrollment modes and the
/// generation, listing (failures and lock as `failures_at`/`lock_at`),
/// devices, backup sets, unlock, import (only the safe way), policy keys.
#[test]
fn admin_functions_change_enrollments_the_safe_way() {
    let Some(pg) = cluster("admin_functions_change_enrollments_the_safe_way") else {
        return;
    };
    let mut su = pg.client(DB, "postgres");
    let mut admin = login_as(&pg, "admin1", "twofactor_admin");
    let enroll_sql = |user: &str, label: &str, mode: &str| {
        format!(
            "SELECT twofactor.admin_enroll('{user}', '{label}', '\\x3132333435363738393031323334353637383930', \
             'SHA1', 6, 30, '{mode}', NULL, 16, '\\x5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a', 64, 1, 1, \
             ARRAY['\\x{}'::bytea, '\\x{}'::bytea])",
            "01".repeat(32),
            "02".repeat(32)
        )
    };
    assert_eq!(
        text(&mut admin, &enroll_sql("alice", "phone", "add")),
        "not_enrolled"
    );
    assert_eq!(
        text(&mut admin, &enroll_sql("alice", "phone", "new")),
        "enrolled"
    );
    let g1 = generation(&mut su, "alice");
    assert_eq!(
        text(&mut admin, &enroll_sql("alice", "phone", "new")),
        "exists"
    );
    assert_eq!(
        text(&mut admin, &enroll_sql("alice", "phone", "add")),
        "label_exists"
    );
    assert_eq!(
        text(&mut admin, &enroll_sql("alice", "tablet", "add")),
        "enrolled"
    );
    let g2 = generation(&mut su, "alice");
    assert!(g2 > g1, "adding a device bumps the generation");

    // Listing at the database's time: an expired lock shows no failures.
    su.batch_execute("UPDATE twofactor.users SET failures = 5, locked_until = 1000")
        .expect("an expired lock");
    let row = admin
        .query_one("SELECT * FROM twofactor.admin_users()", &[])
        .expect("admin_users");
    assert_eq!(row.get::<_, Vec<String>>("devices"), ["phone", "tablet"]);
    assert_eq!(row.get::<_, i32>("failures"), 0);
    assert_eq!(row.get::<_, Option<i64>>("locked_until"), None);
    assert_eq!(row.get::<_, i32>("backup_left"), 2);
    su.batch_execute("UPDATE twofactor.users SET locked_until = 99999999999")
        .expect("a running lock");
    let row = admin
        .query_one("SELECT * FROM twofactor.admin_users()", &[])
        .expect("admin_users");
    assert_eq!(row.get::<_, i32>("failures"), 5);
    assert_eq!(
        row.get::<_, Option<i64>>("locked_until"),
        Some(99_999_999_999)
    );
    assert!(yes(&mut admin, "SELECT twofactor.admin_unlock('alice')"));
    assert!(!yes(&mut admin, "SELECT twofactor.admin_unlock('nobody')"));
    let (failures, locked): (i32, Option<i64>) = {
        let r = su
            .query_one("SELECT failures, locked_until FROM twofactor.users", &[])
            .expect("state");
        (r.get(0), r.get(1))
    };
    assert_eq!((failures, locked), (0, None));
    assert_eq!(
        generation(&mut su, "alice"),
        g2,
        "unlocking changes no enrollment"
    );

    // Import: steps only forward, used codes stay used, failures never down.
    su.batch_execute(
        "UPDATE twofactor.devices SET last_accepted_step = 100 WHERE label = 'phone'; \
         UPDATE twofactor.users SET failures = 2",
    )
    .expect("state");
    assert!(yes(
        &mut admin,
        &format!(
            "SELECT twofactor.admin_import_state('alice', 1, NULL, 500, ARRAY['\\x{}'::bytea], \
             ARRAY['phone', 'tablet'], ARRAY[50, 70]::bigint[], ARRAY[0, 3]::bigint[])",
            "01".repeat(32)
        )
    ));
    let steps: Vec<(String, Option<i64>, i64)> = su
        .query(
            "SELECT label, last_accepted_step, drift_steps FROM twofactor.devices ORDER BY label",
            &[],
        )
        .expect("devices")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        steps,
        [
            ("phone".into(), Some(100), 0),
            ("tablet".into(), Some(70), 3)
        ]
    );
    let r = su
        .query_one(
            "SELECT failures, last_success, \
             (SELECT count(*) FROM twofactor.backup_codes WHERE used_at IS NOT NULL) \
             FROM twofactor.users",
            &[],
        )
        .expect("state");
    assert_eq!(
        (
            r.get::<_, i32>(0),
            r.get::<_, Option<i64>>(1),
            r.get::<_, i64>(2)
        ),
        (2, Some(500), 1)
    );
    let (code, _) = refused(
        &mut admin,
        "SELECT twofactor.admin_import_state('alice', 0, NULL, NULL, NULL, ARRAY['nope'], \
         ARRAY[1]::bigint[], ARRAY[0]::bigint[])",
    );
    assert_eq!(code, "22023", "an unknown device is refused");

    // A new backup set: the old used codes go with the old set.
    assert!(yes(
        &mut admin,
        &format!(
            "SELECT twofactor.admin_set_backup('alice', 16, '\\x{}', 64, 1, 1, ARRAY['\\x{}'::bytea])",
            "00".repeat(16),
            "03".repeat(32)
        )
    ));
    let g3 = generation(&mut su, "alice");
    assert!(g3 > g2);
    let row = admin
        .query_one("SELECT * FROM twofactor.admin_users()", &[])
        .expect("admin_users");
    assert_eq!(row.get::<_, i32>("backup_left"), 1);

    // Devices: never the last one.
    assert_eq!(
        text(
            &mut admin,
            "SELECT twofactor.admin_remove_device('alice', 'nope')"
        ),
        "no_such_device"
    );
    assert_eq!(
        text(
            &mut admin,
            "SELECT twofactor.admin_remove_device('alice', 'phone')"
        ),
        "removed"
    );
    assert_eq!(
        text(
            &mut admin,
            "SELECT twofactor.admin_remove_device('alice', 'tablet')"
        ),
        "last_device"
    );
    assert_eq!(
        text(
            &mut admin,
            "SELECT twofactor.admin_remove_device('bob', 'tablet')"
        ),
        "not_enrolled"
    );

    // force: a fresh enrollment, all state gone, a new generation.
    su.batch_execute("UPDATE twofactor.users SET failures = 3")
        .expect("state");
    assert_eq!(
        text(&mut admin, &enroll_sql("alice", "phone", "force")),
        "enrolled"
    );
    let row = admin
        .query_one("SELECT * FROM twofactor.admin_users()", &[])
        .expect("admin_users");
    assert_eq!(row.get::<_, Vec<String>>("devices"), ["phone"]);
    assert_eq!(row.get::<_, i32>("failures"), 0);
    assert!(generation(&mut su, "alice") > g3);

    // Policy: known keys only, in range, never null.
    admin
        .batch_execute(
            r#"SELECT twofactor.admin_set_policy('{"max_failures": 3, "enroll_at_login": true}')"#,
        )
        .expect("set policy");
    let (max_failures, enroll_at_login): (i32, bool) = {
        let r = su
            .query_one(
                "SELECT max_failures, enroll_at_login FROM twofactor.policy",
                &[],
            )
            .expect("policy");
        (r.get(0), r.get(1))
    };
    assert_eq!((max_failures, enroll_at_login), (3, true));
    for (json, want) in [
        (r#"{"max_falures": 3}"#, "22023"),
        (r#"{"window": null}"#, "22023"),
        (r#"{"window": 11}"#, "23514"),
        (r#"{"totp_algorithm": "MD5"}"#, "23514"),
        ("[]", "22023"),
    ] {
        let (code, message) = refused(
            &mut admin,
            &format!("SELECT twofactor.admin_set_policy('{json}')"),
        );
        assert_eq!(code, want, "{json}: {message}");
    }

    assert!(yes(&mut admin, "SELECT twofactor.admin_disable('alice')"));
    assert!(!yes(&mut admin, "SELECT twofactor.admin_disable('alice')"));
    let left: i64 = su
        .query_one(
            "SELECT (SELECT count(*) FROM twofactor.devices) + \
             (SELECT count(*) FROM twofactor.backup_codes) + (SELECT count(*) FROM twofactor.grace)",
            &[],
        )
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "disable removes every row of the user");
}

// ---------------------------------------------------------------- upgrade

/// A database made at schema version 1 takes sql/002 as `fleet init`
/// applies it (one transaction): the login functions become PL/pgSQL with
/// their owner, rights, SECURITY DEFINER and search_path kept, and an
/// enrolled user logs in through the host role before and after, the
/// replay refused across the upgrade.
#[test]
fn version_1_upgrades_to_version_2_keeping_users_and_rights() {
    if !root_or_skip(
        "version_1_upgrades_to_version_2_keeping_users_and_rights",
        "starts its own PostgreSQL as the postgres user",
        &[Needs::Program("oathtool", "oathtool")],
    ) {
        return;
    }
    let files = common::pg::sql_files();
    let name = |f: &std::path::PathBuf| f.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(
        files.iter().map(name).collect::<Vec<_>>(),
        ["001_init.sql", "002_login_calls_plpgsql.sql"]
    );
    let apply = |db: &mut postgres::Client, file: &std::path::PathBuf| {
        let mut tx = db.transaction().expect("begin");
        tx.batch_execute(&std::fs::read_to_string(file).expect("read sql"))
            .unwrap_or_else(|e| panic!("apply {}: {}", file.display(), error_text(&e)));
        tx.commit().expect("commit");
    };
    let pg = Cluster::start();
    pg.client("postgres", "postgres")
        .batch_execute("CREATE DATABASE v1")
        .expect("create database");
    let mut su = pg.client("v1", "postgres");
    apply(&mut su, &files[0]);
    let generation = enroll(&mut su, "alice");
    let bob = enroll(&mut su, "bob");
    su.batch_execute("CREATE ROLE host1 LOGIN IN ROLE twofactor_host")
        .expect("host role");
    pg.set_password("host1", "pw-host1");
    set_policy(&mut su, r#"{"require_sync_standby": false}"#);

    const LOGIN_FUNCTIONS: [&str; 7] = [
        "_clock",
        "_valid_host",
        "_store",
        "begin_login",
        "attempt",
        "record_delivery",
        "enroll_first",
    ];
    let described = |db: &mut postgres::Client| -> Vec<(String, String, bool, String, String)> {
        db.query(
            "SELECT p.proname::text, l.lanname::text, p.prosecdef, pg_get_userbyid(p.proowner)::text, \
                    array_to_string(p.proconfig, ',') \
               FROM pg_proc p JOIN pg_language l ON l.oid = p.prolang \
              WHERE p.pronamespace = 'twofactor'::regnamespace AND p.proname = ANY($1) \
              ORDER BY 1",
            &[&LOGIN_FUNCTIONS.as_slice()],
        )
        .expect("pg_proc")
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect()
    };
    let version = |db: &mut postgres::Client| -> i32 {
        db.query_one("SELECT max(version) FROM twofactor.schema_version", &[])
            .expect("schema_version")
            .get(0)
    };
    assert_eq!(version(&mut su), 1);
    let before = described(&mut su);
    assert_eq!(before.len(), LOGIN_FUNCTIONS.len(), "{before:?}");
    assert!(before.iter().all(|f| f.1 == "sql"), "{before:?}");

    let attempt = |host: &mut postgres::Client, code: &str| -> String {
        host.query_one(
            "SELECT verdict FROM twofactor.attempt('alice', $1, $2, NULL, false, NULL, NULL, NULL)",
            &[&generation, &code],
        )
        .unwrap_or_else(|e| panic!("attempt: {}", error_text(&e)))
        .get(0)
    };
    let mut host = pg.client("v1", "host1");
    let now = settle_in_step(&mut su);
    let code = oathtool_code(SECRET_A_B32, "SHA1", 6, 30, &format!("@{now}"));
    assert_eq!(attempt(&mut host, &code), "allow_totp");
    drop(host);

    apply(&mut su, &files[1]);
    assert_eq!(version(&mut su), 2);
    let after = described(&mut su);
    assert_eq!(after.len(), before.len());
    for (b, a) in before.iter().zip(&after) {
        assert_eq!(a.1, "plpgsql", "{a:?}");
        assert_eq!((&b.0, b.2, &b.3, &b.4), (&a.0, a.2, &a.3, &a.4), "kept");
    }

    let mut host = pg.client("v1", "host1");
    let begin = host
        .query_one(
            "SELECT enrolled, generation FROM twofactor.begin_login('alice', NULL)",
            &[],
        )
        .unwrap_or_else(|e| panic!("begin_login: {}", error_text(&e)));
    assert!(begin.get::<_, bool>(0));
    assert_eq!(begin.get::<_, i64>(1), generation);
    assert_eq!(
        attempt(&mut host, &code),
        "replayed",
        "the step used before the upgrade"
    );
    for sql in [
        "SELECT twofactor._clock()",
        "SELECT twofactor._valid_host('h')",
        "SELECT twofactor._store(u) FROM twofactor.users u",
    ] {
        assert_denied(&mut host, sql);
    }
    // bob, enrolled before the upgrade, logs in after it with the same step.
    let verdict: String = host
        .query_one(
            "SELECT verdict FROM twofactor.attempt('bob', $1, $2, NULL, false, NULL, NULL, NULL)",
            &[&bob, &code],
        )
        .unwrap_or_else(|e| panic!("attempt: {}", error_text(&e)))
        .get(0);
    assert_eq!(verdict, "allow_totp");
    let rows = su
        .query(
            "SELECT u.name::text, u.failures, d.last_accepted_step FROM twofactor.users u \
               JOIN twofactor.devices d ON d.user_name = u.name ORDER BY 1",
            &[],
        )
        .expect("state");
    let state: Vec<(String, i32, Option<i64>)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let step = i64::try_from(now / 30).unwrap();
    assert_eq!(
        state,
        [
            ("alice".to_string(), 1, Some(step)),
            ("bob".to_string(), 0, Some(step))
        ],
        "the replay counted as alice's failure"
    );
}
