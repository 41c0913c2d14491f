#!/usr/bin/env python
"""
Write seeded low-data splits of a COCO json: the semi-supervised / low-data protocol of
self-supervised detection papers (1%, 5%, 10% of COCO train2017 labelled).

For each percent p, a split keeps round(p / 100 * N) of the N images (rounded half up, at least
1), with all their annotations and only theirs; categories, info and licenses are copied. For one
seed the images are a prefix of one seeded permutation of the sorted image ids, so the 1% split
is inside the 5% split, inside the 10% split; the same seed gives the same files. With
``--complement`` the other images are written too, as the unlabeled "rest".

Output names follow the convention of the low-data literature: ``{stem}.{seed}@{percent}.json``
and ``{stem}.{seed}@{percent}-unlabeled.json`` (e.g. ``instances_train2017.1@10.json``).
Nothing is registered: register a split with DATASETS.REGISTER_COCO (see datasets/README.md).

    python datasets/prepare_coco_subsets.py --percents 1 5 10 --seed 1 --complement
"""

import argparse
import json
import math
import os
import random

__all__ = ["main", "num_selected", "select_image_ids", "subset", "write_splits"]

_DEFAULT_JSON = "coco/annotations/instances_train2017.json"


def num_selected(percent, num_images):
    """
    Args:
        percent (float): in (0, 100].
        num_images (int): N, the images of the full json.

    Returns:
        int: round(percent / 100 * N), halves rounded up, at least 1.
    """
    if not 0 < percent <= 100:
        raise ValueError(f"A percent must be in (0, 100], got {percent}")
    return max(1, math.floor(percent * num_images / 100 + 0.5))


def select_image_ids(image_ids, percent, seed):
    """
    Args:
        image_ids (list[int]): the ids of the full json.
        percent (float): in (0, 100].
        seed (int): the permutation's seed.

    Returns:
        list[int]: the selected ids, sorted; a prefix of the seed's permutation of the sorted ids.
    """
    order = sorted(image_ids)
    random.Random(seed).shuffle(order)
    return sorted(order[: num_selected(percent, len(order))])


def subset(coco, image_ids):
    """
    Args:
        coco (dict): a COCO json.
        image_ids (iterable[int]): the images to keep.

    Returns:
        dict: the json with those images and their annotations only; other keys copied.
    """
    keep = set(image_ids)
    out = {k: v for k, v in coco.items() if k not in ("images", "annotations")}
    out["images"] = [im for im in coco["images"] if im["id"] in keep]
    out["annotations"] = [a for a in coco.get("annotations", []) if a["image_id"] in keep]
    return out


def _write(data, path):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, path)


def write_splits(json_file, out_dir, percents, seed, complement=False):
    """
    Write one json per percent (and its complement when asked) into ``out_dir``.

    Args:
        json_file (str): the full COCO json.
        out_dir (str): output folder, created if needed.
        percents (list[float]): each in (0, 100].
        seed (int): the permutation's seed.
        complement (bool): also write the images left out of each split.

    Returns:
        list[str]: the files written.
    """
    with open(json_file) as f:
        coco = json.load(f)
    image_ids = [im["id"] for im in coco["images"]]
    if len(set(image_ids)) != len(image_ids):
        raise ValueError(f"{json_file} has duplicate image ids")
    if not image_ids:
        raise ValueError(f"{json_file} has no images")
    os.makedirs(out_dir, exist_ok=True)
    stem = os.path.splitext(os.path.basename(json_file))[0]
    written = []
    for percent in percents:
        selected = select_image_ids(image_ids, percent, seed)
        name = os.path.join(out_dir, f"{stem}.{seed}@{percent:g}")
        splits = [(name + ".json", selected)]
        if complement:
            rest = sorted(set(image_ids) - set(selected))
            splits.append((name + "-unlabeled.json", rest))
        for path, ids in splits:
            data = subset(coco, ids)
            _write(data, path)
            written.append(path)
            print(f"{path}: {len(data['images'])} images, {len(data['annotations'])} annotations")
    return written


def main(argv=None):
    """
    Args:
        argv (list[str] or None): command-line arguments (None: ``sys.argv[1:]``).

    Returns:
        list[str]: the files written.
    """
    root = os.path.expanduser(os.getenv("DETECTRON2_DATASETS", "datasets"))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--json",
        default=os.path.join(root, _DEFAULT_JSON),
        help="the full COCO json (default: $DETECTRON2_DATASETS/" + _DEFAULT_JSON + ")",
    )
    parser.add_argument(
        "--out-dir", default=None, help="output folder (default: the json's folder)"
    )
    parser.add_argument(
        "--percents", type=float, nargs="+", default=[1, 5, 10], help="percent of the images"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the image permutation")
    parser.add_argument(
        "--complement", action="store_true", help="also write the rest of the images"
    )
    args = parser.parse_args(argv)
    if not os.path.isfile(args.json):
        parser.error(f"--json {args.json} does not exist")
    for percent in args.percents:
        if not 0 < percent <= 100:
            parser.error(f"--percents: {percent:g} is not in (0, 100]")
    out_dir = args.out_dir or os.path.dirname(os.path.abspath(args.json))
    return write_splits(args.json, out_dir, args.percents, args.seed, args.complement)


if __name__ == "__main__":
    main()
