//! One-time codes: TOTP (RFC 6238) over HOTP (RFC 4226), the shared secret,
//! the backup codes, and what enrolling shows (the otpauth URI, the grouped
//! secret, the QR code). Pure functions of secret, parameters and time; no
//! files, no PAM.

pub mod backup;
mod secret;
mod totp;
pub mod uri;

pub use secret::{SECRET_BYTES, SecretError, SecretKey};
pub use totp::{
    Algorithm, CodeMatch, DIGITS, PERIODS, TotpParams, code_at_step, match_code, match_in_steps,
    step_at,
};
