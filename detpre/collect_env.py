"""
Environment report for bug reports: ``python -m detpre.collect_env``.

Detectron2's own table (Python, torch, torchvision, CUDA, GPUs, whether ``detectron2._C`` is
built), plus what detpre relies on besides: OpenCV and its selective search, pycocotools, fvcore.
"""

import importlib
import importlib.metadata
import os

from detectron2.utils.collect_env import collect_env_info
from tabulate import tabulate


def _version(module_name):
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        return f"not importable ({e})"
    try:
        return importlib.metadata.version(module_name)
    except importlib.metadata.PackageNotFoundError:
        return getattr(module, "__version__", "unknown version")


def detpre_env_rows():
    """
    Returns:
        list[tuple[str, str]]: (name, value) rows of what detpre adds to Detectron2's report.
    """
    import cv2

    import detpre

    try:
        importlib.import_module("detectron2._C")
        d2_c = "present"
    except ImportError:
        d2_c = "absent (pure-Python Detectron2: no rotated-box ops; COCO eval uses pycocotools)"
    return [
        ("detpre", f"{detpre.__version__} @{os.path.dirname(detpre.__file__)}"),
        ("detectron2._C", d2_c),
        ("OpenCV", cv2.__version__),
        ("cv2.ximgproc (selective search)", str(hasattr(cv2, "ximgproc"))),
        ("pycocotools", _version("pycocotools")),
        ("fvcore", _version("fvcore")),
        ("iopath", _version("iopath")),
        ("DETECTRON2_DATASETS", os.environ.get("DETECTRON2_DATASETS", "<unset: ./datasets>")),
    ]


def collect_env():
    """
    Returns:
        str: Detectron2's environment table followed by detpre's.
    """
    return collect_env_info() + "\n" + tabulate(detpre_env_rows()) + "\n"


if __name__ == "__main__":
    print(collect_env())
