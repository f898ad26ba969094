//! Object stores: convert to and from them, query there, upload, kill runs, inject faults.
//!
//! Every test starts its own real server on 127.0.0.1: moto (S3, `pip install "moto[server]"`),
//! azurite (Azure Blob, `npm install -g azurite`, always with `--disableTelemetry`) and
//! gcp-storage-emulator (GCS, `pip install gcp-storage-emulator`). `.ci/run` installs them; on a
//! machine without them these tests say so and pass only outside CI.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{assert_same_resources, shared};

/// A server process, killed when dropped.
pub struct Server {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn installed(program: &str, what: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success());
    crate::present(found, what)
}

fn start(program: &str, args: &[String], port: u16, dir: tempfile::TempDir) -> Server {
    let child = Command::new(program)
        .args(args)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {program}: {e}"));
    let mut server = Server {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("{program} exited ({status}) before it listened on {port}");
        }
        assert!(
            Instant::now() < deadline,
            "{program} did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    server
}

/// A store under test: its server, the environment the binary needs, and a bucket URL.
pub struct Store {
    pub server: Server,
    pub env: Vec<(String, String)>,
    bucket: String,
}

impl Store {
    pub fn moto() -> Option<Store> {
        if !installed("moto_server", "`pip install \"moto[server]\"`") {
            return None;
        }
        let port = free_port();
        let args = ["-H", "127.0.0.1", "-p", &port.to_string()].map(String::from);
        let server = start("moto_server", &args, port, tempfile::tempdir().unwrap());
        let status = http(port, "PUT", "/bucket", &[], b"");
        assert!(
            status.starts_with("HTTP/1.1 200"),
            "create bucket: {status}"
        );
        Some(Store {
            env: vec![
                ("AWS_ACCESS_KEY_ID".into(), "testing".into()),
                ("AWS_SECRET_ACCESS_KEY".into(), "SECRETVALUE".into()),
                ("AWS_REGION".into(), "us-east-1".into()),
                (
                    "AWS_ENDPOINT_URL".into(),
                    format!("http://127.0.0.1:{port}"),
                ),
                ("AWS_ALLOW_HTTP".into(), "true".into()),
            ],
            server,
            bucket: "s3://bucket".into(),
        })
    }

    fn azurite() -> Option<Store> {
        if !installed("azurite-blob", "`npm install -g azurite`") {
            return None;
        }
        let port = free_port();
        let dir = tempfile::tempdir().unwrap();
        let args = [
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            &port.to_string(),
            "--location",
            dir.path().to_str().unwrap(),
            "--silent",
            "--skipApiVersionCheck",
            "--disableTelemetry",
        ]
        .map(String::from);
        let server = start("azurite-blob", &args, port, dir);
        azure::create_container(port, "container");
        Some(Store {
            env: vec![(
                "AZURE_STORAGE_CONNECTION_STRING".into(),
                format!(
                    "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};\
                     BlobEndpoint=http://127.0.0.1:{port}/{};",
                    azure::ACCOUNT,
                    azure::KEY,
                    azure::ACCOUNT
                ),
            )],
            server,
            bucket: "az://container".into(),
        })
    }

    /// Runs the binary with the store's environment (and none of the caller's cloud settings).
    pub fn bin(&self, args: &[&str]) -> Output {
        self.bin_env(args, &[])
    }

    fn bin_env(&self, args: &[&str], extra: &[(&str, &str)]) -> Output {
        let mut c = self.command(args);
        for (k, v) in extra {
            c.env(k, v);
        }
        c.output().expect("the binary runs")
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"));
        c.args(args);
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") || k.starts_with("AZURE_") || k.starts_with("GOOGLE_") {
                c.env_remove(k);
            }
        }
        // No profile files of the machine's user.
        c.env("HOME", "/nonexistent");
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    pub fn url(&self, rel: &str) -> String {
        format!("{}/{rel}", self.bucket)
    }

    /// The objects under `rel`, as paths relative to the bucket.
    pub fn list(&self, rel: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .remote(rel)
            .list("")
            .unwrap()
            .into_iter()
            .map(|m| m.location.to_string())
            .collect();
        out.sort();
        out
    }

    /// The store's prefix `rel`, as the library reaches it.
    fn remote(&self, rel: &str) -> fhir2parquet::store::Remote {
        // The library reads the environment: give it the store's.
        let _guard = ENV.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in &self.env {
            std::env::set_var(k, v);
        }
        let loc = fhir2parquet::store::Location::parse(&self.url(rel), &Default::default());
        for (k, _) in &self.env {
            std::env::remove_var(k);
        }
        match loc.unwrap() {
            fhir2parquet::store::Location::Remote(r) => r,
            fhir2parquet::store::Location::Local(_) => unreachable!("a store URL"),
        }
    }
}

/// The tests run on threads of one process: one at a time sets the environment.
static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A plain HTTP/1.1 request; returns the whole response.
fn http(port: u16, method: &str, path: &str, headers: &[(String, String)], body: &[u8]) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Azure Shared Key requests azurite takes, for what object_store does not do (containers).
mod azure {
    use base64::Engine;

