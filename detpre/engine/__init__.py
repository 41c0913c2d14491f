from .amp import MixedPrecisionTrainer, autocast_dtype, device_type
from .config_setup import get_detpre_cfg, setup_cfg
from .finetune_trainer import FinetuneTrainer
from .launch import launch, launch_from_args
from .pretrain_trainer import PretrainTrainer, derive_schedule
from .trainer_base import DetpreTrainer

__all__ = [
    "MixedPrecisionTrainer",
    "autocast_dtype",
    "device_type",
    "DetpreTrainer",
    "FinetuneTrainer",
    "PretrainTrainer",
    "derive_schedule",
    "get_detpre_cfg",
    "launch",
    "launch_from_args",
    "setup_cfg",
]
