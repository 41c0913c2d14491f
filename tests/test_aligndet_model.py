import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances, pairwise_iou
from detectron2.utils.events import EventStorage

from detpre.checkpoint import DetpreCheckpointer
from detpre.checkpoint.export import ExportingCheckpointer, FinetuneExporter
from detpre.data.datasets import proposals_json_path
from detpre.engine import get_detpre_cfg
from detpre.modeling.aligndet import AlignDet
from detpre.modeling.aligndet.proposal_ids import batch_unique_ids, match_rois_to_ids
from detpre.solver import build_pretrain_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = {
    "FPN": "configs/pretrain/aligndet_R50_FPN_cpu_coco.yaml",
    "C4": "configs/pretrain/aligndet_R50_C4_cpu_coco.yaml",
}
# Fewer RPN anchors and RoIs per image.
SMALL = ("MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64", "ALIGNDET.ROIS_PER_IMAGE", "32")
FINETUNE = {
    "FPN": ("finetune/mask_rcnn_R50_FPN_1x_coco_aligndet.yaml", "roi_heads.box_head"),
    "C4": ("finetune/faster_rcnn_R50_C4_24k_voc0712_aligndet.yaml", "roi_heads.res5"),
}


def _instances(size, boxes):
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.gt_ids = torch.arange(len(boxes))
    return inst


# The two views of an image, with the same two boxes scaled to each.
SIZES = ((64, 96), (80, 112))


def _view(gen, size):
    s = size[1] / 96
    boxes = [[4 * s, 4 * s, 40 * s, 30 * s], [30 * s, 20 * s, 90 * s, 60 * s]]
    image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=gen)
    return {"image": image, "instances": _instances(size, boxes)}


def test_roi_matching_takes_the_best_proposal_at_iou_half():
    tgt = batch_unique_ids(
        [
            _instances((50, 50), [[0, 0, 10, 10]]),
            _instances((50, 50), [[0, 0, 20, 20], [30, 30, 40, 40]]),
        ]
    )
    assert [t.gt_ids.tolist() for t in tgt] == [[0], [1, 2]]
    props = []
    for boxes in (
        [[0, 0, 10, 12], [0, 0, 30, 30]],
        [[0, 0, 20, 16], [29, 29, 40, 40], [0, 0, 40, 40]],
    ):
        p = Instances((50, 50))
        p.proposal_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
        props.append(p)
    rois = match_rois_to_ids(props, tgt, iou_threshold=0.5, max_per_image=10)
    # Proposal boxes first (IoU 1 with themselves), then RPN boxes with IoU >= 0.5:
    # image 0: [0,0,10,12] has IoU 10/12 with id 0; [0,0,30,30] has 1/9 -> dropped.
    assert rois[0].gt_ids.tolist() == [0, 0]
    assert rois[0].proposal_boxes.tensor.tolist() == [[0, 0, 10, 10], [0, 0, 10, 12]]
    # image 1: [0,0,20,16] -> id 1 (IoU 0.8); [29,29,40,40] -> id 2 (IoU 100/121); [0,0,40,40] no.
    assert rois[1].gt_ids.tolist() == [1, 2, 1, 2]
    assert rois[1].gt_boxes.tensor[2].tolist() == [0, 0, 20, 20]
    capped = match_rois_to_ids(props, tgt, iou_threshold=0.5, max_per_image=3)
    assert [len(r) for r in capped] == [2, 3]
    with pytest.raises(ValueError, match="gt_ids"):
        bad = _instances((5, 5), [[0, 0, 2, 2]])
        bad.gt_ids = torch.tensor([3])
        batch_unique_ids([bad])