    pub const ACCOUNT: &str = "devstoreaccount1";
    /// Azurite's well-known development key.
    pub const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    pub fn signed(port: u16, method: &str, path: &str, query: &[(&str, &str)]) -> String {
        let date = chrono::Utc::now()
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let version = "2021-08-06";
        let mut canonical_query: Vec<_> = query.iter().collect();
        canonical_query.sort();
        let mut resource = format!("/{ACCOUNT}{path}");
        for (k, v) in &canonical_query {
            resource.push_str(&format!("\n{k}:{v}"));
        }
        let to_sign = format!(
            "{method}\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:{date}\nx-ms-version:{version}\n{resource}"
        );
        let key = base64::engine::general_purpose::STANDARD
            .decode(KEY)
            .unwrap();
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
        let sig = base64::engine::general_purpose::STANDARD
            .encode(ring::hmac::sign(&key, to_sign.as_bytes()).as_ref());
        let q: Vec<String> = query.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let full = match q.is_empty() {
            true => path.to_string(),
            false => format!("{path}?{}", q.join("&")),
        };
        let headers = vec![
            ("x-ms-date".to_string(), date),
            ("x-ms-version".to_string(), version.to_string()),
            (
                "Authorization".to_string(),
                format!("SharedKey {ACCOUNT}:{sig}"),
            ),
        ];
        super::http(port, method, &full, &headers, b"")
    }

    pub fn create_container(port: u16, name: &str) {
        let r = signed(
            port,
            "PUT",
            &format!("/{ACCOUNT}/{name}"),
            &[("restype", "container")],
        );
        assert!(r.starts_with("HTTP/1.1 201"), "create container: {r}");
    }

    /// Blob names under the container, committed or not.
    pub fn blobs_with_uncommitted(port: u16, container: &str) -> String {
        signed(
            port,
            "GET",
            &format!("/{ACCOUNT}/{container}"),
            &[
                ("comp", "list"),
                ("include", "uncommittedblobs"),
                ("restype", "container"),
            ],
        )
    }
}

/// The same conversion, queries and round trip on each store.
fn convert_query_round_trip(store: &Store) {
    let src = shared("fhir-data/synthea-r4-small");
    let url = store.url("fhir");
    let o = store.bin(&["convert", src.to_str().unwrap(), "-o", &url, "-q"]);
    ok(&o);
    let objects = store.list("fhir");
    assert!(objects
        .iter()
        .any(|o| o.ends_with("fhir/_fhir2parquet.json")));
    assert!(objects.iter().any(|o| o.contains("fhir/Patient/part-")));
    assert!(
        !objects.iter().any(|o| o.contains("pending")),
        "{objects:?}"
    );

    let out = ok(&store.bin(&[
        "sql",
        &url,
        "--format",
        "csv",
        "-q",
        "-c",
        "SELECT COUNT(*) AS n FROM Patient",
    ]));
    let patients = crate::read_lines(&src.join("Patient.ndjson")).len();
    assert_eq!(
        out.lines().nth(1),
        Some(patients.to_string().as_str()),
        "{out}"
    );

    let view = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/views/patient_demographics.json"
    );
    let out = ok(&store.bin(&["view", view, "--data", &url, "--format", "csv"]));
    assert_eq!(out.lines().count(), patients + 1, "{out}");

    let tmp = tempfile::tempdir().unwrap();
    let back = tmp.path().join("back");
    ok(&store.bin(&["to-ndjson", &url, "-o", back.to_str().unwrap()]));
    assert_eq!(assert_same_resources(&src, &back), 2789);

    // A second run replaces each type's files: the new version holds its own only, and once
    // vacuumed nothing of the first is left.
    ok(&store.bin(&["convert", src.to_str().unwrap(), "-o", &url, "-q"]));
    let data_files = || {
        store
            .list("fhir")
            .into_iter()
            .filter(|o| o.contains("fhir/Patient/") && o.ends_with(".parquet"))
            .count()
    };
    assert_eq!(data_files(), 2);
    ok(&store.bin(&["vacuum", &url, "--retain", "0"]));
    assert_eq!(data_files(), 1);
    let out = ok(&store.bin(&[
        "sql",
        &url,
        "--format",
        "csv",
        "-q",
        "-c",
        "SELECT COUNT(*) AS n FROM Patient",
    ]));
    assert_eq!(
        out.lines().nth(1),
        Some(patients.to_string().as_str()),
        "{out}"
    );

    // Small row groups: a column first seen late starts a file with more columns; once the
    // run is published, the earlier files of the type hold the same columns.
    let src = shared("fhir-data/synthea-r4-10-patients");
    let url = store.url("small-groups");
    let args = ["--row-group-rows", "100", "--batch-rows", "100", "-q"];
    ok(&store.bin(&[&["convert", src.to_str().unwrap(), "-o", &url][..], &args].concat()));
    let remote = store.remote("small-groups");
    let mut several = 0;
    for t in ["Encounter", "MedicationRequest", "Procedure"] {
        let files: Vec<_> = remote
            .list(t)
            .unwrap()
            .into_iter()
            .filter(|o| o.location.as_ref().ends_with(".parquet"))
            .collect();
        several += usize::from(files.len() > 1);
        let schemas: std::collections::BTreeSet<String> = files
            .into_iter()
            .map(|o| {
                let file = fhir2parquet::store::RemoteFile::new(&remote, o.location, o.size);
                let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
                let meta = parquet::file::reader::FileReader::metadata(&reader);
                crate::schema_text(meta.file_metadata())
            })
            .collect();
        assert_eq!(schemas.len(), 1, "{t}: the files hold different columns");
    }
    assert!(several > 0, "no type took more than one file");
    let back = tmp.path().join("back-small");
    ok(&store.bin(&["to-ndjson", &url, "-o", back.to_str().unwrap()]));
    assert_eq!(assert_same_resources(&src, &back), 7160);
}

