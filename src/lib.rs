//! pam_twofactor: a PAM module that asks for a TOTP code or a one-time
//! backup code after the password, and the library behind the `twofactor`
//! admin command.
//!
//! Layout (see README "Design"): `pam_module` is the only door to PAM;
//! `auth` runs one login over a `Conversation` trait; `policy` and `otp` are
//! pure functions of `now`; `store` is the only code that touches files;
//! `admin` is the CLI's second door over the same core and store. Bytes
//! that may hold a secret (files read, decoded keys) are
//! `zeroize::Zeroizing<Vec<u8>>`, sized before they are filled.
//!
//! Unsafe code: only `pam_module`'s `hooks`, the `pam_hooks!` expansion
//! (the entry points libpam calls), allows it. Every other module forbids
//! it here, one by one: `forbid` cannot be lifted by an `allow` further
//! in, so it cannot be crate-wide (Cargo.toml says `deny`). Unit tests
//! build with `deny` only: a test may hold a marked `unsafe` block with a
//! SAFETY comment (deliver's SIGPIPE test).
//! `config` and `record` read and write TOML only through serde and the
//! `toml` crate: raw structs with `deny_unknown_fields`, checked into
//! typed values at the edge.

#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod accounts;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod admin;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod auth;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod backup;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod clock;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod config;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod deliver;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod enroll;
pub mod import;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod input;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod log;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod net;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod otp;
pub mod pam_module;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod policy;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod record;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod store;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod timefmt;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod username;
