"""Speed, memory and start-up of one config, for CI: ``mm-lightning benchmark``.

Each engine (mm_lightning, mmengine's Runner, or both) trains the config for ``iters``
iterations in a fresh Python process of its own (``python -m mm_lightning.tools.benchmark``), so
that its peak memory and start-up are its own and no global state passes between
engines; the iterations end as described in :mod:`mm_lightning.tools.engines`. Figures per
engine (JSON keys of ``engines.<name>``):

``time_per_iter_ms``      median time between the ends of consecutive iterations, after
                          ``warmup`` iterations (the first iteration never counts)
``samples_per_s``         the median batch's samples over the median iteration time (so
                          ``samples_per_s * time_per_iter_ms / 1000`` is the median batch size)
``data_loading_share``    share of that time spent between iterations: from one ``after_train_iter``
                          to the next ``before_train_iter`` (loading the batch, moving it to the
                          device, and the engine's own work between iterations)
``peak_memory_mb``        ``torch.cuda.max_memory_allocated`` on GPU, else the process's peak RSS
                          (``memory_kind``: ``cuda_max_allocated`` or ``rss``)
``time_to_first_iter_s``  from building the runner to the end of the first iteration
``final_loss``            the ``loss`` logged by the last iteration
``iterations``            iterations that ran (fewer than ``iters`` when the schedule is shorter)

With both engines, ``ratio`` holds mm_lightning's figure over mmengine's for the timing
and memory figures. The report's ``schema`` names this layout; it changes only with it.
:func:`regressions` compares a report with a baseline report, figure by figure.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence

import torch

from mm_lightning.config.loading import CfgOptions, ConfigError, load_config
from mm_lightning.tools.engines import ENGINES, EngineRun, Iteration, fixed_seed, run_engine

__all__ = ['SCHEMA', 'Figure', 'FIGURES', 'RATIOS', 'BenchmarkError', 'steady_state', 'peak_memory', 'run_figures',
           'measure', 'benchmark', 'environment', 'regressions', 'format_benchmark']

SCHEMA = 'mm_lightning.benchmark/1'


@dataclass(frozen=True)
class Figure:
    """How a figure compares with its baseline: which direction is better, relative or absolute."""

    better: str               # 'lower' or 'higher'
    relative: bool = True     # tolerance as a fraction of the baseline, else in the figure's own units


#: The figures of each engine and how a baseline check reads them.
FIGURES: Dict[str, Figure] = {
    'time_per_iter_ms': Figure('lower'),
    'samples_per_s': Figure('higher'),
    'data_loading_share': Figure('lower', relative=False),
    'peak_memory_mb': Figure('lower'),
    'time_to_first_iter_s': Figure('lower'),
    'final_loss': Figure('lower'),
}
#: Figures reported as mm_lightning over mmengine when both engines run.
RATIOS = ('time_per_iter_ms', 'peak_memory_mb', 'time_to_first_iter_s')


class BenchmarkError(RuntimeError):
    """An engine's run failed; the message holds the end of its output."""


# -- figures of one run ---------------------------------------------------------------------------
def steady_state(iterations: Sequence[Iteration], warmup: int) -> Dict[str, Optional[float]]:
    """Median time per iteration, throughput and data-loading share after ``warmup`` iterations."""
    steady = [(previous, current) for previous, current in zip(iterations, iterations[1:])
              if current.number > warmup]
    if not steady:
        return dict(time_per_iter_ms=None, samples_per_s=None, data_loading_share=None)
    durations = [current.ended - previous.ended for previous, current in steady]
    waiting = [current.started - previous.ended for previous, current in steady]
    total, median = sum(durations), statistics.median(durations)
    # Both timing figures come from the median iteration: a validation or a checkpoint between two
    # iterations lengthens one of them, which a sum over all would spread into the throughput.
    samples = statistics.median(current.samples for _, current in steady)
    return dict(time_per_iter_ms=1000 * median,
                samples_per_s=samples / median if median > 0 else None,
                data_loading_share=sum(waiting) / total if total > 0 else None)


def peak_memory() -> Dict[str, Any]:
    """This process's peak memory so far, in MB, and which kind it is."""
    if torch.cuda.is_available():
        return dict(peak_memory_mb=torch.cuda.max_memory_allocated() / 2**20, memory_kind='cuda_max_allocated')
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return dict(peak_memory_mb=peak / (2**20 if platform.system() == 'Darwin' else 2**10), memory_kind='rss')


def run_figures(run: EngineRun, warmup: int) -> Dict[str, Any]:
    """All figures of one engine's run in this process (see module doc)."""
    iterations = run.iterations
    return dict(
        **steady_state(iterations, warmup),
        **peak_memory(),
        time_to_first_iter_s=iterations[0].ended - run.started if iterations else None,
        final_loss=iterations[-1].losses.get('loss') if iterations else None,
        iterations=len(iterations),
    )


