"""tools/visualize.py: boxes and cells drawn at the pixels and in the colours the data gives."""

import json
import os
import sys

import cv2
import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances

from detpre.visualization import TITLE_HEIGHT, draw_pretext_views, id_colors
from detpre.visualization.annotations import class_colors
from detpre.visualization.views import GREEN, YELLOW

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import visualize  # noqa: E402

PAD, TITLE = 4, 16  # draw.grid's defaults: tile k's image starts at (4 + k * (w + 4), 4 + 16)
GREY = (100, 100, 100)


def _rgb(path):
    return cv2.imread(path)[:, :, ::-1]


def _json(tmp_path, annotations, categories=({"id": 1, "name": "object"},)):
    image = np.full((60, 80, 3), GREY, np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), image)
    data = {
        "info": {"image_root": str(tmp_path)},
        "images": [{"id": 1, "file_name": "a.png", "height": 60, "width": 80}],
        "annotations": [dict(a, image_id=1, id=i + 1) for i, a in enumerate(annotations)],
        "categories": list(categories),
    }
    path = tmp_path / "boxes.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_proposals_are_drawn_at_their_pixels(tmp_path):
    path = _json(tmp_path, [{"bbox": [10, 20, 30, 15], "category_id": 1},
                            {"bbox": [50, 5, 20, 40], "category_id": 1}])  # fmt: skip
    args = ["proposals", "--json", path, "--output", str(tmp_path / "out")]
    (written,) = visualize.main(visualize.get_parser().parse_args(args))
    image = _rgb(written)
    assert image.shape == (60 + TITLE_HEIGHT, 80, 3)
    colors = id_colors(2)
    t = TITLE_HEIGHT
    assert tuple(image[t + 20, 25]) == colors[0]  # top edge of XYXY (10, 20, 40, 35)
    assert tuple(image[t + 35, 40]) == colors[0]  # its bottom-right corner
    assert tuple(image[t + 27, 25]) == GREY  # inside
    assert tuple(image[t + 30, 50]) == colors[1]  # left edge of (50, 5, 70, 45)
    assert tuple(image[t + 50, 5]) == GREY


def test_pseudo_labels_take_their_class_colour(tmp_path):
    categories = [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]
    anns = [{"bbox": [20, 20, 40, 30], "category_id": 7, "score": 0.9}]
    path = _json(tmp_path, anns, categories)
    args = ["pseudo-labels", "--json", path, "--output", str(tmp_path / "out")]
    (written,) = visualize.main(visualize.get_parser().parse_args(args))
    image = _rgb(written).astype(np.int32)
    assert image.shape == (60, 80, 3)
    dog = np.array(class_colors(2)[1]) * 255
    # Detectron2's Visualizer strokes boxes at alpha 0.5 over the image: the right edge (x = 60)
    # is the blend of the class colour and the grey; the far corner is untouched.
    blend = 0.5 * dog + 0.5 * np.array(GREY)
    edge = image[30:45, 58:63].reshape(-1, 3)
    assert np.abs(edge - blend).max(axis=1).min() <= 3
    assert tuple(image[5, 75]) == GREY


def _cfg(load_config, name, *opts):
    return load_config(f"configs/pretrain/{name}.yaml", *opts)


def _view(side=64, **keys):
    return {"image": torch.zeros(3, side, side, dtype=torch.uint8), **keys}


def test_slotcon_views_show_the_overlap(load_config):
    cfg = _cfg(load_config, "slotcon_R50_FPN_cpu_imagenet_sample")
    views = [_view(crop_box=torch.tensor([0.0, 0.0, 100.0, 100.0]), flipped=False),
             _view(crop_box=torch.tensor([50.0, 50.0, 150.0, 150.0]), flipped=False)]  # fmt: skip
    canvas = draw_pretext_views(cfg, {"views": views})
    x1, x2, y = PAD, PAD + 64 + PAD, PAD + TITLE
    # view 1 shares its bottom-right quarter (32..63), view 2 its top-left one (0..31)
    assert tuple(canvas[y + 32, x1 + 40]) == YELLOW and tuple(canvas[y + 40, x1 + 63]) == YELLOW
    assert tuple(canvas[y + 10, x1 + 10]) == (0, 0, 0)
    assert tuple(canvas[y + 0, x2 + 10]) == YELLOW and tuple(canvas[y + 10, x2 + 31]) == YELLOW
    assert tuple(canvas[y + 40, x2 + 40]) == (0, 0, 0)


