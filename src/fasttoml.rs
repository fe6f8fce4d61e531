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
//!
//! `Template` goes one step further for the records, which we write
//! ourselves: the caller spells out the layout we write, and the text is
//! only checked against it, with the same scanners (record.rs).

use std::borrow::Cow;
use std::num::NonZeroU32;

#[cfg(any(test, fuzzing))]
use serde_json::{Map, Number, Value};

/// A value in the subset: integer, string (no escapes), one-line array.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Val<'a> {
    Int(i64),
    Str(&'a str),
    Array(Array<'a>),
}

/// A one-line array of integers and strings, checked by `read` and kept as
/// its text: items are parsed again only when a caller asks (`list`), so a
/// read allocates nothing per array and a login that never looks at the
/// backup-code hashes never builds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Array<'a> {
    /// From after the `[` through the closing `]`, walked again by
    /// `ArrayIter` with the same `array_step` that checked it.
    text: &'a str,
    /// Item count and shared string length in 32 bits each, so that a
    /// `Val` stays four words (every entry of a document holds one).
    len: u32,
    /// `Some(n)` when every item is a string of n > 0 bytes.
    string_len: Option<NonZeroU32>,
}

impl<'a> Array<'a> {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The byte length every item shares, when all are strings of one
    /// length (the shape of a set of hashes, checked without a second scan).
    pub fn string_len(&self) -> Option<usize> {
        self.string_len.map(|n| n.get() as usize)
    }

    pub fn iter(&self) -> ArrayIter<'a> {
        ArrayIter {
            text: self.text,
            at: 0,
        }
    }
}

/// The items of an `Array`, in order.
#[derive(Clone, Debug)]
pub struct ArrayIter<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Iterator for ArrayIter<'a> {
    type Item = Val<'a>;

    /// The steps `array` took to check the text; they cannot fail on text
    /// `array` accepted (`list` counts the items to be sure).
    fn next(&mut self) -> Option<Val<'a>> {
        match array_step(self.text, self.at)? {
            ArrayStep::Item(item, next) => {
                self.at = next;
                Some(item)
            }
            ArrayStep::End(_) => None,
        }
    }
}

/// One `key = value` line and the table it belongs to (`Doc::entries`).
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Table<'a> {
    pub name: &'a str,
    /// `Some(n)` for an array of tables with n elements; `None` for `[name]`.
    pub elements: Option<usize>,
}

/// Distinct table names a document of the subset may have; a document
/// with more is left to the `toml` crate (ours have at most 7).
const MAX_TABLES: usize = 8;

/// The table headers of a document, kept inline (no allocation per read).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables<'a> {
    items: [Table<'a>; MAX_TABLES],
    len: usize,
}

impl<'a> Tables<'a> {
    pub fn iter(&self) -> std::slice::Iter<'_, Table<'a>> {
        self.items[..self.len].iter()
    }

    fn iter_mut(&mut self) -> std::slice::IterMut<'_, Table<'a>> {
        self.items[..self.len].iter_mut()
    }

    /// Adds a table and returns its `Slot::table` index; `None` when the
    /// document has too many for the subset.
    fn push(&mut self, table: Table<'a>) -> Option<u8> {
        *self.items.get_mut(self.len)? = table;
        self.len += 1;
        u8::try_from(self.len).ok()
    }
}

/// An entry as a document keeps it: its table by index (0 for the root,
/// n for `tables[n - 1]`), so that 16 of them take 896 bytes, within
/// glibc's per-thread cache (1,032 bytes): the three documents a login
/// reads then reuse one block instead of each splitting and merging a
/// larger chunk (an `Entry` with the table's name is 72 bytes).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Slot<'a> {
    key: &'a str,
    value: Val<'a>,
    table: u8,
    element: u32,
}

/// A document in the subset, borrowed from its text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Doc<'a> {
    pub tables: Tables<'a>,
    slots: Vec<Slot<'a>>,
}

