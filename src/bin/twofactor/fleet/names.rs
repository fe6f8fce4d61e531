//! Names the fleet commands put into SQL text: a host's name and the
//! login role made from it. Roles cannot be bind parameters in `CREATE
//! ROLE` or `DROP ROLE`, so the name is checked against a small alphabet
//! first and then quoted as an identifier anyway (never interpolated raw).

use std::fmt;

/// The longest host name (`tf_host_` + 40 stays well under PostgreSQL's
/// 63-byte identifiers).
pub const MAX_HOST_NAME: usize = 40;
/// What every host's login role is called: this prefix and the host name.
pub const HOST_ROLE_PREFIX: &str = "tf_host_";
/// The group role every host role is a member of (sql/001_init.sql).
pub const HOST_GROUP: &str = "twofactor_host";
/// The group role of the admins (sql/001_init.sql).
pub const ADMIN_GROUP: &str = "twofactor_admin";

/// A checked host name: 1 to 40 of `a-z 0-9 -`, not starting or ending
/// with `-` (a short host name, as `hostname -s` prints it in lower case).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostName(String);

/// Why a host name was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct BadHostName(pub String);

impl fmt::Display for BadHostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host name {:?}: use 1 to {MAX_HOST_NAME} of a-z, 0-9 and '-', not starting or ending with '-' (e.g. web1)",
            pam_twofactor::records::username::escape(&self.0)
        )
    }
}

impl HostName {
    pub fn parse(raw: &str) -> Result<HostName, BadHostName> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_HOST_NAME
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !raw.starts_with('-')
            && !raw.ends_with('-');
        if ok {
            Ok(HostName(raw.to_string()))
        } else {
            Err(BadHostName(raw.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The host's login role, e.g. `tf_host_web1`.
    pub fn role(&self) -> String {
        format!("{HOST_ROLE_PREFIX}{}", self.0)
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `name` as an SQL identifier: in double quotes, inner quotes doubled
/// (PostgreSQL's quote_ident, always quoting).
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `text` as an SQL string literal: in single quotes, inner quotes
/// doubled; `None` for text with a backslash or a control character,
/// which this literal form does not carry safely whatever
/// `standard_conforming_strings` says.
pub fn quote_literal(text: &str) -> Option<String> {
    if text.contains('\\') || text.chars().any(char::is_control) {
        return None;
    }
    Some(format!("'{}'", text.replace('\'', "''")))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Short lower-case host names pass and make `tf_host_` roles; anything
    /// that could change the SQL, or is too long, is refused.
    #[test]
    fn only_short_lower_case_host_names_are_accepted() {
        for good in ["web1", "db-2", "a", "0", &"a".repeat(40)] {
            let name = HostName::parse(good).unwrap();
            assert_eq!(name.role(), format!("tf_host_{good}"));
        }
        for bad in [
            "",
            "Web1",
            "web_1",
            "web.example.org",
            "-web",
            "web-",
            "web 1",
            "a\"b",
            "a'b",
            "x;DROP ROLE postgres",
            "wéb",
            &"a".repeat(41),
        ] {
            let e = HostName::parse(bad).unwrap_err();
            assert!(e.to_string().contains("a-z, 0-9 and '-'"), "{bad}");
        }
    }

    /// Identifiers are always quoted with inner quotes doubled; literals
    /// double single quotes and refuse backslashes and control characters.
    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("tf_host_web-1"), "\"tf_host_web-1\"");
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(
            quote_literal("SCRAM-SHA-256$4096:c2FsdA==$a:b").as_deref(),
            Some("'SCRAM-SHA-256$4096:c2FsdA==$a:b'")
        );
        assert_eq!(quote_literal("it's").as_deref(), Some("'it''s'"));
        assert_eq!(quote_literal("a\\b"), None);
        assert_eq!(quote_literal("a\nb"), None);
    }
}
