//! The files an admin hands to `twofactor`: the seed for
//! `enroll --secret-file` and the file to `import` from. Read once,
//! bounded, without following a symlink, and wiped when dropped.

use std::io::Read;
use std::path::Path;

use zeroize::Zeroizing;

use super::AdminError;
use crate::otp::SecretError;
use crate::store::{self, Named};

/// The most `enroll --secret-file` reads: a 512-bit secret is 103 base32
/// letters (129 in groups of four), so 1 KiB holds any secret with its
/// padding and newline, and nothing much else.
pub const MAX_SECRET_INPUT: u64 = 1024;

/// The most an import file may hold (a pam_oath users file of thousands
/// of users fits).
pub const MAX_IMPORT_BYTES: u64 = 1 << 20;

/// The seed for `enroll --secret-file PATH`, surrounding whitespace
/// trimmed: from `stdin` for `-`, else from a regular file that only root
/// (or the caller) can read, opened without following a symlink or
/// blocking on a FIFO ([`store::read_named`]). Never from the command
/// line: every local user can read `/proc/PID/cmdline`. The bytes read
/// are wiped; the caller wipes the returned text.
pub fn read_secret_file(path: &Path, stdin: impl Read) -> Result<Zeroizing<String>, AdminError> {
    let bytes = if path == Path::new("-") {
        match store::read_at_most(stdin, MAX_SECRET_INPUT) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Err(AdminError::BadOption(format!(
                    "--secret-file -: more than {MAX_SECRET_INPUT} bytes on standard input; give one base32 secret"
                )));
            }
            Err(e) => {
                return Err(AdminError::BadOption(format!(
                    "--secret-file -: cannot read standard input: {e}"
                )));
            }
        }
    } else {
        store::read_named(path, Named::Seed, MAX_SECRET_INPUT)?
    };
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| AdminError::BadSecret(SecretError::NotBase32))?
        .trim();
    if text.is_empty() {
        return Err(AdminError::BadOption(format!(
            "--secret-file {}: no secret there (give one base32 secret)",
            path.display()
        )));
    }
    let mut secret = Zeroizing::new(String::with_capacity(text.len()));
    secret.push_str(text);
    Ok(secret)
}

/// A file to import from (`import --google-authenticator FILE`,
/// `--oath-usersfile FILE`): a regular file of at most
/// [`MAX_IMPORT_BYTES`], opened once without following a symlink or
/// blocking on a FIFO ([`store::read_named`]) — the google-authenticator
/// file sits in a directory its user controls. The bytes (seeds) are
/// wiped on drop.
pub fn read_import_file(path: &Path) -> Result<ImportText, AdminError> {
    let bytes = store::read_named(path, Named::Import, MAX_IMPORT_BYTES)?;
    if std::str::from_utf8(&bytes).is_err() {
        return Err(AdminError::BadOption(format!(
            "{}: not UTF-8 text",
            path.display()
        )));
    }
    Ok(ImportText(bytes))
}

/// The text of an import file, wiped on drop.
pub struct ImportText(Zeroizing<Vec<u8>>);

impl ImportText {
    pub fn as_str(&self) -> &str {
        // Checked to be UTF-8 by `read_import_file`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--secret-file -`: the secret is trimmed; nothing, only blanks, or
    /// more than 1 KiB on stdin is refused with exit 7.
    #[test]
    fn secret_from_stdin_is_trimmed_and_bounded() {
        let stdin = Path::new("-");
        let secret = read_secret_file(stdin, &b" \tGEZD GNBV\r\n"[..]).unwrap();
        assert_eq!(secret.as_str(), "GEZD GNBV");
        let full = vec![b'A'; MAX_SECRET_INPUT as usize];
        assert_eq!(read_secret_file(stdin, &full[..]).unwrap().len(), 1024);
        let over = vec![b'A'; MAX_SECRET_INPUT as usize + 1];
        let err = read_secret_file(stdin, &over[..]).unwrap_err();
        assert_eq!(err.exit_code(), 7, "{err}");
        assert!(err.to_string().contains("more than 1024 bytes"), "{err}");
        for empty in [&b""[..], &b" \n\n"[..]] {
            let err = read_secret_file(stdin, empty).unwrap_err();
            assert_eq!(err.exit_code(), 7, "{err}");
            assert!(err.to_string().contains("no secret"), "{err}");
        }
        let err = read_secret_file(stdin, &b"\xff\xfe"[..]).unwrap_err();
        assert!(matches!(err, AdminError::BadSecret(_)), "{err}");
    }
}
