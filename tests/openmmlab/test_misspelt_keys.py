"""The top-level key typo warning (``param_schedulr`` -> ``param_scheduler``) says nothing of the keys OpenMMLab's
shipped configs carry of their own (``data_root``, ``train_pipeline``, ``test100_dataloader``...)."""
import ast
import importlib.util
import os

import pytest
from mmengine.config import Config

from mm_lightning.config.misspellings import misspelt_keys

PACKAGES = ('mmdet', 'mmseg', 'mmpretrain', 'mmpose', 'mmaction', 'mmocr', 'mmagic', 'mmyolo')
#: Shipped configs loaded per package (with their _base_ files): 200 in all.
PER_PACKAGE = 25


def _installed(package: str) -> str:
    """The package's shipped configs folder, found without importing the package (nothing is built, and some
    need import fixes)."""
    spec = importlib.util.find_spec(package)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    root = os.path.join(folders[0], '.mim', 'configs') if folders else ''
    if not os.path.isdir(root):
        pytest.skip(f'{package} is not installed, or ships no configs')
    return root


def _sample(root: str, count: int) -> list:
    """``count`` configs spread evenly over the sorted list, ``_base_`` files left out (as shipped.sample_configs)."""
    paths = sorted(os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names
                   if name.endswith('.py') and '_base_' not in os.path.relpath(folder, root).split(os.sep))
    return [paths[index * len(paths) // count] for index in range(count)]


@pytest.mark.parametrize('package', PACKAGES)
def test_no_top_level_name_of_any_shipped_config_file_is_taken_for_a_typo(package):
    """Every name assigned at the top of every shipped file, _base_ files included (a merged config's keys are
    theirs)."""
    root = _installed(package)
    names = set()
    for folder, _, files in os.walk(root):
        for name in files:
            if name.endswith('.py'):
                with open(os.path.join(folder, name), encoding='utf-8') as f:
                    tree = ast.parse(f.read())
                names.update(node.id for statement in tree.body if isinstance(statement, (ast.Assign, ast.AnnAssign))
                             for target in (statement.targets if isinstance(statement, ast.Assign)
                                            else [statement.target])
                             for node in ast.walk(target) if isinstance(node, ast.Name))
    assert len(names) > 20
    assert misspelt_keys(dict.fromkeys(names)) == []


@pytest.mark.parametrize('package', PACKAGES)
def test_no_key_of_sampled_shipped_configs_is_taken_for_a_typo(package):
    loaded = 0
    for path in _sample(_installed(package), PER_PACKAGE):
        try:
            cfg = Config.fromfile(path, import_custom_modules=False)
        except (ImportError, KeyError):  # a lazy-import config whose imports need more; one that cannot load
            continue
        loaded += 1
        assert misspelt_keys(cfg) == [], path
    assert loaded >= PER_PACKAGE * 3 // 4
