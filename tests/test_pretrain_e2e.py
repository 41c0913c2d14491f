"""
One pretraining step of every CPU pretraining config, end to end, in the style of Detectron2's
tests/modeling/test_model_e2e.py: the method's own pretext mapper on a real batch of the config's
training data, its model, one optimizer step and momentum update, the fine-tuning checkpoint
exported and loaded into the detector the config fine-tunes into, and into the segmentors of
``configs/semseg`` for its trunk (ResNet: FCN R50-D8 and Semantic FPN; ViT: the linear decoder).
A new method's ``configs/pretrain/*_cpu_*.yaml`` joins the harness by its file name.
"""

import glob
import os
import re
import uuid

import pytest
import torch
from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from detpre.checkpoint import DetpreCheckpointer
from detpre.checkpoint.export import FinetuneExporter
from detpre.data.datasets import proposals_json_path, register_proposal_set
from detpre.data.datasets.proposal_sets import PROPOSAL_IMAGE_SETS
from detpre.data.proposals import PRESETS, generate_proposals
from detpre.engine import PretrainTrainer, derive_schedule
from detpre.methods import METHODS, check_method_config, method_of
from detpre.solver import build_pretrain_optimizer

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CONFIGS = sorted(
    os.path.basename(p) for p in glob.glob(os.path.join(REPO, "configs/pretrain/*_cpu_*.yaml"))
)
# The fine-tuning config per pretraining trunk; R50-FPN fine-tunes with its method's config in the
# methods table.
FINETUNE_BY_BACKBONE = {
    backbone: os.path.join("configs/finetune", name)
    for backbone, name in (
        ("build_resnet_backbone", "faster_rcnn_R50_C4_cpu_bccd.yaml"),
        ("build_vitdet_backbone", "mask_rcnn_ViTDet_tiny_cpu_coco_tiny.yaml"),
        ("build_retinanet_resnet_fpn_backbone", "retinanet_R50_FPN_1x_coco_aligndet.yaml"),
    )
}
# The segmentors of configs/semseg a trunk's export loads into.
SEGMENTORS = {
    "resnet": (
        "configs/semseg/fcn_R50_D8_cpu_coco_sem_seg.yaml",
        "configs/semseg/semantic_fpn_R50_FPN_cpu_coco_sem_seg.yaml",
    ),
    "vit": ("configs/semseg/linear_ViT_tiny_cpu_coco_sem_seg.yaml",),
}
# The predefined proposals sets (tools/prepare_proposals.py's outputs): name -> (images, preset).
PROPOSAL_SETS = {f"{i}_proposals_{p}": (i, p) for i in PROPOSAL_IMAGE_SETS for p in PRESETS}
# The keys that make the pretraining and the fine-tuning detector the same network on the same
# inputs.
SAME_DETECTOR_KEYS = (
    "MODEL.BACKBONE.NAME",
    "MODEL.RESNETS.DEPTH",
    "MODEL.RESNETS.STRIDE_IN_1X1",
    "MODEL.RESNETS.NUM_GROUPS",
    "MODEL.RESNETS.WIDTH_PER_GROUP",
    "MODEL.VIT.PATCH_SIZE",
    "MODEL.VIT.EMBED_DIM",
    "MODEL.VIT.DEPTH",
    "MODEL.VIT.NUM_HEADS",
    "MODEL.PIXEL_MEAN",
    "MODEL.PIXEL_STD",
    "INPUT.FORMAT",
)
# The detector's first layer, as Detectron2 names it, per trunk.
FIRST_LAYERS = (
    "backbone.bottom_up.stem.conv1.weight",
    "backbone.stem.conv1.weight",
    "backbone.net.patch_embed.proj.weight",
)
# AlignDet's views at about half size (shorter side 128 for 256-320), fewer anchors and RoIs.
BOX_DOMAIN_SHRINK = [
    "ALIGNDET.MIN_SIZES", "(128,)", "ALIGNDET.MAX_SIZE", "213",
    "ALIGNDET.ROIS_PER_IMAGE", "32", "MODEL.RPN.BATCH_SIZE_PER_IMAGE", "64",
]  # fmt: skip


def _get(cfg, key):
    for part in key.split("."):
        cfg = cfg[part]
    return cfg


def _bias_replaced_by_norm(model, key):
    name, _, leaf = key.rpartition(".")
    try:
        conv = model.get_submodule(name)
    except AttributeError:
        return False
    return leaf == "bias" and conv.bias is None and getattr(conv, "norm", None) is not None


