import contextlib
import importlib.util
import json
import os

import numpy as np
import pytest
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets.pascal_voc import CLASS_NAMES as D2_VOC_CLASS_NAMES
from PIL import Image, ImageOps
from pycocotools.coco import COCO

from detpre.data.datasets import (
    COCO_SEM_SEG_CLASSES,
    VOC_SEM_SEG_CLASSES,
    load_sem_seg_dataset,
    register_all_sem_seg,
    register_sem_seg,
    sem_seg_label_root,
)
from detpre.data.sem_seg_io import SemSegLabelError, read_sem_seg_label

VAL_JSON = "coco_tiny/annotations/instances_val2017.json"
BUILTIN_NAMES = (
    "coco_tiny_sem_seg_train",
    "coco_tiny_sem_seg_val",
    "coco128_sem_seg_train",
    "voc_2012_sem_seg_train",
    "voc_2012_sem_seg_train_aug",
    "voc_2012_sem_seg_val",
)


@pytest.fixture(scope="module")
def prepare(repo_root):
    path = os.path.join(repo_root, "datasets", "prepare_coco_sem_seg.py")
    spec = importlib.util.spec_from_file_location("prepare_coco_sem_seg", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def val_labels(prepare, datasets_root, tmp_path_factory):
    """The labels of coco_tiny_val written by the script into a fresh root: (root, stats)."""
    root = tmp_path_factory.mktemp("sem_seg")
    argv = ["--datasets", "coco_tiny_val", "--output-root", str(root)]
    stats = prepare.main(argv + ["--datasets-root", datasets_root])
    return str(root), stats["coco_tiny_val"]


@pytest.fixture(scope="module")
def val_coco(datasets_root):
    return COCO(os.path.join(datasets_root, VAL_JSON))


def _expected_label(coco, image_id):
    # The documented rule, written as a per-pixel choice: a pixel covered by non-crowd instances
    # takes the class of the smallest one (equal areas: the later one in the json, as painting in
    # json order would leave it on top); an uncovered pixel inside a crowd region is 255.
    info = coco.imgs[image_id]
    supercategories = []
    for cat in coco.dataset["categories"]:
        if cat["supercategory"] not in supercategories:
            supercategories.append(cat["supercategory"])
    anns = coco.loadAnns(coco.getAnnIds(imgIds=[image_id], iscrowd=None))
    shape = (info["height"], info["width"])
    best_area = np.full(shape, np.inf)
    best_index = np.full(shape, -1)
    label = np.zeros(shape, dtype=np.int64)
    for index, ann in enumerate(anns):
        if ann["iscrowd"]:
            continue
        mask = coco.annToMask(ann).astype(bool)
        wins = mask & (
            (ann["area"] < best_area) | ((ann["area"] == best_area) & (index > best_index))
        )
        best_area[wins], best_index[wins] = ann["area"], index
        cls = 1 + supercategories.index(coco.cats[ann["category_id"]]["supercategory"])
        label[wins] = cls
    for ann in anns:
        if ann["iscrowd"]:
            label[coco.annToMask(ann).astype(bool) & (best_index < 0)] = 255
    return label


def test_coco_classes_are_supercategories_in_first_appearance_order(datasets_root):
    with open(os.path.join(datasets_root, VAL_JSON)) as f:
        categories = json.load(f)["categories"]
    seen = []
    for cat in categories:
        if cat["supercategory"] not in seen:
            seen.append(cat["supercategory"])
    assert len(seen) == 12
    assert COCO_SEM_SEG_CLASSES == ("background", *seen)


def test_voc_classes_are_background_and_the_20_voc_classes():
    assert VOC_SEM_SEG_CLASSES == ("background", *D2_VOC_CLASS_NAMES)
    assert len(VOC_SEM_SEG_CLASSES) == 21


def test_prepared_labels_match_an_independent_rasterisation(val_labels, val_coco):
    root, stats = val_labels
    folder = sem_seg_label_root("coco_tiny_val", root)
    images = val_coco.dataset["images"]
    assert stats["images"] == stats["written"] == len(images) == 50
    assert sorted(os.listdir(folder)) == sorted(
        os.path.splitext(im["file_name"])[0] + ".png" for im in images
    )
    crowd_images = {a["image_id"] for a in val_coco.dataset["annotations"] if a["iscrowd"]}
    assert crowd_images
    total = np.zeros(14, dtype=np.int64)
    for image in images:
        path = os.path.join(folder, os.path.splitext(image["file_name"])[0] + ".png")
        with Image.open(path) as png:
            assert png.mode == "L"
            label = np.asarray(png).astype(np.int64)
        expected = _expected_label(val_coco, image["id"])
        np.testing.assert_array_equal(label, expected, err_msg=path)
        assert set(np.unique(label)) <= set(range(13)) | {255}
        if image["id"] in crowd_images:
            assert (label == 255).any(), path
        else:
            assert not (label == 255).any(), path
        total += np.bincount(np.where(label == 255, 13, label).ravel(), minlength=14)
    np.testing.assert_array_equal(stats["pixels"], total)
    assert total.sum() == sum(im["height"] * im["width"] for im in images)


def test_prepare_keeps_existing_labels_unless_overwrite(prepare, val_labels, datasets_root):
    root, _ = val_labels
    folder = sem_seg_label_root("coco_tiny_val", root)
    mtimes = {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in os.listdir(folder)}
    argv = ["--datasets", "coco_tiny_val", "--output-root", root, "--datasets-root", datasets_root]
    again = prepare.main(argv)["coco_tiny_val"]
    assert (again["written"], again["skipped"]) == (0, 50)
    assert {f: os.stat(os.path.join(folder, f)).st_mtime_ns for f in os.listdir(folder)} == mtimes
    overwritten = prepare.main(argv + ["--overwrite"])["coco_tiny_val"]
    assert (overwritten["written"], overwritten["skipped"]) == (50, 0)
    np.testing.assert_array_equal(overwritten["pixels"], again["pixels"])


def test_label_root_reads_the_environment(monkeypatch):
    monkeypatch.setenv("DETPRE_SEM_SEG", "/data/labels")
    assert sem_seg_label_root("coco_tiny_val") == "/data/labels/coco_tiny_val"
    assert sem_seg_label_root("coco128_train", "/x") == "/x/coco128_train"
    monkeypatch.delenv("DETPRE_SEM_SEG")
    assert sem_seg_label_root("coco_tiny_val") == os.path.join("sem_seg", "coco_tiny_val")


def test_registered_dataset_pairs_every_image_with_its_label(val_labels, datasets_root, new_names):
    root, _ = val_labels
    name = new_names("sem_seg_coco_val")
    image_root = os.path.join(datasets_root, "coco_tiny", "val2017")
    label_root = sem_seg_label_root("coco_tiny_val", root)
    register_sem_seg(name, image_root, label_root, COCO_SEM_SEG_CLASSES)
    meta = MetadataCatalog.get(name)
    assert meta.stuff_classes == list(COCO_SEM_SEG_CLASSES)
    assert (meta.ignore_label, meta.evaluator_type) == (255, "sem_seg")
    assert (meta.image_root, meta.sem_seg_root) == (image_root, label_root)
    dicts = DatasetCatalog.get(name)
    images = sorted(os.listdir(image_root))
    assert [os.path.basename(d["file_name"]) for d in dicts] == images
    for d in dicts:
        stem = os.path.splitext(os.path.basename(d["file_name"]))[0]
        assert d["image_id"] == stem
        assert d["sem_seg_file_name"] == os.path.join(label_root, stem + ".png")
        assert os.path.isfile(d["file_name"]) and os.path.isfile(d["sem_seg_file_name"])


def test_missing_label_and_folder_are_named(val_labels, datasets_root, tmp_path):
    root, _ = val_labels
    image_root = os.path.join(datasets_root, "coco_tiny", "val2017")
    labels = tmp_path / "labels"
    labels.mkdir()
    stems = sorted(os.path.splitext(f)[0] for f in os.listdir(image_root))
    for stem in stems[1:]:
        os.link(
            os.path.join(sem_seg_label_root("coco_tiny_val", root), stem + ".png"),
            labels / f"{stem}.png",
        )
    missing = str(labels / f"{stems[0]}.png")
    with pytest.raises(FileNotFoundError, match="1 of 50 labels") as info:
        load_sem_seg_dataset(image_root, str(labels), name="my_set")
    assert missing in str(info.value) and "'my_set'" in str(info.value)
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        load_sem_seg_dataset(image_root, str(tmp_path / "nowhere"), name="my_set")
    split = tmp_path / "split.txt"
    split.write_text(f"{stems[3]}\n{stems[1]}\n\n")
    dicts = load_sem_seg_dataset(image_root, str(labels), split_file=str(split))
    assert [d["image_id"] for d in dicts] == [stems[3], stems[1]]


def _write_voc(voc, train, aug, val):
    # A VOC 2012 tree in mmsegmentation's layout with 1x1 files (only their paths matter here).
    for folder in ("JPEGImages", "SegmentationClass", "SegmentationClassAug"):
        (voc / folder).mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    for split, stems in (("train", train), ("aug", aug), ("val", val)):
        (voc / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(stems) + "\n")
        labels = "SegmentationClassAug" if split == "aug" else "SegmentationClass"
        for stem in stems:
            (voc / "JPEGImages" / f"{stem}.jpg").write_bytes(b"jpg")
            Image.fromarray(np.zeros((1, 1), np.uint8)).save(voc / labels / f"{stem}.png")


@contextlib.contextmanager
def _builtin_names_set_aside():
    """Remove the predefined sem-seg names for a test to register them again; restore them."""
    saved = {n: (DatasetCatalog[n], MetadataCatalog.get(n).as_dict()) for n in BUILTIN_NAMES}
    for name in BUILTIN_NAMES:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
    try:
        yield
    finally:
        for name, (func, meta) in saved.items():
            if name in DatasetCatalog.list():
                DatasetCatalog.remove(name)
                MetadataCatalog.remove(name)
            DatasetCatalog.register(name, func)
            MetadataCatalog.get(name).set(**{k: v for k, v in meta.items() if k != "name"})


def test_predefined_names(val_labels, datasets_root, tmp_path):
    root, _ = val_labels
    d2 = tmp_path / "datasets"
    d2.mkdir()
    os.symlink(os.path.join(datasets_root, "coco_tiny"), d2 / "coco_tiny")
    voc = d2 / "VOC2012"
    _write_voc(voc, train=["2007_000032", "2007_000039"], aug=["2008_000002"], val=["2007_000033"])
    # Before: the names registered on import read $DETECTRON2_DATASETS and ./sem_seg.
    meta = MetadataCatalog.get("coco_tiny_sem_seg_val")
    assert meta.image_root == os.path.join(datasets_root, "coco_tiny", "val2017")
    assert meta.stuff_classes == list(COCO_SEM_SEG_CLASSES) and meta.evaluator_type == "sem_seg"
    with _builtin_names_set_aside():
        register_all_sem_seg(str(d2), root)
        val = DatasetCatalog.get("coco_tiny_sem_seg_val")
        assert len(val) == 50
        assert all(
            d["sem_seg_file_name"].startswith(os.path.join(root, "coco_tiny_val")) for d in val
        )
        with pytest.raises(FileNotFoundError, match="prepare_coco_sem_seg.py") as info:
            DatasetCatalog.get("coco_tiny_sem_seg_train")
        assert os.path.join(root, "coco_tiny_train") in str(info.value)

        train_aug = DatasetCatalog.get("voc_2012_sem_seg_train_aug")
        assert [d["image_id"] for d in train_aug] == ["2007_000032", "2007_000039", "2008_000002"]
        assert [os.path.basename(os.path.dirname(d["sem_seg_file_name"])) for d in train_aug] == [
            "SegmentationClass",
            "SegmentationClass",
            "SegmentationClassAug",
        ]
        assert train_aug[2]["file_name"] == str(voc / "JPEGImages" / "2008_000002.jpg")
        assert [d["image_id"] for d in DatasetCatalog.get("voc_2012_sem_seg_val")] == [
            "2007_000033"
        ]
        assert len(DatasetCatalog.get("voc_2012_sem_seg_train")) == 2
        voc_meta = MetadataCatalog.get("voc_2012_sem_seg_val")
        assert voc_meta.stuff_classes == list(VOC_SEM_SEG_CLASSES)
        assert (voc_meta.ignore_label, voc_meta.evaluator_type) == (255, "sem_seg")
        os.remove(voc / "SegmentationClassAug" / "2008_000002.png")
        with pytest.raises(FileNotFoundError, match="voc_aug.py") as info:
            DatasetCatalog.get("voc_2012_sem_seg_train_aug")
        assert str(voc / "SegmentationClassAug" / "2008_000002.png") in str(info.value)
    assert MetadataCatalog.get("coco_tiny_sem_seg_val").image_root == meta.image_root


# ---- read_sem_seg_label


def test_palette_label_is_read_as_indices(tmp_path):
    values = np.array([[0, 1, 1, 2], [255, 1, 0, 2]], dtype=np.uint8)
    png = Image.new("P", (4, 2))
    png.putdata(values.ravel().tolist())
    palette = [0] * 768
    palette[3:6] = [200, 0, 0]  # index 1: dark red, grey level 60
    palette[6:9] = [0, 128, 255]
    png.putpalette(palette)
    path = str(tmp_path / "voc.png")
    png.save(path)
    with Image.open(path) as reread:
        assert reread.mode == "P"
        grey = np.asarray(reread.convert("L"))
    assert grey[0, 1] != 1  # what reading it as grey levels would give instead
    label = read_sem_seg_label(path, num_classes=3)
    assert label.dtype == np.int64 and label.shape == (2, 4)
    np.testing.assert_array_equal(label, values.astype(np.int64))


def test_grey_and_16_bit_labels_and_no_exif_rotation(tmp_path):
    values = np.arange(24, dtype=np.uint16).reshape(4, 6) * 10
    path16 = str(tmp_path / "deep.png")
    Image.fromarray(values).save(path16)
    np.testing.assert_array_equal(read_sem_seg_label(path16, num_classes=231), values)

    grey = (np.arange(24).reshape(4, 6) % 3).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90": a photo viewer would transpose the image
    path = str(tmp_path / "exif.png")
    Image.fromarray(grey).save(path, exif=exif)
    with Image.open(path) as reread:
        assert ImageOps.exif_transpose(reread).size == (4, 6)
    np.testing.assert_array_equal(read_sem_seg_label(path, num_classes=3), grey)


def _png(tmp_path, name, array):
    path = str(tmp_path / name)
    Image.fromarray(array).save(path)
    return path


def test_out_of_range_values_are_named_with_counts(tmp_path):
    values = np.array([[0, 1, 2, 3], [7, 7, 255, 3]], dtype=np.uint8)
    path = _png(tmp_path, "bad.png", values)
    with pytest.raises(SemSegLabelError) as info:
        read_sem_seg_label(path, num_classes=3)
    message = str(info.value)
    assert path in message and info.value.file_name == path
    assert "3 (2 pixels)" in message and "7 (2 pixels)" in message
    assert "[0, 3)" in message and "255" in message
    assert isinstance(info.value, ValueError)
    # 255 is fine as the ignore value, not as a class when another value is ignored.
    np.testing.assert_array_equal(read_sem_seg_label(path, num_classes=8), values)
    with pytest.raises(SemSegLabelError, match="255 \\(1 pixels\\)"):
        read_sem_seg_label(path, num_classes=8, ignore_label=0)
    many = _png(tmp_path, "many.png", np.arange(10, 34, dtype=np.uint8).reshape(4, 6))
    with pytest.raises(SemSegLabelError, match="and 19 more values"):
        read_sem_seg_label(many, num_classes=2)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA"])
def test_colour_label_is_refused(tmp_path, mode):
    path = str(tmp_path / f"colour_{mode}.png")
    Image.new(mode, (6, 4)).save(path)
    with pytest.raises(SemSegLabelError, match="channels") as info:
        read_sem_seg_label(path, num_classes=3)
    assert path in str(info.value) and info.value.file_name == path


def test_size_mismatch_missing_and_corrupt_files(tmp_path):
    path = _png(tmp_path, "small.png", np.zeros((4, 6), np.uint8))
    assert read_sem_seg_label(path, num_classes=1, image_size=(4, 6)).shape == (4, 6)
    with pytest.raises(SemSegLabelError) as info:
        read_sem_seg_label(path, num_classes=1, image_size=(5, 5))
    assert path in str(info.value) and "4x6" in str(info.value) and "5x5" in str(info.value)

    missing = str(tmp_path / "missing.png")
    with pytest.raises(SemSegLabelError, match="does not exist") as info:
        read_sem_seg_label(missing, num_classes=3)
    assert missing in str(info.value) and info.value.file_name == missing

    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\nnot a png")
    with pytest.raises(SemSegLabelError) as info:
        read_sem_seg_label(str(corrupt), num_classes=3)
    assert str(corrupt) in str(info.value)