#[test]
fn s3_convert_sql_view_to_ndjson() {
    let Some(store) = Store::moto() else { return };
    convert_query_round_trip(&store);
}

#[test]
fn azure_convert_sql_view_to_ndjson() {
    let Some(store) = Store::azurite() else {
        return;
    };
    convert_query_round_trip(&store);
}

/// Inputs on a store: a prefix of NDJSON (gzipped too) and a manifest there.
#[test]
fn s3_inputs_prefix_and_manifest() {
    let Some(store) = Store::moto() else { return };
    let src = shared("fhir-data/synthea-r4-small");
    let r = store.remote("export");
    let mut names = Vec::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        if name.contains(".ndjson") {
            r.put(&name, std::fs::read(&p).unwrap()).unwrap();
            names.push(name);
        }
    }
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    ok(&store.bin(&[
        "convert",
        &store.url("export/"),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]));
    let record = crate::run_record(&out);
    let rows: u64 = record["types"]
        .as_object()
        .unwrap()
        .values()
        .map(|t| t["rows"].as_u64().unwrap())
        .sum();
    assert_eq!(rows, 2789);
    assert!(record["inputs"][0]["path"]
        .as_str()
        .unwrap()
        .starts_with("s3://bucket/export/"));

    // A bulk manifest beside the files, with counts that are checked.
    let output: Vec<_> = names
        .iter()
        .map(|n| {
            let lines = crate::read_lines(&src.join(n)).len();
            serde_json::json!({"type": "x", "url": format!("https://fhir.example/files/{n}?sig=SECRET"), "count": lines})
        })
        .collect();
    let manifest = serde_json::json!({"transactionTime": "2024-01-01T00:00:00Z", "request": "x", "requiresAccessToken": true, "output": output, "error": []});
    r.put("manifest.json", serde_json::to_vec(&manifest).unwrap())
        .unwrap();
    let out2 = tmp.path().join("out2");
    let o = store.bin(&[
        "convert",
        &store.url("export"),
        "-o",
        out2.to_str().unwrap(),
        "-q",
    ]);
    ok(&o);
    let record2 = crate::run_record(&out2);
    for (t, rec) in record["types"].as_object().unwrap() {
        assert_eq!(record2["types"][t]["rows"], rec["rows"], "{t}");
    }
    assert!(record2["inputs"][0]["expected_count"].as_u64().is_some());
    assert!(!String::from_utf8_lossy(&o.stderr).contains("SECRET"));
}

/// Lines of every Synthea file, many times over: enough for several files of 1 MB.
fn big_input(copies: usize) -> Vec<u8> {
    let src = shared("fhir-data/synthea-r4-10-patients");
    let mut one = Vec::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        if p.to_string_lossy().contains(".ndjson") {
            for l in crate::read_lines(&p) {
                one.extend_from_slice(l.as_bytes());
                one.push(b'\n');
            }
        }
    }
    one.repeat(copies)
}

