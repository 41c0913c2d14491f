"""
One colour operation of nine, drawn at random per image: the photometric part of the views of
AlignDet (Li et al., ICCV 2023), as in its release (SoftTeacher's ``OneOf`` list, magnitudes of
Google's ssl_detection augmentations). Geometry is unchanged, so boxes need no update.
"""

import numpy as np
from detectron2.data import transforms as T
from PIL import Image, ImageEnhance, ImageOps

__all__ = ["COLOR_OPS", "RandomColorOp", "apply_color_op"]

# The nine operations, in the release's order.
COLOR_OPS = (
    "identity",
    "autocontrast",
    "equalize",
    "solarize",
    "color",
    "contrast",
    "brightness",
    "sharpness",
    "posterize",
)
_ENHANCERS = {
    "color": ImageEnhance.Color,
    "contrast": ImageEnhance.Contrast,
    "brightness": ImageEnhance.Brightness,
    "sharpness": ImageEnhance.Sharpness,
}
_MAX_LEVEL = 10


def apply_color_op(image, name, level):
    """
    Args:
        image (ndarray): (H, W, 3) uint8 RGB (or BGR: every op treats channels alike).
        name (str): one of :data:`COLOR_OPS`.
        level (int): magnitude in [0, 10]: solarize threshold ``min(256 * level / 10, 255)``,
            enhancement factor ``0.1 + 1.8 * level / 10``, posterize to ``4 - int(4 * level / 10)``
            bits (at least 1); identity, autocontrast and equalize ignore it.

    Returns:
        ndarray: (H, W, 3) uint8, a new array.
    """
    if name not in COLOR_OPS:
        raise ValueError(f"Unknown colour operation {name!r}; choose from {COLOR_OPS}")
    if not 0 <= level <= _MAX_LEVEL:
        raise ValueError(f"Colour magnitude must be in [0, {_MAX_LEVEL}], got {level}")
    if name == "identity":
        return image.copy()
    pil = Image.fromarray(np.ascontiguousarray(image))
    if name == "autocontrast":
        out = ImageOps.autocontrast(pil)
    elif name == "equalize":
        out = ImageOps.equalize(pil)
    elif name == "solarize":
        out = ImageOps.solarize(pil, min(int(level * 256 / _MAX_LEVEL), 255))
    elif name == "posterize":
        out = ImageOps.posterize(pil, max(1, 4 - int(level * 4 / _MAX_LEVEL)))
    else:
        out = _ENHANCERS[name](pil).enhance(0.1 + 1.8 * level / _MAX_LEVEL)
    return np.asarray(out, dtype=np.uint8).copy()


class RandomColorOp(T.Augmentation):
    """
    Draws one of :data:`COLOR_OPS` uniformly and a magnitude uniformly in ``[1, max_level)``
    (the release's ``randint(1, 10)``), and applies it as a geometry-preserving
    ``ColorTransform``.
    """

    def __init__(self, max_level=10, ops=COLOR_OPS):
        """
        Args:
            max_level (int): magnitudes are drawn in [1, max_level - 1] (at least 1).
            ops (sequence[str]): the operations to draw from.
        """
        super().__init__()
        unknown = [o for o in ops if o not in COLOR_OPS]
        if unknown or not ops:
            raise ValueError(f"Unknown colour operations {unknown}; choose from {COLOR_OPS}")
        if not 1 <= max_level <= _MAX_LEVEL:
            raise ValueError(f"ALIGNDET.COLOR_MAGNITUDE must be in [1, 10], got {max_level}")
        self.max_level = max_level
        self.ops = tuple(ops)

    def get_transform(self, image):
        name = self.ops[np.random.randint(len(self.ops))]
        level = int(np.random.randint(1, max(2, self.max_level)))
        if name == "identity":
            return T.NoOpTransform()
        return T.ColorTransform(lambda img: apply_color_op(img, name, level))
