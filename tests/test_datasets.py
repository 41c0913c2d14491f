import glob
import json
import logging
import os
import tempfile
import xml.etree.ElementTree as ET
from collections import Counter

import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.evaluation import PascalVOCDetectionEvaluator
from detectron2.structures import Boxes, BoxMode, Instances
from PIL import Image

import detpre  # noqa: F401  registers the datasets
from detpre.config import add_detpre_config
from detpre.data.datasets import register_from_config

BCCD = "bccd_voc/VOC2007"


def _cfg(**register):
    cfg = get_cfg()
    add_detpre_config(cfg)
    opts = []
    for key, entries in register.items():
        opts += [f"DATASETS.{key}", repr(entries)]  # the command-line form: KEY "[(...)]"
    cfg.merge_from_list(opts)
    return cfg


def _voc_objects(root):
    """{image_id: [(name, [xmin, ymin, xmax, ymax])]} parsed independently of detpre."""
    out = {}
    for path in sorted(glob.glob(os.path.join(root, BCCD, "Annotations", "*.xml"))):
        tree = ET.parse(path)
        out[os.path.basename(path)[:-4]] = [
            (
                obj.find("name").text,
                [float(obj.find(f"bndbox/{k}").text) for k in ("xmin", "ymin", "xmax", "ymax")],
            )
            for obj in tree.findall("object")
        ]
    return out


@pytest.mark.parametrize(
    "name,json_file,image_dir",
    [
        (
            "coco_tiny_train",
            "coco_tiny/annotations/instances_train2017.json",
            "coco_tiny/train2017",
        ),
        ("coco_tiny_val", "coco_tiny/annotations/instances_val2017.json", "coco_tiny/val2017"),
        ("coco128_train", "coco128/annotations/instances_train2017.json", "coco128/train2017"),
    ],
)
def test_bundled_coco(datasets_root, name, json_file, image_dir):
    with open(os.path.join(datasets_root, json_file)) as f:
        coco = json.load(f)
    dicts = DatasetCatalog.get(name)
    assert sorted(d["image_id"] for d in dicts) == sorted(im["id"] for im in coco["images"])
    assert sum(len(d["annotations"]) for d in dicts) == len(coco["annotations"])
    for d in dicts:
        assert os.path.dirname(d["file_name"]) == os.path.join(datasets_root, image_dir)
        assert os.path.isfile(d["file_name"])
    meta = MetadataCatalog.get(name)
    assert meta.evaluator_type == "coco"
    assert meta.json_file == os.path.join(datasets_root, json_file)
    assert meta.thing_classes == [
        c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])
    ]
    # Category ids are mapped to contiguous ids in the order of the official ids.
    ids = sorted(c["id"] for c in coco["categories"])
    want = Counter(ids.index(a["category_id"]) for a in coco["annotations"])
    assert Counter(a["category_id"] for d in dicts for a in d["annotations"]) == want


def test_bccd_instances_without_degenerate_boxes(datasets_root, detpre_logs):
    objects = _voc_objects(datasets_root)
    degenerate = {
        (image_id, tuple(box))
        for image_id, objs in objects.items()
        for _, box in objs
        if box[2] <= box[0] or box[3] <= box[1]
    }
    assert sum(len(objs) for objs in objects.values()) == 4888
    assert {image_id for image_id, _ in degenerate} == {"BloodImage_00338", "BloodImage_00343"}

    dicts = DatasetCatalog.get("bccd_voc_trainval") + DatasetCatalog.get("bccd_voc_test")
    assert len(dicts) == len(objects) == 364
    assert sum(len(d["annotations"]) for d in dicts) == 4888 - len(degenerate) == 4886
    classes = MetadataCatalog.get("bccd_voc_test").thing_classes
    for d in dicts:
        # Detectron2's coordinates: x1 = xmin - 1, y1 = ymin - 1, x2 = xmax, y2 = ymax.
        want = sorted(
            (name, (b[0] - 1, b[1] - 1, b[2], b[3]))
            for name, b in objects[d["image_id"]]
            if (d["image_id"], tuple(b)) not in degenerate
        )
        got = sorted(
            (classes[a["category_id"]], tuple(a["bbox"]))
            for a in d["annotations"]
            if a["bbox_mode"] == BoxMode.XYXY_ABS
        )
        assert got == want, d["image_id"]

    warnings = [r.getMessage() for r in detpre_logs.records if r.levelno == logging.WARNING]
    for image_id, box in degenerate:
        xml_file = os.path.join(datasets_root, BCCD, "Annotations", f"{image_id}.xml")
        assert any(xml_file in m and str(list(box)) in m for m in warnings), (xml_file, warnings)
    assert any("Dropped 2 degenerate boxes" in m for m in warnings)


