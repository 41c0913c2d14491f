"""The trainer-model contract (PretrainingMetaArch) for every method of the methods table, and
the one view splitter (detpre/views.py)."""

import pytest
import torch
from detectron2.modeling import META_ARCH_REGISTRY, build_model
from detectron2.structures import Boxes, Instances

from detpre.engine import PretrainTrainer
from detpre.methods import METHODS
from detpre.modeling.meta_arch import PretrainingMetaArch
from detpre.views import split_views

# One tiny CPU config per meta-architecture of the table (the smallest that builds each).
CONFIGS = {
    "MoCoV2": "configs/pretrain/moco_v2_R50_C4_cpu_imagenet_sample.yaml",
    "InsLoc": "configs/pretrain/insloc_R50_C4_cpu_imagenet_sample.yaml",
    "SlotCon": "configs/pretrain/slotcon_R50_C4_cpu_imagenet_sample.yaml",
    "LOCA": "configs/pretrain/loca_R50_C4_cpu_imagenet_sample.yaml",
    "AlignDet": "configs/pretrain/aligndet_R50_C4_cpu_coco.yaml",
    "AlignDetRetinaNet": "configs/pretrain/aligndet_retinanet_R50_FPN_cpu_coco.yaml",
}


def test_configs_cover_the_table():
    archs = {a for m in METHODS.values() for a in m.meta_architectures}
    assert archs == set(CONFIGS)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def built(request, load_config):
    cfg = load_config(
        CONFIGS[request.param],
        "SSL.QUEUE_SIZE",
        "8",
        "MODEL.PIXEL_MEAN",
        "[10.0, 20.0, 30.0]",
        "MODEL.PIXEL_STD",
        "[2.0, 4.0, 5.0]",
    )
    return request.param, cfg, build_model(cfg)


def test_every_method_inherits_the_contract(built):
    arch, cfg, model = built
    assert isinstance(model, PretrainingMetaArch)
    assert issubclass(META_ARCH_REGISTRY.get(arch), PretrainingMetaArch)
    assert model.method and model.mapper_name == cfg.SSL.MAPPER
    assert model.device == torch.device("cpu")
    # Normalisation: (x - mean) / std per channel, whatever the input's dtype.
    x = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    mean = torch.tensor([10.0, 20.0, 30.0])[:, None, None]
    std = torch.tensor([2.0, 4.0, 5.0])[:, None, None]
    assert torch.equal(model.normalize(x), (x.float() - mean) / std)


def test_the_momentum_copy_holds_exactly_the_declared_teacher_parts(built):
    _, _, model = built
    online = dict(model.named_parameters())
    expected = {
        f"momentum.{part}.{name}"
        for part in model.teacher_parts
        for name, _ in model.get_submodule(part).named_parameters()
    }
    copy = {f"momentum.{k}" for k, _ in model.momentum.named_parameters()}
    assert copy == expected and expected
    assert not any(p.requires_grad for p in model.momentum.parameters())
    # m = 1 keeps the copy of every trained parameter (frozen ones are copied: AlignDet's
    # backbone); m = 0 copies the online parts.
    with torch.no_grad():
        for p in model.momentum.parameters():
            p.add_(1.0)
    snapshot = {k: v.clone() for k, v in model.momentum.named_parameters()}
    model.momentum_update(1.0)
    trained = [k for k in snapshot if model.get_parameter(k).requires_grad]
    assert trained
    for k in trained:
        assert torch.equal(model.momentum.get_parameter(k), snapshot[k]), k
    model.momentum_update(0.0)
    for name, p in model.momentum.named_parameters():
        assert torch.equal(p, online[name]), name
    model.reset_momentum()
    for name, b in model.momentum.named_buffers():
        assert torch.equal(b, model.get_buffer(name)), name


def test_momentum_default_is_the_config_value(load_config):
    cfg = load_config(CONFIGS["MoCoV2"], "SSL.QUEUE_SIZE", "8", "SSL.MOMENTUM", "0.5")
    model = build_model(cfg)
    online = dict(model.named_parameters())
    before = {k: p.clone() for k, p in model.momentum.named_parameters()}
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(2.0)
    model.momentum_update()
    for name, p in model.momentum.named_parameters():
        assert torch.allclose(p, 0.5 * before[name] + 0.5 * online[name]), name
    with pytest.raises(ValueError, match=r"SSL.MOMENTUM must be in \[0, 1\], got 1.5"):
        build_model(load_config(CONFIGS["MoCoV2"], "SSL.QUEUE_SIZE", "8", "SSL.MOMENTUM", "1.5"))


def test_the_trainer_refuses_a_detector(load_config):
    cfg = load_config("configs/finetune/faster_rcnn_R50_C4_cpu_bccd.yaml")
    with pytest.raises(ValueError, match="'GeneralizedRCNN' is not a pretraining"):
        PretrainTrainer.build_model(cfg)


def _view(**keys):
    return {"image": torch.zeros(3, 4, 4, dtype=torch.uint8), **keys}


def test_split_views_regroups_by_position():
    batch = [{"views": [_view(flipped=i), _view(flipped=10 + i)]} for i in range(3)]
    first, second = split_views(batch, ("a", "b"), ("image", "flipped"))
    assert [v["flipped"] for v in first] == [0, 1, 2]
    assert [v["flipped"] for v in second] == [10, 11, 12]
    more = [{"views": [_view(flipped=(i, j)) for j in range(4)]} for i in range(2)]
    out = split_views(more, ("ref", "query"), more=True)
    assert [[v["flipped"] for v in group] for group in out] == [[(0, j), (1, j)] for j in range(4)]


def test_split_views_errors_name_input_view_key_and_mapper():
    two = [{"views": [_view(), _view()]}]
    with pytest.raises(ValueError, match=r"Input 0 must have 'views': \[a\] \(got 2 views\); "):
        split_views(two, ("a",))
    with pytest.raises(ValueError, match=r"Input 1 must have 'views'.*got keys \['image'\].*M1"):
        split_views([two[0], {"image": None}], ("a", "b"), mapper="M1")
    bad = [{"views": [_view(), _view(crop_box=1)]}]
    with pytest.raises(ValueError, match=r"Input 0, a: .*'crop_box' and 'flipped'.*\['crop_box'"):
        split_views(bad, ("a", "b"), ("crop_box", "flipped"))
    mixed = [{"views": [_view()] * 3}, {"views": [_view()] * 4}]
    with pytest.raises(ValueError, match=r"different numbers of views \[3, 4\]"):
        split_views(mixed, ("a", "b"), more=True)
    with pytest.raises(ValueError, match="Unknown view keys"):
        split_views(two, ("a", "b"), ("crop",))


def test_box_views_need_ids(load_config):
    model = build_model(load_config(CONFIGS["AlignDet"])).train()
    inst = Instances((8, 8), gt_boxes=Boxes(torch.tensor([[0.0, 0.0, 4.0, 4.0]])))
    batch = [{"views": [_view(instances=inst), _view(instances=inst)]}]
    with pytest.raises(ValueError, match=r"gt_ids; check SSL.MAPPER \(BoxDomainMapper\)"):
        model(batch)
