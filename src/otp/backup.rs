//! One-time backup codes: 16 random decimal digits (53 bits, above the 50
//! bits ../shared/SECURITY.md asks for) shown once as `1234-5678-9012-3456`
//! and stored only as argon2id hashes (NIST SP 800-63B §5.1.2.2).
//!
//! All codes of one set share one random salt, so checking a typed code costs
//! one argon2 run however many codes are left, and the hash can be computed
//! before the user's lock is taken.

use std::fmt;

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::records::BackupSet;

/// Digits in a backup code.
pub const LENGTH: usize = 16;
/// Bytes of salt per set.
pub const SALT_BYTES: usize = 16;
/// Bytes of each stored hash.
pub const HASH_BYTES: usize = 32;

/// Argon2id cost for a set (OWASP's second recommended profile).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_cost: u32,
    /// Passes.
    pub t_cost: u32,
    /// Lanes.
    pub p_cost: u32,
}

impl KdfParams {
    /// What new sets use: 19 MiB, 2 passes, 1 lane.
    pub const DEFAULT: KdfParams = KdfParams {
        m_cost: 19_456,
        t_cost: 2,
        p_cost: 1,
    };

    fn params(self) -> Option<argon2::Params> {
        argon2::Params::new(self.m_cost, self.t_cost, self.p_cost, Some(HASH_BYTES)).ok()
    }

    /// Built only to hash: `Argon2::new` probes the CPU (CPUID, a trap to
    /// the hypervisor in a VM) in every process that loads the module, so
    /// a TOTP login, which never hashes, must not build one.
    fn argon2(self) -> Option<argon2::Argon2<'static>> {
        Some(argon2::Argon2::new(
            argon2::Algorithm::Argon2id,
            argon2::Version::V0x13,
            self.params()?,
        ))
    }

    /// Whether argon2 accepts these parameters (checked when records load).
    pub fn is_valid(self) -> bool {
        self.m_cost <= 262_144 && self.t_cost <= 16 && self.params().is_some()
    }
}

/// A backup code as typed or generated: exactly 16 ASCII digits.
#[derive(Clone, PartialEq, Eq)]
pub struct BackupCode(Zeroizing<String>);

impl fmt::Debug for BackupCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BackupCode([redacted])")
    }
}

impl BackupCode {
    /// Accepts 16 ASCII digits (already stripped of spaces and dashes).
    pub fn parse(digits: &str) -> Option<BackupCode> {
        (digits.len() == LENGTH && digits.bytes().all(|b| b.is_ascii_digit()))
            .then(|| BackupCode(Zeroizing::new(digits.to_string())))
    }

    /// The grouped form shown to people: `1234-5678-9012-3456`.
    pub fn grouped(&self) -> Zeroizing<String> {
        let digits = self.0.as_bytes();
        let groups: Vec<&str> = digits
            .chunks(4)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect();
        Zeroizing::new(groups.join("-"))
    }

    /// The argon2id hash of this code with a set's salt and cost.
    pub fn hash(&self, salt: &[u8], kdf: KdfParams) -> Option<[u8; HASH_BYTES]> {
        hash_digits(&self.0, salt, kdf)
    }
}

/// The argon2id hash of typed digits (backup, imported or delivered codes).
pub fn hash_digits(digits: &str, salt: &[u8], kdf: KdfParams) -> Option<[u8; HASH_BYTES]> {
    let mut out = [0u8; HASH_BYTES];
    kdf.argon2()?
        .hash_password_into(digits.as_bytes(), salt, &mut out)
        .ok()?;
    Some(out)
}

/// A random code of `digits` ASCII digits (for delivery), uniform.
pub fn random_digits(digits: u8) -> Option<Zeroizing<String>> {
    let limit = 10u64.checked_pow(u32::from(digits))?;
    let zone = u64::MAX - u64::MAX % limit;
    loop {
        let value = u64::from_le_bytes(random_bytes::<8>()?);
        if value < zone {
            return Some(Zeroizing::new(format!(
                "{:0width$}",
                value % limit,
                width = usize::from(digits)
            )));
        }
    }
}