impl<'a> Doc<'a> {
    /// The `key = value` lines in document order.
    pub fn entries(&self) -> impl Iterator<Item = Entry<'a>> + '_ {
        self.slots.iter().map(|slot| Entry {
            table: match slot.table {
                0 => "",
                n => self.tables.items[usize::from(n) - 1].name,
            },
            element: slot.element as usize,
            key: slot.key,
            value: slot.value,
        })
    }

    /// The array-of-tables `name`'s element count, or 0 if absent.
    pub fn elements(&self, name: &str) -> usize {
        self.tables
            .iter()
            .find(|t| same(t.name, name))
            .and_then(|t| t.elements)
            .unwrap_or(0)
    }
}

/// Values of a read document, for the hand mappings of the records and
/// the config (`None` where the type is not the one wanted).
pub(crate) fn int<T: TryFrom<i64>>(v: &Val) -> Option<T> {
    match v {
        Val::Int(n) => T::try_from(*n).ok(),
        _ => None,
    }
}

pub(crate) fn text(v: &Val) -> Option<String> {
    match v {
        Val::Str(s) => Some((*s).to_string()),
        _ => None,
    }
}

/// A string borrowed from the document's text (no allocation per field).
pub(crate) fn borrowed<'a>(v: &Val<'a>) -> Option<Cow<'a, str>> {
    match v {
        Val::Str(s) => Some(Cow::Borrowed(*s)),
        _ => None,
    }
}

/// An array's items mapped by `item`; `None` if one does not map (or, which
/// cannot happen, fewer items come back than `read` counted).
pub(crate) fn list<'a, T>(v: &Val<'a>, item: impl Fn(&Val<'a>) -> Option<T>) -> Option<Vec<T>> {
    let Val::Array(array) = v else { return None };
    let mut out = Vec::with_capacity(array.len());
    for value in array.iter() {
        out.push(item(&value)?);
    }
    (out.len() == array.len()).then_some(out)
}

/// Reads `text` as a document of the subset, or `None` outside it.
///
/// One pass over the bytes with a cursor (every login reads two records
/// and a config, so this is on the hot path); each delimiter is ASCII, so
/// every slice taken is at a char boundary.
pub fn read(text: &str) -> Option<Doc<'_>> {
    let b = text.as_bytes();
    let mut doc = Doc {
        tables: Tables::default(),
        slots: Vec::with_capacity(16),
    };
    // Entries of the current table (element) start here: a key may appear
    // once per table, and tables are never reopened in the subset.
    let mut current = (0u8, 0u32);
    let mut section_start = 0;
    // The keys of the current section, one bit each (`key_bit`).
    let mut section_keys = 0u64;
    let mut i = 0;
    loop {
        i = skip_ws(b, i);
        let Some(&c) = b.get(i) else { break };
        match c {
            b'\n' | b'\r' | b'#' => i = end_of_line(b, i)?,
            b'[' if b.get(i + 1) == Some(&b'[') => {
                let (name, after) = bare_name(text, i + 2)?;
                if b.get(after..after + 2) != Some(b"]]".as_slice()) {
                    return None;
                }
                i = end_of_line(b, after + 2)?;
                if doc.slots.iter().any(|e| e.table == 0 && same(e.key, name)) {
                    return None;
                }
                let found = doc
                    .tables
                    .iter_mut()
                    .enumerate()
                    .find(|(_, t)| same(t.name, name));
                current = match found {
                    Some((
                        at,
                        Table {
                            elements: Some(n), ..
                        },
                    )) => {
                        *n += 1;
                        (u8::try_from(at + 1).ok()?, u32::try_from(*n - 1).ok()?)
                    }
                    Some(_) => return None,
                    None => {
                        let table = doc.tables.push(Table {
                            name,
                            elements: Some(1),
                        })?;
                        (table, 0)
                    }
                };
                section_start = doc.slots.len();
                section_keys = 0;
            }
            b'[' => {
                let (name, after) = bare_name(text, i + 1)?;
                if b.get(after) != Some(&b']') {
                    return None;
                }
                i = end_of_line(b, after + 1)?;
                if doc.tables.iter().any(|t| same(t.name, name))
                    || doc.slots.iter().any(|e| e.table == 0 && same(e.key, name))
                {
                    return None;
                }
                let table = doc.tables.push(Table {
                    name,
                    elements: None,
                })?;
                current = (table, 0);
                section_start = doc.slots.len();
                section_keys = 0;
            }
            _ => {
                let (key, after) = if c == b'"' {
                    let end = plain_end(b, i + 1)?;
                    (text.get(i + 1..end)?, end + 1)
                } else {
                    let end = bare_end(b, i);
                    if end == i {
                        return None;
                    }
                    (text.get(i..end)?, end)
                };
                // `key = value`, as we write it, skips the general spacing.
                let start = if b.get(after..after + 3) == Some(b" = ".as_slice()) {
                    skip_ws(b, after + 3)
                } else {
                    let at = skip_ws(b, after);
                    if b.get(at) != Some(&b'=') {
                        return None;
                    }
                    skip_ws(b, at + 1)
                };
                let (value, after) = parse_value(text, start)?;
                i = end_of_line(b, after)?;
                // A repeated key sets a bit already set; only then are the
                // section's keys compared (most keys never are).
                let bit = key_bit(key);
                let maybe_repeated = section_keys & bit != 0;
                section_keys |= bit;
                if (maybe_repeated && doc.slots[section_start..].iter().any(|e| same(e.key, key)))
                    || (current.0 == 0 && doc.tables.iter().any(|t| same(t.name, key)))
                {
                    return None;
                }
                doc.slots.push(Slot {
                    key,
                    value,
                    table: current.0,
                    element: current.1,
                });
            }
        }
    }
    Some(doc)
}

