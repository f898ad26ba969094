//! What a decoder needs besides the value: where it is, and where to keep what does not fit.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::json::{escape_pointer_token, write_json_string, Json};

/// Why a value was kept in overflow rather than (only) in a typed column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OverflowReason {
    /// An element the FHIR specification does not define here.
    UnknownElement,
    /// An element the specification defines, deeper than the schema's bounds.
    BeyondSchema,
    /// A value of the wrong JSON type (a string for a number, an object for a list, null).
    WrongType,
    /// A value of the right JSON type that is not valid (a bad instant, bad base64, out of range).
    InvalidValue,
    /// A valid value in its typed column whose exact text the column cannot give back
    /// (`1.50`, an instant's offset, base64 broken into lines).
    ExactText,
    /// A date or dateTime that does not parse: its text is in the column, its companion is null.
    /// Counted only; nothing needs to be kept.
    InvalidDate,
    /// A property given twice in one object.
    DuplicateKey,
}

/// Counts of what was kept, by reason and by element path (indices removed). Never values.
#[derive(Debug, Default, Clone, Serialize)]
pub struct OverflowStats {
    pub values: u64,
    pub rows: u64,
    pub by_reason: BTreeMap<OverflowReason, u64>,
    pub by_path: BTreeMap<String, u64>,
}

impl OverflowStats {
    pub fn merge(&mut self, other: &OverflowStats) {
        self.values += other.values;
        self.rows += other.rows;
        for (k, v) in &other.by_reason {
            *self.by_reason.entry(*k).or_default() += v;
        }
        for (k, v) in &other.by_path {
            *self.by_path.entry(k.clone()).or_default() += v;
        }
    }
}

/// The decoding state of one resource: the JSON Pointer of the current value and what was kept.
#[derive(Default)]
pub struct Context {
    path: String,
    kept: Vec<(String, String)>,
    pub stats: OverflowStats,
    /// Scratch for the element path a finding is counted under.
    general: String,
}

impl Context {
    /// Enters the property `key` (or an array index) of the current value.
    pub fn push(&mut self, key: &str) -> usize {
        let len = self.path.len();
        self.path.push('/');
        escape_pointer_token(key, &mut self.path);
        len
    }

    /// Like [`Context::push`] for a name of the schema, which never needs escaping.
    pub fn push_name(&mut self, name: &str) -> usize {
        let len = self.path.len();
        self.path.push('/');
        self.path.push_str(name);
        len
    }

    pub fn push_index(&mut self, i: usize) -> usize {
        let len = self.path.len();
        self.path.push('/');
        // Nearly every index is one digit: no formatting machinery for those.
        if i < 10 {
            self.path.push(char::from(b'0' + i as u8));
        } else {
            let _ = write!(self.path, "{i}");
        }
        len
    }

    pub fn pop(&mut self, len: usize) {
        self.path.truncate(len);
    }

    /// The JSON Pointer of the current value.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Keeps the current value in overflow.
    pub fn keep(&mut self, reason: OverflowReason, value: &Json) {
        let mut text = String::new();
        value.write_to(&mut text);
        self.kept.push((self.path.clone(), text));
        self.count(reason);
    }

    /// Keeps the property `key` of the current object in overflow.
    pub fn keep_member(&mut self, reason: OverflowReason, key: &str, value: &Json) {
        let len = self.push(key);
        self.keep(reason, value);
        self.pop(len);
    }

    /// Counts a finding that needs nothing kept.
    pub fn count(&mut self, reason: OverflowReason) {
        if reason != OverflowReason::InvalidDate {
            self.stats.values += 1;
        }
        *self.stats.by_reason.entry(reason).or_default() += 1;
        self.general.clear();
        for seg in self.path.split('/') {
            if seg.is_empty() || seg.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            if !self.general.is_empty() {
                self.general.push('.');
            }
            self.general.push_str(seg);
        }
        match self.stats.by_path.get_mut(self.general.as_str()) {
            Some(n) => *n += 1,
            None => {
                self.stats.by_path.insert(self.general.clone(), 1);
            }
        }
    }

    /// The overflow object of the finished row, if anything was kept, and resets for the next row.
    pub fn take_row_overflow(&mut self) -> Option<String> {
        self.path.clear();
        if self.kept.is_empty() {
            return None;
        }
        self.stats.rows += 1;
        let mut out = String::from("{");
        for (i, (p, v)) in self.kept.drain(..).enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_json_string(&p, &mut out);
            out.push(':');
            out.push_str(&v);
        }
        out.push('}');
        Some(out)
    }
}
