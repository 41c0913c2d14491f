"""Every test a parity document (docs/parity/*.md) names exists, and so does every file of the
file map it opens with. Tests named: ``test_file.py::test_name``, or
``::test_name`` in the last file named before it (the documents' shorthand); ``::test_prefix_*``
names at least one test."""

import ast
import glob
import itertools
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


def _expand(path):
    """``a/{b,c}.py`` -> [a/b.py, a/c.py]; a glob pattern -> its matches (none: [pattern])."""
    m = re.search(r"\{([^}]*)\}", path)
    if m:
        return [p for n in m.group(1).split(",") for p in _expand(path.replace(m.group(0), n, 1))]
    if "*" in path:
        return glob.glob(os.path.join(REPO, path)) or [path]
    return [path]


@pytest.mark.parametrize("doc", DOCS, ids=os.path.basename)
def test_file_map_names_files_that_exist(doc):
    """Each parity document opens with the method's file map, and every path in it exists."""
    with open(doc) as f:
        text = f.read()
    assert "\n## File map\n" in text[:200], f"{doc} does not open with its file map"
    lines = text.split("\n## File map\n", 1)[1].strip().splitlines()
    section = "\n".join(itertools.takewhile(lambda line: line.startswith("|"), lines))
    paths = [p.split(" ")[0] for p in re.findall(r"`([^`]+)`", section)]
    paths = [p for p in paths if p.startswith(("detpre/", "tools/", "tests/", "configs/"))]
    assert paths, f"{doc}: the file map names no file"
    missing = [
        p for path in paths for p in _expand(path) if not os.path.exists(os.path.join(REPO, p))
    ]
    assert not missing, f"{doc}: {missing}"