@pytest.mark.parametrize("arch", ["FPN", "C4"])
def test_frozen_backbone_unchanged_the_rest_trains(
    arch, run_momentum_hook, load_config, view_batch
):
    cfg = load_config(CONFIGS[arch], *SMALL, "SOLVER.BASE_LR", "0.05", "SOLVER.WARMUP_ITERS", "0")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert isinstance(model, AlignDet) and model.roi_heads.box_predictor.cls_score is None
    frozen = model.backbone.bottom_up if arch == "FPN" else model.backbone
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_pretrain_optimizer(cfg, model)
    for step in range(2):
        with EventStorage(step) as storage:
            losses = model(view_batch(step, sizes=SIZES, view=_view))
        assert set(losses) == {
            "loss_rpn_cls", "loss_rpn_loc", "loss_aligndet_contrast", "loss_aligndet_box_reg"
        }  # fmt: skip
        assert all(torch.isfinite(v) for v in losses.values())
        assert 0 <= storage.latest()["[metric]aligndet/acc"][0] <= 1
        optimizer.zero_grad()
        sum(losses.values()).backward()
        optimizer.step()
        run_momentum_hook(model, cfg, step, 10)
    after = model.state_dict()
    prefix = "backbone.bottom_up." if arch == "FPN" else "backbone."
    frozen_keys = [k for k in after if k.startswith((prefix, "momentum." + prefix))]
    assert frozen_keys and all(torch.equal(before[k], after[k]) for k in frozen_keys)
    trained = ["proposal_generator.", "ssl_head.", "roi_heads.box_predictor.bbox_pred."]
    trained.append("backbone.fpn_" if arch == "FPN" else "roi_heads.res5.")
    for group in trained:
        keys = [k for k in after if k.startswith(group) and after[k].is_floating_point()]
        assert any(not torch.equal(before[k], after[k]) for k in keys), group
        # the EMA target moved too
        assert any(not torch.equal(before["momentum." + k], after["momentum." + k]) for k in keys)


def _load_export(repo_root, model, cfg, path, finetune_config):
    ExportingCheckpointer(model, os.path.dirname(path), exporter=FinetuneExporter(cfg)).save(
        os.path.basename(path)
    )
    exported = torch.load(path + "_d2.pth", map_location="cpu", weights_only=False)["model"]
    ft = get_detpre_cfg()
    ft.merge_from_file(os.path.join(repo_root, "configs", finetune_config))
    ft.MODEL.DEVICE = "cpu"
    d2 = build_model(ft)
    checkpointer = DetpreCheckpointer(d2)
    checkpointer.load(path + "_d2.pth")
    return ft, d2, exported, {r.group: r for r in checkpointer.last_load_report}


@pytest.mark.parametrize("arch", ["FPN", "C4"])
def test_export_is_what_the_release_transfers_and_loads_whole(
    repo_root, tmp_path, arch, load_config
):
    """extract_detector_weights.py of the release: backbone, FPN, RPN and the box head's shared
    convs / fcs; no classifier (projector) and no regressor. The *_aligndet.yaml fine-tuning
    (the release's: lr x1.5, weight decay x0.5, 4conv1fc head without norm) loads every
    exported tensor, and its box predictor is fresh and class-specific."""
    cfg = load_config(CONFIGS[arch], *SMALL)
    model = build_model(cfg)
    if arch == "FPN":  # the release pretrains FPN and box head without norm layers
        assert (
            model.backbone.fpn_output2.norm is None and model.roi_heads.box_head.conv1.norm is None
        )
        assert model.backbone.fpn_output2.bias is not None
    ft, d2, exported, rows = _load_export(
        repo_root, model, cfg, str(tmp_path / "model"), FINETUNE[arch][0]
    )
    assert not any(
        k.startswith(("momentum.", "ssl_head.", "roi_heads.box_predictor")) for k in exported
    )
    assert ft.SOLVER.BASE_LR == pytest.approx(0.03) and ft.SOLVER.WEIGHT_DECAY == 5e-5
    assert not ft.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG
    # As in the release (its extract_detector_weights.py says so): the FPN pretrains without
    # norm and fine-tunes with SyncBN, whose convs have no bias: the 8 FPN biases are unexpected.
    fpn_biases = 8 if arch == "FPN" else 0
    assert sum(r.unexpected for r in rows.values()) == fpn_biases
    assert all(r.mismatched == 0 for r in rows.values())
    if arch == "FPN":
        assert rows["backbone.fpn"].unexpected == 8 and ft.MODEL.FPN.NORM == "SyncBN"
        # its 8 conv weights load; its SyncBN layers are new in fine-tuning
        fpn = rows["backbone.fpn"]
        assert fpn.loaded == 8 and fpn.missing == fpn.model - 8 and fpn.mismatched == 0
    groups = ["proposal_generator", FINETUNE[arch][1]]
    groups += ["backbone.bottom_up"] if arch == "FPN" else ["backbone"]
    for g in groups:
        assert rows[g].loaded == rows[g].model > 0 and rows[g].missing == 0, rows[g]
    assert sum(r.loaded for r in rows.values()) == len(exported) - fpn_biases
    num_classes = ft.MODEL.ROI_HEADS.NUM_CLASSES
    assert d2.roi_heads.box_predictor.bbox_pred.out_features == 4 * num_classes


