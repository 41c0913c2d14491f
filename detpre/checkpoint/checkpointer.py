"""The checkpointer of detpre's trainers: Detectron2's, plus load reports, torchvision inputs and
atomic saves."""

import contextlib
import os

import torch
from detectron2.checkpoint import DetectionCheckpointer
from detectron2.modeling.backbone.resnet import BottleneckBlock
from fvcore.common.checkpoint import Checkpointer

from .convert import convert_torchvision_resnet, infer_target, is_torchvision_resnet
from .load_report import format_load_report, load_report
from .reroot import reroot_resnet, resnet_layout

__all__ = ["DetpreCheckpointer", "atomic_write"]


def atomic_write(path: str, write_fn) -> None:
    """
    Write a file so that ``path`` holds either its old content or the complete new one, never a
    part: write a temporary file in the same directory, flush and fsync it, then ``os.replace``.

    Args:
        path (str): a local file path.
        write_fn (callable): called with the temporary file, opened "wb".
    """
    directory, basename = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{basename}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable, where the OS allows
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _RecordCheckpointKeys(Checkpointer):
    """
    Placed after ``DetectionCheckpointer`` in the MRO, where the state dict has been through
    Detectron2's heuristic matching: records the keys fvcore's loader hands to the model.
    """

    def _load_model(self, checkpoint):
        state_dict = checkpoint["model"]
        incompatible = super()._load_model(checkpoint)
        # fvcore strips "module." from this very dict and pops the shape-mismatched keys
        self._checkpoint_keys = list(state_dict) + [k for k, *_ in incompatible.incorrect_shapes]
        return incompatible


class DetpreCheckpointer(DetectionCheckpointer, _RecordCheckpointKeys):
    """
    Detectron2's ``DetectionCheckpointer`` that also

    - logs one table per load, counting per module group the tensors loaded, missing,
      shape-mismatched and unexpected (:func:`~detpre.checkpoint.load_report.load_report`), kept in
      ``self.last_load_report``;
    - reads torchvision-style ResNet state dicts (plain or under ``module.encoder_q.``,
      ``backbone.``, ... as self-supervised releases ship them) by converting them on the fly with
      :func:`~detpre.checkpoint.convert.convert_torchvision_resnet` to the model's exact names; the
      conversion report is kept in ``self.last_conversion_report``;
    - moves a checkpoint's ResNet to where the model keeps it (:func:`reroot_resnet`: R50-FPN's
      ``backbone.bottom_up``, R50-C4's ``backbone`` + ``roi_heads.res5``, a segmentor's plain
      ``backbone``), so an export of either detector loads into the other and into the
      segmentation models of ``configs/semseg``;
    - saves atomically (:func:`atomic_write`), and tags ``last_checkpoint`` only after the
      checkpoint is complete, so a job killed while saving resumes from the previous one.
    """

    def __init__(self, model, save_dir="", *, save_to_disk=None, **checkpointables):
        super().__init__(model, save_dir, save_to_disk=save_to_disk, **checkpointables)
        self.last_load_report = None
        self.last_conversion_report = None

    def _load_file(self, filename):
        checkpoint = super()._load_file(filename)
        self.last_conversion_report = None
        if checkpoint.get("__author__") not in (None, "Caffe2") or not is_torchvision_resnet(
            checkpoint["model"]
        ):
            return checkpoint
        target = infer_target(self.model.state_dict().keys())
        state_dict, report = convert_torchvision_resnet(checkpoint["model"], target=target)
        self.logger.info(f"Converted torchvision-style ResNet {filename} on the fly:\n{report}")
        self.last_conversion_report = report
        self._warn_torchvision_protocol()
        return {
            "model": state_dict,
            "__author__": "torchvision-style ResNet, converted by detpre",
            "matching_heuristics": target is None,
        }

    def _warn_torchvision_protocol(self):
        """torchvision ResNets stride in the 3x3 conv and read RGB: say so if the model differs."""
        if any(
            isinstance(m, BottleneckBlock) and m.conv1.stride != (1, 1)
            for m in self.model.modules()
        ):
            self.logger.warning(
                "torchvision ResNets stride in the 3x3 conv but this model strides in the 1x1: "
                "set MODEL.RESNETS.STRIDE_IN_1X1 False"
            )
        if getattr(self.model, "input_format", "RGB") != "RGB":
            self.logger.warning(
                "torchvision ResNets read RGB: set INPUT.FORMAT RGB and MODEL.PIXEL_MEAN/STD to "
                "ImageNet's [123.675, 116.28, 103.53] / [58.395, 57.12, 57.375]"
            )

    def _load_model(self, checkpoint):
        if not checkpoint.get("matching_heuristics", False):
            target = resnet_layout(self.model.state_dict().keys())
            checkpoint["model"], moved = reroot_resnet(checkpoint["model"], target)
            if moved:
                self.logger.info(moved)
        incompatible = super()._load_model(checkpoint)
        self.last_load_report = load_report(
            self.model.state_dict().keys(), self._checkpoint_keys, incompatible
        )
        self.logger.info(
            "Checkpoint load per module group:\n" + format_load_report(self.last_load_report)
        )
        return incompatible

    def save(self, name, **kwargs):
        if not self.save_dir or not self.save_to_disk:
            return
        if not os.path.isdir(self.save_dir):  # not a local folder: fvcore's path manager writes
            return super().save(name, **kwargs)
        data = {"model": self.model.state_dict()}
        data.update({key: obj.state_dict() for key, obj in self.checkpointables.items()})
        data.update(kwargs)
        basename = f"{name}.pth"
        save_file = os.path.join(self.save_dir, basename)
        self.logger.info(f"Saving checkpoint to {save_file}")
        atomic_write(save_file, lambda f: torch.save(data, f))
        self.tag_last_checkpoint(basename)

    def tag_last_checkpoint(self, last_filename_basename):
        if not os.path.isdir(self.save_dir):
            return super().tag_last_checkpoint(last_filename_basename)
        atomic_write(
            os.path.join(self.save_dir, "last_checkpoint"),
            lambda f: f.write(last_filename_basename.encode()),
        )
