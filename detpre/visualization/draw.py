"""Drawing primitives on RGB uint8 arrays: boxes in given colours, cell shading, titled grids."""

import colorsys
from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

__all__ = ["draw_boxes", "grid", "id_colors", "shade_cells", "to_rgb"]

Color = Tuple[int, int, int]


def to_rgb(image, image_format: str) -> np.ndarray:
    """
    Args:
        image (Tensor or ndarray): (3, H, W) uint8 tensor or (H, W, 3) array, in ``image_format``.
        image_format (str): "RGB" or "BGR".

    Returns:
        ndarray: (H, W, 3) uint8 RGB, contiguous (a copy).
    """
    array = image.permute(1, 2, 0).cpu().numpy() if hasattr(image, "permute") else image
    if image_format == "BGR":
        array = array[:, :, ::-1]
    return np.ascontiguousarray(array, dtype=np.uint8).copy()


def id_colors(n: int) -> List[Color]:
    """``n`` distinct saturated RGB colours (hues spread evenly), one per id."""
    return [
        tuple(int(255 * c) for c in colorsys.hsv_to_rgb((i * 0.618034) % 1.0, 0.9, 1.0))
        for i in range(n)
    ]


def draw_boxes(
    image: np.ndarray,
    boxes: Sequence[Sequence[float]],
    colors: Sequence[Color],
    labels: Optional[Sequence[str]] = None,
    thickness: int = 2,
) -> np.ndarray:
    """
    Draw XYXY boxes in place (OpenCV rectangles: exact pixels, no antialiasing).

    Args:
        image (ndarray): (H, W, 3) uint8 RGB.
        boxes (sequence): (N, 4) XYXY in its pixels.
        colors (sequence[tuple]): one RGB colour per box.
        labels (sequence[str] or None): a text above each box.
        thickness (int): line width in pixels.

    Returns:
        ndarray: ``image``.
    """
    for i, (box, color) in enumerate(zip(boxes, colors)):
        x0, y0, x1, y1 = (int(round(float(v))) for v in box)
        cv2.rectangle(image, (x0, y0), (x1, y1), tuple(int(c) for c in color), thickness)
        if labels is not None and labels[i]:
            cv2.putText(image, labels[i], (x0 + 2, max(y0 - 3, 10)), cv2.FONT_HERSHEY_SIMPLEX,
                        0.35, tuple(int(c) for c in color), 1, cv2.LINE_AA)  # fmt: skip
    return image


def shade_cells(image: np.ndarray, grid: int, cells: Sequence[int], colors: Sequence[Color],
                alpha: float = 0.5) -> np.ndarray:  # fmt: skip
    """
    Blend colours over cells of a ``grid`` x ``grid`` partition of the image, in place.

    Args:
        image (ndarray): (H, W, 3) uint8 RGB.
        grid (int): cells per side.
        cells (sequence[int]): row-major cell indices.
        colors (sequence[tuple]): one RGB colour per cell.
        alpha (float): the colour's weight.

    Returns:
        ndarray: ``image``.
    """
    h, w = image.shape[:2]
    for cell, color in zip(cells, colors):
        i, j = divmod(int(cell), grid)
        y0, y1 = i * h // grid, (i + 1) * h // grid
        x0, x1 = j * w // grid, (j + 1) * w // grid
        patch = image[y0:y1, x0:x1].astype(np.float32)
        image[y0:y1, x0:x1] = (patch * (1 - alpha) + np.float32(color) * alpha).astype(np.uint8)
    return image


def grid(images: Sequence[np.ndarray], titles: Sequence[str], columns: int = 4, pad: int = 4,
         title_height: int = 16) -> np.ndarray:  # fmt: skip
    """
    Tile images (each under its title) on a white canvas, row by row.

    Args:
        images (sequence[ndarray]): (H_i, W_i, 3) uint8 RGB.
        titles (sequence[str]): one per image.
        columns (int): images per row.
        pad (int): pixels between tiles.
        title_height (int): pixels reserved above each image for its title.

    Returns:
        ndarray: (H, W, 3) uint8 RGB; tile k's image has its top-left corner at
        ``(pad + (k % columns) * (cell_w + pad), pad + (k // columns) * (cell_h + pad) +
        title_height)`` with ``cell_w`` / ``cell_h`` the largest image's width / height (plus the
        title for the height).
    """
    cell_w = max(im.shape[1] for im in images)
    cell_h = max(im.shape[0] for im in images) + title_height
    rows = (len(images) + columns - 1) // columns
    cols = min(columns, len(images))
    canvas = np.full((pad + rows * (cell_h + pad), pad + cols * (cell_w + pad), 3), 255, np.uint8)
    for k, (im, title) in enumerate(zip(images, titles)):
        x = pad + (k % columns) * (cell_w + pad)
        y = pad + (k // columns) * (cell_h + pad)
        # Cut to the tile's width (~6 px a character at this scale).
        text = title if len(title) * 6 <= cell_w else title[: max(1, cell_w // 6 - 1)] + "~"
        cv2.putText(canvas, text, (x, y + title_height - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35,
                    (0, 0, 0), 1, cv2.LINE_AA)  # fmt: skip
        canvas[y + title_height : y + title_height + im.shape[0], x : x + im.shape[1]] = im
    return canvas
