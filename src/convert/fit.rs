//! Which FHIR version a run's data looks like: when the data does not fit the version it was
//! converted as (resource types that version lacks; values kept in `_overflow` at elements
//! another version defines), the summary names the version that fits and how to ask for it.
//! Nothing is lost either way: what the typed columns cannot hold is kept in `_overflow`.

use super::RunRecord;
use crate::schema::FhirVersion;

/// The evidence for `other` in a run converted as `version`: values and lines another
/// version's definitions would have typed.
fn evidence(record: &RunRecord, version: FhirVersion, other: FhirVersion) -> u64 {
    let (mine, theirs) = (version.model(), other.model());
    let mut n: u64 = record
        .rejects
        .other_versions_types
        .iter()
        .filter(|(t, _)| other.has_resource(t))
        .map(|(_, count)| count)
        .sum();
    for (t, rec) in &record.types {
        for (path, count) in &rec.overflow.by_path {
            let there = theirs.type_at(t, path);
            if there.is_some() && there != mine.type_at(t, path) {
                n += count;
            }
        }
    }
    n
}

/// Reads the other versions' definitions on a thread of their own, for [`version_hint`] at the
/// run's end, which needs them whenever a value was kept in `_overflow` (Synthea's data always
/// has some): done while the run reads its input, they are not on the run's last steps.
pub fn prepare(version: FhirVersion) {
    let others: Vec<FhirVersion> = FhirVersion::ALL
        .into_iter()
        .filter(|v| *v != version)
        .collect();
    // Without a thread, version_hint reads them when it needs them.
    crate::background::run("definitions", move || {
        for v in others {
            v.model();
        }
    });
}

/// A note for the summary when the run's data looks like another FHIR version than the one it
/// was converted as, or `None`.
pub fn version_hint(record: &RunRecord, version: FhirVersion) -> Option<String> {
    let kept: u64 = record
        .types
        .values()
        .map(|r| r.overflow.values)
        .sum::<u64>()
        + record.rejects.other_versions_types.values().sum::<u64>();
    if kept == 0 {
        return None;
    }
    // The other versions' definitions were read while the run went (see `prepare`).
    let (best, n) = FhirVersion::ALL
        .into_iter()
        .filter(|v| *v != version)
        .map(|v| (v, evidence(record, version, v)))
        .max_by_key(|(_, n)| *n)?;
    // Worth saying for a resource type of another version (lines rejected), or when a fair
    // part of what did not fit would have (not for a stray element: the specification's own
    // examples keep a few thousand values past the schema's bounds in any version).
    let other_types = record
        .rejects
        .other_versions_types
        .keys()
        .any(|t| best.has_resource(t));
    if !other_types && (n < 5 || n * 10 < kept) {
        return None;
    }
    Some(format!(
        "the data looks like FHIR {best} ({}), not {version} ({}) as converted: {n} value(s) and \
         line(s) {best} defines did not fit {version} (kept in _overflow and _rejects, nothing is \
         lost); convert again with --fhir-version {best}",
        best.release(),
        version.release()
    ))
}

#[cfg(test)]
mod tests {
    use crate::schema::FhirVersion;

    #[test]
    fn paths_resolve_through_backbones_datatypes_and_choices() {
        let r4 = FhirVersion::R4.model();
        let r5 = FhirVersion::R5.model();
        assert_eq!(
            r4.type_at("Observation", "component.valueQuantity.value")
                .as_deref(),
            Some("decimal")
        );
        assert_eq!(r4.type_at("Encounter", "class").as_deref(), Some("Coding"));
        assert_eq!(
            r5.type_at("Encounter", "class").as_deref(),
            Some("CodeableConcept")
        );
        assert_eq!(r4.type_at("Encounter", "actualPeriod"), None);
        assert_eq!(
            r5.type_at("Encounter", "actualPeriod").as_deref(),
            Some("Period")
        );
        assert_eq!(
            r4.type_at("Questionnaire", "item.item.linkId").as_deref(),
            Some("string")
        );
        assert_eq!(r4.type_at("Patient", "nope"), None);
    }
}
