//! A ViewDefinition read from JSON and checked: every error names where it is
//! (`select[1].column[0].path`).

use std::collections::HashMap;

use anyhow::{anyhow, bail, Result};
use base64::Engine as _;
use datafusion::common::ScalarValue;
use serde_json::Value;

use super::fhirpath::compile::Ty;
use super::fhirpath::parse::{parse, Ast};
use crate::schema::node::{DECIMAL_PRECISION, DECIMAL_SCALE};
use crate::schema::FhirVersion;

/// A checked ViewDefinition.
#[derive(Debug, Clone)]
pub struct ViewDefinition {
    pub name: Option<String>,
    pub resource: String,
    /// The FHIR versions the view says it is for (its `fhirVersion`; empty: any).
    pub fhir_versions: Vec<FhirVersion>,
    /// The FHIR version its paths are compiled against: the dataset's, set by
    /// [`ViewDefinition::for_version`]; before that R4 where the resource is an R4 type and the
    /// view allows R4, else the first version that has it.
    pub fhir_version: FhirVersion,
    pub constants: HashMap<String, (ScalarValue, Ty)>,
    /// `where[i].path`, with its location.
    pub filters: Vec<Expr>,
    pub select: Vec<Select>,
}

/// A FHIRPath expression and where it is in the view.
#[derive(Debug, Clone)]
pub struct Expr {
    pub at: String,
    pub text: String,
    pub ast: Ast,
}

#[derive(Debug, Clone)]
pub struct Select {
    pub at: String,
    pub columns: Vec<Column>,
    pub select: Vec<Select>,
    pub for_each: Option<(Expr, bool)>,
    pub repeat: Vec<Expr>,
    pub union_all: Vec<Select>,
}

#[derive(Debug, Clone)]
pub struct Column {
    pub at: String,
    pub name: String,
    pub path: Expr,
    pub collection: Option<bool>,
    pub fhir_type: Option<String>,
}

fn expr(v: Option<&Value>, at: &str) -> Result<Expr> {
    let text = match v {
        Some(Value::String(s)) => s.clone(),
        Some(_) => bail!("{at}: must be a FHIRPath expression (a string)"),
        None => bail!("{at}: is required"),
    };
    let ast = parse(&text).map_err(|e| anyhow!("{at}: {e}"))?;
    Ok(Expr {
        at: at.to_string(),
        text,
        ast,
    })
}

fn array<'a>(v: &'a Value, key: &str, at: &str) -> Result<&'a [Value]> {
    match v.get(key) {
        None => Ok(&[]),
        Some(Value::Array(a)) => Ok(a),
        Some(_) => bail!("{at}{key}: must be an array"),
    }
}

fn prefix(at: &str) -> String {
    if at.is_empty() {
        String::new()
    } else {
        format!("{at}.")
    }
}

impl ViewDefinition {
    /// Reads and checks a ViewDefinition. Paths are parsed here and type-checked when compiled.
    pub fn from_json(v: &Value) -> Result<ViewDefinition> {
        let obj = v
            .as_object()
            .ok_or_else(|| anyhow!("a ViewDefinition must be a JSON object"))?;
        if let Some(t) = obj.get("resourceType") {
            if t != "ViewDefinition" {
                bail!("resourceType: is {t}, not \"ViewDefinition\"");
            }
        }
        let resource = match obj.get("resource") {
            Some(Value::String(r)) => r.clone(),
            Some(_) => bail!("resource: must be a resource type name"),
            None => {
                bail!("resource: is required (the resource type the view reads, like \"Patient\")")
            }
        };
        let mut fhir_versions = Vec::new();
        for (i, code) in array(v, "fhirVersion", "")?.iter().enumerate() {
            let code = code.as_str().ok_or_else(|| {
                anyhow!("fhirVersion[{i}]: must be a FHIR version code (\"4.0.1\")")
            })?;
            // A release we have no model of (STU3, a ballot of R6) cannot be the data's.
            if let Some(v) = FhirVersion::from_release(code) {
                fhir_versions.push(v);
            }
        }
        let allowed = |v: &FhirVersion| fhir_versions.is_empty() || fhir_versions.contains(v);
        let Some(fhir_version) = FhirVersion::ALL
            .into_iter()
            .filter(allowed)
            .find(|v| v.has_resource(&resource))
        else {
            bail!(
                "resource: {resource:?} is not a FHIR resource type{}",
                match fhir_versions.is_empty() {
                    true => String::new(),
                    false => " of the view's fhirVersion".to_string(),
                }
            );
        };
        let name = obj.get("name").and_then(Value::as_str).map(str::to_string);
        let mut constants = HashMap::new();
        for (i, c) in array(v, "constant", "")?.iter().enumerate() {
            let at = format!("constant[{i}]");
            let (name, value) = constant(c, &at)?;
            constants.insert(name, value);
        }
        let filters = array(v, "where", "")?
            .iter()
            .enumerate()
            .map(|(i, w)| expr(w.get("path"), &format!("where[{i}].path")))
            .collect::<Result<_>>()?;
        let select: Vec<Select> = array(v, "select", "")?
            .iter()
            .enumerate()
            .map(|(i, s)| Select::from_json(s, &format!("select[{i}]")))
            .collect::<Result<_>>()?;
        if select.is_empty() {
            bail!("select: a view needs at least one select with columns");
        }
        let view = ViewDefinition {
            name,
            resource,
            fhir_versions,
            fhir_version,
            constants,
            filters,
            select,
        };
        let mut seen: HashMap<String, String> = HashMap::new();
        for s in &view.select {
            s.check_names(&mut seen)?;
        }
        Ok(view)
    }
}

