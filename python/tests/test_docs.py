"""Every Python block of the README and docs/python.md runs as written, in a scratch folder
holding the repository's examples/."""

import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, need

BLOCKS = [
    (doc, i, code)
    for doc in ("README.md", "docs/python.md")
    for i, code in enumerate(re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), re.S))
]


def test_the_docs_have_python_blocks():
    assert {doc for doc, _, _ in BLOCKS} == {"README.md", "docs/python.md"}


@pytest.mark.parametrize("doc,i,code", BLOCKS, ids=[f"{d}#{i}" for d, i, _ in BLOCKS])
def test_a_python_block_runs(tmp_path, doc, i, code):
    for module in re.findall(r"^(?:import|from) (\w+)", code, re.M):
        need(module)
    os.symlink(ROOT / "examples", tmp_path / "examples")
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, f"{doc} block {i}:\n{code}\n{done.stderr}"
