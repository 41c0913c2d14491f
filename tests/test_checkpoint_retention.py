"""SOLVER.CHECKPOINT_MAX_TO_KEEP: old periodic checkpoints and their *_d2.pth exports deleted."""

import os
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from detpre.checkpoint import BoundedPeriodicCheckpointer
from detpre.checkpoint.export import ExportingCheckpointer


def write_export(state_dict, path, extra, excluded=()):
    """A stand-in for FinetuneExporter with its call signature."""
    torch.save({"model": state_dict, **extra}, path)


def run_hook(save_dir, max_to_keep, iters, max_iter):
    checkpointer = ExportingCheckpointer(nn.Linear(2, 2), str(save_dir), exporter=write_export)
    hook = BoundedPeriodicCheckpointer(checkpointer, 1, max_to_keep=max_to_keep)
    iters = list(iters)
    hook.trainer = SimpleNamespace(max_iter=max_iter, start_iter=iters[0])
    hook.before_train()
    for it in iters:
        hook.step(it)
    return sorted(os.listdir(save_dir))


def names(*iters):
    out = ["last_checkpoint", "model_final.pth", "model_final_d2.pth"]
    for it in iters:
        out += [f"model_{it:07d}.pth", f"model_{it:07d}_d2.pth"]
    return sorted(out)


@pytest.mark.parametrize("max_to_keep", [1, 2, 3])
def test_keeps_the_newest_checkpoints_and_their_exports(tmp_path, max_to_keep):
    files = run_hook(tmp_path, max_to_keep, range(6), max_iter=6)
    assert files == names(*range(6 - max_to_keep, 6))
    # What is left still resumes: last_checkpoint names the newest full checkpoint.
    assert (tmp_path / "last_checkpoint").read_text() == "model_final.pth"


def test_zero_keeps_all(tmp_path):
    assert run_hook(tmp_path, 0, range(4), max_iter=4) == names(0, 1, 2, 3)


def test_bound_holds_across_resume(tmp_path):
    """A resumed run counts the checkpoints of the killed run as the oldest ones."""
    run_hook(tmp_path, 0, range(4), max_iter=10)  # killed after iteration 3, all kept
    assert run_hook(tmp_path, 2, range(4, 6), max_iter=10) == sorted(
        set(names(4, 5)) - {"model_final.pth", "model_final_d2.pth"}
    )


@pytest.mark.parametrize("max_to_keep", [1, 2])
def test_resume_before_the_newest_checkpoint_keeps_what_it_writes(tmp_path, max_to_keep):
    """A run killed after writing model_0000003.pth but before naming it in last_checkpoint
    resumes from model_0000002.pth and writes model_0000003.pth again: that one is kept."""
    run_hook(tmp_path, 0, range(4), max_iter=10)
    assert run_hook(tmp_path, max_to_keep, [3], max_iter=10) == sorted(
        set(names(*range(4 - max_to_keep, 4))) - {"model_final.pth", "model_final_d2.pth"}
    )
    assert (tmp_path / "last_checkpoint").read_text() == "model_0000003.pth"