/// Starts a convert reading standard input, feeds it `data` and leaves the pipe open.
fn convert_from_open_stdin(store: &Store, url: &str, data: &[u8]) -> Child {
    let mut c = store.command(&[
        "convert",
        "-",
        "-o",
        url,
        "-q",
        "--target-file-mb",
        "1",
        "--row-group-rows",
        "200",
        "-j",
        "1",
    ]);
    c.stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = c.spawn().unwrap();
    child.stdin.as_mut().unwrap().write_all(data).unwrap();
    child
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn s3_killed_convert_leaves_no_visible_data() {
    let Some(store) = Store::moto() else { return };
    let mut child = convert_from_open_stdin(&store, &store.url("killed"), &big_input(4));
    // The run is uploading: multipart uploads are open (and none completed).
    wait_until("an open multipart upload", || {
        http(store.server.port, "GET", "/bucket?uploads", &[], b"").contains("<UploadId>")
    });
    // One writer per dataset: a second run into the prefix is refused, naming the first.
    let src = shared("fhir-data/synthea-r4-small");
    let second = store.bin(&[
        "convert",
        src.to_str().unwrap(),
        "-o",
        &store.url("killed"),
        "-q",
    ]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert!(!second.status.success());
    assert!(err.contains(&format!("pid {}", child.id())), "{err}");
    child.kill().unwrap();
    child.wait().unwrap();
    // Only the killed run's lock, which the next run takes over.
    assert_eq!(store.list("killed"), vec!["killed/_fhir2parquet.lock"]);
    // The next run publishes normally.
    ok(&store.bin(&[
        "convert",
        src.to_str().unwrap(),
        "-o",
        &store.url("killed"),
        "-q",
    ]));
    assert!(store
        .list("killed")
        .iter()
        .any(|o| o.ends_with("_fhir2parquet.json")));
}

/// A run killed on a store after its files of a type with no table yet were completed, before
/// that table's version 0: no reader takes them for a plain folder (the mark says why), and
/// the next run makes the table of its own rows.
#[test]
fn s3_a_new_table_killed_before_its_first_commit_is_no_table() {
    let Some(store) = Store::moto() else { return };
    let url = store.url("first");
    let patients = shared("fhir-data/synthea-r4-small/Patient.ndjson");
    ok(&store.bin(&["convert", patients.to_str().unwrap(), "-o", &url, "-q"]));
    let input = shared("fhir-data/r4-spec-examples/CodeSystem.ndjson.gz");
    let lines = crate::read_lines(&input).len();
    let args = [
        "convert",
        input.to_str().unwrap(),
        "-o",
        &url,
        "-q",
        "--append",
    ];
    let o = store.bin_env(&args, &[("FHIR2PARQUET_FAILPOINT", "files-placed")]);
    assert!(!o.status.success());
    let objects = store.list("first/CodeSystem");
    assert!(
        objects.iter().any(|o| o.ends_with(".parquet")),
        "{objects:?}"
    );
    assert!(
        !objects.iter().any(|o| o.contains("_delta_log")),
        "{objects:?}"
    );
    let o = store.bin(&["sql", &url, "-q", "-c", "SELECT count(*) FROM Patient"]);
    ok(&o);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("CodeSystem") && err.contains("did not commit"),
        "{err}"
    );
    let o = store.bin(&["sql", &url, "-q", "-c", "SELECT count(*) FROM CodeSystem"]);
    assert!(!o.status.success());
    ok(&store.bin(&args));
    let q = "SELECT count(*) AS n FROM CodeSystem";
    let text = ok(&store.bin(&["sql", &url, "--format", "csv", "-c", q]));
    assert_eq!(
        text.lines().nth(1),
        Some(lines.to_string().as_str()),
        "{text}"
    );
    assert!(!store
        .list("first/CodeSystem")
        .iter()
        .any(|o| o.ends_with("_fhir2parquet-uncommitted")));
}

#[test]
fn azure_killed_convert_leaves_no_visible_data() {
    let Some(store) = Store::azurite() else {
        return;
    };
    let mut child = convert_from_open_stdin(&store, &store.url("killed"), &big_input(4));
    wait_until("an uncommitted block", || {
        azure::blobs_with_uncommitted(store.server.port, "container").contains("<Name>killed/")
    });
    child.kill().unwrap();
    child.wait().unwrap();
    // Only the killed run's lock, which the next run takes over.
    assert_eq!(store.list("killed"), vec!["killed/_fhir2parquet.lock"]);
}

/// A run killed while publishing leaves its pending list; the next run takes its files away.
#[test]
fn s3_files_of_an_unpublished_run_are_removed_by_the_next() {
    let Some(store) = Store::moto() else { return };
    let r = store.remote("half");
    r.put("Patient/part-x-00000.parquet", b"half of a run".to_vec())
        .unwrap();
    r.put(
        "_fhir2parquet-pending-x.json",
        br#"{"run_id": "x", "files": ["Patient/part-x-00000.parquet"]}"#.to_vec(),
    )
    .unwrap();
    let src = shared("fhir-data/synthea-r4-small");
    ok(&store.bin(&[
        "convert",
        src.join("Condition.ndjson").to_str().unwrap(),
        "-o",
        &store.url("half"),
        "-q",
        "--append",
        "--format",
        "parquet",
    ]));
    let objects = store.list("half");
    assert!(
        !objects.iter().any(|o| o.contains("part-x-")),
        "{objects:?}"
    );
    assert!(
        !objects.iter().any(|o| o.contains("pending")),
        "{objects:?}"
    );
    assert!(objects.iter().any(|o| o.contains("half/Condition/")));

    // Killed after its record was written (the commit point): the next run finishes its
    // replacing, deleting the files it replaced, and keeps its own.
    let conditions: Vec<String> = objects
        .iter()
        .filter(|o| o.contains("half/Condition/"))
        .map(|o| o.trim_start_matches("half/").to_string())
        .collect();
    let record: serde_json::Value =
        serde_json::from_slice(&r.read("_fhir2parquet.json").unwrap().unwrap()).unwrap();
    let run = record["run_id"].as_str().unwrap().to_string();
    r.put(
        "Condition/part-old-00000.parquet",
        b"an earlier run".to_vec(),
    )
    .unwrap();
    let marker = serde_json::json!({"run_id": run, "files": conditions, "obsolete": ["Condition/part-old-00000.parquet"]});
    r.put(
        &format!("_fhir2parquet-pending-{run}.json"),
        serde_json::to_vec(&marker).unwrap(),
    )
    .unwrap();
    ok(&store.bin(&[
        "convert",
        src.join("Patient.ndjson").to_str().unwrap(),
        "-o",
        &store.url("half"),
        "-q",
        "--append",
        "--format",
        "parquet",
    ]));
    let objects = store.list("half");
    assert!(
        !objects.iter().any(|o| o.contains("part-old-")),
        "{objects:?}"
    );
    assert!(
        !objects.iter().any(|o| o.contains("pending")),
        "{objects:?}"
    );
    for c in &conditions {
        assert!(objects.contains(&format!("half/{c}")), "{objects:?}");
    }
}

fn upload_twice(store: &Store) {
    let src = shared("fhir-data/synthea-r4-small");
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    ok(&crate::convert_quiet(&src, &out));
    let dest = store.url("up");
    let first = store.bin(&["upload", out.to_str().unwrap(), &dest]);
    ok(&first);
    // The data files, rejects and record: a Delta table's local log is not sent (the
    // destination's table gets a log of its own).
    let local = crate::files_under(&out);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(
        stderr.contains(&format!("sent {} file(s)", local.len())),
        "{stderr}"
    );
    assert!(stderr.contains("skipped 0 file(s)"), "{stderr}");
    let sent: Vec<String> = store
        .list("up")
        .into_iter()
        .filter(|o| !o.contains("/_delta_log/"))
        .collect();
    assert_eq!(sent.len(), local.len());
    let second = store.bin(&["upload", out.to_str().unwrap(), &dest]);
    ok(&second);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("sent 0 file(s)"), "{stderr}");
    assert!(
        stderr.contains(&format!("skipped {} file(s)", local.len())),
        "{stderr}"
    );
    // A changed file is sent again.
    std::fs::write(out.join("_fhir2parquet.json"), b"{}").unwrap();
    let third = store.bin(&["upload", out.to_str().unwrap(), &dest]);
    assert!(String::from_utf8_lossy(&third.stderr).contains("sent 1 file(s)"));
    let out = ok(&store.bin(&[
        "sql",
        &dest,
        "--format",
        "csv",
        "-q",
        "-c",
        "SELECT COUNT(*) FROM Condition",
    ]));
    let conditions = crate::read_lines(&src.join("Condition.ndjson")).len();
    assert_eq!(out.lines().nth(1), Some(conditions.to_string().as_str()));
}

