//! User names from PAM, validated before they can reach a path.
//!
//! CVE-2014-2583 / CVE-2023-42456: a name like `..` or `a/b` must never be
//! joined to a directory. We accept the portable POSIX set that Debian's
//! `adduser` allows by default (letters, digits, `_`, `.`, `-`, not starting
//! with `-` or `.`, at most 32 bytes). Any other name is denied by the module
//! after the same prompt as everyone else, and logged escaped.

use std::fmt::{self, Write};

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

    /// File holding the secret record (written only by the CLI).
    pub fn secret_file(&self) -> String {
        format!("{}.secret", self.0)
    }

    /// File holding the mutable state (written under the user's lock).
    pub fn state_file(&self) -> String {
        format!("{}.state", self.0)
    }

    /// The state's other copy: the version before `<user>.state`'s,
    /// written over with the next one and swapped in (`UserFiles`). A
    /// leading dot: no user name starts with one.
    pub fn state_spare_file(&self) -> String {
        format!(".{}.state.spare", self.0)
    }

    /// The per-user lock file, never unlinked.
    pub fn lock_file(&self) -> String {
        format!("{}.lock", self.0)
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
    for b in raw.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            out.push(char::from(b));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A user's files are the name and a suffix, for the longest name too.
    #[test]
    fn file_names_are_the_name_and_a_suffix() {
        let long = "a".repeat(MAX_LEN);
        let user = Username::parse(&long).unwrap();
        assert_eq!(user.secret_file(), format!("{long}.secret"));
        assert_eq!(user.state_file(), format!("{long}.state"));
        assert_eq!(user.lock_file(), format!("{long}.lock"));
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
