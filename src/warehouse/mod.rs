//! `warehouse`: the statements that make a converted dataset tables in BigQuery, Snowflake,
//! Athena, Databricks (Spark) or DuckDB, with the exact types of our schema (see [`types`]) and
//! the partition columns, plus `reference_id` in each engine's SQL.
//!
//! ```
//! use fhir2parquet::dataset::Table;
//! use fhir2parquet::warehouse::{generate, Engine, Options};
//!
//! let tables = vec![Table {
//!     name: "Patient".into(),
//!     url: "s3://bucket/fhir/Patient/".into(),
//!     partitions: vec![],
//!     files: vec![],
//!     delta: None,
//!     fhir_version: fhir2parquet::schema::FhirVersion::R4,
//! }];
//! let script = generate(Engine::Athena, &tables, &Options::default()).unwrap();
//! assert!(script.sql().contains("CREATE EXTERNAL TABLE IF NOT EXISTS `Patient`"));
//! assert!(script.sql().contains("STORED AS PARQUET"));
//! ```

/// Our types in each engine's words (they live with the schema: the compiled views use them too).
pub use crate::schema::engines as types;

use arrow::datatypes::{DataType, Field, Schema};
use serde_json::Value;

use crate::dataset::Table;
use crate::schema::node::arrow_schema;
use types::{backquote, double_quote};

/// The engines statements are written for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Google BigQuery: BigLake external tables of format DELTA_LAKE (plain folders: PARQUET),
    /// or LOAD DATA with --load; JSON schema files.
    Bigquery,
    /// Snowflake: Iceberg tables over the Delta tables (Delta Direct) on a store; plain folders
    /// and local datasets: stage, table, COPY INTO ... MATCH_BY_COLUMN_NAME.
    Snowflake,
    /// Amazon Athena (Glue, Hive, Trino): CREATE EXTERNAL TABLE ... TBLPROPERTIES
    /// ('table_type' = 'DELTA') (plain folders: STORED AS PARQUET and MSCK REPAIR TABLE).
    Athena,
    /// Databricks and Apache Spark: CREATE TABLE ... USING DELTA LOCATION (plain folders:
    /// USING PARQUET).
    Databricks,
    /// DuckDB: views over read_parquet, with the store's secret.
    Duckdb,
}

impl crate::choice::Choice for Engine {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (
            Engine::Bigquery,
            "bigquery",
            "Google BigQuery: external tables (DELTA_LAKE; plain folders: PARQUET) or LOAD DATA \
             with --load, JSON schema files",
        ),
        (
            Engine::Snowflake,
            "snowflake",
            "Snowflake: Iceberg tables over the Delta tables on a store; else stage, table, COPY \
             INTO ... MATCH_BY_COLUMN_NAME",
        ),
        (
            Engine::Athena,
            "athena",
            "Amazon Athena (Glue, Hive, Trino): CREATE EXTERNAL TABLE, table_type DELTA (plain \
             folders: STORED AS PARQUET, MSCK REPAIR TABLE)",
        ),
        (
            Engine::Databricks,
            "databricks",
            "Databricks and Apache Spark: CREATE TABLE ... USING DELTA (plain folders: PARQUET) \
             LOCATION",
        ),
        (
            Engine::Duckdb,
            "duckdb",
            "DuckDB: views over read_parquet, with the store's secret",
        ),
    ];
    const ALIASES: &'static [(&'static str, Self)] = &[("spark", Engine::Databricks)];
}

/// What the statements are for, besides the tables.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The schema (BigQuery: dataset) the tables go in; none: the engine's current one
    /// (BigQuery: `fhir`).
    pub schema: Option<String>,
    /// BigQuery: `LOAD DATA` into native tables instead of external tables.
    pub load: bool,
    /// DuckDB and S3-compatible stores: the endpoint (`http://host:port`).
    pub endpoint: Option<String>,
    /// BigQuery: the connection (`[PROJECT.]LOCATION.CONNECTION_ID`) its Delta Lake tables
    /// read the bucket through; none: [`DEFAULT_BIGQUERY_CONNECTION`].
    pub connection: Option<String>,
}

