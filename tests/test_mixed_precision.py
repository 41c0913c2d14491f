"""
Mixed precision (SOLVER.AMP.PRECISION) and channels-last (MODEL.CHANNELS_LAST) for every method.

Each method's CPU config is run on real views of the bundled images, made by its own pretext
mapper: the same weights and inputs give the float32 loss, and the loss under
``torch.autocast("cpu", dtype)`` for bfloat16 and float16; then a few optimizer steps of
:class:`MixedPrecisionTrainer` (the training loop of every detpre trainer under
``SOLVER.AMP.ENABLED``) stay finite and keep the float32 state (momentum copy, queues) float32.
"""

import copy
import itertools
import math
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.engine import hooks
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from detpre.data.build import build_pretrain_mapper, get_pretrain_dicts
from detpre.engine import DetpreTrainer, MixedPrecisionTrainer, autocast_dtype, get_detpre_cfg
from detpre.modeling.aligndet.box_contrast import box_id_contrast
from detpre.modeling.loca.cluster_losses import masked_soft_cross_entropy, mean_entropy_penalty
from detpre.modeling.loca.sinkhorn import sinkhorn_knopp
from detpre.modeling.slotcon.centering import Centering
from detpre.modeling.slotcon.semantic_grouping import attention_pool, prototype_logits
from detpre.modeling.slotcon.slot_losses import grouping_loss, slot_contrast_loss
from detpre.modeling.ssl import FeatureQueue, info_nce, momentum_update
from detpre.modeling.ssl.precision import float32_outside_autocast
from detpre.solver import build_pretrain_optimizer

SMALL = ["SOLVER.IMS_PER_BATCH", "2", "DATALOADER.NUM_WORKERS", "0", "SSL.BN_GROUPS", "1"]
# method -> (CPU config, overrides that shrink its views)
METHODS = {
    "InsLoc R50-C4": ("insloc_R50_C4_cpu_imagenet_sample.yaml", [
        "INSLOC.BACKGROUND_SIZE", "64", "INSLOC.PASTE_SIZE_RANGE", "(24, 48)",
        "INSLOC.BOX_AUG_SIZES", "(16, 32)"]),
    "InsLoc R50-FPN": ("insloc_R50_FPN_cpu_imagenet_sample.yaml", [
        "INSLOC.BACKGROUND_SIZE", "64", "INSLOC.PASTE_SIZE_RANGE", "(24, 48)",
        "INSLOC.BOX_AUG_SIZES", "(16, 32)"]),
    "MoCo-v2 R50-FPN": ("moco_v2_R50_FPN_cpu_imagenet_sample.yaml", ["MOCO.CROP_SIZE", "64"]),
    # coco_tiny_train's ground-truth boxes stand in for its selective-search proposals.
    "AlignDet R50-FPN": ("aligndet_R50_FPN_cpu_coco.yaml", [
        "DATASETS.TRAIN", "('coco_tiny_train',)", "ALIGNDET.MIN_SIZES", "(96,)",
        "ALIGNDET.MAX_SIZE", "128", "ALIGNDET.ROIS_PER_IMAGE", "32",
        "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64"]),
    "SlotCon R50-FPN": ("slotcon_R50_FPN_cpu_imagenet_sample.yaml", ["SLOTCON.CROP_SIZE", "64"]),
    "LOCA ViT": ("loca_ViT_cpu_imagenet_sample.yaml", ["LOCA.NUM_FOCAL_QUERIES", "2"]),
    "LOCA R50-FPN": ("loca_R50_FPN_cpu_imagenet_sample.yaml", ["LOCA.NUM_FOCAL_QUERIES", "2"]),
}  # fmt: skip
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
# |half loss - float32 loss| <= REL x float32 loss + ABS. These are randomly initialised networks
# whose batch norms amplify a perturbation layer after layer (Yang et al., "A Mean Field Theory of
# Batch Normalization", ICLR 2019): rounding the activations to bfloat16 moved their embeddings by
# a cosine of 0.96 (MoCo-v2 res5) to 0.7 (InsLoc's p5), float16 by 0.998 to 0.89, whatever the
# float32 islands. Measured drifts of the summed loss (2026-12-06, these inputs, 2 images):
# bfloat16 0.01 % (LOCA ViT) to 12.5 % (MoCo-v2, 0.047 of 0.378), float16 0 % to 3.5 %
# (0.013 of 0.378); the bounds are about 3x the largest. A non-finite loss, an overflow or a
# wrongly scaled term fails them.
TOLERANCE = {"bfloat16": (0.10, 0.10), "float16": (0.03, 0.03)}


def _setup(repo_root, method, *opts):
    config, small = METHODS[method]
    cfg = get_detpre_cfg()
    cfg.merge_from_file(os.path.join(repo_root, "configs", "pretrain", config))
    cfg.merge_from_list(SMALL + small + list(opts))
    torch.manual_seed(0)
    model = build_model(cfg).train()
    dicts = get_pretrain_dicts(cfg)[: cfg.SOLVER.IMS_PER_BATCH]
    mapper = build_pretrain_mapper(cfg, dicts)
    return cfg, model, [mapper(dict(d)) for d in dicts]


