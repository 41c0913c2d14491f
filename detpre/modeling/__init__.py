# Importing registers detpre's heads and meta-architectures with Detectron2's registries.
from . import meta_arch  # noqa: F401  registers InsLoc, MoCoV2
from . import roi_heads  # noqa: F401  registers Res5ROIHeadsExtraNorm
from . import ssl  # noqa: F401
