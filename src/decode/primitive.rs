//! Decoders of FHIR primitives.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BinaryBuilder, BooleanBuilder, Decimal128Builder, Int32Builder, Int64Builder,
    StringBuilder, TimestampMicrosecondBuilder,
};
use base64::Engine as _;

use super::builders::{bytes, finish_booleans, finish_bytes, finish_primitives, primitives};
use super::datetime::{instant_text, parse_date, parse_datetime, parse_instant, parse_time};
use super::decimal::{is_decimal_text, parse_decimal};
use super::{ArrayDecoder, Context, OverflowReason};
use crate::json::Json;
use crate::schema::node::{Prim, DECIMAL_PRECISION, DECIMAL_SCALE};

pub(super) fn make(p: Prim) -> Box<dyn ArrayDecoder> {
    match p {
        Prim::Boolean => Box::new(BooleanDecoder(BooleanBuilder::with_capacity(0))),
        Prim::Integer => Box::new(IntegerDecoder(primitives(0))),
        Prim::Decimal => Box::new(DecimalDecoder(primitives(0))),
        Prim::String => Box::new(StringDecoder(bytes(0, 0))),
        Prim::Instant => Box::new(InstantDecoder(primitives(0))),
        Prim::Base64 => Box::new(Base64Decoder(bytes(0, 0), Vec::new())),
        Prim::Date | Prim::DateTime | Prim::Time => Box::new(DateTextDecoder::new(p)),
    }
}

/// A value of the wrong JSON type: kept whole. An explicit `null` is not valid FHIR either.
fn wrong_type(v: &Json, cx: &mut Context) {
    cx.keep(OverflowReason::WrongType, v)
}

struct BooleanDecoder(BooleanBuilder);

impl ArrayDecoder for BooleanDecoder {
    fn append_absent(&mut self, n: usize) {
        self.0.append_nulls(n)
    }
    fn decode(&mut self, value: Option<&Json>, cx: &mut Context) {
        match value {
            Some(Json::Bool(b)) => self.0.append_value(*b),
            Some(v) => {
                wrong_type(v, cx);
                self.0.append_null()
            }
            None => self.0.append_null(),
        }
    }
    fn flush(&mut self) -> Vec<ArrayRef> {
        vec![Arc::new(finish_booleans(&mut self.0))]
    }
}

/// Whether integer text that parsed is the text of its value: no `+`, no leading zero, no `-0`.
fn canonical_integer(t: &str) -> bool {
    let digits = t.strip_prefix('-').unwrap_or(t);
    !t.starts_with('+') && !(digits.starts_with('0') && (digits.len() > 1 || t.starts_with('-')))
}

struct IntegerDecoder(Int32Builder);

impl ArrayDecoder for IntegerDecoder {
    fn append_absent(&mut self, n: usize) {
        self.0.append_nulls(n)
    }
    fn decode(&mut self, value: Option<&Json>, cx: &mut Context) {
        match value {
            Some(v @ Json::Num(t)) => match t.parse::<i32>() {
                Ok(i) => {
                    self.0.append_value(i);
                    if !canonical_integer(t) {
                        cx.keep(OverflowReason::ExactText, v);
                    }
                }
                Err(_) => {
                    cx.keep(OverflowReason::InvalidValue, v);
                    self.0.append_null()
                }
            },
            Some(v) => {
                wrong_type(v, cx);
                self.0.append_null()
            }
            None => self.0.append_null(),
        }
    }
    fn flush(&mut self) -> Vec<ArrayRef> {
        vec![Arc::new(finish_primitives(&mut self.0))]
    }
}

struct DecimalDecoder(Decimal128Builder);

impl ArrayDecoder for DecimalDecoder {
    fn append_absent(&mut self, n: usize) {
        self.0.append_nulls(n)
    }
    fn decode(&mut self, value: Option<&Json>, cx: &mut Context) {
        match value {
            Some(v @ Json::Num(t)) => match parse_decimal(t) {
                Some((d, exact)) => {
                    self.0.append_value(d);
                    if !exact || !is_decimal_text(d, t) {
                        cx.keep(OverflowReason::ExactText, v);
                    }
                }
                None => {
                    cx.keep(OverflowReason::InvalidValue, v);
                    self.0.append_null()
                }
            },
            Some(v) => {
                wrong_type(v, cx);
                self.0.append_null()
            }
            None => self.0.append_null(),
        }
    }
    fn flush(&mut self) -> Vec<ArrayRef> {
        let a = finish_primitives(&mut self.0)
            .with_precision_and_scale(DECIMAL_PRECISION, DECIMAL_SCALE)
            .expect("valid decimal type");
        vec![Arc::new(a)]
    }
}

struct StringDecoder(StringBuilder);

impl ArrayDecoder for StringDecoder {
    fn append_absent(&mut self, n: usize) {
        self.0.append_nulls(n)
    }
    fn decode(&mut self, value: Option<&Json>, cx: &mut Context) {
        match value {
            Some(Json::Str(s)) => self.0.append_value(s),
            Some(v) => {
                wrong_type(v, cx);
                self.0.append_null()
            }
            None => self.0.append_null(),
        }
    }
    fn flush(&mut self) -> Vec<ArrayRef> {
        vec![Arc::new(finish_bytes(&mut self.0))]
    }
}

struct InstantDecoder(TimestampMicrosecondBuilder);

