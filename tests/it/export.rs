//! `export` against a FHIR Bulk Data server of the test suite's own (no server with `$export`
//! installs from a package registry here). The server follows the Bulk Data Access IG 2.0.0
//! (https://hl7.org/fhir/uv/bulkdata/STU2/export.html) and SMART App Launch 2.x Backend Services
//! (https://hl7.org/fhir/smart-app-launch/backend-services.html); each behaviour cites its
//! section. It serves the NDJSON of the small Synthea export on 127.0.0.1.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{assert_same_resources, run_record, shared};

/// What the server does, per test.
#[derive(Clone)]
struct Config {
    /// Status requests answered 202 before the manifest (with X-Progress, Retry-After).
    polls: usize,
    /// Retry-After values, one per 202, cycling: seconds, an HTTP date, a millisecond epoch.
    retry_after: Vec<String>,
    /// The first status request gets a 429 (rate limited).
    first_poll_429: bool,
    /// This status request (1-based) gets a 500 with a transient OperationOutcome.
    transient_at: Option<usize>,
    /// The job fails: a 500 with a fatal OperationOutcome.
    fatal: bool,
    /// SMART Backend Services: client id and public key (PEM), RS384 or ES384.
    client: Option<(String, PathBuf, jsonwebtoken::Algorithm)>,
    /// Seconds an access token lasts.
    token_seconds: u64,
    /// The manifest's `requiresAccessToken`.
    requires_token: bool,
    /// Files sent gzip-encoded when asked for.
    gzip: bool,
    /// File bodies sent with `Transfer-Encoding: chunked` (no Content-Length).
    chunked: bool,
    /// Files answered with a 307 to a second origin that needs no token.
    redirect: bool,
    /// The manifest in two pages (`link` next).
    paged: bool,
    /// The first request for each file gets a 503.
    file_503: bool,
    /// File links are signed to expire this long after the manifest that gave them: a later
    /// request gets a 403, as from signed storage URLs.
    link_ttl: Option<Duration>,
    /// Each file's body is sent after this delay (a slow server, so downloads overlap and a
    /// run can be killed between two files).
    file_delay: Duration,
    /// The severity of the OperationOutcome in the manifest's error file (export.html, complete
    /// status response: `error` lists files of OperationOutcomes, errors and, on some servers,
    /// warnings).
    error_severity: &'static str,
    /// The first output entry's URL is this (not a URL of the server's).
    first_url: Option<String>,
    /// Error responses in plain text (as many servers and proxies send them).
    plain_text_errors: bool,
    /// The `fhirVersion` of the CapabilityStatement `GET [base]/metadata` answers (FHIR
    /// http.html "capabilities": every server has one); `None`: a 404, as from a server that
    /// serves no capabilities.
    fhir_version: Option<&'static str>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            polls: 1,
            retry_after: vec!["1".into()],
            first_poll_429: false,
            transient_at: None,
            fatal: false,
            client: None,
            token_seconds: 300,
            requires_token: false,
            gzip: false,
            chunked: false,
            redirect: false,
            paged: false,
            file_503: false,
            link_ttl: None,
            file_delay: Duration::ZERO,
            error_severity: "warning",
            first_url: None,
            plain_text_errors: false,
            fhir_version: Some("4.0.1"),
        }
    }
}

#[derive(Default)]
struct State {
    kickoffs: usize,
    polls: usize,
    deleted: bool,
    tokens: HashMap<String, Instant>,
    tokens_issued: usize,
    served: HashMap<String, usize>,
    /// Requests that carried an Authorization header to the second origin.
    leaked: usize,
    kickoff_query: String,
    /// The kick-off's method and, for a POST, its Parameters resource.
    kickoff_method: String,
    kickoff_body: Option<serde_json::Value>,
    /// File requests that carried a token though the manifest said none is needed.
    token_to_files: usize,
    /// Complete status responses (manifests) sent.
    manifests: usize,
    /// File requests refused because their link had expired.
    expired: usize,
    /// File bodies being sent now, and the most at once.
    sending: usize,
    most_at_once: usize,
}

struct Server {
    port: u16,
    files_port: u16,
    state: Arc<Mutex<State>>,
}

impl Server {
    fn base(&self) -> String {
        format!("http://127.0.0.1:{}/fhir", self.port)
    }
}

struct Request {
    method: String,
    path: String,
    query: String,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

fn read_request(s: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    s.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        s.read_line(&mut h).ok()?;
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let len = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    s.read_exact(&mut body).ok()?;
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    Some(Request {
        method,
        path: path.to_string(),
        query: query.to_string(),
        headers,
        body,
    })
}

fn respond(s: &mut TcpStream, status: &str, headers: &[(&str, String)], body: &[u8]) {
    let mut head = format!("HTTP/1.1 {status}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let _ = s.write_all(head.as_bytes());
    let _ = s.write_all(body);
}

/// A response whose body is sent in chunks of 16 KiB (RFC 9112 7.1), as servers stream files
/// whose length they do not know ahead.
fn respond_chunked(s: &mut TcpStream, headers: &[(&str, String)], body: &[u8]) {
    let mut head =
        "HTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n".to_string();
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let _ = s.write_all(head.as_bytes());
    for chunk in body.chunks(16 << 10) {
        let _ = s.write_all(format!("{:x}\r\n", chunk.len()).as_bytes());
        let _ = s.write_all(chunk);
        let _ = s.write_all(b"\r\n");
    }
    let _ = s.write_all(b"0\r\n\r\n");
}

fn outcome(code: &str, text: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": text}]
    }))
    .unwrap()
}

fn form(body: &[u8]) -> HashMap<String, String> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The NDJSON files the server exports.
fn files() -> Vec<(String, PathBuf)> {
    let mut out: Vec<_> = std::fs::read_dir(shared("fhir-data/synthea-r4-small"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".ndjson"))
        .map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), p))
        .collect();
    out.sort();
    out
}

