import json
import math
import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from pycocotools.coco import COCO
from selectivesearch import selectivesearch as ss

import detpre  # noqa: F401  registers the datasets
from detpre.config import add_detpre_config
from detpre.data import proposals as P
from detpre.data.datasets import register_from_config, register_image_folder
from detpre.data.proposals import generate as G

COCO_VAL = "coco_tiny/val2017"
# OpenCV's selective search (``--backend opencv``) is in opencv-contrib's cv2.ximgproc; detpre
# installs beside any OpenCV build (our GPU machines have opencv-python-headless).
needs_ximgproc = pytest.mark.skipif(
    not hasattr(cv2, "ximgproc"), reason="this cv2 is not opencv-contrib's: no cv2.ximgproc"
)


def _reference_keep(boxes, image_size, min_size, max_ratio, area_range):
    """SoCo's filter_ratio_size, box by box in plain Python."""
    height, width = image_size
    keep = []
    for x1, y1, x2, y2 in boxes.tolist():
        w, h = x2 - x1, y2 - y1
        ok = w >= min_size and h >= min_size
        if max_ratio is not None:
            ok = ok and w > 0 and h > 0 and 1 / max_ratio <= w / h <= max_ratio
        side = math.sqrt(w * h / (height * width))
        keep.append(ok and area_range[0] <= side <= area_range[1])
    return keep


def _reference_nms(boxes, thresh):
    """Greedy NMS over boxes in rank order: a box goes when it overlaps a kept one by > thresh."""
    kept = []
    for i, (x1, y1, x2, y2) in enumerate(boxes.tolist()):
        for j in kept:
            a1, b1, a2, b2 = boxes[j].tolist()
            inter = max(0, min(x2, a2) - max(x1, a1)) * max(0, min(y2, b2) - max(y1, b1))
            union = (x2 - x1) * (y2 - y1) + (a2 - a1) * (b2 - b1) - inter
            if inter / union > thresh:
                break
        else:
            kept.append(i)
    return kept


def _xywh(*boxes):
    return torch.tensor([[x, y, x + w, y + h] for x, y, w, h in boxes], dtype=torch.float32)


def _random_boxes(n, image_size, seed):
    rng = np.random.default_rng(seed)
    height, width = image_size
    xy = rng.uniform(0, [width, height], size=(n, 2))
    wh = rng.uniform(1, [width, height], size=(n, 2))
    boxes = np.concatenate([xy, np.minimum(xy + wh, [width, height])], axis=1)
    return torch.tensor(boxes, dtype=torch.float32)


def test_min_size_aspect_ratio_and_area_filters_on_hand_made_boxes():
    size = (128, 128)  # area bounds below are exact: sqrt(64*64 / 128**2) = 0.5, 96x96 -> 0.75
    no_ratio = dict(max_aspect_ratio=None, area_range=(0.0, 1.0))
    boxes = _xywh((0, 0, 31.9, 40), (0, 0, 32, 32), (10, 10, 40, 50), (5, 5, 50, 31))
    expected = [False, True, True, False]
    assert P.proposal_keep_mask(boxes, size, min_size=32, **no_ratio).tolist() == expected

    boxes = _xywh((0, 0, 32, 96), (0, 0, 32, 97), (0, 0, 96, 32), (0, 0, 100, 33), (0, 0, 0, 10))
    expected = [True, False, True, False, False]
    mask = P.proposal_keep_mask(boxes, size, min_size=0, max_aspect_ratio=3, area_range=(0, 1))
    assert mask.tolist() == expected

    boxes = _xywh((0, 0, 64, 64), (0, 0, 63, 64), (9, 9, 96, 96), (0, 0, 97, 96), (1, 2, 80, 80))
    expected = [True, False, True, False, True]
    mask = P.proposal_keep_mask(
        boxes, size, min_size=0, max_aspect_ratio=None, area_range=(0.5, 0.75)
    )
    assert mask.tolist() == expected


@pytest.mark.parametrize("preset", sorted(P.PRESETS))
def test_keep_mask_matches_a_box_by_box_computation(preset):
    size = (480, 640)
    boxes = _random_boxes(500, size, seed=len(preset))
    p = P.PRESETS[preset]
    mask = P.proposal_keep_mask(
        boxes,
        size,
        min_size=p["min_size"],
        max_aspect_ratio=p["max_aspect_ratio"],
        area_range=p["area_range"],
    )
    expected = _reference_keep(boxes, size, p["min_size"], p["max_aspect_ratio"], p["area_range"])
    assert mask.tolist() == expected
    assert 20 < sum(expected) < 480  # the random boxes exercise both outcomes


