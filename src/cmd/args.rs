//! Every command-line flag, defined and documented in one place: the binary's, turned into
//! the library's plain option structs here.

use std::path::PathBuf;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Parser, Subcommand};

use crate::choice::Choice;
use crate::convert::Codec;
use crate::output::PrintFormat;
use crate::schema::print::{SchemaFormat, SchemaOptions};
use crate::sql::SqlOptions;
use crate::view::ViewOptions;

#[derive(Parser, Debug)]
#[command(
    name = "fhir2parquet",
    version,
    about = "FHIR Bulk Data NDJSON to typed Parquet, and SQL over it"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// A custom object store endpoint (an S3-compatible store, an emulator), for every s3://,
    /// gs:// or az:// URL of the command; http:// is allowed here. Default: AWS_ENDPOINT_URL,
    /// the Azure connection string, or the store's own.
    #[arg(long, global = true, value_name = "URL")]
    pub endpoint: Option<String>,
    /// Retries of a failed object store request (throttling, 5xx, dropped connections), with
    /// exponential backoff.
    #[arg(long, global = true, value_name = "N", default_value_t = 10)]
    pub retries: usize,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Convert NDJSON (files, folders, a bulk manifest, or - for stdin) into a Parquet dataset per
    /// resource type.
    Convert(ConvertArgs),
    /// Write a converted dataset back as <ResourceType>.ndjson files.
    ToNdjson(ToNdjsonArgs),
    /// Print a resource type's schema.
    Schema(SchemaArgs),
    /// An SQL shell (DataFusion) over a converted dataset.
    Sql(SqlArgs),
    /// Run SQL on FHIR v2 ViewDefinitions over a converted dataset.
    View(ViewArgs),
    /// Copy a converted dataset to an object store (S3, GCS, Azure): parallel, resumable, the
    /// run record last.
    Upload(UploadArgs),
    /// Export from a FHIR server ($export, Bulk Data) straight into a Parquet dataset.
    Export(Box<ExportArgs>),
    /// Print the statements that make a dataset tables in BigQuery, Snowflake, Athena,
    /// Databricks (Spark) or DuckDB.
    Warehouse(WarehouseArgs),
    /// List the versions (commits) of a dataset's Delta tables.
    History(HistoryArgs),
    /// Remove the files of a dataset's Delta tables that no retained version needs.
    Vacuum(VacuumArgs),
}

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// A folder written by convert, or its s3://, gs://, az:// URL.
    pub dataset: String,
    /// Only this resource type's table.
    pub resource_type: Option<String>,
    /// Print JSON lines instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct VacuumArgs {
    /// A folder written by convert, or its s3://, gs://, az:// URL.
    pub dataset: String,
    /// Keep what the versions of the last HOURS need (Delta's default: 7 days); older versions
    /// can no longer be read with --as-of.
    #[arg(long, value_name = "HOURS", default_value_t = 168)]
    pub retain: u64,
    /// List what would be removed, remove nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// First rewrite the files that hold rows a merge deleted (deletion vectors) without them,
    /// so that the tables' folders hold plain Parquet (with --retain 0: only the current rows).
    #[arg(long)]
    pub purge: bool,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// The FHIR server's base URL.
    #[arg(required_unless_present = "resume")]
    pub base: Option<String>,
    /// Output folder, or an s3://, gs://, az:// URL.
    #[arg(short, long)]
    pub out: String,
    /// Export the patients of this Group (Group/ID/$export).
    #[arg(long, value_name = "ID", conflicts_with = "patients")]
    pub group: Option<String>,
    /// Export every patient's data (Patient/$export) instead of the whole system.
    #[arg(long)]
    pub patients: bool,
    /// _type: resource types, comma-separated or repeated.
    #[arg(long = "type", value_name = "TYPES", value_delimiter = ',')]
    pub types: Vec<String>,
    /// Send _type once per type instead of one comma-joined value.
    #[arg(long)]
    pub type_repeat: bool,
    /// _since: only resources changed since this instant, or `auto`: since the last export
    /// recorded in OUT. The change set is merged into OUT's Delta tables (as `convert --merge`:
    /// the latest meta.lastUpdated wins per id, the server's deleted resources are removed).
    #[arg(long)]
    pub since: Option<String>,
    /// _until
    #[arg(long)]
    pub until: Option<String>,
    /// _typeFilter (repeatable), e.g. "Observation?category=laboratory".
    #[arg(long = "type-filter")]
    pub type_filters: Vec<String>,
    /// _elements, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub elements: Vec<String>,
    /// Another kick-off parameter, NAME=VALUE (repeatable): patient, includeAssociatedData, ...
    #[arg(long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// Kick off with POST and a Parameters body (the server must take it) instead of GET.
    #[arg(long)]
    pub post: bool,
    /// SMART Backend Services: the client id registered with the server.
    #[arg(long)]
    pub client_id: Option<String>,
    /// SMART Backend Services: the private key (PEM; RSA signs RS384, EC P-384 signs ES384).
    #[arg(long, value_name = "PEM", requires = "client_id")]
    pub key: Option<PathBuf>,
    /// The key id (kid) the server knows the public key by.
    #[arg(long)]
    pub kid: Option<String>,
    /// Scope to ask for (default: system/*.rs, or system/*.read for SMART v1 servers).
    #[arg(long)]
    pub scope: Option<String>,
    /// Use the client secret in this environment variable instead of a key.
    #[arg(
        long,
        value_name = "VAR",
        requires = "client_id",
        conflicts_with = "key"
    )]
    pub client_secret_env: Option<String>,
    /// Leave the job on the server at the end (default: DELETE it).
    #[arg(long)]
    pub keep_job: bool,
    /// Continue the job kept in OUT/_export/state.json (after a crash or a kill), signing in
    /// as it did (its client id, key file, kid and scope are kept with it).
    #[arg(long)]
    pub resume: bool,
    /// Delete an unfinished export kept in OUT (on the server too) and start a new one.
    #[arg(long, conflicts_with = "resume")]
    pub restart: bool,
    /// Publish what came when the server's error files report failures: the run record names
    /// the incomplete types and the exit code is 3. Without it such an export fails.
    #[arg(long)]
    pub allow_partial: bool,
    /// The longest wait between two status requests, in seconds, whatever the server asks.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub max_poll: u64,
    /// Add to OUT instead of replacing each type's data.
    #[arg(long)]
    pub append: bool,
    /// How each type's table is kept (as `convert --format`).
    #[arg(long, value_parser = choice::<crate::dataset::Format>(), default_value = "delta")]
    pub format: crate::dataset::Format,
    /// Convert the data as this FHIR version (r4, r4b, r5) instead of the one the server's
    /// CapabilityStatement names.
    #[arg(long, value_parser = choice::<crate::schema::FhirVersion>())]
    pub fhir_version: Option<crate::schema::FhirVersion>,
    /// Worker threads (default: one per core).
    #[arg(short = 'j', long)]
    pub threads: Option<usize>,
    /// Files downloaded at once, each streamed into the conversion as it arrives.
    #[arg(long, value_name = "N", default_value_t = 4)]
    pub parallel: usize,
    /// Keep the downloaded NDJSON (gzipped, one file per manifest entry) in DIR. Without it
    /// the downloads are kept in OUT/_export/files only until the export is published.
    #[arg(long, value_name = "DIR")]
    pub keep_ndjson: Option<PathBuf>,
    /// Which columns of the typed schema each file holds (as `convert --columns`).
    #[arg(long, value_parser = choice::<crate::convert::Columns>(), default_value = "present")]
    pub columns: crate::convert::Columns,
    /// No progress and no summary table.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct WarehouseArgs {
    /// The engine to write statements for.
    #[arg(value_parser = choice::<crate::warehouse::Engine>())]
    pub engine: crate::warehouse::Engine,
    /// The dataset: a folder written by convert, or its s3://, gs://, az:// URL (the URL the
    /// engine reads it from).
    pub dataset: String,
    /// Write the statements to this file instead of standard output.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// The schema (BigQuery: dataset; default `fhir`) the tables go in.
    #[arg(long)]
    pub schema: Option<String>,
    /// BigQuery: LOAD DATA into native tables instead of external tables.
    #[arg(long)]
    pub load: bool,
    /// BigQuery: write a JSON schema file per table (DIR/<Type>.json) for `bq load` / `bq mk`.
    #[arg(long, value_name = "DIR")]
    pub schema_json: Option<PathBuf>,
    /// BigQuery: the connection its Delta Lake tables read the bucket through
    /// ([PROJECT.]LOCATION.CONNECTION_ID).
    #[arg(long, value_name = "CONNECTION", default_value = crate::warehouse::DEFAULT_BIGQUERY_CONNECTION)]
    pub connection: String,
}

