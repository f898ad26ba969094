//! What is written and how: the codec, the columns files hold (present or all), and the Parquet writer properties.

use parquet::file::properties::WriterPropertiesBuilder;
use parquet::schema::types::ColumnPath;

use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use crate::schema::node::OVERFLOW_COLUMN;

/// Values per column written in one go (see [`WriteOptions::properties`]).
pub(super) const WRITE_BATCH: usize = 8192;

/// The largest dictionary page of a column chunk before the writer falls back to plain pages.
/// Columns of nearly distinct values get no dictionary at all (see [`tune_columns`]).
pub(super) const DICTIONARY_PAGE_BYTES: usize = 8 << 20;

/// Output compression (`--compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Codec {
    Zstd,
    Snappy,
    Lz4,
    Gzip,
    None,
}

impl crate::choice::Choice for Codec {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (Codec::Zstd, "zstd", ""),
        (Codec::Snappy, "snappy", ""),
        (Codec::Lz4, "lz4", ""),
        (Codec::Gzip, "gzip", ""),
        (Codec::None, "none", ""),
    ];
}

/// How the Parquet files are written.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    pub codec: Codec,
    pub zstd_level: i32,
    pub target_file_bytes: u64,
    pub row_group_rows: usize,
    pub columns: Columns,
}

impl Default for WriteOptions {
    /// The command line's defaults: zstd level 1, 512 MB files, 122,880-row row groups, the
    /// columns with values.
    fn default() -> Self {
        WriteOptions {
            codec: Codec::Zstd,
            zstd_level: 1,
            target_file_bytes: 512 << 20,
            row_group_rows: 122_880,
            columns: Columns::Present,
        }
    }
}

/// Which of the typed schema's leaf columns a file holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Columns {
    /// Every column of the type's typed schema, in every file.
    All,
    /// The columns that hold a value, and of each top-level element that holds none, its
    /// first column: the file's schema is a part of the typed schema, which stays the table's
    /// (readers fill the rest with NULL). Only those columns are encoded. A batch with a value
    /// in a column the row group in progress leaves out ends that row group and its file; the
    /// next ones hold that column too. When the run ends, the files of a type are made to hold
    /// the same columns ([`crate::dataset::unify`]).
    #[default]
    Present,
}

impl crate::choice::Choice for Columns {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (Columns::All, "all", "Every column of the type's typed schema, in every file"),
        (Columns::Present, "present", "The columns that hold a value in the type's files (every file of a type the same ones); readers see the rest of the typed schema as NULL"),
    ];
}

/// The codec of columns that are nearly always empty: Snappy keeps no state between pages
/// (zstd's writer holds a compressor and a decompressor per column, ~100 KB, set up for every
/// column of every row group) and every Parquet reader has it.
pub(super) const SPARSE: Compression = Compression::SNAPPY;

impl WriteOptions {
    pub fn properties(
        &self,
        resource_type: &str,
        fhir_version: &str,
        schema: &arrow::datatypes::Schema,
    ) -> WriterProperties {
        let compression = match self.codec {
            Codec::Zstd => {
                Compression::ZSTD(ZstdLevel::try_new(self.zstd_level).unwrap_or_default())
            }
            Codec::Snappy => Compression::SNAPPY,
            Codec::Lz4 => Compression::LZ4_RAW,
            Codec::Gzip => Compression::GZIP(Default::default()),
            Codec::None => Compression::UNCOMPRESSED,
        };
        let kv = |k: &str, v: &str| KeyValue::new(k.to_string(), v.to_string());
        let mut builder = WriterProperties::builder();
        match parquet::arrow::ArrowSchemaConverter::new().convert(schema) {
            Ok(descr) => {
                // Extensions and primitive extensions are null in nearly every row: their pages
                // are mostly levels, and a zstd compressor per column costs its memory and
                // set-up time in every row group. They get the cheap codec and no dictionary.
                // They are most of a type's leaves, so that is the default, and the others are
                // set column by column: a property per column is a map entry to make, clone
                // (see `tune_columns`) and free.
                builder = sparse_defaults(builder, compression);
                for col in descr.columns() {
                    let parts = col.path().parts();
                    let rare = parts.iter().any(|p| {
                        p == "extension"
                            || p == "modifierExtension"
                            || (p.starts_with('_') && p != OVERFLOW_COLUMN)
                    });
                    if rare {
                        continue;
                    }
                    builder = builder.set_column_compression(col.path().clone(), compression);
                    // A dictionary does not pay where values are unique or long: the resource
                    // id, the narrative's xhtml, the overflow JSON. Building one hashes every
                    // value before falling back.
                    let unique = parts == ["id"]
                        || parts.last().is_some_and(|p| p == "div")
                        || parts == [OVERFLOW_COLUMN];
                    if !unique {
                        builder = builder.set_column_dictionary_enabled(col.path().clone(), true);
                    }
                }
            }
            Err(_) => {
                builder = builder
                    .set_compression(compression)
                    .set_dictionary_enabled(true);
            }
        }
        builder
            .set_max_row_group_row_count(Some(self.row_group_rows))
            // Values go to a column in runs of this many (the default is 1,024): page limits are
            // checked, and column properties looked up, once per run; a thousand leaves make
            // that per-run work add up. Byte arrays are still cut to the page size.
            .set_write_batch_size(WRITE_BATCH)
            .set_statistics_enabled(EnabledStatistics::Page)
            // A dictionary of long values that repeat (a note attached to many documents)
            // outgrows the default 1 MiB and falls back to plain pages of every copy.
            .set_dictionary_page_size_limit(DICTIONARY_PAGE_BYTES)
            .set_created_by(format!("fhir2parquet {}", env!("CARGO_PKG_VERSION")))
            .set_key_value_metadata(Some(vec![
                kv("fhir.version", fhir_version),
                kv("fhir.resourceType", resource_type),
                kv("fhir2parquet.schema_version", crate::schema::SCHEMA_VERSION),
                kv("fhir2parquet.version", env!("CARGO_PKG_VERSION")),
            ]))
            .build()
    }
}

/// [`sparse`] as the defaults of every column.
fn sparse_defaults(
    builder: WriterPropertiesBuilder,
    codec: Compression,
) -> WriterPropertiesBuilder {
    let builder = builder.set_dictionary_enabled(false);
    match codec {
        Compression::UNCOMPRESSED => builder.set_compression(codec),
        _ => builder.set_compression(SPARSE),
    }
}

/// Whether [`sparse`] has been applied to `col` in `props` (with any codec).
pub(super) fn is_sparse(props: &WriterProperties, col: &ColumnPath) -> bool {
    !props.dictionary_enabled(col)
        && matches!(props.compression(col), SPARSE | Compression::UNCOMPRESSED)
}

/// A nearly always empty column: the cheap codec (where the file is compressed at all) and no
/// dictionary, whose page and metadata would cost more than the values.
pub(super) fn sparse(
    builder: WriterPropertiesBuilder,
    col: &ColumnPath,
    codec: Compression,
) -> WriterPropertiesBuilder {
    let builder = builder.set_column_dictionary_enabled(col.clone(), false);
    match codec {
        Compression::UNCOMPRESSED => builder,
        _ => builder.set_column_compression(col.clone(), SPARSE),
    }
}