impl ArrayDecoder for InstantDecoder {
    fn append_absent(&mut self, n: usize) {
        self.0.append_nulls(n)
    }
    fn decode(&mut self, value: Option<&Json>, cx: &mut Context) {
        match value {
            Some(v @ Json::Str(s)) => match parse_instant(s) {
                Some(t) => {
                    self.0.append_value(t);
                    // Only text of the canonical shape can be the canonical text.
                    let shaped = s.len() == 29 && s.ends_with("+00:00");
                    if !shaped || instant_text(t) != **s {
                        cx.keep(OverflowReason::ExactText, v);
                    }
                }
                None => {
                    cx.keep(OverflowReason::InvalidValue, v);
                    self.0.append_null()
                }
            },
            Some(v) => {
                wrong_type(v, cx);
                self.0.append_null()
            }
            None => self.0.append_null(),
        }
    }
    fn flush(&mut self) -> Vec<ArrayRef> {
        vec![Arc::new(
            finish_primitives(&mut self.0).with_timezone("UTC"),
        )]
    }
}

/// base64Binary: the decoded bytes (the second field is scratch for decoding into).
struct Base64Decoder(BinaryBuilder, Vec<u8>);

impl ArrayDecoder for Base64Decoder {
    fn append_absent(&mut self, n: usize) {
        self.0.append_nulls(n)
    }
    fn decode(&mut self, value: Option<&Json>, cx: &mut Context) {
        // The standard engine accepts canonical text only (padding, zero trailing bits), so
        // what it decodes encodes back to the same text: nothing needs keeping.
        let engine = base64::engine::general_purpose::STANDARD;
        let decoded = &mut self.1;
        decoded.clear();
        match value {
            Some(v @ Json::Str(s)) => match engine.decode_vec(s.as_bytes(), decoded) {
                Ok(()) => {
                    debug_assert_eq!(engine.encode(&decoded[..]), **s);
                    self.0.append_value(&decoded[..]);
                }
                // FHIR allows whitespace between the groups of four (R4's regex
                // `(\s*([0-9a-zA-Z\+/=]){4}\s*)+`, PEM-style line breaks): the bytes are
                // typed, and the text as written is kept to give back exactly.
                Err(_) if s.bytes().any(|b| b.is_ascii_whitespace()) => {
                    let compact: Vec<u8> = s.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
                    decoded.clear();
                    match engine.decode_vec(&compact, decoded) {
                        Ok(()) => {
                            cx.keep(OverflowReason::ExactText, v);
                            self.0.append_value(&decoded[..]);
                        }
                        Err(_) => {
                            cx.keep(OverflowReason::InvalidValue, v);
                            self.0.append_null()
                        }
                    }
                }
                Err(_) => {
                    cx.keep(OverflowReason::InvalidValue, v);
                    self.0.append_null()
                }
            },
            Some(v) => {
                wrong_type(v, cx);
                self.0.append_null()
            }
            None => self.0.append_null(),
        }
    }
    fn flush(&mut self) -> Vec<ArrayRef> {
        vec![Arc::new(finish_bytes(&mut self.0))]
    }
}

/// date, dateTime and time: the text, and a parsed companion (a timestamp; for a time, the
/// microseconds since midnight as Int64, which every engine reads, unlike Parquet's TIME).
struct DateTextDecoder {
    prim: Prim,
    text: StringBuilder,
    ts: TimestampMicrosecondBuilder,
    time: Int64Builder,
}

impl DateTextDecoder {
    fn new(prim: Prim) -> Self {
        DateTextDecoder {
            prim,
            text: bytes(0, 0),
            ts: primitives(0),
            time: primitives(0),
        }
    }

    fn append_companion(&mut self, v: Option<i64>) {
        if self.prim == Prim::Time {
            self.time.append_option(v)
        } else {
            self.ts.append_option(v)
        }
    }
}

impl ArrayDecoder for DateTextDecoder {
    fn append_absent(&mut self, n: usize) {
        self.text.append_nulls(n);
        if self.prim == Prim::Time {
            self.time.append_nulls(n)
        } else {
            self.ts.append_nulls(n)
        }
    }
    fn decode(&mut self, value: Option<&Json>, cx: &mut Context) {
        match value {
            Some(Json::Str(s)) => {
                self.text.append_value(s);
                let parsed = match self.prim {
                    Prim::Date => parse_date(s),
                    Prim::Time => parse_time(s),
                    _ => parse_datetime(s),
                };
                if parsed.is_none() {
                    cx.count(OverflowReason::InvalidDate);
                }
                self.append_companion(parsed);
            }
            Some(v) => {
                wrong_type(v, cx);
                self.text.append_null();
                self.append_companion(None);
            }
            None => {
                self.text.append_null();
                self.append_companion(None);
            }
        }
    }
    fn flush(&mut self) -> Vec<ArrayRef> {
        let companion: ArrayRef = if self.prim == Prim::Time {
            Arc::new(finish_primitives(&mut self.time))
        } else {
            Arc::new(finish_primitives(&mut self.ts).with_timezone("UTC"))
        };
        vec![Arc::new(finish_bytes(&mut self.text)), companion]
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn canonical_integer_is_the_text_of_the_value() {
        for t in [
            "0",
            "-1",
            "42",
            "-2147483648",
            "2147483647",
            "+5",
            "007",
            "-0",
            "-05",
            "00",
        ] {
            let i: i32 = t.parse().unwrap();
            assert_eq!(super::canonical_integer(t), i.to_string() == t, "{t}");
        }
    }
}
