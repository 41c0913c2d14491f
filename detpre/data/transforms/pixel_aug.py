"""
MoCo-v2's pixel augmentation (colour jitter, grayscale, Gaussian blur) on uint8 image tensors.
"""

import cv2
import numpy as np
import torch
from detectron2.config import configurable
from torchvision.transforms import v2

from .crops import chw_tensor, hwc_array

__all__ = ["ColorJitter", "PixelAugmentation", "adjust_hue"]

# SimCLR / torchvision convention: the blur kernel spans ~10% of the image side (23 px at 224);
# configs set it with INPUT.SSL_AUG.BLUR_KERNEL_FRACTION.
_BLUR_KERNEL_FRACTION = 0.1
_FORMATS = ("RGB", "BGR")


def adjust_hue(image, hue_factor):
    """
    torchvision's ``adjust_hue`` on a uint8 RGB tensor, through OpenCV's float32 HSV conversion:
    the same rule (hue rotated by ``hue_factor`` turns in float HSV, then scaled back to uint8 by
    ``x * 255.999`` truncated, as ``to_dtype``), 3 to 4x faster on one core. Pixels differ from
    torchvision's by at most one level, where float rounding falls on the other side of a level
    (6e-5 of the pixels on ImageNet images).

    Args:
        image (Tensor): (3, H, W) uint8, RGB.
        hue_factor (float): in [-0.5, 0.5], a fraction of a full turn.

    Returns:
        Tensor: (3, H, W) uint8.
    """
    if not -0.5 <= hue_factor <= 0.5:
        raise ValueError(f"hue_factor={hue_factor} is not in [-0.5, 0.5]")
    hwc = hwc_array(image).astype(np.float32)
    hwc *= 1.0 / 255.0
    hsv = cv2.cvtColor(hwc, cv2.COLOR_RGB2HSV, dst=hwc)  # H in degrees [0, 360)
    hue = hsv[..., 0]
    hue += hue_factor * 360.0
    hue[hue >= 360.0] -= 360.0
    hue[hue < 0.0] += 360.0
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB, dst=hsv)
    rgb *= 255.999
    return chw_tensor(rgb.astype(np.uint8))


class ColorJitter(v2.ColorJitter):
    """
    torchvision's ``v2.ColorJitter`` (same parameters, same random draws, same order of the four
    operations) whose hue step on uint8 tensors is :func:`adjust_hue`: the hue rotation is most of
    the jitter's time with torchvision's tensor kernel.
    """

    def _call_kernel(self, functional, inpt, *args, **kwargs):
        if (
            functional is v2.functional.adjust_hue
            and type(inpt) is torch.Tensor
            and inpt.dtype == torch.uint8
            and inpt.dim() == 3
            and inpt.shape[0] == 3
        ):
            return adjust_hue(inpt, *args, **kwargs)
        return super()._call_kernel(functional, inpt, *args, **kwargs)


