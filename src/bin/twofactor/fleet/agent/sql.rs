//! The agent's database: one call of a host function per request, as one
//! statement in autocommit (the function's own transaction; never an
//! explicit BEGIN), typed parameters, and the row mapped to the reply
//! (docs/fleet.md, "Host functions").
//!
//! `postgres`'s `query` returns only after ReadyForQuery, that is after the
//! commit (and its wait for the synchronous standby) has ended; a WARNING
//! that the wait was cancelled by someone arrives before it, and turns the
//! answer into `NotSynchronous`: that commit may not survive a failover.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::Duration;

use pam_twofactor::config::Fleet;
use pam_twofactor::fleet::protocol::{
    AttemptReply, AttemptVerdict, BackupKdf, BeginReply, DeliveryReply, DeliveryVerdict,
    EnrollVerdict, Refusal, Reply,
};
use postgres::error::SqlState;
use postgres::types::FromSql;
use postgres::{Client, Row, Statement};

use super::call::{Attempt, Call, EnrollFirst};
use super::dispatch::{Backend, BackendError, Connector};
use crate::fleet::db;

/// The SQLSTATE the host functions raise when the fleet requires a
/// synchronous standby and writes are not protected by one (sql/).
pub const SQLSTATE_NOT_SYNCHRONOUS: &str = "TF001";

/// The fix for a host role without the rights it needs.
const FIX_RIGHTS: &str = "is this host's role added (twofactor fleet add-host NAME) and the schema initialised (twofactor fleet init)?";
/// The fix for a missing or older schema.
const FIX_SCHEMA: &str =
    "the fleet schema is missing or older than this agent: run twofactor fleet init";

const BEGIN: &str = "SELECT * FROM twofactor.begin_login($1::text, $2::text)";
const ATTEMPT: &str = "SELECT * FROM twofactor.attempt($1::text, $2::bigint, $3::text, $4::bytea, $5::boolean, $6::text, $7::bigint, $8::text)";
const RECORD_DELIVERY: &str =
    "SELECT * FROM twofactor.record_delivery($1::text, $2::bigint, $3::bytea)";
const ENROLL_FIRST: &str = "SELECT * FROM twofactor.enroll_first($1::text, $2::text, $3::bytea, $4::text, $5::integer, $6::integer, $7::text, $8::integer, $9::bytea, $10::integer, $11::integer, $12::integer, $13::bytea[])";

/// Connects with `[fleet]`.
pub struct PgConnector {
    pub fleet: Fleet,
    /// Servers (by their place in `[fleet] database`) with an attempt that
    /// did not end within its time and still runs: skipped until it ends.
    pub hung: Arc<Mutex<HashSet<usize>>>,
}

impl PgConnector {
    pub fn new(fleet: Fleet) -> PgConnector {
        PgConnector {
            fleet,
            hung: Arc::default(),
        }
    }
}

impl Connector for PgConnector {
    type Backend = PgBackend;

    /// Tries the servers of `[fleet] database` in order, each for at most
    /// its share of `timeout` in all (TCP, TLS, start-up,
    /// `target_session_attrs`), so that the next one is reached within the
    /// same deadline. The client's own `connect_timeout` covers only the
    /// TCP connect: a server that accepts and never answers (the old
    /// primary hung after a failover) would otherwise hold every connect,
    /// and the promoted one would never be tried. An attempt past its time
    /// is left to end on its own thread, and its server is skipped while
    /// it runs (so hung attempts do not pile up: at most the workers that
    /// tried it at once); a client it makes late is closed.
    fn connect(&self, timeout: Duration) -> Result<PgBackend, BackendError> {
        let down = |e: db::DbError| BackendError::Down(e.to_string());
        let config = db::config(&self.fleet, timeout).map_err(down)?;
        let servers = db::per_server(&config);
        if servers.len() == 1 {
            return connect_one(&self.fleet, servers.into_iter().next().unwrap_or(config))
                .map_err(down);
        }
        let share = timeout / u32::try_from(servers.len()).unwrap_or(u32::MAX);
        let mut errors = Vec::new();
        for (i, mut server) in servers.into_iter().enumerate() {
            server.connect_timeout(share);
            if self
                .hung
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&i)
            {
                errors.push(format!(
                    "server {} still has not answered an earlier attempt",
                    i + 1
                ));
                continue;
            }
            let (sender, receiver) = mpsc::sync_channel(1);
            let fleet = self.fleet.clone();
            let hung = Arc::clone(&self.hung);
            let spawned = std::thread::Builder::new()
                .name("agent-connect".into())
                .spawn(move || {
                    let result = connect_one(&fleet, server);
                    // Late (the receiver gave up): the client is dropped,
                    // and the server may be tried again.
                    let _ = sender.send(result);
                    hung.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&i);
                });
            if let Err(e) = spawned {
                return Err(BackendError::Down(format!(
                    "cannot start a connecting thread: {e}"
                )));
            }
            match receiver.recv_timeout(share) {
                Ok(Ok(backend)) => return Ok(backend),
                Ok(Err(e)) => errors.push(e.to_string()),
                Err(_) => {
                    self.hung
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(i);
                    // The thread may have ended between the timeout and
                    // the insert: then nobody would clear it.
                    if let Ok(result) = receiver.try_recv() {
                        self.hung
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .remove(&i);
                        match result {
                            Ok(backend) => return Ok(backend),
                            Err(e) => errors.push(e.to_string()),
                        }
                    } else {
                        errors.push(format!(
                            "server {} did not complete a connection within {:.1} s",
                            i + 1,
                            share.as_secs_f64()
                        ));
                    }
                }
            }
        }
        Err(BackendError::Down(errors.join("; ")))
    }
}

