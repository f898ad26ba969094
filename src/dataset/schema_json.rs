//! A table's Delta schema as the JSON its metadata records (`schemaString`), written straight
//! from the Arrow schema.
//!
//! The Delta kernel makes it in two steps: the Arrow schema converted to its `StructType`, then
//! serialized. For the full typed schema of a resource type (up to hundreds of kilobytes of
//! JSON) that took 1-3 ms a type, on every new table's commit. This writes the same text in one
//! pass over the Arrow fields, for the types our schemas hold; anything else (field metadata,
//! another type) gives `None`, and the caller takes the kernel's way. A test holds the two to
//! the same bytes for every resource type of every FHIR version.

use std::fmt::Write;

use arrow::datatypes::{DataType, FieldRef, TimeUnit};

/// The Delta schema JSON of a table of `fields`, or `None` where a field is not one this
/// writes as the kernel does.
///
/// ```
/// use std::sync::Arc;
/// use arrow::datatypes::{DataType, Field};
/// use fhir2parquet::dataset::schema_json::write;
///
/// let fields = vec![
///     Arc::new(Field::new("id", DataType::Utf8, true)),
///     Arc::new(Field::new_list("given", Field::new("item", DataType::Utf8, true), true)),
/// ];
/// assert_eq!(
///     write(&fields).unwrap(),
///     r#"{"type":"struct","fields":[{"name":"id","type":"string","nullable":true,"metadata":{}},{"name":"given","type":{"type":"array","elementType":"string","containsNull":true},"nullable":true,"metadata":{}}]}"#
/// );
/// ```
pub fn write(fields: &[FieldRef]) -> Option<String> {
    let mut out = String::with_capacity(16 * 1024);
    write_struct(&mut out, fields)?;
    Some(out)
}

fn write_struct(out: &mut String, fields: &[FieldRef]) -> Option<()> {
    out.push_str(r#"{"type":"struct","fields":["#);
    for (i, f) in fields.iter().enumerate() {
        if !f.metadata().is_empty() {
            return None;
        }
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"name":"#);
        out.push_str(&serde_json::to_string(f.name()).ok()?);
        out.push_str(r#","type":"#);
        write_type(out, f.data_type())?;
        out.push_str(match f.is_nullable() {
            true => r#","nullable":true,"metadata":{}}"#,
            false => r#","nullable":false,"metadata":{}}"#,
        });
    }
    out.push_str("]}");
    Some(())
}

fn write_type(out: &mut String, t: &DataType) -> Option<()> {
    let name = match t {
        DataType::Utf8 | DataType::LargeUtf8 => "string",
        DataType::Binary | DataType::LargeBinary => "binary",
        DataType::Boolean => "boolean",
        DataType::Int32 => "integer",
        DataType::Int64 => "long",
        DataType::Float64 => "double",
        DataType::Date32 => "date",
        DataType::Timestamp(TimeUnit::Microsecond, Some(_)) => "timestamp",
        DataType::Timestamp(TimeUnit::Microsecond, None) => "timestamp_ntz",
        DataType::Decimal128(p, s) => {
            return write!(out, r#""decimal({p},{s})""#).ok();
        }
        DataType::Struct(fields) => return write_struct(out, fields),
        DataType::List(item) | DataType::LargeList(item) => {
            out.push_str(r#"{"type":"array","elementType":"#);
            write_type(out, item.data_type())?;
            out.push_str(match item.is_nullable() {
                true => r#","containsNull":true}"#,
                false => r#","containsNull":false}"#,
            });
            return Some(());
        }
        _ => return None,
    };
    out.push('"');
    out.push_str(name);
    out.push('"');
    Some(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use arrow::datatypes::{DataType, Field};

    #[test]
    fn what_it_does_not_write_as_the_kernel_does_is_left_to_the_kernel() {
        let with_metadata = Field::new("id", DataType::Utf8, true)
            .with_metadata(HashMap::from([("comment".into(), "x".into())]));
        assert_eq!(super::write(&[Arc::new(with_metadata)]), None);
        let time = Field::new("t", DataType::Int16, true);
        assert_eq!(super::write(&[Arc::new(time)]), None);
    }
}
