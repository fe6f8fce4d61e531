//! TOTP (RFC 6238) over HOTP (RFC 4226): pure functions of secret, parameters
//! and time, over RustCrypto's HMAC; the tests hold each code to the RFC
//! vectors and to totp-rs, an independent implementation.

pub mod backup;
pub mod enroll;

use std::fmt;

use data_encoding::BASE32_NOPAD;
use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

/// The HMAC hash behind the codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// HMAC-SHA1: what every app supports.
    Sha1,
    /// HMAC-SHA256.
    Sha256,
    /// HMAC-SHA512.
    Sha512,
}

impl Algorithm {
    /// Parses the name used in config files, records and otpauth URIs.
    pub fn parse(name: &str) -> Option<Algorithm> {
        match name {
            "SHA1" => Some(Algorithm::Sha1),
            "SHA256" => Some(Algorithm::Sha256),
            "SHA512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    /// The canonical name (`SHA1`, `SHA256`, `SHA512`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }

    #[cfg(test)]
    fn to_totp_rs(self) -> totp_rs::Algorithm {
        match self {
            Algorithm::Sha1 => totp_rs::Algorithm::SHA1,
            Algorithm::Sha256 => totp_rs::Algorithm::SHA256,
            Algorithm::Sha512 => totp_rs::Algorithm::SHA512,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Digits: RFC 4226 §5.3 allows 6 to 8.
pub const DIGITS: std::ops::RangeInclusive<u8> = 6..=8;
/// Periods we accept, in seconds.
pub const PERIODS: std::ops::RangeInclusive<u32> = 10..=300;
/// Secret sizes in bytes: at least 128 bits (RFC 4226 §4), at most 512.
pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 16..=64;

/// How codes are made for one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TotpParams {
    pub algorithm: Algorithm,
    pub digits: u8,
    pub period: u32,
}

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

/// HMAC keyed once per check: the key schedule (two hash blocks) is done
/// once and cloned per step, halving the work of every code.
#[derive(Clone)]
enum KeyedMac {
    Sha1(Hmac<sha1::Sha1>),
    Sha256(Hmac<sha2::Sha256>),
    Sha512(Hmac<sha2::Sha512>),
}

impl KeyedMac {
    fn new(algorithm: Algorithm, key: &[u8]) -> Option<KeyedMac> {
        Some(match algorithm {
            Algorithm::Sha1 => KeyedMac::Sha1(Hmac::new_from_slice(key).ok()?),
            Algorithm::Sha256 => KeyedMac::Sha256(Hmac::new_from_slice(key).ok()?),
            Algorithm::Sha512 => KeyedMac::Sha512(Hmac::new_from_slice(key).ok()?),
        })
    }

    /// RFC 4226 §5.3: HMAC of the counter, dynamic truncation, modulo.
    fn hotp(&self, counter: u64, digits: u8) -> u32 {
        let message = counter.to_be_bytes();
        let mut out = [0u8; 64];
        let len = match self.clone() {
            KeyedMac::Sha1(mut m) => {
                m.update(&message);
                let tag = m.finalize().into_bytes();
                out[..tag.len()].copy_from_slice(&tag);
                tag.len()
            }
            KeyedMac::Sha256(mut m) => {
                m.update(&message);
                let tag = m.finalize().into_bytes();
                out[..tag.len()].copy_from_slice(&tag);
                tag.len()
            }
            KeyedMac::Sha512(mut m) => {
                m.update(&message);
                let tag = m.finalize().into_bytes();
                out[..tag.len()].copy_from_slice(&tag);
                tag.len()
            }
        };
        let offset = usize::from(out[len - 1] & 0x0f);
        let binary = u32::from_be_bytes([
            out[offset],
            out[offset + 1],
            out[offset + 2],
            out[offset + 3],
        ]) & 0x7fff_ffff;
        out.zeroize();
        binary % 10u32.pow(u32::from(digits))
    }
}

/// Writes `value` as exactly `digits` ASCII digits (leading zeros kept).
fn format_code(value: u32, digits: u8, buf: &mut [u8; 8]) -> &[u8] {
    let n = usize::from(digits).min(8);
    let mut v = value;
    for slot in buf[..n].iter_mut().rev() {
        *slot = b'0' + (v % 10) as u8;
        v /= 10;
    }
    &buf[..n]
}

fn usable(secret: &SecretKey, params: TotpParams) -> bool {
    DIGITS.contains(&params.digits)
        && PERIODS.contains(&params.period)
        && !secret.as_bytes().is_empty()
}

/// The code for time step `step` (RFC 6238 T), zero-padded to `digits`.
pub fn code_at_step(
    secret: &SecretKey,
    params: TotpParams,
    step: u64,
) -> Option<Zeroizing<String>> {
    if !usable(secret, params) {
        return None;
    }
    let mac = KeyedMac::new(params.algorithm, secret.as_bytes())?;
    let mut buf = [0u8; 8];
    let code = format_code(mac.hotp(step, params.digits), params.digits, &mut buf);
    let text = Zeroizing::new(String::from_utf8_lossy(code).into_owned());
    buf.zeroize();
    Some(text)
}

/// The time step that contains `now`.
pub fn step_at(now: u64, period: u32) -> u64 {
    now / u64::from(period.max(1))
}

/// What a typed code matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeMatch {
    /// A step inside the window newer than the last accepted one.
    Fresh(u64),
    /// Only steps at or before the last accepted one (RFC 6238 §5.2 replay).
    Replayed(u64),
    /// No step in the window.
    None,
}

/// Looks for `code` among the steps `now ± window`. Candidates are compared
/// in constant time; the middle step wins if fresh, else the oldest fresh.
pub fn match_code(
    secret: &SecretKey,
    params: TotpParams,
    code: &str,
    now: u64,
    window: u32,
    last_accepted_step: Option<u64>,
) -> CodeMatch {
    let current = step_at(now, params.period);
    let first = current.saturating_sub(u64::from(window));
    let last = current.saturating_add(u64::from(window));
    match_in_steps(secret, params, code, first, last, last_accepted_step)
}

/// Looks for `code` among the steps `first..=last` (see `match_code`).
///
/// The middle step (where a device with a right clock is) is tried first,
/// so the usual login computes one HMAC instead of `2 × window + 1`; then
/// the others, oldest first. Which step matched is not a secret (the user
/// typed the code), so stopping early leaks nothing. If one code matched
/// two fresh steps (a 6-digit collision), the middle one is recorded,
/// which only makes the replay rule stricter.
pub fn match_in_steps(
    secret: &SecretKey,
    params: TotpParams,
    code: &str,
    first: u64,
    last: u64,
    last_accepted_step: Option<u64>,
) -> CodeMatch {
    if !usable(secret, params) || code.len() != usize::from(params.digits) || first > last {
        return CodeMatch::None;
    }
    let Some(mac) = KeyedMac::new(params.algorithm, secret.as_bytes()) else {
        return CodeMatch::None;
    };
    let mut replayed = None;
    let mut buf = [0u8; 8];
    let middle = first + (last - first) / 2; // first <= last, checked above
    let others = (first..=last).filter(|&s| s != middle);
    for step in std::iter::once(middle).chain(others) {
        let expected = format_code(mac.hotp(step, params.digits), params.digits, &mut buf);
        let equal: bool = expected.ct_eq(code.as_bytes()).into();
        if equal {
            if last_accepted_step.is_some_and(|seen| step <= seen) {
                replayed.get_or_insert(step);
            } else {
                buf.zeroize();
                return CodeMatch::Fresh(step);
            }
        }
    }
    buf.zeroize();
    match replayed {
        Some(step) => CodeMatch::Replayed(step),
        None => CodeMatch::None,
    }
}

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

    const SEED20: &[u8] = b"12345678901234567890";
    const SEED32: &[u8] = b"12345678901234567890123456789012";
    const SEED64: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    fn params(algorithm: Algorithm, digits: u8) -> TotpParams {
        TotpParams {
            algorithm,
            digits,
            period: 30,
        }
    }

    fn code_at_time(seed: &[u8], algorithm: Algorithm, time: u64) -> String {
        let secret = SecretKey::new(seed.to_vec());
        code_at_step(&secret, params(algorithm, 8), time / 30)
            .unwrap()
            .to_string()
    }

    /// RFC 6238 Appendix B, every row, all three algorithms (8 digits).
    #[test]
    fn rfc6238_appendix_b_vectors() {
        let table: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1_111_111_109, "07081804", "68084774", "25091201"),
            (1_111_111_111, "14050471", "67062674", "99943326"),
            (1_234_567_890, "89005924", "91819424", "93441116"),
            (2_000_000_000, "69279037", "90698825", "38618901"),
            (20_000_000_000, "65353130", "77737706", "47863826"),
        ];
        for (time, sha1, sha256, sha512) in table {
            assert_eq!(
                code_at_time(SEED20, Algorithm::Sha1, time),
                sha1,
                "SHA1 {time}"
            );
            assert_eq!(
                code_at_time(SEED32, Algorithm::Sha256, time),
                sha256,
                "SHA256 {time}"
            );
            assert_eq!(
                code_at_time(SEED64, Algorithm::Sha512, time),
                sha512,
                "SHA512 {time}"
            );
        }
    }

