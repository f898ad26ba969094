"""The Python API against answers computed from the NDJSON with the json module."""

import collections
import json
import os
import pathlib
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pytest

import fhir2parquet as f2p
from conftest import SAMPLE, SHARED, need, ndjson

SAMPLE_TYPES = ["Condition", "Encounter", "Immunization", "MedicationRequest", "Observation", "Patient"]


def test_convert_writes_every_resource_and_reports_the_run(tmp_path):
    out = tmp_path / "out"
    result = f2p.convert(SAMPLE, out, progress=False)
    assert result.rows == {t: len(ndjson(SAMPLE, t)) for t in SAMPLE_TYPES}
    assert (result.rejects, result.problems) == (0, [])
    assert result.table_versions == {t: 0 for t in SAMPLE_TYPES}
    parquet = [p for p in out.rglob("*.parquet") if "_delta_log" not in p.parts]
    assert result.files == len(parquet)
    assert result.bytes == sum(p.stat().st_size for p in parquet)
    recorded = json.loads((out / "_fhir2parquet.json").read_text())
    assert recorded["run_id"] == result.run_id == result.record["run_id"]


def test_a_second_convert_replaces_append_adds_and_as_of_reads_earlier_versions(tmp_path):
    out = tmp_path / "out"
    patients = len(ndjson(SAMPLE, "Patient"))
    f2p.convert(SAMPLE, out, progress=False)
    again = f2p.convert(SAMPLE, out, progress=False)
    assert again.table_versions["Patient"] == 1
    assert f2p.table(out, "Patient").num_rows == patients
    added = f2p.convert(SAMPLE / "Patient.ndjson.gz", out, append=True, progress=False)
    assert added.table_versions == {"Patient": 2}
    assert f2p.table(out, "Patient").num_rows == 2 * patients
    assert f2p.table(out, "Patient", as_of=1).num_rows == patients
    assert f2p.table(out, "Patient", as_of="0").num_rows == patients


def test_rejected_lines_are_counted_kept_and_warned_about(tmp_path):
    lines = (SAMPLE / "Patient.ndjson.gz").open("rb")
    import gzip

    good = gzip.decompress(lines.read()).decode().splitlines()
    src = tmp_path / "Patient.ndjson"
    src.write_text("\n".join(good[:3] + ['{"resourceType": "Patient", "id": '] + good[3:]) + "\n")
    with pytest.warns(UserWarning, match="1 line"):
        result = f2p.convert(src, tmp_path / "out", progress=False)
    assert result.rows == {"Patient": len(good)}
    assert result.rejects == 1
    kept = list((tmp_path / "out" / "_rejects").rglob("*"))
    assert any(p.is_file() for p in kept)


def test_progress_is_reported_as_the_run_reads(tmp_path, big_ndjson):
    calls = []
    f2p.convert(big_ndjson, tmp_path / "out", threads=1, progress=lambda *a: calls.append(a))
    assert calls, "no progress reported during a run of several hundred milliseconds"
    size = big_ndjson.stat().st_size
    assert all(total == size and 0 <= read <= size for read, total, _ in calls)
    reads = [read for read, _, _ in calls]
    assert reads == sorted(reads)


def test_table_has_the_full_typed_schema_and_every_row(dataset):
    t = f2p.table(dataset, "Patient")
    assert t.schema.equals(f2p.schema("Patient"), check_metadata=False)
    assert sorted(t.column("id").to_pylist()) == sorted(p["id"] for p in ndjson(SAMPLE, "Patient"))
    births = dict(zip(t.column("id").to_pylist(), t.column("birthDate").to_pylist()))
    assert births == {p["id"]: p.get("birthDate") for p in ndjson(SAMPLE, "Patient")}


def test_table_projects_columns_and_filters_rows(dataset):
    t = f2p.table(dataset, "Patient", columns=["id", "gender"], where="gender = 'female'")
    assert t.column_names == ["id", "gender"]
    expected = sorted(p["id"] for p in ndjson(SAMPLE, "Patient") if p.get("gender") == "female")
    assert sorted(t.column("id").to_pylist()) == expected


