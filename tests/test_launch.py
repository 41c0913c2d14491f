"""detpre's launch: Detectron2's, plus a barrier and process-group teardown after main."""

import pytest
import torch.distributed as dist

from detpre.engine import launch
from detpre.engine.launch import _run_then_tear_down


def _add(a, b):
    return a + b


def _fail():
    raise ValueError("boom")


def test_single_process_returns_main_result():
    assert launch(_add, 1, args=(2, 3)) == 5


def test_process_group_destroyed_after_main(tmp_path):
    dist.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", world_size=1, rank=0
    )
    try:
        assert _run_then_tear_down(_add, 1, 2) == 3
        assert not dist.is_initialized()
        dist.init_process_group(
            "gloo", init_method=f"file://{tmp_path / 'store2'}", world_size=1, rank=0
        )
        with pytest.raises(ValueError, match="boom"):
            _run_then_tear_down(_fail)
        assert not dist.is_initialized()  # torn down on the error path too
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
