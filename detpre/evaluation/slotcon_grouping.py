"""
SlotCon's picture of the learned grouping (Wen et al., NeurIPS 2022, Fig. 1 and the release's
``viz_slots.py``): every image with its pixels coloured by the teacher's prototype, and for a
prototype the images whose segment of it is nearest to the prototype.
"""

import logging
import os

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..data.image_io import read_image

__all__ = [
    "compute_assignments",
    "load_square_image",
    "most_used_prototypes",
    "nearest_segments",
    "overlay",
    "pixel_labels",
    "prototype_palette",
    "segment_scores",
    "write_grouping_pictures",
]

logger = logging.getLogger(__name__)


def load_square_image(file_name, size):
    """
    Args:
        file_name (str): image path.
        size (int): output side.

    Returns:
        np.ndarray: (size, size, 3) uint8 RGB, the image resized so that its shorter side is
        ``size``, centre-cropped.
    """
    image = read_image(file_name, format="RGB")
    h, w = image.shape[:2]
    scale = size / min(h, w)
    nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
    image = cv2.resize(
        image, (nw, nh), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    )
    y, x = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(image[y : y + size, x : x + size])


@torch.no_grad()
def compute_assignments(model, images, image_format="RGB", batch_size=8):
    """
    The teacher's pixel-prototype logits of every image.

    Args:
        model (SlotCon): the pretraining model (its ``assign``), in eval mode.
        images (np.ndarray): (N, S, S, 3) uint8 RGB.
        image_format (str): the model's INPUT.FORMAT, "RGB" or "BGR".
        batch_size (int): images per forward.

    Returns:
        Tensor: (N, K, h, w) float32 on the CPU.
    """
    if image_format not in ("RGB", "BGR"):
        raise ValueError(f"INPUT.FORMAT={image_format!r}: expected 'RGB' or 'BGR'")
    out = []
    for i in range(0, len(images), batch_size):
        chunk = torch.from_numpy(np.ascontiguousarray(images[i : i + batch_size])).permute(
            0, 3, 1, 2
        )
        if image_format == "BGR":
            chunk = chunk.flip(1)
        out.append(model.assign(list(chunk)).float().cpu())
    return torch.cat(out)


def pixel_labels(logits, size):
    """
    Args:
        logits (Tensor): (N, K, h, w) pixel-prototype logits.
        size (int or tuple[int, int]): output (H, W).

    Returns:
        Tensor: (N, H, W) long, the argmax prototype of the bilinearly upsampled logits.
    """
    size = (size, size) if isinstance(size, int) else tuple(size)
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False).argmax(dim=1)


def segment_scores(logits):
    """
    How close each image's segment of each prototype is to it: the mean logit of the prototype
    over the pixels it wins; -inf where it wins none.

    Args:
        logits (Tensor): (N, K, h, w).

    Returns:
        Tensor: (N, K).
    """
    k = logits.shape[1]
    won = F.one_hot(logits.argmax(dim=1), k).permute(0, 3, 1, 2).to(logits.dtype)
    count = won.sum(dim=(2, 3))
    score = (logits * won).sum(dim=(2, 3)) / count.clamp(min=1.0)
    return score.masked_fill(count == 0, float("-inf"))


def nearest_segments(logits, prototype, topk):
    """
    Args:
        logits (Tensor): (N, K, h, w).
        prototype (int): the prototype.
        topk (int): at most this many images.

    Returns:
        list[int]: indices of the images whose segment of ``prototype`` scores highest
        (:func:`segment_scores`), best first; images where it wins no pixel are left out.
    """
    k = logits.shape[1]
    if not 0 <= prototype < k:
        raise ValueError(f"Prototype {prototype} does not exist: the model has {k}")
    scores = segment_scores(logits)[:, prototype]
    order = torch.argsort(scores, descending=True)[:topk]
    return [int(i) for i in order if torch.isfinite(scores[i])]


def most_used_prototypes(logits, n):
    """
    Args:
        logits (Tensor): (N, K, h, w).
        n (int): how many.

    Returns:
        list[int]: the ``n`` prototypes that win the most pixels over all images (fewer if fewer
        win any), most used first.
    """
    counts = torch.bincount(logits.argmax(dim=1).flatten(), minlength=logits.shape[1])
    order = torch.argsort(counts, descending=True)[:n]
    return [int(i) for i in order if counts[i] > 0]


def prototype_palette(num_prototypes, seed=0):
    """
    Args:
        num_prototypes (int): K.
        seed (int): the colours are random but fixed by it.

    Returns:
        np.ndarray: (K, 3) uint8 RGB colours.
    """
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(num_prototypes, 3), dtype=np.uint8)


def overlay(image, mask, colors, alpha=0.6):
    """
    Args:
        image (np.ndarray): (H, W, 3) uint8.
        mask (np.ndarray): (H, W) bool where to colour.
        colors (np.ndarray): (H, W, 3) or (3,) uint8 colours.
        alpha (float): weight of the colour in the blend.

    Returns:
        np.ndarray: (H, W, 3) uint8, ``(1 - alpha) image + alpha color`` inside the mask.
    """
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * np.asarray(colors, np.float32)
    return np.where(mask[..., None], blend, image).round().clip(0, 255).astype(np.uint8)


def _write(path, rgb):
    if not cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
        raise OSError(f"Could not write {path}")
    return path


def write_grouping_pictures(images, logits, output_dir, names, prototypes, topk=5, alpha=0.6):
    """
    Write ``grouping/<name>.png`` for every image (the image beside its pixels coloured by
    prototype) and ``prototypes/prototype_<k>.png`` for every chosen prototype (its ``topk``
    nearest segments across the images, each highlighted in red, side by side).

    Args:
        images (np.ndarray): (N, S, S, 3) uint8 RGB.
        logits (Tensor): (N, K, h, w) from :func:`compute_assignments`.
        output_dir (str): created if needed.
        names (list[str]): a file-name stem per image.
        prototypes (list[int]): the prototypes to retrieve segments of.
        topk (int): segments per prototype.
        alpha (float): colour weight of the overlays.

    Returns:
        dict: ``{"grouping": [paths], "prototypes": {k: path}}`` (a prototype that wins no pixel
        gets no picture and is logged).
    """
    if len(images) != len(logits) or len(names) != len(images):
        raise ValueError(
            f"{len(images)} images, {len(logits)} logit maps and {len(names)} names disagree"
        )
    size = images.shape[1:3]
    labels = pixel_labels(logits, size).numpy()
    palette = prototype_palette(logits.shape[1])
    group_dir = os.path.join(output_dir, "grouping")
    proto_dir = os.path.join(output_dir, "prototypes")
    os.makedirs(group_dir, exist_ok=True)
    os.makedirs(proto_dir, exist_ok=True)
    written = {"grouping": [], "prototypes": {}}
    full = np.ones(size, dtype=bool)
    for image, label, name in zip(images, labels, names):
        coloured = overlay(image, full, palette[label], alpha)
        path = os.path.join(group_dir, f"{name}.png")
        written["grouping"].append(_write(path, np.concatenate([image, coloured], axis=1)))
    red = np.array([255, 0, 0], dtype=np.uint8)
    for k in prototypes:
        idx = nearest_segments(logits, k, topk)
        if not idx:
            logger.info("Prototype %d wins no pixel of these images: no picture", k)
            continue
        row = [overlay(images[i], labels[i] == k, red, alpha) for i in idx]
        path = os.path.join(proto_dir, f"prototype_{k}.png")
        written["prototypes"][k] = _write(path, np.concatenate(row, axis=1))
    return written
