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

/// A value in the subset: integer, string (no escapes), one-line array.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Val<'a> {
    Int(i64),
    Str(&'a str),
    Array(Vec<Val<'a>>),
}

/// One `key = value` line and the table it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The table (`""` for the root).
    pub table: &'a str,
    /// Which `[[table]]` element (0 for plain tables and the root).
    pub element: usize,
    pub key: &'a str,
    pub value: Val<'a>,
}

/// A table header seen in the document.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Table<'a> {
    pub name: &'a str,
    /// `Some(n)` for an array of tables with n elements; `None` for `[name]`.
    pub elements: Option<usize>,
}

/// A document in the subset, borrowed from its text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Doc<'a> {
    pub tables: Vec<Table<'a>>,
    pub entries: Vec<Entry<'a>>,
}

impl<'a> Doc<'a> {
    /// The array-of-tables `name`'s element count, or 0 if absent.
    pub fn elements(&self, name: &str) -> usize {
        self.tables
            .iter()
            .find(|t| t.name == name)
            .and_then(|t| t.elements)
            .unwrap_or(0)
    }
}

/// Reads `text` as a document of the subset, or `None` outside it.
pub fn read(text: &str) -> Option<Doc<'_>> {
    let mut doc = Doc::default();
    // Entries of the current table (element) start here: a key may appear
    // once per table, and tables are never reopened in the subset.
    let mut current = ("", 0usize);
    let mut section_start = 0;
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
            if doc
                .entries
                .iter()
                .any(|e| e.table.is_empty() && e.key == name)
            {
                return None;
            }
            let element = match doc.tables.iter_mut().find(|t| t.name == name) {
                Some(Table {
                    elements: Some(n), ..
                }) => {
                    *n += 1;
                    *n - 1
                }
                Some(_) => return None,
                None => {
                    doc.tables.push(Table {
                        name,
                        elements: Some(1),
                    });
                    0
                }
            };
            current = (name, element);
            section_start = doc.entries.len();
        } else if let Some(rest) = line.strip_prefix('[') {
            let (name, tail) = rest.split_once(']')?;
            end_of_line(tail)?;
            let name = bare_key(trim_ws(name))?;
            if doc.tables.iter().any(|t| t.name == name)
                || doc
                    .entries
                    .iter()
                    .any(|e| e.table.is_empty() && e.key == name)
            {
                return None;
            }
            doc.tables.push(Table {
                name,
                elements: None,
            });
            current = (name, 0);
            section_start = doc.entries.len();
        } else {
            let (key, rest) = split_key(line)?;
            let rest = trim_ws(rest.strip_prefix('=')?);
            let (value, tail) = parse_value(rest)?;
            end_of_line(tail)?;
            if doc.entries[section_start..].iter().any(|e| e.key == key)
                || (current.0.is_empty() && doc.tables.iter().any(|t| t.name == key))
            {
                return None;
            }
            doc.entries.push(Entry {
                table: current.0,
                element: current.1,
                key,
                value,
            });
        }
    }
    Some(doc)
}

fn to_json(value: &Val) -> Value {
    match value {
        Val::Int(n) => Value::Number(Number::from(*n)),
        Val::Str(s) => Value::String((*s).to_string()),
        Val::Array(items) => Value::Array(items.iter().map(to_json).collect()),
    }
}

/// Parses `text` into a JSON-shaped tree for serde (the config), or `None`
/// if it is outside the subset (the caller then uses the `toml` crate).
pub fn parse(text: &str) -> Option<Value> {
    let doc = read(text)?;
    let mut root = Map::new();
    for table in &doc.tables {
        let value = match table.elements {
            None => Value::Object(Map::new()),
            Some(n) => Value::Array(vec![Value::Object(Map::new()); n]),
        };
        root.insert(table.name.to_string(), value);
    }
    for entry in &doc.entries {
        let target = if entry.table.is_empty() {
            &mut root
        } else {
            let slot = root.get_mut(entry.table)?;
            match slot {
                Value::Array(items) => items.get_mut(entry.element)?.as_object_mut()?,
                other => other.as_object_mut()?,
            }
        };
        target.insert(entry.key.to_string(), to_json(&entry.value));
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
fn split_key(line: &str) -> Option<(&str, &str)> {
    if let Some(rest) = line.strip_prefix('"') {
        let (key, rest) = rest.split_once('"')?;
        if !plain_text(key) {
            return None;
        }
        return Some((key, trim_ws(rest)));
    }
    let end = line.bytes().position(|c| !is_bare(c)).unwrap_or(line.len());
    let key = bare_key(line.get(..end)?)?;
    Some((key, trim_ws(line.get(end..)?)))
}

/// One value and what follows it.
fn parse_value(s: &str) -> Option<(Val<'_>, &str)> {
    if let Some(rest) = s.strip_prefix('"') {
        let (text, rest) = rest.split_once('"')?;
        // Escapes and control characters (TOML allows tab) go to `toml`.
        if !plain_text(text) {
            return None;
        }
        return Some((Val::Str(text), rest));
    }
    if let Some(mut rest) = s.strip_prefix('[') {
        let mut items = Vec::new();
        loop {
            rest = trim_ws(rest);
            if let Some(after) = rest.strip_prefix(']') {
                return Some((Val::Array(items), after));
            }
            let (item, after) = parse_value(rest)?;
            if matches!(item, Val::Array(_)) {
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
    Some((Val::Int(n), s.get(end..)?))
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
