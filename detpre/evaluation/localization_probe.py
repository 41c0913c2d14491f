"""
The localization readout of InsLoc (Yang et al., "Instance Localization for Self-supervised
Detection Pretraining", CVPR 2021): how much a frozen pretrained detector knows *where* a region
lies in its image.

Each image is resized to a square and split into a 3 x 3 grid of M = 9 patch boxes; every box is
RoI-pooled through the frozen backbone and RoI head of a Detectron2 ``GeneralizedRCNN``
(C4: ``roi_heads.pooler`` on res4, ``roi_heads.res5``, global average pool -> 2048-d; FPN:
``roi_heads.box_pooler`` with Detectron2's level assignment, ``roi_heads.box_head`` -> 1024-d), and
a linear classifier is trained to predict the patch index. Its top-1 accuracy on the patches of
held-out images is the readout; chance is 1/9.

Two variants (``VARIANTS``):

* ``"grid"``, the paper's: the whole image goes through the network and the patches are pooled
  from its feature maps. A randomly initialised network already reads near 100 % here: zero
  padding and the image borders reach every patch's receptive field, so where a patch lies is in
  its feature whatever the pretraining;
* ``"isolated"``: each patch is cut out and fed alone (at ``size / 3`` pixels, the same pixels as
  in the grid) and its whole crop pooled. No border or padding tells the patches apart, so what
  remains is what the content says of its place (sky above, ground below): the question InsLoc
  asks of a representation, whether its features of a region know where the region lies, minus
  the cue every network has for free.

Report either next to a randomly initialised network probed the same way (the control) and chance;
the test accuracy comes with a 95 % bootstrap interval over test images.
"""

import logging
import math

import numpy as np
import torch
import torch.nn.functional as F
from detectron2.data import DatasetCatalog
from detectron2.data import transforms as T
from detectron2.modeling import build_model
from detectron2.modeling.roi_heads import Res5ROIHeads, StandardROIHeads
from detectron2.structures import Boxes
from detectron2.utils.file_io import PathManager
from torch import nn
from tqdm import tqdm

from ..checkpoint import DetpreCheckpointer
from ..data.image_io import read_image

__all__ = [
    "VARIANTS",
    "bootstrap_interval",
    "extract_patch_features",
    "grid_boxes",
    "patch_features",
    "run_localization_probe",
    "train_linear_probe",
]

logger = logging.getLogger(__name__)

# The paper's grid: 3 x 3 patches, so M = 9 classes.
GRID = 3
VARIANTS = ("grid", "isolated")


def grid_boxes(size, grid=GRID):
    """
    The boxes of a ``grid`` x ``grid`` split of a square image, in row-major order: patch
    ``i * grid + j`` is row ``i`` (top to bottom), column ``j`` (left to right). Edges are at
    ``k * size / grid`` (not rounded), so the boxes tile the image exactly.

    Args:
        size (int): side of the square image, in pixels.
        grid (int): patches per side.

    Returns:
        Boxes: (grid * grid, 4) in XYXY absolute coordinates.
    """
    if size < grid or grid < 1:
        raise ValueError(f"Cannot split a {size} x {size} image into a {grid} x {grid} grid")
    edges = torch.arange(grid + 1, dtype=torch.float32) * (size / grid)
    y, x = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    y, x = y.flatten(), x.flatten()
    return Boxes(torch.stack([edges[x], edges[y], edges[x + 1], edges[y + 1]], dim=1))


def patch_features(model, images, boxes):
    """
    RoI features of boxes through the frozen backbone and RoI head of a ``GeneralizedRCNN``.

    Args:
        model (GeneralizedRCNN): with a ``Res5ROIHeads`` (C4) or ``StandardROIHeads`` (FPN), in
            eval mode.
        images (ImageList): normalised images, as ``model.preprocess_image`` returns them.
        boxes (list[Boxes]): one per image, in the coordinates of the (unpadded) images.

    Returns:
        Tensor: (R, D), R the total number of boxes in image order; D = the res5 channels (2048
        for R50) for C4, the box head's output size (1024) for FPN.
    """
    heads = model.roi_heads
    features = model.backbone(images.tensor)
    if isinstance(heads, Res5ROIHeads):
        x = heads.pooler([features[f] for f in heads.in_features], boxes)
        return heads.res5(x).mean(dim=(2, 3))
    if isinstance(heads, StandardROIHeads):
        x = heads.box_pooler([features[f] for f in heads.box_in_features], boxes)
        return heads.box_head(x).flatten(1)
    raise TypeError(
        f"MODEL.ROI_HEADS.NAME: the localization probe reads a Res5ROIHeads (C4) or a "
        f"StandardROIHeads (FPN) or a subclass, not {type(heads).__name__}"
    )


