//! pam_twofactor: a PAM module that asks for a TOTP code or a one-time
//! backup code after the password, and the library behind the `twofactor`
//! admin command.
//!
//! Layout (see README "Design"): `pam_module` is the only door to PAM;
//! `auth` runs one login over a `Conversation` trait; `policy` and `otp` are
//! pure functions of `now`; `store` is the only code that touches files;
//! `admin` is the CLI's second door over the same core and store; `sys`
//! holds the one libc call (statx on an fd) that std and nix lack in the
//! form the store needs, and `wipe` the byte buffers that hold secrets
//! (files read, decoded keys), zeroed on drop. `config` and `record` read
//! and write TOML only through serde and the `toml` crate: raw structs
//! with `deny_unknown_fields`, checked into typed values at the edge.

pub mod accounts;
pub mod admin;
pub mod auth;
pub mod backup;
pub mod clock;
pub mod config;
pub mod deliver;
pub mod enroll;
pub mod import;
pub mod input;
pub mod log;
pub mod net;
pub mod otp;
pub mod pam_module;
pub mod policy;
pub mod record;
pub mod store;
pub mod sys;
pub mod timefmt;
pub mod username;
pub mod wipe;