def segmentor_name(key, model_keys):
    """
    The name an exported tensor has in a segmentor, by Detectron2's layouts: a ResNet is
    ``backbone.bottom_up.*`` (R50-FPN), ``backbone.*`` + ``roi_heads.res5.*`` (R50-C4) or
    ``backbone.*`` whole (the dilated ResNet); the FPN and the ViT keep their names; None for a
    tensor the segmentor has no place for (RPN, box head, ...).
    """
    for prefix in ("backbone.bottom_up.", "backbone.", "roi_heads."):
        rest = key[len(prefix) :] if key.startswith(prefix) else None
        # stem.* and resN.<block>.* only: a C4 head's extra norm (roi_heads.res5.norm) is a head's
        if rest is not None and re.match(r"^(stem\.|res[2-5]\.\d+\.)", rest):
            if prefix == "roi_heads." and not rest.startswith("res5."):
                return None
            fpn = "backbone.bottom_up.stem.conv1.weight" in model_keys
            return ("backbone.bottom_up." if fpn else "backbone.") + rest
    return key if key.startswith(("backbone.fpn_", "backbone.net.")) and key in model_keys else None


def check_loads_into_segmentors(cfg, path, exported, load_config):
    """The export loads into every segmentor of its trunk: each tensor the segmentor has a place
    for is loaded there with its value, the head is left as initialised, the report says so."""
    trunk = "vit" if cfg.MODEL.BACKBONE.NAME == "build_vitdet_backbone" else "resnet"
    for config in SEGMENTORS[trunk]:
        seg_cfg = load_config(config, "MODEL.WEIGHTS", "")
        seg = build_model(seg_cfg)
        keys = set(seg.state_dict())
        expected = {segmentor_name(k, keys): v for k, v in exported.items()}
        expected.pop(None, None)
        assert expected and set(expected) <= keys, sorted(set(expected) - keys)[:5]
        assert any(
            k.startswith("backbone.") and "stem" in k or "patch_embed" in k for k in expected
        )
        head_before = {k: v.clone() for k, v in seg.state_dict().items() if "sem_seg_head" in k}
        checkpointer = DetpreCheckpointer(seg)
        checkpointer.load(path)
        state = seg.state_dict()
        for k, v in expected.items():
            assert torch.equal(state[k], v), (config, k)
        assert all(torch.equal(state[k], v) for k, v in head_before.items())
        rows = {r.group: r for r in checkpointer.last_load_report}
        assert sum(r.loaded for r in rows.values()) == len(expected), config
        assert sum(r.mismatched for r in rows.values()) == 0
        assert rows["sem_seg_head"].loaded == 0 and rows["sem_seg_head"].missing == len(head_before)
        # every ResNet / ViT tensor of the segmentor (its trunk) came from the export
        trunk_keys = {
            k
            for k in keys
            if k.startswith(
                ("backbone.bottom_up.", "backbone.net.", "backbone.stem", "backbone.res")
            )
            and not k.endswith("num_batches_tracked")
        }
        assert trunk_keys <= set(expected), sorted(trunk_keys - set(expected))[:5]


def finetune_config(cfg):
    if cfg.MODEL.BACKBONE.NAME in FINETUNE_BY_BACKBONE:
        return FINETUNE_BY_BACKBONE[cfg.MODEL.BACKBONE.NAME]
    return METHODS[method_of(cfg.MODEL.META_ARCHITECTURE)].finetune_config


@pytest.fixture(scope="module")
def proposal_sets(tmp_path_factory):
    """
    ``make(name, num_images)``: the predefined proposals set ``name`` (whose json is looked for in
    $DETPRE_PROPOSALS, fixed at import) over the first ``num_images`` images of its image set,
    made as tools/prepare_proposals.py makes it (the preset's filters; searched at 256 px) into a
    temporary folder and registered under a new name, which is returned.
    """
    root = str(tmp_path_factory.mktemp("proposals"))
    made = {}

    def make(name, num_images):
        if name not in made:
            images, preset = PROPOSAL_SETS[name]
            json_file = proposals_json_path(images, preset, root)
            params = dict(PRESETS[preset], resize=256)
            generate_proposals(images, json_file, workers=1, max_images=num_images, **params)
            made[name] = f"{name}_{uuid.uuid4().hex[:8]}"
            register_proposal_set(made[name], json_file, MetadataCatalog.get(images).image_root)
        return made[name]

    yield make
    for name in made.values():
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)


def _pretrain_config(load_config, name, proposal_sets, output_dir):
    """The config as PretrainTrainer runs it (learning rate scaled to the batch), shrunk."""
    cfg = load_config(os.path.join("configs/pretrain", name))
    # Shrunk for one core: one image per BN group (2 at least), no loader workers; proposals of
    # just those images.
    batch = max(2, cfg.SSL.BN_GROUPS)
    train = [proposal_sets(n, batch) if n in PROPOSAL_SETS else n for n in cfg.DATASETS.TRAIN]
    opts = ["SOLVER.IMS_PER_BATCH", str(batch), "DATALOADER.NUM_WORKERS", "0"]
    opts += ["DATASETS.TRAIN", repr(tuple(train)), "OUTPUT_DIR", str(output_dir)]
    if method_of(cfg.MODEL.META_ARCHITECTURE) == "aligndet":
        opts += BOX_DOMAIN_SHRINK
    cfg.merge_from_list(opts)
    check_method_config(cfg)
    return derive_schedule(cfg, sum(len(DatasetCatalog.get(n)) for n in cfg.DATASETS.TRAIN))


