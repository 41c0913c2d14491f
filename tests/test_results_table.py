import csv
import math

from detpre.evaluation import flatten_results, format_markdown, write_results_table


def test_single_dataset_results_are_flattened_per_task(tmp_path):
    results = {"bbox": {"AP": 12.5, "AP50": 30.0}, "segm": {"AP": 10.25, "AP50": 25.0}}
    rows = flatten_results(results, ["coco_tiny_val"])
    assert [(r["dataset"], r["task"]) for r in rows] == [
        ("coco_tiny_val", "bbox"),
        ("coco_tiny_val", "segm"),
    ]
    table = write_results_table(results, ["coco_tiny_val"], str(tmp_path))
    lines = table.strip().splitlines()
    assert lines[0] == "| dataset | task | AP | AP50 |"
    assert lines[2] == "| coco_tiny_val | bbox | 12.50 | 30.00 |"
    assert (tmp_path / "results.md").read_text() == table
    with open(tmp_path / "results.csv") as f:
        read = list(csv.DictReader(f))
    assert float(read[1]["AP"]) == 10.25 and read[1]["task"] == "segm"


def test_several_datasets_and_nan():
    results = {"a": {"bbox": {"AP": float("nan")}}, "b": {"bbox": {"AP": 1.0, "AP75": 2.0}}}
    rows = flatten_results(results, ["a", "b"])
    assert math.isnan(rows[0]["AP"]) and rows[1]["AP75"] == 2.0
    table = format_markdown(rows)
    assert "| a | bbox | nan |  |" in table
    assert "| b | bbox | 1.00 | 2.00 |" in table


def test_per_category_ap_goes_to_csv_only(tmp_path):
    results = {"bbox": {"AP": 5.0, "AP50": 9.0, "AP-person": 7.5, "AP-traffic light": 1.0}}
    table = write_results_table(results, ["coco_tiny_val"], str(tmp_path))
    assert table.splitlines()[0] == "| dataset | task | AP | AP50 |"
    with open(tmp_path / "results.csv") as f:
        row = next(csv.DictReader(f))
    assert float(row["AP-person"]) == 7.5 and float(row["AP-traffic light"]) == 1.0
