"""Momentum copies of some sub-modules of a module, at their dotted paths."""

from typing import Dict

from torch import nn

from .momentum import MomentumCopy, build_momentum_copy

__all__ = ["SubmoduleMomentumCopy"]


class SubmoduleMomentumCopy(MomentumCopy):
    """
    A :class:`MomentumCopy` whose names may be dotted paths, for EMA teachers that need only part
    of a module: ``{"backbone": ..., "ssl_head.projector": ...}`` holds copies at
    ``momentum.backbone`` and ``momentum.ssl_head.projector`` (other children of ``ssl_head``, such
    as a student-only predictor, are not copied). :meth:`update` and :meth:`reset` (inherited)
    resolve each path on the owner with ``get_submodule``.
    """

    def __init__(self, online: Dict[str, nn.Module]):
        """
        Args:
            online (dict[str, nn.Module]): dotted path on the owner -> online module.
        """
        nn.Module.__init__(self)
        self.names = tuple(online)
        for name, module in online.items():
            *parents, leaf = name.split(".")
            holder = self
            for part in parents:
                if part not in holder._modules:
                    holder.add_module(part, nn.Module())
                holder = holder._modules[part]
            if leaf in holder._modules:
                raise ValueError(f"SubmoduleMomentumCopy: {name!r} is given twice")
            holder.add_module(leaf, build_momentum_copy(module))
