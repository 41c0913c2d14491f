"""
MoCo's shuffling BN (He et al., CVPR 2020, Sec. 3.3): the key batch is shuffled across ranks
before the key encoder, so that per-rank BN statistics of the keys are not computed on the same
sub-batch as the queries (which would leak an easy shortcut), and unshuffled after it. Per-image
tensors given with the images (boxes, image sizes) follow them through the shuffle.
"""

import torch
import torch.distributed as dist
import torch.nn.functional as F
from detectron2.utils import comm

__all__ = ["concat_all_gather", "batch_shuffle", "batch_unshuffle"]


@torch.no_grad()
def concat_all_gather(tensor):
    """
    Concatenate ``tensor`` of every rank along dim 0, in rank order (no gradient).

    Args:
        tensor (Tensor): (B, ...), the same shape on every rank.

    Returns:
        Tensor: (world_size * B, ...); ``tensor`` itself when there is one process.
    """
    world_size = comm.get_world_size()
    if world_size == 1:
        return tensor
    tensor = tensor.contiguous()
    gathered = [torch.empty_like(tensor) for _ in range(world_size)]
    dist.all_gather(gathered, tensor)
    return torch.cat(gathered, dim=0)


@torch.no_grad()
def _pad_to_common_shape(tensor):
    """Zero-pad the trailing dims of ``tensor`` to the largest shape over ranks (dim 0 must agree)."""
    shape = torch.tensor(tensor.shape, dtype=torch.long, device=tensor.device)
    shapes = concat_all_gather(shape[None])
    if not bool((shapes[:, 0] == shape[0]).all()):
        raise ValueError(
            "Shuffle-BN needs the same number of images on every rank, got per-rank batches "
            f"{shapes[:, 0].tolist()} (SOLVER.IMS_PER_BATCH must be divisible by the world size)"
        )
    target = shapes.max(dim=0).values
    if bool((target == shape).all()):
        return tensor
    pad = []
    for d in reversed(range(1, tensor.dim())):
        pad += [0, int(target[d]) - tensor.shape[d]]
    return F.pad(tensor, pad)


@torch.no_grad()
def batch_shuffle(x, *extras):
    """
    Shuffle a batch across all ranks: every rank gathers the global batch, rank 0's random
    permutation is broadcast, and each rank keeps its slice of the permuted batch. Images of
    different padded sizes are zero-padded to the largest one first.

    Args:
        x (Tensor): (B, ...) this rank's batch, e.g. padded images (B, C, H, W).
        extras (Tensor): per-image tensors (B, ...) shuffled with ``x``, e.g. boxes (B, 4) or image
            sizes (B, 2); row i stays with image i.

    Returns:
        tuple: the shuffled ``x`` (B, ...), the list of shuffled ``extras``, and ``idx_unshuffle``
        (world_size * B,) for :func:`batch_unshuffle`. With one process the permutation is local.
    """
    batch = x.shape[0]
    extras = [e.to(x.device) for e in extras]
    for e in extras:
        if e.shape[0] != batch:
            raise ValueError(f"extra tensor of shape {tuple(e.shape)} does not match batch {batch}")
    world_size = comm.get_world_size()
    if world_size == 1:
        idx_shuffle = torch.randperm(batch, device=x.device)
        return x[idx_shuffle], [e[idx_shuffle] for e in extras], torch.argsort(idx_shuffle)
    gathered = [concat_all_gather(_pad_to_common_shape(t)) for t in [x] + extras]
    idx_shuffle = torch.randperm(gathered[0].shape[0], device=x.device)
    dist.broadcast(idx_shuffle, src=0)
    idx_unshuffle = torch.argsort(idx_shuffle)
    idx_this = idx_shuffle.view(world_size, -1)[comm.get_rank()]
    return gathered[0][idx_this], [t[idx_this] for t in gathered[1:]], idx_unshuffle


@torch.no_grad()
def batch_unshuffle(x, idx_unshuffle):
    """
    Undo :func:`batch_shuffle`: each rank gets back the outputs of its own original images, in
    their original order.

    Args:
        x (Tensor): (B, ...) outputs computed on this rank's shuffled batch.
        idx_unshuffle (Tensor): from :func:`batch_shuffle`.

    Returns:
        Tensor: (B, ...)
    """
    world_size = comm.get_world_size()
    if world_size == 1:
        return x[idx_unshuffle]
    x_all = concat_all_gather(x)
    idx_this = idx_unshuffle.view(world_size, -1)[comm.get_rank()]
    return x_all[idx_this]
