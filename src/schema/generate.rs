//! The schema generator: FHIR StructureDefinitions in, a compact model out.
//!
//! The model keeps just what the Arrow mapping needs: for every resource and data type the list of
//! its elements with cardinality and types, in the order of the specification. Nothing here is
//! specific to one FHIR version: point it at the `Bundle-*.json` files (or a folder of
//! StructureDefinitions) of R4, R4B or R5 and it writes that version's model.
//!
//! ```text
//! cargo run --bin fhir-schema-gen -- ../shared/fhir-definitions/r4 schemas/r4
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// Reads every StructureDefinition found in the JSON files of `dir` (bundles or single resources)
/// and renders the model file.
pub fn generate_model(dir: &Path) -> Result<String> {
    let mut files: Vec<_> = fs_err::read_dir(dir)
        .with_context(|| format!("cannot read the definitions folder {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut defs = Vec::new();
    for file in &files {
        let text = fs_err::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let value: Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", file.display()))?;
        collect_structure_definitions(value, &mut defs);
    }
    if defs.is_empty() {
        bail!("no StructureDefinition found in {}", dir.display());
    }
    render(&defs)
}

fn collect_structure_definitions(value: Value, out: &mut Vec<Value>) {
    match value.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => {
            if let Some(Value::Array(entries)) = value.get("entry") {
                for entry in entries {
                    if let Some(r) = entry.get("resource") {
                        collect_structure_definitions(r.clone(), out);
                    }
                }
            }
        }
        Some("StructureDefinition") => out.push(value),
        _ => {}
    }
}

fn render(defs: &[Value]) -> Result<String> {
    let mut version = None;
    let mut types = BTreeMap::new();
    for sd in defs {
        let kind = sd["kind"].as_str().unwrap_or_default();
        // Profiles (constraints) and logical models are not wire formats.
        if sd.get("derivation").and_then(Value::as_str) == Some("constraint") || kind == "logical" {
            continue;
        }
        let name = sd["type"]
            .as_str()
            .context("StructureDefinition without type")?;
        if version.is_none() {
            version = sd
                .get("fhirVersion")
                .and_then(Value::as_str)
                .map(str::to_string);
        }
        let mut t = String::new();
        write!(
            t,
            "    {{\"name\": {}, \"kind\": {}, \"abstract\": {}, \"base\": {}",
            json_str(name),
            json_str(kind),
            sd["abstract"].as_bool().unwrap_or(false),
            json_str(
                sd.get("baseDefinition")
                    .and_then(Value::as_str)
                    .and_then(|b| b.rsplit('/').next())
                    .unwrap_or("")
            )
        )?;
        if kind == "primitive-type" {
            t.push('}');
        } else {
            t.push_str(", \"elements\": [\n");
            let elements = sd["snapshot"]["element"]
                .as_array()
                .with_context(|| format!("{name} has no snapshot"))?;
            let lines: Vec<String> = elements
                .iter()
                .skip(1)
                .map(|e| element_line(name, e))
                .collect::<Result<_>>()?;
            t.push_str(
                &lines
                    .iter()
                    .map(|l| format!("      {}", json_str(l)))
                    .collect::<Vec<_>>()
                    .join(",\n"),
            );
            t.push_str("\n    ]}");
        }
        types.insert(name.to_string(), t);
    }
    let mut out = String::new();
    writeln!(out, "{{")?;
    writeln!(
        out,
        "  \"fhirVersion\": {},",
        json_str(version.as_deref().unwrap_or("unknown"))
    )?;
    writeln!(out, "  \"generator\": \"fhir-schema-gen\",")?;
    writeln!(out, "  \"types\": [")?;
    out.push_str(&types.into_values().collect::<Vec<_>>().join(",\n"));
    writeln!(out, "\n  ]\n}}")?;
    Ok(out)
}

/// One element as `path min..max types`, the path relative to the type, `A|B` for the types of a
/// choice and `@path` for a content reference (a recursive backbone element).
fn element_line(type_name: &str, e: &Value) -> Result<String> {
    let path = e["path"].as_str().context("element without path")?;
    let rel = path
        .strip_prefix(type_name)
        .and_then(|p| p.strip_prefix('.'))
        .with_context(|| format!("element {path} outside {type_name}"))?;
    let min = e["min"].as_u64().unwrap_or(0);
    let max = e["max"].as_str().unwrap_or("1");
    let types = if let Some(r) = e.get("contentReference").and_then(Value::as_str) {
        let target = r.trim_start_matches('#');
        let target = target.split_once('.').map(|(_, p)| p).unwrap_or(target);
        format!("@{target}")
    } else {
        let codes: Vec<String> = e["type"]
            .as_array()
            .map(|ts| ts.iter().map(type_code).collect())
            .unwrap_or_default();
        if codes.is_empty() {
            bail!("element {path} has no type");
        }
        codes.join("|")
    };
    Ok(format!("{rel} {min}..{max} {types}"))
}

/// The FHIR type of an element type. FHIRPath system types (`System.String` of `Resource.id`,
/// `Extension.url`, ...) carry their FHIR type in an extension.
fn type_code(t: &Value) -> String {
    let code = t["code"].as_str().unwrap_or("string");
    if let Some(system) = code.strip_prefix("http://hl7.org/fhirpath/System.") {
        if let Some(exts) = t.get("extension").and_then(Value::as_array) {
            for ext in exts {
                if ext["url"]
                    .as_str()
                    .is_some_and(|u| u.ends_with("structuredefinition-fhir-type"))
                {
                    if let Some(v) = ext["valueUrl"].as_str().or(ext["valueUri"].as_str()) {
                        return v.to_string();
                    }
                }
            }
        }
        return system.to_ascii_lowercase();
    }
    code.to_string()
}

fn json_str(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialize")
}
