//! A DataFusion table over exactly the files a Delta version names (see [`super::delta`]), with
//! the resource type's full typed schema and the table's partition columns.
//!
//! The scan is the one DataFusion's own listing tables make (a Parquet source, projection and
//! limit pushed down, filters pushed into the Parquet reader by the physical optimizer, byte
//! ranges split across cores), only its file list comes from the log instead of a folder
//! listing, so files of removed versions or of runs that never committed are never read, and
//! the rows a file's deletion vector names are skipped (a row selection per file).

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::{Result as DfResult, ScalarValue};
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::table_schema::TableSchema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::ExecutionPlan;
use object_store::path::Path as ObjPath;
use parquet::arrow::arrow_reader::RowSelection;

use super::{DataFile, Table};

/// The files of one version of a table.
#[derive(Debug)]
pub struct SnapshotTable {
    /// The typed schema of the files (without the partition columns).
    file_schema: SchemaRef,
    /// The typed schema and the partition columns (strings).
    schema: SchemaRef,
    partition_fields: Vec<Arc<Field>>,
    store: ObjectStoreUrl,
    /// Object store path, size, partition values, the rows to read (a file with a deletion
    /// vector).
    files: Vec<(ObjPath, u64, Vec<ScalarValue>, Option<RowSelection>)>,
}

impl SnapshotTable {
    /// `store` is the URL of the object store the files are in (`file:///`, `s3://bucket`).
    pub fn new(table: &Table, file_schema: Schema, store: &str) -> DfResult<SnapshotTable> {
        let partition_fields: Vec<Arc<Field>> = table
            .partitions
            .iter()
            .map(|p| Arc::new(Field::new(p, DataType::Utf8, true)))
            .collect();
        let mut fields: Vec<Arc<Field>> = file_schema.fields().iter().cloned().collect();
        fields.extend(partition_fields.iter().cloned());
        let snapshot = table.delta.as_ref();
        let files = table
            .files
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let path = match f {
                    DataFile::Local(p) => ObjPath::from_absolute_path(p)
                        .map_err(|e| datafusion::error::DataFusionError::External(e.into()))?,
                    DataFile::Remote { path, .. } => path.clone(),
                };
                let size = match f {
                    DataFile::Local(p) => fs_err::metadata(p).map(|m| m.len()).unwrap_or(0),
                    DataFile::Remote { size, .. } => *size,
                };
                let values = snapshot
                    .and_then(|s| s.files.get(i))
                    .map(|sf| {
                        sf.partition_values
                            .iter()
                            .map(|v| ScalarValue::Utf8(v.clone()))
                            .collect()
                    })
                    .unwrap_or_default();
                let selection = snapshot
                    .and_then(|s| s.files.get(i))
                    .and_then(|sf| sf.selection());
                Ok((path, size, values, selection))
            })
            .collect::<DfResult<Vec<_>>>()?;
        Ok(SnapshotTable {
            file_schema: Arc::new(file_schema),
            schema: Arc::new(Schema::new(fields)),
            partition_fields,
            store: ObjectStoreUrl::parse(store)?,
            files,
        })
    }
}

#[async_trait]
impl TableProvider for SnapshotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        // Kept above the scan, and pushed into the Parquet reader by the physical optimizer.
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if self.files.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(self.schema.project(p)?),
                None => self.schema.clone(),
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        let groups = state.config().target_partitions().max(1);
        let mut file_groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups];
        for (i, (path, size, values, selection)) in self.files.iter().enumerate() {
            let mut f = PartitionedFile::new("", *size);
            f.object_meta.location = path.clone();
            f.partition_values = values.clone();
            if let Some(rows) = selection {
                // The rows a deletion vector removed are not read.
                f = f.with_extension(ParquetRowSelection::new(rows.clone()));
            }
            file_groups[i % groups].push(f);
        }
        file_groups.retain(|g| !g.is_empty());
        let format = ParquetFormat::default();
        let table_schema = TableSchema::builder(self.file_schema.clone())
            .with_table_partition_cols(self.partition_fields.clone())
            .build();
        let source = format.file_source(table_schema);
        let config = FileScanConfigBuilder::new(self.store.clone(), source)
            .with_file_groups(file_groups.into_iter().map(FileGroup::new).collect())
            .with_projection_indices(projection.cloned())?
            .with_limit(limit)
            .build();
        format.create_physical_plan(state, config).await
    }
}