fn start(cfg: Config) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let files_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let files_port = files_listener.local_addr().unwrap().port();
    let state = Arc::new(Mutex::new(State::default()));
    let base = format!("http://127.0.0.1:{port}/fhir");
    let files_base = format!("http://127.0.0.1:{files_port}");
    {
        // The second origin: files behind signed, tokenless URLs.
        let state = state.clone();
        std::thread::spawn(move || {
            for conn in files_listener.incoming().flatten() {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                let Some(req) = read_request(&mut r) else {
                    continue;
                };
                if req.headers.contains_key("authorization") {
                    state.lock().unwrap().leaked += 1;
                }
                let name = req.path.trim_start_matches("/signed/").to_string();
                match files().into_iter().find(|(n, _)| *n == name) {
                    Some((_, p)) => respond(
                        &mut conn,
                        "200 OK",
                        &[("Content-Type", "application/fhir+ndjson".into())],
                        &std::fs::read(p).unwrap(),
                    ),
                    None => respond(&mut conn, "404 Not Found", &[], b""),
                }
            }
        });
    }
    let st = state.clone();
    let cfg = Arc::new(cfg);
    std::thread::spawn(move || {
        // A thread per connection: downloads run at once, as on a real server.
        for conn in listener.incoming().flatten() {
            let (cfg, st, base, files_base) =
                (cfg.clone(), st.clone(), base.clone(), files_base.clone());
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let mut conn = conn;
                if let Some(req) = read_request(&mut r) {
                    handle(&cfg, &st, &base, &files_base, req, &mut conn);
                }
            });
        }
    });
    Server {
        port,
        files_port,
        state,
    }
}

