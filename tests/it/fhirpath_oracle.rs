//! Views against the reference implementation: FHIRPath expressions generated from the Synthea
//! sample (every leaf element path present, and function and operator forms over it, literals
//! taken from the data) are evaluated by `fhirpath view` columns and by fhirpath.js (HL7's
//! JavaScript FHIRPath, npm `fhirpath`, with its R4 model; `.ci/run` installs it pinned into
//! `target/fhirpath-js`), and compared per resource. A report is written to
//! `target/fhirpath/differential_report.json`. Every answer agrees but those on the short list
//! of deliberate differences ([`DELIBERATE`]).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use fhir2parquet::sql::Shell;
use fhir2parquet::view::ViewDefinition;
use serde_json::{json, Value};

use crate::view::batches_to_rows;
use crate::{read_lines, shared};

/// Where `.ci/run` installs fhirpath.js.
const FHIRPATH_JS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/target/fhirpath-js/node_modules"
);

/// Where we answer otherwise on purpose: (an expression's start, why). Everything else must
/// agree.
const DELIBERATE: &[(&str, &str)] = &[
    // `instant` is a UTC timestamp column (typed, sortable, what engines read); its text is
    // written in UTC (`...Z`), not with the offset it came with.
    ("issued.first() &", "an instant's text is written in UTC"),
    (
        "issued.first().length()",
        "an instant's text is written in UTC",
    ),
];

/// What a leaf holds in the JSON.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Kind {
    Text,
    Number,
    Boolean,
    /// An element of a complex type: a column of it is its FHIR JSON.
    Object,
}

/// A JSON key as a FHIRPath step: a choice's `valueQuantity` is `value.ofType(Quantity)`.
fn step(resource_type: &str, parent: &str, key: &str) -> String {
    let def = fhir2parquet::schema::FhirVersion::R4
        .model()
        .get(resource_type);
    let prefix = if parent.is_empty() {
        String::new()
    } else {
        format!("{parent}.")
    };
    if let Some(def) = def {
        for e in &def.elements {
            let Some(base) = e
                .path
                .strip_prefix(&prefix)
                .and_then(|p| p.strip_suffix("[x]"))
            else {
                continue;
            };
            if base.contains('.') {
                continue;
            }
            if let Some(t) = key.strip_prefix(base) {
                if t.starts_with(|c: char| c.is_ascii_uppercase())
                    && e.types.iter().any(|ty| ty.eq_ignore_ascii_case(t))
                {
                    let ty = e
                        .types
                        .iter()
                        .find(|ty| ty.eq_ignore_ascii_case(t))
                        .unwrap();
                    return format!("{base}.ofType({ty})");
                }
            }
        }
    }
    key.to_string()
}

/// Every leaf path of a resource (to four steps, extensions and narrative aside), with what it
/// holds and a value of it.
fn leaves(
    resource_type: &str,
    v: &Value,
    elem: &str,
    path: &str,
    depth: usize,
    out: &mut BTreeMap<String, (Kind, Value)>,
) {
    match v {
        Value::Array(items) => {
            for i in items {
                leaves(resource_type, i, elem, path, depth, out);
            }
        }
        Value::Object(o) => {
            if depth >= 4 {
                return;
            }
            if !path.is_empty() {
                out.entry(path.to_string())
                    .or_insert((Kind::Object, v.clone()));
            }
            for (k, x) in o {
                if k.starts_with('_')
                    || matches!(
                        k.as_str(),
                        "resourceType" | "extension" | "modifierExtension" | "contained" | "text"
                    )
                {
                    continue;
                }
                let s = step(resource_type, elem, k);
                let elem = if elem.is_empty() {
                    k.clone()
                } else {
                    format!("{elem}.{}", s.split('.').next().unwrap())
                };
                let p = if path.is_empty() {
                    s
                } else {
                    format!("{path}.{s}")
                };
                leaves(resource_type, x, &elem, &p, depth + 1, out);
            }
        }
        Value::String(_) => {
            out.entry(path.to_string())
                .or_insert((Kind::Text, v.clone()));
        }
        Value::Number(_) => {
            out.entry(path.to_string())
                .or_insert((Kind::Number, v.clone()));
        }
        Value::Bool(_) => {
            out.entry(path.to_string())
                .or_insert((Kind::Boolean, v.clone()));
        }
        Value::Null => {}
    }
}