impl ViewDefinition {
    /// The view compiled against `version`, the data's: an error when the view's `fhirVersion`
    /// leaves it out or its resource is no type of that version.
    pub fn for_version(&self, version: FhirVersion) -> Result<ViewDefinition> {
        if !self.fhir_versions.is_empty() && !self.fhir_versions.contains(&version) {
            let said: Vec<&str> = self.fhir_versions.iter().map(|v| v.release()).collect();
            bail!(
                "the view is for FHIR {} (its fhirVersion) and the data is {version} ({})",
                said.join(", "),
                version.release()
            );
        }
        if !version.has_resource(&self.resource) {
            bail!(
                "resource: {} is not a resource type of FHIR {version} ({}), the data's version",
                self.resource,
                version.release()
            );
        }
        let mut view = self.clone();
        view.fhir_version = version;
        Ok(view)
    }
}

impl Select {
    fn from_json(v: &Value, at: &str) -> Result<Select> {
        if !v.is_object() {
            bail!("{at}: must be an object");
        }
        let p = prefix(at);
        let columns = array(v, "column", &p)?
            .iter()
            .enumerate()
            .map(|(i, c)| Column::from_json(c, &format!("{p}column[{i}]")))
            .collect::<Result<_>>()?;
        let nested = |key: &str| -> Result<Vec<Select>> {
            array(v, key, &p)?
                .iter()
                .enumerate()
                .map(|(i, s)| Select::from_json(s, &format!("{p}{key}[{i}]")))
                .collect()
        };
        let for_each = match (v.get("forEach"), v.get("forEachOrNull")) {
            (Some(_), Some(_)) => bail!("{p}forEach: forEach and forEachOrNull cannot both be set"),
            (Some(f), None) => Some((expr(Some(f), &format!("{p}forEach"))?, false)),
            (None, Some(f)) => Some((expr(Some(f), &format!("{p}forEachOrNull"))?, true)),
            (None, None) => None,
        };
        let repeat = array(v, "repeat", &p)?
            .iter()
            .enumerate()
            .map(|(i, r)| expr(Some(r), &format!("{p}repeat[{i}]")))
            .collect::<Result<Vec<_>>>()?;
        if for_each.is_some() && !repeat.is_empty() {
            bail!("{p}repeat: cannot be combined with forEach in one select");
        }
        Ok(Select {
            at: at.to_string(),
            columns,
            select: nested("select")?,
            for_each,
            repeat,
            union_all: nested("unionAll")?,
        })
    }

    /// The output column names, in order (the first branch for a unionAll).
    pub fn column_names(&self) -> Vec<String> {
        let mut out: Vec<String> = self.columns.iter().map(|c| c.name.clone()).collect();
        for s in &self.select {
            out.extend(s.column_names());
        }
        if let Some(u) = self.union_all.first() {
            out.extend(u.column_names());
        }
        out
    }

    fn check_names(&self, seen: &mut HashMap<String, String>) -> Result<()> {
        for c in &self.columns {
            if let Some(first) = seen.insert(c.name.clone(), c.at.clone()) {
                bail!(
                    "{}.name: the column name {:?} is already used by {first}",
                    c.at,
                    c.name
                );
            }
        }
        for s in &self.select {
            s.check_names(seen)?;
        }
        if let Some((first, rest)) = self.union_all.split_first() {
            let names = first.column_names();
            for u in rest {
                let other = u.column_names();
                if other != names {
                    bail!(
                        "{}: a unionAll branch has the columns ({}), the first has ({}): every \
                         branch needs the same names in the same order",
                        u.at,
                        other.join(", "),
                        names.join(", ")
                    );
                }
            }
            let before = seen.clone();
            first.check_names(seen)?;
            for u in rest {
                u.check_names(&mut before.clone())?;
            }
        }
        Ok(())
    }
}