def _load_resized(dataset_dict, size, input_format):
    image = read_image(dataset_dict["file_name"], format=input_format)
    image = T.Resize((size, size)).get_transform(image).apply_image(image)
    return {"image": torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))}


def _isolated_patches(image, size, grid=GRID):
    """The ``grid`` x ``grid`` patches of a (3, size, size) image, each resized to its own square
    of ``size // grid`` pixels (row-major)."""
    side = size // grid
    boxes = grid_boxes(size, grid).tensor.round().long().tolist()
    patches = []
    for x0, y0, x1, y1 in boxes:
        crop = image[:, y0:y1, x0:x1].permute(1, 2, 0).numpy()
        crop = T.Resize((side, side)).get_transform(crop).apply_image(crop)
        patches.append({"image": torch.as_tensor(np.ascontiguousarray(crop.transpose(2, 0, 1)))})
    return patches


@torch.no_grad()
def extract_patch_features(model, dataset_dicts, size=224, batch_size=32, variant="grid"):
    """
    Features of the 3 x 3 grid patches of every image. Images are read with the model's input
    format (``cfg.INPUT.FORMAT``), resized to ``size`` x ``size`` (aspect ratio not kept),
    normalised by ``model.preprocess_image`` and run ``batch_size`` at a time on the model's device.

    Args:
        model (GeneralizedRCNN): the frozen network (see :func:`patch_features`); put in eval mode.
        dataset_dicts (list[dict]): Detectron2 dataset dicts; only ``file_name`` is read.
        size (int): side of the square the images are resized to.
        batch_size (int): images per forward pass.
        variant (str): "grid" (whole images, patches pooled from their maps) or "isolated"
            (each patch fed alone, its whole crop pooled); see the module docstring.

    Returns:
        tuple[Tensor, Tensor, Tensor], on CPU:
            features (N * 9, D) float32; labels (N * 9,) int64, the patch index 0..8 (row-major);
            image_index (N * 9,) int64, the position of the patch's image in ``dataset_dicts``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    model.eval()
    boxes = grid_boxes(size).to(model.device)
    num_patches = len(boxes)
    side = size // GRID
    whole = Boxes(torch.tensor([[0.0, 0.0, side, side]], device=model.device))
    features = []
    for start in tqdm(
        range(0, len(dataset_dicts), batch_size), desc=f"patch features ({variant})", unit="batch"
    ):
        batch = [
            _load_resized(d, size, model.input_format)
            for d in dataset_dicts[start : start + batch_size]
        ]
        if variant == "isolated":
            batch = [p for b in batch for p in _isolated_patches(b["image"], size)]
            images = model.preprocess_image(batch)
            features.append(patch_features(model, images, [whole] * len(batch)).float().cpu())
            continue
        images = model.preprocess_image(batch)
        features.append(patch_features(model, images, [boxes] * len(batch)).float().cpu())
    if not features:
        raise ValueError("No images to extract patch features from")
    n = len(dataset_dicts)
    labels = torch.arange(num_patches).repeat(n)
    image_index = torch.arange(n).repeat_interleave(num_patches)
    return torch.cat(features), labels, image_index


def _accuracy(classifier, x, y):
    return (classifier(x).argmax(dim=1) == y).float().mean().item()


def train_linear_probe(
    train_x, train_y, test_x, test_y, *, num_classes=None, weight_decay=1e-3, max_iter=200
):
    """
    Fit a linear classifier (``nn.Linear(D, num_classes)``, multinomial logistic regression) on
    standardised features and measure its top-1 accuracy.

    Features are standardised per dimension with the mean and standard deviation of the *train*
    features (applied to both sets). The loss is cross-entropy plus ``weight_decay * ||W||^2``
    (bias not decayed), minimised by full-batch L-BFGS (strong-Wolfe line search) for at most
    ``max_iter`` iterations from zero weights. The problem is convex and the solver deterministic,
    so the result does not depend on a random seed.

    Args:
        train_x (Tensor): (N_train, D) features.
        train_y (Tensor): (N_train,) int64 labels in [0, num_classes).
        test_x (Tensor): (N_test, D) features.
        test_y (Tensor): (N_test,) int64 labels.
        num_classes (int or None): number of classes; default ``max(label) + 1`` over both sets.
        weight_decay (float): L2 penalty on the weights.
        max_iter (int): L-BFGS iterations.

    Returns:
        dict: ``train_acc`` and ``test_acc`` (floats in [0, 1]), ``train_loss`` (the final
        objective), ``test_correct`` ((N_test,) bool tensor: each test sample right or not).
    """
    if train_x.ndim != 2 or test_x.ndim != 2 or train_x.shape[1] != test_x.shape[1]:
        raise ValueError(
            f"Features must be (N, D) with the same D, got train {tuple(train_x.shape)} and "
            f"test {tuple(test_x.shape)}"
        )
    if len(train_x) != len(train_y) or len(test_x) != len(test_y) or not len(train_x):
        raise ValueError(
            f"Need as many labels as features and some training samples, got "
            f"{len(train_x)} / {len(train_y)} train and {len(test_x)} / {len(test_y)} test"
        )
    train_x, test_x = train_x.double(), test_x.double()
    train_y, test_y = train_y.long(), test_y.long()
    if num_classes is None:
        num_classes = int(torch.cat([train_y, test_y]).max()) + 1
    mean, std = train_x.mean(dim=0), train_x.std(dim=0, unbiased=False)
    std = torch.where(std > 1e-12, std, torch.ones_like(std))  # constant dims stay 0
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std

    classifier = nn.Linear(train_x.shape[1], num_classes).double()
    nn.init.zeros_(classifier.weight)
    nn.init.zeros_(classifier.bias)
    optimizer = torch.optim.LBFGS(
        classifier.parameters(), lr=1, max_iter=max_iter, line_search_fn="strong_wolfe"
    )

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(classifier(train_x), train_y)
        loss = loss + weight_decay * classifier.weight.pow(2).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
        train_loss = closure().item()
    with torch.no_grad():
        return {
            "train_acc": _accuracy(classifier, train_x, train_y),
            "test_acc": _accuracy(classifier, test_x, test_y) if len(test_x) else float("nan"),
            "train_loss": train_loss,
            "test_correct": classifier(test_x).argmax(dim=1) == test_y,
        }


def bootstrap_interval(correct, groups, num_resamples=1000, level=0.95, seed=0):
    """
    A percentile bootstrap interval of an accuracy whose samples come in groups (the 9 patches of
    one image are not independent): groups are resampled with replacement.

    Args:
        correct (Tensor): (N,) bool, each sample right or not.
        groups (Tensor): (N,) int64, the group (image) of each sample.
        num_resamples (int): bootstrap resamples.
        level (float): the interval's coverage.
        seed (int): seed of the resampling.

    Returns:
        tuple[float, float]: the interval's bounds.
    """
    ids, inverse = torch.unique(groups, return_inverse=True)
    hits = torch.zeros(len(ids), dtype=torch.float64).index_add_(0, inverse, correct.double())
    counts = torch.bincount(inverse, minlength=len(ids)).double()
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randint(len(ids), (num_resamples, len(ids)), generator=gen)
    accs = hits[draws].sum(dim=1) / counts[draws].sum(dim=1)
    tail = (1.0 - level) / 2
    lo, hi = torch.quantile(accs, torch.tensor([tail, 1.0 - tail], dtype=torch.float64))
    return float(lo), float(hi)


def _split_images(num_images, train_fraction, seed, max_images=None):
    """A seeded permutation of the image indices, cut into (train, test) index tensors."""
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction must be in (0, 1), got {train_fraction}")
    order = torch.randperm(num_images, generator=torch.Generator().manual_seed(seed))
    if max_images is not None:
        if max_images < 2:
            raise ValueError(f"max_images must be at least 2 (train and test), got {max_images}")
        order = order[:max_images]
    if len(order) < 2:
        raise ValueError(f"Cannot split {len(order)} image(s) into train and test: need 2 or more")
    num_train = min(max(round(len(order) * train_fraction), 1), len(order) - 1)
    return order[:num_train], order[num_train:]


def _check_weights(weights):
    if weights and "://" not in weights and not PathManager.isfile(weights):
        raise FileNotFoundError(f"Weights file {weights} does not exist")


def _load_weights(model, weights):
    """Load ``weights`` into ``model``; return the checkpointer's load report (None if no file)."""
    if not weights:
        logger.warning("No weights given: probing a randomly initialised network.")
        return None
    checkpointer = DetpreCheckpointer(model)
    checkpointer.load(weights)
    return checkpointer.last_load_report


