"""Queues and prototypes sized to the data: the CPU configs keep them at most a quarter of an
epoch, and a pretraining run whose memory outnumbers its images warns at start-up, naming the
key."""

import glob
import os

import pytest
from detectron2.data import DatasetCatalog

from detpre.engine import PretrainTrainer
from detpre.engine.pretrain_trainer import memory_larger_than_data

pytestmark = pytest.mark.usefixtures("one_thread")

MEMORY_KEYS = {
    "InsLoc": ("SSL", "QUEUE_SIZE"),
    "MoCoV2": ("SSL", "QUEUE_SIZE"),
    "SlotCon": ("SLOTCON", "NUM_PROTOTYPES"),
    "LOCA": ("LOCA", "NUM_PROTOTYPES"),
}


def test_cpu_configs_size_memory_to_their_data(repo_root, datasets_root, load_config):
    checked = 0
    for path in sorted(glob.glob(os.path.join(repo_root, "configs", "pretrain", "*_cpu_*.yaml"))):
        cfg = load_config(path)
        if cfg.MODEL.META_ARCHITECTURE not in MEMORY_KEYS:
            continue
        node, key = MEMORY_KEYS[cfg.MODEL.META_ARCHITECTURE]
        num_images = sum(len(DatasetCatalog.get(name)) for name in cfg.DATASETS.TRAIN)
        assert cfg[node][key] <= num_images / 4, (os.path.basename(path), cfg[node][key])
        assert memory_larger_than_data(cfg, num_images) == []
        checked += 1
    assert checked >= 10


def test_memory_larger_than_data_names_the_keys(repo_root, load_config):
    pretrain = os.path.join(repo_root, "configs", "pretrain")
    moco = load_config(os.path.join(pretrain, "moco_v2_R50_C4_200ep_imagenet.yaml"))
    assert memory_larger_than_data(moco, 250) == [("SSL.QUEUE_SIZE", 65536)]
    assert memory_larger_than_data(moco, 1281167) == []
    slotcon = load_config(os.path.join(pretrain, "slotcon_R50_C4_800ep_coco.yaml"))
    assert memory_larger_than_data(slotcon, 100) == [("SLOTCON.NUM_PROTOTYPES", 256)]
    loca = load_config(os.path.join(pretrain, "loca_R50_C4_100ep_imagenet.yaml"))
    assert memory_larger_than_data(loca, 250) == [("LOCA.NUM_PROTOTYPES", 4096)]
    loca.LOCA.CLUSTER_LOSS_WEIGHT = 0.0  # no prototypes without the cluster loss
    assert memory_larger_than_data(loca, 250) == []


def test_start_up_warns_when_the_queue_outnumbers_the_images(
    repo_root, tmp_path, detpre_logs, load_config
):
    path = os.path.join(repo_root, "configs", "pretrain", "moco_v2_R50_C4_cpu_imagenet_sample.yaml")
    cfg = load_config(path, "SSL.QUEUE_SIZE", "4096", "OUTPUT_DIR", str(tmp_path))
    cfg.merge_from_list(["DATALOADER.NUM_WORKERS", "0"])
    PretrainTrainer(cfg)
    warned = [r.getMessage() for r in detpre_logs.records if r.levelname == "WARNING"]
    assert any(
        "SSL.QUEUE_SIZE 4096 is larger than the 250 images" in m and "imagenet_sample" in m
        for m in warned
    ), warned