/// Function and operator forms over a leaf path, literals from the data.
fn forms(path: &str, kind: Kind, sample: &Value) -> Vec<String> {
    if kind == Kind::Object {
        // The element whole (extensions, and what `_overflow` keeps, included).
        return vec![
            path.to_string(),
            format!("{path}.first()"),
            format!("{path}.last()"),
        ];
    }
    let mut out = vec![
        path.to_string(),
        format!("{path}.count()"),
        format!("{path}.exists()"),
        format!("{path}.first()"),
        format!("{path}.last()"),
        format!("{path}.distinct().count()"),
        format!("({path} | {path}).count()"),
        format!("{path}.skip(1).count()"),
    ];
    match kind {
        Kind::Text => {
            let s = sample.as_str().unwrap_or_default();
            let lit = s.replace('\\', "\\\\").replace('\'', "\\'");
            let head: String = lit.chars().take(2).collect();
            out.extend([
                format!("{path}.first().length()"),
                format!("{path}.first().upper()"),
                format!("{path}.first().substring(1, 3)"),
                format!("{path}.first().startsWith('{head}')"),
                format!("{path}.first() = '{lit}'"),
                format!("{path}.first() != '{lit}'"),
                format!("{path}.first() + '!'"),
                format!("{path}.first() & '!'"),
            ]);
            // A date or date-time (not a code that starts with digits, as LOINC's `8302-2`).
            let date = regex::Regex::new(r"^\d{4}(-\d{2}(-\d{2}(T.*)?)?)?$").unwrap();
            if date.is_match(s) {
                out.extend([
                    format!("{path}.first() > @{}", &s[..4]),
                    format!("{path}.first() < @{}", &s[..s.len().min(10)]),
                ]);
            }
        }
        Kind::Number => {
            out.extend([
                format!("{path}.first() > {sample}"),
                format!("{path}.first() + 1"),
                format!("{path}.first() = {sample}"),
            ]);
        }
        Kind::Boolean => out.extend([
            format!("{path}.first().not()"),
            format!("{path}.first() and true"),
        ]),
        Kind::Object => {}
    }
    out
}

/// The expressions generated from the resources of one type: every leaf path and the forms
/// over it.
pub(crate) fn expressions(resource_type: &str, resources: &[Value]) -> Vec<String> {
    let mut paths = BTreeMap::new();
    for r in resources {
        leaves(resource_type, r, "", "", 0, &mut paths);
    }
    paths
        .iter()
        .flat_map(|(p, (k, s))| forms(p, *k, s))
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// Equal as FHIRPath values: numbers by value, date-times as instants, the rest exactly.
pub(crate) fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
        }
        (Value::Number(x), Value::String(s)) | (Value::String(s), Value::Number(x)) => {
            s.parse::<f64>().is_ok_and(|y| same(&json!(x), &json!(y)))
        }
        (Value::String(x), Value::String(y)) => {
            x == y || {
                let t = |s: &str| {
                    chrono::DateTime::parse_from_rfc3339(s)
                        .map(|t| t.to_utc())
                        .ok()
                        .or_else(|| {
                            chrono::NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f")
                                .ok()
                                .map(|t| t.and_utc())
                        })
                };
                matches!((t(x), t(y)), (Some(a), Some(b)) if a == b)
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same(a, b))
        }
        // A column of a complex type is the element's FHIR JSON text.
        (Value::String(s), o @ Value::Object(_)) | (o @ Value::Object(_), Value::String(s)) => {
            serde_json::from_str::<Value>(s).is_ok_and(|v| v.is_object() && same(&v, o))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, a)| y.get(k).is_some_and(|b| same(a, b)))
        }
        _ => a == b,
    }
}

/// Whether fhirpath.js and its R4 model load (`.ci/run` installs them); says how to get them
/// where not.
fn fhirpath_js_present() -> bool {
    let node = Command::new("node")
        .env("NODE_PATH", FHIRPATH_JS)
        .args([
            "-e",
            "require('fhirpath'); require('fhirpath/fhir-context/r4')",
        ])
        .status()
        .is_ok_and(|s| s.success());
    crate::present(
        node,
        "fhirpath.js (`npm install --prefix target/fhirpath-js fhirpath@5.2.2`)",
    )
}

/// fhirpath.js's values of each expression for each resource (`tests/fhirpath/oracle.js`), or
/// `{"error": ..}`; `tag` names the job files in `dir`.
fn fhirpath_js(dir: &Path, tag: &str, resources: &[Value], exprs: &[String]) -> Vec<Vec<Value>> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fhirpath/oracle.js");
    let jobs = dir.join(format!("{tag}-jobs.json"));
    let results = dir.join(format!("{tag}-results.json"));
    std::fs::write(
        &jobs,
        json!({"resources": resources, "expressions": exprs}).to_string(),
    )
    .unwrap();
    let o = Command::new("node")
        .env("NODE_PATH", FHIRPATH_JS)
        .args([script, jobs.to_str().unwrap(), results.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&std::fs::read(&results).unwrap()).unwrap()
}

