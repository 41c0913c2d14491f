#!/usr/bin/env python
"""
Build a folder of wheels that installs detpre on an air-gapped machine that has its own PyTorch.

Run on a machine with registry access; the folder holds every wheel detpre needs beyond what the
target already has, and ``pip install --no-index --find-links FOLDER detpre`` installs from it.

The folder holds detpre's own wheel (pure Python, built from this checkout), Detectron2's (as
``tools/install_detectron2.py`` builds it: the ``sal-detectron2`` sources, sha256-checked, without
``_C``), and binary wheels for the target (``pip download --only-binary=:all: --python-version
--implementation cp --platform``) of everything they require, one requirement at a time:

* Left out: torch, torchvision, numpy, triton, ``nvidia-*`` and ``cuda-*`` always (the target's own
  builds; a CUDA torch alone is gigabytes), plus what the target already has: ``--base gpu-image``
  (:data:`GPU_IMAGE`, our lent GPU machines: Python 3.12, torch 2.11, numpy 2,
  opencv-python-headless, ...; the default), the names of a ``pip freeze`` of the target
  (``--exclude-installed``, then ``--base none`` is the default) and ``--skip NAME``. A left-out
  package's dependencies are not followed; the README of the folder lists what the target must
  provide (``--skip detectron2`` keeps a target's own CUDA build of Detectron2).
* The dependency walk (tools/wheelhouse_deps.py): each package's ``Requires-Dist`` (markers
  evaluated for the target's Python and platform, extras followed) is downloaded with
  ``--no-deps``, so that nothing left out is ever fetched (pip cannot resolve against another
  machine's installed packages); requirements on one name are intersected, and a download that no
  longer fits is redone. A left-out package the freeze shows in a version that misses a
  requirement is shipped after all (pip replaces it there), except torch & co.: an error.
* Pure-Python packages the registry has as sources only (fvcore, antlr4-python3-runtime,
  selectivesearch) are built here into ``py3-none-any`` wheels; a source-only package that builds
  a platform wheel fails with its name.
* Detectron2's ``Requires-Dist`` here is install_detectron2's ``REQUIRES`` without ``black`` (only
  ``LazyConfig.to_py`` imports it, to format code; with its dependencies 6 wheels, 2.5 MiB for
  cp312) and without ``numpy<2`` (that bound holds the development machine's pin; Detectron2 and
  detpre run on numpy 2: tests/test_wheelhouse.py installs beside numpy 2 and exercises them).
  The rest is kept: ``omegaconf`` (imported by ``detectron2.config``), ``hydra-core`` (overrides
  and ``locate`` fallbacks of LazyConfig; 0.2 MiB), ``matplotlib`` and ``tensorboard`` (imported by
  the visualizer and the default event writers; on the GPU image), ``setuptools<81`` (its
  ``pkg_resources`` is imported by ``detectron2.model_zoo``; torch requires setuptools, so the
  target has one, and the install downgrades it only where it has no ``pkg_resources``).
* detpre's ``Requires-Dist`` is setup.py's ``INSTALL_REQUIRES``: lower bounds only, and no OpenCV
  (any one OpenCV distribution provides cv2; the target brings its own, or ``--extra
  opencv-python-headless``). ``cv2.ximgproc`` (opencv-contrib) serves only ``--backend opencv`` of
  tools/prepare_proposals.py; the default SoCo backend is the ``selectivesearch`` wheel here.

The folder must stay under ``--max-mib`` (30 MiB: it travels with the checkout to machines that
carry at most 64 MiB); otherwise the tool fails listing the largest wheels. It writes
``README.txt`` (the install commands) and ``requirements.txt`` (every wheel, pinned) beside them.
"""

