//! ViewDefinitions compiled to the SQL of other engines (`view --sql`), run the way a user would:
//! the official suite's resources → `convert` → tables in the engine over the Parquet → the
//! compiled statement run by the engine (DuckDB and Spark SQL, both real, from PyPI) → rows
//! compared as the reference runner compares them. A report per dialect is written to
//! `target/sql-on-fhir/test_report_<dialect>.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use fhir2parquet::view::lower::{to_sql, Dialect, SqlOptions};
use fhir2parquet::view::ViewDefinition;
use serde_json::{json, Value};

use crate::view::{canonical, check_rows, current_expectation, rounded, suite_files, SUPERSEDED};
use crate::{python_has, shared};

/// Cases a dialect does not pass yet, with why (also in the dialect matrix of docs/views.md).
const NOT_YET: &[(Dialect, &str, &str)] = &[];

/// One case of the suite: its id, the case (with the current expectation where superseded) and
/// the dataset its resources were converted to.
struct Case {
    id: String,
    case: Value,
    dataset: PathBuf,
}

fn suite(tmp: &Path) -> Vec<Case> {
    let mut out = Vec::new();
    for file in suite_files(tmp) {
        for case in file.suite["tests"].as_array().unwrap() {
            let id = format!("{}/{}", file.name, case["title"].as_str().unwrap());
            let case = if SUPERSEDED.iter().any(|s| s.0 == id) {
                current_expectation(case)
            } else {
                case.clone()
            };
            out.push(Case {
                id,
                case,
                dataset: file.dataset.clone(),
            });
        }
    }
    out
}

/// The tables of `dataset` as a user of the engine makes them: DuckDB, the statements of
/// `fhir2parquet warehouse duckdb` (views that read every file by name and cast each column to
/// its full type); Spark, each folder read with the table's full schema (the column list
/// `warehouse databricks` creates the table with). A file holds the columns that have values;
/// the tables have every column of the typed schema.
fn setup(dataset: &str, dialect: Dialect, engine: Engine) -> Value {
    let location = fhir2parquet::store::Location::Local(PathBuf::from(dataset));
    let mut tables = fhir2parquet::dataset::tables(&location).unwrap();
    if engine == Engine::Duckdb2 {
        // No delta extension for 2.x yet: the current version's files, read by name.
        for t in &mut tables {
            t.delta = None;
        }
    }
    match dialect {
        Dialect::Duckdb => {
            let script = fhir2parquet::warehouse::generate(
                fhir2parquet::warehouse::Engine::Duckdb,
                &tables,
                &Default::default(),
            )
            .unwrap();
            json!(script.statements)
        }
        _ => {
            let schemas: Vec<Value> = tables
                .iter()
                .map(|t| {
                    let schema = fhir2parquet::schema::node::arrow_schema(
                        fhir2parquet::schema::FhirVersion::R4,
                        &t.name,
                    )
                    .unwrap();
                    let columns: Vec<String> = schema
                        .fields()
                        .iter()
                        .map(|f| {
                            let hive = fhir2parquet::warehouse::types::hive(f.data_type());
                            let name = fhir2parquet::warehouse::types::backquote(f.name());
                            format!("{name} {hive}")
                        })
                        .collect();
                    json!([t.name, columns.join(", ")])
                })
                .collect();
            json!(schemas)
        }
    }
}

/// The engines here that run compiled SQL: DuckDB 1.4 and 2.x, and (`spark`) Spark SQL. In
/// CI all of them (see [`crate::present`]).
fn engines(spark: bool) -> Vec<Engine> {
    let mut out = Vec::new();
    if python_has(
        "duckdb, duckdb_ext",
        "duckdb==1.4.4 duckdb-ext-delta==1.4.4.20260205",
    ) {
        out.push(Engine::Duckdb);
    }
    if crate::duckdb2() {
        out.push(Engine::Duckdb2);
    }
    if spark
        && python_has("pyspark", "pyspark")
        && crate::cloud::installed("java", "a Java runtime (apt install default-jre-headless)")
    {
        out.push(Engine::Spark);
    }
    out
}

