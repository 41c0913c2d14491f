"""
The contract between ``PretrainTrainer`` and a pretraining meta-architecture, in one base class.
"""

from typing import Dict, List, Optional

import torch
from torch import nn

from ...methods import METHODS, method_of
from ...views import IMAGE, split_views
from ..ssl.events import put_scalars
from ..ssl.momentum import MomentumCopy

__all__ = ["PretrainingMetaArch"]


class PretrainingMetaArch(nn.Module):
    """
    Base of every detpre pretraining meta-architecture (in the spirit of Detectron2's
    ``DenseDetector`` and solo-learn's ``BaseMomentumMethod``); docs/architecture.md, "The
    pretraining-model contract". It owns what the trainer relies on and every method shares:

    * input normalisation (``pixel_mean`` / ``pixel_std`` buffers, :meth:`normalize`) and
      :attr:`device`;
    * the momentum copy ``momentum.<part>`` of the parts named in :attr:`teacher_parts`, built by
      :meth:`setup_pretraining`, moved by :meth:`momentum_update` (the trainer's
      ``MomentumScheduleHook`` calls it after every optimizer step) and made equal to the online
      parts by :meth:`reset_momentum` (after loading weights without a copy);
    * :attr:`has_unused_parameters` (DistributedDataParallel's search for idle parameters) and
      :attr:`export_excluded_prefixes` (Detectron2 keys held but not handed over);
    * the method's name and the names of its losses and metrics (:meth:`loss_name`,
      :meth:`put_metrics`), and the view contract (:meth:`split_views`, ``detpre/views.py``).

    A subclass sets :attr:`method`, :attr:`teacher_parts`, :attr:`view_names`,
    :attr:`view_keys`, builds its online parts in ``__init__`` and then calls
    :meth:`setup_pretraining`. ``nn.Module`` comes last in its bases, so that a detector class
    (``GeneralizedRCNN``, ``RetinaNet``) may follow this one and keep its own ``__init__``.
    """

    # Loss and metric prefix ("loss_<method>...", "[metric]<method>/...").
    method = ""
    # Dotted paths of the online parts the momentum copy holds (``momentum.<path>``).
    teacher_parts = ()
    # Whether :meth:`momentum_update` copies the online buffers (BN statistics) into the copy.
    teacher_copies_buffers = True
    # What the views of one input are, in order, and the keys each must hold (detpre/views.py).
    view_names = ("view_1", "view_2")
    view_keys = (IMAGE,)
    # Whether inputs may carry further views after ``view_names`` (the same number each).
    more_views = False

    def setup_pretraining(self, *, momentum=None, pixel_mean=None, pixel_std=None):
        """
        Call at the end of ``__init__``, once the online parts exist.

        Args:
            momentum (float or None): the default m of :meth:`momentum_update` (SSL.MOMENTUM);
                None when the caller always gives one.
            pixel_mean, pixel_std (list[float] or None): input normalisation, as in
                GeneralizedRCNN; None when a detector base class registered it already.
        """
        if pixel_mean is not None:
            if len(pixel_mean) != len(pixel_std):
                raise ValueError(
                    f"MODEL.PIXEL_MEAN {pixel_mean} and MODEL.PIXEL_STD {pixel_std} differ in "
                    "length"
                )
            self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
            self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        elif not hasattr(self, "pixel_mean"):
            raise ValueError(f"{type(self).__name__}: pixel_mean and pixel_std are needed")
        if momentum is not None and not 0.0 <= momentum <= 1.0:
            raise ValueError(f"SSL.MOMENTUM must be in [0, 1], got {momentum}")
        self.base_momentum = momentum
        if not self.teacher_parts:
            raise ValueError(f"{type(self).__name__} declares no teacher_parts")
        self.momentum = MomentumCopy({p: self.get_submodule(p) for p in self.teacher_parts})

    @property
    def device(self):
        return self.pixel_mean.device

    def normalize(self, images):
        """
        Args:
            images (Tensor): (N, 3, H, W) or (3, H, W) uint8 or float, in INPUT.FORMAT.

        Returns:
            Tensor: float ``(images - pixel_mean) / pixel_std`` on :attr:`device`.
        """
        images = images.to(self.device, non_blocking=True)
        return (images.float() - self.pixel_mean) / self.pixel_std

    def stack_views(self, views: List[Dict]):
        """
        Args:
            views (list[dict]): views of one size (no padding: it would enter the pretext).

        Returns:
            Tensor: (N, 3, H, W) normalised.
        """
        sizes = {tuple(v[IMAGE].shape) for v in views}
        if len(sizes) != 1:
            raise ValueError(
                f"{type(self).__name__} batches views of one size per view position, got sizes "
                f"{sorted(sizes)}"
            )
        return self.normalize(torch.stack([v[IMAGE] for v in views]))

    @torch.no_grad()
    def momentum_update(self, momentum: Optional[float] = None):
        """
        One EMA step of ``momentum.*`` towards the online parts:
        ``copy = m * copy + (1 - m) * online``, buffers copied when
        :attr:`teacher_copies_buffers`.

        Args:
            momentum (float or None): m in [0, 1] (the hook's scheduled value); SSL.MOMENTUM
                when None.
        """
        m = self.base_momentum if momentum is None else momentum
        if m is None:
            raise ValueError(f"{type(self).__name__}.momentum_update needs a momentum")
        self.momentum.update(self, m, copy_buffers=self.teacher_copies_buffers)

    @torch.no_grad()
    def reset_momentum(self):
        """Make the momentum copy equal to the online parts (buffers included)."""
        self.momentum.reset(self)

    @property
    def has_unused_parameters(self):
        """Whether some online parameters get no gradient (DDP must then look for them)."""
        return False

    @property
    def export_excluded_prefixes(self):
        """Detectron2 keys the model holds but does not hand over to fine-tuning."""
        return ()

    @property
    def mapper_name(self):
        """The ``SSL.MAPPER`` whose views this model takes (detpre/methods.py), or None."""
        name = method_of(type(self).__name__)
        return METHODS[name].mapper if name is not None else None

    def split_views(self, batched_inputs: List[Dict]):
        """
        Args:
            batched_inputs (list[dict]): mapper outputs, ``{"views": [...]}`` each.

        Returns:
            list[list[dict]]: per view position, that view of every input
            (:func:`detpre.views.split_views` with this class's :attr:`view_names` and
            :attr:`view_keys`).
        """
        return split_views(
            batched_inputs,
            self.view_names,
            self.view_keys,
            mapper=self.mapper_name,
            more=self.more_views,
        )

    def loss_name(self, part=""):
        """``loss_<method>`` or ``loss_<method>_<part>``."""
        return f"loss_{self.method}_{part}" if part else f"loss_{self.method}"

    def put_metrics(self, console=None, others=None):
        """
        Write metrics to the current EventStorage (none outside a trainer).

        Args:
            console (dict[str, float or Tensor]): shown beside the losses on the console, as
                ``[metric]<method>/<name>``.
            others (dict[str, float or Tensor]): logged as ``<method>/<name>``.
        """
        scalars = {f"[metric]{self.method}/{k}": v for k, v in (console or {}).items()}
        scalars.update({f"{self.method}/{k}": v for k, v in (others or {}).items()})
        put_scalars({k: v.detach() if torch.is_tensor(v) else v for k, v in scalars.items()})
