//! FHIR functions for SQL: references, codes, extensions and dates.
//!
//! | function | what it gives |
//! |---|---|
//! | `reference_id(ref)` | the id a Reference (struct or string) points to; NULL for a conditional reference |
//! | `reference_type(ref)` | the resource type it points to (the `type` element when the text has none) |
//! | `has_code(cc, system, code)` | whether a CodeableConcept, Coding or list of them holds the code |
//! | `code_of(cc, system)` | the first code of that system (any system for NULL) |
//! | `extension_value(ext, url, ...)` | the value of the extension with that url, as text (a complex value as its FHIR JSON); more urls go into nested extensions |
//! | `fhir_date_start(text)`, `fhir_date_end(text)` | the start and the (exclusive) end of a FHIR date or dateTime |

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanBuilder, StringBuilder, StructArray,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, TimeUnit};
use arrow::util::display::array_value_to_string;
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

use crate::decode::datetime::parse_datetime;
use crate::reference::parse_reference;

/// Registers every FHIR function.
pub fn register(ctx: &SessionContext) {
    for f in [
        Fhir::ReferenceId,
        Fhir::ReferenceType,
        Fhir::HasCode,
        Fhir::CodeOf,
        Fhir::ExtensionValue,
        Fhir::DateStart,
        Fhir::DateEnd,
    ] {
        ctx.register_udf(ScalarUDF::from(FhirFunction::new(f)));
    }
}

