"""Starting a function on every process through Detectron2's ``launch``, with a clean teardown."""

import gc

import torch.distributed as dist
from detectron2.engine import launch as d2_launch
from detectron2.utils import comm

__all__ = ["launch", "launch_from_args"]


def _run_then_tear_down(main_func, *args):
    """Run ``main_func(*args)``; then, in a multi-process run, wait for every process and destroy
    the process group. Detectron2's worker returns without either: a process that exits while a
    peer still talks to it can abort in gloo's threads ("terminate called without an active
    exception"), which fails the whole run. Objects of ``main_func`` left in reference cycles
    (a DistributedDataParallel and its reducer) are collected first, while the group exists."""
    try:
        return main_func(*args)
    finally:
        if dist.is_available() and dist.is_initialized():
            gc.collect()
            comm.synchronize()
            dist.destroy_process_group()


def launch(main_func, num_gpus_per_machine, num_machines=1, machine_rank=0, dist_url=None, args=()):
    """
    Detectron2's ``launch`` (NCCL on GPUs, gloo on CPUs), with every process waiting for the
    others and destroying its process group when ``main_func`` returns.

    Args:
        main_func (callable): a picklable (module-level) function.
        num_gpus_per_machine, num_machines, machine_rank, dist_url: as for Detectron2's.
        args (tuple): arguments of ``main_func``.

    Returns:
        what ``main_func`` returns in a single-process run; None otherwise.
    """
    if num_machines * num_gpus_per_machine <= 1:
        return main_func(*args)  # Detectron2's launch calls it too, but drops its result
    return d2_launch(
        _run_then_tear_down,
        num_gpus_per_machine,
        num_machines=num_machines,
        machine_rank=machine_rank,
        dist_url=dist_url,
        args=(main_func, *args),
    )


def launch_from_args(main_func, args):
    """
    Run ``main_func(args)`` in ``args.num_gpus`` processes on each of ``args.num_machines``
    machines (see :func:`launch`).

    Args:
        main_func (callable): the tool's main, taking the parsed arguments.
        args (argparse.Namespace): from ``detectron2.engine.default_argument_parser``.

    Returns:
        what ``main_func`` returns in a single-process run; None otherwise.
    """
    return launch(
        main_func,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )
