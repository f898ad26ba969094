use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::{convert_opts, read_lines, shared};

#[test]
fn row_counts_equal_line_counts_for_both_synthea_sets() {
    for set in [
        "fhir-data/synthea-r4-small",
        "fhir-data/synthea-r4-10-patients",
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let record = fhir2parquet::convert::run(&[shared(set)], &convert_opts(tmp.path())).unwrap();
        let rows: BTreeMap<String, u64> = record
            .types
            .iter()
            .map(|(t, r)| (t.clone(), r.rows))
            .collect();
        assert_eq!(rows, crate::resources_per_type(&shared(set)), "{set}");
        assert_eq!(record.rejects.count, 0);
        // And the Parquet files hold those rows.
        let back = fhir2parquet::encode::to_ndjson(tmp.path(), &tmp.path().join("back")).unwrap();
        assert_eq!(back, rows, "{set}");
    }
}

/// Every spec example and every Synthea resource comes back equal (key order aside, numbers by
/// their exact text).
#[test]
fn round_trip_is_lossless() {
    use fhir2parquet::convert::Columns;
    for columns in [Columns::All, Columns::Present] {
        for set in [
            "fhir-data/r4-spec-examples",
            "fhir-data/synthea-r4-small",
            "fhir-data/synthea-r4-10-patients",
        ] {
            let tmp = tempfile::tempdir().unwrap();
            let out = tmp.path().join("out");
            let mut opts = convert_opts(&out);
            opts.write.columns = columns;
            let record = fhir2parquet::convert::run(&[shared(set)], &opts).unwrap();
            fhir2parquet::encode::to_ndjson(&out, &tmp.path().join("back")).unwrap();
            let total = crate::assert_same_resources(&shared(set), &tmp.path().join("back"));
            if set.contains("spec-examples") {
                assert_eq!(total, 5294);
                // The examples hold things the typed columns cannot: they were kept and counted.
                let kept: u64 = record.types.values().map(|r| r.overflow.values).sum();
                assert!(kept > 0);
            }
        }
    }
}

/// The bytes of NDJSON (uncompressed) in a folder of .ndjson and .ndjson.gz files.
fn ndjson_bytes(dir: &Path) -> u64 {
    crate::ndjson_files(dir)
        .iter()
        .map(|p| {
            read_lines(p)
                .iter()
                .map(|l| l.len() as u64 + 1)
                .sum::<u64>()
        })
        .sum()
}

/// `--columns present`: each file holds the columns with a value (and one per top-level
/// element), a part of the typed schema. Size guard for it: every shared set's Parquet is
/// smaller than its NDJSON, and the Synthea sets stay under a bound a little above what it
/// writes today.
#[test]
fn files_of_present_columns_are_small() {
    // (set, bound in bytes): 420,748 and 744,585 bytes measured 2026-11-27, plus ~5%.
    for (set, bound) in [
        ("synthea-r4-small", 442_000),
        ("synthea-r4-10-patients", 782_000),
        ("r4-spec-examples", u64::MAX),
    ] {
        let input = shared(&format!("fhir-data/{set}"));
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = convert_opts(tmp.path());
        opts.write.columns = fhir2parquet::convert::Columns::Present;
        let record = fhir2parquet::convert::run(std::slice::from_ref(&input), &opts).unwrap();
        let bytes = parquet_bytes(tmp.path());
        assert!(
            bytes <= bound,
            "{set}: {bytes} bytes of Parquet, bound {bound}"
        );
        let ndjson = ndjson_bytes(&input);
        assert!(
            bytes < ndjson,
            "{set}: {bytes} bytes of Parquet, {ndjson} of NDJSON"
        );
        for (t, rec) in &record.types {
            assert_eq!(rec.files, 1, "{set}: {t} is one file");
            // Fewer columns than the typed schema, and every top-level element.
            let meta = crate::parquet_metadata(&crate::first_file(&tmp.path().join(t)));
            let schema =
                fhir2parquet::schema::node::arrow_schema(fhir2parquet::schema::FhirVersion::R4, t)
                    .unwrap();
            let descr = meta.file_metadata().schema_descr();
            assert!(
                descr.num_columns()
                    < fhir2parquet::schema::node::leaf_count(&arrow::datatypes::DataType::Struct(
                        schema.fields().clone()
                    ))
            );
            assert_eq!(
                descr.root_schema().get_fields().len(),
                schema.fields().len(),
                "{t}"
            );
        }
    }
}

