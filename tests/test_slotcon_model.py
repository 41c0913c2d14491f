import math
import os

import pytest
import torch
import torch.nn.functional as F
from detectron2.modeling import build_model
from detectron2.utils.events import EventStorage
from torch import nn
from torchvision.ops import roi_align

import detpre.modeling.slotcon.slotcon as slotcon_module
from detpre.checkpoint import DetpreCheckpointer
from detpre.checkpoint.export import FinetuneExporter
from detpre.engine import get_detpre_cfg
from detpre.modeling.slotcon import SlotCon
from detpre.modeling.slotcon.centering import Centering
from detpre.modeling.slotcon.overlap_align import align_to_overlap, overlap_boxes
from detpre.modeling.slotcon.semantic_grouping import SemanticGrouping
from detpre.modeling.slotcon.slot_losses import grouping_loss, slot_contrast_loss, valid_slots
from detpre.modeling.ssl.momentum import MomentumCopy

pytestmark = pytest.mark.usefixtures("one_thread")

PRETRAIN_ONLY = ("momentum.", "ssl_head.")
K, D = 16, 32
CONFIGS = {a: f"configs/pretrain/slotcon_R50_{a}_cpu_coco.yaml" for a in ("C4", "FPN")}
# A small head (64 hidden, D out, K prototypes) and a fixed teacher momentum of 0.9.
SMALL = ("SLOTCON.HIDDEN_DIM", 64, "SLOTCON.OUT_DIM", D, "SLOTCON.NUM_PROTOTYPES", K)
SMALL += ("SSL.MOMENTUM", 0.9, "SSL.MOMENTUM_COSINE", False)


@pytest.fixture(scope="module", params=["C4", "FPN"])
def arch_model(request, load_config):
    torch.manual_seed(0)
    cfg = load_config(CONFIGS[request.param], *SMALL)
    return request.param, cfg, build_model(cfg)


def _view(gen, size):
    """A SlotCon view: its crop box in the image and its flip, drawn around the image."""
    x0, y0 = torch.randint(0, 40, (2,), generator=gen).tolist()
    return {
        "image": torch.randint(0, 256, (3, *size), dtype=torch.uint8, generator=gen),
        "crop_box": torch.tensor([x0, y0, x0 + 60.0, y0 + 50.0]),
        "flipped": bool(torch.rand(1, generator=gen) < 0.5),
    }


# --- overlap alignment -----------------------------------------------------------------------


def test_overlap_alignment_of_a_known_pair_of_crops_undoes_flips():
    image = torch.randn(1, 3, 12, 16)
    # view A: crop x 0-10, y 0-12, kept at its size; view B: crop x 4-16, y 2-12, flipped.
    crop_a, crop_b = torch.tensor([[0.0, 0, 10, 12]]), torch.tensor([[4.0, 2, 16, 12]])
    map_a = image[:, :, 0:12, 0:10]
    map_b = image[:, :, 2:12, 4:16].flip(-1)
    box_a, ok_a = overlap_boxes(crop_a, crop_b, torch.tensor([False]))
    box_b, ok_b = overlap_boxes(crop_b, crop_a, torch.tensor([True]))
    # intersection x 4-10, y 2-12: in A at (4, 2, 10, 12) of 10 x 12; in B at (0, 0, 6, 10) of
    # 12 x 10, mirrored: (6, 0, 12, 10)
    torch.testing.assert_close(box_a, torch.tensor([[4 / 10, 2 / 12, 1.0, 1.0]]))
    torch.testing.assert_close(box_b, torch.tensor([[6 / 12, 0.0, 1.0, 1.0]]))
    assert ok_a.tolist() == ok_b.tolist() == [True]
    expected = image[:, :, 2:12, 4:10]
    # one-pixel bins, one sample each at the pixel centre: the aligned maps are the pixels
    got_a = align_to_overlap(map_a, box_a, torch.tensor([False]), (10, 6))
    got_b = align_to_overlap(map_b, box_b, torch.tensor([True]), (10, 6))
    assert torch.allclose(got_a, expected, atol=1e-6)
    assert torch.allclose(got_b, expected, atol=1e-6)


