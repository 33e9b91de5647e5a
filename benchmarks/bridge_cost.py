"""Every cost of mm_lightning against mmengine's Runner (and plain Lightning), on one machine at one time.

Runs the other benchmark scripts, each as a subprocess writing ``--json`` into a temporary directory, in
this order (``--only`` picks some: overhead, real_config, validation, checkpoint, resume, startup):

1. ``overhead``: ``overhead.py --iters 400 --repeats R`` with ``--hooks none``, then ``--hooks default``
   (toy MLP; time per iteration and time from building the runner to the first iteration's end);
2. ``real_config``: mmpretrain's shipped ``resnet/resnet18_8xb32_in1k.py`` at 32 px, batches of 8,
   ``num_workers=2`` (persistent workers as the loader builds them), on synthetic JPEGs (4 classes, enough
   that 40 iterations never end the epoch), loaded with ``Config.fromfile`` and dumped by a child script
   under the OpenMMLab interpreter (``--openmmlab-python``, default ``.venv-openmmlab/bin/python``), then
   ``python -m mm_lightning benchmark CFG --engine both --iters 40 --warmup 10 --repeats R --threads 1``
   there (each run a fresh process; time per iteration, data-loading share, peak memory, time to the first
   iteration); without mmpretrain its rows say ``skipped: mmpretrain not installed``;
3. ``validation``: ``validation.py --samples 100000 --repeats R`` (``val()`` time and peak RSS);
4. ``checkpoint``: ``checkpoint_cost.py --repeats R`` (save time, load time, size);
5. ``resume``: ``resume_fast_forward.py --at 20000 --repeats R``;
6. ``startup``: ``startup.py --repeats R`` (first iteration of a fresh ``mm_lightning train`` against an
   OpenMMLab ``tools/train.py``, and ``--help``, ``explain``, a config error).

The table (stdout and ``--markdown``) has one row per figure; each cell is the median over the runs
and its 90% interval, ``median [low..high]`` (as ``mm-lightning benchmark`` reports them:
:mod:`mm_lightning.tools.benchmark_statistics`; 5 to 7 runs: their minimum and maximum), the ratio
column the same of mm_lightning / Runner within each repeat (the runs of a repeat are back to back, so a
slow minute of a shared machine hits both). A ratio is marked ``unreliable`` as the benchmark command
marks it: its interval wider than 20% of it, or too few runs (5) for one. ``--json`` writes every
script's own JSON under ``results`` with the ``environment`` (date, CPUs, load averages before and
after, versions); ``--table-from`` writes the table of such a file again, running nothing.

Takes: ``--quick`` 85 s measured on 2 shared cores at load average ~2 (ResNet-18 30 s, validation 14 s,
checkpoint 13 s, startup 12 s, the rest ~5 s each; the test's ``--only`` subset 45-75 s); the default
(R = 5) about 8 minutes on the same machine, quiet (ResNet-18's 10 processes 2.4 min, validation's 15 over
100k samples 1.5 min, the checkpoint's 15 at 25M parameters 1.5 min, the Runner's 20000 loaded batches per
resume 1.5 min).

    python benchmarks/bridge_cost.py [--repeats 5] [--quick] [--only NAME ...] [--markdown OUT] [--json OUT]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Dict, List, Optional, Sequence, Tuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from mm_lightning.tools.benchmark_statistics import pair_ratios, summarize  # noqa: E402

NAMES = ('overhead', 'real_config', 'validation', 'checkpoint', 'resume', 'startup')
ENGINES = ('mmengine', 'mm_lightning', 'lightning')
#: The ratio's interval width, as a fraction of it, beyond which it is unreliable (``benchmark``'s default).
TOLERANCE = 0.2

#: Run under the OpenMMLab interpreter: writes the synthetic ImageNet and the modified shipped config.
#: Exit status 3: mmpretrain is not installed there.
REAL_CONFIG_CHILD = '''
import importlib.util, os, sys
spec = importlib.util.find_spec('mmpretrain')
if spec is None:
    sys.exit(3)
import numpy as np
from mmengine.config import Config
from PIL import Image

root, out, train_images = sys.argv[1], sys.argv[2], int(sys.argv[3])
synsets = ('n01440764', 'n01443537', 'n01484850', 'n01491361')
rng = np.random.RandomState(0)
ys, xs = np.mgrid[0:36, 0:40]


def image(path):  # a smooth background with noise: compresses like a photo
    base = np.stack([xs * 255 // 39, ys * 255 // 35, np.full_like(xs, rng.randint(0, 256))], axis=-1)
    pixels = np.clip(base + rng.randint(-20, 21, size=base.shape), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, format='JPEG')


lines = {'train': [], 'val': []}
for index in range(train_images):
    label, synset = index % 4, synsets[index % 4]
    os.makedirs(os.path.join(root, 'train', synset), exist_ok=True)
    image(os.path.join(root, 'train', synset, f'{synset}_{index}.JPEG'))
    lines['train'].append(f'{synset}/{synset}_{index}.JPEG {label}')
os.makedirs(os.path.join(root, 'val'), exist_ok=True)
for index in range(8):
    image(os.path.join(root, 'val', f'ILSVRC2012_val_{index + 1:08d}.JPEG'))
    lines['val'].append(f'ILSVRC2012_val_{index + 1:08d}.JPEG {index % 4}')
os.makedirs(os.path.join(root, 'meta'), exist_ok=True)
for split, split_lines in lines.items():
    with open(os.path.join(root, 'meta', f'{split}.txt'), 'w') as f:
        f.write('\\n'.join(split_lines) + '\\n')

cfg = Config.fromfile(os.path.join(os.path.dirname(spec.origin), '.mim', 'configs', 'resnet',
                                   'resnet18_8xb32_in1k.py'))


def set_transform(pipeline, kind, **values):
    for step in pipeline:
        if step['type'] == kind:
            step.update(values)


for name in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
    cfg[name].dataset.data_root = root
    cfg[name].batch_size = 8
    cfg[name].num_workers = 2
    if name != 'train_dataloader':
        set_transform(cfg[name].dataset.pipeline, 'ResizeEdge', scale=36)
        set_transform(cfg[name].dataset.pipeline, 'CenterCrop', crop_size=32)
set_transform(cfg.train_dataloader.dataset.pipeline, 'RandomResizedCrop', scale=32)
cfg.randomness = dict(cfg.get('randomness') or {}, seed=0)
cfg.dump(out)
'''


def steps(args: argparse.Namespace, tmp: str) -> List[Tuple[str, str, List[str]]]:
    """(script, result key, command) in the order they run, each command writing ``<tmp>/<key>.json``."""
    r, q = args.repeats, args.quick
    py, bench = sys.executable, os.path.join(ROOT, 'benchmarks')
    iters = ['--iters', '60', '--warmup', '10'] if q else ['--iters', '400']
    real_iters = ['--iters', '12', '--warmup', '2'] if q else ['--iters', '40', '--warmup', '10']
    plan = [
        ('overhead', 'overhead_none', [py, f'{bench}/overhead.py', *iters, '--repeats', str(r), '--hooks', 'none']),
        ('overhead', 'overhead_default', [py, f'{bench}/overhead.py', *iters, '--repeats', str(r),
                                          '--hooks', 'default']),
        ('real_config', 'real_config', [args.openmmlab_python, '-m', 'mm_lightning', 'benchmark',
                                        os.path.join(tmp, 'resnet18_32px.py'), '--engine', 'both', *real_iters,
                                        '--repeats', str(r), '--threads', '1', '--work-dir',
                                        os.path.join(tmp, 'benchmark_work')]),
        ('validation', 'validation', [py, f'{bench}/validation.py', '--samples', '2000' if q else '100000',
                                      '--repeats', str(r)]),
        ('checkpoint', 'checkpoint', [py, f'{bench}/checkpoint_cost.py', '--repeats', str(r),
                                      *(['--params', '200000'] if q else [])]),
        ('resume', 'resume', [py, f'{bench}/resume_fast_forward.py', '--at', '200' if q else '20000',
                              '--repeats', str(r)]),
        ('startup', 'startup', [py, f'{bench}/startup.py', '--repeats', str(r)]),
    ]
    return [(name, key, command + ['--json', os.path.join(tmp, f'{key}.json')]) for name, key, command in plan
            if name in args.only]


def prepare_real_config(args: argparse.Namespace, tmp: str) -> Optional[Dict[str, Any]]:
    """Writes the data and the config; None when ready, else the result that stands in for the runs."""
    if not (os.path.isfile(args.openmmlab_python) or shutil.which(args.openmmlab_python)):
        return dict(skipped=f'no interpreter {args.openmmlab_python}')
    images = 8 * ((12 if args.quick else 40) + 10)  # more than the iterations take: the epoch never ends
    result = subprocess.run([args.openmmlab_python, '-c', REAL_CONFIG_CHILD, os.path.join(tmp, 'imagenet'),
                             os.path.join(tmp, 'resnet18_32px.py'), str(images)], capture_output=True, text=True)
    if result.returncode == 3:
        return dict(skipped='mmpretrain not installed')
    if result.returncode != 0:
        return dict(error=f'writing the config: exit {result.returncode}', output=result.stderr[-3000:])
    return None


def run_step(command: List[str], out: str) -> Dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS='1',
               PYTHONPATH=os.pathsep.join(filter(None, [ROOT, os.environ.get('PYTHONPATH')])))
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0 or not os.path.isfile(out):
        return dict(error=f'exit {result.returncode}', output=(result.stdout + result.stderr)[-3000:])
    with open(out) as f:
        return json.load(f)


# -- the table --------------------------------------------------------------------------------------
def number(value: float) -> str:
    size = abs(value)
    return f'{value:.0f}' if size >= 100 else f'{value:.1f}' if size >= 10 else f'{value:.2f}' if size >= 1 \
        else f'{value:.3f}'


def cell(values: Sequence[Optional[float]], unit: str, scale: float = 1.0) -> str:
    summary = summarize(None if value is None else value * scale for value in values)
    if summary is None:
        return '–'
    return f'{number(summary.median)} [{number(summary.low)}..{number(summary.high)}] {unit}'.rstrip()


def ratio_cell(ratios: Sequence[Optional[float]]) -> str:
    summary = summarize(ratios)
    if summary is None:
        return '–'
    noisy = ' unreliable' if summary.unreliable(TOLERANCE) else ''
    return f'{summary.median:.3g}x [{summary.low:.3g}..{summary.high:.3g}]{noisy}'


def figure_row(label: str, runs: Dict[str, List[Dict[str, Any]]], key: str, unit: str, scale: float = 1.0,
               difference: bool = False) -> List[str]:
    """A row: each engine's runs of ``key``, and mm_lightning / Runner per repeat (or the difference)."""
    values = {engine: [run.get(key) for run in runs.get(engine, [])] for engine in ENGINES}
    ours, theirs = values['mm_lightning'], values['mmengine']
    if difference:  # a share: mm_lightning - Runner in points, per repeat
        diffs = summarize(None if a is None or b is None else (a - b) * scale for a, b in zip(ours, theirs))
        last = f'{diffs.median:+.1f} pts [{diffs.low:+.1f}..{diffs.high:+.1f}]' if diffs else '–'
    else:
        last = ratio_cell(pair_ratios(ours, theirs)) if ours and theirs else '–'
    return [label, *(cell(values[engine], unit, scale) for engine in ENGINES), last]


