import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from detectron2.modeling import build_model
from detectron2.structures import Boxes, Instances
from detectron2.utils.events import EventStorage

from detpre.checkpoint import DetpreCheckpointer
from detpre.checkpoint.export import FinetuneExporter
from detpre.data.datasets import proposals_json_path
from detpre.engine import get_detpre_cfg
from detpre.modeling.meta_arch import AlignDet
from detpre.modeling.ssl import batch_unique_ids, match_rois_to_ids
from detpre.solver import build_pretrain_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")

CONFIGS = {
    "FPN": "pretrain/aligndet_R50_FPN_cpu_coco.yaml",
    "C4": "pretrain/aligndet_R50_C4_cpu_coco.yaml",
}
FINETUNE = {
    "FPN": ("finetune/mask_rcnn_R50_FPN_1x_coco_aligndet.yaml", "roi_heads.box_head"),
    "C4": ("finetune/faster_rcnn_R50_C4_24k_voc0712_aligndet.yaml", "roi_heads.res5"),
}


def _cfg(repo_root, arch, *opts):
    cfg = get_detpre_cfg()
    cfg.merge_from_file(os.path.join(repo_root, "configs", CONFIGS[arch]))
    cfg.merge_from_list(["MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64", "ALIGNDET.ROIS_PER_IMAGE", "32"])
    cfg.merge_from_list(list(opts))
    return cfg


def _instances(size, boxes):
    inst = Instances(size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.gt_ids = torch.arange(len(boxes))
    return inst


def _batch(seed, n=2):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        views = []
        for size in ((64, 96), (80, 112)):
            s = size[1] / 96
            boxes = [[4 * s, 4 * s, 40 * s, 30 * s], [30 * s, 20 * s, 90 * s, 60 * s]]
            image = torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=gen)
            views.append({"image": image, "instances": _instances(size, boxes)})
        out.append({"views": views})
    return out


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
def test_frozen_backbone_unchanged_the_rest_trains(repo_root, arch, run_momentum_hook):
    cfg = _cfg(repo_root, arch, "SOLVER.BASE_LR", "0.05", "SOLVER.WARMUP_ITERS", "0")
    torch.manual_seed(0)
    model = build_model(cfg).train()
    assert isinstance(model, AlignDet) and model.roi_heads.box_predictor.cls_score is None
    frozen = model.backbone.bottom_up if arch == "FPN" else model.backbone
    assert not frozen.training and not any(p.requires_grad for p in frozen.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = build_pretrain_optimizer(cfg, model)
    for step in range(2):
        with EventStorage(step) as storage:
            losses = model(_batch(step))
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


@pytest.mark.parametrize("arch", ["FPN", "C4"])
def test_export_loads_into_finetuning_with_nothing_missing_in_pretrained_groups(
    repo_root, tmp_path, arch
):
    cfg = _cfg(repo_root, arch)
    model = build_model(cfg)
    path = str(tmp_path / "model_d2.pth")
    FinetuneExporter(cfg)(model.state_dict(), path)
    exported = torch.load(path, map_location="cpu", weights_only=False)["model"]
    assert not any(k.startswith(("momentum.", "ssl_head.")) for k in exported)
    assert not any("cls_score" in k for k in exported)
    ft_name, head = FINETUNE[arch]
    ft = get_detpre_cfg()
    ft.merge_from_file(os.path.join(repo_root, "configs", ft_name))
    ft.MODEL.DEVICE = "cpu"
    # the official fine-tuning recipe: lr x1.5, weight decay x0.5
    assert ft.SOLVER.BASE_LR == pytest.approx(0.03) and ft.SOLVER.WEIGHT_DECAY == 5e-5
    d2 = build_model(ft)
    checkpointer = DetpreCheckpointer(d2)
    checkpointer.load(path)
    rows = {r.group: r for r in checkpointer.last_load_report}
    assert all(r.unexpected == 0 and r.mismatched == 0 for r in rows.values())
    groups = ["proposal_generator", head]
    groups += ["backbone.bottom_up", "backbone.fpn"] if arch == "FPN" else ["backbone"]
    for g in groups:
        assert rows[g].loaded == rows[g].model > 0 and rows[g].missing == 0, rows[g]
    state = d2.state_dict()
    for k in ("weight", "bias"):
        key = f"roi_heads.box_predictor.bbox_pred.{k}"
        torch.testing.assert_close(state[key], exported[key])
        assert state[key].shape[0] == 4


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
    subprocess.run(
        [sys.executable, os.path.join(tools, "pretrain_net.py"), "--config-file",
         os.path.join(repo_root, "configs", CONFIGS["FPN"]), "SSL.EPOCHS", "0",
         "SOLVER.MAX_ITER", "2", "ALIGNDET.MIN_SIZES", "(96,)", "ALIGNDET.MAX_SIZE", "128",
         "ALIGNDET.ROIS_PER_IMAGE", "32", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64",
         "DATALOADER.NUM_WORKERS", "0", "OUTPUT_DIR", str(out)],
        check=True, env=env, capture_output=True,
    )  # fmt: skip
    assert (out / "model_final.pth").is_file() and (out / "model_final_d2.pth").is_file()
    log = (out / "log.txt").read_text()
    assert "loss_aligndet_contrast" in log and "Loaded 3 images in COCO format" in log


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


def test_retinanet_box_domain_step_and_export(repo_root, tmp_path, run_momentum_hook):
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
        losses = model(_batch(0))
    assert set(losses) == {"loss_aligndet_contrast", "loss_aligndet_box_reg"}
    assert 0 < storage.latest()["aligndet/anchors_per_image"][0] <= 16
    sum(losses.values()).backward()
    optimizer.step()
    run_momentum_hook(model, cfg, 0, 10)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in after if "bottom_up." in k)
    for group in ("head.cls_subnet.", "head.bbox_subnet.", "head.bbox_pred.", "backbone.fpn_"):
        assert any(not torch.equal(before[k], after[k]) for k in after if k.startswith(group))

    path = str(tmp_path / "retina_d2.pth")
    FinetuneExporter(cfg)(model.state_dict(), path)
    ft = get_detpre_cfg()
    ft.merge_from_file(os.path.join(repo_root, "configs/finetune/retinanet_R50_FPN_1x_coco.yaml"))
    ft.MODEL.DEVICE = "cpu"
    d2 = build_model(ft)
    checkpointer = DetpreCheckpointer(d2)
    checkpointer.load(path)
    exported = torch.load(path, map_location="cpu", weights_only=False)["model"]
    missing = sorted(set(d2.state_dict()) - set(exported))
    assert missing == ["head.cls_score.bias", "head.cls_score.weight"]
    assert all(r.unexpected == 0 and r.mismatched == 0 for r in checkpointer.last_load_report)
