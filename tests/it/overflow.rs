//! Views over what the typed schema keeps in `_overflow`: extensions of datatypes, nested deeper
//! than the schema, complex extension values, primitive extensions inside datatypes, items nested
//! past the recursion bound. Run over the R4 specification examples and Synthea, with the
//! expected values worked out independently from the NDJSON by a small walker over the raw JSON
//! (property names as written, no FHIRPath).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fhir2parquet::sql::Shell;
use fhir2parquet::view::ViewDefinition;
use serde_json::{json, Value};

use crate::view::{batches_to_rows, rounded};
use crate::{convert_opts, read_lines, shared};

/// One step of the reference walker: a JSON property (arrays flattened), or the extensions with
/// a url.
enum Step {
    Key(&'static str),
    Ext(&'static str),
}
use Step::{Ext, Key};

/// The values `steps` reach from `v`, in document order.
fn walk(v: &Value, steps: &[Step]) -> Vec<Value> {
    let Some((step, rest)) = steps.split_first() else {
        return vec![v.clone()];
    };
    let next: Vec<&Value> = match step {
        Key(k) => match v.get(*k) {
            Some(Value::Array(a)) => a.iter().filter(|x| !x.is_null()).collect(),
            Some(Value::Null) | None => Vec::new(),
            Some(x) => vec![x],
        },
        Ext(url) => v
            .get("extension")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter(|e| e["url"] == *url).collect())
            .unwrap_or_default(),
    };
    next.into_iter().flat_map(|x| walk(x, rest)).collect()
}

/// Converts the named inputs into one dataset.
fn dataset(tmp: &Path, inputs: &[PathBuf]) -> PathBuf {
    let out = tmp.join("out");
    let record = fhir2parquet::convert::run(inputs, &convert_opts(&out)).unwrap();
    assert!(record.problems().is_empty(), "{:?}", record.problems());
    out
}

fn spec(t: &str) -> PathBuf {
    shared(&format!("fhir-data/r4-spec-examples/{t}.ndjson.gz"))
}

/// The resources of one type in the inputs, by id.
fn resources(inputs: &[PathBuf], resource_type: &str) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for f in inputs {
        for line in read_lines(f) {
            let r: Value = serde_json::from_str(&line).unwrap();
            if r["resourceType"] == resource_type {
                out.insert(r["id"].as_str().unwrap().to_string(), r);
            }
        }
    }
    out
}

/// Rows of a view as JSON objects.
fn rows(shell: &Shell, view: Value) -> Vec<Value> {
    let v = ViewDefinition::from_json(&view).unwrap();
    batches_to_rows(&fhir2parquet::view::batches(shell, &v).unwrap())
}

/// Checks that the FHIRPath `path` gives, for every resource, the values the walker finds, and
/// that it finds some (the case is not vacuous). Returns how many resources had values.
fn check_path(
    shell: &Shell,
    by_id: &BTreeMap<String, Value>,
    resource_type: &str,
    path: &str,
    steps: &[Step],
) -> usize {
    let view = json!({"resource": resource_type, "select": [{"column": [
        {"name": "id", "path": "getResourceKey()"},
        {"name": "v", "path": path, "collection": true}]}]});
    let got: BTreeMap<String, Value> = rows(shell, view)
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), rounded(&r["v"])))
        .collect();
    assert_eq!(got.len(), by_id.len(), "{path}: one row per resource");
    let mut with_values = 0;
    for (id, r) in by_id {
        let want = rounded(&Value::Array(walk(r, steps)));
        with_values += usize::from(want.as_array().is_some_and(|a| !a.is_empty()));
        assert_eq!(got[id], want, "{resource_type}/{id}: {path}");
    }
    assert!(
        with_values > 0,
        "{path}: no resource has values: a vacuous case"
    );
    with_values
}

