"""mm_lightning: run OpenMMLab (mmengine) configs on PyTorch Lightning.

mmengine builds the parts (registries, dataloaders, optimizer wrappers, schedulers,
metrics, hooks); Lightning runs them (loops, devices, distribution, precision).

The subpackages are layers, lowest first; a module imports only its own layer and those below it
(``tests/test_layers.py`` checks every import, in functions and under ``TYPE_CHECKING`` too; this module
and ``__main__`` sit above them all):

- ``ground``: what every layer relies on: the run contract (``RunModule``), every private Lightning/mmengine/torch
  name (``internals``), the light name lists, helpers over mmengine's built parts.
- ``config``: configs in: loading, checks before anything is built, registry builds.
- ``state``: what survives a restart: checkpoints in both formats, conversion, safe files, random state.
- ``translate``: config to Lightning objects: strategies (FSDP2 sharding), launchers, precision, loggers, bars.
- ``runtime``: what runs inside the Trainer and what builds it: ``ConfigModule``/``ConfigDataModule``, the hook
  bridge, the runner view hooks receive, the run's assembly and context, ``trainer_kwargs``.
- ``runner``: mmengine's ``FlexibleRunner`` facade.
- ``tools``: the command lines and the tools behind them.

The Lightning-backed names are imported on first use, so the command line can route what
libraries print while importing (DeepSpeed does) away from a command's output.
"""
import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mm_lightning.config import ConfigError, load_config

#: Public name -> the module defining it. Even the config names wait: ``mm-lightning --help`` imports this
#: package and should not pay for mmengine.
_LAZY = {'FlexibleRunner': '.runner.flexible_runner', 'ConfigModule': '.runtime.module',
         'ConfigDataModule': '.runtime.data', 'trainer_kwargs': '.runtime.trainer',
         'ConfigCLI': '.tools.lightning_cli', 'load_config': '.config', 'ConfigError': '.config'}

__all__ = ['FlexibleRunner', 'ConfigModule', 'ConfigDataModule', 'trainer_kwargs', 'ConfigCLI', 'load_config',
           'ConfigError']
__version__ = '0.1.0'


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return getattr(importlib.import_module(_LAZY[name], __name__), name)


def __dir__() -> list:
    return sorted(set(globals()) | set(_LAZY))