def test_nms_keeps_the_earlier_ranked_box_and_topk_the_first():
    a, b, c = (0, 0, 100, 100), (5, 5, 100, 100), (200, 200, 60, 60)
    iou = 95 * 95 / (2 * 100 * 100 - 95 * 95)
    assert 0.5 < iou < 0.9
    kwargs = dict(min_size=0, max_aspect_ratio=None, area_range=(0.0, 1.0))
    for boxes in (_xywh(a, b, c), _xywh(b, a, c)):
        assert P.filter_proposals(boxes, (300, 300), nms_thresh=0.5, **kwargs).tolist() == [0, 2]
        assert P.filter_proposals(boxes, (300, 300), nms_thresh=0.9, **kwargs).tolist() == [0, 1, 2]
        assert P.filter_proposals(boxes, (300, 300), nms_thresh=None, **kwargs).tolist() == [
            0,
            1,
            2,
        ]

    size = (480, 640)
    boxes = _random_boxes(300, size, seed=1)
    kwargs = dict(min_size=32, max_aspect_ratio=3.0, area_range=(0.1, 0.8))
    passed = torch.tensor(_reference_keep(boxes, size, 32, 3.0, (0.1, 0.8))).nonzero().flatten()
    expected = passed[_reference_nms(boxes[passed], 0.5)].tolist()
    assert P.filter_proposals(boxes, size, nms_thresh=0.5, **kwargs).tolist() == expected
    assert len(expected) > 10
    topk = P.filter_proposals(boxes, size, nms_thresh=0.5, topk=7, **kwargs)
    assert topk.tolist() == expected[:7]


@needs_ximgproc
def test_selective_search_maps_boxes_back_to_the_original_image(datasets_root, one_thread):
    path = os.path.join(
        datasets_root, COCO_VAL, sorted(os.listdir(os.path.join(datasets_root, COCO_VAL)))[0]
    )
    small = cv2.resize(cv2.imread(path), (96, 72), interpolation=cv2.INTER_AREA)
    boxes = P.opencv_selective_search(small, resize=0, seed=3)
    # The 2x nearest upscale fits 96 px back to the same pixels (INTER_AREA averages equal pixels):
    # the search sees the same image, and its boxes come back at twice the coordinates.
    big = cv2.resize(small, (192, 144), interpolation=cv2.INTER_NEAREST)
    big_boxes = P.opencv_selective_search(big, resize=96, seed=3)
    assert torch.equal(big_boxes, 2 * boxes)
    assert len(boxes) > 10
    assert (
        (big_boxes >= 0).all() and (big_boxes[:, 2] <= 192).all() and (big_boxes[:, 3] <= 144).all()
    )
    assert [0, 0, 192, 144] in big_boxes.tolist()  # the last merge: the whole image

    again, other_seed = P.opencv_selective_search(
        big, resize=96, seed=3
    ), P.opencv_selective_search(big, resize=96, seed=4)
    assert torch.equal(again, big_boxes)
    assert sorted(other_seed.tolist()) == sorted(big_boxes.tolist())


def _cfg(**register):
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.merge_from_list(
        [x for key, entries in register.items() for x in (f"DATASETS.{key}", repr(entries))]
    )
    return cfg


def _check_coco(path, dataset_dicts, image_root, params):
    coco = COCO(path)
    # AlignDet's dataset config: classes=['selective_search'].
    assert coco.getCatIds() == [1] and coco.loadCats(1)[0]["name"] == "selective_search"
    assert sorted(coco.getImgIds()) == sorted(d["image_id"] for d in dataset_dicts)
    by_id = {d["image_id"]: d for d in dataset_dicts}
    lo, hi = params["area_range"]
    for image in coco.loadImgs(coco.getImgIds()):
        d = by_id[image["id"]]
        assert os.path.join(image_root, image["file_name"]) == d["file_name"]
        assert (image["height"], image["width"]) == (d["height"], d["width"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=image["id"]))
        assert anns, image
        for a in anns:
            x, y, w, h = a["bbox"]
            assert (
                x >= 0
                and y >= 0
                and x + w <= image["width"] + 1e-6
                and y + h <= image["height"] + 1e-6
            )
            assert (
                min(w, h) >= params["min_size"]
                and max(w / h, h / w) <= params["max_aspect_ratio"] + 1e-3
            )
            assert lo <= math.sqrt(w * h / (image["width"] * image["height"])) <= hi + 1e-3
            assert a["area"] == pytest.approx(w * h, abs=0.01)
            assert a["iscrowd"] == 0 and a["category_id"] == 1
    ann_ids = coco.getAnnIds()
    assert len(set(ann_ids)) == len(ann_ids)
    return coco