/// Re-convert and upload again: the destination's table holds the new rows, never both, and
/// keeps its history; an unchanged table uploaded again commits nothing.
fn upload_after_reconvert(store: &Store) {
    let first = shared("fhir-data/synthea-r4-small");
    let second = shared("fhir-data/synthea-r4-10-patients");
    let patients = |dir: &std::path::Path| {
        crate::files_under(dir)
            .iter()
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("Patient.")
            })
            .map(|p| crate::read_lines(p).len())
            .sum::<usize>()
    };
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let dest = store.url("again");
    let count = |extra: &[&str]| {
        let args = [
            &["sql", &dest, "--format", "csv", "-q"][..],
            extra,
            &["-c", "SELECT COUNT(*) FROM Patient"],
        ]
        .concat();
        let text = ok(&store.bin(&args));
        text.lines().nth(1).unwrap().parse::<usize>().unwrap()
    };
    ok(&crate::convert_quiet(&first, &out));
    ok(&store.bin(&["upload", out.to_str().unwrap(), &dest, "-q"]));
    assert_eq!(count(&[]), patients(&first));
    ok(&crate::convert_quiet(&second, &out));
    ok(&store.bin(&["upload", out.to_str().unwrap(), &dest, "-q"]));
    assert_eq!(count(&[]), patients(&second));
    assert_eq!(count(&["--as-of", "0"]), patients(&first));
    let history = |t: &str| {
        let text = ok(&store.bin(&["history", &dest, t, "--json"]));
        text.lines().count()
    };
    assert_eq!(history("Patient"), 2);
    ok(&store.bin(&["upload", out.to_str().unwrap(), &dest, "-q"]));
    assert_eq!(history("Patient"), 2);
    // A merge that deletes two patients and updates one marks their rows in a deletion vector;
    // the upload sends the vector with the files and the destination reads the merged rows.
    let lines = crate::read_lines(&second.join("Patient.000.ndjson"));
    let ids = crate::ids(&lines);
    let changes = tmp.path().join("changes");
    let change_set = |deleted: &[&String], updated: &str| {
        let _ = std::fs::remove_dir_all(&changes);
        std::fs::create_dir(&changes).unwrap();
        let mut p: serde_json::Value = serde_json::from_str(updated).unwrap();
        p["name"][0]["family"] = "Merged".into();
        std::fs::write(changes.join("Patient.ndjson"), format!("{p}\n")).unwrap();
        let entries: Vec<serde_json::Value> = deleted
            .iter()
            .map(|id| serde_json::json!({"request": {"method": "DELETE", "url": format!("Patient/{id}")}}))
            .collect();
        crate::write_since_export(&changes, "2030-01-01T00:00:00Z", entries);
    };
    let merged_families = |url: &str| {
        let q = "SELECT count(*) FILTER (WHERE name[1].family = 'Merged') FROM Patient";
        let text = ok(&store.bin(&["sql", url, "--format", "csv", "-q", "-c", q]));
        text.lines().nth(1).unwrap().parse::<usize>().unwrap()
    };
    change_set(&[&ids[1], &ids[2]], &lines[0]);
    let (c, o) = (changes.to_str().unwrap(), out.to_str().unwrap());
    ok(&crate::bin(&["convert", c, "-o", o, "-q", "--merge"]));
    ok(&store.bin(&["upload", out.to_str().unwrap(), &dest, "-q"]));
    assert_eq!(count(&[]), patients(&second) - 2);
    assert_eq!(merged_families(&dest), 1);
    assert!(store
        .list("again")
        .iter()
        .any(|o| o.contains("Patient/deletion_vector_")));
    // A merge straight into the table on the store.
    change_set(&[&ids[3]], &lines[4]);
    ok(&store.bin(&[
        "convert",
        changes.to_str().unwrap(),
        "-o",
        &dest,
        "-q",
        "--merge",
    ]));
    assert_eq!(count(&[]), patients(&second) - 3);
    assert_eq!(merged_families(&dest), 2);
    // Converting straight to the store commits there too: a re-convert replaces the rows.
    let url = store.url("direct");
    for src in [&first, &second] {
        ok(&store.bin(&["convert", src.to_str().unwrap(), "-o", &url, "-q"]));
    }
    let text = ok(&store.bin(&[
        "sql",
        &url,
        "--format",
        "csv",
        "-q",
        "-c",
        "SELECT COUNT(*) FROM Patient",
    ]));
    assert_eq!(
        text.lines().nth(1).unwrap().parse::<usize>().unwrap(),
        patients(&second)
    );
    assert!(store
        .list("direct")
        .iter()
        .any(|o| o.ends_with("Patient/_delta_log/00000000000000000001.json")));
}