def test_a_type_without_data_gives_no_rows_with_its_schema(dataset):
    t = f2p.table(dataset, "Device")
    assert t.num_rows == 0
    assert t.schema.equals(f2p.schema("Device"), check_metadata=False)


def test_batches_stream_the_table(dataset):
    reader = f2p.batches(dataset, "Observation", columns=["id", "status"])
    assert isinstance(reader, pa.RecordBatchReader)
    rows = collections.Counter()
    for batch in reader:
        rows.update(batch.column("status").to_pylist())
    assert rows == collections.Counter(o["status"] for o in ndjson(SAMPLE, "Observation"))


def test_sql_runs_the_shells_engine_with_bigquery_idioms(dataset):
    t = f2p.sql(dataset, "SELECT gender, COUNT(*) AS n FROM Patient GROUP BY gender")
    assert dict(zip(t.column("gender").to_pylist(), t.column("n").to_pylist())) == dict(
        collections.Counter(p["gender"] for p in ndjson(SAMPLE, "Patient"))
    )
    # As published for BigQuery's FHIR export: a project-qualified table, implicit UNNEST.
    t = f2p.sql(
        dataset,
        "SELECT COUNT(*) AS n FROM `my-project.fhir.observation` o, o.code.coding c "
        "WHERE c.system = 'http://loinc.org'",
    )
    expected = sum(
        1
        for o in ndjson(SAMPLE, "Observation")
        for c in o["code"].get("coding", [])
        if c.get("system") == "http://loinc.org"
    )
    assert t.column("n").to_pylist() == [expected]


def test_view_from_a_dict_json_text_or_a_file(dataset):
    definition = {
        "resourceType": "ViewDefinition",
        "resource": "Patient",
        "status": "active",
        "select": [
            {"column": [{"name": "id", "path": "id"}, {"name": "family", "path": "name.first().family"}]}
        ],
    }
    expected = sorted(
        (p["id"], (p.get("name") or [{}])[0].get("family")) for p in ndjson(SAMPLE, "Patient")
    )
    for given in (definition, json.dumps(definition)):
        t = f2p.view(given, dataset)
        assert sorted(zip(t.column("id").to_pylist(), t.column("family").to_pylist())) == expected
    path = pathlib.Path(__file__).resolve().parents[2] / "examples" / "views" / "patient_demographics.json"
    assert f2p.view(path, dataset).num_rows == len(ndjson(SAMPLE, "Patient"))


def test_results_cross_without_copying(dataset):
    f2p.table(dataset, "Observation")  # pyarrow's own first-use allocations
    before = pa.total_allocated_bytes()
    t = f2p.table(dataset, "Observation")
    # The buffers are the engine's, shared through the C stream interface: pyarrow's memory
    # pool allocated none of them.
    assert t.nbytes > 1_000_000
    assert pa.total_allocated_bytes() - before < t.nbytes / 100
    n = len(ndjson(SAMPLE, "Observation"))
    polars = need("polars")
    assert polars.from_arrow(t.select(["id", "status"])).height == n
    duckdb = need("duckdb")
    ids = t.select(["id"])
    assert duckdb.sql("SELECT COUNT(DISTINCT id) FROM ids").fetchone()[0] == n
    assert len(t.select(["id", "status"]).to_pandas()) == n


def test_errors_are_python_exceptions_with_the_commands_messages(tmp_path, dataset):
    for sub in (f2p.BadInputError, f2p.StoreError, f2p.ServerError):
        assert issubclass(sub, f2p.Fhir2ParquetError)
    with pytest.raises(f2p.BadInputError, match="Patientx"):
        f2p.table(dataset, "Patientx")
    with pytest.raises(f2p.BadInputError, match="shoeSize"):
        f2p.table(dataset, "Patient", columns=["shoeSize"])
    with pytest.raises(f2p.BadInputError):
        f2p.sql(dataset, "SELECT nope FROM Patient")
    with pytest.raises(f2p.BadInputError, match="no-such-input"):
        f2p.convert(tmp_path / "no-such-input", tmp_path / "out", progress=False)
    with pytest.raises(f2p.BadInputError):
        f2p.view({"resourceType": "ViewDefinition", "resource": "Patient"}, dataset)
    with pytest.raises(f2p.BadInputError, match="format"):
        f2p.convert(SAMPLE, tmp_path / "out", format="csv")