/// The names of the FHIR functions, for completion and help (`fhirpath` is rewritten before
/// planning: see `sql::fhirpath`).
pub const NAMES: &[&str] = &[
    "fhirpath",
    "reference_id",
    "reference_type",
    "has_code",
    "code_of",
    "extension_value",
    "fhir_date_start",
    "fhir_date_end",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Fhir {
    ReferenceId,
    ReferenceType,
    HasCode,
    CodeOf,
    ExtensionValue,
    DateStart,
    DateEnd,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct FhirFunction {
    f: Fhir,
    signature: Signature,
}

impl FhirFunction {
    fn new(f: Fhir) -> Self {
        let signature = match f {
            Fhir::ExtensionValue => Signature::variadic_any(Volatility::Immutable),
            Fhir::HasCode => Signature::any(3, Volatility::Immutable),
            Fhir::CodeOf => Signature::any(2, Volatility::Immutable),
            _ => Signature::any(1, Volatility::Immutable),
        };
        FhirFunction { f, signature }
    }
}

impl ScalarUDFImpl for FhirFunction {
    fn name(&self) -> &str {
        match self.f {
            Fhir::ReferenceId => "reference_id",
            Fhir::ReferenceType => "reference_type",
            Fhir::HasCode => "has_code",
            Fhir::CodeOf => "code_of",
            Fhir::ExtensionValue => "extension_value",
            Fhir::DateStart => "fhir_date_start",
            Fhir::DateEnd => "fhir_date_end",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(match self.f {
            Fhir::HasCode => DataType::Boolean,
            Fhir::DateStart | Fhir::DateEnd => {
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
            }
            _ => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let first = &arrays[0];
        let text_arg = |i: usize, row: usize| -> Option<Cow<'_, str>> { text_at(&arrays[i], row) };
        let out: ArrayRef = match self.f {
            Fhir::ReferenceId | Fhir::ReferenceType => {
                let mut b = StringBuilder::new();
                for row in 0..n {
                    let (text, declared) = reference_parts(first, row);
                    let (t, id) = text.as_deref().map(parse_reference).unwrap_or((None, None));
                    match self.f {
                        Fhir::ReferenceId => b.append_option(id),
                        _ => b.append_option(t.map(str::to_string).or(declared)),
                    }
                }
                Arc::new(b.finish())
            }
            Fhir::HasCode => {
                let mut b = BooleanBuilder::new();
                for row in 0..n {
                    let (system, code) = (text_arg(1, row), text_arg(2, row));
                    let codings = codings(first, row);
                    b.append_value(codings.iter().any(|(s, c)| {
                        c.as_deref() == code.as_deref()
                            && (system.is_none() || s.as_deref() == system.as_deref())
                    }));
                }
                Arc::new(b.finish())
            }
            Fhir::CodeOf => {
                let mut b = StringBuilder::new();
                for row in 0..n {
                    let system = text_arg(1, row);
                    let found = codings(first, row)
                        .into_iter()
                        .find(|(s, c)| {
                            c.is_some() && (system.is_none() || s.as_deref() == system.as_deref())
                        })
                        .and_then(|(_, c)| c);
                    b.append_option(found);
                }
                Arc::new(b.finish())
            }
            Fhir::ExtensionValue => {
                if arrays.len() < 2 {
                    return exec_err!(
                        "extension_value(extensions, url, ...) needs at least one url"
                    );
                }
                let mut b = StringBuilder::new();
                for row in 0..n {
                    let urls: Vec<Option<String>> = (1..arrays.len())
                        .map(|i| text_arg(i, row).map(Cow::into_owned))
                        .collect();
                    b.append_option(extension_value(first, row, &urls));
                }
                Arc::new(b.finish())
            }
            Fhir::DateStart | Fhir::DateEnd => {
                let mut b = TimestampMicrosecondBuilder::new();
                for row in 0..n {
                    let text = text_arg(0, row);
                    let v = text.as_deref().and_then(|t| match self.f {
                        Fhir::DateStart => parse_datetime(t),
                        _ => date_end(t),
                    });
                    b.append_option(v);
                }
                Arc::new(b.finish().with_timezone("UTC"))
            }
        };
        if args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            return Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?));
        }
        Ok(ColumnarValue::Array(out))
    }
}

/// The text of a value: borrowed from a string column, formatted otherwise.
fn text_at(a: &ArrayRef, row: usize) -> Option<Cow<'_, str>> {
    if a.data_type() == &DataType::Null || a.is_null(row) {
        return None;
    }
    match a.data_type() {
        DataType::Utf8 => Some(Cow::Borrowed(a.as_string::<i32>().value(row))),
        DataType::Utf8View => Some(Cow::Borrowed(a.as_string_view().value(row))),
        DataType::LargeUtf8 => Some(Cow::Borrowed(a.as_string::<i64>().value(row))),
        _ => array_value_to_string(a, row).ok().map(Cow::Owned),
    }
}

/// The reference text and the declared `type` of a Reference struct (or a plain string).
fn reference_parts(a: &ArrayRef, row: usize) -> (Option<String>, Option<String>) {
    if a.is_null(row) {
        return (None, None);
    }
    match a.data_type() {
        DataType::Struct(_) => {
            let s = a.as_struct();
            let field = |name: &str| {
                s.column_by_name(name)
                    .filter(|c| c.is_valid(row))
                    .and_then(|c| array_value_to_string(c, row).ok())
            };
            (field("reference"), field("type"))
        }
        _ => (array_value_to_string(a, row).ok(), None),
    }
}

/// A coding's system and code.
type Coding<'a> = (Option<Cow<'a, str>>, Option<Cow<'a, str>>);

/// Every (system, code) reachable from a Coding, CodeableConcept, or a list of either.
fn codings(a: &ArrayRef, row: usize) -> Vec<Coding<'_>> {
    let mut out = Vec::new();
    if a.is_null(row) {
        return out;
    }
    match a.data_type() {
        DataType::List(_) => {
            let list = a.as_list::<i32>();
            let (start, end) = (
                list.value_offsets()[row] as usize,
                list.value_offsets()[row + 1] as usize,
            );
            for i in start..end {
                out.extend(codings(list.values(), i));
            }
        }
        DataType::Struct(_) => {
            let s: &StructArray = a.as_struct();
            if let Some(coding) = s.column_by_name("coding") {
                out.extend(codings(coding, row));
            } else {
                let field = |name: &str| s.column_by_name(name).and_then(|c| text_at(c, row));
                out.push((field("system"), field("code")));
            }
        }
        _ => {}
    }
    out
}

/// The value of the extension at `urls` (nested), as text.
fn extension_value(a: &ArrayRef, row: usize, urls: &[Option<String>]) -> Option<String> {
    if a.is_null(row) {
        return None;
    }
    match a.data_type() {
        // A primitive extension (`_birthDate`) or an element: look in its `extension`.
        DataType::Struct(_) if a.as_struct().column_by_name("url").is_none() => {
            let s = a.as_struct();
            extension_value(s.column_by_name("extension")?, row, urls)
        }
        DataType::List(_) => {
            let items = a.as_list::<i32>().value(row);
            let s = items.as_struct_opt()?;
            let url_col = s.column_by_name("url")?;
            let (want, rest) = urls.split_first()?;
            for i in 0..items.len() {
                if items.is_null(i) || url_col.is_null(i) {
                    continue;
                }
                if array_value_to_string(url_col, i).ok().as_deref() != want.as_deref() {
                    continue;
                }
                if !rest.is_empty() {
                    return extension_value(s.column_by_name("extension")?, i, rest);
                }
                for (f, col) in s.fields().iter().zip(s.columns()) {
                    if f.name().starts_with("value")
                        && !f.name().ends_with("_ts")
                        && col.is_valid(i)
                    {
                        return value_text(col, i);
                    }
                }
                return None;
            }
            None
        }
        _ => None,
    }
}

