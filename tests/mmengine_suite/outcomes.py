"""Run mmengine's own tests in a pytest subprocess with the runner class swapped, and read the outcomes."""
from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from typing import Dict

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
#: mmengine's test files, unchanged, beside the project (see their README).
SUITE = os.path.normpath(os.path.join(ROOT, '..', 'shared', 'mmengine-tests'))
RUN_SUITE = os.path.join(HERE, 'run_suite.py')
#: What the subprocess needs besides the project: mmengine's tests import these.
SUITE_IMPORTS = {'parameterized': 'parameterized', 'pkg_resources': 'setuptools<82'}


def suite_outcomes(tmp_path, *paths: str, timeout: int, rootdir: str = SUITE) -> Dict[str, dict]:
    """Each test's outcome (``suite_plugin.OutcomeReport``) for mmengine's tests at ``paths`` under
    mm_lightning's ``FlexibleRunner``, keyed by test id relative to ``rootdir``."""
    missing = [package for module, package in SUITE_IMPORTS.items() if importlib.util.find_spec(module) is None]
    assert not missing, f"mmengine's tests need {missing}: pip install -e '.[test]'"
    report = tmp_path / 'outcomes.json'
    python_path = os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')]))
    env = dict(os.environ, PYTHONPATH=python_path,
               OMP_NUM_THREADS='1', MMENGINE_SUITE_RUNNER='mm_lightning.FlexibleRunner')
    result = subprocess.run([sys.executable, RUN_SUITE, *paths, '-q', '-c', os.devnull, '--rootdir', rootdir,
                             f'--suite-report={report}'],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    assert report.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(report.read_text())['tests']
