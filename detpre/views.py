"""
The view contract between the pretext mappers (``detpre/data/mappers``) and the pretraining
meta-architectures (``detpre/modeling/meta_arch``), in one place: the keys a view may hold, and
the one function a model splits its batch with (docs/architecture.md, "Views").

A pretext mapper returns, per dataset image, ``{"file_name", "image_id", "views": [view, ...]}``
(or None to skip an unreadable image). Every view holds :data:`IMAGE`; each method declares the
other keys its model reads (``PretrainingMetaArch.view_keys``):

============  ==========================================================  =====================
key           value                                                       methods
============  ==========================================================  =====================
``image``     uint8 Tensor (3, H, W) in ``INPUT.FORMAT`` channel order    all
``boxes``     ``Boxes`` (1, 4) XYXY in the view's pixels: the pooled box  InsLoc (MoCo-v2: the
                                                                          whole view)
``crop_box``  float32 Tensor (4,) XYXY of the crop in the original image  SlotCon, LOCA
``flipped``   bool, whether the view was flipped after cropping           SlotCon, LOCA
``instances`` ``Instances`` with ``gt_boxes`` and ``gt_ids`` (proposals)  AlignDet
============  ==========================================================  =====================
"""

__all__ = [
    "BOXES",
    "CROP_BOX",
    "FLIPPED",
    "IMAGE",
    "INSTANCES",
    "VIEWS",
    "VIEW_KEYS",
    "split_views",
]

VIEWS = "views"
IMAGE = "image"
BOXES = "boxes"
CROP_BOX = "crop_box"
FLIPPED = "flipped"
INSTANCES = "instances"
# Every key a view may hold (a mapper writes no other).
VIEW_KEYS = (IMAGE, BOXES, CROP_BOX, FLIPPED, INSTANCES)


def split_views(batched_inputs, names, keys=(IMAGE,), *, mapper=None, more=False):
    """
    Check a batch of mapper outputs against a method's views and regroup it by view position.

    Args:
        batched_inputs (list[dict]): N mapper outputs, each with ``"views"``.
        names (sequence[str]): what the views are, in order (``("query_view", "key_view")``);
            each input must have exactly this many views, or at least this many with ``more``.
        keys (sequence[str]): the keys (among :data:`VIEW_KEYS`) every view must hold.
        mapper (str or None): the ``SSL.MAPPER`` that makes these views, named in errors.
        more (bool): accept further views after ``names`` (LOCA's focal queries), the same
            number for every input.

    Returns:
        list[list[dict]]: one list per view position, holding that view of every input in input
        order (``out[j][i]`` is view j of input i).

    Raises:
        ValueError: an input lacks views, has another number of them, or a view lacks a key;
        the message names the input, the view and the mapper.
    """
    unknown = sorted(set(keys) - set(VIEW_KEYS))
    if unknown:
        raise ValueError(f"Unknown view keys {unknown}; views hold {list(VIEW_KEYS)}")
    check = f"check SSL.MAPPER ({mapper})" if mapper else "check SSL.MAPPER"
    expected = "[" + ", ".join(names) + (", ..." if more else "") + "]"
    counts = set()
    for i, x in enumerate(batched_inputs):
        views = x.get(VIEWS) if isinstance(x, dict) else None
        count = len(views) if isinstance(views, (list, tuple)) else None
        if count is None or count < len(names) or (count > len(names) and not more):
            got = f"{count} views" if count is not None else f"keys {sorted(x)}"
            raise ValueError(f"Input {i} must have 'views': {expected} (got {got}); {check}")
        counts.add(count)
        for j, v in enumerate(views):
            missing = [k for k in keys if k not in v]
            if missing:
                name = names[j] if j < len(names) else f"view {j}"
                required = " and ".join(repr(k) for k in keys)
                raise ValueError(
                    f"Input {i}, {name}: every view must record {required}, missing "
                    f"{missing} (got keys {sorted(v)}); {check}"
                )
    if len(counts) > 1:
        raise ValueError(
            f"Inputs have different numbers of views {sorted(counts)}; a batch needs the same "
            f"number per image ({expected}); {check}"
        )
    count = counts.pop() if counts else len(names)
    return [[x[VIEWS][j] for x in batched_inputs] for j in range(count)]
