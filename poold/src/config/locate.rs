//! Maps byte offsets in a TOML document to key paths and line:column, and back, using the
//! spanned document tree that `toml` exposes (`toml::de::DeTable`).

use super::ConfigIssue;
use std::fmt;
use std::ops::Range;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One step in a key path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySegment {
    Key(String),
    Index(usize),
}

/// A key path such as `service[1].limits.memory`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyPath(pub Vec<KeySegment>);

impl KeyPath {
    pub fn root() -> Self {
        Self(Vec::new())
    }
    pub fn key(mut self, key: &str) -> Self {
        self.0.push(KeySegment::Key(key.to_owned()));
        self
    }
    pub fn index(mut self, index: usize) -> Self {
        self.0.push(KeySegment::Index(index));
        self
    }
    pub fn service(index: usize) -> Self {
        Self::root().key("service").index(index)
    }
}

impl fmt::Display for KeyPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (position, segment) in self.0.iter().enumerate() {
            match segment {
                KeySegment::Key(key) if position == 0 => write!(f, "{key}")?,
                KeySegment::Key(key) => write!(f, ".{key}")?,
                KeySegment::Index(index) => write!(f, "[{index}]")?,
            }
        }
        Ok(())
    }
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    LineIndex::new(text).line_col(text, offset)
}

/// Where each line starts, so that locating many offsets in one text costs a binary search
/// each instead of a scan from the start.
struct LineIndex {
    starts: Vec<usize>,
}

impl LineIndex {
    fn new(text: &str) -> Self {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(newline, _)| newline + 1))
            .collect();
        Self { starts }
    }

    fn line_col(&self, text: &str, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&start| start <= offset);
        let line_start = self.starts[line - 1];
        (line, text[line_start..offset].chars().count() + 1)
    }
}

/// Locates validation problems in one config text: the text is parsed once, however many
/// problems there are (5,000 services with duplicate listens used to take ~45 s).
pub struct Locator<'a> {
    text: &'a str,
    doc: Option<Spanned<DeTable<'a>>>,
    lines: LineIndex,
}

impl<'a> Locator<'a> {
    pub fn new(text: &'a str) -> Self {
        Self {
            text,
            doc: DeTable::parse(text).ok(),
            lines: LineIndex::new(text),
        }
    }

    /// A validation problem about `key`, located at that key's line (or its nearest
    /// parent's when the key is absent because it took its default).
    pub fn issue_at_key(&self, key: KeyPath, message: String) -> ConfigIssue {
        let offset = self
            .doc
            .as_ref()
            .and_then(|doc| offset_of_path(doc.get_ref(), &key.0));
        ConfigIssue {
            line_col: offset.map(|offset| self.lines.line_col(self.text, offset)),
            key: key.to_string(),
            message,
        }
    }
}

/// A parse or type error from `toml`, located, with the key it happened under.
pub fn issue_from_toml(text: &str, error: &toml::de::Error) -> ConfigIssue {
    let message = error.message().trim().to_owned();
    let Some(span) = error.span() else {
        return ConfigIssue {
            line_col: None,
            key: String::new(),
            message,
        };
    };
    // A syntax error still leaves a partial tree to find the key in.
    let (doc, _) = DeTable::parse_recoverable(text);
    let mut path = KeyPath::root();
    deepest_path_in_table(doc.get_ref(), &span, &mut path);
    let key = path.to_string();
    ConfigIssue {
        line_col: Some(line_col(text, span.start)),
        key,
        message,
    }
}

fn contains(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer.start < outer.end
}

fn deepest_path_in_table(table: &DeTable<'_>, span: &Range<usize>, path: &mut KeyPath) {
    for (key, value) in table.iter() {
        if contains(&key.span(), span) {
            path.0.push(KeySegment::Key(key.get_ref().to_string()));
            return;
        }
        if contains(&value.span(), span) || value_contains(value, span) {
            path.0.push(KeySegment::Key(key.get_ref().to_string()));
            deepest_path_in_value(value, span, path);
            return;
        }
    }
}

/// Tables from `[header]` sections can span more than their value span says, so look inside.
fn value_contains(value: &Spanned<DeValue<'_>>, span: &Range<usize>) -> bool {
    match value.get_ref() {
        DeValue::Table(table) => table.iter().any(|(key, value)| {
            contains(&key.span(), span)
                || contains(&value.span(), span)
                || value_contains(value, span)
        }),
        DeValue::Array(array) => array
            .iter()
            .any(|item| contains(&item.span(), span) || value_contains(item, span)),
        _ => false,
    }
}

fn deepest_path_in_value(value: &Spanned<DeValue<'_>>, span: &Range<usize>, path: &mut KeyPath) {
    match value.get_ref() {
        DeValue::Table(table) => deepest_path_in_table(table, span, path),
        DeValue::Array(array) => {
            for (index, item) in array.iter().enumerate() {
                if contains(&item.span(), span) || value_contains(item, span) {
                    path.0.push(KeySegment::Index(index));
                    deepest_path_in_value(item, span, path);
                    return;
                }
            }
        }
        _ => {}
    }
}

/// Offset of the deepest existing key along `path`.
fn offset_of_path(table: &DeTable<'_>, path: &[KeySegment]) -> Option<usize> {
    let (KeySegment::Key(first), rest) = path.split_first()? else {
        return None;
    };
    let (key, value) = table.iter().find(|(key, _)| key.get_ref() == first)?;
    let mut best = key.span().start;
    let mut current = value;
    let mut rest = rest;
    loop {
        let Some((segment, tail)) = rest.split_first() else {
            return Some(best);
        };
        let next = match (segment, current.get_ref()) {
            (KeySegment::Index(index), DeValue::Array(array)) => {
                let item = array.get(*index)?;
                // An array-of-tables element's span starts at its first key.
                best = item.span().start.max(best);
                Some(item)
            }
            (KeySegment::Key(name), DeValue::Table(table)) => table
                .iter()
                .find(|(key, _)| key.get_ref() == name)
                .map(|(key, value)| {
                    best = key.span().start;
                    value
                }),
            _ => None,
        };
        match next {
            Some(next) => current = next,
            None => return Some(best),
        }
        rest = tail;
    }
}

/// A file that is not UTF-8, located at its first invalid byte, with the key it is under
/// (found in a lossy copy: offsets before the first invalid byte are the same in both).
pub fn issue_from_invalid_utf8(bytes: &[u8], error: &std::str::Utf8Error) -> ConfigIssue {
    let at = error.valid_up_to();
    let valid = std::str::from_utf8(&bytes[..at]).unwrap_or_default();
    let lossy = String::from_utf8_lossy(bytes);
    let (doc, _) = DeTable::parse_recoverable(&lossy);
    let mut path = KeyPath::root();
    deepest_path_in_table(doc.get_ref(), &(at..at + 1), &mut path);
    ConfigIssue {
        line_col: Some(line_col(valid, at)),
        key: path.to_string(),
        message: format!(
            "invalid UTF-8 (byte {:#04x}): the file must be UTF-8",
            bytes[at]
        ),
    }
}