def _losses(model, batch, dtype=None):
    """The loss dict of one forward of a copy of ``model`` (its queues and centres untouched)."""
    model = copy.deepcopy(model)
    torch.manual_seed(1)  # the same shuffle / token draws in every precision
    with EventStorage(), torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        return {k: float(v) for k, v in model(batch).items()}


@pytest.mark.parametrize("method", list(METHODS))
def test_half_precision_losses_match_float32(repo_root, method, one_thread):
    _, model, batch = _setup(repo_root, method)
    reference = _losses(model, batch)
    total = sum(reference.values())
    assert math.isfinite(total) and total > 0
    for name, dtype in DTYPES.items():
        half = _losses(model, batch, dtype)
        assert set(half) == set(reference)
        assert all(math.isfinite(v) for v in half.values()), (name, half)
        drift = abs(sum(half.values()) - total)
        rel, eps = TOLERANCE[name]
        assert drift <= rel * total + eps, (name, reference, half)
        assert drift > 0, name  # the half path ran: autocast reached the layers


@pytest.mark.parametrize("method", list(METHODS))
def test_mixed_precision_steps_stay_finite_with_float32_state(repo_root, method, one_thread):
    for precision in ("bfloat16", "float16"):
        cfg, model, batch = _setup(repo_root, method, "SOLVER.BASE_LR", "0.01")
        float32_buffers = {
            k for k, v in model.named_buffers() if v.is_floating_point() and v.numel() > 1
        }
        trainer = MixedPrecisionTrainer(
            model,
            itertools.repeat(batch),
            build_pretrain_optimizer(cfg, model),
            precision=autocast_dtype(precision),
            device="cpu",
        )
        assert trainer.grad_scaler.is_enabled() == (precision == "float16")
        trainer.register_hooks(
            [hooks.CallbackHook(after_step=lambda t: model.momentum_update(0.99))]
        )
        before = {k: v.clone() for k, v in model.named_parameters() if v.requires_grad}
        trainer.train(0, 2)  # _write_metrics raises FloatingPointError on a non-finite loss
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                assert torch.isfinite(v).all(), (precision, k)
                assert v.dtype == torch.float32, (precision, k)
        moved = any(not torch.equal(v, model.get_parameter(k)) for k, v in before.items())
        if precision == "bfloat16":
            assert moved
        else:
            # float16: a step whose scaled gradients overflow is skipped and the scale halved
            # (randomly initialised InsLoc has gradient norms near 1e3: x 2^16 is past 65504).
            assert moved or trainer.grad_scaler.get_scale() < 2.0**16
        assert {k for k, v in model.named_buffers() if v.is_floating_point()} >= float32_buffers


def _unit(*shape, gen):
    return F.normalize(torch.randn(*shape, generator=gen), dim=-1)


def _islands(gen):
    """(name, function of tensors, its tensor inputs) for every float32 island."""
    q, negatives = _unit(8, 32, gen=gen), _unit(64, 32, gen=gen)
    k = F.normalize(q + 0.1 * torch.randn(8, 32, generator=gen), dim=1)
    ids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    maps = torch.randn(2, 16, 4, 4, generator=gen)
    slots, valid = torch.randn(2, 16, 32, generator=gen), torch.rand(2, 16, generator=gen) > 0.3
    centering = Centering(16, momentum=0.9)
    queue = FeatureQueue(16, 32)
    online, target = torch.nn.Linear(32, 8), torch.nn.Linear(32, 8)
    features = torch.randn(2, 32, 4, 4, generator=gen)
    logits = q @ negatives.t() / 0.1

    def update_centre(x):
        centering.update(x)
        return centering.center.clone()

    def enqueue(x):
        queue.enqueue(x)
        return queue.queue.clone()

    def ema(w):
        with torch.no_grad():
            online.weight.copy_(w)
        momentum_update(online, target, 0.9)
        return target.weight.clone()

    return [
        ("info_nce", lambda q, k, n: info_nce(q, k, n, 0.2)[0], (q, k, negatives)),
        ("box_id_contrast", lambda q, k: box_id_contrast(q, ids, k, ids, 0.2)[0], (q, k)),
        ("sinkhorn_knopp", lambda x: sinkhorn_knopp(x, 3, False), ((q @ negatives.t() / 0.05).softmax(1),)),
        ("grouping_loss", lambda s, t: grouping_loss(s, t, torch.zeros(16), 0.1, 0.07), (maps, maps.flip(0))),
        ("slot_contrast_loss", lambda a, b: slot_contrast_loss(a, b, valid, valid, lambda x: x, 0.2)[0], (slots, slots.flip(0))),
        ("prototype_logits", prototype_logits, (features, _unit(16, 32, gen=gen))),
        ("attention_pool", lambda f, m: attention_pool(f, m, 0.07), (features, maps)),
        ("masked_soft_cross_entropy", lambda x, t: masked_soft_cross_entropy(x, t, ids > 0), (logits, logits.softmax(1))),
        ("mean_entropy_penalty", lambda x: mean_entropy_penalty(x, False), (logits,)),
        ("Centering.update", update_centre, (q @ negatives.t()[:, :16],)),
        ("FeatureQueue.enqueue", enqueue, (k,)),
        ("momentum_update", ema, (torch.randn(8, 32, generator=gen),)),
    ]  # fmt: skip


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
def test_every_float32_island_ignores_autocast(dtype):
    """Each island, its inputs rounded to the half dtype (what the layers before it hand over),
    gives under autocast exactly what it gives in float32 on the same rounded inputs, and its
    result is float32; a plain matmul in the same context is half."""

    def fresh():  # the same inputs, and new queues / centres / EMA targets
        torch.manual_seed(0)  # the queue's and the Linear layers' initial draws
        return _islands(torch.Generator().manual_seed(0))

    for i, (name, _, inputs) in enumerate(fresh()):
        rounded = [x.to(dtype) for x in inputs]
        with torch.autocast("cpu", dtype=dtype):
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == dtype
            half = fresh()[i][1](*rounded)
        expected = fresh()[i][1](*[x.float() for x in rounded])
        assert half.dtype == torch.float32, name
        assert torch.equal(half, expected), name


