"""What the command line imports before it answers: ``--help`` and a config error stay quick.

Module absence, not timings, is asserted (benchmarks/startup.py has the timings). Each case runs in a fresh
interpreter, as the command does.
"""
import json
import os
import subprocess
import sys

import pytest
from paths import ROOT

#: Runs the command line's main in this process and prints its exit status and the modules it imported.
PROBE = '''
import json, sys
from mm_lightning.tools.cli import main
try:
    status = main(sys.argv[1:])
except SystemExit as exit:
    status = exit.code
print(json.dumps(dict(status=status, modules=sorted(sys.modules))))
'''
HEAVY = ('torch', 'lightning', 'mmengine', 'deepspeed')


def _imported(*argv: str) -> tuple:
    """(exit status, the modules imported) of ``mm-lightning ARGV``."""
    result = subprocess.run([sys.executable, '-c', PROBE, *argv], cwd=ROOT, capture_output=True, text=True,
                            timeout=300, env=dict(os.environ, OMP_NUM_THREADS='1'))
    report = json.loads(result.stdout.splitlines()[-1])
    return report['status'], set(report['modules'])


def _of(modules: set, *packages: str) -> list:
    return sorted(m for m in modules if m.split('.')[0] in packages)


@pytest.mark.parametrize('command', [[], ['train'], ['test'], ['predict'], ['convert-checkpoint'], ['explain'],
                                     ['compare'], ['benchmark']])
def test_help_imports_nothing_heavy(command):
    status, modules = _imported(*command, '--help')
    assert status == 0
    assert _of(modules, *HEAVY) == []


def test_a_config_error_is_reported_before_lightning_or_the_runner_is_imported(tmp_path):
    status, modules = _imported('train', 'examples/spiral/mlp_spiral.py', '--work-dir', str(tmp_path),
                                '--cfg-options', 'train_cfg.val_interval=0')
    assert status == 2
    # The spiral's own modules import torch and mmengine's model/evaluator (its custom_imports); nothing else runs.
    assert _of(modules, 'lightning', 'deepspeed') == []
    assert 'mmengine.runner' not in modules  # which imports DeepSpeed where it is installed
