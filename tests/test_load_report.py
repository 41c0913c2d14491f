import pytest
from fvcore.common.checkpoint import _IncompatibleKeys

from detpre.checkpoint import GROUPS, LoadReportRow, format_load_report, group_of, load_report


@pytest.mark.parametrize(
    "key, group",
    [
        ("backbone.bottom_up.res2.0.conv1.norm.weight", "backbone.bottom_up"),
        ("backbone.fpn_lateral2.weight", "backbone.fpn"),
        ("backbone.fpn_output5.bias", "backbone.fpn"),
        ("backbone.top_block.p6.weight", "backbone.fpn"),
        ("backbone.stem.conv1.weight", "backbone"),
        ("backbone.res4.5.conv3.norm.running_var", "backbone"),
        ("proposal_generator.rpn_head.conv.weight", "proposal_generator"),
        ("roi_heads.res5.2.conv3.weight", "roi_heads.res5"),
        ("roi_heads.box_head.fc1.weight", "roi_heads.box_head"),
        ("roi_heads.box_head.0.fc1.weight", "roi_heads.box_head"),  # cascade
        ("roi_heads.box_predictor.cls_score.weight", "predictors"),
        ("roi_heads.mask_head.predictor.bias", "predictors"),
        ("roi_heads.mask_head.mask_fcn1.weight", "roi_heads.mask_head"),
        ("roi_heads.mask_head.deconv.weight", "roi_heads.mask_head"),
        ("momentum.backbone.bottom_up.stem.conv1.weight", "other"),
        ("queues.res4", "other"),
        ("pixel_mean", "other"),
    ],
)
def test_group_of(key, group):
    assert group_of(key) == group
    assert group in GROUPS


def _rows_by_group(rows):
    return {r.group: r for r in rows}


def test_counts_each_outcome_once():
    model_keys = [
        "backbone.bottom_up.stem.conv1.weight",
        "backbone.bottom_up.res2.0.conv1.weight",
        "backbone.fpn_lateral2.weight",
        "backbone.fpn_output2.weight",
        "roi_heads.box_predictor.cls_score.weight",
        "roi_heads.box_predictor.cls_score.bias",
        "roi_heads.mask_head.mask_fcn1.weight",
    ]
    checkpoint_keys = [
        "backbone.bottom_up.stem.conv1.weight",
        "backbone.bottom_up.res2.0.conv1.weight",
        "backbone.fpn_lateral2.weight",
        "roi_heads.box_predictor.cls_score.weight",  # 81 classes in the file, 4 in the model
        "roi_heads.box_predictor.cls_score.bias",
        "ssl_head.projector.weight",
        "momentum.backbone.bottom_up.stem.conv1.weight",
        "roi_heads.mask_head.extra.weight",
    ]
    mismatched = [
        ("roi_heads.box_predictor.cls_score.weight", (81, 1024), (4, 1024)),
        ("roi_heads.box_predictor.cls_score.bias", (81,), (4,)),
    ]
    # as fvcore reports it: mismatched tensors were popped before the load, so they are missing too
    incompatible = _IncompatibleKeys(
        missing_keys=[
            "backbone.fpn_output2.weight",
            "roi_heads.mask_head.mask_fcn1.weight",
            "roi_heads.box_predictor.cls_score.weight",
            "roi_heads.box_predictor.cls_score.bias",
        ],
        unexpected_keys=[
            "ssl_head.projector.weight",
            "momentum.backbone.bottom_up.stem.conv1.weight",
            "roi_heads.mask_head.extra.weight",
        ],
        incorrect_shapes=mismatched,
    )
    rows = load_report(model_keys, checkpoint_keys, incompatible)
    # group, model, loaded, missing, mismatched, unexpected
    assert [tuple(r) for r in rows] == [
        ("backbone.bottom_up", 2, 2, 0, 0, 0),
        ("backbone.fpn", 2, 1, 1, 0, 0),
        ("roi_heads.mask_head", 1, 0, 1, 0, 1),
        ("predictors", 2, 0, 0, 2, 0),
        ("other", 0, 0, 0, 0, 2),
    ]
    assert [r.group for r in rows] == [g for g in GROUPS if g in {r.group for r in rows}]


def test_missing_includes_keys_detectron2_silences():
    # Detectron2 removes pixel_mean/pixel_std from missing_keys; the report still counts them
    rows = load_report(["pixel_mean", "w"], ["w"], _IncompatibleKeys([], [], []))
    assert _rows_by_group(rows)["other"] == LoadReportRow("other", 2, 1, 1, 0, 0)


def test_format_has_one_line_per_group_and_a_total():
    rows = [
        LoadReportRow("backbone.bottom_up", 265, 265, 0, 0, 0),
        LoadReportRow("backbone.fpn", 16, 0, 16, 0, 0),
        LoadReportRow("other", 0, 0, 0, 0, 7),
    ]
    lines = format_load_report(rows).splitlines()
    assert len(lines) == 2 + len(rows) + 1  # header, rule, rows, total
    cells = [[c.strip() for c in line.split("|")[1:-1]] for line in lines]
    assert cells[0] == list(LoadReportRow._fields)
    assert [c[0] for c in cells[2:]] == ["backbone.bottom_up", "backbone.fpn", "other", "total"]
    assert cells[3] == ["backbone.fpn", "16", "0", "16", "0", "0"]
    assert cells[-1] == ["total", "281", "265", "16", "0", "7"]