/// The Parquet schemas of the files of a table, as text.
fn file_schemas(table: &Path) -> std::collections::BTreeSet<String> {
    crate::files_under(table)
        .iter()
        .map(|f| crate::schema_text(crate::parquet_metadata(f).file_metadata()))
        .collect()
}

/// A row group with a value in a column its file left out starts a new file; every resource
/// comes back from the files, whatever part of the schema each holds, and at the end every
/// file of a type holds the same columns.
#[test]
fn a_column_appearing_later_starts_a_new_file_and_the_files_agree_at_the_end() {
    let set = shared("fhir-data/synthea-r4-10-patients");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut opts = convert_opts(&out);
    opts.write.columns = fhir2parquet::convert::Columns::Present;
    opts.write.row_group_rows = 100;
    opts.batch_rows = 100;
    let record = fhir2parquet::convert::run(std::slice::from_ref(&set), &opts).unwrap();
    let several: Vec<&String> = record
        .types
        .iter()
        .filter(|(_, r)| r.files > 1)
        .map(|(t, _)| t)
        .collect();
    assert!(!several.is_empty(), "no type took a second file");
    assert!(
        record.types.values().any(|r| r.files_widened > 0),
        "no file was widened"
    );
    let full = fhir2parquet::schema::node::arrow_schema(
        fhir2parquet::schema::FhirVersion::R4,
        "Observation",
    )
    .unwrap();
    let full = parquet::arrow::ArrowSchemaConverter::new()
        .convert(&full)
        .unwrap()
        .num_columns();
    for t in several {
        // The writer started a file with more columns when a column first had a value; at the
        // end the earlier files were widened to the same columns.
        let schemas = file_schemas(&out.join(t));
        assert_eq!(schemas.len(), 1, "{t}: the files hold different columns");
        if t == "Observation" {
            let first = crate::first_file(&out.join(t));
            let n = crate::parquet_metadata(&first)
                .file_metadata()
                .schema_descr()
                .num_columns();
            assert!(n < full / 2, "Observation files hold {n} of {full} columns");
        }
        let on_disk: u64 = crate::files_under(&out.join(t))
            .iter()
            .map(|p| std::fs::metadata(p).unwrap().len())
            .sum();
        assert_eq!(
            record.types[t].parquet_bytes, on_disk,
            "{t}: bytes recorded"
        );
    }
    fhir2parquet::encode::to_ndjson(&out, &tmp.path().join("back")).unwrap();
    crate::assert_same_resources(&set, &tmp.path().join("back"));
}

