"""
The ViT's absolute position embeddings at another token grid, resized as LOCA's release does.
"""

import math

import torch.nn.functional as F

__all__ = ["resize_abs_pos"]


def resize_abs_pos(abs_pos, has_cls_token, hw):
    """
    Detectron2's ``get_abs_pos`` with the resize of LOCA's release (scenic
    ``projects/loca/vit.py``: ``jax.image.resize(posemb, (1, h, w, c), 'bilinear')``, whose
    ``antialias`` defaults to True): bilinear with an antialiasing triangle filter when shrinking
    (14 x 14 to the 6 x 6 grid of the 96 px queries), instead of Detectron2's bicubic.

    Args:
        abs_pos (Tensor): (1, num_position, C) absolute position embeddings.
        has_cls_token (bool): whether ``abs_pos`` starts with the class token's embedding.
        hw (tuple[int, int]): (h, w) of the token grid.

    Returns:
        Tensor: (1, h, w, C).
    """
    h, w = hw
    if has_cls_token:
        abs_pos = abs_pos[:, 1:]
    size = int(math.sqrt(abs_pos.shape[1]))
    if size * size != abs_pos.shape[1]:
        raise ValueError(f"{abs_pos.shape[1]} position embeddings are not a square grid")
    grid = abs_pos.reshape(1, size, size, -1)
    if (size, size) == (h, w):
        return grid
    resized = F.interpolate(
        grid.permute(0, 3, 1, 2), size=(h, w), mode="bilinear", align_corners=False, antialias=True
    )
    return resized.permute(0, 2, 3, 1)
