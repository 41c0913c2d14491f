"""MoCo-v2's views: two random-resized crops of one image."""

from detectron2.config import configurable

from ..build import PRETRAIN_MAPPER_REGISTRY
from ..transforms.crops import sample_crop
from .base import check_range
from .two_views import TwoViewsMapper

__all__ = ["TwoCropsMapper"]


@PRETRAIN_MAPPER_REGISTRY.register()
class TwoCropsMapper(TwoViewsMapper):
    """
    MoCo-v2's two views (Chen et al., "Improved Baselines with Momentum Contrastive Learning",
    2020): two independent random-resized crops of the image (torchvision semantics) resized to
    ``crop_size`` squares, each flipped and pixel-augmented. The box of each view is the whole
    view, so box-pooling models read MoCo-v2 as whole-image contrast.
    """

    @configurable
    def __init__(
        self, *, crop_size, crop_scale, crop_ratio, image_format, pixel_aug, flip_prob, draft_decode
    ):
        """
        Args:
            crop_size (int): side of each square view.
            crop_scale (tuple[float, float]): crop area range, as a fraction of the image.
            crop_ratio (tuple[float, float]): crop aspect-ratio range (log-uniform).
            image_format, pixel_aug, flip_prob, draft_decode: see :class:`TwoViewsMapper`.
        """
        super().__init__(
            image_format=image_format,
            pixel_aug=pixel_aug,
            flip_prob=flip_prob,
            draft_decode=draft_decode,
        )
        if crop_size < 1:
            raise ValueError(f"MOCO.CROP_SIZE={crop_size} must be a positive side in pixels")
        self.crop_size = int(crop_size)
        self.crop_scale = check_range("MOCO.CROP_SCALE", crop_scale, high=1.0)
        self.crop_ratio = check_range("MOCO.CROP_RATIO", crop_ratio)

    @classmethod
    def from_config(cls, cfg, is_train=True, dataset_dicts=None):
        # dataset_dicts: part of the pretext-mapper signature; MoCo-v2 needs no other image.
        return {
            "crop_size": cfg.MOCO.CROP_SIZE,
            "crop_scale": tuple(cfg.MOCO.CROP_SCALE),
            "crop_ratio": tuple(cfg.MOCO.CROP_RATIO),
            **cls._base_config(cfg, is_train),
        }

    def make_views(self, image, dataset_dict):
        s = self.crop_size
        crops = [sample_crop(*image.shape, self.crop_scale, self.crop_ratio) for _ in range(2)]
        views = self.resized_crops(image, crops, [(s, s)] * 2)
        return [self.make_view(view, (0, 0, s, s)) for view in views]