@pytest.mark.parametrize("name", CONFIGS, ids=CONFIGS)
def test_one_step_then_export_loads_into_finetuning(name, load_config, proposal_sets, tmp_path):
    cfg = _pretrain_config(load_config, name, proposal_sets, tmp_path)
    # One real batch of the config's training images through its pretext mapper.
    batch = next(iter(PretrainTrainer.build_train_loader(cfg)))
    assert len(batch) == cfg.SOLVER.IMS_PER_BATCH and all(len(x["views"]) >= 2 for x in batch)

    model = build_model(cfg).train()
    params = dict(model.named_parameters())
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    optimizer = build_pretrain_optimizer(cfg, model)
    with EventStorage(0):
        losses = model(batch)
    assert losses and all(k.startswith("loss_") for k in losses)
    assert all(torch.isfinite(v) for v in losses.values()), losses
    optimizer.zero_grad()
    sum(losses.values()).backward()
    trained = {k for k, p in params.items() if p.grad is not None}
    optimizer.step()
    # MomentumScheduleHook after the first step: SSL.MOMENTUM (a cosine schedule starts there).
    m = cfg.SSL.MOMENTUM
    model.momentum_update(m)
    after = {k: v.detach().clone() for k, v in model.state_dict().items()}

    path = str(tmp_path / "model_final_d2.pth")
    excluded = getattr(model, "export_excluded_prefixes", ())
    report = FinetuneExporter(cfg)(after, path, excluded=excluded)
    exported = torch.load(path, map_location="cpu", weights_only=False)["model"]
    assert report["num_exported"] == len(exported) > 0
    assert len([k for k in FIRST_LAYERS if k in exported]) == 1

    # The exported tensors are the copy SSL.EXPORT names (its method's), after the step.
    assert cfg.SSL.EXPORT == METHODS[method_of(cfg.MODEL.META_ARCHITECTURE)].export
    source, other = ("momentum.", "") if cfg.SSL.EXPORT == "momentum" else ("", "momentum.")
    for k, v in exported.items():
        assert torch.equal(v, after[source + k]), k
    moved = [k for k in exported if k in params and not torch.equal(exported[k], before[k])]
    assert moved, "no exported parameter moved in the step"
    # and not the other copy
    assert any(other + k in after and not torch.equal(exported[k], after[other + k]) for k in moved)
    if cfg.SSL.EXPORT == "online":
        # only what took a gradient moved (frozen layers stay; BN statistics are buffers)
        assert set(moved) <= trained
    else:
        # the EMA of the copy, equal to the online network before the step, towards the stepped
        # online network
        online = [k for k in exported if k in params]
        assert all(torch.equal(before["momentum." + k], before[k]) for k in online)
        for k in online:
            expected = m * before["momentum." + k] + (1 - m) * after[k]
            if not params[k].requires_grad:  # a frozen parameter is copied
                expected = after[k]
            torch.testing.assert_close(exported[k], expected, rtol=1e-6, atol=1e-7, msg=k)
        assert set(moved) <= {k for k in online if not torch.equal(before[k], after[k])}

    # The detector it fine-tunes into: the same trunk on the same inputs.
    ft = load_config(finetune_config(cfg), "MODEL.WEIGHTS", "")
    assert ft.MODEL.META_ARCHITECTURE == cfg.SSL.EXPORT_META_ARCHITECTURE
    for key in SAME_DETECTOR_KEYS:
        assert _get(ft, key) == _get(cfg, key), key
    d2 = build_model(ft)
    shapes = {k: v.shape for k, v in d2.state_dict().items()}
    checkpointer = DetpreCheckpointer(d2)
    checkpointer.load(path)
    check_loads_into_segmentors(cfg, path, exported, load_config)
    os.remove(path)
    # Every exported tensor is one of the detector's, with its shape, except the bias of a conv
    # pretrained without a norm that fine-tunes with one (AlignDet's FPN, as its release): the
    # fine-tuning conv has no bias, and the load drops it.
    unknown = sorted(k for k in exported if k not in shapes)
    assert unknown == sorted(k for k in unknown if _bias_replaced_by_norm(d2, k)), unknown
    kept = {k: v for k, v in exported.items() if k in shapes}
    assert kept and all(v.shape == shapes[k] for k, v in kept.items())
    rows = checkpointer.last_load_report
    assert sum(r.unexpected for r in rows) == len(unknown)
    assert sum(r.mismatched for r in rows) == 0 and sum(r.loaded for r in rows) == len(kept)
    loaded = d2.state_dict()
    for k, v in kept.items():
        assert torch.equal(loaded[k], v), k