/// The BigQuery connection the statements name where `--connection` names none.
pub const DEFAULT_BIGQUERY_CONNECTION: &str = "us.fhir2parquet";
/// Snowflake: the catalog integration its Iceberg tables read the Delta logs with (made by the
/// statements), and the external volume they read the store through (made once by an admin).
const SNOWFLAKE_DELTA_CATALOG: &str = "fhir2parquet_delta";
const SNOWFLAKE_VOLUME: &str = "fhir2parquet_volume";

/// The statements, and what the user must know about them (limits met, columns left out).
#[derive(Debug, Default)]
pub struct Script {
    pub statements: Vec<String>,
    pub notes: Vec<String>,
    /// BigQuery: a JSON schema per table.
    pub schemas: Vec<(String, Value)>,
}

impl Script {
    /// Every statement, each ending in `;`, notes first as comments.
    pub fn sql(&self) -> String {
        let mut out = String::new();
        for n in &self.notes {
            out.push_str(&format!("-- note: {n}\n"));
        }
        for s in &self.statements {
            out.push_str(s);
            out.push_str(";\n\n");
        }
        out
    }
}

/// Athena's limit on a whole CREATE TABLE statement.
pub const ATHENA_MAX_DDL_BYTES: usize = 262_144;
/// Athena's (Glue's) limit on one column's type.
pub const ATHENA_MAX_COLUMN_TYPE_BYTES: usize = 131_072;

/// `reference_id` as a regular expression: the id a reference text points to (`Patient/1`,
/// `https://x/fhir/Patient/1/_history/2`, `urn:uuid:...`, `#contained`), none for a conditional
/// reference. Group 3 is the id (POSIX groups only, for Snowflake).
const REFERENCE_ID_PATTERN: &str =
    "^(#|urn:uuid:|urn:oid:|(.*/)?[A-Z][A-Za-z]+/)([^/?#]+)(/_history/[^/]+)?$";
/// The same with one capturing group, for BigQuery's REGEXP_EXTRACT.
const REFERENCE_ID_PATTERN_ONE_GROUP: &str =
    "^(?:#|urn:uuid:|urn:oid:|(?:.*/)?[A-Z][A-Za-z]+/)([^/?#]+)(?:/_history/[^/]+)?$";

fn schema_of(t: &Table) -> Schema {
    arrow_schema(t.fhir_version, &t.name).expect("a resource table")
}

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The table's folder without the trailing `/` (some engines add their own).
fn folder(t: &Table) -> &str {
    t.url.trim_end_matches('/')
}

/// Top-level, single (not repeated) Reference columns: what `reference_id` views cover.
fn reference_columns(schema: &Schema) -> Vec<String> {
    schema
        .fields()
        .iter()
        .filter(|f| match f.data_type() {
            DataType::Struct(fields) => {
                let has = |n: &str| fields.iter().any(|c| c.name() == n);
                has("reference") && has("display") && has("identifier")
            }
            _ => false,
        })
        .map(|f| f.name().clone())
        .collect()
}