def test_overlap_alignment_with_resized_views_and_a_coarser_map():
    image = torch.randn(2, 4, 20, 20)
    # view A: crop (2, 4)-(14, 20) resized x2 to 32 x 24 (h, w); its map has stride 2, so it
    # holds the crop's pixels. View B: crop (6, 0)-(20, 14) at its size, map stride 1.
    crop_a = torch.tensor([[2.0, 4, 14, 20]]).repeat(2, 1)
    crop_b = torch.tensor([[6.0, 0, 20, 14]]).repeat(2, 1)
    flip_a, flip_b = torch.tensor([True, False]), torch.tensor([False, True])
    map_a = image[:, :, 4:20, 2:14].clone()
    map_b = image[:, :, 0:14, 6:20].clone()
    map_a[0], map_b[1] = map_a[0].flip(-1), map_b[1].flip(-1)
    box_a, _ = overlap_boxes(crop_a, crop_b, flip_a)
    box_b, _ = overlap_boxes(crop_b, crop_a, flip_b)
    # intersection x 6-14, y 4-14: in A's crop (12 x 16) at (4, 0, 12, 10), mirrored for image 0
    expected_a = [[0.0, 0.0, 8 / 12, 10 / 16], [4 / 12, 0.0, 1.0, 10 / 16]]
    expected_b = [[0.0, 4 / 14, 8 / 14, 1.0], [6 / 14, 4 / 14, 1.0, 1.0]]
    torch.testing.assert_close(box_a, torch.tensor(expected_a))
    torch.testing.assert_close(box_b, torch.tensor(expected_b))
    expected = image[:, :, 4:14, 6:14]
    got_a = align_to_overlap(map_a, box_a, flip_a, (10, 8))
    got_b = align_to_overlap(map_b, box_b, flip_b, (10, 8))
    assert torch.allclose(got_a, expected, atol=1e-6)
    assert torch.allclose(got_b, expected, atol=1e-6)


@pytest.mark.parametrize("side", [112, 224])
def test_alignment_at_the_view_size_against_pixel_ground_truth(side):
    """A res5 map of a side x side view has ceil(side / 32) cells (4 at 112, 7 at 224), so a
    cell spans side / cells view pixels, as the release maps its normalised boxes (coords x map
    size). A map whose cell (i, j) holds the normalised view position of its centre, aligned over
    a box, gives at each output bin the normalised position of the bin's centre."""
    cells = math.ceil(side / 32)
    centres = (torch.arange(cells, dtype=torch.float32) + 0.5) / cells
    grid = torch.stack(torch.meshgrid(centres, centres, indexing="ij"))[None]  # (1, 2, m, m)
    # a box well inside the cell centres, where bilinear interpolation is exact
    box = torch.tensor([[0.3, 0.2, 0.7, 0.6]])
    out_size = (5, 5)
    got = align_to_overlap(grid, box, torch.tensor([False]), out_size)
    ys = 0.2 + (torch.arange(5) + 0.5) / 5 * 0.4
    xs = 0.3 + (torch.arange(5) + 0.5) / 5 * 0.4
    expected = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))[None]
    assert torch.allclose(got, expected, atol=1e-5)
    if side % 32:  # a fixed 1 / 32 of the view's pixels looks elsewhere (3.5 cells, not 4)
        wrong = align_to_overlap(grid, box * (side / 32) / cells, torch.tensor([False]), out_size)
        assert (wrong - expected).abs().max() > 0.02


def test_an_overlap_reaching_the_crop_borders_is_whole_cells():
    """A crop inside the other: its overlap is the whole view, exactly (0, 0, 1, 1), so the RoI
    is exactly the map (7 x 7 cells at 224) and RoIAlign's adaptive sampling takes one sample per
    bin, as the release's normalised boxes give. A box computed in view pixels (90 * 224 / 90 =
    224.00002) crossed 7 cells and took 2 x 2 samples: up to 1.05 apart on random logits."""
    inner = torch.tensor([[30.0, 30, 90, 120]])
    outer = torch.tensor([[0.0, 0, 150, 150]])
    box, ok = overlap_boxes(inner, outer, torch.tensor([False]))
    assert ok.tolist() == [True] and box.tolist() == [[0.0, 0.0, 1.0, 1.0]]
    box_flipped, _ = overlap_boxes(inner, outer, torch.tensor([True]))
    assert box_flipped.tolist() == [[0.0, 0.0, 1.0, 1.0]]
    torch.manual_seed(0)
    logits = torch.randn(1, 16, 7, 7)
    # The release's rule (models/slotcon.py invaug): roi_align over the fractions x map size.
    reference = roi_align(logits, [torch.tensor([[0.0, 0.0, 7.0, 7.0]])], (7, 7), aligned=True)
    got = align_to_overlap(logits, box, torch.tensor([False]))
    torch.testing.assert_close(got, reference, rtol=0, atol=0)


