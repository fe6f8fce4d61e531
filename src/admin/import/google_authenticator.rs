//! google-authenticator's `~/.google_authenticator` file, as its README
//! and FILEFORMAT describe it: a base32 secret, `" OPTION` lines, and
//! 8-digit scratch codes.

use super::MIN_IMPORT_BITS;
use crate::otp::{Algorithm, SecretKey, TotpParams};

/// A google-authenticator file, ready to enroll.
#[derive(Debug, PartialEq, Eq)]
pub struct GoogleAuthenticator {
    pub secret: SecretKey,
    pub params: TotpParams,
    /// The 8-digit scratch codes, to become hashed backup codes.
    pub scratch_codes: Vec<String>,
    /// Options we read and did not carry over, with why.
    pub notes: Vec<String>,
}

/// Why a google-authenticator file was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum ImportError {
    /// Counter-based (HOTP) files cannot become TOTP enrollments.
    Hotp,
    /// The first line is not a usable base32 secret.
    Secret(String),
    /// A line we do not understand.
    Line(usize, String),
}

impl std::fmt::Display for ImportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ImportError::Hotp => f.write_str(
                "this is a counter-based (HOTP) file; only time-based (TOTP) enrollments can be imported: re-enroll the user",
            ),
            ImportError::Secret(e) => write!(f, "line 1: {e}"),
            ImportError::Line(n, e) => write!(f, "line {n}: {e}"),
        }
    }
}

impl std::error::Error for ImportError {}

/// Parses a `~/.google_authenticator` file.
pub fn parse_google_authenticator(text: &str) -> Result<GoogleAuthenticator, ImportError> {
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("").trim();
    let secret = SecretKey::from_base32_min(first, MIN_IMPORT_BITS)
        .map_err(|e| ImportError::Secret(e.to_string()))?;
    let mut params = TotpParams {
        algorithm: Algorithm::Sha1,
        digits: 6,
        period: 30,
    };
    let mut notes = Vec::new();
    let mut scratch_codes = Vec::new();
    for (i, line) in lines.enumerate() {
        let n = i + 2;
        let line = line.trim_end_matches('\r');
        if let Some(option) = line.strip_prefix("\" ") {
            let words: Vec<&str> = option.split_whitespace().collect();
            match words.as_slice() {
                ["TOTP_AUTH"] => {}
                ["HOTP_COUNTER", ..] => return Err(ImportError::Hotp),
                ["STEP_SIZE", s] => {
                    params.period = s
                        .parse()
                        .ok()
                        .filter(|p| crate::otp::PERIODS.contains(p))
                        .ok_or_else(|| ImportError::Line(n, format!("STEP_SIZE {s} is not 10..300")))?;
                }
                ["WINDOW_SIZE", w] => notes.push(format!(
                    "WINDOW_SIZE {w} ignored: the window is [totp] window in the config (clock drift is learned per device)"
                )),
                ["RATE_LIMIT", ..] => notes.push(
                    "RATE_LIMIT ignored: use [rate_limit] in the config".into(),
                ),
                ["DISALLOW_REUSE", ..] => {
                    notes.push("DISALLOW_REUSE: codes are always accepted once".into())
                }
                _ => notes.push(format!("option {:?} ignored", crate::records::username::escape(option))),
            }
        } else if line.len() == 8 && line.bytes().all(|b| b.is_ascii_digit()) {
            scratch_codes.push(line.to_string());
        } else if line.trim().is_empty() {
        } else {
            return Err(ImportError::Line(
                n,
                "neither an option nor an 8-digit scratch code".into(),
            ));
        }
    }
    Ok(GoogleAuthenticator {
        secret,
        params,
        scratch_codes,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TOTP google-authenticator file: secret, step, scratch codes, notes.
    #[test]
    fn google_authenticator_totp_file_is_read() {
        let text = "JBSWY3DPEHPK3PXP\n\" RATE_LIMIT 3 30 1400000000\n\" WINDOW_SIZE 17\n\" DISALLOW_REUSE 46666666\n\" TOTP_AUTH\n\" STEP_SIZE 60\n12345678\n87654321\n";
        let ga = parse_google_authenticator(text).unwrap();
        assert_eq!(ga.secret.to_base32().as_str(), "JBSWY3DPEHPK3PXP");
        assert_eq!(ga.params.period, 60);
        assert_eq!(ga.scratch_codes, vec!["12345678", "87654321"]);
        assert_eq!(ga.notes.len(), 3, "{:?}", ga.notes);
    }

    /// HOTP files and bad secrets are refused with a reason.
    #[test]
    fn hotp_and_bad_files_are_refused() {
        assert_eq!(
            parse_google_authenticator("JBSWY3DPEHPK3PXP\n\" HOTP_COUNTER 1\n"),
            Err(ImportError::Hotp)
        );
        assert!(matches!(
            parse_google_authenticator("notbase32!\n"),
            Err(ImportError::Secret(_))
        ));
        assert!(matches!(
            parse_google_authenticator("JBSWY3DP\n"),
            Err(ImportError::Secret(_))
        ));
        assert!(matches!(
            parse_google_authenticator("JBSWY3DPEHPK3PXP\nrm -rf /\n"),
            Err(ImportError::Line(2, _))
        ));
    }
}
