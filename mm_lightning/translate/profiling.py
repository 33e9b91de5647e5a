"""The config's ``profiler`` (or ``--profiler``) as a Lightning profiler whose report lands in the work_dir.

``profiler='simple' | 'advanced' | 'pytorch'`` or ``dict(type=..., **kwargs)``: Lightning's own
profilers, which time its hooks and the mmengine hooks they call. The report is written to
``<work_dir>/<stage>-profile.txt`` (``dirpath``/``filename`` override it); Lightning's own
string form would only print it.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional

from lightning.pytorch.profilers import AdvancedProfiler, Profiler, PyTorchProfiler, SimpleProfiler

from mm_lightning.config.loading import ConfigError

__all__ = ['PROFILERS', 'REPORT_NAME', 'build_profiler']

#: The profiler names a config or the command line gives -> Lightning's profiler.
PROFILERS: Dict[str, type] = {'simple': SimpleProfiler, 'advanced': AdvancedProfiler, 'pytorch': PyTorchProfiler}

#: Where a report goes unless the config says otherwise: ``<dirpath>/<stage>-<filename>.txt``.
REPORT_NAME = 'profile'


def build_profiler(spec: Any, work_dir: str) -> Optional[Profiler]:
    """A Lightning profiler for the config's ``profiler`` (None: no profiling)."""
    if spec is None or isinstance(spec, Profiler):
        return spec
    if isinstance(spec, str):
        name, kwargs = spec, {}
    elif isinstance(spec, Mapping) and 'type' in spec:
        kwargs = dict(spec)
        name = kwargs.pop('type')
    else:
        raise ConfigError(f"profiler: expected one of {sorted(PROFILERS)} or dict(type=..., ...), got {spec!r}")
    if name not in PROFILERS:
        raise ConfigError(f'profiler: {name!r} is not one of {sorted(PROFILERS)}')
    kwargs.setdefault('dirpath', work_dir)
    kwargs.setdefault('filename', REPORT_NAME)
    try:
        return PROFILERS[name](**kwargs)
    except TypeError as err:
        raise ConfigError(f'profiler: {PROFILERS[name].__name__}: {err}') from err
