//! What the user typed at the prompt, classified before any crypto runs.
//!
//! Spaces and dashes are ignored (apps show `123 456`, backup codes are
//! printed `1234-5678-...`). Only ASCII digits count (`char::is_numeric`
//! would accept other scripts). Long input is rejected before it is copied.

use zeroize::Zeroizing;

use crate::backup::{self, BackupCode};
use crate::otp;

/// The longest input we look at; anything longer is refused unread.
pub const MAX_INPUT: usize = 64;

/// A classified answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// 6 to 8 ASCII digits: a TOTP code.
    Totp(Zeroizing<String>),
    /// 16 ASCII digits: a backup code.
    Backup(BackupCode),
    /// Anything else: counts as a failed attempt.
    Malformed,
}

/// Classifies raw bytes from the conversation.
pub fn classify(raw: &[u8]) -> Answer {
    if raw.len() > MAX_INPUT {
        return Answer::Malformed;
    }
    let mut digits = Zeroizing::new(String::with_capacity(raw.len()));
    for &b in raw {
        match b {
            b' ' | b'-' => {}
            b'0'..=b'9' => digits.push(char::from(b)),
            _ => return Answer::Malformed,
        }
    }
    let len = digits.len();
    if len == backup::LENGTH {
        return BackupCode::parse(&digits).map_or(Answer::Malformed, Answer::Backup);
    }
    if otp::DIGITS.contains(&u8::try_from(len).unwrap_or(0)) {
        return Answer::Totp(digits);
    }
    Answer::Malformed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spaces and dashes are dropped; leading zeros are kept.
    #[test]
    fn spaces_and_dashes_are_ignored() {
        assert_eq!(
            classify(b"012 345"),
            Answer::Totp(Zeroizing::new("012345".into()))
        );
        assert_eq!(
            classify(b"0123-4567"),
            Answer::Totp(Zeroizing::new("01234567".into()))
        );
        assert_eq!(
            classify(b"1234-5678-9012-3456"),
            Answer::Backup(BackupCode::parse("1234567890123456").unwrap())
        );
    }

    /// Wrong lengths, letters, non-ASCII digits and huge input are malformed.
    #[test]
    fn everything_else_is_malformed() {
        for raw in [
            &b""[..],
            b"12345",
            b"123456789",
            b"12345a",
            "١٢٣٤٥٦".as_bytes(),
            b"123456\n",
            &[b'1'; 65],
        ] {
            assert_eq!(classify(raw), Answer::Malformed, "{raw:?}");
        }
    }
}
