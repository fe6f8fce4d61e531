//! The shared secret: wiped on drop, never printed, read from and written
//! as base32 (RFC 4648) the way people type it into apps.

use std::fmt;

use data_encoding::BASE32_NOPAD;
use zeroize::Zeroizing;

/// Secret sizes in bytes: at least 128 bits (RFC 4226 §4), at most 512.
pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 16..=64;

/// The shared secret. Never printed by `Debug`; wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey(Zeroizing<Vec<u8>>);

impl SecretKey {
    /// Wraps raw secret bytes (length is checked by `from_base32`/records).
    pub fn new(bytes: Vec<u8>) -> SecretKey {
        SecretKey(Zeroizing::new(bytes))
    }

    /// Decodes base32 (RFC 4648, case-insensitive, spaces and padding
    /// ignored), requiring 128 to 512 bits.
    pub fn from_base32(text: &str) -> Result<SecretKey, SecretError> {
        SecretKey::from_base32_min(text, 8 * SECRET_BYTES.start())
    }

    /// Like `from_base32`, with a lower minimum (imports keep the 80-bit
    /// secrets google-authenticator made; records accept them).
    pub fn from_base32_min(text: &str, min_bits: usize) -> Result<SecretKey, SecretError> {
        let bytes = decode_base32(text).ok_or(SecretError::NotBase32)?;
        if bytes.len() * 8 < min_bits || bytes.len() > *SECRET_BYTES.end() {
            return Err(SecretError::BadLength(bytes.len() * 8));
        }
        Ok(SecretKey(bytes))
    }

    /// The canonical base32 form (upper case, no padding), encoded
    /// straight into a string of its final size (no unwiped copy).
    pub fn to_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(BASE32_NOPAD.encode(&self.0))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// RFC 4648 §6 base32 as people type it: upper or lower case, spaces, `-`
/// and `=` ignored wherever they are (apps show secrets in groups; padding
/// is optional), trailing bits not checked, and a last symbol that
/// completes no byte (1, 3 or 6 symbols past a group of eight) checked and
/// dropped: what the `base32` crate behind totp-rs accepts, and the tests
/// hold the two to the same answers. Decoded into a wiped buffer of exactly
/// the decoded size, so no copy of the secret is left behind.
fn decode_base32(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let mut symbols = Zeroizing::new(Vec::with_capacity(text.len()));
    symbols.extend(
        text.bytes()
            .filter(|b| !matches!(b, b' ' | b'-' | b'='))
            .map(|b| b.to_ascii_uppercase()),
    );
    let mut spec = BASE32_NOPAD.specification();
    spec.check_trailing_bits = false;
    let base32 = spec.encoding().ok()?;
    // All the symbols, or all but a last one that completes no byte.
    let whole = base32
        .decode_len(symbols.len())
        .map_or_else(|e| e.position, |_| symbols.len());
    let (body, dropped) = symbols.split_at(whole);
    if !dropped
        .iter()
        .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(c))
    {
        return None;
    }
    let mut out = Zeroizing::new(vec![0; base32.decode_len(body.len()).ok()?]);
    base32.decode_mut(body, &mut out).ok()?;
    Some(out)
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

/// Why a secret was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum SecretError {
    /// Not valid RFC 4648 base32.
    NotBase32,
    /// Decoded to this many bits; 128 to 512 are allowed.
    BadLength(usize),
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::NotBase32 => f.write_str("the secret is not valid base32 (A-Z, 2-7)"),
            SecretError::BadLength(bits) => write!(
                f,
                "the secret has {bits} bits; 128 to 512 are required (160 is usual; 80 for imports)"
            ),
        }
    }
}

impl std::error::Error for SecretError {}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4648 §10 test vectors, padded and unpadded, either case; a
    /// secret is written in the unpadded upper-case form.
    #[test]
    fn base32_decodes_the_rfc_4648_vectors() {
        let vectors: [(&str, &[u8]); 7] = [
            ("", b""),
            ("MY======", b"f"),
            ("MZXQ====", b"fo"),
            ("MZXW6===", b"foo"),
            ("MZXW6YQ=", b"foob"),
            ("MZXW6YTB", b"fooba"),
            ("MZXW6YTBOI======", b"foobar"),
        ];
        for (text, bytes) in vectors {
            for form in [text.to_string(), text.trim_end_matches('=').to_lowercase()] {
                assert_eq!(
                    decode_base32(&form).as_deref().map(Vec::as_slice),
                    Some(bytes),
                    "{form}"
                );
            }
            assert_eq!(
                SecretKey::new(bytes.to_vec()).to_base32().as_str(),
                text.trim_end_matches('=')
            );
        }
    }

    /// Our base32 reader answers as totp-rs's (the `base32` crate) does for
    /// the same cleaned text: bytes, dropped trailing bits, and refusals;
    /// our writer gives the same text as totp-rs's.
    #[test]
    fn base32_agrees_with_totp_rs() {
        for len in 0..=64u8 {
            let bytes: Vec<u8> = (0..len).map(|b| b.wrapping_mul(37) ^ len).collect();
            assert_eq!(
                SecretKey::new(bytes.clone()).to_base32().as_str(),
                totp_rs::Secret::from(bytes).to_base32()
            );
        }
        let old = |text: &str| {
            let clean: String = text
                .chars()
                .filter(|c| !matches!(c, ' ' | '-' | '='))
                .map(|c| c.to_ascii_uppercase())
                .collect();
            totp_rs::Secret::try_from_base32(clean)
                .ok()
                .map(|s| s.as_bytes().to_vec())
        };
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567abcz -=0189!é\u{0}";
        let chars: Vec<char> = alphabet.chars().collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..80 {
            for _ in 0..60 {
                let text: String = (0..len)
                    .map(|_| {
                        seed ^= seed << 13;
                        seed ^= seed >> 7;
                        seed ^= seed << 17;
                        // Mostly the alphabet, sometimes anything else.
                        let n = if seed % 8 == 0 { chars.len() } else { 32 };
                        chars[(seed >> 8) as usize % n]
                    })
                    .collect();
                assert_eq!(
                    decode_base32(&text).map(|b| b.to_vec()),
                    old(&text),
                    "{text:?}"
                );
            }
        }
        let secret = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";
        assert_eq!(decode_base32(secret).map(|b| b.to_vec()), old(secret));
        assert_eq!(
            decode_base32("gezd gnbv-gy3t===").map(|b| b.to_vec()),
            old("gezd gnbv-gy3t===")
        );
    }

    /// Secrets shorter than 128 bits or not base32 are refused.
    #[test]
    fn short_or_invalid_secrets_are_refused() {
        assert_eq!(
            SecretKey::from_base32("JBSWY3DPEHPK3PXP"),
            Err(SecretError::BadLength(80))
        );
        assert_eq!(
            SecretKey::from_base32("not base32!"),
            Err(SecretError::NotBase32)
        );
        let ok = SecretKey::from_base32("gezd gnbv gy3t qojq gezd gnbv gy3t qojq").unwrap();
        assert_eq!(ok.as_bytes(), b"12345678901234567890");
        assert_eq!(ok.to_base32().as_str(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(format!("{ok:?}"), "SecretKey([redacted])");
    }
}
