//! `fhir2parquet schema`: a type's columns as a tree, or as Arrow JSON.

use std::io::Write;

use anyhow::{bail, Result};
use arrow::datatypes::{DataType, Field};

use crate::schema::node::{arrow_schema, width_and_depth};
use crate::schema::FhirVersion;

/// How a schema is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SchemaFormat {
    /// An indented tree of columns and types.
    #[default]
    Tree,
    /// The Arrow schema as JSON.
    Json,
}

impl crate::choice::Choice for SchemaFormat {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (
            SchemaFormat::Tree,
            "tree",
            "An indented tree of columns and types",
        ),
        (SchemaFormat::Json, "json", "The Arrow schema as JSON"),
    ];
}

/// What `schema` prints.
#[derive(Clone, Debug, Default)]
pub struct SchemaOptions {
    /// The resource type (Patient, Observation, ...); None with `list`.
    pub resource_type: Option<String>,
    /// List the resource types instead.
    pub list: bool,
    pub format: SchemaFormat,
    /// The FHIR version whose schema is printed.
    pub fhir_version: FhirVersion,
}

/// Prints a resource type's schema, or the list of resource types.
pub fn run(args: &SchemaOptions, out: &mut dyn Write) -> Result<()> {
    if args.list {
        for t in args.fhir_version.model().resource_types() {
            writeln!(out, "{t}")?;
        }
        return Ok(());
    }
    let t = args.resource_type.as_deref().unwrap_or_default();
    let v = args.fhir_version;
    let Some(schema) = arrow_schema(v, t) else {
        let elsewhere: Vec<&str> = FhirVersion::ALL
            .into_iter()
            .filter(|o| o.has_resource(t))
            .map(FhirVersion::name)
            .collect();
        if !elsewhere.is_empty() {
            bail!(
                "{t} is not a resource type of FHIR {v} ({}) but of {}: add --fhir-version {}",
                v.release(),
                elsewhere.join(", "),
                elsewhere[elsewhere.len() - 1]
            );
        }
        bail!("{t:?} is not a FHIR {v} resource type: `fhir2parquet schema --list --fhir-version {v}` lists them (names are case-sensitive)");
    };
    match args.format {
        SchemaFormat::Json => writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&schema_json(&schema))?
        )?,
        SchemaFormat::Tree => {
            let (leaves, depth) = width_and_depth(&schema);
            writeln!(out, "{t} ({leaves} leaf columns, nesting depth {depth})")?;
            for f in schema.fields() {
                tree(f, 1, out)?;
            }
        }
    }
    Ok(())
}

fn tree(f: &Field, depth: usize, out: &mut dyn Write) -> Result<()> {
    let pad = "  ".repeat(depth);
    let (dt, list) = match f.data_type() {
        DataType::List(item) => (item.data_type(), "[]"),
        dt => (dt, ""),
    };
    match dt {
        DataType::Struct(children) => {
            writeln!(out, "{pad}{}{list}: struct", f.name())?;
            for c in children {
                tree(c, depth + 1, out)?;
            }
        }
        dt => writeln!(out, "{pad}{}{list}: {}", f.name(), type_name(dt))?,
    }
    Ok(())
}

fn type_name(dt: &DataType) -> String {
    match dt {
        DataType::Utf8 => "string".into(),
        DataType::Boolean => "boolean".into(),
        DataType::Int32 => "int32".into(),
        DataType::Binary => "binary".into(),
        DataType::Decimal128(p, s) => format!("decimal({p},{s})"),
        DataType::Timestamp(_, _) => "timestamp(us, UTC)".into(),
        DataType::Time64(_) => "time(us)".into(),
        other => other.to_string(),
    }
}

fn schema_json(schema: &arrow::datatypes::Schema) -> serde_json::Value {
    fn field(f: &Field) -> serde_json::Value {
        let (ty, children) = match f.data_type() {
            DataType::List(item) => ("list".to_string(), vec![field(item)]),
            DataType::Struct(cs) => ("struct".to_string(), cs.iter().map(|c| field(c)).collect()),
            dt => (dt.to_string(), vec![]),
        };
        let mut v = serde_json::json!({"name": f.name(), "type": ty, "nullable": f.is_nullable()});
        if !children.is_empty() {
            v["children"] = serde_json::Value::Array(children);
        }
        v
    }
    serde_json::json!({"fields": schema.fields().iter().map(|f| field(f)).collect::<Vec<_>>()})
}