/// One server's connection, with the notice callback that tells a
/// cancelled wait for the synchronous standby.
fn connect_one(fleet: &Fleet, mut config: postgres::Config) -> Result<PgBackend, db::DbError> {
    let unconfirmed = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&unconfirmed);
    config.notice_callback(move |notice| {
        if is_cancelled_sync_wait(notice.code(), notice.severity()) {
            flag.store(true, Ordering::SeqCst);
        }
    });
    let client = db::connect_with(fleet, &config)?;
    Ok(PgBackend {
        client,
        statements: Default::default(),
        unconfirmed,
    })
}

/// PostgreSQL's "canceling wait for synchronous replication due to user
/// request … has already committed locally, but might not have been
/// replicated to the standby" is a WARNING with the generic SQLSTATE 01000
/// (syncrep.c gives it no code; its text depends on lc_messages). The host
/// functions raise no warnings, so a WARNING 01000 (or 57014, should a
/// later release give it that code) during a call marks its commit
/// unconfirmed: the answer is not used.
fn is_cancelled_sync_wait(code: &SqlState, severity: &str) -> bool {
    severity == "WARNING" && (*code == SqlState::WARNING || *code == SqlState::QUERY_CANCELED)
}

/// One connection and its prepared statements.
pub struct PgBackend {
    client: Client,
    statements: [Option<Statement>; 4],
    /// Set by the notice callback: a commit of this call was not confirmed.
    unconfirmed: Arc<AtomicBool>,
}

impl PgBackend {
    /// The statement of `call`, prepared once per connection.
    fn statement(&mut self, call: &Call) -> Result<Statement, postgres::Error> {
        let (index, text) = match call {
            Call::Begin { .. } => (0, BEGIN),
            Call::Attempt(_) => (1, ATTEMPT),
            Call::RecordDelivery { .. } => (2, RECORD_DELIVERY),
            Call::EnrollFirst(_) => (3, ENROLL_FIRST),
        };
        if let Some(Some(statement)) = self.statements.get(index) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(text)?;
        if let Some(slot) = self.statements.get_mut(index) {
            *slot = Some(statement.clone());
        }
        Ok(statement)
    }

    fn query(&mut self, call: &Call) -> Result<Vec<Row>, postgres::Error> {
        let statement = self.statement(call)?;
        match call {
            Call::Begin { user, rhost } => self.client.query(&statement, &[user, rhost]),
            Call::Attempt(Attempt {
                user,
                generation,
                code,
                hash,
                hash_deferred,
                drift_device,
                drift_step,
                rhost,
            }) => {
                let code = code.as_ref().map(|c| c.as_str());
                self.client.query(
                    &statement,
                    &[
                        user,
                        generation,
                        &code,
                        hash,
                        hash_deferred,
                        drift_device,
                        drift_step,
                        rhost,
                    ],
                )
            }
            Call::RecordDelivery {
                user,
                generation,
                hash,
            } => self.client.query(&statement, &[user, generation, hash]),
            Call::EnrollFirst(EnrollFirst {
                user,
                label,
                secret,
                algorithm,
                digits,
                period,
                code,
                backup_digits,
                backup_salt,
                m_cost,
                t_cost,
                p_cost,
                backup_hashes,
            }) => {
                let secret = secret.as_bytes();
                let code = code.as_str();
                self.client.query(
                    &statement,
                    &[
                        user,
                        label,
                        &secret,
                        algorithm,
                        digits,
                        period,
                        &code,
                        backup_digits,
                        backup_salt,
                        m_cost,
                        t_cost,
                        p_cost,
                        backup_hashes,
                    ],
                )
            }
        }
    }
}