#[test]
fn an_appended_run_with_more_columns_widens_the_earlier_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let first = tmp.path().join("first.ndjson");
    let second = tmp.path().join("second.ndjson");
    std::fs::write(
        &first,
        r#"{"resourceType":"Observation","id":"a","status":"final","code":{"text":"x"}}"#,
    )
    .unwrap();
    std::fs::write(
        &second,
        concat!(
            r#"{"resourceType":"Observation","id":"b","status":"final","code":{"text":"y","#,
            r#""coding":[{"system":"s","code":"c"}]},"valueQuantity":{"value":1.5,"unit":"kg"}}"#
        ),
    )
    .unwrap();
    let mut opts = convert_opts(&out);
    opts.write.columns = fhir2parquet::convert::Columns::Present;
    // Plain folders: a Delta table's committed files are never rewritten (Delta readers give
    // NULL for the columns a file lacks; see delta.rs).
    opts.format = fhir2parquet::dataset::Format::Parquet;
    fhir2parquet::convert::run(std::slice::from_ref(&first), &opts).unwrap();
    let narrow = file_schemas(&out.join("Observation"));
    // What a widening killed midway leaves is not data, and the next run removes it.
    let leftover = out.join("Observation/.part-x.parquet.widening");
    std::fs::write(&leftover, b"PAR1").unwrap();
    opts.append = true;
    fhir2parquet::convert::run(std::slice::from_ref(&second), &opts).unwrap();
    let schemas = file_schemas(&out.join("Observation"));
    assert_eq!(
        schemas.len(),
        1,
        "the two runs' files hold different columns"
    );
    let schema = schemas.first().unwrap();
    assert!(
        !narrow.contains(schema),
        "the second run brought no columns"
    );
    assert!(
        schema.contains("coding") && schema.contains("unit"),
        "{schema}"
    );
    assert_eq!(
        std::fs::read_dir(out.join("Observation")).unwrap().count(),
        2
    );
    // A run with fewer columns than the files before it is widened itself.
    let third = tmp.path().join("third.ndjson");
    std::fs::write(
        &third,
        r#"{"resourceType":"Observation","id":"c","status":"final"}"#,
    )
    .unwrap();
    fhir2parquet::convert::run(std::slice::from_ref(&third), &opts).unwrap();
    assert_eq!(file_schemas(&out.join("Observation")).len(), 1);
    fhir2parquet::encode::to_ndjson(&out, &tmp.path().join("back")).unwrap();
    let back = std::fs::read_to_string(tmp.path().join("back/Observation.ndjson")).unwrap();
    let mut ids: Vec<&str> = back
        .lines()
        .map(|l| {
            if l.contains(r#""id":"a""#) {
                "a"
            } else if l.contains(r#""id":"b""#) {
                "b"
            } else {
                "c"
            }
        })
        .collect();
    ids.sort();
    assert_eq!(ids, ["a", "b", "c"]);
    assert!(
        back.contains(r#""coding":[{"system":"s","code":"c"}]"#),
        "{back}"
    );
}

#[test]
fn output_is_readable_parquet_with_metadata() {
    let tmp = tempfile::tempdir().unwrap();
    fhir2parquet::convert::run(
        &[shared("fhir-data/synthea-r4-small/Patient.ndjson")],
        &convert_opts(tmp.path()),
    )
    .unwrap();
    let metadata = crate::parquet_metadata(&crate::first_file(&tmp.path().join("Patient")));
    let meta = metadata.file_metadata();
    let kv: HashMap<_, _> = meta
        .key_value_metadata()
        .unwrap()
        .iter()
        .map(|k| (k.key.clone(), k.value.clone()))
        .collect();
    assert_eq!(kv["fhir.version"].as_deref(), Some("4.0.1"));
    assert_eq!(
        kv["fhir2parquet.schema_version"].as_deref(),
        Some(fhir2parquet::schema::SCHEMA_VERSION)
    );
    let patients = read_lines(&shared("fhir-data/synthea-r4-small/Patient.ndjson")).len();
    assert_eq!(meta.num_rows() as usize, patients);
    let chunk = |path: &str| {
        metadata
            .row_group(0)
            .columns()
            .iter()
            .find(|c| c.column_path().string() == path)
            .unwrap()
            .clone()
    };
    let col = chunk("birthDate_ts");
    assert_eq!(
        col.compression(),
        parquet::basic::Compression::ZSTD(Default::default())
    );
    assert!(col.statistics().is_some());
    // A dictionary where values repeat, none for the unique id.
    assert!(chunk("gender").dictionary_page_offset().is_some());
    assert!(chunk("id").dictionary_page_offset().is_none());
    let record = crate::run_record(tmp.path());
    assert_eq!(record["types"]["Patient"]["rows"], patients);
    let input = std::fs::read(shared("fhir-data/synthea-r4-small/Patient.ndjson")).unwrap();
    assert_eq!(
        record["inputs"][0]["blake3"].as_str().unwrap(),
        blake3::hash(&input).to_hex().as_str()
    );
}