impl Column {
    fn from_json(v: &Value, at: &str) -> Result<Column> {
        let name = match v.get("name") {
            Some(Value::String(n)) => n.clone(),
            _ => bail!("{at}.name: is required (a string)"),
        };
        let valid = name.starts_with(|c: char| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            bail!("{at}.name: {name:?} is not a valid column name (letters, digits and _, starting with a letter)");
        }
        let collection = match v.get("collection") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(_) => bail!("{at}.collection: must be true or false"),
        };
        Ok(Column {
            at: at.to_string(),
            name,
            path: expr(v.get("path"), &format!("{at}.path"))?,
            collection,
            fhir_type: v.get("type").and_then(Value::as_str).map(str::to_string),
        })
    }
}

/// A constant's name and value: `{"name": "x", "valueString": "a"}`.
fn constant(c: &Value, at: &str) -> Result<(String, (ScalarValue, Ty))> {
    let obj = c
        .as_object()
        .ok_or_else(|| anyhow!("{at}: must be an object"))?;
    let name = obj
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow!("{at}.name: is required"))?
        .to_string();
    let (key, value) = obj
        .iter()
        .find(|(k, _)| k.starts_with("value"))
        .ok_or_else(|| anyhow!("{at}: has no value (valueString, valueInteger, ...)"))?;
    let t = &key["value".len()..];
    let mut first = t.chars();
    let fhir = match first.next() {
        Some(c) if c.is_ascii_uppercase() => {
            format!("{}{}", c.to_ascii_lowercase(), first.as_str())
        }
        _ => bail!(
            "{at}.{key}: a constant's value is named after its type: valueString, valueInteger, \
             valueBoolean, valueDecimal, valueDate, ..."
        ),
    };
    let bad = || anyhow!("{at}.{key}: is not a valid {fhir}");
    use arrow::datatypes::{DataType, TimeUnit};
    let out = match fhir.as_str() {
        "boolean" => (
            ScalarValue::Boolean(Some(value.as_bool().ok_or_else(bad)?)),
            DataType::Boolean,
        ),
        "integer" | "positiveInt" | "unsignedInt" => (
            ScalarValue::Int32(Some(
                value
                    .as_i64()
                    .and_then(|i| i32::try_from(i).ok())
                    .ok_or_else(bad)?,
            )),
            DataType::Int32,
        ),
        "decimal" => {
            let text = match value {
                Value::Number(n) => n.to_string(),
                _ => return Err(bad()),
            };
            let (v, _) = crate::decode::decimal::parse_decimal(&text).ok_or_else(bad)?;
            (
                ScalarValue::Decimal128(Some(v), DECIMAL_PRECISION, DECIMAL_SCALE),
                DataType::Decimal128(DECIMAL_PRECISION, DECIMAL_SCALE),
            )
        }
        "instant" => {
            let s = value.as_str().ok_or_else(bad)?;
            let micros = crate::decode::datetime::parse_instant(s).ok_or_else(bad)?;
            (
                ScalarValue::TimestampMicrosecond(Some(micros), Some("UTC".into())),
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            )
        }
        "base64Binary" => {
            let s = value.as_str().ok_or_else(bad)?;
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|_| bad())?;
            (ScalarValue::Binary(Some(bytes)), DataType::Binary)
        }
        "string" | "code" | "id" | "uri" | "url" | "canonical" | "oid" | "uuid" | "markdown"
        | "date" | "dateTime" | "time" => (
            ScalarValue::Utf8(Some(value.as_str().ok_or_else(bad)?.to_string())),
            DataType::Utf8,
        ),
        _ => bail!("{at}.{key}: constants of type {fhir} are not supported"),
    };
    Ok((name, (out.0, Ty::prim(&fhir, out.1))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn with_constant(c: Value) -> Result<ViewDefinition> {
        ViewDefinition::from_json(&json!({
            "resourceType": "ViewDefinition", "resource": "Patient", "status": "active",
            "constant": [c],
            "select": [{"column": [{"name": "id", "path": "id"}]}]
        }))
    }

    #[test]
    fn a_constant_without_its_type_is_an_error_naming_it() {
        for key in ["value", "valueé", "valuestring"] {
            let e = with_constant(json!({"name": "x", key: "y"})).unwrap_err();
            let e = format!("{e:#}");
            assert!(
                e.contains(&format!("constant[0].{key}")) && e.contains("valueString"),
                "{e}"
            );
        }
        let v = with_constant(json!({"name": "x", "valueString": "y"})).unwrap();
        assert_eq!(v.constants["x"].0, ScalarValue::Utf8(Some("y".into())));
    }
}
