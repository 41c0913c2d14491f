"""Metrics of the pretraining meta-architectures, written to Detectron2's EventStorage."""

from detectron2.utils.events import get_event_storage

__all__ = ["put_scalars"]


def put_scalars(scalars):
    """
    Write scalars to the current EventStorage, if one is active (a model called outside a
    trainer, e.g. in a test or a benchmark, has none).

    Args:
        scalars (dict[str, float or Tensor]): name -> scalar value.
    """
    try:
        storage = get_event_storage()
    except (AssertionError, IndexError):
        return
    storage.put_scalars(**{k: float(v) for k, v in scalars.items()})