#[cfg(any(test, fuzzing))]
fn to_json(value: &Val) -> Value {
    match value {
        Val::Int(n) => Value::Number(Number::from(*n)),
        Val::Str(s) => Value::String((*s).to_string()),
        Val::Array(items) => Value::Array(items.iter().map(|v| to_json(&v)).collect()),
    }
}

/// Parses `text` into a JSON-shaped tree, or `None` if it is outside the
/// subset: what the tests and the `fasttoml_agrees` fuzz target compare
/// with the `toml` crate. The module maps documents by hand (`read`).
#[cfg(any(test, fuzzing))]
pub fn parse(text: &str) -> Option<Value> {
    let doc = read(text)?;
    let mut root = Map::new();
    for table in doc.tables.iter() {
        let value = match table.elements {
            None => Value::Object(Map::new()),
            Some(n) => Value::Array(vec![Value::Object(Map::new()); n]),
        };
        root.insert(table.name.to_string(), value);
    }
    for entry in doc.entries() {
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

/// A reader for documents laid out byte for byte as we write them
/// (`State::to_toml`; the `toml` crate's output for a secret record): the
/// caller names each piece in order (text, integer, string, key) and gives
/// up at the first byte that differs, to read the document the general way
/// (`read`, then the `toml` crate). Pieces follow `read`'s rules (the same
/// integer and string scanners), so what a template accepts reads exactly
/// as `read` would read it, without the work of finding out the layout:
/// most of a login's reading is records we wrote.
///
/// It reads bytes, not a `str`: every piece is ASCII but string contents,
/// which are checked as UTF-8 one by one, so a document it accepts is
/// UTF-8 as a whole without a pass over all of it (a record's backup-code
/// hashes are most of its bytes, and `skip_string` never decodes them).
pub(crate) struct Template<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Template<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Template<'a> {
        Template { b: bytes, at: 0 }
    }

    /// Consumes `s` if the text goes on with it.
    pub(crate) fn eat(&mut self, s: &str) -> bool {
        let end = self.at + s.len();
        let hit = self.b.get(self.at..end) == Some(s.as_bytes());
        if hit {
            self.at = end;
        }
        hit
    }

    /// `s`, or give up.
    pub(crate) fn expect(&mut self, s: &str) -> Option<()> {
        self.eat(s).then_some(())
    }

    /// A decimal integer that fits `T`.
    pub(crate) fn int<T: TryFrom<i64>>(&mut self) -> Option<T> {
        let (value, end) = parse_int(self.b, self.at)?;
        self.at = end;
        int(&value)
    }

    /// A basic string without escapes: its contents.
    pub(crate) fn string(&mut self) -> Option<&'a str> {
        if self.b.get(self.at) != Some(&b'"') {
            return None;
        }
        let end = plain_end(self.b, self.at + 1)?;
        let s = std::str::from_utf8(&self.b[self.at + 1..end]).ok()?;
        self.at = end + 1;
        Some(s)
    }

    /// A string, as `string` reads it; one of `common` is matched whole
    /// first, which spares the UTF-8 check (~100 instructions a string).
    pub(crate) fn string_among(&mut self, common: &[&'static str]) -> Option<&'a str> {
        let start = self.at;
        for value in common {
            if self.eat("\"") && self.eat(value) && self.eat("\"") {
                return Some(value);
            }
            self.at = start;
        }
        self.string()
    }

    /// The items of a one-line array whose `[` was just read, through its
    /// `]`: `item` reads one, they are separated by `, `.
    pub(crate) fn items(&mut self, mut item: impl FnMut(&mut Self) -> Option<()>) -> Option<()> {
        if self.eat("]") {
            return Some(());
        }
        loop {
            item(self)?;
            if self.eat("]") {
                return Some(());
            }
            self.expect(", ")?;
        }
    }

    /// A string of exactly `len` bytes, passed over a word at a time (a
    /// login does not look at the backup-code hashes). It accepts only what
    /// `string` accepts, and only ASCII; the word test also refuses a few
    /// plain bytes (space, `!`, `]^_|}~`), which only sends the record to
    /// the general readers: hashes are hex.
    pub(crate) fn skip_string(&mut self, len: usize) -> Option<()> {
        let start = self.at + 1;
        let end = start + len;
        if self.b.get(self.at) != Some(&b'"') || self.b.get(end) != Some(&b'"') {
            return None;
        }
        let body = self.b.get(start..end)?;
        let mut words = body.chunks_exact(8);
        for chunk in &mut words {
            let w = word(chunk);
            if suspect(w) | (w & HIGH) != 0 {
                return None;
            }
        }
        if !words
            .remainder()
            .iter()
            .all(|&c| c.is_ascii() && CLASS[usize::from(c)] == PLAIN)
        {
            return None;
        }
        self.at = end + 1;
        Some(())
    }

    /// A key: bare, or quoted as a basic string without escapes.
    pub(crate) fn key(&mut self) -> Option<&'a str> {
        if self.b.get(self.at) == Some(&b'"') {
            return self.string();
        }
        let end = bare_end(self.b, self.at);
        let key = std::str::from_utf8(&self.b[self.at..end])
            .ok()
            .filter(|k| !k.is_empty())?;
        self.at = end;
        Some(key)
    }

    /// The next byte, not consumed.
    pub(crate) fn peek(&self) -> Option<u8> {
        self.b.get(self.at).copied()
    }

    pub(crate) fn at_end(&self) -> bool {
        self.at == self.b.len()
    }
}

