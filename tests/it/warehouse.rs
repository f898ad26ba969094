//! `warehouse`: the statements run in real engines (DuckDB, Spark SQL in local mode, fakesnow
//! for Snowflake) over a converted dataset, and the BigQuery and Athena rules held by tests.
//! `.ci/run` installs the engines; without them these tests say so and pass only outside CI.

use std::path::Path;
use std::process::Command;

use fhir2parquet::dataset::Table;
use fhir2parquet::warehouse::{generate, types, Engine, Options};

use crate::cloud::{installed, ok, Store};
use crate::{bin, python_has};

const CHECK: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/warehouse/check.py");
const INPUT: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/warehouse/observations.ndjson"
);

/// The test observations converted into `out`, partitioned by year or not.
fn convert(out: &Path, partitioned: bool) {
    convert_with(out, partitioned, "all");
}

/// The same, each file holding the columns of `--columns` (`all` or `present`).
fn convert_with(out: &Path, partitioned: bool, columns: &str) {
    convert_as(out, partitioned, columns, "delta");
}

/// The same as Delta tables or plain folders (`--format`).
fn convert_as(out: &Path, partitioned: bool, columns: &str, format: &str) {
    let mut args = vec!["convert", INPUT, "-o", out.to_str().unwrap(), "-q"];
    if partitioned {
        args.extend(["--partition-by", "Observation.effective:year"]);
    }
    args.extend(["--columns", columns, "--format", format]);
    ok(&bin(&args));
}

/// Writes the engine's statements for `dataset` and runs check.py on them.
fn check(engine: &str, check_as: &str, dataset: &str, env: &[(&str, String)]) {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join(format!("{engine}.sql"));
    ok(&bin(&[
        "warehouse",
        engine,
        dataset,
        "-o",
        script.to_str().unwrap(),
    ]));
    let mut c = Command::new("python3");
    c.args([CHECK, check_as, script.to_str().unwrap()]);
    for (k, v) in env {
        c.env(k, v);
    }
    ok(&c.output().unwrap());
}

#[test]
fn duckdb_runs_its_statements_over_local_data() {
    if !python_has(
        "duckdb, duckdb_ext",
        "duckdb==1.4.4 duckdb-ext-delta==1.4.4.20260205",
    ) {
        return;
    }
    let ext = crate::duckdb_extensions();
    let ext = [("DUCKDB_EXTENSION_DIRECTORY", ext)];
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // Converted twice: the Delta tables' second versions replace the first (whose files are
    // still in the folders): the views read delta_scan, the current version only.
    convert(&out, true);
    convert(&out, true);
    check("duckdb", "duckdb", out.to_str().unwrap(), &ext);
    // A file:// URL is a local dataset as well.
    let url = format!("file://{}", out.canonicalize().unwrap().display());
    check("duckdb", "duckdb", &url, &ext);
    // Files of present columns only, a different part of the schema in each partition: the
    // views still have every column, and the values.
    let present = tmp.path().join("present");
    convert_with(&present, true, "present");
    check("duckdb", "duckdb", present.to_str().unwrap(), &ext);
    // Plain folders (--format parquet) are read with read_parquet.
    let plain = tmp.path().join("plain");
    let args = [
        "convert",
        INPUT,
        "-o",
        plain.to_str().unwrap(),
        "-q",
        "--format",
        "parquet",
        "--partition-by",
        "Observation.effective:year",
    ];
    ok(&crate::bin(&args));
    check("duckdb", "duckdb", plain.to_str().unwrap(), &[]);
    // The current DuckDB (2.x) runs the statements for plain folders too (no delta extension
    // is built for it on PyPI yet).
    if crate::duckdb2() {
        check(
            "duckdb",
            "duckdb",
            plain.to_str().unwrap(),
            &[("PYTHONPATH", crate::DUCKDB2.to_string())],
        );
    }
}

