from .defaults import add_detpre_config

__all__ = ["add_detpre_config"]
