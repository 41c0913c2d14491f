"""tools/plot_metrics.py: the curves drawn are the records of metrics.json."""

import json
import os
import sys

import cv2
import pytest

from detpre.evaluation.curves import read_metrics

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tools"))
import plot_metrics  # noqa: E402


def _write(folder, records):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metrics.json"), "w") as f:
        for r in records:
            f.write(json.dumps(r) + "\n\n")
    return folder


def _records(scale):
    return [
        {"iteration": i, "total_loss": scale * (10 - i), "loss_a": scale, "lr": 0.1 * i,
         "momentum": 0.99, "[metric]m/acc": i / 10, "time": 1.0}
        for i in range(0, 10, 3)
    ]  # fmt: skip


def test_runs_overlaid_hold_every_record(tmp_path):
    a = _write(str(tmp_path / "job" / "a" / "pretrain"), _records(1.0))
    b_records = _records(2.0)
    # a resumed run logs iteration 6 again: its last record counts
    b_records.insert(3, dict(b_records[2], total_loss=99.0))
    b = _write(str(tmp_path / "job" / "b" / "pretrain"), b_records)
    out = str(tmp_path / "curves.png")
    written = plot_metrics.main(plot_metrics.get_parser().parse_args([a, b, "-o", out]))
    assert written == [out]
    image = cv2.imread(out)
    assert image.shape[:2] == (400, 2000)  # 4 panels of 5 x 4 inches at 100 dpi
    fig = plot_metrics.plot_curves(
        {"a/pretrain": read_metrics(a), "b/pretrain": read_metrics(b)}, str(tmp_path / "x.png")
    )
    lines = {line.get_label(): line for ax in fig.axes for line in ax.get_lines()}
    assert sorted(ax.get_title() for ax in fig.axes) == sorted(
        ["losses", "pretext accuracy", "learning rate", "momentum"]
    )
    assert list(lines["a/pretrain: total_loss"].get_xdata()) == [0, 3, 6, 9]
    assert list(lines["a/pretrain: total_loss"].get_ydata()) == [10.0, 7.0, 4.0, 1.0]
    assert list(lines["b/pretrain: total_loss"].get_ydata()) == [20.0, 14.0, 99.0, 2.0]
    assert list(lines["b/pretrain: [metric]m/acc"].get_ydata()) == [0.0, 0.3, 0.6, 0.9]
    assert "a/pretrain: time" not in lines


def test_separate_images_and_bad_lines(tmp_path):
    a = _write(str(tmp_path / "a"), _records(1.0))
    args = plot_metrics.get_parser().parse_args([a, "--separate", "-o", str(tmp_path / "out")])
    assert plot_metrics.main(args) == [str(tmp_path / "out" / "a.png")]
    assert cv2.imread(str(tmp_path / "out" / "a.png")) is not None
    with open(os.path.join(a, "metrics.json"), "a") as f:
        f.write("{not json\n")
    with pytest.raises(ValueError, match=r"metrics.json, line 9: not JSON"):
        read_metrics(a)


def test_results_bars_with_the_baseline_dashed(tmp_path):
    from detpre.evaluation.curves import plot_results

    rows = [
        {"method": "random init", "bbox AP50": 33.4, "isolated": 13.3},
        {"method": "MoCo-v2", "bbox AP50": 28.3, "isolated": 20.0},
        {"method": "InsLoc", "bbox AP50": 10.3, "isolated": ""},
    ]
    fig = plot_results(rows, str(tmp_path / "r.png"), ("bbox AP50", "isolated"), "random init")
    ap, iso = fig.axes
    assert [p.get_height() for p in ap.patches] == [28.3, 10.3]
    assert [t.get_text() for t in ap.get_xticklabels()] == ["MoCo-v2", "InsLoc"]
    (line,) = ap.get_lines()
    assert line.get_linestyle() == "--" and list(line.get_ydata()) == [33.4, 33.4]
    assert [p.get_height() for p in iso.patches] == [20.0]  # InsLoc has no value there
    assert cv2.imread(str(tmp_path / "r.png")).shape[:2] == (400, 1000)