def test_slotcon_aligns_over_the_map_size(arch_model, monkeypatch, view_batch):
    """At 112 px the maps are 4 x 4 and every aligned box is a fraction of its view."""
    arch, cfg, model = arch_model
    seen = []
    original = slotcon_module.align_to_overlap
    monkeypatch.setattr(
        slotcon_module,
        "align_to_overlap",
        lambda maps, boxes, flipped: seen.append((maps.shape[-2:], boxes))
        or original(maps, boxes, flipped),
    )
    with torch.no_grad(), EventStorage():
        model.train()(view_batch(7, n=2, sizes=((112, 112),) * 2, view=_view))
    assert seen and all(tuple(m) == (4, 4) for m, _ in seen)
    assert all(float(b.min()) >= 0 and float(b.max()) <= 1 for _, b in seen)


def test_disjoint_crops_have_no_overlap():
    boxes, ok = overlap_boxes(
        torch.tensor([[0.0, 0, 10, 10]]), torch.tensor([[10.0, 0, 20, 10]]), torch.tensor([False])
    )
    assert ok.tolist() == [False] and boxes.tolist() == [[0.0, 0.0, 1.0, 1.0]]


# --- grouping, slots and losses --------------------------------------------------------------


def test_valid_slots_are_the_prototypes_that_win_a_pixel():
    logits = torch.randn(3, 5, 2, 2)
    logits[1] = -1.0
    logits[1, 2] = 1.0  # prototype 2 wins every pixel of image 1
    valid = valid_slots(logits)
    for n in range(3):
        winners = {int(logits[n, :, i, j].argmax()) for i in range(2) for j in range(2)}
        assert {k for k in range(5) if valid[n, k]} == winners
    assert valid[1].tolist() == [False, False, True, False, False]


def test_semantic_grouping_logits_and_attention_pooling():
    torch.manual_seed(0)
    grouping = SemanticGrouping(4, 6, temperature=0.5)
    x = torch.randn(2, 6, 3, 3)
    slots, logits = grouping(x)
    protos = grouping.prototypes.weight
    for n, k, i, j in [(0, 1, 2, 0), (1, 3, 1, 1)]:
        assert torch.isclose(logits[n, k, i, j], F.cosine_similarity(protos[k], x[n, :, i, j], 0))
    for n in range(2):
        for k in range(4):
            w = torch.stack(
                [
                    torch.softmax(logits[n, :, i, j] / 0.5, 0)[k] + 1e-6
                    for i in range(3)
                    for j in range(3)
                ]
            )
            pix = x[n].flatten(1).t()  # (9, 6), row-major like the weights
            assert torch.allclose(slots[n, k], (w[:, None] * pix).sum(0) / w.sum(), atol=1e-5)


def test_grouping_loss_against_a_direct_computation():
    torch.manual_seed(1)
    s, t = torch.randn(2, 5, 3, 3, requires_grad=True), torch.randn(2, 5, 3, 3)
    center = torch.randn(5)
    per_image = []
    for n in range(2):
        terms = []
        for i in range(3):
            for j in range(3):
                target = torch.softmax((t[n, :, i, j] - center) / 0.07, 0)
                terms.append(-(target * torch.log_softmax(s[n, :, i, j] / 0.1, 0)).sum())
        per_image.append(torch.stack(terms).mean())
    loss = grouping_loss(s, t, center, 0.1, 0.07)
    assert torch.isclose(loss, torch.stack(per_image).mean(), atol=1e-5)
    weighted = grouping_loss(s, t, center, 0.1, 0.07, weights=torch.tensor([0.0, 1.0]))
    assert torch.isclose(weighted, per_image[1], atol=1e-5)
    none = grouping_loss(s, t, center, 0.1, 0.07, weights=torch.zeros(2))
    none.backward()
    assert none.item() == 0.0 and s.grad is not None