#[test]
fn columns_empty_in_a_first_batch_get_the_cheap_codec() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = convert_opts(tmp.path());
    opts.threads = 1;
    // Every column, so that the empty ones are written.
    opts.write.columns = fhir2parquet::convert::Columns::All;
    fhir2parquet::convert::run(
        &[shared("fhir-data/synthea-r4-small/Observation.ndjson")],
        &opts,
    )
    .unwrap();
    let metadata = crate::parquet_metadata(&crate::first_file(&tmp.path().join("Observation")));
    let rg = metadata.row_group(0);
    let compression = |path: &str| {
        rg.columns()
            .iter()
            .find(|c| c.column_path().string() == path)
            .unwrap()
            .compression()
    };
    let zstd = parquet::basic::Compression::ZSTD(Default::default());
    assert_eq!(compression("status"), zstd);
    // Synthea never writes Observation.valueRatio: Snappy, which sets up nothing per column.
    assert_eq!(
        compression("valueRatio.numerator.value"),
        parquet::basic::Compression::SNAPPY
    );
    // Every column is compressed.
    assert!(rg
        .columns()
        .iter()
        .all(|c| c.compression() != parquet::basic::Compression::UNCOMPRESSED));
}

#[test]
fn partition_by_append_and_replace() {
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = convert_opts(tmp.path());
    opts.partition_by =
        vec![fhir2parquet::convert::PartitionSpec::parse("Observation.effective:year").unwrap()];
    let input = [shared("fhir-data/synthea-r4-small/Observation.ndjson")];
    fhir2parquet::convert::run(&input, &opts).unwrap();
    let years: Vec<String> = std::fs::read_dir(tmp.path().join("Observation"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        years.contains(&"effective_year=2019".to_string()),
        "{years:?}"
    );
    let count =
        |p: &Path| fhir2parquet::encode::to_ndjson(p, &p.join("_back")).unwrap()["Observation"];
    let observations = read_lines(&input[0]).len() as u64;
    assert_eq!(count(tmp.path()), observations);
    // Each year holds the columns of the type's data, the same in every partition.
    assert_eq!(file_schemas(&tmp.path().join("Observation")).len(), 1);
    // Again into the same folder: replaced, not doubled.
    fhir2parquet::convert::run(&input, &opts).unwrap();
    assert_eq!(count(tmp.path()), observations);
    // --append adds.
    opts.append = true;
    fhir2parquet::convert::run(&input, &opts).unwrap();
    assert_eq!(count(tmp.path()), 2 * observations);
    assert_eq!(file_schemas(&tmp.path().join("Observation")).len(), 1);
    let record = crate::run_record(tmp.path());
    assert_eq!(record["previous_runs"].as_array().unwrap().len(), 1);
}

#[test]
fn manifest_inputs_are_resolved_and_counts_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("export");
    std::fs::create_dir(&dir).unwrap();
    for t in ["Patient", "Condition"] {
        std::fs::copy(
            shared(&format!("fhir-data/synthea-r4-small/{t}.ndjson")),
            dir.join(format!("{t}.ndjson")),
        )
        .unwrap();
    }
    let manifest = serde_json::json!({
        "transactionTime": "2020-01-01T00:00:00Z",
        "request": "https://example.org/fhir/$export",
        "requiresAccessToken": true,
        "output": [
            {"type": "Patient", "url": "https://example.org/files/Patient.ndjson", "count": 9},
            {"type": "Condition", "url": "Condition.ndjson", "count": 1}
        ],
        "error": []
    });
    std::fs::write(dir.join("manifest.json"), manifest.to_string()).unwrap();
    let out = tmp.path().join("out");
    let o = crate::convert_quiet(&dir, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    let conditions = crate::read_lines(&dir.join("Condition.ndjson")).len();
    let want =
        format!("Condition.ndjson: the manifest says 1 resources, the file holds {conditions}");
    assert!(err.contains(&want), "{err}");
    let record = crate::run_record(&out);
    let patients = crate::read_lines(&dir.join("Patient.ndjson")).len();
    assert_eq!(record["types"]["Patient"]["rows"], patients);
}

#[test]
fn stdin_input_and_exit_code_zero() {
    let tmp = tempfile::tempdir().unwrap();
    let data = std::fs::read(shared("fhir-data/synthea-r4-small/Patient.ndjson")).unwrap();
    let o = crate::bin_stdin(&["convert", "-", "-o", tmp.path().to_str().unwrap()], &data);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("Patient") && err.contains("throughput"),
        "the summary table: {err}"
    );
}

