"""The configs OpenMMLab packages ship, loaded as they are, with checked overrides.

Tests may change only what a different machine and dataset force (paths, image sizes,
schedule lengths, batch sizes and workers, pretrained weights) plus a fixed seed; every
override must name a key the config already has, so a test cannot quietly add behaviour.
"""
from __future__ import annotations

import importlib
import json
import os
from typing import Any, Dict, List, Union

from mmengine.config import Config


def package_dir(package: str) -> str:
    return os.path.dirname(importlib.import_module(package).__file__)


def config_path(package: str, relative: str) -> str:
    """``<package>/.mim/configs/<relative>`` of the installed package."""
    path = os.path.join(package_dir(package), '.mim', 'configs', relative)
    assert os.path.isfile(path), f'{package} does not ship {relative}'
    return path


def tool_path(package: str, relative: str = 'train.py') -> str:
    """``<package>/.mim/tools/<relative>`` of the installed package."""
    return os.path.join(package_dir(package), '.mim', 'tools', relative)


def shipped_config(package: str, relative: str, seed: int = 0) -> Config:
    """The shipped config, with a fixed seed (two runs agree only from the same seed)."""
    cfg = Config.fromfile(config_path(package, relative))
    cfg.randomness = dict(cfg.get('randomness') or {}, seed=seed)
    return cfg


def _parent(cfg: Any, path: str) -> tuple:
    parts: List[Union[str, int]] = [int(p) if p.isdigit() else p for p in path.split('.')]
    node = cfg
    for part in parts[:-1]:
        node = node[part]
    last = parts[-1]
    exists = last < len(node) if isinstance(last, int) else last in node
    assert exists, f'{path}: not in the shipped config, so it is not an override'
    return node, last


def override(cfg: Config, values: Dict[str, Any]) -> Config:
    """Set dotted keys (list indices as numbers) that already exist in ``cfg``."""
    for path, value in values.items():
        node, last = _parent(cfg, path)
        node[last] = value
    return cfg


def set_transform(pipeline: List[dict], transform: str, **values: Any) -> None:
    """Set existing keys of every ``transform`` in ``pipeline`` (image sizes, mostly)."""
    found = [step for step in pipeline if step['type'] == transform]
    assert found, f'{transform} is not in the pipeline {[step["type"] for step in pipeline]}'
    for step in found:
        for key, value in values.items():
            assert key in step, f'{transform}.{key}: not in the shipped pipeline'
            step[key] = value


def no_workers(cfg: Config, *loaders: str) -> None:
    """``num_workers=0`` (and no persistent workers, which need some) for the named loaders."""
    for name in loaders:
        loader = cfg[name]
        loader['num_workers'] = 0
        if 'persistent_workers' in loader:
            loader['persistent_workers'] = False


def sample_configs(package: str, count: int) -> List[str]:
    """``count`` shipped configs spread evenly over the sorted list (``_base_`` files left out): the same
    sample for the same installed version."""
    root = os.path.join(package_dir(package), '.mim', 'configs')
    paths = sorted(os.path.join(folder, name) for folder, _, names in os.walk(root) for name in names
                   if name.endswith('.py') and '_base_' not in os.path.relpath(folder, root).split(os.sep))
    return [paths[index * len(paths) // count] for index in range(count)]


def check_explains(path: str, capsys: Any) -> None:
    """``explain`` of a shipped config, as text and as JSON: exit 0, or 1 with a refusal; nothing written
    to the working directory (a test's empty ``tmp_path``)."""
    from mm_lightning.tools.cli import main
    assert main(['explain', path]) in (0, 1), path
    assert 'mmengine hooks by stage' in capsys.readouterr().out
    status = main(['explain', path, '--json'])
    report = json.loads(capsys.readouterr().out)
    refused = any(entry['kind'] == 'refusal' for entry in report['warnings'])
    assert status == (1 if refused else 0), (path, report['warnings'])
    assert report['hooks'] is not None, (path, report['warnings'])
    assert os.listdir(os.getcwd()) == []
