import logging
import os
import pickle

import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import get_cfg
from detectron2.modeling import build_model

from detpre.checkpoint import DetpreCheckpointer, convert_torchvision_resnet, to_detectron2_pickle

FPN = "COCO-InstanceSegmentation/mask_rcnn_R_50_FPN_1x.yaml"
C4 = "COCO-InstanceSegmentation/mask_rcnn_R_50_C4_1x.yaml"
# model-key prefixes of each group, written independently of detpre's grouping
GROUP_PREFIXES = {
    "backbone.bottom_up": ("backbone.bottom_up.",),
    "backbone.fpn": ("backbone.fpn_lateral", "backbone.fpn_output"),
    "proposal_generator": ("proposal_generator.",),
    "roi_heads.box_head": ("roi_heads.box_head.",),
    "roi_heads.mask_head": ("roi_heads.mask_head.mask_fcn", "roi_heads.mask_head.deconv."),
    "predictors": ("roi_heads.box_predictor.", "roi_heads.mask_head.predictor."),
    "roi_heads.res5": ("roi_heads.res5.",),
}


def _model(config, **opts):
    cfg = get_cfg()
    cfg.merge_from_file(model_zoo.get_config_file(config))
    cfg.MODEL.DEVICE = "cpu"
    for k, v in opts.items():
        cfg.merge_from_list([k, v])
    return build_model(cfg)


def _count(model, prefixes):
    return sum(k.startswith(prefixes) for k in model.state_dict())


@pytest.fixture
def moco_file(tmp_path, tv_state):
    """A raw MoCo-style release: no "model", the encoder under module.encoder_q., MLP, queue."""
    state = {f"module.encoder_q.{k}": v for k, v in tv_state.items()}
    state.update({f"module.encoder_k.{k}": v for k, v in tv_state.items()})
    state["module.queue"] = torch.zeros(128, 8)
    path = tmp_path / "moco_v2.pth.tar"
    torch.save({"epoch": 200, "arch": "resnet50", "state_dict": state}, path)
    return str(path)


def _n_resnet(tv_state):
    return sum(not k.startswith("fc.") and "num_batches_tracked" not in k for k in tv_state)


def _load(model, path, caplog):
    checkpointer = DetpreCheckpointer(model)
    checkpointer.logger = logging.getLogger("test_checkpointer")
    with caplog.at_level(logging.INFO, logger="test_checkpointer"):
        checkpointer.resume_or_load(path, resume=False)
    tables = [r for r in caplog.records if "Checkpoint load per module group" in r.getMessage()]
    assert len(tables) == 1
    return checkpointer, {r.group: r for r in checkpointer.last_load_report}


@pytest.mark.parametrize("config, stride_in_1x1", [(FPN, True), (C4, False)])
def test_torchvision_release_converts_on_the_fly(
    config, stride_in_1x1, moco_file, tv_state, caplog
):
    model = _model(config, **{"MODEL.RESNETS.STRIDE_IN_1X1": str(stride_in_1x1)})
    checkpointer, rows = _load(model, moco_file, caplog)

    assert checkpointer.last_conversion_report.prefix == "module.encoder_q."
    # torchvision strides in the 3x3: a model striding in the 1x1 gets a warning
    warned = any("STRIDE_IN_1X1 False" in r.getMessage() for r in caplog.records)
    assert warned == stride_in_1x1
    resnet_groups = ["backbone.bottom_up"] if config == FPN else ["backbone", "roi_heads.res5"]
    assert sum(rows[g].loaded for g in resnet_groups) == _n_resnet(tv_state)
    for g in resnet_groups:
        assert rows[g].loaded == rows[g].model > 0 and rows[g].missing == 0
    assert all(r.unexpected == 0 and r.mismatched == 0 for r in rows.values())
    others = [
        g for g in GROUP_PREFIXES if g not in resnet_groups and _count(model, GROUP_PREFIXES[g])
    ]
    assert set(rows) == set(resnet_groups) | set(others)
    for g in others:
        assert rows[g].missing == rows[g].model == _count(model, GROUP_PREFIXES[g]), g
        assert rows[g].loaded == 0

    state = model.state_dict()
    res4 = "backbone.bottom_up.res4" if config == FPN else "backbone.res4"
    assert torch.equal(state[f"{res4}.3.conv2.weight"], tv_state["layer3.3.conv2.weight"])
    assert torch.equal(
        state[f"{res4}.0.shortcut.norm.bias"], tv_state["layer3.0.downsample.1.bias"]
    )
    res5 = "backbone.bottom_up.res5" if config == FPN else "roi_heads.res5"
    assert torch.equal(
        state[f"{res5}.2.conv1.norm.running_mean"], tv_state["layer4.2.bn1.running_mean"]
    )


