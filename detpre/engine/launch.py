"""
Starting a function on every process: through Detectron2's ``launch`` (which spawns the
processes), or in a process that ``torchrun`` started; a clean teardown, preemption signals passed
on to the children and their exit status (see :mod:`detpre.engine.preemption`) passed up.
"""

import gc
import logging
import os
import signal

import torch.distributed as dist
import torch.multiprocessing as mp
from detectron2.engine import launch as d2_launch
from detectron2.engine.launch import DEFAULT_TIMEOUT, _distributed_worker
from detectron2.utils import comm

from .preemption import forward_signals_to_children

__all__ = ["launch", "launch_from_args", "torchrun_environment"]

logger = logging.getLogger(__name__)

# What torchrun (torch.distributed.run) sets in every process it starts.
_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def torchrun_environment():
    """
    Returns:
        dict or None: ``{"rank", "world_size", "local_rank", "local_world_size"}`` (ints) when
        this process was started by ``torchrun``, else None.
    """
    if not all(name in os.environ for name in _TORCHRUN_VARIABLES):
        return None
    return {name.lower(): int(os.environ[name]) for name in _TORCHRUN_VARIABLES}


def _torchrun_worker(main_func, env, args, timeout=DEFAULT_TIMEOUT):
    """
    In a process that torchrun started: Detectron2's own worker (process group, local group over
    this machine's processes, device, barrier) with ``env://`` (MASTER_ADDR, MASTER_PORT) and
    torchrun's ranks, then ``main_func(*args)`` with the clean teardown.
    """
    if env["world_size"] == 1:
        return main_func(*args)
    machine_rank, local_rank = divmod(env["rank"], env["local_world_size"])
    if local_rank != env["local_rank"]:
        raise ValueError(
            f"torchrun gave RANK {env['rank']} and LOCAL_RANK {env['local_rank']} with "
            f"LOCAL_WORLD_SIZE {env['local_world_size']}: ranks must go node by node, as "
            "Detectron2's per-machine process group expects"
        )
    _distributed_worker(
        local_rank,
        _run_then_tear_down,
        env["world_size"],
        env["local_world_size"],
        machine_rank,
        "env://",
        (main_func, *args),
        timeout,
    )


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


def launch(
    main_func,
    num_gpus_per_machine,
    num_machines=1,
    machine_rank=0,
    dist_url=None,
    args=(),
    timeout=DEFAULT_TIMEOUT,
):
    """
    Detectron2's ``launch`` (NCCL on GPUs, gloo on CPUs), with every process waiting for the
    others and destroying its process group when ``main_func`` returns. Under ``torchrun``
    (RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE set) nothing is spawned: this process joins
    torchrun's group. A launcher that spawns passes SIGTERM / SIGUSR1 on to its children and
    exits with a child's exit status (75 after a preemption checkpoint).

    Args:
        main_func (callable): a picklable (module-level) function.
        num_gpus_per_machine, num_machines, machine_rank, dist_url: as for Detectron2's; under
            torchrun, ``num_gpus_per_machine * num_machines`` must be 1 (torchrun's
            ``--nproc_per_node`` and ``--nnodes`` say how many processes run).
        args (tuple): arguments of ``main_func``.
        timeout (timedelta): of the process group's collectives.

    Returns:
        what ``main_func`` returns in a single-process run; None with several processes
        (spawned, or under torchrun).
    """
    env = torchrun_environment()
    if env is not None:
        if num_machines * num_gpus_per_machine > 1:
            raise ValueError(
                f"Started by torchrun (WORLD_SIZE={env['world_size']}) with --num-gpus "
                f"{num_gpus_per_machine} --num-machines {num_machines}: drop them; torchrun's "
                "--nproc_per_node and --nnodes set the processes."
            )
        return _torchrun_worker(main_func, env, args, timeout)
    if num_machines * num_gpus_per_machine <= 1:
        return main_func(*args)  # Detectron2's launch calls it too, but drops its result
    previous = forward_signals_to_children()
    try:
        return d2_launch(
            _run_then_tear_down,
            num_gpus_per_machine,
            num_machines=num_machines,
            machine_rank=machine_rank,
            dist_url=dist_url,
            args=(main_func, *args),
            timeout=timeout,
        )
    except mp.ProcessExitedException as e:
        if e.exit_code is None or e.exit_code <= 0:  # killed by a signal
            raise
        logger.error(f"Process {e.error_index} exited with status {e.exit_code}: exiting so too.")
        raise SystemExit(e.exit_code) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


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
