//! Each example query of `examples/queries/`, run on the small Synthea set and checked against an
//! answer computed independently from the NDJSON.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::Value;

use crate::sql::{ndjson, query};

fn run(file: &str) -> Vec<Vec<String>> {
    let sql = std::fs::read_to_string(format!(
        "{}/examples/queries/{file}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    query(&sql)[1..].to_vec()
}

/// The id a Reference's `reference` text ends with.
pub fn id_of(reference: &Value) -> String {
    reference["reference"]
        .as_str()
        .unwrap()
        .rsplit(['/', ':'])
        .next()
        .unwrap()
        .to_string()
}

/// Microseconds since the epoch of a FHIR date (`2020-01-01`, as UTC midnight) or dateTime
/// with its offset, read with chrono (not the crate's own parser).
fn micros(s: &str) -> i64 {
    match chrono::DateTime::parse_from_rfc3339(s) {
        Ok(t) => t.timestamp_micros(),
        Err(_) => chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
            .timestamp_micros(),
    }
}

fn has(cc: &Value, system: &str, code: &str) -> bool {
    cc["coding"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["system"] == system && c["code"] == code)
}

fn rows(v: Vec<Vec<String>>) -> Vec<Vec<String>> {
    v
}

#[test]
fn q01_patients_by_gender_and_age_band() {
    let ref_date = micros("2020-01-01T00:00:00Z");
    let mut want: BTreeMap<(String, i64), u64> = BTreeMap::new();
    for p in ndjson("Patient") {
        let age = (ref_date - micros(p["birthDate"].as_str().unwrap())) as f64 / 1e6 / 31_557_600.0;
        *want
            .entry((
                p["gender"].as_str().unwrap().into(),
                (age / 10.0).floor() as i64 * 10,
            ))
            .or_default() += 1;
    }
    let want: Vec<Vec<String>> = want
        .into_iter()
        .map(|((g, b), n)| vec![g, b.to_string(), n.to_string()])
        .collect();
    assert_eq!(run("01_patients_by_gender_and_age_band.sql"), want);
}

#[test]
fn q02_most_common_conditions() {
    let mut counts: HashMap<(String, String), u64> = HashMap::new();
    for c in ndjson("Condition") {
        for coding in c["code"]["coding"].as_array().unwrap() {
            if coding["system"] == "http://snomed.info/sct" {
                let key = (
                    coding["code"].as_str().unwrap().into(),
                    coding["display"].as_str().unwrap().into(),
                );
                *counts.entry(key).or_default() += 1;
            }
        }
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0 .0.cmp(&b.0 .0)));
    let want: Vec<Vec<String>> = v
        .into_iter()
        .take(5)
        .map(|((c, d), n)| vec![c, d, n.to_string()])
        .collect();
    assert_eq!(run("02_most_common_conditions.sql"), want);
}

#[test]
fn q03_latest_glucose_per_patient() {
    let mut latest: BTreeMap<String, (i64, f64, String)> = BTreeMap::new();
    for o in ndjson("Observation") {
        if !has(&o["code"], "http://loinc.org", "2339-0") {
            continue;
        }
        let t = micros(o["effectiveDateTime"].as_str().unwrap());
        let v = o["valueQuantity"]["value"].as_f64().unwrap();
        let e = latest
            .entry(id_of(&o["subject"]))
            .or_insert((i64::MIN, 0.0, String::new()));
        if t > e.0 {
            *e = (t, v, o["valueQuantity"]["unit"].as_str().unwrap().into());
        }
    }
    let got = run("03_latest_glucose_per_patient.sql");
    assert_eq!(got.len(), latest.len());
    for (row, (patient, (_, value, unit))) in got.iter().zip(latest) {
        assert_eq!(row[0], patient);
        assert!(
            (row[1].parse::<f64>().unwrap() - value).abs() < 1e-9,
            "{row:?} vs {value}"
        );
        assert_eq!(row[2], unit);
    }
}

#[test]
fn q04_encounters_per_year() {
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for e in ndjson("Encounter") {
        *want
            .entry(e["period"]["start"].as_str().unwrap()[..4].to_string())
            .or_default() += 1;
    }
    let want: Vec<Vec<String>> = want
        .into_iter()
        .map(|(y, n)| vec![y, n.to_string()])
        .collect();
    assert_eq!(run("04_encounters_per_year.sql"), want);
}

#[test]
fn q05_medication_requests_per_patient() {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for m in ndjson("MedicationRequest") {
        *counts.entry(id_of(&m["subject"])).or_default() += 1;
    }
    let mut want: Vec<(u64, String, String)> = ndjson("Patient")
        .iter()
        .map(|p| {
            let id = p["id"].as_str().unwrap().to_string();
            (
                counts.get(&id).copied().unwrap_or(0),
                id,
                p["name"][0]["family"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    want.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let want: Vec<Vec<String>> = want
        .into_iter()
        .map(|(n, id, f)| vec![id, f, n.to_string()])
        .collect();
    assert_eq!(run("05_medication_requests_per_patient.sql"), want);
}

#[test]
fn q06_prediabetes_with_high_glucose() {
    let pre: BTreeSet<String> = ndjson("Condition")
        .iter()
        .filter(|c| has(&c["code"], "http://snomed.info/sct", "15777000"))
        .map(|c| id_of(&c["subject"]))
        .collect();
    let high: BTreeSet<String> = ndjson("Observation")
        .iter()
        .filter(|o| {
            has(&o["code"], "http://loinc.org", "2339-0")
                && o["valueQuantity"]["value"].as_f64().unwrap() > 95.0
        })
        .map(|o| id_of(&o["subject"]))
        .collect();
    let want: Vec<Vec<String>> = pre.intersection(&high).map(|p| vec![p.clone()]).collect();
    assert!(!want.is_empty());
    assert_eq!(rows(run("06_prediabetes_with_high_glucose.sql")), want);
}

#[test]
fn q07_observations_by_category() {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for o in ndjson("Observation") {
        for cat in o["category"].as_array().unwrap() {
            *counts
                .entry(cat["coding"][0]["code"].as_str().unwrap().into())
                .or_default() += 1;
        }
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let want: Vec<Vec<String>> = v.into_iter().map(|(c, n)| vec![c, n.to_string()]).collect();
    assert_eq!(run("07_observations_by_category.sql"), want);
}

#[test]
fn q08_immunizations_by_vaccine() {
    let mut doses: HashMap<(String, String), (u64, BTreeSet<String>)> = HashMap::new();
    for i in ndjson("Immunization") {
        let key = (
            i["vaccineCode"]["coding"][0]["code"]
                .as_str()
                .unwrap()
                .to_string(),
            i["vaccineCode"]["text"].as_str().unwrap().to_string(),
        );
        let e = doses.entry(key).or_default();
        e.0 += 1;
        e.1.insert(id_of(&i["patient"]));
    }
    let mut v: Vec<_> = doses.into_iter().collect();
    v.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0 .0.cmp(&b.0 .0)));
    let got = run("08_immunizations_by_vaccine.sql");
    assert_eq!(got.len(), v.len());
    for (row, ((code, _text), (n, patients))) in got.iter().zip(v) {
        // The text may hold commas: compare the code and the two counts at the ends.
        assert_eq!(row[0], code);
        assert_eq!(row[row.len() - 2], n.to_string());
        assert_eq!(row[row.len() - 1], patients.len().to_string());
    }
}

#[test]
fn q09_race_from_extension() {
    let mut counts: HashMap<String, u64> = HashMap::new();
    for p in ndjson("Patient") {
        for e in p["extension"].as_array().unwrap() {
            if e["url"] == "http://hl7.org/fhir/us/core/StructureDefinition/us-core-race" {
                for inner in e["extension"].as_array().unwrap() {
                    if inner["url"] == "text" {
                        *counts
                            .entry(inner["valueString"].as_str().unwrap().into())
                            .or_default() += 1;
                    }
                }
            }
        }
    }
    let mut v: Vec<_> = counts.into_iter().collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let want: Vec<Vec<String>> = v.into_iter().map(|(r, n)| vec![r, n.to_string()]).collect();
    assert_eq!(run("09_race_from_extension.sql"), want);
}
