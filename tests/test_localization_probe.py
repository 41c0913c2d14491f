import json
import os
import subprocess
import sys

import pytest
import torch
from detectron2.data import DatasetCatalog
from detectron2.modeling import build_model
from detectron2.structures.boxes import pairwise_intersection

import detpre  # noqa: F401  registers the bundled datasets
import detpre.evaluation.localization_probe as loc_probe
from detpre.evaluation.localization_probe import (
    _isolated_patches,
    bootstrap_interval,
    extract_patch_features,
    grid_boxes,
    run_localization_probe,
    train_linear_probe,
)

DATASET = "imagenet_sample_unlabeled"
SIZE = 64
# 4 x 4 RoIs instead of 7 x 7 (FPN) / 14 x 14 (C4) keep the RoI heads cheap on CPU
SMALL = ("MODEL.RESNETS.NORM", "BN", "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", 4)


@pytest.mark.parametrize("size", [63, 64, 224])
def test_grid_boxes_tile_the_image(size):
    boxes = grid_boxes(size)
    t = boxes.tensor
    assert t.shape == (9, 4)
    assert (t >= 0).all() and (t <= size).all()
    # no overlap: the pairwise intersection areas vanish off the diagonal
    inter = pairwise_intersection(boxes, boxes)
    assert torch.allclose(inter - torch.diag(torch.diag(inter)), torch.zeros(9, 9))
    # areas add up to the image, so with no overlap and all inside, the union is the image
    assert boxes.area().sum().item() == pytest.approx(size * size)
    # every point falls in exactly one half-open box, the one of its row-major cell
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(5000, 2, generator=g) * size
    inside = (
        (pts[:, None, 0] >= t[None, :, 0])
        & (pts[:, None, 0] < t[None, :, 2])
        & (pts[:, None, 1] >= t[None, :, 1])
        & (pts[:, None, 1] < t[None, :, 3])
    )
    assert (inside.sum(dim=1) == 1).all()
    row, col = (pts[:, 1] * 3 / size).floor().long(), (pts[:, 0] * 3 / size).floor().long()
    assert torch.equal(inside.float().argmax(dim=1), row * 3 + col)


def test_grid_boxes_rejects_tiny_images():
    with pytest.raises(ValueError, match="2 x 2 image"):
        grid_boxes(2)


def _gaussian_classes(n, dim, num_classes, noise, g):
    centers = torch.randn(num_classes, dim, generator=g)
    y = torch.randint(num_classes, (n,), generator=g)
    return centers[y] + noise * torch.randn(n, dim, generator=g), y


def test_probe_learns_linearly_encoded_classes():
    g = torch.Generator().manual_seed(0)
    x, y = _gaussian_classes(1800, 16, 9, 0.3, g)
    out = train_linear_probe(x[:900], y[:900], x[900:], y[900:])
    assert out["test_acc"] > 0.97 and out["train_acc"] > 0.97
    # standardisation makes the result invariant to an affine change of the features
    scaled = train_linear_probe(1e3 * x[:900] + 5, y[:900], 1e3 * x[900:] + 5, y[900:])
    assert scaled["test_acc"] == pytest.approx(out["test_acc"], abs=2e-3)


def test_probe_is_at_chance_on_random_labels():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(4000, 32, generator=g), torch.randint(9, (4000,), generator=g)
    out = train_linear_probe(x[:2000], y[:2000], x[2000:], y[2000:])
    # 2000 test samples: the std of the accuracy at chance is ~0.007
    assert abs(out["test_acc"] - 1 / 9) < 0.035
    assert 0 <= out["train_acc"] <= 1


def test_probe_rejects_mismatched_inputs():
    with pytest.raises(ValueError, match="same D"):
        train_linear_probe(torch.zeros(4, 3), torch.zeros(4), torch.zeros(4, 2), torch.zeros(4))


def _saved_random_model(cfg, path):
    torch.manual_seed(0)
    cfg = cfg.clone()
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    model = build_model(cfg)
    torch.save({"model": model.state_dict()}, path)
    return model


@pytest.mark.parametrize(
    "arch,dim,groups",
    [
        ("FPN", 1024, ("backbone.bottom_up", "backbone.fpn", "roi_heads.box_head")),
        ("C4", 2048, ("backbone", "roi_heads.res5")),
    ],
)
def test_run_localization_probe_end_to_end(tmp_path, arch, dim, groups, load_config):
    cfg = load_config(f"configs/pretrain/Base-Pretrain-R50-{arch}.yaml", *SMALL)
    weights = str(tmp_path / "random.pth")
    model = _saved_random_model(cfg, weights)
    out = run_localization_probe(
        cfg, weights, DATASET, size=SIZE, batch_size=8, max_images=20, max_iter=50
    )
    assert out["feature_dim"] == dim
    assert 0 <= out["test_acc"] <= 1 and 0 <= out["train_acc"] <= 1
    assert out["chance"] == pytest.approx(1 / 9)
    assert (out["num_train_images"], out["num_test_images"]) == (16, 4)
    report = {row["group"]: row for row in out["load_report"]}
    for group in groups:
        assert report[group]["loaded"] == report[group]["model"] > 0
        assert report[group]["missing"] == report[group]["mismatched"] == 0
    json.dumps(out)  # what the tool writes

    # the features: one row per patch, grouped by image, and independent of the batching
    model.eval()
    dicts = DatasetCatalog.get(DATASET)[:2]
    feats, labels, image_index = extract_patch_features(model, dicts, SIZE, batch_size=2)
    assert feats.shape == (18, dim)
    assert torch.equal(labels, torch.arange(9).repeat(2))
    assert torch.equal(image_index, torch.arange(2).repeat_interleave(9))
    one, _, _ = extract_patch_features(model, dicts[1:], SIZE, batch_size=1)
    assert torch.allclose(one, feats[9:], rtol=1e-4, atol=1e-4)
    assert not torch.allclose(feats[9:], feats[:9])


