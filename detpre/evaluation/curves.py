"""
Training curves from Detectron2's ``metrics.json`` (one JSON record per logged iteration): losses,
pretext accuracies, learning rate and momentum against iteration, one run or several overlaid.
"""

import json
import os
from collections import OrderedDict
from typing import Dict, List, Tuple

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or assumed
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["PANELS", "panel_keys", "plot_curves", "plot_results", "read_metrics", "series"]

# Panel title -> test on a metrics key.
PANELS = OrderedDict(
    [
        ("losses", lambda k: k == "total_loss" or k.startswith("loss_")),
        ("pretext accuracy", lambda k: k.startswith("[metric]") and "acc" in k),
        ("learning rate", lambda k: k == "lr"),
        ("momentum", lambda k: k == "momentum"),
    ]
)


def _save(fig, output):
    """Lay out, write (creating the folder) and close a figure; return it."""
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return fig


def read_metrics(path: str) -> List[Dict]:
    """
    Args:
        path (str): a ``metrics.json``, or the output directory holding it.

    Returns:
        list[dict]: its records with an ``iteration``, in file order (a resumed run's repeated
        iterations keep their last record).
    """
    if os.path.isdir(path):
        path = os.path.join(path, "metrics.json")
    by_iter = OrderedDict()
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}, line {n}: not JSON ({e})") from e
            if "iteration" in record:
                by_iter[record["iteration"]] = record
    return list(by_iter.values())


def series(records: List[Dict], key: str) -> Tuple[List[int], List[float]]:
    """
    Args:
        records (list[dict]): from :func:`read_metrics`.
        key (str): a metrics key.

    Returns:
        (list[int], list[float]): the iterations that logged ``key`` and its values there.
    """
    points = [(r["iteration"], float(r[key])) for r in records if key in r]
    return [p[0] for p in points], [p[1] for p in points]


def panel_keys(runs: Dict[str, List[Dict]]) -> "OrderedDict[str, List[str]]":
    """
    Args:
        runs (dict[str, list[dict]]): run name -> records.

    Returns:
        OrderedDict[str, list[str]]: panel title -> the keys it draws, sorted (panels without any
        key left out).
    """
    keys = sorted({k for records in runs.values() for r in records for k in r})
    out = OrderedDict()
    for title, test in PANELS.items():
        chosen = [k for k in keys if test(k)]
        if chosen:
            out[title] = chosen
    return out


def plot_curves(runs: Dict[str, List[Dict]], output: str, title: str = ""):
    """
    Draw every run's curves, one panel per kind of metric, runs overlaid (one colour per run, one
    line style per key), and save the figure.

    Args:
        runs (dict[str, list[dict]]): run name -> records (:func:`read_metrics`).
        output (str): the image file to write (PNG, JPEG, PDF by its extension).
        title (str): the figure's title.

    Returns:
        matplotlib.figure.Figure: the figure (closed), whose axes hold one line per run and key,
        labelled ``"<run>: <key>"``.
    """
    panels = panel_keys(runs)
    if not panels:
        raise ValueError(f"No loss, accuracy, lr or momentum in the metrics of {sorted(runs)}")
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    styles = ["-", "--", ":", "-."]
    for ax, (name, keys) in zip(axes[0], panels.items()):
        for i, (run, records) in enumerate(runs.items()):
            for j, key in enumerate(keys):
                x, y = series(records, key)
                if x:
                    ax.plot(x, y, styles[j % len(styles)], color=colours[i % len(colours)],
                            label=f"{run}: {key}")  # fmt: skip
        ax.set_title(name)
        ax.set_xlabel("iteration")
        ax.legend(fontsize="x-small")
        if name == "losses":
            ax.set_yscale("log")
    if title:
        fig.suptitle(title)
    return _save(fig, output)


def plot_results(rows: List[Dict], output: str, metrics: Tuple[str, ...], baseline: str):
    """
    One bar chart per metric, a bar per method, the baseline row (random initialisation) drawn
    as a dashed horizontal line instead of a bar.

    Args:
        rows (list[dict]): the main job's table rows (``"method"`` and the metric columns).
        output (str): the image file to write.
        metrics (tuple[str]): the columns to draw (numbers; rows without one are skipped).
        baseline (str): the ``"method"`` of the baseline row.

    Returns:
        matplotlib.figure.Figure: the figure (closed); each axis holds the bars of the methods
        (labelled by method) and, when the baseline has the metric, its dashed line.
    """
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        points = [(r["method"], float(r[metric])) for r in rows
                  if r["method"] != baseline and r.get(metric) not in (None, "")]  # fmt: skip
        ax.bar(range(len(points)), [v for _, v in points], color="tab:blue")
        ax.set_xticks(range(len(points)), [m for m, _ in points], rotation=30, ha="right")
        base = [float(r[metric]) for r in rows if r["method"] == baseline and r.get(metric) != ""]
        if base:
            ax.axhline(base[0], linestyle="--", color="black", label=baseline)
            ax.legend(fontsize="small")
        ax.set_title(metric)
    return _save(fig, output)