def test_proposal_json_loads_registers_and_resumes(tmp_path, new_names, detpre_logs, monkeypatch):
    dicts = DatasetCatalog.get("coco_tiny_val")[:5]
    image_root = MetadataCatalog.get("coco_tiny_val").image_root
    output = str(tmp_path / "props" / "val.json")
    params = dict(P.PRESETS["aligndet"], resize=128)
    summary = P.generate_proposals("coco_tiny_val", output, workers=2, max_images=3, **params)
    assert (summary["processed"], summary["reused"], summary["skipped"]) == (3, 0, [])
    assert summary["image_root"] == image_root
    first = _check_coco(output, dicts[:3], image_root, params)

    # An interrupted write leaves half a line: it is dropped, the complete records are reused.
    partial = str(tmp_path / "props" / "val.partial.jsonl")
    with open(partial, "a") as f:
        f.write('{"id": 12, "height": 4')
    calls = []
    search = P.propose_image
    monkeypatch.setattr(G, "propose_image", lambda f, **kw: calls.append(f) or search(f, **kw))
    summary = P.generate_proposals("coco_tiny_val", output, workers=1, max_images=5, **params)
    assert calls == [d["file_name"] for d in dicts[3:]]
    assert (summary["processed"], summary["reused"]) == (2, 3)
    assert "Reusing 3 images" in detpre_logs.text and "incomplete last line" in detpre_logs.text
    second = _check_coco(output, dicts, image_root, params)
    for image_id in first.getImgIds():
        boxes = [a["bbox"] for a in first.loadAnns(first.getAnnIds(imgIds=image_id))]
        assert boxes == [a["bbox"] for a in second.loadAnns(second.getAnnIds(imgIds=image_id))]

    name = new_names("proposals")
    register_from_config(_cfg(REGISTER_COCO=[(name, output, image_root)]))
    loaded = DatasetCatalog.get(name)
    assert [d["file_name"] for d in loaded] == [d["file_name"] for d in dicts]
    assert sum(len(d["annotations"]) for d in loaded) == len(second.getAnnIds())
    assert {a["category_id"] for d in loaded for a in d["annotations"]} == {0}
    assert MetadataCatalog.get(name).thing_classes == ["selective_search"]

    with pytest.raises(ValueError, match="val.partial.jsonl"):
        P.generate_proposals(
            "coco_tiny_val", output, workers=1, max_images=5, **dict(params, nms_thresh=0.3)
        )


def test_unreadable_image_is_reported_and_skipped(tmp_path, datasets_root, new_names, detpre_logs):
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    sources = sorted(os.listdir(os.path.join(datasets_root, COCO_VAL)))[:2]
    for i, src in enumerate(sources):
        image = cv2.imread(os.path.join(datasets_root, COCO_VAL, src))
        cv2.imwrite(
            str(folder / ("sub" if i else "") / f"good{i}.jpg"), cv2.resize(image, (160, 120))
        )
    (folder / "bad.jpg").write_bytes(np.random.default_rng(0).bytes(3000))
    name = new_names("folder")
    register_image_folder(name, str(folder))

    output = str(tmp_path / "folder.json")
    params = dict(
        resize=128, min_size=16, max_aspect_ratio=3.0, area_range=(0.0, 0.8), nms_thresh=0.5
    )
    summary = P.generate_proposals(name, output, workers=1, **params)
    assert len(summary["skipped"]) == 1 and str(folder / "bad.jpg") in summary["skipped"][0]
    assert f"Skipping an unreadable image: {folder / 'bad.jpg'}" in detpre_logs.text
    with open(output) as f:
        coco = json.load(f)
    assert coco["info"]["skipped_images"] == summary["skipped"]
    expected = {P.stable_image_id(rel): rel for rel in ("good0.jpg", "sub/good1.jpg")}
    assert {i["id"]: i["dataset_image_id"] for i in coco["images"]} == expected
    assert {i["id"]: i["file_name"] for i in coco["images"]} == expected
    assert {a["image_id"] for a in coco["annotations"]} == set(expected)


@pytest.mark.parametrize(
    "option,value",
    [("area_range", (0.8, 0.3)), ("nms_thresh", 0.0), ("topk", 0), ("max_aspect_ratio", 0.5)],
)
def test_invalid_options_are_named(tmp_path, option, value):
    with pytest.raises(ValueError, match=f"{option}="):
        P.generate_proposals("coco_tiny_val", str(tmp_path / "x.json"), **{option: value})
    with pytest.raises(ValueError, match="backend 'nope'"):
        P.generate_proposals("coco_tiny_val", str(tmp_path / "x.json"), backend="nope")
    with pytest.raises(ValueError, match="no option"):
        P.generate_proposals("coco_tiny_val", str(tmp_path / "x.json"), search={"sigma2": 1})
    assert not os.listdir(tmp_path)


