# Importing registers detpre's heads and meta-architectures with Detectron2's registries.
from . import backbone  # noqa: F401  registers build_vitdet_backbone
from . import meta_arch  # noqa: F401  the base of every pretraining meta-architecture
from . import roi_heads  # noqa: F401  registers Res5ROIHeadsExtraNorm, FastRCNNConvFCHeadExtraNorm
from . import semseg  # noqa: F401  registers FCNHead, LinearSegHead and their backbones
from . import ssl  # noqa: F401
from . import aligndet, insloc, loca, moco, slotcon  # noqa: F401  one folder per method