def test_bccd_metadata_drives_the_voc_evaluator(datasets_root, tmp_path, monkeypatch):
    meta = MetadataCatalog.get("bccd_voc_test")
    assert meta.evaluator_type == "pascal_voc"
    assert meta.dirname == os.path.join(datasets_root, BCCD)
    assert (meta.year, meta.split) == (2007, "test")
    assert meta.thing_classes == ["RBC", "WBC", "Platelets"]
    assert MetadataCatalog.get("bccd_voc_trainval").split == "trainval"

    # The ground truth as predictions: Detectron2's evaluator must find AP 100 for every class.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    evaluator = PascalVOCDetectionEvaluator("bccd_voc_test")
    evaluator.reset()
    for d in DatasetCatalog.get("bccd_voc_test"):
        boxes = torch.tensor([a["bbox"] for a in d["annotations"]], dtype=torch.float32)
        instances = Instances((d["height"], d["width"]))
        instances.pred_boxes = Boxes(boxes)
        instances.scores = torch.ones(len(boxes))
        instances.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]])
        evaluator.process([{"image_id": d["image_id"]}], [{"instances": instances}])
    result = evaluator.evaluate()["bbox"]
    assert result["AP50"] == pytest.approx(100.0)
    assert result["AP"] == pytest.approx(100.0)


def test_imagenet_sample_unlabeled(datasets_root):
    folder = os.path.join(datasets_root, "imagenet_sample", "images")
    dicts = DatasetCatalog.get("imagenet_sample_unlabeled")
    assert sorted(d["file_name"] for d in dicts) == sorted(glob.glob(os.path.join(folder, "*")))
    assert len(dicts) == 250
    assert len({d["image_id"] for d in dicts}) == 250
    assert all("annotations" not in d for d in dicts)
    assert dicts[0]["image_id"] == os.path.basename(dicts[0]["file_name"])
    meta = MetadataCatalog.get("imagenet_sample_unlabeled")
    assert meta.evaluator_type == "unlabeled"
    assert meta.image_root == folder


def test_detectron2_builtin_names_are_kept(datasets_root):
    names = DatasetCatalog.list()
    for name in ("coco_2017_train", "coco_2017_val", "voc_2007_trainval", "voc_2007_test"):
        assert name in names
    assert MetadataCatalog.get("coco_2017_train").json_file == os.path.join(
        datasets_root, "coco/annotations/instances_train2017.json"
    )
    assert MetadataCatalog.get("coco_2017_val").image_root == os.path.join(
        datasets_root, "coco/val2017"
    )
    voc = MetadataCatalog.get("voc_2007_test")
    assert voc.dirname == os.path.join(datasets_root, "VOC2007")
    assert (voc.evaluator_type, voc.year, len(voc.thing_classes)) == ("pascal_voc", 2007, 20)


def test_register_coco_from_command_line_form(datasets_root, new_names):
    name = new_names("user_coco")
    json_file = "coco_tiny/annotations/instances_val2017.json"
    cfg = _cfg(REGISTER_COCO=[(name, json_file, "coco_tiny/val2017")])
    assert register_from_config(cfg) == [name]
    assert register_from_config(cfg) == [name]  # idempotent
    dicts = DatasetCatalog.get(name)
    assert len(dicts) == 50
    assert dicts[0]["file_name"].startswith(os.path.join(datasets_root, "coco_tiny/val2017"))
    meta = MetadataCatalog.get(name)
    assert meta.json_file == os.path.join(datasets_root, json_file)
    assert meta.evaluator_type == "coco"
    assert len(meta.thing_classes) == 80

    other = _cfg(REGISTER_COCO=[(name, "coco128/annotations/instances_train2017.json", "coco128")])
    with pytest.raises(ValueError, match=f"'{name}'.*already registered"):
        register_from_config(other)


def test_register_clash_with_detectron2_builtin_name():
    cfg = _cfg(
        REGISTER_COCO=[
            ("coco_2017_train", "coco_tiny/annotations/instances_val2017.json", "coco_tiny")
        ]
    )
    with pytest.raises(ValueError, match="'coco_2017_train'"):
        register_from_config(cfg)
    assert MetadataCatalog.get("coco_2017_train").json_file.endswith("instances_train2017.json")


