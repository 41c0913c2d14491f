"""
BYOL's asymmetric per-view pixel augmentation (Grill et al., "Bootstrap Your Own Latent", NeurIPS
2020), which SlotCon and LOCA use: MoCo-v2's colour jitter, grayscale and blur with a blur
probability per view, then a solarization with a probability per view.
"""

import torch
from torchvision.transforms.v2 import functional as TF

from .pixel_aug import PixelAugmentation

__all__ = ["ViewAugmentation", "build_view_augmentations"]


class ViewAugmentation:
    """:class:`PixelAugmentation` followed by a random solarization (threshold 128)."""

    def __init__(self, pixel_aug, solarize_prob):
        """
        Args:
            pixel_aug (PixelAugmentation): colour jitter, grayscale, blur.
            solarize_prob (float): probability of inverting the pixels >= 128.
        """
        if not 0.0 <= solarize_prob <= 1.0:
            raise ValueError(f"solarize_prob={solarize_prob} is not a probability")
        self.pixel_aug = pixel_aug
        self.solarize_prob = solarize_prob

    def __call__(self, image):
        """
        Args:
            image (Tensor): (3, H, W) uint8.

        Returns:
            Tensor: (3, H, W) uint8.
        """
        image = self.pixel_aug(image)
        if torch.rand(1).item() < self.solarize_prob:
            image = TF.solarize(image, threshold=128)
        return image


def build_view_augmentations(cfg, node, view_names, blur=True):
    """
    The per-view augmentations of a method whose config node holds the one view-augmentation
    schema: ``COLOR_JITTER`` (4 strengths), ``COLOR_JITTER_PROB``, ``GRAYSCALE_PROB``,
    ``BLUR_SIGMA`` (min, max), and one probability per view in ``BLUR_PROB`` and
    ``SOLARIZE_PROB``; the blur kernel fraction is ``INPUT.SSL_AUG.BLUR_KERNEL_FRACTION``. Errors
    name the key as the user set it (``SLOTCON.BLUR_PROB``).

    Args:
        cfg (CfgNode): the config.
        node (str): the method's node, e.g. "SLOTCON" or "LOCA".
        view_names (sequence[str]): the views, in the order of the per-view tuples.
        blur (bool): False turns every blur off (LOCA.RELEASE_BLUR).

    Returns:
        list[ViewAugmentation]: one per view.
    """
    aug = cfg[node]
    n = len(view_names)
    names = ", ".join(view_names)
    for key in ("BLUR_PROB", "SOLARIZE_PROB"):
        values = tuple(aug[key])
        if len(values) != n or not all(0.0 <= p <= 1.0 for p in values):
            raise ValueError(f"{node}.{key}={values}: expected {n} probabilities ({names})")
    return [
        ViewAugmentation(
            PixelAugmentation(
                color_jitter=tuple(aug.COLOR_JITTER),
                color_jitter_prob=aug.COLOR_JITTER_PROB,
                grayscale_prob=aug.GRAYSCALE_PROB,
                blur_sigma=tuple(aug.BLUR_SIGMA),
                blur_prob=aug.BLUR_PROB[i] if blur else 0.0,
                blur_kernel_fraction=cfg.INPUT.SSL_AUG.BLUR_KERNEL_FRACTION,
                image_format=cfg.INPUT.FORMAT,
                config_node=node,
            ),
            aug.SOLARIZE_PROB[i],
        )
        for i in range(n)
    ]