/// Gives the first job of each dataset the statements that make its tables ([`setup`]).
fn with_setup(jobs: &mut [Value], dialect: Dialect, engine: Engine) {
    let mut seen = std::collections::BTreeSet::new();
    for job in jobs {
        let dataset = job["dataset"].as_str().unwrap().to_string();
        if seen.insert(dataset.clone()) {
            job["setup"] = setup(&dataset, dialect, engine);
        }
    }
}

/// The engine a dialect's SQL runs in: DuckDB 1.4 LTS (the Python package CI installs),
/// the current DuckDB 2.x (from [`crate::DUCKDB2`]), Spark.
#[derive(Clone, Copy, PartialEq)]
enum Engine {
    Duckdb,
    Duckdb2,
    Spark,
}

impl Engine {
    fn name(self) -> &'static str {
        match self {
            Engine::Duckdb => "duckdb",
            Engine::Duckdb2 => "duckdb2",
            Engine::Spark => "spark",
        }
    }

    fn dialect(self) -> Dialect {
        match self {
            Engine::Duckdb | Engine::Duckdb2 => Dialect::Duckdb,
            Engine::Spark => Dialect::Spark,
        }
    }
}

/// Runs a script of `tests/view_sql` on `jobs` (written to `tmp/<tag>-jobs.json`); its results
/// by job id.
fn script(
    name: &str,
    engine: Option<Engine>,
    jobs: &[Value],
    tmp: &Path,
    tag: &str,
) -> BTreeMap<String, Value> {
    let jobs_path = tmp.join(format!("{tag}-jobs.json"));
    let results_path = tmp.join(format!("{tag}-results.json"));
    std::fs::write(&jobs_path, serde_json::to_vec(jobs).unwrap()).unwrap();
    let mut c = Command::new("python3");
    if engine == Some(Engine::Duckdb2) {
        c.env("PYTHONPATH", crate::DUCKDB2);
    }
    let o = c
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/view_sql")
                .join(name),
        )
        .args(engine.map(|e| e.dialect().name()))
        .arg(&jobs_path)
        .arg(&results_path)
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{name} {tag}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&std::fs::read(&results_path).unwrap()).unwrap()
}

/// Whether the engine's outcome is what the case expects.
fn judge(case: &Value, outcome: &Value) -> Result<(), String> {
    let expect_error = case.get("expectError").and_then(Value::as_bool) == Some(true);
    let rows = match (outcome.get("rows"), outcome.get("error")) {
        (_, Some(_)) if expect_error => return Ok(()),
        (_, Some(e)) => return Err(format!("engine: {}", e.as_str().unwrap_or_default())),
        (Some(_), _) if expect_error => return Err("expected an error, the view ran".into()),
        (Some(r), _) => r.as_array().unwrap().clone(),
        _ => return Err("no outcome".into()),
    };
    check_rows(case, &rows)
}

