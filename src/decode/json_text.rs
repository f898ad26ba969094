//! Whole resources (`contained`, `Bundle.entry.resource`) kept as their JSON text.

use std::sync::Arc;

use arrow::array::{ArrayRef, StringBuilder};

use super::builders::{bytes, finish_bytes};
use super::{ArrayDecoder, Context, OverflowReason};
use crate::json::Json;

pub(super) struct JsonTextDecoder {
    values: StringBuilder,
    buf: String,
}

impl Default for JsonTextDecoder {
    fn default() -> Self {
        JsonTextDecoder {
            values: bytes(0, 0),
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
        vec![Arc::new(finish_bytes(&mut self.values))]
    }
}
