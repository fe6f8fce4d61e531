//! pam_twofactor: a PAM module that asks for a TOTP code or a one-time
//! backup code after the password, and the library behind the `twofactor`
//! admin command. Each folder is one role (docs/design.md has the whole
//! picture):
//!
//! - `pam`: the one door to PAM (entry points, arguments, conversation,
//!   the mapping to PAM codes);
//! - `login`: one authentication over a `Conversation` trait;
//! - `policy`: every rule as pure functions of `(state, now, policy)`;
//! - `otp`: TOTP/HOTP, secrets, backup codes, the otpauth URI and QR code;
//! - `records`: the secret and state records and the one module that reads
//!   and updates a user's files under the user's lock;
//! - `store`: trusted directories, checks on open descriptors, locks and
//!   atomic durable replacement: the only code that touches files;
//! - `admin`: the `twofactor` command's second door over the same core;
//! - `delivery`: codes by message (the module's client, the service);
//! - `fleet`: fleet mode's protocol between the module and the agent;
//! - `config`: `/etc/security/twofactor.toml`;
//! - `host`: the clock, syslog, the user database, how times are shown.
//!
//! Unsafe code: only `pam`'s `hooks`, the `pam_hooks!` expansion (the entry
//! points libpam calls), allows it. Every other module forbids it here, one
//! by one: `forbid` cannot be lifted by an `allow` further in, so it cannot
//! be crate-wide (Cargo.toml says `deny`). Unit tests build with `deny`
//! only: a test may hold a marked `unsafe` block with a SAFETY comment
//! (delivery's SIGPIPE test).

#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod admin;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod config;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod delivery;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod fleet;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod host;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod login;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod otp;
pub mod pam;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod policy;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod records;
#[cfg_attr(not(test), forbid(unsafe_code))]
pub mod store;