/// Compiles every case for `dialect`, runs them in `engine`, and checks the outcomes against
/// [`NOT_YET`].
fn run(engine: Engine, cases: &[Case], tmp: &Path) -> Vec<String> {
    let dialect = engine.dialect();
    let mut outcomes: BTreeMap<String, Result<(), String>> = BTreeMap::new();
    let mut jobs = Vec::new();
    for c in cases {
        let expect_error = c.case.get("expectError").and_then(Value::as_bool) == Some(true);
        let sql = ViewDefinition::from_json(&c.case["view"])
            .and_then(|v| to_sql(&v, &SqlOptions::new(dialect)));
        match sql {
            Ok(sql) => jobs.push(json!({"id": c.id, "dataset": c.dataset, "sql": sql})),
            Err(_) if expect_error => {
                outcomes.insert(c.id.clone(), Ok(()));
            }
            Err(e) => {
                outcomes.insert(c.id.clone(), Err(format!("compile: {e:#}")));
            }
        }
    }
    with_setup(&mut jobs, dialect, engine);
    let results = script("run.py", Some(engine), &jobs, tmp, engine.name());
    for c in cases {
        if let Some(r) = results.get(&c.id) {
            outcomes.insert(c.id.clone(), judge(&c.case, r));
        }
    }
    // The report, in the official format, one per dialect.
    let mut report: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for c in cases {
        let (file, title) = c.id.split_once('/').unwrap();
        let result = match &outcomes[&c.id] {
            Ok(()) => json!({"passed": true}),
            Err(e) => json!({"passed": false, "reason": e}),
        };
        report
            .entry(file.to_string())
            .or_default()
            .push(json!({"name": title, "result": result}));
    }
    let report: serde_json::Map<String, Value> = report
        .into_iter()
        .map(|(f, tests)| (f, json!({ "tests": tests })))
        .collect();
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "target/sql-on-fhir/test_report_{}.json",
        engine.name()
    ));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();

    let known = |id: &str| NOT_YET.iter().any(|(d, k, _)| *d == dialect && *k == id);
    let mut problems: Vec<String> = outcomes
        .iter()
        .filter(|(id, r)| r.is_err() && !known(id))
        .map(|(id, r)| format!("- {} {id}: {}", engine.name(), r.as_ref().unwrap_err()))
        .collect();
    for (_, id, _) in NOT_YET.iter().filter(|k| k.0 == dialect) {
        if outcomes[*id].is_ok() {
            problems.push(format!(
                "- {} {id} passes now: take it off NOT_YET and docs/views.md",
                dialect.name()
            ));
        }
    }
    let passed = outcomes.values().filter(|r| r.is_ok()).count();
    eprintln!("{}: {passed} of {} cases pass", engine.name(), cases.len());
    problems
}

/// Compiles every case for a dialect with no engine here and parses the statements with
/// sqlglot in that dialect.
fn parse(dialect: Dialect, cases: &[Case], tmp: &Path) -> Vec<String> {
    let mut problems = Vec::new();
    let mut jobs = Vec::new();
    for c in cases {
        let expect_error = c.case.get("expectError").and_then(Value::as_bool) == Some(true);
        match ViewDefinition::from_json(&c.case["view"])
            .and_then(|v| to_sql(&v, &SqlOptions::new(dialect)))
        {
            Ok(sql) => jobs.push(json!({"id": c.id, "dialect": dialect.name(), "sql": sql})),
            Err(_) if expect_error => {}
            Err(e) => problems.push(format!("- {} {}: compile: {e:#}", dialect.name(), c.id)),
        }
    }
    let tag = format!("{}-parse", dialect.name());
    let results = script("parse.py", None, &jobs, tmp, &tag);
    for (id, r) in &results {
        if let Some(e) = r.as_str() {
            problems.push(format!("- {} {id}: sqlglot: {e}", dialect.name()));
        }
    }
    eprintln!(
        "{}: {} of {} compiled statements parse",
        dialect.name(),
        results.values().filter(|r| r.is_null()).count(),
        results.len()
    );
    problems
}