/// Byte classes for the scanners below.
const PLAIN: u8 = 0; // may appear in a string without escapes
const QUOTE: u8 = 1; // `"`
const BAD: u8 = 2; // `\`, or a control character other than tab

/// TOML basic strings may not hold `\` unescaped here (we do not decode
/// escapes), nor control characters other than tab (TOML 1.0).
const CLASS: [u8; 256] = {
    let mut table = [PLAIN; 256];
    let mut c = 0;
    while c < 0x20 {
        table[c] = BAD;
        c += 1;
    }
    table[b'\t' as usize] = PLAIN;
    table[0x7f] = BAD;
    table[b'\\' as usize] = BAD;
    table[b'"' as usize] = QUOTE;
    table
};

#[inline(always)]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t')) {
        i += 1;
    }
    i
}

/// One of 64 bits for a key, from its length and its first and last
/// bytes: equal keys get the same bit (a filter in front of the exact
/// comparison of repeated-key checks).
fn key_bit(key: &str) -> u64 {
    let b = key.as_bytes();
    let first = b.first().copied().unwrap_or(0);
    let last = b.last().copied().unwrap_or(0);
    let mix = b.len().wrapping_mul(7) ^ usize::from(first).wrapping_mul(3) ^ usize::from(last);
    1u64 << (mix % 64)
}