def test_opt_in_box_regressor_loads_into_the_agnostic_configs(repo_root, tmp_path, load_config):
    cfg = load_config(CONFIGS["FPN"], *SMALL, "ALIGNDET.EXPORT_BOX_REGRESSOR", "True")
    model = build_model(cfg)
    with torch.no_grad():
        model.roi_heads.box_predictor.bbox_pred.weight.normal_()
    name = "finetune/mask_rcnn_R50_FPN_1x_coco_aligndet_agnostic.yaml"
    ft, d2, exported, rows = _load_export(repo_root, model, cfg, str(tmp_path / "m"), name)
    assert ft.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG and ft.SOLVER.BASE_LR == pytest.approx(0.03)
    key = "roi_heads.box_predictor.bbox_pred.weight"
    torch.testing.assert_close(d2.state_dict()[key], exported[key])
    # The baseline beside it has the same head: class-agnostic regressor, box head without norm.
    base = get_detpre_cfg()
    base.merge_from_file(
        os.path.join(repo_root, "configs/finetune/mask_rcnn_R50_FPN_1x_coco_agnostic.yaml")
    )
    assert base.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG and base.MODEL.ROI_BOX_HEAD.NORM == ""
    assert base.SOLVER.BASE_LR == pytest.approx(0.02)


