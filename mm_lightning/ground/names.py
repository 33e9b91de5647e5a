"""The names the command line offers and the config checks accept, without importing what they select.

``mm-lightning --help`` lists them and a config error names them; neither should import torch or
Lightning for that. The tables they key (translate's ``launchers.LAUNCHERS``, ``progress.PROGRESS_BARS``,
``profiling.PROFILERS``) keep the same keys in the same order: tests/ground/test_names.py checks.
"""
from typing import Tuple

LAUNCHER_NAMES: Tuple[str, ...] = ('none', 'pytorch', 'slurm', 'mpi')
PROGRESS_BAR_NAMES: Tuple[str, ...] = ('none', 'tqdm', 'rich')
PROFILER_NAMES: Tuple[str, ...] = ('simple', 'advanced', 'pytorch')
