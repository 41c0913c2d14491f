"""Pseudo-labelling: COCO json contents, category ids, threshold, masks, background images,
unreadable images, resume, sharding across two processes, and a real Mask R-CNN teacher."""

import json
import os

import numpy as np
import pycocotools.mask as mask_util
import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import register_coco_instances
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from PIL import Image
from pycocotools.coco import COCO

from detpre.checkpoint import DetpreCheckpointer
from detpre.data.datasets import register_image_folder
from detpre.engine import get_detpre_cfg, launch
from detpre.selftrain import (
    PseudoLabelMapper,
    build_teacher,
    coco_categories,
    labeller_workers,
    pseudo_label_dataset,
    run_pseudo_labelling,
)

# What the stub teacher predicts on every image whose id is not a multiple of 3 (those get nothing):
# scores, contiguous classes and boxes as fractions of the image (x0, y0, x1, y1).
SCORES = [0.9, 0.5, 0.49, 0.1]
CLASSES = [0, 5, 10, 79]
BOXES = [(0.1, 0.1, 0.5, 0.6), (0.5, 0.2, 0.9, 0.9), (0.0, 0.0, 1.0, 1.0), (0.3, 0.3, 0.4, 0.4)]
NUM_IMAGES = 5


def stub_predictions(height, width):
    """Instances at the original image size: boxes on integer pixels, masks filling them."""
    boxes = torch.tensor(BOXES) * torch.tensor([width, height, width, height])
    boxes = boxes.round()
    masks = torch.zeros(len(BOXES), height, width, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes.int().tolist()):
        masks[i, y0:y1, x0:x1] = True
    inst = Instances((height, width))
    inst.pred_boxes = Boxes(boxes)
    inst.scores = torch.tensor(SCORES)
    inst.pred_classes = torch.tensor(CLASSES)
    inst.pred_masks = masks
    return inst


class StubTeacher(torch.nn.Module):
    """A teacher with known outputs; records the batches it sees. ``fail_after`` batches, it
    raises (a run killed mid-way)."""

    def __init__(self, fail_after=None):
        super().__init__()
        self.batches = []
        self.fail_after = fail_after

    def forward(self, batched_inputs):
        if self.fail_after is not None and len(self.batches) == self.fail_after:
            raise KeyboardInterrupt("killed")
        self.batches.append([d["file_name"] for d in batched_inputs])
        out = []
        for d in batched_inputs:
            inst = stub_predictions(d["height"], d["width"])
            out.append({"instances": inst if d["image_id"] % 3 else inst[:0]})
        return out


