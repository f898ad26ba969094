"""The exact answers of decimal arithmetic over Observation values, worked out with Python's
decimal module from the NDJSON (the numbers as written), for
`decimal_arithmetic_compiled_is_exact_in_every_engine`.

    python3 decimals.py NDJSON_FOLDER CASES.json

CASES.json: [[negate, op, operand], ...]: the value (negated when `negate`) `op` the operand
(`*`, `/`, `div`, `mod`; `self`: the value itself). Prints {id: [text or null per case]}: the result rounded to 18
places, half away from zero (a view's decimal), in plain notation.
"""

import decimal
import gzip
import json
import os
import sys

decimal.getcontext().prec = 100
folder, cases = sys.argv[1], json.load(open(sys.argv[2]))
PLACES = decimal.Decimal(1).scaleb(-18)


def lines(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield line


def answer(v, negate, op, operand):
    a = -v if negate else v
    b = v if operand == "self" else decimal.Decimal(operand)
    if b == 0 and op != "*":
        return None
    if op == "*":
        r = a * b
    elif op == "/":
        r = a / b
    elif op == "div":
        r = (a / b).to_integral_value(rounding=decimal.ROUND_DOWN)
    else:  # mod: the sign of the dividend, as FHIRPath's and Python's decimal % give
        r = a % b
    r = r.quantize(PLACES, rounding=decimal.ROUND_HALF_UP)
    return format(r.normalize() if r != 0 else decimal.Decimal(0), "f")


out = {}
for name in sorted(os.listdir(folder)):
    if not name.startswith("Observation") or ".ndjson" not in name:
        continue
    for line in lines(os.path.join(folder, name)):
        r = json.loads(line, parse_float=decimal.Decimal)
        v = r.get("valueQuantity", {}).get("value")
        if v is None:
            continue
        out[r["id"]] = [answer(decimal.Decimal(v), *c) for c in cases]
print(json.dumps(out))
