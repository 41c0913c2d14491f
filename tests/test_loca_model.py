"""
The LOCA meta-architecture: names handed over, losses against an independent computation, the
training step and EMA teacher, and the exported weights loading into the Detectron2 detectors
(ViT-B into the stock ViTDet-B Mask R-CNN apart from its relative position tables; R50 into the
C4 and FPN detectors with complete backbone groups and no unexpected key).
"""

import glob
import os

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from detpre.checkpoint import DetpreCheckpointer
from detpre.checkpoint.export import FinetuneExporter
from detpre.data.mappers import LocaViewsMapper
from detpre.engine import PretrainTrainer
from detpre.modeling.loca import LOCA
from detpre.modeling.loca.patch_positions import patch_position_targets

pytestmark = pytest.mark.usefixtures("one_thread")

PRETRAIN_ONLY = ("momentum.", "ssl_head.")


def _batch(cfg, datasets_root, n=2, seed=0):
    """LOCA views of the first bundled images, without pixel augmentation."""
    torch.manual_seed(seed)
    mapper = LocaViewsMapper(cfg, is_train=True)
    for spec in range(len(mapper.specs)):
        size, scale, flip, _ = mapper.specs[spec]
        mapper.specs[spec] = (
            size,
            scale,
            flip if spec else 0.5,
            lambda x: x,
        )  # reference flips too
    files = sorted(glob.glob(os.path.join(datasets_root, "imagenet_sample", "images", "*.JPEG")))
    return [mapper({"file_name": f}) for f in files[:n]]


@pytest.fixture
def tiny_vit(load_config):
    cfg = load_config(
        "configs/pretrain/loca_ViT_cpu_imagenet_sample.yaml", "MODEL.VIT.DROP_PATH_RATE", "0.0"
    )
    torch.manual_seed(0)
    return cfg, build_model(cfg)


def _load_rows(finetune_model, path):
    checkpointer = DetpreCheckpointer(finetune_model)
    checkpointer.load(path)
    return {row.group: row for row in checkpointer.last_load_report}


def test_vit_b_export_loads_into_stock_vitdet(tmp_path, load_config):
    cfg = load_config("configs/pretrain/loca_ViT_B_100ep_imagenet.yaml")
    model = build_model(cfg)
    assert isinstance(model, LOCA) and model.is_vit
    state = model.state_dict()
    handed = [k for k in state if not k.startswith(PRETRAIN_ONLY)]
    assert handed and all(k.startswith("backbone.net.") for k in handed)
    assert not any("rel_pos" in k for k in state)
    with torch.no_grad():  # online and teacher differ: the teacher is exported (SSL.EXPORT)
        for p in model.backbone.parameters():
            p.add_(1.0)
    path = str(tmp_path / "loca_vit_b_d2.pth")
    report = FinetuneExporter(cfg)(model.state_dict(), path)
    exported = torch.load(path, map_location="cpu", weights_only=False)["model"]
    assert set(exported) == set(handed) and report["num_exported"] == len(handed)
    teacher = model.momentum.state_dict()
    for k, v in exported.items():
        assert torch.equal(v, teacher[k]), k

    finetune = build_model(load_config("configs/finetune/mask_rcnn_ViTDet_B_100ep_coco.yaml"))
    ft_keys = set(finetune.state_dict())
    net_keys = {k for k in ft_keys if k.startswith("backbone.net.")}
    # Exactly the relative position tables are new in fine-tuning (2 per block).
    assert net_keys - set(exported) == {k for k in net_keys if ".attn.rel_pos_" in k}
    assert len(net_keys - set(exported)) == 24
    rows = _load_rows(finetune, path)
    backbone = rows["backbone"]
    new = sum(
        k.startswith("backbone.") and (".attn.rel_pos_" in k or "simfp_" in k) for k in ft_keys
    )
    assert backbone.loaded == len(exported) and backbone.mismatched == 0
    assert backbone.missing == new
    assert sum(row.unexpected for row in rows.values()) == 0
    ft_state = finetune.state_dict()
    assert torch.equal(ft_state["backbone.net.pos_embed"], exported["backbone.net.pos_embed"])