#[test]
fn views_read_every_kind_of_overflow_in_the_spec_examples() {
    let tmp = tempfile::tempdir().unwrap();
    let types = [
        "Questionnaire",
        "ActivityDefinition",
        "Patient",
        "RelatedPerson",
        "CodeSystem",
        "Observation",
    ];
    let inputs: Vec<PathBuf> = types.iter().map(|t| spec(t)).collect();
    let out = dataset(tmp.path(), &inputs);
    let shell = Shell::open(&out, None).unwrap();
    let cases: &[(&str, &str, &[Step])] = &[
        // A complex extension value (Attachment is not one of the typed value columns), on a
        // backbone element.
        (
            "Questionnaire",
            "item.extension('http://example.org/additional-information').value.ofType(Attachment).title",
            &[Key("item"), Ext("http://example.org/additional-information"), Key("valueAttachment"), Key("title")],
        ),
        (
            "Questionnaire",
            "item.extension.value.ofType(Expression).expression",
            &[Key("item"), Key("extension"), Key("valueExpression"), Key("expression")],
        ),
        // A primitive extension inside a datatype, holding a complex value.
        (
            "ActivityDefinition",
            "timing.ofType(Timing).event.extension('http://hl7.org/fhir/StructureDefinition/cqf-expression').value.ofType(Expression).expression",
            &[Key("timingTiming"), Key("_event"), Ext("http://hl7.org/fhir/StructureDefinition/cqf-expression"), Key("valueExpression"), Key("expression")],
        ),
        // A primitive extension of a datatype's element (HumanName.family).
        (
            "Patient",
            "contact.name.family.extension('http://hl7.org/fhir/StructureDefinition/humanname-own-prefix').value.ofType(string)",
            &[Key("contact"), Key("name"), Key("_family"), Ext("http://hl7.org/fhir/StructureDefinition/humanname-own-prefix"), Key("valueString")],
        ),
        (
            "RelatedPerson",
            "name.family.extension.value.ofType(string)",
            &[Key("name"), Key("_family"), Key("extension"), Key("valueString")],
        ),
        // Extensions nested past the schema: an extension's primitive value with an extension
        // that has extensions.
        (
            "CodeSystem",
            "concept.extension('http://hl7.org/fhir/StructureDefinition/codesystem-concept-comments').value.ofType(string).extension('http://hl7.org/fhir/StructureDefinition/translation').extension('content').value.ofType(string)",
            &[Key("concept"), Ext("http://hl7.org/fhir/StructureDefinition/codesystem-concept-comments"), Key("_valueString"), Ext("http://hl7.org/fhir/StructureDefinition/translation"), Ext("content"), Key("valueString")],
        ),
        // Extensions of a datatype inside a choice inside a backbone element.
        (
            "Observation",
            "component.value.ofType(CodeableConcept).coding.extension.url",
            &[Key("component"), Key("valueCodeableConcept"), Key("coding"), Key("extension"), Key("url")],
        ),
        // Typed and overflow in one path: the typed `code` of items at every depth the schema
        // has, and past it.
        (
            "Questionnaire",
            "item.item.item.item.linkId",
            &[Key("item"), Key("item"), Key("item"), Key("item"), Key("linkId")],
        ),
        (
            "Questionnaire",
            "item.item.item.item.item.text",
            &[Key("item"), Key("item"), Key("item"), Key("item"), Key("item"), Key("text")],
        ),
    ];
    for (t, path, steps) in cases {
        let by_id = resources(&inputs, t);
        check_path(&shell, &by_id, t, path, steps);
    }
    // forEach on a recursive path past the cut, and an extension of an item inside a repeat
    // (the forms other engines' view tests use).
    let qs = resources(&inputs, "Questionnaire");
    let view = json!({"resource": "Questionnaire", "select": [
        {"column": [{"name": "id", "path": "id"}]},
        {"forEach": "item.item.item.item", "column": [{"name": "link", "path": "linkId"}]}]});
    let mut got: Vec<String> = rows(&shell, view)
        .iter()
        .map(|r| format!("{} {}", r["id"].as_str().unwrap(), r["link"]))
        .collect();
    let mut want: Vec<String> = qs
        .iter()
        .flat_map(|(id, q)| {
            // One row per item, its linkId or null.
            walk(q, &[Key("item"), Key("item"), Key("item"), Key("item")])
                .into_iter()
                .map(move |it| format!("{id} {}", it["linkId"]))
        })
        .collect();
    got.sort();
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(got, want);
    let info = "http://example.org/additional-information";
    let view = json!({"resource": "Questionnaire", "select": [
        {"column": [{"name": "id", "path": "id"}]},
        {"repeat": ["item"], "column": [
            {"name": "link", "path": "linkId"},
            {"name": "title", "path": format!("extension('{info}').value.ofType(Attachment).title")}]}]});
    let mut got: Vec<String> = rows(&shell, view)
        .iter()
        .filter(|r| !r["title"].is_null())
        .map(|r| {
            format!(
                "{} {}",
                r["link"].as_str().unwrap(),
                r["title"].as_str().unwrap()
            )
        })
        .collect();
    let mut want = Vec::new();
    fn items_with_info(items: &Value, info: &'static str, out: &mut Vec<String>) {
        for it in items.as_array().into_iter().flatten() {
            for t in walk(it, &[Ext(info), Key("valueAttachment"), Key("title")]) {
                out.push(format!(
                    "{} {}",
                    it["linkId"].as_str().unwrap(),
                    t.as_str().unwrap()
                ));
            }
            items_with_info(&it["item"], info, out);
        }
    }
    for q in qs.values() {
        items_with_info(&q["item"], info, &mut want);
    }
    got.sort();
    want.sort();
    assert!(!want.is_empty());
    assert_eq!(got, want);

    // The same paths in where(): the filter reads the overflow as well.
    let view = json!({"resource": "Patient",
        "where": [{"path": "contact.name.family.extension('http://hl7.org/fhir/StructureDefinition/humanname-own-prefix').exists()"}],
        "select": [{"column": [{"name": "id", "path": "id"}]}]});
    let want: Vec<String> = resources(&inputs, "Patient")
        .iter()
        .filter(|(_, r)| {
            !walk(
                r,
                &[
                    Key("contact"),
                    Key("name"),
                    Key("_family"),
                    Ext("http://hl7.org/fhir/StructureDefinition/humanname-own-prefix"),
                ],
            )
            .is_empty()
        })
        .map(|(id, _)| id.clone())
        .collect();
    let mut got: Vec<String> = rows(&shell, view)
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    got.sort();
    assert!(!want.is_empty());
    assert_eq!(got, want);
    // An element that FHIR does not define stays an error, past the cut as well.
    let bad = json!({"resource": "Questionnaire", "select": [{"column": [
        {"name": "x", "path": "item.item.item.item.nonsense", "collection": true}]}]});
    let err =
        fhir2parquet::view::batches(&shell, &ViewDefinition::from_json(&bad).unwrap()).unwrap_err();
    assert!(
        format!("{err:#}").contains("no element 'nonsense'"),
        "{err:#}"
    );
}

