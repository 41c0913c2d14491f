import os

import pytest
import torch
from detectron2.config import get_cfg
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage

from detpre.checkpoint.export import ExportingCheckpointer, FinetuneExporter
from detpre.config import add_detpre_config
from detpre.modeling.moco import MoCoV2
from detpre.solver import build_pretrain_optimizer

# Tiny R50 forwards are fastest single-threaded on a shared 2-core machine.
pytestmark = pytest.mark.usefixtures("one_thread")

PRETRAIN_ONLY = ("momentum.", "queues.", "ssl_head.")
CONFIGS = {a: f"configs/pretrain/moco_v2_R50_{a}_200ep_imagenet.yaml" for a in ("C4", "FPN")}
# A 5-key queue (it wraps around within a test) and m = 0.8.
SMALL = ("SSL.QUEUE_SIZE", "5", "SSL.MOMENTUM", "0.8")


def _finetune_model(repo_root, arch):
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.merge_from_file(os.path.join(repo_root, f"configs/finetune/Base-RCNN-{arch}-SyncBN.yaml"))
    cfg.MODEL.DEVICE = "cpu"
    if arch == "C4":
        cfg.MODEL.ROI_HEADS.NAME = "Res5ROIHeads"  # Faster R-CNN R50-C4
    else:
        cfg.MODEL.MASK_ON = True  # Mask R-CNN R50-FPN, 4conv1fc box head with SyncBN
    return build_model(cfg)


@pytest.mark.parametrize("arch", ["C4", "FPN"])
def test_names_match_detectron2(repo_root, arch, load_config):
    model = build_model(load_config(CONFIGS[arch], *SMALL))
    assert isinstance(model, MoCoV2)
    ours = model.state_dict()
    theirs = _finetune_model(repo_root, arch).state_dict()
    handed = {k: v for k, v in ours.items() if not k.startswith(PRETRAIN_ONLY)}
    for k, v in handed.items():
        assert k in theirs and theirs[k].shape == v.shape, k
        assert ours["momentum." + k].shape == v.shape, k
    covered = ("backbone.", "roi_heads.res5.") if arch == "C4" else ("backbone.",)
    assert [k for k in theirs if k.startswith(covered) and k not in handed] == []
    if arch == "FPN":  # no RoI head is pretrained: fine-tuning initialises it
        assert not any(k.startswith("roi_heads.") for k in ours)
    assert set(model.queues.keys()) == {"res5"}
    assert model.ssl_head.fc1.in_features == 2048


@pytest.mark.parametrize("arch", ["C4", "FPN"])
def test_train_step(arch, run_momentum_hook, load_config, view_batch):
    cfg = load_config(CONFIGS[arch], *SMALL)
    model = build_model(cfg).train()
    params = dict(model.named_parameters())
    batch = view_batch(0)
    with EventStorage() as storage:
        losses = model(batch)
    assert list(losses) == ["loss_moco"]
    assert torch.isfinite(losses["loss_moco"])
    losses["loss_moco"].backward()
    for k, p in params.items():
        if k.startswith("momentum."):
            assert p.grad is None and not p.requires_grad, k
        elif arch == "FPN" and k.startswith("backbone.fpn_"):
            assert p.grad is None, k  # MoCo-v2 on FPN pools the bottom-up res5
        else:
            assert p.grad is not None, k
    if arch == "C4":
        assert params["roi_heads.res5.2.conv3.weight"].grad.abs().sum() > 0
    assert 0.0 <= storage.latest()["[metric]moco/acc"][0] <= 1.0
    assert int(model.queues["res5"].ptr) == 2
    keys = model.encode_keys(*model.preprocess([x["views"][1] for x in batch]))
    assert torch.allclose(model.queues["res5"].queue[:2], keys["res5"], atol=1e-5)

    # forward never moves the key encoder; after an optimizer step the trainer's momentum hook
    # moves it by the EMA rule, m = SSL.MOMENTUM
    before = {k: p.detach().clone() for k, p in params.items() if k.startswith("momentum.")}
    assert all(torch.equal(p, params[k[len("momentum.") :]]) for k, p in before.items())
    with torch.no_grad():
        for p in params.values():
            if p.grad is not None:
                p -= 0.5 * p.grad
    online = {k: p.detach().clone() for k, p in params.items() if not k.startswith("momentum.")}
    run_momentum_hook(model, cfg, iteration=0, max_iter=10)
    for k, p in before.items():
        expected = 0.8 * p + 0.2 * online[k[len("momentum.") :]]
        assert torch.allclose(params[k], expected, rtol=1e-5, atol=1e-6), k
    model(view_batch(1, n=2))
    assert int(model.queues["res5"].ptr) == 4
    model(view_batch(2, n=2))
    assert int(model.queues["res5"].ptr) == 6 % 5  # wraps around K = 5


