from .build import build_evaluator, evaluator_kind
from .localization_probe import (
    extract_patch_features,
    grid_boxes,
    run_localization_probe,
    train_linear_probe,
)
from .pretext_summary import chance_level, pretext_summary
from .results_table import (
    flatten_results,
    format_markdown,
    report_final_results,
    write_results_table,
)

__all__ = [
    "build_evaluator",
    "chance_level",
    "pretext_summary",
    "evaluator_kind",
    "extract_patch_features",
    "grid_boxes",
    "run_localization_probe",
    "train_linear_probe",
    "flatten_results",
    "format_markdown",
    "report_final_results",
    "write_results_table",
]