def test_slot_contrast_loss_against_a_direct_computation():
    torch.manual_seed(2)
    n, k, d, tau = 3, 4, 8, 0.2
    q, kk = torch.randn(n, k, d), torch.randn(n, k, d)
    q_valid = torch.rand(n, k) < 0.7
    k_valid = torch.rand(n, k) < 0.7
    q_valid[0, :2] = k_valid[0, :2] = True
    predictor = nn.Linear(d, d)
    loss, acc = slot_contrast_loss(q, kk, q_valid, k_valid, predictor, tau)

    keys = [(a, b) for a in range(n) for b in range(k) if k_valid[a, b]]
    key_mat = torch.stack([F.normalize(kk[a, b], dim=0) for a, b in keys])
    losses, hits = [], []
    for a in range(n):
        for b in range(k):
            if q_valid[a, b] and k_valid[a, b]:
                p = F.normalize(predictor(q[a, b]), dim=0)
                logits = key_mat @ p / tau
                pos = keys.index((a, b))
                losses.append(-torch.log_softmax(logits, 0)[pos])
                hits.append(float(logits.argmax() == pos))
    assert torch.isclose(loss, torch.stack(losses).mean() * 2 * tau, atol=1e-5)
    assert acc.item() == pytest.approx(sum(hits) / len(hits))
    loss.backward()
    assert predictor.weight.grad.abs().sum() > 0


def test_slot_contrast_loss_without_pairs_is_zero_with_gradients():
    predictor = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    q, kk = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    q_valid = torch.zeros(2, 3, dtype=torch.bool)
    q_valid[0, 0] = True
    loss, acc = slot_contrast_loss(
        q, kk, q_valid, torch.ones(2, 3, dtype=torch.bool), predictor, 0.2
    )
    loss.backward()
    assert loss.item() == 0.0 and acc.item() == 0.0
    assert all(p.grad is not None for p in predictor.parameters())


def test_centering_is_an_ema_of_the_mean_logits():
    center = Centering(3, momentum=0.9)
    a = torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]])
    center.update(a)
    assert torch.allclose(center.center, 0.1 * a.mean(0))
    b = torch.tensor([[0.0, 10.0, 0.0]])
    center.update(b)
    assert torch.allclose(center.center, 0.9 * 0.1 * a.mean(0) + 0.1 * b[0])
    with pytest.raises(ValueError, match="logits"):
        center.update(torch.zeros(2, 4))


def test_submodule_momentum_copy_of_dotted_paths():
    owner = nn.Module()
    owner.trunk = nn.Linear(2, 2)
    owner.head = nn.ModuleDict({"a": nn.Linear(2, 3), "b": nn.Linear(3, 3)})
    copy = MomentumCopy({"trunk": owner.trunk, "head.a": owner.head["a"]})
    assert set(copy.state_dict()) == {"trunk.weight", "trunk.bias", "head.a.weight", "head.a.bias"}
    before = copy.head.a.weight.clone()
    with torch.no_grad():
        owner.head["a"].weight.add_(1.0)
    copy.update(owner, 0.75)
    assert torch.allclose(copy.head.a.weight, 0.75 * before + 0.25 * owner.head["a"].weight)
    copy.reset(owner)
    assert torch.equal(copy.head.a.weight, owner.head["a"].weight)
    assert not any(p.requires_grad for p in copy.parameters())


# --- the meta-architecture ---------------------------------------------------------------------


def test_names_follow_the_invariant(arch_model):
    arch, cfg, model = arch_model
    assert isinstance(model, SlotCon)
    keys = set(model.state_dict())
    handed = {k for k in keys if not k.startswith(PRETRAIN_ONLY)}
    d2_cfg = cfg.clone()
    d2_cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    d2_keys = set(build_model(d2_cfg).state_dict())
    assert handed and handed <= d2_keys
    prefixes = ("backbone.", "roi_heads.res5.") if arch == "C4" else ("backbone.",)
    assert {k for k in d2_keys if k.startswith(prefixes)} == handed
    # the teacher: trunk, projector and prototypes; never the predictor or the centre
    teacher = {k[len("momentum.") :] for k in keys if k.startswith("momentum.")}
    student_parts = ("ssl_head.projector.", "ssl_head.grouping.")
    assert teacher == handed | {k for k in keys if k.startswith(student_parts)}
    assert model.ssl_head["grouping"].prototypes.weight.shape == (K, D)
    assert model.has_unused_parameters == (arch == "FPN")