import argparse
import glob
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import install_detectron2  # noqa: E402  (tools/ is not a package)
from wheelhouse_deps import (  # noqa: E402
    Requirement,
    Skip,
    Target,
    canonicalize_name,
    collect,
    parse_wheel_filename,
    run_pip_build,
)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MiB = 1 << 20
# Never in a wheelhouse: the target's own torch stack (fnmatch patterns of canonical names).
ALWAYS_SKIP = ["torch", "torchvision", "numpy", "triton", "nvidia-*", "cuda-*"]
# Our lent GPU machines (x86-64 Linux, Python 3.12, torch 2.11, torchvision 0.26, numpy 2): what
# their image has installed, torch's own requirements included.
# fmt: off
GPU_IMAGE = [
    "opencv-python-headless", "pillow", "matplotlib", "scipy", "scikit-image", "tensorboard",
    "tqdm", "pyyaml", "tabulate", "portalocker", "cloudpickle", "packaging", "pytest", "timm",
    "typing-extensions", "filelock", "sympy", "networkx", "jinja2", "fsspec",
]
# fmt: on
BASES = {"gpu-image": GPU_IMAGE, "none": []}
# Files of the checkout that building detpre's wheel reads (copied, so the checkout stays clean).
SOURCE_FILES = ["setup.py", "pyproject.toml", "README.md", "requirements.txt"]
SOURCE_FILES += ["requirements-dev.txt"]
MARKER = "README.txt"


def wheelhouse_detectron2_requires():
    """install_detectron2.REQUIRES without ``black`` and without numpy's upper bound."""
    out = []
    for line in install_detectron2.REQUIRES:
        name = canonicalize_name(Requirement(line).name)
        if name != "black":
            out.append("numpy" if name == "numpy" else line)
    return out


def build_detpre_wheel(out_dir):
    """detpre's wheel, built from a copy of the checkout's sources (nothing is written there)."""
    with tempfile.TemporaryDirectory() as src:
        for name in SOURCE_FILES:
            if os.path.exists(os.path.join(REPO_ROOT, name)):
                shutil.copy2(os.path.join(REPO_ROOT, name), src)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        shutil.copytree(
            os.path.join(REPO_ROOT, "detpre"), os.path.join(src, "detpre"), ignore=ignore
        )
        res = run_pip_build("wheel", "--no-deps", "-w", out_dir, src)
        if res.returncode:
            raise SystemExit(f"building detpre's wheel failed:\n{res.stdout}")
    return glob.glob(os.path.join(out_dir, "detpre-*.whl"))[0]


def check_size(folder, max_mib, show=8):
    """
    Fail, naming the ``show`` largest wheels, when ``folder`` holds more than ``max_mib`` MiB.

    Returns:
        int: the folder's size in bytes.
    """
    sizes = {f: os.path.getsize(os.path.join(folder, f)) for f in os.listdir(folder)}
    total = sum(sizes.values())
    if total > max_mib * MiB:
        largest = sorted(sizes.items(), key=lambda kv: -kv[1])[:show]
        lines = "\n".join(f"  {size / MiB:7.2f} MiB  {name}" for name, size in largest)
        raise SystemExit(
            f"the wheelhouse holds {total / MiB:.2f} MiB, over the limit of {max_mib} MiB "
            f"(--max-mib). Largest wheels:\n{lines}\n"
            "Leave out what the target already has (--skip NAME, --exclude-installed FREEZE)."
        )
    return total


def write_notes(folder, name, target, on_target, replaced):
    """
    README.txt (the install commands, what the target must have) and requirements.txt.

    Args:
        folder (str): the wheelhouse.
        name (str): the folder's name in the commands.
        target (Target): the target interpreter and platform.
        on_target (dict): name -> (SpecifierSet, who asks), from :func:`collect`.
        replaced (dict): name -> the target's version that the install replaces.
    """
    wheels = sorted(f for f in os.listdir(folder) if f.endswith(".whl"))
    pins = ["{}=={}".format(*parse_wheel_filename(w)[:2]) for w in wheels]
    with open(os.path.join(folder, "requirements.txt"), "w") as f:
        f.write("\n".join(p for p in pins if not p.startswith("detpre==")) + "\ndetpre\n")
    needs = [
        f"    {n}{spec or ''}  ({', '.join(who)})" for n, (spec, who) in sorted(on_target.items())
    ]
    needs += [f"    {n}: the install replaces its {v}" for n, v in sorted(replaced.items())]
    sizes = [f"    {w}  {os.path.getsize(os.path.join(folder, w)) / MiB:.2f} MiB" for w in wheels]
    text = f"""detpre wheelhouse for CPython {target.python_version} on {target.platforms[0]}
(made by tools/make_wheelhouse.py). From the folder that holds {name}/, on the target's Python:

    python -m pip install --no-index --find-links {name} detpre

pip takes torch, torchvision, numpy, OpenCV, ... from what is installed there, the rest from here.
Or into a folder of its own, without pip's dependency check:

    python -m pip install --no-index --find-links {name} --no-deps --target DIR -r {name}/requirements.txt
    export PYTHONPATH=DIR:$PYTHONPATH

Expected on the target (who asks), and one OpenCV distribution providing cv2 (the contrib
build only for tools/prepare_proposals.py --backend opencv):
{chr(10).join(needs) or "    nothing"}

Wheels:
{chr(10).join(sizes)}
"""
    with open(os.path.join(folder, MARKER), "w") as f:
        f.write(text)


