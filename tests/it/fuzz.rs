//! The fuzz targets' bodies (`fhir2parquet::fuzz`) over their seed corpora, a few thousand
//! mutations of them, and every input in `fuzz/regressions/`: the smoke run of CI. The real
//! fuzzing is `fuzz/run.sh` (cargo-fuzz, libFuzzer).

use std::path::{Path, PathBuf};

use crate::{read_lines, shared};

/// xorshift64*: repeatable mutations without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A mutation as libFuzzer makes them: flip, insert, delete, duplicate a slice, truncate.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = at.min(v.len() - 1);
                v[i] ^= 1 << rng.below(8);
            }
            1 => {
                let alphabet = b"{}[]\",:0-.e9\\u";
                v.insert(at, alphabet[rng.below(alphabet.len())])
            }
            2 if at < v.len() => {
                v.remove(at);
            }
            3 if !v.is_empty() => {
                let end = (at + rng.below(32)).min(v.len());
                let piece = v[at.min(end)..end].to_vec();
                let to = rng.below(v.len() + 1);
                v.splice(to..to, piece);
            }
            4 => v.truncate(at),
            _ => v.insert(at, rng.next() as u8),
        }
    }
    v
}

fn regressions(target: &str) -> Vec<Vec<u8>> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap())
        .collect()
}

fn smoke(target: &str, seeds: Vec<Vec<u8>>, mutations: usize, f: fn(&[u8])) {
    for r in regressions(target) {
        f(&r);
    }
    for s in &seeds {
        f(s);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    for _ in 0..mutations {
        let seed = &seeds[rng.below(seeds.len())];
        f(&mutate(&mut rng, seed));
    }
}

fn example_lines(limit: usize) -> Vec<String> {
    let dir = shared("fhir-data/r4-spec-examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .iter()
        .flat_map(|f| read_lines(f).into_iter().take(3))
        .take(limit)
        .collect()
}

#[test]
fn json_parser() {
    let seeds = example_lines(400)
        .into_iter()
        .map(String::into_bytes)
        .collect();
    smoke("json", seeds, 5_000, fhir2parquet::fuzz::json);
}

#[test]
fn resource_decoder_and_encoder() {
    let types = fhir2parquet::schema::FhirVersion::R4
        .model()
        .resource_types();
    let seeds = example_lines(400)
        .into_iter()
        .map(|l| {
            let doc = fhir2parquet::json::parse(&l).unwrap();
            let rt = doc
                .get("resourceType")
                .unwrap()
                .as_str()
                .unwrap()
                .to_string();
            let pick = types.iter().position(|t| *t == rt).unwrap() as u8;
            let mut v = vec![pick];
            v.extend(l.into_bytes());
            v
        })
        .collect();
    smoke("resource", seeds, 3_000, fhir2parquet::fuzz::resource);
}

/// Views of the official suite, and the FHIRPath expressions in them.
fn suite_views() -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(shared("sql-on-fhir-v2/tests")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") {
            let doc: serde_json::Value =
                serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            for t in doc["tests"].as_array().into_iter().flatten() {
                out.push(t["view"].clone());
            }
        }
    }
    out
}

#[test]
fn fhirpath_parser() {
    fn paths(v: &serde_json::Value, out: &mut Vec<Vec<u8>>) {
        match v {
            serde_json::Value::Object(o) => {
                for (k, x) in o {
                    match (k.as_str(), x) {
                        ("path" | "forEach" | "forEachOrNull", serde_json::Value::String(s)) => {
                            out.push(s.clone().into_bytes())
                        }
                        _ => paths(x, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| paths(x, out)),
            _ => {}
        }
    }
    let mut seeds = Vec::new();
    for v in suite_views() {
        paths(&v, &mut seeds);
    }
    assert!(seeds.len() > 100);
    smoke("fhirpath", seeds, 20_000, fhir2parquet::fuzz::fhirpath);
}

#[test]
fn view_compiler() {
    let seeds: Vec<Vec<u8>> = suite_views()
        .iter()
        .map(|v| serde_json::to_vec(v).unwrap())
        .collect();
    assert!(seeds.len() > 100);
    smoke("view", seeds, 2_000, fhir2parquet::fuzz::view);
}