/// Per resource id, the values of each expression (None: not evaluated).
type Answers = BTreeMap<String, Vec<Option<Value>>>;

/// Our values of each expression for each resource (by id), in one view per batch of
/// expressions; an expression the compiler refuses or that fails is left out, with why.
fn ours(
    shell: &Shell,
    resource_type: &str,
    exprs: &[String],
) -> (Answers, BTreeMap<String, String>) {
    let mut refused = BTreeMap::new();
    let view = |cols: &[(usize, &String)]| {
        let mut columns = vec![json!({"name": "id", "path": "id"})];
        columns.extend(
            cols.iter()
                .map(|(i, e)| json!({"name": format!("c{i}"), "path": e, "collection": true})),
        );
        ViewDefinition::from_json(&json!({
            "resourceType": "ViewDefinition", "resource": resource_type, "status": "active",
            "select": [{"column": columns}]}))
    };
    let mut ok: Vec<(usize, &String)> = Vec::new();
    for (i, e) in exprs.iter().enumerate() {
        match view(&[(i, e)]).and_then(|v| fhir2parquet::view::frame(shell, &v)) {
            Ok(_) => ok.push((i, e)),
            Err(err) => {
                refused.insert(e.clone(), format!("{err:#}"));
            }
        }
    }
    let run = |cols: &[(usize, &String)]| -> Result<Vec<Value>, String> {
        let v = view(cols).map_err(|e| format!("{e:#}"))?;
        fhir2parquet::view::batches(shell, &v)
            .map(|b| batches_to_rows(&b))
            .map_err(|e| format!("{e:#}"))
    };
    let rows = match run(&ok) {
        Ok(rows) => rows,
        Err(_) => {
            // One column fails: find it (and the others that do).
            let mut keep = Vec::new();
            for c in &ok {
                match run(std::slice::from_ref(c)) {
                    Ok(_) => keep.push(*c),
                    Err(err) => {
                        refused.insert(c.1.clone(), err);
                    }
                }
            }
            ok = keep;
            run(&ok).unwrap()
        }
    };
    let mut out = BTreeMap::new();
    for r in rows {
        let mut values = vec![None; exprs.len()];
        for (i, _) in &ok {
            values[*i] = Some(r[format!("c{i}")].clone());
        }
        out.insert(r["id"].as_str().unwrap().to_string(), values);
    }
    (out, refused)
}

#[test]
fn views_agree_with_fhirpath_js() {
    if !fhirpath_js_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let src = shared("fhir-data/synthea-r4-small");
    let out = tmp.path().join("out");
    let o = crate::convert_quiet(&src, &out);
    assert!(o.status.success());
    let shell = Shell::open(&out, None).unwrap();
    let (mut compared, mut agreed, mut refused_n, mut oracle_errors) = (0u64, 0u64, 0, 0u64);
    let mut deliberate = 0u64;
    let mut refused_all = Vec::new();
    let mut differ: BTreeMap<String, Value> = BTreeMap::new();
    let mut per_type = BTreeMap::new();
    for file in crate::ndjson_files(&src) {
        let resources: Vec<Value> = read_lines(&file)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let t = resources[0]["resourceType"].as_str().unwrap().to_string();
        let exprs = expressions(&t, &resources);
        let reference = fhirpath_js(tmp.path(), &t, &resources, &exprs);
        let (mine, refused) = ours(&shell, &t, &exprs);
        refused_n += refused.len();
        refused_all.extend(
            refused
                .into_iter()
                .map(|(e, why)| json!({"type": t, "expression": e, "why": why})),
        );
        let (mut c, mut a) = (0u64, 0u64);
        for (r, want) in resources.iter().zip(&reference) {
            let id = r["id"].as_str().unwrap();
            let got = &mine[id];
            for (i, w) in want.iter().enumerate() {
                let Some(g) = &got[i] else { continue };
                if w.get("error").is_some() {
                    oracle_errors += 1;
                    continue;
                }
                if DELIBERATE.iter().any(|(e, _)| exprs[i].starts_with(e)) {
                    deliberate += 1;
                    continue;
                }
                c += 1;
                if same(g, w) {
                    a += 1;
                } else {
                    differ.entry(exprs[i].clone()).or_insert_with(
                        || json!({"type": t, "id": id, "ours": g, "fhirpath.js": w}),
                    );
                }
            }
        }
        compared += c;
        agreed += a;
        per_type.insert(
            t.clone(),
            json!({"expressions": exprs.len(), "compared": c, "agreed": a}),
        );
    }
    let report = json!({
        "refused": refused_all,
        "compared": compared, "agreed": agreed, "refused_expressions": refused_n,
        "oracle_errors": oracle_errors, "deliberate": deliberate, "per_type": per_type, "differ": differ,
    });
    let path =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("target/fhirpath/differential_report.json");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_string_pretty(&report).unwrap()).unwrap();
    let permille = agreed * 1000 / compared.max(1);
    eprintln!(
        "fhirpath.js: {agreed} of {compared} comparisons agree ({}.{}%), {} expressions differ, \
         {refused_n} refused (report: {})",
        permille / 10,
        permille % 10,
        differ.len(),
        path.display()
    );
    assert!(compared > 1_000_000, "{compared} comparisons");
    // We refuse only what FHIRPath does not define: text after `+` on an instant, a string put
    // in order with a date (an id of four digits read as a year by the generator).
    for r in &refused_all {
        let why = r["why"].as_str().unwrap();
        assert!(
            why.contains("Add of instant and string") || why.contains("cannot put string and date"),
            "refused: {r}"
        );
    }
    assert!(
        differ.is_empty(),
        "answers that differ from fhirpath.js (one resource each): {}",
        serde_json::to_string_pretty(&differ).unwrap()
    );
}