#[test]
fn a_killed_run_leaves_nothing_that_looks_complete() {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
        .args([
            "convert",
            "-",
            "-o",
            out.to_str().unwrap(),
            "-q",
            "--batch-rows",
            "10",
            "--row-group-rows",
            "20",
        ])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    let data = std::fs::read(shared("fhir-data/synthea-r4-small/Observation.ndjson")).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&data).unwrap();
    stdin.flush().unwrap();
    // Wait until the run has written Parquet under its temporary name, then kill it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let written = std::fs::read_dir(&out)
            .ok()
            .into_iter()
            .flatten()
            .flatten()
            .any(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".fhir2parquet-tmp-")
                    && e.path().join("Observation").exists()
            });
        if written || std::time::Instant::now() > deadline {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);
    let in_tmp = std::fs::read_dir(&out).unwrap().flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with(".fhir2parquet-tmp-")
            && std::fs::read_dir(e.path().join("Observation")).is_ok_and(|mut d| d.next().is_some())
    });
    assert!(
        in_tmp,
        "the run had written Parquet under its temporary name before it was killed"
    );
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    // The temporary folder, and the lock of the killed run (taken over by the next).
    assert!(
        names
            .iter()
            .all(|n| n.starts_with(".fhir2parquet-tmp-") || n == "_fhir2parquet.lock"),
        "{names:?}"
    );
    assert!(!out.join("_fhir2parquet.json").exists());
    // The next run cleans up and publishes.
    fhir2parquet::convert::run(
        &[shared("fhir-data/synthea-r4-small/Patient.ndjson")],
        &convert_opts(&out),
    )
    .unwrap();
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.iter().filter(|n| n.starts_with('.')).count(),
        0,
        "{names:?}"
    );
}

/// Bytes of the Parquet files under a folder.
fn parquet_bytes(dir: &Path) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            total += parquet_bytes(&p);
        } else if p.extension().is_some_and(|x| x == "parquet") {
            total += std::fs::metadata(&p).unwrap().len();
        }
    }
    total
}

/// Size guard: with the command's defaults (2 threads, as in CI), each shared Synthea set's
/// Parquet stays under a bound a little above what convert writes today, so the size cannot
/// silently grow back; and one file and one row group per type whatever the thread count.
#[test]
fn output_size_stays_bounded() {
    // (set, bound in bytes): every column (written here explicitly: the default is present
    // columns, bounded by `files_of_present_columns_are_small`), 3,862,743 and 2,227,612 bytes
    // measured 2026-11-26 (no page index for one-page files, no dictionary for mostly
    // distinct columns), plus ~4%.
    for (set, bound) in [
        ("synthea-r4-small", 4_020_000),
        ("synthea-r4-10-patients", 2_320_000),
    ] {
        let input = shared(&format!("fhir-data/{set}"));
        let tmp = tempfile::tempdir().unwrap();
        let mut opts = convert_opts(tmp.path());
        opts.batch_rows = 8192;
        opts.write.columns = fhir2parquet::convert::Columns::All;
        let record = fhir2parquet::convert::run(&[input], &opts).unwrap();
        let bytes = parquet_bytes(tmp.path());
        assert!(
            bytes <= bound,
            "{set}: {bytes} bytes of Parquet, bound {bound}"
        );
        let recorded: u64 = record.types.values().map(|t| t.parquet_bytes).sum();
        assert_eq!(recorded, bytes, "{set}: the run record counts every byte");
        for (t, rec) in &record.types {
            assert_eq!(rec.files, 1, "{set}: {t} is one file");
            let file = crate::first_file(&tmp.path().join(t));
            assert_eq!(
                crate::parquet_metadata(&file).num_row_groups(),
                1,
                "{set}: {t}"
            );
        }
    }
}