def test_register_same_spec_as_bundled_is_a_no_op(datasets_root):
    cfg = _cfg(
        REGISTER_COCO=[
            (
                "coco_tiny_val",
                os.path.join(datasets_root, "coco_tiny/annotations/instances_val2017.json"),
                "coco_tiny/val2017",
            )
        ]
    )
    assert register_from_config(cfg) == ["coco_tiny_val"]


def test_register_missing_paths_are_named(tmp_path, new_names, datasets_root):
    missing = str(tmp_path / "nope.json")
    cfg = _cfg(REGISTER_COCO=[(new_names("c"), missing, "coco_tiny/val2017")])
    with pytest.raises(FileNotFoundError, match=missing):
        register_from_config(cfg)
    cfg = _cfg(REGISTER_VOC=[(new_names("v"), str(tmp_path / "VOC"), "test")])
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "VOC")):
        register_from_config(cfg)
    cfg = _cfg(REGISTER_VOC=[(new_names("v"), BCCD, "no_such_split")])
    with pytest.raises(FileNotFoundError, match="no_such_split.txt"):
        register_from_config(cfg)
    cfg = _cfg(REGISTER_IMAGE_FOLDER=[(new_names("f"), str(tmp_path / "imgs"))])
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "imgs")):
        register_from_config(cfg)


@pytest.mark.parametrize(
    "key,entry",
    [
        ("REGISTER_COCO", ("only_a_name", "ann.json")),
        ("REGISTER_IMAGE_FOLDER", "just_a_string"),
        ("REGISTER_VOC", ("n", "dir", "")),
    ],
)
def test_register_malformed_entry_names_the_key(key, entry):
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.DATASETS[key] = [entry]
    with pytest.raises(ValueError, match=f"DATASETS.{key}"):
        register_from_config(cfg)


def test_register_voc_reads_sorted_classes(datasets_root, new_names):
    name, named = new_names("voc_auto"), new_names("voc_named")
    cfg = _cfg(REGISTER_VOC=[(name, BCCD, "test"), (named, BCCD, "test", "WBC,RBC,Platelets")])
    assert register_from_config(cfg) == [name, named]
    assert register_from_config(cfg) == [name, named]
    meta, meta_named = MetadataCatalog.get(name), MetadataCatalog.get(named)
    assert meta.thing_classes == ["Platelets", "RBC", "WBC"]
    assert meta_named.thing_classes == ["WBC", "RBC", "Platelets"]
    assert (meta.dirname, meta.year, meta.split) == (
        os.path.join(datasets_root, BCCD),
        2007,
        "test",
    )
    # The same boxes, with category ids in each dataset's own class order.
    boxes = {
        n: sorted(
            (MetadataCatalog.get(n).thing_classes[a["category_id"]], tuple(a["bbox"]))
            for d in DatasetCatalog.get(n)
            for a in d["annotations"]
        )
        for n in (name, named, "bccd_voc_test")
    }
    assert boxes[name] == boxes[named] == boxes["bccd_voc_test"]

    other_classes = _cfg(REGISTER_VOC=[(named, BCCD, "test", "RBC,WBC,Platelets")])
    with pytest.raises(ValueError, match=named):
        register_from_config(other_classes)


def test_voc_unknown_class_names_the_file(datasets_root, new_names):
    name = new_names("voc_missing_class")
    register_from_config(_cfg(REGISTER_VOC=[(name, BCCD, "test", "RBC,WBC")]))
    with pytest.raises(ValueError, match=r"BloodImage_\d+\.xml.*Platelets"):
        DatasetCatalog.get(name)


def test_register_image_folder(tmp_path, new_names):
    rng = np.random.default_rng(0)
    paths = [tmp_path / "a" / "x.png", tmp_path / "b" / "c" / "y.JPG", tmp_path / "z.jpeg"]
    for i, path in enumerate(paths):
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (8 + i, 10, 3), dtype=np.uint8)).save(
            path, format="PNG" if path.suffix == ".png" else "JPEG"
        )
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.jpg").write_bytes(b"")

    name = new_names("folder")
    assert register_from_config(_cfg(REGISTER_IMAGE_FOLDER=[(name, str(tmp_path))])) == [name]
    dicts = DatasetCatalog.get(name)
    assert sorted(d["file_name"] for d in dicts) == sorted(str(p) for p in paths)
    assert sorted(d["image_id"] for d in dicts) == ["a/x.png", "b/c/y.JPG", "z.jpeg"]
    for d in dicts:
        assert "annotations" not in d
        assert utils.read_image(d["file_name"], "RGB").shape[1] == 10
    assert MetadataCatalog.get(name).evaluator_type == "unlabeled"