#[test]
fn s3_upload_after_reconvert_replaces_the_rows() {
    let Some(store) = Store::moto() else { return };
    upload_after_reconvert(&store);
}

#[test]
fn azure_upload_after_reconvert_replaces_the_rows() {
    let Some(store) = Store::azurite() else {
        return;
    };
    upload_after_reconvert(&store);
}

/// A merge on a store: the table file holding the changed ids rewritten there (a put), the
/// commit removing the one it replaces.
#[test]
fn s3_merge_updates_and_deletes_by_id() {
    let Some(store) = Store::moto() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let src = shared("fhir-data/synthea-r4-small/Patient.ndjson");
    let patients: Vec<serde_json::Value> = crate::read_lines(&src)
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let url = store.url("merged");
    ok(&store.bin(&["convert", src.to_str().unwrap(), "-o", &url, "-q"]));
    // Patient 0 renamed (no lastUpdated anywhere: the change set wins), patient 1 deleted.
    let export = tmp.path().join("changes");
    std::fs::create_dir(&export).unwrap();
    let mut changed = patients[0].clone();
    changed["name"][0]["family"] = "Merged".into();
    std::fs::write(export.join("Patient.ndjson"), format!("{changed}\n")).unwrap();
    let gone = patients[1]["id"].as_str().unwrap();
    let bundle = serde_json::json!({"resourceType": "Bundle", "type": "transaction",
        "entry": [{"request": {"method": "DELETE", "url": format!("Patient/{gone}")}}]});
    std::fs::write(export.join("deleted.ndjson"), format!("{bundle}\n")).unwrap();
    let manifest = serde_json::json!({"transactionTime": "2024-01-01T00:00:00Z", "request": "x",
        "requiresAccessToken": false,
        "output": [{"type": "Patient", "url": "Patient.ndjson"}],
        "deleted": [{"type": "Bundle", "url": "deleted.ndjson"}], "error": []});
    std::fs::write(export.join("manifest.json"), manifest.to_string()).unwrap();
    ok(&store.bin(&[
        "convert",
        export.to_str().unwrap(),
        "-o",
        &url,
        "-q",
        "--merge",
    ]));
    let q = "SELECT id, name[1].family AS f FROM Patient ORDER BY id";
    let text = ok(&store.bin(&["sql", &url, "--format", "csv", "-q", "-c", q]));
    let got: std::collections::BTreeMap<String, String> = text
        .lines()
        .skip(1)
        .map(|l| {
            let (a, b) = l.split_once(',').unwrap();
            (a.to_string(), b.to_string())
        })
        .collect();
    assert_eq!(got.len(), patients.len() - 1);
    assert!(!got.contains_key(gone));
    assert_eq!(got[patients[0]["id"].as_str().unwrap()], "Merged");
    let other = patients[2]["id"].as_str().unwrap();
    assert_eq!(
        got[other],
        patients[2]["name"][0]["family"].as_str().unwrap()
    );
}

