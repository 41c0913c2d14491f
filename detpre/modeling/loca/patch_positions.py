"""
Where the patches of one crop lie in another crop of the same image, from the crops' geometry:
the position targets of LOCA (Caron et al., "Location-Aware Self-Supervised Transformers for
Semantic Segmentation", 2022), computed from boxes and flips instead of propagated index masks.
"""

import torch

__all__ = ["patch_position_targets"]


def patch_position_targets(query_boxes, query_flips, query_grid, ref_boxes, ref_flips, ref_grid):
    """
    The reference cell under the centre of every query cell.

    A crop box is the region of the original image a view was resized from (continuous XYXY
    coordinates, a pixel ``k`` covering ``[k, k + 1)``); a flipped view is the mirror image of its
    resized crop. The centre of query cell (i, j) on a ``query_grid`` of (h, w) cells is
    ``((j + 0.5) / w, (i + 0.5) / h)`` in view-normalised coordinates; it is un-flipped, mapped to
    the original image through the query box, then into the reference view through the reference
    box (and its flip). Its class is the row-major index ``I * W + J`` of the reference cell that
    contains it on a ``ref_grid`` of (H, W) cells, or -1 when it falls outside the reference.

    Args:
        query_boxes (Tensor): (N, 4) XYXY crop boxes of the queries, original image coordinates.
        query_flips (Tensor): (N,) bool, whether each query view is flipped.
        query_grid (tuple[int, int]): (h, w) token grid of the queries.
        ref_boxes (Tensor): (N, 4) crop box of the reference each query is matched with.
        ref_flips (Tensor): (N,) bool, whether that reference view is flipped.
        ref_grid (tuple[int, int]): (H, W) token grid of the reference.

    Returns:
        Tensor: (N, h * w) int64 targets in ``[-1, H * W)``, query cells in row-major order.
    """
    query_boxes = torch.as_tensor(query_boxes, dtype=torch.float64)
    ref_boxes = torch.as_tensor(ref_boxes, dtype=torch.float64, device=query_boxes.device)
    n = query_boxes.shape[0]
    if query_boxes.shape != (n, 4) or ref_boxes.shape != (n, 4):
        raise ValueError(
            f"query_boxes and ref_boxes must both be (N, 4), got {tuple(query_boxes.shape)} and "
            f"{tuple(ref_boxes.shape)}"
        )
    for name, boxes in (("query", query_boxes), ("reference", ref_boxes)):
        if not bool(((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all()):
            raise ValueError(f"Empty {name} crop box among {boxes.tolist()}")
    device = query_boxes.device
    query_flips = torch.as_tensor(query_flips, dtype=torch.bool, device=device).reshape(n)
    ref_flips = torch.as_tensor(ref_flips, dtype=torch.bool, device=device).reshape(n)
    h, w = query_grid
    big_h, big_w = ref_grid
    cy, cx = torch.meshgrid(
        (torch.arange(h, dtype=torch.float64, device=device) + 0.5) / h,
        (torch.arange(w, dtype=torch.float64, device=device) + 0.5) / w,
        indexing="ij",
    )
    u = cx.reshape(1, -1).expand(n, -1)
    v = cy.reshape(1, -1).expand(n, -1)
    # Query view -> original image (un-flipping first).
    u = torch.where(query_flips[:, None], 1.0 - u, u)
    qx0, qy0, qx1, qy1 = query_boxes.unbind(dim=1)
    x = qx0[:, None] + u * (qx1 - qx0)[:, None]
    y = qy0[:, None] + v * (qy1 - qy0)[:, None]
    # Original image -> reference view (flipping last).
    rx0, ry0, rx1, ry1 = ref_boxes.unbind(dim=1)
    ru = (x - rx0[:, None]) / (rx1 - rx0)[:, None]
    rv = (y - ry0[:, None]) / (ry1 - ry0)[:, None]
    ru = torch.where(ref_flips[:, None], 1.0 - ru, ru)
    inside = (ru >= 0) & (ru < 1) & (rv >= 0) & (rv < 1)
    col = (ru * big_w).floor().clamp(0, big_w - 1).long()
    row = (rv * big_h).floor().clamp(0, big_h - 1).long()
    return torch.where(inside, row * big_w + col, torch.full_like(col, -1))
