"""Every test a parity document (docs/parity/*.md) names exists: ``test_file.py::test_name``, or
``::test_name`` in the last file named before it (the documents' shorthand); ``::test_prefix_*``
names at least one test."""

import ast
import glob
import os
import re

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
DOCS = sorted(glob.glob(os.path.join(REPO, "docs", "parity", "*.md")))
REFERENCE = re.compile(r"(test_\w+\.py)?::(test_\w+)(\*?)")


def _test_names(path):
    with open(path) as f:
        tree = ast.parse(f.read())
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)}


def _references(text):
    """(file, test, is_prefix, context) for every reference, in reading order."""
    refs, current = [], None
    for m in REFERENCE.finditer(text):
        current = m.group(1) or current
        context = text[max(0, m.start() - 60) : m.end()].replace("\n", " ")
        refs.append((current, m.group(2), bool(m.group(3)), context))
    return refs


@pytest.mark.parametrize("doc", DOCS, ids=os.path.basename)
def test_named_tests_exist(doc):
    with open(doc) as f:
        refs = _references(f.read())
    assert refs, f"{doc} names no test"
    missing = []
    for file, test, is_prefix, context in refs:
        path = os.path.join(REPO, "tests", file or "")
        names = _test_names(path) if file and os.path.isfile(path) else set()
        found = any(n.startswith(test) for n in names) if is_prefix else test in names
        if not found:
            missing.append((file, test, context))
    assert not missing, missing
