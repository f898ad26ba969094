use fhir2parquet::schema::node::{arrow_schema, width_and_depth};

use crate::shared;

#[test]
fn committed_models_are_what_the_generator_writes() {
    for (v, committed) in [
        ("r4", include_str!("../../schemas/r4/model.json")),
        ("r4b", include_str!("../../schemas/r4b/model.json")),
        ("r5", include_str!("../../schemas/r5/model.json")),
    ] {
        let fresh = fhir2parquet::schema::generate::generate_model(&shared(&format!(
            "fhir-definitions/{v}"
        )))
        .unwrap();
        assert!(
            fresh == committed,
            "schemas/{v}/model.json is stale: run `cargo run --bin fhir-schema-gen -- ../shared/fhir-definitions/{v} schemas/{v}`"
        );
    }
}

#[test]
fn every_resource_type_of_every_version_has_a_schema_within_bigquery_limits() {
    for (v, count) in [
        (fhir2parquet::schema::FhirVersion::R4, 146),
        (fhir2parquet::schema::FhirVersion::R4b, 141),
        (fhir2parquet::schema::FhirVersion::R5, 158),
    ] {
        let types = v.model().resource_types();
        assert_eq!(types.len(), count, "{v}");
        for t in types {
            let s = arrow_schema(v, t).unwrap();
            let (leaves, depth) = width_and_depth(&s);
            assert!(leaves <= 10_000, "{v} {t} has {leaves} leaf columns");
            assert!(depth <= 15, "{v} {t} nests {depth} levels");
            // The schema is a function of the version and type alone.
            assert_eq!(s, arrow_schema(v, t).unwrap());
        }
    }
}

/// A primitive's extensions (`_birthDate`) have one shape in every version: the typed values
/// of an extension are the same types, in the same order, in R4, R4B and R5.
#[test]
fn primitive_extensions_have_one_shape_in_every_version() {
    use fhir2parquet::schema::FhirVersion;
    let shape = |v: FhirVersion| {
        arrow_schema(v, "Patient")
            .unwrap()
            .field_with_name("_birthDate")
            .unwrap()
            .data_type()
            .clone()
    };
    assert_eq!(shape(FhirVersion::R4), shape(FhirVersion::R4b));
    assert_eq!(shape(FhirVersion::R4), shape(FhirVersion::R5));
    // And the primitive values of a resource's own extensions (built from each version's
    // Extension).
    for v in FhirVersion::ALL {
        let ext = arrow_schema(v, "Patient").unwrap();
        let arrow::datatypes::DataType::List(item) = ext
            .field_with_name("extension")
            .unwrap()
            .data_type()
            .clone()
        else {
            panic!()
        };
        let arrow::datatypes::DataType::Struct(fields) = item.data_type() else {
            panic!()
        };
        let values: Vec<&String> = fields
            .iter()
            .map(|f| f.name())
            .filter(|n| n.starts_with("value"))
            .collect();
        let arrow::datatypes::DataType::Struct(prim) = shape(v) else {
            panic!()
        };
        let arrow::datatypes::DataType::List(pitem) = prim[1].data_type().clone() else {
            panic!()
        };
        let arrow::datatypes::DataType::Struct(pfields) = pitem.data_type() else {
            panic!()
        };
        let pvalues: Vec<&String> = pfields
            .iter()
            .map(|f| f.name())
            .filter(|n| n.starts_with("value"))
            .collect();
        // The primitive values first in both; a primitive's extensions leave out the complex.
        assert_eq!(values[..pvalues.len()], pvalues[..], "{v}");
    }
}

#[test]
fn mapping_follows_the_contract() {
    use arrow::datatypes::{DataType, TimeUnit};
    let s = arrow_schema(fhir2parquet::schema::FhirVersion::R4, "Observation").unwrap();
    let ty = |n: &str| s.field_with_name(n).unwrap().data_type().clone();
    assert_eq!(
        ty("issued"),
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(ty("effectiveDateTime"), DataType::Utf8);
    assert_eq!(
        ty("effectiveDateTime_ts"),
        DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
    );
    assert_eq!(ty("valueInteger"), DataType::Int32);
    assert_eq!(ty("valueBoolean"), DataType::Boolean);
    let DataType::Struct(q) = ty("valueQuantity") else {
        panic!()
    };
    assert_eq!(
        q.find("value").unwrap().1.data_type(),
        &DataType::Decimal128(38, 18)
    );
    assert!(matches!(ty("category"), DataType::List(_)));
    assert!(matches!(ty("_status"), DataType::Struct(_)));
    let p = arrow_schema(fhir2parquet::schema::FhirVersion::R4, "Patient").unwrap();
    assert!(matches!(
        p.field_with_name("contained").unwrap().data_type(),
        DataType::List(_)
    ));
    let b = arrow_schema(fhir2parquet::schema::FhirVersion::R4, "Binary").unwrap();
    assert_eq!(
        b.field_with_name("data").unwrap().data_type(),
        &DataType::Binary
    );
}

#[test]
fn schema_command_prints_tree_json_and_list() {
    let out = crate::bin(&["schema", "Patient"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("  birthDate: string"), "{text}");
    assert!(text.contains("  birthDate_ts: timestamp(us, UTC)"));
    let out = crate::bin(&["schema", "Observation", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(v["fields"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["name"] == "valueQuantity"));
    let out = crate::bin(&["schema", "--list"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 146);
    let out = crate::bin(&["schema", "patient"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--list"));
}

/// `--partition-by` takes the elements the definitions give a single date, dateTime, instant or
/// Period (a choice by its name when one of its types is one of those): read here from the
/// StructureDefinitions, for every resource type.
#[test]
fn partition_elements_are_the_definitions_single_dates() {
    let path = crate::shared("fhir-definitions/r4/Bundle-resources.json");
    let bundle: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut types = 0;
    for entry in bundle["entry"].as_array().unwrap() {
        let sd = &entry["resource"];
        if sd["resourceType"] != "StructureDefinition"
            || sd["kind"] != "resource"
            || sd["derivation"] != "specialization"
            || sd["abstract"] == true
        {
            continue;
        }
        let t = sd["type"].as_str().unwrap();
        let mut want = Vec::new();
        for el in sd["snapshot"]["element"].as_array().unwrap() {
            let p = el["path"].as_str().unwrap();
            let Some(name) = p.strip_prefix(&format!("{t}.")) else {
                continue;
            };
            if name.contains('.') || el["max"] != "1" {
                continue;
            }
            let dated = el["type"].as_array().into_iter().flatten().any(|ty| {
                matches!(
                    ty["code"].as_str(),
                    Some("date" | "dateTime" | "instant" | "Period")
                )
            });
            if dated {
                want.push(name.trim_end_matches("[x]").to_string());
            }
        }
        let mut got =
            fhir2parquet::convert::date_elements(fhir2parquet::schema::FhirVersion::R4, t);
        got.sort();
        want.sort();
        assert_eq!(got, want, "{t}");
        types += 1;
    }
    assert_eq!(types, 146);
}