@pytest.fixture
def image_folder(datasets_root, tmp_path, new_names):
    """A registered folder: NUM_IMAGES coco_tiny_val images (links) and one corrupt file."""
    folder = tmp_path / "images"
    folder.mkdir()
    src = os.path.join(datasets_root, "coco_tiny", "val2017")
    for name in sorted(os.listdir(src))[:NUM_IMAGES]:
        os.symlink(os.path.join(src, name), folder / name)
    (folder / "zz_broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    name = new_names("unlabeled")
    register_image_folder(name, str(folder))
    return name, folder


def labeller_cfg(unlabeled, *opts):
    cfg = get_detpre_cfg()
    cfg.merge_from_list(
        [
            "DATASETS.TRAIN",
            "('coco_tiny_train',)",
            "SELF_TRAIN.UNLABELED_DATASETS",
            f"('{unlabeled}',)",
        ]
        + ["INPUT.MIN_SIZE_TEST", "64", "INPUT.MAX_SIZE_TEST", "96", "DATALOADER.NUM_WORKERS", "0"]
        + ["SELF_TRAIN.PSEUDO_LABEL.BATCH_SIZE", "2", *opts]
    )
    return cfg


def test_json_loads_with_pycocotools_and_maps_categories_back(
    image_folder, tmp_path, new_names, detpre_logs
):
    name, folder = image_folder
    teacher = StubTeacher()
    index = run_pseudo_labelling(labeller_cfg(name), teacher, str(tmp_path / "out"))
    entry = index[name]
    assert entry["num_images"] == NUM_IMAGES and entry["num_skipped"] == 1
    assert json.loads((tmp_path / "out" / "index.json").read_text()) == index
    assert max(len(b) for b in teacher.batches) == 2  # batched inference

    coco = COCO(entry["json_file"])
    meta = MetadataCatalog.get("coco_tiny_train")
    assert sorted(coco.getCatIds()) == sorted(meta.thing_dataset_id_to_contiguous_id)
    assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(meta.thing_classes)
    images = coco.loadImgs(coco.getImgIds())
    assert sorted(im["file_name"] for im in images) == sorted(os.listdir(folder))[:NUM_IMAGES]
    for im in images:
        w, h = Image.open(folder / im["file_name"]).size
        assert (im["width"], im["height"]) == (w, h)
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[im["id"]]))
        if im["id"] % 3 == 0:
            assert anns == []  # kept as a background image
            continue
        # Scores 0.9 and 0.5 pass the 0.5 threshold; 0.49 and 0.1 do not.
        assert [a["score"] for a in anns] == pytest.approx(SCORES[:2])
        expected = stub_predictions(h, w)
        for k, a in enumerate(anns):
            assert meta.thing_dataset_id_to_contiguous_id[a["category_id"]] == CLASSES[k]
            x0, y0, x1, y1 = expected.pred_boxes.tensor[k].tolist()
            assert a["bbox"] == pytest.approx([x0, y0, x1 - x0, y1 - y0])
            mask = coco.annToMask(a)
            np.testing.assert_array_equal(mask, expected.pred_masks[k].numpy())
            assert a["area"] == mask.sum() and a["iscrowd"] == 0

    info = json.loads(open(entry["json_file"]).read())["info"]
    assert [os.path.basename(s["file_name"]) for s in info["skipped_images"]] == ["zz_broken.jpg"]
    assert info["score_thresh"] == 0.5 and info["image_root"] == str(folder)
    assert "Skipping unreadable image" in detpre_logs.text and "zz_broken.jpg" in detpre_logs.text

    # Registered as COCO json, Detectron2 maps the ids back to the teacher's contiguous classes.
    pl = new_names("pl")
    register_coco_instances(pl, {}, entry["json_file"], info["image_root"])
    dicts = DatasetCatalog.get(pl)
    assert len(dicts) == NUM_IMAGES and all(os.path.isfile(d["file_name"]) for d in dicts)
    got = [[a["category_id"] for a in d["annotations"]] for d in dicts]
    assert got == [CLASSES[:2] if d["image_id"] % 3 else [] for d in dicts]


@pytest.mark.parametrize("thresh,expected", [(0.0, 4), (0.49, 3), (0.5, 2), (0.95, 0)])
def test_score_threshold_honoured(image_folder, tmp_path, thresh, expected):
    name, _ = image_folder
    cfg = labeller_cfg(name, "SELF_TRAIN.PSEUDO_LABEL.SCORE_THRESH", str(thresh))
    index = run_pseudo_labelling(cfg, StubTeacher(), str(tmp_path / "out"))
    coco = COCO(index[name]["json_file"])
    for image_id in coco.getImgIds():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id]))
        assert len(anns) == (expected if image_id % 3 else 0)
        assert all(a["score"] >= thresh for a in anns)


def test_coco_categories_without_id_mapping():
    categories, to_id = coco_categories(MetadataCatalog.get("bccd_voc_train"))
    assert categories == [
        {"id": 1, "name": "RBC"},
        {"id": 2, "name": "WBC"},
        {"id": 3, "name": "Platelets"},
    ]
    assert to_id == {0: 1, 1: 2, 2: 3}


def _labeller_args(name, tmp_path):
    cfg = labeller_cfg(name)
    categories, to_id = coco_categories(MetadataCatalog.get("coco_tiny_train"))
    dicts = [
        {"file_name": d["file_name"], "image_id": i + 1}
        for i, d in enumerate(DatasetCatalog.get(name))
    ]
    kwargs = dict(
        mapper=PseudoLabelMapper(cfg, is_train=False),
        categories=categories,
        to_dataset_id=to_id,
        image_root=str(tmp_path / "images"),
        batch_size=1,
        chunk_size=1,
    )
    return dicts, kwargs