def test_heuristic_pickle_from_the_tool_loads_the_same(tmp_path, tv_state, caplog):
    converted, _ = convert_torchvision_resnet(tv_state)
    path = tmp_path / "r50.pkl"
    with open(path, "wb") as f:
        pickle.dump(to_detectron2_pickle(converted), f)
    model = _model(FPN)
    checkpointer, rows = _load(model, str(path), caplog)

    assert checkpointer.last_conversion_report is None
    assert (
        rows["backbone.bottom_up"].loaded == _n_resnet(tv_state) == rows["backbone.bottom_up"].model
    )
    assert rows["backbone.fpn"].missing == _count(model, GROUP_PREFIXES["backbone.fpn"])
    assert torch.equal(
        model.state_dict()["backbone.bottom_up.stem.conv1.norm.weight"], tv_state["bn1.weight"]
    )


def test_detectron2_round_trip_and_new_classes(tmp_path, caplog):
    source = _model(FPN)
    DetpreCheckpointer(source, str(tmp_path)).save("model_final")
    path = str(tmp_path / "model_final.pth")

    same, rows = _load(_model(FPN), path, caplog)
    n = len(source.state_dict())
    assert sum(r.loaded for r in rows.values()) == n
    assert all(r.missing == r.mismatched == r.unexpected == 0 for r in rows.values())
    for k, v in source.state_dict().items():
        assert torch.equal(same.model.state_dict()[k], v), k

    caplog.clear()
    fewer_classes = _model(FPN, **{"MODEL.ROI_HEADS.NUM_CLASSES": "3"})
    _, rows = _load(fewer_classes, path, caplog)
    # cls_score and bbox_pred (weight, bias) and the mask predictor (weight, bias)
    assert rows["predictors"].mismatched == 6 == _count(fewer_classes, GROUP_PREFIXES["predictors"])
    assert rows["predictors"].loaded == rows["predictors"].missing == 0
    assert sum(r.loaded for r in rows.values()) == n - 6


def _crash_after_partial_write(monkeypatch):
    def torch_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise RuntimeError("killed while saving")

    monkeypatch.setattr(torch, "save", torch_save)


def test_crash_during_save_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    model = torch.nn.Linear(3, 2)
    checkpointer = DetpreCheckpointer(model, str(tmp_path))
    checkpointer.save("model_0000009", iteration=9)
    good = (tmp_path / "model_0000009.pth").read_bytes()
    saved_weight = model.weight.detach().clone()

    _crash_after_partial_write(monkeypatch)
    with torch.no_grad():
        model.weight.add_(1.0)
    for name in ("model_0000019", "model_0000009"):  # a new file, then overwriting the last one
        with pytest.raises(RuntimeError, match="killed while saving"):
            checkpointer.save(name, iteration=19)
    monkeypatch.undo()

    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_0000009.pth"]
    assert (tmp_path / "model_0000009.pth").read_bytes() == good
    assert checkpointer.get_checkpoint_file() == str(tmp_path / "model_0000009.pth")
    fresh = DetpreCheckpointer(torch.nn.Linear(3, 2), str(tmp_path))
    extra = fresh.resume_or_load("", resume=True)
    assert extra["iteration"] == 9
    assert torch.equal(fresh.model.weight, saved_weight)
    assert not torch.equal(fresh.model.weight, model.weight)
    assert fresh.last_load_report[0].loaded == 2


def test_save_then_tag(tmp_path):
    checkpointer = DetpreCheckpointer(torch.nn.Linear(3, 2), str(tmp_path))
    checkpointer.save("model_a")
    checkpointer.save("model_b")
    assert (tmp_path / "last_checkpoint").read_text() == "model_b.pth"
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint", "model_a.pth", "model_b.pth"]
