//! The one place the wall clock is read; everything else takes `now` or a
//! `Clock`.
//!
//! A login reads the clock at each decision, not once at the start: a user
//! may sit at the prompt for minutes (su has no prompt timeout), and a lock
//! or window written relative to the time the prompt opened can already be
//! over when it is written (../docs/threat-model.md, "an old prompt").

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch. A clock before 1970 reads as 0, which
/// matches no current code: failing closed rather than panicking.
#[allow(clippy::disallowed_methods)] // the one permitted clock read
pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where a login gets the time for each decision. The PAM door passes
/// `SystemClock`; tests pass a clock they move between answers.
pub trait Clock {
    /// The current Unix time in seconds.
    fn now(&self) -> u64;
}

/// The machine's wall clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> u64 {
        now()
    }
}

/// A clock that stands still: for callers that decide once (the admin CLI,
/// fuzzing) and for tests.
#[derive(Clone, Copy, Debug)]
pub struct FixedClock(pub u64);

impl Clock for FixedClock {
    fn now(&self) -> u64 {
        self.0
    }
}