def run_localization_probe(
    cfg,
    weights=None,
    dataset_name="imagenet_sample_unlabeled",
    *,
    size=224,
    batch_size=32,
    max_images=None,
    train_fraction=0.8,
    seed=0,
    weight_decay=1e-3,
    max_iter=200,
    variant="grid",
):
    """
    The localization readout of a checkpoint on registered datasets.

    The network is Detectron2's ``GeneralizedRCNN`` built from ``cfg`` (whatever
    ``MODEL.META_ARCHITECTURE`` says, so the names are Detectron2's and a pretraining output,
    a ``*_d2.pth`` export, a Detectron2 model or a torchvision ResNet all load), on
    ``cfg.MODEL.DEVICE``, frozen. The images of the dataset are permuted with ``seed``; the first
    ``max_images`` are kept and split into train / test images by ``train_fraction``, so the patches
    of one image are never on both sides.

    Args:
        cfg (CfgNode): a detpre config describing the architecture (C4 or FPN).
        weights (str or None): checkpoint path or URL; None takes ``cfg.MODEL.WEIGHTS``; "" probes
            a random initialisation.
        dataset_name (str or list[str]): names registered in ``DatasetCatalog`` (their images
            together); only ``file_name`` is read.
        size (int): side of the square the images are resized to.
        batch_size (int): images per forward pass.
        max_images (int or None): use at most this many images (a seeded random subset).
        train_fraction (float): fraction of the images whose patches train the classifier.
        seed (int): seed of the image permutation.
        weight_decay, max_iter: see :func:`train_linear_probe`.
        variant (str): "grid" or "isolated" (see the module docstring).

    Returns:
        dict (JSON-serialisable): ``test_acc``, ``test_acc_interval`` (95 % bootstrap interval
        over test images), ``train_acc``, ``chance`` (1/9), ``variant``, ``feature_dim``,
        ``num_patches`` (9), ``num_train_images``, ``num_test_images``, the options used, and
        ``load_report`` (list of dicts, one per module group, as
        :func:`detpre.checkpoint.load_report`; None when no weights were loaded).
    """
    cfg = cfg.clone()
    cfg.defrost()
    cfg.MODEL.META_ARCHITECTURE = "GeneralizedRCNN"
    cfg.freeze()
    weights = cfg.MODEL.WEIGHTS if weights is None else weights
    _check_weights(weights)

    names = [dataset_name] if isinstance(dataset_name, str) else list(dataset_name)
    dataset_dicts = [d for name in names for d in DatasetCatalog.get(name)]
    train_idx, test_idx = _split_images(len(dataset_dicts), train_fraction, seed, max_images)
    used = torch.cat([train_idx, test_idx])
    dataset_dicts = [dataset_dicts[i] for i in used.tolist()]

    model = build_model(cfg)
    report = _load_weights(model, weights)
    model.eval().requires_grad_(False)
    features, labels, image_index = extract_patch_features(
        model, dataset_dicts, size, batch_size, variant
    )

    is_train = image_index < len(train_idx)  # dataset_dicts lists the train images first
    result = train_linear_probe(
        features[is_train],
        labels[is_train],
        features[~is_train],
        labels[~is_train],
        num_classes=GRID * GRID,
        weight_decay=weight_decay,
        max_iter=max_iter,
    )
    correct = result.pop("test_correct")
    result.update(
        test_acc_interval=bootstrap_interval(correct, image_index[~is_train], seed=seed),
        variant=variant,
        chance=1.0 / (GRID * GRID),
        feature_dim=features.shape[1],
        num_patches=GRID * GRID,
        num_train_images=len(train_idx),
        num_test_images=len(test_idx),
        dataset=names[0] if len(names) == 1 else names,
        weights=weights,
        size=size,
        train_fraction=train_fraction,
        seed=seed,
        load_report=[row._asdict() for row in report] if report is not None else None,
    )
    if not math.isfinite(result["train_loss"]):
        logger.warning("The linear probe's loss is not finite: check the features.")
    return result
