"""
The full-size segmentation configs (ADE20K, VOC 2012 aug, Cityscapes) take what detpre's
pretraining exports: an R50-FPN or R50-C4 export (every ResNet method) loads into each ResNet
segmentor with every ResNet tensor and, for Semantic FPN, the FPN; a ViT-B export (LOCA) loads
into the linear decoder's ViT whole. The exports are the detectors the pretraining configs export
into (``SSL.EXPORT_META_ARCHITECTURE`` built from their ``MODEL.*`` keys), filled with distinct
values so that a tensor loaded under the wrong name cannot pass.
"""

import glob
import os

import pytest
import torch
from detectron2.modeling import build_model

from detpre.checkpoint import DetpreCheckpointer

pytestmark = pytest.mark.usefixtures("one_thread")

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
FULL_SIZE = sorted(
    os.path.relpath(p, REPO)
    for p in glob.glob(os.path.join(REPO, "configs", "semseg", "*.yaml"))
    if "_cpu_" not in p and not os.path.basename(p).startswith("Base-")
)
# The pretraining configs whose exports each kind of segmentor takes.
EXPORTS = {
    "resnet": (
        "configs/pretrain/slotcon_R50_FPN_200ep_imagenet.yaml",
        "configs/pretrain/slotcon_R50_C4_200ep_imagenet.yaml",
    ),
    "vit": ("configs/pretrain/loca_ViT_B_100ep_imagenet.yaml",),
}
RESNET_PARTS = ("stem", "res2", "res3", "res4", "res5")


def _export(load_config, config):
    """The state dict a pretraining config exports (its detector's), every tensor distinct."""
    cfg = load_config(config, "MODEL.WEIGHTS", "")
    cfg.MODEL.META_ARCHITECTURE = cfg.SSL.EXPORT_META_ARCHITECTURE
    state = build_model(cfg).state_dict()
    gen = torch.Generator().manual_seed(0)
    return {
        k: (torch.rand(v.shape, generator=gen) + 0.5 if v.is_floating_point() else v)
        for k, v in state.items()
        if k.startswith("backbone.") or k.startswith("roi_heads.res5.")
    }


def _resnet_relative(key):
    for prefix in ("backbone.bottom_up.", "backbone.", "roi_heads."):
        if key.startswith(prefix) and key[len(prefix) :].split(".")[0] in RESNET_PARTS:
            return key[len(prefix) :]
    return None


def test_the_full_size_configs_are_found():
    names = {os.path.basename(p) for p in FULL_SIZE}
    assert {
        "fcn_R50_D8_80k_ade20k.yaml",
        "fcn_R50_D16_30k_voc12aug.yaml",
        "fcn_R50_D16_90k_cityscapes.yaml",
        "semantic_fpn_R50_FPN_80k_ade20k.yaml",
        "linear_ViT_B_160k_ade20k.yaml",
        "linear_probe_ViT_B_160k_ade20k.yaml",
    } <= names


@pytest.mark.parametrize("config", FULL_SIZE, ids=os.path.basename)
def test_exports_load_into_the_full_size_segmentor(config, load_config, tmp_path):
    seg = build_model(load_config(config, "MODEL.WEIGHTS", ""))
    keys = {k for k in seg.state_dict() if not k.endswith("num_batches_tracked")}
    kind = "vit" if any(k.startswith("backbone.net.") for k in keys) else "resnet"
    for source in EXPORTS[kind]:
        exported = _export(load_config, source)
        path = str(tmp_path / "export.pth")
        torch.save({"model": exported, "__author__": "detpre", "matching_heuristics": False}, path)
        checkpointer = DetpreCheckpointer(seg)
        checkpointer.load(path)
        state = seg.state_dict()
        if kind == "vit":
            expected = {k: v for k, v in exported.items() if k.startswith("backbone.net.")}
        else:
            fpn = any(k.startswith("backbone.bottom_up.") for k in keys)
            prefix = "backbone.bottom_up." if fpn else "backbone."
            expected = {
                prefix + _resnet_relative(k): v
                for k, v in exported.items()
                if _resnet_relative(k) is not None and not k.endswith("num_batches_tracked")
            }
            # the FPN, where both have one with the same shapes (Semantic FPN)
            expected.update(
                (k, v)
                for k, v in exported.items()
                if k.startswith("backbone.fpn_") and k in keys and state[k].shape == v.shape
            )
        trunk = {k for k in keys if k.startswith(("backbone.net.", "backbone.bottom_up."))}
        trunk |= {k for k in keys if k.split(".")[1] in RESNET_PARTS}
        assert trunk and trunk <= set(expected), (source, sorted(trunk - set(expected))[:5])
        for k, v in expected.items():
            assert torch.equal(state[k], v), (source, k)
        rows = {r.group: r for r in checkpointer.last_load_report}
        assert sum(r.mismatched for r in rows.values()) == 0
        assert rows["sem_seg_head"].loaded == 0 and rows["sem_seg_head"].missing > 0
