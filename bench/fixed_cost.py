"""The fixed cost of a wide typed schema: the Parquet bytes of one file holding one minimal
resource ({"resourceType": T, "id": "x"}) per type, split into footer and the rest (a page of
levels per column, page index), per leaf column.

Usage: python3 bench/fixed_cost.py BINARY [TYPE...]   (default: the types of the Synthea sets)
"""
import glob
import json
import os
import subprocess
import sys
import tempfile

import pyarrow.parquet as pq

binary = sys.argv[1]
types = sys.argv[2:] or (
    "AllergyIntolerance CarePlan Claim Condition Device DiagnosticReport DocumentReference "
    "Encounter ExplanationOfBenefit Goal ImagingStudy Immunization Location MedicationRequest "
    "Observation Organization Patient Practitioner PractitionerRole Procedure Questionnaire "
    "QuestionnaireResponse"
).split()
with tempfile.TemporaryDirectory() as tmp:
    src = os.path.join(tmp, "min.ndjson")
    with open(src, "w") as f:
        for t in types:
            f.write(json.dumps({"resourceType": t, "id": "x"}) + "\n")
    out = os.path.join(tmp, "out")
    subprocess.run([binary, "convert", src, "-o", out, "-q"], check=True)
    print(f"{'type':<24} {'columns':>8} {'file':>9} {'footer':>9} {'rest':>8} {'bytes/column':>13}")
    total = 0
    for t in types:
        (p,) = glob.glob(os.path.join(out, t, "*.parquet"))
        md = pq.ParquetFile(p).metadata
        size = os.path.getsize(p)
        total += size
        print(f"{t:<24} {md.num_columns:8} {size:9} {md.serialized_size:9} "
              f"{size - md.serialized_size:8} {size / md.num_columns:13.1f}")
    print(f"{'all':<24} {'':8} {total:9}")
