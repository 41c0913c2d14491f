"""
tools/make_wheelhouse.py: a wheelhouse for this interpreter, built from the registry, installs
detpre with ``pip install --no-index --find-links`` into a fresh environment that sees only what
our GPU machines have: this environment's torch, torchvision, OpenCV, scikit-image, ..., and
numpy 2 as there, but not fvcore, Detectron2 or detpre.
"""

import csv
import email.parser
import glob
import importlib.util
import json
import os
import platform
import subprocess
import sys
import sysconfig
import zipfile

import pytest
from packaging.utils import canonicalize_name, parse_wheel_filename

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools")
# What the GPU machines lack, so that the wheelhouse must bring it (the view below hides it).
MISSING_ON_TARGET = {
    "detpre", "detectron2", "fvcore", "iopath", "yacs", "pycocotools", "termcolor", "omegaconf",
    "hydra-core", "antlr4-python3-runtime", "selectivesearch", "submitit",
    "msgpack",  # detpre reads LOCA's Flax checkpoints with it (tools/convert_pretrained.py)
}  # fmt: skip
# setuptools<81 (pkg_resources for detectron2.model_zoo) is shipped in case the target's is newer.
EXPECTED_WHEELS = MISSING_ON_TARGET | {"setuptools"}
PY = f"{sys.version_info.major}.{sys.version_info.minor}"
# The GPU machines' numpy (installed from the registry; this environment's is numpy<2); the upper
# bound is this environment's scipy's.
TARGET_NUMPY = "numpy>=2,<2.7"

linux_x86_64 = pytest.mark.skipif(
    not (sys.platform == "linux" and platform.machine() == "x86_64"),
    reason="builds manylinux x86-64 wheels for this interpreter",
)