#[test]
fn s3_four_shards_convert_into_one_dataset_at_once() {
    let Some(store) = Store::moto() else { return };
    let url = store.url("shards");
    let bin = |args: &[&str]| store.command(args);
    let count = |t: &str| {
        let q = format!("SELECT COUNT(*) FROM \"{t}\"");
        let text = ok(&store.bin(&["sql", &url, "--format", "csv", "-q", "-c", &q]));
        text.lines().nth(1).unwrap().parse::<u64>().unwrap()
    };
    crate::delta::four_shards_at_once(&url, &bin, &count);
}

#[test]
fn s3_upload_twice_sends_nothing_the_second_time() {
    let Some(store) = Store::moto() else { return };
    upload_twice(&store);
}

#[test]
fn azure_upload_twice_sends_nothing_the_second_time() {
    let Some(store) = Store::azurite() else {
        return;
    };
    upload_twice(&store);
}

#[test]
fn errors_name_the_url_and_what_to_set() {
    let Some(store) = Store::moto() else { return };
    let src = shared("fhir-data/synthea-r4-small/Patient.ndjson");
    // A bucket that does not exist.
    let o = store.bin(&[
        "convert",
        src.to_str().unwrap(),
        "-o",
        "s3://nobucket/x",
        "-q",
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("s3://nobucket/"), "{err}");
    assert!(err.contains("bucket"), "{err}");
    assert!(!err.contains("SECRETVALUE"), "{err}");
    // A scheme the tool does not handle: an error, not a folder named `ftp:`.
    let tmp = tempfile::tempdir().unwrap();
    let o = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
        .current_dir(tmp.path())
        .args(["convert", src.to_str().unwrap(), "-o", "ftp://host/x", "-q"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("ftp://"));
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    // Azure with no account or connection string.
    let o = store.bin(&["sql", "az://container/x", "-c", "SELECT 1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("AZURE_STORAGE_CONNECTION_STRING"), "{err}");
    // No credentials anywhere (the chain ends at instance metadata, not reachable here).
    let o = store
        .command(&["--retries", "0", "sql", "s3://bucket/x", "-c", "SELECT 1"])
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("s3://bucket/x"), "{err}");
    assert!(
        err.contains("no usable credentials: set AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    // An AWS profile that is not there.
    let o = store.bin_env(
        &["sql", "s3://bucket/x", "-c", "SELECT 1"],
        &[("AWS_PROFILE", "nosuch"), ("AWS_ACCESS_KEY_ID", "")],
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("AWS_PROFILE=nosuch"), "{err}");
}

#[test]
fn azure_wrong_key_is_a_credentials_error() {
    let Some(mut store) = Store::azurite() else {
        return;
    };
    let wrong = store.env[0].1.replace(azure::KEY, "d3Jvbmc=");
    store.env[0].1 = wrong;
    let o = store.bin(&["--retries", "0", "sql", &store.url("x"), "-c", "SELECT 1"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("az://container/x"), "{err}");
    assert!(err.contains("no usable credentials"), "{err}");
    assert!(!err.contains("d3Jvbmc="), "{err}");
}

#[test]
fn aws_profile_credentials_are_used() {
    let Some(store) = Store::moto() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let creds = tmp.path().join("credentials");
    std::fs::write(
        &creds,
        "[analytics]\naws_access_key_id = profilekey\naws_secret_access_key = profilesecret\n",
    )
    .unwrap();
    let src = shared("fhir-data/synthea-r4-small/Patient.ndjson");
    let mut c = store.command(&[
        "convert",
        src.to_str().unwrap(),
        "-o",
        &store.url("p"),
        "-q",
    ]);
    c.env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_PROFILE", "analytics")
        .env("AWS_SHARED_CREDENTIALS_FILE", &creds);
    ok(&c.output().unwrap());
    // moto records the key a request was signed with in its access log only; that the run
    // succeeded without keys in the environment shows the profile was read.
    assert!(store
        .list("p")
        .iter()
        .any(|o| o.ends_with("_fhir2parquet.json")));
}

/// A proxy in front of a store that fails every `nth` request with a 503, or, past `cut`
/// requests, every request.
struct Proxy {
    port: u16,
    requests: Arc<AtomicUsize>,
}

fn proxy(upstream: u16, nth: usize, cut: usize) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            let count = count.clone();
            std::thread::spawn(move || {
                let _ = relay(conn, upstream, &count, nth, cut);
            });
        }
    });
    Proxy { port, requests }
}

/// Serves the requests of one client connection, one upstream connection each.
fn relay(
    conn: TcpStream,
    upstream: u16,
    count: &AtomicUsize,
    nth: usize,
    cut: usize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut conn = conn;
    loop {
        let mut head = Vec::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap_or(0);
            }
            assert!(!line.to_ascii_lowercase().starts_with("transfer-encoding"));
            let end = line == "\r\n";
            head.push(line);
            if end {
                break;
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body)?;
        let n = count.fetch_add(1, Ordering::SeqCst) + 1;
        if n > cut || n % nth == 0 {
            conn.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
            )?;
            continue;
        }
        let mut up = TcpStream::connect(("127.0.0.1", upstream))?;
        for line in &head {
            if line.to_ascii_lowercase().starts_with("connection:") {
                continue;
            }
            if line == "\r\n" {
                up.write_all(b"Connection: close\r\n")?;
            }
            up.write_all(line.as_bytes())?;
        }
        up.write_all(&body)?;
        let mut response = Vec::new();
        up.read_to_end(&mut response)?;
        // The upstream closes after its response: say so to the client, which reconnects.
        conn.write_all(&response)?;
        return Ok(());
    }
}