#[test]
fn the_official_suite_compiled_to_bigquery_trino_and_snowflake_sql_parses() {
    if !python_has("sqlglot", "sqlglot") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut cases = suite(tmp.path());
    // And the FHIRPath functions beyond the suite.
    cases.push(Case {
        id: "functions/patient".into(),
        case: json!({"view": functions_view()}),
        dataset: tmp.path().to_path_buf(),
    });
    let mut problems = Vec::new();
    for d in [Dialect::Bigquery, Dialect::Trino, Dialect::Snowflake] {
        problems.extend(parse(d, &cases, tmp.path()));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_official_suite_compiled_to_duckdb_1_4_and_2_and_spark_sql() {
    let engines = engines(true);
    if engines.is_empty() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cases = suite(tmp.path());
    assert_eq!(cases.len(), 134);
    let mut problems = Vec::new();
    for engine in engines {
        problems.extend(run(engine, &cases, tmp.path()));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The example views over Synthea, as a user would: `view --sql duckdb` printed by the binary,
/// run by DuckDB over the converted data, rows equal to `fhir2parquet view`'s.
#[test]
fn example_views_compiled_for_duckdb_give_the_rows_of_view() {
    if !python_has(
        "duckdb, duckdb_ext",
        "duckdb==1.4.4 duckdb-ext-delta==1.4.4.20260205",
    ) {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = crate::convert_quiet(&shared("fhir-data/synthea-r4-small"), &out);
    assert!(o.status.success());
    let views = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/views");
    let mut jobs = Vec::new();
    let mut want = BTreeMap::new();
    for name in ["patient_demographics", "observations", "condition_codes"] {
        let file = views.join(format!("{name}.json"));
        let file = file.to_str().unwrap();
        let o = crate::bin(&["view", file, "--sql", "duckdb"]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(text.starts_with(&format!("-- {name}\n")), "{text}");
        let sql = text
            .lines()
            .filter(|l| !l.starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        let sql = sql.trim().trim_end_matches(';').to_string();
        jobs.push(json!({"id": name, "dataset": out, "sql": sql}));
        let o = crate::bin(&[
            "view",
            file,
            "--data",
            out.to_str().unwrap(),
            "--format",
            "ndjson",
        ]);
        assert!(o.status.success());
        let rows: Vec<Value> = String::from_utf8(o.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(!rows.is_empty());
        want.insert(name.to_string(), rows);
    }
    for engine in engines(false) {
        let mut jobs = jobs.clone();
        with_setup(&mut jobs, Dialect::Duckdb, engine);
        let tag = format!("examples-{}", engine.name());
        let results = script("run.py", Some(engine), &jobs, tmp.path(), &tag);
        for (name, rows) in &want {
            let got = results[name]["rows"]
                .as_array()
                .unwrap_or_else(|| panic!("{name}: {}", results[name]));
            assert_eq!(got.len(), rows.len(), "{name} on {}", engine.name());
            // Decimals by value, to 12 significant digits (see `rounded`).
            let round = |rows: &[Value]| -> Vec<String> {
                let r: Vec<Value> = rows.iter().map(rounded).collect();
                canonical(&r)
            };
            assert_eq!(round(got), round(rows), "{name} on {}", engine.name());
        }
    }

    // A folder: one CREATE VIEW per view, named after each; a view that reads past the typed
    // columns stops the run, naming the file, the place and the dialect.
    let o = crate::bin(&[
        "view",
        views.to_str().unwrap(),
        "--sql",
        "spark",
        "--create-view",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("patient_geolocation.json")
            && err.contains("select[1].column[1].path")
            && err.contains("spark SQL"),
        "{err}"
    );
    let o = crate::bin(&[
        "view",
        views.join("observations.json").to_str().unwrap(),
        "--sql",
        "trino",
        "--create-view",
        "analytics.obs",
        "--table",
        "Observation=fhir.observation",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = String::from_utf8(o.stdout).unwrap();
    assert!(
        text.contains("CREATE OR REPLACE VIEW \"analytics\".\"obs\" AS"),
        "{text}"
    );
    assert!(
        text.contains("FROM \"fhir\".\"observation\" AS r"),
        "{text}"
    );
    let o = crate::bin(&["view", "x.json", "--sql", "trino", "--table", "Patient"]);
    assert!(!o.status.success());
    let o = crate::bin(&[
        "view",
        views.join("observations.json").to_str().unwrap(),
        "--sql",
        "trino",
        "--table",
        "Patient",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("give TYPE=NAME"));
}

/// FHIRPath beyond the SQL on FHIR suite (string functions, `take`/`skip`/`tail`, `distinct`,
/// union and `combine`, `iif`, `in`/`contains`, `is`, collection equality, dates to the
/// precision both have): compiled for DuckDB (1.4 and 2.x) and Spark SQL, run by them over the
/// Synthea sample, the same rows as `fhirpath view`.
#[test]
fn fhirpath_functions_compiled_give_the_rows_of_view() {
    let view = functions_view();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = crate::convert_quiet(&shared("fhir-data/synthea-r4-small"), &out);
    assert!(o.status.success());
    let shell = fhir2parquet::sql::Shell::open(&out, None).unwrap();
    let v = ViewDefinition::from_json(&view).unwrap();
    let want = crate::view::batches_to_rows(&fhir2parquet::view::batches(&shell, &v).unwrap());
    assert!(!want.is_empty());
    let round = |rows: &[Value]| -> Vec<String> {
        let r: Vec<Value> = rows.iter().map(rounded).collect();
        canonical(&r)
    };
    for engine in engines(true) {
        let sql = to_sql(&v, &SqlOptions::new(engine.dialect())).unwrap();
        let mut jobs = vec![json!({"id": "v", "dataset": out, "sql": sql})];
        with_setup(&mut jobs, engine.dialect(), engine);
        let tag = format!("functions-{}", engine.name());
        let results = script("run.py", Some(engine), &jobs, tmp.path(), &tag);
        let got = results["v"]["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: {}", engine.name(), results["v"]));
        assert_eq!(round(got), round(&want), "{}", engine.name());
    }
}

/// A Patient view of FHIRPath beyond the SQL on FHIR suite (see
/// `fhirpath_functions_compiled_give_the_rows_of_view`).
fn functions_view() -> Value {
    let paths = [
        "name.given.first().startsWith('J')",
        "name.family.first().endsWith('n')",
        "gender.upper()",
        "gender.length()",
        "name.family.first().indexOf('a')",
        "name.family.first().substring(1, 2)",
        "name.family.first().substring(2)",
        "gender.replace('male', 'M')",
        "id.matches('^[0-9a-f-]+$')",
        "gender.replaceMatches('(m)ale', '$1!')",
        "name.given.take(1)",
        "name.given.skip(1)",
        "name.given.tail()",
        "(name.given | name.given).count()",
        "name.given.combine(name.given).count()",
        "name.given.distinct().count()",
        "iif(gender = 'male', 'M', 'F')",
        "'male' in gender",
        "name.given contains 'John'",
        "gender is code",
        "name.given = name.given",
        "birthDate > @1970",
        "birthDate < @1990-06",
        "gender ~ 'MALE'",
        "name.select(given.first())",
        "name.all(family.exists())",
        "name.given.exclude(name.given.first())",
        "name.given.intersect(name.given.first() | 'x')",
        "name.given.first().subsetOf(name.given)",
        "name.given.supersetOf(name.given.first())",
        "id.matchesFull('[0-9a-f-]+')",
        "name.given.trace('given').count()",
        "(0 - name.given.count()).abs()",
        "(name.given.count() / -3).abs()",
        "name.given.count().ceiling()",
        "(name.given.count() / 3).floor()",
        "(name.given.count() / 3).truncate()",
        "(name.given.count() / 3).round()",
        "name.given.count().sqrt().round(3) = name.given.count().sqrt().round(3)",
        "name.select(given.exists()).allTrue()",
        "name.select(family.exists()).anyFalse()",
        "name.given.first().hasValue()",
        "(name.family.first() + ',a,,b').split(',')",
        "birthDate < today()",
        "name = name",
        "name.first() = name.last()",
        "name.given.sort()",
        "name.given.sort(-$this)",
    ];
    let columns: Vec<Value> = std::iter::once(json!({"name": "id", "path": "id"}))
        .chain(
            paths
                .iter()
                .enumerate()
                .map(|(i, p)| json!({"name": format!("c{i}"), "path": p, "collection": true})),
        )
        .collect();
    json!({"resourceType": "ViewDefinition", "resource": "Patient", "status": "active",
                      "select": [{"column": columns}]})
}

/// The expressions generated for the differential test against fhirpath.js
/// (`fhirpath_oracle.rs`) over the Synthea sample, compiled to DuckDB (1.4 and 2.x) and Spark
/// SQL and run there: every value the engine gives is the one `view` gives (whose answers agree
/// with fhirpath.js). Expressions a dialect refuses (see docs/views.md) are left out, and
/// counted.
#[test]
fn generated_fhirpath_compiled_to_duckdb_and_spark_gives_the_answers_of_view() {
    let engines = engines(true);
    if engines.is_empty() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = shared("fhir-data/synthea-r4-small");
    let out = tmp.path().join("out");
    assert!(crate::convert_quiet(&src, &out).status.success());
    let shell = fhir2parquet::sql::Shell::open(&out, None).unwrap();
    let mut failures = Vec::new();
    for dialect in [Dialect::Duckdb, Dialect::Spark] {
        let engines: Vec<Engine> = engines
            .iter()
            .copied()
            .filter(|e| e.dialect() == dialect)
            .collect();
        if engines.is_empty() {
            continue;
        }
        let corpus = compiled_corpus(&shell, &src, &out, dialect);
        for engine in engines {
            failures.extend(run_corpus(engine, &corpus, tmp.path()));
        }
    }
    assert!(
        failures.is_empty(),
        "{}",
        failures[..failures.len().min(20)].join("\n")
    );
}

/// The generated expressions of each resource type compiled for one dialect: the statements,
/// the rows `view` gives, the expressions of each column, and how many the dialect refused.
struct Corpus {
    jobs: Vec<Value>,
    want: BTreeMap<String, Vec<Value>>,
    names: BTreeMap<String, Vec<String>>,
    columns: usize,
    refused: usize,
    dialect: Dialect,
}

fn compiled_corpus(
    shell: &fhir2parquet::sql::Shell,
    src: &Path,
    out: &Path,
    dialect: Dialect,
) -> Corpus {
    let options = SqlOptions::new(dialect);
    let mut c = Corpus {
        jobs: Vec::new(),
        want: BTreeMap::new(),
        names: BTreeMap::new(),
        columns: 0,
        refused: 0,
        dialect,
    };
    for file in crate::ndjson_files(src) {
        let resources: Vec<Value> = crate::read_lines(&file)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let t = resources[0]["resourceType"].as_str().unwrap().to_string();
        let view_of = |exprs: &[&String]| {
            let mut cols = vec![json!({"name": "id", "path": "id"})];
            cols.extend(
                exprs
                    .iter()
                    .enumerate()
                    .map(|(i, e)| json!({"name": format!("c{i}"), "path": e, "collection": true})),
            );
            ViewDefinition::from_json(&json!({"resourceType": "ViewDefinition",
                "resource": t, "status": "active", "select": [{"column": cols}]}))
            .unwrap()
        };
        // What both the view and the dialect take.
        let exprs = crate::fhirpath_oracle::expressions(&t, &resources);
        let kept: Vec<&String> = exprs
            .iter()
            .filter(|e| {
                let v = view_of(&[*e]);
                let ok =
                    fhir2parquet::view::frame(shell, &v).is_ok() && to_sql(&v, &options).is_ok();
                if !ok {
                    c.refused += 1;
                }
                ok
            })
            .collect();
        c.columns += kept.len();
        let v = view_of(&kept);
        let rows = crate::view::batches_to_rows(&fhir2parquet::view::batches(shell, &v).unwrap());
        c.want.insert(t.clone(), rows);
        c.names
            .insert(t.clone(), kept.iter().map(|e| e.to_string()).collect());
        c.jobs
            .push(json!({"id": t, "dataset": out, "sql": to_sql(&v, &options).unwrap()}));
    }
    c
}

/// Runs a compiled corpus in `engine`: the values that differ from `view`'s.
fn run_corpus(engine: Engine, c: &Corpus, tmp: &Path) -> Vec<String> {
    let mut jobs = c.jobs.clone();
    with_setup(&mut jobs, c.dialect, engine);
    let tag = format!("generated-{}", engine.name());
    let results = script("run.py", Some(engine), &jobs, tmp, &tag);
    let (mut cells, mut differ) = (0, Vec::new());
    for (t, rows) in &c.want {
        let got = results[t]["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("{} {t}: {}", engine.name(), results[t]));
        assert_eq!(got.len(), rows.len(), "{} {t}", engine.name());
        let by_id: BTreeMap<&str, &Value> =
            got.iter().map(|r| (r["id"].as_str().unwrap(), r)).collect();
        for w in rows {
            let g = by_id[w["id"].as_str().unwrap()];
            for (k, v) in w.as_object().unwrap() {
                cells += 1;
                // An empty list and NULL are both an empty collection.
                let empty = |x: &Value| x.is_null() || x.as_array().is_some_and(Vec::is_empty);
                if !(crate::fhirpath_oracle::same(&g[k], v) || (empty(&g[k]) && empty(v))) {
                    let expr = k
                        .strip_prefix('c')
                        .and_then(|i| i.parse::<usize>().ok())
                        .map_or(k.as_str(), |i| c.names[t][i].as_str());
                    differ.push(format!(
                        "{t} {}: {expr}: {} gives {}, view {v}",
                        w["id"],
                        engine.name(),
                        g[k]
                    ));
                }
            }
        }
    }
    eprintln!(
        "{}: {cells} values of {} generated columns, {} differ from view ({} refused by the dialect)",
        engine.name(),
        c.columns,
        differ.len(),
        c.refused
    );
    differ
}

/// Decimal arithmetic as views compile it: `*`, `/`, `div` and `mod` of Observation values
/// (negated too) by integers, decimals and themselves give the exact result rounded to 18 places
/// in `view` and in DuckDB (1.4, 2.x) and Spark, each value compared as text with Python's
/// decimal module over the NDJSON (`tests/view_sql/decimals.py`).
#[test]
fn decimal_arithmetic_compiled_is_exact_in_every_engine() {
    use arrow::util::display::array_value_to_string;
    let cases: Vec<(bool, &str, &str)> = vec![
        (false, "*", "2"),
        (false, "*", "1.1"),
        (true, "*", "0.37"),
        (false, "*", "-3.333333333333333333"),
        (false, "*", "self"),
        (false, "/", "3"),
        (true, "/", "7"),
        (false, "/", "0.7"),
        (false, "/", "self"),
        (false, "/", "0"),
        (false, "div", "2"),
        (true, "div", "2"),
        (false, "div", "0.7"),
        (false, "mod", "0.7"),
        (true, "mod", "3"),
    ];
    let value = "value.ofType(Quantity).value";
    let literal = |x: &str| match x {
        "self" => value.to_string(),
        x if x.starts_with('-') => format!("(0 - {})", &x[1..]),
        x => x.to_string(),
    };
    let mut columns = vec![json!({"name": "id", "path": "id"})];
    for (i, (negate, op, operand)) in cases.iter().enumerate() {
        let lhs = match negate {
            true => format!("(0 - {value})"),
            false => value.to_string(),
        };
        columns.push(
            json!({"name": format!("c{i}"), "path": format!("{lhs} {op} {}", literal(operand))}),
        );
    }
    let view = ViewDefinition::from_json(&json!({"resourceType": "ViewDefinition",
        "resource": "Observation", "status": "active",
        "where": [{"path": format!("{value}.exists()")}],
        "select": [{"column": columns}]}))
    .unwrap();

    let tmp = tempfile::tempdir().unwrap();
    let src = shared("fhir-data/synthea-r4-small");
    let cases_path = tmp.path().join("cases.json");
    std::fs::write(&cases_path, serde_json::to_vec(&cases).unwrap()).unwrap();
    let o = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/view_sql/decimals.py"
        ))
        .arg(&src)
        .arg(&cases_path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let want: BTreeMap<String, Vec<Option<String>>> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        want.len() > 1000,
        "{} Observations with a value",
        want.len()
    );

    // A decimal's text without the zeros past its last digit.
    fn norm(s: &str) -> String {
        let s = match s.contains('.') {
            true => s.trim_end_matches('0').trim_end_matches('.'),
            false => s,
        };
        match s {
            "-0" | "" => "0".into(),
            s => s.into(),
        }
    }
    let compare = |who: &str, got: &BTreeMap<String, Vec<Option<String>>>| {
        assert_eq!(got.len(), want.len(), "{who}: rows");
        let mut differ = Vec::new();
        for (id, w) in &want {
            for (i, (w, g)) in w.iter().zip(&got[id]).enumerate() {
                if w.as_deref().map(norm) != g.as_deref().map(norm) {
                    let (negate, op, operand) = cases[i];
                    differ.push(format!(
                        "{who} {id}: {}{value} {op} {operand}: {g:?}, want {w:?}",
                        if negate { "-" } else { "" }
                    ));
                }
            }
        }
        assert!(
            differ.is_empty(),
            "{}",
            differ[..differ.len().min(20)].join("\n")
        );
    };

    let out = tmp.path().join("out");
    assert!(crate::convert_quiet(&src, &out).status.success());
    let shell = fhir2parquet::sql::Shell::open(&out, None).unwrap();
    let mut got = BTreeMap::new();
    for b in fhir2parquet::view::batches(&shell, &view).unwrap() {
        for r in 0..b.num_rows() {
            let id = array_value_to_string(b.column(0), r).unwrap();
            let values = (1..b.num_columns())
                .map(|c| {
                    let col = b.column(c);
                    (!col.is_null(r)).then(|| array_value_to_string(col, r).unwrap())
                })
                .collect();
            got.insert(id, values);
        }
    }
    compare("view", &got);

    for engine in engines(true) {
        let sql = to_sql(&view, &SqlOptions::new(engine.dialect())).unwrap();
        let mut jobs = vec![json!({"id": "v", "dataset": out, "sql": sql, "exact": true})];
        with_setup(&mut jobs, engine.dialect(), engine);
        let tag = format!("decimals-{}", engine.name());
        let results = script("run.py", Some(engine), &jobs, tmp.path(), &tag);
        let rows = results["v"]["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: {}", engine.name(), results["v"]));
        let got: BTreeMap<String, Vec<Option<String>>> = rows
            .iter()
            .map(|r| {
                let values = (0..cases.len())
                    .map(|i| r[format!("c{i}")].as_str().map(str::to_string))
                    .collect();
                (r["id"].as_str().unwrap().to_string(), values)
            })
            .collect();
        compare(engine.name(), &got);
    }
}

/// `getReferenceKey()` of a reference to a contained resource (`#o1`) is empty, in `view` and
/// in DuckDB, while `Organization/o1` gives `o1`: a contained resource has no key of its own.
#[test]
fn reference_keys_of_contained_resources_are_empty() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::write(
        input.join("Patient.ndjson"),
        concat!(
            r##"{"resourceType":"Patient","id":"p1","managingOrganization":{"reference":"#o1"},"contained":[{"resourceType":"Organization","id":"o1"}]}"##,
            "\n",
            r##"{"resourceType":"Patient","id":"p2","managingOrganization":{"reference":"Organization/o1"}}"##,
            "\n"
        ),
    )
    .unwrap();
    let out = tmp.path().join("out");
    assert!(crate::convert_quiet(&input, &out).status.success());
    let view = ViewDefinition::from_json(&json!({"resourceType": "ViewDefinition",
        "resource": "Patient", "status": "active", "select": [{"column": [
            {"name": "id", "path": "id"},
            {"name": "org", "path": "managingOrganization.getReferenceKey()"},
            {"name": "typed", "path": "managingOrganization.getReferenceKey(Organization)"}]}]}))
    .unwrap();
    let want = vec![
        json!({"id": "p1", "org": null, "typed": null}),
        json!({"id": "p2", "org": "o1", "typed": "o1"}),
    ];
    let shell = fhir2parquet::sql::Shell::open(&out, None).unwrap();
    let mut got =
        crate::view::batches_to_rows(&fhir2parquet::view::batches(&shell, &view).unwrap());
    got.sort_by_key(|r| r["id"].to_string());
    assert_eq!(got, want, "view");
    for engine in engines(true) {
        let sql = to_sql(&view, &SqlOptions::new(engine.dialect())).unwrap();
        let mut jobs = vec![json!({"id": "v", "dataset": out, "sql": sql})];
        with_setup(&mut jobs, engine.dialect(), engine);
        let results = script("run.py", Some(engine), &jobs, tmp.path(), engine.name());
        let mut got = results["v"]["rows"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: {}", engine.name(), results["v"]))
            .clone();
        got.sort_by_key(|r| r["id"].to_string());
        assert_eq!(got, want, "{}", engine.name());
    }
}