def test_insloc_and_aligndet_views_draw_their_boxes(load_config):
    cfg = _cfg(load_config, "insloc_R50_FPN_cpu_imagenet_sample", "INSLOC.BOX_AUG", "False")
    views = [_view(boxes=Boxes(torch.tensor([[8.0, 8.0, 40.0, 40.0]]))) for _ in range(2)]
    canvas = draw_pretext_views(cfg, {"views": views})
    for x in (PAD, PAD + 64 + PAD):
        assert tuple(canvas[PAD + TITLE + 8, x + 20]) == GREEN
        assert tuple(canvas[PAD + TITLE + 20, x + 20]) == (0, 0, 0)
    cfg = _cfg(load_config, "aligndet_R50_FPN_cpu_coco")
    inst = Instances((64, 64), gt_boxes=Boxes(torch.tensor([[5.0, 5.0, 20.0, 20.0],
                                                            [30.0, 30.0, 50.0, 50.0]])),
                     gt_ids=torch.tensor([0, 1]))  # fmt: skip
    canvas = draw_pretext_views(cfg, {"views": [_view(instances=inst), _view(instances=inst)]})
    colors = id_colors(2)
    assert tuple(canvas[PAD + TITLE + 12, PAD + 5]) == colors[0]
    assert tuple(canvas[PAD + TITLE + 40, PAD + 50]) == colors[1]


def test_loca_query_cells_take_the_colour_of_their_kept_target(load_config):
    """A query cut from the reference's own crop, unflipped: each query cell's target is the
    reference cell under it, so both are shaded alike exactly on the kept run."""
    cfg = _cfg(load_config, "loca_R50_FPN_cpu_imagenet_sample")
    box = torch.tensor([0.0, 0.0, 64.0, 64.0])
    views = [_view(crop_box=box, flipped=False), _view(crop_box=box, flipped=False)]
    canvas = draw_pretext_views(cfg, {"views": views}, seed=3).astype(np.int32)
    y, ref_x, query_x = PAD + TITLE, PAD, PAD + 64 + PAD
    shaded = []
    for cell in range(16):  # a 4 x 4 grid at stride 16
        i, j = divmod(cell, 4)
        ref = canvas[y + 16 * i + 8, ref_x + 16 * j + 8]
        query = canvas[y + 16 * i + 8, query_x + 16 * j + 8]
        assert (ref == query).all(), cell
        shaded.append(bool(ref.any()))
    kept = max(1, int(cfg.LOCA.REFERENCE_KEEP_RATIO * 16))
    assert sum(shaded) == kept
    first = shaded.index(True)
    assert shaded[first : first + kept] == [True] * kept  # one contiguous run


def test_views_and_detections_from_the_tools(tmp_path, repo_root):
    out = tmp_path / "views"
    args = ["views", "--config-file", os.path.join(repo_root, "configs/pretrain/"
            "moco_v2_R50_FPN_cpu_imagenet_sample.yaml"), "--num-images", "2", "--output", str(out)]  # fmt: skip
    written = visualize.main(visualize.get_parser().parse_args(args))
    assert len(written) == 2 and all(_rgb(p).shape[0] > 64 for p in written)
    args = ["detections", "--config-file", os.path.join(repo_root, "configs/finetune/"
            "faster_rcnn_R50_FPN_cpu_bccd.yaml"), "--weights", "", "--num-images", "1",
            "--threshold", "0.0", "--output", str(tmp_path / "det"), "MODEL.DEVICE", "cpu"]  # fmt: skip
    (written,) = visualize.main(visualize.get_parser().parse_args(args))
    from detectron2.data import DatasetCatalog

    first = DatasetCatalog.get("bccd_voc_test")[0]
    assert _rgb(written).shape[:2] == (first["height"], first["width"])


def test_bad_json_names_the_file(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text("{")
    with pytest.raises(json.JSONDecodeError):
        visualize.main(visualize.get_parser().parse_args(
            ["proposals", "--json", str(path), "--output", str(tmp_path)]))  # fmt: skip