def make_wheelhouse(dest, target, skip, extra_requirements=(), max_mib=30.0, cache_dir=None):
    """
    Build the wheelhouse in a staging folder beside ``dest`` and move it there when complete.

    Args:
        dest (str): the folder to create (an earlier wheelhouse there is replaced).
        target (Target): the target interpreter and platform.
        skip (Skip): what the target already has.
        extra_requirements (list[str]): more requirements to include.
        max_mib (float): the size limit.
        cache_dir (str): install_detectron2's download cache.

    Returns:
        list[str]: names of the wheels in ``dest``.
    """
    dest = os.path.abspath(dest)
    if os.path.isdir(dest) and os.listdir(dest) and not os.path.exists(os.path.join(dest, MARKER)):
        raise SystemExit(f"{dest} exists and is not a wheelhouse made by this tool")
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    stage = tempfile.mkdtemp(prefix=".wheelhouse-", dir=os.path.dirname(dest))
    try:
        d2 = install_detectron2.build_wheel(
            stage,
            cache_dir or install_detectron2.DEFAULT_CACHE_DIR,
            wheelhouse_detectron2_requires(),
        )
        roots = {"detpre": build_detpre_wheel(stage), "detectron2": d2}
        if skip.match("detectron2"):  # the target has its own (a CUDA build)
            os.remove(roots.pop("detectron2"))
        never = Skip(ALWAYS_SKIP)
        on_target, replaced = collect(roots, list(extra_requirements), target, skip, never, stage)
        write_notes(stage, os.path.basename(dest), target, on_target, replaced)
        check_size(stage, max_mib)
        shutil.rmtree(dest, ignore_errors=True)
        os.chmod(stage, 0o755)
        os.rename(stage, dest)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return sorted(f for f in os.listdir(dest) if f.endswith(".whl"))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--dest",
        default=os.path.join(REPO_ROOT, "wheelhouse"),
        help="the folder to write (default: wheelhouse/ of the checkout, git-ignored)",
    )
    parser.add_argument("--python-version", default="3.12", help="the target's, e.g. 3.12")
    parser.add_argument(
        "--platform",
        action="append",
        help="the target's platform tag; repeatable (default: manylinux_2_28_x86_64, which also "
        "takes every older manylinux)",
    )
    parser.add_argument(
        "--base",
        choices=sorted(BASES),
        help="what the target has installed (default: gpu-image, or none with --exclude-installed)",
    )
    parser.add_argument("--exclude-installed", metavar="FREEZE", help="the target's pip freeze")
    parser.add_argument(
        "--skip", action="append", default=[], metavar="NAME[==VERSION]", help="the target has it"
    )
    parser.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="REQUIREMENT",
        help="also ship this (e.g. hypothesis for the tests, opencv-python-headless)",
    )
    parser.add_argument("--max-mib", type=float, default=30.0, help="size limit of the folder")
    parser.add_argument(
        "--cache-dir",
        default=install_detectron2.DEFAULT_CACHE_DIR,
        help="install_detectron2.py's download cache",
    )
    args = parser.parse_args(argv)
    base = args.base or ("none" if args.exclude_installed else "gpu-image")
    skip = Skip(ALWAYS_SKIP + BASES[base] + args.skip)
    if args.exclude_installed:
        skip.versions.update(Skip.from_freeze(args.exclude_installed).versions)
    target = Target(args.python_version, args.platform or ["manylinux_2_28_x86_64"])
    wheels = make_wheelhouse(args.dest, target, skip, args.extra, args.max_mib, args.cache_dir)
    total = sum(os.path.getsize(os.path.join(args.dest, f)) for f in os.listdir(args.dest))
    print(f"{args.dest}: {len(wheels)} wheels, {total / MiB:.2f} MiB; see its {MARKER}")
    for w in wheels:
        print(f"  {w}")


if __name__ == "__main__":
    main()
