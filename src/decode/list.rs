//! Repeating elements: a list per column of the item decoder, sharing offsets and validity.

use std::sync::Arc;

use arrow::array::{ArrayRef, ListArray, NullBufferBuilder};
use arrow::buffer::OffsetBuffer;
use arrow::datatypes::FieldRef;

use super::{ArrayDecoder, Context, OverflowReason};
use crate::json::Json;

pub(super) struct ListDecoder {
    item: Box<dyn ArrayDecoder>,
    item_fields: Vec<FieldRef>,
    offsets: Vec<i32>,
    nulls: NullBufferBuilder,
}

impl ListDecoder {
    /// Lists of what `item` decodes; `item_fields` are the lists' item fields, one per column.
    pub(super) fn new(item: Box<dyn ArrayDecoder>, item_fields: Vec<FieldRef>) -> Self {
        ListDecoder {
            item,
            item_fields,
            offsets: vec![0],
            nulls: NullBufferBuilder::new(0),
        }
    }

    fn close(&mut self, added: usize, valid: bool) {
        let last = *self.offsets.last().expect("offsets start with 0");
        self.offsets.push(last + added as i32);
        self.nulls.append(valid);
    }
}

impl ArrayDecoder for ListDecoder {
    fn append_absent(&mut self, n: usize) {
        let last = *self.offsets.last().expect("offsets start with 0");
        self.offsets.extend(std::iter::repeat_n(last, n));
        self.nulls.append_n_nulls(n);
    }
    fn decode(&mut self, value: Option<&Json>, cx: &mut Context) {
        match value {
            Some(Json::Arr(items)) => {
                for (i, item) in items.iter().enumerate() {
                    let len = cx.push_index(i);
                    // A null inside an array is allowed (it pairs with a `_name` entry).
                    let item = if matches!(item, Json::Null) {
                        None
                    } else {
                        Some(item)
                    };
                    self.item.decode(item, cx);
                    cx.pop(len);
                }
                self.close(items.len(), true);
            }
            Some(v) => {
                cx.keep(OverflowReason::WrongType, v);
                self.close(0, false);
            }
            None => self.append_absent(1),
        }
    }

    fn flush(&mut self) -> Vec<ArrayRef> {
        let mut next = Vec::with_capacity(self.offsets.len());
        next.push(0);
        let offsets = OffsetBuffer::new(std::mem::replace(&mut self.offsets, next).into());
        let nulls = self.nulls.finish();
        self.item
            .flush()
            .into_iter()
            .zip(&self.item_fields)
            .map(|(values, field)| {
                Arc::new(ListArray::new(
                    field.clone(),
                    offsets.clone(),
                    values,
                    nulls.clone(),
                )) as ArrayRef
            })
            .collect()
    }
}
