"""
Semantic-segmentation evaluation: Detectron2's ``SemSegEvaluator`` (mIoU, fwIoU, mACC, pACC,
per-class IoU and accuracy) with the ground truth read by
:func:`detpre.data.sem_seg_io.read_sem_seg_label`, so a missing, undecodable, wrongly sized or
out-of-range label stops the evaluation with an error naming the file (test images are never
skipped), and a markdown report of its results.
"""

import math

from detectron2.evaluation import SemSegEvaluator

from ..data.sem_seg_io import read_sem_seg_label

__all__ = ["DetpreSemSegEvaluator", "format_sem_seg_results", "format_sem_seg_per_class"]

SUMMARY_METRICS = ("mIoU", "fwIoU", "mACC", "pACC")


class DetpreSemSegEvaluator(SemSegEvaluator):
    """
    Detectron2's ``SemSegEvaluator`` whose labels are read unchanged (palette indices for VOC's
    'P' PNGs) and checked: the label must have the input's ``height`` x ``width`` (the size the
    model's ``sem_seg`` output is resized to), the prediction that size and one channel per class
    of the metadata's ``stuff_classes``, and every label value a class id or ``ignore_label``.
    Each failure raises, naming the label file (:class:`SemSegLabelError`) or the input.
    """

    def __init__(self, dataset_name, distributed=True, output_dir=None):
        """
        Args:
            dataset_name (str): a registered dataset with ``sem_seg_file_name`` in its dicts and
                ``stuff_classes`` and ``ignore_label`` in its metadata.
            distributed (bool): gather the confusion matrices of all ranks.
            output_dir (str or None): where Detectron2 writes ``sem_seg_predictions.json`` and
                ``sem_seg_evaluation.pth``.
        """
        super().__init__(
            dataset_name,
            distributed=distributed,
            output_dir=output_dir,
            sem_seg_loading_fn=self._read_label,
        )
        self._expected_size = None

    def _read_label(self, file_name, dtype=int):
        label = read_sem_seg_label(
            file_name,
            num_classes=self._num_classes,
            ignore_label=self._ignore_label,
            image_size=self._expected_size,
        )
        return label.astype(dtype, copy=False)

    def process(self, inputs, outputs):
        """
        Args:
            inputs (list[dict]): the model's inputs: ``file_name``, and ``height`` / ``width``
                (the label's size; without them the prediction's size is used).
            outputs (list[dict]): the model's outputs: ``sem_seg``, (C, H, W) scores,
                C = ``len(stuff_classes)``.
        """
        for input, output in zip(inputs, outputs):
            file_name = input["file_name"]
            if file_name not in self.input_file_to_gt_file:
                raise KeyError(
                    f"Image {file_name} is not in dataset {self._dataset_name!r}: no label for it"
                )
            scores = output["sem_seg"]
            if scores.dim() != 3 or scores.shape[0] != self._num_classes:
                raise ValueError(
                    f"Prediction for {file_name} has shape {tuple(scores.shape)}; expected (C, H, "
                    f"W) with C = {self._num_classes} classes of dataset {self._dataset_name!r}"
                )
            pred_size = (int(scores.shape[1]), int(scores.shape[2]))
            if "height" in input and "width" in input:
                expected = (int(input["height"]), int(input["width"]))
                if pred_size != expected:
                    raise ValueError(
                        f"Prediction for {file_name} is {pred_size[0]}x{pred_size[1]} (HxW) but "
                        f"the input's height x width is {expected[0]}x{expected[1]}"
                    )
            else:
                expected = pred_size
            self._expected_size = expected
            try:
                super().process([input], [output])
            finally:
                self._expected_size = None


def _fmt(value):
    value = float(value)
    return "nan" if math.isnan(value) else f"{value:.2f}"


def _metrics(results):
    return results["sem_seg"] if "sem_seg" in results else results


def _class_names(metrics):
    return [k[len("IoU-") :] for k in metrics if k.startswith("IoU-")]


def format_sem_seg_per_class(results, class_names=None):
    """
    Args:
        results (dict): ``SemSegEvaluator.evaluate()``'s ``{"sem_seg": metrics}``, or the metrics.
        class_names (list[str] or None): the classes, in order; None takes those of the
            ``IoU-<class>`` keys.

    Returns:
        str: a markdown table ``class | IoU | ACC``, one row per class (nan: not in the ground
        truth).
    """
    metrics = _metrics(results)
    names = _class_names(metrics) if class_names is None else list(class_names)
    lines = ["| class | IoU | ACC |", "|---|---|---|"]
    for name in names:
        iou = metrics.get(f"IoU-{name}", float("nan"))
        acc = metrics.get(f"ACC-{name}", float("nan"))
        lines.append(f"| {name} | {_fmt(iou)} | {_fmt(acc)} |")
    return "\n".join(lines) + "\n"


def format_sem_seg_results(results, class_names=None):
    """
    Args:
        results (dict): ``SemSegEvaluator.evaluate()``'s ``{"sem_seg": metrics}``, or the metrics.
        class_names (list[str] or None): see :func:`format_sem_seg_per_class`.

    Returns:
        str: markdown: a one-row summary table ``mIoU | fwIoU | mACC | pACC``, a blank line, and
        the per-class table of :func:`format_sem_seg_per_class`.
    """
    metrics = _metrics(results)
    missing = [k for k in SUMMARY_METRICS if k not in metrics]
    if missing:
        raise KeyError(f"Semantic-segmentation results lack {missing}; keys: {sorted(metrics)}")
    summary = [
        "| " + " | ".join(SUMMARY_METRICS) + " |",
        "|" + "|".join("---" for _ in SUMMARY_METRICS) + "|",
        "| " + " | ".join(_fmt(metrics[k]) for k in SUMMARY_METRICS) + " |",
    ]
    return "\n".join(summary) + "\n\n" + format_sem_seg_per_class(metrics, class_names)
