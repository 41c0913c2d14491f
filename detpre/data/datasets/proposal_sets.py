"""
Unsupervised proposals registered as ordinary one-category COCO datasets, for box-domain
pretraining (AlignDet): ``<images>_proposals_<preset>`` reads the json that
``tools/prepare_proposals.py --dataset <images> --preset <preset>`` writes by default.
"""

import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json

from ..proposals import PRESETS

__all__ = ["PROPOSAL_IMAGE_SETS", "proposals_json_path", "register_proposal_set"]

# Image datasets with predefined proposal sets: name -> image root under $DETECTRON2_DATASETS.
PROPOSAL_IMAGE_SETS = {
    "coco_tiny_train": "coco_tiny/train2017",
    "coco128_train": "coco128/train2017",
    "coco_2017_train": "coco/train2017",
    "imagenet_sample_unlabeled": "imagenet_sample/images",
}


def proposals_json_path(dataset_name, preset, root=None):
    """
    Args:
        dataset_name (str): the image dataset the proposals are of.
        preset (str): the filtering preset ("aligndet", "soco").
        root (str or None): the proposals folder; None reads ``$DETPRE_PROPOSALS`` (default
            ``./proposals``), as Detectron2 reads ``$DETECTRON2_DATASETS``.

    Returns:
        str: ``<root>/<dataset_name>_<preset>.json``.
    """
    if root is None:
        root = os.path.expanduser(os.getenv("DETPRE_PROPOSALS", "proposals"))
    return os.path.join(root, f"{dataset_name}_{preset}.json")


def _load(name, json_file, image_root):
    if not os.path.isfile(json_file):
        raise FileNotFoundError(
            f"Dataset {name!r}: proposals file {json_file} does not exist. Make it with "
            f"tools/prepare_proposals.py (it writes there by default; $DETPRE_PROPOSALS moves it)."
        )
    return load_coco_json(json_file, image_root, name)


def register_proposal_set(name, json_file, image_root):
    """
    Register a proposals json (one category) as a Detectron2 dataset; nothing is read until it is
    loaded, and a missing file then says how to make it.

    Args:
        name (str): the dataset name.
        json_file (str): the COCO json of :func:`detpre.data.proposals.generate_proposals`.
        image_root (str): the folder its ``file_name`` entries are relative to.
    """
    DatasetCatalog.register(name, lambda: _load(name, json_file, image_root))
    MetadataCatalog.get(name).set(
        json_file=json_file, image_root=image_root, evaluator_type="unlabeled"
    )


def register_all_proposal_sets(datasets_root, proposals_root=None):
    """
    Register ``<images>_proposals_<preset>`` for every predefined image set and preset.

    Args:
        datasets_root (str): ``$DETECTRON2_DATASETS``.
        proposals_root (str or None): see :func:`proposals_json_path`.
    """
    for dataset, image_root in PROPOSAL_IMAGE_SETS.items():
        for preset in PRESETS:
            register_proposal_set(
                f"{dataset}_proposals_{preset}",
                proposals_json_path(dataset, preset, proposals_root),
                os.path.join(datasets_root, image_root),
            )