fn handle(
    cfg: &Config,
    st: &Mutex<State>,
    base: &str,
    files_base: &str,
    req: Request,
    conn: &mut TcpStream,
) {
    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    let path = req.path.trim_start_matches("/fhir");
    // SMART configuration (SMART App Launch 2.x, "Conformance": .well-known/smart-configuration).
    if path == "/.well-known/smart-configuration" {
        let conf = serde_json::json!({
            "token_endpoint": format!("{base}/token"),
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
            "scopes_supported": ["system/*.rs", "system/*.read"],
            "capabilities": ["client-confidential-asymmetric"]
        });
        return respond(
            conn,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            &json(conf),
        );
    }
    // Token endpoint (Backend Services, "Obtaining an access token"): client_credentials with a
    // signed client assertion; 400 invalid_client when it does not verify.
    if path == "/token" && req.method == "POST" {
        let f = form(&req.body);
        let Some((client_id, key, alg)) = &cfg.client else {
            return respond(
                conn,
                "400 Bad Request",
                &[],
                &json(serde_json::json!({"error": "unsupported_grant_type"})),
            );
        };
        let ok = f.get("grant_type").map(String::as_str) == Some("client_credentials")
            && f.get("client_assertion_type").map(String::as_str)
                == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
            && f.get("scope").is_some_and(|s| s == "system/*.rs")
            && f.get("client_assertion").is_some_and(|jwt| {
                let pem = std::fs::read(key).unwrap();
                let key = match alg {
                    jsonwebtoken::Algorithm::ES384 => jsonwebtoken::DecodingKey::from_ec_pem(&pem),
                    _ => jsonwebtoken::DecodingKey::from_rsa_pem(&pem),
                }
                .unwrap();
                let mut v = jsonwebtoken::Validation::new(*alg);
                v.set_audience(&[format!("{base}/token")]);
                v.set_issuer(&[client_id]);
                v.set_required_spec_claims(&["exp", "iss", "sub", "aud", "jti"]);
                jsonwebtoken::decode::<serde_json::Value>(jwt, &key, &v)
                    .is_ok_and(|d| d.claims["sub"] == client_id.as_str())
            });
        if !ok {
            return respond(
                conn,
                "400 Bad Request",
                &[("Content-Type", "application/json".into())],
                &json(serde_json::json!({"error": "invalid_client"})),
            );
        }
        let mut s = st.lock().unwrap();
        s.tokens_issued += 1;
        let token = format!("token-{}", s.tokens_issued);
        s.tokens.insert(
            token.clone(),
            Instant::now() + Duration::from_secs(cfg.token_seconds),
        );
        let body = serde_json::json!({"access_token": token, "token_type": "bearer", "expires_in": cfg.token_seconds, "scope": "system/*.rs"});
        return respond(
            conn,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            &json(body),
        );
    }
    // The capabilities interaction (http.html#capabilities), public as on most servers.
    if req.method == "GET" && path.ends_with("/metadata") {
        return match cfg.fhir_version {
            Some(v) => respond(
                conn,
                "200 OK",
                &[("Content-Type", "application/fhir+json".into())],
                &json(serde_json::json!({
                    "resourceType": "CapabilityStatement",
                    "status": "active",
                    "date": "2026-01-01",
                    "kind": "instance",
                    "fhirVersion": v,
                    "format": ["json"],
                    "rest": [{"mode": "server", "operation": [{"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}]}]
                })),
            ),
            None => respond(
                conn,
                "404 Not Found",
                &[],
                &outcome("not-found", "no capabilities"),
            ),
        };
    }
    // Every other request needs a valid token when the server is protected (401 otherwise).
    if cfg.client.is_some() {
        let valid = req
            .headers
            .get("authorization")
            .and_then(|a| a.strip_prefix("Bearer "))
            .is_some_and(|t| {
                st.lock()
                    .unwrap()
                    .tokens
                    .get(t)
                    .is_some_and(|until| Instant::now() < *until)
            });
        let needs = !path.starts_with("/files/") || cfg.requires_token;
        if path.starts_with("/files/")
            && !cfg.requires_token
            && req.headers.contains_key("authorization")
        {
            st.lock().unwrap().token_to_files += 1;
        }
        if needs && !valid {
            let body = match cfg.plain_text_errors {
                true => b"Token expired".to_vec(),
                false => outcome("login", "a valid access token is needed"),
            };
            return respond(conn, "401 Unauthorized", &[], &body);
        }
    }
    // Kick-off (export.html "Bulk Data Kick-off Request"): Accept application/fhir+json and
    // Prefer respond-async are required; 202 with Content-Location.
    if path.ends_with("/$export") {
        if req.headers.get("accept").map(String::as_str) != Some("application/fhir+json")
            || req.headers.get("prefer").map(String::as_str) != Some("respond-async")
        {
            return respond(
                conn,
                "400 Bad Request",
                &[],
                &outcome("invalid", "Accept and Prefer headers are required"),
            );
        }
        // POST carries a Parameters resource (export.html, "Kick-off Request": POST with
        // `Content-Type: application/fhir+json`).
        let body = match req.method.as_str() {
            "POST" => {
                if req.headers.get("content-type").map(String::as_str)
                    != Some("application/fhir+json")
                {
                    return respond(
                        conn,
                        "400 Bad Request",
                        &[],
                        &outcome("invalid", "a POST kick-off takes application/fhir+json"),
                    );
                }
                match serde_json::from_slice::<serde_json::Value>(&req.body) {
                    Ok(v) if v["resourceType"] == "Parameters" => Some(v),
                    _ => {
                        return respond(
                            conn,
                            "400 Bad Request",
                            &[],
                            &outcome("invalid", "the body is not a Parameters resource"),
                        )
                    }
                }
            }
            _ => None,
        };
        let mut s = st.lock().unwrap();
        s.kickoffs += 1;
        s.kickoff_query = req.query.clone();
        s.kickoff_method = req.method.clone();
        s.kickoff_body = body;
        return respond(
            conn,
            "202 Accepted",
            &[("Content-Location", format!("{base}/jobs/1"))],
            b"",
        );
    }
    // Status (export.html "Bulk Data Status Request"): 202 in progress with X-Progress and
    // Retry-After; 429 when polled too often; 5xx with an OperationOutcome on error (transient
    // when the client should retry); 200 with the manifest when done. DELETE cancels: 202.
    if path == "/jobs/1" {
        if req.method == "DELETE" {
            st.lock().unwrap().deleted = true;
            return respond(conn, "202 Accepted", &[], b"");
        }
        let n = {
            let mut s = st.lock().unwrap();
            s.polls += 1;
            s.polls
        };
        if cfg.first_poll_429 && n == 1 {
            return respond(
                conn,
                "429 Too Many Requests",
                &[("Retry-After", "1".into())],
                b"",
            );
        }
        if cfg.transient_at == Some(n) {
            return respond(
                conn,
                "500 Internal Server Error",
                &[("Content-Type", "application/fhir+json".into())],
                &outcome("transient", "the database is busy"),
            );
        }
        if cfg.fatal {
            return respond(
                conn,
                "500 Internal Server Error",
                &[("Content-Type", "application/fhir+json".into())],
                &outcome(
                    "too-costly",
                    "the export would exceed the limit for this client",
                ),
            );
        }
        let ready_at = cfg.polls
            + 1
            + usize::from(cfg.first_poll_429)
            + usize::from(cfg.transient_at.is_some());
        if n < ready_at {
            let ra = cfg.retry_after[(n - 1) % cfg.retry_after.len()].clone();
            let ra = if ra == "date" {
                (chrono::Utc::now() + chrono::Duration::seconds(1))
                    .to_rfc2822()
                    .replace("+0000", "GMT")
            } else {
                ra
            };
            return respond(
                conn,
                "202 Accepted",
                &[
                    ("X-Progress", format!("{n} of {ready_at} steps")),
                    ("Retry-After", ra),
                ],
                b"",
            );
        }
        let expires = cfg
            .link_ttl
            .map(|ttl| format!("?expires={}", (chrono::Utc::now() + ttl).timestamp_millis()))
            .unwrap_or_default();
        let file_url = |name: &str| match cfg.redirect {
            true => format!("{base}/files/redirect/{name}{expires}"),
            false => format!("{base}/files/{name}{expires}"),
        };
        st.lock().unwrap().manifests += 1;
        let mut all: Vec<serde_json::Value> = files()
            .iter()
            .map(|(name, p)| {
                let t = name.trim_end_matches(".ndjson");
                let count = crate::read_lines(p).len();
                serde_json::json!({"type": t, "url": file_url(name), "count": count})
            })
            .collect();
        if let Some(u) = &cfg.first_url {
            all[0]["url"] = u.clone().into();
        }
        let (first, second) = match cfg.paged {
            true => all.split_at(all.len() / 2),
            false => (&all[..], &all[..0]),
        };
        let mut manifest = serde_json::json!({
            "transactionTime": "2024-05-01T12:00:00Z",
            "request": format!("{base}/$export?{}", st.lock().unwrap().kickoff_query),
            "requiresAccessToken": cfg.requires_token,
            "output": first,
            "error": [{"type": "OperationOutcome", "url": format!("{base}/files/errors.ndjson")}],
            "deleted": [{"type": "Bundle", "url": format!("{base}/files/deleted.ndjson")}]
        });
        if cfg.paged {
            manifest["link"] =
                serde_json::json!([{"relation": "next", "url": format!("{base}/jobs/1/page/2")}]);
        }
        let _ = second;
        return respond(
            conn,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            &json(manifest),
        );
    }
    if path == "/jobs/1/page/2" {
        let all: Vec<serde_json::Value> = files()
            .iter()
            .map(|(name, p)| {
                serde_json::json!({"type": name.trim_end_matches(".ndjson"), "url": format!("{base}/files/{name}"), "count": crate::read_lines(p).len()})
            })
            .collect();
        let page = serde_json::json!({
            "transactionTime": "2024-05-01T12:00:00Z",
            "requiresAccessToken": cfg.requires_token,
            "output": &all[all.len() / 2..],
            "error": []
        });
        return respond(
            conn,
            "200 OK",
            &[("Content-Type", "application/json".into())],
            &json(page),
        );
    }
    // Files (export.html "File Request"): application/fhir+ndjson, gzip when accepted; a 307
    // to a location that needs no token.
    if let Some(name) = path.strip_prefix("/files/") {
        if name == "errors.ndjson" {
            let o = serde_json::json!({
                "resourceType": "OperationOutcome",
                "issue": [{"severity": cfg.error_severity, "code": "processing",
                           "diagnostics": "3 Observation resources could not be exported"}]
            });
            return respond(conn, "200 OK", &[], &[json(o), b"\n".to_vec()].concat());
        }
        if name == "deleted.ndjson" {
            let b = serde_json::json!({"resourceType": "Bundle", "type": "transaction", "entry": [{"request": {"method": "DELETE", "url": "Patient/gone"}}]});
            return respond(conn, "200 OK", &[], &[json(b), b"\n".to_vec()].concat());
        }
        let served = {
            let mut s = st.lock().unwrap();
            let c = s.served.entry(name.to_string()).or_default();
            *c += 1;
            *c
        };
        // A signed link past its time (as S3 answers one: 403 "Request has expired").
        let expired = req
            .query
            .strip_prefix("expires=")
            .and_then(|t| t.parse::<i64>().ok())
            .is_some_and(|t| chrono::Utc::now().timestamp_millis() > t);
        if expired {
            st.lock().unwrap().expired += 1;
            return respond(conn, "403 Forbidden", &[], b"Request has expired");
        }
        if !cfg.file_delay.is_zero() {
            {
                let mut s = st.lock().unwrap();
                s.sending += 1;
                s.most_at_once = s.most_at_once.max(s.sending);
            }
            std::thread::sleep(cfg.file_delay);
            st.lock().unwrap().sending -= 1;
        }
        if cfg.file_503 && served == 1 {
            return respond(
                conn,
                "503 Service Unavailable",
                &[("Retry-After", "1".into())],
                b"",
            );
        }
        if let Some(name) = name.strip_prefix("redirect/") {
            return respond(
                conn,
                "307 Temporary Redirect",
                &[("Location", format!("{files_base}/signed/{name}"))],
                b"",
            );
        }
        let Some((_, p)) = files().into_iter().find(|(n, _)| n == name) else {
            return respond(
                conn,
                "404 Not Found",
                &[],
                &outcome("not-found", "no such file"),
            );
        };
        let mut data = std::fs::read(p).unwrap();
        if st
            .lock()
            .unwrap()
            .kickoff_query
            .contains("organizeOutputBy=Patient")
        {
            data = organized_by_patient(&data);
        }
        let gzip = cfg.gzip
            && req
                .headers
                .get("accept-encoding")
                .is_some_and(|a| a.contains("gzip"));
        let mut headers = vec![("Content-Type", "application/fhir+ndjson".to_string())];
        let body = match gzip {
            true => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&data).unwrap();
                headers.push(("Content-Encoding", "gzip".into()));
                e.finish().unwrap()
            }
            false => data,
        };
        return match cfg.chunked {
            true => respond_chunked(conn, &headers, &body),
            false => respond(conn, "200 OK", &headers, &body),
        };
    }
    respond(
        conn,
        "404 Not Found",
        &[],
        &outcome("not-found", "unknown path"),
    )
}

/// A file organized by patient (export.html, `organizeOutputBy`): its resources in blocks, one
/// per patient, each after a header, a Parameters resource referencing the patient.
fn organized_by_patient(ndjson: &[u8]) -> Vec<u8> {
    let mut blocks: Vec<(String, Vec<String>)> = Vec::new();
    for line in String::from_utf8_lossy(ndjson)
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let patient = match v["resourceType"].as_str() {
            Some("Patient") => format!("Patient/{}", v["id"].as_str().unwrap_or_default()),
            _ => ["subject", "patient", "beneficiary"]
                .iter()
                .find_map(|k| v[*k]["reference"].as_str())
                .unwrap_or("none")
                .trim_start_matches("urn:uuid:")
                .to_string(),
        };
        match blocks.iter_mut().find(|b| b.0 == patient) {
            Some(b) => b.1.push(line.to_string()),
            None => blocks.push((patient, vec![line.to_string()])),
        }
    }
    let mut out = String::new();
    for (patient, lines) in blocks {
        let header = serde_json::json!({"resourceType": "Parameters", "parameter": [
            {"name": "header", "valueReference": {"reference": patient}}]});
        out.push_str(&format!("{header}\n"));
        for l in lines {
            out.push_str(&l);
            out.push('\n');
        }
    }
    out.into_bytes()
}

impl State {
    /// File requests answered so far, over every file.
    fn served_total(&self) -> usize {
        self.served.values().sum()
    }
}

/// Waits until the server has been asked for `files` files, then sends the export Ctrl-C
/// (SIGINT): with `--parallel 1`, all but the last of them have been read to their end.
fn interrupt_when_served(server: &Server, child: std::process::Child, files: usize) -> Output {
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.state.lock().unwrap().served_total() < files {
        assert!(Instant::now() < deadline, "the export did not get that far");
        std::thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    child.wait_with_output().unwrap()
}

fn export(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
        .arg("export")
        .args(args)
        .output()
        .unwrap()
}

fn key(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/export")
        .join(name)
}

fn assert_ok(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "exit {:?}: {err}", o.status.code());
    err
}

/// The exported dataset holds every resource of the files, equal as JSON.
fn assert_exported(out: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    fhir2parquet::encode::to_ndjson(out, tmp.path()).unwrap();
    assert_eq!(
        assert_same_resources(&shared("fhir-data/synthea-r4-small"), tmp.path()),
        2789
    );
}

#[test]
fn smart_protected_export_equals_convert_of_the_files() {
    let server = start(Config {
        polls: 2,
        retry_after: vec!["1".into(), "date".into()],
        client: Some((
            "fhir2parquet-test".into(),
            key("rsa.pub.pem"),
            jsonwebtoken::Algorithm::RS384,
        )),
        requires_token: true,
        gzip: true,
        chunked: true,
        paged: true,
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = export(&[
        &server.base(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "Patient,Observation",
        "--type",
        "Condition",
        "--since",
        "2020-01-01T00:00:00Z",
        "--client-id",
        "fhir2parquet-test",
        "--key",
        key("rsa.pem").to_str().unwrap(),
        "-q",
        // Plain folders: the exported files as they are, duplicates and all (a `_since` export
        // into Delta tables is merged by id: see `a_since_export_is_merged_by_id`).
        "--format",
        "parquet",
    ]);
    let err = assert_ok(&o);
    assert_exported(&out);
    let s = server.state.lock().unwrap();
    assert_eq!(s.kickoffs, 1);
    assert!(s.deleted, "the job was not deleted");
    assert!(
        s.kickoff_query
            .contains("_type=Patient%2CObservation%2CCondition"),
        "{}",
        s.kickoff_query
    );
    assert!(s.kickoff_query.contains("_since=2020-01-01T00%3A00%3A00Z"));
    // Nothing secret in the output or the record.
    let record = run_record(&out);
    let text = serde_json::to_string(&record).unwrap();
    for secret in ["token-1", "BEGIN PRIVATE KEY"] {
        assert!(!err.contains(secret) && !text.contains(secret));
    }
    assert_eq!(record["export"]["transactionTime"], "2024-05-01T12:00:00Z");
    assert_eq!(record["export"]["server"], server.base());
    assert!(out.join("_export/outcome-0.ndjson").exists());
    assert!(out.join("_export/deleted-1.ndjson").exists());
    assert!(!out.join("_export/state.json").exists());
    // The event log, in bulk-data-client's form.
    let log = std::fs::read_to_string(out.join("_export/log.ndjson")).unwrap();
    let events: Vec<String> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["eventId"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    for e in [
        "kickoff",
        "status_progress",
        "status_complete",
        "manifest_complete",
        "download_request",
        "export_complete",
    ] {
        assert!(events.iter().any(|x| x == e), "{e} not in {events:?}");
    }
    assert!(!log.contains("token-"));
    // The deleted resources, as a table.
    let deleted = std::fs::read_dir(out.join("_deleted"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(deleted).unwrap(),
    )
    .unwrap()
    .build()
    .unwrap();
    let batch = reader.into_iter().next().unwrap().unwrap();
    let col = |n: &str| {
        use arrow::array::AsArray;
        batch
            .column_by_name(n)
            .unwrap()
            .as_string::<i32>()
            .value(0)
            .to_string()
    };
    assert_eq!(
        (col("type"), col("id")),
        ("Patient".to_string(), "gone".to_string())
    );
    assert_eq!(col("transactionTime"), "2024-05-01T12:00:00Z");
    // Every manifest count matched.
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn faults_tokens_that_expire_and_redirects() {
    let server = start(Config {
        polls: 1,
        retry_after: vec!["1700000000000".into()],
        first_poll_429: true,
        transient_at: Some(2),
        client: Some((
            "es-client".into(),
            key("ec.pub.pem"),
            jsonwebtoken::Algorithm::ES384,
        )),
        // Shorter than the renewal margin: every request takes a new token.
        token_seconds: 5,
        requires_token: true,
        redirect: true,
        file_503: true,
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let started = Instant::now();
    let o = export(&[
        &server.base(),
        "-o",
        out.to_str().unwrap(),
        "--client-id",
        "es-client",
        // The key as a JWK set (its private key chosen over a public-only one).
        "--key",
        key("ec.jwks.json").to_str().unwrap(),
        "--max-poll",
        "2",
        "-q",
    ]);
    assert_ok(&o);
    assert_exported(&out);
    // A millisecond-epoch Retry-After was clamped to --max-poll.
    assert!(started.elapsed() < Duration::from_secs(60));
    let s = server.state.lock().unwrap();
    assert!(
        s.tokens_issued > 3,
        "tokens were not renewed: {}",
        s.tokens_issued
    );
    assert_eq!(
        s.leaked, 0,
        "the token went along a redirect to another origin"
    );
    let _ = server.files_port;
}

#[test]
fn a_fatal_outcome_ends_the_job_with_its_diagnostics() {
    let server = start(Config {
        fatal: true,
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = export(&[&server.base(), "-o", out.to_str().unwrap(), "-q"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("too-costly"), "{err}");
    assert!(err.contains("exceed the limit"), "{err}");
    assert!(!out.join("Patient").exists());
}

#[test]
fn a_wrong_key_is_refused_by_the_token_endpoint() {
    let server = start(Config {
        client: Some((
            "c".into(),
            key("rsa.pub.pem"),
            jsonwebtoken::Algorithm::RS384,
        )),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let o = export(&[
        &server.base(),
        "-o",
        tmp.path().join("out").to_str().unwrap(),
        "--client-id",
        "c",
        "--key",
        key("ec.pem").to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("invalid_client"), "{err}");
    assert!(err.contains("/token"), "{err}");
}

/// `export --columns present`: files of the columns with values, read back whole.
#[test]
fn export_writes_files_of_present_columns_when_asked() {
    let server = start(Config::default());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = export(&[
        &server.base(),
        "-o",
        out.to_str().unwrap(),
        "-q",
        "--columns",
        "present",
    ]);
    assert_ok(&o);
    assert_exported(&out);
    let file = crate::first_file(&out.join("Patient"));
    let columns = crate::parquet_metadata(&file)
        .file_metadata()
        .schema_descr()
        .num_columns();
    let schema =
        fhir2parquet::schema::node::arrow_schema(fhir2parquet::schema::FhirVersion::R4, "Patient")
            .unwrap();
    let all = fhir2parquet::schema::node::leaf_count(&arrow::datatypes::DataType::Struct(
        schema.fields().clone(),
    ));
    assert!(columns < all / 4, "{columns} of {all} columns");
}

#[test]
fn a_killed_export_resumes_its_job() {
    let server = start(Config {
        polls: 4,
        retry_after: vec!["1".into()],
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
        .args(["export", &server.base(), "-o", out.to_str().unwrap(), "-q"])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.state.lock().unwrap().polls < 2 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(out.join("_export/state.json").exists());
    let o = export(&["--resume", "-o", out.to_str().unwrap(), "-q"]);
    assert_ok(&o);
    assert_exported(&out);
    let s = server.state.lock().unwrap();
    assert_eq!(s.kickoffs, 1, "the job was kicked off again");
    assert!(s.deleted);
    // Killed while polling: the resume is logged all the same, nothing kept.
    let log = std::fs::read_to_string(out.join("_export/log.ndjson")).unwrap();
    let resume = log
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| e["eventId"] == "resume")
        .expect("a resume event");
    assert_eq!(resume["eventDetail"]["filesKept"], 0);
}

#[test]
fn expired_links_are_fetched_again_while_downloads_run_at_once() {
    let server = start(Config {
        // Links outlive the first downloads, not the last: 18 files, 3 at a time, 250 ms each.
        link_ttl: Some(Duration::from_millis(700)),
        file_delay: Duration::from_millis(250),
        gzip: true,
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let keep = tmp.path().join("ndjson");
    let o = export(&[
        &server.base(),
        "-o",
        out.to_str().unwrap(),
        "--parallel",
        "3",
        "--keep-ndjson",
        keep.to_str().unwrap(),
        "-q",
    ]);
    assert_ok(&o);
    assert_exported(&out);
    let s = server.state.lock().unwrap();
    assert!(s.expired > 0, "no link expired: the test shows nothing");
    assert!(s.manifests >= 2, "the manifest was not asked for again");
    assert!(
        s.most_at_once >= 2,
        "downloads did not overlap: {}",
        s.most_at_once
    );
    assert_eq!(s.most_at_once.max(3), 3, "more than --parallel at once");
    // The kept NDJSON: one gzipped file per manifest entry, every line the server sent.
    let kept: Vec<PathBuf> = std::fs::read_dir(&keep)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(kept.len(), files().len(), "{kept:?}");
    assert!(kept
        .iter()
        .all(|p| p.to_string_lossy().ends_with(".ndjson.gz")));
    let lines: usize = kept.iter().map(|p| crate::read_lines(p).len()).sum();
    assert_eq!(lines, 2789);
    // Without --keep-ndjson nothing stays: the copies were made elsewhere.
    assert!(!out.join("_export/files").exists());
    let log = std::fs::read_to_string(out.join("_export/log.ndjson")).unwrap();
    assert!(log.contains("\"download_error\""), "{log}");
    assert!(
        !log.contains("expires="),
        "a signed link's query in the log"
    );
}

#[test]
fn a_killed_download_resumes_with_only_the_missing_files() {
    let server = start(Config {
        file_delay: Duration::from_millis(300),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
        .args(["export", &server.base(), "-o", out.to_str().unwrap()])
        .args(["--parallel", "1", "-q"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // One at a time: when the fifth file is asked for, four have ended. Ctrl-C then: the user
    // is told how to go on.
    let stopped = interrupt_when_served(&server, child, 5);
    assert_eq!(stopped.status.code(), Some(130));
    let said = String::from_utf8_lossy(&stopped.stderr);
    assert!(said.contains("export --resume -o"), "{said}");
    let state: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("_export/state.json")).unwrap()).unwrap();
    let done = state["done"].as_object().unwrap().len();
    assert!(done >= 4, "{state}");
    assert!(!out.join("Patient").exists(), "a killed export published");
    // Ctrl-C ends the run as an error would: the dataset's lock is released.
    assert!(
        !out.join("_fhir2parquet.lock").exists(),
        "the lock stayed behind"
    );
    let o = export(&["--resume", "-o", out.to_str().unwrap(), "-q"]);
    assert_ok(&o);
    assert_exported(&out);
    let s = server.state.lock().unwrap();
    assert_eq!(s.kickoffs, 1, "the job was kicked off again");
    // Only the file in flight at the kill was fetched twice.
    assert!(
        s.served_total() <= files().len() + 1,
        "{} requests for {} files: {:?}",
        s.served_total(),
        files().len(),
        s.served
    );
    assert!(s.deleted);
    assert!(!out.join("_export/files").exists());
    assert!(!out.join("_export/state.json").exists());
    let log = std::fs::read_to_string(out.join("_export/log.ndjson")).unwrap();
    assert!(log.contains("\"resume\""), "{log}");
}

#[test]
fn an_export_into_a_store_keeps_its_own_files_there() {
    let Some(store) = crate::cloud::Store::moto() else {
        return;
    };
    let server = start(Config {
        gzip: true,
        file_delay: Duration::from_millis(200),
        ..Default::default()
    });
    let url = store.url("exported");
    // Interrupted after four files, then resumed: the state and the copies are on the store.
    let child = store
        .command(&[
            "export",
            &server.base(),
            "-o",
            &url,
            "--parallel",
            "1",
            "-q",
        ])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stopped = interrupt_when_served(&server, child, 5);
    assert_eq!(stopped.status.code(), Some(130));
    let kept = store.list("exported");
    assert!(
        kept.iter().any(|o| o.contains("_export/state.json")),
        "{kept:?}"
    );
    assert!(
        kept.iter().filter(|o| o.contains("_export/files/")).count() >= 4,
        "{kept:?}"
    );
    let o = store.bin(&["export", "--resume", "-o", &url, "-q"]);
    assert_ok(&o);
    {
        let s = server.state.lock().unwrap();
        assert_eq!(s.kickoffs, 1);
        assert!(s.served_total() <= files().len() + 1, "{:?}", s.served);
    }
    let tmp = tempfile::tempdir().unwrap();
    let back = tmp.path().join("back");
    crate::cloud::ok(&store.bin(&["to-ndjson", &url, "-o", back.to_str().unwrap()]));
    assert_eq!(
        assert_same_resources(&shared("fhir-data/synthea-r4-small"), &back),
        2789
    );
    let objects = store.list("exported");
    let has = |part: &str| objects.iter().any(|o| o.contains(part));
    assert!(has("exported/_export/log.ndjson"), "{objects:?}");
    assert!(has("exported/_export/outcome-0.ndjson"), "{objects:?}");
    assert!(has("exported/_deleted/deleted-"), "{objects:?}");
    assert!(!has("_export/files/"), "copies left behind: {objects:?}");
    assert!(!has("state.json"), "{objects:?}");
}

#[test]
fn a_post_kickoff_and_files_that_need_no_token() {
    let server = start(Config {
        client: Some((
            "fhir2parquet-test".into(),
            key("rsa.pub.pem"),
            jsonwebtoken::Algorithm::RS384,
        )),
        // The manifest says files need no token: none is sent with them.
        requires_token: false,
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = export(&[
        &server.base(),
        "-o",
        out.to_str().unwrap(),
        "--post",
        "--type",
        "Patient,Condition",
        "--type-filter",
        "Condition?clinical-status=active",
        "--param",
        "includeAssociatedData=LatestProvenanceResources",
        "--client-id",
        "fhir2parquet-test",
        "--key",
        key("rsa.jwks.json").to_str().unwrap(),
        "-q",
    ]);
    assert_ok(&o);
    assert_exported(&out);
    let s = server.state.lock().unwrap();
    assert_eq!(s.kickoff_method, "POST");
    let body = s.kickoff_body.clone().unwrap();
    let value = |name: &str| -> Vec<String> {
        body["parameter"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["name"] == name)
            .map(|p| {
                p.as_object()
                    .unwrap()
                    .iter()
                    .find(|(k, _)| k.starts_with("value"))
                    .unwrap()
                    .1
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    assert_eq!(value("_type"), ["Patient,Condition"], "{body}");
    assert_eq!(value("_typeFilter"), ["Condition?clinical-status=active"]);
    assert_eq!(
        value("includeAssociatedData"),
        ["LatestProvenanceResources"]
    );
    assert_eq!(s.token_to_files, 0, "a token went with tokenless files");
}

/// `export --since auto`: the second export asks for what changed since the first's
/// transactionTime and merges it by id: the tables hold each resource once, the deletions the
/// server lists are applied (here an id the dataset does not hold: counted), and the merge is a
/// version of its own.
#[test]
fn a_since_export_is_merged_by_id() {
    let server = start(Config::default());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let base = server.base();
    let args = |since: bool| {
        let mut a = vec![
            base.as_str(),
            "-o",
            out.to_str().unwrap(),
            "-q",
            "--type",
            "Patient",
        ];
        if since {
            a.extend(["--since", "auto"]);
        }
        a
    };
    // Before any export, auto has nothing to go by.
    let o = export(&args(true));
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("records no earlier export"));
    assert_ok(&export(&args(false)));
    assert_ok(&export(&args(true)));
    let query = server.state.lock().unwrap().kickoff_query.clone();
    assert!(query.contains("_since=2024-05-01T12%3A00%3A00Z"), "{query}");
    let want = crate::read_lines(&shared("fhir-data/synthea-r4-small/Patient.ndjson")).len();
    let o = crate::bin(&[
        "sql",
        out.to_str().unwrap(),
        "--format",
        "csv",
        "-c",
        "SELECT count(*) AS n, count(DISTINCT id) AS d FROM Patient",
    ]);
    let text = assert_ok(&o);
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &text;
    assert!(text.contains(&format!("{want},{want}")), "{text}");
    let record = run_record(&out);
    let m = &record["types"]["Patient"]["merge"];
    assert_eq!(m["updated"], want, "{m}");
    assert_eq!(m["inserted"], 0, "{m}");
    assert_eq!(m["deletes_of_unknown_ids"], 1, "{m}");
    let o = crate::bin(&["history", out.to_str().unwrap(), "Patient", "--json"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"MERGE\""));
}

/// The manifest's error files report failures (severity error): the export fails before
/// publishing, naming the incomplete type and the server's words; `--resume --allow-partial`
/// then publishes what came, with exit code 3 and the run record saying the dataset is partial.
#[test]
fn server_reported_failures_fail_the_run_unless_partial_is_allowed() {
    let server = start(Config {
        error_severity: "error",
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = export(&[&server.base(), "-o", out.to_str().unwrap(), "-q"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("incomplete: Observation")
            && err.contains("could not be exported")
            && err.contains("nothing was published")
            && err.contains("--allow-partial"),
        "{err}"
    );
    assert!(!out.join("Patient").exists());
    assert!(
        !server.state.lock().unwrap().deleted,
        "the job is kept for a resume"
    );
    let o = export(&[
        "--resume",
        "--allow-partial",
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_exported(&out);
    let record = run_record(&out);
    assert_eq!(
        record["export"]["incomplete_types"],
        serde_json::json!(["Observation"])
    );
    assert_eq!(
        record["export"]["server_failures"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let s = server.state.lock().unwrap();
    assert_eq!(s.kickoffs, 1);
    assert!(s.deleted);
}

/// A manifest entry whose URL is not an absolute http(s) URL is refused at once, naming the
/// entry; nothing local is read.
#[test]
fn a_manifest_with_a_file_or_relative_url_is_refused_at_once() {
    for bad in ["file:///etc/hostname", "../Patient.ndjson"] {
        let server = start(Config {
            first_url: Some(bad.into()),
            ..Default::default()
        });
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let started = Instant::now();
        let o = export(&[&server.base(), "-o", out.to_str().unwrap(), "-q"]);
        assert!(started.elapsed() < Duration::from_secs(20), "{bad}: slow");
        assert_eq!(o.status.code(), Some(1), "{bad}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("output[0].url") && err.contains("not an absolute http(s) URL"),
            "{bad}: {err}"
        );
        assert!(
            server.state.lock().unwrap().served.is_empty(),
            "{bad}: files were fetched"
        );
        assert!(!out.join("Patient").exists());
    }
}

/// Links that a fresh manifest does not cure: one status request for all the downloads that
/// failed at once, and an error that says a resume cannot help (not to resume).
#[test]
fn expired_links_a_fresh_manifest_cannot_cure() {
    let server = start(Config {
        link_ttl: Some(Duration::ZERO),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = export(&[
        &server.base(),
        "-o",
        out.to_str().unwrap(),
        "--parallel",
        "3",
        "-q",
    ]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("--resume cannot help"), "{err}");
    assert!(!err.contains("to go on"), "{err}");
    let s = server.state.lock().unwrap();
    assert!(s.expired >= 2, "{}", s.expired);
    assert_eq!(
        s.manifests, 2,
        "one fresh manifest for every failed download"
    );
}

/// Plain-text error bodies are shown as the server wrote them.
#[test]
fn a_servers_plain_text_error_is_shown() {
    let server = start(Config {
        client: Some((
            "c".into(),
            key("rsa.pub.pem"),
            jsonwebtoken::Algorithm::RS384,
        )),
        plain_text_errors: true,
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = export(&[&server.base(), "-o", out.to_str().unwrap(), "-q"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("401") && err.contains("Token expired"),
        "{err}"
    );
    // The kick-off's failure is in the log, with the server's status.
    let log = std::fs::read_to_string(out.join("_export/log.ndjson")).unwrap();
    let kickoff: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(kickoff["eventId"], "kickoff");
    assert_eq!(kickoff["eventDetail"]["errorCode"], 401);
    assert_eq!(kickoff["eventDetail"]["errorBody"], "Token expired");
}

/// A protected export stopped with Ctrl-C resumes with `--resume -o OUT` alone: the client id,
/// key file and kid are kept with the job (the key itself is not). A new export into a folder
/// with an unfinished job is refused until --restart, which deletes the old job.
#[test]
fn a_resume_signs_in_as_the_export_did_and_unfinished_jobs_are_not_dropped() {
    let server = start(Config {
        client: Some((
            "c".into(),
            key("rsa.pub.pem"),
            jsonwebtoken::Algorithm::RS384,
        )),
        file_delay: Duration::from_millis(300),
        ..Default::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let child = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
        .args(["export", &server.base(), "-o", out.to_str().unwrap()])
        .args([
            "--client-id",
            "c",
            "--key",
            key("rsa.pem").to_str().unwrap(),
        ])
        .args(["--kid", "rsa-test", "--parallel", "1", "-q"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stopped = interrupt_when_served(&server, child, 3);
    assert_eq!(stopped.status.code(), Some(130));
    let state = std::fs::read_to_string(out.join("_export/state.json")).unwrap();
    assert!(
        state.contains("\"client_id\": \"c\"") && state.contains("rsa.pem"),
        "{state}"
    );
    assert!(!state.contains("PRIVATE KEY"), "{state}");
    // A new export is refused: the unfinished one is named, with both ways on.
    let o = export(&[&server.base(), "-o", out.to_str().unwrap(), "-q"]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unfinished export") && err.contains("--restart"),
        "{err}"
    );
    assert_eq!(server.state.lock().unwrap().kickoffs, 1);
    // The resume needs nothing but OUT.
    let o = export(&["--resume", "-o", out.to_str().unwrap(), "-q"]);
    assert_ok(&o);
    assert_exported(&out);
    assert_eq!(server.state.lock().unwrap().kickoffs, 1);
    // The log, in the Bulk Data client log's form: ISO timestamps, the status URL as exportId,
    // a download_complete per file with its size.
    let log = std::fs::read_to_string(out.join("_export/log.ndjson")).unwrap();
    let events: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let job = format!("{}/jobs/1", server.base());
    for e in &events {
        let t = e["timestamp"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(t).is_ok(), "{t}");
    }
    assert!(
        events.iter().all(|e| e["exportId"] == job.as_str()),
        "{log}"
    );
    let completed: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["eventId"] == "download_complete")
        .collect();
    assert_eq!(completed.len(), files().len(), "{log}");
    for c in completed {
        let name = c["eventDetail"]["fileUrl"]
            .as_str()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap();
        let (_, path) = files().into_iter().find(|(n, _)| n == name).unwrap();
        let bytes = std::fs::metadata(&path).unwrap().len();
        assert_eq!(c["eventDetail"]["fileSize"], bytes, "{name}");
        assert_eq!(
            c["eventDetail"]["resourceCount"],
            crate::read_lines(&path).len(),
            "{name}"
        );
    }
    // --restart after another unfinished job: the old job is deleted on the server.
    let child = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
        .args(["export", &server.base(), "-o", out.to_str().unwrap()])
        .args([
            "--client-id",
            "c",
            "--key",
            key("rsa.pem").to_str().unwrap(),
        ])
        .args(["--parallel", "1", "-q"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    server.state.lock().unwrap().deleted = false;
    let served = server.state.lock().unwrap().served_total();
    let stopped = interrupt_when_served(&server, child, served + 2);
    assert_eq!(stopped.status.code(), Some(130));
    let o = export(&[
        &server.base(),
        "-o",
        out.to_str().unwrap(),
        "--restart",
        "--client-id",
        "c",
        "--key",
        key("rsa.pem").to_str().unwrap(),
        "-q",
    ]);
    assert_ok(&o);
    assert_exported(&out);
    let s = server.state.lock().unwrap();
    assert_eq!(s.kickoffs, 3);
    assert!(s.deleted);
}

/// `organizeOutputBy=Patient`: each patient's block starts with a Parameters header, which is
/// not data: no Parameters table, no count mismatch, every resource exported.
#[test]
fn an_export_organized_by_patient_skips_its_headers() {
    let server = start(Config::default());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = export(&[
        &server.base(),
        "-o",
        out.to_str().unwrap(),
        "--param",
        "organizeOutputBy=Patient",
        "-q",
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!out.join("Parameters").exists());
    assert_exported(&out);
    let record = run_record(&out);
    let headers: u64 = record["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["headers"].as_u64().unwrap_or(0))
        .sum();
    // One header per patient block of each file: at least one per file.
    assert!(headers >= files().len() as u64, "{headers}");
}

/// Killed after its commit, before the job's leftovers went: `--resume` sees the job in the
/// run record and only cleans up (no second conversion: with --append, no doubled rows).
#[test]
fn a_resume_after_the_commit_only_cleans_up() {
    let server = start(Config::default());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
        .args([
            "export",
            &server.base(),
            "-o",
            out.to_str().unwrap(),
            "--append",
            "-q",
        ])
        .env("FHIR2PARQUET_FAILPOINT", "export-committed")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(out.join("_export/state.json").exists());
    let run_id = run_record(&out)["run_id"].clone();
    assert_exported(&out);
    assert!(!server.state.lock().unwrap().deleted);
    let o = export(&["--resume", "--append", "-o", out.to_str().unwrap(), "-q"]);
    let err = assert_ok(&o);
    assert!(err.contains("already published"), "{err}");
    assert_eq!(run_record(&out)["run_id"], run_id, "converted again");
    assert_exported(&out);
    assert!(!out.join("_export/state.json").exists());
    assert!(!out.join("_export/files").exists());
    let s = server.state.lock().unwrap();
    assert!(s.deleted);
    assert_eq!(s.kickoffs, 1);
}

/// The FHIR version in a table's Delta log (its `fhir2parquet.fhirVersion` property).
fn table_fhir_version(table: &Path) -> String {
    let log = std::fs::read_to_string(table.join("_delta_log/00000000000000000000.json")).unwrap();
    log.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find_map(|a| {
            a["metaData"]["configuration"]["fhir2parquet.fhirVersion"]
                .as_str()
                .map(str::to_string)
        })
        .unwrap()
}

/// The data is converted as the FHIR version the server's CapabilityStatement names; without
/// one, as R4, said on stderr; a version fhir2parquet has no model of fails before anything is
/// published, with the way out (`--fhir-version`).
#[test]
fn export_converts_as_the_servers_fhir_version() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(Config {
        fhir_version: Some("5.0.0"),
        ..Default::default()
    });
    let out = tmp.path().join("r5");
    assert_ok(&export(&[
        &server.base(),
        "-o",
        out.to_str().unwrap(),
        "-q",
        "--type",
        "Patient",
    ]));
    let record = run_record(&out);
    assert_eq!(record["fhir_version"], "5.0.0");
    assert_eq!(record["export"]["server_fhir_version"], "5.0.0");
    assert_eq!(table_fhir_version(&out.join("Patient")), "5.0.0");

    let server = start(Config {
        fhir_version: None,
        ..Default::default()
    });
    let out = tmp.path().join("none");
    let err = assert_ok(&export(&[
        &server.base(),
        "-o",
        out.to_str().unwrap(),
        "--type",
        "Patient",
    ]));
    assert!(err.contains("named no FHIR version"), "{err}");
    assert_eq!(run_record(&out)["fhir_version"], "4.0.1");

    let server = start(Config {
        fhir_version: Some("3.0.2"),
        ..Default::default()
    });
    let out = tmp.path().join("stu3");
    let o = export(&[
        &server.base(),
        "-o",
        out.to_str().unwrap(),
        "-q",
        "--type",
        "Patient",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("3.0.2") && err.contains("--fhir-version"),
        "{err}"
    );
    assert!(!out.join("Patient").exists());
    // Asked for, a version is used whatever the server says.
    let o = export(&[
        &server.base(),
        "-o",
        out.to_str().unwrap(),
        "-q",
        "--type",
        "Patient",
        "--restart",
        "--fhir-version",
        "r4",
    ]);
    assert_ok(&o);
    assert_eq!(table_fhir_version(&out.join("Patient")), "4.0.1");
}
