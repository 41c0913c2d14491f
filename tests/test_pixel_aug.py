import os

import cv2
import numpy as np
import pytest
import torch
from detectron2.config import get_cfg
from detectron2.data import detection_utils as utils
from torchvision.transforms.v2 import functional as F

from detpre.config import add_detpre_config
from detpre.data.transforms.pixel_aug import PixelAugmentation

IMAGES = ("n01440764_tench.JPEG", "n01514859_hen.JPEG", "n01560419_bulbul.JPEG")


@pytest.fixture(scope="module")
def rgb_images(datasets_root):
    """Small real RGB images as uint8 (3, H, W) tensors."""
    out = []
    for name in IMAGES:
        image = utils.read_image(os.path.join(datasets_root, "imagenet_sample/images", name), "RGB")
        image = cv2.resize(image, (72, 56), interpolation=cv2.INTER_AREA)
        out.append(torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))))
    return out


def _aug(
    jitter_p=0.0, gray_p=0.0, blur_p=0.0, sigma=(0.1, 2.0), jitter=(0.4, 0.4, 0.4, 0.1), fmt="RGB"
):
    return PixelAugmentation(
        color_jitter=jitter,
        color_jitter_prob=jitter_p,
        grayscale_prob=gray_p,
        blur_sigma=sigma,
        blur_prob=blur_p,
        image_format=fmt,
    )


@pytest.mark.parametrize("fmt", ["RGB", "BGR"])
def test_all_probabilities_zero_is_identity(rgb_images, fmt):
    aug = _aug(fmt=fmt)
    for image in rgb_images:
        for _ in range(5):
            out = aug(image)
            assert out.dtype == torch.uint8 and out.shape == image.shape
            assert torch.equal(out, image)


def test_grayscale_matches_torchvision(rgb_images):
    aug = _aug(gray_p=1.0)
    for image in rgb_images:
        out = aug(image)
        assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
        assert torch.equal(out[:1], F.rgb_to_grayscale(image, num_output_channels=1))


def test_grayscale_of_bgr_image_uses_rgb_weights(rgb_images):
    aug = _aug(gray_p=1.0, fmt="BGR")
    for image in rgb_images:
        out = aug(image.flip(0))  # the same image, stored BGR
        assert torch.equal(out, F.rgb_to_grayscale(image, num_output_channels=3))


def test_color_jitter_bgr_is_rgb_jitter_in_bgr_order(rgb_images):
    # Saturation and hue depend on which channel is red: a BGR image must be jittered as its RGB
    # twin with the same random factors.
    rgb, bgr = _aug(jitter_p=1.0), _aug(jitter_p=1.0, fmt="BGR")
    for seed, image in enumerate(rgb_images):
        torch.manual_seed(seed)
        expected = rgb(image)
        torch.manual_seed(seed)
        out = bgr(image.flip(0))
        assert not torch.equal(expected, image)
        assert torch.equal(out, expected.flip(0))


def test_hue_only_jitter_keeps_gray_pixels(rgb_images):
    # A hue rotation leaves achromatic pixels alone and moves coloured ones.
    aug = _aug(jitter_p=1.0, jitter=(0.0, 0.0, 0.0, 0.5))
    gray = F.rgb_to_grayscale(rgb_images[0], num_output_channels=3)
    torch.manual_seed(0)
    assert torch.equal(aug(gray), gray)
    changed = [not torch.equal(aug(rgb_images[1]), rgb_images[1]) for _ in range(5)]
    assert any(changed)


@pytest.mark.parametrize("fmt", ["RGB", "BGR"])
def test_outputs_stay_uint8(rgb_images, fmt):
    aug = _aug(jitter_p=0.8, gray_p=0.2, blur_p=0.5, jitter=(0.9, 0.9, 0.9, 0.5), fmt=fmt)
    torch.manual_seed(0)
    for _ in range(10):
        for image in rgb_images:
            out = aug(image)
            assert out.dtype == torch.uint8 and out.shape == image.shape
    # A saturating brightness pushes values to the top of the uint8 range, not past it.
    bright = _aug(jitter_p=1.0, jitter=((3.0, 3.0), 0.0, 0.0, 0.0))(rgb_images[0])
    assert bright.dtype == torch.uint8 and int(bright.max()) == 255
    expected = (rgb_images[0].float() * 3).clamp(0, 255)
    assert (bright.float() - expected).abs().max() <= 1


def test_blur_matches_torchvision_and_preserves_mean(rgb_images):
    aug = _aug(blur_p=1.0, sigma=(1.5, 1.5))
    for image in rgb_images:
        out = aug(image)
        assert out.dtype == torch.uint8 and out.shape == image.shape
        assert not torch.equal(out, image)
        k = aug.blur_kernel_size(*image.shape[1:])
        reference = F.gaussian_blur(image, [k, k], [1.5, 1.5])
        assert (out.int() - reference.int()).abs().max() <= 1
        assert abs(out.float().mean() - image.float().mean()) < 1.0
        # Blurring lowers the high frequencies: smaller mean absolute horizontal gradient.
        grad = lambda x: x.float().diff(dim=-1).abs().mean()  # noqa: E731
        assert grad(out) < grad(image)


def test_blur_kernel_is_a_tenth_of_the_side_and_odd():
    aug = _aug()
    assert aug.blur_kernel_size(224, 224) == 23  # torchvision / SimCLR at 224
    assert aug.blur_kernel_size(256, 256) == 25
    assert aug.blur_kernel_size(256, 300) == 25  # the shorter side
    assert aug.blur_kernel_size(60, 60) == 7


def test_from_config():
    cfg = get_cfg()
    add_detpre_config(cfg)
    aug = PixelAugmentation(cfg)
    assert aug.color_jitter_prob == 0.8 and aug.grayscale_prob == 0.2 and aug.blur_prob == 0.5
    assert aug.blur_sigma == (0.1, 2.0) and aug.image_format == "BGR"
    assert aug.color_jitter.brightness == (0.6, 1.4) and aug.color_jitter.hue == (-0.1, 0.1)
    cfg.INPUT.SSL_AUG.GRAYSCALE_PROB = 1.5
    with pytest.raises(ValueError, match="GRAYSCALE_PROB"):
        PixelAugmentation(cfg)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="YUV"):
        _aug(fmt="YUV-BT.601")
    with pytest.raises(ValueError, match="uint8"):
        _aug()(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match=r"\(1, 8, 8\)"):
        _aug()(torch.zeros(1, 8, 8, dtype=torch.uint8))
