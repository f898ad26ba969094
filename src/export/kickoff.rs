//! The kick-off request: its URL and parameters (GET, or POST with a Parameters resource).

use super::http::{server_text, strip, Client};
use super::options::{ExportOptions, Level};
use anyhow::{bail, Result};
use reqwest::{header, Method, StatusCode};
use serde_json::Value;

pub(super) fn kickoff_url(o: &ExportOptions) -> String {
    let base = o.base.trim_end_matches('/');
    match &o.level {
        Level::System => format!("{base}/$export"),
        Level::Patient => format!("{base}/Patient/$export"),
        Level::Group(id) => format!("{base}/Group/{id}/$export"),
    }
}

/// The kick-off parameters, in order.
pub(super) fn parameters(o: &ExportOptions) -> Vec<(String, String)> {
    let mut p = vec![(
        "_outputFormat".to_string(),
        "application/fhir+ndjson".to_string(),
    )];
    if !o.types.is_empty() {
        match o.type_repeat {
            true => p.extend(o.types.iter().map(|t| ("_type".to_string(), t.clone()))),
            false => p.push(("_type".into(), o.types.join(","))),
        }
    }
    for (k, v) in [("_since", &o.since), ("_until", &o.until)] {
        if let Some(v) = v {
            p.push((k.into(), v.clone()));
        }
    }
    p.extend(
        o.type_filters
            .iter()
            .map(|f| ("_typeFilter".to_string(), f.clone())),
    );
    if !o.elements.is_empty() {
        p.push(("_elements".into(), o.elements.join(",")));
    }
    p.extend(o.params.iter().cloned());
    p
}

/// The kick-off request as a FHIR Parameters resource (for POST).
pub(super) fn parameters_resource(params: &[(String, String)]) -> Value {
    let parameter: Vec<Value> = params
        .iter()
        .map(|(k, v)| {
            let value = match k.as_str() {
                "_since" | "_until" => "valueInstant",
                "includeAssociatedData" => "valueCode",
                "patient" => {
                    return serde_json::json!({"name": k, "valueReference": {"reference": v}})
                }
                _ => "valueString",
            };
            serde_json::json!({"name": k, value: v})
        })
        .collect();
    serde_json::json!({"resourceType": "Parameters", "parameter": parameter})
}

/// Kicks the export off; logs `kickoff` (with the server's status and text when refused);
/// the status URL.
pub(super) async fn kick_off(c: &Client, o: &ExportOptions) -> Result<String> {
    let url = kickoff_url(o);
    let params = parameters(o);
    let logged = |code: Option<u16>, body: Option<String>| {
        // The `patient` parameter names patients: never logged.
        let request: std::collections::BTreeMap<&str, &str> = params
            .iter()
            .filter(|(k, _)| k != "patient")
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        c.log.log(
            "kickoff",
            serde_json::json!({
                "exportUrl": url,
                "errorCode": code,
                "errorBody": body,
                "requestParameters": request,
            }),
        );
        c.log.flush();
    };
    let resp = match kick_off_request(c, o, &url, &params).await {
        Ok(r) => r,
        Err(e) => {
            logged(None, Some(format!("{e:#}")));
            return Err(e);
        }
    };
    let status = resp.status();
    let location = resp
        .headers()
        .get(header::CONTENT_LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    if status != StatusCode::ACCEPTED {
        let text = server_text(&resp.bytes().await.unwrap_or_default());
        logged(Some(status.as_u16()), Some(text.clone()));
        bail!("{url}: the kick-off was refused ({status}): {text}");
    }
    let Some(location) = location else {
        logged(None, Some("202 without a Content-Location".into()));
        bail!("{url}: 202 without a Content-Location (the status URL)");
    };
    *c.log.export_id.lock().expect("no panic") = strip(&location);
    logged(None, None);
    Ok(location)
}

pub(super) async fn kick_off_request(
    c: &Client,
    o: &ExportOptions,
    url: &str,
    params: &[(String, String)],
) -> Result<reqwest::Response> {
    let url = url.to_string();
    let params = params.to_vec();
    let resp = if o.post {
        let body = serde_json::to_vec(&parameters_resource(&params))?;
        c.send(Method::POST, &url, true, &|r| {
            r.header(header::ACCEPT, "application/fhir+json")
                .header("Prefer", "respond-async")
                .header(header::CONTENT_TYPE, "application/fhir+json")
                .body(body.clone())
        })
        .await?
    } else {
        c.send(Method::GET, &url, true, &|r| {
            r.header(header::ACCEPT, "application/fhir+json")
                .header("Prefer", "respond-async")
                .query(&params)
        })
        .await?
    };
    Ok(resp)
}

/// The FHIR release the server's CapabilityStatement names (`fhirVersion` of
/// `GET [base]/metadata`), or why there is none (the server does not answer it, or names no
/// version).
pub(super) async fn server_fhir_version(
    client: &Client,
    base: &str,
) -> std::result::Result<String, String> {
    let url = format!("{}/metadata", base.trim_end_matches('/'));
    let resp = client
        .send(Method::GET, &url, true, &|r| {
            r.header(header::ACCEPT, "application/fhir+json")
        })
        .await
        .map_err(|e| format!("{e:#}"))?;
    let status = resp.status();
    if !status.is_success() {
        return Err(format!("{}: {status}", strip(&url)));
    }
    let bytes = resp
        .bytes()
        .await
        .map_err(|e| e.without_url().to_string())?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|_| format!("{}: not a JSON CapabilityStatement", strip(&url)))?;
    match body["fhirVersion"].as_str() {
        Some(v) if body["resourceType"] == "CapabilityStatement" => Ok(v.to_string()),
        _ => Err(format!(
            "{}: the CapabilityStatement names no fhirVersion",
            strip(&url)
        )),
    }
}
