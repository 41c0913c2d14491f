"""Final results of a fine-tuning run as a markdown table and a CSV file."""

import csv
import logging
import math
import os
from collections import OrderedDict

from detectron2.utils import comm
from detectron2.utils.file_io import PathManager

from .sem_seg import format_sem_seg_per_class

logger = logging.getLogger(__name__)


def flatten_results(results, dataset_names):
    """
    Turn Detectron2's evaluation results into rows.

    Args:
        results (dict): what ``DefaultTrainer.test`` returns: ``{task: {metric: value}}`` for one
            dataset, ``{dataset: {task: {metric: value}}}`` for several.
        dataset_names (list[str]): the test datasets, in order.

    Returns:
        list[OrderedDict]: one row per (dataset, task) with the metrics as columns.
    """
    if len(dataset_names) == 1 and dataset_names[0] not in results:
        results = {dataset_names[0]: results}
    rows = []
    for name in dataset_names:
        for task, metrics in results.get(name, {}).items():
            row = OrderedDict(dataset=name, task=task)
            row.update((k, float(v)) for k, v in metrics.items())
            rows.append(row)
    return rows


def _columns(rows):
    columns = []
    for row in rows:
        columns.extend(c for c in row if c not in columns)
    return columns


def _fmt(value):
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.2f}"
    return str(value)


def format_markdown(rows, columns=None):
    """
    Args:
        rows (list[dict]): rows from :func:`flatten_results` (or any list of flat dicts).
        columns (list[str] or None): column order; by default every key in order of appearance.

    Returns:
        str: a GitHub markdown table.
    """
    columns = columns or _columns(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_fmt(row.get(c, "")) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def _sem_seg_tables(rows):
    # Semantic segmentation: after the summary, each dataset's per-class IoU / ACC table.
    tables = ""
    for row in rows:
        if row["task"] == "sem_seg":
            tables += f"\nPer-class results of {row['dataset']} (sem_seg):\n\n"
            tables += format_sem_seg_per_class(row)
    return tables


def write_results_table(results, dataset_names, output_dir, basename="results"):
    """
    Write ``{basename}.md`` and ``{basename}.csv`` into ``output_dir``.

    Args:
        results (dict): evaluation results, see :func:`flatten_results`.
        dataset_names (list[str]): the test datasets.
        output_dir (str): the run's OUTPUT_DIR.
        basename (str): file name without extension.

    Returns:
        str: the markdown: the summary table (one row per dataset and task, without per-class
        columns), then for each "sem_seg" row its per-class ``class | IoU | ACC`` table. The CSV
        keeps every column.
    """
    rows = flatten_results(results, dataset_names)
    columns = _columns(rows)
    # The markdown table keeps the summary metrics; per-category APs ("AP-person") go to the CSV.
    table = format_markdown(rows, [c for c in columns if "-" not in c]) + _sem_seg_tables(rows)
    PathManager.mkdirs(output_dir)
    with PathManager.open(os.path.join(output_dir, basename + ".md"), "w") as f:
        f.write(table)
    with PathManager.open(os.path.join(output_dir, basename + ".csv"), "w") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return table


def report_final_results(cfg, results):
    """
    On the main process, write the final results of a run to ``OUTPUT_DIR/results.{md,csv}``
    and log the markdown table; nothing when there are no results.

    Args:
        cfg (CfgNode): the run's config (``DATASETS.TEST``, ``OUTPUT_DIR``).
        results (dict or None): evaluation results, see :func:`flatten_results`.
    """
    if comm.is_main_process() and results:
        table = write_results_table(results, list(cfg.DATASETS.TEST), cfg.OUTPUT_DIR)
        logger.info("Final results (also in %s/results.{md,csv}):\n%s", cfg.OUTPUT_DIR, table)
