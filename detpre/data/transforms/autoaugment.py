"""
Box-aware AutoAugment and RandAugment for detection, as Detectron2 augmentations.

The op pool, magnitudes and policies are those of the detection AutoAugment code (Zoph et al.,
"Learning Data Augmentation Strategies for Object Detection", ECCV 2020; TensorFlow TPU
``autoaugment_utils.py``), with these documented changes:

* The bbox-only ops (``*_Only_BBoxes``, ``BBox_Cutout``) are left out: they move the content of
  each box inside the box, which an instance mask cannot follow. A sub-policy keeps its other ops.
* Translate and Cutout sizes are given in pixels for COCO images (AutoAugment: 250 and 100 px
  at level 10; RandAugment for detection, TF Model Garden's ``RandAugment.build_for_detection``:
  100 and 40 px); here they scale with the image by ``max(h, w) / 640`` (640 = COCO's longer
  side), so an op does the same to a small or a large image.
* ``Posterize`` keeps ``8 - 4 * level / 10`` bits and ``Solarize`` inverts values at or above
  ``256 * (1 - level / 10)``, so that a larger level is always stronger (the TF mappings make
  level 10 of Solarize a no-op and level 0 of Posterize a black image); level 10 Posterize keeps
  4 bits in both.
* Geometric ops resample bilinearly (TF: nearest) and fill with 128, as TF.
"""

from functools import partial

import numpy as np
from detectron2.data import transforms as T

from .color_ops import CutoutTransform, PILColorOpTransform
from .geometric_ops import rotate_transform, shear_transform, translate_transform

__all__ = [
    "AUTOAUGMENT_POLICIES",
    "AugmentOp",
    "DetectionAutoAugment",
    "OP_NAMES",
    "RandAugment",
    "make_op_transform",
]

MAX_LEVEL = 10.0
# COCO's longer image side, the size the TF pixel constants below were set for.
_REFERENCE_SIZE = 640.0
# Translate (px) and Cutout half-width (px) at level 10: detection AutoAugment
# (tensorflow/tpu autoaugment_utils.py: translate_const 250, cutout_const 100) and RandAugment
# for detection (TF Model Garden augment.py RandAugment: translate_const 100, cutout_const 40).
AUTOAUGMENT_CONSTS = (250.0, 100.0)
RANDAUGMENT_CONSTS = (100.0, 40.0)
_FILL = 128


def _random_sign(value):
    return value if np.random.rand() < 0.5 else -value


def _scale(h, w):
    return max(h, w) / _REFERENCE_SIZE


def _enhance_factor(level):
    return level / MAX_LEVEL * 1.8 + 0.1


def _translate_pixels(level, h, w, consts):
    return level / MAX_LEVEL * consts[0] * _scale(h, w)


def _cutout(level, h, w, consts):
    pad = int(level / MAX_LEVEL * consts[1] * _scale(h, w))
    cy, cx = np.random.randint(h), np.random.randint(w)
    return CutoutTransform(cx - pad, cy - pad, cx + pad, cy + pad, fill=_FILL)


def _color(name, arg_of_level=None):
    def make(level, h, w, image_format, consts):
        args = () if arg_of_level is None else (arg_of_level(level),)
        return PILColorOpTransform(name, args, image_format=image_format)

    return make


def _geometric(make_transform, arg_of_level):
    def make(level, h, w, image_format, consts):
        return make_transform(h, w, _random_sign(arg_of_level(level, h, w, consts)), fill=_FILL)

    return make


# name -> fn(level, h, w, image_format, (translate, cutout) constants) -> Transform. Random signs
# and positions are drawn here.
_OPS = {
    "AutoContrast": _color("AutoContrast"),
    "Equalize": _color("Equalize"),
    "Invert": _color("Invert"),
    "Posterize": _color("Posterize", lambda lv: 8 - int(lv / MAX_LEVEL * 4)),
    "Solarize": _color("Solarize", lambda lv: 256 - int(lv / MAX_LEVEL * 256)),
    "SolarizeAdd": _color("SolarizeAdd", lambda lv: int(lv / MAX_LEVEL * 110)),
    "Color": _color("Color", _enhance_factor),
    "Contrast": _color("Contrast", _enhance_factor),
    "Brightness": _color("Brightness", _enhance_factor),
    "Sharpness": _color("Sharpness", _enhance_factor),
    "Cutout": lambda level, h, w, image_format, consts: _cutout(level, h, w, consts),
    "Rotate_BBox": _geometric(rotate_transform, lambda lv, h, w, c: lv / MAX_LEVEL * 30.0),
    "ShearX_BBox": _geometric(
        partial(shear_transform, horizontal=True), lambda lv, h, w, c: lv / MAX_LEVEL * 0.3
    ),
    "ShearY_BBox": _geometric(
        partial(shear_transform, horizontal=False), lambda lv, h, w, c: lv / MAX_LEVEL * 0.3
    ),
    "TranslateX_BBox": _geometric(partial(translate_transform, horizontal=True), _translate_pixels),
    "TranslateY_BBox": _geometric(
        partial(translate_transform, horizontal=False), _translate_pixels
    ),
}
# The op pool (TF names): 11 pixel ops and 5 geometric ops that move boxes and masks. It is the
# pool of TF's RandAugment for detection (16 ops); the AutoAugment policies use 15 (no Invert).
OP_NAMES = tuple(_OPS)

