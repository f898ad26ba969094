//! `sql`: a SQL shell over a converted dataset, on a [`Session`].
//!
//! Every resource type is a table of the same name (see [`crate::session`]). Statements may be
//! written as for BigQuery's FHIR schemas: before DataFusion plans one, `names` respells its
//! names against the typed schema, `correlated` turns subqueries over a row's lists into
//! FHIRPath, `fhirpath` compiles `fhirpath()` calls, and `idioms` rewrites BigQuery's functions
//! and FROM forms (see docs/bigquery.md).

mod correlated;
mod fhirpath;
mod idioms;
mod names;
mod repl;
mod scope;

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use arrow::array::RecordBatch;
use arrow::datatypes::DataType;
use datafusion::sql::parser::DFParserBuilder;

use crate::dataset::delta::AsOf;
use crate::output::{collect_with_schema, print_batches, PrintFormat};
use crate::schema::node::arrow_schema;
use crate::session::Session;
use crate::store::{Location, StoreOptions};

/// The shell: a [`Session`] (which it derefs to), the format results print in, and whether
/// each statement's time is said.
pub struct Shell {
    pub session: Session,
    pub format: PrintFormat,
    pub timing: bool,
}

impl Deref for Shell {
    type Target = Session;

    fn deref(&self) -> &Session {
        &self.session
    }
}

impl DerefMut for Shell {
    fn deref_mut(&mut self) -> &mut Session {
        &mut self.session
    }
}

impl Shell {
    /// Opens a dataset written by `convert` in a local folder.
    pub fn open(dataset: &Path, memory_limit: Option<&str>) -> Result<Shell> {
        Ok(Shell::new(Session::open(dataset, memory_limit)?))
    }

    /// Opens a dataset written by `convert`, in a folder or on an object store.
    pub fn open_at(dataset: &Location, memory_limit: Option<&str>) -> Result<Shell> {
        Ok(Shell::new(Session::open_at(dataset, memory_limit)?))
    }

    /// Opens a dataset as it was at `as_of` (its Delta tables' versions then), or as it is.
    pub fn open_as_of(
        dataset: &Location,
        memory_limit: Option<&str>,
        as_of: Option<AsOf>,
    ) -> Result<Shell> {
        Ok(Shell::new(Session::open_as_of(
            dataset,
            memory_limit,
            as_of,
        )?))
    }

    /// A shell on a session, printing tables.
    pub fn new(session: Session) -> Shell {
        Shell {
            session,
            format: PrintFormat::Table,
            timing: false,
        }
    }

    /// Runs every statement of `sql`; returns the batches of the last one.
    pub fn run_sql(&self, sql: &str) -> Result<Vec<RecordBatch>> {
        self.runtime()
            .block_on(crate::session::until_interrupt(async {
                let sql = idioms::hash_comments(sql);
                let statements = DFParserBuilder::new(sql.as_ref())
                    .build()?
                    .parse_statements()?;
                let mut last = Vec::new();
                for mut stmt in statements {
                    names::rewrite_statement(&mut stmt, &self.tables, self.fhir_version)
                        .map_err(datafusion::error::DataFusionError::Plan)?;
                    fhirpath::rewrite_statement(
                        &mut stmt,
                        &self.ctx,
                        &self.tables,
                        self.fhir_version,
                    )
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
            }))
            .ok_or_else(|| anyhow::anyhow!(crate::interrupt::MESSAGE))?
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
            if let Some(s) = arrow_schema(self.fhir_version, t) {
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

/// What the `sql` command runs, and on what.
#[derive(Clone, Debug, Default)]
pub struct SqlOptions {
    /// A folder written by convert, or its s3://, gs://, az:// URL.
    pub dataset: String,
    /// Statements to run (then exit).
    pub command: Vec<String>,
    /// Files of statements to run (then exit).
    pub file: Vec<PathBuf>,
    pub format: PrintFormat,
    /// Memory limit for queries (2G, 512M); beyond it, sorts and joins spill to disk.
    pub memory_limit: Option<String>,
    /// No banner or timing in the interactive shell.
    pub quiet: bool,
    /// ViewDefinition files (or folders of them) registered as tables.
    pub views: Vec<PathBuf>,
    /// The tables as they were: a version or a time.
    pub as_of: Option<String>,
}

/// The `sql` command: the statements of `command` and `file`, or a shell reading standard input.
pub fn run(args: SqlOptions, stores: &StoreOptions) -> Result<i32> {
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
        crate::view::register(&mut shell, &name, &v).with_context(|| format!("{}", f.display()))?;
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