    /// RFC 4226 Appendix D: HOTP values for counters 0..9 (6 digits).
    #[test]
    fn rfc4226_appendix_d_vectors() {
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        let secret = SecretKey::new(SEED20.to_vec());
        for (counter, want) in expected.iter().enumerate() {
            let got = code_at_step(&secret, params(Algorithm::Sha1, 6), counter as u64).unwrap();
            assert_eq!(got.as_str(), *want, "counter {counter}");
        }
    }

    /// Codes one step either side match with window 1; two steps away do not.
    #[test]
    fn window_edges_are_exact() {
        let secret = SecretKey::new(SEED20.to_vec());
        let p = params(Algorithm::Sha1, 6);
        let now = 1_000_000_020; // step 33_333_334
        let step = step_at(now, 30);
        for (offset, expect_match) in [(-2i64, false), (-1, true), (0, true), (1, true), (2, false)]
        {
            let target = step.checked_add_signed(offset).unwrap();
            let code = code_at_step(&secret, p, target).unwrap();
            let got = match_code(&secret, p, &code, now, 1, None);
            if expect_match {
                assert_eq!(got, CodeMatch::Fresh(target), "offset {offset}");
            } else {
                assert_eq!(got, CodeMatch::None, "offset {offset}");
            }
        }
    }

