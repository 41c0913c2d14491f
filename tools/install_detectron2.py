#!/usr/bin/env python
"""
Install Detectron2's pure-Python sources as a proper wheel named ``detectron2``.

Detectron2 is not published on the package registry under its own name. The registry distribution
``sal-detectron2==0.7.2`` is a wheel of the upstream Detectron2 Python sources (tagged for Python 3.10,
with a prebuilt ``_C`` extension and a top-level ``tools/`` package). This script:

1. leaves an importable ``detectron2`` alone (a user who built it with CUDA keeps their build);
2. downloads ``sal-detectron2==0.7.2`` with pip and checks its sha256;
3. repacks its ``detectron2/`` package, without the ``_C`` binary and without ``tools/``, into
   ``detectron2-0.7.2-py3-none-any.whl`` with the upstream dependencies;
4. installs that wheel into the running interpreter with pip.

Steps 2 and 3 are :func:`build_wheel`, which ``tools/make_wheelhouse.py`` calls to put the same
wheel (with its own ``requires``) into a wheelhouse without installing it.

Without ``_C`` only rotated-box ops and the fast COCO evaluator are missing; Detectron2 falls back to
pycocotools for evaluation. The script uses the standard library only, so it runs before anything else.
"""

import argparse
import base64
import hashlib
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile

SOURCE = "sal-detectron2==0.7.2"
SOURCE_FILE = "sal_detectron2-0.7.2-cp310-none-any.whl"
SOURCE_SHA256 = "491af0c7f79bdb2d178e46f6cb16a97c4ac968d45c41ea3f6b6435d59bbee561"
NAME, VERSION = "detectron2", "0.7.2"
DEFAULT_CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "detpre")
# Upstream Detectron2's install_requires (setup.py of v0.6+), minus the ones that only the dropped
# parts need. ``setuptools<81`` keeps ``pkg_resources``, which ``detectron2.model_zoo`` imports.
# ``numpy<2`` keeps this machine's numpy (requirements.txt). tools/make_wheelhouse.py repacks with
# its own list instead (no ``black``, no bound on numpy): see its docstring.
REQUIRES = [
    "Pillow>=7.1",
    "matplotlib",
    "pycocotools>=2.0.2",
    "termcolor>=1.1",
    "yacs>=0.1.8",
    "tabulate",
    "cloudpickle",
    "tqdm>4.29.0",
    "tensorboard",
    "fvcore>=0.1.5,<0.1.6",
    "iopath>=0.1.7,<0.1.11",
    "omegaconf>=2.1,<2.4",
    "hydra-core>=1.1",
    "black",
    "packaging",
    "numpy<2",
    "setuptools<81",
]


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(cache_dir):
    """
    Args:
        cache_dir (str): folder of the downloaded wheel (kept between runs).

    Returns:
        str: path of the ``sal-detectron2`` wheel, its sha256 checked.
    """
    path = os.path.join(cache_dir, SOURCE_FILE)
    if not os.path.exists(path):
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["--python-version", "3.10", SOURCE, "-d", cache_dir, "-q"]
        subprocess.check_call(cmd)
    digest = sha256_of(path)
    if digest != SOURCE_SHA256:
        os.remove(path)
        raise SystemExit(
            f"{path}: sha256 {digest} does not match the expected {SOURCE_SHA256}; "
            "the file was removed, nothing was installed."
        )
    return path


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def keep_member(name):
    """Only the ``detectron2/`` package, without compiled extensions."""
    if not name.startswith("detectron2/"):
        return False
    base = os.path.basename(name)
    return not (base.startswith("_C.") and base.endswith((".so", ".pyd")))


def repack(src_wheel, out_dir, requires=REQUIRES):
    """
    Args:
        src_wheel (str): the verified sal-detectron2 wheel.
        out_dir (str): where to write ``detectron2-0.7.2-py3-none-any.whl``.
        requires (list[str]): its ``Requires-Dist`` lines (default: :data:`REQUIRES`).

    Returns:
        str: path of the new wheel.
    """
    dist_info = f"{NAME}-{VERSION}.dist-info"
    out = os.path.join(out_dir, f"{NAME}-{VERSION}-py3-none-any.whl")
    records = []
    with zipfile.ZipFile(src_wheel) as zin, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zout:
        license_text = b""
        for info in zin.infolist():
            if info.filename.endswith(".dist-info/LICENSE"):
                license_text = zin.read(info)
            if info.is_dir() or not keep_member(info.filename):
                continue
            data = zin.read(info)
            zout.writestr(info.filename, data)
            records.append(_record_line(info.filename, data))
        metadata = [
            "Metadata-Version: 2.1",
            f"Name: {NAME}",
            f"Version: {VERSION}",
            "Summary: Detectron2 Python sources (repacked by detpre from sal-detectron2, no _C)",
            "Home-page: https://github.com/facebookresearch/detectron2",
            "License: Apache-2.0",
            "Requires-Python: >=3.8",
        ] + [f"Requires-Dist: {r}" for r in requires]
        meta_files = {
            f"{dist_info}/METADATA": ("\n".join(metadata) + "\n").encode(),
            f"{dist_info}/WHEEL": (
                "Wheel-Version: 1.0\nGenerator: detpre\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
            ).encode(),
            f"{dist_info}/top_level.txt": b"detectron2\n",
            f"{dist_info}/LICENSE": license_text,
        }
        for name, data in meta_files.items():
            zout.writestr(name, data)
            records.append(_record_line(name, data))
        records.append(f"{dist_info}/RECORD,,")
        zout.writestr(f"{dist_info}/RECORD", "\n".join(records) + "\n")
    return out


def build_wheel(out_dir, cache_dir=DEFAULT_CACHE_DIR, requires=REQUIRES):
    """
    Download (or reuse from ``cache_dir``) and verify ``sal-detectron2``, and repack it into
    ``out_dir`` without installing anything.

    Args:
        out_dir (str): an existing folder for ``detectron2-0.7.2-py3-none-any.whl``.
        cache_dir (str): where the downloaded wheel is kept between runs.
        requires (list[str]): the new wheel's ``Requires-Dist`` lines.

    Returns:
        str: path of the new wheel.
    """
    os.makedirs(cache_dir, exist_ok=True)
    return repack(download(cache_dir), out_dir, requires=requires)


def detectron2_importable():
    return importlib.util.find_spec("detectron2") is not None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument(
        "--cache-dir",
        default=DEFAULT_CACHE_DIR,
        help="where the downloaded and repacked wheels are kept between runs",
    )
    parser.add_argument("--force", action="store_true", help="reinstall even if importable")
    args = parser.parse_args(argv)
    if detectron2_importable() and not args.force:
        print("detectron2 is already importable; leaving it alone.")
        return
    with tempfile.TemporaryDirectory() as tmp:
        wheel = build_wheel(tmp, args.cache_dir)
        subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", wheel])
    print(f"installed {NAME} {VERSION} from {SOURCE} (sha256 verified, _C and tools/ dropped)")


if __name__ == "__main__":
    main()
