#!/usr/bin/env python
"""detpre: self-supervised detection pretraining for Detectron2."""

import os

from setuptools import find_packages, setup

# What detpre's code needs, with lower bounds only: a machine that brings its own torch (a CUDA
# build), numpy 2 or another OpenCV installs detpre beside them. requirements.txt is something
# else: the pinned environment of the development machine (`make setup` installs it, then detpre
# with --no-deps).
INSTALL_REQUIRES = [
    # tools/install_detectron2.py builds it (the registry has no distribution under this name); a
    # Detectron2 built from source (with CUDA) satisfies it too.
    "detectron2>=0.6",
    "torch>=2.3",  # torch.amp.GradScaler(device)
    "torchvision>=0.18",  # transforms.v2
    "numpy>=1.23",
    "fvcore>=0.1.5",
    "iopath>=0.1.7",
    "pycocotools>=2.0.2",
    "Pillow>=7.1",
    "tabulate",
    "matplotlib",  # tools/plot_metrics.py
    "tqdm",
    # Detectron2's ViT (the ViTDet backbone LOCA pretrains) imports timm.
    "timm>=0.6.13",
    # LOCA's released Flax checkpoints are msgpack (tools/convert_pretrained.py reads them).
    "msgpack>=1.0",
    # tools/submit.py: Slurm through submitit.
    "submitit>=1.4",
    # SoCo's selective search (AlignDet's proposals, tools/prepare_proposals.py's default backend)
    # on scikit-image's Felzenszwalb segmentation; the boxes follow scikit-image's version
    # (requirements.txt pins the one the tests' reference boxes come from).
    "selectivesearch>=0.4",
    "scikit-image>=0.19",
    # No OpenCV here, on purpose: detpre imports cv2, which any one of opencv-python(-headless)
    # and opencv-contrib-python(-headless) provides, and two OpenCV wheels must never be installed
    # side by side. Bring one; the contrib build is needed only for `--backend opencv` of
    # tools/prepare_proposals.py (cv2.ximgproc selective search).
]


def read_requirements(name):
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), name)
    with open(path) as f:
        lines = (line.split("#")[0].strip() for line in f)
        return [line for line in lines if line]


setup(
    name="detpre",
    version="0.1.0",
    description="Label-free pretraining of Detectron2 detectors, carried into fine-tuning",
    python_requires=">=3.9",
    packages=find_packages(include=["detpre", "detpre.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={"dev": read_requirements("requirements-dev.txt")},
    include_package_data=True,
)
