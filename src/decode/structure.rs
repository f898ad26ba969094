//! Complex types and backbone elements: a struct of the member columns.

use std::sync::Arc;

use arrow::array::{ArrayRef, NullBufferBuilder, StructArray};
use arrow::datatypes::Fields;

use super::keys::KeyTable;
use super::{make_decoder, ArrayDecoder, Context, OverflowReason};
use crate::json::Json;
use crate::schema::node::{primitive_extension_members, struct_fields, Member, Shape};

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
    keys: Vec<String>,
    lookup: KeyTable<Slot>,
    fields: Fields,
    nulls: NullBufferBuilder,
    /// Per column, the index of the member found in the object being decoded.
    found: Vec<usize>,
    /// Absent values not yet appended to the children (see [`ArrayDecoder::append_absent`]).
    pending: usize,
}

const ABSENT: usize = usize::MAX;

impl StructDecoder {
    pub(super) fn new(members: &[Member]) -> Self {
        let mut columns = Vec::new();
        let mut keys = Vec::new();
        let mut lookup = KeyTable::new();
        for m in members {
            let ext_key = format!("_{}", m.name);
            if m.cut {
                lookup.insert(&m.name, Slot::Cut);
                lookup.insert(&ext_key, Slot::Cut);
                continue;
            }
            lookup.insert(&m.name, Slot::Column(columns.len()));
            keys.push(m.name.clone());
            columns.push(make_decoder(m));
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
                    columns.push(make_decoder(&ext));
                } else {
                    lookup.insert(&ext_key, Slot::Cut);
                }
            }
        }
        let found = vec![ABSENT; columns.len()];
        StructDecoder {
            columns,
            keys,
            lookup,
            fields: struct_fields(members),
            nulls: NullBufferBuilder::new(0),
            found,
            pending: 0,
        }
    }

    /// A resource's top level: `resourceType` is the table, not a column.
    pub(super) fn ignoring(mut self, key: &str) -> Self {
        self.lookup.insert(key, Slot::Ignore);
        self
    }

    /// Decodes the members of an object into the columns, without a validity entry.
    pub(super) fn decode_members(
        &mut self,
        members: &[(std::borrow::Cow<str>, Json)],
        cx: &mut Context,
    ) {
        for (i, (k, v)) in members.iter().enumerate() {
            match self.lookup.get(k.as_ref()) {
                Some(Slot::Column(c)) => {
                    if self.found[c] == ABSENT {
                        self.found[c] = i;
                    } else {
                        cx.keep_member(OverflowReason::DuplicateKey, k, v);
                    }
                }
                Some(Slot::Cut) => cx.keep_member(OverflowReason::BeyondSchema, k, v),
                Some(Slot::Ignore) => {}
                None => cx.keep_member(OverflowReason::UnknownElement, k, v),
            }
        }
        for c in 0..self.columns.len() {
            let i = std::mem::replace(&mut self.found[c], ABSENT);
            if i == ABSENT {
                self.columns[c].append_absent(1);
            } else {
                let len = cx.push_name(&self.keys[c]);
                self.columns[c].decode(Some(&members[i].1), cx);
                cx.pop(len);
            }
        }
    }

    /// Appends the deferred absent values to the children.
    fn catch_up(&mut self) {
        if self.pending > 0 {
            for c in &mut self.columns {
                c.append_absent(self.pending);
            }
            self.nulls.append_n_nulls(self.pending);
            self.pending = 0;
        }
    }

    /// The arrays of the member columns.
    pub(super) fn flush_columns(&mut self) -> Vec<ArrayRef> {
        self.catch_up();
        self.columns.iter_mut().flat_map(|c| c.flush()).collect()
    }

    pub(super) fn fields(&self) -> &Fields {
        &self.fields
    }
}

impl ArrayDecoder for StructDecoder {
    fn append_absent(&mut self, n: usize) {
        self.pending += n;
    }

    fn decode(&mut self, value: Option<&Json>, cx: &mut Context) {
        match value {
            Some(Json::Obj(members)) => {
                self.catch_up();
                self.decode_members(members, cx);
                self.nulls.append_non_null();
            }
            Some(v) => {
                cx.keep(OverflowReason::WrongType, v);
                self.pending += 1;
            }
            None => self.pending += 1,
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