class PixelAugmentation:
    """
    The pixel augmentation of MoCo-v2 (Chen et al., "Improved Baselines with Momentum Contrastive
    Learning", 2020), which InsLoc applies to its composed views too:

    1. colour jitter (brightness, contrast, saturation, hue in a random order) with probability
       ``color_jitter_prob``;
    2. grayscale (3 equal channels) with probability ``grayscale_prob``;
    3. Gaussian blur with sigma ~ U(blur_sigma) with probability ``blur_prob``; the kernel side is
       ``blur_kernel_fraction`` of the shorter image side, made odd (23 at 224, 25 at 256).

    Colour operations are torchvision ``transforms.v2`` on uint8 tensors, in RGB (a "BGR" image is
    reordered before and after them), the hue step through OpenCV (:class:`ColorJitter`). The blur is OpenCV's separable ``GaussianBlur`` (same
    reflect-101 border as torchvision, ~30x faster on one core). Randomness is torch's global RNG,
    as torchvision's.
    """

    @configurable
    def __init__(
        self,
        *,
        color_jitter,
        color_jitter_prob,
        grayscale_prob,
        blur_sigma,
        blur_prob,
        blur_kernel_fraction=_BLUR_KERNEL_FRACTION,
        image_format="RGB",
        config_node="INPUT.SSL_AUG",
    ):
        """
        Args:
            color_jitter (tuple[float, float, float, float]): brightness, contrast, saturation,
                hue strengths (torchvision ``ColorJitter`` semantics).
            color_jitter_prob (float): probability of the colour jitter.
            grayscale_prob (float): probability of the grayscale conversion.
            blur_sigma (tuple[float, float]): range of the blur sigma, in pixels.
            blur_prob (float): probability of the blur.
            blur_kernel_fraction (float): blur kernel side as a fraction of the shorter side.
            image_format (str): channel order of the images, "RGB" or "BGR".
            config_node (str): the config node the values come from, named in errors.
        """
        if image_format not in _FORMATS:
            raise ValueError(
                f"INPUT.FORMAT={image_format!r}: the pixel augmentation supports {_FORMATS}"
            )
        for name, p in (
            ("COLOR_JITTER_PROB", color_jitter_prob),
            ("GRAYSCALE_PROB", grayscale_prob),
            ("BLUR_PROB", blur_prob),
        ):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{config_node}.{name}={p} is not a probability")
        if len(color_jitter) != 4:
            raise ValueError(
                f"{config_node}.COLOR_JITTER={tuple(color_jitter)}: expected 4 values "
                "(brightness, contrast, saturation, hue)"
            )
        if len(blur_sigma) != 2 or not 0 < blur_sigma[0] <= blur_sigma[1]:
            raise ValueError(
                f"{config_node}.BLUR_SIGMA={tuple(blur_sigma)}: expected 0 < min <= max"
            )
        if not 0 < blur_kernel_fraction <= 1:
            raise ValueError(f"blur_kernel_fraction={blur_kernel_fraction} must lie in (0, 1]")
        self.color_jitter = ColorJitter(*color_jitter)
        self.color_jitter_prob = color_jitter_prob
        self.grayscale_prob = grayscale_prob
        self.blur_sigma = tuple(blur_sigma)
        self.blur_prob = blur_prob
        self.blur_kernel_fraction = blur_kernel_fraction
        self.image_format = image_format

    @classmethod
    def from_config(cls, cfg):
        aug = cfg.INPUT.SSL_AUG
        return {
            "color_jitter": tuple(aug.COLOR_JITTER),
            "color_jitter_prob": aug.COLOR_JITTER_PROB,
            "grayscale_prob": aug.GRAYSCALE_PROB,
            "blur_sigma": tuple(aug.BLUR_SIGMA),
            "blur_prob": aug.BLUR_PROB,
            "blur_kernel_fraction": aug.BLUR_KERNEL_FRACTION,
            "image_format": cfg.INPUT.FORMAT,
        }

    def blur_kernel_size(self, height, width):
        """
        Args:
            height, width (int): image size.

        Returns:
            int: the odd side of the blur kernel for that size.
        """
        return int(self.blur_kernel_fraction * min(height, width)) | 1

    def __call__(self, image):
        """
        Args:
            image (Tensor): (3, H, W) uint8, in ``image_format`` channel order.

        Returns:
            Tensor: (3, H, W) uint8, same channel order (a new tensor when anything applied).
        """
        if image.dtype != torch.uint8 or image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(
                f"PixelAugmentation expects a uint8 (3, H, W) tensor, got {image.dtype} "
                f"{tuple(image.shape)}"
            )
        do_jitter = torch.rand(1).item() < self.color_jitter_prob
        do_gray = torch.rand(1).item() < self.grayscale_prob
        if do_jitter or do_gray:
            bgr = self.image_format == "BGR"
            if bgr:
                image = image.flip(0)
            if do_jitter:
                image = self.color_jitter(image)
            if do_gray:
                image = v2.functional.rgb_to_grayscale(image, num_output_channels=3)
            if bgr:
                image = image.flip(0)
        if torch.rand(1).item() < self.blur_prob:
            sigma = torch.empty(1).uniform_(*self.blur_sigma).item()
            image = self._blur(image, sigma)
        return image

    def _blur(self, image, sigma):
        k = self.blur_kernel_size(*image.shape[1:])
        # One interleaved (H, W, 3) blur: 3x faster than three planes, the same pixels.
        blurred = cv2.GaussianBlur(
            hwc_array(image), (k, k), sigma, borderType=cv2.BORDER_REFLECT_101
        )
        return chw_tensor(blurred)
