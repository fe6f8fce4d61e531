//! One call under the deadline: a worker thread runs it with a client from
//! a small pool, and the connection's thread waits for the answer until the
//! deadline and no longer. A call that misses the deadline is NEVER
//! cancelled (FLEET.md: a cancelled wait for the synchronous standby
//! reports success for a commit that may not survive a failover): the
//! worker finishes on its own, logs what the late answer was, and gives its
//! client back. The number of workers is capped, so a database that never
//! answers cannot pile up threads: beyond the cap the answer is `Timeout`
//! at once.
//!
//! Generic over [`Connector`] so that the tests can run it with a fake
//! database that sleeps or fails.

use std::fmt;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pam_twofactor::fleet::protocol::{Reply, Unavailable};

use super::call::Call;
use super::log;

/// Why a call gave no answer.
#[derive(Debug, PartialEq, Eq)]
pub enum BackendError {
    /// No connection, or it broke (the answer, if any, is unknown).
    Down(String),
    /// The database refused the call (permission, schema, an error the
    /// function raised, an answer this agent does not know).
    Refused(String),
    /// The fleet requires a synchronous standby and writes are not
    /// protected by one (or the wait for it was cancelled by someone).
    NotSynchronous(String),
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackendError::Down(e) | BackendError::Refused(e) | BackendError::NotSynchronous(e) => {
                f.write_str(e)
            }
        }
    }
}

impl BackendError {
    /// The reply the module gets.
    pub fn to_reply(&self) -> Reply {
        let reason = match self {
            BackendError::Down(_) => Unavailable::DatabaseDown,
            BackendError::Refused(_) => Unavailable::Refused,
            BackendError::NotSynchronous(_) => Unavailable::NotSynchronous,
        };
        unavailable(reason, self.to_string())
    }
}

/// A `Reply::Unavailable`.
pub fn unavailable(reason: Unavailable, detail: impl Into<String>) -> Reply {
    Reply::Unavailable {
        reason,
        detail: detail.into(),
    }
}

/// One connection to the database.
pub trait Backend: Send + 'static {
    /// Runs `call` as one statement in autocommit (the function's own
    /// transaction) and maps its row to the reply.
    fn call(&mut self, call: &Call) -> Result<Reply, BackendError>;
    /// The connection is known to be gone.
    fn is_closed(&self) -> bool;
    /// A client that sat idle for a while is still there (a round trip).
    fn is_alive(&mut self, timeout: Duration) -> bool;
}

/// Makes connections.
pub trait Connector: Send + Sync + 'static {
    type Backend: Backend;
    /// A new connection, waiting at most `timeout`.
    fn connect(&self, timeout: Duration) -> Result<Self::Backend, BackendError>;
}

/// How much the agent does at once.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// `[fleet] deadline_seconds`: from accepting a connection to its reply.
    pub deadline: Duration,
    /// Calls running at once, late ones included: the most connections
    /// this host opens to the database. A call beyond it waits for a place
    /// until its deadline (a burst of logins on one host queues; a dead
    /// database cannot pile up threads).
    pub max_workers: usize,
    /// Idle clients kept however long they sit unused. Up to `max_workers`
    /// are kept while they are used: a burst that keeps every worker busy
    /// reuses its connections instead of opening and closing one per call.
    pub max_idle: usize,
    /// Idle clients beyond `max_idle` are closed once unused this long.
    pub trim_idle_after: Duration,
    /// A client idle longer than this is checked before it is used.
    pub check_idle_after: Duration,
}

impl Limits {
    /// The agent's limits for `deadline`.
    pub fn new(deadline: Duration) -> Limits {
        Limits {
            deadline,
            max_workers: 16,
            // Kept open between bursts: a new connection costs a TLS
            // handshake and SCRAM's 4096 hash rounds.
            max_idle: 8,
            // Long enough to span the gaps of a burst (a fleet-wide `ssh`
            // loop), short enough that a quiet host soon holds no more
            // than `max_idle` of the database's connections.
            trim_idle_after: Duration::from_secs(30),
            // The sync client notices a closed connection only when it
            // is used: a server restart would fail the next call on each
            // idle client. One round trip first is cheap next to a login.
            check_idle_after: Duration::from_secs(1),
        }
    }
}

