//! The bodies of the fuzz targets (`fuzz/`, cargo-fuzz with libFuzzer), here so that the test
//! suite can run them too, over the seed corpora and every input a fuzzer ever crashed on.
//!
//! Each takes arbitrary bytes and panics only on a bug: a crash, or a broken property.

use std::sync::OnceLock;

use crate::json::{self, Json};

/// The JSON parser: never panics; accepts what serde_json accepts and nothing else; what it
/// parses writes back to text it parses to the same.
pub fn json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let ours = json::parse(text);
    // serde_json refuses nesting deeper than 128; fewer brackets than that cannot nest deeper.
    if text.bytes().filter(|b| matches!(b, b'[' | b'{')).count() < 128 {
        let theirs = serde_json::from_str::<serde::de::IgnoredAny>(text);
        assert_eq!(
            ours.is_ok(),
            theirs.is_ok(),
            "serde_json and we disagree: {:?} {:?}",
            ours.as_ref().err(),
            theirs.err()
        );
    }
    let Ok(doc) = ours else {
        return;
    };
    let mut written = String::new();
    doc.write_to(&mut written);
    let again = json::parse(&written).expect("what we write parses");
    assert_eq!(
        again.canonical(),
        doc.canonical(),
        "a round trip changed the value"
    );
}

/// The resource decoder and encoder: any JSON object as any resource type (chosen by the first
/// byte) decodes without panicking into a batch of one row, and encodes back to JSON.
pub fn resource(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    // A version and a type of it, from the first byte.
    let version = crate::schema::FhirVersion::ALL[pick as usize % 3];
    let types = version.model().resource_types();
    let rt = types[(pick as usize / 3) % types.len()];
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let Ok(doc) = json::parse(text) else {
        return;
    };
    if !matches!(doc, Json::Obj(_)) {
        return;
    }
    let mut decoder = crate::decode::ResourceDecoder::new(version, rt).expect("a resource type");
    decoder.decode(&doc);
    let batch = decoder.flush().expect("a batch of the schema");
    assert_eq!(batch.num_rows(), 1);
    let members = crate::schema::node::resource_members(version, rt).expect("a resource type");
    let back = crate::encode::encode_row(rt, &members, &batch, 0).expect("encodes");
    let mut out = String::new();
    back.write_to(&mut out);
    json::parse(&out).expect("the encoded resource is JSON");
}

/// FHIRPath: the parser never panics.
pub fn fhirpath(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::view::fhirpath::parse::parse(text);
    }
}

/// ViewDefinitions: any JSON is read, checked and (when valid) compiled into a plan over its
/// resource's schema and into every dialect's SQL without panicking.
pub fn view(data: &[u8]) {
    use crate::view::lower::{to_sql, Dialect, SqlOptions};
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let Ok(view) = crate::view::definition::ViewDefinition::from_json(&value) else {
        return;
    };
    static CTX: OnceLock<datafusion::prelude::SessionContext> = OnceLock::new();
    let ctx = CTX.get_or_init(datafusion::prelude::SessionContext::new);
    let Some(schema) = crate::schema::node::arrow_schema(view.fhir_version, &view.resource) else {
        return;
    };
    let empty = arrow::array::RecordBatch::new_empty(std::sync::Arc::new(schema));
    let table = ctx.read_batch(empty).expect("an empty table");
    let _ = crate::view::plan::plan(&view, table);
    for dialect in [
        Dialect::Duckdb,
        Dialect::Spark,
        Dialect::Trino,
        Dialect::Bigquery,
        Dialect::Snowflake,
    ] {
        let _ = to_sql(&view, &SqlOptions::new(dialect));
    }
}