/// Every item of a questionnaire, depth first, as (linkId, depth).
fn items_depth_first(
    items: &Value,
    paths: &[&[&str]],
    depth: usize,
    out: &mut Vec<(Value, usize)>,
) {
    for it in items.as_array().into_iter().flatten() {
        out.push((it["linkId"].clone(), depth));
        for p in paths {
            let mut level = vec![it.clone()];
            for k in *p {
                level = level
                    .iter()
                    .flat_map(|x| walk(x, &[Step::Key(leak(k))]))
                    .collect();
            }
            items_depth_first(&Value::Array(level), paths, depth + 1, out);
        }
    }
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_string().into_boxed_str())
}

#[test]
fn repeat_reaches_items_at_any_depth() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = vec![spec("Questionnaire"), spec("QuestionnaireResponse")];
    let out = dataset(tmp.path(), &inputs);
    let shell = Shell::open(&out, None).unwrap();
    for (t, paths) in [
        ("Questionnaire", vec![&["item"][..]]),
        (
            "QuestionnaireResponse",
            vec![&["item"][..], &["answer", "item"][..]],
        ),
    ] {
        let by_id = resources(&inputs, t);
        let mut want = Vec::new();
        let mut deepest = 0;
        for (id, r) in &by_id {
            let mut items = Vec::new();
            items_depth_first(&r["item"], &paths, 1, &mut items);
            for (k, (link, depth)) in items.into_iter().enumerate() {
                deepest = deepest.max(depth);
                want.push(json!({"id": id, "linkId": link, "i": k}));
            }
        }
        // The spec examples nest items five (Questionnaire) and seven (QuestionnaireResponse)
        // deep: past the schema's three typed levels.
        assert!(deepest >= 5, "{t}: items only {deepest} deep");
        let repeat: Vec<String> = paths.iter().map(|p| p.join(".")).collect();
        let view = json!({"resource": t, "select": [
            {"column": [{"name": "id", "path": "id"}]},
            {"repeat": repeat, "column": [
                {"name": "linkId", "path": "linkId"}, {"name": "i", "path": "%rowIndex"}]}]});
        let mut got = rows(&shell, view);
        let key = |v: &Value| v.to_string();
        got.sort_by_key(key);
        want.sort_by_key(key);
        assert_eq!(got.len(), want.len(), "{t}");
        assert_eq!(got, want, "{t}");
    }
}

