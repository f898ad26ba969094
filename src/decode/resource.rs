//! One resource type's rows: the top-level columns and `_overflow`.

use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, StringBuilder};
use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;

use super::builders::{bytes, finish_bytes};
use super::structure::StructDecoder;
use super::{Context, OverflowStats};
use crate::json::Json;
use crate::schema::node::{arrow_schema, resource_members};
use crate::schema::FhirVersion;

/// Decodes resources of one type into record batches of that type's schema.
pub struct ResourceDecoder {
    resource_type: String,
    schema: SchemaRef,
    root: StructDecoder,
    overflow: StringBuilder,
    cx: Context,
    rows: usize,
}

impl ResourceDecoder {
    /// The decoder of a resource type of a FHIR version; None when the type is not a resource
    /// of that version.
    pub fn new(version: FhirVersion, resource_type: &str) -> Option<Self> {
        let members = resource_members(version, resource_type)?;
        let schema = Arc::new(arrow_schema(version, resource_type)?);
        // Every column but the last, `_overflow`, is a member's.
        let fields = &schema.fields()[..schema.fields().len() - 1];
        let root = StructDecoder::new(&members, &fields.into()).ignoring("resourceType");
        Some(ResourceDecoder {
            resource_type: resource_type.to_string(),
            schema,
            root,
            overflow: bytes(0, 0),
            cx: Context::default(),
            rows: 0,
        })
    }

    pub fn resource_type(&self) -> &str {
        &self.resource_type
    }

    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// Appends one resource (a JSON object; anything else is the caller's to reject).
    pub fn decode(&mut self, resource: &Json) {
        if let Json::Obj(members) = resource {
            self.root.decode_members(members, &mut self.cx);
            self.overflow.append_option(self.cx.take_row_overflow());
            self.rows += 1;
        }
    }

    /// Rows appended since the last flush.
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// What was kept in overflow so far.
    pub fn stats(&self) -> &OverflowStats {
        &self.cx.stats
    }

    /// The rows appended since the last flush, as a batch.
    pub fn flush(&mut self) -> Result<RecordBatch, ArrowError> {
        let mut columns: Vec<ArrayRef> = self.root.flush_columns();
        columns.push(Arc::new(finish_bytes(&mut self.overflow)));
        self.rows = 0;
        debug_assert_eq!(self.root.fields().len() + 1, columns.len());
        RecordBatch::try_new(self.schema.clone(), columns)
    }
}
