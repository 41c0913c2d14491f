"""
tools/convert_pretrained.py on each release format: a synthetic checkpoint with the release's key
names and shapes (tests/release_checkpoints.py) converts, loads into the matching fine-tuning
config with every converted tensor loaded and none unexpected, and holds the release's values
after the layout change (the release converters' rules, written independently in the test
module); a detpre export taken to a release's layout and back gives the same tensors.
"""

import os
import pickle
import re
import sys

import numpy as np
import pytest
import torch
from detectron2.modeling.anchor_generator import DefaultAnchorGenerator
from detectron2.modeling.backbone.vit import Attention

from detpre.checkpoint.flax_msgpack import restore_flax_bytes
from detpre.checkpoint.mmdet_convert import anchor_permutation
from detpre.checkpoint.release_formats import convert_release, detect_format, load_release

sys.path.insert(0, os.path.dirname(__file__))
import release_checkpoints as rc  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import convert_pretrained  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
FT = "configs/finetune/"


def _run(repo_root, tmp_path, obj, config, *extra, save=torch.save, name="release.pth"):
    """Save ``obj``, run the tool with ``config``; returns (report, loaded detector state, the
    .pkl's tensors, the load report rows)."""
    src = str(tmp_path / name)
    if isinstance(obj, bytes):
        with open(src, "wb") as f:
            f.write(obj)
    else:
        save(obj, src)
    out = str(tmp_path / "converted.pkl")
    args = [src, out, "--config-file", os.path.join(repo_root, config), *extra]
    captured = {}
    original = convert_pretrained.DetpreCheckpointer

    class Spy(original):
        def load(self, *a, **k):
            result = super().load(*a, **k)
            captured["model"], captured["rows"] = self.model, self.last_load_report
            return result

    convert_pretrained.DetpreCheckpointer = Spy
    try:
        report = convert_pretrained.main(
            convert_pretrained.get_parser().parse_intermixed_args(args)
        )
    finally:
        convert_pretrained.DetpreCheckpointer = original
    written = load_release(out)["model"]
    return report, captured["model"].state_dict(), written, captured["rows"]


def _assert_loaded(rows, written, state, expected):
    """Every converted tensor loaded, none unexpected or mismatched; values as the release's."""
    assert sum(r.unexpected for r in rows) == 0 and sum(r.mismatched for r in rows) == 0
    assert sum(r.loaded for r in rows) == len(written)
    assert set(written) == set(expected)
    for k, v in expected.items():
        assert torch.equal(state[k].cpu(), v.float() if v.is_floating_point() else v), k


@pytest.mark.parametrize("c4", [False, True], ids=["FPN", "C4"])
def test_insloc_release_loads_whole(c4, tv_state, repo_root, tmp_path):
    gen = torch.Generator().manual_seed(1)
    ckpt = rc.insloc(tv_state, gen, c4=c4)
    assert detect_format(ckpt) == "insloc"
    config = "mask_rcnn_R50_C4_1x_coco.yaml" if c4 else "mask_rcnn_R50_FPN_1x_coco_insloc.yaml"
    report, state, written, rows = _run(repo_root, tmp_path, ckpt, FT + config)
    _assert_loaded(rows, written, state, rc.insloc_expected(ckpt["state_dict"], c4=c4))
    assert "fc beyond the 4conv1fc head's one" in report.dropped or c4
    assert report.dropped["other copy (key / target / online alias)"]
    # the key encoder on request
    key_state, _, _, _ = convert_release(ckpt, target="c4" if c4 else "fpn", copy="key")
    expected = rc.insloc_expected(ckpt["state_dict"], c4=c4, branch="_k")
    assert set(key_state) == set(expected)
    assert all(torch.equal(key_state[k], v) for k, v in expected.items())