#[test]
fn nested_repeats_each_with_its_row_index() {
    // Groups of questions with answers that open more questions, three repeats deep.
    let qr = json!({"resourceType": "QuestionnaireResponse", "id": "r", "status": "completed",
        "item": [
            {"linkId": "g1", "item": [
                {"linkId": "q1", "answer": [
                    {"valueString": "a1", "item": [
                        {"linkId": "q1.1", "answer": [{"valueString": "a1.1", "item": [
                            {"linkId": "q1.1.1", "answer": [{"valueString": "a1.1.1"}]}]}]}]},
                    {"valueString": "a2"}]},
                {"linkId": "q2", "item": [{"linkId": "q2.1", "item": [{"linkId": "q2.1.1",
                    "item": [{"linkId": "q2.1.1.1", "answer": [{"valueString": "deep"}]}]}]}]}]},
            {"linkId": "g2"}]});
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("qr.ndjson");
    std::fs::write(&input, qr.to_string()).unwrap();
    let out = dataset(tmp.path(), &[input]);
    let shell = Shell::open(&out, None).unwrap();

    // forEach over the top items, repeat inside it, forEachOrNull inside the repeat, and a
    // repeat over the answers' items inside that: each level numbers its own rows.
    let view = json!({"resource": "QuestionnaireResponse", "select": [{
        "forEach": "item", "column": [{"name": "top", "path": "linkId"}, {"name": "ti", "path": "%rowIndex"}],
        "select": [{
            "repeat": ["item"], "column": [{"name": "q", "path": "linkId"}, {"name": "qi", "path": "%rowIndex"}],
            "select": [{
                "forEachOrNull": "answer", "column": [{"name": "a", "path": "value.ofType(string)"}, {"name": "ai", "path": "%rowIndex"}],
                "select": [{
                    "repeat": ["item", "answer.item"], "column": [{"name": "sub", "path": "linkId"}, {"name": "si", "path": "%rowIndex"}]
                }]
            }]
        }]
    }]});
    let mut got: Vec<String> = rows(&shell, view)
        .iter()
        .map(|r| {
            format!(
                "{}{} {}{} {}{} {}{}",
                r["top"].as_str().unwrap(),
                r["ti"],
                r["q"].as_str().unwrap(),
                r["qi"],
                r["a"].as_str().unwrap_or("-"),
                r["ai"],
                r["sub"].as_str().unwrap_or("-"),
                r["si"]
            )
        })
        .collect();
    got.sort();
    // Worked out by hand. Under g1 the repeat gives q1, q2, q2.1, q2.1.1, q2.1.1.1 (rows 0-4);
    // g2 has no items, so no rows (forEach and repeat drop empty). Only q1's answer a1 has
    // items: q1.1 then, through answer.item, q1.1.1.
    let mut want = vec!["g10 q10 a10 q1.10", "g10 q10 a10 q1.1.11"];
    want.sort();
    // Rows whose innermost repeat is empty are dropped: repeat is a forEach.
    assert_eq!(got, want);

    // Sibling repeats under one forEach, and a repeat beside a forEachOrNull.
    let view = json!({"resource": "QuestionnaireResponse", "select": [{
        "forEach": "item.where(linkId = 'g1')",
        "unionAll": [
            {"repeat": ["item"], "column": [{"name": "kind", "path": "'item'"}, {"name": "link", "path": "linkId"}, {"name": "i", "path": "%rowIndex"}]},
            {"repeat": ["item", "answer.item"], "column": [{"name": "kind", "path": "'any'"}, {"name": "link", "path": "linkId"}, {"name": "i", "path": "%rowIndex"}]}
        ]
    }]});
    let mut got: Vec<String> = rows(&shell, view)
        .iter()
        .map(|r| {
            format!(
                "{} {} {}",
                r["kind"].as_str().unwrap(),
                r["link"].as_str().unwrap(),
                r["i"]
            )
        })
        .collect();
    got.sort();
    let mut want = vec![
        "item q1 0",
        "item q2 1",
        "item q2.1 2",
        "item q2.1.1 3",
        "item q2.1.1.1 4",
        "any q1 0",
        "any q1.1 1",
        "any q1.1.1 2",
        "any q2 3",
        "any q2.1 4",
        "any q2.1.1 5",
        "any q2.1.1.1 6",
    ];
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn decimal_boundaries_use_the_written_precision() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("obs.ndjson");
    let lines: Vec<String> = [("a", "1.0"), ("b", "1.587"), ("c", "-1.587"), ("d", "120"), ("e", "0.50")]
        .iter()
        .map(|(id, v)| {
            format!(r#"{{"resourceType":"Observation","id":"{id}","status":"final","code":{{"text":"x"}},"valueQuantity":{{"value":{v}}}}}"#)
        })
        .collect();
    std::fs::write(&input, lines.join("\n")).unwrap();
    let out = dataset(tmp.path(), &[input]);
    let shell = Shell::open(&out, None).unwrap();
    let view = json!({"resource": "Observation", "select": [{"column": [
        {"name": "id", "path": "id"},
        {"name": "low", "path": "value.ofType(Quantity).value.lowBoundary()"},
        {"name": "high", "path": "value.ofType(Quantity).value.highBoundary()"},
        {"name": "low2", "path": "value.ofType(Quantity).value.lowBoundary(1)"},
        {"name": "lit", "path": "1.587.highBoundary()"},
        // After a function that picks items by position: the same boundaries.
        {"name": "first", "path": "value.ofType(Quantity).value.first().lowBoundary(1)"},
        {"name": "last", "path": "value.ofType(Quantity).value.last().highBoundary()"}]}]});
    let mut got: Vec<String> = rows(&shell, view)
        .iter()
        .map(|r| {
            let n = |k: &str| r[k].as_f64().unwrap().to_string();
            assert_eq!(n("first"), n("low2"), "{r}");
            assert_eq!(n("last"), n("high"), "{r}");
            format!(
                "{} {} {} {} {}",
                r["id"].as_str().unwrap(),
                n("low"),
                n("high"),
                n("low2"),
                n("lit")
            )
        })
        .collect();
    got.sort();
    // Half a unit of the last written digit either side; lowBoundary(1) rounds down to one
    // digit after the point.
    assert_eq!(
        got,
        [
            "a 0.95 1.05 0.9 1.5875",
            "b 1.5865 1.5875 1.5 1.5875",
            "c -1.5875 -1.5865 -1.6 1.5875",
            "d 119.5 120.5 119.5 1.5875",
            "e 0.495 0.505 0.4 1.5875",
        ]
    );
}

#[test]
fn synthea_geolocation_through_a_view() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = vec![shared("fhir-data/synthea-r4-small/Patient.ndjson")];
    let out = dataset(tmp.path(), &inputs);
    let shell = Shell::open(&out, None).unwrap();
    let by_id = resources(&inputs, "Patient");
    let n = check_path(
        &shell,
        &by_id,
        "Patient",
        "address.extension('http://hl7.org/fhir/StructureDefinition/geolocation').extension('latitude').value.ofType(decimal)",
        &[Key("address"), Ext("http://hl7.org/fhir/StructureDefinition/geolocation"), Ext("latitude"), Key("valueDecimal")],
    );
    assert_eq!(n, by_id.len(), "every Synthea patient has a geolocation");
}