#[derive(clap::Args, Debug)]
pub struct UploadArgs {
    /// A folder written by convert.
    pub dataset: PathBuf,
    /// Where to: an s3://, gs://, az:// (abfss://) URL.
    pub dest: String,
    /// No progress bar and no summary.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    /// Input files (.ndjson, .ndjson.gz), folders, manifest.json files, - for standard input, or
    /// s3://, gs://, az:// URLs of such files or of a prefix holding them.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Output folder, or an s3://, gs://, az:// (abfss://) URL: OUT/<ResourceType>/ per type.
    #[arg(short, long)]
    pub out: String,
    /// Add this run's files beside those already in OUT instead of replacing each type's data.
    #[arg(long)]
    pub append: bool,
    /// How each type's table is kept: a Delta Lake table (commits, history) or a plain folder
    /// of Parquet files (a one-shot snapshot).
    #[arg(long, value_parser = choice::<crate::dataset::Format>(), default_value = "delta")]
    pub format: crate::dataset::Format,
    /// Convert the I-th of every N inputs (files, manifest entries): N runs, on one machine or
    /// many, each with --append, convert an export into one dataset together.
    #[arg(long, value_name = "I/N", requires = "append")]
    pub shard: Option<String>,
    /// Apply the inputs as a change set (a `_since` export) to OUT's tables: per resource id the
    /// version with the latest meta.lastUpdated wins, and the ids of a manifest's `deleted`
    /// files are removed; only the files holding changed ids are rewritten.
    #[arg(long, conflicts_with_all = ["append", "shard"])]
    pub merge: bool,
    /// The FHIR version of the inputs: r4 (4.0.1), r4b (4.3.0) or r5 (5.0.0). Default: the
    /// version of OUT's tables with --append or --merge, else r4.
    #[arg(long, value_parser = choice::<crate::schema::FhirVersion>())]
    pub fhir_version: Option<crate::schema::FhirVersion>,
    /// If another run is writing OUT, wait for it to finish instead of failing at once.
    #[arg(long)]
    pub wait: bool,
    /// Add a Hive partition column from a date element: TYPE.ELEMENT[:year|month|day], for example
    /// Observation.effective:year. Repeat for several types.
    #[arg(long = "partition-by", value_name = "TYPE.ELEMENT[:GRAIN]")]
    pub partition_by: Vec<String>,
    /// Parquet compression.
    #[arg(long, value_parser = choice::<Codec>(), default_value = "zstd")]
    pub compression: Codec,
    /// Zstd level (1 is fast and small enough; up to 22).
    #[arg(long, default_value_t = 1)]
    pub zstd_level: i32,
    /// Start a new file once one reaches this many megabytes.
    #[arg(long, value_name = "MB", default_value_t = 512)]
    pub target_file_mb: u64,
    /// Rows per Parquet row group at most.
    #[arg(long, default_value_t = 122_880)]
    pub row_group_rows: usize,
    /// Which columns of the typed schema each file holds: those with a value in the type's
    /// files (every file of a type holds the same ones), or every column of the typed schema.
    /// `present` writes files several times smaller; the columns it leaves out read as NULL
    /// through the table's schema (`sql`, `view`, `to-ndjson`, the `warehouse` statements).
    #[arg(long, value_parser = choice::<crate::convert::Columns>(), default_value = "present")]
    pub columns: crate::convert::Columns,
    /// Rows decoded before a batch is handed to the Parquet writer.
    #[arg(long, default_value_t = 8192)]
    pub batch_rows: usize,
    /// Worker threads (default: one per core).
    #[arg(short = 'j', long)]
    pub threads: Option<usize>,
    /// Input files read at once, each by a thread of its own (default: one per four worker
    /// threads). Gzip and object-store inputs are read faster with more.
    #[arg(long, value_name = "N")]
    pub readers: Option<usize>,
    /// No progress bar and no summary table.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct ToNdjsonArgs {
    /// A folder written by convert, or its s3://, gs://, az:// URL.
    pub dataset: String,
    /// Output folder for <ResourceType>.ndjson.
    #[arg(short, long)]
    pub out: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct SchemaArgs {
    /// The resource type (Patient, Observation, ...).
    #[arg(required_unless_present = "list")]
    pub resource_type: Option<String>,
    /// List the resource types.
    #[arg(long)]
    pub list: bool,
    #[arg(long, value_parser = choice::<SchemaFormat>(), default_value = "tree")]
    pub format: SchemaFormat,
    /// The FHIR version: r4 (4.0.1), r4b (4.3.0) or r5 (5.0.0).
    #[arg(long, value_parser = choice::<crate::schema::FhirVersion>(), default_value = "r4")]
    pub fhir_version: crate::schema::FhirVersion,
}

#[derive(clap::Args, Debug)]
pub struct SqlArgs {
    /// A folder written by convert, or its s3://, gs://, az:// URL.
    pub dataset: String,
    /// Run this statement and exit.
    #[arg(short = 'c', long = "command")]
    pub command: Vec<String>,
    /// Run the statements of this file and exit.
    #[arg(short, long)]
    pub file: Vec<PathBuf>,
    /// Output format of results.
    #[arg(long, value_parser = choice::<PrintFormat>(), default_value = "table")]
    pub format: PrintFormat,
    /// Memory limit for queries, e.g. 2G or 512M; beyond it, sorts and joins spill to disk.
    #[arg(long)]
    pub memory_limit: Option<String>,
    /// Do not print timing or row counts after results.
    #[arg(short, long)]
    pub quiet: bool,
    /// Register a ViewDefinition file (or every *.json of a folder) as a table, named after the
    /// view's `name` or the file.
    #[arg(long = "view", value_name = "VIEW.json")]
    pub views: Vec<PathBuf>,
    /// Read the tables as they were: a table version (`history` lists them) or a time
    /// (2026-12-01T10:00:00Z, 2026-12-01).
    #[arg(long, value_name = "VERSION|TIME")]
    pub as_of: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ViewArgs {
    /// ViewDefinition files (JSON), or folders of them.
    #[arg(required = true)]
    pub views: Vec<PathBuf>,
    /// The dataset to run them on: a folder written by convert, or its s3://, gs://, az:// URL.
    #[arg(short, long, required_unless_present = "sql")]
    pub data: Option<String>,
    /// Print each view as one SQL statement of this engine instead of running it: it runs
    /// inside the engine over the resource tables (named after their types, as `warehouse`
    /// makes them).
    #[arg(long, value_name = "DIALECT", value_parser = choice::<crate::view::lower::Dialect>())]
    pub sql: Option<crate::view::lower::Dialect>,
    /// With --sql: a CREATE OR REPLACE VIEW statement, named NAME (alone: each view's `name`).
    #[arg(long, value_name = "NAME", num_args = 0..=1, default_missing_value = "", requires = "sql")]
    pub create_view: Option<String>,
    /// With --sql: the table of a resource type, TYPE=NAME (`Patient=fhir.patient`); repeatable.
    #[arg(long, value_name = "TYPE=NAME", requires = "sql")]
    pub table: Vec<String>,
    /// Write the rows to this file instead of printing them: .parquet, .csv, .ndjson or .json.
    /// With several views, a folder: one DIR/<name>.parquet per view.
    #[arg(short, long)]
    pub out: Option<PathBuf>,
    /// Format of the rows printed to standard output.
    #[arg(long, value_parser = choice::<PrintFormat>(), default_value = "table")]
    pub format: PrintFormat,
    /// Memory limit, e.g. 2G or 512M.
    #[arg(long)]
    pub memory_limit: Option<String>,
    /// Run the views over the tables as they were: a table version or a time (as `sql --as-of`).
    #[arg(long, value_name = "VERSION|TIME")]
    pub as_of: Option<String>,
    /// With --sql: the FHIR version of the tables, r4, r4b or r5 (default: the view's
    /// fhirVersion, else r4). Run on a dataset, a view reads the dataset's version.
    #[arg(long, value_parser = choice::<crate::schema::FhirVersion>(), requires = "sql")]
    pub fhir_version: Option<crate::schema::FhirVersion>,
}

impl From<SchemaArgs> for SchemaOptions {
    fn from(a: SchemaArgs) -> Self {
        SchemaOptions {
            resource_type: a.resource_type,
            list: a.list,
            format: a.format,
            fhir_version: a.fhir_version,
        }
    }
}

impl From<SqlArgs> for SqlOptions {
    fn from(a: SqlArgs) -> Self {
        SqlOptions {
            dataset: a.dataset,
            command: a.command,
            file: a.file,
            format: a.format,
            memory_limit: a.memory_limit,
            quiet: a.quiet,
            views: a.views,
            as_of: a.as_of,
        }
    }
}

impl From<ViewArgs> for ViewOptions {
    fn from(a: ViewArgs) -> Self {
        ViewOptions {
            views: a.views,
            data: a.data,
            sql: a.sql,
            create_view: a.create_view,
            table: a.table,
            out: a.out,
            format: a.format,
            memory_limit: a.memory_limit,
            as_of: a.as_of,
            fhir_version: a.fhir_version,
        }
    }
}

/// The parser of an option whose values are a [`Choice`]'s names: clap's own checks and
/// messages, each value's help in `--help`.
fn choice<T: Choice>() -> impl TypedValueParser<Value = T> {
    let values = T::CHOICES.iter().map(|(value, name, help)| {
        let aliases = T::ALIASES.iter().filter(|a| a.1 == *value).map(|a| a.0);
        let v = PossibleValue::new(*name).aliases(aliases);
        match help.is_empty() {
            true => v,
            false => v.help(*help),
        }
    });
    PossibleValuesParser::new(values)
        .map(|name| T::from_name(&name).expect("a name of the choices"))
}
