//! `--partition-by`: a Hive-style partition column derived from a date element.

use anyhow::{bail, Result};

use crate::decode::datetime::parse_datetime;
use crate::json::Json;

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
        if crate::schema::node::resource_members(t).is_none() {
            bail!("--partition-by names {t:?}, which is not a FHIR R4 resource type");
        }
        Ok(PartitionSpec {
            resource_type: t.to_string(),
            element: element.trim_end_matches("[x]").to_string(),
            granularity,
        })
    }

    /// The partition column's name (`effective_year`).
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