/// `a == b` for keys and table names, with the cheap tests first (most
/// pairs differ in length or first byte; `==` would call memcmp).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().first() == b.as_bytes().first() && a == b
}

/// The index of the `"` closing a string that starts at `i`, if every
/// byte before it is plain.
///
/// Sixteen bytes at a time first (a record's backup hashes are ~700 bytes
/// of string): a word with no suspect byte is plain and skipped. Suspect
/// are bytes below 0x23 (controls, space, `!`, `"`) and bytes that equal
/// 0x7f once the bits of 0x23 are set (`\`, DEL and `]^_|}~`): two tests
/// instead of four, with a few harmless false alarms. The byte loop decides
/// everything else, so the word test only has to be exact when it says
/// "all plain" (the classic has-zero-byte test, exact as a yes/no).
fn plain_end(b: &[u8], i: usize) -> Option<usize> {
    let rest = b.get(i..)?;
    let mut at = 0;
    for pair in rest.chunks_exact(16) {
        let (first, second) = pair.split_at(8);
        if suspect(word(first)) | suspect(word(second)) != 0 {
            break;
        }
        at += 16;
    }
    for (k, &c) in rest.get(at..)?.iter().enumerate() {
        match CLASS[usize::from(c)] {
            PLAIN => {}
            QUOTE => return Some(i + at + k),
            _ => return None,
        }
    }
    None
}

const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);

/// The high bit of each byte of `w` that may not be plain (`plain_end`).
#[inline(always)]
fn suspect(w: u64) -> u64 {
    let low = w.wrapping_sub(ONES * 0x23) & !w;
    let folded = (w | (ONES * 0x23)) ^ (ONES * 0x7f);
    let high = folded.wrapping_sub(ONES) & !folded;
    (low | high) & HIGH
}

/// Eight bytes as a word (`chunk` is 8 bytes long).
#[inline(always)]
fn word(chunk: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(chunk);
    u64::from_ne_bytes(bytes)
}

/// Only whitespace or a comment may follow a value or a header; returns
/// where the next line starts. Comments may not hold control characters
/// other than tab (TOML 1.0), and `\r` only as part of `\r\n`.
fn end_of_line(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) == Some(&b'\n') {
        return Some(i + 1);
    }
    let mut i = skip_ws(b, i);
    if b.get(i) == Some(&b'#') {
        i += 1;
        while let Some(&c) = b.get(i) {
            if c == b'\n' || c == b'\r' || (c != b'\t' && (c < 0x20 || c == 0x7f)) {
                break;
            }
            i += 1;
        }
    }
    match b.get(i) {
        None => Some(i),
        Some(b'\n') => Some(i + 1),
        Some(b'\r') if b.get(i + 1) == Some(&b'\n') => Some(i + 2),
        Some(_) => None,
    }
}

/// Bytes of a bare key: `A-Za-z0-9_-` (one lookup per byte on the hot path).
const BARE: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        c += 1;
    }
    table
};

pub(crate) fn is_bare(c: u8) -> bool {
    BARE[usize::from(c)]
}

fn bare_end(b: &[u8], i: usize) -> usize {
    let rest = b.get(i..).unwrap_or_default();
    i + rest.iter().position(|&c| !is_bare(c)).unwrap_or(rest.len())
}

/// A table name: spaces, a non-empty bare key, spaces; and where it ends.
fn bare_name(text: &str, i: usize) -> Option<(&str, usize)> {
    let b = text.as_bytes();
    let start = skip_ws(b, i);
    let end = bare_end(b, start);
    if end == start {
        return None;
    }
    Some((text.get(start..end)?, skip_ws(b, end)))
}

