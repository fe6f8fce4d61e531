//! Oracles for the fuzz targets, written from the README and the RFCs rather
//! than from the module's code, so that a target can compare the two.

use hmac::{Hmac, KeyInit, Mac};
use pam_twofactor::otp::Algorithm;

/// Reads fuzz input front to back; past the end every read yields zeros.
pub struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Bytes<'a> {
    /// Wraps the fuzz input.
    pub fn new(data: &'a [u8]) -> Bytes<'a> {
        Bytes { data, pos: 0 }
    }

    /// Whether every byte has been read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    /// One byte, or 0 past the end.
    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }

    /// A little-endian u16.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// A little-endian u64.
    pub fn u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        for x in &mut b {
            *x = self.u8();
        }
        u64::from_le_bytes(b)
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn take(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }
}

/// What the README says an answer is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    /// Nothing typed (a request for a code by message).
    Empty,
    /// 6 to 16 ASCII digits once spaces and dashes are removed: a TOTP
    /// code (6–8), an imported (8) or our own (16) backup code.
    Digits(String),
    /// Anything else, including input longer than 64 bytes.
    Malformed,
}

/// The README's rule: spaces and dashes are ignored, only ASCII digits
/// count, 6–16 digits can be a code, over 64 bytes is refused unread.
pub fn spec_classify(raw: &[u8]) -> Spec {
    if raw.is_empty() {
        return Spec::Empty;
    }
    if raw.len() > 64 {
        return Spec::Malformed;
    }
    if !raw
        .iter()
        .all(|b| b.is_ascii_digit() || *b == b' ' || *b == b'-')
    {
        return Spec::Malformed;
    }
    let digits: String = raw
        .iter()
        .filter(|b| b.is_ascii_digit())
        .map(|&b| char::from(b))
        .collect();
    if (6..=16).contains(&digits.len()) {
        Spec::Digits(digits)
    } else {
        Spec::Malformed
    }
}

fn hmac_of<M: Mac + KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
    match <M as KeyInit>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length.
        Err(_) => Vec::new(),
    }
}

/// RFC 4226 §5.3 HOTP (TOTP when `counter` is the RFC 6238 time step),
/// zero-padded to `digits`.
pub fn hotp(secret: &[u8], algorithm: Algorithm, digits: u8, counter: u64) -> String {
    let message = counter.to_be_bytes();
    let mac = match algorithm {
        Algorithm::Sha1 => hmac_of::<Hmac<sha1::Sha1>>(secret, &message),
        Algorithm::Sha256 => hmac_of::<Hmac<sha2::Sha256>>(secret, &message),
        Algorithm::Sha512 => hmac_of::<Hmac<sha2::Sha512>>(secret, &message),
    };
    let Some(&last) = mac.last() else {
        return String::new();
    };
    let offset = usize::from(last & 0x0f);
    let bin = (u32::from(mac[offset] & 0x7f) << 24)
        | (u32::from(mac[offset + 1]) << 16)
        | (u32::from(mac[offset + 2]) << 8)
        | u32::from(mac[offset + 3]);
    let modulus = 10u32.pow(u32::from(digits));
    format!("{:0width$}", bin % modulus, width = usize::from(digits))
}

/// RFC 4648 base32 (upper case, spaces and `=` ignored); `None` if invalid.
pub fn base32_decode(text: &str) -> Option<Vec<u8>> {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| !matches!(c, b' ' | b'=')) {
        let v = ALPHABET.iter().position(|&a| a == c)?;
        acc = (acc << 5) | v as u32;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4226 Appendix D and RFC 6238 Appendix B rows.
    #[test]
    fn hotp_matches_the_rfc_vectors() {
        let seed20 = b"12345678901234567890";
        assert_eq!(hotp(seed20, Algorithm::Sha1, 6, 0), "755224");
        assert_eq!(hotp(seed20, Algorithm::Sha1, 6, 9), "520489");
        assert_eq!(hotp(seed20, Algorithm::Sha1, 8, 59 / 30), "94287082");
        let seed32 = b"12345678901234567890123456789012";
        assert_eq!(
            hotp(seed32, Algorithm::Sha256, 8, 1_111_111_109 / 30),
            "68084774"
        );
        let seed64 = b"1234567890123456789012345678901234567890123456789012345678901234";
        assert_eq!(
            hotp(seed64, Algorithm::Sha512, 8, 20_000_000_000 / 30),
            "47863826"
        );
    }

    /// Base32 of the RFC 6238 SHA1 seed, grouped as the module shows it.
    #[test]
    fn base32_decodes_grouped_keys() {
        assert_eq!(
            base32_decode("GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ").as_deref(),
            Some(&b"12345678901234567890"[..])
        );
        assert_eq!(base32_decode("gezd"), None);
    }

    /// The classification rule on a few hand-picked answers.
    #[test]
    fn spec_follows_the_readme() {
        assert_eq!(spec_classify(b"012 345"), Spec::Digits("012345".into()));
        assert_eq!(
            spec_classify(b"1234-5678-9012-3456"),
            Spec::Digits("1234567890123456".into())
        );
        assert_eq!(spec_classify(b""), Spec::Empty);
        assert_eq!(spec_classify(b"  "), Spec::Malformed);
        assert_eq!(spec_classify(b"12345"), Spec::Malformed);
        assert_eq!(spec_classify(&[b' '; 65]), Spec::Malformed);
        assert_eq!(spec_classify("١٢٣٤٥٦".as_bytes()), Spec::Malformed);
    }
}
