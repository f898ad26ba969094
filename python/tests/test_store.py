"""Datasets on S3 (a moto server on 127.0.0.1), and a store's refusal as StoreError."""

import os
import shutil
import socket
import subprocess
import time
import urllib.request

import pytest

import fhir2parquet as f2p
from conftest import SAMPLE, ndjson


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    server = shutil.which("moto_server")
    if server is None:
        if os.environ.get("CI"):
            pytest.fail('moto_server not found: pip install "moto[server]"')
        pytest.skip("moto_server not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [server, "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(urllib.request.Request(f"{endpoint}/bucket", method="PUT"))
            break
        except OSError:
            time.sleep(0.05)
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")}
    os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="SECRETVALUE", AWS_REGION="us-east-1")
    yield endpoint
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait()


def test_a_dataset_on_s3_is_written_and_read(s3):
    result = f2p.convert(SAMPLE, "s3://bucket/fhir", endpoint=s3, progress=False)
    assert result.rows["Patient"] == len(ndjson(SAMPLE, "Patient"))
    t = f2p.table("s3://bucket/fhir", "Patient", columns=["id"], endpoint=s3)
    assert sorted(t.column("id").to_pylist()) == sorted(p["id"] for p in ndjson(SAMPLE, "Patient"))
    n = f2p.sql("s3://bucket/fhir", "SELECT COUNT(*) AS n FROM Observation", endpoint=s3)
    assert n.column("n").to_pylist() == [len(ndjson(SAMPLE, "Observation"))]


def test_a_missing_bucket_is_a_store_error(s3):
    with pytest.raises(f2p.StoreError) as e:
        f2p.convert(SAMPLE / "Patient.ndjson.gz", "s3://no-such-bucket/fhir", endpoint=s3, progress=False)
    assert "SECRETVALUE" not in str(e.value)