def benchmark_runs(report: Dict[str, Any]) -> Dict[str, List[Dict[str, Any]]]:
    """The ``mm-lightning benchmark`` report's runs back as one dict per run (its summaries keep them)."""
    runs: Dict[str, List[Dict[str, Any]]] = {}
    for engine, figures in report['engines'].items():
        names = [name for name, summary in figures.items() if isinstance(summary, dict) and 'runs' in summary]
        count = max((len(figures[name]['runs']) for name in names), default=0)
        runs[engine] = [{name: figures[name]['runs'][i] for name in names if i < len(figures[name]['runs'])}
                        for i in range(count)]
    return runs


def rows_of(key: str, result: Dict[str, Any]) -> List[List[str]]:
    """The table rows of one script's result (the rows of a skipped or failed script say so)."""
    labels = {
        'overhead_none': ['time per iteration, toy MLP, hooks=none', 'time to 1st iteration from building the runner, '
                          'toy MLP'],
        'overhead_default': ['time per iteration, toy MLP, hooks=default'],
        'real_config': ['time per iteration, ResNet-18 (mmpretrain config, 32 px, batch 8)',
                        'data-loading share, 2 loader workers (ResNet-18)', 'peak memory, ResNet-18',
                        'time to 1st iteration from building the runner, ResNet-18'],
        'validation': ['val() time', 'val() peak RSS'],
        'checkpoint': ['checkpoint save time', 'checkpoint load time', 'checkpoint size'],
        'resume': ['resume at iteration N: train() to 1st resumed iteration'],
        'startup': ['time to 1st iteration, fresh process (wall)', 'time to 1st iteration, fresh process (CPU)',
                    '`--help`, fresh process (wall)', '`explain`, fresh process (wall)',
                    'config error, fresh process (wall)'],
    }[key]
    if 'skipped' in result or 'error' in result:
        why = f"skipped: {result['skipped']}" if 'skipped' in result else f"failed: {result['error']}"
        return [[label, why, '–', '–', '–'] for label in labels]
    runs = result.get('runs', {})
    if key.startswith('overhead'):
        rows = [figure_row(labels[0], runs, 'time_per_iter_ms', 'ms')]
        return rows + ([figure_row(labels[1], runs, 'startup_s', 's')] if key == 'overhead_none' else [])
    if key == 'real_config':
        runs = benchmark_runs(result)
        return [figure_row(labels[0], runs, 'time_per_iter_ms', 'ms'),
                figure_row(labels[1], runs, 'data_loading_share', '%', 100, difference=True),
                figure_row(labels[2].replace('memory', f"memory ({result['engines']['mmengine'].get('memory_kind')})"),
                           runs, 'peak_memory_mb', 'MB'),
                figure_row(labels[3], runs, 'time_to_first_iter_s', 's')]
    if key == 'validation':
        return [figure_row(f"{labels[0]}, {result['samples']:,} samples", runs, 'val_s', 's'),
                figure_row(labels[1], runs, 'peak_rss_mb', 'MB')]
    if key == 'checkpoint':
        return [figure_row(labels[0], runs, 'save_s', 's'), figure_row(labels[1], runs, 'load_s', 's'),
                figure_row(labels[2], runs, 'size_mb', 'MB')]
    if key == 'resume':
        return [figure_row(labels[0].replace('N', f"{result.get('at', '?')}"), runs, 'resume_s', 's')]
    cases = {'mmengine': runs['mmengine tools/train.py: 1st iteration'],
             'mm_lightning': runs['mm_lightning train: 1st iteration']}
    rows = [figure_row(labels[0], cases, 'wall', 's'), figure_row(labels[1], cases, 'cpu', 's')]
    for label, case in zip(labels[2:], ('--help', 'explain', 'config error')):
        rows.append(figure_row(label, {'mm_lightning': runs[case]}, 'wall', 's'))
    return rows


