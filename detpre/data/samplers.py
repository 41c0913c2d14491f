"""
A training sampler whose position is part of the checkpoint: a resumed run continues the
interrupted epoch where it stopped, each image once per epoch across the interruption.
"""

import itertools
import logging

import torch
from detectron2.data.samplers import TrainingSampler
from detectron2.engine import HookBase

__all__ = ["ResumableTrainingSampler", "SamplerPositionHook"]

logger = logging.getLogger(__name__)

# Mixes the epoch into the sampler's seed: one generator per epoch, so any position is reached
# without drawing the permutations of the epochs before it.
_EPOCH_STRIDE = 1_000_003


class ResumableTrainingSampler(TrainingSampler):
    """
    Detectron2's ``TrainingSampler`` (an infinite stream of indices, epoch after epoch, each rank
    taking every ``world_size``-th of the shared stream) whose stream starts at a given position,
    with one permutation per epoch drawn from ``(seed, epoch)``: started at ``start``, it yields
    exactly what an uninterrupted sampler with the same seed yields after its first ``start``
    indices (over all ranks).
    """

    def __init__(self, size, shuffle=True, seed=None, start=0):
        """
        Args:
            size (int): number of images.
            shuffle (bool): a permutation per epoch (False: 0, 1, ..., size - 1 each epoch).
            seed (int or None): the shuffle's seed, the same on every rank (None: a random one
                shared by the ranks, as Detectron2's).
            start (int): position in the shared stream, over all ranks: the number of indices
                the ranks together consumed before (iterations x total batch).
        """
        super().__init__(size, shuffle=shuffle, seed=seed)
        self.start = int(start)

    def resume(self, seed, start):
        """
        Continue a stream: the same shuffle from another position.

        Args:
            seed (int): the seed of the interrupted stream.
            start (int): its position over all ranks (see ``__init__``).
        """
        self._seed, self.start = int(seed), int(start)

    @property
    def seed(self):
        """int: the seed of the shuffle."""
        return self._seed

    @property
    def size(self):
        """int: the number of images."""
        return self._size

    def epoch_indices(self, epoch):
        """
        Args:
            epoch (int): the epoch, from 0.

        Returns:
            list[int]: its order of the ``size`` images.
        """
        if not self._shuffle:
            return list(range(self._size))
        g = torch.Generator()
        g.manual_seed((self._seed + _EPOCH_STRIDE * epoch) % 2**63)
        return torch.randperm(self._size, generator=g).tolist()

    def _infinite_indices(self):
        epoch, offset = divmod(self.start, self._size)
        for e in itertools.count(epoch):
            yield from self.epoch_indices(e)[offset if e == epoch else 0 :]


class SamplerPositionHook(HookBase):
    """
    Puts the position of the training loader's :class:`ResumableTrainingSampler` into every
    checkpoint (through the trainer's state) and restores it on resume: the next position is
    ``(iteration + 1) x SOLVER.IMS_PER_BATCH`` (pretraining batches hold exactly that many
    indices of the stream: no aspect-ratio grouping), with the seed of the shuffle.
    """

    def __init__(self, sampler, total_batch_size):
        """
        Args:
            sampler (ResumableTrainingSampler): the training loader's sampler.
            total_batch_size (int): images per iteration over all ranks.
        """
        self.sampler = sampler
        self.total_batch_size = int(total_batch_size)

    def state_dict(self):
        return {
            "seed": self.sampler.seed,
            "size": self.sampler.size,
            "next_index": (self.trainer.iter + 1) * self.total_batch_size,
        }

    def load_state_dict(self, state_dict):
        if state_dict["size"] != self.sampler.size:
            logger.warning(
                f"The checkpoint's sampler ran over {state_dict['size']} images, the data now has "
                f"{self.sampler.size}: the data order starts a new epoch instead of continuing."
            )
            return
        self.sampler.resume(state_dict["seed"], state_dict["next_index"])
        epoch, offset = divmod(self.sampler.start, self.sampler.size)
        logger.info(f"Data order resumed: epoch {epoch}, image {offset} of {self.sampler.size}.")