def test_island_casts_nested_arguments_and_turns_autocast_off():
    @float32_outside_autocast
    def inside(x, pair, named):
        return x.dtype, pair[0].dtype, named["y"].dtype, torch.is_autocast_enabled("cpu")

    x = torch.ones(2, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert inside(x, (x, 1), named={"y": x}) == (torch.float32,) * 3 + (False,)
    # Without autocast nothing is cast.
    assert inside(x, (x, 1), named={"y": x})[:3] == (torch.bfloat16,) * 3


def test_precision_key_is_checked():
    with pytest.raises(ValueError, match="SOLVER.AMP.PRECISION must be one of .*'half'"):
        autocast_dtype("half")
    with pytest.raises(ValueError, match="SOLVER.AMP.PRECISION"):
        autocast_dtype("float32")
    assert autocast_dtype("float32", allow_float32=True) is None


@pytest.mark.parametrize("method", ["InsLoc R50-FPN", "SlotCon R50-FPN"])
def test_channels_last_gives_the_same_losses(repo_root, method, one_thread):
    cfg, model, batch = _setup(repo_root, method)
    reference = _losses(model, batch)
    cfg.MODEL.CHANNELS_LAST = True
    torch.manual_seed(0)
    model = DetpreTrainer.build_model(cfg).train()  # the same draws: the same initial weights
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    nhwc = _losses(model, batch)
    # The NHWC kernels sum in another order: through 50 random-init layers and the FPN the losses
    # moved by up to 2.3e-4 relative (loss_insloc_p5 0.79293 -> 0.79276, 2026-12-06 views).
    for k, v in reference.items():
        assert nhwc[k] == pytest.approx(v, rel=1e-3, abs=1e-5), k


def test_channels_last_fine_tuning_gives_the_same_losses(repo_root, one_thread):
    """Mask R-CNN R50-FPN fine-tuning (FinetuneTrainer.build_model, Detectron2's mapper) on two
    coco_tiny_train images: NCHW and channels-last weights give the same losses."""
    from detectron2.data import DatasetCatalog, DatasetMapper

    from detpre.engine import FinetuneTrainer

    cfg = get_detpre_cfg()
    cfg.merge_from_file(
        os.path.join(repo_root, "configs", "finetune", "mask_rcnn_R50_FPN_cpu_coco_tiny.yaml")
    )
    cfg.merge_from_list(["INPUT.MIN_SIZE_TRAIN", "(128,)", "INPUT.MAX_SIZE_TRAIN", "192"])
    mapper = DatasetMapper(cfg, is_train=True)
    batch = [mapper(dict(d)) for d in DatasetCatalog.get("coco_tiny_train")[:2]]
    losses = []
    for channels_last in (False, True):
        cfg.MODEL.CHANNELS_LAST = channels_last
        torch.manual_seed(0)
        model = FinetuneTrainer.build_model(cfg).train()
        backbone_conv = model.backbone.bottom_up.stem.conv1.weight
        assert backbone_conv.is_contiguous(memory_format=torch.channels_last) == channels_last
        torch.manual_seed(1)  # the same RPN / RoI samples
        with EventStorage():
            losses.append({k: float(v) for k, v in model(batch).items()})
    assert set(losses[0]) >= {"loss_cls", "loss_box_reg", "loss_mask", "loss_rpn_cls"}
    # Float32 summation order differs between the layouts; measured at most 1.6e-4 relative
    # (loss_cls, 2026-12-06) through the randomly initialised network.
    for k, v in losses[0].items():
        assert losses[1][k] == pytest.approx(v, rel=1e-3, abs=1e-5), k
