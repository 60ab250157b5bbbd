"""The examples in the docstrings and in docs/systolic.md really run."""

import doctest
import importlib
import re
from pathlib import Path

import pytest

MODULES = ["array", "dataflows", "formats", "layers", "simulator", "timing", "vonneumann", "report"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"mlscale.processors.systolic.{name}")
    failed, _ = doctest.testmod(module)
    assert failed == 0


def test_docs_python_example_runs():
    doc = Path(__file__).resolve().parents[2] / "docs" / "systolic.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(), re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, str(doc), "exec"), {})
