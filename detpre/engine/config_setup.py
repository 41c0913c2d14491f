"""Config set-up shared by every detpre command-line tool."""

from detectron2.config import get_cfg
from detectron2.engine import default_setup
from detectron2.utils import comm
from detectron2.utils.logger import setup_logger

from ..config import add_detpre_config
from ..data.datasets import register_from_config


def get_detpre_cfg():
    """Detectron2's default config with every detpre key added."""
    cfg = get_cfg()
    add_detpre_config(cfg)
    return cfg


def setup_cfg(args, *, run_default_setup=True):
    """
    Build the config of a run from Detectron2's standard arguments.

    A key that does not exist fails here, at start-up, with yacs' error naming it. Datasets listed in
    ``DATASETS.REGISTER_*`` are registered, so the config can name them.

    Args:
        args (argparse.Namespace): from ``detectron2.engine.default_argument_parser``.
        run_default_setup (bool): also run Detectron2's ``default_setup`` (logging, seeds, config
            dump in OUTPUT_DIR) and set up detpre's logger; off for tools that only read the
            config.

    Returns:
        CfgNode: frozen.
    """
    cfg = get_detpre_cfg()
    if args.config_file:
        cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    register_from_config(cfg)
    if run_default_setup:
        default_setup(cfg, args)
        # Detectron2 sets up its own and fvcore's loggers; detpre's INFO lines go to the console
        # and OUTPUT_DIR/log.txt the same way.
        setup_logger(cfg.OUTPUT_DIR, distributed_rank=comm.get_rank(), name="detpre")
    return cfg