def test_pretrain_tool_runs_on_generated_proposals(repo_root, tmp_path, datasets_root):
    env = dict(os.environ, DETPRE_PROPOSALS=str(tmp_path / "proposals"), OMP_NUM_THREADS="1")
    env["DETECTRON2_DATASETS"] = datasets_root
    tools = os.path.join(repo_root, "tools")
    subprocess.run(
        [sys.executable, os.path.join(tools, "prepare_proposals.py"), "--dataset",
         "coco_tiny_train", "--max-images", "3", "--workers", "1", "--resize", "256"],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    json_file = proposals_json_path("coco_tiny_train", "aligndet", str(tmp_path / "proposals"))
    assert os.path.isfile(json_file)
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(tools, "pretrain_net.py"), "--config-file",
           os.path.join(repo_root, CONFIGS["FPN"]), "SSL.EPOCHS", "0",
           "SOLVER.MAX_ITER", "2", "ALIGNDET.MIN_SIZES", "(96,)", "ALIGNDET.MAX_SIZE", "128",
           "ALIGNDET.ROIS_PER_IMAGE", "32", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64",
           "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(out)]  # fmt: skip
    # No MODEL.WEIGHTS and a frozen backbone: refused at start-up, before any step.
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert refused.returncode != 0 and "ALIGNDET.ALLOW_RANDOM_FROZEN_BACKBONE" in refused.stderr
    assert not (out / "model_final.pth").exists()
    subprocess.run(
        cmd + ["ALIGNDET.ALLOW_RANDOM_FROZEN_BACKBONE", "True"],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    assert (out / "model_final.pth").is_file() and (out / "model_final_d2.pth").is_file()
    log = (out / "log.txt").read_text()
    assert "loss_aligndet_contrast" in log and "Loaded 3 images in COCO format" in log


@pytest.mark.parametrize("arch", ["FPN", "C4"])
def test_frozen_random_backbone_is_refused(arch, load_config):
    model = build_model(load_config(CONFIGS[arch], *SMALL))
    with pytest.raises(ValueError, match="MODEL.WEIGHTS is empty"):
        model.check_initialisation("")
    model.check_initialisation("output/insloc/model_final_d2.pth")
    unfrozen = load_config(CONFIGS[arch], *SMALL, "ALIGNDET.FREEZE_BACKBONE", "False")
    build_model(unfrozen).check_initialisation("")
    allowed = load_config(CONFIGS[arch], *SMALL, "ALIGNDET.ALLOW_RANDOM_FROZEN_BACKBONE", "True")
    build_model(allowed).check_initialisation("")


def test_missing_proposals_file_says_how_to_make_it(tmp_path, monkeypatch):
    from detectron2.data import DatasetCatalog

    from detpre.data.datasets import register_proposal_set

    name = f"props_{np.random.randint(1 << 30)}"
    register_proposal_set(name, str(tmp_path / "none.json"), str(tmp_path))
    with pytest.raises(FileNotFoundError, match="prepare_proposals.py"):
        DatasetCatalog.get(name)
    cfg = get_detpre_cfg()
    cfg.merge_from_file("configs/pretrain/aligndet_R50_FPN_cpu_coco.yaml")
    cfg.MODEL.ROI_BOX_HEAD.CLS_AGNOSTIC_BBOX_REG = False
    with pytest.raises(ValueError, match="CLS_AGNOSTIC_BBOX_REG"):
        build_model(cfg)


def test_retinanet_box_domain_step_and_export(repo_root, tmp_path, run_momentum_hook, view_batch):
    cfg = get_detpre_cfg()
    cfg.merge_from_file(
        os.path.join(repo_root, "configs/pretrain/aligndet_retinanet_R50_FPN_cpu_coco.yaml")
    )
    cfg.merge_from_list(["ALIGNDET.ROIS_PER_IMAGE", "16", "SOLVER.WARMUP_ITERS", "0"])
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert model.head.cls_score is None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_pretrain_optimizer(cfg, model)
    with EventStorage(0) as storage:
        losses = model(view_batch(0, sizes=SIZES, view=_view))
    assert set(losses) == {"loss_aligndet_contrast", "loss_aligndet_box_reg"}
    matched = storage.latest()["aligndet/anchors_per_image"][0]
    assert 0 < matched <= 16
    # the release's sampler: background anchors fill each image's 16
    assert matched + storage.latest()["aligndet/background_per_image"][0] == 16
    sum(losses.values()).backward()
    optimizer.step()
    run_momentum_hook(model, cfg, 0, 10)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if "bottom_up." in k)
    for group in ("head.cls_subnet.", "head.bbox_subnet.", "head.bbox_pred.", "backbone.fpn_"):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(group))

    ft_name = "finetune/retinanet_R50_FPN_1x_coco_aligndet.yaml"
    ft, d2, exported, rows = _load_export(repo_root, model, cfg, str(tmp_path / "retina"), ft_name)
    # extract_detector_weights.py drops retina_cls (the projector here) and retina_reg.
    missing = sorted(set(d2.state_dict()) - set(exported))
    assert missing == sorted(
        f"head.{m}.{p}" for m in ("cls_score", "bbox_pred") for p in ("bias", "weight")
    )
    assert all(r.unexpected == 0 and r.mismatched == 0 for r in rows.values())
    assert ft.SOLVER.BASE_LR == pytest.approx(0.015) and ft.SOLVER.WEIGHT_DECAY == 5e-5