#[test]
fn duckdb_reads_the_dataset_on_s3() {
    if !python_has("duckdb, duckdb_ext", "duckdb-ext-httpfs duckdb-ext-aws") {
        return;
    }
    let Some(store) = Store::moto() else { return };
    let url = store.url("fhir");
    let src = crate::shared("fhir-data/synthea-r4-small");
    ok(&store.bin(&["convert", src.to_str().unwrap(), "-o", &url, "-q"]));
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("duckdb.sql");
    let endpoint = format!("http://127.0.0.1:{}", store.server.port);
    let o = store.bin(&[
        "--endpoint",
        &endpoint,
        "warehouse",
        "duckdb",
        &url,
        "-o",
        script.to_str().unwrap(),
    ]);
    ok(&o);
    let text = std::fs::read_to_string(&script).unwrap();
    assert!(text.contains("PROVIDER credential_chain"), "{text}");
    assert!(!text.contains("SECRETVALUE"));
    let ext = crate::duckdb_extensions();
    let patients = crate::read_lines(&src.join("Patient.ndjson")).len();
    let o = Command::new("python3")
        .args([CHECK, "duckdb", script.to_str().unwrap()])
        .envs(store.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("DUCKDB_EXTENSION_DIRECTORY", ext)
        .env("ONLY_COUNT", patients.to_string())
        .output()
        .unwrap();
    ok(&o);
}

/// The statements for plain folders (`--format parquet`: Parquet tables with the full typed
/// schema), run in Spark SQL. Those for Delta tables (`USING DELTA`, `table_type = 'DELTA'`)
/// need a Delta reader, which no registry here installs for Spark: they are parsed, below.
#[test]
fn spark_runs_the_athena_and_databricks_statements() {
    if !python_has("pyspark", "pyspark") {
        return;
    }
    if !installed("java", "a Java runtime (apt install default-jre-headless)") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // Files of every column, and files of present columns only (Spark reads them through the
    // tables' schemas).
    for columns in ["all", "present"] {
        let out = tmp.path().join(columns);
        convert_as(&out, true, columns, "parquet");
        for (engine, check_as) in [
            ("athena", "spark-athena"),
            ("databricks", "spark-databricks"),
        ] {
            let work = tmp.path().join(format!("{engine}-{columns}"));
            std::fs::create_dir_all(&work).unwrap();
            let work = ("SPARK_WORK", work.to_str().unwrap().to_string());
            check(engine, check_as, out.to_str().unwrap(), &[work]);
        }
    }
}

#[test]
fn snowflake_statements_run_in_fakesnow_as_far_as_it_goes() {
    if !python_has(
        "fakesnow, snowflake.connector",
        "fakesnow snowflake-connector-python",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    convert(&out, false);
    check("snowflake", "snowflake", out.to_str().unwrap(), &[]);
}

/// Runs tests/warehouse/parse.py: one JSON object per statement.
fn parse(engine: &str, sql: &str, unparsed: &[&str]) -> Vec<serde_json::Value> {
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("statements.sql");
    std::fs::write(&script, sql).unwrap();
    let parser = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/warehouse/parse.py");
    let o = Command::new("python3")
        .args([parser, engine, script.to_str().unwrap()])
        .args(unparsed)
        .output()
        .unwrap();
    ok(&o)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Delta tables on a store are read as Delta where the engine can: their schema, partitions and
/// current version from the log (Databricks `USING DELTA`, Athena `table_type = 'DELTA'`,
/// BigQuery `format = 'DELTA_LAKE'`, Snowflake Iceberg tables over the Delta files); where the
/// statements load files (BigQuery `--load`, Snowflake from a local folder) they name the current
/// version's files, as the log (replayed here) has them. The statements are parsed by parsers
/// that are not ours (Spark's, sqlglot's Athena and Snowflake dialects): none of these engines
/// reads Delta here. Plain folders keep the Parquet statements (run in Spark above).
#[test]
fn delta_tables_are_read_as_delta_where_the_engine_can() {
    if !python_has("sqlglot", "sqlglot") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    // Two versions: the first one's files are still in the folders, no longer in the table.
    convert(&out, true);
    convert(&out, true);
    let current = crate::delta_current_files(&out.join("Observation"));
    let parquet_files = crate::files_under(&out.join("Observation"))
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .count();
    assert!(parquet_files > current.len(), "{current:?}");

    // The tables as a dataset on a store would list them.
    let local = fhir2parquet::store::Location::Local(out.clone());
    let mut tables = fhir2parquet::dataset::tables(&local).unwrap();
    for t in &mut tables {
        t.url = format!("s3://bucket/fhir/{}/", t.name);
    }
    let names: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
    let sql = |engine, opts: &Options| generate(engine, &tables, opts).unwrap();

    // Databricks / Spark: the location and the format, nothing else (Spark's own parser).
    let databricks = sql(Engine::Databricks, &Options::default()).sql();
    if python_has("pyspark", "pyspark") && installed("java", "a Java runtime") {
        let plans = parse("spark", &databricks, &[]);
        let tables_made: Vec<&serde_json::Value> = plans
            .iter()
            .filter(|p| p["kind"] == "CreateTable")
            .collect();
        assert_eq!(tables_made.len(), names.len(), "{databricks}");
        for (plan, name) in tables_made.iter().zip(&names) {
            assert_eq!(plan["format"], "DELTA", "{plan}");
            assert_eq!(
                plan["location"],
                format!("s3://bucket/fhir/{name}"),
                "{plan}"
            );
            assert_eq!(plan["columns"], 0, "{plan}");
        }
        assert!(plans
            .iter()
            .any(|p| p["kind"] == "CreateUserDefinedFunction"));
    }
    assert!(!databricks.contains("RECOVER PARTITIONS"), "{databricks}");

    // Athena: location and table type only (what Athena takes for Delta), and the _refs view.
    let athena = sql(Engine::Athena, &Options::default()).sql();
    let statements = parse("athena", &athena, &[]);
    let created: Vec<&serde_json::Value> = statements
        .iter()
        .filter(|p| {
            p["sql"]
                .as_str()
                .is_some_and(|s| s.starts_with("CREATE EXTERNAL TABLE"))
        })
        .collect();
    assert_eq!(created.len(), names.len(), "{athena}");
    for (st, name) in created.iter().zip(&names) {
        assert_eq!(st["location"], format!("s3://bucket/fhir/{name}/"), "{st}");
        assert_eq!(st["columns"], 0, "{st}");
        assert!(
            st["sql"]
                .as_str()
                .unwrap()
                .ends_with("TBLPROPERTIES ('table_type'='DELTA')"),
            "{st}"
        );
    }
    assert!(athena.contains("CREATE OR REPLACE VIEW \"Observation_refs\""));
    assert!(
        !athena.contains("MSCK REPAIR") && !athena.contains("STORED AS"),
        "{athena}"
    );

    // Snowflake: a catalog integration for Delta files, an Iceberg table per type over its
    // folder in the external volume.
    let snowflake = sql(Engine::Snowflake, &Options::default());
    let text = snowflake.sql();
    let statements = parse("snowflake", &text, &["CREATE CATALOG INTEGRATION"]);
    assert!(text.contains(
        "CREATE CATALOG INTEGRATION IF NOT EXISTS fhir2parquet_delta\n  CATALOG_SOURCE = \
         OBJECT_STORE\n  TABLE_FORMAT = DELTA\n  ENABLED = TRUE"
    ));
    let iceberg: Vec<&serde_json::Value> = statements
        .iter()
        .filter(|p| {
            p["properties"]
                .as_array()
                .is_some_and(|a| a.iter().any(|x| x == "IcebergProperty"))
        })
        .collect();
    assert_eq!(iceberg.len(), names.len(), "{text}");
    for (st, name) in iceberg.iter().zip(&names) {
        let s = st["sql"].as_str().unwrap();
        assert!(s.contains(&format!("BASE_LOCATION='{name}/'")), "{s}");
        assert!(s.contains("CATALOG='fhir2parquet_delta'"), "{s}");
        assert!(s.contains("EXTERNAL_VOLUME='fhir2parquet_volume'"), "{s}");
    }
    assert!(
        !text.contains("COPY INTO") && !text.contains("STAGE"),
        "{text}"
    );
    assert!(
        snowflake
            .notes
            .iter()
            .any(|n| n.contains("s3://bucket/fhir/")),
        "{:?}",
        snowflake.notes
    );

    // BigQuery: BigLake tables of format DELTA_LAKE through the connection, named or default
    // (no local parser knows BigQuery's WITH CONNECTION: the text is the documented form).
    for (connection, location, id) in [
        (None, "us", "fhir2parquet"),
        (Some("p.eu.lake"), "eu", "lake"),
    ] {
        let opts = Options {
            connection: connection.map(str::to_string),
            ..Options::default()
        };
        let script = sql(Engine::Bigquery, &opts);
        let text = script.sql();
        let named = connection.unwrap_or(fhir2parquet::warehouse::DEFAULT_BIGQUERY_CONNECTION);
        for name in &names {
            let want = format!(
                "CREATE OR REPLACE EXTERNAL TABLE `fhir.{name}`\nWITH CONNECTION `{named}`\n\
                 OPTIONS (\n  format = 'DELTA_LAKE',\n  uris = ['s3://bucket/fhir/{name}']\n)"
            );
            assert!(text.contains(&want), "{text}");
        }
        let note = format!("--location={location} --connection_type=CLOUD_RESOURCE {id}`");
        assert!(
            script.notes.iter().any(|n| n.contains(&note)),
            "{:?}",
            script.notes
        );
    }

    // BigQuery --load: the current version's files, each named; not the older version's.
    let opts = Options {
        load: true,
        ..Options::default()
    };
    let text = sql(Engine::Bigquery, &opts).sql();
    let statement = text
        .split(";\n\n")
        .find(|s| s.contains("LOAD DATA OVERWRITE `fhir.Observation`"))
        .unwrap();
    let uris = statement
        .split("uris = [")
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap();
    let named: std::collections::BTreeSet<String> = uris
        .split(", ")
        .map(|u| u.trim_matches('\'').to_string())
        .collect();
    let want: std::collections::BTreeSet<String> = current
        .iter()
        .map(|f| format!("s3://bucket/fhir/Observation/{f}"))
        .collect();
    assert_eq!(named, want);

    // Snowflake from the local folder: the current version's files put into the stage.
    let local_tables = fhir2parquet::dataset::tables(&local).unwrap();
    let text = generate(Engine::Snowflake, &local_tables, &Options::default())
        .unwrap()
        .sql();
    let root = out.canonicalize().unwrap().join("Observation");
    let put: std::collections::BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("PUT 'file://"))
        .filter_map(|l| l.split('\'').next())
        .filter_map(|p| {
            let p = Path::new(p).canonicalize().unwrap();
            p.strip_prefix(&root)
                .ok()
                .map(|r| r.to_string_lossy().into_owned())
        })
        .collect();
    assert_eq!(put, current);

    // Plain folders: the Parquet statements.
    let plain = tmp.path().join("plain");
    convert_as(&plain, true, "all", "parquet");
    let mut plain_tables =
        fhir2parquet::dataset::tables(&fhir2parquet::store::Location::Local(plain)).unwrap();
    for t in &mut plain_tables {
        t.url = format!("s3://bucket/fhir/{}/", t.name);
    }
    let gen = |e| {
        generate(e, &plain_tables, &Options::default())
            .unwrap()
            .sql()
    };
    assert!(gen(Engine::Athena).contains("STORED AS PARQUET"));
    assert!(gen(Engine::Databricks).contains("USING PARQUET"));
    assert!(gen(Engine::Bigquery).contains("format = 'PARQUET'"));
    assert!(!gen(Engine::Bigquery).contains("WITH CONNECTION"));
    assert!(gen(Engine::Snowflake).contains("COPY INTO"));
}

/// Every resource type, as tables on a store.
fn all_tables(base: &str) -> Vec<Table> {
    fhir2parquet::schema::FhirVersion::R4
        .model()
        .resource_types()
        .into_iter()
        .map(|name| Table {
            name: name.to_string(),
            url: format!("{base}/{name}/"),
            partitions: if name == "Observation" {
                vec!["effective_year".into()]
            } else {
                vec![]
            },
            files: vec![],
            delta: None,
            fhir_version: fhir2parquet::schema::FhirVersion::R4,
        })
        .collect()
}

/// BigQuery's documented rules for Parquet: with list inference a list is a REPEATED field;
/// DECIMAL(38,18) needs BIGNUMERIC (NUMERIC keeps 9 digits after the point); a timestamp
/// adjusted to UTC is TIMESTAMP; names are letters, digits and underscores, not starting with
/// a digit, at most 300 characters; at most 15 levels of RECORD.
#[test]
fn bigquery_schemas_follow_its_parquet_rules() {
    let tables = all_tables("gs://bucket/fhir");
    let script = generate(Engine::Bigquery, &tables, &Options::default()).unwrap();
    assert_eq!(script.schemas.len(), tables.len());
    fn walk(f: &serde_json::Value, depth: usize, max: &mut usize) {
        let name = f["name"].as_str().unwrap();
        assert!(name.len() <= 300);
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{name}"
        );
        assert!(!name.starts_with(|c: char| c.is_ascii_digit()), "{name}");
        let ty = f["type"].as_str().unwrap();
        assert!(
            [
                "STRING",
                "BOOLEAN",
                "INTEGER",
                "FLOAT",
                "BIGNUMERIC",
                "TIMESTAMP",
                "BYTES",
                "RECORD"
            ]
            .contains(&ty),
            "{name}: {ty}"
        );
        assert!(["NULLABLE", "REPEATED"].contains(&f["mode"].as_str().unwrap()));
        if ty == "RECORD" {
            *max = (*max).max(depth + 1);
            for c in f["fields"].as_array().unwrap() {
                walk(c, depth + 1, max);
            }
        }
    }
    let mut deepest = 0;
    for (name, schema) in &script.schemas {
        let mut max = 0;
        for f in schema.as_array().unwrap() {
            walk(f, 0, &mut max);
        }
        let noted = script
            .notes
            .iter()
            .any(|n| n.contains(&format!(" {name} nests")));
        assert_eq!(
            noted,
            max > types::BIGQUERY_MAX_DEPTH,
            "{name}: {max} levels"
        );
        deepest = deepest.max(max);
    }
    assert!(deepest > 3);
    // The value types of Observation, and its partition column.
    let obs = &script
        .schemas
        .iter()
        .find(|(n, _)| n == "Observation")
        .unwrap()
        .1;
    let field = |n: &str| {
        obs.as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == n)
            .unwrap()
    };
    assert_eq!(field("issued")["type"], "TIMESTAMP");
    let quantity = field("valueQuantity")["fields"].as_array().unwrap().clone();
    let value = quantity.iter().find(|f| f["name"] == "value").unwrap();
    assert_eq!(value["type"], "BIGNUMERIC");
    assert_eq!(field("category")["mode"], "REPEATED");
    assert_eq!(field("effective_year")["type"], "STRING");
    assert_eq!(field("valueTime_ts")["type"], "INTEGER");
    let sql = script.sql();
    assert!(sql.contains("CREATE OR REPLACE EXTERNAL TABLE `fhir.Observation`"));
    assert!(sql.contains("WITH PARTITION COLUMNS (`effective_year` STRING)"));
    assert!(sql.contains("hive_partition_uri_prefix = 'gs://bucket/fhir/Observation'"));
    assert!(sql.contains("uris = ['gs://bucket/fhir/Patient/*']"));
    assert_eq!(
        sql.matches("enable_list_inference = true").count(),
        tables.len()
    );
    let load = generate(
        Engine::Bigquery,
        &tables,
        &Options {
            load: true,
            ..Default::default()
        },
    );
    assert!(load
        .unwrap()
        .sql()
        .contains("LOAD DATA OVERWRITE `fhir.Patient`"));
}