def test_killed_run_resumes_and_skips_done_images(image_folder, tmp_path):
    name, _ = image_folder
    dicts, kwargs = _labeller_args(name, tmp_path)
    out = str(tmp_path / "killed.json")
    with pytest.raises(KeyboardInterrupt):
        pseudo_label_dataset(StubTeacher(fail_after=2), dicts, out, **kwargs)
    assert not os.path.exists(out)
    parts = os.listdir(out + ".parts")
    assert len(parts) == 1
    # The kill may also cut a line in the middle: that image is labelled again.
    with open(os.path.join(out + ".parts", parts[0]), "a") as f:
        f.write('{"file_name": "' + dicts[4]["file_name"] + '", "image": {"id"')
    resumed = StubTeacher()
    pseudo_label_dataset(resumed, dicts, out, **kwargs)
    done_first = {f for b in resumed.batches for f in b}
    # 2 images labelled before the kill (the broken file, sorted last, was never reached).
    assert len(done_first) == len(dicts) - 1 - 2
    assert not os.path.exists(out + ".parts")

    fresh = str(tmp_path / "fresh.json")
    pseudo_label_dataset(StubTeacher(), dicts, fresh, **kwargs)
    a, b = json.loads(open(out).read()), json.loads(open(fresh).read())
    for key in ("images", "annotations", "categories"):
        assert a[key] == b[key]
    assert a["info"]["skipped_images"] == b["info"]["skipped_images"] != []
    # A finished json is not redone.
    again = StubTeacher()
    pseudo_label_dataset(again, dicts, out, **kwargs)
    assert again.batches == []


def _shard_worker(folder, out_dir):
    from detectron2.utils import comm

    register_image_folder("unlabeled_shards", folder)
    teacher = StubTeacher()
    run_pseudo_labelling(labeller_cfg("unlabeled_shards"), teacher, out_dir)
    with open(os.path.join(out_dir, f"seen{comm.get_rank()}.json"), "w") as f:
        json.dump([f for b in teacher.batches for f in b], f)


def test_two_processes_label_disjoint_shards(image_folder, tmp_path):
    _, folder = image_folder
    out = tmp_path / "out"
    launch(_shard_worker, 2, dist_url="auto", args=(str(folder), str(out)))
    seen = [json.loads((out / f"seen{r}.json").read_text()) for r in (0, 1)]
    assert seen[0] and seen[1] and not set(seen[0]) & set(seen[1])
    coco = COCO(str(out / "unlabeled_shards.json"))
    assert len(coco.getImgIds()) == NUM_IMAGES
    assert {os.path.join(str(folder), im["file_name"]) for im in coco.dataset["images"]} == set(
        seen[0] + seen[1]
    )


def test_real_mask_rcnn_teacher(repo_root, datasets_root, tmp_path, one_thread):
    cfg = get_detpre_cfg()
    cfg.merge_from_file(
        os.path.join(repo_root, "configs", "selftrain", "mask_rcnn_R50_FPN_cpu_coco_tiny.yaml")
    )
    cfg.merge_from_list(
        [
            "SELF_TRAIN.UNLABELED_DATASETS",
            "('imagenet_sample_unlabeled',)",
            "TEST.DETECTIONS_PER_IMAGE",
            "5",
        ]
        + ["SELF_TRAIN.PSEUDO_LABEL.MAX_IMAGES", "2", "SELF_TRAIN.PSEUDO_LABEL.SCORE_THRESH", "0.2"]
        + [
            "INPUT.MIN_SIZE_TEST",
            "96",
            "INPUT.MAX_SIZE_TEST",
            "128",
            "MODEL.RPN.POST_NMS_TOPK_TEST",
            "20",
        ]
        + ["DATALOADER.NUM_WORKERS", "0", "MODEL.ROI_HEADS.SCORE_THRESH_TEST", "0.0"]
    )
    torch.manual_seed(0)
    weights = str(tmp_path / "teacher.pth")
    DetpreCheckpointer(build_model(cfg), str(tmp_path)).save("teacher")
    cfg.MODEL.WEIGHTS = weights
    teacher = build_teacher(cfg)
    assert not teacher.training
    assert teacher.roi_heads.box_predictor.test_score_thresh == 0.2
    # The CPU config labels in bfloat16: the box head's matrix products really run in it.
    assert cfg.SELF_TRAIN.PSEUDO_LABEL.PRECISION == "bfloat16"
    dtypes = []
    teacher.roi_heads.box_head.fc1.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))
    index = run_pseudo_labelling(cfg, teacher, str(tmp_path / "out"))
    assert dtypes and set(dtypes) == {torch.bfloat16}
    coco = COCO(index["imagenet_sample_unlabeled"]["json_file"])
    assert len(coco.getImgIds()) == 2
    assert coco.dataset["info"]["teacher"] == weights
    assert coco.dataset["info"]["precision"] == "bfloat16"
    # The random heads score some boxes above 0.2 (seeded): masks are RLE of the image size.
    assert 0 < len(coco.dataset["annotations"]) <= 2 * 5
    for ann in coco.dataset["annotations"]:
        image = coco.imgs[ann["image_id"]]
        assert ann["score"] >= 0.2
        assert mask_util.decode(ann["segmentation"]).shape == (image["height"], image["width"])


