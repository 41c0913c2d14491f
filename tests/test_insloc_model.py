import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.structures import Boxes
from detectron2.utils.events import EventStorage
from torch import nn
from torchvision.ops import roi_align

from detpre.config import add_detpre_config
from detpre.modeling.insloc import InsLoc

# Tiny R50 forwards are fastest single-threaded on a shared 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")

PRETRAIN_ONLY = ("momentum.", "queues.", "ssl_head.")
FPN_LEVELS = ["p2", "p3", "p4", "p5"]
CONFIGS = {a: f"configs/pretrain/insloc_R50_{a}_200ep_imagenet.yaml" for a in ("C4", "FPN")}
# A 7-key queue and m = 0.9.
SMALL = ("SSL.QUEUE_SIZE", "7", "SSL.MOMENTUM", "0.9")


def _view(gen, size=(64, 64), box=None):
    h, w = size
    if box is None:
        x0, y0 = torch.randint(0, w // 2, (1,), generator=gen).item(), 4
        box = [x0, y0, x0 + w // 3, y0 + h // 2]
    image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8, generator=gen)
    return {"image": image, "boxes": Boxes(torch.tensor([box], dtype=torch.float32))}


def _assert_invariant(model, d2_model, covered):
    """Handed-over tensors have Detectron2's names and shapes and cover ``covered`` prefixes."""
    ours = model.state_dict()
    theirs = d2_model.state_dict()
    handed = {k: v for k, v in ours.items() if not k.startswith(PRETRAIN_ONLY)}
    assert handed
    for k, v in handed.items():
        assert k in theirs, k
        assert theirs[k].shape == v.shape, k
        assert ours["momentum." + k].shape == v.shape, k
    uncovered = [k for k in theirs if k.startswith(covered) and k not in handed]
    return uncovered


def _d2(cfg, **model):
    cfg = cfg.clone()
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.MODEL.DEVICE = "cpu"
    for k, v in model.items():
        setattr(cfg.MODEL, k, v)
    return build_model(cfg)


def test_c4_names_match_faster_rcnn(repo_root, load_config):
    cfg = load_config(CONFIGS["C4"], *SMALL)
    model = build_model(cfg)
    assert isinstance(model, InsLoc)
    # Faster R-CNN R50-C4 with Res5ROIHeads, from the same MODEL.* keys
    assert _assert_invariant(model, _d2(cfg), ("backbone.", "roi_heads.res5.")) == []
    # the fine-tuning protocol's head adds only its extra norm, initialised by fine-tuning
    ft = get_cfg()
    add_detpre_config(ft)
    ft.merge_from_file(os.path.join(repo_root, "configs/finetune/Base-RCNN-C4-SyncBN.yaml"))
    uncovered = _assert_invariant(model, _d2(ft), ("backbone.", "roi_heads.res5."))
    assert uncovered and all(k.startswith("roi_heads.res5.norm.") for k in uncovered)
    assert set(model.queues.keys()) == {"res5"}


def test_fpn_names_match_mask_rcnn(repo_root, load_config):
    model = build_model(load_config(CONFIGS["FPN"], *SMALL))
    ft = get_cfg()
    add_detpre_config(ft)
    ft.merge_from_file(os.path.join(repo_root, "configs/finetune/Base-RCNN-FPN-SyncBN.yaml"))
    ft.MODEL.MASK_ON = True
    d2 = _d2(ft)
    assert type(d2.roi_heads.box_head).__name__ == "FastRCNNConvFCHead"
    assert _assert_invariant(model, d2, ("backbone.", "roi_heads.box_head.")) == []
    keys = set(model.state_dict())
    assert {f"queues.{lvl}.{b}" for lvl in FPN_LEVELS for b in ("queue", "ptr")} <= keys
    assert {k.split(".")[0] for k in keys} == {
        "backbone",
        "roi_heads",
        "momentum",
        "queues",
        "ssl_head",
    }


@pytest.mark.parametrize("arch", ["C4", "FPN"])
def test_train_step(arch, run_momentum_hook, load_config, view_batch):
    cfg = load_config(CONFIGS[arch], *SMALL)
    model = build_model(cfg).train()
    names = [f"loss_insloc_{lvl}" for lvl in FPN_LEVELS] if arch == "FPN" else ["loss_insloc"]
    levels = FPN_LEVELS if arch == "FPN" else ["res5"]
    # the key encoder starts as a copy of the query encoder
    params = dict(model.named_parameters())
    for k, p in params.items():
        if k.startswith("momentum."):
            assert torch.equal(p, params[k[len("momentum.") :]])

    batch = view_batch(0, view=_view)
    with EventStorage() as storage:
        losses = model(batch)
    assert sorted(losses) == sorted(names)
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
    for k, p in model.named_parameters():
        if k.startswith("momentum."):
            assert p.grad is None and not p.requires_grad, k
        else:
            assert p.grad is not None, k
    assert any(params[k].grad.abs().sum() > 0 for k in params if k.startswith("roi_heads."))
    acc = storage.latest()
    for lvl in levels:
        tag = f"[metric]insloc/acc_{lvl}" if arch == "FPN" else "[metric]insloc/acc"
        assert 0.0 <= acc[tag][0] <= 1.0
        assert int(model.queues[lvl].ptr) == 2
    # the queue holds the keys of the key views (gathered over 1 process)
    keys = model.encode_keys(*model.preprocess([x["views"][1] for x in batch]))
    for lvl in levels:
        assert torch.allclose(model.queues[lvl].queue[:2], keys[lvl], atol=1e-5)

    # forward never moves the key encoder; an optimizer step, then the trainer's momentum hook
    # moves it by the EMA rule, m = SSL.MOMENTUM
    before = {k: p.detach().clone() for k, p in params.items() if k.startswith("momentum.")}
    assert all(torch.equal(p, params[k[len("momentum.") :]]) for k, p in before.items())
    with torch.no_grad():
        for k, p in params.items():
            if p.grad is not None:
                p -= 0.5 * p.grad
    online = {k: p.detach().clone() for k, p in params.items() if not k.startswith("momentum.")}
    run_momentum_hook(model, cfg, iteration=0, max_iter=10)
    moved = 0
    for k, p in before.items():
        expected = 0.9 * p + 0.1 * online[k[len("momentum.") :]]
        assert torch.allclose(params[k], expected, rtol=1e-5, atol=1e-6), k
        moved += int(not torch.equal(params[k], p))
    assert moved > 0
    model.zero_grad()
    model(view_batch(1, view=_view))
    for lvl in levels:
        assert int(model.queues[lvl].ptr) == 4


class _Shift(nn.Module):
    """A stand-in box augmentation: every box moved by one pixel."""

    def forward(self, boxes, image_sizes):
        return [Boxes(b.tensor + 1.0) for b in boxes]


def _record_pooled_boxes(model):
    calls = []
    for level, pooler in model.poolers.items():
        pooler.register_forward_pre_hook(
            lambda mod, args, level=level: calls.append(
                (level, torch.cat([b.tensor for b in args[1]]))
            )
        )
    return calls


@pytest.mark.parametrize("arch", ["C4", "FPN"])
def test_box_augmentation_on_query_only(arch, load_config, view_batch):
    cfg = load_config(CONFIGS[arch], *SMALL)
    cfg.SSL.SHUFFLE_BN = False
    model = build_model(cfg).train()
    model.box_jitter = _Shift()
    calls = _record_pooled_boxes(model)
    batch = view_batch(2, view=_view)
    with torch.no_grad():
        model(batch)
    levels = FPN_LEVELS if arch == "FPN" else ["res5"]
    assert [lvl for lvl, _ in calls] == levels * 2
    q_true = torch.cat([x["views"][0]["boxes"].tensor for x in batch])
    k_true = torch.cat([x["views"][1]["boxes"].tensor for x in batch])
    for i, (level, boxes) in enumerate(calls):
        if i >= len(levels):  # key encoder: always the true boxes
            assert torch.equal(boxes, k_true)
        elif level == levels[-1]:  # query: augmented on the coarsest level only
            assert torch.equal(boxes, q_true + 1.0)
        else:
            assert torch.equal(boxes, q_true)


def test_bn_groups_split_boxes_with_their_images(load_config, view_batch):
    """SSL.BN_GROUPS 2 on 4 views: each half is pooled with its own boxes, as two GPUs would."""
    cfg = load_config(CONFIGS["FPN"], *SMALL, "INSLOC.BOX_AUG", "False")
    cfg.SSL.BN_GROUPS = 2
    model = build_model(cfg).train()
    views = [x["views"][0] for x in view_batch(0, n=4, view=_view)]
    with torch.no_grad():
        grouped = model.embed_in_groups(model, *model.preprocess(views), is_query=True)
        halves = [model.embed(model, *model.preprocess(v), True) for v in (views[:2], views[2:])]
    for level in FPN_LEVELS:
        assert torch.allclose(grouped[level], torch.cat([h[level] for h in halves]), atol=1e-6)


def test_box_augmentation_built_from_config(load_config):
    assert build_model(load_config(CONFIGS["C4"], *SMALL)).box_jitter is not None
    no_aug = load_config(CONFIGS["C4"], *SMALL, "INSLOC.BOX_AUG", "False")
    assert build_model(no_aug).box_jitter is None


def test_whole_image_roi_and_p5_only(load_config):
    opts = ["INSLOC.WHOLE_IMAGE_ROI", "True", "INSLOC.BOX_AUG", "False"]
    cfg = load_config(CONFIGS["FPN"], *SMALL, *opts, "INSLOC.PER_LEVEL_CONTRAST", "False")
    model = build_model(cfg).train()
    assert set(model.queues.keys()) == {"p5"}
    calls = _record_pooled_boxes(model)
    gen = torch.Generator().manual_seed(3)
    views = [_view(gen, (64, 64)), _view(gen, (64, 96)), _view(gen, (64, 96)), _view(gen, (64, 64))]
    for v in views:
        del v["boxes"]  # not needed when the whole view is pooled
    batch = [{"views": views[:2]}, {"views": views[2:]}]
    losses = model(batch)
    assert list(losses) == ["loss_insloc_p5"]
    assert [lvl for lvl, _ in calls] == ["p5", "p5"]
    q_boxes, k_boxes = calls[0][1], calls[1][1]
    assert q_boxes.tolist() == [[0, 0, 64, 64], [0, 0, 96, 64]]
    # keys were shuffled (1 process: a local permutation) with their sizes
    assert sorted(k_boxes.tolist()) == sorted([[0, 0, 96, 64], [0, 0, 64, 64]])


def test_eval_returns_embeddings_without_state_change(load_config, view_batch):
    model = build_model(load_config(CONFIGS["C4"], *SMALL)).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        out = model(view_batch(4, n=3, view=_view))
    assert set(out) == {"res5"} and out["res5"].shape == (3, 128)
    assert torch.allclose(out["res5"].norm(dim=1), torch.ones(3), atol=1e-5)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_bad_inputs_and_config(load_config, view_batch):
    model = build_model(load_config(CONFIGS["C4"], *SMALL)).train()
    with pytest.raises(ValueError, match="views"):
        model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}])
    batch = view_batch(5, view=_view)
    del batch[0]["views"][0]["boxes"]
    with pytest.raises(ValueError, match="boxes"):
        model(batch)
    with pytest.raises(ValueError, match="INSLOC.POOLER_RESOLUTION"):
        build_model(load_config(CONFIGS["FPN"], *SMALL, "INSLOC.POOLER_RESOLUTION", "5"))