def test_bn_groups_normalise_each_sub_batch_on_its_own(load_config, view_batch):
    """SSL.BN_GROUPS G: one process computes what G GPUs with per-GPU BN compute. A query depends
    on the images of its own sub-batch only (with G = 1 every image's statistics leak into every
    query, the leak shuffle-BN exists to stop); keys are the shuffled batch cut into G sub-batches,
    each encoded alone, then put back in order."""
    cfg = load_config(CONFIGS["FPN"], *SMALL)
    cfg.SSL.BN_GROUPS = 2
    model = build_model(cfg).train()
    views = [x["views"][0] for x in view_batch(0, n=4)]
    changed = views[:2] + [x["views"][0] for x in view_batch(1, n=2)]
    with torch.no_grad():
        q = model.embed_in_groups(model, *model.preprocess(views), is_query=True)["res5"]
        q_changed = model.embed_in_groups(model, *model.preprocess(changed), True)["res5"]
        assert torch.equal(q[:2], q_changed[:2])
        assert not torch.allclose(q[2:], q_changed[2:], atol=1e-3)
        model.bn_groups = 1
        q_one = model.embed(model, *model.preprocess(views), is_query=True)["res5"]
        q_one_changed = model.embed(model, *model.preprocess(changed), is_query=True)["res5"]
        assert not torch.allclose(q_one[:2], q_one_changed[:2], atol=1e-3)
        model.bn_groups = 2

        torch.manual_seed(3)
        keys = model.encode_keys(*model.preprocess(views))["res5"]
        torch.manual_seed(3)
        perm = torch.randperm(4)  # the shuffle's draw
        expected = torch.empty_like(keys)
        for part in perm.chunk(2):
            images, _ = model.preprocess([views[i] for i in part.tolist()])
            expected[part] = model.embed(model.momentum, images, None, is_query=False)["res5"]
        assert torch.allclose(keys, expected, atol=1e-6)

    cfg.SSL.BN_GROUPS = 3
    with pytest.raises(ValueError, match="SSL.BN_GROUPS 3"):
        build_model(cfg).train()(view_batch(0, n=4))


def test_cosine_momentum_reaches_one(run_momentum_hook, load_config):
    cfg = load_config(CONFIGS["C4"], *SMALL)
    cfg.SSL.MOMENTUM_COSINE = True
    model = build_model(cfg)
    frozen = {k: v.clone() for k, v in model.momentum.named_parameters()}
    with torch.no_grad():
        for k, p in model.named_parameters():
            if not k.startswith("momentum."):
                p.add_(1.0)
    # at the last iteration the cosine schedule gives m = 1: the key encoder stays put
    run_momentum_hook(model, cfg, iteration=10, max_iter=10)
    for k, v in model.momentum.named_parameters():
        assert torch.equal(v, frozen[k]), k
    # an explicit m = 0 copies the query encoder
    model.momentum_update(0.0)
    for k, v in model.momentum.named_parameters():
        assert torch.equal(v, model.get_parameter(k)), k


def test_bad_inputs(load_config):
    model = build_model(load_config(CONFIGS["C4"], *SMALL)).train()
    with pytest.raises(ValueError, match="views"):
        model([{"views": [{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}]}])
    cfg = load_config(CONFIGS["C4"], *SMALL)
    cfg.MODEL.RESNETS.OUT_FEATURES = ["res3", "res4"]
    with pytest.raises(ValueError, match="OUT_FEATURES"):
        build_model(cfg)


@pytest.mark.parametrize(
    "name",
    [
        "moco_v2_R50_C4_200ep_imagenet.yaml",
        "moco_v2_R50_FPN_400ep_imagenet.yaml",
        "moco_v2_R50_FPN_cpu_imagenet_sample.yaml",
        "insloc_R50_FPN_200ep_imagenet.yaml",
        "insloc_R50_C4_cpu_imagenet_sample.yaml",
    ],
)
def test_optimizer_is_the_releases(repo_root, name):
    """MoCo's main_moco.py: torch SGD(lr, momentum 0.9, weight_decay 1e-4), no Nesterov. The
    InsLoc release (configs/FPN/insloc_fpn_200ep.py): the same with nesterov=True. Both decay
    every parameter (norms and biases too)."""
    cfg = get_cfg()
    add_detpre_config(cfg)
    cfg.merge_from_file(os.path.join(repo_root, "configs/pretrain", name))
    cfg.MODEL.DEVICE = "cpu"
    optimizer = build_pretrain_optimizer(cfg, build_model(cfg))
    nesterov = name.startswith("insloc")
    for group in optimizer.param_groups:
        assert group["nesterov"] is nesterov and group["momentum"] == 0.9
        assert group["weight_decay"] == pytest.approx(1e-4)


def test_fpn_export_leaves_out_the_untrained_fpn(tmp_path, load_config):
    """Through the pretraining checkpointer: MoCo-v2 on R50-FPN exports the bottom-up ResNet
    only (the FPN takes no gradient), so fine-tuning's load report does not count it loaded."""
    cfg = load_config(CONFIGS["FPN"], *SMALL)
    model = build_model(cfg)
    assert model.export_excluded_prefixes == ("backbone.fpn_",)
    assert build_model(load_config(CONFIGS["C4"], *SMALL)).export_excluded_prefixes == ()
    ExportingCheckpointer(model, str(tmp_path), exporter=FinetuneExporter(cfg)).save("model_x")
    exported = torch.load(tmp_path / "model_x_d2.pth", map_location="cpu", weights_only=False)
    keys = set(exported["model"])
    bottom_up = {k for k in model.state_dict() if k.startswith("backbone.bottom_up.")}
    assert keys == bottom_up
