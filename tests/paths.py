"""Where the suite's files are, for test modules at any depth of ``tests/``."""
import os

__all__ = ['TESTS', 'ROOT']

#: ``tests/``: its ``configs/``, ``scripts/`` and ``snapshots/``.
TESTS = os.path.dirname(os.path.abspath(__file__))
#: The repository: ``examples/``, ``benchmarks/``, the README.
ROOT = os.path.dirname(TESTS)
