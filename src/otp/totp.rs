//! TOTP (RFC 6238) over HOTP (RFC 4226): pure functions of secret,
//! parameters and time, over RustCrypto's HMAC; the tests hold each code to
//! the RFC vectors and to totp-rs, an independent implementation.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, Zeroizing};

use super::SecretKey;

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

/// How codes are made for one device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TotpParams {
    pub algorithm: Algorithm,
    pub digits: u8,
    pub period: u32,
}

/// An HMAC keyed once per check and cloned for each step it computes.
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
/// then the others, oldest first. Which step matched is not a secret (the
/// user typed the code), so stopping at the first fresh match leaks
/// nothing. If one code matched two fresh steps (a 6-digit collision), the
/// middle one is recorded, which only makes the replay rule stricter.
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