def test_retinanet_samples_matched_then_background_anchors(repo_root):
    """The release's RandomSampler(num=2048, pos_fraction=1): up to N matched anchors (label 1
    of the 0.4 / 0.5 matcher), background anchors (label 0: IoU < 0.4 with every proposal) fill
    the rest; the first 50 proposals per image (SelectTopKProposals)."""
    cfg = get_detpre_cfg()
    cfg.merge_from_file(
        os.path.join(repo_root, "configs/pretrain/aligndet_retinanet_R50_FPN_12ep_coco.yaml")
    )
    assert (cfg.ALIGNDET.ROIS_PER_IMAGE, cfg.ALIGNDET.MAX_PROPOSALS) == (2048, 50)
    assert cfg.ALIGNDET.BACKGROUND_NEGATIVES and not cfg.ALIGNDET.EXPORT_BOX_REGRESSOR
    cfg.merge_from_list(["MODEL.DEVICE", "cpu", "ALIGNDET.ROIS_PER_IMAGE", "300"])
    model = build_model(cfg)
    size = (128, 160)
    anchors = Boxes.cat(model.anchor_generator([torch.zeros(1, 1, 16, 20), torch.zeros(1, 1, 8, 10),
                                                torch.zeros(1, 1, 4, 5), torch.zeros(1, 1, 2, 3),
                                                torch.zeros(1, 1, 1, 2)]))  # fmt: skip
    targets = batch_unique_ids(
        [_instances(size, [[10, 10, 70, 60], [60, 40, 150, 120]]), _instances(size, [])]
    )
    (keep, ids, boxes, bg), (keep2, ids2, _, bg2) = model.match_anchors(anchors, targets)
    iou = pairwise_iou(targets[0].gt_boxes, anchors)  # (2, R)
    best = iou.max(dim=0).values
    assert 0 < len(keep) < 300 and len(keep) + len(bg) == 300
    assert (best[bg] < 0.4).all() and len(set(bg.tolist())) == len(bg)
    assert not set(bg.tolist()) & set(keep.tolist())
    assert ids.tolist() == targets[0].gt_ids[iou[:, keep].argmax(dim=0)].tolist()
    # an image without proposals: background only
    assert len(keep2) == 0 and len(ids2) == 0 and len(bg2) == 300
    cfg.ALIGNDET.BACKGROUND_NEGATIVES = False
    no_bg = build_model(cfg).match_anchors(anchors, targets)
    assert len(no_bg[0][3]) == 0 and len(no_bg[1][3]) == 0


def test_pretraining_configs_are_the_releases(repo_root):
    """configs/selfsup/mask_rcnn.py and retinanet.py of the release (with their _base_ files):
    SGD 0.02 at 16 images (RetinaNet 0.01), momentum 0.9, weight decay 1e-4, 12 epochs, steps
    at 8 and 11, 500 warm-up iterations from 0.001; EMA 0.996 -> 1 by cosine; InfoNCE T 0.5;
    RPN 4096 anchors and 4096 RoIs per image, positives only; projector 1024 -> 1024 -> 256."""
    for name, lr in (("aligndet_R50_FPN_12ep_coco.yaml", 0.02),
                     ("aligndet_retinanet_R50_FPN_12ep_coco.yaml", 0.01)):  # fmt: skip
        cfg = get_detpre_cfg()
        cfg.merge_from_file(os.path.join(repo_root, "configs/pretrain", name))
        o, s, a = cfg.SOLVER, cfg.SSL, cfg.ALIGNDET
        assert (o.BASE_LR, o.IMS_PER_BATCH, s.REFERENCE_BATCH_SIZE) == (lr, 16, 16)
        assert (o.MOMENTUM, o.WEIGHT_DECAY, o.LR_SCHEDULER_NAME) == (0.9, 1e-4, "WarmupMultiStepLR")
        assert (s.EPOCHS, tuple(s.STEP_EPOCHS), o.GAMMA) == (12, (8, 11), 0.1)
        assert (o.WARMUP_ITERS, o.WARMUP_FACTOR) == (500, 0.001)
        assert (s.MOMENTUM, s.MOMENTUM_COSINE, s.EXPORT) == (0.996, True, "online")
        assert a.TEMPERATURE == 0.5 and a.FREEZE_BACKBONE and a.PROJ_DIM == 256
        if "retinanet" not in name:
            assert (cfg.MODEL.RPN.BATCH_SIZE_PER_IMAGE, cfg.MODEL.RPN.POSITIVE_FRACTION) == (
                4096,
                1.0,
            )
            assert a.ROIS_PER_IMAGE == 4096 and a.MATCH_IOU == 0.5 and a.MAX_PROPOSALS == 0
            assert cfg.MODEL.FPN.NORM == "" and cfg.MODEL.ROI_BOX_HEAD.NORM == ""
