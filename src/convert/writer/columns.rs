//! Column choices per batch and row group: sparse and dictionary tuning, the leaves with values, a row group's `Shape`, and arrays projected onto it.

use super::options::{is_sparse, sparse};
use std::sync::Arc;

use anyhow::Result;
use arrow::array::{Array, ArrayRef, AsArray, ListArray, RecordBatch, StructArray};
use arrow::datatypes::{DataType, Schema, SchemaRef};
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowRowGroupWriterFactory};
use parquet::arrow::ArrowSchemaConverter;

use parquet::file::properties::WriterProperties;
use parquet::schema::types::TypePtr;

/// `props` tuned per leaf column from `batch`, the first rows of a type (see [`TUNE_ROWS`]).
///
/// - A column that holds no value gets the cheap codec (where the file is compressed at all).
///   Most of a resource table's thousand columns are empty in most rows, and parquet-rs sets up
///   a codec per column per row group: zstd's costs ~100 KB and its time, Snappy's nothing. A
///   column still empty after a first batch of 100 rows or more is rare, and its pages are
///   mostly levels, which Snappy compresses well enough.
/// - A column whose values are nearly all distinct (identifiers, references to one-off
///   resources, instants) gets no dictionary: one would hold every value once more and add an
///   index per value, and the writer would hash every value before giving up on it.
pub(super) fn tune_columns(props: &WriterProperties, batch: &RecordBatch) -> WriterProperties {
    if batch.num_rows() < 100 {
        return props.clone();
    }
    let arrays = leaf_arrays(batch);
    let Ok(descr) = ArrowSchemaConverter::new().convert(batch.schema_ref()) else {
        return props.clone();
    };
    if descr.num_columns() != arrays.len() {
        return props.clone();
    }
    let mut builder = props.clone().into_builder();
    for (col, a) in descr.columns().iter().zip(arrays) {
        if a.len() == a.null_count() {
            // Extensions are sparse from the start (see `WriteOptions::properties`).
            if !is_sparse(props, col.path()) {
                builder = sparse(builder, col.path(), props.compression(col.path()));
            }
        } else if props.dictionary_enabled(col.path()) && mostly_distinct(a) {
            builder = builder.set_column_dictionary_enabled(col.path().clone(), false);
        }
    }
    builder.build()
}

/// Whether at least half of the (at least 64) values of `a` are distinct: the point below which
/// a dictionary pays.
pub(super) fn mostly_distinct(a: &dyn Array) -> bool {
    let values = a.len() - a.null_count();
    if values < 64 {
        return false;
    }
    fn distinct<'a>(values: impl Iterator<Item = &'a [u8]>) -> usize {
        values.collect::<rustc_hash::FxHashSet<_>>().len()
    }
    let valid = (0..a.len()).filter(|&i| a.is_valid(i));
    let distinct = match a.data_type() {
        DataType::Utf8 => {
            let s = a.as_string::<i32>();
            distinct(valid.map(|i| s.value(i).as_bytes()))
        }
        DataType::Binary => {
            let b = a.as_binary::<i32>();
            distinct(valid.map(|i| b.value(i)))
        }
        t => {
            let Some(width) = t.primitive_width() else {
                return false;
            };
            let data = a.to_data();
            let buf = &data.buffers()[0].as_slice()[data.offset() * width..];
            distinct(valid.map(|i| &buf[i * width..(i + 1) * width]))
        }
    };
    distinct * 2 >= values
}

/// Drops the statistics of a column chunk that holds no value: the null count, level histograms
/// and page index of a column that is all null cost ~40 bytes per column per row group, and a
/// wide schema has thousands of such columns. A reader without statistics reads the chunk,
/// which is a few bytes.
pub(super) fn trim_empty(chunk: &mut ArrowColumnChunk) -> Result<()> {
    let close = chunk.close_mut();
    let meta = &close.metadata;
    let empty = meta
        .statistics()
        .is_some_and(|s| s.min_bytes_opt().is_none() && s.max_bytes_opt().is_none());
    if !empty {
        return Ok(());
    }
    close.metadata = meta
        .clone()
        .into_builder()
        .clear_statistics()
        .set_repetition_level_histogram(None)
        .set_definition_level_histogram(None)
        .set_unencoded_byte_array_data_bytes(None)
        .clear_page_encoding_stats()
        .build()?;
    close.column_index = None;
    Ok(())
}

/// The leaf arrays of `batch`, in the order of its schema's leaf columns (a list's items, a
/// struct's fields).
pub(super) fn leaf_arrays(batch: &RecordBatch) -> Vec<&dyn Array> {
    fn walk<'a>(a: &'a dyn Array, out: &mut Vec<&'a dyn Array>) {
        match a.data_type() {
            DataType::Struct(_) => {
                for c in a.as_struct().columns() {
                    walk(c.as_ref(), out);
                }
            }
            DataType::List(_) => walk(a.as_list::<i32>().values().as_ref(), out),
            _ => out.push(a),
        }
    }
    let mut out = Vec::new();
    for c in batch.columns() {
        walk(c.as_ref(), &mut out);
    }
    out
}

/// Which leaves of `batch` (in the order of its schema's leaf columns) hold a value: a leaf
/// array with fewer nulls than items. (A value under a NULL parent counts too: the column is
/// then kept without need, never left out with a value.)
pub(super) fn leaves_with_values(batch: &RecordBatch) -> Vec<bool> {
    leaf_arrays(batch)
        .iter()
        .map(|a| a.null_count() < a.len())
        .collect()
}

/// Leaf columns per top-level field of `schema`.
pub(super) fn field_leaves(schema: &Schema) -> Vec<usize> {
    schema
        .fields()
        .iter()
        .map(|f| crate::schema::node::leaf_count(f.data_type()))
        .collect()
}

/// `a` as an array of `dt`, a pruned form of its type ([`prune_schema`]): struct fields left out
/// are dropped; the data is shared.
pub(super) fn project(a: &ArrayRef, dt: &DataType) -> ArrayRef {
    match dt {
        DataType::Struct(fields) => {
            let s = a.as_struct();
            let mut source = s.fields().iter().zip(s.columns());
            let columns = fields
                .iter()
                .map(|f| {
                    let (_, c) = source
                        .find(|(g, _)| g.name() == f.name())
                        .expect("a pruned struct keeps its fields in order");
                    project(c, f.data_type())
                })
                .collect();
            Arc::new(StructArray::new(
                fields.clone(),
                columns,
                s.nulls().cloned(),
            ))
        }
        DataType::List(item) => {
            let l = a.as_list::<i32>();
            Arc::new(ListArray::new(
                item.clone(),
                l.offsets().clone(),
                project(l.values(), item.data_type()),
                l.nulls().cloned(),
            ))
        }
        _ => a.clone(),
    }
}

/// The part of a type's typed schema a row group and its file hold: all of it, or with
/// [`Columns::Present`] the columns that had a value so far (and the first of each top-level
/// element that had none, so that every top-level column is in every file).
pub(super) struct Shape {
    /// Over the typed schema's leaf columns.
    pub(super) kept: Vec<bool>,
    /// The Arrow schema of the kept columns: the typed schema where all are kept.
    pub(super) schema: SchemaRef,
    /// Leaf columns per top-level field of `schema`.
    pub(super) field_leaves: Vec<usize>,
    pub(super) leaves: usize,
    /// Column writers of `schema`, with the folder's codecs.
    pub(super) factory: ArrowRowGroupWriterFactory,
    /// The Parquet schema of the files of this shape.
    pub(super) root: TypePtr,
    /// Whether `schema` is the typed schema (batches need no projection).
    pub(super) whole: bool,
}
