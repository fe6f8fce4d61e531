//! User names from PAM, validated before they can reach a path.
//!
//! CVE-2014-2583 / CVE-2023-42456: a name like `..` or `a/b` must never be
//! joined to a directory. We accept the portable POSIX set that Debian's
//! `adduser` allows by default (letters, digits, `_`, `.`, `-`, not starting
//! with `-` or `.`, at most 32 bytes). Any other name is denied by the module
//! after the same prompt as everyone else, and logged escaped.

use std::fmt;

/// The longest name we accept (useradd's limit).
pub const MAX_LEN: usize = 32;

/// A user name that is safe to use as a file name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Username(String);

/// Why a name was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum UsernameError {
    /// The name is empty.
    Empty,
    /// The name is longer than 32 bytes.
    TooLong,
    /// The name has a byte outside the safe set, or starts with `-` or `.`.
    Unsafe,
}

impl fmt::Display for UsernameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UsernameError::Empty => "the user name is empty",
            UsernameError::TooLong => "the user name is longer than 32 bytes",
            UsernameError::Unsafe => {
                "the user name may only contain letters, digits, '_', '.' and '-', and may not start with '-' or '.'"
            }
        })
    }
}

impl std::error::Error for UsernameError {}

impl Username {
    /// Validates a raw name.
    pub fn parse(raw: &str) -> Result<Username, UsernameError> {
        let bytes = raw.as_bytes();
        let Some(first) = bytes.first() else {
            return Err(UsernameError::Empty);
        };
        if bytes.len() > MAX_LEN {
            return Err(UsernameError::TooLong);
        }
        if *first == b'-' || *first == b'.' {
            return Err(UsernameError::Unsafe);
        }
        let safe = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-');
        if !bytes.iter().all(safe) {
            return Err(UsernameError::Unsafe);
        }
        Ok(Username(raw.to_string()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name and a suffix, without `core::fmt` (three per login).
    fn with_suffix(&self, suffix: &str) -> FileName {
        let mut name = FileName {
            bytes: [0; FILE_NAME_MAX],
            len: 0,
        };
        for part in [self.0.as_bytes(), suffix.as_bytes()] {
            let end = name.len + part.len();
            match name.bytes.get_mut(name.len..end) {
                Some(slot) => slot.copy_from_slice(part),
                // Cannot happen (names are at most MAX_LEN bytes); if it
                // did, the name would be the sentinel below, never a
                // shorter name.
                None => return FileName::INVALID,
            }
            name.len = end;
        }
        name
    }

    /// File holding the secret record (written only by the CLI).
    pub fn secret_file(&self) -> FileName {
        self.with_suffix(".secret")
    }

    /// File holding the mutable state (written under the user's lock).
    pub fn state_file(&self) -> FileName {
        self.with_suffix(".state")
    }

    /// The per-user lock file, never unlinked.
    pub fn lock_file(&self) -> FileName {
        self.with_suffix(".lock")
    }
}

/// Room for the longest name plus the longest suffix (`.secret`).
const FILE_NAME_MAX: usize = MAX_LEN + 8;

/// A per-user file name (`alice.state`), kept on the stack: a login names
/// its files four or five times and pays no allocation for them.
#[derive(Clone, Copy)]
pub struct FileName {
    bytes: [u8; FILE_NAME_MAX],
    len: usize,
}

impl FileName {
    /// A name no lookup can succeed with: `/` opens the root directory,
    /// which every read, lock and rename refuses, so an impossible name
    /// fails closed (never reads as a missing, unenrolled user's file).
    const INVALID: FileName = FileName {
        bytes: [b'/'; FILE_NAME_MAX],
        len: 1,
    };

    pub fn as_str(&self) -> &str {
        // A validated ASCII name plus an ASCII suffix: never the fallback.
        self.bytes
            .get(..self.len)
            .and_then(|b| std::str::from_utf8(b).ok())
            .unwrap_or("/")
    }
}

impl std::ops::Deref for FileName {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<std::path::Path> for FileName {
    fn as_ref(&self) -> &std::path::Path {
        std::path::Path::new(self.as_str())
    }
}

impl fmt::Debug for FileName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl PartialEq<&str> for FileName {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Escapes anything outside printable ASCII as `\xNN`, for logs and messages
/// that must show a name PAM handed us (log injection, terminal escapes).
pub fn escape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    escape_into(&mut out, raw);
    out
}

/// Appends `raw` to `out`, escaped as by `escape` (no allocation of its own:
/// the PAM door builds every log line's `user=… service=… rhost=…` with it).
pub fn escape_into(out: &mut String, raw: &str) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let plain = |b: u8| (0x20..0x7f).contains(&b) && b != b'\\';
    if raw.bytes().all(plain) {
        out.push_str(raw);
        return;
    }
    for b in raw.bytes() {
        if plain(b) {
            out.push(char::from(b));
        } else {
            out.push_str("\\x");
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// File names for the longest name fit; the sentinel for an impossible
    /// name fails closed in every store operation (never "no such file").
    #[test]
    fn file_names_fit_and_the_sentinel_fails_closed() {
        let long = "a".repeat(MAX_LEN);
        let user = Username::parse(&long).unwrap();
        assert_eq!(user.secret_file(), format!("{long}.secret").as_str());
        assert_eq!(user.state_file(), format!("{long}.state").as_str());
        assert_eq!(user.lock_file(), format!("{long}.lock").as_str());
        assert_eq!(FileName::INVALID, "/");
        let path = crate::store::testdir::scratch("sentinel");
        let dir = crate::store::TrustedDir::open(&path, true).unwrap();
        let name = FileName::INVALID;
        assert!(dir.read(&name, crate::store::Access::Private, 100).is_err());
        assert!(dir.lock(&name).is_err());
        assert!(dir.replace(&name, b"x").is_err());
    }

    /// Ordinary names pass unchanged.
    #[test]
    fn ordinary_names_are_accepted() {
        for name in [
            "alice",
            "bob.smith",
            "svc_backup",
            "a-1",
            "A",
            "x".repeat(32).as_str(),
        ] {
            assert_eq!(Username::parse(name).unwrap().as_str(), name);
        }
    }

    /// Names that could escape the state directory or inject text are refused.
    #[test]
    fn path_and_control_names_are_refused() {
        assert_eq!(Username::parse(""), Err(UsernameError::Empty));
        assert_eq!(
            Username::parse(&"x".repeat(33)),
            Err(UsernameError::TooLong)
        );
        for name in [
            ".",
            "..",
            "a/b",
            "/etc",
            "-rf",
            ".hidden",
            "a\nb",
            "a\x1b[31m",
            "é",
            "a b",
            "a$",
        ] {
            assert_eq!(
                Username::parse(name),
                Err(UsernameError::Unsafe),
                "{name:?}"
            );
        }
    }

    /// Control characters and backslashes are escaped for logs.
    #[test]
    fn escape_hides_control_characters() {
        assert_eq!(escape("a\nb\x1b\\"), "a\\x0ab\\x1b\\x5c");
        assert_eq!(escape("é"), "\\xc3\\xa9");
    }
}