/// The statements for `engine` over `tables`.
///
/// A Delta table is read as Delta where the engine can: its current version, partition
/// columns and schema from its log (DuckDB `delta_scan`, Databricks `USING DELTA`, Athena
/// `table_type = 'DELTA'`, BigQuery `format = 'DELTA_LAKE'`, Snowflake Iceberg tables over Delta
/// files). Where the statements read Parquet files instead (BigQuery `--load`, Snowflake from a
/// local dataset) they name the current version's files; a plain folder (`--format parquet`) is
/// read as the Parquet files it holds.
pub fn generate(engine: Engine, tables: &[Table], opts: &Options) -> anyhow::Result<Script> {
    let mut script = Script::default();
    // Deletion vectors (rows a merge deleted): a Delta reader applies them or refuses the
    // table; statements that read the files themselves would read those rows.
    let merged: Vec<&str> = tables
        .iter()
        .filter(|t| {
            t.delta
                .as_ref()
                .is_some_and(|s| s.files.iter().any(|f| f.deleted.is_some()))
        })
        .map(|t| t.name.as_str())
        .collect();
    let reads_files = match engine {
        Engine::Bigquery => opts.load,
        Engine::Snowflake => is_local(tables),
        _ => false,
    };
    if !merged.is_empty() && engine != Engine::Duckdb {
        script.notes.push(match reads_files {
            true => format!(
                "{} hold rows a merge deleted (deletion vectors), which these statements would \
                 load as rows: run `fhir2parquet vacuum DATASET --purge` first",
                merged.join(", ")
            ),
            false => format!(
                "{} hold deletion vectors (rows a merge deleted; Delta reader version 3, feature \
                 deletionVectors): Databricks, Spark with Delta 2.3 or later and DuckDB apply \
                 them; an engine that cannot refuses these tables (a convert without --merge \
                 into a new folder makes tables without the feature)",
                merged.join(", ")
            ),
        });
    }
    match engine {
        Engine::Bigquery => bigquery(tables, opts, &mut script),
        Engine::Snowflake => snowflake(tables, opts, &mut script),
        Engine::Athena => athena(
            tables,
            opts,
            &mut script,
            (ATHENA_MAX_DDL_BYTES, ATHENA_MAX_COLUMN_TYPE_BYTES),
        ),
        Engine::Databricks => databricks(tables, opts, &mut script),
        Engine::Duckdb => duckdb(tables, opts, &mut script),
    }
    Ok(script)
}

/// Whether the tables are a local folder's (a path, not a URL): Snowflake then puts their files
/// into stages.
fn is_local(tables: &[Table]) -> bool {
    tables.first().is_some_and(|t| !t.url.contains("://"))
}

/// The URLs of the files of a Delta table's current version (where statements load files).
fn current_files(t: &Table) -> Option<Vec<String>> {
    let snapshot = t.delta.as_ref()?;
    Some(
        snapshot
            .files
            .iter()
            .map(|f| format!("{}/{}", folder(t), f.path))
            .collect(),
    )
}

fn qualified(opts: &Options, name: &str, quote: fn(&str) -> String) -> String {
    match &opts.schema {
        Some(s) => format!("{}.{}", quote(s), quote(name)),
        None => quote(name),
    }
}

