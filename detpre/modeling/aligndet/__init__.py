"""AlignDet's box-domain stage (Li et al., ICCV 2023) for Faster R-CNN and RetinaNet. Importing registers the meta-architecture."""

from .aligndet import AlignDet
from .aligndet_retinanet import AlignDetRetinaNet
from .box_domain import BoxDomainPretraining

__all__ = [
    "AlignDet",
    "AlignDetRetinaNet",
    "BoxDomainPretraining",
]
