//! Type-directed decoding of FHIR JSON into Arrow arrays.
//!
//! As in arrow-json, there is one decoder per kind of column, each in its own file, made from the
//! schema by [`make_decoder`]. The [`ResourceDecoder`] is push-based: it is handed parsed
//! resources and knows nothing of files or lines; [`ResourceDecoder::flush`] turns what it was
//! given into a [`RecordBatch`] of the type's schema.
//!
//! Every value lands in a typed column or, where the typed columns cannot hold it, in the row's
//! `_overflow` column: a JSON object from JSON Pointer to the value as it was written.
//!
//! ```
//! use fhir2parquet::decode::ResourceDecoder;
//! use fhir2parquet::json::parse;
//! use fhir2parquet::schema::FhirVersion;
//!
//! let mut decoder = ResourceDecoder::new(FhirVersion::R4, "Patient").unwrap();
//! let line = r#"{"resourceType":"Patient","id":"p1","birthDate":"1970-05","shoeSize":44}"#;
//! decoder.decode(&parse(line).unwrap());
//! let batch = decoder.flush().unwrap();
//! assert_eq!(batch.num_rows(), 1);
//! let overflow = batch.column_by_name("_overflow").unwrap();
//! let overflow = arrow::array::cast::as_string_array(overflow);
//! assert_eq!(overflow.value(0), r#"{"/shoeSize":44}"#);
//! ```

mod builders;
mod context;
pub mod datetime;
pub mod decimal;
mod json_text;
mod keys;
mod list;
mod nulls;
mod primitive;
mod resource;
mod structure;

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, FieldRef};

use crate::json::Json;
use crate::schema::node::{Member, Shape};

pub use context::{Context, OverflowReason, OverflowStats};
pub use resource::ResourceDecoder;

/// Decodes the values of one JSON property into the arrays of its column(s).
pub trait ArrayDecoder: Send {
    /// Appends one value; `None` when the property is absent.
    fn decode(&mut self, value: Option<&Json>, cx: &mut Context);
    /// Appends `n` absent values at once. A wide schema is mostly absent elements: a struct calls
    /// it once per run of absent rows of a column (before the column's next value, or at the
    /// flush), and not at all for a column that got no value since the last flush.
    fn append_absent(&mut self, n: usize);
    /// The arrays of everything appended since the last flush, one per column.
    fn flush(&mut self) -> Vec<ArrayRef>;
}

/// The decoder of one primitive's values (a date's decoder gives its text and its `_ts`
/// companion). A value of the wrong JSON type becomes NULL and is kept in the context.
pub fn primitive_decoder(p: crate::schema::node::Prim) -> Box<dyn ArrayDecoder> {
    primitive::make(p)
}

/// The decoder of a member, for its value (and companion) columns `fields`.
pub fn make_decoder(m: &Member, fields: &[FieldRef]) -> Box<dyn ArrayDecoder> {
    // A repeated member's columns are lists; the item decoder fills their items.
    let items: Vec<FieldRef> = fields
        .iter()
        .map(|f| match f.data_type() {
            DataType::List(item) if m.repeated => item.clone(),
            _ => f.clone(),
        })
        .collect();
    let item: Box<dyn ArrayDecoder> = match &m.shape {
        Shape::Prim(p) => primitive::make(*p),
        Shape::Struct(children) => match items[0].data_type() {
            DataType::Struct(child_fields) => {
                Box::new(structure::StructDecoder::new(children, child_fields))
            }
            other => unreachable!("the column of {} is a {other}, not a struct", m.name),
        },
        Shape::Json => Box::new(json_text::JsonTextDecoder::default()),
    };
    if m.repeated {
        Box::new(list::ListDecoder::new(item, items))
    } else {
        item
    }
}