def test_fpn_heads_have_the_release_widths(load_config):
    """The release's ConvFCBBoxInsClsHead (configs/FPN/insloc_fpn_200ep.py): 4 convs 256 with
    BN, shared fcs 12544 -> 1024 -> 1024 (ReLU each), fc_cls 1024 -> 128."""
    for name in ("insloc_R50_FPN_200ep_imagenet.yaml", "insloc_R50_FPN_400ep_imagenet.yaml"):
        cfg = load_config("configs/pretrain/" + name, *SMALL)
        assert cfg.SSL.PROJ_HIDDEN_DIM == 1024 and cfg.SSL.PROJ_DIM == 128
    model = build_model(load_config(CONFIGS["FPN"], *SMALL))
    state = model.state_dict()
    head = model.roi_heads["box_head"]
    assert [f"conv{i}" in dict(head.named_children()) for i in range(1, 5)] == [True] * 4
    assert all(isinstance(getattr(head, f"conv{i}").norm, nn.BatchNorm2d) for i in range(1, 5))
    assert state["roi_heads.box_head.fc1.weight"].shape == (1024, 256 * 7 * 7)
    assert state["ssl_head.fc1.weight"].shape == (1024, 1024)
    assert state["ssl_head.fc2.weight"].shape == (128, 1024)