impl Backend for PgBackend {
    fn call(&mut self, call: &Call) -> Result<Reply, BackendError> {
        self.unconfirmed.store(false, Ordering::SeqCst);
        let rows = self.query(call).map_err(|e| classify(&e))?;
        if self.unconfirmed.load(Ordering::SeqCst) {
            return Err(BackendError::NotSynchronous(
                "the wait for the synchronous standby was cancelled on the server: the commit may not survive a failover, so the answer is not used".into(),
            ));
        }
        let [row] = rows.as_slice() else {
            return Err(BackendError::Refused(format!(
                "twofactor.{} returned {} rows, not one: {FIX_SCHEMA}",
                call.op(),
                rows.len()
            )));
        };
        to_reply(call, row)
    }

    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }

    fn is_alive(&mut self, timeout: Duration) -> bool {
        self.client.is_valid(timeout).is_ok()
    }
}

/// Why a call failed, from the error: the fix where there is one. A data
/// exception's message may quote an argument (a code), so only its
/// SQLSTATE is kept.
pub fn classify(e: &postgres::Error) -> BackendError {
    let Some(db) = e.as_db_error() else {
        // No answer from the server: the connection broke, or never was.
        return BackendError::Down(format!("the connection to the fleet database failed: {e}"));
    };
    let code = db.code();
    let state = code.code();
    if state == SQLSTATE_NOT_SYNCHRONOUS {
        return BackendError::NotSynchronous(format!(
            "writes are not protected by a synchronous standby: {}",
            db.message()
        ));
    }
    if *code == SqlState::INSUFFICIENT_PRIVILEGE {
        return BackendError::Refused(format!("permission denied: {FIX_RIGHTS}"));
    }
    if [
        SqlState::UNDEFINED_FUNCTION,
        SqlState::INVALID_SCHEMA_NAME,
        SqlState::UNDEFINED_TABLE,
        SqlState::UNDEFINED_COLUMN,
    ]
    .contains(code)
    {
        return BackendError::Refused(format!("{FIX_SCHEMA} ({}: {})", state, db.message()));
    }
    if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        return BackendError::Down(
            "connected to a read-only server (a standby?): list every server in [fleet] database with target_session_attrs=read-write".into(),
        );
    }
    if state.starts_with("08") || state.starts_with("57P") || state.starts_with("53") {
        return BackendError::Down(format!("the fleet database: {state}: {}", db.message()));
    }
    if state.starts_with("22") {
        return BackendError::Refused(format!(
            "the database refused the arguments (SQLSTATE {state})"
        ));
    }
    BackendError::Refused(format!(
        "the database refused the call: {state}: {}",
        db.message()
    ))
}

/// The reply for `call`'s row.
fn to_reply(call: &Call, row: &Row) -> Result<Reply, BackendError> {
    match call {
        Call::Begin { .. } => begin_reply(row).map(Reply::Begin),
        Call::Attempt(_) => Ok(Reply::Attempt(AttemptReply {
            verdict: word(row, "verdict", AttemptVerdict::parse)?,
            device: get(row, "device")?,
            step: get(row, "step")?,
            drift_offset: get(row, "drift_offset")?,
            off_by: get(row, "off_by")?,
            period: unsigned(get::<i32>(row, "period")?, "period")?,
            remaining: unsigned(get::<i32>(row, "remaining")?, "remaining")?,
            until: get(row, "until")?,
        })),
        Call::RecordDelivery { .. } => Ok(Reply::Delivery(DeliveryReply {
            verdict: word(row, "verdict", DeliveryVerdict::parse)?,
            expires: get(row, "expires")?,
            until: get(row, "until")?,
        })),
        Call::EnrollFirst(_) => Ok(Reply::Enroll {
            // The function returns a bare `text`: its one column.
            verdict: word(row, 0, EnrollVerdict::parse)?,
        }),
    }
}

