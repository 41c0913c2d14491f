"""Pictures of what the methods do: pretext views, proposals, pseudo-labels and detections."""

from .annotations import (
    TITLE_HEIGHT,
    draw_detections,
    draw_proposals,
    draw_pseudo_labels,
    read_coco_json,
)
from .draw import draw_boxes, grid, id_colors, shade_cells, to_rgb
from .views import draw_pretext_views

__all__ = [
    "TITLE_HEIGHT",
    "draw_boxes",
    "draw_detections",
    "draw_pretext_views",
    "draw_proposals",
    "draw_pseudo_labels",
    "grid",
    "id_colors",
    "read_coco_json",
    "shade_cells",
    "to_rgb",
]