/// Rows of a SQL query as JSON objects.
fn sql_rows(shell: &Shell, sql: &str) -> Vec<Value> {
    batches_to_rows(&shell.run_sql(sql).unwrap())
}

#[test]
fn fhirpath_in_sql_reads_typed_columns_and_overflow() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = vec![
        shared("fhir-data/synthea-r4-small/Patient.ndjson"),
        shared("fhir-data/synthea-r4-small/Encounter.ndjson"),
        spec("Questionnaire"),
    ];
    let out = dataset(tmp.path(), &inputs);
    let shell = Shell::open(&out, None).unwrap();
    let patients = resources(&inputs, "Patient");
    let geo = "http://hl7.org/fhir/StructureDefinition/geolocation";

    // Past the typed columns (an extension of Address) and typed (name.given), in one query.
    let rows = sql_rows(
        &shell,
        &format!(
            "SELECT id, fhirpath('address.extension(''{geo}'').extension(''latitude'').value.ofType(decimal)') AS lat, \
             fhirpath('name.given') AS given FROM Patient"
        ),
    );
    assert_eq!(rows.len(), patients.len());
    for r in &rows {
        let p = &patients[r["id"].as_str().unwrap()];
        let lat = walk(
            p,
            &[
                Key("address"),
                Ext(geo),
                Ext("latitude"),
                Key("valueDecimal"),
            ],
        );
        assert!(!lat.is_empty());
        assert_eq!(rounded(&r["lat"]), rounded(&Value::Array(lat)));
        assert_eq!(
            r["given"],
            Value::Array(walk(p, &[Key("name"), Key("given")]))
        );
    }

    // In WHERE, with an alias, an index into the list, beside a join.
    let rows = sql_rows(
        &shell,
        "SELECT p.id, fhirpath('name.family', 'p')[1] AS family, count(e.id) AS n \
         FROM Patient p JOIN Encounter e ON reference_id(e.subject) = p.id \
         WHERE fhirpath('gender', 'p')[1] = 'female' GROUP BY p.id, family",
    );
    let women: Vec<&Value> = patients
        .values()
        .filter(|p| p["gender"] == "female")
        .collect();
    let encounters = resources(&inputs, "Encounter");
    // Every woman with an encounter, once: no row dropped, none made up.
    let with_encounters = women
        .iter()
        .filter(|p| {
            let id = format!("Patient/{}", p["id"].as_str().unwrap());
            encounters
                .values()
                .any(|e| e["subject"]["reference"] == id.as_str())
        })
        .count();
    assert!(with_encounters > 0);
    assert_eq!(rows.len(), with_encounters);
    for r in &rows {
        let id = r["id"].as_str().unwrap();
        let p = &patients[id];
        assert_eq!(p["gender"], "female");
        assert_eq!(r["family"], p["name"][0]["family"]);
        let n = encounters
            .values()
            .filter(|e| e["subject"]["reference"] == format!("Patient/{id}"))
            .count();
        assert_eq!(r["n"], json!(n));
    }

    // Items past the schema's depth.
    let rows = sql_rows(
        &shell,
        "SELECT id, fhirpath('item.item.item.item.item.linkId') AS deep FROM Questionnaire",
    );
    let qs = resources(&inputs, "Questionnaire");
    assert_eq!(rows.len(), qs.len(), "one row per Questionnaire");
    let mut deep = 0;
    for r in &rows {
        let q = &qs[r["id"].as_str().unwrap()];
        let want = walk(
            q,
            &[
                Key("item"),
                Key("item"),
                Key("item"),
                Key("item"),
                Key("item"),
                Key("linkId"),
            ],
        );
        deep += want.len();
        assert_eq!(r["deep"], Value::Array(want));
    }
    assert!(deep > 0);

    // Errors that say what to do.
    let err = shell
        .run_sql("SELECT fhirpath('name.given') FROM Patient p JOIN Encounter e ON true")
        .unwrap_err();
    assert!(format!("{err:#}").contains("name one"), "{err:#}");
    let err = shell
        .run_sql("SELECT fhirpath('name.nickname') FROM Patient")
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("no element 'nickname'"),
        "{err:#}"
    );
}

