//! `--partition-by`: a Hive-style partition column derived from a date element.

use anyhow::{bail, Result};

use crate::decode::datetime::parse_datetime;
use crate::json::Json;
use crate::schema::FhirVersion;

/// `Observation.effective:year`: the year (or month, day) of the first date found in the element.
#[derive(Debug, Clone)]
pub struct PartitionSpec {
    pub resource_type: String,
    pub element: String,
    pub granularity: Granularity,
}

#[derive(Debug, Clone, Copy)]
pub enum Granularity {
    Year,
    Month,
    Day,
}

/// The elements of a resource type a partition can be taken from: its top-level single
/// `date`, `dateTime`, `instant` or `Period` elements, a choice by its name (`effective`) when
/// one of its types is one of those.
pub fn date_elements(version: FhirVersion, resource_type: &str) -> Vec<String> {
    let Some(def) = version.model().get(resource_type) else {
        return Vec::new();
    };
    def.elements
        .iter()
        .filter(|e| e.parent().is_empty() && !e.repeated)
        .filter(|e| {
            e.types
                .iter()
                .any(|t| matches!(t.as_str(), "date" | "dateTime" | "instant" | "Period"))
        })
        .map(|e| e.name().trim_end_matches("[x]").to_string())
        .collect()
}

/// The value of a row whose element is absent or not a date, as Hive writes it.
pub const NULL_PARTITION: &str = "__HIVE_DEFAULT_PARTITION__";

impl PartitionSpec {
    pub fn parse(s: &str) -> Result<Self> {
        let (path, gran) = s.split_once(':').unwrap_or((s, "year"));
        let Some((t, element)) = path.split_once('.') else {
            bail!("--partition-by takes TYPE.ELEMENT[:year|month|day], for example Observation.effective:year");
        };
        let granularity = match gran {
            "year" => Granularity::Year,
            "month" => Granularity::Month,
            "day" => Granularity::Day,
            _ => bail!("--partition-by granularity must be year, month or day, not {gran:?}"),
        };
        // Checked here against every version that has the type, and against the run's version
        // when it is known (`check`).
        let versions: Vec<FhirVersion> = FhirVersion::ALL
            .into_iter()
            .filter(|v| v.has_resource(t))
            .collect();
        if versions.is_empty() {
            bail!("--partition-by names {t:?}, which is not a FHIR resource type");
        }
        let element = element.trim_end_matches("[x]");
        let mut dates: Vec<String> = versions.iter().flat_map(|v| date_elements(*v, t)).collect();
        dates.sort();
        dates.dedup();
        if !dates.iter().any(|d| d == element) {
            let known = if dates.is_empty() {
                format!("{t} has no date element to partition by")
            } else {
                format!("{t}'s date elements: {}", dates.join(", "))
            };
            bail!("--partition-by {path}: {element:?} is not a date element of {t} ({known})");
        }
        Ok(PartitionSpec {
            resource_type: t.to_string(),
            element: element.to_string(),
            granularity,
        })
    }

    /// The partition column's name (`effective_year`).
    /// Whether the element is a date element of the type in `version` (the run's).
    pub fn check(&self, version: FhirVersion) -> Result<()> {
        let dates = date_elements(version, &self.resource_type);
        if !dates.contains(&self.element) {
            bail!(
                "--partition-by {}.{}: not a date element of {} in FHIR {version} ({})",
                self.resource_type,
                self.element,
                self.resource_type,
                match dates.is_empty() {
                    true => format!("it has none in {version}"),
                    false => format!("its date elements: {}", dates.join(", ")),
                }
            );
        }
        Ok(())
    }

    pub fn column(&self) -> String {
        let g = match self.granularity {
            Granularity::Year => "year",
            Granularity::Month => "month",
            Granularity::Day => "day",
        };
        format!("{}_{g}", self.element)
    }

    /// The partition value of a resource: from `element`, `element<Type>` of a choice, or the
    /// `start` of a Period.
    pub fn value(&self, resource: &Json) -> String {
        let Json::Obj(members) = resource else {
            return NULL_PARTITION.into();
        };
        for (k, v) in members.iter() {
            let Some(rest) = k.strip_prefix(self.element.as_str()) else {
                continue;
            };
            if !(rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_uppercase())) {
                continue;
            }
            let text = match v {
                Json::Str(s) => Some(s.as_ref()),
                Json::Obj(_) => v.get("start").and_then(Json::as_str),
                _ => None,
            };
            if let Some(micros) = text.and_then(parse_datetime) {
                if let Some(t) = chrono::DateTime::from_timestamp_micros(micros) {
                    return match self.granularity {
                        Granularity::Year => t.format("%Y").to_string(),
                        Granularity::Month => t.format("%Y-%m").to_string(),
                        Granularity::Day => t.format("%Y-%m-%d").to_string(),
                    };
                }
            }
        }
        NULL_PARTITION.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misspelt_or_undated_element_is_an_error_listing_the_dates() {
        let e = PartitionSpec::parse("Observation.efective:year").unwrap_err();
        let e = format!("{e:#}");
        assert!(
            e.contains("\"efective\"") && e.contains("effective") && e.contains("issued"),
            "{e}"
        );
        let e = format!(
            "{:#}",
            PartitionSpec::parse("Observation.status").unwrap_err()
        );
        assert!(e.contains("\"status\" is not a date element"), "{e}");
        let p = PartitionSpec::parse("Observation.effective[x]:month").unwrap();
        assert_eq!(p.column(), "effective_month");
        PartitionSpec::parse("Patient.birthDate:day").unwrap();
        PartitionSpec::parse("Encounter.period").unwrap();
    }
}
