from .config_setup import get_detpre_cfg, setup_cfg
from .finetune_trainer import FinetuneTrainer
from .pretrain_trainer import PretrainTrainer, derive_schedule

__all__ = ["FinetuneTrainer", "PretrainTrainer", "derive_schedule", "get_detpre_cfg", "setup_cfg"]