/// Random bytes from the OS; `None` if the generator fails (we then refuse).
pub fn random_bytes<const N: usize>() -> Option<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).ok()?;
    Some(buf)
}

/// A fresh random code, uniform over all 10^16 values (rejection sampling).
pub fn generate() -> Option<BackupCode> {
    random_digits(LENGTH as u8).and_then(|digits| BackupCode::parse(&digits))
}

/// A fresh backup-code set: one random salt, `count` codes.
pub fn new_backup_set(count: u32, now: u64) -> Option<(BackupSet, Vec<BackupCode>)> {
    let salt = random_bytes::<SALT_BYTES>()?;
    let kdf = KdfParams::DEFAULT;
    let mut codes = Vec::new();
    let mut hashes = Vec::new();
    while codes.len() < count as usize {
        let code = generate()?;
        let hash = code.hash(&salt, kdf)?;
        if !hashes.contains(&hash) {
            hashes.push(hash);
            codes.push(code);
        }
    }
    Some((
        BackupSet {
            created: now,
            digits: LENGTH as u8,
            kdf,
            salt,
            hashes,
        },
        codes,
    ))
}

/// The index of the first stored hash equal to `hash` that is not used,
/// comparing every entry in constant time.
pub fn find_unused(
    hash: &[u8; HASH_BYTES],
    stored: &[[u8; HASH_BYTES]],
    used: &[[u8; HASH_BYTES]],
) -> Option<usize> {
    let mut found = None;
    for (i, candidate) in stored.iter().enumerate() {
        let equal: bool = candidate.ct_eq(hash).into();
        if equal && found.is_none() && !used.contains(candidate) {
            found = Some(i);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Generated codes are 16 digits, differ, and group as 4-4-4-4.
    #[test]
    fn generated_codes_are_sixteen_random_digits() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        let grouped = a.grouped();
        assert_eq!(grouped.len(), 19);
        assert_eq!(grouped.matches('-').count(), 3);
        assert!(BackupCode::parse(&grouped.replace('-', "")).is_some());
    }

    /// Only exactly 16 ASCII digits parse; other scripts' digits do not.
    #[test]
    fn only_sixteen_ascii_digits_parse() {
        assert!(BackupCode::parse("0123456789012345").is_some());
        assert!(BackupCode::parse("012345678901234").is_none());
        assert!(BackupCode::parse("01234567890123456").is_none());
        assert!(BackupCode::parse("٠١٢٣٤٥٦٧٨٩٠١٢٣٤٥").is_none());
    }

    /// The same code and salt hash the same; another salt or code does not.
    #[test]
    fn hash_depends_on_code_and_salt() {
        let kdf = KdfParams {
            m_cost: 64,
            t_cost: 1,
            p_cost: 1,
        };
        let code = BackupCode::parse("1111222233334444").unwrap();
        let other = BackupCode::parse("1111222233334445").unwrap();
        let salt = [7u8; SALT_BYTES];
        let h = code.hash(&salt, kdf).unwrap();
        assert_eq!(h, code.hash(&salt, kdf).unwrap());
        assert_ne!(h, code.hash(&[8u8; SALT_BYTES], kdf).unwrap());
        assert_ne!(h, other.hash(&salt, kdf).unwrap());
    }

    /// A used hash is never found again; an unused twin still is.
    #[test]
    fn used_codes_are_not_found() {
        let stored = [[1u8; 32], [2u8; 32], [3u8; 32]];
        assert_eq!(find_unused(&[2u8; 32], &stored, &[]), Some(1));
        assert_eq!(find_unused(&[2u8; 32], &stored, &[[2u8; 32]]), None);
        assert_eq!(find_unused(&[9u8; 32], &stored, &[]), None);
    }

    /// The debug form never shows the digits.
    #[test]
    fn debug_is_redacted() {
        let code = BackupCode::parse("1234567812345678").unwrap();
        assert_eq!(format!("{code:?}"), "BackupCode([redacted])");
    }
}
