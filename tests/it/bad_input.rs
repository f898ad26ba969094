use std::io::Write;

use crate::bin;

#[test]
fn bad_lines_are_rejected_with_location_and_kept_and_the_run_goes_on() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("mixed.ndjson");
    let mut f = std::fs::File::create(&input).unwrap();
    f.write_all(
        b"\xEF\xBB\xBF{\"resourceType\":\"Patient\",\"id\":\"a\",\"gender\":\"female\"}\r\n",
    )
    .unwrap();
    f.write_all(b"\n   \n").unwrap();
    f.write_all(b"{\"resourceType\":\"Patient\",\"id\":\"SECRET-NAME\"\n")
        .unwrap(); // 4: not JSON
    f.write_all(b"[1,2]\n").unwrap(); // 5: not an object
    f.write_all(b"{\"id\":\"x\"}\n").unwrap(); // 6: no resourceType
    f.write_all(b"{\"resourceType\":\"Spaceship\"}\n").unwrap(); // 7: unknown type
    f.write_all(b"{\"resourceType\":\"Patient\",\"name\":[{\"family\":\"M\xFCller\"}]}\n")
        .unwrap(); // 8: not UTF-8
                   // 9: valid JSON, not valid FHIR: kept in overflow, not rejected.
    f.write_all(b"{\"resourceType\":\"Patient\",\"id\":\"b\",\"shoeSize\":44,\"active\":\"yes\",\"birthDate\":\"SECRET-DATE\",\"multipleBirthInteger\":1.5}\n").unwrap();
    drop(f);
    let out = tmp.path().join("out");
    let o = bin(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(err.contains("5 line(s) rejected"), "{err}");
    assert!(
        !err.contains("SECRET"),
        "values from the data must not be printed: {err}"
    );
    let rejects: Vec<serde_json::Value> = std::fs::read_dir(out.join("_rejects"))
        .unwrap()
        .flat_map(|e| crate::read_lines(&e.unwrap().path()))
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect();
    let mut found: Vec<(u64, String)> = rejects
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    found.sort();
    assert_eq!(
        found,
        vec![
            (4, "not-json".into()),
            (5, "not-an-object".into()),
            (6, "no-resource-type".into()),
            (7, "unknown-resource-type".into()),
            (8, "not-utf8".into())
        ]
    );
    for r in &rejects {
        assert!(r["file"].as_str().unwrap().ends_with("mixed.ndjson"));
        assert!(r["detail"].as_str().is_some());
    }
    let not_utf8 = rejects.iter().find(|r| r["reason"] == "not-utf8").unwrap();
    assert!(not_utf8["base64"].as_str().is_some());
    let not_json = rejects.iter().find(|r| r["reason"] == "not-json").unwrap();
    assert!(
        not_json["text"].as_str().unwrap().contains("SECRET-NAME"),
        "the line is kept whole"
    );
    let record = crate::run_record(&out);
    assert_eq!(record["types"]["Patient"]["rows"], 2);
    let by = &record["types"]["Patient"]["overflow"]["by_reason"];
    assert_eq!(by["unknown-element"], 1);
    assert_eq!(by["wrong-type"], 1);
    assert_eq!(by["invalid-value"], 1);
    assert_eq!(by["invalid-date"], 1);
    // And nothing of the valid-JSON line is lost.
    let back = tmp.path().join("back");
    fhir2parquet::encode::to_ndjson(&out, &back).unwrap();
    let lines = crate::read_lines(&back.join("Patient.ndjson"));
    let b = lines.iter().find(|l| l.contains("\"b\"")).unwrap();
    let want = fhir2parquet::json::parse(r#"{"resourceType":"Patient","id":"b","shoeSize":44,"active":"yes","birthDate":"SECRET-DATE","multipleBirthInteger":1.5}"#).unwrap();
    assert!(fhir2parquet::json::parse(b).unwrap().same_as(&want), "{b}");
}

#[test]
fn a_truncated_gzip_is_reported_and_the_lines_before_it_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let data = std::fs::read(crate::shared(
        "fhir-data/synthea-r4-small/Observation.ndjson",
    ))
    .unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&data).unwrap();
    let gz = gz.finish().unwrap();
    let input = tmp.path().join("Observation.ndjson.gz");
    std::fs::write(&input, &gz[..gz.len() / 2]).unwrap();
    let out = tmp.path().join("out");
    let o = crate::convert_quiet(&input, &out);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    assert!(
        err.contains("Observation.ndjson.gz: the gzip data is damaged or truncated"),
        "{err}"
    );
    assert!(
        err.contains("line(s) were read before it and are kept"),
        "{err}"
    );
    let record = crate::run_record(&out);
    let rows = record["types"]["Observation"]["rows"].as_u64().unwrap();
    assert!(rows > 100 && rows < 1502, "{rows}");
}

#[test]
fn a_line_of_tens_of_megabytes_is_fine() {
    let tmp = tempfile::tempdir().unwrap();
    let big = "QUJD".repeat(6_000_000); // 24 MB of base64
    let line = format!("{{\"resourceType\":\"Binary\",\"id\":\"big\",\"contentType\":\"text/plain\",\"data\":\"{big}\"}}\n");
    let input = tmp.path().join("Binary.ndjson");
    std::fs::write(&input, format!("{line}{line}")).unwrap();
    let out = tmp.path().join("out");
    let o = crate::convert_quiet(&input, &out);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let back = tmp.path().join("back");
    assert_eq!(
        fhir2parquet::encode::to_ndjson(&out, &back).unwrap()["Binary"],
        2
    );
    assert!(crate::read_lines(&back.join("Binary.ndjson"))[0].len() > 24_000_000);
}

/// File errors name the file and what to do, whichever command meets them.
#[test]
fn file_errors_name_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-thing");
    let m = missing.to_str().unwrap();
    let view = tmp.path().join("no-view.json");
    let v = view.to_str().unwrap();
    for args in [
        vec!["convert", m, "-o", tmp.path().join("o").to_str().unwrap()],
        vec!["sql", m, "-c", "SELECT 1"],
        vec!["view", v, "--data", m],
        vec!["to-ndjson", m, "-o", tmp.path().join("n").to_str().unwrap()],
        vec!["history", m],
        vec!["warehouse", "duckdb", m],
    ] {
        let o = crate::bin(&args);
        assert!(!o.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("no-such-thing") || err.contains("no-view.json"),
            "{args:?}: {err}"
        );
        assert!(o.stdout.is_empty(), "{args:?}: printed before failing");
    }
}
