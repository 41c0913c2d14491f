"""
Pixel ops of the detection AutoAugment op pool (Zoph et al., "Learning Data Augmentation Strategies
for Object Detection", ECCV 2020): PIL's ImageOps / ImageEnhance as Detectron2 transforms, and
Cutout. None of them moves a box, polygon or mask.
"""

from functools import partial

import numpy as np
from detectron2.data import transforms as T
from PIL import ImageEnhance, ImageOps

__all__ = ["PIL_COLOR_OPS", "CutoutTransform", "PILColorOpTransform"]

_FORMATS = ("RGB", "BGR")


def _check_image(img):
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(
            f"Colour ops take an HxWx3 uint8 image, got dtype={img.dtype} shape={img.shape}"
        )


def _autocontrast(im):
    return ImageOps.autocontrast(im)


def _equalize(im):
    return ImageOps.equalize(im)


def _invert(im):
    return ImageOps.invert(im)


def _posterize(im, bits):
    return ImageOps.posterize(im, bits)


def _solarize(im, threshold):
    return ImageOps.solarize(im, threshold)


def _solarize_add(im, addition, threshold=128):
    # Adds `addition` to the values below `threshold` (clipped to 255), leaves the others: a LUT.
    lut = [min(255, v + addition) if v < threshold else v for v in range(256)]
    return im.point(lut * len(im.getbands()))


def _enhance(im, factor, enhancer):
    return enhancer(im).enhance(factor)


def _call(fn, args, im):
    return fn(im, *args)


# name -> fn(PIL image, *args) -> PIL image. Color, Contrast, Brightness and Sharpness take PIL's
# enhance factor (1 = identity).
PIL_COLOR_OPS = {
    "AutoContrast": _autocontrast,
    "Equalize": _equalize,
    "Invert": _invert,
    "Posterize": _posterize,
    "Solarize": _solarize,
    "SolarizeAdd": _solarize_add,
    "Color": partial(_enhance, enhancer=ImageEnhance.Color),
    "Contrast": partial(_enhance, enhancer=ImageEnhance.Contrast),
    "Brightness": partial(_enhance, enhancer=ImageEnhance.Brightness),
    "Sharpness": partial(_enhance, enhancer=ImageEnhance.Sharpness),
}


class PILColorOpTransform(T.PILColorTransform):
    """
    One op of ``PIL_COLOR_OPS`` on an HxWx3 uint8 image given in RGB or BGR order: PIL's ops
    assume RGB (Color and Contrast weigh the channels to a luminance), so a BGR image is reordered
    around the op. Boxes, polygons and masks are left unchanged.
    """

    def __init__(self, name, args=(), image_format="RGB"):
        """
        Args:
            name (str): a key of ``PIL_COLOR_OPS``.
            args (tuple): the op's arguments after the image (bits, threshold, addition or
                enhance factor).
            image_format (str): channel order of the images, "RGB" or "BGR".
        """
        if name not in PIL_COLOR_OPS:
            raise KeyError(f"Unknown colour op {name!r}; available: {sorted(PIL_COLOR_OPS)}")
        if image_format not in _FORMATS:
            raise ValueError(f"image_format={image_format!r}: colour ops support {_FORMATS}")
        args = tuple(args)
        super().__init__(partial(_call, PIL_COLOR_OPS[name], args))
        self._set_attributes(dict(name=name, args=args, image_format=image_format))

    def apply_image(self, img):
        _check_image(img)
        if self.image_format == "RGB":  # a writable array, as every other op returns
            return np.array(super().apply_image(np.ascontiguousarray(img)))
        rgb = np.ascontiguousarray(img[..., ::-1])
        return np.ascontiguousarray(super().apply_image(rgb)[..., ::-1])


class CutoutTransform(T.ColorTransform):
    """
    Cutout (DeVries & Taylor, 2017): fill the rectangle ``[x0, x1) x [y0, y1)`` of the image with a
    constant. Like the detection AutoAugment code, the boxes and masks it occludes are kept.
    """

    def __init__(self, x0, y0, x1, y1, fill=128):
        """
        Args:
            x0, y0, x1, y1 (int): the filled rectangle, in pixels (clipped to the image).
            fill (int): the value written into every channel.
        """
        super().__init__(op=self._fill)
        self._set_attributes(dict(x0=x0, y0=y0, x1=x1, y1=y1, fill=fill))

    def _fill(self, img):
        out = img.copy()
        out[max(self.y0, 0) : max(self.y1, 0), max(self.x0, 0) : max(self.x1, 0)] = self.fill
        return out