@pytest.mark.parametrize(
    "arch,finetune,groups",
    [
        ("C4", "faster_rcnn_R50_C4_cpu_bccd.yaml", ("backbone", "roi_heads.res5")),
        ("FPN", "mask_rcnn_R50_FPN_cpu_coco_tiny.yaml", ("backbone.bottom_up",)),
    ],
)
def test_r50_export_loads_with_complete_backbone(tmp_path, arch, finetune, groups, load_config):
    cfg = load_config(f"configs/pretrain/loca_R50_{arch}_cpu_imagenet_sample.yaml")
    model = build_model(cfg)
    assert not model.is_vit and model.has_unused_parameters == (arch == "FPN")
    # Tokens from res5 (2048 channels), dilated to keep res4's stride: 7x7 cells at the CPU
    # config's 112 px reference (14x14 at the published 224).
    assert model.ssl_head.token_proj.in_channels == 2048 and model.num_positions == 49
    res5 = model.roi_heads.res5 if arch == "C4" else model.backbone.bottom_up.res5
    assert res5[0].conv1.stride == res5[0].shortcut.stride == res5[0].conv2.stride == (1, 1)
    assert all(b.conv2.dilation == b.conv2.padding == (2, 2) for b in res5)
    path = str(tmp_path / "loca_r50_d2.pth")
    report = FinetuneExporter(cfg)(
        model.state_dict(), path, excluded=model.export_excluded_prefixes
    )
    exported = torch.load(path, map_location="cpu", weights_only=False)["model"]
    assert exported and all(k.startswith(groups) for k in exported)
    finetune_model = build_model(load_config(f"configs/finetune/{finetune}"))
    rows = _load_rows(finetune_model, path)
    for group in groups:
        row = rows[group]
        # The C4 detector's res5 norm (Res5ROIHeadsExtraNorm) is new in fine-tuning.
        new = sum(
            k.startswith(group) and k.startswith("roi_heads.res5.norm.")
            for k in finetune_model.state_dict()
        )
        assert row.loaded == row.model - new > 0 and row.missing == new, row
        assert row.mismatched == 0, row
    assert sum(row.unexpected for row in rows.values()) == 0
    assert sum(row.loaded for row in rows.values()) == len(exported)
    if arch == "FPN":  # untrained: left out, so fine-tuning shows it initialised, not loaded
        fpn = [k for k in finetune_model.state_dict() if k.startswith("backbone.fpn_")]
        assert fpn and sorted(report["excluded"]) == sorted(fpn)
        assert rows["backbone.fpn"].loaded == 0 and rows["backbone.fpn"].missing == len(fpn)


@pytest.mark.parametrize("arch", ["C4", "FPN"])
def test_r50_pretraining_changes_every_exported_tensor(tmp_path, arch, load_config):
    """Two iterations of the pretraining trainer: every tensor of the export (stem to res5, BN
    statistics included) differs from the same model's export before training."""
    cfg = load_config(
        f"configs/pretrain/loca_R50_{arch}_cpu_imagenet_sample.yaml",
        *("SSL.EPOCHS", "0", "SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2"),
        *("LOCA.NUM_FOCAL_QUERIES", "2", "DATALOADER.NUM_WORKERS", "0", "SEED", "3"),
        *("SOLVER.CHECKPOINT_PERIOD", "100", "OUTPUT_DIR", str(tmp_path)),
        # No warm-up from 0 and a fast teacher, so that two steps move every exported float32
        # by more than its rounding (the EMA teacher is exported).
        *("SSL.WARMUP_EPOCHS", "0.0", "SOLVER.BASE_LR", "0.01", "SSL.MOMENTUM", "0.5"),
    )
    trainer = PretrainTrainer(cfg)
    trainer.resume_or_load(resume=False)
    model = trainer.model
    before = str(tmp_path / "before_d2.pth")
    FinetuneExporter(cfg)(model.state_dict(), before, excluded=model.export_excluded_prefixes)
    before = torch.load(before, map_location="cpu", weights_only=False)["model"]
    trainer.train()
    after = torch.load(tmp_path / "model_final_d2.pth", map_location="cpu", weights_only=False)
    after = after["model"]
    expected = {"C4": ("backbone.", "roi_heads.res5."), "FPN": ("backbone.bottom_up.",)}[arch]
    target = build_model(load_config(f"configs/pretrain/loca_R50_{arch}_cpu_imagenet_sample.yaml"))
    assert set(after) == set(before) == {k for k in target.state_dict() if k.startswith(expected)}
    assert any(k.startswith("roi_heads.res5.") or ".res5." in k for k in after)
    unchanged = [k for k in after if torch.equal(after[k], before[k])]
    assert not unchanged, unchanged