@pytest.mark.parametrize("raw", [False, True], ids=["extracted", "raw"])
def test_aligndet_faster_rcnn_release(raw, tv_state, repo_root, tmp_path):
    gen = torch.Generator().manual_seed(2)
    ckpt = rc.aligndet_rcnn(tv_state, gen, raw=raw)
    assert detect_format(ckpt) == "aligndet"
    sd = {k[len("backbone.") :] if raw else k: v for k, v in ckpt["state_dict"].items()
          if not raw or k.startswith("backbone.")}  # fmt: skip
    report, state, written, rows = _run(
        repo_root, tmp_path, ckpt, FT + "mask_rcnn_R50_FPN_1x_coco_aligndet.yaml"
    )
    expected = {"backbone.bottom_up." + rc.d2_resnet_name(k[9:]): v
                for k, v in sd.items() if k.startswith("backbone.") and "num_batches" not in k}  # fmt: skip
    for i in range(4):  # the FPN fine-tunes with SyncBN: its conv weights load, not the biases
        expected[f"backbone.fpn_lateral{i + 2}.weight"] = sd[f"neck.lateral_convs.{i}.conv.weight"]
        expected[f"backbone.fpn_output{i + 2}.weight"] = sd[f"neck.fpn_convs.{i}.conv.weight"]
        for leaf in ("weight", "bias"):
            expected[f"roi_heads.box_head.conv{i + 1}.{leaf}"] = sd[
                f"roi_head.bbox_head.shared_convs.{i}.conv.{leaf}"
            ]
    for leaf in ("weight", "bias"):
        expected[f"roi_heads.box_head.fc1.{leaf}"] = sd[f"roi_head.bbox_head.shared_fcs.0.{leaf}"]
        for mm, d2 in (("conv", "conv"), ("cls", "objectness_logits"), ("reg", "anchor_deltas")):
            # one anchor size per level: mmdet's and Detectron2's anchor orders agree
            expected[f"proposal_generator.rpn_head.{d2}.{leaf}"] = sd[f"rpn_head.rpn_{mm}.{leaf}"]
    _assert_loaded(rows, written, state, expected)
    assert len(report.dropped["conv bias where fine-tuning has a norm"]) == 8
    if raw:
        assert report.dropped["classifier / regressor (projector)"]


def test_aligndet_retinanet_release(tv_state, repo_root, tmp_path):
    gen = torch.Generator().manual_seed(3)
    ckpt = rc.aligndet_retinanet(tv_state, gen)
    sd = ckpt["state_dict"]
    report, state, written, rows = _run(
        repo_root, tmp_path, ckpt, FT + "retinanet_R50_FPN_1x_coco_aligndet.yaml"
    )
    expected = {"backbone.bottom_up." + rc.d2_resnet_name(k[9:]): v
                for k, v in sd.items() if k.startswith("backbone.") and "num_batches" not in k}  # fmt: skip
    for leaf in ("weight", "bias"):
        for i in range(3):
            expected[f"backbone.fpn_lateral{i + 3}.{leaf}"] = sd[
                f"neck.lateral_convs.{i}.conv.{leaf}"
            ]
            expected[f"backbone.fpn_output{i + 3}.{leaf}"] = sd[f"neck.fpn_convs.{i}.conv.{leaf}"]
        expected[f"backbone.top_block.p6.{leaf}"] = sd[f"neck.fpn_convs.3.conv.{leaf}"]
        expected[f"backbone.top_block.p7.{leaf}"] = sd[f"neck.fpn_convs.4.conv.{leaf}"]
        for i in range(4):
            expected[f"head.cls_subnet.{2 * i}.{leaf}"] = sd[f"bbox_head.cls_convs.{i}.conv.{leaf}"]
            expected[f"head.bbox_subnet.{2 * i}.{leaf}"] = sd[
                f"bbox_head.reg_convs.{i}.conv.{leaf}"
            ]
    _assert_loaded(rows, written, state, expected)
    assert sorted(report.dropped["classifier / regressor (projector)"]) == [
        "bbox_head.retina_cls.0.weight",
        "bbox_head.retina_reg.weight",
    ]


def test_rpn_anchor_order_against_both_generators():
    """mmdet's per-location order (AnchorGenerator: ratios outer, scales inner, w = s / sqrt(r),
    h = s * sqrt(r)) against Detectron2's cell anchors, with 3 sizes and 3 ratios."""
    sizes, ratios = [32.0, 40.3, 50.8], [0.5, 1.0, 2.0]
    d2 = DefaultAnchorGenerator(sizes=[sizes], aspect_ratios=[ratios], strides=[8], offset=0.0)
    d2_cell = list(d2.cell_anchors)[0]
    mm = torch.tensor([[-s / r**0.5 / 2, -s * r**0.5 / 2, s / r**0.5 / 2, s * r**0.5 / 2]
                       for r in ratios for s in sizes])  # fmt: skip
    perm = anchor_permutation(len(sizes), len(ratios))
    torch.testing.assert_close(d2_cell, mm[perm], rtol=0, atol=1e-4)
    assert anchor_permutation(1, 3) == [0, 1, 2]