    /// A code whose step is not newer than the last accepted one is a replay.
    #[test]
    fn step_not_newer_than_last_accepted_is_replayed() {
        let secret = SecretKey::new(SEED20.to_vec());
        let p = params(Algorithm::Sha1, 6);
        let now = 1_000_000_020;
        let step = step_at(now, 30);
        let code = code_at_step(&secret, p, step).unwrap();
        assert_eq!(
            match_code(&secret, p, &code, now, 1, Some(step)),
            CodeMatch::Replayed(step)
        );
        assert_eq!(
            match_code(&secret, p, &code, now, 1, Some(step + 5)),
            CodeMatch::Replayed(step)
        );
        assert_eq!(
            match_code(&secret, p, &code, now, 1, Some(step - 1)),
            CodeMatch::Fresh(step)
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
        assert_eq!(ok.as_bytes(), SEED20);
        assert_eq!(ok.to_base32().as_str(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        assert_eq!(format!("{ok:?}"), "SecretKey([redacted])");
    }

    /// Our HOTP agrees with totp-rs (an independent implementation) for
    /// every algorithm, digit count and many steps and secret lengths.
    #[test]
    fn agrees_with_totp_rs() {
        for algorithm in [Algorithm::Sha1, Algorithm::Sha256, Algorithm::Sha512] {
            for digits in 6..=8u8 {
                for (i, len) in [10usize, 16, 20, 32, 64].into_iter().enumerate() {
                    let key: Vec<u8> = (0..len).map(|b| (b * 7 + i) as u8).collect();
                    let totp = totp_rs::Builder::new()
                        .with_algorithm(algorithm.to_totp_rs())
                        .with_digits(digits)
                        .with_step_duration(30)
                        .with_secret(key.clone())
                        .build_noncompliant();
                    let p = TotpParams {
                        algorithm,
                        digits,
                        period: 30,
                    };
                    for step in [0u64, 1, 59, 63_591_840, 1 << 40] {
                        let ours = code_at_step(&SecretKey::new(key.clone()), p, step).unwrap();
                        assert_eq!(ours.as_str(), totp.generate(step * 30).to_string());
                    }
                }
            }
        }
    }
}