def _xavier_std(weight):
    fan_out, fan_in = weight.shape[0], weight[0].numel()
    receptive = weight[0, 0].numel()
    return (2.0 / (fan_in + fan_out * receptive)) ** 0.5


def test_release_initialisation(load_config):
    """InsLocFPN.init_weights of the release: mmdet FPN convs and the head's shared fcs
    Xavier-uniform (std sqrt(2 / (fan_in + fan_out))), fc_cls normal 0.01, biases 0; the key
    encoder starts as a copy."""
    torch.manual_seed(0)
    model = build_model(load_config(CONFIGS["FPN"], *SMALL))
    release = {
        "backbone.fpn_lateral5": model.backbone.fpn_lateral5.weight,  # 2048 -> 256, 1x1
        "backbone.fpn_output2": model.backbone.fpn_output2.weight,  # 256 -> 256, 3x3
        "roi_heads.box_head.fc1": model.roi_heads["box_head"].fc1.weight,
        "ssl_head.fc1": model.ssl_head.fc1.weight,
    }
    for name, w in release.items():
        assert w.std().item() == pytest.approx(_xavier_std(w), rel=0.03), name
    assert model.ssl_head.fc2.weight.std().item() == pytest.approx(0.01, rel=0.05)
    assert not model.ssl_head.fc2.bias.any() and not model.roi_heads["box_head"].fc1.bias.any()
    state = model.state_dict()
    for k, v in state.items():
        if not k.startswith(PRETRAIN_ONLY):
            assert torch.equal(state["momentum." + k], v), k
    # Detectron2's own initialisation of the lateral conv (c2_xavier_fill: std sqrt(1 / fan_in))
    # without the key.
    torch.manual_seed(0)
    d2_cfg = load_config(CONFIGS["FPN"], *SMALL, "INSLOC.RELEASE_INIT", "False")
    d2_init = build_model(d2_cfg).backbone.fpn_lateral5.weight
    assert d2_init.std().item() == pytest.approx((1 / 2048) ** 0.5, rel=0.03)


def test_fpn_pools_every_level_with_aligned_roialign(load_config, view_batch):
    """The release's MomentumRoIPool: one RoIAlign (out 7, sample_num 0, aligned) per level
    P2-P5, each pooling the box from its own level (no level assignment); compared with
    torchvision's roi_align on the same feature maps."""
    model = build_model(load_config(CONFIGS["FPN"], *SMALL, "INSLOC.BOX_AUG", "False")).eval()
    seen = []
    for level, pooler in model.poolers.items():
        pooler.register_forward_hook(
            lambda mod, args, out, level=level: seen.append((level, args[0][0], args[1], out))
        )
    with torch.no_grad():
        model(view_batch(6, n=3, view=_view))
    strides = {"p2": 4, "p3": 8, "p4": 16, "p5": 32}
    assert [lvl for lvl, *_ in seen] == FPN_LEVELS
    for level, feature, boxes, out in seen:
        rois = [b.tensor for b in boxes]
        expected = roi_align(feature, rois, 7, 1.0 / strides[level], 0, aligned=True)
        assert feature.shape[-1] == 64 // strides[level]
        assert out.shape == (3, 256, 7, 7) and torch.allclose(out, expected, atol=1e-5)
