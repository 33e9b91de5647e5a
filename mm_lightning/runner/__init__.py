"""mmengine's runner API: ``FlexibleRunner``, a facade over the runtime (the view hooks receive, the run's
assembly and context live in :mod:`mm_lightning.runtime`).

``from mm_lightning.runner import FlexibleRunner`` (the path before the package was cut) still works. The
name is imported on first use, so importing this package pays for neither Lightning nor mmengine.
"""
import importlib
from typing import Any

__all__ = ['FlexibleRunner']


def __getattr__(name: str) -> Any:
    if name != 'FlexibleRunner':
        raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
    return importlib.import_module('mm_lightning.runner.flexible_runner').FlexibleRunner