@pytest.mark.parametrize("copy", ["teacher", "student"])
def test_slotcon_release(copy, tv_state, repo_root, tmp_path):
    gen = torch.Generator().manual_seed(4)
    ckpt = rc.slotcon(tv_state, gen)
    path = str(tmp_path / "slotcon.pth")
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match="--trust-pickle"):
        load_release(path)
    assert detect_format(load_release(path, trust_pickle=True)) == "slotcon"
    extra = ["--trust-pickle", "--copy", copy]
    report, state, written, rows = _run(
        repo_root, tmp_path, ckpt, FT + "mask_rcnn_R50_FPN_1x_coco_slotcon.yaml", *extra
    )
    prefix = "module.encoder_k." if copy == "teacher" else "module.encoder_q."
    expected = {"backbone.bottom_up." + rc.d2_resnet_name(k[len(prefix) :]): v
                for k, v in ckpt["model"].items() if k.startswith(prefix) and "num_batches" not in k}  # fmt: skip
    _assert_loaded(rows, written, state, expected)
    assert report.prefix == prefix


def test_slotcon_release_into_the_fcn_segmentor(tv_state, repo_root, tmp_path):
    """SlotCon's teacher into its segmentation protocol (FCN R50-D8, a plain ``backbone.*``
    ResNet): written with R50-FPN's names, moved to the segmentor's at load; every ResNet tensor
    of the segmentor is the release's, the head is left as initialised."""
    ckpt = rc.slotcon(tv_state, torch.Generator().manual_seed(5))
    extra = ["--trust-pickle", "--copy", "teacher"]
    _, state, written, rows = _run(
        repo_root, tmp_path, ckpt, "configs/semseg/fcn_R50_D8_cpu_coco_sem_seg.yaml", *extra
    )
    prefix = "module.encoder_k."
    expected = {"backbone." + rc.d2_resnet_name(k[len(prefix) :]): v
                for k, v in ckpt["model"].items() if k.startswith(prefix) and "num_batches" not in k}  # fmt: skip
    assert set(written) == {"backbone.bottom_up." + k[len("backbone.") :] for k in expected}
    assert sum(r.unexpected for r in rows) == 0 and sum(r.mismatched for r in rows) == 0
    assert sum(r.loaded for r in rows) == len(expected)
    for k, v in expected.items():
        assert torch.equal(state[k], v.float()), k
    resnet = {k for k in state if k.startswith(("backbone.stem", "backbone.res"))}
    assert {k for k in resnet if "num_batches" not in k} == set(expected)
    head = {r.group: r for r in rows}["sem_seg_head"]
    assert head.loaded == 0 and head.missing > 0


def test_slotcon_round_trip_from_a_detpre_export(load_config, tmp_path):
    """detpre's SlotCon export -> the release's layout (teacher under module.encoder_k., the
    release converter's rule backwards) -> the converter: the same tensors."""
    from detectron2.modeling import build_model

    from detpre.checkpoint.export import FinetuneExporter

    cfg = load_config("configs/pretrain/slotcon_R50_FPN_cpu_coco.yaml", "SLOTCON.HIDDEN_DIM", "64")
    model = build_model(cfg)
    path = str(tmp_path / "export.pth")
    FinetuneExporter(cfg)(model.state_dict(), path, excluded=model.export_excluded_prefixes)
    exported = torch.load(path, weights_only=False)["model"]
    inverse = {}
    for k, v in exported.items():
        name = k[len("backbone.bottom_up.") :]
        name = name.replace("stem.conv1.norm.", "bn1.").replace("stem.conv1.", "conv1.")
        name = name.replace(".shortcut.norm.", ".downsample.1.").replace(
            ".shortcut.", ".downsample.0."
        )
        name = re.sub(r"\.conv(\d)\.norm\.", r".bn\1.", name)
        name = re.sub(r"^res(\d)", lambda m: f"layer{int(m[1]) - 1}", name)
        inverse["module.encoder_k." + name] = v
    release = {"model": {**inverse, "module.grouping_k.slot_embed.weight": torch.zeros(4, 8)}}
    back, _, fmt, _ = convert_release(release, target="fpn")
    assert fmt == "slotcon"
    assert set(back) == {k for k in exported if "num_batches_tracked" not in k}
    assert all(torch.equal(back[k], exported[k]) for k in back)


