from .checkpointer import DetpreCheckpointer, atomic_write
from .convert import (
    TARGETS,
    ConversionReport,
    convert_torchvision_resnet,
    find_resnet_prefixes,
    infer_target,
    is_torchvision_resnet,
    to_detectron2_pickle,
    unwrap_state_dict,
)
from .load_report import GROUPS, LoadReportRow, format_load_report, group_of, load_report
from .periodic import BoundedPeriodicCheckpointer

__all__ = [
    "BoundedPeriodicCheckpointer",
    "ConversionReport",
    "DetpreCheckpointer",
    "GROUPS",
    "LoadReportRow",
    "TARGETS",
    "atomic_write",
    "convert_torchvision_resnet",
    "find_resnet_prefixes",
    "format_load_report",
    "group_of",
    "infer_target",
    "is_torchvision_resnet",
    "load_report",
    "to_detectron2_pickle",
    "unwrap_state_dict",
]
