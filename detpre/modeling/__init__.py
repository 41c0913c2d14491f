# Importing registers detpre's heads and meta-architectures with Detectron2's registries.
from . import backbone  # noqa: F401  registers build_vitdet_backbone
from . import meta_arch  # noqa: F401  registers the pretraining meta-architectures
from . import roi_heads  # noqa: F401  registers Res5ROIHeadsExtraNorm, FastRCNNConvFCHeadExtraNorm
from . import ssl  # noqa: F401