def test_run_localization_probe_bad_input(tmp_path, load_config):
    cfg = load_config("configs/pretrain/Base-Pretrain-R50-FPN.yaml", *SMALL)
    missing = str(tmp_path / "nope.pth")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        run_localization_probe(cfg, missing, DATASET, size=SIZE, max_images=4)
    with pytest.raises(ValueError, match="train_fraction"):
        run_localization_probe(cfg, "", DATASET, size=SIZE, train_fraction=1.0)
    with pytest.raises(KeyError, match="no_such_dataset"):
        run_localization_probe(cfg, "", "no_such_dataset", size=SIZE)


def test_cli_writes_json(repo_root, tmp_path):
    output = tmp_path / "probe.json"
    cmd = [
        sys.executable,
        os.path.join(repo_root, "tools", "localization_probe.py"),
        "--size", str(SIZE),
        "--max-images", "12",
        "--train-fraction", "0.75",
        "--seed", "3",
        "--output", str(output),
        "MODEL.RESNETS.NORM", "FrozenBN",
        "MODEL.ROI_BOX_HEAD.POOLER_RESOLUTION", "4",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(output.read_text())
    assert (result["num_train_images"], result["num_test_images"]) == (9, 3)
    assert result["feature_dim"] == 1024 and result["seed"] == 3
    lo, hi = result["test_acc_interval"]
    assert result["variant"] == "grid" and lo <= result["test_acc"] <= hi
    line = (
        f"localization readout (grid): {100 * result['test_acc']:.1f}% top-1, 95% interval "
        f"{100 * lo:.1f}-{100 * hi:.1f} (chance 11.1%) on 3 test images x 9 patches"
    )
    assert line in proc.stdout


def test_bootstrap_interval_resamples_images():
    correct = torch.tensor([True] * 9 + [False] * 9 + [True] * 9)
    groups = torch.arange(3).repeat_interleave(9)
    lo, hi = bootstrap_interval(correct, groups, num_resamples=2000, seed=0)
    # image accuracies 1, 0, 1: a resample's accuracy is Binomial(3, 2/3) / 3, whose 2.5 % and
    # 97.5 % quantiles are 0 (P(0) = 1/27 > 2.5 %) and 1 (P(<= 2/3) = 19/27 < 97.5 %)
    assert (lo, hi) == (0.0, 1.0)
    assert bootstrap_interval(torch.ones(18, dtype=torch.bool), groups[:18].clone()) == (1.0, 1.0)
    # images, not patches, are resampled: 9 correlated patches per image give the interval of
    # the image count; 10x the images narrow it by about sqrt(10)
    gen = torch.Generator().manual_seed(1)
    per_image = torch.rand(400, generator=gen) < 0.6
    few = bootstrap_interval(
        per_image[:40].repeat_interleave(9), torch.arange(40).repeat_interleave(9)
    )
    many = bootstrap_interval(
        per_image.repeat_interleave(9), torch.arange(400).repeat_interleave(9)
    )
    ratio = (few[1] - few[0]) / (many[1] - many[0])
    assert 2.4 < ratio < 4.2


def test_isolated_patches_see_only_themselves(load_config, monkeypatch):
    """Fed alone, a patch's feature does not change when the rest of its image does (no border,
    padding or context reaches it); pooled from the whole image, it does."""
    cfg = load_config("configs/pretrain/Base-Pretrain-R50-FPN.yaml", *SMALL)
    model = build_model(cfg).eval()
    dicts = DatasetCatalog.get(DATASET)[:1]
    size = 96
    image = torch.randint(0, 256, (3, size, size), dtype=torch.uint8)
    patches = _isolated_patches(image, size)
    assert len(patches) == 9 and all(p["image"].shape == (3, 32, 32) for p in patches)
    assert torch.equal(patches[4]["image"], image[:, 32:64, 32:64])  # 96 / 3: no resize needed
    changed = image.clone()
    changed[:, 32:, :] = 0  # every patch but the top row
    feats = {}
    for variant in ("grid", "isolated"):
        for name, img in (("orig", image), ("changed", changed)):
            monkeypatch.setattr(loc_probe, "_load_resized", lambda d, s, f, im=img: {"image": im})
            feats[variant, name] = extract_patch_features(model, dicts, size, variant=variant)[0]
    top_row = slice(0, 3)
    assert torch.allclose(feats["isolated", "orig"][top_row], feats["isolated", "changed"][top_row])
    assert not torch.allclose(feats["grid", "orig"][top_row], feats["grid", "changed"][top_row])
