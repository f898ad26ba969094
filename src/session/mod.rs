//! A DataFusion session over a converted dataset, below the shell (`sql`) and the views
//! (`view`): every resource type folder of the dataset is a table of the same name, with the
//! schema of [`crate::schema::node::arrow_schema`] (a Delta table's version, or a plain folder
//! with its Hive partition columns), and the FHIR functions are registered. Identifiers are not
//! lower-cased, so FHIR's camelCase names work unquoted.

mod aggregates;
pub mod functions;

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::dataset::delta::AsOf;
use crate::dataset::provider::SnapshotTable;
use crate::schema::node::arrow_schema;
use crate::schema::FhirVersion;
use crate::store::Location;

/// A DataFusion session over a dataset: its context, with every resource table registered and
/// the FHIR functions, the names of its tables, and the runtime its queries run on.
pub struct Session {
    pub ctx: SessionContext,
    pub tables: Vec<String>,
    /// The FHIR version of the dataset (every table holds it).
    pub fhir_version: FhirVersion,
    /// Always Some until the session is dropped (see `Drop`).
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Session {
    /// A cancelled query's tasks may be deep in a computation that does not yield: the runtime
    /// lets its threads finish in the background instead of blocking the caller until they do.
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Parses sizes like `2G`, `512M`, `1048576`.
fn parse_size(s: &str) -> Result<usize> {
    let s = s.trim();
    let (num, mult) = match s.chars().last() {
        Some('k' | 'K') => (&s[..s.len() - 1], 1usize << 10),
        Some('m' | 'M') => (&s[..s.len() - 1], 1 << 20),
        Some('g' | 'G') => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    let hint = || format!("--memory-limit {s:?}: use a size like 2G or 512M");
    let n: f64 = num.trim().parse().with_context(hint)?;
    let bytes = n * mult as f64;
    // At least a megabyte: less cannot hold one batch, and 0 would fail every query.
    if !bytes.is_finite() || bytes < (1 << 20) as f64 {
        anyhow::bail!("{}, of at least 1M", hint());
    }
    Ok(bytes as usize)
}

impl Session {
    /// Opens a dataset written by `convert` in a local folder.
    pub fn open(dataset: &Path, memory_limit: Option<&str>) -> Result<Session> {
        Self::open_at(&Location::Local(dataset.to_path_buf()), memory_limit)
    }

    /// Opens a dataset written by `convert`, in a folder or on an object store.
    pub fn open_at(dataset: &Location, memory_limit: Option<&str>) -> Result<Session> {
        Self::open_as_of(dataset, memory_limit, None)
    }

    /// Opens a dataset as it was at `as_of` (its Delta tables' versions then), or as it is.
    pub fn open_as_of(
        dataset: &Location,
        memory_limit: Option<&str>,
        as_of: Option<AsOf>,
    ) -> Result<Session> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let mut config = SessionConfig::new().with_information_schema(true);
        config.options_mut().sql_parser.enable_ident_normalization = false;
        // Statistics of every column of every file are gathered at planning otherwise: with a
        // thousand columns per resource table that costs more than most queries.
        config.options_mut().execution.collect_statistics = false;
        // convert writes one file per type, a few MB where the data is a few hundred thousand
        // wide rows, in a row group per worker. DataFusion splits a file into equal byte ranges,
        // one per partition, and reads a row group in the range where it starts: with as many
        // ranges as row groups, the footer at the end pushes every start into the first ranges
        // and one core reads them all. Twice as many partitions as cores, and files split from
        // 1 MB (not 10), give each row group its own range.
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        config.options_mut().execution.target_partitions = 2 * cores;
        config.options_mut().optimizer.repartition_file_min_size = 1 << 20;
        let mut rt = RuntimeEnvBuilder::new();
        if let Some(limit) = memory_limit {
            rt = rt.with_memory_limit(parse_size(limit)?, 1.0);
        }
        let ctx = SessionContext::new_with_config_rt(config, rt.build_arc()?);
        functions::register(&ctx);
        aggregates::register(&ctx);
        if let Location::Remote(remote) = dataset {
            ctx.register_object_store(&remote.base, remote.store.clone());
        }
        let mut tables = Vec::new();
        let found = crate::dataset::tables_as_of(dataset, as_of)?;
        let fhir_version = found.first().map(|t| t.fhir_version).unwrap_or_default();
        for table in found {
            let schema = arrow_schema(fhir_version, &table.name).expect("a resource table");
            if table.delta.is_some() {
                let store = match dataset {
                    Location::Local(_) => "file:///".to_string(),
                    Location::Remote(remote) => remote.base.to_string(),
                };
                let provider = SnapshotTable::new(&table, schema, &store)?;
                ctx.register_table(
                    datafusion::common::TableReference::bare(table.name.clone()),
                    Arc::new(provider),
                )?;
                tables.push(table.name);
                continue;
            }
            let name = table.name;
            let url = ListingTableUrl::parse(&table.url)?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
                .with_file_extension(".parquet")
                .with_table_partition_cols(
                    table
                        .partitions
                        .iter()
                        .map(|p| (p.clone(), DataType::Utf8))
                        .collect(),
                );
            let config = ListingTableConfig::new(url)
                .with_listing_options(options)
                .with_schema(Arc::new(schema));
            ctx.register_table(
                datafusion::common::TableReference::bare(name.clone()),
                Arc::new(ListingTable::try_new(config)?),
            )?;
            tables.push(name);
        }
        Ok(Session {
            ctx,
            tables,
            fhir_version,
            runtime: Some(runtime),
        })
    }

    /// The runtime the session's queries run on.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("a session's runtime lives as long as the session")
    }

    /// Runs a DataFusion future on the session's runtime, ended early (its streams dropped,
    /// which cancels the query) when a stop is asked for ([`crate::interrupt`]).
    pub fn block_on<T>(
        &self,
        f: impl std::future::Future<Output = datafusion::error::Result<T>>,
    ) -> Result<T> {
        match self.runtime().block_on(until_interrupt(f)) {
            Some(r) => r.map_err(|e| anyhow::anyhow!("{e}")),
            None => anyhow::bail!(crate::interrupt::MESSAGE),
        }
    }
}

/// `f`'s output, or None once a stop is asked for ([`crate::interrupt::request`]): a library
/// caller's Ctrl-C ends a long query instead of waiting for it. A thread of its own looks for
/// the request every 50 ms and wakes the caller: the runtime's own timers are not driven while
/// every worker is busy with the query.
pub async fn until_interrupt<T>(f: impl std::future::Future<Output = T>) -> Option<T> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (tx, rx) = futures::channel::oneshot::channel::<()>();
    let done = Arc::new(AtomicBool::new(false));
    let watching = done.clone();
    std::thread::spawn(move || {
        while !watching.load(Ordering::Relaxed) {
            if crate::interrupt::requested() {
                let _ = tx.send(());
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    });
    let f = std::pin::pin!(f);
    let out = match futures::future::select(f, rx).await {
        futures::future::Either::Left((out, _)) => Some(out),
        futures::future::Either::Right(_) => None,
    };
    done.store(true, Ordering::Relaxed);
    out
}

#[cfg(test)]
mod size_tests {
    #[test]
    fn sizes_are_positive_and_bounded() {
        assert_eq!(super::parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(super::parse_size("512m").unwrap(), 512 << 20);
        assert_eq!(super::parse_size("1.5G").unwrap(), 3 << 29);
        for bad in ["-1G", "0", "0M", "NaN", "inf", "12K", "G", "", "two"] {
            let e = super::parse_size(bad).unwrap_err();
            assert!(format!("{e:#}").contains("--memory-limit"), "{bad}");
        }
    }
}