/// A value as text: a primitive as it reads, a complex value (CodeableConcept, Quantity, ...)
/// as its FHIR JSON.
fn value_text(col: &ArrayRef, i: usize) -> Option<String> {
    match col.data_type() {
        DataType::Struct(_) | DataType::List(_) => {
            let mut out = String::new();
            fhir_json(col, i).write_to(&mut out);
            Some(out)
        }
        DataType::Decimal128(_, _) => Some(crate::decode::decimal::decimal_text(
            col.as_primitive::<arrow::datatypes::Decimal128Type>()
                .value(i),
        )),
        DataType::Timestamp(_, _) => Some(crate::decode::datetime::instant_text(
            col.as_primitive::<arrow::datatypes::TimestampMicrosecondType>()
                .value(i),
        )),
        _ => array_value_to_string(col, i).ok(),
    }
}

/// A typed value as FHIR JSON: nulls left out, the `_ts` companions of dates left out, numbers
/// as numbers.
fn fhir_json(col: &ArrayRef, i: usize) -> crate::json::Json<'static> {
    use crate::json::Json;
    match col.data_type() {
        DataType::Struct(fields) => {
            let s = col.as_struct();
            let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
            let mut obj = Vec::new();
            for (f, c) in fields.iter().zip(s.columns()) {
                let companion = f
                    .name()
                    .strip_suffix("_ts")
                    .is_some_and(|base| names.contains(&base));
                if companion || c.is_null(i) {
                    continue;
                }
                obj.push((Cow::Owned(f.name().clone()), fhir_json(c, i)));
            }
            Json::Obj(Cow::Owned(obj))
        }
        DataType::List(_) => {
            let items = col.as_list::<i32>().value(i);
            Json::Arr(
                (0..items.len())
                    .filter(|&k| items.is_valid(k))
                    .map(|k| fhir_json(&items, k))
                    .collect(),
            )
        }
        DataType::Boolean => Json::Bool(col.as_boolean().value(i)),
        DataType::Int32 | DataType::Int64 | DataType::Decimal128(_, _) => {
            Json::Num(Cow::Owned(value_text(col, i).unwrap_or_default()))
        }
        DataType::Binary => {
            use base64::Engine as _;
            Json::Str(Cow::Owned(
                base64::engine::general_purpose::STANDARD.encode(col.as_binary::<i32>().value(i)),
            ))
        }
        _ => Json::Str(Cow::Owned(value_text(col, i).unwrap_or_default())),
    }
}

/// The exclusive end of the period a FHIR date or dateTime stands for.
fn date_end(t: &str) -> Option<i64> {
    use chrono::{DateTime, Months, TimeDelta};
    let start = DateTime::from_timestamp_micros(parse_datetime(t)?)?;
    let end = match t.len() {
        4 => start.checked_add_months(Months::new(12))?,
        7 => start.checked_add_months(Months::new(1))?,
        10 => start + TimeDelta::days(1),
        _ => {
            let time = t.split_once('T')?.1;
            let frac = time
                .split_once('.')
                .map(|(_, f)| f.chars().take_while(char::is_ascii_digit).count());
            match frac {
                Some(d) => {
                    start + TimeDelta::microseconds(10i64.pow(6u32.saturating_sub(d as u32).min(6)))
                }
                None if time.len() >= 8 && time.as_bytes()[5] == b':' => {
                    start + TimeDelta::seconds(1)
                }
                None => start + TimeDelta::minutes(1),
            }
        }
    };
    Some(end.timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        assert_eq!(
            parse_reference("Patient/1"),
            (Some("Patient"), Some("1".into()))
        );
        assert_eq!(
            parse_reference("https://x/fhir/Patient/1/_history/2"),
            (Some("Patient"), Some("1".into()))
        );
        assert_eq!(parse_reference("urn:uuid:abc"), (None, Some("abc".into())));
        assert_eq!(parse_reference("#c1"), (None, Some("c1".into())));
        assert_eq!(
            parse_reference("Patient?identifier=a|b"),
            (Some("Patient"), None)
        );
        assert_eq!(parse_reference("nonsense"), (None, None));
    }

    #[test]
    fn date_ends() {
        let d = |s| parse_datetime(s).unwrap();
        assert_eq!(date_end("2020"), Some(d("2021")));
        assert_eq!(date_end("2020-12"), Some(d("2021-01")));
        assert_eq!(date_end("2020-12-31"), Some(d("2021-01-01")));
        assert_eq!(
            date_end("2020-12-31T10:00:00Z"),
            Some(d("2020-12-31T10:00:01Z"))
        );
    }
}