# Sub-policies of (op, probability, level), from the TF code with the bbox-only ops removed (a
# sub-policy made only of those is kept empty, so the others keep their 1 / len chance).
# "v0" is the policy of the paper's results; "v1" its larger 20-sub-policy variant.
AUTOAUGMENT_POLICIES = {
    "v0": (
        (("TranslateX_BBox", 0.6, 4), ("Equalize", 0.8, 10)),
        (("Cutout", 0.8, 8),),
        (("Sharpness", 0.0, 8), ("ShearX_BBox", 0.4, 0)),
        (("ShearY_BBox", 1.0, 2),),
        (("Rotate_BBox", 0.6, 10), ("Color", 1.0, 6)),
    ),
    "v1": (
        (("TranslateX_BBox", 0.6, 4), ("Equalize", 0.8, 10)),
        (("Cutout", 0.8, 8),),
        (("Sharpness", 0.0, 8), ("ShearX_BBox", 0.4, 0)),
        (("ShearY_BBox", 1.0, 2),),
        (("Rotate_BBox", 0.6, 10), ("Color", 1.0, 6)),
        (("Color", 0.0, 0),),
        (),  # ShearY_Only_BBoxes, Flip_Only_BBoxes
        (("Equalize", 0.6, 10), ("TranslateX_BBox", 0.2, 2)),
        (("Color", 1.0, 10),),
        (("Rotate_BBox", 0.8, 10), ("Contrast", 0.0, 10)),
        (("Cutout", 0.2, 2), ("Brightness", 0.8, 10)),
        (("Color", 1.0, 6), ("Equalize", 1.0, 2)),
        (),  # Cutout_Only_BBoxes, TranslateY_Only_BBoxes
        (("Color", 0.2, 8), ("Rotate_BBox", 0.8, 10)),
        (("Sharpness", 0.4, 4),),
        (("Sharpness", 1.0, 4), ("SolarizeAdd", 0.4, 4)),
        (("Rotate_BBox", 1.0, 8), ("Sharpness", 0.2, 8)),
        (("ShearY_BBox", 0.6, 10),),
        (("ShearX_BBox", 0.2, 6),),
        (("SolarizeAdd", 0.6, 8), ("Brightness", 0.8, 10)),
    ),
}


def make_op_transform(name, level, image_shape, image_format="RGB", consts=AUTOAUGMENT_CONSTS):
    """
    The transform of one op at one level; random signs (geometric ops) and the Cutout position
    are drawn from NumPy's global RNG, as Detectron2's augmentations do.

    Args:
        name (str): one of ``OP_NAMES``.
        level (float): the magnitude, in [0, 10].
        image_shape (tuple[int, int]): (h, w) of the image it will be applied to.
        image_format (str): "RGB" or "BGR" (the channel order of the images).
        consts (tuple[float, float]): translation and Cutout half-width in pixels at level 10
            for a 640 px image (``AUTOAUGMENT_CONSTS`` or ``RANDAUGMENT_CONSTS``).

    Returns:
        Transform
    """
    if name not in _OPS:
        raise KeyError(f"Unknown augmentation op {name!r}; available: {OP_NAMES}")
    if not 0 <= level <= MAX_LEVEL:
        raise ValueError(f"Op {name}: level={level} is outside [0, {MAX_LEVEL:g}]")
    h, w = image_shape[:2]
    return _OPS[name](float(level), h, w, image_format, tuple(consts))


class AugmentOp(T.Augmentation):
    """One op of the detection AutoAugment pool, applied with probability ``prob``."""

    def __init__(self, name, level, prob=1.0, image_format="RGB"):
        """
        Args:
            name (str): one of ``OP_NAMES``.
            level (float): the magnitude, in [0, 10].
            prob (float): the probability of applying the op.
            image_format (str): "RGB" or "BGR".
        """
        super().__init__()
        if name not in _OPS:
            raise KeyError(f"Unknown augmentation op {name!r}; available: {OP_NAMES}")
        if not 0 <= level <= MAX_LEVEL:
            raise ValueError(f"Op {name}: level={level} is outside [0, {MAX_LEVEL:g}]")
        self._init(locals())

    def get_transform(self, image):
        if self.prob < 1.0 and np.random.rand() >= self.prob:
            return T.NoOpTransform()
        return make_op_transform(self.name, self.level, image.shape, self.image_format)


