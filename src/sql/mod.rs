//! `sql`: a DataFusion SQL shell over a converted dataset.
//!
//! Every resource type folder of the dataset is a table of the same name, with the schema of
//! [`crate::schema::node::arrow_schema`] and its Hive partition columns. Identifiers are not
//! lower-cased, so FHIR's camelCase names work unquoted: `SELECT valueQuantity.value FROM Observation`.

mod aggregates;
mod correlated;
mod fhirpath;
pub mod functions;
mod idioms;
mod names;
mod scope;
mod print;
mod repl;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::store::{Location, StoreOptions};
use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::DFParserBuilder;

use crate::cli::{PrintFormat, SqlArgs};
use crate::dataset::delta::AsOf;
use crate::dataset::provider::SnapshotTable;
use crate::schema::node::arrow_schema;

pub use print::print_batches;
pub(crate) use print::readable;

/// A session over a dataset: its context and the names it knows.
pub struct Shell {
    pub ctx: SessionContext,
    pub tables: Vec<String>,
    pub format: PrintFormat,
    pub timing: bool,
    runtime: tokio::runtime::Runtime,
}

/// The batches of `df`; no rows is one empty batch, so printers and writers still know the
/// columns (a CSV header, a Parquet schema).
pub async fn collect_with_schema(
    df: datafusion::dataframe::DataFrame,
) -> datafusion::error::Result<Vec<RecordBatch>> {
    let schema = std::sync::Arc::new(df.schema().as_arrow().clone());
    let mut batches = df.collect().await?;
    batches.retain(|b| b.num_rows() > 0);
    if batches.is_empty() {
        batches.push(RecordBatch::new_empty(schema));
    }
    Ok(batches)
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

impl Shell {
    /// Opens a dataset written by `convert` in a local folder.
    pub fn open(dataset: &Path, memory_limit: Option<&str>) -> Result<Shell> {
        Self::open_at(&Location::Local(dataset.to_path_buf()), memory_limit)
    }

    /// Opens a dataset written by `convert`, in a folder or on an object store.
    pub fn open_at(dataset: &Location, memory_limit: Option<&str>) -> Result<Shell> {
        Self::open_as_of(dataset, memory_limit, None)
    }

    /// Opens a dataset as it was at `as_of` (its Delta tables' versions then), or as it is.
    pub fn open_as_of(
        dataset: &Location,
        memory_limit: Option<&str>,
        as_of: Option<AsOf>,
    ) -> Result<Shell> {
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
        for table in crate::dataset::tables_as_of(dataset, as_of)? {
            let schema = arrow_schema(&table.name).expect("a resource table");
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
        Ok(Shell {
            ctx,
            tables,
            format: PrintFormat::Table,
            timing: false,
            runtime,
        })
    }

    /// The runtime the session's queries run on.
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        &self.runtime
    }

    /// Runs every statement of `sql`; returns the batches of the last one.
    pub fn run_sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        self.runtime
            .block_on(async {
                let statements = DFParserBuilder::new(sql).build()?.parse_statements()?;
                let mut last = Vec::new();
                for mut stmt in statements {
                    names::rewrite_statement(&mut stmt, &self.tables)
                        .map_err(datafusion::error::DataFusionError::Plan)?;
                    fhirpath::rewrite_statement(&mut stmt, &self.ctx, &self.tables)
                        .map_err(datafusion::error::DataFusionError::Plan)?;
                    idioms::rewrite_statement(&mut stmt)
                        .map_err(datafusion::error::DataFusionError::Plan)?;
                    // After the rewrite: it registers the compiled fhirpath() functions.
                    let state = self.ctx.state();
                    let plan = state.statement_to_plan(stmt).await?;
                    let df = self.ctx.execute_logical_plan(plan).await?;
                    last = collect_with_schema(df).await?;
                }
                Ok::<_, datafusion::error::DataFusionError>(last)
            })
            .map_err(|e| anyhow::anyhow!("{}", self.explain_error(&e.to_string())))
    }

    /// Runs SQL and prints the result in the shell's format.
    pub fn run_and_print(&self, sql: &str, out: &mut dyn std::io::Write) -> Result<()> {
        let started = Instant::now();
        let batches = self.run_sql(sql)?;
        print_batches(&batches, self.format, out)?;
        if self.timing {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            eprintln!("{rows} row(s) in {:.3}s", started.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// The columns of a table, with types (`\d TABLE`).
    pub fn describe(&self, table: &str) -> Result<Vec<RecordBatch>> {
        if !self.tables.iter().any(|t| t == table) {
            bail!(
                "{}",
                self.explain_error(&format!("table '{table}' not found"))
            );
        }
        self.run_sql(&format!(
            "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = '{table}' ORDER BY ordinal_position"
        ))
    }

    /// The tables with their row counts (`\dt`).
    pub fn list_tables(&self) -> Result<Vec<RecordBatch>> {
        let parts: Vec<String> = self
            .tables
            .iter()
            .map(|t| format!("SELECT '{t}' AS \"table\", COUNT(*) AS \"rows\" FROM \"{t}\""))
            .collect();
        self.run_sql(&format!("{} ORDER BY 1", parts.join(" UNION ALL ")))
    }

    /// Column names of every table, for completion and suggestions.
    pub fn column_names(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for t in &self.tables {
            if let Some(s) = arrow_schema(t) {
                collect_names(s.fields(), &mut out);
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// Adds a hint with the nearest known name to an error about an unknown table or column.
    fn explain_error(&self, msg: &str) -> String {
        // DataFusion lists every valid field after its own suggestion: too long to read.
        let msg = match msg.find("\nValid fields are") {
            Some(i) => &msg[..i],
            None => msg,
        };
        if msg.contains("Did you mean") {
            return msg.to_string();
        }
        if msg.contains("OuterReferenceColumn") {
            return format!(
                "{msg}\nhint: a subquery may look into the outer row's lists only as \
                 EXISTS / (SELECT x ...) / ARRAY(SELECT x ...) FROM UNNEST(o.list) AS c [WHERE \
                 ...]; otherwise unnest the list in the outer FROM (FROM t AS o, UNNEST(o.list) \
                 AS c)"
            );
        }
        let mut names: Vec<String> = self.tables.clone();
        names.extend(self.column_names());
        let quoted: Vec<&str> = msg.split(['\'', '"']).skip(1).step_by(2).collect();
        let lower = msg.to_ascii_lowercase();
        if lower.contains("not found")
            || lower.contains("no field named")
            || lower.contains("invalid")
        {
            for q in quoted {
                let q = q.rsplit('.').next().unwrap_or(q);
                if let Some(best) = nearest(q, &names) {
                    if best != q {
                        return format!("{msg}\nhint: did you mean {best}?");
                    }
                }
            }
        }
        msg.to_string()
    }
}

fn collect_names(fields: &[arrow::datatypes::FieldRef], out: &mut Vec<String>) {
    for f in fields {
        out.push(f.name().clone());
        let dt = match f.data_type() {
            DataType::List(item) => item.data_type(),
            dt => dt,
        };
        if let DataType::Struct(children) = dt {
            collect_names(children, out);
        }
    }
}

fn nearest<'a>(word: &str, names: &'a [String]) -> Option<&'a str> {
    let w = word.to_ascii_lowercase();
    names
        .iter()
        .map(|n| (levenshtein(&w, &n.to_ascii_lowercase()), n))
        .filter(|(d, _)| *d <= 2.max(w.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n.as_str())
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            cur.push(
                (prev[j] + (ca != *cb) as usize)
                    .min(prev[j + 1] + 1)
                    .min(cur[j] + 1),
            );
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The `sql` command.
pub fn run(args: SqlArgs, stores: &StoreOptions) -> Result<i32> {
    let dataset = Location::parse(&args.dataset, stores)?;
    let as_of = args.as_of.as_deref().map(AsOf::parse).transpose()?;
    let mut shell = Shell::open_as_of(&dataset, args.memory_limit.as_deref(), as_of)?;
    shell.format = args.format;
    let views = if args.views.is_empty() {
        Vec::new()
    } else {
        crate::view::view_files(&args.views)?
    };
    for f in &views {
        let v = crate::view::load(f)?;
        let name = crate::view::table_name(&v, f);
        shell
            .register_view(&name, &v)
            .with_context(|| format!("{}", f.display()))?;
    }
    let mut out = std::io::stdout();
    if !args.command.is_empty() || !args.file.is_empty() {
        for c in &args.command {
            shell.run_and_print(c, &mut out)?;
        }
        for f in &args.file {
            let sql = fs_err::read_to_string(f)
                .with_context(|| format!("cannot read {}", f.display()))?;
            shell.run_and_print(&sql, &mut out)?;
        }
        return Ok(0);
    }
    use std::io::IsTerminal;
    if !std::io::stdin().is_terminal() {
        return repl::run_script(&mut shell, std::io::stdin().lock(), &mut out);
    }
    repl::run_interactive(&mut shell, args.quiet)
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