fn duckdb(tables: &[Table], opts: &Options, script: &mut Script) {
    let scheme = tables
        .first()
        .and_then(|t| t.url.split_once("://").map(|(s, _)| s.to_string()));
    match scheme.as_deref() {
        Some("s3") | Some("s3a") | Some("gs") | Some("az") | Some("abfs") | Some("abfss") => {
            script.statements.push("LOAD httpfs".into());
        }
        _ => {}
    }
    match scheme.as_deref() {
        Some("s3") | Some("s3a") => {
            let mut secret = vec![
                "TYPE s3".to_string(),
                "PROVIDER credential_chain".to_string(),
            ];
            if let Some(e) = &opts.endpoint {
                let (ssl, host) = match e.strip_prefix("http://") {
                    Some(h) => (false, h),
                    None => (true, e.trim_start_matches("https://")),
                };
                secret.push(format!(
                    "ENDPOINT {}",
                    quote_literal(host.trim_end_matches('/'))
                ));
                secret.push("URL_STYLE 'path'".into());
                secret.push(format!("USE_SSL {ssl}"));
            }
            script.statements.push(format!(
                "CREATE OR REPLACE SECRET fhir2parquet_s3 ({})",
                secret.join(", ")
            ));
            script.notes.push(
                "the S3 secret takes credentials from the AWS chain (environment, profile, SSO, \
                 instance role): the aws extension (`duckdb-ext-aws` on PyPI) must be loadable"
                    .into(),
            );
        }
        Some("gs") => {
            script.statements.push(
                "CREATE OR REPLACE SECRET fhir2parquet_gcs (TYPE gcs, PROVIDER credential_chain)"
                    .into(),
            );
        }
        Some("az") | Some("abfs") | Some("abfss") => {
            script.statements.push(
                "CREATE OR REPLACE SECRET fhir2parquet_azure (TYPE azure, PROVIDER \
                 credential_chain, ACCOUNT_NAME 'your_account')"
                    .into(),
            );
            script.notes.push(
                "set ACCOUNT_NAME in the Azure secret, or use CONNECTION_STRING instead of \
                 PROVIDER credential_chain"
                    .into(),
            );
        }
        _ => {}
    }
    if tables.iter().any(|t| t.delta.is_some()) {
        script.statements.push("LOAD delta".into());
        script.notes.push(
            "Delta tables are read with delta_scan: the delta extension (`duckdb-ext-delta` on \
             PyPI, or INSTALL delta) must be loadable"
                .into(),
        );
    }
    if let Some(s) = &opts.schema {
        script
            .statements
            .push(format!("CREATE SCHEMA IF NOT EXISTS {}", double_quote(s)));
    }
    for t in tables {
        // Files may hold part of the typed schema (`convert --columns present`): DuckDB merges
        // their schemas by name (delta_scan: the log's schema), and each column is cast to its
        // full type (the fields no file holds are NULL), so the view has the table's schema
        // whatever the files hold. A Delta table is read as its log says (its current version).
        let source = match t.delta.is_some() {
            true => format!("delta_scan({})", quote_literal(folder(t))),
            false => String::new(),
        };
        let mut args = vec![
            quote_literal(&format!("{}/**/*.parquet", folder(t))),
            "hive_partitioning = true".to_string(),
            "union_by_name = true".to_string(),
        ];
        if !t.partitions.is_empty() {
            let types: Vec<String> = t
                .partitions
                .iter()
                .map(|p| format!("{}: 'VARCHAR'", quote_literal(p)))
                .collect();
            args.push(format!("hive_types = {{{}}}", types.join(", ")));
        }
        let mut columns: Vec<String> = schema_of(t)
            .fields()
            .iter()
            .map(|f| {
                let name = double_quote(f.name());
                // DuckDB spells our types as the views compiled for it do.
                let t = types::sql_full_type(types::Sql::Duckdb, f.data_type())
                    .expect("a DuckDB type for every column of our schema");
                format!("CAST({name} AS {t}) AS {name}")
            })
            .collect();
        columns.extend(t.partitions.iter().map(|p| double_quote(p)));
        let source = match source.is_empty() {
            true => format!("read_parquet({})", args.join(", ")),
            false => source,
        };
        script.statements.push(format!(
            "CREATE OR REPLACE VIEW {} AS SELECT {} FROM {source}",
            qualified(opts, &t.name, double_quote),
            columns.join(", "),
        ));
    }
    script.statements.push(format!(
        "CREATE OR REPLACE MACRO reference_id(r) AS NULLIF(regexp_extract(r, {}, 3), '')",
        quote_literal(REFERENCE_ID_PATTERN)
    ));
}

/// Hive column definitions; for Athena, the columns too large for it are left out.
fn hive_columns(schema: &Schema, skip: &[String]) -> Vec<String> {
    schema
        .fields()
        .iter()
        .filter(|f| !skip.contains(f.name()))
        .map(|f| format!("  {} {}", backquote(f.name()), types::hive(f.data_type())))
        .collect()
}

