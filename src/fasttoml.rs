//! A fast reader for the plain TOML our records and configs use, in front of
//! the `toml` crate, which stays the authority.
//!
//! A login reads two records and a config; the `toml` crate spends ~90,000
//! instructions on a 1 KiB record (spans, tables of tables, every TOML
//! form), more than the whole login of the modules we replace. This reader
//! accepts only an unambiguous subset — `[table]`, `[[array]]`, bare or
//! simple quoted keys, decimal integers, strings without escapes, one-line
//! arrays of those, `#` comments — and returns `None` for anything else,
//! so the caller falls back to `toml::from_str`. Where it accepts a
//! document, it yields exactly what `toml` would (the `fasttoml_agrees`
//! fuzz target and the tests below hold it to that).

use serde_json::{Map, Number, Value};

/// Parses `text` into a JSON-shaped tree, or `None` if it is outside the
/// subset (the caller then uses the `toml` crate).
pub fn parse(text: &str) -> Option<Value> {
    let mut root = Map::new();
    // Where `key = value` lines go: the root, a table, or the last element
    // of an array of tables.
    let mut current: Vec<String> = Vec::new();
    let mut current_is_array = false;
    let mut defined_tables: Vec<String> = Vec::new();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let line = trim_ws(line);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("[[") {
            let (name, tail) = rest.split_once("]]")?;
            end_of_line(tail)?;
            let name = bare_key(trim_ws(name))?;
            if root.get(name).is_some_and(|v| !v.is_array()) {
                return None;
            }
            let entry = root
                .entry(name.to_string())
                .or_insert_with(|| Value::Array(Vec::new()));
            entry.as_array_mut()?.push(Value::Object(Map::new()));
            current = vec![name.to_string()];
            current_is_array = true;
        } else if let Some(rest) = line.strip_prefix('[') {
            let (name, tail) = rest.split_once(']')?;
            end_of_line(tail)?;
            let name = bare_key(trim_ws(name))?;
            if defined_tables.iter().any(|t| t == name) || root.contains_key(name) {
                return None;
            }
            defined_tables.push(name.to_string());
            root.insert(name.to_string(), Value::Object(Map::new()));
            current = vec![name.to_string()];
            current_is_array = false;
        } else {
            let (key, rest) = split_key(line)?;
            let rest = trim_ws(rest.strip_prefix('=')?);
            let (value, tail) = parse_value(rest)?;
            end_of_line(tail)?;
            let table = match current.first() {
                None => &mut root,
                Some(name) => {
                    let slot = root.get_mut(name)?;
                    if current_is_array {
                        slot.as_array_mut()?.last_mut()?.as_object_mut()?
                    } else {
                        slot.as_object_mut()?
                    }
                }
            };
            if table.contains_key(&key) {
                return None;
            }
            table.insert(key, value);
        }
    }
    Some(Value::Object(root))
}

fn trim_ws(s: &str) -> &str {
    let b = s.as_bytes();
    let start = b
        .iter()
        .position(|&c| c != b' ' && c != b'\t')
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|&c| c != b' ' && c != b'\t')
        .map_or(start, |i| i + 1);
    // Both ends are at ASCII bytes, so these are char boundaries.
    s.get(start..end).unwrap_or("")
}

/// TOML basic strings may not hold `\` unescaped here (we do not decode
/// escapes), nor control characters other than tab.
fn plain_text(s: &str) -> bool {
    !s.bytes()
        .any(|b| b == b'\\' || (b < 0x20 && b != b'\t') || b == 0x7f)
}

/// Only whitespace or a comment may follow a value or a header.
fn end_of_line(tail: &str) -> Option<()> {
    let tail = trim_ws(tail);
    (tail.is_empty() || tail.starts_with('#')).then_some(())
}

fn is_bare(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'-'
}

fn bare_key(s: &str) -> Option<&str> {
    (!s.is_empty() && s.bytes().all(is_bare)).then_some(s)
}