#[test]
fn bigquery_schema_files_are_written() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    convert(&out, false);
    let dir = tmp.path().join("schemas");
    let o = bin(&[
        "warehouse",
        "bigquery",
        out.to_str().unwrap(),
        "--schema",
        "analytics",
        "--schema-json",
        dir.to_str().unwrap(),
    ]);
    let sql = ok(&o);
    assert!(sql.contains("`analytics.Observation`"));
    let schema: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("Observation.json")).unwrap()).unwrap();
    assert_eq!(schema[0]["name"], "id");
}

/// Athena: every name backquoted (names may start with `_`), no statement or column type beyond
/// its limits for any resource type.
#[test]
fn athena_statements_stay_within_its_limits() {
    let tables = all_tables("s3://bucket/fhir");
    let script = generate(Engine::Athena, &tables, &Options::default()).unwrap();
    for s in &script.statements {
        assert!(
            s.len() <= fhir2parquet::warehouse::ATHENA_MAX_DDL_BYTES,
            "{}",
            &s[..80]
        );
    }
    let sql = script.sql();
    assert!(sql.contains("  `_id` STRUCT<`id`:STRING,"));
    assert!(sql.contains("PARTITIONED BY (`effective_year` STRING)"));
    assert!(sql.contains("MSCK REPAIR TABLE `Observation`"));
    for note in &script.notes {
        eprintln!("{note}");
    }
}