class BulkServer(BaseHTTPRequestHandler):
    """A FHIR Bulk Data server, as the specification describes one: kick-off answers 202 with a
    Content-Location, the status URL 202 with Retry-After until the job is done, then the
    manifest; files as application/fhir+ndjson; DELETE of the status URL ends the job. A
    kick-off to `/broken/` fails with an OperationOutcome."""

    polls = collections.Counter()

    def log_message(self, *args):
        pass

    def send(self, code, body=b"", headers=()):
        self.send_response(code)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        base = f"http://127.0.0.1:{self.server.server_address[1]}"
        path = self.path.split("?")[0]
        if path == "/broken/$export":
            outcome = {
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": "exception", "diagnostics": "the export store is down"}],
            }
            self.send(500, json.dumps(outcome).encode(), [("Content-Type", "application/fhir+json")])
        elif path == "/fhir/$export":
            assert self.headers["Prefer"] == "respond-async"
            self.send(202, headers=[("Content-Location", f"{base}/status/1")])
        elif path == "/status/1":
            BulkServer.polls["1"] += 1
            if BulkServer.polls["1"] < 2:
                self.send(202, headers=[("Retry-After", "1"), ("X-Progress", "in progress")])
                return
            manifest = {
                "transactionTime": "2026-12-04T00:00:00Z",
                "request": f"{base}/fhir/$export",
                "requiresAccessToken": False,
                "output": [
                    {"type": t, "url": f"{base}/files/{t}.ndjson"} for t in ("Patient", "Observation")
                ],
                "error": [],
            }
            self.send(200, json.dumps(manifest).encode(), [("Content-Type", "application/json")])
        elif path.startswith("/files/"):
            t = path[len("/files/") : -len(".ndjson")]
            body = "".join(json.dumps(r) + "\n" for r in ndjson(SAMPLE, t)).encode()
            self.send(200, body, [("Content-Type", "application/fhir+ndjson")])
        else:
            self.send(404)

    def do_DELETE(self):
        self.send(202)


@pytest.fixture()
def bulk_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), BulkServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_export_fetches_and_converts_with_the_commands_options(tmp_path, bulk_server):
    out = tmp_path / "out"
    result = f2p.export(f"{bulk_server}/fhir", out, types=["Patient", "Observation"], max_poll=1)
    assert result.rows == {t: len(ndjson(SAMPLE, t)) for t in ("Patient", "Observation")}
    ids = f2p.table(out, "Patient", columns=["id"]).column("id").to_pylist()
    assert sorted(ids) == sorted(p["id"] for p in ndjson(SAMPLE, "Patient"))


def test_a_failed_export_raises_server_error_with_the_servers_words(tmp_path, bulk_server):
    with pytest.raises(f2p.ServerError, match="the export store is down"):
        f2p.export(f"{bulk_server}/broken", tmp_path / "out")


INTERRUPTED = """
import json, sys
import fhir2parquet as f2p
out, big = sys.argv[1], sys.argv[2]
started = False
def progress(read, total, resources):
    global started
    if read and not started:
        started = True
        print("started", flush=True)
try:
    f2p.convert(big, out, threads=1, progress=progress)
    print(json.dumps({"interrupted": False}))
except KeyboardInterrupt:
    rows = f2p.table(out, "Observation", columns=["id"]).num_rows
    print(json.dumps({"interrupted": True, "rows": rows}))
"""