def test_r50_c4_train_step(datasets_root, load_config):
    cfg = load_config(
        "configs/pretrain/loca_R50_C4_cpu_imagenet_sample.yaml", "LOCA.NUM_FOCAL_QUERIES", "2"
    )
    model = build_model(cfg).train()
    with EventStorage():
        losses = model(_batch(cfg, datasets_root))
    assert set(losses) == {"loss_loca_position", "loss_loca_cluster"}
    sum(losses.values()).backward()
    for k, p in model.named_parameters():
        if k.startswith("momentum."):
            assert p.grad is None, k
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, k


def test_vit_train_step_and_teacher(tiny_vit, datasets_root, run_momentum_hook):
    cfg, model = tiny_vit
    model.train()
    batch = _batch(cfg, datasets_root)
    with EventStorage() as storage:
        losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values())
    latest = storage.latest()
    assert 0 <= latest["[metric]loca/position_acc"][0] <= 1
    assert 0 < latest["loca/query_tokens_inside"][0] <= 1
    assert 0 <= latest["loca/targets_in_kept"][0] <= 1
    model.zero_grad()
    sum(losses.values()).backward()
    params = dict(model.named_parameters())
    for k, p in params.items():
        if k.startswith("momentum."):
            assert p.grad is None and not p.requires_grad, k
        else:
            assert p.grad is not None, k
    # The position embeddings' class-token slot is stored (ViTDet's layout) but never used.
    pos_grad = params["backbone.net.pos_embed"].grad
    assert pos_grad[0, 0].abs().sum() == 0 and pos_grad[0, 1:].abs().sum() > 0

    # After a step the trainer's hook moves the teacher by the EMA rule, m cosine from 0.996.
    before = {k: p.detach().clone() for k, p in params.items() if k.startswith("momentum.")}
    with torch.no_grad():
        for k, p in params.items():
            if not k.startswith("momentum."):
                p.add_(0.5)
    run_momentum_hook(model, cfg, iteration=0, max_iter=10)
    for k, old in before.items():
        online = params[k[len("momentum.") :]]
        torch.testing.assert_close(params[k], 0.996 * old + 0.004 * online)

    model.eval()
    with torch.no_grad():
        out = model([{"views": x["views"][:1]} for x in batch])
    assert out["tokens"].shape == (2, 196, 192)


def _sinkhorn(p, iters):
    u = np.ones(p.shape[0])
    for _ in range(iters):
        v = 1.0 / (p.T @ u)
        u = 1.0 / (p @ v)
    return u[:, None] * p * v[None, :]