#[test]
fn s3_faults_are_retried_or_fail_cleanly() {
    let Some(store) = Store::moto() else { return };
    let src = shared("fhir-data/synthea-r4-small");
    // Every third request fails with a 503: retried, the run completes, the data is whole.
    let flaky = proxy(store.server.port, 3, usize::MAX);
    let endpoint = format!("http://127.0.0.1:{}", flaky.port);
    let url = store.url("flaky");
    ok(&store.bin(&[
        "--endpoint",
        &endpoint,
        "convert",
        src.to_str().unwrap(),
        "-o",
        &url,
        "-q",
    ]));
    assert!(flaky.requests.load(Ordering::SeqCst) > 10);
    let tmp = tempfile::tempdir().unwrap();
    let back = tmp.path().join("back");
    ok(&store.bin(&["to-ndjson", &url, "-o", back.to_str().unwrap()]));
    assert_eq!(assert_same_resources(&src, &back), 2789);

    // The store goes away mid-run: the run fails, and nothing of it is visible.
    let dying = proxy(store.server.port, usize::MAX, 25);
    let endpoint = format!("http://127.0.0.1:{}", dying.port);
    let o = store.bin(&[
        "--endpoint",
        &endpoint,
        "--retries",
        "2",
        "convert",
        src.to_str().unwrap(),
        "-o",
        &store.url("dying"),
        "-q",
    ]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("s3://bucket/dying"), "{err}");
    // Only its lock, which the store was gone to take back.
    assert_eq!(store.list("dying"), vec!["dying/_fhir2parquet.lock"]);
}

/// gcp-storage-emulator implements the JSON API only, while object_store's GCS client lists
/// and uploads in parts through the XML API; the emulator also sends no ETag. What can be
/// tested: URLs and `--endpoint` reach the server, single objects are written where the JSON
/// API finds them, and what the emulator cannot do fails with an error naming the URL.
#[test]
fn gcs_emulator_as_far_as_it_goes() {
    if !installed("gcp-storage-emulator", "`pip install gcp-storage-emulator`") {
        return;
    }
    let port = free_port();
    let args = [
        "start",
        "--host",
        "127.0.0.1",
        "--port",
        &port.to_string(),
        "--in-memory",
        "--default-bucket",
        "bucket",
    ]
    .map(String::from);
    let server = start(
        "gcp-storage-emulator",
        &args,
        port,
        tempfile::tempdir().unwrap(),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    let opts = fhir2parquet::store::StoreOptions {
        endpoint: Some(endpoint.clone()),
        retries: Some(0),
    };
    let fhir2parquet::store::Location::Remote(r) =
        fhir2parquet::store::Location::parse("gs://bucket/fhir", &opts).unwrap()
    else {
        unreachable!()
    };
    // The object is written; object_store then wants the ETag the emulator does not send.
    let put = r.put("hello.txt", b"hello".to_vec());
    let listing = http(port, "GET", "/storage/v1/b/bucket/o", &[], b"");
    assert!(
        listing.contains("\"name\": \"fhir/hello.txt\""),
        "{listing}"
    );
    if let Err(e) = put {
        assert!(format!("{e:#}").contains("ETag"), "{e:#}");
    }
    // Reading back wants the ETag and Last-Modified headers it does not send either.
    if let Err(e) = r.read("hello.txt") {
        let e = format!("{e:#}");
        assert!(e.contains("ETag") || e.contains("Last-Modified"), "{e}");
    }

    let src = shared("fhir-data/synthea-r4-small/Patient.ndjson");
    let o = Command::new(env!("CARGO_BIN_EXE_fhir2parquet"))
        .args(["--endpoint", &endpoint, "--retries", "0", "convert"])
        .args([src.to_str().unwrap(), "-o", "gs://bucket/fhir", "-q"])
        .env("HOME", "/nonexistent")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("gs://bucket/fhir"), "{err}");
    // The lock (a conditional put) already wants the ETag; past it, listing is a 501.
    assert!(err.contains("501") || err.contains("ETag"), "{err}");
    drop(server);
}
