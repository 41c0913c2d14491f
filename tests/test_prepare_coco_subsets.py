import importlib.util
import json
import math
import os
import subprocess
import sys

import pytest
from pycocotools.coco import COCO


@pytest.fixture(scope="module")
def prepare(repo_root):
    path = os.path.join(repo_root, "datasets", "prepare_coco_subsets.py")
    spec = importlib.util.spec_from_file_location("prepare_coco_subsets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def coco128_json(datasets_root):
    return os.path.join(datasets_root, "coco128", "annotations", "instances_train2017.json")


@pytest.fixture(scope="module")
def coco128(coco128_json):
    with open(coco128_json) as f:
        return json.load(f)


def _expected_count(percent, n):
    # The documented rule: round half up, at least one image.
    return max(1, int(math.floor(percent * n / 100 + 0.5)))


def _load(path):
    with open(path) as f:
        return json.load(f)


def test_splits_are_valid_coco(prepare, coco128_json, coco128, tmp_path):
    written = prepare.main(
        ["--json", coco128_json, "--out-dir", str(tmp_path), "--seed", "3", "--complement"]
    )
    n = len(coco128["images"])
    assert n == 128
    anns_by_image = {}
    for a in coco128["annotations"]:
        anns_by_image.setdefault(a["image_id"], []).append(a["id"])
    previous = set()
    for percent, want in ((1, 1), (5, 6), (10, 13)):
        assert _expected_count(percent, n) == want
        path = tmp_path / f"instances_train2017.3@{percent}.json"
        rest_path = tmp_path / f"instances_train2017.3@{percent}-unlabeled.json"
        assert {str(path), str(rest_path)} <= set(written)
        api = COCO(str(path))  # pycocotools indexes it: ids, image refs, categories
        ids = set(api.getImgIds())
        assert len(ids) == want
        assert set(api.getAnnIds()) == {a for i in ids for a in anns_by_image.get(i, [])}
        assert all(api.anns[a]["image_id"] in ids for a in api.getAnnIds())
        data = _load(path)
        assert data["categories"] == coco128["categories"]
        assert data["licenses"] == coco128["licenses"]
        assert previous <= ids  # nested: the 1% split lies inside the 5% split
        previous = ids

        rest = COCO(str(rest_path))
        assert set(rest.getImgIds()) == {im["id"] for im in coco128["images"]} - ids
        assert len(rest.getAnnIds()) + len(api.getAnnIds()) == len(coco128["annotations"])


def test_same_seed_same_files_other_seed_differs(prepare, coco128_json, tmp_path):
    outs = {}
    for run, seed in (("a", 5), ("b", 5), ("c", 6)):
        prepare.main(
            ["--json", coco128_json, "--out-dir", str(tmp_path / run), "--seed", str(seed)]
            + ["--percents", "10"]
        )
        outs[run] = (tmp_path / run / f"instances_train2017.{seed}@10.json").read_bytes()
    assert outs["a"] == outs["b"]
    ids = {run: {im["id"] for im in json.loads(data)["images"]} for run, data in outs.items()}
    assert len(ids["c"]) == len(ids["a"]) == 13
    assert ids["c"] != ids["a"]


def test_rounding_keeps_at_least_one(prepare):
    assert prepare.num_selected(1, 10) == 1  # 0.1 images -> 1
    assert prepare.num_selected(50, 5) == 3  # 2.5 rounds up
    assert prepare.num_selected(100, 7) == 7
    assert prepare.num_selected(0.5, 128) == 1
    with pytest.raises(ValueError, match="101"):
        prepare.num_selected(101, 10)


def test_command_line(coco128_json, repo_root, tmp_path):
    script = os.path.join(repo_root, "datasets", "prepare_coco_subsets.py")
    result = subprocess.run(
        [sys.executable, script, "--json", coco128_json, "--out-dir", str(tmp_path)]
        + ["--percents", "2.5"],
        capture_output=True,
        text=True,
        check=True,
    )
    path = tmp_path / "instances_train2017.1@2.5.json"
    assert str(path) in result.stdout
    assert len(_load(path)["images"]) == _expected_count(2.5, 128) == 3
    bad = subprocess.run(
        [sys.executable, script, "--json", str(tmp_path / "none.json")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and str(tmp_path / "none.json") in bad.stderr