class DetectionAutoAugment(T.Augmentation):
    """
    The learned detection AutoAugment policy (Zoph et al., ECCV 2020): pick one sub-policy
    uniformly, apply each of its ops with its probability, in order. Used by the S2 and S3 presets
    of Zoph et al., "Rethinking Pre-training and Self-training", NeurIPS 2020.
    """

    def __init__(self, policy="v0", image_format="RGB"):
        """
        Args:
            policy (str): a key of ``AUTOAUGMENT_POLICIES``.
            image_format (str): "RGB" or "BGR".
        """
        super().__init__()
        if policy not in AUTOAUGMENT_POLICIES:
            raise KeyError(
                f"INPUT.STRONG_AUG.AUTOAUG_POLICY={policy!r}: "
                f"available policies are {sorted(AUTOAUGMENT_POLICIES)}"
            )
        self.sub_policies = [
            [AugmentOp(n, lv, p, image_format) for n, p, lv in sub]
            for sub in AUTOAUGMENT_POLICIES[policy]
        ]
        self._init(dict(policy=policy, image_format=image_format))

    def get_transform(self, image):
        ops = self.sub_policies[np.random.randint(len(self.sub_policies))]
        return T.TransformList([op.get_transform(image) for op in ops])


class RandAugment(T.Augmentation):
    """
    RandAugment (Cubuk et al., "RandAugment: Practical automated data augmentation with a reduced
    search space", 2020) over the detection op pool, as TF Model Garden's
    ``RandAugment.build_for_detection``: ``num_ops`` times, one slot of ``len(ops) + 1`` drawn
    uniformly (the extra slot, with ``identity_slot``, leaves the image as it is), the op applied
    at the shared ``magnitude``, translations and Cutout sized by ``consts``. Used by the S4
    preset of Zoph et al., "Rethinking Pre-training and Self-training", NeurIPS 2020
    (magnitude 10).
    """

    def __init__(
        self,
        num_ops=2,
        magnitude=10,
        ops=OP_NAMES,
        image_format="RGB",
        consts=RANDAUGMENT_CONSTS,
        identity_slot=True,
    ):
        """
        Args:
            num_ops (int): N, the number of ops applied in sequence.
            magnitude (float): M, the level of every op, in [0, 10].
            ops (tuple[str]): the op pool (names of ``OP_NAMES``).
            image_format (str): "RGB" or "BGR".
            consts (tuple[float, float]): translation and Cutout half-width in pixels at level 10
                for a 640 px image (TF RandAugment: 100, 40).
            identity_slot (bool): draw among ``len(ops) + 1`` slots, the last one a no-op (TF).
        """
        super().__init__()
        if num_ops < 1:
            raise ValueError(f"INPUT.STRONG_AUG.RANDAUG_NUM_OPS={num_ops} must be >= 1")
        if not 0 <= magnitude <= MAX_LEVEL:
            raise ValueError(
                f"INPUT.STRONG_AUG.RANDAUG_MAGNITUDE={magnitude} is outside [0, {MAX_LEVEL:g}]"
            )
        unknown = sorted(set(ops) - set(OP_NAMES))
        if unknown or not ops:
            raise KeyError(f"RandAugment ops {unknown or ops}: available ops are {OP_NAMES}")
        if len(consts) != 2 or min(consts) < 0:
            raise ValueError(
                f"RandAugment translate / cutout constants {tuple(consts)}: expected two values "
                ">= 0 (INPUT.STRONG_AUG.RANDAUG_TRANSLATE_CONST, RANDAUG_CUTOUT_CONST)"
            )
        self._init(
            dict(
                num_ops=num_ops,
                magnitude=magnitude,
                ops=tuple(ops),
                image_format=image_format,
                consts=tuple(float(c) for c in consts),
                identity_slot=bool(identity_slot),
            )
        )

    def get_transform(self, image):
        slots = len(self.ops) + int(self.identity_slot)
        picks = np.random.randint(slots, size=self.num_ops)
        return T.TransformList(
            [
                (
                    make_op_transform(
                        self.ops[i], self.magnitude, image.shape, self.image_format, self.consts
                    )
                    if i < len(self.ops)
                    else T.NoOpTransform()
                )
                for i in picks
            ]
        )
