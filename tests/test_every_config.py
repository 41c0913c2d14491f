"""
Every YAML file under ``configs/`` merges into detpre's config (no unknown key, every ``_BASE_``
found) and builds its model on a CPU; a pretraining config's model also exports into the
detector it fine-tunes into, carrying that detector's first layer under its own name.
"""

import glob
import os

import pytest
from detectron2.modeling import build_model

from detpre.checkpoint.export import detectron2_target_shapes, export_state_dict

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CONFIGS = sorted(
    os.path.relpath(p, os.path.join(REPO, "configs"))
    for p in glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True)
)
# The detector's first layer, as Detectron2 names it, per trunk.
FIRST_LAYERS = (
    "backbone.bottom_up.stem.conv1.weight",  # R50-FPN
    "backbone.stem.conv1.weight",  # R50-C4
    "backbone.net.patch_embed.proj.weight",  # ViTDet
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_the_configs_are_found():
    # 4 folders of configs; the count guards against a glob that silently finds nothing.
    assert {c.split(os.sep)[0] for c in CONFIGS} == {"finetune", "pretrain", "selftrain", "semseg"}
    assert len(CONFIGS) >= 60


@pytest.mark.parametrize("name", CONFIGS)
def test_config_merges_and_builds(name, load_config):
    cfg = load_config(os.path.join("configs", name), "MODEL.WEIGHTS", "")
    model = build_model(cfg)
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    first = [k for k in FIRST_LAYERS if k in state]
    if not name.startswith("pretrain"):
        assert len(first) == 1, f"{name}: none of {FIRST_LAYERS} in the detector"
        return
    target = detectron2_target_shapes(cfg)
    excluded = getattr(model, "export_excluded_prefixes", ())
    exported, report = export_state_dict(state, target, cfg.SSL.EXPORT, excluded)
    assert report["num_exported"] == len(exported) > 0
    # Every exported tensor is one the detector has, with its shape, under its name.
    assert all(tuple(v.shape) == tuple(target[k]) for k, v in exported.items())
    assert len([k for k in FIRST_LAYERS if k in exported]) == 1, f"{name}: no first layer"