def _load(name):
    spec = importlib.util.spec_from_file_location(f"{name}_tool", os.path.join(TOOLS, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tool():
    return _load("make_wheelhouse")


def _clean_env(**extra):
    """The environment of a child process, without this machine's pip configuration."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHONPATH"))}
    env.update(PIP_CONFIG_FILE=os.devnull, PYTHONNOUSERSITE="1", **extra)
    return env


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    dest = tmp_path_factory.mktemp("built") / "wheelhouse"
    cmd = [sys.executable, os.path.join(TOOLS, "make_wheelhouse.py"), "--python-version", PY]
    cmd += ["--platform", "manylinux_2_28_x86_64", "--dest", str(dest)]
    res = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert res.returncode == 0, res.stdout
    return str(dest)


def _wheels(folder):
    return {
        canonicalize_name(parse_wheel_filename(os.path.basename(p))[0]): p
        for p in glob.glob(os.path.join(folder, "*.whl"))
    }


@linux_x86_64
def test_the_wheelhouse_holds_what_the_target_lacks(wheelhouse):
    wheels = _wheels(wheelhouse)
    assert set(wheels) == EXPECTED_WHEELS
    pycocotools = os.path.basename(wheels["pycocotools"])
    assert "manylinux" in pycocotools and not pycocotools.endswith("-none-any.whl")  # compiled
    for name in ("detpre", "detectron2", "fvcore", "antlr4-python3-runtime", "selectivesearch"):
        assert wheels[name].endswith("-py3-none-any.whl"), wheels[name]
    with zipfile.ZipFile(wheels["detectron2"]) as zf:
        meta = email.parser.BytesParser().parsebytes(zf.read("detectron2-0.7.2.dist-info/METADATA"))
    requires = meta.get_all("Requires-Dist")
    assert "numpy" in requires and "setuptools<81" in requires and "omegaconf>=2.1,<2.4" in requires
    assert not [r for r in requires if r.startswith(("black", "numpy<"))]
    total = sum(os.path.getsize(os.path.join(wheelhouse, f)) for f in os.listdir(wheelhouse))
    assert total < 30 * 2**20
    readme = open(os.path.join(wheelhouse, "README.txt")).read()
    assert "python -m pip install --no-index --find-links wheelhouse detpre" in readme
    assert "torch>=2.3  (detpre)" in readme
    pins = open(os.path.join(wheelhouse, "requirements.txt")).read().split()
    assert pins[-1] == "detpre" and len(pins) == len(wheels)
    assert "detectron2==0.7.2" in pins


def _base_view(view, hide):
    """Links to this environment's site-packages, without the distributions named in ``hide``."""
    site = sysconfig.get_paths()["purelib"]
    hidden = {"__pycache__"}
    for info in glob.glob(os.path.join(site, "*.dist-info")):
        with open(os.path.join(info, "METADATA"), encoding="utf-8") as f:
            name = canonicalize_name(email.parser.Parser().parse(f)["Name"])
        if name in hide:
            hidden.add(os.path.basename(info))
            with open(os.path.join(info, "RECORD"), newline="") as f:
                hidden.update(row[0].split("/")[0] for row in csv.reader(f) if row)
    os.makedirs(view)
    for entry in os.listdir(site):
        if entry not in hidden and not entry.endswith(".pth"):
            os.symlink(os.path.join(site, entry), os.path.join(view, entry))


PROBE = """
import importlib.util, json, sys
print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))
"""
CHECK = """
import json, sys
import cv2, detectron2, detpre, fvcore, hydra, iopath, numpy, omegaconf, pycocotools, selectivesearch
import termcolor, torch, yacs
import numpy as np
import pycocotools.mask as mask_util
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detpre import add_detpre_config
from detpre.data.proposals import soco_selective_search

cfg = get_cfg()
add_detpre_config(cfg)
cfg.merge_from_file(model_zoo.get_config_file("COCO-Detection/faster_rcnn_R_50_FPN_1x.yaml"))
cfg.MODEL.DEVICE = "cpu"
model = build_model(cfg)
# numpy-heavy paths: SoCo's selective search (scikit-image), Detectron2's transforms and
# polygon -> bitmask (pycocotools).
blocks = np.random.default_rng(0).integers(0, 255, (6, 8, 3))
image = np.kron(blocks, np.ones((8, 8, 1))).astype(np.uint8)
proposals = soco_selective_search(image)
aug_input = T.AugInput(image)
tfm = T.AugmentationList([T.ResizeShortestEdge(96, 96), T.RandomFlip(1.0)])(aug_input)
ann = dict(bbox=[8, 8, 40, 24], bbox_mode=0, category_id=0, segmentation=[[8, 8, 40, 8, 40, 24, 8, 24]])
size = aug_input.image.shape[:2]
ann = utils.transform_instance_annotations(ann, tfm, size)
masks = utils.annotations_to_instances([ann], size, mask_format="bitmask").gt_masks.tensor
rle = mask_util.encode(np.asfortranarray(masks[0].numpy().astype(np.uint8)))
print(json.dumps(dict(
    files={m: sys.modules[m].__file__ for m in sys.argv[1:]},
    model=type(model).__name__,
    numpy=np.__version__,
    proposals=len(proposals),
    mask_area=int(mask_util.area(rle)),
)))
"""


@linux_x86_64
def test_detpre_installs_from_the_wheelhouse_alone_beside_numpy_2(wheelhouse, tmp_path):
    view, env_dir = str(tmp_path / "base"), str(tmp_path / "env")
    _base_view(view, MISSING_ON_TARGET | {"numpy"})
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", env_dir], check=True)
    python = os.path.join(env_dir, "bin", "python")
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout.strip()
    with open(os.path.join(purelib, "gpu_image.pth"), "w") as f:
        f.write(view + "\n")
    pip = [sys.executable, "-m", "pip", "--python", python, "install"]
    res = subprocess.run(
        pip + ["-q", TARGET_NUMPY], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert res.returncode == 0, res.stdout

    env = _clean_env(DETECTRON2_DATASETS=str(tmp_path))
    run = dict(cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    probe = ["detpre", "detectron2", "fvcore", "omegaconf", "torch", "torchvision", "cv2"]
    res = subprocess.run([python, "-c", PROBE, *probe], text=True, **run)
    present = json.loads(res.stdout.splitlines()[-1])
    assert present == {m: m in ("torch", "torchvision", "cv2") for m in probe}

    res = subprocess.run(
        pip + ["--no-index", "--find-links", wheelhouse, "detpre"], text=True, **run
    )
    assert res.returncode == 0, res.stdout
    installed = [ln for ln in res.stdout.splitlines() if ln.startswith("Successfully installed")]
    names = {canonicalize_name(t.rsplit("-", 1)[0]) for t in installed[0].split()[2:]}
    assert names == MISSING_ON_TARGET  # torch, numpy, setuptools<81 ... were already there

    modules = ["detpre", "detectron2", "fvcore", "iopath", "omegaconf", "hydra", "yacs"]
    modules += ["pycocotools", "termcolor", "selectivesearch", "numpy", "torch", "cv2"]
    res = subprocess.run([python, "-c", CHECK, *modules], text=True, **run)
    assert res.returncode == 0, res.stdout
    out = json.loads(res.stdout.splitlines()[-1])
    assert out["model"] == "GeneralizedRCNN"
    assert out["numpy"].startswith("2.") and out["proposals"] > 5 and out["mask_area"] > 0
    for module, path in out["files"].items():
        where = view if module in ("torch", "cv2") else purelib
        assert path.startswith(where + os.sep), (module, path)


def test_the_size_limit_names_the_largest_wheels(tool, tmp_path):
    for name, mib in [("big-1.0-py3-none-any.whl", 2), ("small-1.0-py3-none-any.whl", 1)]:
        with open(tmp_path / name, "wb") as f:
            f.write(b"\0" * (mib * 2**20))
    (tmp_path / "README.txt").write_text("notes")
    assert tool.check_size(str(tmp_path), 3.5) == 3 * 2**20 + 5
    with pytest.raises(SystemExit) as err:
        tool.check_size(str(tmp_path), 2.5, show=1)
    message = str(err.value)
    assert "holds 3.00 MiB, over the limit of 2.5 MiB" in message
    assert "2.00 MiB  big-1.0-py3-none-any.whl" in message and "small" not in message


def test_platform_tags_and_markers_are_the_targets(tool):
    deps = _load("wheelhouse_deps")
    tags = deps.expand_platforms(["manylinux2014_x86_64"])
    assert tags[:2] == ["manylinux2014_x86_64", "manylinux_2_17_x86_64"]
    assert "manylinux1_x86_64" in tags and "manylinux_2_5_x86_64" in tags
    assert "manylinux_2_28_x86_64" not in tags
    assert "manylinux_2_17_x86_64" in deps.expand_platforms(["manylinux_2_28_x86_64"])
    target = deps.Target("3.12", ["manylinux_2_28_x86_64"])
    wanted = target.wanted(
        ['a; python_version < "3.12"', 'b; platform_machine == "x86_64"', 'c; extra == "x"', "d"],
        extras=["x"],
    )
    assert [r.name for r in wanted] == ["b", "c", "d"]
    assert [r.name for r in target.wanted(['c; extra == "x"', 'e; sys_platform == "win32"'])] == []


def test_a_target_version_that_misses_a_requirement(tool, tmp_path):
    """A freeze's setuptools 84 (no pkg_resources) is replaced by a shipped one; numpy never is."""
    deps = _load("wheelhouse_deps")
    root = tmp_path / "root-1.0-py3-none-any.whl"
    with zipfile.ZipFile(root, "w") as zf:
        zf.writestr(
            "root-1.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: root\nVersion: 1.0\nRequires-Dist: numpy>=1.23\n"
            "Requires-Dist: setuptools<81\nRequires-Dist: torch>=2.3; python_version < '3'\n",
        )
    target, never = deps.Target("3.12", ["manylinux_2_28_x86_64"]), deps.Skip(tool.ALWAYS_SKIP)
    out = tmp_path / "out"
    out.mkdir()
    skip = deps.Skip(["numpy==2.1.0", "setuptools==84.2.1", "torch"])
    on_target, replaced = deps.collect({"root": str(root)}, [], target, skip, never, str(out))
    assert {n: (str(spec), who) for n, (spec, who) in on_target.items()} == {
        "numpy": (">=1.23", ["root"])
    }
    assert replaced == {"setuptools": "84.2.1"}
    (shipped,) = os.listdir(out)
    name, version = parse_wheel_filename(shipped)[:2]
    assert name == "setuptools" and version.major < 81
    with pytest.raises(SystemExit, match="numpy 1.22.0 misses numpy>=1.23"):
        skip = deps.Skip(["numpy==1.22.0", "setuptools"])
        deps.collect({"root": str(root)}, [], target, skip, never, str(out))