/// The FHIRPath paths of the primitives that carry an id or extensions (a `_name` sibling) in
/// a resource.
fn primitive_elements(v: &Value, path: &str, out: &mut BTreeSet<String>) {
    match v {
        Value::Array(items) => items.iter().for_each(|i| primitive_elements(i, path, out)),
        Value::Object(o) => {
            for (k, x) in o {
                if k == "resourceType" || k == "contained" {
                    continue;
                }
                let p = |name: &str| match path {
                    "" => name.to_string(),
                    _ => format!("{path}.{name}"),
                };
                match k.strip_prefix('_') {
                    Some(name) => {
                        out.insert(p(name));
                    }
                    None => primitive_elements(x, &p(k), out),
                }
            }
        }
        _ => {}
    }
}

#[test]
fn ids_and_extensions_of_primitives_after_functions_agree_with_fhirpath_js() {
    // `birthDate.first().extension`, `given.where(id = 'g1')`: a primitive's items taken with
    // their elements through the functions that pick items, over every specification example
    // whose primitives carry extensions, against fhirpath.js.
    if !fhirpath_js_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let types = [
        "Patient",
        "CodeSystem",
        "ActivityDefinition",
        "Observation",
        "PlanDefinition",
    ];
    let inputs: Vec<_> = types
        .iter()
        .map(|t| shared(&format!("fhir-data/r4-spec-examples/{t}.ndjson.gz")))
        .collect();
    let out = tmp.path().join("out");
    let record = fhir2parquet::convert::run(&inputs, &crate::convert_opts(&out)).unwrap();
    assert!(record.problems().is_empty(), "{:?}", record.problems());
    let shell = Shell::open(&out, None).unwrap();
    let (mut compared, mut with_values) = (0, 0);
    let mut differ = Vec::new();
    for (t, file) in types.iter().zip(&inputs) {
        let resources: Vec<Value> = read_lines(file)
            .iter()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let mut paths = BTreeSet::new();
        resources
            .iter()
            .for_each(|r| primitive_elements(r, "", &mut paths));
        let exprs: Vec<String> = paths
            .iter()
            .flat_map(|p| {
                [
                    format!("{p}.first().extension.url"),
                    format!("{p}.last().extension.count()"),
                    format!("{p}.skip(1).first().id"),
                    format!("{p}[0].extension.exists()"),
                    format!("{p}.where(extension.exists())"),
                    format!("{p}.where(id.exists()).count()"),
                ]
            })
            .collect();
        let reference = fhirpath_js(tmp.path(), t, &resources, &exprs);
        let (mine, refused) = ours(&shell, t, &exprs);
        assert!(refused.is_empty(), "{t}: refused {refused:#?}");
        for (r, want) in resources.iter().zip(&reference) {
            let got = &mine[r["id"].as_str().unwrap()];
            for (i, w) in want.iter().enumerate() {
                assert!(w.get("error").is_none(), "fhirpath.js: {}: {w}", exprs[i]);
                let g = got[i].as_ref().unwrap();
                compared += 1;
                let empty = |v: &Value| {
                    v.as_array()
                        .is_some_and(|a| a.is_empty() || a == &[json!(0)] || a == &[json!(false)])
                };
                with_values += usize::from(!empty(w));
                if !same(g, w) {
                    differ.push(format!(
                        "{t}/{}: {}: ours {g}, fhirpath.js {w}",
                        r["id"], exprs[i]
                    ));
                }
            }
        }
    }
    eprintln!("ids and extensions of primitives: {compared} comparisons with fhirpath.js, {with_values} with values");
    assert!(differ.is_empty(), "{}", differ.join("\n"));
    assert!(
        with_values >= 20,
        "{with_values} of {compared} comparisons have values"
    );
}