def test_ctrl_c_raises_keyboard_interrupt_and_publishes_nothing(tmp_path, big_ndjson):
    import signal

    out = tmp_path / "out"
    f2p.convert(SAMPLE, out, progress=False)
    child = subprocess.Popen(
        [sys.executable, "-c", INTERRUPTED, str(out), str(big_ndjson)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout.readline().strip() == "started"
    child.send_signal(signal.SIGINT)
    outcome = json.loads(child.stdout.readline())
    assert child.wait(timeout=60) == 0
    assert outcome == {"interrupted": True, "rows": len(ndjson(SAMPLE, "Observation"))}
    # No version past the first run's; no file of the stopped run left in the tables.
    log = sorted(p.name for p in (out / "Observation" / "_delta_log").glob("*.json"))
    assert log == ["00000000000000000000.json"]
    assert not list(out.glob(".fhir2parquet-tmp-*"))


LONG_QUERY = """
import sys
import fhir2parquet as f2p
print("started", flush=True)
try:
    # 1502 x 1502 x 1502 rows: minutes of work, unless stopped.
    f2p.sql(sys.argv[1], "SELECT COUNT(*) FROM Observation a, Observation b, Observation c "
                         "WHERE a.id || b.id || c.id LIKE '%zz%'")
    print("finished")
except KeyboardInterrupt:
    print("interrupted")
"""


def test_ctrl_c_stops_a_long_query(dataset):
    import signal
    import time

    child = subprocess.Popen(
        [sys.executable, "-c", LONG_QUERY, str(dataset)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout.readline().strip() == "started"
    time.sleep(1)
    child.send_signal(signal.SIGINT)
    # The query is cancelled at once (its streams dropped), not run to its end.
    assert child.wait(timeout=60) == 0
    assert child.stdout.read().strip() == "interrupted"


def test_the_command_runs_from_python(tmp_path):
    ok = subprocess.run(
        [sys.executable, "-m", "fhir2parquet", "convert", str(SAMPLE), "-o", str(tmp_path / "out"), "-q"],
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    assert f2p.table(tmp_path / "out", "Patient").num_rows == len(ndjson(SAMPLE, "Patient"))
    usage = subprocess.run([sys.executable, "-m", "fhir2parquet", "convert"], capture_output=True, text=True)
    assert usage.returncode == 2 and "Usage" in usage.stderr
    version = subprocess.run([sys.executable, "-m", "fhir2parquet", "--version"], capture_output=True, text=True)
    assert version.stdout.strip() == f"fhir2parquet {f2p.__version__}"


def test_help_shows_the_docstrings():
    for fn in (f2p.convert, f2p.table, f2p.batches, f2p.sql, f2p.view, f2p.export, f2p.schema):
        assert fn.__doc__ and len(fn.__doc__) > 60, fn.__name__
    assert "Args:" in f2p.convert.__doc__ and "Raises:" in f2p.table.__doc__


R5_EXAMPLES = SHARED / "fhir-data" / "r5-spec-examples"


def test_r5_data_converts_and_reads_as_r5(tmp_path):
    encounters = ndjson(R5_EXAMPLES, "Encounter")
    out = tmp_path / "out"
    result = f2p.convert(R5_EXAMPLES / "Encounter.ndjson.gz", out, fhir_version="r5", progress=False)
    assert (result.fhir_version, result.version_hint) == ("5.0.0", None)
    # R5's Encounter.class is a list of CodeableConcepts: the table's column and its values.
    table = f2p.table(out, "Encounter", columns=["id", "class"])
    full = f2p.schema("Encounter", "r5")
    assert table.schema == pa.schema([full.field("id"), full.field("class")])
    assert pa.types.is_list(table.schema.field("class").type)
    got = {
        (row["id"], c["code"])
        for row in table.to_pylist()
        for cc in row["class"] or []
        for c in cc["coding"] or []
    }
    want = {(e["id"], c["code"]) for e in encounters for cc in e.get("class", []) for c in cc.get("coding", [])}
    assert got == want and want
    assert "NutritionIntake" in f2p.resource_types("r5") and "NutritionIntake" not in f2p.resource_types()
    # The same data converted as R4 is kept whole, and the result says which version it looks like.
    with pytest.warns(UserWarning, match="--fhir-version r5"):
        as_r4 = f2p.convert(R5_EXAMPLES / "Encounter.ndjson.gz", tmp_path / "r4", progress=False)
    assert "r5" in as_r4.version_hint
    # A dataset holds one version.
    with pytest.raises(f2p.Fhir2ParquetError, match="r4 \\(4.0.1\\)"):
        f2p.convert(R5_EXAMPLES / "Encounter.ndjson.gz", tmp_path / "r4", append=True, fhir_version="r5", progress=False)
