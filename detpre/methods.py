"""
The methods table: per pretraining method, its meta-architecture(s), pretext mapper, config node,
exported copy, and the configs the main job runs. ``tools/run_main_job.py`` and the tests read it;
:func:`check_method_config` makes a pretraining run fail at start-up when its config pairs a
meta-architecture with another method's mapper.
"""

from collections import OrderedDict, namedtuple

__all__ = ["FINETUNE_CONFIG", "METHODS", "Method", "check_method_config", "method_of"]

# The main job's fine-tuning config (Faster R-CNN R50-FPN on BCCD): a method fine-tunes with it
# unless its release's transfer needs its own head or recipe.
FINETUNE_CONFIG = "configs/finetune/faster_rcnn_R50_FPN_cpu_bccd.yaml"

Method = namedtuple(
    "Method",
    [
        "label",  # name in tables
        "paper",  # citation
        "meta_architectures",  # META_ARCH_REGISTRY names (MODEL.META_ARCHITECTURE)
        "mapper",  # PRETRAIN_MAPPER_REGISTRY name (SSL.MAPPER)
        "config_node",  # the method's own config node
        "export",  # the copy its release transfers (SSL.EXPORT): "online" or "momentum"
        "cpu_config",  # the main job's pretraining config (R50-FPN, bundled data)
        "finetune_config",  # the main job's fine-tuning config for its weights
        "init_from",  # the method whose output its pretraining starts from, or None
        "proposals",  # the tools/prepare_proposals.py preset its views need, or None
    ],
    defaults=(FINETUNE_CONFIG, None, None),
)

METHODS = OrderedDict(
    [
        (
            "moco_v2",
            Method(
                label="MoCo-v2",
                paper="Chen et al., Improved Baselines with Momentum Contrastive Learning, 2020",
                meta_architectures=("MoCoV2",),
                mapper="TwoCropsMapper",
                config_node="MOCO",
                export="online",
                cpu_config="configs/pretrain/moco_v2_R50_FPN_cpu_imagenet_sample.yaml",
            ),
        ),
        (
            "insloc",
            Method(
                label="InsLoc",
                paper="Yang et al., Instance Localization for Self-supervised Detection "
                "Pretraining, CVPR 2021",
                meta_architectures=("InsLoc",),
                mapper="InsLocCompositionMapper",
                config_node="INSLOC",
                export="online",
                cpu_config="configs/pretrain/insloc_R50_FPN_cpu_imagenet_sample.yaml",
                finetune_config="configs/finetune/faster_rcnn_R50_FPN_cpu_bccd_insloc.yaml",
            ),
        ),
        (
            "slotcon",
            Method(
                label="SlotCon",
                paper="Wen et al., Self-Supervised Visual Representation Learning with Semantic "
                "Grouping, NeurIPS 2022",
                meta_architectures=("SlotCon",),
                mapper="SlotConViewsMapper",
                config_node="SLOTCON",
                export="momentum",
                cpu_config="configs/pretrain/slotcon_R50_FPN_cpu_imagenet_sample.yaml",
            ),
        ),
        (
            "loca",
            Method(
                label="LOCA",
                paper="Caron, Houlsby and Schmid, Location-Aware Self-Supervised Transformers for "
                "Semantic Segmentation, 2022",
                meta_architectures=("LOCA",),
                mapper="LocaViewsMapper",
                config_node="LOCA",
                export="momentum",
                cpu_config="configs/pretrain/loca_R50_FPN_cpu_imagenet_sample.yaml",
            ),
        ),
        (
            "aligndet",
            Method(
                label="AlignDet",
                paper="Li et al., AlignDet: Aligning Pre-training and Fine-tuning in Object "
                "Detection, ICCV 2023",
                meta_architectures=("AlignDet", "AlignDetRetinaNet"),
                mapper="BoxDomainMapper",
                config_node="ALIGNDET",
                export="online",
                cpu_config="configs/pretrain/aligndet_R50_FPN_cpu_coco.yaml",
                finetune_config="configs/finetune/faster_rcnn_R50_FPN_cpu_bccd_aligndet.yaml",
                init_from="insloc",
                proposals="aligndet",
            ),
        ),
    ]
)


def method_of(meta_architecture):
    """
    Args:
        meta_architecture (str): a ``MODEL.META_ARCHITECTURE``.

    Returns:
        str or None: the key in :data:`METHODS` of the method built on it, None for a detector.
    """
    for name, method in METHODS.items():
        if meta_architecture in method.meta_architectures:
            return name
    return None


def check_method_config(cfg):
    """
    Raise a ValueError naming the keys when a pretraining config's ``SSL.MAPPER`` is not the
    mapper of the method its ``MODEL.META_ARCHITECTURE`` builds (the model would get views of
    another pretext). Configs of meta-architectures outside the table pass.

    Args:
        cfg (CfgNode): a pretraining config.
    """
    name = method_of(cfg.MODEL.META_ARCHITECTURE)
    if name is not None and cfg.SSL.MAPPER != METHODS[name].mapper:
        raise ValueError(
            f"MODEL.META_ARCHITECTURE {cfg.MODEL.META_ARCHITECTURE!r} ({METHODS[name].label}) "
            f"takes the views of SSL.MAPPER {METHODS[name].mapper!r}, but the config sets "
            f"SSL.MAPPER {cfg.SSL.MAPPER!r}"
        )
