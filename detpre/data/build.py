"""Data loading for pretraining: any registered dataset as unlabeled images, one pretext mapper."""

import itertools
import logging

from detectron2.data import DatasetCatalog
from detectron2.utils.registry import Registry

logger = logging.getLogger(__name__)

PRETRAIN_MAPPER_REGISTRY = Registry("PRETRAIN_MAPPER")
PRETRAIN_MAPPER_REGISTRY.__doc__ = """
Pretext mappers: callables built as ``Mapper(cfg, is_train=True, dataset_dicts=dicts)`` that turn
one dataset dict into ``{"views": [...], ...}`` (see docs/architecture.md), or None to skip the
image.
"""

_KEEP = ("file_name", "image_id", "height", "width")


def get_pretrain_dicts(cfg):
    """
    The training images of ``cfg.DATASETS.TRAIN``, labels dropped (pretexts never see them),
    except where the mapper ``SSL.MAPPER`` has ``needs_annotations`` set: box-domain pretraining
    stores its unsupervised proposals as the "annotations" of a proposals dataset.

    Args:
        cfg (CfgNode): the pretraining config.

    Returns:
        list[dict]: ``{"file_name", "image_id", ...}`` per image, datasets concatenated.
    """
    names = cfg.DATASETS.TRAIN
    if not names:
        raise ValueError("DATASETS.TRAIN is empty: name at least one registered image dataset")
    mapper = PRETRAIN_MAPPER_REGISTRY.get(cfg.SSL.MAPPER)
    keep = _KEEP + ("annotations",) if getattr(mapper, "needs_annotations", False) else _KEEP
    dicts = []
    for name in names:
        items = DatasetCatalog.get(name)
        if not items:
            raise ValueError(f"Dataset {name!r} has no images")
        dicts.append([{k: d[k] for k in keep if k in d} for d in items])
    merged = list(itertools.chain.from_iterable(dicts))
    logger.info("Pretraining images: %d from %s", len(merged), ", ".join(names))
    return merged


def build_pretrain_mapper(cfg, dataset_dicts):
    """
    Args:
        cfg (CfgNode): the pretraining config; ``SSL.MAPPER`` names the mapper.
        dataset_dicts (list[dict]): the training images (some mappers draw backgrounds from them).

    Returns:
        callable: the pretext mapper.
    """
    return PRETRAIN_MAPPER_REGISTRY.get(cfg.SSL.MAPPER)(
        cfg, is_train=True, dataset_dicts=dataset_dicts
    )
