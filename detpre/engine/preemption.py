"""
Preemption without loss: on SIGTERM or SIGUSR1 (what Slurm sends before it kills or requeues a
job) every rank finishes its iteration, the ranks agree to stop, a full checkpoint is written and
the processes exit with a code that asks the scheduler to requeue the job.
"""

import logging
import multiprocessing
import os
import signal

import torch
import torch.distributed as dist
from detectron2.engine import HookBase
from detectron2.utils import comm

__all__ = [
    "REQUEUE_EXIT_CODE",
    "Preempted",
    "PreemptionHook",
    "forward_signals_to_children",
]

logger = logging.getLogger(__name__)

# sysexits.h's EX_TEMPFAIL ("a temporary failure: the user is invited to retry"): a run that
# stopped on a preemption signal after writing its checkpoint. Requeue it with --resume.
REQUEUE_EXIT_CODE = 75


class Preempted(SystemExit):
    """Raised on every rank after the preemption checkpoint; exits with ``REQUEUE_EXIT_CODE``."""

    def __init__(self, iteration, code=REQUEUE_EXIT_CODE):
        super().__init__(code)
        self.iteration = iteration


def _signal_numbers(names):
    numbers = []
    for name in names:
        number = getattr(signal, name, None)
        if not name.startswith("SIG") or not isinstance(number, signal.Signals):
            raise ValueError(f"SOLVER.PREEMPTION.SIGNALS: {name!r} is not a signal name")
        numbers.append(number)
    return numbers


class PreemptionHook(HookBase):
    """
    Stops a run cleanly on a preemption signal. From ``before_train`` its handler only records the
    signal; after every step the ranks agree (one all-reduce of a flag) whether any rank got one,
    and if so each saves the trainer's full checkpoint ``model_{iteration:07d}`` (written by the
    main process, atomically, ``last_checkpoint`` tagged after it: model, momentum copy, queues,
    optimizer, scheduler, iteration, hook states such as the sampler's position), waits for the
    others, passes the signal to the handler it replaced (submitit's requeues the job) and raises
    :class:`Preempted`, which exits the process with ``exit_code``. A run started with
    ``--resume`` continues from the next iteration.
    """

    def __init__(self, signals=("SIGTERM", "SIGUSR1", "SIGUSR2"), exit_code=REQUEUE_EXIT_CODE):
        """
        Args:
            signals (sequence[str]): names of the signals that stop the run; empty disables.
            exit_code (int): the exit status of a preempted process.
        """
        self.signals = _signal_numbers(signals)
        self.exit_code = int(exit_code)
        self.received = None
        self._previous = {}

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.SOLVER.PREEMPTION.SIGNALS, cfg.SOLVER.PREEMPTION.EXIT_CODE)

    def _handle(self, signum, frame):
        if self.received is None:
            logger.warning(
                f"Received {signal.Signals(signum).name}: stopping after this iteration with a "
                f"checkpoint (exit code {self.exit_code}, requeue with --resume)."
            )
        self.received = signum

    def before_train(self):
        for signum in self.signals:
            self._previous[signum] = signal.signal(signum, self._handle)

    def after_train(self):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    def stop_requested(self):
        """
        Returns:
            bool: whether any rank received a preemption signal (an all-reduce over the ranks).
        """
        flag = self.received is not None
        if comm.get_world_size() == 1:
            return flag
        device = "cpu"
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        value = torch.tensor([float(flag)], device=device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def after_step(self):
        if not self.signals or not self.stop_requested():
            return
        iteration = self.trainer.iter
        self.trainer.checkpointer.save(f"model_{iteration:07d}", iteration=iteration)
        comm.synchronize()
        logger.warning(
            f"Preempted: checkpoint of iteration {iteration} written to "
            f"{self.trainer.checkpointer.save_dir}; exiting with code {self.exit_code}."
        )
        # A handler installed before training (submitit's, which requeues the job with its
        # checkpoint() and exits) gets the signal now that the checkpoint exists.
        previous = self._previous.get(self.received)
        if callable(previous):
            previous(self.received, None)
        raise Preempted(iteration, self.exit_code)


def forward_signals_to_children(signals=(signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)):
    """
    In a launcher process whose children train: pass the preemption signals on to the children
    (which checkpoint and exit) instead of dying at once, so that a signal sent to the launcher
    alone (``kill PID``, a scheduler signalling one process) reaches every rank.

    Args:
        signals (sequence[int]): the signals to forward.

    Returns:
        dict[int, object]: the handlers replaced, to restore with ``signal.signal``.
    """

    def forward(signum, frame):
        for child in multiprocessing.active_children():
            try:
                os.kill(child.pid, signum)
            except ProcessLookupError:
                pass

    return {signum: signal.signal(signum, forward) for signum in signals}