/// An idle client and since when.
struct Idle<B> {
    backend: B,
    since: Instant,
}

/// The pool and the workers.
pub struct Dispatcher<C: Connector> {
    connector: C,
    limits: Limits,
    idle: Mutex<Vec<Idle<C::Backend>>>,
    workers: Mutex<usize>,
    /// Signalled when a worker's place frees up.
    freed: Condvar,
}

/// Gives a worker's place back when the worker ends, however it ends.
struct WorkerSlot<C: Connector>(Arc<Dispatcher<C>>);

impl<C: Connector> Drop for WorkerSlot<C> {
    fn drop(&mut self) {
        let mut workers = self
            .0
            .workers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *workers = workers.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

impl<C: Connector> Dispatcher<C> {
    pub fn new(connector: C, limits: Limits) -> Arc<Dispatcher<C>> {
        Arc::new(Dispatcher {
            connector,
            limits,
            idle: Mutex::new(Vec::new()),
            workers: Mutex::new(0),
            freed: Condvar::new(),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Workers running now (late ones included).
    #[cfg(test)]
    pub fn workers(&self) -> usize {
        *self.workers.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Idle clients in the pool now.
    #[cfg(test)]
    pub fn idle(&self) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Runs `call` and returns its reply, or `Unavailable` if there is
    /// none by `deadline`.
    pub fn dispatch(self: &Arc<Self>, call: Call, deadline: Instant) -> Reply {
        let Some(slot) = self.take_worker_slot(deadline) else {
            let detail = format!(
                "{} calls were running or waiting for the database until the deadline",
                self.limits.max_workers
            );
            log::outcome(call.op(), call.user(), &detail);
            return unavailable(Unavailable::Timeout, detail);
        };
        let (sender, receiver) = mpsc::sync_channel(1);
        let op = call.op();
        let user = call.user().to_string();
        let started = Instant::now();
        let worker = std::thread::Builder::new()
            .name("agent-sql".into())
            .spawn(move || {
                let dispatcher = Arc::clone(&slot.0);
                let reply = dispatcher.run(&call);
                if let Err(mpsc::SendError(late)) = sender.send(reply) {
                    // The connection already answered Timeout: say what the
                    // database decided meanwhile (the module denied anyway).
                    log::outcome(
                        call.op(),
                        call.user(),
                        &format!(
                            "answered after the deadline, {:.1} s after the call: {}",
                            started.elapsed().as_secs_f64(),
                            log::reply_summary(&late)
                        ),
                    );
                }
                drop(slot);
            });
        if let Err(e) = worker {
            let detail = format!("cannot start a worker thread: {e}");
            log::outcome(op, &user, &detail);
            return unavailable(Unavailable::Timeout, detail);
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        match receiver.recv_timeout(remaining) {
            Ok(reply) => {
                if let Reply::Unavailable { detail, .. } = &reply {
                    log::outcome(op, &user, detail);
                }
                reply
            }
            Err(RecvTimeoutError::Timeout) => {
                let detail = format!(
                    "no answer from the database within the deadline ({} s); the call is left to finish, never cancelled",
                    self.limits.deadline.as_secs()
                );
                log::outcome(op, &user, &detail);
                unavailable(Unavailable::Timeout, detail)
            }
            Err(RecvTimeoutError::Disconnected) => {
                let detail = "the database worker ended without an answer".to_string();
                log::outcome(op, &user, &detail);
                unavailable(Unavailable::DatabaseDown, detail)
            }
        }
    }

    /// A worker's place, waiting for one until `deadline`.
    fn take_worker_slot(self: &Arc<Self>, deadline: Instant) -> Option<WorkerSlot<C>> {
        let mut workers = self.workers.lock().unwrap_or_else(PoisonError::into_inner);
        while *workers >= self.limits.max_workers {
            let left = deadline.checked_duration_since(Instant::now())?;
            workers = self
                .freed
                .wait_timeout(workers, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *workers += 1;
        Some(WorkerSlot(Arc::clone(self)))
    }

    /// On the worker: a client, the call, the client back if all went well.
    fn run(&self, call: &Call) -> Reply {
        let mut backend = match self.client() {
            Ok(backend) => backend,
            Err(e) => return e.to_reply(),
        };
        match backend.call(call) {
            Ok(reply) => {
                self.give_back(backend);
                reply
            }
            // After any error the client is dropped: its session may be in
            // any state.
            Err(e) => e.to_reply(),
        }
    }

    /// An idle client that is still there, else a new one.
    fn client(&self) -> Result<C::Backend, BackendError> {
        loop {
            let idle = self
                .idle
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop();
            let Some(Idle { mut backend, since }) = idle else {
                break;
            };
            if backend.is_closed() {
                continue;
            }
            if since.elapsed() < self.limits.check_idle_after
                || backend.is_alive(self.limits.deadline)
            {
                return Ok(backend);
            }
        }
        self.connector.connect(self.limits.deadline)
    }

    fn give_back(&self, backend: C::Backend) {
        if backend.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.limits.max_workers.max(self.limits.max_idle) {
            idle.push(Idle {
                backend,
                since: Instant::now(),
            });
        }
        // `client()` takes the newest, so the oldest idle ones are first.
        let stale = idle
            .iter()
            .take(idle.len().saturating_sub(self.limits.max_idle))
            .take_while(|i| i.since.elapsed() >= self.limits.trim_idle_after)
            .count();
        idle.drain(..stale);
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use pam_twofactor::fleet::protocol::{AttemptReply, AttemptVerdict};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

    /// What the fake database does with each call.
    #[derive(Clone, Copy, Debug)]
    pub enum Behaviour {
        /// Answers `allow_totp` after this long, then records the call.
        Answer(Duration),
        /// Cannot connect at all.
        Unreachable,
        /// Connects, then fails every call as a refusal.
        Refuse,
    }

    /// A fake database shared by its clients: counts the calls it
    /// completed (the side effect a test looks for).
    pub struct Fake {
        pub behaviour: Behaviour,
        pub completed: Arc<AtomicUsize>,
        pub connects: Arc<AtomicUsize>,
        pub closed: Arc<AtomicBool>,
    }

    impl Fake {
        pub fn new(behaviour: Behaviour) -> Fake {
            Fake {
                behaviour,
                completed: Arc::default(),
                connects: Arc::default(),
                closed: Arc::default(),
            }
        }
    }

    pub struct FakeClient {
        behaviour: Behaviour,
        completed: Arc<AtomicUsize>,
        closed: Arc<AtomicBool>,
    }

    impl Backend for FakeClient {
        fn call(&mut self, _call: &Call) -> Result<Reply, BackendError> {
            match self.behaviour {
                Behaviour::Answer(delay) => {
                    std::thread::sleep(delay);
                    self.completed.fetch_add(1, Ordering::SeqCst);
                    Ok(allow())
                }
                Behaviour::Unreachable => Err(BackendError::Down("unreachable".into())),
                Behaviour::Refuse => Err(BackendError::Refused("permission denied".into())),
            }
        }
        fn is_closed(&self) -> bool {
            self.closed.load(Ordering::SeqCst)
        }
        fn is_alive(&mut self, _timeout: Duration) -> bool {
            !self.is_closed()
        }
    }

    impl Connector for Fake {
        type Backend = FakeClient;
        fn connect(&self, _timeout: Duration) -> Result<FakeClient, BackendError> {
            self.connects.fetch_add(1, Ordering::SeqCst);
            match self.behaviour {
                Behaviour::Unreachable => Err(BackendError::Down(
                    "cannot connect to the fleet database: connection refused".into(),
                )),
                behaviour => Ok(FakeClient {
                    behaviour,
                    completed: Arc::clone(&self.completed),
                    closed: Arc::clone(&self.closed),
                }),
            }
        }
    }

    pub fn allow() -> Reply {
        Reply::Attempt(AttemptReply {
            verdict: AttemptVerdict::AllowTotp,
            device: Some("default".into()),
            step: Some(1),
            drift_offset: None,
            off_by: None,
            period: Some(30),
            remaining: None,
            until: None,
        })
    }

    pub fn begin() -> Call {
        Call::Begin {
            user: "alice".into(),
            rhost: None,
        }
    }

    fn limits(deadline_ms: u64) -> Limits {
        Limits {
            max_workers: 2,
            ..Limits::new(Duration::from_millis(deadline_ms))
        }
    }

    fn wait_for(what: &str, done: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !done() {
            assert!(Instant::now() < until, "{what} never happened");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn reason(reply: &Reply) -> Option<Unavailable> {
        match reply {
            Reply::Unavailable { reason, .. } => Some(*reason),
            _ => None,
        }
    }

    /// A call answered in time is the reply, and its client is pooled and
    /// used again (one connection for two calls).
    #[test]
    fn answer_in_time_is_the_reply_and_the_client_is_reused() {
        let fake = Fake::new(Behaviour::Answer(Duration::ZERO));
        let connects = Arc::clone(&fake.connects);
        let dispatcher = Dispatcher::new(fake, limits(2000));
        for _ in 0..2 {
            let deadline = Instant::now() + dispatcher.limits().deadline;
            assert_eq!(dispatcher.dispatch(begin(), deadline), allow());
            wait_for("the client back in the pool", || dispatcher.idle() == 1);
        }
        assert_eq!(connects.load(Ordering::SeqCst), 1);
    }

    /// A slow database: Timeout at the deadline (not later), and the call is
    /// not interrupted: it completes afterwards, its effect is there, and
    /// its client goes back to the pool.
    #[test]
    fn slow_database_times_out_and_the_call_still_completes() {
        let fake = Fake::new(Behaviour::Answer(Duration::from_millis(900)));
        let completed = Arc::clone(&fake.completed);
        let dispatcher = Dispatcher::new(fake, limits(300));
        let start = Instant::now();
        let reply = dispatcher.dispatch(begin(), start + dispatcher.limits().deadline);
        let took = start.elapsed();
        assert_eq!(reason(&reply), Some(Unavailable::Timeout), "{reply:?}");
        assert!(
            took >= Duration::from_millis(300) && took < Duration::from_millis(600),
            "answered after {took:?}"
        );
        assert_eq!(completed.load(Ordering::SeqCst), 0, "finished too early");
        wait_for("the late call to complete", || {
            completed.load(Ordering::SeqCst) == 1
        });
        wait_for("the worker to end", || dispatcher.workers() == 0);
        assert_eq!(dispatcher.idle(), 1, "the late call's client is pooled");
    }

    /// Beyond the cap of outstanding workers a call waits for a place: it
    /// gets Timeout at its deadline if none frees up, and runs as soon as
    /// one does.
    #[test]
    fn worker_cap_queues_until_the_deadline() {
        let fake = Fake::new(Behaviour::Answer(Duration::from_millis(700)));
        let dispatcher = Dispatcher::new(fake, limits(100));
        for _ in 0..2 {
            let reply = dispatcher.dispatch(begin(), Instant::now() + Duration::from_millis(100));
            assert_eq!(reason(&reply), Some(Unavailable::Timeout));
        }
        assert_eq!(dispatcher.workers(), 2);
        // Full for the next 600 ms: a call with 200 ms gets Timeout at its
        // deadline, not at once and not later.
        let start = Instant::now();
        let reply = dispatcher.dispatch(begin(), start + Duration::from_millis(200));
        assert_eq!(reason(&reply), Some(Unavailable::Timeout));
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(190), "{waited:?}");
        assert!(waited < Duration::from_millis(500), "{waited:?}");
        // A call with time to spare waits for a place and is answered.
        let start = Instant::now();
        let reply = dispatcher.dispatch(begin(), start + Duration::from_secs(5));
        assert_eq!(reply, allow());
        assert!(
            start.elapsed() >= Duration::from_millis(300),
            "did not wait"
        );
        wait_for("the workers to end", || dispatcher.workers() == 0);
    }

    /// No connection: DatabaseDown, and nothing is pooled.
    #[test]
    fn unreachable_database_is_database_down() {
        let dispatcher = Dispatcher::new(Fake::new(Behaviour::Unreachable), limits(2000));
        let reply = dispatcher.dispatch(begin(), Instant::now() + Duration::from_secs(2));
        assert_eq!(reason(&reply), Some(Unavailable::DatabaseDown), "{reply:?}");
        assert_eq!(dispatcher.idle(), 0);
    }

    /// A refused call answers Refused and its client is dropped, not pooled.
    #[test]
    fn refused_call_drops_its_client() {
        let fake = Fake::new(Behaviour::Refuse);
        let connects = Arc::clone(&fake.connects);
        let dispatcher = Dispatcher::new(fake, limits(2000));
        for _ in 0..2 {
            let reply = dispatcher.dispatch(begin(), Instant::now() + Duration::from_secs(2));
            assert_eq!(reason(&reply), Some(Unavailable::Refused), "{reply:?}");
            wait_for("the worker to end", || dispatcher.workers() == 0);
            assert_eq!(dispatcher.idle(), 0);
        }
        assert_eq!(connects.load(Ordering::SeqCst), 2);
    }

    /// A burst that keeps every worker busy reuses its clients (beyond
    /// `max_idle`); once they have sat unused for `trim_idle_after`, the
    /// pool shrinks back to `max_idle` at the next call.
    #[test]
    fn a_burst_reuses_its_clients_and_the_pool_shrinks_when_quiet() {
        let fake = Fake::new(Behaviour::Answer(Duration::from_millis(150)));
        let connects = Arc::clone(&fake.connects);
        let limits = Limits {
            max_workers: 4,
            max_idle: 1,
            trim_idle_after: Duration::from_millis(400),
            ..Limits::new(Duration::from_secs(5))
        };
        let dispatcher = Dispatcher::new(fake, limits);
        let burst = || {
            let calls: Vec<_> = (0..4)
                .map(|_| {
                    let dispatcher = Arc::clone(&dispatcher);
                    std::thread::spawn(move || {
                        dispatcher.dispatch(begin(), Instant::now() + Duration::from_secs(5))
                    })
                })
                .collect();
            for call in calls {
                assert_eq!(call.join().ok(), Some(allow()));
            }
            wait_for("the workers to end", || dispatcher.workers() == 0);
        };
        burst();
        assert_eq!(connects.load(Ordering::SeqCst), 4);
        assert_eq!(dispatcher.idle(), 4, "all four kept while in use");
        burst();
        assert_eq!(
            connects.load(Ordering::SeqCst),
            4,
            "the second burst reconnected"
        );
        std::thread::sleep(Duration::from_millis(500));
        dispatcher.dispatch(begin(), Instant::now() + Duration::from_secs(5));
        wait_for("the worker to end", || dispatcher.workers() == 0);
        assert_eq!(connects.load(Ordering::SeqCst), 4);
        assert_eq!(dispatcher.idle(), 1, "the stale clients were closed");
    }

    /// A pooled client that the connection reports closed is not used.
    #[test]
    fn closed_clients_are_not_reused() {
        let fake = Fake::new(Behaviour::Answer(Duration::ZERO));
        let (connects, closed) = (Arc::clone(&fake.connects), Arc::clone(&fake.closed));
        let dispatcher = Dispatcher::new(fake, limits(2000));
        dispatcher.dispatch(begin(), Instant::now() + Duration::from_secs(2));
        wait_for("the client back in the pool", || dispatcher.idle() == 1);
        closed.store(true, Ordering::SeqCst);
        dispatcher.dispatch(begin(), Instant::now() + Duration::from_secs(2));
        assert_eq!(connects.load(Ordering::SeqCst), 2);
    }
}