class AutocastProbe(torch.nn.Module):
    """A stub teacher that records, per batch, the CPU autocast dtype it ran under (None: off)."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, batched_inputs):
        on = torch.is_autocast_enabled("cpu")
        self.seen.append(torch.get_autocast_dtype("cpu") if on else None)
        return [{"instances": stub_predictions(d["height"], d["width"])} for d in batched_inputs]


@pytest.mark.parametrize(
    "precision, dtype",
    [("float32", None), ("bfloat16", torch.bfloat16), ("float16", torch.float16)],
)
def test_precision_runs_the_teacher_under_autocast(image_folder, tmp_path, precision, dtype):
    name, _ = image_folder
    probe = AutocastProbe()
    cfg = labeller_cfg(name, "SELF_TRAIN.PSEUDO_LABEL.PRECISION", precision)
    index = run_pseudo_labelling(cfg, probe, str(tmp_path / "out"))
    assert len(probe.seen) == -(-NUM_IMAGES // 2) and set(probe.seen) == {dtype}
    assert COCO(index[name]["json_file"]).dataset["info"]["precision"] == precision


def test_bad_precision_fails_naming_the_key(image_folder, tmp_path):
    name, _ = image_folder
    cfg = labeller_cfg(name, "SELF_TRAIN.PSEUDO_LABEL.PRECISION", "fp8")
    match = r"SELF_TRAIN\.PSEUDO_LABEL\.PRECISION .*'fp8'"
    with pytest.raises(ValueError, match=match):
        build_teacher(cfg)  # before a model is built or weights are read
    with pytest.raises(ValueError, match=match):
        run_pseudo_labelling(cfg, StubTeacher(), str(tmp_path / "out"))
    assert not (tmp_path / "out" / f"{name}.json").exists()


def test_channels_last_teacher_computes_the_same_features(repo_root, tmp_path, one_thread):
    cfg = get_detpre_cfg()
    cfg.merge_from_file(
        os.path.join(repo_root, "configs", "selftrain", "mask_rcnn_R50_FPN_cpu_coco_tiny.yaml")
    )
    torch.manual_seed(0)
    DetpreCheckpointer(build_model(cfg), str(tmp_path)).save("teacher")
    cfg.MODEL.WEIGHTS = str(tmp_path / "teacher.pth")
    cfg.SELF_TRAIN.PSEUDO_LABEL.CHANNELS_LAST = False
    plain = build_teacher(cfg)
    cfg.SELF_TRAIN.PSEUDO_LABEL.CHANNELS_LAST = True
    fast = build_teacher(cfg)
    convs = [m.weight for m in fast.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) > 50
    assert all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)
    assert not plain.backbone.bottom_up.stem.conv1.weight.is_contiguous(
        memory_format=torch.channels_last
    )
    torch.manual_seed(1)
    image = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        want, got = plain.backbone(image), fast.backbone(image)
    assert set(want) == set(got) == {"p2", "p3", "p4", "p5", "p6"}
    for k in want:
        assert got[k].is_contiguous(memory_format=torch.channels_last), k
        # Other convolution kernels, other summation order: float32 rounding only.
        scale = want[k].abs().max().item()
        torch.testing.assert_close(got[k], want[k], rtol=1e-4, atol=1e-4 * scale)


@pytest.mark.parametrize("own, expected", [(-1, 1), (0, 0), (2, 2)])
def test_labeller_workers_fall_back_to_the_loader_key(
    image_folder, tmp_path, monkeypatch, own, expected
):
    import detpre.selftrain.pseudo_label as pl

    seen = []

    def recording_loader(*args, **kwargs):
        seen.append(kwargs["num_workers"])
        return real_loader(*args, **kwargs)

    real_loader = pl.build_detection_test_loader
    monkeypatch.setattr(pl, "build_detection_test_loader", recording_loader)
    name, _ = image_folder
    cfg = labeller_cfg(name, "DATALOADER.NUM_WORKERS", "1")
    cfg.SELF_TRAIN.PSEUDO_LABEL.NUM_WORKERS = own
    assert labeller_workers(cfg) == expected
    index = run_pseudo_labelling(cfg, StubTeacher(), str(tmp_path / "out"))
    assert seen == [expected] and index[name]["num_images"] == NUM_IMAGES
