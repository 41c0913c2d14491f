"""
What a checkpoint load did, counted per module group of a Detectron2 detector: how many tensors
were loaded, are missing (left at their initialization), unexpected (in the file, not in the model)
or shape-mismatched (skipped).
"""

from typing import Iterable, List, NamedTuple

from tabulate import tabulate

__all__ = ["GROUPS", "LoadReportRow", "format_load_report", "group_of", "load_report"]

# The groups, in the order of the table; "other" catches every key no prefix below matches.
GROUPS = (
    "backbone.bottom_up",
    "backbone.fpn",
    "backbone",
    "proposal_generator",
    "roi_heads.res5",
    "roi_heads.box_head",
    "roi_heads.mask_head",
    "predictors",
    "sem_seg_head",
    "other",
)
# (group, key prefixes), first match wins.
_GROUP_PREFIXES = (
    ("backbone.bottom_up", ("backbone.bottom_up.",)),
    ("backbone.fpn", ("backbone.fpn_", "backbone.top_block.")),
    ("backbone", ("backbone.",)),
    ("proposal_generator", ("proposal_generator.",)),
    ("roi_heads.res5", ("roi_heads.res5.",)),
    ("roi_heads.box_head", ("roi_heads.box_head.",)),
    ("predictors", ("roi_heads.box_predictor.", "roi_heads.mask_head.predictor.")),
    ("roi_heads.mask_head", ("roi_heads.mask_head.",)),
    ("sem_seg_head", ("sem_seg_head.",)),
)


class LoadReportRow(NamedTuple):
    group: str
    model: int  # tensors of the model's state dict in this group
    loaded: int  # model tensors taken from the checkpoint
    missing: int  # model tensors the checkpoint does not have (left as initialized)
    mismatched: int  # model tensors the checkpoint has with another shape (skipped)
    unexpected: int  # checkpoint tensors the model does not have


def group_of(key: str) -> str:
    """
    Args:
        key (str): a state-dict key of a Detectron2 model, e.g. "backbone.fpn_lateral2.weight".

    Returns:
        str: its group, one of :data:`GROUPS`; ``backbone.fpn`` holds the lateral and output convs
        (and the top block), ``predictors`` the box predictor and the mask predictor.
    """
    for group, prefixes in _GROUP_PREFIXES:
        if key.startswith(prefixes):
            return group
    return "other"


def load_report(
    model_keys: Iterable[str], checkpoint_keys: Iterable[str], incompatible
) -> List[LoadReportRow]:
    """
    Count a load per group.

    Args:
        model_keys (Iterable[str]): the model's state-dict keys.
        checkpoint_keys (Iterable[str]): the keys handed to the model, after any renaming
            (conversion, heuristic matching, "module." stripping), shape-mismatched ones included.
        incompatible: fvcore's ``_IncompatibleKeys`` of the load (``missing_keys``,
            ``unexpected_keys``, ``incorrect_shapes`` as (key, ckpt shape, model shape)).
            Missing counts every model key the checkpoint lacks, also those Detectron2 silences
            (``pixel_mean``/``pixel_std``, which come from the config).

    Returns:
        list[LoadReportRow]: one row per group of :data:`GROUPS` that has model or unexpected
        tensors, in that order.
    """
    model_keys, checkpoint_keys = set(model_keys), set(checkpoint_keys)
    mismatched = {k for k, *_ in incompatible.incorrect_shapes}
    # fvcore drops shape-mismatched tensors before the load, so the model reports them missing
    missing = ((model_keys - checkpoint_keys) | set(incompatible.missing_keys)) - mismatched
    loaded = model_keys - missing - mismatched
    unexpected = set(incompatible.unexpected_keys)
    columns = (model_keys, loaded, missing, mismatched, unexpected)
    counts = {g: [0] * len(columns) for g in GROUPS}
    for i, keys in enumerate(columns):
        for k in keys:
            counts[group_of(k)][i] += 1
    return [LoadReportRow(g, *c) for g, c in counts.items() if c[0] or c[-1]]  # model or unexpected


def format_load_report(rows: List[LoadReportRow]) -> str:
    """
    Args:
        rows (list[LoadReportRow]): output of :func:`load_report`.

    Returns:
        str: a pipe table with a total row, in the style of Detectron2's ``create_small_table``.
    """
    total = LoadReportRow("total", *(sum(col) for col in list(zip(*rows))[1:])) if rows else None
    return tabulate(
        [tuple(r) for r in rows] + ([tuple(total)] if total else []),
        headers=LoadReportRow._fields,
        tablefmt="pipe",
        numalign="left",
        stralign="left",
    )
