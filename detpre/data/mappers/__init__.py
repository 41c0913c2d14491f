"""Dataset mappers: dataset dicts -> model inputs."""

from .finetune import RobustDatasetMapper

__all__ = ["RobustDatasetMapper"]
