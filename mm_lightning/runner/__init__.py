"""mmengine's runner API: ``FlexibleRunner``, the view hooks receive, and the run's assembly.

``from mm_lightning.runner import FlexibleRunner`` (the path before the package was cut) still works. The
name is imported on first use: the module builds on the runtime, which imports this package's assembly.
"""
import importlib
from typing import Any

__all__ = ['FlexibleRunner']


def __getattr__(name: str) -> Any:
    if name != 'FlexibleRunner':
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return importlib.import_module('mm_lightning.runner.flexible_runner').FlexibleRunner
