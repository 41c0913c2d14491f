"""
Shuffle-BN across ranks in a real 2-process gloo run on CPU (detectron2's ``launch`` picks gloo
when no GPU is present). Workers write what they see to files; the parent asserts.
"""

import os

import torch
import torch.nn.functional as F
from detectron2.utils import comm
from torch import nn

from detpre.engine import launch
from detpre.modeling.ssl import (
    FeatureQueue,
    batch_shuffle,
    batch_unshuffle,
    concat_all_gather,
)

PER_RANK = 3
WORLD = 2
# Rank 1's images are wider: shuffling pads them to a common size.
SIZES = {0: (8, 8), 1: (8, 12)}


def _image(g):
    """Image of global index g: constant g + 100 * channel on its own size, zero elsewhere."""
    h, w = SIZES[g // PER_RANK]
    return (torch.arange(3, dtype=torch.float32).view(3, 1, 1) * 100 + g).expand(3, h, w)


def _padded(g, size=(8, 12)):
    img = torch.zeros(3, *size)
    x = _image(g)
    img[:, : x.shape[1], : x.shape[2]] = x
    return img


def _bn_net():
    torch.manual_seed(7)
    return nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4, momentum=1.0))


def _worker(out_dir):
    rank = comm.get_rank()
    gids = [rank * PER_RANK + i for i in range(PER_RANK)]
    h, w = SIZES[rank]
    images = torch.stack([_image(g) for g in gids])
    boxes = torch.tensor([[g, g + 0.5, g + 1.0, g + 1.5] for g in gids])
    sizes = torch.tensor([[h, w]] * PER_RANK)

    torch.manual_seed(0)
    shuffled, (s_boxes, s_sizes), idx_unshuffle = batch_shuffle(images, boxes, sizes)
    net = _bn_net().train()
    out = net(shuffled)
    # per-image output that identifies the image: its top-left pixel of channel 0
    unshuffled = batch_unshuffle(shuffled[:, 0, 0, 0].clone(), idx_unshuffle)
    unshuffled_out = batch_unshuffle(out.mean(dim=(2, 3)), idx_unshuffle)

    queue = FeatureQueue(8, 2)
    keys = torch.tensor([[g + 1.0, 1.0] for g in gids])
    queue.enqueue(concat_all_gather(keys))
    queue.enqueue(concat_all_gather(keys + 10))

    torch.save(
        {
            "shuffled": shuffled,
            "boxes": s_boxes,
            "sizes": s_sizes,
            "unshuffled": unshuffled,
            "unshuffled_out": unshuffled_out,
            "running_mean": net[1].running_mean.clone(),
            "running_var": net[1].running_var.clone(),
            "queue": queue.queue.clone(),
            "ptr": int(queue.ptr),
            "world": comm.get_world_size(),
        },
        os.path.join(out_dir, f"rank{rank}.pt"),
    )


def test_two_process_shuffle(tmp_path):
    launch(_worker, num_gpus_per_machine=WORLD, dist_url="auto", args=(str(tmp_path),))
    res = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    assert all(r["world"] == WORLD for r in res)

    received = []
    for rank, r in enumerate(res):
        assert r["shuffled"].shape == (PER_RANK, 3, 8, 12)
        gids = r["shuffled"][:, 0, 0, 0].round().long().tolist()
        received.append(gids)
        for i, g in enumerate(gids):
            # the image, its box and its size travelled together
            assert torch.equal(r["shuffled"][i], _padded(g))
            assert r["boxes"][i].tolist() == [g, g + 0.5, g + 1.0, g + 1.5]
            assert tuple(r["sizes"][i].tolist()) == SIZES[g // PER_RANK]
        # unshuffle gives each rank its own images back, in order
        own = [rank * PER_RANK + i for i in range(PER_RANK)]
        assert r["unshuffled"].round().long().tolist() == own
    assert sorted(sum(received, [])) == list(range(WORLD * PER_RANK))
    # the shuffle really crossed ranks (fixed seed)
    assert set(received[0]) != set(range(PER_RANK))

    # BN statistics are those of the shuffled sub-batch, not of the rank's own images
    net = _bn_net()
    for rank, r in enumerate(res):
        sub = net[0](torch.stack([_padded(g) for g in received[rank]]))
        own = net[0](torch.stack([_padded(rank * PER_RANK + i) for i in range(PER_RANK)]))
        assert torch.allclose(r["running_mean"], sub.mean(dim=(0, 2, 3)), atol=1e-4)
        assert torch.allclose(r["running_var"], sub.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4)
        assert not torch.allclose(r["running_mean"], own.mean(dim=(0, 2, 3)), atol=1e-2)
    # unshuffled outputs are those of each rank's own images, in order, though computed on the
    # shuffled sub-batches
    out_by_gid = {}
    for rank, r in enumerate(res):
        sub = net[0](torch.stack([_padded(g) for g in received[rank]]))
        normed = F.batch_norm(sub, None, None, net[1].weight, net[1].bias, training=True, eps=1e-5)
        out_by_gid.update(zip(received[rank], normed.mean(dim=(2, 3))))
    for rank, r in enumerate(res):
        expected = torch.stack([out_by_gid[rank * PER_RANK + i] for i in range(PER_RANK)])
        assert torch.allclose(r["unshuffled_out"], expected, atol=1e-4)

    # the gathered enqueue wrote every rank's keys, in rank order, identically on each rank:
    # 6 keys at rows 0-5, then 6 more wrap around (rows 6, 7, then 0-3)
    keys = torch.tensor([[g + 1.0, 1.0] for g in range(WORLD * PER_RANK)])
    first, second = F.normalize(keys, dim=1), F.normalize(keys + 10, dim=1)
    expected = torch.cat([second[2:6], first[4:6], second[0:2]])
    for r in res:
        assert r["ptr"] == 12 % 8
        assert torch.allclose(r["queue"], expected, atol=1e-6)
    assert torch.equal(res[0]["queue"], res[1]["queue"])


def test_single_process_is_a_local_permutation():
    torch.manual_seed(3)
    x = torch.arange(5.0).view(5, 1, 1, 1).expand(5, 1, 2, 2)
    boxes = torch.arange(5.0).view(5, 1).expand(5, 4)
    shuffled, (s_boxes,), idx = batch_shuffle(x, boxes)
    assert sorted(shuffled[:, 0, 0, 0].tolist()) == list(range(5))
    assert torch.equal(s_boxes[:, 0], shuffled[:, 0, 0, 0])
    assert torch.equal(batch_unshuffle(shuffled, idx), x)
    assert concat_all_gather(boxes) is boxes