def _small_val_image(datasets_root):
    path = os.path.join(
        datasets_root, COCO_VAL, sorted(os.listdir(os.path.join(datasets_root, COCO_VAL)))[0]
    )
    return cv2.resize(cv2.imread(path), (160, 120), interpolation=cv2.INTER_AREA)


# Measured by running SoCo's own selective_search/selective_search.py (hologerry/SoCo, scale 300,
# sigma 0.9, min_size 100) and its filter_ratio_size (ratio 3, size 0.0-0.8) on the first
# coco_tiny val image resized to 160 x 120 (INTER_AREA), RGB: its 36 regions, filtered, as its
# XYWH rects, duplicates included, in its order.
SOCO_FILTERED_RECTS = [
    (0, 0, 82, 33),
    (39, 15, 120, 66),
    (0, 0, 82, 64),
    (0, 64, 45, 55),
    (0, 0, 82, 64),
    (39, 15, 120, 66),
    (56, 57, 50, 40),
    (39, 15, 120, 66),
]


def test_soco_backend_reproduces_socos_generator(datasets_root, one_thread):
    image = _small_val_image(datasets_root)
    boxes = P.soco_selective_search(image)
    assert len(boxes) == 36  # SoCo's region count on this image
    assert boxes[-1].tolist() == [0, 0, 159, 119]  # the last merge: SoCo's whole-image rect
    filters = {k: v for k, v in P.PRESETS["aligndet"].items() if k != "backend"}
    keep = P.filter_proposals(boxes, (120, 160), **filters)
    xywh = [(x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes[keep].int().tolist()]
    assert xywh == SOCO_FILTERED_RECTS
    # The package's own texture histogram (LBP binned over [0, 1]) groups otherwise; the swap
    # is undone after each search.
    _, regions = ss.selective_search(image[:, :, ::-1].copy(), scale=300, sigma=0.9, min_size=100)
    assert [r["rect"] for r in regions] != [
        (x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in boxes.int().tolist()
    ]
    # Searched at half size, boxes come back in the image's coordinates.
    half = P.soco_selective_search(image, resize=80)
    assert (half[:, 2] <= 160).all() and (half[:, 3] <= 120).all() and len(half) < len(boxes)


@needs_ximgproc
def test_progress_is_logged_with_rate_and_eta(tmp_path, detpre_logs):
    P.generate_proposals(
        "coco_tiny_val",
        str(tmp_path / "p.json"),
        backend="opencv",
        resize=96,
        workers=1,
        max_images=2,
        progress_period=0,
    )
    lines = [line for line in detpre_logs.text.splitlines() if "selective search:" in line]
    assert len(lines) == 2
    assert "1/2 images" in lines[0] and "2/2 images" in lines[1] and "ETA 0:00:00" in lines[1]
    assert "img/s" in lines[0]


def test_a_released_proposal_file_registers(tmp_path, datasets_root, new_names):
    """A proposals json made elsewhere in the format AlignDet's released file has (COCO as
    mmdet's CocoDataset reads it: images with id / file_name / height / width, annotations with
    id, XYWH bbox, area, one category named 'selective_search'; no detpre info) is a dataset."""
    image_root = os.path.join(datasets_root, COCO_VAL)
    files = sorted(os.listdir(image_root))[:2]
    released = {
        "images": [
            {"id": 7, "file_name": files[0], "height": 427, "width": 640},
            {"id": 9, "file_name": files[1], "height": 480, "width": 640},
        ],
        "annotations": [
            {"id": 1, "image_id": 7, "bbox": [10, 20, 100, 50], "area": 5000, "iscrowd": 0,
             "category_id": 1},
            {"id": 2, "image_id": 7, "bbox": [0, 0, 639, 426], "area": 272214, "iscrowd": 0,
             "category_id": 1},
            {"id": 3, "image_id": 9, "bbox": [5.5, 6, 40, 33], "area": 1320, "iscrowd": 0,
             "category_id": 1},
        ],
        "categories": [{"id": 1, "name": "selective_search"}],
    }  # fmt: skip
    path = tmp_path / "train2017_ratio3size0008@0.5.json"
    path.write_text(json.dumps(released))
    name = new_names("released")
    register_from_config(_cfg(REGISTER_COCO=[(name, str(path), image_root)]))
    dicts = DatasetCatalog.get(name)
    assert [d["file_name"] for d in dicts] == [os.path.join(image_root, f) for f in files]
    boxes = {d["image_id"]: [a["bbox"] for a in d["annotations"]] for d in dicts}
    assert boxes == {7: [[10, 20, 100, 50], [0, 0, 639, 426]], 9: [[5.5, 6, 40, 33]]}
    assert {a["category_id"] for d in dicts for a in d["annotations"]} == {0}