def _log_softmax(x):
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def test_losses_against_independent_computation(tiny_vit, datasets_root):
    cfg, model = tiny_vit
    model.train()
    batch = _batch(cfg, datasets_root, seed=3)
    # At initialisation the cluster predictions are nearly uniform and the two cluster terms all
    # but cancel (log K - log K); a colder student makes the sum a meaningful number.
    model.student_temperature = 0.01
    torch.manual_seed(11)
    try:
        with EventStorage():
            losses = model(batch)
    finally:
        model.student_temperature = 0.1

    # The same random draws, in the model's order: the teacher's run of 39 tokens, then the 70
    # tokens kept of the large query.
    torch.manual_seed(11)
    reference = [x["views"][0] for x in batch]
    with torch.no_grad():
        teacher = model.tokens(model.momentum, model._images(reference))
        start = int(torch.randint(0, 196 - 39 + 1, (1,)))
        keep = torch.randperm(196)[:70].sort().values
        kept = teacher[:, start : start + 39]
        ref_index = torch.arange(start, start + 39)
        logits, targets, student, owners = [], [], [], []
        for b, x in enumerate(batch):
            for i, view in enumerate(x["views"][1:]):
                grid = view["image"].shape[-1] // 16
                target = patch_position_targets(
                    view["crop_box"][None], [view["flipped"]], (grid, grid),
                    reference[b]["crop_box"][None], [reference[b]["flipped"]], (14, 14),
                )[0]  # fmt: skip
                image = model._images([view])
                tokens = model.tokens(model, image, keep if i == 0 else None)
                if i == 0:
                    target = target[keep]
                logits.append(
                    model.ssl_head.predict_positions(tokens, kept[b : b + 1], ref_index)[0]
                )
                student.append(model.ssl_head.cluster_head(tokens)[0] / 0.01)
                targets.append(target)
                owners.append(torch.full_like(target, b))
        scores = model.momentum.ssl_head.cluster_head(teacher).double().numpy()

    logits = torch.cat(logits).double().numpy()
    target = torch.cat(targets).numpy()
    owner = torch.cat(owners).numpy()
    valid = np.flatnonzero(target >= 0)
    assert 0 < len(valid) < len(target)
    position = -_log_softmax(logits)[valid, target[valid]].mean()
    assert losses["loss_loca_position"].item() == pytest.approx(position, rel=1e-4)

    probs = np.exp(_log_softmax(scores.reshape(-1, scores.shape[-1]) / 0.05))
    assignments = _sinkhorn(probs, 3).reshape(2, 196, -1)
    student = torch.cat(student).double().numpy()
    log_p = _log_softmax(student)
    soft_ce = -(assignments[owner[valid], target[valid]] * log_p[valid]).sum(axis=1).mean()
    mean_p = np.exp(log_p).mean(axis=0)
    cluster = soft_ce + (mean_p * np.log(mean_p)).sum()
    assert abs(cluster) > 0.1
    assert losses["loss_loca_cluster"].item() == pytest.approx(cluster, rel=1e-4)


def test_bad_setups(tiny_vit, datasets_root, load_config):
    with pytest.raises(ValueError, match="MODEL.VIT.USE_REL_POS False"):
        build_model(
            load_config(
                "configs/pretrain/loca_ViT_cpu_imagenet_sample.yaml",
                "MODEL.VIT.USE_REL_POS",
                "True",
            )
        )
    cfg, model = tiny_vit
    model.train()
    batch = _batch(cfg, datasets_root, n=1)
    with pytest.raises(ValueError, match="check SSL.MAPPER"):
        model([{"views": batch[0]["views"][:1]}])
    del batch[0]["views"][3]["crop_box"]
    with pytest.raises(ValueError, match="'crop_box' and 'flipped'"):
        model(batch)


def test_targets_in_kept_is_one_when_every_reference_token_is_kept(tiny_vit, datasets_root):
    """Every valid target cell is a kept reference token when the teacher keeps all of them."""
    cfg, model = tiny_vit
    model.train()
    batch = _batch(cfg, datasets_root)
    ratio = model.reference_keep_ratio
    model.reference_keep_ratio = 1.0
    try:
        with EventStorage() as storage, torch.no_grad():
            model(batch)
    finally:
        model.reference_keep_ratio = ratio
    assert storage.latest()["loca/targets_in_kept"][0] == 1.0
