from .build import build_evaluator, evaluator_kind
from .results_table import flatten_results, format_markdown, write_results_table

__all__ = [
    "build_evaluator",
    "evaluator_kind",
    "flatten_results",
    "format_markdown",
    "write_results_table",
]
