//! The one place the wall clock is read; everything else takes `now`.

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