def measure(engine: str, config: str, *, iters: int, warmup: int, work_dir: str,
            cfg_options: CfgOptions = None) -> Dict[str, Any]:
    """Train ``config`` under ``engine`` here, in this process, and return its figures."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    cfg, _ = fixed_seed(load_config(config, cfg_options))
    return run_figures(run_engine(engine, cfg, iters, work_dir), warmup)


# -- one process per engine ---------------------------------------------------------------------
def benchmark(config: str, *, engines: Sequence[str], iters: int, warmup: int, work_dir: str,
              cfg_options: Sequence[str] = ()) -> Dict[str, Any]:
    """Measure each engine in its own process; the report (see module doc)."""
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise ConfigError(f'engine: expected some of {sorted(ENGINES)}, got {unknown}')
    if warmup < 0 or iters - max(warmup, 1) < 1:
        raise ConfigError(f'iters: {iters} iterations leave no steady-state iteration after a warm-up of {warmup} '
                          '(the first iteration never counts); use more --iters or less --warmup')
    load_config(config, cfg_options)  # a bad config fails here, not in a child process
    figures = {engine: _measure_in_child(engine, config, iters, warmup, os.path.join(work_dir, engine), cfg_options)
               for engine in engines}
    report: Dict[str, Any] = dict(schema=SCHEMA, config=config, iters=iters, warmup=warmup,
                                  environment=environment(), engines=figures)
    if {'mm_lightning', 'mmengine'} <= set(figures):
        report['ratio'] = {key: _ratio(figures['mm_lightning'][key], figures['mmengine'][key]) for key in RATIOS}
    return report


def _ratio(ours: Optional[float], reference: Optional[float]) -> Optional[float]:
    return ours / reference if ours is not None and reference else None


def environment() -> Dict[str, Any]:
    import lightning
    import mmengine
    return dict(device=torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu',
                torch=torch.__version__, lightning=lightning.__version__, mmengine=mmengine.__version__,
                python=platform.python_version())


def _measure_in_child(engine: str, config: str, iters: int, warmup: int, work_dir: str,
                      cfg_options: Sequence[str]) -> Dict[str, Any]:
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get('PYTHONPATH')])))
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, 'figures.json')
        command = [sys.executable, '-m', 'mm_lightning.tools.benchmark', engine, config, '--iters', str(iters),
                   '--warmup', str(warmup), '--work-dir', work_dir, '--out', out]
        if cfg_options:
            command += ['--cfg-options', *cfg_options]
        result = subprocess.run(command, capture_output=True, text=True, env=env)
        if result.returncode != 0 or not os.path.isfile(out):
            raise BenchmarkError(f'the {engine} run failed (exit {result.returncode}):\n'
                                 + (result.stdout + result.stderr)[-3000:])
        with open(out) as f:
            return json.load(f)


# -- baseline -------------------------------------------------------------------------------------
def regressions(report: Mapping[str, Any], baseline: Mapping[str, Any], tolerance: float) -> List[str]:
    """One line per figure worse than the baseline's by more than ``tolerance`` (see :data:`FIGURES`)."""
    if baseline.get('schema') != SCHEMA:
        raise ConfigError(f"baseline: schema {baseline.get('schema')!r} is not {SCHEMA!r}")
    found = []
    for engine, figures in report['engines'].items():
        for name, figure in FIGURES.items():
            reference = baseline.get('engines', {}).get(engine, {}).get(name)
            message = _worse(f'{engine}.{name}', figures.get(name), reference, figure, tolerance)
            if message:
                found.append(message)
    for name, value in (report.get('ratio') or {}).items():
        message = _worse(f'ratio.{name}', value, (baseline.get('ratio') or {}).get(name), Figure('lower'), tolerance)
        if message:
            found.append(message)
    return found


def _worse(name: str, value: Optional[float], reference: Optional[float], figure: Figure,
           tolerance: float) -> Optional[str]:
    if value is None or reference is None:
        return None
    margin = abs(reference) * tolerance if figure.relative else tolerance
    limit = reference + margin if figure.better == 'lower' else reference - margin
    if (value > limit) if figure.better == 'lower' else (value < limit):
        allowed = f'{tolerance:.0%}' if figure.relative else f'{tolerance:g}'
        return (f'{name}: {value:.4g} is worse than the baseline {reference:.4g} by more than {allowed} '
                f'({figure.better} is better; limit {limit:.4g})')
    return None


# -- text -----------------------------------------------------------------------------------------
def format_benchmark(report: Mapping[str, Any]) -> str:
    """A table: one row per figure, one column per engine (and the ratio)."""
    engines = list(report['engines'])
    ratio = report.get('ratio') or {}
    env = report['environment']
    header = ['figure', *engines] + (['mm_lightning / mmengine'] if ratio else [])
    rows = [[name, *[_cell(report['engines'][engine].get(name)) for engine in engines]]
            + ([_cell(ratio.get(name))] if ratio else []) for name in [*FIGURES, 'iterations']]
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = [f"{report['config']}: {report['iters']} iterations ({report['warmup']} warm-up) on {env['device']}, "
             f"torch {env['torch']}, lightning {env['lightning']}, mmengine {env['mmengine']}",
             '  '.join(f'{cell:<{width}}' for cell, width in zip(header, widths)).rstrip()]
    lines += ['  '.join(f'{cell:<{width}}' for cell, width in zip(row, widths)).rstrip() for row in rows]
    return '\n'.join(lines) + '\n'


def _cell(value: Any) -> str:
    if value is None:
        return '-'
    return f'{value:.4g}' if isinstance(value, float) else str(value)


# -- the measuring process ------------------------------------------------------------------------
def _child(argv: Optional[List[str]] = None) -> int:
    """``python -m mm_lightning.tools.benchmark ENGINE CONFIG ...``: measure one engine, write its figures."""
    parser = argparse.ArgumentParser(prog='python -m mm_lightning.tools.benchmark')
    parser.add_argument('engine', choices=sorted(ENGINES))
    parser.add_argument('config')
    parser.add_argument('--iters', type=int, required=True)
    parser.add_argument('--warmup', type=int, required=True)
    parser.add_argument('--work-dir', required=True)
    parser.add_argument('--out', required=True)
    parser.add_argument('--cfg-options', nargs='+', default=[])
    args = parser.parse_args(argv)
    figures = measure(args.engine, args.config, iters=args.iters, warmup=args.warmup, work_dir=args.work_dir,
                      cfg_options=args.cfg_options)
    with open(args.out, 'w') as f:
        json.dump(figures, f)
    return 0


if __name__ == '__main__':
    sys.exit(_child())
