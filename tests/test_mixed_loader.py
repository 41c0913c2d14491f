"""The student's mixed loader: batch composition, background images, seeds and rank shards."""

import json
import os

import pytest
from detectron2.data import get_detection_dataset_dicts
from detectron2.data.datasets import register_coco_instances
from detectron2.data.samplers import TrainingSampler

from detpre.engine import get_detpre_cfg, launch
from detpre.selftrain import MixedBatch, build_mixed_train_loader, student_batch_sizes


def tag(dataset_dict):
    """A mapper that keeps what the tests look at (no image decoding)."""
    out = {k: dataset_dict[k] for k in ("file_name", "height", "width")}
    return dict(out, boxes=len(dataset_dict["annotations"]))


def write_pseudo_json(datasets_root, path, num_images=4, rename_first_class=False):
    """A pseudo-label json over coco_tiny_val images: boxes on the first image only."""
    with open(
        os.path.join(datasets_root, "coco_tiny", "annotations", "instances_val2017.json")
    ) as f:
        coco = json.load(f)
    images = coco["images"][:num_images]
    anns = [
        dict(a, id=i + 1)
        for i, a in enumerate(coco["annotations"])
        if a["image_id"] == images[0]["id"]
    ]
    anns = [
        {k: a[k] for k in ("id", "image_id", "bbox", "category_id", "area", "iscrowd")}
        for a in anns
    ]
    categories = [dict(c) for c in coco["categories"]]
    if rename_first_class:
        categories[0]["name"] = "not a person"
    data = {"images": images, "annotations": anns, "categories": categories}
    with open(path, "w") as f:
        json.dump(data, f)
    return {os.path.join(datasets_root, "coco_tiny", "val2017", im["file_name"]) for im in images}


@pytest.fixture
def pseudo(datasets_root, tmp_path, new_names):
    name = new_names("pseudo")
    path = str(tmp_path / "pseudo.json")
    files = write_pseudo_json(datasets_root, path)
    register_coco_instances(name, {}, path, os.path.join(datasets_root, "coco_tiny", "val2017"))
    return name, files


def student_cfg(pseudo_name, *opts):
    cfg = get_detpre_cfg()
    cfg.merge_from_list(
        [
            "DATASETS.TRAIN",
            "('coco_tiny_train',)",
            "SELF_TRAIN.PSEUDO_DATASETS",
            f"('{pseudo_name}',)",
        ]
        + ["DATALOADER.NUM_WORKERS", "0", "SOLVER.IMS_PER_BATCH", "4", "SEED", "3", *opts]
    )
    return cfg


def take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_student_batch_sizes():
    """A full labeled batch plus a pseudo batch (as many by default), each split over ranks."""
    assert student_batch_sizes(16) == (16, 16)
    assert student_batch_sizes(16, 0) == student_batch_sizes(16, -1) == (16, 16)
    assert student_batch_sizes(16, 8, world_size=8) == (16, 8)
    with pytest.raises(ValueError, match="SELF_TRAIN.PSEUDO_IMS_PER_BATCH 6: .* the 4 process"):
        student_batch_sizes(8, 6, world_size=4)
    with pytest.raises(ValueError, match="SOLVER.IMS_PER_BATCH 2: .* the 4 process"):
        student_batch_sizes(2, 4, world_size=4)


def test_mixed_batch_is_a_list_with_two_parts():
    batch = MixedBatch([{"a": 1}], [{"b": 2}, {"c": 3}])
    assert isinstance(batch, list) and len(batch) == 3
    assert batch.labeled == [{"a": 1}] and batch.pseudo == [{"b": 2}, {"c": 3}]


@pytest.mark.parametrize("pseudo_batch,expected", [(0, (4, 4)), (2, (4, 2))])
def test_batch_composition(datasets_root, pseudo, pseudo_batch, expected):
    """SOLVER.IMS_PER_BATCH 4 is the labeled part, whole; the pseudo part comes on top."""
    name, pseudo_files = pseudo
    cfg = student_cfg(name, "SELF_TRAIN.PSEUDO_IMS_PER_BATCH", str(pseudo_batch))
    labeled_files = {d["file_name"] for d in get_detection_dataset_dicts(["coco_tiny_train"])}
    batches = take(build_mixed_train_loader(cfg, tag, tag), 6)
    drawn = []
    for batch in batches:
        assert isinstance(batch, MixedBatch) and len(batch) == sum(expected)
        assert (len(batch.labeled), len(batch.pseudo)) == expected
        assert {d["file_name"] for d in batch.labeled} <= labeled_files
        assert {d["file_name"] for d in batch.pseudo} <= pseudo_files
        drawn += batch.pseudo
    # Pseudo images without a box are background, not filtered out.
    assert any(d["boxes"] == 0 for d in drawn) and any(d["boxes"] > 0 for d in drawn)


