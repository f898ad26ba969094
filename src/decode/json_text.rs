//! Whole resources (`contained`, `Bundle.entry.resource`) kept as their JSON text.

use std::sync::Arc;

use arrow::array::{ArrayBuilder, ArrayRef, StringBuilder};

use super::{ArrayDecoder, Context, OverflowReason};
use crate::json::Json;

pub(super) struct JsonTextDecoder {
    values: StringBuilder,
    buf: String,
}

impl Default for JsonTextDecoder {
    fn default() -> Self {
        JsonTextDecoder {
            values: StringBuilder::with_capacity(0, 0),
            buf: String::new(),
        }
    }
}

impl ArrayDecoder for JsonTextDecoder {
    fn append_absent(&mut self, n: usize) {
        self.values.append_nulls(n)
    }
    fn decode(&mut self, value: Option<&Json>, cx: &mut Context) {
        match value {
            None => self.values.append_null(),
            Some(Json::Null) => {
                cx.keep(OverflowReason::WrongType, &Json::Null);
                self.values.append_null()
            }
            Some(v) => {
                self.buf.clear();
                v.write_to(&mut self.buf);
                self.values.append_value(&self.buf);
            }
        }
    }
    fn flush(&mut self) -> Vec<ArrayRef> {
        let next =
            StringBuilder::with_capacity(self.values.len(), self.values.values_slice().len());
        vec![Arc::new(std::mem::replace(&mut self.values, next).finish())]
    }
}