/// One value starting at `i`, and the index after it.
fn parse_value(text: &str, i: usize) -> Option<(Val<'_>, usize)> {
    if text.as_bytes().get(i) == Some(&b'[') {
        array(text, i + 1)
    } else {
        scalar(text, i)
    }
}

/// A string or an integer starting at `i`, and the index after it.
fn scalar(text: &str, i: usize) -> Option<(Val<'_>, usize)> {
    let b = text.as_bytes();
    if *b.get(i)? == b'"' {
        // Escapes and control characters (TOML allows tab) go to `toml`.
        let end = plain_end(b, i + 1)?;
        Some((Val::Str(text.get(i + 1..end)?), end + 1))
    } else {
        parse_int(b, i)
    }
}

/// A one-line array whose text starts at `start` (after its `[`): scalars
/// separated by commas, a trailing comma allowed, no nested arrays. Checked
/// and counted here, kept as text (`Array`).
fn array(text: &str, start: usize) -> Option<(Val<'_>, usize)> {
    let mut i = start;
    let mut len: u32 = 0;
    // The first item's length while every item is a string of it.
    let mut string_len = None;
    let mut uniform = true;
    loop {
        match array_step(text, i)? {
            ArrayStep::End(close) => {
                let array = Array {
                    text: text.get(start..=close)?,
                    len,
                    string_len: string_len.filter(|_| uniform),
                };
                return Some((Val::Array(array), close + 1));
            }
            ArrayStep::Item(item, next) => {
                let item_len = match item {
                    Val::Str(s) => u32::try_from(s.len()).ok().and_then(NonZeroU32::new),
                    _ => None,
                };
                if len == 0 {
                    string_len = item_len;
                }
                uniform &= item_len.is_some() && item_len == string_len;
                len = len.checked_add(1)?;
                i = next;
            }
        }
    }
}

/// One step through an array's text: its next item, or its end.
enum ArrayStep<'a> {
    /// An item, and where the step after it starts.
    Item(Val<'a>, usize),
    /// The index of the closing `]`.
    End(usize),
}

/// The step at `i` inside an array: spaces, then `]`, or a scalar followed
/// by `,` or `]`; `None` for anything else. Inlined into both walkers: it
/// runs once per backup-code hash on every login.
#[inline(always)]
fn array_step(text: &str, i: usize) -> Option<ArrayStep<'_>> {
    let b = text.as_bytes();
    let i = skip_ws(b, i);
    if b.get(i) == Some(&b']') {
        return Some(ArrayStep::End(i));
    }
    let (item, after) = scalar(text, i)?;
    // `, ` between items, as we write them, skips the general spacing.
    if b.get(after..after + 2) == Some(b", ".as_slice()) {
        return Some(ArrayStep::Item(item, after + 2));
    }
    let after = skip_ws(b, after);
    match b.get(after) {
        Some(b',') => Some(ArrayStep::Item(item, after + 1)),
        Some(b']') => Some(ArrayStep::Item(item, after)),
        _ => None,
    }
}