/// The workers share one row group per type: with four threads and batches of 100 rows, each
/// type still comes to row groups of `--row-group-rows` (the last one smaller), not one per
/// worker, and every resource comes back.
#[test]
fn workers_share_a_row_group_per_type() {
    let set = shared("fhir-data/synthea-r4-10-patients");
    let lines = crate::resources_per_type(&set);
    let tmp = tempfile::tempdir().unwrap();
    let mut opts = convert_opts(tmp.path());
    opts.threads = 4;
    opts.batch_rows = 100;
    opts.write.row_group_rows = 500;
    // Every column: with present columns a column first seen late starts a file of its own.
    opts.write.columns = fhir2parquet::convert::Columns::All;
    let record = fhir2parquet::convert::run(&[set], &opts).unwrap();
    for (t, n) in &lines {
        assert_eq!(record.types[t].files, 1, "{t}");
        let meta = crate::parquet_metadata(&crate::first_file(&tmp.path().join(t)));
        let sizes: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
        assert_eq!(sizes.iter().sum::<i64>() as u64, *n, "{t}: {sizes:?}");
        assert!(sizes.iter().all(|&s| s <= 500), "{t}: {sizes:?}");
        // At most one row group short of 500 rows besides the last: a type's row group is
        // finished early only when other types' row groups fill the memory budget.
        let short = sizes[..sizes.len() - 1]
            .iter()
            .filter(|&&s| s < 500)
            .count();
        assert!(short <= 1, "{t}: {sizes:?}");
    }
    let back = fhir2parquet::encode::to_ndjson(tmp.path(), &tmp.path().join("back")).unwrap();
    assert_eq!(back, lines);
}

/// Encodings chosen per column: a file whose columns are one page each has no page index, one
/// with pages to skip has one; a column whose values are mostly distinct has no dictionary, one
/// whose values repeat has.
#[test]
fn page_index_and_dictionaries_where_they_pay() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.ndjson");
    // 25,000 rows: more than a page holds (20,000 rows), in one row group.
    let lines: String = (0..25_000)
        .map(|i| {
            format!(
                "{{\"resourceType\":\"Observation\",\"id\":\"o{i}\",\"status\":\"final\",\
                 \"code\":{{\"text\":\"glucose\"}},\"subject\":{{\"reference\":\"Patient/p{i}\"}}}}\n"
            )
        })
        .collect();
    std::fs::write(&input, lines).unwrap();
    let small = shared("fhir-data/synthea-r4-small/Patient.ndjson");
    let out = tmp.path().join("out");
    let mut opts = convert_opts(&out);
    opts.threads = 1;
    opts.batch_rows = 30_000;
    fhir2parquet::convert::run(&[input, small], &opts).unwrap();
    let meta = |t: &str| crate::parquet_metadata(&crate::first_file(&out.join(t)));
    let big = meta("Observation");
    assert_eq!(big.num_row_groups(), 1);
    let chunk = |m: &parquet::file::metadata::ParquetMetaData, path: &str| {
        m.row_group(0)
            .columns()
            .iter()
            .find(|c| c.column_path().string() == path)
            .unwrap()
            .clone()
    };
    assert!(chunk(&big, "id").offset_index_offset().is_some());
    assert!(chunk(&big, "status").dictionary_page_offset().is_some());
    assert!(chunk(&big, "code.text").dictionary_page_offset().is_some());
    assert!(chunk(&big, "subject.reference")
        .dictionary_page_offset()
        .is_none());
    let patient = meta("Patient");
    assert!(patient
        .row_group(0)
        .columns()
        .iter()
        .all(|c| c.offset_index_offset().is_none() && c.column_index_offset().is_none()));
    assert!(chunk(&patient, "gender").dictionary_page_offset().is_some());
    // Readers that use the page index read both files, and DuckDB/pyarrow tests cover the rest.
    let back = tmp.path().join("back");
    fhir2parquet::encode::to_ndjson(out.as_path(), &back).unwrap();
    assert_eq!(
        crate::read_lines(&back.join("Observation.ndjson")).len(),
        25_000
    );
}