/// `key` or `"quoted key"` (no escapes), then the rest after spaces.
fn split_key(line: &str) -> Option<(String, &str)> {
    if let Some(rest) = line.strip_prefix('"') {
        let (key, rest) = rest.split_once('"')?;
        if !plain_text(key) {
            return None;
        }
        return Some((key.to_string(), trim_ws(rest)));
    }
    let end = line.bytes().position(|c| !is_bare(c)).unwrap_or(line.len());
    let key = bare_key(&line[..end])?;
    Some((key.to_string(), trim_ws(&line[end..])))
}

/// One value and what follows it.
fn parse_value(s: &str) -> Option<(Value, &str)> {
    if let Some(rest) = s.strip_prefix('"') {
        let (text, rest) = rest.split_once('"')?;
        // Escapes and control characters (TOML allows tab) go to `toml`.
        if !plain_text(text) {
            return None;
        }
        return Some((Value::String(text.to_string()), rest));
    }
    if let Some(mut rest) = s.strip_prefix('[') {
        let mut items = Vec::new();
        loop {
            rest = trim_ws(rest);
            if let Some(after) = rest.strip_prefix(']') {
                return Some((Value::Array(items), after));
            }
            let (item, after) = parse_value(rest)?;
            if item.is_array() {
                return None;
            }
            items.push(item);
            rest = trim_ws(after);
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
            } else if !rest.starts_with(']') {
                return None;
            }
        }
    }
    let end = s
        .bytes()
        .position(|c| !(c.is_ascii_digit() || c == b'-'))
        .unwrap_or(s.len());
    let digits = &s[..end];
    let unsigned = digits.strip_prefix('-').unwrap_or(digits);
    // Decimal only, no leading zeros (TOML forbids them), no `+`, no `_`.
    if unsigned.is_empty()
        || !unsigned.bytes().all(|b| b.is_ascii_digit())
        || (unsigned.len() > 1 && unsigned.starts_with('0'))
        || digits == "-0"
    {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    Some((Value::Number(Number::from(n)), &s[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the `toml` crate reads, as a JSON tree, for comparison.
    fn slow(text: &str) -> Option<Value> {
        toml::from_str::<toml::Value>(text)
            .ok()
            .and_then(|v| serde_json::to_value(v).ok())
    }

    /// Documents in the subset read exactly as the toml crate reads them.
    #[test]
    fn subset_documents_read_as_toml_reads_them() {
        let docs = [
            "version = 1\ncreated = 1795401159\n\n[[devices]]\nlabel = \"default\"\nsecret = \"GEZDGNBV\"\ndigits = 6\n\n[[devices]]\nlabel = \"b\"\n\n[backup_codes]\nhashes = [\"aa\", \"bb\"]\nempty = []\n",
            "version = 1\nfailures = 0\nused_backup_codes = []\n\n[last_accepted_step]\ndefault = 63591840\n[drift_steps]\ndefault = -3\n[grace]\n\"192.0.2.5\" = 1781524800\n\"2001:db8::1\" = 5\n",
            "# comment\nstate_dir = \"/var/lib/twofactor\"   # trailing # comment\n[totp]\nwindow = 1 # x\n\talgorithm=\"SHA1\"\r\n[exempt]\nnetworks = [\"10.0.0.0/8\", \"::1\" ] # c\nnums = [1, -2,3]\n",
        ];
        for doc in docs {
            let fast = parse(doc);
            assert!(fast.is_some(), "{doc:?}");
            assert_eq!(fast, slow(doc), "{doc:?}");
        }
    }

    /// Anything outside the subset is left to the toml crate.
    #[test]
    fn everything_else_falls_back() {
        let docs = [
            "a = \"x\\ty\"",
            "a = 'literal'",
            "a = 007",
            "a = +7",
            "a = 1_000",
            "a = -0",
            "a = 1.5",
            "a = true",
            "a = 1979-05-27",
            "a = { b = 1 }",
            "a.b = 1",
            "a = [\n1]",
            "a = [[1]]",
            "a = 1\na = 2",
            "[t]\n[t]",
            "[t]\nx = 1\n[[t]]",
            "a = 1 b",
            "a = \"unterminated",
            "a = 99999999999999999999",
            "\"k\\\"\" = 1",
            "[a.b]",
            "a = \"\u{1}\"",
        ];
        for doc in docs {
            assert_eq!(parse(doc), None, "{doc:?}");
        }
    }
}