/// A decimal integer at `i` in one pass: an optional `-`, no leading zeros
/// (TOML forbids them), no `+`, no `_`, not `-0`, within i64 (overflow is
/// left to the toml crate, which refuses it).
fn parse_int(b: &[u8], i: usize) -> Option<(Val<'_>, usize)> {
    let negative = b.get(i) == Some(&b'-');
    let start = i + usize::from(negative);
    let mut end = start;
    // Accumulated as a negative number so that i64::MIN fits.
    let mut value: i64 = 0;
    while let Some(&c) = b.get(end) {
        if !c.is_ascii_digit() {
            break;
        }
        value = value.checked_mul(10)?.checked_sub(i64::from(c - b'0'))?;
        end += 1;
    }
    let digits = end - start;
    // `1-2` or `--1`: a `-` right after the digits was never a TOML integer.
    if digits == 0
        || b.get(end) == Some(&b'-')
        || (digits > 1 && b[start] == b'0')
        || (negative && value == 0)
    {
        return None;
    }
    let value = if negative {
        value
    } else {
        value.checked_neg()?
    };
    Some((Val::Int(value), end))
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
            "min = -9223372036854775808\nmax = 9223372036854775807\nzero = 0\nneg = -17\nlist = [0, -1, 10]\n",
            "# comment\nstate_dir = \"/var/lib/twofactor\"   # trailing # comment\n[totp]\nwindow = 1 # x\n\talgorithm=\"SHA1\"\r\n[exempt]\nnetworks = [\"10.0.0.0/8\", \"::1\" ] # c\nnums = [1, -2,3]\n",
            "[[d]]\nx = 1\ny = 2\n[[d]]\nx = 3\ny = 4\n[t]\nx = 5\n",
            "a =  1\nb = \t\"x\"\nc=2\nd =[ 1 ,2 ]\ne = [\"p\",  \"q\" ,\"r\"]   \n",
            "trail = [1, 2, ]\nmixed = [1, \"a\", -3]\nspaced = [ ]\none = [\"a\",]\ntabs = [\t\"x\"\t,\t7\t]\n",
        ];
        for doc in docs {
            let fast = parse(doc);
            assert!(fast.is_some(), "{doc:?}");
            assert_eq!(fast, slow(doc), "{doc:?}");
        }
    }

    /// The word-at-a-time string scan answers exactly as a byte-by-byte
    /// scan, wherever the quote or a forbidden byte sits in a word.
    #[test]
    fn string_scan_agrees_with_the_byte_rule() {
        fn bytewise(b: &[u8], i: usize) -> Option<usize> {
            for (k, &c) in b.get(i..)?.iter().enumerate() {
                match CLASS[usize::from(c)] {
                    PLAIN => {}
                    QUOTE => return Some(i + k),
                    _ => return None,
                }
            }
            None
        }
        let specials = [
            b'"', b'\\', b'\t', b'\n', 0x00, 0x1f, 0x20, 0x7e, 0x7f, 0x80, 0xc3, 0xff, b'a',
        ];
        for len in 0..40 {
            for pos in 0..=len {
                for &special in &specials {
                    for fill in [b'a', 0x80, b'\t', 0x7e] {
                        let mut b = vec![fill; len];
                        if pos < len {
                            b[pos] = special;
                        }
                        b.push(b'"');
                        for start in 0..3.min(b.len()) {
                            assert_eq!(
                                plain_end(&b, start),
                                bytewise(&b, start),
                                "{b:?} from {start}"
                            );
                        }
                    }
                }
            }
        }
        // Every byte value in every lane of a two-word step, and after it.
        for lane in 0..36 {
            for v in 0..=255u8 {
                let mut b = vec![b'x'; 40];
                b[lane] = v;
                b[39] = b'"';
                assert_eq!(plain_end(&b, 0), bytewise(&b, 0), "{v:#x} at {lane}");
            }
        }
    }

    /// `skip_string` accepts only strings `string` accepts, of the length
    /// asked, in ASCII, and accepts hex; checked for every byte value at
    /// every position of strings of 0 to 20 bytes (words and the tail).
    #[test]
    fn skip_string_accepts_only_what_string_accepts() {
        for len in 0..=20usize {
            let hex: Vec<u8> = (0..len).map(|i| b"0123456789abcdef"[i % 16]).collect();
            let quoted = |body: &[u8]| [b"\"".as_slice(), body, b"\"\n"].concat();
            let doc = quoted(&hex);
            let mut t = Template::new(&doc);
            assert_eq!(t.skip_string(len), Some(()), "hex of {len}");
            assert!(t.eat("\n") && t.at_end());
            assert_eq!(Template::new(&doc).skip_string(len + 1), None);
            for at in 0..len {
                for byte in 0..=255u8 {
                    let mut body = hex.clone();
                    body[at] = byte;
                    let doc = quoted(&body);
                    let skipped = Template::new(&doc).skip_string(len).is_some();
                    let read = Template::new(&doc).string().map(str::len);
                    if skipped {
                        assert!(byte.is_ascii(), "{byte:#x} in {len}");
                        assert_eq!(read, Some(len), "{byte:#x} at {at} in {len}");
                    }
                }
            }
        }
    }

    /// A document's 16 first entries fit in one block of glibc's per-thread
    /// cache (at most 1,032 bytes), which `Slot` exists for; and entries
    /// come back with their table's name and element.
    #[test]
    fn slots_fit_the_thread_cache_and_name_their_tables() {
        assert!(16 * std::mem::size_of::<Slot>() <= 1032);
        let doc = read("a = 1\n[[d]]\nx = 2\n[[d]]\nx = 3\n[t]\ny = \"z\"\n").unwrap();
        let got: Vec<_> = doc
            .entries()
            .map(|e| (e.table, e.element, e.key, e.value))
            .collect();
        assert_eq!(
            got,
            [
                ("", 0, "a", Val::Int(1)),
                ("d", 0, "x", Val::Int(2)),
                ("d", 1, "x", Val::Int(3)),
                ("t", 0, "y", Val::Str("z")),
            ]
        );
    }

    /// An array knows its length and whether its items are strings of one
    /// length, and gives its items back in order.
    #[test]
    fn arrays_count_and_shape_their_items() {
        fn shape(doc: &str) -> (usize, Option<usize>, Vec<Val<'_>>) {
            let doc = read(doc).unwrap();
            let Some(Entry {
                value: Val::Array(a),
                ..
            }) = doc.entries().next()
            else {
                panic!("not an array")
            };
            (a.len(), a.string_len(), a.iter().collect())
        }
        assert_eq!(shape("a = []"), (0, None, vec![]));
        assert_eq!(
            shape("a = [\"ab\", \"cd\" ,\"ef\",]"),
            (
                3,
                Some(2),
                vec![Val::Str("ab"), Val::Str("cd"), Val::Str("ef")]
            )
        );
        assert_eq!(
            shape("a = [\"ab\", \"c\"]"),
            (2, None, vec![Val::Str("ab"), Val::Str("c")])
        );
        assert_eq!(
            shape("a = [\"ab\", 12]"),
            (2, None, vec![Val::Str("ab"), Val::Int(12)])
        );
        assert_eq!(shape("a = [12]"), (1, None, vec![Val::Int(12)]));
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
            "a = 9223372036854775808",
            "a = -9223372036854775809",
            "a = 1-2",
            "a = --1",
            "a = -",
            "a = -00",
            "a = [1-2]",
            "[t]\nx = 1\ny = 2\nx = 3",
            "[[d]]\nx = 1\nx = 2",
            "a = [1,,2]",
            "a = [,]",
            "a = [1 2]",
            "a = [1, [2]]",
            "a = [\"x\"",
            "\"k\\\"\" = 1",
            "[a.b]",
            "a = \"\u{1}\"",
            "a = 1 # \u{1}",
            "# \u{7f}\na = 1",
            "a = 1\r",
            "a = 1\rb = 2",
            "[t] # \u{0}",
        ];
        for doc in docs {
            assert_eq!(parse(doc), None, "{doc:?}");
        }
        // More distinct tables than the inline list holds: valid TOML, left
        // to the toml crate; one fewer is read here, as toml reads it.
        let tables = |n: usize| {
            (0..n)
                .map(|k| format!("[t{k}]\nx = {k}\n"))
                .collect::<String>()
        };
        assert_eq!(parse(&tables(MAX_TABLES + 1)), None);
        assert!(slow(&tables(MAX_TABLES + 1)).is_some());
        assert_eq!(parse(&tables(MAX_TABLES)), slow(&tables(MAX_TABLES)));
        assert!(parse(&tables(MAX_TABLES)).is_some());
        // Empty arrays and arrays of tables count once per name.
        let devices = "[[d]]\nx = []\n[[d]]\nx = [1]\n".repeat(MAX_TABLES + 1);
        assert_eq!(parse(&devices), slow(&devices));
    }
}
