"""
The yacs ViTDet backbone: the Mask R-CNN built from
configs/finetune/mask_rcnn_ViTDet_B_100ep_coco.yaml has exactly the state-dict keys and shapes of
Detectron2's stock ViTDet lazy config, and the backbone's outputs are ViTDet's.
"""

import os

import pytest
import torch
from detectron2 import model_zoo
from detectron2.config import instantiate
from detectron2.modeling import build_backbone, build_model
from detectron2.modeling.backbone.vit import SimpleFeaturePyramid, ViT

from detpre.engine import get_detpre_cfg

pytestmark = pytest.mark.usefixtures("one_thread")


def _finetune_cfg(repo_root):
    cfg = get_detpre_cfg()
    cfg.merge_from_file(
        os.path.join(repo_root, "configs/finetune/mask_rcnn_ViTDet_B_100ep_coco.yaml")
    )
    cfg.MODEL.DEVICE = "cpu"
    return cfg


def _tiny(cfg, **vit):
    cfg.MODEL.VIT.EMBED_DIM, cfg.MODEL.VIT.DEPTH, cfg.MODEL.VIT.NUM_HEADS = 64, 2, 2
    cfg.MODEL.VIT.WINDOW_BLOCK_INDEXES = [0]
    for k, v in vit.items():
        cfg.MODEL.VIT[k] = v
    return cfg


def test_yacs_model_equals_stock_lazy_config(repo_root):
    ours = build_model(_finetune_cfg(repo_root)).state_dict()
    stock = instantiate(
        model_zoo.get_config("common/models/mask_rcnn_vitdet.py").model
    ).state_dict()
    assert set(ours) == set(stock)
    assert {k: tuple(v.shape) for k, v in ours.items()} == {
        k: tuple(v.shape) for k, v in stock.items()
    }
    # ViT-B: 12 blocks, 768 wide; the stored position embeddings keep a class-token slot
    assert ours["backbone.net.pos_embed"].shape == (1, 197, 768)
    assert sum(k.endswith("attn.rel_pos_h") for k in ours) == 12
    assert ours["backbone.net.blocks.0.attn.rel_pos_h"].shape == (27, 64)  # window 14
    assert ours["backbone.net.blocks.2.attn.rel_pos_h"].shape == (127, 64)  # global at 1024


def test_backbone_outputs(repo_root):
    cfg = _tiny(_finetune_cfg(repo_root))
    cfg.MODEL.SIMPLE_FEATURE_PYRAMID.SQUARE_PAD = 0
    backbone = build_backbone(cfg)
    assert isinstance(backbone, SimpleFeaturePyramid) and isinstance(backbone.net, ViT)
    assert [b.window_size for b in backbone.net.blocks] == [14, 0]
    shapes = backbone.output_shape()
    assert {k: (s.channels, s.stride) for k, s in shapes.items()} == {
        f"p{i}": (256, 2**i) for i in range(2, 7)
    }
    out = backbone(torch.randn(1, 3, 128, 192))
    for name, x in out.items():
        assert x.shape == (1, 256, 128 // shapes[name].stride, 192 // shapes[name].stride)
    assert backbone.padding_constraints == {"size_divisiblity": 32, "square_size": 0}


@pytest.mark.parametrize("cls_token,positions", [(True, 197), (False, 196)])
def test_position_embeddings_layout(repo_root, cls_token, positions):
    cfg = _tiny(_finetune_cfg(repo_root), PRETRAIN_USE_CLS_TOKEN=cls_token, USE_REL_POS=False)
    net = build_backbone(cfg).net
    assert net.pos_embed.shape == (1, positions, 64)
    assert not any("rel_pos" in k for k in net.state_dict())


def test_bad_keys(repo_root):
    cfg = _tiny(_finetune_cfg(repo_root), WINDOW_BLOCK_INDEXES=[0, 5])
    with pytest.raises(ValueError, match="MODEL.VIT.WINDOW_BLOCK_INDEXES"):
        build_backbone(cfg)
    cfg = _tiny(_finetune_cfg(repo_root), NUM_HEADS=3)
    with pytest.raises(ValueError, match="MODEL.VIT.NUM_HEADS"):
        build_backbone(cfg)
