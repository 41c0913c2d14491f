"""A periodic checkpointer hook that keeps a bounded number of checkpoints on disk."""

import os
import re

from detectron2.engine import hooks

EXPORT_SUFFIX = "_d2.pth"


class BoundedPeriodicCheckpointer(hooks.PeriodicCheckpointer):
    """
    Detectron2's ``PeriodicCheckpointer`` hook with fvcore's ``max_to_keep`` set from
    ``SOLVER.CHECKPOINT_MAX_TO_KEEP`` (0 keeps all), that also deletes the fine-tuning export
    ``NAME_d2.pth`` written beside a deleted ``NAME.pth`` (see ``ExportingCheckpointer``).

    The bound holds across ``--resume``: periodic checkpoints already in the output folder, from
    before the iteration training resumes at, count as the oldest ones. A ResNet-50 pretraining
    checkpoint with its momentum copy, queues and optimizer state is a few hundred MB; long
    schedules with a short period otherwise fill the disk.
    """

    def __init__(self, checkpointer, period, max_to_keep=0, **kwargs):
        """
        Args:
            checkpointer, period, kwargs: as for Detectron2's ``PeriodicCheckpointer``.
            max_to_keep (int): periodic checkpoints kept; 0 or None keeps all.
        """
        super().__init__(checkpointer, period, max_to_keep=max_to_keep or None, **kwargs)

    def before_train(self):
        super().before_train()
        if self.max_to_keep is None or not self.checkpointer.save_dir:
            return
        pattern = re.compile(re.escape(self.file_prefix) + r"_(\d{7})\.pth$")
        # Only those before the iteration training starts from: later ones (left by a run killed
        # before it updated last_checkpoint) are written again under the same name.
        start = self.trainer.start_iter
        found = []
        for name in self.path_manager.ls(self.checkpointer.save_dir):
            match = pattern.match(os.path.basename(name))
            if match and int(match.group(1)) < start:
                found.append((int(match.group(1)), os.path.basename(name)))
        self.recent_checkpoints = [
            os.path.join(self.checkpointer.save_dir, name) for _, name in sorted(found)
        ]

    def step(self, iteration, **kwargs):
        before = list(self.recent_checkpoints)
        super().step(iteration, **kwargs)
        # fvcore deletes one file per save; checkpoints found at resume may exceed the bound more.
        while self.max_to_keep is not None and len(self.recent_checkpoints) > self.max_to_keep:
            path = self.recent_checkpoints.pop(0)
            if self.path_manager.exists(path):
                self.path_manager.rm(path)
        for path in set(before) - set(self.recent_checkpoints):
            export = path[: -len(".pth")] + EXPORT_SUFFIX
            if not self.path_manager.exists(path) and self.path_manager.exists(export):
                self.path_manager.rm(export)

    @classmethod
    def from_trainer(cls, trainer):
        """The hook for a trainer whose ``cfg`` and ``checkpointer`` are set."""
        cfg = trainer.cfg
        return cls(
            trainer.checkpointer,
            cfg.SOLVER.CHECKPOINT_PERIOD,
            max_to_keep=cfg.SOLVER.CHECKPOINT_MAX_TO_KEEP,
        )
