//! The compact model written by the generator, loaded back.

use std::collections::HashMap;

use anyhow::{Context, Result};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct RawModel {
    #[serde(rename = "fhirVersion")]
    fhir_version: String,
    types: Vec<RawType>,
}

#[derive(Debug, Deserialize)]
struct RawType {
    name: String,
    kind: String,
    #[serde(rename = "abstract")]
    is_abstract: bool,
    #[serde(default)]
    base: String,
    #[serde(default)]
    elements: Vec<String>,
}

/// Every type of one FHIR version.
#[derive(Debug)]
pub struct Model {
    pub fhir_version: String,
    pub types: HashMap<String, TypeDef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Primitive,
    Complex,
    Resource,
}

#[derive(Debug)]
pub struct TypeDef {
    pub name: String,
    pub kind: Kind,
    pub is_abstract: bool,
    /// The type it specializes (`code`: `string`, `Age`: `Quantity`, `Patient`:
    /// `DomainResource`); None at the root.
    pub base: Option<String>,
    pub elements: Vec<ElementDef>,
}

/// One element of a type, `path` relative to the type (`referenceRange.low`, `value[x]`).
#[derive(Debug, Clone)]
pub struct ElementDef {
    pub path: String,
    pub min: u32,
    pub repeated: bool,
    /// The element's types; one for most, several for a choice (`value[x]`).
    pub types: Vec<String>,
    /// For a recursive backbone element, the path of the element whose content it repeats.
    pub content_ref: Option<String>,
}

impl ElementDef {
    /// The last segment of the path (`low`, `value[x]`).
    pub fn name(&self) -> &str {
        self.path.rsplit('.').next().unwrap_or(&self.path)
    }
    /// The path of the parent element ("" for the type itself).
    pub fn parent(&self) -> &str {
        self.path.rsplit_once('.').map(|(p, _)| p).unwrap_or("")
    }
}

impl Model {
    pub fn parse(text: &str) -> Result<Model> {
        let raw: RawModel = serde_json::from_str(text).context("the schema model is not valid")?;
        let mut types = HashMap::new();
        for t in raw.types {
            let kind = match t.kind.as_str() {
                "primitive-type" => Kind::Primitive,
                "resource" => Kind::Resource,
                _ => Kind::Complex,
            };
            let elements = t
                .elements
                .iter()
                .map(|line| {
                    parse_element(line)
                        .with_context(|| format!("bad element line {line:?} in {}", t.name))
                })
                .collect::<Result<_>>()?;
            types.insert(
                t.name.clone(),
                TypeDef {
                    name: t.name,
                    kind,
                    is_abstract: t.is_abstract,
                    base: Some(t.base).filter(|b| !b.is_empty()),
                    elements,
                },
            );
        }
        Ok(Model {
            fhir_version: raw.fhir_version,
            types,
        })
    }

    /// The concrete resource types, sorted by name.
    pub fn resource_types(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .types
            .values()
            .filter(|t| t.kind == Kind::Resource && !t.is_abstract)
            .map(|t| t.name.as_str())
            .collect();
        v.sort_unstable();
        v
    }

    pub fn get(&self, name: &str) -> Option<&TypeDef> {
        self.types.get(name)
    }

    /// Whether `name` is `ancestor` or specializes it, directly or not (`code` is a `string`,
    /// `Age` a `Quantity`, `Patient` a `Resource`).
    pub fn is_a(&self, name: &str, ancestor: &str) -> bool {
        let mut t = Some(name);
        // The chains are a few types long; the bound guards a model with a loop.
        for _ in 0..16 {
            match t {
                Some(n) if n == ancestor => return true,
                Some(n) => t = self.get(n).and_then(|d| d.base.as_deref()),
                None => return false,
            }
        }
        false
    }

    /// The type of the element a JSON path of a resource or datatype reaches
    /// (`component.valueQuantity.value` of Observation: `decimal`), through backbone elements,
    /// datatypes and choices by their JSON names (`valueQuantity`); `None` where the model
    /// defines no such element.
    pub fn type_at(&self, type_name: &str, path: &str) -> Option<String> {
        let mut def = self.get(type_name)?;
        let mut prefix = String::new();
        let mut current: Option<String> = None;
        for segment in path.split('.') {
            let segment = segment.strip_prefix('_').unwrap_or(segment);
            if let Some(t) = &current {
                // Into the datatype the previous segment reached.
                if t != "BackboneElement" && t != "Element" {
                    def = self.get(t)?;
                    prefix.clear();
                }
            }
            let (element, ty) = def
                .elements
                .iter()
                .filter(|e| e.parent() == prefix)
                .find_map(|e| element_named(e, segment))?;
            prefix = match &element.content_ref {
                Some(target) => target.clone(),
                None => element.path.clone(),
            };
            current = Some(match &element.content_ref {
                Some(_) => "BackboneElement".to_string(),
                None => ty,
            });
        }
        current
    }
}

/// The type with which `e` is the JSON property `name`: its one type, or the alternative of a
/// choice `name` spells (`value[x]` as `valueQuantity`).
fn element_named<'e>(e: &'e ElementDef, name: &str) -> Option<(&'e ElementDef, String)> {
    let own = e.name();
    if let Some(base) = own.strip_suffix("[x]") {
        let t = e.types.iter().find(|t| {
            !t.is_empty() && format!("{base}{}{}", t[..1].to_ascii_uppercase(), &t[1..]) == name
        })?;
        return Some((e, t.clone()));
    }
    if own != name {
        return None;
    }
    let ty = e
        .types
        .first()
        .cloned()
        .unwrap_or_else(|| "BackboneElement".into());
    Some((e, ty))
}

fn parse_element(line: &str) -> Result<ElementDef> {
    let mut parts = line.split(' ');
    let path = parts.next().context("no path")?.to_string();
    let card = parts.next().context("no cardinality")?;
    let types = parts.next().context("no type")?;
    let (min, max) = card.split_once("..").context("bad cardinality")?;
    let (types, content_ref) = match types.strip_prefix('@') {
        Some(r) => (Vec::new(), Some(r.to_string())),
        None => (types.split('|').map(str::to_string).collect(), None),
    };
    Ok(ElementDef {
        path,
        min: min.parse()?,
        repeated: max != "1" && max != "0",
        types,
        content_ref,
    })
}
