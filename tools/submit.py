#!/usr/bin/env python
"""
Submit a detpre tool to Slurm through submitit: one task per GPU, the process group set up from
the job's environment, and the job requeued with ``--resume`` on preemption or time-out (each
rank checkpoints first; see SOLVER.PREEMPTION).

    python tools/submit.py --nodes 4 --gpus-per-node 8 --partition learnfair --time 4320 \\
        --job-dir /checkpoint/$USER/insloc/jobs -- tools/pretrain_net.py \\
        --config-file configs/pretrain/insloc_R50_FPN_200ep_imagenet.yaml OUTPUT_DIR /checkpoint/$USER/insloc
    python tools/submit.py --cluster local --gpus-per-node 2 --wait -- tools/train_net.py ...

The job folder (default OUTPUT_DIR/submitit) holds submitit's scripts, pickles and per-task logs
(``%j_%t_log.out`` / ``.err``) beside the run's own OUTPUT_DIR.
"""

import argparse
import os
import sys

from detpre.engine.slurm import SubmittedTool, build_executor


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1, help="nodes")
    parser.add_argument("--gpus-per-node", type=int, default=8, help="GPUs (= tasks) per node")
    parser.add_argument("--cpus-per-task", type=int, default=10, help="CPU cores per task")
    parser.add_argument("--time", type=int, default=72 * 60, help="time limit in minutes")
    parser.add_argument("--partition", help="Slurm partition")
    parser.add_argument("--account", help="Slurm account")
    parser.add_argument("--qos", help="Slurm QoS")
    parser.add_argument("--constraint", help="Slurm constraint (e.g. volta32gb)")
    parser.add_argument("--signal-delay", type=int, default=120, help="seconds of warning")
    parser.add_argument("--job-dir", help="submitit's folder (default OUTPUT_DIR/submitit)")
    parser.add_argument("--name", default="detpre", help="job name")
    parser.add_argument(
        "--cluster", choices=["slurm", "local", "debug"], help="default: Slurm when available"
    )
    parser.add_argument("--wait", action="store_true", help="wait for the job and print its end")
    parser.add_argument("tool", help="tools/pretrain_net.py, tools/train_net.py or self_train.py")
    parser.add_argument("tool_args", nargs=argparse.REMAINDER, help="the tool's own arguments")
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    tool = SubmittedTool(args.tool, args.tool_args)
    job_dir = args.job_dir
    if job_dir is None:
        if tool.output_dir() is None:
            raise SystemExit("Give --job-dir, or OUTPUT_DIR among the tool's arguments")
        job_dir = os.path.join(tool.output_dir(), "submitit")
    executor = build_executor(
        job_dir,
        nodes=args.nodes,
        gpus_per_node=args.gpus_per_node,
        cpus_per_task=args.cpus_per_task,
        timeout_min=args.time,
        partition=args.partition,
        account=args.account,
        qos=args.qos,
        constraint=args.constraint,
        signal_delay_s=args.signal_delay,
        cluster=args.cluster,
        name=args.name,
    )
    job = executor.submit(tool)
    print(f"Submitted job {job.job_id}: logs in {job_dir}", flush=True)
    if args.wait:
        results = job.results()
        print(f"Job {job.job_id} finished: {results[0]}", flush=True)
    return job


if __name__ == "__main__":
    main(sys.argv[1:])
