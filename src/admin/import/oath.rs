//! pam_oath's users file, as oath-toolkit's manual describes it: one
//! `TYPE USER PIN SECRET ...` line per token.

use super::MIN_IMPORT_BITS;
use crate::otp::{Algorithm, SecretKey, TotpParams};

/// One usable line of a pam_oath users file.
#[derive(Debug, PartialEq, Eq)]
pub struct OathUser {
    pub line: usize,
    pub user: String,
    pub secret: SecretKey,
    pub params: TotpParams,
    pub notes: Vec<String>,
}

/// The users and the skipped lines (line number, why) of a users file.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OathFile {
    pub users: Vec<OathUser>,
    pub skipped: Vec<(usize, String)>,
}

/// Parses a pam_oath users file: `TYPE USER PIN SECRET [COUNTER [OTP [TIME]]]`
/// with TYPE `HOTP/T30`, `HOTP/T60/8` … (time-based) or `HOTP`, `HOTP/E…`
/// (counter-based, skipped). Comments (`#`) and blank lines are ignored.
pub fn parse_oath_usersfile(text: &str) -> OathFile {
    let mut file = OathFile::default();
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 4 {
            file.skipped
                .push((n, "fewer than 4 fields (TYPE USER PIN SECRET)".into()));
            continue;
        }
        let (kind, user, pin, secret_hex) = (fields[0], fields[1], fields[2], fields[3]);
        let params = match parse_oath_type(kind) {
            Ok(p) => p,
            Err(why) => {
                file.skipped.push((n, why));
                continue;
            }
        };
        let Some(mut bytes) = unhex(secret_hex) else {
            file.skipped
                .push((n, "the secret is not hexadecimal".into()));
            continue;
        };
        if bytes.len() * 8 < MIN_IMPORT_BITS || bytes.len() > 64 {
            file.skipped.push((
                n,
                format!(
                    "the secret has {} bits; 80 to 512 are needed",
                    bytes.len() * 8
                ),
            ));
            continue;
        }
        if file.users.iter().any(|u| u.user == user) {
            file.skipped.push((
                n,
                format!(
                    "{} appears again; the first line is kept",
                    crate::records::username::escape(user)
                ),
            ));
            continue;
        }
        let mut notes = Vec::new();
        if pin != "-" {
            notes.push("PIN dropped: the password step before the module takes its place".into());
        }
        file.users.push(OathUser {
            line: n,
            user: user.to_string(),
            secret: SecretKey::new(std::mem::take(&mut *bytes)),
            params,
            notes,
        });
    }
    file
}

/// `HOTP/T30` → SHA1, 6 digits, 30 s; `HOTP/T60/8` → 60 s, 8 digits.
fn parse_oath_type(kind: &str) -> Result<TotpParams, String> {
    let parts: Vec<&str> = kind.split('/').collect();
    let bad = || {
        format!(
            "unknown token type {:?}",
            crate::records::username::escape(kind)
        )
    };
    if parts.first() != Some(&"HOTP") {
        return Err(bad());
    }
    let Some(time) = parts.get(1).and_then(|p| p.strip_prefix('T')) else {
        return Err(format!(
            "{} is counter-based (HOTP), not time-based: re-enroll this user",
            crate::records::username::escape(kind)
        ));
    };
    let period: u32 = time.parse().map_err(|_| bad())?;
    if !crate::otp::PERIODS.contains(&period) {
        return Err(format!("period {period} is not 10..300"));
    }
    let digits: u8 = match parts.get(2) {
        None => 6,
        Some(d) => d.parse().map_err(|_| bad())?,
    };
    if !crate::otp::DIGITS.contains(&digits) || parts.len() > 3 {
        return Err(bad());
    }
    Ok(TotpParams {
        algorithm: Algorithm::Sha1,
        digits,
        period,
    })
}

/// The seed's bytes (either case), wiped on drop. (A pair such as `+f`,
/// which `u8::from_str_radix` would take, is not hex.)
fn unhex(text: &str) -> Option<zeroize::Zeroizing<Vec<u8>>> {
    data_encoding::HEXLOWER_PERMISSIVE
        .decode(text.as_bytes())
        .ok()
        .map(zeroize::Zeroizing::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// pam_oath lines: TOTP imported with parameters, the rest skipped with why.
    #[test]
    fn oath_usersfile_lines_are_imported_or_explained() {
        let text = "# comment\nHOTP/T30 alice - 3132333435363738393031323334353637383930\nHOTP/T60/8 bob 1234 3132333435363738393031323334353637383930 0 123456 2020-01-01T00:00:00L\nHOTP carol - 3132333435363738393031323334353637383930\nHOTP/E/8 dave - 3132333435363738393031323334353637383930\nHOTP/T30 erin - zz\nHOTP/T30 alice - 3132333435363738393031323334353637383930\nHOTP/T30/9 frank - 3132333435363738393031323334353637383930\nHOTP/T30 gina -\n";
        let f = parse_oath_usersfile(text);
        let users: Vec<(&str, u32, u8)> = f
            .users
            .iter()
            .map(|u| (u.user.as_str(), u.params.period, u.params.digits))
            .collect();
        assert_eq!(users, vec![("alice", 30, 6), ("bob", 60, 8)]);
        assert_eq!(f.users[0].secret.as_bytes(), b"12345678901234567890");
        assert_eq!(f.users[1].notes.len(), 1);
        let skipped: Vec<usize> = f.skipped.iter().map(|(n, _)| *n).collect();
        assert_eq!(skipped, vec![4, 5, 6, 7, 8, 9]);
        assert!(f.skipped[0].1.contains("counter-based"));
        assert!(f.skipped[2].1.contains("hexadecimal"));
        assert!(f.skipped[3].1.contains("again"));
    }
}
