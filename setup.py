#!/usr/bin/env python
"""detpre: self-supervised detection pretraining for Detectron2."""
import os

from setuptools import find_packages, setup


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
    # Detectron2 itself is installed by tools/install_detectron2.py (the registry has no
    # distribution under its own name); everything else comes from requirements.txt.
    install_requires=read_requirements("requirements.txt"),
    extras_require={"dev": read_requirements("requirements-dev.txt")},
    include_package_data=True,
)
