"""Seeds fuzz/corpus/<target>/ from ../shared (run by run.sh; the corpora are not committed)."""
import glob, gzip, hashlib, json, os

here = os.path.dirname(os.path.abspath(__file__))
shared = os.path.join(here, "..", "..", "shared")

def put(target, data):
    d = os.path.join(here, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)

# The resource target picks its type by the first byte, in the order `schema --list` prints.
# (A built binary if there is one; else cargo run, without RUSTC_BOOTSTRAP so that the
# project's own build keeps its fingerprints.)
import subprocess
built = [os.path.join(here, "..", "target", p, "fhir2parquet") for p in ("release", "debug")]
built = [b for b in built if os.path.exists(b)]
cmd = built[:1] or ["cargo", "run", "-q", "--manifest-path", os.path.join(here, "..", "Cargo.toml"), "--"]
env = {k: v for k, v in os.environ.items() if k != "RUSTC_BOOTSTRAP"}
types = subprocess.run(cmd + ["schema", "--list"], capture_output=True, text=True, check=True,
                       env=env).stdout.split()
for path in sorted(glob.glob(os.path.join(shared, "fhir-data", "r4-spec-examples", "*.ndjson.gz"))):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= 5:
                break
            put("json", line.encode())
            rt = json.loads(line)["resourceType"]
            put("resource", bytes([types.index(rt) % 256]) + line.encode())

def paths(v, out):
    if isinstance(v, dict):
        for k, x in v.items():
            if k in ("path", "forEach", "forEachOrNull") and isinstance(x, str):
                out.append(x)
            else:
                paths(x, out)
    elif isinstance(v, list):
        for x in v:
            paths(x, out)

for path in sorted(glob.glob(os.path.join(shared, "sql-on-fhir-v2", "tests", "*.json"))):
    doc = json.load(open(path, encoding="utf-8"))
    for t in doc.get("tests", []):
        put("view", json.dumps(t["view"]).encode())
        ps = []
        paths(t["view"], ps)
        for p in ps:
            put("fhirpath", p.encode())
