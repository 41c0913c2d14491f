"""Starting a tool's ``main`` on every process, from Detectron2's standard arguments."""

from detectron2.engine import launch


def launch_from_args(main_func, args):
    """
    Run ``main_func(args)`` in ``args.num_gpus`` processes on each of ``args.num_machines``
    machines, through Detectron2's ``launch`` (NCCL on GPUs, gloo on CPUs).

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