def test_train_step_losses_gradients_centre_and_momentum(arch_model, run_momentum_hook, view_batch):
    arch, cfg, model = arch_model
    model.train()
    model.zero_grad()
    model.momentum.reset(model)
    model.ssl_head["center"].center.zero_()
    batch = view_batch(0, n=3, view=_view)
    with EventStorage() as storage:
        losses = model(batch)
    assert sorted(losses) == ["loss_slotcon_contrast", "loss_slotcon_group"]
    total = sum(losses.values())
    assert torch.isfinite(total)
    assert losses["loss_slotcon_group"].item() > 0 and losses["loss_slotcon_contrast"].item() > 0
    total.backward()
    for k, p in model.named_parameters():
        if k.startswith("momentum."):
            assert p.grad is None and not p.requires_grad, k
        elif arch == "FPN" and k.startswith(("backbone.fpn_", "backbone.top_block")):
            assert p.grad is None, k
        else:
            assert p.grad is not None, k
    metrics = storage.latest()
    assert 0.0 <= metrics["[metric]slotcon/contrast_acc"][0] <= 1.0
    assert 1.0 <= metrics["[metric]slotcon/valid_slots"][0] <= K

    # the centre moved from 0 by 0.1 x the mean teacher logits of both views
    with torch.no_grad():
        logits = [
            model.encode(model.momentum, model.preprocess([x["views"][i]["image"] for x in batch]))[
                2
            ]
            for i in range(2)
        ]
    mean = torch.cat(logits).permute(0, 2, 3, 1).flatten(0, 2).mean(0)
    assert torch.allclose(model.ssl_head["center"].center, 0.1 * mean, atol=1e-5)

    # the trainer's momentum hook moves the teacher by the EMA rule, m = SSL.MOMENTUM
    params = dict(model.named_parameters())
    with torch.no_grad():
        for p in params.values():
            if p.grad is not None:
                p -= 0.5 * p.grad
    before = {k: p.detach().clone() for k, p in params.items() if k.startswith("momentum.")}
    run_momentum_hook(model, cfg, iteration=0, max_iter=10)
    moved = 0
    for k, p in before.items():
        expected = 0.9 * p + 0.1 * params[k[len("momentum.") :]]
        assert torch.allclose(params[k], expected, rtol=1e-5, atol=1e-6), k
        moved += int(not torch.equal(params[k], p))
    assert moved > 0
    model.zero_grad()


def test_grouping_loss_ignores_images_whose_crops_do_not_overlap(arch_model, view_batch):
    _, _, model = arch_model
    model.train()
    batch = view_batch(1, n=2, view=_view)
    for x in batch:  # disjoint crops in every image
        x["views"][0]["crop_box"] = torch.tensor([0.0, 0.0, 10.0, 10.0])
        x["views"][1]["crop_box"] = torch.tensor([20.0, 0.0, 30.0, 10.0])
    with EventStorage() as storage, torch.no_grad():
        losses = model(batch)
    assert losses["loss_slotcon_group"].item() == 0.0
    assert storage.latest()["slotcon/overlap_fraction"][0] == 0.0


def test_exported_teacher_loads_into_finetuning(arch_model, repo_root, tmp_path):
    arch, cfg, model = arch_model
    with torch.no_grad():  # make the student and the teacher differ
        for k, p in model.named_parameters():
            if k.startswith("momentum."):
                p.add_(0.01 * torch.randn_like(p))
    assert cfg.SSL.EXPORT == "momentum"
    path = str(tmp_path / "export_d2.pth")
    FinetuneExporter(cfg)(model.state_dict(), path)
    exported = torch.load(path, map_location="cpu", weights_only=False)["model"]
    state = model.state_dict()
    assert exported and not any(k.startswith(PRETRAIN_ONLY) for k in exported)
    for k, v in exported.items():
        assert torch.equal(v, state["momentum." + k]), k

    name = (
        "faster_rcnn_R50_C4_cpu_bccd.yaml"
        if arch == "C4"
        else "mask_rcnn_R50_FPN_cpu_coco_tiny.yaml"
    )
    ft_cfg = get_detpre_cfg()
    ft_cfg.merge_from_file(os.path.join(repo_root, "configs/finetune", name))
    ft_model = build_model(ft_cfg)
    checkpointer = DetpreCheckpointer(ft_model)
    checkpointer.load(path)
    rows = {row.group: row for row in checkpointer.last_load_report}
    ft_state = ft_model.state_dict()
    groups = (
        ("backbone", "roi_heads.res5") if arch == "C4" else ("backbone.bottom_up", "backbone.fpn")
    )
    for group in groups:
        row = rows[group]
        # Res5ROIHeadsExtraNorm's extra norm is new in fine-tuning: nothing else may be missing
        new = (
            sum(k.startswith("roi_heads.res5.norm.") for k in ft_state)
            if group.endswith("res5")
            else 0
        )
        assert row.loaded > 0 and row.missing == new and row.mismatched == 0, row
    assert sum(row.unexpected for row in rows.values()) == 0
    assert sum(row.loaded for row in rows.values()) == len(exported)
    for k, v in exported.items():
        assert torch.equal(ft_state[k], v), k
    model.momentum.reset(model)


