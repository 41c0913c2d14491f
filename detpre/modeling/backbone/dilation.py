"""Turning a built ResNet stage into its dilated, stride-1 form, with the same weights."""

from detectron2.modeling.backbone.resnet import BottleneckBlock

__all__ = ["dilate_stage"]


def dilate_stage(stage, dilation=2):
    """
    Make a built ResNet stage (an ``nn.Sequential`` of Detectron2 ``BottleneckBlock``s, such as
    ``bottom_up.res5`` or ``Res5ROIHeads``' ``res5``) run as Detectron2 builds it with
    ``MODEL.RESNETS.RES5_DILATION``: stride 1 everywhere, every 3x3 conv dilated by ``dilation``
    with padding ``dilation``. Parameters and buffers are untouched (stride and dilation are not
    in the state dict), so weights trained dilated load into the strided stage of the detector,
    as DeepLab's dilated res5 takes ImageNet weights.

    Args:
        stage (nn.Sequential): the blocks of one stage; changed in place.
        dilation (int): the dilation of the 3x3 convs (2 keeps the previous stage's stride).

    Returns:
        nn.Sequential: ``stage``, now mapping (N, C_in, H, W) to (N, C_out, H, W).
    """
    for i, block in enumerate(stage):
        if type(block) is not BottleneckBlock:
            raise ValueError(
                "Only stages of Detectron2 BottleneckBlocks can be dilated (as RES5_DILATION); "
                f"block {i} is {type(block).__name__}"
            )
        for conv in (block.conv1, block.conv2, block.shortcut):
            if conv is not None:
                conv.stride = (1, 1)
        block.stride = 1
        block.conv2.dilation = (dilation, dilation)
        block.conv2.padding = (dilation, dilation)
    return stage