#[test]
fn extension_value_gives_complex_values_as_fhir_json() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = vec![shared("fhir-data/synthea-r4-small/Patient.ndjson")];
    let out = dataset(tmp.path(), &inputs);
    let shell = Shell::open(&out, None).unwrap();
    let race = "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race";
    let rows = sql_rows(
        &shell,
        &format!(
            "SELECT id, extension_value(extension, '{race}', 'ombCategory') AS v FROM Patient"
        ),
    );
    let patients = resources(&inputs, "Patient");
    let mut seen = 0;
    for r in &rows {
        let want = walk(
            &patients[r["id"].as_str().unwrap()],
            &[Ext(race), Ext("ombCategory"), Key("valueCoding")],
        );
        match want.first() {
            Some(coding) => {
                seen += 1;
                let got: Value = serde_json::from_str(r["v"].as_str().unwrap()).unwrap();
                assert_eq!(&got, coding);
            }
            None => assert!(r["v"].is_null()),
        }
    }
    assert!(seen > 0);
    assert_eq!(rows.len(), patients.len(), "one row per Patient");
}

/// Items of a datatype cut short by the schema's bounds, with none of their typed columns: a
/// CodeableConcept three datatypes deep (`dosageInstruction.timing.code`, its `coding` in
/// `_overflow`) is there for `exists()`, `count()` and as a whole value, as the walker finds it
/// in the specification examples (`medrx0311` has one with a coding only).
#[test]
fn items_with_only_overflowed_content_are_there() {
    let tmp = tempfile::tempdir().unwrap();
    let inputs = vec![spec("MedicationRequest")];
    let out = dataset(tmp.path(), &inputs);
    let shell = Shell::open(&out, None).unwrap();
    let by_id = resources(&inputs, "MedicationRequest");
    let steps = [Key("dosageInstruction"), Key("timing"), Key("code")];
    let view = json!({"resource": "MedicationRequest", "select": [{"column": [
        {"name": "id", "path": "getResourceKey()"},
        {"name": "n", "path": "dosageInstruction.timing.code.count()"},
        {"name": "any", "path": "dosageInstruction.timing.code.exists()"},
        {"name": "whole", "path": "dosageInstruction.timing.code", "collection": true}]}]});
    let got: BTreeMap<String, Value> = rows(&shell, view)
        .into_iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r))
        .collect();
    let mut with = 0;
    for (id, r) in &by_id {
        let want = walk(r, &steps);
        with += usize::from(!want.is_empty());
        let g = &got[id];
        assert_eq!(g["n"], json!(want.len()), "{id}: count()");
        assert_eq!(g["any"], json!(!want.is_empty()), "{id}: exists()");
        // Each whole value is the element's JSON.
        let whole: Vec<Value> = g["whole"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|v| match v {
                        Value::String(s) => serde_json::from_str(s).unwrap(),
                        v => v.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(whole, want, "{id}: the whole value");
    }
    assert!(with > 0, "no MedicationRequest example has a timing code");
    assert!(
        by_id
            .get("medrx0311")
            .is_some_and(|r| !walk(r, &steps).is_empty()),
        "medrx0311 holds the case"
    );
    check_path(
        &shell,
        &by_id,
        "MedicationRequest",
        "dosageInstruction.timing.code.coding.code",
        &[
            Key("dosageInstruction"),
            Key("timing"),
            Key("code"),
            Key("coding"),
            Key("code"),
        ],
    );
}

#[test]
fn base64_in_lines_is_typed_and_given_back_as_written() {
    // FHIR allows whitespace between base64's groups of four; the specification's Binary,
    // Media and DiagnosticReport examples break theirs into lines.
    let tmp = tempfile::tempdir().unwrap();
    let inputs = vec![spec("Binary"), spec("Media"), spec("DiagnosticReport")];
    let out = dataset(tmp.path(), &inputs);
    let shell = Shell::open(&out, None).unwrap();
    let compact = |v: &Value| -> Value {
        let s: String = v
            .as_str()
            .unwrap()
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        s.into()
    };
    let mut in_lines = 0;
    for (rt, path, steps) in [
        ("Binary", "data", vec![Key("data")]),
        ("Media", "content.data", vec![Key("content"), Key("data")]),
        (
            "DiagnosticReport",
            "presentedForm.data",
            vec![Key("presentedForm"), Key("data")],
        ),
    ] {
        let by_id = resources(&inputs, rt);
        let view = json!({"resource": rt, "select": [{"column": [
            {"name": "id", "path": "getResourceKey()"},
            {"name": "v", "path": path, "collection": true}]}]});
        let got: BTreeMap<String, Value> = rows(&shell, view)
            .into_iter()
            .map(|r| (r["id"].as_str().unwrap().to_string(), r["v"].clone()))
            .collect();
        for (id, r) in &by_id {
            let written = walk(r, &steps);
            in_lines += written
                .iter()
                .filter(|v| v.as_str().unwrap().contains(char::is_whitespace))
                .count();
            // Views give the bytes, as canonical base64: the text without its whitespace.
            let want = Value::Array(written.iter().map(compact).collect());
            assert_eq!(got[id], want, "{rt}/{id}: {path}");
        }
    }
    assert!(
        in_lines >= 3,
        "the examples hold base64 in lines: {in_lines}"
    );
    // to-ndjson gives the text back as it was written.
    let back = tmp.path().join("back");
    fhir2parquet::encode::to_ndjson(out.as_path(), &back).unwrap();
    for rt in ["Binary", "Media", "DiagnosticReport"] {
        let want = resources(&inputs, rt);
        let got = resources(&[back.join(format!("{rt}.ndjson"))], rt);
        for (id, r) in &want {
            assert_eq!(&got[id], r, "{rt}/{id} round trip");
        }
    }
}

#[test]
fn complex_columns_are_their_fhir_json() {
    // A column of a complex type is the element as the resource holds it: its extensions
    // (which `_overflow` keeps, as Synthea's geolocation of an address) and binary as its base64
    // text included; the same for the items of a forEach.
    let tmp = tempfile::tempdir().unwrap();
    let inputs = vec![
        shared("fhir-data/synthea-r4-small/Patient.ndjson"),
        spec("Media"),
    ];
    let out = dataset(tmp.path(), &inputs);
    let shell = Shell::open(&out, None).unwrap();
    let parsed = |v: &Value| -> Value {
        serde_json::from_str(v.as_str().expect("a complex column is JSON text")).unwrap()
    };
    let mut extended = 0;
    let patients = resources(&inputs, "Patient");
    let view = json!({"resource": "Patient", "select": [
        {"column": [{"name": "id", "path": "getResourceKey()"},
                    {"name": "first", "path": "address.first()"}]},
        {"forEachOrNull": "address", "column": [{"name": "item", "path": "$this"},
                                                {"name": "city", "path": "city"}]}]});
    let got = rows(&shell, view);
    assert!(got.len() >= patients.len());
    let mut position: BTreeMap<String, usize> = BTreeMap::new();
    for r in &got {
        let id = r["id"].as_str().unwrap();
        let addresses = walk(&patients[id], &[Key("address")]);
        let i = position.entry(id.to_string()).or_default();
        assert!(
            crate::fhirpath_oracle::same(&parsed(&r["first"]), &addresses[0]),
            "Patient/{id}: address.first() is {} , the resource holds {}",
            r["first"],
            addresses[0]
        );
        assert!(crate::fhirpath_oracle::same(
            &parsed(&r["item"]),
            &addresses[*i]
        ));
        assert_eq!(r["city"], addresses[*i]["city"]);
        extended += usize::from(addresses[*i].get("extension").is_some());
        *i += 1;
    }
    assert!(extended > 0, "Synthea's addresses carry a geolocation");
    let media = resources(&inputs, "Media");
    let view = json!({"resource": "Media", "select": [{"column": [
        {"name": "id", "path": "getResourceKey()"},
        {"name": "content", "path": "content"}]}]});
    let mut with_data = 0;
    for r in rows(&shell, view) {
        let want = &media[r["id"].as_str().unwrap()]["content"];
        let got = parsed(&r["content"]);
        assert_eq!(&got, want, "Media content");
        with_data += usize::from(want.get("data").is_some());
    }
    assert!(with_data > 0, "the examples' attachments carry data");
}