def test_eval_returns_teacher_assignments_without_state_change(arch_model):
    _, _, model = arch_model
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    images = [torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8) for _ in range(2)]
    with torch.no_grad():
        out = model([{"image": im} for im in images])
    assert len(out) == 2 and out[0]["logits"].shape == (K, 2, 2)
    assert out[0]["logits"].abs().max() <= 1.0 + 1e-5  # cosine similarities
    assert torch.allclose(torch.stack([o["logits"] for o in out]), model.assign(images))
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k
    model.train()


def test_bad_inputs(arch_model, view_batch):
    _, _, model = arch_model
    model.train()
    with pytest.raises(ValueError, match="views"):
        model([{"image": torch.zeros(3, 64, 64, dtype=torch.uint8)}])
    batch = view_batch(2, n=2, view=_view)
    del batch[0]["views"][1]["crop_box"]
    with pytest.raises(ValueError, match="SlotConViewsMapper"):
        model(batch)
    batch = view_batch(3, n=2, view=_view)
    batch[1]["views"][0]["image"] = torch.zeros(3, 96, 96, dtype=torch.uint8)
    with pytest.raises(ValueError, match="one size"):
        model(batch)


def test_bottlenecks_start_with_zero_last_norm_as_the_release(arch_model):
    """SlotCon's models/resnet.py zeroes bn3.weight of every Bottleneck; the teacher starts as
    the same copy. InsLoc and MoCo keep 1 (their releases: zero_init_residual False)."""
    arch, cfg, _ = arch_model
    torch.manual_seed(0)
    model = build_model(cfg)
    state = model.state_dict()
    norms = [k for k in state if k.endswith("conv3.norm.weight") and not k.startswith("momentum.")]
    assert len(norms) == 16  # 3 + 4 + 6 + 3 bottlenecks of ResNet-50
    for k in norms:
        assert not state[k].any() and not state["momentum." + k].any(), k
    others = [k for k in state if k.endswith(("conv1.norm.weight", "conv2.norm.weight"))]
    assert others and all((state[k] == 1).all() for k in others)
    cfg = cfg.clone()
    cfg.SLOTCON.ZERO_INIT_RESIDUAL = False
    assert all((build_model(cfg).state_dict()[k] == 1).all() for k in norms)


def test_teacher_keeps_its_own_bn_statistics(arch_model, run_momentum_hook, view_batch):
    """The release's EMA moves the teacher's parameters only; its BN running statistics come
    from its own forward passes (the exported teacher carries them)."""
    arch, cfg, model = arch_model
    model.train()
    model.momentum.reset(model)
    student_bn = [m for m in model.backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in student_bn:
            bn.running_mean.fill_(5.0)
    teacher = {k: b.clone() for k, b in model.momentum.named_buffers()}
    run_momentum_hook(model, cfg, iteration=0, max_iter=10)
    after = dict(model.momentum.named_buffers())
    assert all(torch.equal(teacher[k], after[k]) for k in teacher)
    assert not any((b == 5.0).all() for k, b in after.items() if k.endswith("running_mean"))
    # a teacher forward in train mode moves its own statistics
    views = view_batch(3, n=3, view=_view)[0]["views"]
    with torch.no_grad():
        model.encode(model.momentum, model.preprocess([v["image"] for v in views]))
    moved = dict(model.momentum.named_buffers())
    assert any(not torch.equal(teacher[k], moved[k]) for k in teacher if k.endswith("running_mean"))