/// Athena's statements; `limits` are its maximum bytes per statement and per column type.
fn athena(tables: &[Table], opts: &Options, script: &mut Script, limits: (usize, usize)) {
    let (max_ddl, max_column) = limits;
    if let Some(s) = &opts.schema {
        script
            .statements
            .push(format!("CREATE DATABASE IF NOT EXISTS {}", backquote(s)));
    }
    for t in tables {
        let schema = schema_of(t);
        let name = qualified(opts, &t.name, backquote);
        if t.delta.is_some() {
            // Athena reads the schema, the partitions and the current version from the log:
            // the statement has the location and the table type only (as Athena requires).
            script.statements.push(format!(
                "CREATE EXTERNAL TABLE IF NOT EXISTS {name}\nLOCATION {}\nTBLPROPERTIES \
                 ('table_type' = 'DELTA')",
                quote_literal(&format!("{}/", folder(t)))
            ));
            athena_refs_view(t, &schema, opts, script);
            continue;
        }
        let partitions: Vec<String> = t
            .partitions
            .iter()
            .map(|p| format!("{} STRING", backquote(p)))
            .collect();
        let render = |skip: &[String]| {
            let mut ddl = format!(
                "CREATE EXTERNAL TABLE IF NOT EXISTS {name} (\n{}\n)",
                hive_columns(&schema, skip).join(",\n")
            );
            if !partitions.is_empty() {
                ddl.push_str(&format!("\nPARTITIONED BY ({})", partitions.join(", ")));
            }
            ddl.push_str(&format!(
                "\nSTORED AS PARQUET\nLOCATION {}",
                quote_literal(&format!("{}/", folder(t)))
            ));
            ddl
        };
        // Athena's limits: a column's type, then the statement; the largest columns go first.
        let mut skip: Vec<String> = schema
            .fields()
            .iter()
            .filter(|f| types::hive(f.data_type()).len() > max_column)
            .map(|f| f.name().clone())
            .collect();
        let mut by_size: Vec<(usize, String)> = schema
            .fields()
            .iter()
            .filter(|f| !skip.contains(f.name()))
            .map(|f| (types::hive(f.data_type()).len(), f.name().clone()))
            .collect();
        by_size.sort();
        while render(&skip).len() > max_ddl {
            match by_size.pop() {
                Some((_, n)) => skip.push(n),
                None => break,
            }
        }
        if !skip.is_empty() {
            script.notes.push(format!(
                "athena: {} leaves out {} (its type, or the statement with it, is beyond \
                 Athena's limits of {max_column} bytes per column type and {max_ddl} per \
                 statement); the Parquet files keep it",
                t.name,
                skip.join(", ")
            ));
        }
        script.statements.push(render(&skip));
        if !partitions.is_empty() {
            script.statements.push(format!("MSCK REPAIR TABLE {name}"));
        }
        athena_refs_view(t, &schema, opts, script);
    }
}

/// `reference_id` as view columns (`<Type>_refs`): Athena has no SQL functions of its own.
fn athena_refs_view(t: &Table, schema: &Schema, opts: &Options, script: &mut Script) {
    let refs = reference_columns(schema);
    if refs.is_empty() {
        return;
    }
    let cols: Vec<String> = refs
        .iter()
        .map(|r| {
            format!(
                "NULLIF(regexp_extract({}.reference, {}, 3), '') AS {}",
                double_quote(r),
                quote_literal(REFERENCE_ID_PATTERN),
                double_quote(&format!("{r}_id"))
            )
        })
        .collect();
    script.statements.push(format!(
        "CREATE OR REPLACE VIEW {} AS SELECT *, {} FROM {}",
        qualified(opts, &format!("{}_refs", t.name), double_quote),
        cols.join(", "),
        qualified(opts, &t.name, double_quote)
    ));
}

fn databricks(tables: &[Table], opts: &Options, script: &mut Script) {
    if let Some(s) = &opts.schema {
        script
            .statements
            .push(format!("CREATE SCHEMA IF NOT EXISTS {}", backquote(s)));
    }
    for t in tables {
        let name = qualified(opts, &t.name, backquote);
        if t.delta.is_some() {
            // The schema and partition columns are the log's.
            script.statements.push(format!(
                "CREATE TABLE IF NOT EXISTS {name}\nUSING DELTA\nLOCATION {}",
                quote_literal(folder(t))
            ));
            continue;
        }
        let schema = schema_of(t);
        let mut cols = hive_columns(&schema, &[]);
        cols.extend(
            t.partitions
                .iter()
                .map(|p| format!("  {} STRING", backquote(p))),
        );
        let mut ddl = format!(
            "CREATE TABLE IF NOT EXISTS {name} (\n{}\n)\nUSING PARQUET",
            cols.join(",\n")
        );
        if !t.partitions.is_empty() {
            let p: Vec<String> = t.partitions.iter().map(|p| backquote(p)).collect();
            ddl.push_str(&format!("\nPARTITIONED BY ({})", p.join(", ")));
        }
        ddl.push_str(&format!(
            "\nLOCATION {}",
            quote_literal(&format!("{}/", folder(t)))
        ));
        script.statements.push(ddl);
        if !t.partitions.is_empty() {
            script
                .statements
                .push(format!("ALTER TABLE {name} RECOVER PARTITIONS"));
        }
    }
    script.statements.push(format!(
        "CREATE OR REPLACE FUNCTION {}(r STRING) RETURNS STRING RETURN \
         NULLIF(regexp_extract(r, {}, 3), '')",
        qualified(opts, "reference_id", backquote),
        quote_literal(REFERENCE_ID_PATTERN)
    ));
}

