import csv
import os

import numpy as np
import pytest
import torch
from detectron2.config import CfgNode
from detectron2.data import MetadataCatalog
from PIL import Image

from detpre.data.datasets import register_sem_seg
from detpre.data.sem_seg_io import SemSegLabelError
from detpre.evaluation import build_evaluator, evaluator_kind, write_results_table
from detpre.evaluation.sem_seg import DetpreSemSegEvaluator, format_sem_seg_results

CLASSES = ("sky", "road", "car")
I = 255  # noqa: E741  the ignore value, short for the hand-written maps
# Two 4x6 ground truths with ignored pixels, and the predicted classes, written by hand.
GT = [
    np.array(
        [
            [0, 0, 0, 0, I, I],
            [0, 0, 2, 2, 1, 1],
            [1, 1, 2, 2, 1, 1],
            [1, 1, 1, 1, 1, I],
        ]
    ),
    np.array(
        [
            [0, 0, 0, 0, 0, 0],
            [0, 2, 2, 0, 0, I],
            [1, 2, 2, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
        ]
    ),
]
PRED = [
    np.array(
        [
            [0, 0, 0, 1, 2, 2],
            [0, 2, 2, 2, 1, 1],
            [1, 1, 2, 1, 1, 1],
            [1, 1, 1, 1, 0, 2],
        ]
    ),
    np.array(
        [
            [0, 0, 1, 0, 0, 0],
            [0, 2, 2, 2, 0, 0],
            [1, 2, 1, 1, 2, 1],
            [1, 1, 1, 1, 1, 1],
        ]
    ),
]


def _logits(pred, num_classes=3, seed=0):
    # Scores whose argmax over classes is `pred`: noise in [0, 1) plus 2 on the predicted class.
    noise = torch.rand((num_classes, *pred.shape), generator=torch.Generator().manual_seed(seed))
    return noise + 2.0 * torch.nn.functional.one_hot(torch.as_tensor(pred), num_classes).permute(
        2, 0, 1
    )


def _reference_metrics(gts, preds, num_classes):
    # From the definitions, over the non-ignored pixels of all images together.
    gt = np.concatenate([g.ravel() for g in gts])
    pred = np.concatenate([p.ravel() for p in preds])
    valid = gt != I
    gt, pred = gt[valid], pred[valid]
    iou, acc, freq = {}, {}, {}
    for c in range(num_classes):
        if not (gt == c).any():
            continue
        inter = np.sum((pred == c) & (gt == c))
        union = np.sum((pred == c) | (gt == c))
        iou[c] = inter / union
        acc[c] = inter / np.sum(gt == c)
        freq[c] = np.sum(gt == c) / gt.size
    return {
        "mIoU": 100 * np.mean(list(iou.values())),
        "fwIoU": 100 * sum(freq[c] * iou[c] for c in iou),
        "mACC": 100 * np.mean(list(acc.values())),
        "pACC": 100 * np.mean(pred == gt),
        "IoU": {c: 100 * v for c, v in iou.items()},
        "ACC": {c: 100 * v for c, v in acc.items()},
    }


def _save_palette_png(array, path):
    # A VOC-style palette label: index 1 is a colour whose grey level is not 1.
    png = Image.new("P", (array.shape[1], array.shape[0]))
    png.putdata(array.astype(np.uint8).ravel().tolist())
    png.putpalette([0, 0, 0, 128, 64, 0, 0, 128, 128] + [255, 255, 255] * 253)
    png.save(path)


@pytest.fixture
def dataset(tmp_path, new_names):
    """A registered two-image dataset: (name, [file_name], [label path])."""
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i, gt in enumerate(GT):
        (images / f"im{i}.jpg").write_bytes(b"not read by the evaluator")
    _save_palette_png(GT[0], labels / "im0.png")
    Image.fromarray(GT[1].astype(np.uint8)).save(labels / "im1.png")
    name = new_names("sem_seg_eval")
    register_sem_seg(name, str(images), str(labels), CLASSES)
    files = [str(images / f"im{i}.jpg") for i in range(2)]
    return name, files, [str(labels / f"im{i}.png") for i in range(2)]


def _evaluate(evaluator, files, preds=PRED):
    evaluator.reset()
    for i, (file_name, pred) in enumerate(zip(files, preds)):
        inputs = [{"file_name": file_name, "height": 4, "width": 6}]
        evaluator.process(inputs, [{"sem_seg": _logits(pred, seed=i)}])
    return evaluator.evaluate()


def _cfg(evaluator="auto"):
    return CfgNode({"FINETUNE": {"EVALUATOR": evaluator}, "MODEL": {"MASK_ON": False}})


def test_metrics_match_the_definitions(dataset, tmp_path):
    name, files, _ = dataset
    assert evaluator_kind(name) == "sem_seg"
    evaluator = build_evaluator(_cfg(), name, str(tmp_path / "inference"))
    assert isinstance(evaluator, DetpreSemSegEvaluator)
    results = _evaluate(evaluator, files)["sem_seg"]
    ref = _reference_metrics(GT, PRED, 3)
    for key in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert results[key] == pytest.approx(ref[key]), key
    for c, cls in enumerate(CLASSES):
        assert results[f"IoU-{cls}"] == pytest.approx(ref["IoU"][c]), cls
        assert results[f"ACC-{cls}"] == pytest.approx(ref["ACC"][c]), cls
    assert os.path.isfile(tmp_path / "inference" / "sem_seg_predictions.json")
    # A perfect prediction (palette label included: read as indices, not grey levels).
    perfect = [np.where(g == I, 0, g) for g in GT]
    results = _evaluate(evaluator, files, perfect)["sem_seg"]
    assert results["mIoU"] == pytest.approx(100.0) and results["pACC"] == pytest.approx(100.0)


def test_class_missing_from_the_ground_truth_is_left_out_of_the_means(dataset):
    name, files, labels = dataset
    gts = [np.where(g == 2, 1, g) for g in GT]  # no "car" in the ground truth
    _save_palette_png(gts[0], labels[0])
    Image.fromarray(gts[1].astype(np.uint8)).save(labels[1])
    results = _evaluate(DetpreSemSegEvaluator(name, distributed=False), files)["sem_seg"]
    ref = _reference_metrics(gts, PRED, 3)
    assert set(ref["IoU"]) == {0, 1}
    assert np.isnan(results["IoU-car"]) and np.isnan(results["ACC-car"])
    for key in ("mIoU", "fwIoU", "mACC", "pACC"):
        assert results[key] == pytest.approx(ref[key]), key


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.full((4, 6, 3), 1, np.uint8), "channels"),
        (np.full((4, 6), 3, np.uint8), "3 \\(24 pixels\\)"),
        (np.zeros((6, 4), np.uint8), "6x4 \\(HxW\\) but its image is 4x6"),
    ],
)
def test_bad_label_stops_the_evaluation_naming_the_file(dataset, bad, match):
    name, files, labels = dataset
    Image.fromarray(bad).save(labels[1])
    evaluator = DetpreSemSegEvaluator(name, distributed=False)
    with pytest.raises(SemSegLabelError, match=match) as info:
        _evaluate(evaluator, files)
    assert labels[1] in str(info.value) and info.value.file_name == labels[1]


