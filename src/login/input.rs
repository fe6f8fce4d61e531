//! What the user typed at the prompt, classified before any crypto runs.
//!
//! Spaces and dashes are ignored (apps show `123 456`, backup codes are
//! printed `1234-5678-...`). Only ASCII digits count (`char::is_numeric`
//! would accept other scripts). Long input is rejected before it is copied.

use zeroize::Zeroizing;

/// The longest input we look at; anything longer is refused unread.
pub const MAX_INPUT: usize = 64;
/// Digit counts that can be a code of any kind (TOTP 6..=8, imported
/// backup codes 8, delivered codes 6..=8, our backup codes 16).
pub const DIGITS: std::ops::RangeInclusive<usize> = 6..=16;

/// A classified answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    /// Nothing typed: asks for a code by message where `[delivery]` is set up.
    Empty,
    /// 6 to 16 ASCII digits, spaces and dashes removed.
    Digits(Zeroizing<String>),
    /// Anything else: counts as a failed attempt.
    Malformed,
}

impl Answer {
    /// The digits if they can be a TOTP code (6 to 8).
    pub fn totp(&self) -> Option<&str> {
        match self {
            Answer::Digits(d) if crate::otp::DIGITS.contains(&(d.len() as u8)) => Some(d),
            _ => None,
        }
    }
}

/// Classifies raw bytes from the conversation.
pub fn classify(raw: &[u8]) -> Answer {
    if raw.is_empty() {
        return Answer::Empty;
    }
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
    if DIGITS.contains(&digits.len()) {
        Answer::Digits(digits)
    } else {
        Answer::Malformed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits(s: &str) -> Answer {
        Answer::Digits(Zeroizing::new(s.into()))
    }

    /// Spaces and dashes are dropped; leading zeros are kept.
    #[test]
    fn spaces_and_dashes_are_ignored() {
        assert_eq!(classify(b"012 345"), digits("012345"));
        assert_eq!(classify(b"0123-4567"), digits("01234567"));
        assert_eq!(classify(b"1234-5678-9012-3456"), digits("1234567890123456"));
        assert_eq!(classify(b"012 345").totp(), Some("012345"));
        assert_eq!(classify(b"1234-5678-9012-3456").totp(), None);
    }

    /// Nothing typed is its own answer (a request for a delivered code).
    #[test]
    fn empty_input_is_empty() {
        assert_eq!(classify(b""), Answer::Empty);
        assert_eq!(classify(b"  "), Answer::Malformed);
    }

    /// Wrong lengths, letters, non-ASCII digits and huge input are malformed.
    #[test]
    fn everything_else_is_malformed() {
        for raw in [
            &b"12345"[..],
            b"12345678901234567",
            b"12345a",
            "١٢٣٤٥٦".as_bytes(),
            b"123456\n",
            &[b'1'; 65],
        ] {
            assert_eq!(classify(raw), Answer::Malformed, "{raw:?}");
        }
    }
}