fn bigquery(tables: &[Table], opts: &Options, script: &mut Script) {
    let dataset = opts.schema.clone().unwrap_or_else(|| "fhir".into());
    let connection = opts
        .connection
        .as_deref()
        .unwrap_or(DEFAULT_BIGQUERY_CONNECTION);
    if !opts.load && tables.iter().any(|t| t.delta.is_some()) {
        let (location, id) = connection.rsplit_once('.').unwrap_or(("us", connection));
        let location = location.rsplit('.').next().unwrap_or(location);
        script.notes.push(format!(
            "the Delta Lake tables read the bucket through the BigQuery connection \
             {connection} (--connection names another): create it once with `bq mk --connection \
             --location={location} --connection_type=CLOUD_RESOURCE {id}` and give its service \
             account read access to the bucket"
        ));
    }
    let name = |t: &str| backquote(&format!("{dataset}.{t}"));
    script.statements.push(format!(
        "CREATE SCHEMA IF NOT EXISTS {}",
        backquote(&dataset)
    ));
    for t in tables {
        let schema = schema_of(t);
        let depth = schema
            .fields()
            .iter()
            .map(|f| types::record_depth(f.data_type()))
            .max()
            .unwrap_or(0);
        if depth > types::BIGQUERY_MAX_DEPTH {
            script.notes.push(format!(
                "bigquery: {} nests {depth} RECORD levels, beyond BigQuery's {}",
                t.name,
                types::BIGQUERY_MAX_DEPTH
            ));
        }
        let fields: Vec<Value> = schema
            .fields()
            .iter()
            .map(|f| types::bigquery(f))
            .chain(
                t.partitions
                    .iter()
                    .map(|p| types::bigquery(&Field::new(p, DataType::Utf8, true))),
            )
            .collect();
        script.schemas.push((t.name.clone(), Value::Array(fields)));
        if t.delta.is_some() && !opts.load {
            // A BigLake table: its schema, partitions and current version from the log.
            script.statements.push(format!(
                "CREATE OR REPLACE EXTERNAL TABLE {}\nWITH CONNECTION {}\nOPTIONS (\n  \
                 format = 'DELTA_LAKE',\n  uris = [{}]\n)",
                name(&t.name),
                backquote(connection),
                quote_literal(folder(t))
            ));
            continue;
        }
        // LOAD DATA reads Parquet files: a Delta table's current ones, each named.
        let uris: Vec<String> = match current_files(t) {
            Some(files) => files.iter().map(|f| quote_literal(f)).collect(),
            None => vec![quote_literal(&format!("{}/*", folder(t)))],
        };
        let mut options = vec![
            "format = 'PARQUET'".to_string(),
            format!("uris = [{}]", uris.join(", ")),
            "enable_list_inference = true".to_string(),
            "decimal_target_types = ['NUMERIC', 'BIGNUMERIC']".to_string(),
        ];
        let partition_clause = match t.partitions.is_empty() {
            true => String::new(),
            false => {
                options.push(format!(
                    "hive_partition_uri_prefix = {}",
                    quote_literal(folder(t))
                ));
                let cols: Vec<String> = t
                    .partitions
                    .iter()
                    .map(|p| format!("{} STRING", backquote(p)))
                    .collect();
                format!("\nWITH PARTITION COLUMNS ({})", cols.join(", "))
            }
        };
        let statement = match opts.load {
            false => format!(
                "CREATE OR REPLACE EXTERNAL TABLE {}{partition_clause}\nOPTIONS (\n  {}\n)",
                name(&t.name),
                options.join(",\n  ")
            ),
            true => format!(
                "LOAD DATA OVERWRITE {}\nFROM FILES (\n  {}\n){partition_clause}",
                name(&t.name),
                options.join(",\n  ")
            ),
        };
        script.statements.push(statement);
    }
    script.statements.push(format!(
        "CREATE OR REPLACE FUNCTION {}(r STRING) RETURNS STRING AS (REGEXP_EXTRACT(r, r{}))",
        name("reference_id"),
        quote_literal(REFERENCE_ID_PATTERN_ONE_GROUP)
    ));
}