def test_loca_release_into_vitdet(repo_root, tmp_path):
    dim, depth, heads, grid = 192, 2, 3, 14
    tree = rc.loca_tree(dim, depth, heads, grid, np.random.default_rng(5))
    data = rc.flax_bytes(tree)
    assert detect_format(restore_flax_bytes(data)) == "loca"
    report, state, written, rows = _run(
        repo_root, tmp_path, data, FT + "mask_rcnn_ViTDet_tiny_cpu_coco_tiny.yaml"
    )
    assert sum(r.unexpected for r in rows) == 0 and sum(r.mismatched for r in rows) == 0
    assert sum(r.loaded for r in rows) == len(written) == 2 + 1 + depth * 12
    vit = tree["teacher_weights"]
    net = "backbone.net."
    kernel = vit["ToTokenSequence_0"]["embedding"]["kernel"]
    assert torch.equal(
        state[net + "patch_embed.proj.weight"], torch.from_numpy(kernel).permute(3, 2, 0, 1)
    )
    pos = state[net + "pos_embed"]
    assert pos.shape == (1, 1 + grid * grid, dim) and not pos[0, 0].any()
    assert torch.equal(
        pos[0, 1:], torch.from_numpy(vit["ToTokenSequence_0"]["posembed_input"]).reshape(-1, dim)
    )
    block = vit["encoderblock_1"]
    attn = block["MultiHeadDotProductAttention_0"]
    q_kernel = torch.from_numpy(attn["query"]["kernel"]).reshape(dim, dim)
    assert torch.equal(state[net + "blocks.1.attn.qkv.weight"][:dim], q_kernel.T)
    assert torch.equal(
        state[net + "blocks.1.norm2.weight"], torch.from_numpy(block["LayerNorm_1"]["scale"])
    )
    fc2 = torch.from_numpy(block["MlpBlock_0"]["Dense_1"]["kernel"]).T
    assert torch.equal(state[net + "blocks.1.mlp.fc2.weight"], fc2)
    assert "final norm (ViTDet has none)" in report.dropped and "pretext heads" in report.dropped

    # Functionally: Detectron2's attention with the converted weights = Flax's multi-head
    # attention (einsum over the (D, heads, head_dim) kernels), on the same tokens.
    layer = Attention(dim, num_heads=heads, qkv_bias=True, use_rel_pos=False)
    layer.load_state_dict({k.split("attn.")[1]: v for k, v in state.items()
                           if k.startswith(net + "blocks.1.attn.") and "rel_pos" not in k})  # fmt: skip
    x = np.random.default_rng(6).standard_normal((1, 4, 4, dim)).astype(np.float32)
    q, k, v = (np.einsum("bhwd,dnk->bhwnk", x, attn[p]["kernel"]) + attn[p]["bias"]
               for p in ("query", "key", "value"))  # fmt: skip
    q, k, v = (t.reshape(1, 16, heads, -1) for t in (q, k, v))
    logits = np.einsum("bqnk,bsnk->bnqs", q, k) / np.sqrt(dim // heads)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    o = np.einsum("bnqs,bsnk->bqnk", weights, v)
    flax_out = np.einsum("bqnk,nkd->bqd", o, attn["out"]["kernel"]) + attn["out"]["bias"]
    with torch.no_grad():
        d2_out = layer(torch.from_numpy(x)).reshape(1, 16, dim)
    # float32 sums of ~200 products of unit-variance values: tolerance relative to the scale
    np.testing.assert_allclose(
        d2_out.numpy(), flax_out, rtol=1e-4, atol=1e-5 * np.abs(flax_out).max()
    )


def test_loca_position_grid_follows_the_vitdet_setting():
    tree = rc.loca_tree(32, 1, 2, 14, np.random.default_rng(7))
    state, _, _, _ = convert_release(tree, target="vit", vit={"cls_token": False, "grid": 7})
    pos = state["backbone.net.pos_embed"]
    src = torch.from_numpy(tree["teacher_weights"]["ToTokenSequence_0"]["posembed_input"])
    ref = torch.nn.functional.interpolate(src.permute(0, 3, 1, 2), size=(7, 7), mode="bicubic",
                                          align_corners=False)  # fmt: skip
    assert pos.shape == (1, 49, 32)
    torch.testing.assert_close(pos, ref.permute(0, 2, 3, 1).reshape(1, 49, 32))


def test_flax_reader_chunks_bfloat16_and_scalars():
    import msgpack

    big = np.arange(10, dtype=np.float32).reshape(2, 5)
    chunked = {"__msgpack_chunked_array__": True, "shape": {"0": 2, "1": 5},
               "chunks": {"0": big.ravel()[:6], "1": big.ravel()[6:]}}  # fmt: skip
    bf16 = np.array([1.5, -2.0], dtype=np.float32).view(np.uint32) >> 16
    payload = msgpack.packb(((2,), "bfloat16", bf16.astype(np.uint16).tobytes()), use_bin_type=True)
    data = rc.flax_bytes({"a": {"w": chunked}, "step": np.int32(3)})
    tree = restore_flax_bytes(data)
    assert np.array_equal(tree["a"]["w"], big) and tree["step"] == 3
    bf = restore_flax_bytes(msgpack.packb({"x": msgpack.ExtType(1, payload)}))["x"]
    assert bf.tolist() == [1.5, -2.0]
    with pytest.raises(ValueError, match="not a Flax"):
        restore_flax_bytes(b"\x93\x01\x02\x03")


def test_an_already_converted_release_passes_through(tv_state, repo_root, tmp_path):
    """InsLoc's Drive files are its converter's Detectron2 .pkl: loaded as they are."""
    gen = torch.Generator().manual_seed(9)
    ckpt = rc.insloc(tv_state, gen)
    expected = rc.insloc_expected(ckpt["state_dict"])
    pkl = {"model": {k: v.numpy() for k, v in expected.items()}, "matching_heuristics": True}
    path = str(tmp_path / "insloc_converted.pkl")
    with open(path, "wb") as f:
        pickle.dump(pkl, f)
    assert detect_format(load_release(path)) == "detectron2"
    _, state, written, rows = _run(
        repo_root, tmp_path, pkl, FT + "mask_rcnn_R50_FPN_1x_coco_insloc.yaml",
        save=lambda obj, p: pickle.dump(obj, open(p, "wb")), name="release.pkl",
    )  # fmt: skip
    _assert_loaded(rows, written, state, expected)


def test_unknown_layouts_name_the_keys(tv_state):
    gen = torch.Generator().manual_seed(8)
    ckpt = rc.aligndet_rcnn(tv_state, gen)
    ckpt["state_dict"]["neck.downsample_convs.0.conv.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"neck\.downsample_convs\.0\.conv\.weight"):
        convert_release(ckpt, target="fpn")
    with pytest.raises(ValueError, match="Unknown checkpoint layout.*'head.w'"):
        detect_format({"head.w": torch.zeros(1)})
    with pytest.raises(ValueError, match="LOCA's release is a ViT"):
        convert_release(rc.loca_tree(32, 1, 2, 14, np.random.default_rng(0)), target="fpn")


def test_insloc_round_trip_from_a_detpre_export(load_config, tmp_path):
    """detpre's InsLoc R50-FPN export -> the release's mmdet layout (its converter's table read
    backwards) -> the converter: the same tensors."""
    from detectron2.modeling import build_model

    from detpre.checkpoint.export import FinetuneExporter

    cfg = load_config(
        "configs/pretrain/insloc_R50_FPN_cpu_imagenet_sample.yaml", "SSL.QUEUE_SIZE", "8"
    )
    model = build_model(cfg)
    path = str(tmp_path / "export.pth")
    FinetuneExporter(cfg)(model.state_dict(), path, excluded=model.export_excluded_prefixes)
    exported = {k: v for k, v in torch.load(path, weights_only=False)["model"].items()
                if "num_batches_tracked" not in k}  # fmt: skip
    release = {}
    for k, v in exported.items():
        if k.startswith("backbone.bottom_up."):
            name = k[len("backbone.bottom_up.") :]
            name = name.replace("stem.conv1.norm.", "bn1.").replace("stem.conv1.", "conv1.")
            name = name.replace(".shortcut.norm.", ".downsample.1.")
            name = name.replace(".shortcut.", ".downsample.0.")
            name = re.sub(r"\.conv(\d)\.norm\.", r".bn\1.", name)
            name = re.sub(r"^res(\d)", lambda m: f"layer{int(m[1]) - 1}", name)
            release["backbone." + name] = v
        elif m := re.match(r"^backbone\.fpn_(lateral|output)(\d)\.(norm\.)?(\w+)$", k):
            kind = "lateral_convs" if m[1] == "lateral" else "fpn_convs"
            release[f"neck.{kind}.{int(m[2]) - 2}.{'bn' if m[3] else 'conv'}.{m[4]}"] = v
        elif m := re.match(r"^roi_heads\.box_head\.conv(\d)\.(norm\.)?(\w+)$", k):
            layer = "bn" if m[2] else "conv"
            release[f"roi_head.bbox_head.shared_convs.{int(m[1]) - 1}.{layer}.{m[3]}"] = v
        elif m := re.match(r"^roi_heads\.box_head\.fc1\.(\w+)$", k):
            release[f"roi_head.bbox_head.shared_fcs.0.{m[1]}"] = v
        else:
            raise AssertionError(f"unexpected exported key {k}")
    release["roi_head.bbox_head.fc_cls.weight"] = torch.zeros(128, 1024)
    back, _, fmt, _ = convert_release({"state_dict": release}, target="fpn")
    assert fmt == "insloc" and set(back) == set(exported)
    assert all(torch.equal(back[k], exported[k]) for k in back)
