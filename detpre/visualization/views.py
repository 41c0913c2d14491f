"""
Pictures of the pretext views each method's mapper makes (``tools/visualize.py views``): every
view of one sample in a titled grid, with what the model reads drawn on it.

* MoCo-v2: the two crops;
* InsLoc: the query and key composites with the pasted box (green) and, on the query, the box
  jittered as the model jitters it (red, ``AnchorBoxJitter``, when INSLOC.BOX_AUG);
* SlotCon: the two crops with the region each shares with the other (yellow, ``overlap_boxes``);
* LOCA: the reference with a kept run of tokens (the teacher keeps LOCA.REFERENCE_KEEP_RATIO of
  them) shaded, each in its own colour, and the queries with every cell whose position target is
  a kept token shaded in that token's colour (titles: the number of such cells, "F" when the
  view is flipped);
* AlignDet: the two views with the proposal boxes coloured by id.
"""

import random
from typing import Dict

import numpy as np
import torch
from detectron2.structures import Boxes

from ..methods import method_of
from ..modeling.insloc.box_jitter import AnchorBoxJitter
from ..modeling.loca.patch_positions import patch_position_targets
from ..modeling.slotcon.overlap_align import overlap_boxes
from ..views import BOXES, CROP_BOX, FLIPPED, IMAGE, INSTANCES
from .draw import draw_boxes, grid, id_colors, shade_cells, to_rgb

__all__ = ["GREEN", "RED", "YELLOW", "draw_pretext_views"]

GREEN, RED, YELLOW = (0, 200, 0), (230, 0, 0), (255, 220, 0)


def _flip_note(view):
    return " (flipped)" if bool(view.get(FLIPPED, False)) else ""


def _insloc(cfg, views, images):
    titles = ["query composite", "key composite"]
    for image, view in zip(images, views):
        draw_boxes(image, view[BOXES].tensor.tolist(), [GREEN])
    if cfg.INSLOC.BOX_AUG:
        jitter = AnchorBoxJitter(cfg)
        h, w = images[0].shape[:2]
        jittered = jitter([Boxes(views[0][BOXES].tensor.float())], [(h, w)])[0]
        draw_boxes(images[0], jittered.tensor.tolist(), [RED])
        titles[0] += " (red: jittered)"
    return titles


def _slotcon(views, images):
    crops = [torch.as_tensor(v[CROP_BOX]).float()[None] for v in views]
    flips = [torch.tensor([bool(v[FLIPPED])]) for v in views]
    titles = []
    for i, j in ((0, 1), (1, 0)):
        box, nonempty = overlap_boxes(crops[i], crops[j], flips[i])
        h, w = images[i].shape[:2]
        if bool(nonempty[0]):
            x0, y0, x1, y1 = box[0].tolist()
            draw_boxes(images[i], [[x0 * w, y0 * h, x1 * w - 1, y1 * h - 1]], [YELLOW])
        titles.append(f"view {i + 1}{_flip_note(views[i])}")
    return titles


def _loca(cfg, views, images, rng):
    stride = cfg.MODEL.VIT.PATCH_SIZE if cfg.MODEL.BACKBONE.NAME == "build_vitdet_backbone" else 16
    ref_grid = images[0].shape[0] // stride
    num = ref_grid * ref_grid
    keep = max(1, int(cfg.LOCA.REFERENCE_KEEP_RATIO * num))
    start = rng.randint(0, num - keep)
    kept = list(range(start, start + keep))
    colors = id_colors(num)
    shade_cells(images[0], ref_grid, kept, [colors[c] for c in kept])
    ref_box = torch.as_tensor(views[0][CROP_BOX]).float()[None]
    ref_flip = torch.tensor([bool(views[0][FLIPPED])])
    titles = [f"reference, {keep} kept"]
    for k, (view, image) in enumerate(zip(views[1:], images[1:]), 1):
        g = image.shape[0] // stride
        targets = patch_position_targets(
            torch.as_tensor(view[CROP_BOX]).float()[None], torch.tensor([bool(view[FLIPPED])]),
            (g, g), ref_box, ref_flip, (ref_grid, ref_grid),
        )[0].tolist()  # fmt: skip
        cells = [c for c, t in enumerate(targets) if start <= t < start + keep]
        shade_cells(image, g, cells, [colors[targets[c]] for c in cells])
        name = "query" if k == 1 else f"focal {k - 1}"
        titles.append(f"{name}: {len(cells)}{' F' if bool(view[FLIPPED]) else ''}")
    return titles


def _aligndet(views, images):
    titles = []
    ids = [v[INSTANCES].gt_ids.tolist() for v in views]
    colors = id_colors(max([max(i, default=0) for i in ids]) + 1)
    for k, (view, image) in enumerate(zip(views, images)):
        boxes = view[INSTANCES].gt_boxes.tensor.tolist()
        draw_boxes(image, boxes, [colors[i] for i in ids[k]], labels=[str(i) for i in ids[k]])
        titles.append(f"view {k + 1}: {len(boxes)} proposals")
    return titles


def draw_pretext_views(cfg, mapped: Dict, seed: int = 0) -> np.ndarray:
    """
    Args:
        cfg (CfgNode): the pretraining config the mapper was built from.
        mapped (dict): one mapper output, ``{"file_name", "views": [...]}``.
        seed (int): seeds what the picture draws itself (InsLoc's jitter, LOCA's kept run).

    Returns:
        ndarray: (H, W, 3) uint8 RGB grid of the views.
    """
    method = method_of(cfg.MODEL.META_ARCHITECTURE)
    views = mapped["views"]
    images = [to_rgb(v[IMAGE], cfg.INPUT.FORMAT) for v in views]
    torch.manual_seed(seed)
    if method == "insloc":
        titles = _insloc(cfg, views, images)
    elif method == "slotcon":
        titles = _slotcon(views, images)
    elif method == "loca":
        titles = _loca(cfg, views, images, random.Random(seed))
    elif method == "aligndet":
        titles = _aligndet(views, images)
    else:
        titles = [f"crop {k + 1}" for k in range(len(views))]
    return grid(images, titles, columns=min(len(images), 6))