/// A Snowflake stage URL: `azure://account.blob.core.windows.net/container/...` for Azure.
fn snowflake_url(url: &str) -> String {
    if let Some(rest) = url.strip_prefix("abfss://").or(url.strip_prefix("abfs://")) {
        if let Some((container, host)) = rest.split_once('@') {
            let (host, path) = host.split_once('/').unwrap_or((host, ""));
            let account = host.split('.').next().unwrap_or(host);
            return format!("azure://{account}.blob.core.windows.net/{container}/{path}");
        }
    }
    if let Some(rest) = url.strip_prefix("gs://") {
        return format!("gcs://{rest}");
    }
    url.to_string()
}

fn snowflake(tables: &[Table], opts: &Options, script: &mut Script) {
    let local = is_local(tables);
    if let Some(s) = &opts.schema {
        script
            .statements
            .push(format!("CREATE SCHEMA IF NOT EXISTS {}", double_quote(s)));
    }
    // On a store a Delta table is an Iceberg table over its Delta files (Snowflake's Delta
    // Direct, which replaces its external tables of TABLE_FORMAT = DELTA); a plain folder, and
    // a local dataset's current files, are loaded through a stage.
    let direct = |t: &Table| !local && t.delta.is_some();
    if tables.iter().any(direct) {
        let dataset = tables
            .iter()
            .find(|t| direct(t))
            .and_then(|t| folder(t).strip_suffix(t.name.as_str()))
            .map(str::to_string)
            .unwrap_or_default();
        script.notes.push(format!(
            "the Delta tables are Iceberg tables over their Delta files: they read the store \
             through an external volume named {SNOWFLAKE_VOLUME} whose storage location is \
             {} (CREATE EXTERNAL VOLUME, once, by an admin)",
            snowflake_url(&dataset)
        ));
        script.statements.push(format!(
            "CREATE CATALOG INTEGRATION IF NOT EXISTS {SNOWFLAKE_DELTA_CATALOG}\n  \
             CATALOG_SOURCE = OBJECT_STORE\n  TABLE_FORMAT = DELTA\n  ENABLED = TRUE"
        ));
    }
    if !local && !tables.iter().all(direct) {
        script.notes.push(
            "the stages read the bucket through a storage integration named \
             fhir2parquet_integration (CREATE STORAGE INTEGRATION, once, by an admin)"
                .into(),
        );
    }
    for t in tables {
        if direct(t) {
            script.statements.push(format!(
                "CREATE OR REPLACE ICEBERG TABLE {}\n  EXTERNAL_VOLUME = {}\n  CATALOG = {}\n  \
                 BASE_LOCATION = {}\n  AUTO_REFRESH = TRUE",
                qualified(opts, &t.name, double_quote),
                quote_literal(SNOWFLAKE_VOLUME),
                quote_literal(SNOWFLAKE_DELTA_CATALOG),
                quote_literal(&format!("{}/", t.name))
            ));
            continue;
        }
        let schema = schema_of(t);
        let cols: Vec<String> = schema
            .fields()
            .iter()
            .map(|f| format!("  {} {}", double_quote(f.name()), types::snowflake(f)))
            .collect();
        let wide: Vec<&str> = schema
            .fields()
            .iter()
            .filter(|f| types::snowflake(f) == "VARIANT")
            .map(|f| f.name().as_str())
            .collect();
        if !wide.is_empty() {
            script.notes.push(format!(
                "snowflake: {}.{} are VARIANT: structs of more than {} fields cannot be OBJECTs",
                t.name,
                wide.join(", "),
                types::SNOWFLAKE_MAX_OBJECT_FIELDS
            ));
        }
        let name = qualified(opts, &t.name, double_quote);
        // A stage per table: its folder.
        let stage = qualified(opts, &format!("fhir2parquet_{}", t.name), double_quote);
        script.statements.push(match local {
            true => format!("CREATE OR REPLACE STAGE {stage}"),
            false => format!(
                "CREATE OR REPLACE STAGE {stage} URL = {} STORAGE_INTEGRATION = \
                 fhir2parquet_integration",
                quote_literal(&snowflake_url(&format!("{}/", folder(t))))
            ),
        });
        script.statements.push(format!(
            "CREATE OR REPLACE TABLE {name} (\n{}\n)",
            cols.join(",\n")
        ));
        if local {
            for f in &t.files {
                if let crate::dataset::DataFile::Local(p) = f {
                    let rel = p
                        .parent()
                        .and_then(|d| d.strip_prefix(folder(t)).ok())
                        .map(|r| r.to_string_lossy().replace('\\', "/"))
                        .unwrap_or_default();
                    let dest = match rel.is_empty() {
                        true => format!("@{stage}"),
                        false => format!("@{stage}/{rel}"),
                    };
                    script.statements.push(format!(
                        "PUT 'file://{}' {dest} AUTO_COMPRESS = FALSE",
                        p.display()
                    ));
                }
            }
        }
        script.statements.push(format!(
            "COPY INTO {name} FROM @{stage} FILE_FORMAT = (TYPE = PARQUET \
             USE_VECTORIZED_SCANNER = TRUE) MATCH_BY_COLUMN_NAME = CASE_SENSITIVE"
        ));
        if !t.partitions.is_empty() {
            script.notes.push(format!(
                "snowflake: {}'s partition columns ({}) are not loaded: they are in the data",
                t.name,
                t.partitions.join(", ")
            ));
        }
    }
    script.statements.push(format!(
        "CREATE OR REPLACE FUNCTION {}(r VARCHAR) RETURNS VARCHAR AS \
         $$ REGEXP_SUBSTR(r, {}, 1, 1, 'e', 3) $$",
        qualified(opts, "reference_id", double_quote),
        quote_literal(REFERENCE_ID_PATTERN)
    ));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(name: &str) -> Table {
        Table {
            name: name.into(),
            url: format!("s3://bucket/fhir/{name}/"),
            partitions: vec![],
            files: vec![],
            delta: None,
            fhir_version: crate::schema::FhirVersion::R4,
        }
    }

    #[test]
    fn athena_leaves_out_the_largest_columns_beyond_its_limits() {
        let mut script = Script::default();
        let schema = arrow_schema(crate::schema::FhirVersion::R4, "Patient").unwrap();
        let full: usize = schema
            .fields()
            .iter()
            .map(|f| types::hive(f.data_type()).len())
            .sum();
        // A statement limit a little under the whole: the largest column goes.
        athena(
            &[table("Patient")],
            &Options::default(),
            &mut script,
            (full, 100_000),
        );
        let ddl = &script.statements[0];
        assert!(ddl.len() <= full, "{}", ddl.len());
        assert!(ddl.contains("`id` STRING"));
        assert_eq!(script.notes.len(), 1, "{:?}", script.notes);
        assert!(script.notes[0].contains("Patient leaves out"));
        // A column type limit: every column with a longer type goes.
        let mut script = Script::default();
        athena(
            &[table("Patient")],
            &Options::default(),
            &mut script,
            (1 << 30, 2_000),
        );
        assert!(!script.statements[0].contains("`contact` ARRAY"));
        assert!(script.notes[0].contains("contact"));
    }

    #[test]
    fn reference_id_pattern_groups() {
        assert!(REFERENCE_ID_PATTERN.matches('(').count() == 4);
        assert!(REFERENCE_ID_PATTERN_ONE_GROUP.matches("(?:").count() == 3);
    }
}
