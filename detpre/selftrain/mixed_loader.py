"""
The student's data: every batch is part human-labeled images, part pseudo-labeled images, from
two Detectron2 train loaders (Zoph et al., "Rethinking Pre-training and Self-training", 2020).
"""

import logging
from typing import Any, Dict, List

from detectron2.data import (
    MetadataCatalog,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from detectron2.data.samplers import TrainingSampler
from detectron2.utils import comm

__all__ = ["MixedBatch", "MixedDataLoader", "build_mixed_train_loader", "student_batch_sizes"]

logger = logging.getLogger(__name__)


class MixedBatch(list):
    """
    One training step's images in Detectron2's model input format: the human-labeled ones first,
    then the pseudo-labeled ones. It is a plain list of dicts to any code that takes a batch
    (PreciseBN feeds it to the model whole); the student reads its two parts.
    """

    def __init__(self, labeled: List[Dict[str, Any]], pseudo: List[Dict[str, Any]]):
        super().__init__(list(labeled) + list(pseudo))
        self.num_labeled = len(labeled)

    @property
    def labeled(self) -> List[Dict[str, Any]]:
        """The images with human labels."""
        return self[: self.num_labeled]

    @property
    def pseudo(self) -> List[Dict[str, Any]]:
        """The images with pseudo-labels."""
        return self[self.num_labeled :]


class MixedDataLoader:
    """Zips a labeled and a pseudo-labeled train loader (both infinite) into :class:`MixedBatch`
    items."""

    def __init__(self, labeled_loader, pseudo_loader):
        """
        Args:
            labeled_loader (iterable): yields lists of dicts from the human-labeled data.
            pseudo_loader (iterable): yields lists of dicts from the pseudo-labeled data.
        """
        self.labeled_loader = labeled_loader
        self.pseudo_loader = pseudo_loader

    def __iter__(self):
        for labeled, pseudo in zip(self.labeled_loader, self.pseudo_loader):
            yield MixedBatch(labeled, pseudo)


def student_batch_sizes(labeled, pseudo=0, world_size=1):
    """
    The images of one student step: a full labeled batch plus a pseudo-labeled batch, as the
    paper adds pseudo-labeled images to the supervised run's batch (Zoph et al. 2020: 256 COCO +
    256 pseudo-labeled images per step, the other hyperparameters those of the supervised run).

    Args:
        labeled (int): ``SOLVER.IMS_PER_BATCH``, the supervised run's batch, over all processes.
        pseudo (int): ``SELF_TRAIN.PSEUDO_IMS_PER_BATCH`` over all processes; <= 0 means as many
            as ``labeled``.
        world_size (int): processes; each part must split evenly across them.

    Returns:
        tuple[int, int]: (labeled, pseudo) images per step over all processes.
    """
    pseudo = labeled if pseudo <= 0 else pseudo
    for key, n in (("SOLVER.IMS_PER_BATCH", labeled), ("SELF_TRAIN.PSEUDO_IMS_PER_BATCH", pseudo)):
        if n < 1 or n % world_size:
            raise ValueError(
                f"{key} {n}: the labeled and the pseudo-labeled images of a step must each be a "
                f"positive multiple of the {world_size} process(es)."
            )
    return labeled, pseudo


def _check_same_classes(labeled_names, pseudo_names):
    classes = MetadataCatalog.get(labeled_names[0]).get("thing_classes", None)
    for name in pseudo_names:
        other = MetadataCatalog.get(name).get("thing_classes", None)
        if classes is not None and other is not None and list(other) != list(classes):
            raise ValueError(
                f"SELF_TRAIN.PSEUDO_DATASETS: {name!r} has classes {list(other)[:5]}... but "
                f"DATASETS.TRAIN {labeled_names[0]!r} has {list(classes)[:5]}...: pseudo-labels "
                "must use the labeled set's categories (tools/pseudo_label.py writes them so)."
            )


def build_mixed_train_loader(cfg, labeled_mapper, pseudo_mapper):
    """
    Two Detectron2 train loaders: ``DATASETS.TRAIN`` (empty images filtered as
    ``DATALOADER.FILTER_EMPTY_ANNOTATIONS`` says) and ``SELF_TRAIN.PSEUDO_DATASETS`` (images with
    no pseudo box kept: they are background for the student). A step takes
    ``SOLVER.IMS_PER_BATCH`` images from the first and ``SELF_TRAIN.PSEUDO_IMS_PER_BATCH`` (as
    many by default) from the second (:func:`student_batch_sizes`); each process reads its share
    of both. Each loader samples with a
    :class:`TrainingSampler` whose seed is the same on every process (``SEED`` when set, else a
    seed shared by all ranks), so the processes read disjoint shards of one permutation.

    Args:
        cfg (CfgNode): the student's config.
        labeled_mapper (callable): maps a labeled dataset dict to model input.
        pseudo_mapper (callable): maps a pseudo-labeled dataset dict to model input.

    Returns:
        MixedDataLoader: yields :class:`MixedBatch` with the per-process share of each part.
    """
    if not cfg.SELF_TRAIN.PSEUDO_DATASETS:
        raise ValueError(
            "SELF_TRAIN.PSEUDO_DATASETS is empty: name the registered pseudo-label datasets "
            "(tools/pseudo_label.py writes them; tools/self_train.py registers them)."
        )
    if cfg.DATALOADER.SAMPLER_TRAIN != "TrainingSampler":
        raise ValueError(
            f"DATALOADER.SAMPLER_TRAIN {cfg.DATALOADER.SAMPLER_TRAIN!r}: the student's loaders "
            "use TrainingSampler only."
        )
    labeled_names, pseudo_names = list(cfg.DATASETS.TRAIN), list(cfg.SELF_TRAIN.PSEUDO_DATASETS)
    num_labeled, num_pseudo = student_batch_sizes(
        cfg.SOLVER.IMS_PER_BATCH, cfg.SELF_TRAIN.PSEUDO_IMS_PER_BATCH, comm.get_world_size()
    )
    seed = cfg.SEED if cfg.SEED >= 0 else comm.shared_random_seed()
    labeled_dicts = get_detection_dataset_dicts(
        labeled_names, filter_empty=cfg.DATALOADER.FILTER_EMPTY_ANNOTATIONS
    )
    pseudo_dicts = get_detection_dataset_dicts(pseudo_names, filter_empty=False)
    _check_same_classes(labeled_names, pseudo_names)  # after loading: it sets COCO-json metadata
    logger.info(
        f"Student batches: {num_labeled} labeled images ({len(labeled_dicts)} in "
        f"{labeled_names}) + {num_pseudo} pseudo-labeled ({len(pseudo_dicts)} in {pseudo_names}) "
        f"per step, sampler seeds {seed} / {seed + 1}"
    )
    loaders = [
        build_detection_train_loader(
            dataset=dicts,
            mapper=mapper,
            sampler=TrainingSampler(len(dicts), seed=s),
            total_batch_size=batch,
            aspect_ratio_grouping=cfg.DATALOADER.ASPECT_RATIO_GROUPING,
            num_workers=cfg.DATALOADER.NUM_WORKERS,
        )
        for dicts, mapper, batch, s in (
            (labeled_dicts, labeled_mapper, num_labeled, seed),
            (pseudo_dicts, pseudo_mapper, num_pseudo, seed + 1),
        )
    ]
    return MixedDataLoader(*loaders)
