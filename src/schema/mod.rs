//! The FHIR schema: the model generated from the specification ([`generate`], [`model`]) and its
//! mapping to Arrow ([`node`]), for each FHIR version ([`FhirVersion`]). The mapping is documented
//! in `docs/schema.md`.
//!
//! ```
//! use fhir2parquet::schema::FhirVersion;
//! let r5 = FhirVersion::R5.model();
//! assert_eq!(r5.fhir_version, "5.0.0");
//! assert!(r5.get("NutritionIntake").is_some()); // new in R5
//! assert!(FhirVersion::R4.model().get("NutritionIntake").is_none());
//! ```

pub mod engines;
pub mod generate;
pub mod model;
pub mod node;
pub mod print;

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

pub use model::Model;

/// The version of the mapping from the FHIR model to Arrow. Bump it whenever a column changes.
pub const SCHEMA_VERSION: &str = "3";

/// A FHIR version whose model is embedded. A dataset holds one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FhirVersion {
    /// FHIR R4 (4.0.1).
    #[default]
    R4,
    /// FHIR R4B (4.3.0).
    R4b,
    /// FHIR R5 (5.0.0).
    R5,
}

impl crate::choice::Choice for FhirVersion {
    const CHOICES: &'static [(Self, &'static str, &'static str)] = &[
        (FhirVersion::R4, "r4", "FHIR R4 (4.0.1)"),
        (FhirVersion::R4b, "r4b", "FHIR R4B (4.3.0)"),
        (FhirVersion::R5, "r5", "FHIR R5 (5.0.0)"),
    ];
}

impl FhirVersion {
    /// Every embedded version, oldest first.
    pub const ALL: [FhirVersion; 3] = [FhirVersion::R4, FhirVersion::R4b, FhirVersion::R5];

    /// The short name users write (`r4`, `r4b`, `r5`).
    pub fn name(self) -> &'static str {
        crate::choice::Choice::name(self)
    }

    /// The release the model was generated from (`4.0.1`), as tables and run records hold it.
    pub fn release(self) -> &'static str {
        &self.model().fhir_version
    }

    /// The version of a release as a server's CapabilityStatement or a table property gives it:
    /// `4.0.1`, `4.0`, `4.3.0`, `5.0.0`, `5.0.0-ballot`... A release of none of ours: `None`.
    pub fn from_release(release: &str) -> Option<FhirVersion> {
        let mut parts = release.trim().split(['.', '-']);
        match (parts.next()?, parts.next()) {
            ("4", Some("0")) => Some(FhirVersion::R4),
            ("4", Some("3")) => Some(FhirVersion::R4b),
            ("5", _) => Some(FhirVersion::R5),
            _ => None,
        }
    }

    /// The embedded model of this version.
    pub fn model(self) -> &'static Model {
        static MODELS: [OnceLock<Model>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
        let (cell, text) = match self {
            FhirVersion::R4 => (&MODELS[0], include_str!("../../schemas/r4/model.json")),
            FhirVersion::R4b => (&MODELS[1], include_str!("../../schemas/r4b/model.json")),
            FhirVersion::R5 => (&MODELS[2], include_str!("../../schemas/r5/model.json")),
        };
        cell.get_or_init(|| Model::parse(text).expect("an embedded model parses"))
    }

    /// Whether `name` is a concrete resource type of any embedded version (a table's name, a
    /// type named in a server's message, a line of another version's type).
    pub fn any_has_resource(name: &str) -> bool {
        // Type names start with a capital: anything else (`_rejects`, a run's folder, a line's
        // stray text) is told apart without reading every version's definitions.
        name.starts_with(|c: char| c.is_ascii_uppercase())
            && FhirVersion::ALL.iter().any(|v| v.has_resource(name))
    }

    /// Whether `name` is a concrete resource type of this version.
    pub fn has_resource(self, name: &str) -> bool {
        self.model()
            .get(name)
            .is_some_and(|d| d.kind == model::Kind::Resource && !d.is_abstract)
    }
}

impl fmt::Display for FhirVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for FhirVersion {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<FhirVersion> {
        let lower = s.trim().to_ascii_lowercase();
        <FhirVersion as crate::choice::Choice>::from_name(&lower)
            .or_else(|| FhirVersion::from_release(&lower))
            .ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown FHIR version {s:?}: give r4 (4.0.1), r4b (4.3.0) or r5 (5.0.0)"
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::FhirVersion;

    #[test]
    fn releases_and_names_map_to_versions() {
        for (text, v) in [
            ("4.0.1", FhirVersion::R4),
            ("4.0", FhirVersion::R4),
            ("4.3.0", FhirVersion::R4b),
            ("5.0.0", FhirVersion::R5),
            ("5.0.0-ballot", FhirVersion::R5),
            ("r4b", FhirVersion::R4b),
            ("R5", FhirVersion::R5),
        ] {
            assert_eq!(text.parse::<FhirVersion>().unwrap(), v, "{text}");
        }
        assert!("3.0.2".parse::<FhirVersion>().is_err());
        assert_eq!(FhirVersion::from_release("1.0.2"), None);
        let r4 = FhirVersion::R4.model();
        assert!(r4.is_a("code", "string") && r4.is_a("url", "uri") && r4.is_a("Age", "Quantity"));
        assert!(r4.is_a("Patient", "DomainResource") && r4.is_a("Patient", "Resource"));
        assert!(!r4.is_a("code", "id") && !r4.is_a("uri", "url") && !r4.is_a("string", "code"));
        assert!(!FhirVersion::R5.model().is_a("integer64", "integer"));
        for v in FhirVersion::ALL {
            assert_eq!(FhirVersion::from_release(v.release()), Some(v));
        }
    }
}
