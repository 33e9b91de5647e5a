"""Start-up cost of the command line: what a quick answer, a config error and a first iteration cost.

Each case is a fresh Python process (one CPU thread, CUDA hidden), run from the repository root; the cases
alternate within each repeat (A B C... A B C...), ``--repeats`` times, and the table gives the median and the
min-max over the repeats of the process's CPU time (user + sys, ``RUSAGE_CHILDREN``: a shared machine disturbs
it less than wall time) and of its wall time:

* ``--help``: ``python -m mm_lightning --help`` (argparse only);
* ``explain``: ``python -m mm_lightning explain examples/spiral/mlp_spiral.py``;
* config error: ``python -m mm_lightning train examples/spiral/mlp_spiral.py --cfg-options
  train_cfg.val_interval=0`` (one ``mm-lightning: error:`` line, exit status 2);
* first iteration: the spiral example trained by ``python -m mm_lightning train`` and by an OpenMMLab
  ``tools/train.py``-style script (``Config.fromfile`` + mmengine's ``Runner.from_cfg(cfg).train()``), both
  with a hook that ends the process at the end of the first training iteration: the wall time is from
  starting the process to that moment (the hook's timestamp), the CPU time the process's until it ended.

    python benchmarks/startup.py [--repeats 5] [--python PYTHON] [--json OUT]

``--python`` runs the cases under another interpreter (another environment, e.g. one with DeepSpeed).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIG = 'examples/spiral/mlp_spiral.py'

#: Imported by the first-iteration runs (``custom_imports``): stamps the end of the first iteration and ends the
#: process there, so a run costs its start-up and one iteration.
HOOK_MODULE = '''
import os
import time

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class StartupStamp(Hook):
    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        with open(os.environ['STARTUP_STAMP'], 'w') as f:
            f.write(repr(time.time()))
        os._exit(0)
'''

#: The spiral example with the stamping hook.
STAMPED_CONFIG = f'''
_base_ = [{os.path.join(ROOT, CONFIG)!r}]
custom_imports = dict(imports=['examples.spiral.components', 'startup_stamp'], allow_failed_imports=False)
custom_hooks = [dict(type='StartupStamp')]
'''

#: What OpenMMLab's tools/train.py does for a config without a ``runner_type``.
MMENGINE_TRAIN = '''
import sys

from mmengine.config import Config
from mmengine.runner import Runner

cfg = Config.fromfile(sys.argv[1])
cfg.work_dir = sys.argv[2]
Runner.from_cfg(cfg).train()
'''

CASES = ('--help', 'explain', 'config error', 'mm_lightning train: 1st iteration',
         'mmengine tools/train.py: 1st iteration')


def commands(python: str, tmp: str, run: int) -> Dict[str, Tuple[List[str], int]]:
    """Case -> (command, the exit status it must end with); each run its own work_dir."""
    work_dir = os.path.join(tmp, f'work_dir_{run}')
    config, script = os.path.join(tmp, 'stamped_spiral.py'), os.path.join(tmp, 'train.py')
    cli = [python, '-m', 'mm_lightning']
    return {
        '--help': ([*cli, '--help'], 0),
        'explain': ([*cli, 'explain', CONFIG], 0),
        'config error': ([*cli, 'train', CONFIG, '--work-dir', work_dir, '--cfg-options',
                          'train_cfg.val_interval=0'], 2),
        'mm_lightning train: 1st iteration': ([*cli, 'train', config, '--work-dir', work_dir], 0),
        'mmengine tools/train.py: 1st iteration': ([python, script, config, work_dir], 0),
    }


def measure(command: List[str], status: int, env: Dict[str, str], stamp: Optional[str]) -> Dict[str, float]:
    """CPU seconds (user + sys) and wall seconds of one fresh process (to the stamp, where it writes one)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.time()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    ended = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != status:
        raise SystemExit(f'{" ".join(command)}: exit status {result.returncode}, expected {status}\n'
                         f'{result.stdout[-2000:]}{result.stderr[-3000:]}')
    if stamp is not None:
        with open(stamp) as f:
            ended = float(f.read())
        os.remove(stamp)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dict(cpu=cpu, wall=ended - started)


def summary(values: List[float]) -> str:
    return f'{statistics.median(values):.2f} s ({min(values):.2f}-{max(values):.2f})'


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--python', default=sys.executable, help='interpreter the cases run under')
    parser.add_argument('--json', metavar='OUT', help='also write every run\'s figures here')
    args = parser.parse_args()

    runs: Dict[str, List[Dict[str, float]]] = {case: [] for case in CASES}
    with tempfile.TemporaryDirectory() as tmp:
        for name, text in (('startup_stamp.py', HOOK_MODULE), ('stamped_spiral.py', STAMPED_CONFIG),
                           ('train.py', MMENGINE_TRAIN)):
            with open(os.path.join(tmp, name), 'w') as f:
                f.write(text)
        stamp = os.path.join(tmp, 'stamp')
        env = dict(os.environ, OMP_NUM_THREADS='1', CUDA_VISIBLE_DEVICES='', STARTUP_STAMP=stamp,
                   PYTHONPATH=os.pathsep.join([tmp, ROOT, *filter(None, [os.environ.get('PYTHONPATH')])]))
        for repeat in range(args.repeats):
            for case, (command, status) in commands(args.python, tmp, repeat).items():  # cases alternate
                runs[case].append(measure(command, status, env, stamp if '1st iteration' in case else None))

    version = subprocess.run([args.python, '-c', 'from importlib.metadata import version; print(", ".join('
                              'f"{name} {version(name)}" for name in ("torch", "lightning", "mmengine")))'],
                             capture_output=True, text=True).stdout.strip()  # without importing them
    print(f'\n{args.repeats} alternating runs per case, fresh processes, 1 CPU thread; {version}\n')
    print('| case | CPU time (user+sys), median (min-max) | wall time, median (min-max) |')
    print('|---|---|---|')
    for case, results in runs.items():
        print(f"| {case} | {summary([r['cpu'] for r in results])} | {summary([r['wall'] for r in results])} |")
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(python=args.python, versions=version, repeats=args.repeats, runs=runs), f, indent=2)
            f.write('\n')


if __name__ == '__main__':
    main()
