//! Complex types and backbone elements: a struct of the member columns.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{ArrayRef, NullBufferBuilder, StructArray};
use arrow::datatypes::Fields;

use super::keys::KeyTable;
use super::nulls::null_array;
use super::{make_decoder, ArrayDecoder, Context, OverflowReason};
use crate::json::Json;
use crate::schema::node::{primitive_extension_members, Member, Shape};

#[derive(Clone, Copy)]
enum Slot {
    Column(usize),
    /// Known to FHIR, beyond the schema: overflow.
    Cut,
    /// Not data (`resourceType` of a resource).
    Ignore,
}

pub(super) struct StructDecoder {
    columns: Vec<Box<dyn ArrayDecoder>>,
    /// Per column, its fields among `fields` (a date has its text and its parsed companion).
    spans: Vec<Range<usize>>,
    keys: Vec<String>,
    lookup: KeyTable<Slot>,
    fields: Fields,
    nulls: NullBufferBuilder,
    /// Rows since the last flush.
    rows: usize,
    /// Per column, the rows given to it since the last flush. A column catches up with the absent
    /// rows only before its next value or at the flush, so an object costs its members, not the
    /// struct's width; a column given nothing at all is flushed as a shared all-null array.
    filled: Vec<usize>,
    /// Per column, its last all-null arrays and their length: the same length comes back batch
    /// after batch, and the arrays are only views of shared zeros.
    null_columns: Vec<Option<(usize, Vec<ArrayRef>)>>,
}

impl StructDecoder {
    /// The decoder of objects with `members`, whose columns are `fields`.
    pub(super) fn new(members: &[Member], fields: &Fields) -> Self {
        let mut columns = Vec::new();
        let mut spans = Vec::new();
        let mut keys = Vec::new();
        // Each member's name and its `_name`, and `resourceType` of a resource.
        let mut lookup = KeyTable::with_capacity(members.len() * 2 + 1);
        let mut at = 0;
        for m in members {
            let ext_key = format!("_{}", m.name);
            if m.cut {
                lookup.insert(&m.name, Slot::Cut);
                lookup.insert(&ext_key, Slot::Cut);
                continue;
            }
            let width = match m.shape {
                Shape::Prim(p) if p.companion_type().is_some() => 2,
                _ => 1,
            };
            lookup.insert(&m.name, Slot::Column(columns.len()));
            keys.push(m.name.clone());
            columns.push(make_decoder(m, &fields[at..at + width]));
            spans.push(at..at + width);
            at += width;
            if let Shape::Prim(_) = m.shape {
                if m.prim_ext {
                    let ext = Member {
                        name: ext_key.clone(),
                        fhir_type: "Element".into(),
                        repeated: m.repeated,
                        shape: Shape::Struct(primitive_extension_members()),
                        prim_ext: false,
                        cut: false,
                    };
                    lookup.insert(&ext_key, Slot::Column(columns.len()));
                    keys.push(ext_key);
                    columns.push(make_decoder(&ext, &fields[at..at + 1]));
                    spans.push(at..at + 1);
                    at += 1;
                } else {
                    lookup.insert(&ext_key, Slot::Cut);
                }
            }
        }
        debug_assert_eq!(at, fields.len(), "one field per column");
        let filled = vec![0; columns.len()];
        let null_columns = vec![None; columns.len()];
        StructDecoder {
            columns,
            spans,
            keys,
            lookup,
            fields: fields.clone(),
            nulls: NullBufferBuilder::new(0),
            rows: 0,
            filled,
            null_columns,
        }
    }

    /// A resource's top level: `resourceType` is the table, not a column.
    pub(super) fn ignoring(mut self, key: &str) -> Self {
        self.lookup.insert(key, Slot::Ignore);
        self
    }

    /// Decodes the members of an object into the columns, as one row without a validity entry.
    pub(super) fn decode_members(
        &mut self,
        members: &[(std::borrow::Cow<str>, Json)],
        cx: &mut Context,
    ) {
        let row = self.rows;
        for (k, v) in members {
            match self.lookup.get(k.as_ref()) {
                Some(Slot::Column(c)) => {
                    let filled = self.filled[c];
                    if filled > row {
                        cx.keep_member(OverflowReason::DuplicateKey, k, v);
                        continue;
                    }
                    if filled < row {
                        self.columns[c].append_absent(row - filled);
                    }
                    let len = cx.push_name(&self.keys[c]);
                    self.columns[c].decode(Some(v), cx);
                    cx.pop(len);
                    self.filled[c] = row + 1;
                }
                Some(Slot::Cut) => cx.keep_member(OverflowReason::BeyondSchema, k, v),
                Some(Slot::Ignore) => {}
                None => cx.keep_member(OverflowReason::UnknownElement, k, v),
            }
        }
        self.rows += 1;
    }

    /// The arrays of the member columns.
    pub(super) fn flush_columns(&mut self) -> Vec<ArrayRef> {
        let rows = std::mem::take(&mut self.rows);
        let mut out = Vec::with_capacity(self.fields.len());
        for (c, column) in self.columns.iter_mut().enumerate() {
            let filled = std::mem::take(&mut self.filled[c]);
            if filled == 0 {
                let cached = &mut self.null_columns[c];
                if cached.as_ref().is_none_or(|(len, _)| *len != rows) {
                    let fields = &self.fields[self.spans[c].clone()];
                    let arrays = fields.iter().map(|f| null_array(f.data_type(), rows));
                    *cached = Some((rows, arrays.collect()));
                }
                out.extend(cached.as_ref().expect("set above").1.iter().cloned());
            } else {
                if filled < rows {
                    column.append_absent(rows - filled);
                }
                out.extend(column.flush());
            }
        }
        out
    }

    pub(super) fn fields(&self) -> &Fields {
        &self.fields
    }
}

impl ArrayDecoder for StructDecoder {
    fn append_absent(&mut self, n: usize) {
        self.nulls.append_n_nulls(n);
        self.rows += n;
    }

    fn decode(&mut self, value: Option<&Json>, cx: &mut Context) {
        match value {
            Some(Json::Obj(members)) => {
                self.decode_members(members, cx);
                self.nulls.append_non_null();
            }
            Some(v) => {
                cx.keep(OverflowReason::WrongType, v);
                self.append_absent(1);
            }
            None => self.append_absent(1),
        }
    }

    fn flush(&mut self) -> Vec<ArrayRef> {
        let columns = self.flush_columns();
        let nulls = self.nulls.finish();
        vec![Arc::new(StructArray::new(
            self.fields.clone(),
            columns,
            nulls,
        ))]
    }
}
