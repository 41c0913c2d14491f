"""The methods table (detpre/methods.py) against the registries, the config nodes and every
pretraining config file; a config pairing a method with another method's mapper fails at
start-up."""

import glob
import os

import pytest
from detectron2.modeling import META_ARCH_REGISTRY

from detpre.data.build import PRETRAIN_MAPPER_REGISTRY
from detpre.data.proposals import PRESETS
from detpre.engine import PretrainTrainer, get_detpre_cfg
from detpre.methods import METHODS, check_method_config, method_of


def test_every_entry_names_what_exists(repo_root, load_config):
    defaults = get_detpre_cfg()
    for name, m in METHODS.items():
        for arch in m.meta_architectures:
            assert META_ARCH_REGISTRY.get(arch) is not None
            assert method_of(arch) == name
        assert PRETRAIN_MAPPER_REGISTRY.get(m.mapper) is not None
        assert m.config_node in defaults, (name, m.config_node)
        assert m.export in ("online", "momentum")
        assert m.init_from is None or m.init_from in METHODS
        # A method reads proposals exactly when its mapper needs the dataset's annotations.
        mapper_cls = PRETRAIN_MAPPER_REGISTRY.get(m.mapper)
        assert (m.proposals is not None) == getattr(mapper_cls, "needs_annotations", False)
        assert m.proposals is None or m.proposals in PRESETS
        assert os.path.isfile(os.path.join(repo_root, m.finetune_config))
        cpu = load_config(m.cpu_config)
        assert cpu.MODEL.META_ARCHITECTURE in m.meta_architectures
    assert method_of("GeneralizedRCNN") is None


def test_every_pretraining_config_agrees_with_the_table(repo_root, load_config):
    """Each file's mapper is its method's; its exported copy is the one its release transfers."""
    paths = sorted(glob.glob(os.path.join(repo_root, "configs", "pretrain", "*.yaml")))
    seen = set()
    for path in paths:
        cfg = load_config(path)
        name = method_of(cfg.MODEL.META_ARCHITECTURE)
        if name is None:  # a Base-* file of the detector alone
            continue
        seen.add(name)
        check_method_config(cfg)
        assert cfg.SSL.EXPORT == METHODS[name].export, os.path.basename(path)
    assert seen == set(METHODS)


def test_another_methods_mapper_fails_at_start_up(load_config):
    cfg = load_config(METHODS["moco_v2"].cpu_config, "SSL.MAPPER", METHODS["insloc"].mapper)
    with pytest.raises(ValueError, match="SSL.MAPPER 'InsLocCompositionMapper'"):
        PretrainTrainer(cfg)


@pytest.mark.parametrize(
    "old,new",
    [
        ("SSL.OPTIMIZER", "SOLVER.OPTIMIZER"),
        ("SSL.ADAMW_BETAS", "SOLVER.ADAMW_BETAS"),
        ("SLOTCON.BLUR_PROBS", "SLOTCON.BLUR_PROB"),
    ],
)
def test_a_renamed_key_fails_naming_the_new_one(tmp_path, old, new):
    node, key = old.split(".")
    path = tmp_path / "old.yaml"
    path.write_text(f"{node}:\n  {key}: 1\n")
    for merge in (
        lambda cfg: cfg.merge_from_file(str(path)),
        lambda cfg: cfg.merge_from_list([old, "1"]),
    ):
        with pytest.raises(
            KeyError, match=f"{old} was renamed to {new}; please update your config"
        ):
            merge(get_detpre_cfg())


def test_names_line_up_across_layers(repo_root):
    """A method's config node, lower-cased, names its model folder, its mapper file and its
    config file: ``ALIGNDET`` -> detpre/modeling/aligndet/, data/mappers/aligndet.py,
    config/aligndet_defaults.py."""
    for name, m in METHODS.items():
        folder = m.config_node.lower()
        for arch in m.meta_architectures:
            module = META_ARCH_REGISTRY.get(arch).__module__
            assert module.startswith(f"detpre.modeling.{folder}."), (name, module)
        mapper = PRETRAIN_MAPPER_REGISTRY.get(m.mapper).__module__
        assert mapper == f"detpre.data.mappers.{folder}", (name, mapper)
        assert os.path.isfile(os.path.join(repo_root, f"detpre/config/{folder}_defaults.py"))
        assert name.startswith(folder), name
