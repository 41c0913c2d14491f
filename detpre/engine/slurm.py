"""
Submitting a detpre tool to Slurm through ``submitit``: one task per GPU, each joining the job's
process group as under ``torchrun``, and the job requeued with ``--resume`` after a preemption or
a time-out, so that a multi-day pretraining continues by itself.
"""

import os
import runpy
import sys

__all__ = ["SubmittedTool", "build_executor", "submission_environment"]

# The tools a job may run (under tools/ of the checkout).
TOOLS = ("pretrain_net.py", "train_net.py", "self_train.py")


def submission_environment(job_env):
    """
    The torchrun variables of one submitit task (see :func:`detpre.engine.launch`).

    Args:
        job_env (submitit.JobEnvironment): the task's environment.

    Returns:
        dict[str, str]: RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR and
        MASTER_PORT (the first node of the job, a port derived from the job id).
    """
    job_id = "".join(c for c in str(job_env.job_id) if c.isdigit()) or "0"
    return {
        "RANK": str(job_env.global_rank),
        "WORLD_SIZE": str(job_env.num_tasks),
        "LOCAL_RANK": str(job_env.local_rank),
        "LOCAL_WORLD_SIZE": str(job_env.num_tasks // max(1, job_env.num_nodes)),
        "MASTER_ADDR": job_env.hostnames[0],
        "MASTER_PORT": str(20000 + int(job_id) % 20000),
    }


class SubmittedTool:
    """
    What a submitit task runs: a detpre tool (``tools/pretrain_net.py`` ...) with its command
    line, as if started by ``torchrun``. Checkpointable: on preemption or time-out submitit
    requeues it with ``--resume`` added, and the tool's :class:`PreemptionHook` has written the
    checkpoint it resumes from.
    """

    def __init__(self, tool_path, argv):
        """
        Args:
            tool_path (str): path of the tool script.
            argv (list[str]): its arguments (no ``--num-gpus`` / ``--num-machines``: the job's
                tasks are the processes).
        """
        if os.path.basename(tool_path) not in TOOLS:
            raise ValueError(f"{tool_path}: submit one of {TOOLS}")
        if os.path.basename(tool_path) == "self_train.py" and "student" not in argv:
            raise ValueError(
                "self_train.py's pipeline starts its stages as subprocesses: submit one stage "
                "(--stage student), or run the pipeline with --num-gpus on one allocation"
            )
        for flag in ("--num-gpus", "--num-machines", "--machine-rank", "--dist-url"):
            if flag in argv:
                raise ValueError(
                    f"{flag} in the tool's arguments: the job's nodes and tasks per node set the "
                    "processes"
                )
        self.tool_path = os.path.abspath(tool_path)
        self.argv = list(argv)

    def __call__(self):
        import submitit

        os.environ.update(submission_environment(submitit.JobEnvironment()))
        sys.argv = [self.tool_path] + self.argv
        try:
            runpy.run_path(self.tool_path, run_name="__main__")
        except SystemExit as e:
            if e.code not in (None, 0):
                raise
        return self.output_dir()

    def output_dir(self):
        """str or None: the OUTPUT_DIR given on the command line."""
        if "OUTPUT_DIR" in self.argv[:-1]:
            return self.argv[self.argv.index("OUTPUT_DIR") + 1]
        return None

    def checkpoint(self, *args, **kwargs):
        """submitit's hook on preemption / time-out: the same tool again, with ``--resume``."""
        import submitit

        argv = self.argv if "--resume" in self.argv else ["--resume"] + self.argv
        return submitit.helpers.DelayedSubmission(SubmittedTool(self.tool_path, argv))


def build_executor(
    job_dir,
    *,
    nodes=1,
    gpus_per_node=8,
    cpus_per_task=10,
    timeout_min=72 * 60,
    partition=None,
    account=None,
    qos=None,
    constraint=None,
    signal_delay_s=120,
    cluster=None,
    name="detpre",
):
    """
    A submitit executor with one task per GPU.

    Args:
        job_dir (str): submitit's folder (scripts, logs, pickles), e.g. beside OUTPUT_DIR.
        nodes, gpus_per_node, cpus_per_task, timeout_min: the allocation.
        partition, account, qos, constraint (str or None): Slurm's options.
        signal_delay_s (int): seconds before the time limit at which Slurm signals the job.
        cluster (str or None): None (Slurm if available, else local), "slurm", "local" or
            "debug", as ``submitit.AutoExecutor``.
        name (str): the job name.

    Returns:
        submitit.AutoExecutor
    """
    import submitit

    executor = submitit.AutoExecutor(folder=job_dir, cluster=cluster)
    slurm = {
        "slurm_partition": partition,
        "slurm_account": account,
        "slurm_qos": qos,
        "slurm_constraint": constraint,
    }
    executor.update_parameters(
        name=name,
        nodes=nodes,
        tasks_per_node=max(1, gpus_per_node),
        gpus_per_node=gpus_per_node,
        cpus_per_task=cpus_per_task,
        timeout_min=timeout_min,
        slurm_signal_delay_s=signal_delay_s,
        **{k: v for k, v in slurm.items() if v},
    )
    return executor