def test_prediction_size_and_classes_are_checked(dataset):
    name, files, _ = dataset
    evaluator = DetpreSemSegEvaluator(name, distributed=False)
    evaluator.reset()
    inputs = [{"file_name": files[0], "height": 5, "width": 6}]
    with pytest.raises(ValueError, match="is 4x6 \\(HxW\\) but the input's height x width is 5x6"):
        evaluator.process(inputs, [{"sem_seg": _logits(PRED[0])}])
    inputs = [{"file_name": files[0], "height": 4, "width": 6}]
    with pytest.raises(ValueError, match=f"C = 3 classes of dataset '{name}'"):
        evaluator.process(inputs, [{"sem_seg": _logits(PRED[0], num_classes=4)}])
    with pytest.raises(KeyError, match="other.jpg"):
        evaluator.process([{"file_name": "other.jpg"}], [{"sem_seg": _logits(PRED[0])}])


def test_evaluator_kind_for_sem_seg_types(new_names):
    name = new_names("cityscapes_like")
    MetadataCatalog.get(name).set(evaluator_type="cityscapes_sem_seg")
    assert evaluator_kind(name) == "sem_seg"
    assert evaluator_kind(name, "sem_seg") == "sem_seg"
    with pytest.raises(ValueError, match="FINETUNE.EVALUATOR must be one of"):
        evaluator_kind(name, "segm")


def test_results_markdown_has_summary_and_per_class_table(dataset, tmp_path):
    name, files, _ = dataset
    results = _evaluate(DetpreSemSegEvaluator(name, distributed=False), files)
    ref = _reference_metrics(GT, PRED, 3)
    table = write_results_table(results, [name], str(tmp_path))
    assert (tmp_path / "results.md").read_text() == table
    lines = table.splitlines()
    assert lines[0] == "| dataset | task | mIoU | fwIoU | mACC | pACC |"
    summary = " | ".join(f"{ref[k]:.2f}" for k in ("mIoU", "fwIoU", "mACC", "pACC"))
    assert lines[2] == f"| {name} | sem_seg | {summary} |"
    start = lines.index("| class | IoU | ACC |")
    assert start > 3 and lines[start + 1] == "|---|---|---|"
    for c, cls in enumerate(CLASSES):
        assert lines[start + 2 + c] == f"| {cls} | {ref['IoU'][c]:.2f} | {ref['ACC'][c]:.2f} |"
    with open(tmp_path / "results.csv") as f:
        row = next(csv.DictReader(f))
    for c, cls in enumerate(CLASSES):
        assert float(row[f"IoU-{cls}"]) == pytest.approx(ref["IoU"][c])
    assert float(row["fwIoU"]) == pytest.approx(ref["fwIoU"])

    text = format_sem_seg_results(results, list(CLASSES))
    assert text.splitlines()[:3] == [
        "| mIoU | fwIoU | mACC | pACC |",
        "|---|---|---|---|",
        f"| {summary} |",
    ]
    assert f"| road | {ref['IoU'][1]:.2f} | {ref['ACC'][1]:.2f} |" in text
