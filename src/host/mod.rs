//! What the module asks of the host: the clock, syslog, the user database
//! (NSS), and how times are shown to people.

pub mod accounts;
pub mod clock;
pub mod log;
pub mod timefmt;