fn begin_reply(row: &Row) -> Result<BeginReply, BackendError> {
    // Required: read as "not enrolled", a NULL could skip the code under
    // `unenrolled = "skip"`; it is an error (the login is denied) instead.
    let enrolled = required(row, "enrolled")?;
    let generation = if enrolled {
        required(row, "generation")?
    } else {
        get(row, "generation")?.unwrap_or(0)
    };
    let refusal = match get::<String>(row, "refusal")?.as_deref() {
        None => None,
        Some("locked_out") => Some(Refusal::LockedOut),
        Some("rate_limited") => Some(Refusal::RateLimited),
        Some(other) => return Err(unknown_word("refusal", other)),
    };
    let salt: Option<Vec<u8>> = get(row, "backup_salt")?;
    let backup = match (get::<i32>(row, "backup_digits")?, salt) {
        (Some(digits), Some(salt)) => Some(BackupKdf {
            digits: narrow(digits, "backup_digits")?,
            salt: data_encoding::HEXLOWER.encode(&salt),
            m_cost: narrow(required::<i32>(row, "backup_m_cost")?, "backup_m_cost")?,
            t_cost: narrow(required::<i32>(row, "backup_t_cost")?, "backup_t_cost")?,
            p_cost: narrow(required::<i32>(row, "backup_p_cost")?, "backup_p_cost")?,
        }),
        _ => None,
    };
    Ok(BeginReply {
        enrolled,
        generation,
        grace: get(row, "grace")?.unwrap_or(false),
        refusal,
        refusal_until: get(row, "refusal_until")?,
        deliver_to: get(row, "deliver_to")?,
        backup,
        enroll_at_login: get(row, "enroll_at_login")?.unwrap_or(false),
        totp_algorithm: required(row, "totp_algorithm")?,
        totp_digits: narrow(required::<i32>(row, "totp_digits")?, "totp_digits")?,
        totp_period: narrow(required::<i32>(row, "totp_period")?, "totp_period")?,
        backup_codes: narrow(required::<i32>(row, "backup_codes")?, "backup_codes")?,
        now: required(row, "now")?,
        delivered_pending: get(row, "delivered_pending")?.unwrap_or(false),
    })
}

/// A column that may be NULL.
fn get<'a, T: FromSql<'a>>(
    row: &'a Row,
    column: impl postgres::row::RowIndex + std::fmt::Display + Copy,
) -> Result<Option<T>, BackendError> {
    row.try_get::<_, Option<T>>(column)
        .map_err(|e| BackendError::Refused(format!("column {column}: {e}: {FIX_SCHEMA}")))
}

/// A column that may not be NULL.
fn required<'a, T: FromSql<'a>>(row: &'a Row, column: &str) -> Result<T, BackendError> {
    get(row, column)?
        .ok_or_else(|| BackendError::Refused(format!("column {column} is NULL: {FIX_SCHEMA}")))
}

/// A verdict column, in the words this agent knows.
fn word<T>(
    row: &Row,
    column: impl postgres::row::RowIndex + std::fmt::Display + Copy,
    parse: fn(&str) -> Option<T>,
) -> Result<T, BackendError> {
    let text: Option<String> = get(row, column)?;
    let text = text.unwrap_or_default();
    parse(&text).ok_or_else(|| unknown_word("verdict", &text))
}

fn unknown_word(column: &str, word: &str) -> BackendError {
    BackendError::Refused(format!(
        "{column} {:?} is not a word this agent knows: is the agent older than the schema?",
        pam_twofactor::records::username::escape(word)
    ))
}

/// An `int` column into a smaller unsigned field.
fn narrow<T: TryFrom<i32>>(value: i32, column: &str) -> Result<T, BackendError> {
    T::try_from(value)
        .map_err(|_| BackendError::Refused(format!("column {column}: {value} is out of range")))
}

fn unsigned(value: Option<i32>, column: &str) -> Result<Option<u32>, BackendError> {
    value.map(|v| narrow(v, column)).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A WARNING 01000 or 57014 (the cancelled wait for the standby) marks a
    /// commit unconfirmed; a NOTICE or another code does not.
    #[test]
    fn only_a_cancelled_sync_wait_marks_the_commit_unconfirmed() {
        assert!(is_cancelled_sync_wait(&SqlState::WARNING, "WARNING"));
        assert!(is_cancelled_sync_wait(&SqlState::QUERY_CANCELED, "WARNING"));
        assert!(!is_cancelled_sync_wait(&SqlState::WARNING, "NOTICE"));
        assert!(!is_cancelled_sync_wait(
            &SqlState::SUCCESSFUL_COMPLETION,
            "WARNING"
        ));
    }

    /// The custom SQLSTATE is a valid one (five characters, class TF).
    #[test]
    fn not_synchronous_sqlstate_is_well_formed() {
        assert_eq!(SQLSTATE_NOT_SYNCHRONOUS.len(), 5);
        assert_eq!(
            SqlState::from_code(SQLSTATE_NOT_SYNCHRONOUS).code(),
            SQLSTATE_NOT_SYNCHRONOUS
        );
    }
}
