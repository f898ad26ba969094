//! FHIR references: the resource type and id a reference's text points to.

/// The target type and id of a reference text: `Patient/1`, `https://x/fhir/Patient/1/_history/2`,
/// `urn:uuid:...`, `#contained`, and `Patient?identifier=a|b` (a type, no id).
pub fn parse_reference(text: &str) -> (Option<&str>, Option<String>) {
    if let Some(id) = text.strip_prefix('#') {
        return (None, Some(id.to_string()));
    }
    if let Some(id) = text
        .strip_prefix("urn:uuid:")
        .or_else(|| text.strip_prefix("urn:oid:"))
    {
        return (None, Some(id.to_string()));
    }
    if let Some((t, _)) = text.split_once('?') {
        let t = t.rsplit('/').next().unwrap_or(t);
        return (Some(t).filter(|t| is_type(t)), None);
    }
    let mut segs: Vec<&str> = text.split('/').collect();
    if segs.len() >= 4 && segs[segs.len() - 2] == "_history" {
        segs.truncate(segs.len() - 2);
    }
    if segs.len() >= 2 {
        let (t, id) = (segs[segs.len() - 2], segs[segs.len() - 1]);
        if is_type(t) && !id.is_empty() {
            return (Some(t), Some(id.to_string()));
        }
    }
    (None, None)
}

fn is_type(t: &str) -> bool {
    t.starts_with(|c: char| c.is_ascii_uppercase()) && t.chars().all(|c| c.is_ascii_alphanumeric())
}