def test_same_seed_same_batches(pseudo):
    name, _ = pseudo

    def files(seed):
        loader = build_mixed_train_loader(student_cfg(name, "SEED", str(seed)), tag, tag)
        return [[d["file_name"] for d in batch] for batch in take(loader, 4)]

    assert files(7) == files(7)
    assert files(7) != files(8)


def test_bad_configs(datasets_root, tmp_path, pseudo, new_names):
    name, _ = pseudo
    cfg = student_cfg(name, "SELF_TRAIN.PSEUDO_DATASETS", "()")
    with pytest.raises(ValueError, match="SELF_TRAIN.PSEUDO_DATASETS is empty"):
        build_mixed_train_loader(cfg, tag, tag)
    other = new_names("other_classes")
    path = str(tmp_path / "other.json")
    write_pseudo_json(datasets_root, path, rename_first_class=True)
    register_coco_instances(other, {}, path, os.path.join(datasets_root, "coco_tiny", "val2017"))
    with pytest.raises(ValueError, match="must use the labeled set's categories"):
        build_mixed_train_loader(student_cfg(other), tag, tag)
    cfg = student_cfg(name, "DATALOADER.SAMPLER_TRAIN", "RepeatFactorTrainingSampler")
    with pytest.raises(ValueError, match="DATALOADER.SAMPLER_TRAIN"):
        build_mixed_train_loader(cfg, tag, tag)


def _rank_worker(json_file, image_root, out_dir, steps):
    from detectron2.utils import comm

    register_coco_instances("pseudo_ranks", {}, json_file, image_root)
    cfg = student_cfg("pseudo_ranks", "DATALOADER.ASPECT_RATIO_GROUPING", "False", "SEED", "5")
    batches = take(build_mixed_train_loader(cfg, tag, tag), steps)
    files = {
        "labeled": [d["file_name"] for b in batches for d in b.labeled],
        "pseudo": [d["file_name"] for b in batches for d in b.pseudo],
    }
    with open(os.path.join(out_dir, f"rank{comm.get_rank()}.json"), "w") as f:
        json.dump(files, f)


def test_two_ranks_read_disjoint_shards_of_one_permutation(datasets_root, tmp_path):
    """SOLVER.IMS_PER_BATCH 4 over two processes: 2 labeled + 2 pseudo images per rank and step
    (the full batch of each part, halved per rank); the sampler seed is the same on both ranks,
    each takes every other index of its stream."""
    json_file = str(tmp_path / "pseudo.json")
    write_pseudo_json(datasets_root, json_file, num_images=6)
    image_root = os.path.join(datasets_root, "coco_tiny", "val2017")
    steps = 8
    launch(_rank_worker, 2, dist_url="auto", args=(json_file, image_root, str(tmp_path), steps))
    register_coco_instances("pseudo_ranks_main", {}, json_file, image_root)
    try:
        dicts = {
            "labeled": get_detection_dataset_dicts(["coco_tiny_train"]),
            "pseudo": get_detection_dataset_dicts(["pseudo_ranks_main"], filter_empty=False),
        }
    finally:
        from detectron2.data import DatasetCatalog, MetadataCatalog

        DatasetCatalog.remove("pseudo_ranks_main")
        MetadataCatalog.remove("pseudo_ranks_main")
    got = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for part, seed in (("labeled", 5), ("pseudo", 6)):
        it = iter(TrainingSampler(len(dicts[part]), seed=seed))
        stream = [dicts[part][next(it)]["file_name"] for _ in range(4 * steps)]
        for rank in (0, 1):
            assert len(got[rank][part]) == 2 * steps  # 2 images of each part per rank and step
            assert got[rank][part] == stream[rank::2], (part, rank)