def environment(load_before: Tuple[float, ...]) -> Dict[str, Any]:
    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return 'not installed'
    return dict(date_utc=datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC'), machine=platform.node(),
                platform=platform.platform(), cpus=os.cpu_count(), load_before=list(load_before),
                load_after=list(os.getloadavg()), python=platform.python_version(),
                **{name: installed(name) for name in ('torch', 'lightning', 'mmengine')})


def table(report: Dict[str, Any]) -> str:
    env = report['environment']
    loads = ' / '.join(' '.join(f'{x:.2f}' for x in env[k]) for k in ('load_before', 'load_after'))
    real = report['results'].get('real_config', {}).get('environment')
    lines = [f"{env['machine']} ({env['cpus']} CPUs), {env['date_utc']}, load average (1/5/15 min) before / after: "
             f"{loads}; python {env['python']}, torch {env['torch']}, lightning {env['lightning']}, mmengine "
             f"{env['mmengine']}" + (f" (ResNet-18 rows: torch {real['torch']}, mmengine {real['mmengine']})"
                                     if real else '')
             + f"; {report['repeats']} repeat(s), 1 CPU thread per run{', --quick sizes' if report['quick'] else ''}",
             '', 'median [90% interval of the median] over the runs; ratio: the same of the per-repeat ratios, '
             f'unreliable when its interval is wider than {TOLERANCE:.0%} of it or the runs are too few (5) for one',
             '',
             '| figure | mmengine Runner | mm_lightning | plain Lightning | mm_lightning / Runner |',
             '|---|---:|---:|---:|---:|']
    for key, result in report['results'].items():
        lines += ['| ' + ' | '.join(row) + ' |' for row in rows_of(key, result)]
    return '\n'.join(lines) + '\n'


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, help='runs per engine (default: 5; 1 with --quick)')
    parser.add_argument('--quick', action='store_true', help='tiny sizes (for the test)')
    parser.add_argument('--only', nargs='+', choices=NAMES, default=list(NAMES), metavar='NAME',
                        help=f'run only these, of {", ".join(NAMES)}')
    default_openmmlab = os.path.join(ROOT, '.venv-openmmlab', 'bin', 'python')
    parser.add_argument('--openmmlab-python', default=default_openmmlab if os.path.isfile(default_openmmlab)
                        else sys.executable, help='interpreter of the real-config runs (needs mmpretrain)')
    parser.add_argument('--markdown', metavar='OUT', help='also write the table here')
    parser.add_argument('--json', metavar='OUT', help="also write every script's JSON and the environment here")
    parser.add_argument('--table-from', metavar='JSON', help='print the table of a file --json wrote; run nothing')
    args = parser.parse_args(argv)
    if args.table_from:
        with open(args.table_from) as f:
            print(table(json.load(f)), end='')
        return 0
    args.repeats = args.repeats or (1 if args.quick else 5)
    load_before, started = os.getloadavg(), time.perf_counter()
    results: Dict[str, Any] = {}
    seconds: Dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        plan = steps(args, tmp)
        for number_, (name, key, command) in enumerate(plan, 1):
            print(f'[bridge_cost {time.perf_counter() - started:5.0f} s] {number_}/{len(plan)} {key}: '
                  f'{" ".join(os.path.relpath(p, ROOT) if p.startswith(ROOT) else p for p in command)}',
                  file=sys.stderr, flush=True)
            if name == 'checkpoint' and not os.path.isfile(command[1]):
                results[key] = dict(skipped='benchmarks/checkpoint_cost.py not found')
                continue
            step_started = time.perf_counter()
            instead = prepare_real_config(args, tmp) if name == 'real_config' else None
            results[key] = instead or run_step(command, command[-1])
            seconds[key] = time.perf_counter() - step_started
            if 'error' in results[key]:
                print(f"  {key} failed ({results[key]['error']}):\n{results[key]['output']}", file=sys.stderr)
    report = dict(script='bridge_cost', repeats=args.repeats, quick=args.quick, only=args.only,
                  seconds=time.perf_counter() - started, step_seconds=seconds,
                  environment=environment(tuple(load_before)), results=results)
    text = table(report)
    print(text)
    print(f'[bridge_cost] done in {report["seconds"]:.0f} s', file=sys.stderr)
    if args.markdown:
        with open(args.markdown, 'w') as f:
            f.write(text)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(report, table=text), f, indent=2)
            f.write('\n')
    return 1 if any('error' in result for result in results.values()) else 0


if __name__ == '__main__':
    sys.exit(main())
